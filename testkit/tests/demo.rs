//! `cc-ci-demo`, the README's "run it" command, end to end.

// Test crate: a panic is how a failure is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn demo(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_cc-ci-demo"))
        .args(args)
        .env("CC_CI_LOG", "warn")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn the_demo_runs_every_step_as_expected_and_says_what_is_a_stand_in() {
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().join("demo");
    let run = demo(&["--dir", at.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for expected in [
        "Stand-ins: the NixOS host is emulated",
        "RED       custom-html",
        "PROMOTED  plausible",
        "commit: ok: generation 2",
        "rolled back: verification failed: failed units: newly failed: cc-ci-sweep.service",
        "(exit 9, as expected)",
        "plausible_2.0.0+v2.0.0    plausible    2.0.0+v2.0.0  2.0 MiB  10 days ago  delete (over-budget)",
        "plausible_3.0.1+v2.1.0    plausible    3.0.1+v2.1.0  1.0 MiB  just now     keep (canonical)",
        "freed 3.0 MiB (2 volumes)",
        "host: degraded",
        "plausible: proven on #1: picked-up after",
        "custom-html: stopped at picked-up after 2s",
        "(exit 18, as expected)",
        "triggerable: never proven: run `cc-ci-agent probe hedgedoc`",
    ] {
        assert!(
            run.stdout.contains(expected),
            "missing {expected:?} in:\n{}",
            run.stdout
        );
    }
    assert!(at.join("canonical/plausible/canonical.json").is_file());
    // A second run refuses to write into the same, now full, directory.
    let again = demo(&["--dir", at.to_str().unwrap()]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    // The last line is a command that works as printed.
    let last = run.stdout.lines().last().unwrap();
    let command = last.strip_prefix("Done. Look around: ").unwrap();
    let argv: Vec<&str> = command.split(' ').collect();
    let status = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(
        status.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(String::from_utf8_lossy(&status.stdout).contains("integrity ok"));
}

#[test]
fn the_agent_binary_has_no_demo() {
    let help = demo(&["agent", "--help"]);
    assert_eq!(help.code, 0, "{}", help.stderr);
    assert!(help.stdout.contains("mirrors"), "{}", help.stdout);
    assert!(!help.stdout.contains("demo"), "{}", help.stdout);
}
