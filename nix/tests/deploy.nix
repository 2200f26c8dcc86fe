# Deploys on a real NixOS VM with the real switch-to-configuration, nix-env, systemctl and
# systemd-run: a good change (which also replaces the agent's own package) is committed through
# cc-ci-deploy.service, then a change whose bridge fails is rolled back, and the host ends on the
# good generation with the journal saying so.
#
# The machine, with its specialisations and stand-in for the build, is deploy-host.nix.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "cc-ci-deploy";

  nodes.machine = { lib, pkgs, ... }: {
    imports = [ (import ./deploy-host.nix { inherit self; }) ];

    specialisation.good.configuration = {
      # A new agent package: its units change under the deploy that activates them.
      services.cc-ci.package = lib.mkForce (pkgs.symlinkJoin {
        name = "cc-ci-agent-rebuilt";
        paths = [ (pkgs.callPackage ../package.nix { }) ];
        meta.mainProgram = "cc-ci-agent";
      });
      systemd.services.hello = {
        wantedBy = [ "multi-user.target" ];
        serviceConfig.ExecStart = "${pkgs.coreutils}/bin/sleep infinity";
      };
    };
  };

  testScript = ''
    import json

    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("cc-ci-bridge.service")
    machine.wait_for_unit("cc-ci-enrollment-check.service")

    # A test VM boots without a system profile; give it one, as an installed host has.
    machine.succeed("nix-env --profile /nix/var/nix/profiles/system --set $(readlink -f /run/current-system)")
    base = machine.succeed("readlink -f /run/current-system").strip()
    good = machine.succeed("readlink -f /run/booted-system/specialisation/good").strip()

    machine.succeed(
        "git init -q --bare -b main /srv/upstream.git",
        "git init -q -b main /srv/cc-ci",
        "echo good > /srv/cc-ci/system",
        "git -C /srv/cc-ci add system",
        "git -C /srv/cc-ci -c user.name=t -c user.email=t@example.org commit -qm good",
        "git -C /srv/cc-ci remote add origin /srv/upstream.git",
        "git -C /srv/cc-ci push -q -u origin main",
    )

    with subtest("a good change that replaces the agent's own package is committed"):
        machine.succeed("systemctl start cc-ci-deploy.service")
        assert machine.succeed("readlink -f /run/current-system").strip() == good
        assert machine.succeed("readlink -f /nix/var/nix/profiles/system").strip() == good
        machine.succeed("systemctl is-active hello.service")
        machine.fail("systemctl is-active cc-ci-deadman-1.timer")
        last = json.loads(machine.succeed("cc-ci-agent --format json deploy status"))["last"]
        assert last["outcome"] == "deployed", last
        assert last["from_path"] == base and last["to_path"] == good, last

    with subtest("a change whose bridge fails is rolled back to the good generation"):
        machine.succeed(
            "echo bad-bridge > /srv/cc-ci/system",
            "git -C /srv/cc-ci -c user.name=t -c user.email=t@example.org commit -qam bad",
            "git -C /srv/cc-ci push -q",
        )
        status, out = machine.execute("cc-ci-agent deploy 2>&1")
        print(out)
        assert status == 9, f"expected exit 9 (rolled back), got {status}"
        assert machine.succeed("readlink -f /run/current-system").strip() == good
        assert machine.succeed("readlink -f /nix/var/nix/profiles/system").strip() == good
        machine.succeed("systemctl is-active cc-ci-bridge.service")
        last = json.loads(machine.succeed("cc-ci-agent --format json deploy status"))["last"]
        assert last["outcome"] == "rolled-back", last
        assert "cc-ci-bridge.service" in last["message"], last
        assert all(c["ok"] for c in last["rollback_checks"]), last

    print(machine.succeed("cc-ci-agent deploy history"))
  '';
}
