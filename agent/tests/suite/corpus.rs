//! The bad-input and rendering corpus in `tests/`: every invalid file gets one located error line,
//! exit code 2 and no write; every valid file renders its expected POLL_REPOS.
use crate::common;

use common::{agent, corpus, expectation, poll_repos, snapshot};

fn assert_located_error(file: &std::path::Path, run: &common::Run) {
    let shown = file.display().to_string();
    let (line, key) = expectation(file);
    assert_eq!(run.code, 2, "{shown}: exit code\nstderr: {}", run.stderr);
    let lines = run.stderr_lines();
    assert_eq!(
        lines.len(),
        1,
        "{shown}: want exactly one error line, got {lines:#?}"
    );
    let want = format!("error: {shown}:{line}: {key}: ");
    assert!(
        lines[0].starts_with(&want),
        "{shown}:\n want prefix {want}\n got        {}",
        lines[0]
    );
    assert!(
        run.stdout.is_empty(),
        "{shown}: nothing on stdout, got {}",
        run.stdout
    );
    // The corpus's stand-in secrets: a URL's password or token-like user name is never echoed.
    for secret in ["hunter2", "ghp_", "token@"] {
        assert!(
            !run.stderr.contains(secret),
            "{shown}: the error echoes a credential: {}",
            run.stderr
        );
    }
}

#[test]
fn invalid_enrollment_files_are_located_and_refused() {
    let files = corpus("tests/enrollment/invalid");
    assert!(files.len() >= 40, "corpus shrank to {}", files.len());
    for file in &files {
        let f = file.to_string_lossy();
        for cmd in [&["check"][..], &["poll-repos"], &["list"]] {
            let mut args = vec!["enrollment", "--file", &f];
            args.extend_from_slice(cmd);
            assert_located_error(file, &agent(&args));
        }
    }
}

#[test]
fn edits_of_an_invalid_file_change_nothing() {
    for file in corpus("tests/enrollment/invalid") {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let copy = dir.path().join("enrollment.toml");
        std::fs::copy(&file, &copy).unwrap_or_else(|e| panic!("{e}"));
        let before = snapshot(dir.path());
        let c = copy.to_string_lossy();
        for args in [
            vec!["enrollment", "--file", &c, "add", "brand-new"],
            vec!["enrollment", "--file", &c, "remove", "a"],
        ] {
            let run = agent(&args);
            assert_eq!(run.code, 2, "{}: {args:?}: {}", file.display(), run.stderr);
            assert_eq!(
                snapshot(dir.path()),
                before,
                "{}: {args:?} wrote something",
                file.display()
            );
        }
    }
}

#[test]
fn invalid_config_files_are_located_and_refused() {
    let files = corpus("tests/config/invalid");
    assert!(files.len() >= 15, "corpus shrank to {}", files.len());
    for file in &files {
        let f = file.to_string_lossy();
        assert_located_error(file, &agent(&["--config", &f, "enrollment", "poll-repos"]));
        assert_located_error(file, &agent(&["--config", &f, "state", "status"]));
    }
}

#[test]
fn valid_config_files_load() {
    for file in corpus("tests/config/valid") {
        let f = file.to_string_lossy();
        let run = agent(&["--config", &f, "enrollment", "poll-repos"]);
        assert_eq!(run.code, 0, "{f}: {}", run.stderr);
    }
}

#[test]
fn valid_enrollment_files_render_expected_poll_repos() {
    let files = corpus("tests/enrollment/valid");
    assert!(files.len() >= 12, "corpus shrank to {}", files.len());
    for file in &files {
        let expected = std::fs::read_to_string(file.with_extension("poll-repos"))
            .unwrap_or_else(|e| panic!("{}: expected output: {e}", file.display()));
        let run = poll_repos(file);
        assert_eq!(run.code, 0, "{}: {}", file.display(), run.stderr);
        assert_eq!(run.stdout, expected, "{}", file.display());
        let check = agent(&["enrollment", "--file", &file.to_string_lossy(), "check"]);
        assert_eq!(check.code, 0, "{}: {}", file.display(), check.stderr);
    }
}
