# A stand-in for the parts of NixOS and nixpkgs that nix/module.nix touches, so that the real
# module can be evaluated with nothing but a nixpkgs `lib` (machines without a Nix store or
# nixpkgs). Option declarations are freeform; `formats.toml` renders real TOML text, so the agent
# can parse exactly what the module would write. The flake's checks cover the real thing.
{ lib }:
let
  inherit (lib) types;

  fakeDrv = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta.mainProgram = name;
  };

  # TOML 1.0 writer for the values formats.toml accepts: scalars, lists, tables, lists of tables.
  toTOML = value:
    let
      str = builtins.toJSON; # JSON string escapes are valid TOML basic-string escapes
      key = k: if builtins.match "[A-Za-z0-9_-]+" k != null then k else str k;
      isTableList = v: builtins.isList v && v != [ ] && builtins.all builtins.isAttrs v;
      scalar = v:
        if builtins.isBool v then (if v then "true" else "false")
        else if builtins.isInt v || builtins.isFloat v then toString v
        else if builtins.isList v then "[ ${lib.concatMapStringsSep ", " scalar v} ]"
        else if builtins.isAttrs v then "{ ${lib.concatStringsSep ", " (lib.mapAttrsToList (k: x: "${key k} = ${scalar x}") v)} }"
        else str (toString v);
      table = path: attrs:
        let
          plain = lib.filterAttrs (_: v: !(builtins.isAttrs v) && !(isTableList v) && v != null) attrs;
          tables = lib.filterAttrs (_: builtins.isAttrs) attrs;
          tableLists = lib.filterAttrs (_: isTableList) attrs;
          header = lib.optionalString (path != [ ]) "[${lib.concatMapStringsSep "." key path}]\n";
        in
        header
        + lib.concatStrings (lib.mapAttrsToList (k: v: "${key k} = ${scalar v}\n") plain)
        + lib.concatStrings (lib.mapAttrsToList (k: v: "\n" + table (path ++ [ k ]) v) tables)
        + lib.concatStrings (lib.mapAttrsToList
          (k: vs: lib.concatMapStrings (v: "\n[[${lib.concatMapStringsSep "." key (path ++ [ k ])}]]\n" + table [ ] v) vs)
          tableLists);
    in
    table [ ] value;

  # Named, as nixpkgs' formats.toml names its value type: a recursive type has no description
  # of its own, and the options table asks for one.
  tomlValue = (types.nullOr (types.oneOf [
    types.bool
    types.int
    types.float
    types.str
    types.path
    (types.attrsOf tomlValue)
    (types.listOf tomlValue)
  ]))
    // { description = "TOML value"; };
in
{
  inherit toTOML;

  pkgs = {
    formats.toml = { }: {
      type = types.attrsOf tomlValue;
      generate = name: value: { inherit name; text = toTOML value; };
    };
    callPackage = _: _: fakeDrv "cc-ci-agent";
    writeShellScript = name: _: "/nix/store/00000000000000000000000000000000-${name}";
    # Kept with its text, so a case can read the script the module wrote.
    writeShellScriptBin = name: text: fakeDrv name // { inherit text; };
    # Files built by derivations: a path that exists in no store here, so a test that reads one
    # while evaluating (import from derivation, which a flake check refuses) fails here too.
    writeScript = name: _: fakeDrv name;
    writeText = name: _: fakeDrv name;
    symlinkJoin = { name, ... }: fakeDrv name;
    # The NixOS test framework: keeps what a test is made of, for nix/tests/eval/vm-tests.nix.
    testers.runNixOSTest = test: test;
    python3 = fakeDrv "python3" // { interpreter = "/nix/store/00000000000000000000000000000000-python3/bin/python3"; };
    curl = fakeDrv "curl";
    gitea = fakeDrv "gitea";
    sqlite = fakeDrv "sqlite";
    git = fakeDrv "git";
    openssh = fakeDrv "openssh";
    gnupg = fakeDrv "gnupg";
    coreutils = fakeDrv "coreutils";
    findutils = fakeDrv "findutils";
    gnugrep = fakeDrv "gnugrep";
    gnused = fakeDrv "gnused";
  };

  # Freeform: every NixOS option the module or the example host sets is accepted and merged.
  nixos = {
    freeformType = types.lazyAttrsOf types.anything;
    # Packages the module puts on units' PATH.
    config.system.build.nixos-rebuild = fakeDrv "nixos-rebuild";
    config.nix.package = fakeDrv "nix";
    config.systemd.package = fakeDrv "systemd";
    # A list every module adds to, declared as NixOS declares it (a freeform value would refuse
    # two definitions).
    options.environment.systemPackages = lib.mkOption { type = types.listOf types.unspecified; default = [ ]; };
    # What nixpkgs' auto-upgrade passes its unit, declared as NixOS declares them.
    options.nix.envVars = lib.mkOption { type = types.attrs; default = { }; };
    options.networking.proxy.envVars = lib.mkOption { type = types.attrs; default = { }; };
    options.assertions = lib.mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    # Declared as NixOS declares it: a specialisation's configuration is a module of its own,
    # evaluated over its parent's (nix/tests/eval/vm-tests.nix does), priorities and all.
    options.specialisation = lib.mkOption {
      type = types.attrsOf (types.submodule {
        options.configuration = lib.mkOption { type = types.deferredModule; default = { }; };
        options.inheritParentConfig = lib.mkOption { type = types.bool; default = true; };
      });
      default = { };
    };
    # Declared, as nixpkgs declares it: a freeform `services.nginx` whose presence hung on the
    # module's own condition would be an infinite recursion that NixOS never meets.
    options.services.nginx = lib.mkOption {
      type = types.lazyAttrsOf types.anything;
      default = { };
    };
  };
}
