//! `cc-ci-agent demo`, the README's "run it" command, end to end.

// Test crate: a panic is how a failure is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[test]
fn the_demo_runs_every_step_as_expected_and_says_what_is_a_stand_in() {
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().join("demo");
    let run = common::agent(&["demo", "--dir", at.to_str().unwrap()]);
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
    ] {
        assert!(
            run.stdout.contains(expected),
            "missing {expected:?} in:\n{}",
            run.stdout
        );
    }
    assert!(at.join("canonical/plausible/canonical.json").is_file());
    // A second run refuses to write into the same, now full, directory.
    let again = common::agent(&["demo", "--dir", at.to_str().unwrap()]);
    assert_eq!(again.code, 2, "{}", again.stderr);
}
