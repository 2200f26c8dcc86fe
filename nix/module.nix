# services.cc-ci: the agent of a Co-op Cloud recipe CI host, and the bridge's enrollment.
#
# One declarative enrollment file (enrollmentFile) renders the bridge's POLL_REPOS here, through
# nix/lib.nix, and is read by the agent through agent.toml: both apply the same rules.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.cc-ci;
  ccLib = import ./lib.nix;
  settingsFormat = pkgs.formats.toml { };

  stateDir = "/var/lib/cc-ci";
  # The state directory's one mode, for its tmpfiles rule (re-applied at every boot and
  # activation) and every unit's StateDirectoryMode alike: 0751 with the status page, so a web
  # server may reach its directory and never list the rest (the agent's files are 0640).
  stateDirMode = if cfg.statusPage.enable then "0751" else "0750";
  # Where the keeper service listens: one keeper, as root, for each sweep that connects.
  keeperSocket = "/run/cc-ci/keeper.sock";
  keeperService = cfg.sweep.command != null && cfg.sweep.runAs != null;
  # Each CI run's directory is made here (`[sweep] run_dir`): the CI user must enter it, and
  # finds nothing else in it (0711).
  runDir = "/var/lib/cc-ci-runs";
  runnerHome = "/var/lib/cc-ci-runner";
  ciUser = cfg.sweep.runAs;
  # Root's deploy journal and work directory: recipe CI runs as cc-ci and can write stateDir.
  deployStateDir = "/var/lib/cc-ci-deploy";
  configPath = "/etc/cc-ci/agent.toml";
  exe = lib.getExe cfg.package;

  # Secrets reach units as systemd credentials under these names; the agent looks for them in
  # $CREDENTIALS_DIRECTORY when agent.toml names no token file.
  # Each unit gets only the credentials its job reads. A credential whose file is missing fails
  # its unit, so no unit carries one it does not need.
  credentialsFor = job: map (c: "${c.name}:${c.file}") (lib.filter (c: c.file != null && lib.elem job c.jobs) [
    { name = "forge-token"; file = cfg.forge.tokenFile; jobs = [ "mirrors" "sweep" "probe" ]; }
    { name = "bridge-token"; file = cfg.bridge.tokenFile; jobs = [ "health" ]; }
    { name = "drone-token"; file = cfg.drone.tokenFile; jobs = [ "sweep" "probe" ]; }
  ]);

  # Hardening shared by every agent unit that does not need root.
  hardening = {
    User = "cc-ci";
    Group = "cc-ci";
    StateDirectory = "cc-ci";
    StateDirectoryMode = stateDirMode;
    UMask = "0027";
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    NoNewPrivileges = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    ProcSubset = "pid";
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RemoveIPC = true;
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    SystemCallArchitectures = "native";
    SystemCallFilter = [ "@system-service" "~@privileged" "~@resources" ];
    RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
  };

  # A secret's file: a path as a string, so the secret never enters the Nix store; units get it
  # as the systemd credential `credential`.
  tokenFileOption = what: credential: lib.mkOption {
    type = lib.types.nullOr lib.types.str;
    default = null;
    example = "/run/secrets/cc-ci-${credential}";
    description = "File holding ${what}. A path as a string, so the secret never enters the Nix store; units get it as the systemd credential `${credential}`.";
  };

  timerOptions = job: defaultCalendar: {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = "Whether to run the ${job} job on a timer.";
    };
    onCalendar = lib.mkOption {
      type = lib.types.str;
      default = defaultCalendar;
      example = "*-*-* 04:00:00";
      description = "When the ${job} job runs, as a systemd `OnCalendar` expression.";
    };
    persistent = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = "Whether a run missed while the host was off happens at the next boot (`Persistent`).";
    };
    randomizedDelaySec = lib.mkOption {
      type = timeSpanType;
      default = "10m";
      description = "Random delay before each run (`RandomizedDelaySec`), so jobs do not start in lockstep.";
    };
  };

  # Recipe CI's own unit, when it runs as a user of its own: `cc-ci-keeper@.service`, started by
  # `cc-ci-keeper.socket` for each sweep that connects (docs/reliability.md). The keeper is root
  # with four capabilities (to give each run's directory to the CI user, start CI as that user,
  # end what it leaves running), and its sandbox is one a CI can work in: a JIT (Node, a JVM,
  # Chromium) needs memory both written and run, Chromium's own sandbox and containers need
  # namespaces, a test may need a device or to raise its limits. What CI never needs stays
  # closed; `sweep.sandbox` tightens or widens it. The sweep itself, the agent's own code,
  # keeps the agents' sandbox.
  ciSandbox = lib.getAttrs [
    "NoNewPrivileges" "ProtectSystem" "ProtectHome" "PrivateTmp" "ProtectKernelTunables"
    "ProtectKernelModules" "ProtectKernelLogs" "ProtectControlGroups" "ProtectClock"
    "ProtectHostname" "RestrictRealtime" "RestrictSUIDSGID" "LockPersonality" "SystemCallArchitectures"
  ] hardening // {
    CapabilityBoundingSet = [ "CAP_SETUID" "CAP_SETGID" "CAP_CHOWN" "CAP_KILL" ];
    ReadWritePaths = [ runDir runnerHome ] ++ lib.optional (cfg.disk.budget != null && gcOnDirectories && cfg.disk.volumes.root != null) cfg.disk.volumes.root;
    RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
    # Everything CI started ends with the keeper (the sweep gone, done or killed).
    KillMode = "control-group";
  };

  # The jobs the agent runs on timers. `available` is false for a job whose command this agent
  # version does not have yet: its options exist, no unit is made for it.
  jobs = {
    # timeout: TimeoutStartSec, so a job that hangs is stopped and its timer fires again. The
    # sweep's is above its own run_timeout (24h by default), which ends it cleanly first.
    # Without a forge there is nothing to sync to (and an assertion refuses half a forge).
    mirrors = { timer = cfg.mirrors.timer; argv = [ "mirrors" "sync" ]; available = cfg.forge.kind != null; timeout = "1h"; };
    sweep = { timer = cfg.sweep.timer; argv = [ "sweep" ]; available = cfg.sweep.command != null; timeout = "25h"; };
    health = { timer = cfg.health.timer; argv = [ "health" ]; available = true; timeout = "15min"; };
    gc = { timer = cfg.disk.gc.timer; argv = [ "gc" ]; available = cfg.disk.budget != null; timeout = "3h"; };
    # Above probe.timeout (15 min) for each recipe probed; a run ends itself first. Its timer
    # without a Gitea forge is refused by an assertion.
    probe = { timer = cfg.probe.timer; argv = [ "probe" ]; available = true; timeout = "12h"; };
  };

  # A job's unit (`cc-ci-<name>.service`), for its timer and for `cc-ci`, the command that
  # runs a job by hand the way its unit does.
  jobUnit = name: job: (lib.optionalAttrs (name != "gc") online) // {
    description = "cc-ci: ${name}";
    path = [ pkgs.git ]
      # CI's PATH is the sweep's, handed to the keeper with the rest of its environment.
      ++ lib.optionals (name == "sweep") cfg.sweep.extraPackages
      # health reads the bridge unit's environment with systemctl.
      ++ lib.optionals (name == "health") [ config.systemd.package ];
    environment = lib.optionalAttrs (name != "gc") networkEnvironment // { CC_CI_AGENT_CONFIG = configPath; };
    serviceConfig = hardening // {
      Type = "oneshot";
      TimeoutStartSec = job.timeout;
      ExecStart = lib.escapeShellArgs ([ exe ] ++ job.argv);
      LoadCredential = credentialsFor name;
      # Each is made by the module (tmpfiles), or may be missing ("-": the agent then says
      # so itself, instead of the unit failing to start).
      ReadWritePaths = lib.optional (cfg.forge.kind == "local" && cfg.forge.path != null) cfg.forge.path
        ++ lib.optional (name == "health" && cfg.health.metricsFile != null) "-${dirOf cfg.health.metricsFile}"
        ++ lib.optional (name == "sweep" && cfg.sweep.exportDir != null) cfg.sweep.exportDir
        ++ lib.optional (name == "gc" && gcOnDirectories) cfg.disk.volumes.root
        # Each run's directory is made here, as cc-ci, and given to the CI user.
        ++ lib.optionals (name == "sweep" && ciUser != null) [ runDir ];
    } // lib.optionalAttrs (name == "sweep" && ciUser == null || name == "gc" && !gcOnDirectories) {
      SupplementaryGroups = lib.optionals (name == "sweep") cfg.sweep.extraGroups
        # The docker socket is group docker's.
        ++ lib.optionals (name == "gc" && !gcOnDirectories) [ "docker" ];
    } // {
      # gc talks to nothing but the filesystem and, for docker, its unix socket.
      PrivateNetwork = name == "gc";
      RestrictAddressFamilies = if name == "gc" then [ "AF_UNIX" ] else hardening.RestrictAddressFamilies;
      # A job that found another holding its lock (4) or CI busy (5) skipped its turn: the
      # unit did its job, and a failed unit would read as a regression to the next deploy.
      # So does health reporting a degraded (13) or failed (14) fleet.
      SuccessExitStatus = if name == "health" then [ 13 14 ] else [ 4 5 ];
    };
  };

  # `cc-ci ARGS`: `cc-ci-agent ARGS` run by hand the way its job's unit runs it, through
  # `systemd-run` with the unit's properties: the service user, its credentials, its state
  # directory and sandbox, its environment; output and exit code to the terminal. A command
  # with no unit of its own (enrollment, canonical, history, state, status-page) runs as the
  # agent's units do, with no credential. Root's own jobs, deploy and rollback, stay root.
  byHand =
    let
      available = lib.filterAttrs (_: j: j.available) jobs;
      values = v:
        if builtins.isList v then map toString v
        else if builtins.isBool v then [ (if v then "yes" else "no") ]
        else [ (toString v) ];
      # What systemd-run is told: every setting of the unit but how it starts and ends.
      properties = unit:
        let kept = builtins.removeAttrs unit.serviceConfig [ "Type" "ExecStart" "TimeoutStartSec" "SuccessExitStatus" ];
        in lib.concatLists (lib.mapAttrsToList (k: v: map (x: "--property=${k}=${x}") (values v)) kept)
          ++ lib.mapAttrsToList (k: v: "--setenv=${k}=${v}") (unit.environment // {
            PATH = lib.makeBinPath (unit.path ++ [ pkgs.coreutils pkgs.findutils pkgs.gnugrep pkgs.gnused config.systemd.package ]);
          });
      family = name: unit: "    ${name}) properties=(${lib.escapeShellArgs (properties unit)}) ;;";
      other = jobUnit "other" { argv = [ ]; timeout = "infinity"; };
    in
    pkgs.writeShellScriptBin "cc-ci" ''
      set -euo pipefail
      # cc-ci ARGS: cc-ci-agent ARGS, run as its job's unit runs it (docs/nixos.md, "By hand").
      agent=${lib.escapeShellArg exe}
      job=
      skip=
      for arg in "$@"; do
        if [ -n "$skip" ]; then skip=; continue; fi
        case "$arg" in
          --config|--format) skip=1 ;;
          -*) ;;
          *) job=$arg; break ;;
        esac
      done
      case "$job" in
        # Root's own: they activate systems.
        deploy|rollback|"")
          exec "$agent" "$@" ;;
      esac
      if [ "$(id -u)" != 0 ]; then
        echo "cc-ci: run it as root (sudo cc-ci $*): it starts the command as its unit's user, with the unit's credentials" >&2
        exit 2
      fi
      case "$job" in
      ${lib.concatStringsSep "
" (lib.mapAttrsToList (name: job: family name (jobUnit name job)) available)}
          *) properties=(${lib.escapeShellArgs (properties other)}) ;;
      esac
      # A terminal gets one (progress lines, colour, Ctrl-C); a pipe gets the output as it is.
      if [ -t 0 ] && [ -t 1 ]; then how=--pty; else how=--pipe; fi
      exec ${config.systemd.package}/bin/systemd-run --quiet --wait --collect "$how" \
        --unit="cc-ci-by-hand-$$" "''${properties[@]}" -- "$agent" "$@"
    '';

  # Drone, asked whether CI is busy (sweep, probe, and deploy without a busyCheck of its own).
  droneTable = { inherit (cfg.drone) url; } // lib.optionalAttrs cfg.drone.allowInsecure { allow_insecure = true; };
  droneBusyCheck = lib.optionalAttrs (cfg.drone.url != null && cfg.drone.busyCheck) { drone = droneTable; };
  activeJobs = lib.filterAttrs (_: j: j.available && j.timer.enable) jobs;

  # What a unit that reaches the network is given, as nixpkgs' system.autoUpgrade gives its
  # own: Nix's and the host's proxy settings.
  networkEnvironment = config.nix.envVars // config.networking.proxy.envVars;
  online = {
    after = [ "network-online.target" ];
    wants = [ "network-online.target" ];
  };

  # The deploy's unit: root, and left alone by the activation it performs.
  deployUnit = description: argv: online // {
    description = "cc-ci: ${description}";
    restartIfChanged = false;
    stopIfChanged = false;
    # Nor stopped by it when it removes this unit (a landed commit that turns the timer off):
    # switch-to-configuration stops removed units unless told not to, as nixpkgs' auto-upgrade
    # tells it.
    unitConfig.X-StopOnRemoval = false;
    # git verifies SSH signatures with ssh-keygen, OpenPGP ones with gpg.
    path = [ config.system.build.nixos-rebuild config.nix.package pkgs.git config.systemd.package ]
      ++ lib.optionals (cfg.deploy.allowedSigners != null) [ pkgs.openssh pkgs.gnupg ];
    environment = networkEnvironment // { CC_CI_AGENT_CONFIG = configPath; };
    serviceConfig = {
      Type = "oneshot";
      # Above build_timeout (1h by default) plus verification: the deploy ends itself first.
      TimeoutStartSec = "2h";
      ExecStart = lib.escapeShellArgs ([ exe ] ++ argv);
      # Drone's token, when the deploy asks Drone whether CI is busy.
      LoadCredential = lib.optional (cfg.deploy.busyCheck == null && droneBusyCheck != { }) "drone-token:${cfg.drone.tokenFile}";
      # Root, and no ProtectSystem, capability or namespace limits: activation writes the
      # profiles, /etc and the boot loader, sets the hostname, and restarts anything. What
      # activation never needs is still closed.
      PrivateTmp = true;
      LockPersonality = true;
      RestrictRealtime = true;
      SystemCallArchitectures = "native";
      RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
      # Its journal and builds live in a directory of root's own: stateDir is cc-ci's, and
      # recipe CI runs as cc-ci. It still takes the agent lock in stateDir, through no link.
      StateDirectory = "cc-ci-deploy";
      StateDirectoryMode = "0700";
      # A deploy that did not deploy (refused, rolled back) fails the unit; the journal
      # (`cc-ci-agent deploy status`) says why.
    };
  };

  # A URL the agent is given: http(s), and nothing before an `@` in its authority (a user name
  # or password would sit in agent.toml, in the store every user can read).
  urlType = lib.types.strMatching "https?://[^@/?#[:space:]]+([/?#][^[:space:]]*)?"
    // { description = "http(s) URL without credentials"; };

  # A directory or file on the host, given as a string so nothing is copied to the store.
  absolutePath = lib.types.strMatching "/[^[:cntrl:]]*" // { description = "absolute path"; };

  # A delay as systemd reads one ("30s", "10m", "1h 30min"), or whole seconds.
  timeSpanType = lib.types.either lib.types.ints.unsigned (lib.types.strMatching "[0-9]+|${ccLib.durationPattern}")
    // { description = "systemd time span (\"30s\", \"10m\", \"1h 30min\") or whole seconds"; };

  sizeType = lib.types.either lib.types.ints.unsigned (lib.types.strMatching "[0-9]+[KMGT]?");

  # A duration as the agent reads one (humantime): "90s", "2m", "1h 30m"; or whole seconds.
  # Checked at evaluation, so a typo stops the build instead of the agent at run time.
  durationType = lib.types.either lib.types.ints.unsigned (lib.types.strMatching ccLib.durationPattern)
    // { description = "duration (\"90s\", \"2m\", \"1h 30m\") or whole seconds"; };

  # What the typed options render is a default: `settings` wins where it says otherwise.
  # (Values already given a priority, such as lock_wait's mkDefault, keep theirs.)
  asDefaults = lib.mapAttrsRecursiveCond (v: !(v ? _type)) (_: v: if v ? _type then v else lib.mkDefault v);

  gcOnDirectories = cfg.disk.volumes.kind == "directory";

  isStorePath = p: lib.hasPrefix "${builtins.storeDir}/" (toString p);

  # TOML has no null: options left unset are left out, and the agent's defaults apply.
  dropNulls = lib.filterAttrs (_: v: v != null);

  checkOptions = {
    name = lib.mkOption { type = lib.types.str; description = "What the check is called in reports."; };
    url = lib.mkOption {
      type = lib.types.nullOr urlType;
      default = null;
      description = "GET this URL; a 2xx answer passes.";
    };
    command = lib.mkOption {
      type = lib.types.nullOr (lib.types.nonEmptyListOf lib.types.str);
      default = null;
      description = "Run this argv (no shell); exit 0 passes.";
    };
    timeout = lib.mkOption { type = durationType; default = "10s"; description = "How long one try may take."; };
  };
in
{
  options.services.cc-ci = {
    enable = lib.mkEnableOption "the cc-ci recipe CI host agent";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The cc-ci-agent package.";
    };

    enrollmentFile = lib.mkOption {
      type = lib.types.path;
      example = lib.literalExpression "./enrollment.toml";
      description = ''
        The enrollment file: which recipes this host tracks (see docs/enrollment.md). It is checked
        at evaluation time; its enrolled recipes become the bridge's `POLL_REPOS`.
      '';
    };

    pollRepos = lib.mkOption {
      type = lib.types.str;
      readOnly = true;
      default = ccLib.pollReposOfFile cfg.enrollmentFile;
      defaultText = lib.literalMD "the enrolled recipes of `enrollmentFile`, sorted, comma-joined";
      description = "The `POLL_REPOS` value rendered from `enrollmentFile` (read-only).";
    };

    testsDir = lib.mkOption {
      type = lib.types.nullOr absolutePath;
      default = null;
      example = "/var/lib/cc-ci-tests";
      description = ''
        Directory holding one test suite per recipe (`<dir>/<recipe>/`). When set, an enrolled
        recipe without a suite and without an exemption fails `cc-ci-enrollment-check.service`.
      '';
    };

    bridge = {
      unit = lib.mkOption {
        type = lib.types.strMatching "[A-Za-z0-9:_.@-]+";
        default = "cc-ci-bridge";
        description = "Name of the bridge's systemd service (without `.service`); it gets `POLL_REPOS`.";
      };
      reportUrl = lib.mkOption {
        type = lib.types.nullOr urlType;
        default = null;
        example = "http://127.0.0.1:8080/cc-ci/health";
        description = "Where the health job POSTs its reports, with the bridge token as a bearer token.";
      };
      tokenFile = tokenFileOption "the bridge's bearer token" "bridge-token";
    };

    forge = {
      kind = lib.mkOption {
        type = lib.types.nullOr (lib.types.enum [ "gitea" "local" ]);
        default = null;
        description = "Where mirrors live: a Gitea/Forgejo org, or a local directory of bare repositories.";
      };
      url = lib.mkOption {
        type = lib.types.nullOr urlType;
        default = null;
        example = "https://git.autonomic.zone";
        description = "The forge's base URL (`kind = \"gitea\"`).";
      };
      org = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "recipe-maintainers";
        description = "The org holding the mirrors (`kind = \"gitea\"`).";
      };
      path = lib.mkOption {
        type = lib.types.nullOr absolutePath;
        default = null;
        example = "/srv/git/mirrors";
        description = "Directory of bare repositories `<recipe>.git` (`kind = \"local\"`).";
      };
      allowInsecure = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Allow an http:// forge URL (loopback tests only).";
      };
      tokenFile = tokenFileOption "the mirror forge's API token" "forge-token";
    };

    mirrors = {
      timer = timerOptions "mirror sync" "hourly";
      concurrency = lib.mkOption {
        type = lib.types.ints.between 1 64;
        default = 8;
        description = "Recipes synced at once.";
      };
      closeMergedPrs = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = "Close open mirror pull requests whose head commit is already on upstream's branch.";
      };
    };
    sweep = {
      timer = timerOptions "canonical sweep" "weekly";
      command = lib.mkOption {
        type = lib.types.nullOr (lib.types.nonEmptyListOf lib.types.str);
        default = null;
        example = [ "/srv/cc-ci-tests/run" "{recipe}" "--version" "{version}" "--base" "{base}" "--cold" ];
        description = ''
          The CI run, an argv template (no shell): `{recipe}`, `{version}`, `{commit}`,
          `{mirror_url}`, `{workdir}`, `{base}`, `{results}`. Exit 0 is green, unless `tiers` is set. Unset: no sweep job is made.
        '';
      };
      teardown = lib.mkOption {
        type = lib.types.nullOr (lib.types.nonEmptyListOf lib.types.str);
        default = null;
        description = "Run after every CI run, pass or fail, with the same placeholders.";
      };
      timeout = lib.mkOption { type = durationType; default = "2h"; description = "Longest one recipe's CI run may take."; };
      exportDir = lib.mkOption {
        type = lib.types.nullOr absolutePath;
        default = null;
        example = "/var/lib/cc-ci-tests/canonical";
        description = "Where `<recipe>/canonical.json` files are written after each promotion.";
      };
      allowPrerelease = lib.mkOption { type = lib.types.bool; default = false; description = "Let pre-release tags become canonicals."; };
      tiers = lib.mkOption {
        type = lib.types.nullOr (lib.types.nonEmptyListOf (lib.types.strMatching ccLib.tierNamePattern));
        default = null;
        example = [ "install" "upgrade" "backup" "functional" ];
        description = "The tiers every recipe's JUnit results in `{results}` must report green to be promoted (docs/sweep.md, \"Greenness\"); an enrollment entry's `tiers` replaces it for that recipe. Unset: a run is judged by its exit code.";
      };
      tierFrom = lib.mkOption {
        type = lib.types.enum [ "auto" "suite" "classname" "file" ];
        default = "auto";
        description = "Where a test case's tier is read (docs/sweep.md, \"Greenness\"): `suite` (the `<testsuite name>`), `classname` (its first dotted part, or the case name's when the classname is empty), `file` (the results file's name: `{results}/install.xml` is tier `install`), or `auto`. An enrollment entry's `tier_from` replaces it for that recipe.";
      };
      extraPackages = lib.mkOption {
        type = lib.types.listOf lib.types.package;
        default = [ ];
        description = "Packages the CI command needs on its PATH.";
      };
      extraGroups = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [ "docker" ];
        description = "Supplementary groups of the user recipe CI runs as (`runAs`; a CI that drives Docker needs `docker`, which makes it root-equivalent on this host: docs/reliability.md). With `runAs = null`, of the sweep unit.";
      };
      runAs = lib.mkOption {
        type = lib.types.nullOr (lib.types.strMatching "[a-z_][a-z0-9_-]{0,31}");
        default = "cc-ci-runner";
        description = ''
          The user recipe CI runs as, declared by this module (a system user with a group of its own
          and `extraGroups`): not the agent's user, so CI can neither write the ledger, the outbox
          or the page nor read the agent's tokens. The sweep unit then starts as root and runs the
          sweep as `cc-ci` (docs/reliability.md). `null`: CI runs as `cc-ci`, which `health` warns of.
        '';
      };
      sandbox = lib.mkOption {
        type = lib.types.attrsOf (lib.types.oneOf [ lib.types.bool lib.types.str lib.types.int (lib.types.listOf lib.types.str) ]);
        default = { };
        example = { MemoryDenyWriteExecute = true; PrivateDevices = true; RestrictNamespaces = true; };
        description = ''
          systemd settings for the unit recipe CI runs in (`cc-ci-keeper@.service`, with `runAs`),
          over the module's, which fit a CI (a JIT, namespaces, devices allowed; no root, no new
          privileges, the system read-only but the run's directory, the CI user's home and the
          volumes): tighten it for a CI that needs less, widen it for one that needs more.
        '';
      };
    };
    drone = {
      url = lib.mkOption {
        type = lib.types.nullOr urlType;
        default = null;
        example = "https://drone.example.org";
        description = "The Drone server CI runs on: the probe reads its builds, and `busyCheck` asks it whether CI is busy.";
      };
      tokenFile = tokenFileOption "a Drone token of an admin user (Drone lists builds in flight to admins only)" "drone-token";
      allowInsecure = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Allow an http:// Drone URL, which sends the admin token in clear text (loopback tests only).";
      };
      busyCheck = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = "With `url`: sweep, probe and deploy (unless `deploy.busyCheck` is set) wait while Drone has a build pending or running.";
      };
    };

    probe = {
      timer = timerOptions "probe" "weekly" // {
        enable = lib.mkEnableOption "the weekly probe: `cc-ci-agent probe` posts `!testme` on a scratch pull request of each recipe's mirror that is due (never proven, stopped last time, changed, or proven longer ago than `maxAge`) and waits for CI to start and report back (docs/probe.md)";
      };
      comment = lib.mkOption {
        type = lib.types.singleLineStr;
        default = "!testme";
        description = "The trigger the bridge answers, posted as the probe comment's first line.";
      };
      timeout = lib.mkOption { type = durationType; default = "15m"; description = "How long one recipe's probe waits for the bridge, the build and its result."; };
      maxAge = lib.mkOption { type = durationType; default = "30d"; description = "A proof older than this is probed again."; };
      bridgeLogin = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "cc-ci-bridge";
        description = "The bridge's forge user: when set, only its reactions, replies and statuses show that it picked a probe up.";
      };
    };

    health = {
      timer = timerOptions "health report" "*:0/15";
      metricsFile = lib.mkOption {
        type = lib.types.nullOr absolutePath;
        default = null;
        example = "/var/lib/prometheus-node-exporter-text-files/cc-ci.prom";
        description = "Prometheus text file for node_exporter's textfile collector.";
      };
    };

    deploy = {
      # Deploying what lands: the timer that runs `cc-ci-agent deploy --auto` (docs/deploy.md).
      auto = timerOptions "deploy-what-lands" "*:0/5" // {
        enable = lib.mkEnableOption "deploying what lands on the checkout's upstream branch: every `onCalendar`, `cc-ci-agent deploy --auto` fast-forwards the `deploy.flake` checkout to its upstream and deploys it with verify-and-rollback (an idle host does one `ls-remote`)";
        randomizedDelaySec = lib.mkOption {
          type = timeSpanType;
          default = "30s";
          description = "Random delay before each run (`RandomizedDelaySec`).";
        };
      };

      allowedSigners = lib.mkOption {
        type = lib.types.nullOr lib.types.path;
        default = null;
        example = lib.literalExpression "./allowed_signers";
        description = "Only deploy commits signed by one of these keys: OpenPGP public keys, armored (`gpg --armor --export`), or SSH keys in git's `gpg.ssh.allowedSignersFile` format (`PRINCIPAL namespaces=\"git\" KEY`). The commit `deploy` builds, and the one `--pull`/`--auto` would move to, is checked before anything changes; otherwise the deploy is `refused-unsigned`. Public keys: the file may be in the store.";
      };

      flake = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "/srv/cc-ci#cc-ci";
        description = ''
          The configuration `cc-ci-agent deploy` builds: a local git checkout and a configuration
          name, `PATH#NAME`. Unset: `.#cc-ci` relative to where the agent runs.
        '';
      };
      requireSynced = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = "Refuse to deploy a checkout whose HEAD is not its upstream branch's commit.";
      };
      confirmTimeout = lib.mkOption {
        type = durationType;
        default = "120s";
        description = "When the dead-man switch rolls an unconfirmed deploy back; at least `verifyTimeout` + 5s, plus the time activation takes.";
      };
      verifyTimeout = lib.mkOption {
        type = durationType;
        default = "60s";
        description = "How long checks may take to pass after activation (the grace period).";
      };
      requiredUnits = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ "${cfg.bridge.unit}.service" "cc-ci-enrollment-check.service" ]
          ++ map (name: "cc-ci-${name}.timer") (lib.attrNames activeJobs)
          ++ lib.optional cfg.deploy.auto.enable "cc-ci-deploy-auto.timer"
          ++ lib.optional keeperService "cc-ci-keeper.socket";
        defaultText = lib.literalMD "the bridge, the enrollment check, and the agent's timers";
        description = "Units that must be active after activation.";
      };
      checks = lib.mkOption {
        type = lib.types.listOf (lib.types.submodule { options = checkOptions; });
        default = [ ];
        example = lib.literalExpression ''[ { name = "bridge answers"; url = "http://127.0.0.1:8080/health"; } ]'';
        description = "Checks that must pass after activation, each a URL or a command (not both).";
      };
      busyCheck = lib.mkOption {
        type = lib.types.nullOr (lib.types.submodule {
          options = {
            url = lib.mkOption { type = lib.types.nullOr urlType; default = null; description = "2xx: idle; 423: busy."; };
            command = lib.mkOption { type = lib.types.nullOr (lib.types.nonEmptyListOf lib.types.str); default = null; description = "Exit 0: idle; exit 1: busy."; };
            timeout = lib.mkOption { type = durationType; default = "10s"; description = "How long the check may take."; };
          };
        });
        default = null;
        description = "How to tell that a CI build is in flight, so a deploy does not cut it off.";
      };
    };

    disk = {
      budget = lib.mkOption {
        type = lib.types.nullOr sizeType;
        default = null;
        example = "200G";
        description = ''
          Most bytes warm volumes may take in all: a number, or digits with K, M, G or T (powers of
          1024). With a budget, the daily `cc-ci-gc` job keeps the volumes under it (see docs/disk.md).
        '';
      };
      minFree = lib.mkOption {
        type = sizeType;
        default = 0;
        example = "20G";
        description = "Free space to keep on the volumes' filesystem; gc deletes beyond the budget to keep it.";
      };
      grace = lib.mkOption {
        type = durationType;
        default = "1d";
        example = "3d";
        description = "How long a volume nobody protects may stay after its last use before gc may delete it.";
      };
      pin = lib.mkOption {
        type = lib.types.listOf (lib.types.strMatching "[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?(@[^/]+)?");
        default = [ ];
        example = [ "plausible" "custom-html@1.0.0+1.25.3" ];
        description = "Volumes gc never deletes: every volume of a recipe, or `recipe@version` for one.";
      };
      volumes = {
        kind = lib.mkOption {
          type = lib.types.enum [ "directory" "docker" ];
          default = "directory";
          description = ''
            Where warm volumes live: `directory`, one directory per volume under `root`; or
            `docker`, Docker volumes labelled `cc-ci.recipe` and `cc-ci.version`.
          '';
        };
        root = lib.mkOption {
          type = lib.types.nullOr absolutePath;
          default = null;
          example = "/var/lib/cc-ci-volumes";
          description = "With kind = \"directory\": the directory holding one directory per volume.";
        };
        dockerDataRoot = lib.mkOption {
          type = absolutePath;
          default = "/var/lib/docker";
          description = "With kind = \"docker\": Docker's data root, whose filesystem `minFree` is about.";
        };
      };
      # Not at midnight, when the weekly sweep starts: both take the host lock.
      gc.timer = timerOptions "warm-volume garbage collection" "*-*-* 04:00:00";
    };

    statusPage = {
      enable = lib.mkEnableOption "the status page: a static site of the fleet (docs/status-page.md), written under the state directory and rewritten by every job that changes the ledger; the state directory becomes traversable (mode 0751, not listable) so a web server can reach it";
      dir = lib.mkOption {
        type = lib.types.str;
        default = "${stateDir}/status-page";
        defaultText = lib.literalExpression ''"/var/lib/cc-ci/status-page"'';
        readOnly = true;
        description = "Where the page is written (read-only): serve this directory.";
      };
      nginx.virtualHost = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "ci.example.org";
        description = "Serve the page through the host's `services.nginx` at this virtual host; nginx's own module does the serving (TLS and the rest are set on `services.nginx.virtualHosts.<name>`).";
      };
    };

    settings = lib.mkOption {
      type = lib.types.submodule {
        freeformType = settingsFormat.type;
        options = {
          enrollment_file = lib.mkOption {
            type = lib.types.str;
            # Interpolation, not toString: the file is copied to the store and kept in the closure.
            default = "${cfg.enrollmentFile}";
            defaultText = lib.literalExpression "\"\${config.services.cc-ci.enrollmentFile}\"";
            description = "The enrollment file the agent reads.";
          };
          state_dir = lib.mkOption {
            type = lib.types.str;
            default = stateDir;
            readOnly = true;
            description = "Where the agent keeps its state database and lock (the units' `StateDirectory`).";
          };
        };
      };
      default = { };
      description = ''
        The agent's configuration, rendered to `${configPath}` (see docs/configuration.md). Keys the
        agent does not know are errors when it starts, so a typo here fails loudly.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions =
      [
        {
          # This module itself defines the unit's environment, so ask whether anything runs there.
          assertion =
            let bridge = config.systemd.services.${cfg.bridge.unit} or { };
            in (bridge.serviceConfig or { }) ? ExecStart || (bridge.script or "") != "";
          message = "services.cc-ci.bridge.unit: no systemd service named \"${cfg.bridge.unit}\" runs anything on this host (no ExecStart or script), so POLL_REPOS would reach nothing.";
        }
      ]
      ++ lib.concatMap
        (opt: [
          {
            assertion = opt.value == null || !isStorePath opt.value;
            message = "services.cc-ci.${opt.name}: \"${toString opt.value}\" is in the Nix store, which every user can read: keep the secret outside it and give its path as a string.";
          }
          {
            assertion = opt.value == null || lib.hasPrefix "/" opt.value;
            message = "services.cc-ci.${opt.name}: \"${toString opt.value}\" must be an absolute path.";
          }
        ])
        [
          { name = "forge.tokenFile"; value = cfg.forge.tokenFile; }
          { name = "bridge.tokenFile"; value = cfg.bridge.tokenFile; }
          { name = "drone.tokenFile"; value = cfg.drone.tokenFile; }
        ]
      ++ map
        (c: {
          assertion = (c.url == null) != (c.command == null);
          message = "services.cc-ci.deploy.checks: check \"${c.name}\" needs exactly one of url or command.";
        })
        cfg.deploy.checks
      ++ [
        {
          assertion = !cfg.deploy.auto.enable || cfg.deploy.flake != null;
          message = "services.cc-ci.deploy.auto.enable: deploying what lands needs services.cc-ci.deploy.flake, the checkout to pull and deploy (\"/srv/cc-ci#cc-ci\").";
        }
        {
          assertion = cfg.bridge.reportUrl == null || cfg.bridge.tokenFile != null;
          message = "services.cc-ci.bridge.reportUrl: reports need services.cc-ci.bridge.tokenFile for their bearer token.";
        }
        {
          assertion = cfg.forge.kind != "gitea" || (cfg.forge.url != null && cfg.forge.org != null);
          message = "services.cc-ci.forge: kind = \"gitea\" needs services.cc-ci.forge.url and services.cc-ci.forge.org.";
        }
        {
          assertion = cfg.forge.kind != null
            || (cfg.forge.url == null && cfg.forge.org == null && cfg.forge.path == null && cfg.forge.tokenFile == null);
          message = "services.cc-ci.forge.kind: the forge is half set (a url, org, path or tokenFile, and no kind), so the mirror job would fail every hour: set kind = \"gitea\" (with url and org) or \"local\" (with path).";
        }
        {
          assertion = cfg.forge.kind != "local" || cfg.forge.path != null;
          message = "services.cc-ci.forge.path: kind = \"local\" needs the directory of bare repositories.";
        }
        {
          assertion = cfg.deploy.busyCheck == null || (cfg.deploy.busyCheck.url == null) != (cfg.deploy.busyCheck.command == null);
          message = "services.cc-ci.deploy.busyCheck: needs exactly one of url or command.";
        }
        {
          assertion = cfg.disk.budget == null || cfg.disk.volumes.kind != "directory"
            || (cfg.disk.volumes.root != null && lib.hasPrefix "/" cfg.disk.volumes.root);
          message = "services.cc-ci.disk.volumes.root: with a disk budget and kind = \"directory\", name the volumes' directory by an absolute path.";
        }
        {
          assertion = cfg.disk.budget == null || cfg.disk.volumes.kind != "docker" || (config.virtualisation.docker.enable or false);
          message = "services.cc-ci.disk.volumes.kind: \"docker\" needs virtualisation.docker.enable, whose docker CLI gc runs.";
        }
        {
          assertion = cfg.drone.url == null || !(lib.hasPrefix "http://" cfg.drone.url) || cfg.drone.allowInsecure;
          message = "services.cc-ci.drone.url: an http:// URL sends Drone's admin token in clear text: use https://, or set services.cc-ci.drone.allowInsecure = true.";
        }
        {
          assertion = cfg.drone.url == null || cfg.drone.tokenFile != null;
          message = "services.cc-ci.drone.url: asking Drone needs services.cc-ci.drone.tokenFile, an admin's token.";
        }
        {
          assertion = !cfg.probe.timer.enable || cfg.forge.kind == "gitea";
          message = "services.cc-ci.probe.timer.enable: the probe comments on pull requests, which needs services.cc-ci.forge.kind = \"gitea\".";
        }
        {
          assertion = !(cfg.settings ? forge && cfg.settings.forge ? token_file) && !(cfg.settings ? bridge && cfg.settings.bridge ? token_file);
          message = "services.cc-ci.settings: set secrets with services.cc-ci.forge.tokenFile and services.cc-ci.bridge.tokenFile, which pass them as systemd credentials, not as token_file settings.";
        }
        {
          assertion = !(builtins.elem ciUser [ "cc-ci" "root" ]);
          message = "services.cc-ci.sweep.runAs: \"${toString ciUser}\" is not a user of recipe CI's own: CI run as it could write the agent's ledger or anything at all; name another user, or null to run CI as cc-ci.";
        }
        {
          assertion = cfg.statusPage.nginx.virtualHost == null || cfg.statusPage.enable;
          message = "services.cc-ci.statusPage.nginx.virtualHost: set, but services.cc-ci.statusPage.enable is not, so there is no page to serve.";
        }
      ];

    services.cc-ci.settings = asDefaults ({
      # The timers fire around the same hours: a job that meets another's lock waits its turn.
      lock_wait = lib.mkDefault "30m";
      bridge = { inherit (cfg.bridge) unit; } // lib.optionalAttrs (cfg.bridge.reportUrl != null) { report_url = cfg.bridge.reportUrl; };
      mirrors = {
        inherit (cfg.mirrors) concurrency;
        close_merged_prs = cfg.mirrors.closeMergedPrs;
      };
      health = dropNulls {
        metrics_file = cfg.health.metricsFile;
        # The default weekly sweep, plus a day: a week without a finished sweep is said.
        sweep_within =
          if cfg.sweep.command != null && cfg.sweep.timer.enable && cfg.sweep.timer.onCalendar == "weekly"
          then lib.mkDefault "8d" else null;
      };
      sweep = dropNulls {
        inherit (cfg.sweep) command teardown timeout;
        busy_check = if droneBusyCheck != { } then droneBusyCheck else null;
        canonical_export_dir = cfg.sweep.exportDir;
        allow_prerelease = cfg.sweep.allowPrerelease;
        inherit (cfg.sweep) tiers;
        tier_from = cfg.sweep.tierFrom;
        run_as = ciUser;
        run_dir = if ciUser != null then runDir else null;
        keeper_socket = if ciUser != null then keeperSocket else null;
      };
      deploy = dropNulls {
        inherit (cfg.deploy) flake;
        allowed_signers = if cfg.deploy.allowedSigners == null then null else "${cfg.deploy.allowedSigners}";
        state_dir = deployStateDir;
        require_synced = cfg.deploy.requireSynced;
        confirm_timeout = cfg.deploy.confirmTimeout;
        verify_timeout = cfg.deploy.verifyTimeout;
        required_units = cfg.deploy.requiredUnits;
        checks = map dropNulls cfg.deploy.checks;
        busy_check = if cfg.deploy.busyCheck != null then dropNulls cfg.deploy.busyCheck
          else if droneBusyCheck != { } then droneBusyCheck else null;
      };
      probe = dropNulls {
        inherit (cfg.probe) comment timeout;
        max_age = cfg.probe.maxAge;
        bridge_login = cfg.probe.bridgeLogin;
        drone = if cfg.drone.url != null then droneTable else null;
        busy_check = if droneBusyCheck != { } then droneBusyCheck else null;
      };
    }
    // lib.optionalAttrs (cfg.forge.kind != null) {
      forge = dropNulls {
        inherit (cfg.forge) kind url org path;
        allow_insecure = if cfg.forge.allowInsecure then true else null;
      };
    }
    // lib.optionalAttrs (cfg.testsDir != null) { tests_dir = cfg.testsDir; }
    // lib.optionalAttrs cfg.statusPage.enable { status_page.dir = cfg.statusPage.dir; }
    // lib.optionalAttrs (cfg.disk.budget != null) {
      disk = {
        inherit (cfg.disk) budget grace pin;
        min_free = cfg.disk.minFree;
        volumes =
          if cfg.disk.volumes.kind == "directory"
          then { kind = "directory"; inherit (cfg.disk.volumes) root; }
          else { kind = "docker"; docker = lib.getExe' config.virtualisation.docker.package "docker"; data_root = cfg.disk.volumes.dockerDataRoot; };
      };
    });

    environment.etc."cc-ci/agent.toml".source = settingsFormat.generate "cc-ci-agent.toml" cfg.settings;

    services.nginx = lib.mkIf (cfg.statusPage.enable && cfg.statusPage.nginx.virtualHost != null) {
      enable = true;
      virtualHosts.${cfg.statusPage.nginx.virtualHost} = {
        root = cfg.statusPage.dir;
        locations."/".extraConfig = "autoindex off;";
      };
    };
    environment.systemPackages = [ cfg.package byHand ];

    systemd.services =
      {
        ${cfg.bridge.unit}.environment.POLL_REPOS = cfg.pollRepos;

        # Runs at boot and on every activation that changes the enrollment or the agent: a
        # failed check is a failed unit, which a verified deploy treats as a regression.
        cc-ci-enrollment-check = {
          description = "cc-ci: check the enrollment and that every enrolled recipe is testable";
          wantedBy = [ "multi-user.target" ];
          restartTriggers = [ config.environment.etc."cc-ci/agent.toml".source cfg.enrollmentFile ];
          environment.CC_CI_AGENT_CONFIG = configPath;
          serviceConfig = hardening // {
            Type = "oneshot";
            RemainAfterExit = true;
            TimeoutStartSec = "5min";
            ExecStart = "${exe} enrollment check";
            PrivateNetwork = true;
          };
        };

      }
      // lib.optionalAttrs (cfg.deploy.flake != null) {
        # `systemctl start cc-ci-deploy` deploys without a login session to lose. It runs as root
        # (it activates systems), and activation must neither stop nor restart it: it is the
        # process doing the activating, and may be replacing its own package. Without
        # deploy.flake there is nothing to deploy (it would build `.#cc-ci` from /): no unit.
        cc-ci-deploy = deployUnit "deploy the host's configuration with verify-and-rollback" [ "deploy" ];
      }
      // lib.optionalAttrs cfg.deploy.auto.enable {
        # The same unit for the timer: pull what landed, deploy it, or do nothing (one ls-remote).
        cc-ci-deploy-auto = deployUnit "deploy what lands on the checkout's upstream branch" [ "deploy" "--auto" ];
      }
      // lib.optionalAttrs keeperService {
        # One keeper per sweep that connects (cc-ci-keeper.socket, Accept=yes): root, to run
        # recipe CI as sweep.runAs in this unit, under a sandbox that fits a CI.
        "cc-ci-keeper@" = {
          description = "cc-ci: run recipe CI as ${ciUser} for a sweep";
          serviceConfig = ciSandbox // cfg.sweep.sandbox // {
            ExecStart = lib.escapeShellArgs [ exe "internal" "keeper" "--runner" ciUser "--job-user" "cc-ci" ];
            # The sweep's own timeout (sweep.timeout per run) ends CI first.
            TimeoutStopSec = "30s";
          };
        };
      }
      // lib.mapAttrs' (name: job: lib.nameValuePair "cc-ci-${name}" (jobUnit name job)) activeJobs;

    systemd.timers = lib.mapAttrs'
      (name: job: lib.nameValuePair "cc-ci-${name}" {
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = job.timer.onCalendar;
          Persistent = job.timer.persistent;
          RandomizedDelaySec = job.timer.randomizedDelaySec;
        };
      })
      activeJobs
    // lib.optionalAttrs cfg.deploy.auto.enable {
      cc-ci-deploy-auto = {
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = cfg.deploy.auto.onCalendar;
          Persistent = cfg.deploy.auto.persistent;
          RandomizedDelaySec = cfg.deploy.auto.randomizedDelaySec;
        };
      };
    };

    systemd.sockets = lib.optionalAttrs keeperService {
      cc-ci-keeper = {
        description = "cc-ci: where a sweep asks for a keeper to run recipe CI as ${ciUser}";
        wantedBy = [ "sockets.target" ];
        socketConfig = {
          ListenSequentialPacket = keeperSocket;
          Accept = true;
          # The sweep's user alone may ask (and the keeper checks who asked).
          SocketUser = "root";
          SocketGroup = "cc-ci";
          SocketMode = "0660";
          DirectoryMode = "0755";
          MaxConnections = 4;
        };
      };
    };

    systemd.tmpfiles.settings."10-cc-ci" = {
      ${stateDir}.d = {
        user = "cc-ci";
        group = "cc-ci";
        mode = stateDirMode;
      };
    } // lib.optionalAttrs (cfg.sweep.command != null && ciUser != null) {
      ${runDir}.d = {
        user = "cc-ci";
        group = "cc-ci";
        mode = "0711";
      };
      ${runnerHome}.d = {
        user = ciUser;
        group = ciUser;
        mode = "0700";
      };
    } // lib.optionalAttrs (cfg.sweep.command != null && cfg.sweep.exportDir != null) {
      # The sweep writes <recipe>/canonical.json here; the test harness reads it.
      ${cfg.sweep.exportDir}.d = {
        user = "cc-ci";
        group = "cc-ci";
        mode = "0755";
      };
    } // lib.optionalAttrs (cfg.forge.kind == "local" && cfg.forge.path != null) {
      # The mirrors: bare repositories the agent makes and the bridge and CI read.
      ${cfg.forge.path}.d = {
        user = "cc-ci";
        group = "cc-ci";
        mode = "0755";
      };
    } // lib.optionalAttrs (cfg.disk.budget != null && gcOnDirectories && cfg.disk.volumes.root != null) {
      # CI runs make volumes here (group cc-ci); gc, as cc-ci, must be able to remove them.
      ${cfg.disk.volumes.root}.d = {
        user = "cc-ci";
        group = "cc-ci";
        mode = "2770";
      };
    };

    users.users = {
      cc-ci = {
        isSystemUser = true;
        group = "cc-ci";
        home = stateDir;
        description = "cc-ci agent";
      };
    } // lib.optionalAttrs (ciUser != null && cfg.sweep.command != null) {
      ${ciUser} = {
        isSystemUser = true;
        group = ciUser;
        home = runnerHome;
        inherit (cfg.sweep) extraGroups;
        description = "cc-ci recipe CI";
      };
    };
    users.groups = { cc-ci = { }; } // lib.optionalAttrs (ciUser != null && cfg.sweep.command != null) { ${ciUser} = { }; };
  };
}
