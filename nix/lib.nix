# Pure Nix, builtins only: read enrollment.toml and render the bridge's POLL_REPOS.
#
# cc-ci-agent (agent/src/settings/) applies the same rules and renders the same string. The corpus
# in tests/enrollment/ keeps the two in step: nix/tests/lib.nix checks this file against it, and
# agent/tests/suite/nix_parity.rs compares both implementations byte for byte on every file in it.
let
  inherit (builtins)
    all
    attrNames
    concatStringsSep
    elem
    filter
    head
    isAttrs
    isBool
    isList
    isString
    length
    listToAttrs
    mapAttrs
    match
    replaceStrings
    sort
    lessThan
    typeOf
    ;

  defaultUpstream = "https://git.coopcloud.tech/coop-cloud/{recipe}.git";
  defaultBranch = "main";

  # Formats a key path as the agent does: bare keys as they are, others quoted.
  dotted = path: concatStringsSep "." (map (k: if match "[A-Za-z0-9_-]+" k != null then k else "\"${k}\"") path);

  fail = file: path: msg: throw "${file}: ${dotted path}: ${msg}";

  checkKeys = file: path: allowed: attrs:
    let unknown = filter (k: !(elem k allowed)) (attrNames attrs);
    in if unknown == [ ] then attrs else fail file (path ++ [ (head unknown) ]) "unknown key";

  # An optional typed value: `default` when absent, an error naming the key when of the wrong type.
  opt = file: path: attrs: key: pred: typeName: default:
    if !(attrs ? ${key}) then default
    else if pred attrs.${key} then attrs.${key}
    else fail file (path ++ [ key ]) "expected ${typeName}, found ${typeOf attrs.${key}}";

  # A tier as producers name their suites (agent/src/settings/rules.rs, is_tier_name): 1 to 128
  # bytes, no control character, no white space at either end, not starting with `(`.
  tierNamePattern = "[^[:cntrl:][:space:](]([^[:cntrl:]]{0,126}[^[:cntrl:][:space:]])?";
  tierName = x: match tierNamePattern x != null;
  nameOk = name: match "[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?" name != null;

  branchError = b:
    if match "[A-Za-z0-9._/+-]+" b == null then
      "branch \"${b}\" must be non-empty and use only ASCII letters, digits and . _ / + -"
    else if match "[-/.].*" b != null || match ".*[/.]" b != null || match ".*[.]lock" b != null
      || match ".*([.][.]|//|/[.]).*" b != null then
      "branch \"${b}\" is not a valid git branch name"
    else null;

  urlError = insecure: url:
    let
      parts = match "([^:/]*)://(.*)" url;
      scheme = head parts;
      rest = builtins.elemAt parts 1;
      authority = head (match "([^/]*).*" rest);
      userHost = match "(.*)@(.*)" authority;
      host = if userHost == null then authority else builtins.elemAt userHost 1;
      # A URL's credentials are never echoed: what stands before the `@` is shown as ***.
      shown = if parts == null || userHost == null then url
        else "${scheme}://***@${host}${builtins.substring (builtins.stringLength authority) (-1) rest}";
    in
    if match ".*[[:space:][:cntrl:]].*" url != null then "URL \"${shown}\" contains white space or control characters"
    else if parts == null then "URL \"${shown}\" has no scheme: use https://, ssh://, git:// or file://"
    else if scheme == "http" && !insecure then "URL \"${shown}\" uses http://: use https://, or set allow_insecure = true"
    else if !(elem scheme [ "https" "ssh" "git" "file" "http" ]) then "URL \"${shown}\" has scheme \"${scheme}\": use https://, ssh://, git:// or file://"
    else if scheme == "file" then (if match "/.*" rest == null then "URL \"${shown}\" must name an absolute path (file:///...)" else null)
    else if host == "" then "URL \"${shown}\" has no host"
    # ssh's login name is no secret; anything else before an `@` (a token as an HTTP user name,
    # a password) is a credential.
    else if userHost != null && !(scheme == "ssh" && match ".*:.*" (head userHost) == null)
    then "URL \"${shown}\" holds credentials: remove them and give the token in a token file"
    else null;

  upstreamError = template: recipe: insecure:
    let url = replaceStrings [ "{recipe}" ] [ recipe ] template;
    in if match ".*[{}].*" url != null then "\"${template}\" has a placeholder other than {recipe}" else urlError insecure url;

  # <semver>+<app version>, as the semver crate parses it, with build metadata required.
  num = "(0|[1-9][0-9]*)";
  pre = "(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)";
  build = "[0-9a-zA-Z-]+";
  releaseTagOk = tag: match "${num}[.]${num}[.]${num}(-${pre}([.]${pre})*)?[+]${build}([.]${build})*" tag != null;

  check = file: path: error: value: if error == null then value else fail file path error;

  # Validates the attribute set `builtins.fromTOML` made of an enrollment file and applies every
  # default. `file` only names the file in error messages.
  fromAttrs = file: raw:
    let
      top = checkKeys file [ ] [ "defaults" "recipe" "bridge" ] raw;
      bridge = checkKeys file [ "bridge" ] [ "also_poll" ] (opt file [ ] top "bridge" isAttrs "a table" { });
      alsoPoll = opt file [ "bridge" ] bridge "also_poll" isList "a list" [ ];
      defaults = checkKeys file [ "defaults" ] [ "upstream" "branch" "allow_insecure" "canonical" ]
        (opt file [ ] top "defaults" isAttrs "a table" { });
      dOpt = opt file [ "defaults" ] defaults;
      defaultInsecure = dOpt "allow_insecure" isBool "a boolean" false;
      defaultCanonical = dOpt "canonical" isBool "a boolean" false;
      upstreamTemplate = dOpt "upstream" isString "a string" defaultUpstream;
      defaultBranch' = dOpt "branch" isString "a string" defaultBranch;
      checkedDefaults =
        (if defaults ? upstream then
          (if match ".*[{]recipe[}].*" upstreamTemplate == null then
            fail file [ "defaults" "upstream" ] "must contain {recipe}, or every recipe would share one upstream"
          else check file [ "defaults" "upstream" ] (upstreamError upstreamTemplate "example" defaultInsecure) true)
        else true)
        && check file [ "defaults" "branch" ] (branchError defaultBranch') true;

      recipeTables = opt file [ ] top "recipe" isAttrs "a table" { };

      recipe = name: r0:
        let
          path = [ "recipe" name ];
          r = checkKeys file path
            [ "enrolled" "canonical" "upgrade_base" "tests" "reason" "upstream" "branch" "allow_insecure" "probe" "tiers" "tier_from" ]
            (if !(nameOk name) then fail file path "recipe name \"${name}\" must match [a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?"
            else if isAttrs r0 then r0 else fail file path "expected a table, found ${typeOf r0}");
          o = opt file path r;
          insecure = o "allow_insecure" isBool "a boolean" defaultInsecure;
          template = o "upstream" isString "a string" upstreamTemplate;
          branch = o "branch" isString "a string" defaultBranch';
          tests = o "tests" (t: isString t && elem t [ "required" "exempt" ]) "\"required\" or \"exempt\"" "required";
          reason = o "reason" isString "a string" null;
          upgradeBase = o "upgrade_base" isString "a string" null;
          # The tiers its results must report (docs/sweep.md): checked as the agent checks them.
          tiers =
            let t = o "tiers" isList "a list of tier names" null;
                at = path ++ [ "tiers" ];
                tierOk = x: isString x && tierName x;
                bad = builtins.filter (i: !(tierOk (builtins.elemAt t i))) (builtins.genList (i: i) (builtins.length t));
                twice = builtins.filter (i: builtins.length (filter (x: x == builtins.elemAt t i) t) > 1) (builtins.genList (i: i) (builtins.length t));
            in if t == null then null
            else if t == [ ] then fail file at "must name at least one tier, such as [\"install\"]"
            else if bad != [ ] then fail file at "entry ${toString (head bad)}: is not a tier name (1 to 128 bytes, no control character, no white space at either end, not starting with `(`)"
            else if twice != [ ] then fail file at "entry ${toString (builtins.elemAt twice 1)}: is listed twice"
            else t;
          tierFrom = o "tier_from" (t: isString t && elem t [ "auto" "suite" "classname" "file" ]) "\"auto\", \"suite\", \"classname\" or \"file\"" null;
          upstreamKey = if r ? upstream then path ++ [ "upstream" ] else if r ? allow_insecure then path ++ [ "allow_insecure" ] else [ "defaults" "upstream" ];
        in
        {
          inherit name branch tests reason tiers tierFrom;
          enrolled = o "enrolled" isBool "a boolean" true;
          probe = o "probe" isBool "a boolean" true;
          canonical = o "canonical" isBool "a boolean" defaultCanonical;
          upgrade_base = if upgradeBase == null || releaseTagOk upgradeBase then upgradeBase
            else fail file (path ++ [ "upgrade_base" ]) "\"${upgradeBase}\" is not a release tag (<semver>+<app version>)";
          upstream =
            let inherited = !(r ? upstream) && !(r ? allow_insecure);
            in if inherited && !checkedDefaults then null
            else check file upstreamKey (upstreamError template name insecure)
              (replaceStrings [ "{recipe}" ] [ name ] template);
          checked =
            builtins.seq insecure true
            && builtins.seq tiers true
            && check file (path ++ [ "branch" ]) (branchError branch) true
            && (if tests == "required" && reason != null then fail file (path ++ [ "reason" ]) "reason is only allowed with tests = \"exempt\""
                else if tests == "exempt" && (reason == null || match "[[:space:]]*" reason != null) then
                  fail file (path ++ [ "tests" ]) "tests = \"exempt\" needs a non-empty reason = \"...\" saying why"
                else true);
        };

      recipes = mapAttrs recipe recipeTables;

      # Repositories the bridge polls that are not recipes: names, each once, none a recipe.
      checkedAlsoPoll = builtins.genList
        (i:
          let n = builtins.elemAt alsoPoll i; at = [ "bridge" "also_poll" ];
          in
          if !(isString n) || !(nameOk n) then fail file at "entry ${toString i}: must be a repository name matching [a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?"
          else if recipeTables ? ${n} then fail file at "entry ${toString i}: \"${n}\" is declared as a recipe too"
          else if builtins.length (filter (m: m == n) alsoPoll) > 1 then fail file at "entry ${toString i}: \"${n}\" is listed twice"
          else n)
        (builtins.length alsoPoll);
    in
    # deepSeq: every check runs now, not when some attribute happens to be read.
    builtins.deepSeq [ checkedDefaults defaultCanonical recipes checkedAlsoPoll ] {
      recipes = mapAttrs (_: r: removeAttrs r [ "checked" ]) recipes;
      also_poll = checkedAlsoPoll;
    };

  fromFile = path: fromAttrs (toString path) (builtins.fromTOML (builtins.readFile path));

  pollRepos = enrollment:
    concatStringsSep "," (sort lessThan
      (filter (n: enrollment.recipes.${n}.enrolled) (attrNames enrollment.recipes)
        ++ (enrollment.also_poll or [ ])));
  # A duration as the agent reads one (humantime): "90s", "2m", "1h 30m". The module types its
  # duration options with it; agent/tests/suite/nix_parity.rs holds it against the agent's parser.
  durationPattern =
    "( *[0-9]+([.][0-9]+)? *(nsec|ns|usec|us|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|w|months|month|M|years|year|y))+ *";
in
{
  inherit defaultUpstream defaultBranch durationPattern tierNamePattern fromAttrs fromFile pollRepos releaseTagOk;

  # POLL_REPOS of an enrollment file, as the bridge's environment gets it.
  pollReposOfFile = path: pollRepos (fromFile path);
}
