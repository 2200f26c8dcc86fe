//! The NixOS module (nix/lib.nix, via builtins.fromTOML) and the agent must render the same
//! POLL_REPOS byte for byte, and must refuse the same files. Runs Debian's `nix-instantiate`.
//! Without it the test says so loudly, and fails when CI is set: CI must never skip it silently.
use crate::common;

use std::path::Path;
use std::process::Command;

use common::{corpus, poll_repos, repo};

/// `Some(POLL_REPOS)` when Nix accepts the file, `None` when evaluation fails.
fn nix_poll_repos(file: &Path) -> Option<String> {
    // The file name goes in as a Nix string literal built by serde_json, never parsed as Nix.
    let file = serde_json::to_string(&file.to_string_lossy()).unwrap_or_default();
    nix_lib_eval(&format!("lib.pollReposOfFile {file}"))
        .map(|v| serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}")))
}

/// `expr` evaluated by nix-instantiate with `lib` bound to nix/lib.nix; `None` when Nix refuses.
fn nix_lib_eval(expr: &str) -> Option<serde_json::Value> {
    let lib = repo().join("nix/lib.nix");
    let lib = serde_json::to_string(&lib.to_string_lossy()).unwrap_or_default();
    let expr = format!("let lib = import {lib}; in {expr}");
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
    Some(serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{json}: {e}")))
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

/// Whether `text` matches nix/lib.nix's `durationPattern`, as the module's duration type checks it.
fn nix_takes_duration(text: &str) -> bool {
    let text = serde_json::to_string(text).unwrap_or_default();
    let taken = nix_lib_eval(&format!(
        "builtins.match lib.durationPattern {text} != null"
    ));
    taken.expect("nix-instantiate refused the pattern") == serde_json::Value::Bool(true)
}

/// The module's duration type accepts exactly the durations the agent accepts (on these samples,
/// among them each unit the agent knows): a typo stops evaluation, and nothing the agent would
/// take is refused.
#[test]
fn the_module_and_the_agent_take_the_same_durations() {
    if !nix_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let samples = [
        "90s",
        "2m",
        "1h 30m",
        "1h30m",
        "500ms",
        "30min",
        "8d",
        "1w",
        "2 h",
        "10sec",
        "1 hour",
        "3days",
        "1y",
        "2months",
        "",
        "two minutes",
        "10",
        "1.5h",
        "0.25s",
        ".5h",
        "1.h",
        "-1s",
        "1h-",
        "s",
        "1 fortnight",
        "5 m s",
    ];
    for text in samples {
        let config = dir.path().join("agent.toml");
        std::fs::write(dir.path().join("enrollment.toml"), "").unwrap();
        std::fs::write(
            &config,
            format!(
                "enrollment_file = \"enrollment.toml\"\nlock_wait = {}\n",
                toml_string(text)
            ),
        )
        .unwrap();
        let agent = common::agent(&[
            "--config",
            config.to_str().unwrap(),
            "enrollment",
            "poll-repos",
        ]);
        // 2 with the duration named is refusal; anything else got past the duration.
        let agent_takes = !(agent.code == 2 && agent.stderr.contains("lock_wait"));
        assert_eq!(
            nix_takes_duration(text),
            agent_takes,
            "{text:?}: the module and the agent disagree ({})",
            agent.stderr.trim()
        );
    }
}

fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}
