{
  description = "cc-ci: a NixOS CI host for Co-op Cloud recipes, and the agent that runs it";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs = { self, nixpkgs }:
    let
      # x86_64 and Arm hosts (Hetzner's Arm servers are aarch64-linux): the package, the module
      # and the checks for both; each is built where a builder of that system exists.
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forEachSystem = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      # The example host, for a system.
      exampleHost = system: nixpkgs.lib.nixosSystem {
        modules = [
          { nixpkgs.hostPlatform = system; }
          self.nixosModules.cc-ci
          ./nix/hosts/cc-ci/configuration.nix
        ];
      };
    in
    {
      lib = import ./nix/lib.nix;

      nixosModules.cc-ci = ./nix/module.nix;
      nixosModules.default = self.nixosModules.cc-ci;

      packages = forEachSystem (pkgs: {
        cc-ci-agent = pkgs.callPackage ./nix/package.nix { };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.cc-ci-agent;
      });

      nixosConfigurations.cc-ci = exampleHost "x86_64-linux";
      nixosConfigurations.cc-ci-aarch64 = exampleHost "aarch64-linux";

      checks = forEachSystem (pkgs: import ./nix/tests { inherit pkgs self; });

      devShells = forEachSystem (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.cc-ci-agent ];
          packages = [ pkgs.cargo-nextest pkgs.clippy pkgs.rustfmt pkgs.sqlite ];
        };
      });
    };
}
