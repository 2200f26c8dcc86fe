# Every agent unit's sandbox, as systemd itself scores it: `systemd-analyze security` for each, printed
# in full, failing above an exposure of 5.0 for the units that do not run as root. The deploy unit
# runs as root (it activates systems) and is printed for the record; so is the keeper, the unit
# recipe CI runs in (root with four capabilities only, to run CI as a user of its own; checked:
# exactly those capabilities, the CI user declared, its socket root:cc-ci 0660). The sweep is
# the agents' own code and runs as cc-ci. Also: the forge token, written where the example host
# expects it and read by the mirror job, is in no log, state or config file.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "cc-ci-hardening";

  nodes.machine = {
    imports = [
      self.nixosModules.cc-ci
      ../hosts/cc-ci/configuration.nix
    ];
    # Every job gets a unit: the sweep needs a command, health a bridge to report to, the probe
    # its timer (the example host's forge is a Gitea).
    services.cc-ci.sweep.command = [ "/run/current-system/sw/bin/true" "{recipe}" ];
    services.cc-ci.probe.timer.enable = true;
    services.cc-ci.bridge.reportUrl = "http://127.0.0.1:9/health";
    services.cc-ci.bridge.tokenFile = "/run/secrets/cc-ci-bridge-token";
    services.cc-ci.deploy.flake = "/srv/cc-ci#cc-ci";
  };

  testScript = ''
    import re
    import secrets

    machine.wait_for_unit("multi-user.target")

    non_root = ["cc-ci-enrollment-check", "cc-ci-mirrors", "cc-ci-health", "cc-ci-gc", "cc-ci-probe", "cc-ci-sweep"]
    # The keeper is a template: an instance name is enough for systemd to read its unit.
    root = ["cc-ci-deploy", "cc-ci-keeper@0"]
    scores = {}
    for unit in non_root + root:
        out = machine.succeed(f"systemd-analyze security --no-pager {unit}.service")
        print(out)
        m = re.search(r"Overall exposure level for \S+: ([0-9]+\.[0-9]+)", out)
        assert m, f"no exposure level for {unit}: {out}"
        scores[unit] = float(m.group(1))
        user = machine.succeed(f"systemctl show -p User --value {unit}.service").strip()
        assert (user == "cc-ci") == (unit in non_root), f"{unit} runs as {user!r}"

    print("exposure:", ", ".join(f"{u} {s}" for u, s in scores.items()))
    caps = machine.succeed("systemctl show -p CapabilityBoundingSet --value cc-ci-keeper@0.service").split()
    assert sorted(caps) == ["cap_chown", "cap_kill", "cap_setgid", "cap_setuid"], f"the keeper's capabilities: {caps}"
    sweep_caps = machine.succeed("systemctl show -p CapabilityBoundingSet --value cc-ci-sweep.service").strip()
    assert sweep_caps == "", f"the sweep has capabilities: {sweep_caps}"
    machine.wait_for_unit("cc-ci-keeper.socket")
    owner = machine.succeed("stat -c '%U:%G %a' /run/cc-ci/keeper.sock").strip()
    assert owner == "root:cc-ci 660", f"the keeper's socket: {owner}"
    machine.succeed("id cc-ci-runner")
    assert "cc-ci-runner" not in machine.succeed("id -nG cc-ci").split(), "cc-ci is in the CI user's group"
    too_open = {u: s for u, s in scores.items() if u in non_root and s > 5.0}
    assert not too_open, f"exposure above 5.0: {too_open}"

    # A token put where the host reads it never reaches the store or /etc.
    # Made up per run, so it can only be found where the test itself put it.
    token = secrets.token_hex(16)
    machine.succeed(f"mkdir -p /run/secrets && echo {token} > /run/secrets/cc-ci-forge-token && chmod 0400 /run/secrets/cc-ci-forge-token")
    # The mirror job reads it (and fails: the example forge is not reachable from the VM). The
    # token must be in none of its logs, the state it wrote, or the configuration.
    machine.execute("systemctl start cc-ci-mirrors.service")
    machine.succeed("journalctl -u cc-ci-mirrors.service --no-pager | grep -F cc-ci-agent")

    def absent(command):
        # grep says "not found" with 1 and "could not search" with 2; only 1 counts.
        status, out = machine.execute(command)
        assert status == 1, f"{command}: exit {status}: {out}"

    absent(f"journalctl --no-pager | grep -F {token}")
    # The search can find things (the credential's name), so its silence about the token counts.
    machine.succeed("grep -RlF forge-token /etc/systemd/system")
    absent(f"grep -RlaF {token} /etc/cc-ci /etc/systemd/system /var/lib/cc-ci")
    creds = machine.succeed("systemctl show -p LoadCredential --value cc-ci-mirrors.service")
    assert "forge-token:/run/secrets/cc-ci-forge-token" in creds, creds
  '';
}
