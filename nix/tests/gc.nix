# The real cc-ci-gc unit on the example host: as user cc-ci, with no network, it deletes the
# oldest unprotected volume to get under a small budget and keeps the canonical's, and health then
# reads the disk check from the ledger.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "cc-ci-gc";

  nodes.machine = { lib, ... }: {
    imports = [
      self.nixosModules.cc-ci
      ../hosts/cc-ci/configuration.nix
    ];
    services.cc-ci.disk = {
      budget = lib.mkForce "3M";
      minFree = lib.mkForce 0;
      grace = "1s";
    };
  };

  testScript = ''
    machine.wait_for_unit("multi-user.target")
    root = "/var/lib/cc-ci-volumes"
    machine.succeed(f"stat -c '%U:%G %a' {root} | grep -x 'cc-ci:cc-ci 2770'")

    def volume(name, days_ago):
        machine.succeed(
            f"runuser -u cc-ci -- sh -c 'mkdir -p {root}/{name} && head -c 2097152 /dev/urandom > {root}/{name}/db'"
            f" && find {root}/{name} -exec touch -d '{days_ago} days ago' {{}} +"
        )

    volume("custom-html_1.0.0+1.25.3", 30)
    volume("custom-html_0.9.0+1.25.2", 60)

    # By hand, as an operator at a root shell does: `cc-ci` runs each command as its unit does
    # (its user, sandbox and state directory; /srv, since the unit's /tmp is its own).
    machine.succeed(
        "mkdir -p /srv/canon/custom-html && echo '{\"recipe\": \"custom-html\", \"version\": \"1.0.0+1.25.3\", "
        "\"commit\": \"0000000000000000000000000000000000000000\"}' > /srv/canon/custom-html/canonical.json"
        " && chmod -R a+rX /srv/canon"
        " && cc-ci canonical import /srv/canon"
    )

    print(machine.succeed("cc-ci gc --dry-run"))
    machine.succeed("systemctl start cc-ci-gc.service")
    print(machine.succeed("journalctl -u cc-ci-gc.service --no-pager"))
    machine.succeed(f"test -d {root}/custom-html_1.0.0+1.25.3")
    machine.fail(f"test -e {root}/custom-html_0.9.0+1.25.2")

    # The unit ran sandboxed as cc-ci, with no network namespace shared with the host.
    props = machine.succeed("systemctl show cc-ci-gc.service -p User -p PrivateNetwork -p Result")
    assert "User=cc-ci" in props and "PrivateNetwork=yes" in props and "Result=success" in props, props

    report = machine.succeed("cc-ci --format json health || true")
    import json
    disk = [c for c in json.loads(report)["host"] if c["name"] == "disk"]
    assert disk and disk[0]["status"] == "ok", report
  '';
}
