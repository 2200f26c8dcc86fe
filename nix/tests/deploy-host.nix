# The machine the deploy VM tests share (deploy.nix, deploy-auto.nix): the example host with the
# module, deploying the checkout /srv/cc-ci, a specialisation whose bridge fails, and a
# `nixos-rebuild build --flake DIR#NAME` that links ./result to the specialisation named in
# DIR/system. The VM cannot evaluate nixpkgs offline, so the target systems are specialisations
# built with the test; everything after the build is the real thing.
{ self }:
{ lib, pkgs, ... }:
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
  };
  services.cc-ci.settings.deploy.nixos_rebuild = "${nixosRebuild}";

  specialisation.bad-bridge.configuration = {
    systemd.services.cc-ci-bridge.serviceConfig.ExecStart = lib.mkForce "${pkgs.coreutils}/bin/false";
  };
}
