# The cc-ci-agent package, built from this repository's Cargo workspace.
{ lib, rustPlatform, util-linux, git, openssh, gnupg, openssl, python3 }:
let
  manifest = (builtins.fromTOML (builtins.readFile ../agent/Cargo.toml)).package;
in
rustPlatform.buildRustPackage {
  pname = manifest.name;
  inherit (manifest) version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../clippy.toml
      ../agent
      # A workspace member: the emulated host the deploy tests use (never installed).
      ../testkit
      # The integration tests read the corpus and nix/lib.nix.
      ../tests
      ./lib.nix
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  # Only the agent is built and installed; the testkit (demo, emulated host) stays out.
  cargoBuildFlags = [ "-p" "cc-ci-agent" ];
  cargoTestFlags = [ "-p" "cc-ci-agent" ];

  # What the tests call, as .ci/run installs it: flock(1) and script(1) (the lock and
  # terminal-colour tests), git (every mirror, sweep and deploy test), ssh-keygen and gpg (the
  # signed-deploy tests), openssl (the HTTPS tests make a CA), pytest (a real suite's results).
  # Not here, and so NOT RUN HERE in this phase (each says so): the tests that need root (the
  # CI-user and hostile-host tests), a tmpfs mount, Chromium, GoogleTest, Catch2 and mocha.
  nativeCheckInputs = [ util-linux git openssh gnupg openssl (python3.withPackages (p: [ p.pytest ])) ];
  # These compare nix/lib.nix with the agent through nix-instantiate, which the build sandbox
  # lacks; .ci/run runs them, and the flake check `lib` covers nix/lib.nix itself.
  # The colour test needs a pseudo-terminal, which the build sandbox may not offer; .ci/run runs it.
  checkFlags = [
    "--skip=colour_only_on_a_terminal_and_never_with_no_color"
    "--skip=nix_and_agent_render_the_same_poll_repos"
    "--skip=nix_refuses_every_file_the_agent_refuses"
    "--skip=the_module_and_the_agent_take_the_same_durations"
  ];

  meta = {
    description = manifest.description;
    license = lib.licenses.agpl3Plus;
    mainProgram = "cc-ci-agent";
    platforms = lib.platforms.linux;
  };
}
