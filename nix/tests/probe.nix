# The probe against a real Gitea: the mirror job makes the mirror in an org, then the probe job
# (`cc-ci-probe.service`, as cc-ci, sandboxed) opens the scratch pull request and comments
# `!testme`; a stand-in bridge, polling Gitea's API for the recipes in its POLL_REPOS, reacts and
# starts a build on a stand-in Drone, whose build sets commit statuses through Gitea's API. The
# recipe is proven, health says so, and upstream and the mirror's branch and tags are untouched.
# The stand-ins are nix/tests/probe-stand-ins.py; Gitea is nixpkgs' own, and holds upstream too
# (org coop-cloud): a repository root made on the disk would not be cc-ci's, and git (2.45 and
# later) refuses to read a repository another user owns ("dubious ownership").
{ pkgs, self }:
let
  standIns = pkgs.writeScript "probe-stand-ins" ''
    #!${pkgs.python3.interpreter}
    ${builtins.readFile ./probe-stand-ins.py}
  '';
  # A file of the repository, not one a derivation writes: the module reads it at evaluation,
  # and reading a built file there is import from derivation, which a flake check refuses.
  enrollment = ./probe-enrollment.toml;
  secret = name: "/run/secrets/${name}";
in
pkgs.testers.runNixOSTest {
  name = "cc-ci-probe";

  nodes.machine = { lib, ... }: {
    imports = [
      self.nixosModules.cc-ci
      ../hosts/cc-ci/configuration.nix
    ];
    services.gitea = {
      enable = true;
      settings = {
        server = { HTTP_PORT = 3000; DOMAIN = "localhost"; ROOT_URL = "http://localhost:3000/"; };
        service.DISABLE_REGISTRATION = true;
      };
    };
    services.cc-ci = {
      enrollmentFile = lib.mkForce enrollment;
      forge = {
        url = lib.mkForce "http://localhost:3000";
        allowInsecure = true;
        tokenFile = lib.mkForce (secret "cc-ci-forge-token");
      };
      drone = { url = "http://127.0.0.1:8090"; allowInsecure = true; tokenFile = secret "cc-ci-drone-token"; };
      probe = { timer.enable = true; timeout = "3m"; bridgeLogin = "bridge-bot"; };
      settings.probe = { poll_interval = "2s"; min_interval = "0s"; };
    };
    # The bridge: started by the test once its tokens exist.
    systemd.services.cc-ci-bridge = {
      wantedBy = lib.mkForce [ ];
      serviceConfig = {
        ExecStart = lib.mkForce "${standIns} bridge";
        LoadCredential = [ "gitea-token:${secret "bridge-gitea-token"}" "drone-token:${secret "cc-ci-drone-token"}" ];
      };
    };
    systemd.services.drone-stand-in = {
      description = "Drone (stand-in): its API's calls, and builds that set commit statuses on Gitea";
      serviceConfig = {
        DynamicUser = true;
        ExecStart = "${standIns} drone";
        LoadCredential = [ "gitea-token:${secret "cc-ci-forge-token"}" "drone-token:${secret "cc-ci-drone-token"}" ];
      };
    };
    environment.systemPackages = [ pkgs.git pkgs.curl pkgs.gitea ];
  };

  testScript = ''
    import json

    machine.wait_for_unit("gitea.service")
    machine.wait_for_open_port(3000)

    def gitea(args):
        return machine.succeed(f"su -l gitea -s /bin/sh -c 'GITEA_WORK_DIR=/var/lib/gitea gitea {args}'").strip()

    # The agent's user owns the org it mirrors into; the bridge's user only reads and comments.
    gitea("admin user create --admin --username cc-ci-bot --password cc-ci-bot-pw-1 --email bot@localhost --must-change-password=false")
    token = gitea("admin user generate-access-token --username cc-ci-bot --token-name agent --scopes write:repository,write:organization,write:issue,write:user --raw")
    gitea("admin user create --username bridge-bot --password bridge-bot-pw-1 --email bridge@localhost --must-change-password=false")
    bridge = gitea("admin user generate-access-token --username bridge-bot --token-name bridge --scopes read:repository,write:issue --raw")
    api = "http://localhost:3000/api/v1"
    auth = f"-H 'Authorization: token {token}'"
    machine.succeed(f"curl -sf -X POST {auth} -H 'Content-Type: application/json' -d '{{\"username\": \"recipe-maintainers\"}}' {api}/orgs")
    machine.succeed(
        "install -d -m 0755 /run/secrets"
        f" && printf %s {token} > /run/secrets/cc-ci-forge-token"
        f" && printf %s {bridge} > /run/secrets/bridge-gitea-token"
        " && printf %s drone-admin-token-0123456789 > /run/secrets/cc-ci-drone-token"
        " && chmod 0400 /run/secrets/*"
    )

    # Upstream: a release on main, in an org of its own on the same Gitea, public.
    machine.succeed(f"curl -sf -X POST {auth} -H 'Content-Type: application/json' -d '{{\"username\": \"coop-cloud\"}}' {api}/orgs")
    machine.succeed(f"curl -sf -X POST {auth} -H 'Content-Type: application/json' -d '{{\"name\": \"plausible\"}}' {api}/orgs/coop-cloud/repos")
    upstream = "http://localhost:3000/coop-cloud/plausible.git"
    machine.succeed(
        "git init -q -b main /tmp/work && cd /tmp/work"
        " && git -c user.name=t -c user.email=t@localhost commit -q --allow-empty -m 'a recipe'"
        " && git -c user.name=t -c user.email=t@localhost tag -a -m release 1.0.0+2.1.0"
        f" && git push -q http://cc-ci-bot:{token}@localhost:3000/coop-cloud/plausible.git main --tags"
    )
    machine.succeed("systemctl start cc-ci-mirrors.service")
    mirror = "http://localhost:3000/recipe-maintainers/plausible.git"
    upstream_refs = machine.succeed(f"git ls-remote {upstream}")
    mirror_refs = machine.succeed(f"git ls-remote {mirror} refs/heads/main 'refs/tags/*'")
    assert mirror_refs.split() and "refs/tags/1.0.0+2.1.0" in mirror_refs, mirror_refs

    machine.succeed("systemctl start drone-stand-in.service cc-ci-bridge.service")
    machine.wait_for_open_port(8090)
    # Gitea marks a new repository non-empty from a queue after its first push; until then it
    # lists no pull requests (404).
    machine.wait_until_succeeds(f"curl -sf {auth} {api}/repos/recipe-maintainers/plausible/pulls")

    machine.succeed("systemctl start cc-ci-probe.service")
    print(machine.succeed("journalctl -u cc-ci-probe.service -u cc-ci-bridge.service -u drone-stand-in.service --no-pager"))
    result = machine.succeed("systemctl show -p Result --value cc-ci-probe.service").strip()
    assert result == "success", result

    history = json.loads(machine.succeed("cc-ci --format json probe --history"))
    probe = history["probes"][0]
    assert probe["recipe"] == "plausible" and probe["outcome"] == "proven", history
    assert probe["ci_state"] == "success", history
    assert "bridge-bot" in json.dumps(probe["evidence"]), history

    # One pull request, from cc-ci/probe, with the one probe comment on its head.
    pulls = json.loads(machine.succeed(f"curl -sf {auth} '{api}/repos/recipe-maintainers/plausible/pulls?state=all'"))
    assert len(pulls) == 1 and pulls[0]["head"]["ref"] == "cc-ci/probe", pulls
    assert pulls[0]["head"]["sha"] == probe["head"], (pulls, probe)
    # [ci skip] keeps Drone's own webhook builds off it (trigger/skip.go).
    assert "[ci skip]" in pulls[0]["title"], pulls
    comments = json.loads(machine.succeed(f"curl -sf {auth} {api}/repos/recipe-maintainers/plausible/issues/{pulls[0]['number']}/comments"))
    mine = [c for c in comments if f"cc-ci-probe {probe['head']}" in c["body"]]
    assert len(mine) == 1 and mine[0]["user"]["login"] == "cc-ci-bot", comments

    # Nothing but cc-ci/probe moved.
    assert machine.succeed(f"git ls-remote {upstream}") == upstream_refs
    assert machine.succeed(f"git ls-remote {mirror} refs/heads/main 'refs/tags/*'") == mirror_refs

    report = json.loads(machine.succeed("cc-ci --format json health || true"))
    checks = {c["name"]: c for r in report["recipes"] if r["recipe"] == "plausible" for c in r["checks"]}
    assert checks["triggerable"]["status"] == "ok", checks

    # Proven just now: the next run is not due, and comments nowhere.
    machine.succeed("systemctl start cc-ci-probe.service")
    again = json.loads(machine.succeed("cc-ci --format json probe --history"))
    assert len(again["probes"]) == 1, again
  '';
}
