# An example cc-ci host. `nixos-rebuild build-vm --flake .#cc-ci` boots it as a VM.
#
# The real bridge is not packaged here: a stand-in service takes its place, reads POLL_REPOS from
# its environment as the real one does, and logs the recipes it would poll.
{ lib, pkgs, ... }:
{
  networking.hostName = "cc-ci";
  system.stateVersion = "25.11";

  boot.loader.grub.device = "nodev";
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };

  services.cc-ci = {
    enable = true;
    enrollmentFile = ./enrollment.toml;
    bridge.unit = "cc-ci-bridge";
    disk = {
      budget = "200G";
      minFree = "20G";
      volumes.root = "/var/lib/cc-ci-volumes";
    };
    forge = {
      kind = "gitea";
      url = "https://git.autonomic.zone";
      org = "recipe-maintainers";
      # Not in the store: put the token here out of band (agenix, sops-nix, or by hand).
      tokenFile = "/run/secrets/cc-ci-forge-token";
    };
  };

  systemd.services.cc-ci-bridge = {
    description = "cc-ci bridge (stand-in): polls the mirrors named in POLL_REPOS";
    wantedBy = [ "multi-user.target" ];
    after = [ "network.target" ];
    serviceConfig = {
      DynamicUser = true;
      ExecStart = pkgs.writeShellScript "cc-ci-bridge-stand-in" ''
        IFS=, read -r -a repos <<< "$POLL_REPOS"
        echo "polling ''${#repos[@]} repositories: $POLL_REPOS"
        exec sleep infinity
      '';
      ProtectSystem = "strict";
      NoNewPrivileges = true;
    };
  };

  # Only for `nixos-rebuild build-vm`: a console to look around in.
  virtualisation.vmVariant = {
    services.getty.autologinUser = "root";
    virtualisation.graphics = false;
  };

  environment.systemPackages = [ pkgs.sqlite ];
  documentation.enable = lib.mkDefault false;
}
