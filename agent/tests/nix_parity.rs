//! The NixOS module (nix/lib.nix, via builtins.fromTOML) and the agent must render the same
//! POLL_REPOS byte for byte, and must refuse the same files. Runs Debian's `nix-instantiate`.
//! Without it the test says so loudly, and fails when CI is set: CI must never skip it silently.
// Test crate: a panic is how a failure is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{corpus, poll_repos, repo};

/// `Some(POLL_REPOS)` when Nix accepts the file, `None` when evaluation fails.
fn nix_poll_repos(file: &Path) -> Option<String> {
    let lib = repo().join("nix/lib.nix");
    // Paths go in as Nix string literals built by serde_json, so no file name is ever parsed as Nix.
    let expr = format!(
        "(import {lib}).pollReposOfFile {file}",
        lib = serde_json::to_string(&lib.to_string_lossy()).unwrap_or_default(),
        file = serde_json::to_string(&file.to_string_lossy()).unwrap_or_default(),
    );
    let out = Command::new("nix-instantiate")
        .args([
            "--eval",
            "--strict",
            "--json",
            "--readonly-mode",
            "-E",
            &expr,
        ])
        .env(
            "NIX_STATE_DIR",
            std::env::temp_dir().join("cc-ci-nix-state"),
        )
        .output()
        .unwrap_or_else(|e| panic!("nix-instantiate: {e}"));
    if !out.status.success() {
        return None;
    }
    let json = String::from_utf8_lossy(&out.stdout);
    Some(serde_json::from_str::<String>(json.trim()).unwrap_or_else(|e| panic!("{json}: {e}")))
}

fn nix_available() -> bool {
    let found = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let msg = "nix_parity: nix-instantiate not found: the Nix/Rust POLL_REPOS comparison DID NOT RUN \
                   (install Debian's nix-bin; .ci/run does)";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("SKIPPED {msg}");
    }
    found
}

#[test]
fn nix_and_agent_render_the_same_poll_repos() {
    if !nix_available() {
        return;
    }
    let files = corpus("tests/enrollment/valid");
    for file in &files {
        let run = poll_repos(file);
        assert_eq!(run.code, 0, "{}: {}", file.display(), run.stderr);
        let nix = nix_poll_repos(file)
            .unwrap_or_else(|| panic!("{}: Nix refused a valid file", file.display()));
        assert_eq!(
            format!("{nix}\n"),
            run.stdout,
            "{}: Nix and agent differ",
            file.display()
        );
    }
    eprintln!("nix_parity: {} valid files render identically", files.len());
}

#[test]
fn nix_refuses_every_file_the_agent_refuses() {
    if !nix_available() {
        return;
    }
    let files = corpus("tests/enrollment/invalid");
    for file in &files {
        let run = poll_repos(file);
        assert_eq!(run.code, 2, "{}", file.display());
        assert_eq!(
            nix_poll_repos(file),
            None,
            "{}: Nix accepted a file the agent refuses",
            file.display()
        );
    }
    eprintln!("nix_parity: {} invalid files refused by both", files.len());
}
