# Deploying what lands, on a real NixOS VM: cc-ci-deploy-auto.timer runs `cc-ci-agent deploy --auto`
# against a bare repository inside the VM. A commit on the checkout's upstream is deployed by the
# timer alone; runs with nothing new write nothing; a landed change that rolls back is not tried
# again on the runs after it.
#
# As in deploy.nix, the target systems are specialisations built with the test, and the test's
# `nixos-rebuild build --flake DIR#NAME` links ./result to the one named in DIR/system.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "cc-ci-deploy-auto";

  nodes.machine = { lib, pkgs, ... }:
    let
      nixosRebuild = pkgs.writeShellScript "nixos-rebuild-from-specialisation" ''
        set -eu
        [ "$1" = build ] && [ "$2" = --flake ] || { echo "usage: nixos-rebuild build --flake DIR#NAME" >&2; exit 1; }
        name=$(cat "''${3%#*}/system")
        ln -sfn "$(readlink -f "/run/booted-system/specialisation/$name")" result
      '';
    in
    {
      imports = [
        self.nixosModules.cc-ci
        ../hosts/cc-ci/configuration.nix
      ];
      boot.loader.grub.enable = lib.mkForce false;
      environment.systemPackages = [ pkgs.git ];
      virtualisation.memorySize = 2048;

      services.cc-ci.deploy = {
        flake = "/srv/cc-ci#cc-ci";
        confirmTimeout = "90s";
        verifyTimeout = "20s";
        # Every ten seconds, so the test sees several runs; a host keeps the five-minute default.
        auto = {
          enable = true;
          onCalendar = "*:*:0/10";
          randomizedDelaySec = "0";
        };
      };
      services.cc-ci.settings.deploy.nixos_rebuild = "${nixosRebuild}";

      specialisation.good.configuration = {
        systemd.services.hello = {
          wantedBy = [ "multi-user.target" ];
          serviceConfig.ExecStart = "${pkgs.coreutils}/bin/sleep infinity";
        };
      };
      specialisation.bad-bridge.configuration = {
        systemd.services.cc-ci-bridge.serviceConfig.ExecStart = lib.mkForce "${pkgs.coreutils}/bin/false";
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
        "git init -q -b main /srv/work",
        "echo good > /srv/work/system",
        "git -C /srv/work add system",
        f"{git} -C /srv/work commit -qm good",
        "git -C /srv/work push -q /srv/upstream.git main",
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
            "echo bad-bridge > /srv/work/system",
            f"{git} -C /srv/work commit -qam bad",
            "git -C /srv/work push -q /srv/upstream.git main",
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
