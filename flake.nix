{
  description = "cc-ci: a NixOS CI host for Co-op Cloud recipes, and the agent that runs it";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
    in
    {
      lib = import ./nix/lib.nix;

      nixosModules.cc-ci = ./nix/module.nix;
      nixosModules.default = self.nixosModules.cc-ci;

      packages.${system} = {
        cc-ci-agent = pkgs.callPackage ./nix/package.nix { };
        default = self.packages.${system}.cc-ci-agent;
      };

      nixosConfigurations.cc-ci = nixpkgs.lib.nixosSystem {
        modules = [
          { nixpkgs.hostPlatform = system; }
          self.nixosModules.cc-ci
          ./nix/hosts/cc-ci/configuration.nix
        ];
      };

      checks.${system} = import ./nix/tests { inherit pkgs self; };

      devShells.${system}.default = pkgs.mkShell {
        inputsFrom = [ self.packages.${system}.cc-ci-agent ];
        packages = [ pkgs.cargo-nextest pkgs.clippy pkgs.rustfmt pkgs.sqlite ];
      };
    };
}
