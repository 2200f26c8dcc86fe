# Pure Nix test of nix/lib.nix against the corpus the agent's tests use. No nixpkgs needed:
#   nix-instantiate --eval --strict nix/tests/lib.nix
# evaluates to the number of corpus files checked, or fails naming the file.
let
  ccLib = import ../lib.nix;
  inherit (builtins) attrNames filter match readDir readFile tryEval length foldl' substring stringLength;

  corpus = dir: map (n: dir + "/${n}") (filter (n: match ".*\\.toml" n != null) (attrNames (readDir dir)));
  strip = s: if s != "" && substring (stringLength s - 1) 1 s == "\n" then substring 0 (stringLength s - 1) s else s;

  valid = map
    (file:
      let
        expected = strip (readFile (builtins.replaceStrings [ ".toml" ] [ ".poll-repos" ] (toString file)));
        got = ccLib.pollReposOfFile file;
      in
      if got == expected then true else throw "${toString file}: nix/lib.nix renders \"${got}\", expected \"${expected}\"")
    (corpus ../../tests/enrollment/valid);

  # TOML syntax errors abort evaluation outright (tryEval cannot catch them), so only files that
  # parse are refused here; agent/tests/suite/nix_parity.rs runs every invalid file in its own process.
  parses = file: (tryEval (builtins.fromTOML (readFile file))).success;
  invalid = map
    (file:
      if (tryEval (builtins.deepSeq (ccLib.pollReposOfFile file) true)).success
      then throw "${toString file}: nix/lib.nix accepted a file the agent refuses"
      else true)
    (filter (f: match ".*/syntax-[^/]*" (toString f) == null) (corpus ../../tests/enrollment/invalid));
in
assert length valid >= 12;
assert length invalid >= 30;
foldl' (n: ok: if ok then n + 1 else n) 0 (valid ++ invalid)
