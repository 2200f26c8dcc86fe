# Boots the example host and checks that the running bridge got POLL_REPOS from the enrollment,
# that the agent on the host renders the same string, and that the enrollment check passed.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "cc-ci-poll-repos";

  nodes.machine = {
    imports = [
      self.nixosModules.cc-ci
      ../hosts/cc-ci/configuration.nix
    ];
  };

  testScript = { nodes, ... }:
    let
      expected = nodes.machine.services.cc-ci.pollRepos;
    in
    ''
      expected = "${expected}"
      assert expected.count(",") == 18, f"the example fleet has 19 recipes: {expected}"

      machine.wait_for_unit("cc-ci-bridge.service")
      env = machine.succeed("systemctl show --property=Environment --value cc-ci-bridge.service").split()
      assert f"POLL_REPOS={expected}" in env, f"bridge environment: {env}"

      # The running process sees it, not only the unit file.
      machine.wait_until_succeeds(f"journalctl -u cc-ci-bridge.service | grep -F 'polling 19 repositories: {expected}'")

      # The agent reads the same enrollment through /etc/cc-ci/agent.toml and agrees byte for byte.
      rendered = machine.succeed("cc-ci-agent enrollment poll-repos").strip()
      assert rendered == expected, f"agent: {rendered!r} module: {expected!r}"

      machine.wait_for_unit("cc-ci-enrollment-check.service")
      machine.succeed("systemctl is-active cc-ci-enrollment-check.service")
      print(machine.succeed("systemd-analyze security cc-ci-enrollment-check.service || true"))

      # The state database is created where the units keep state.
      machine.succeed("cc-ci-agent state status")
      machine.succeed("test -f /var/lib/cc-ci/state.db")
    '';
}
