# Deploying what lands, on a real NixOS VM: cc-ci-deploy-auto.timer runs `cc-ci-agent deploy --auto`
# against a bare repository inside the VM. A commit on the checkout's upstream is deployed by the
# timer alone; runs with nothing new write nothing; a landed change that rolls back is not tried
# again on the runs after it.
#
# The machine, with its specialisations and stand-in for the build, is deploy-host.nix.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "cc-ci-deploy-auto";

  nodes.machine = { pkgs, ... }: {
    imports = [ (import ./deploy-host.nix { inherit self; }) ];

    # Every ten seconds, so the test sees several runs; a host keeps the five-minute default.
    services.cc-ci.deploy.auto = {
      enable = true;
      onCalendar = "*:*:0/10";
      randomizedDelaySec = "0";
    };

    specialisation.good.configuration = {
      systemd.services.hello = {
        wantedBy = [ "multi-user.target" ];
        serviceConfig.ExecStart = "${pkgs.coreutils}/bin/sleep infinity";
      };
    };
  };

  testScript = ''
    import json

    def rows():
        return json.loads(machine.succeed("cc-ci-agent --format json deploy history --limit 1000"))["deploys"]

    def runs_saying(text):
        return int(machine.succeed(f"journalctl -u cc-ci-deploy-auto.service -o cat | grep -c '{text}' || true").strip())

    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("cc-ci-bridge.service")
    machine.succeed("nix-env --profile /nix/var/nix/profiles/system --set $(readlink -f /run/current-system)")
    good = machine.succeed("readlink -f /run/booted-system/specialisation/good").strip()
    git = "git -c user.name=t -c user.email=t@example.org"

    machine.succeed(
        "git init -q --bare -b main /srv/upstream.git",
        "git init -q -b main /srv/landing",
        "echo good > /srv/landing/system",
        "git -C /srv/landing add system",
        f"{git} -C /srv/landing commit -qm good",
        "git -C /srv/landing push -q /srv/upstream.git main",
        "git clone -q /srv/upstream.git /srv/cc-ci",
    )

    with subtest("what is on the branch is deployed by the timer alone"):
        machine.wait_until_succeeds("cc-ci-agent --format json deploy status | grep -q '\"outcome\": \"deployed\"'", timeout=300)
        assert machine.succeed("readlink -f /run/current-system").strip() == good

    with subtest("runs with nothing new write nothing"):
        before = len(rows())
        seen = runs_saying("nothing new")
        machine.wait_until_succeeds(f"[ $(journalctl -u cc-ci-deploy-auto.service -o cat | grep -c 'nothing new') -ge {seen + 2} ]", timeout=120)
        assert len(rows()) == before, rows()

    with subtest("a landed change that rolls back is not tried again"):
        machine.succeed(
            "echo bad-bridge > /srv/landing/system",
            f"{git} -C /srv/landing commit -qam bad",
            "git -C /srv/landing push -q /srv/upstream.git main",
        )
        machine.wait_until_succeeds("cc-ci-agent --format json deploy status | grep -q '\"outcome\": \"rolled-back\"'", timeout=300)
        assert machine.succeed("readlink -f /run/current-system").strip() == good
        after = len(rows())
        seen = runs_saying("not tried again")
        machine.wait_until_succeeds(f"[ $(journalctl -u cc-ci-deploy-auto.service -o cat | grep -c 'not tried again') -ge {seen + 2} ]", timeout=120)
        assert len(rows()) == after, rows()

    print(machine.succeed("cc-ci-agent deploy history"))
  '';
}
