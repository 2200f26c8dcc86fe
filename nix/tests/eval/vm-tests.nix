# Evaluates each VM test of nix/tests/ without nixpkgs or KVM (nix/tests/eval-module.sh runs it):
#   nix-instantiate --eval --strict --json nix/tests/eval/vm-tests.nix --arg nixpkgsLib /path/to/nixpkgs.lib
# runNixOSTest is the stand-in's (it keeps what a test is made of). Every node, and every
# specialisation of it, is evaluated with the module through lib.evalModules as in module.nix:
# its assertions must hold, and its agent.toml and units must evaluate. A test that reads a file
# a derivation builds (import from derivation, which a flake check refuses) fails here, as the
# stand-in's built files exist nowhere. The answer, per test, is its node names and its script
# (given the evaluated nodes where it asks for them), which nix/tests/check-test-scripts.py
# then checks against the test driver's API.
{ nixpkgsLib }:
let
  lib = import (nixpkgsLib + "/lib");
  standIn = import ./stand-in.nix { inherit lib; };
  inherit (standIn) pkgs;

  self = {
    nixosModules.cc-ci = ../../module.nix;
    packages = { };
  };

  evaluate = modules: (lib.evalModules {
    specialArgs = { inherit pkgs; };
    modules = [ standIn.nixos ] ++ modules;
  }).config;

  # A node's configuration is sound when its assertions hold and what the module renders from
  # it (agent.toml, POLL_REPOS, units, timers, sockets) evaluates.
  sound = where: config:
    let
      failed = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
      rendered = builtins.deepSeq [
        config.environment.etc."cc-ci/agent.toml".source.text
        config.services.cc-ci.pollRepos
        (lib.mapAttrs (_: u: u.serviceConfig or { }) config.systemd.services)
        (config.systemd.timers or { })
        (config.systemd.sockets or { })
      ] true;
    in
    if failed != [ ] then throw "${where}: assertions failed: ${builtins.toJSON failed}"
    else rendered;

  # A node and each of its specialisations (each is the node plus its own configuration).
  node = test: name: module:
    let
      base = evaluate [ module ];
      specialisations = lib.mapAttrs
        (sname: s: sound "${test}: ${name}, specialisation ${sname}" (evaluate [ module s.configuration ]))
        (base.specialisation or { });
    in
    builtins.deepSeq specialisations (sound "${test}: ${name}" base) && true;

  vmTest = file:
    let
      t = import file { inherit pkgs self; };
      nodes = lib.mapAttrs (name: module: evaluate [ module ]) t.nodes;
      checked = lib.mapAttrsToList (node t.name) t.nodes;
      script = if builtins.isFunction t.testScript then t.testScript { inherit nodes; } else t.testScript;
    in
    builtins.deepSeq checked {
      nodes = builtins.attrNames t.nodes;
      inherit script;
    };

  files = {
    poll-repos = ../poll-repos.nix;
    deploy = ../deploy.nix;
    deploy-auto = ../deploy-auto.nix;
    gc = ../gc.nix;
    hardening = ../hardening.nix;
    probe = ../probe.nix;
  };
in
lib.mapAttrs (_: vmTest) files
