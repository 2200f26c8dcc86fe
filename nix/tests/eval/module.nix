# Evaluates nix/module.nix with lib.evalModules (see stand-in.nix), for one of several cases:
#   nix-instantiate --eval --strict --json nix/tests/eval/module.nix \
#     --arg nixpkgsLib /path/to/nixpkgs.lib --argstr case example
# Each case checks itself and evaluates to what the driver (eval-module.sh) checks further.
{ nixpkgsLib, case, minimalHost ? null }:
let
  lib = import (nixpkgsLib + "/lib");
  standIn = import ./stand-in.nix { inherit lib; };

  evaluated = modules: lib.evalModules {
    specialArgs = { inherit (standIn) pkgs; };
    modules = [ standIn.nixos ../../module.nix ] ++ modules;
  };
  eval = modules: (evaluated modules).config;

  host = extra: eval [ ../../hosts/cc-ci/configuration.nix extra ];
  failed = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  # The message of the one failed assertion, which must name `option`.
  refusedFor = option: config:
    let msgs = failed config;
    in if builtins.length msgs == 1 && lib.hasPrefix "${option}:" (builtins.head msgs)
    then builtins.head msgs
    else throw "expected one failed assertion naming ${option}, got: ${builtins.toJSON msgs}";

  summary = config: {
    failedAssertions = failed config;
    pollRepos = config.services.cc-ci.pollRepos;
    bridgePollRepos = config.systemd.services.cc-ci-bridge.environment.POLL_REPOS;
    agentToml = config.environment.etc."cc-ci/agent.toml".source.text;
    checkUnit = config.systemd.services.cc-ci-enrollment-check.serviceConfig;
    deployUnit = if config.systemd.services ? cc-ci-deploy
      then { inherit (config.systemd.services.cc-ci-deploy) restartIfChanged stopIfChanged serviceConfig; }
      else null;
    mirrorsUnit = config.systemd.services.cc-ci-mirrors.serviceConfig;
    mirrorsTimer = config.systemd.timers.cc-ci-mirrors.timerConfig;
    units = builtins.attrNames config.systemd.services;
    requiredUnits = config.services.cc-ci.deploy.requiredUnits;
    timers = builtins.attrNames (config.systemd.timers or { });
  };

  expect = cond: msg: value: if cond then value else throw "${case}: ${msg}";

  hardened = s: expect
    (s.checkUnit.ProtectSystem == "strict" && s.checkUnit.NoNewPrivileges && s.checkUnit.PrivateTmp
      && s.checkUnit.User == "cc-ci" && s.checkUnit.StateDirectory == "cc-ci"
      && s.checkUnit.CapabilityBoundingSet == "")
    "the enrollment check unit is not hardened: ${builtins.toJSON s.checkUnit}"
    s;

  cases = {
    # The options table docs/nixos.md carries, rendered from the declarations.
    options-doc.text = import ../../options-doc.nix {
      inherit lib;
      options = (evaluated [ ../../hosts/cc-ci/configuration.nix ]).options.services.cc-ci;
    };

    # `settings` overrides what a typed option renders (the options are only defaults), and a
    # duration option refuses what the agent would refuse.
    settings-override = let
      c = host {
        services.cc-ci.deploy.flake = "/srv/cc-ci#cc-ci";
        services.cc-ci.settings.deploy.confirm_timeout = "200s";
        services.cc-ci.settings.mirrors.concurrency = 2;
        services.cc-ci.settings.lock_wait = "5m";
      };
      toml = c.environment.etc."cc-ci/agent.toml".source.text;
      has = line: builtins.elem line (lib.splitString "\n" toml);
    in
      expect (has "confirm_timeout = \"200s\"") "settings.deploy.confirm_timeout did not win: ${toml}"
        (expect (has "concurrency = 2") "settings.mirrors.concurrency did not win: ${toml}"
          (expect (has "lock_wait = \"5m\"") "settings.lock_wait did not win: ${toml}"
            (expect (has "flake = \"/srv/cc-ci#cc-ci\"") "the typed option no longer renders: ${toml}"
              { agentToml = toml; })));

    duration-bad = let
      c = host { services.cc-ci.deploy.confirmTimeout = "two minutes"; };
      tried = builtins.tryEval (builtins.deepSeq c.environment.etc."cc-ci/agent.toml".source.text true);
    in expect (!tried.success) "a duration the agent would refuse was accepted" "refused";

    # A tier name the agent would refuse (`(` starts the rows the agent adds), or with a line
    # break, is refused at evaluation; the names producers write (capitals, dots, slashes) pass.
    tier-bad = let
      refused = tiers: let c = host { services.cc-ci.sweep.tiers = tiers; };
        in !(builtins.tryEval (builtins.deepSeq c.environment.etc."cc-ci/agent.toml".source.text true)).success;
      good = host {
        services.cc-ci.sweep.tiers = [ "Install" "Tests.Registration" "example.org/app/install" ];
        services.cc-ci.sweep.tierFrom = "suite";
      };
      text = good.environment.etc."cc-ci/agent.toml".source.text;
    in expect (refused [ "(CI)" ] && refused [ "a\nb" ] && refused [ " install" ])
      "a tier name the agent refuses was accepted"
      (expect (lib.hasInfix "tier_from = \"suite\"" text) "sweep.tierFrom did not reach agent.toml" "refused");

    # The example host as the flake builds it.
    example = let s = summary (host { }); in
      expect (s.failedAssertions == [ ]) "assertions failed: ${builtins.toJSON s.failedAssertions}"
        (expect (s.pollRepos == s.bridgePollRepos) "the bridge did not get the rendered POLL_REPOS"
          (expect (builtins.elem "cc-ci-enrollment-check" s.units) "no enrollment check unit"
            (hardened s)));

    # Secrets become systemd credentials; no secret path lands in agent.toml.
    secrets = let c = host {
      services.cc-ci.forge.tokenFile = lib.mkForce "/run/secrets/forge-token";
      services.cc-ci.bridge.tokenFile = "/run/secrets/bridge-token";
    }; s = summary c; creds = unit: c.systemd.services.${unit}.serviceConfig.LoadCredential or [ ]; in
      expect (creds "cc-ci-mirrors" == [ "forge-token:/run/secrets/forge-token" ]
          && creds "cc-ci-health" == [ "bridge-token:/run/secrets/bridge-token" ]
          && creds "cc-ci-enrollment-check" == [ ])
        "each unit gets only the credentials it reads: ${builtins.toJSON (map creds [ "cc-ci-mirrors" "cc-ci-health" "cc-ci-enrollment-check" ])}"
        (expect (!lib.hasInfix "/run/secrets" s.agentToml) "a secret's path is in agent.toml" (hardened s));

    token-in-store = refusedFor "services.cc-ci.forge.tokenFile"
      (host { services.cc-ci.forge.tokenFile = lib.mkForce "${builtins.storeDir}/0000-forge-token"; });
    token-relative = refusedFor "services.cc-ci.bridge.tokenFile"
      (host { services.cc-ci.bridge.tokenFile = "secrets/bridge-token"; });
    token-in-settings = refusedFor "services.cc-ci.settings"
      (host { services.cc-ci.settings.forge.token_file = "/run/secrets/t"; });
    bridge-missing = refusedFor "services.cc-ci.bridge.unit"
      (host { services.cc-ci.bridge.unit = lib.mkForce "no-such-bridge"; });

    # A key the agent does not know reaches agent.toml, where the agent refuses it.
    unknown-setting = summary (host { services.cc-ci.settings.colour = "blue"; });

    # Options that render into agent.toml.
    rendered = summary (host {
      services.cc-ci.testsDir = "/var/lib/cc-ci-tests";
      services.cc-ci.disk.budget = lib.mkForce 1073741824;
      services.cc-ci.deploy = {
        flake = "/srv/cc-ci#cc-ci";
        confirmTimeout = "3m";
        checks = [
          { name = "bridge answers"; url = "http://127.0.0.1:8080/health"; }
          { name = "disk mounted"; command = [ "mountpoint" "-q" "/var/lib/docker" ]; }
        ];
        busyCheck.url = "http://127.0.0.1:8080/busy";
      };
    });

    # The deploy unit is root, and activation never stops or restarts it.
    deploy-unit = let s = summary (host { services.cc-ci.deploy.flake = "/srv/cc-ci#cc-ci"; }); in
      expect (!s.deployUnit.restartIfChanged && !s.deployUnit.stopIfChanged && !(s.deployUnit.serviceConfig ? User)
          && s.deployUnit.serviceConfig.PrivateTmp && !(s.deployUnit.serviceConfig ? ProtectSystem)
          # Root's journal is root's own directory, not cc-ci's.
          && s.deployUnit.serviceConfig.StateDirectory == "cc-ci-deploy"
          && s.deployUnit.serviceConfig.StateDirectoryMode == "0700")
        "cc-ci-deploy.service: ${builtins.toJSON s.deployUnit}"
        s.deployUnit;

    # Deploying what lands: a timer every 5 minutes, a unit like the deploy's that runs --auto,
    # and the timer among the units a deploy must find active.
    deploy-auto = let
      c = host {
        services.cc-ci.deploy.flake = "/srv/cc-ci#cc-ci";
        services.cc-ci.deploy.auto.enable = true;
      };
      unit = c.systemd.services.cc-ci-deploy-auto;
      timer = c.systemd.timers.cc-ci-deploy-auto.timerConfig;
    in
      expect (failed c == [ ]) "assertions failed: ${builtins.toJSON (failed c)}"
        (expect (timer == { OnCalendar = "*:0/5"; Persistent = true; RandomizedDelaySec = "30s"; })
          "cc-ci-deploy-auto.timer: ${builtins.toJSON timer}"
          (expect (!unit.restartIfChanged && !unit.stopIfChanged && lib.hasSuffix " deploy --auto" unit.serviceConfig.ExecStart
              && unit.serviceConfig.StateDirectory == "cc-ci-deploy")
            "cc-ci-deploy-auto.service: ${builtins.toJSON unit.serviceConfig}"
            (expect (builtins.elem "cc-ci-deploy-auto.timer" c.services.cc-ci.deploy.requiredUnits)
              "the timer is not among the units a deploy must find active"
              { inherit timer; })));

    # Only signed commits: the signers file reaches agent.toml, and ssh-keygen the deploy's PATH.
    deploy-signed = let
      c = host {
        services.cc-ci.deploy.flake = "/srv/cc-ci#cc-ci";
        services.cc-ci.deploy.allowedSigners = "/etc/cc-ci/allowed_signers";
      };
      toml = c.environment.etc."cc-ci/agent.toml".source.text;
    in
      expect (lib.hasInfix "allowed_signers = \"/etc/cc-ci/allowed_signers\"" toml) "allowed_signers not rendered: ${toml}"
        (expect (builtins.any (p: (p.name or "") == "openssh") c.systemd.services.cc-ci-deploy.path)
          "no ssh-keygen on the deploy's PATH"
          { agentToml = toml; });

    # The machine of the deploy VM tests (nix/tests/deploy-host.nix) is a module that evaluates,
    # and with deploy.auto it has the timer's unit, running --auto on its checkout.
    vm-deploy-host = let
      c = eval [
        (import ../deploy-host.nix { self.nixosModules.cc-ci = { }; })
        { services.cc-ci.deploy.auto.enable = true; }
      ];
    in
      expect (failed c == [ ]) "assertions failed: ${builtins.toJSON (failed c)}"
        (expect (lib.hasSuffix " deploy --auto" c.systemd.services.cc-ci-deploy-auto.serviceConfig.ExecStart)
          "no --auto unit" { inherit (c.services.cc-ci.deploy) flake; });

    # The weekly probe: off unless asked for; when on, a hardened unit with the forge's and
    # Drone's tokens by credential, a weekly persistent timer, and Drone as the busy check.
    probe-job = let
      off = host { };
      c = host {
        services.cc-ci.probe.timer.enable = true;
        services.cc-ci.probe.bridgeLogin = "cc-ci-bridge";
        services.cc-ci.drone = { url = "https://drone.example.org"; tokenFile = "/run/secrets/cc-ci-drone-token"; };
        services.cc-ci.deploy.flake = "/srv/cc-ci#cc-ci";
      };
      unit = c.systemd.services.cc-ci-probe.serviceConfig;
      timer = c.systemd.timers.cc-ci-probe.timerConfig;
      toml = c.environment.etc."cc-ci/agent.toml".source.text;
    in
      expect (!(off.systemd.services ? cc-ci-probe) && !(off.systemd.timers ? cc-ci-probe)) "a probe unit without probe.timer.enable"
        (expect (failed c == [ ]) "assertions failed: ${builtins.toJSON (failed c)}"
          (expect (timer == { OnCalendar = "weekly"; Persistent = true; RandomizedDelaySec = "10m"; })
            "cc-ci-probe.timer: ${builtins.toJSON timer}"
            (expect (unit.User == "cc-ci" && unit.ProtectSystem == "strict" && unit.NoNewPrivileges
                && lib.hasSuffix " probe" unit.ExecStart
                && unit.LoadCredential == [ "forge-token:/run/secrets/cc-ci-forge-token" "drone-token:/run/secrets/cc-ci-drone-token" ])
              "cc-ci-probe.service: ${builtins.toJSON unit}"
              (expect (lib.hasInfix "bridge_login = \"cc-ci-bridge\"" toml && lib.hasInfix "[probe.busy_check.drone]" toml
                  && lib.hasInfix "[sweep.busy_check.drone]" toml && lib.hasInfix "[deploy.busy_check.drone]" toml
                  && builtins.elem "drone-token:/run/secrets/cc-ci-drone-token" c.systemd.services.cc-ci-deploy.serviceConfig.LoadCredential)
                "Drone is not the busy check everywhere: ${toml}"
                { agentToml = toml; }))));

    # An http:// Drone only with allowInsecure, rendered as allow_insecure in every Drone table.
    insecure-drone = let
      c = host {
        services.cc-ci.probe.bridgeLogin = "cc-ci-bridge";
        services.cc-ci.drone = { url = "http://127.0.0.1:8090"; allowInsecure = true; tokenFile = "/run/secrets/t"; };
      };
      toml = c.environment.etc."cc-ci/agent.toml".source.text;
    in
      expect (failed c == [ ]) "assertions failed: ${builtins.toJSON (failed c)}"
        (expect (lib.length (lib.filter (l: l == "allow_insecure = true") (lib.splitString "\n" toml)) >= 3)
          "allow_insecure is not in each Drone table: ${toml}"
          { agentToml = toml; });
    drone-plain-http = refusedFor "services.cc-ci.drone.url"
      (host { services.cc-ci.drone = { url = "http://drone.example.org"; tokenFile = "/run/secrets/t"; }; });
    drone-no-token = refusedFor "services.cc-ci.drone.url"
      (host { services.cc-ci.drone.url = "https://drone.example.org"; });

    deploy-auto-no-flake = refusedFor "services.cc-ci.deploy.auto.enable"
      (host { services.cc-ci.deploy.auto.enable = true; });

    # The mirror sync: an hourly, persistent, randomized timer and a hardened unit with the token.
    mirrors-job = let s = summary (host { }); in
      expect (s.mirrorsTimer == { OnCalendar = "hourly"; Persistent = true; RandomizedDelaySec = "10m"; })
        "cc-ci-mirrors.timer: ${builtins.toJSON s.mirrorsTimer}"
        (expect (s.mirrorsUnit.User == "cc-ci" && s.mirrorsUnit.ProtectSystem == "strict"
            && s.mirrorsUnit.TimeoutStartSec == "1h"
            && s.mirrorsUnit.LoadCredential == [ "forge-token:/run/secrets/cc-ci-forge-token" ]
            && builtins.elem "cc-ci-mirrors.timer" s.requiredUnits)
          "cc-ci-mirrors.service: ${builtins.toJSON s.mirrorsUnit}"
          s.mirrorsUnit);

    # With a CI command, a weekly, persistent sweep; the command reaches agent.toml.
    sweep-job =
      let
        c = host {
          services.cc-ci.sweep = {
            command = [ "/srv/ci/run" "{recipe}" "{version}" "{base}" ];
            exportDir = "/var/lib/cc-ci-tests/canonical";
            extraGroups = [ "docker" ];
          };
        };
        timer = c.systemd.timers.cc-ci-sweep.timerConfig;
        unit = c.systemd.services.cc-ci-sweep.serviceConfig;
      in
      expect (timer.OnCalendar == "weekly" && timer.Persistent) "cc-ci-sweep.timer: ${builtins.toJSON timer}"
        (expect (builtins.elem "/var/lib/cc-ci-tests/canonical" unit.ReadWritePaths)
          "cc-ci-sweep.service: ${builtins.toJSON unit}"
          (summary c));

    # Recipe CI runs as a user of its own: the module declares it (with sweep.extraGroups), the
    # sweep unit is the agents' own (cc-ci, no capability) and reaches CI's unit through the
    # keeper's socket (sweep-sandbox), and each run's directory is made in /var/lib/cc-ci-runs,
    # which that user can enter and not list.
    sweep-ci-user =
      let
        c = host {
          services.cc-ci.sweep = { command = [ "/srv/ci/run" "{recipe}" ]; extraGroups = [ "docker" ]; };
        };
        unit = c.systemd.services.cc-ci-sweep.serviceConfig;
        toml = c.environment.etc."cc-ci/agent.toml".source.text;
        runner = c.users.users.cc-ci-runner;
        runs = c.systemd.tmpfiles.settings."10-cc-ci"."/var/lib/cc-ci-runs".d;
        asAgent = (host { services.cc-ci.sweep = { command = [ "/srv/ci/run" ]; runAs = null; }; });
      in
      expect (failed c == [ ]) "assertions failed: ${builtins.toJSON (failed c)}"
        (expect (unit.User == "cc-ci" && unit.StateDirectory == "cc-ci" && !(unit ? SupplementaryGroups)
            && unit.CapabilityBoundingSet == "" && unit.NoNewPrivileges && unit.ProtectSystem == "strict"
            && unit.ReadWritePaths == [ "/var/lib/cc-ci-runs" ])
          "cc-ci-sweep.service: ${builtins.toJSON unit}"
          (expect (runner.isSystemUser && runner.group == "cc-ci-runner" && runner.extraGroups == [ "docker" ]
              && (c.users.users.cc-ci.extraGroups or [ ]) == [ ])
            "users.users.cc-ci-runner: ${builtins.toJSON runner}"
            (expect (runs == { user = "cc-ci"; group = "cc-ci"; mode = "0711"; })
              "tmpfiles /var/lib/cc-ci-runs: ${builtins.toJSON runs}"
              (expect (lib.hasInfix "run_as = \"cc-ci-runner\"" toml && lib.hasInfix "run_dir = \"/var/lib/cc-ci-runs\"" toml)
                "agent.toml [sweep]: ${toml}"
                (expect (asAgent.systemd.services.cc-ci-sweep.serviceConfig.User == "cc-ci"
                    && !(asAgent.users.users ? cc-ci-runner) && !(asAgent.systemd.sockets ? cc-ci-keeper)
                    && !(lib.hasInfix "run_as" asAgent.environment.etc."cc-ci/agent.toml".source.text))
                  "with runAs = null the sweep runs as cc-ci, as before"
                  { agentToml = toml; })))));

    sweep-run-as-agent = refusedFor "services.cc-ci.sweep.runAs"
      (host { services.cc-ci.sweep = { command = [ "/srv/ci/run" ]; runAs = "cc-ci"; }; });

    # The health job: every 15 minutes; a degraded or failed fleet does not fail the unit.
    health-job =
      let
        c = host {
          services.cc-ci.health.metricsFile = "/var/lib/node-exporter/cc-ci.prom";
          services.cc-ci.bridge.reportUrl = "http://127.0.0.1:8080/cc-ci/health";
          services.cc-ci.bridge.tokenFile = "/run/secrets/bridge-token";
        };
        unit = c.systemd.services.cc-ci-health.serviceConfig;
      in
      expect (c.systemd.timers.cc-ci-health.timerConfig.OnCalendar == "*:0/15" && unit.SuccessExitStatus == [ 13 14 ]
          && builtins.elem "-/var/lib/node-exporter" unit.ReadWritePaths)
        "cc-ci-health: ${builtins.toJSON unit}"
        (summary c);

    # With a budget, a daily (at four, not with the sweep at midnight), persistent gc on the volumes directory, with no network at all.
    gc-job =
      let
        c = host { };
        unit = c.systemd.services.cc-ci-gc.serviceConfig;
        toml = c.environment.etc."cc-ci/agent.toml".source.text;
      in
      expect (c.systemd.timers.cc-ci-gc.timerConfig.OnCalendar == "*-*-* 04:00:00" && c.systemd.timers.cc-ci-gc.timerConfig.Persistent)
        "cc-ci-gc.timer: ${builtins.toJSON c.systemd.timers.cc-ci-gc.timerConfig}"
        (expect (unit.User == "cc-ci" && unit.PrivateNetwork && unit.RestrictAddressFamilies == [ "AF_UNIX" ]
            && unit.CapabilityBoundingSet == "" && unit.LoadCredential == [ ]
            && builtins.elem "/var/lib/cc-ci-volumes" unit.ReadWritePaths)
          "cc-ci-gc.service: ${builtins.toJSON unit}"
          (expect (lib.hasInfix "root = \"/var/lib/cc-ci-volumes\"" toml && lib.hasInfix "min_free = \"20G\"" toml)
            "agent.toml [disk]: ${toml}"
            (summary c)));

    # The status page: written under the state directory, which a web server may traverse, and
    # served by nginx's own module when a virtual host is named.
    status-page =
      let
        c = host { services.cc-ci.statusPage = { enable = true; nginx.virtualHost = "ci.example.org"; }; };
        toml = c.environment.etc."cc-ci/agent.toml".source.text;
        vhost = c.services.nginx.virtualHosts."ci.example.org";
      in
      expect (lib.hasInfix "dir = \"/var/lib/cc-ci/status-page\"" toml) "agent.toml [status_page]: ${toml}"
        (expect (vhost.root == "/var/lib/cc-ci/status-page" && c.services.nginx.enable)
          "nginx: ${builtins.toJSON vhost}"
          (expect (c.systemd.services.cc-ci-mirrors.serviceConfig.StateDirectoryMode == "0751")
            "StateDirectoryMode: ${c.systemd.services.cc-ci-mirrors.serviceConfig.StateDirectoryMode}"
            (summary c)));

    # A virtual host for a page nobody writes is refused, naming the option.
    status-page-vhost-alone = refusedFor "services.cc-ci.statusPage.nginx.virtualHost"
      (host { services.cc-ci.statusPage.nginx.virtualHost = "ci.example.org"; });

    # Docker volumes: the docker CLI from virtualisation.docker, and the docker group for its socket.
    gc-docker =
      let
        c = host {
          virtualisation.docker = { enable = true; package = { type = "derivation"; name = "docker"; outPath = "/nix/store/00000000000000000000000000000000-docker"; }; };
          services.cc-ci.disk.volumes = { kind = "docker"; root = lib.mkForce null; };
        };
        unit = c.systemd.services.cc-ci-gc.serviceConfig;
        toml = c.environment.etc."cc-ci/agent.toml".source.text;
      in
      expect (unit.SupplementaryGroups == [ "docker" ] && !(unit ? ReadWritePaths && builtins.elem null unit.ReadWritePaths))
        "cc-ci-gc.service: ${builtins.toJSON unit}"
        (expect (lib.hasInfix "docker = \"/nix/store/00000000000000000000000000000000-docker/bin/docker\"" toml)
          "agent.toml [disk.volumes]: ${toml}"
          (summary c));

    disk-root-missing = refusedFor "services.cc-ci.disk.volumes.root"
      (host { services.cc-ci.disk.volumes.root = lib.mkForce null; });

    disk-docker-disabled = refusedFor "services.cc-ci.disk.volumes.kind"
      (host { services.cc-ci.disk.volumes = { kind = "docker"; root = lib.mkForce null; }; });

    # Without one, no sweep unit at all.
    no-sweep-command = expect (!(builtins.elem "cc-ci-sweep" (summary (host { })).units)) "a sweep unit without a command" true;

    forge-gitea-incomplete = refusedFor "services.cc-ci.forge"
      (host { services.cc-ci.forge.org = lib.mkForce null; });

    deploy-check-both = refusedFor "services.cc-ci.deploy.checks"
      (host { services.cc-ci.deploy.checks = [ { name = "x"; url = "http://h/"; command = [ "true" ]; } ]; });

    # ---- A real host's first day (issue 40). ----

    # A landed commit that turns the deploy timer off must not stop the deploy applying it:
    # switch-to-configuration stops removed units unless X-StopOnRemoval is false.
    deploy-stop-on-removal = let
      c = host { services.cc-ci.deploy = { flake = "/srv/cc-ci#cc-ci"; auto.enable = true; }; };
      kept = unit: (c.systemd.services.${unit}.unitConfig or { }).X-StopOnRemoval or true == false;
    in expect (kept "cc-ci-deploy" && kept "cc-ci-deploy-auto")
      "the deploy units may be stopped by their own removal: ${builtins.toJSON (map (u: c.systemd.services.${u}.unitConfig or { }) [ "cc-ci-deploy" "cc-ci-deploy-auto" ])}"
      true;

    # One mode for the state directory, from one place: the tmpfiles rule (re-applied at every
    # boot and activation) and every unit's StateDirectoryMode agree, with and without the page.
    state-dir-mode = let
      modes = c: {
        tmpfiles = c.systemd.tmpfiles.settings."10-cc-ci"."/var/lib/cc-ci".d.mode;
        units = lib.unique (lib.mapAttrsToList (_: u: u.serviceConfig.StateDirectoryMode)
          (lib.filterAttrs (_: u: (u.serviceConfig.StateDirectory or null) == "cc-ci") c.systemd.services));
      };
      plain = modes (host { });
      page = modes (host { services.cc-ci.statusPage.enable = true; });
    in expect (plain.units == [ plain.tmpfiles ] && page.units == [ page.tmpfiles ] && page.tmpfiles == "0751")
      "the state directory has two modes: ${builtins.toJSON { inherit plain page; }}"
      true;

    # Deploys reach the network: after network-online.target, with the proxy nixpkgs' own
    # auto-upgrade passes; so do the jobs that talk to the forge.
    deploy-network = let
      c = host {
        services.cc-ci.deploy = { flake = "/srv/cc-ci#cc-ci"; auto.enable = true; };
        networking.proxy.envVars = { https_proxy = "http://proxy.example.org:3128"; };
        nix.envVars = { http_proxy = "http://proxy.example.org:3128"; };
      };
      online = unit: let u = c.systemd.services.${unit}; in
        builtins.elem "network-online.target" (u.after or [ ]) && builtins.elem "network-online.target" (u.wants or [ ])
        && (u.environment.https_proxy or null) == "http://proxy.example.org:3128";
      bad = lib.filter (u: !online u) [ "cc-ci-deploy" "cc-ci-deploy-auto" "cc-ci-mirrors" ];
    in expect (bad == [ ]) "no network or no proxy for ${builtins.toJSON bad}" true;

    # A directory a unit is given to write, and that may not exist yet, fails no unit: each is
    # made by the module or marked optional ("-").
    paths-missing = let
      c = host {
        services.cc-ci.health.metricsFile = "/var/lib/node-exporter/cc-ci.prom";
        services.cc-ci.sweep = { command = [ "/srv/ci/run" ]; exportDir = "/var/lib/cc-ci-tests/canonical"; };
      };
      made = lib.attrNames c.systemd.tmpfiles.settings."10-cc-ci";
      unsafe = lib.concatLists (lib.mapAttrsToList (name: u:
        map (p: "${name}: ${p}") (lib.filter (p: !(lib.hasPrefix "-" p) && !(builtins.elem p made))
          (u.serviceConfig.ReadWritePaths or [ ])))
        c.systemd.services);
    in expect (unsafe == [ ]) "paths a unit needs and nothing makes: ${builtins.toJSON unsafe}" true;

    # The README's host: a token and no forge. No mirror job that fails every hour: an
    # assertion names the option.
    forge-kind-missing = refusedFor "services.cc-ci.forge.kind"
      (host { services.cc-ci.forge = { kind = lib.mkForce null; url = lib.mkForce null; org = lib.mkForce null; }; });

    # Without a forge at all, no mirror job and no probe job; without deploy.flake, no deploy
    # unit (it would build `.#cc-ci` from /).
    no-forge-no-flake = let
      c = host { services.cc-ci.forge = { kind = lib.mkForce null; url = lib.mkForce null; org = lib.mkForce null; tokenFile = lib.mkForce null; }; };
      units = builtins.attrNames c.systemd.services;
    in expect (failed c == [ ]) "assertions failed: ${builtins.toJSON (failed c)}"
      (expect (!(builtins.elem "cc-ci-mirrors" units) && !(builtins.elem "cc-ci-deploy" units)
          && !(builtins.elem "cc-ci-mirrors.timer" c.services.cc-ci.deploy.requiredUnits))
        "units that cannot work: ${builtins.toJSON units}" true);

    # Values the agent would refuse at run time are refused at evaluation: a URL with a user
    # name or password (it would sit in agent.toml, in the store), a relative path, a delay
    # systemd cannot read.
    values-checked = let
      refused = extra: let c = host extra; in
        !(builtins.tryEval (builtins.deepSeq [ c.environment.etc."cc-ci/agent.toml".source.text c.systemd.timers ] true)).success;
      cases = {
        forge-url = { services.cc-ci.forge.url = lib.mkForce "https://bot:secret@git.example.org"; };
        report-url = { services.cc-ci.bridge.reportUrl = "http://u:p@127.0.0.1:8080/health"; services.cc-ci.bridge.tokenFile = "/run/t"; };
        drone-url = { services.cc-ci.drone = { url = "https://admin:pw@drone.example.org"; tokenFile = "/run/t"; }; };
        tests-dir = { services.cc-ci.testsDir = "tests"; };
        forge-path = { services.cc-ci.forge = { kind = lib.mkForce "local"; path = "mirrors"; }; };
        export-dir = { services.cc-ci.sweep = { command = [ "/srv/ci/run" ]; exportDir = "canonical"; }; };
        metrics-file = { services.cc-ci.health.metricsFile = "cc-ci.prom"; };
        delay = { services.cc-ci.mirrors.timer.randomizedDelaySec = "ten minutes"; };
      };
      accepted = lib.attrNames (lib.filterAttrs (_: extra: !(refused extra)) cases);
    in expect (accepted == [ ]) "accepted at evaluation: ${builtins.toJSON accepted}"
      (expect (!(refused { services.cc-ci.mirrors.timer.randomizedDelaySec = "1h 30min"; }))
        "a delay systemd reads was refused" true);

    # Recipe CI runs in a unit of its own, under a sandbox that fits a CI (a JIT, namespaces,
    # devices), started through a socket only cc-ci may use; the sweep itself is the agent's
    # code and runs as cc-ci under the agents' sandbox, with no root and no capability.
    sweep-sandbox = let
      c = host { services.cc-ci.sweep.command = [ "/srv/ci/run" "{recipe}" ]; };
      tight = host {
        services.cc-ci.sweep.command = [ "/srv/ci/run" "{recipe}" ];
        services.cc-ci.sweep.sandbox.MemoryDenyWriteExecute = true;
      };
      sweep = c.systemd.services.cc-ci-sweep.serviceConfig;
      socket = c.systemd.sockets.cc-ci-keeper.socketConfig or { };
      keeper = c.systemd.services."cc-ci-keeper@".serviceConfig or { };
      toml = c.environment.etc."cc-ci/agent.toml".source.text;
    in expect (sweep.User == "cc-ci" && sweep.MemoryDenyWriteExecute && sweep.RestrictNamespaces
        && sweep.CapabilityBoundingSet == "")
      "the sweep unit is not the agent's sandbox: ${builtins.toJSON sweep}"
      (expect (socket.ListenSequentialPacket or null == "/run/cc-ci/keeper.sock" && socket.Accept or false
          && socket.SocketUser or null == "root" && socket.SocketGroup or null == "cc-ci" && socket.SocketMode or null == "0660")
        "cc-ci-keeper.socket: ${builtins.toJSON socket}"
        (expect (!(keeper ? User) && !(keeper.MemoryDenyWriteExecute or false) && !(keeper.RestrictNamespaces or false)
            && !(keeper.PrivateDevices or false) && keeper.NoNewPrivileges or false
            && keeper.CapabilityBoundingSet or null == [ "CAP_SETUID" "CAP_SETGID" "CAP_CHOWN" "CAP_KILL" ])
          "cc-ci-keeper@.service: ${builtins.toJSON keeper}"
          (expect (lib.hasInfix "keeper_socket = \"/run/cc-ci/keeper.sock\"" toml)
            "agent.toml [sweep]: ${toml}"
            (expect (tight.systemd.services."cc-ci-keeper@".serviceConfig.MemoryDenyWriteExecute)
              "sweep.sandbox does not reach the CI's unit" true))));

    # gc and the sweep do not start at the same minute, and a job that finds another holding
    # the host lock (exit 4) or CI busy (exit 5) is skipped, not a failed unit.
    stagger = let
      c = host { services.cc-ci.sweep.command = [ "/srv/ci/run" ]; };
      at = name: c.systemd.timers."cc-ci-${name}".timerConfig.OnCalendar;
      busyOk = name: let ok = c.systemd.services."cc-ci-${name}".serviceConfig.SuccessExitStatus or [ ]; in
        builtins.elem 4 ok && builtins.elem 5 ok;
      failing = lib.filter (n: !(busyOk n)) [ "gc" "sweep" "mirrors" ];
    in expect (at "gc" != "daily" || at "sweep" != "weekly")
      "gc (${at "gc"}) and the sweep (${at "sweep"}) both start at midnight"
      (expect (failing == [ ]) "a busy host fails ${builtins.toJSON failing}" true);

    # The package's own tests run in its check phase: what they call is there.
    package-check-inputs = let
      fake = name: { type = "derivation"; inherit name; outPath = "/nix/store/00000000000000000000000000000000-${name}"; };
      drv = import ../../package.nix {
        inherit lib;
        rustPlatform.buildRustPackage = args: args;
        util-linux = fake "util-linux"; git = fake "git"; openssh = fake "openssh"; gnupg = fake "gnupg";
        openssl = fake "openssl"; python3 = fake "python3" // { withPackages = _: fake "python3-with-pytest"; };
      };
      names = map (d: d.name) drv.nativeCheckInputs;
      missing = lib.filter (n: !(builtins.elem n names)) [ "util-linux" "git" "openssh" "gnupg" ];
    in expect (missing == [ ]) "the check phase lacks ${builtins.toJSON missing}" names;

    # The flake for x86_64 and Arm hosts: its outputs, with a stand-in nixpkgs, have the
    # package, the checks and an example host for both systems.
    flake-systems = let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      nixpkgs = {
        lib = lib // {
          nixosSystem = { modules }: lib.evalModules {
            specialArgs = { inherit (standIn) pkgs; };
            modules = [ standIn.nixos ] ++ modules;
          };
        };
        legacyPackages = lib.genAttrs systems (system: standIn.pkgs // {
          stdenv.hostPlatform.system = system;
          runCommand = name: _: _: { inherit name; };
          mkShell = _: { };
        });
      };
      flake = (import ../../../flake.nix).outputs { self = flake; inherit nixpkgs; };
      missing = lib.filter (sys: !(flake.packages ? ${sys} && flake.checks ? ${sys} && flake.devShells ? ${sys})) systems;
      platform = name: flake.nixosConfigurations.${name}.config.nixpkgs.hostPlatform;
    in expect (missing == [ ]) "no package, checks or shell for ${builtins.toJSON missing}"
      (expect (platform "cc-ci" == "x86_64-linux" && platform "cc-ci-aarch64" == "aarch64-linux")
        "the example hosts' platforms: ${platform "cc-ci"}, ${platform "cc-ci-aarch64"}"
        (expect (failed flake.nixosConfigurations.cc-ci-aarch64.config == [ ]) "the Arm example host's assertions fail"
          (builtins.attrNames flake.checks.aarch64-linux)));

    # docs/nixos.md's minimal host (eval-module.sh cuts it out of the page): its assertions
    # hold, and it has what a first day needs: the bridge gets POLL_REPOS, the mirror job has a
    # forge and its token, and no unit that cannot work.
    minimal-host = let
      c = eval [ minimalHost ];
      units = builtins.attrNames c.systemd.services;
      bridge = c.systemd.services.${c.services.cc-ci.bridge.unit};
    in expect (failed c == [ ]) "assertions failed: ${builtins.toJSON (failed c)}"
      (expect (bridge.environment.POLL_REPOS == c.services.cc-ci.pollRepos && builtins.elem "cc-ci-mirrors" units
          && c.systemd.services.cc-ci-mirrors.serviceConfig.LoadCredential != [ ])
        "the minimal host is not a working host: ${builtins.toJSON units}"
        (builtins.filter (lib.hasPrefix "cc-ci") units));

    # `cc-ci ARGS` runs a job by hand as its unit does: systemd-run with the unit's user,
    # credentials, state directory and sandbox; deploy and rollback stay root's.
    cc-ci-command = let
      c = host { services.cc-ci.sweep.command = [ "/srv/ci/run" "{recipe}" ]; };
      found = lib.filter (p: (p.name or "") == "cc-ci") c.environment.systemPackages;
      text = (builtins.head found).text;
      line = job: lib.findFirst (l: lib.hasPrefix "    ${job})" l) "" (lib.splitString "\n" text);
      has = job: part: lib.hasInfix part (line job);
    in expect (found != [ ] && lib.hasInfix "systemd-run --quiet --wait --collect" text)
      "no cc-ci command on the host's PATH"
      (expect (has "mirrors" "'--property=User=cc-ci'" && has "mirrors" "'--property=LoadCredential=forge-token:/run/secrets/cc-ci-forge-token'"
          && has "mirrors" "'--property=StateDirectory=cc-ci'" && has "mirrors" "'--property=ProtectSystem=strict'"
          && has "mirrors" "'--setenv=CC_CI_AGENT_CONFIG=/etc/cc-ci/agent.toml'"
          && has "gc" "'--property=PrivateNetwork=yes'" && has "sweep" "'--property=ReadWritePaths=/var/lib/cc-ci-runs'"
          && !(has "mirrors" "ExecStart") && !(has "mirrors" "SuccessExitStatus"))
        "cc-ci does not run a job as its unit does:\n${text}"
        (expect (lib.hasInfix "deploy|rollback|\"\")" text) "deploy and rollback are not root's own" true));

    # An invalid enrollment stops evaluation with the file and key named.
    invalid-enrollment = summary (host {
      services.cc-ci.enrollmentFile = lib.mkForce ../../../tests/enrollment/invalid/name-uppercase.toml;
    });
  };
in
cases.${case}
