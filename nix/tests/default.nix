# The flake's checks: `nix flake check` runs them all (the VM test needs KVM).
{ pkgs, self }:
let
  system = pkgs.stdenv.hostPlatform.system;
  # The example host of this system (flake.nix).
  example = self.nixosConfigurations.${if system == "aarch64-linux" then "cc-ci-aarch64" else "cc-ci"};
  host = example.config;
in
{
  package = self.packages.${system}.cc-ci-agent;

  # nix/lib.nix against the corpus; the assertion runs at evaluation time.
  lib = pkgs.runCommand "cc-ci-lib-corpus" { checked = import ./lib.nix; } ''
    echo "nix/lib.nix agrees with $checked corpus files" > $out
  '';

  # The agent accepts the agent.toml the module renders (unknown keys would fail it), and renders
  # the same POLL_REPOS as the module gave the bridge. Cheap: no VM.
  agent-config = pkgs.runCommand "cc-ci-agent-config"
    {
      nativeBuildInputs = [ host.services.cc-ci.package ];
      config = host.environment.etc."cc-ci/agent.toml".source;
      expected = host.systemd.services.cc-ci-bridge.environment.POLL_REPOS;
    }
    ''
      got=$(cc-ci-agent --config "$config" enrollment poll-repos)
      if [ "$got" != "$expected" ]; then
        echo "agent renders '$got', the module gave the bridge '$expected'" >&2
        exit 1
      fi
      cc-ci-agent --config "$config" enrollment check
      echo ok > $out
    '';

  # docs/nixos.md's options table is what the module's declarations render (nix/options-doc.nix),
  # evaluated here with the real NixOS modules.
  options-doc = pkgs.runCommand "cc-ci-options-doc"
    {
      generated = pkgs.writeText "options.md" (import ../options-doc.nix {
        inherit (pkgs) lib;
        options = example.options.services.cc-ci;
      });
      documented = ../../docs/nixos.md;
    }
    ''
      awk '/^<!-- options: generated/{on=1; next} /^<!-- options: end -->/{on=0} on && /^\|/' "$documented" > documented.md
      diff -u documented.md "$generated" || { echo "docs/nixos.md's options table differs from the module: regenerate it (docs/development.md)" >&2; exit 1; }
      touch $out
    '';

  poll-repos = import ./poll-repos.nix { inherit pkgs self; };
  deploy = import ./deploy.nix { inherit pkgs self; };
  deploy-auto = import ./deploy-auto.nix { inherit pkgs self; };
  gc = import ./gc.nix { inherit pkgs self; };
  hardening = import ./hardening.nix { inherit pkgs self; };
  probe = import ./probe.nix { inherit pkgs self; };
}
