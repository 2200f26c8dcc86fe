//! `cc-ci-agent deploy` and `rollback` against an emulated NixOS host (see testkit/src/emulator/):
//! real git checkouts, real generation links, real transient timers; the fault matrix of the
//! deploy issue. Each scenario ends on the exact previous generation or on the new one, with a
//! journal row and the documented exit code.

use crate::common;
use crate::support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cc_ci_agent::ledger::{JobLock, Stage};
use cc_ci_testkit::emulator::EmulatedHost;
use common::{agent, Run};
use support::git;

const GOOD: &str = "unit cc-ci-bridge.service active POLL_REPOS=alpha,beta\nunit cc-ci-enrollment-check.service active\n";

struct Fixture {
    dir: tempfile::TempDir,
    host: EmulatedHost,
    flake: PathBuf,
    config: PathBuf,
}

impl Fixture {
    /// A host running `running`, a flake checkout tracking an upstream, and an agent.toml whose
    /// [deploy] section gets `deploy_keys` and which ends with `tables`.
    fn new(running: &str, deploy_keys: &str, tables: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = EmulatedHost::create(&dir.path().join("host"), running).expect("emulated host");
        let upstream = dir.path().join("upstream.git");
        let flake = dir.path().join("flake");
        git(
            dir.path(),
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                &upstream.to_string_lossy(),
            ],
        );
        git(
            dir.path(),
            &["init", "-q", "-b", "main", &flake.to_string_lossy()],
        );
        std::fs::create_dir_all(flake.join("host")).unwrap();
        std::fs::write(
            flake.join("enrollment.toml"),
            "[recipe.alpha]\n[recipe.beta]\n",
        )
        .unwrap();
        std::fs::write(flake.join("flake.lock"), "{}\n").unwrap();
        std::fs::write(flake.join("host/cc-ci.conf"), running).unwrap();
        git(&flake, &["add", "-A"]);
        git(&flake, &["commit", "-q", "-m", "initial"]);
        git(
            &flake,
            &["remote", "add", "origin", &upstream.to_string_lossy()],
        );
        git(&flake, &["push", "-q", "-u", "origin", "main"]);
        let config = dir.path().join("agent.toml");
        let text = format!(
            "enrollment_file = \"flake/enrollment.toml\"\nstate_dir = \"state\"\n\n[bridge]\nunit = \"cc-ci-bridge\"\n\n\
             [deploy]\nflake = \"{}#cc-ci\"\nconfirm_timeout = \"12s\"\nverify_timeout = \"5s\"\nverify_interval = \"200ms\"\n{}{deploy_keys}\n{tables}",
            flake.display(),
            host.deploy_settings()
        );
        std::fs::write(&config, text).unwrap();
        Self {
            dir,
            host,
            flake,
            config,
        }
    }

    /// Commits (and pushes) the system the next deploy builds.
    fn commit_system(&self, conf: &str) {
        std::fs::write(self.flake.join("host/cc-ci.conf"), conf).unwrap();
        git(&self.flake, &["commit", "-q", "-am", "change the system"]);
        git(&self.flake, &["push", "-q"]);
    }

    fn agent(&self, args: &[&str]) -> Run {
        let mut full = vec!["--config", self.config.to_str().unwrap()];
        full.extend_from_slice(args);
        agent(&full)
    }

    /// [`Fixture::agent`] with `env` added to the agent's environment.
    fn agent_env(&self, args: &[&str], env: &[(&str, &std::path::Path)]) -> Run {
        let mut full = vec!["--config", self.config.to_str().unwrap()];
        full.extend_from_slice(args);
        let mut cmd = Command::new(common::bin());
        cmd.args(&full).env("CC_CI_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        common::run(&mut cmd)
    }

    fn last(&self) -> serde_json::Value {
        let run = self.agent(&["--format", "json", "deploy", "status"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()["last"].clone()
    }

    /// Commits `conf`, deploys it, checks the exit code; returns the run and the journal row.
    fn deploy_change(&self, conf: &str, code: i32) -> (Run, serde_json::Value) {
        self.commit_system(conf);
        let run = self.agent(&["deploy"]);
        assert_eq!(run.code, code, "{}\n{}", run.stdout, run.stderr);
        (run, self.last())
    }

    /// Every journal row's outcome ("running" while one runs), newest first.
    fn outcomes(&self) -> Vec<String> {
        let run = self.agent(&["--format", "json", "deploy", "history", "--limit", "1000"]);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        v["deploys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["outcome"].as_str().unwrap_or("running").to_string())
            .collect()
    }

    /// A hook for every event, which appends each event's JSON to the file returned.
    fn hooked(&self) -> PathBuf {
        let hook = "[[hooks]]\ncommand = [\"sh\", \"-c\", \"cat >> \\\"$HOOK_LOG\\\"; echo >> \\\"$HOOK_LOG\\\"\"]\npass_env = [\"HOOK_LOG\"]\n";
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, format!("{text}\n{hook}")).unwrap();
        self.dir.path().join("hooks.log")
    }

    /// [`Fixture::agent`], its hooks writing to `log`.
    fn agent_hooked(&self, args: &[&str], log: &std::path::Path) -> Run {
        let mut full = vec!["--config", self.config.to_str().unwrap()];
        full.extend_from_slice(args);
        common::finish(
            Command::new(common::bin())
                .args(&full)
                .env("HOOK_LOG", log)
                .env("CC_CI_LOG", "warn")
                .output(),
        )
    }

    /// Deploys only commits signed by a key in `signers` (`[deploy] allowed_signers`).
    fn trust(&self, signers: &std::path::Path) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let line = format!(
            "[deploy]\nallowed_signers = {:?}\n",
            signers.display().to_string()
        );
        std::fs::write(&self.config, text.replacen("[deploy]\n", &line, 1)).unwrap();
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// The host is exactly where it was: same running system, same profile generation, same boot default.
fn assert_unchanged(f: &Fixture, before: &cc_ci_agent::host::Generation) {
    assert_eq!(f.host.generation().unwrap(), *before, "profile moved");
    assert_eq!(
        f.host.running().unwrap(),
        before.path,
        "running system moved"
    );
    assert_eq!(
        f.host.boot_default().unwrap(),
        before.path,
        "boot default moved"
    );
}

fn outcome(row: &serde_json::Value) -> &str {
    row["outcome"].as_str().unwrap_or("none")
}

fn assert_message(row: &serde_json::Value, part: &str) {
    let message = row["message"].as_str().unwrap_or_default();
    assert!(message.contains(part), "message lacks {part:?}: {row}");
}

#[test]
fn a_good_change_is_activated_verified_and_committed() {
    let f = Fixture::new(GOOD, "", "");
    let before = f.host.generation().unwrap();
    let (run, row) = f.deploy_change(&format!("{GOOD}unit cc-ci-mirrors.timer active\n"), 0);
    let after = f.host.generation().unwrap();
    assert_eq!(after.number, before.number + 1);
    assert_ne!(after.path, before.path);
    assert_eq!(f.host.running().unwrap(), after.path);
    assert_eq!(f.host.boot_default().unwrap(), after.path);
    assert_eq!(outcome(&row), "deployed");
    assert_eq!(row["to_generation"], after.number);
    assert_eq!(row["from_generation"], before.number);
    assert_eq!(
        row["flake_commit"].as_str().unwrap(),
        git(&f.flake, &["rev-parse", "HEAD"]).trim()
    );
    assert!(
        row["flake_lock"].as_str().is_some_and(|s| s.len() == 40),
        "{row}"
    );
    assert!(
        row["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true),
        "{row}"
    );
    // The dead-man switch was armed before activation and stood down after the commit.
    let timers = f.host.timer_log();
    assert!(
        timers[0].starts_with("armed cc-ci-deadman-1 12"),
        "{timers:?}"
    );
    assert_eq!(timers[1], "stopped cc-ci-deadman-1", "{timers:?}");
    assert!(run.stdout.contains("✓ bridge POLL_REPOS"), "{}", run.stdout);
}

#[test]
fn build_failure_activates_nothing() {
    let f = Fixture::new(GOOD, "", "");
    let before = f.host.generation().unwrap();
    let (run, row) = f.deploy_change(
        "build-fail attribute 'services.cc-ci.enrollmentFile' is missing\n",
        8,
    );
    assert!(
        run.stdout.contains("enrollmentFile' is missing"),
        "the build's stderr reaches the operator: {}",
        run.stdout
    );
    assert_unchanged(&f, &before);
    assert_eq!(f.host.activations().len(), 1, "only the initial boot");
    assert_eq!(outcome(&row), "build-failed");
    assert!(
        f.host.timer_log().is_empty(),
        "no dead-man armed for a failed build"
    );
}

#[test]
fn a_newly_failed_unit_rolls_back() {
    let f = Fixture::new(GOOD, "", "");
    let before = f.host.generation().unwrap();
    let (_, row) = f.deploy_change(&format!("{GOOD}unit cc-ci-sweep.service failed\n"), 9);
    assert_unchanged(&f, &before);
    assert_eq!(outcome(&row), "rolled-back");
    assert_message(&row, "newly failed: cc-ci-sweep.service");
    assert!(
        row["rollback_checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true),
        "{row}"
    );
    // The new system was activated (test), then the old one again.
    let modes: Vec<String> = f
        .host
        .activations()
        .iter()
        .skip(1)
        .map(|(m, _)| m.clone())
        .collect();
    assert_eq!(modes, ["test", "test"]);
}

#[test]
fn a_hard_activation_failure_rolls_back() {
    let f = Fixture::new(GOOD, "", "");
    let before = f.host.generation().unwrap();
    let (_, row) = f.deploy_change(&format!("{GOOD}activate-exit 1\n"), 9);
    assert_unchanged(&f, &before);
    assert_message(&row, "activation failed");
}

#[test]
fn a_unit_failing_before_and_after_is_not_held_against_the_deploy() {
    let legacy = format!("{GOOD}unit legacy-backup.service failed\n");
    let f = Fixture::new(&legacy, "", "");
    f.commit_system(&format!("{legacy}unit cc-ci-mirrors.timer active\n"));
    let run = f.agent(&["deploy"]);
    // switch-to-configuration exits 4 for the old failure; the difference decides, not the code.
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("already failing before the deploy"),
        "{}",
        run.stdout
    );
    assert_eq!(outcome(&f.last()), "deployed");
}

#[test]
fn a_bridge_poll_repos_mismatch_rolls_back() {
    let f = Fixture::new(GOOD, "", "");
    let before = f.host.generation().unwrap();
    let (_, row) = f.deploy_change("unit cc-ci-bridge.service active POLL_REPOS=alpha\nunit cc-ci-enrollment-check.service active\n", 9);
    assert_unchanged(&f, &before);
    assert_message(
        &row,
        r#"POLL_REPOS="alpha", the enrollment says "alpha,beta""#,
    );
    // beta, degraded before (never synced), is failed under the new system: a health regression.
    assert_message(&row, "recipe health: newly failed: beta");
    let rollback = row["rollback_checks"].as_array().unwrap();
    assert!(
        rollback
            .iter()
            .any(|c| c["name"] == "recipe health" && c["ok"] == true),
        "{row}"
    );
}

/// An HTTP server on 127.0.0.1 answering 503 to the first `failures` requests, then 200.
fn flaky_server(failures: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let status = if n < failures {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    (url, count)
}

#[test]
fn an_http_check_that_recovers_within_the_grace_period_does_not_roll_back() {
    let (url, count) = flaky_server(3);
    let f = Fixture::new(
        GOOD,
        "",
        &format!("[[deploy.checks]]\nname = \"web\"\nurl = \"{url}\"\n"),
    );
    let (run, _) = f.deploy_change(&format!("{GOOD}unit web.service active\n"), 0);
    assert!(count.load(Ordering::SeqCst) >= 4, "the check was retried");
    assert!(
        run.stdout.contains("verify: ok after 4 attempt(s)"),
        "{}",
        run.stdout
    );
}

#[test]
fn an_http_check_that_never_recovers_rolls_back() {
    let (url, _) = flaky_server(usize::MAX);
    // The check fails for the old system too, so the rollback cannot verify: rollback failed.
    let f = Fixture::new(
        GOOD,
        "",
        &format!("[[deploy.checks]]\nname = \"web\"\nurl = \"{url}\"\n"),
    );
    let before = f.host.generation().unwrap();
    let (run, row) = f.deploy_change(&format!("{GOOD}unit web.service active\n"), 10);
    assert_unchanged(&f, &before);
    assert_eq!(outcome(&row), "rollback-failed");
    assert_message(&row, "answered HTTP 503");
    assert!(run.stdout.contains("ROLLBACK FAILED"), "{}", run.stdout);
}

#[test]
fn a_check_failing_only_on_the_new_system_rolls_back_cleanly() {
    // The check passes only while the old system runs: it looks at the host's running system.
    let f = Fixture::new(GOOD, "", "");
    let before = f.host.generation().unwrap();
    let probe = format!(
        "[[deploy.checks]]\nname = \"old system\"\ncommand = [\"test\", \"{}\", \"-ef\", \"{}\"]\n",
        f.host.root.join("run/current-system").display(),
        before.path.display()
    );
    let text = std::fs::read_to_string(&f.config).unwrap() + &probe;
    std::fs::write(&f.config, text).unwrap();
    let (_, row) = f.deploy_change(&format!("{GOOD}unit web.service active\n"), 9);
    assert_unchanged(&f, &before);
    let checks = row["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "check \"old system\"" && c["ok"] == false),
        "{row}"
    );
}

#[test]
fn the_dead_man_switch_rolls_back_when_the_agent_is_killed_after_activation() {
    // Each verification round takes a second, so the agent is mid-verification when killed.
    let f = Fixture::new(
        GOOD,
        "",
        "[[deploy.checks]]\nname = \"slow\"\ncommand = [\"sleep\", \"1\"]\n",
    );
    let before = f.host.generation().unwrap();
    f.commit_system(&format!("{GOOD}unit web.service active\n"));
    let mut child = Command::new(common::bin())
        .args(["--config", f.config.to_str().unwrap(), "deploy"])
        .env("CC_CI_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the new system runs: it is then verifying (each round takes a second).
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.host.running().unwrap() == before.path {
        assert!(Instant::now() < deadline, "the deploy never activated");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let row = f.last();
    assert!(
        row["outcome"].is_null(),
        "the agent died before finishing: {row}"
    );

    // The transient timer outlives the agent, fires, and rolls back.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = f.last();
        if row["state"] == "finished" {
            assert_eq!(outcome(&row), "rolled-back", "{row}");
            assert_message(&row, "dead-man switch fired");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead-man switch never finished: {row}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_unchanged(&f, &before);
    assert!(
        f.host
            .timer_log()
            .iter()
            .any(|l| l == "fired cc-ci-deadman-1"),
        "{:?}",
        f.host.timer_log()
    );
}

#[test]
fn a_dead_man_switch_for_a_confirmed_deploy_does_nothing() {
    let f = Fixture::new(GOOD, "", "");
    f.commit_system(&format!("{GOOD}unit web.service active\n"));
    assert_eq!(f.agent(&["deploy"]).code, 0);
    let after = f.host.generation().unwrap();
    let run = f.agent(&["deploy", "deadman", "1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("nothing to roll back"),
        "{}",
        run.stdout
    );
    assert_eq!(f.host.running().unwrap(), after.path);
}

#[test]
fn a_dirty_tree_is_refused() {
    let f = Fixture::new(GOOD, "", "");
    let before = f.host.generation().unwrap();
    std::fs::write(
        f.flake.join("host/cc-ci.conf"),
        format!("{GOOD}unit x.service active\n"),
    )
    .unwrap();
    std::fs::write(f.flake.join("notes.txt"), "forgotten\n").unwrap();
    let run = f.agent(&["deploy"]);
    assert_eq!(run.code, 6, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("uncommitted changes") && run.stdout.contains("notes.txt"),
        "{}",
        run.stdout
    );
    assert_unchanged(&f, &before);
    assert_eq!(outcome(&f.last()), "refused-dirty");
}

#[test]
fn a_tree_behind_or_ahead_of_upstream_is_refused() {
    let f = Fixture::new(GOOD, "", "");
    let before = f.host.generation().unwrap();
    // Someone else pushed: the checkout is behind.
    let other = f.dir.path().join("other");
    git(
        f.dir.path(),
        &[
            "clone",
            "-q",
            f.dir.path().join("upstream.git").to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    );
    std::fs::write(other.join("README"), "x\n").unwrap();
    git(&other, &["add", "README"]);
    git(&other, &["commit", "-q", "-m", "elsewhere"]);
    git(&other, &["push", "-q"]);
    let run = f.agent(&["deploy"]);
    assert_eq!(run.code, 7, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("pull (or push)"), "{}", run.stdout);
    assert_unchanged(&f, &before);
    assert_eq!(outcome(&f.last()), "refused-stale");

    // require_synced = false lets an operator deploy anyway.
    let text = std::fs::read_to_string(&f.config)
        .unwrap()
        .replace("[deploy]\n", "[deploy]\nrequire_synced = false\n");
    std::fs::write(&f.config, text).unwrap();
    assert_eq!(f.agent(&["deploy"]).code, 0);
}

#[test]
fn an_unreachable_upstream_is_refused() {
    let f = Fixture::new(GOOD, "", "");
    std::fs::rename(
        f.dir.path().join("upstream.git"),
        f.dir.path().join("moved.git"),
    )
    .unwrap();
    let run = f.agent(&["deploy"]);
    assert_eq!(run.code, 7, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("cannot reach upstream"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_concurrent_deploy_is_refused() {
    let f = Fixture::new(GOOD, "", "");
    let _held = JobLock::acquire(&f.state_dir(), "sweep").unwrap();
    let run = f.agent(&["deploy"]);
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("busy: sweep (pid"), "{}", run.stderr);
}

#[test]
fn a_ci_build_in_flight_is_refused_unless_forced() {
    let flag = tempfile::NamedTempFile::new().unwrap();
    let f = Fixture::new(
        GOOD,
        &format!("busy_check = {{ command = [\"sh\", \"-c\", \"test -s {0} || exit 0; cat {0}; exit 1\"] }}\n", flag.path().display()),
        "",
    );
    std::fs::write(flag.path(), "plausible #41 running since 10:02\n").unwrap();
    let before = f.host.generation().unwrap();
    let (run, row) = f.deploy_change(&format!("{GOOD}unit web.service active\n"), 5);
    assert!(
        run.stdout.contains("plausible #41 running since 10:02"),
        "{}",
        run.stdout
    );
    assert_unchanged(&f, &before);
    assert_eq!(outcome(&row), "refused-ci-busy");
    assert_eq!(f.agent(&["deploy", "--force"]).code, 0);
    std::fs::write(flag.path(), "").unwrap();
}

#[test]
fn dry_run_builds_and_activates_nothing_and_an_unchanged_system_is_left_alone() {
    let f = Fixture::new(GOOD, "", "");
    let before = f.host.generation().unwrap();
    // The checkout describes the running system: nothing to do.
    let run = f.agent(&["deploy"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("nothing to do"), "{}", run.stdout);
    assert_eq!(outcome(&f.last()), "unchanged");

    f.commit_system(&format!("{GOOD}unit web.service active\n"));
    let run = f.agent(&["deploy", "--dry-run"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("dry run: would activate"),
        "{}",
        run.stdout
    );
    assert_unchanged(&f, &before);
    assert_eq!(f.host.activations().len(), 1);
    assert_eq!(outcome(&f.last()), "dry-run");
}

#[test]
fn rollback_returns_to_the_previous_generation_and_verifies() {
    let f = Fixture::new(GOOD, "", "");
    let first = f.host.generation().unwrap();
    f.commit_system(&format!("{GOOD}unit web.service active\n"));
    assert_eq!(f.agent(&["deploy"]).code, 0);
    let run = f.agent(&["rollback"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let now = f.host.generation().unwrap();
    assert_eq!((now.number, &now.path), (first.number, &first.path));
    assert_eq!(f.host.running().unwrap(), first.path);
    assert_eq!(f.host.boot_default().unwrap(), first.path);
    let row = f.last();
    assert_eq!(
        (row["kind"].as_str(), outcome(&row)),
        (Some("rollback"), "deployed")
    );

    let run = f.agent(&["rollback", "--to", "99"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("there is no generation 99"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_interrupted_deploy_is_reported_on_the_next_start() {
    let f = Fixture::new(GOOD, "", "");
    // A deploy that died while building: its row is unfinished and its pid is gone.
    let ledger =
        cc_ci_agent::ledger::Ledger::open(&f.state_dir(), &cc_ci_agent::clock::Clock::system())
            .unwrap();
    let id = ledger.deploy_begin("deploy", Some("x#cc-ci")).unwrap();
    ledger
        .deploy_set(
            id,
            cc_ci_agent::ledger::Field::FromPath,
            f.host.running().unwrap().to_string_lossy(),
        )
        .unwrap();
    assert!(ledger
        .deploy_advance(id, &[Stage::Preflight], Stage::Building)
        .unwrap());
    drop(ledger);
    let run = f.agent(&["deploy"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("notice: deploy #1 (pid "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("stopped before activating anything; the host runs the system it ran before"),
        "{}",
        run.stdout
    );
    let history = f.agent(&["--format", "json", "deploy", "history"]);
    let v: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    assert_eq!(v["deploys"][1]["outcome"], "interrupted");
}

#[test]
fn bad_input_is_refused_before_anything_happens() {
    let f = Fixture::new(GOOD, "", "");
    let run = f.agent(&["deploy", "--flake", "github:coop-cloud/cc-ci#cc-ci"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("must be a local directory"),
        "{}",
        run.stderr
    );

    // A host without nixos-rebuild, or without a readable system profile, is not a NixOS host.
    let text = std::fs::read_to_string(&f.config).unwrap();
    std::fs::write(
        &f.config,
        text.replace("bin/nixos-rebuild", "bin/no-such-program"),
    )
    .unwrap();
    let run = f.agent(&["deploy"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("nixos-rebuild not found"),
        "{}",
        run.stderr
    );
    std::fs::write(&f.config, &text).unwrap();

    std::fs::remove_file(f.host.profile()).unwrap();
    let run = f.agent(&["deploy"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot read the system profile"),
        "{}",
        run.stderr
    );
    assert!(f.host.activations().len() == 1 && f.host.timer_log().is_empty());
}

#[test]
fn history_and_status_read_the_journal() {
    let f = Fixture::new(GOOD, "", "");
    f.commit_system(&format!("{GOOD}unit web.service active\n"));
    let deploy = f.agent(&["deploy"]);
    assert_eq!(deploy.code, 0, "{}{}", deploy.stdout, deploy.stderr);
    // Whole screens: the deploy as it went, the journal's history and status.
    for (name, run) in [
        ("deploy", deploy),
        ("deploy_history", f.agent(&["deploy", "history"])),
        ("deploy_status", f.agent(&["deploy", "status"])),
    ] {
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        insta::assert_snapshot!(name, crate::screens::screen(&run.stdout, f.dir.path()));
    }
}

/// A checkout that pulls from its upstream over git:// on 127.0.0.1, and a second clone of that
/// upstream, where changes land as a merge on the forge would land them.
fn pulling() -> (Fixture, support::GitDaemon, PathBuf) {
    let f = Fixture::new(GOOD, "", "");
    let daemon = support::GitDaemon::start(f.dir.path());
    git(
        &f.flake,
        &["remote", "set-url", "origin", &daemon.url("upstream")],
    );
    let elsewhere = f.dir.path().join("elsewhere");
    let upstream = f.dir.path().join("upstream.git");
    git(
        f.dir.path(),
        &[
            "clone",
            "-q",
            &upstream.to_string_lossy(),
            &elsewhere.to_string_lossy(),
        ],
    );
    (f, daemon, elsewhere)
}

/// Lands `conf` upstream from the second clone; the commit it made.
fn land(elsewhere: &std::path::Path, conf: &str) -> String {
    std::fs::write(elsewhere.join("host/cc-ci.conf"), conf).unwrap();
    git(elsewhere, &["commit", "-q", "-am", "landed on the forge"]);
    git(elsewhere, &["push", "-q", "origin", "main"]);
    git(elsewhere, &["rev-parse", "HEAD"]).trim().to_string()
}

/// A commit in the checkout that upstream does not have: HEAD diverges from it.
fn commit_locally(f: &Fixture) {
    std::fs::write(f.flake.join("local.txt"), "a commit only here\n").unwrap();
    git(&f.flake, &["add", "local.txt"]);
    git(&f.flake, &["commit", "-q", "-m", "local only"]);
}

fn head(f: &Fixture) -> String {
    git(&f.flake, &["rev-parse", "HEAD"]).trim().to_string()
}

#[test]
fn pull_deploys_what_landed_upstream_and_then_has_nothing_to_do() {
    let (f, _daemon, elsewhere) = pulling();
    let landed = land(
        &elsewhere,
        &format!("{GOOD}unit cc-ci-mirrors.timer active\n"),
    );
    let run = f.agent(&["deploy", "--pull"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("pull: fast-forwarded"),
        "{}",
        run.stdout
    );
    assert_eq!(head(&f), landed, "the checkout is at what landed");
    let row = f.last();
    assert_eq!(outcome(&row), "deployed");
    assert_eq!(row["flake_commit"], landed.as_str());
    assert_eq!(f.host.unit_state("cc-ci-mirrors.timer"), "active");
    // Nothing new: one fetch, no change, nothing deployed twice.
    let again = f.agent(&["deploy", "--pull"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stdout.contains("pull: already at upstream's"),
        "{}",
        again.stdout
    );
    assert_eq!(outcome(&f.last()), "unchanged");
}

#[test]
fn pull_refuses_a_dirty_tree_a_diverged_head_and_an_unreachable_upstream() {
    let (f, _daemon, elsewhere) = pulling();
    let before = f.host.generation().unwrap();
    land(
        &elsewhere,
        &format!("{GOOD}unit cc-ci-mirrors.timer active\n"),
    );
    let start = head(&f);

    std::fs::write(f.flake.join("notes.txt"), "work in progress\n").unwrap();
    let dirty = f.agent(&["deploy", "--pull"]);
    assert_eq!(dirty.code, 6, "{}\n{}", dirty.stdout, dirty.stderr);
    assert_eq!(outcome(&f.last()), "refused-dirty");
    assert_eq!(head(&f), start, "nothing pulled into a dirty tree");
    assert!(
        f.flake.join("notes.txt").is_file(),
        "nothing stashed or removed"
    );
    std::fs::remove_file(f.flake.join("notes.txt")).unwrap();

    commit_locally(&f);
    let local = head(&f);
    let diverged = f.agent(&["deploy", "--pull"]);
    assert_eq!(
        diverged.code, 16,
        "{}\n{}",
        diverged.stdout, diverged.stderr
    );
    let row = f.last();
    assert_eq!(outcome(&row), "refused-diverged");
    assert!(
        row["message"]
            .as_str()
            .unwrap()
            .contains("only fast-forwards"),
        "{row}"
    );
    assert_eq!(head(&f), local, "no merge, no rebase, no reset");
    assert_eq!(
        git(&f.flake, &["rev-list", "--count", "--merges", "HEAD"]).trim(),
        "0"
    );

    git(&f.flake, &["reset", "-q", "--hard", &start]);
    git(
        &f.flake,
        &["remote", "set-url", "origin", "git://127.0.0.1:1/gone.git"],
    );
    let gone = f.agent(&["deploy", "--pull"]);
    assert_eq!(gone.code, 7, "{}\n{}", gone.stdout, gone.stderr);
    assert_eq!(outcome(&f.last()), "refused-stale");
    assert!(gone.stdout.contains("cannot fetch"), "{}", gone.stdout);
    assert_unchanged(&f, &before);
}

fn journal_rows(f: &Fixture) -> usize {
    f.outcomes().len()
}

/// The timer's run: a merge is deployed; then runs with nothing new write nothing.
#[test]
fn auto_deploys_what_landed_and_then_idles_without_a_journal_row() {
    let (f, _daemon, elsewhere) = pulling();
    let landed = land(
        &elsewhere,
        &format!("{GOOD}unit cc-ci-mirrors.timer active\n"),
    );
    let run = f.agent(&["deploy", "--auto"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(outcome(&f.last()), "deployed");
    assert_eq!(head(&f), landed);
    let rows = journal_rows(&f);
    for _ in 0..3 {
        let idle = f.agent(&["deploy", "--auto"]);
        assert_eq!(idle.code, 0, "{}", idle.stderr);
        assert!(idle.stdout.contains("nothing new"), "{}", idle.stdout);
    }
    assert_eq!(journal_rows(&f), rows, "an idle host writes nothing");
}

/// A commit that rolled back is not tried again until the branch moves, or --retry.
#[test]
fn auto_leaves_a_rolled_back_commit_until_the_branch_moves() {
    let (f, _daemon, elsewhere) = pulling();
    land(
        &elsewhere,
        &format!("{GOOD}unit cc-ci-sweep.service failed\n"),
    );
    let first = f.agent(&["deploy", "--auto"]);
    assert_eq!(first.code, 9, "{}\n{}", first.stdout, first.stderr);
    let rows = journal_rows(&f);
    let again = f.agent(&["deploy", "--auto"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.contains("not tried again"), "{}", again.stdout);
    assert_eq!(journal_rows(&f), rows, "not retried");
    let retried = f.agent(&["deploy", "--auto", "--retry"]);
    assert_eq!(retried.code, 9, "{}", retried.stderr);
    assert_eq!(journal_rows(&f), rows + 1);
    land(
        &elsewhere,
        &format!("{GOOD}unit cc-ci-mirrors.timer active\n"),
    );
    let fixed = f.agent(&["deploy", "--auto"]);
    assert_eq!(fixed.code, 0, "{}\n{}", fixed.stdout, fixed.stderr);
    assert_eq!(outcome(&f.last()), "deployed");
}

/// A dirty checkout over five timer runs: refused each time, recorded and told once.
#[test]
fn auto_records_a_refusal_once_over_five_runs() {
    let (f, _daemon, elsewhere) = pulling();
    land(
        &elsewhere,
        &format!("{GOOD}unit cc-ci-mirrors.timer active\n"),
    );
    std::fs::write(f.flake.join("notes.txt"), "work in progress\n").unwrap();
    let log = f.hooked();
    for _ in 0..5 {
        let run = f.agent_hooked(&["deploy", "--auto"], &log);
        assert_eq!(run.code, 6, "{}\n{}", run.stdout, run.stderr);
    }
    let outcomes = f.outcomes();
    let dirty = outcomes.iter().filter(|o| *o == "refused-dirty").count();
    assert_eq!(dirty, 1, "one row for one state: {outcomes:?}");
    let told = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(told.matches("refused-dirty").count(), 1, "{told}");
}

#[test]
fn auto_defers_while_ci_is_busy() {
    let (f, _daemon, elsewhere) = pulling();
    let busy = f.dir.path().join("busy.sh");
    std::fs::write(&busy, "#!/bin/sh\necho build 42 running\nexit 1\n").unwrap();
    std::fs::set_permissions(&busy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let text = std::fs::read_to_string(&f.config).unwrap();
    let text = text.replacen(
        "[deploy]\n",
        &format!(
            "[deploy]\nbusy_check = {{ command = [{:?}] }}\n",
            busy.display().to_string()
        ),
        1,
    );
    std::fs::write(&f.config, text).unwrap();
    land(
        &elsewhere,
        &format!("{GOOD}unit cc-ci-mirrors.timer active\n"),
    );
    let before = head(&f);
    let run = f.agent(&["deploy", "--auto"]);
    assert_eq!(
        run.code, 0,
        "deferred, not failed: {}\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains("deferred to the next run"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("build 42"), "{}", run.stdout);
    assert_eq!(head(&f), before, "nothing pulled while CI runs");
    assert_eq!(journal_rows(&f), 0);
}

/// The hooks hear `deploy-pulled` when the checkout moved, `deploy-refused-diverged` when it
/// could not, and the journal row says from where it was pulled.
#[test]
fn pull_tells_the_hooks_what_it_pulled_and_where_it_diverged() {
    let (f, _daemon, elsewhere) = pulling();
    let log = f.hooked();
    let start = head(&f);
    land(
        &elsewhere,
        &format!("{GOOD}unit cc-ci-mirrors.timer active\n"),
    );
    assert_eq!(f.agent_hooked(&["deploy", "--pull"], &log).code, 0);
    assert_eq!(f.last()["pulled_from"], start.as_str());
    let events = |log: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["event"].as_str().unwrap().to_string()
            })
            .collect()
    };
    assert_eq!(events(&log), ["deploy", "deploy-pulled"]);

    commit_locally(&f);
    land(
        &elsewhere,
        &format!("{GOOD}unit cc-ci-sweep.timer active\n"),
    );
    assert_eq!(f.agent_hooked(&["deploy", "--auto"], &log).code, 16);
    assert_eq!(
        events(&log)[2..],
        ["deploy", "deploy-refused-diverged"],
        "{:?}",
        events(&log)
    );
}

/// An SSH key made for the test, and an allowed-signers line for it.
fn ssh_key(dir: &std::path::Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output();
    match made {
        Ok(o) if o.status.success() => {}
        other => panic!("ssh-keygen (openssh-client) is needed to make signing keys: {other:?}"),
    }
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (
        key,
        format!("t@example.org namespaces=\"git\" {}", public.trim()),
    )
}

/// Lands `conf` upstream as a commit signed with `key` (or unsigned).
fn land_signed(elsewhere: &std::path::Path, conf: &str, key: Option<&std::path::Path>) -> String {
    std::fs::write(elsewhere.join("host/cc-ci.conf"), conf).unwrap();
    let mut args = vec!["-c".to_string(), "gpg.format=ssh".to_string()];
    if let Some(k) = key {
        args.extend(["-c".into(), format!("user.signingkey={}", k.display())]);
    }
    args.extend(["commit".into(), "-q".into(), "-am".into(), "landed".into()]);
    if key.is_some() {
        args.push("-S".into());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    git(elsewhere, &refs);
    git(elsewhere, &["push", "-q", "origin", "main"]);
    git(elsewhere, &["rev-parse", "HEAD"]).trim().to_string()
}

/// With deploy.allowed_signers, only a commit signed by one of those keys is pulled and
/// deployed; an unsigned one, or one signed by another key, is refused before the checkout moves.
#[test]
fn only_commits_signed_by_an_allowed_key_are_pulled_and_deployed() {
    let (f, _daemon, elsewhere) = pulling();
    let (trusted, line) = ssh_key(f.dir.path(), "trusted");
    let (stranger, _) = ssh_key(f.dir.path(), "stranger");
    let signers = f.dir.path().join("allowed_signers");
    std::fs::write(&signers, format!("{line}\n")).unwrap();
    f.trust(&signers);
    let start = head(&f);

    land_signed(&elsewhere, &format!("{GOOD}unit a.timer active\n"), None);
    let unsigned = f.agent(&["deploy", "--pull"]);
    assert_eq!(
        unsigned.code, 17,
        "{}\n{}",
        unsigned.stdout, unsigned.stderr
    );
    assert_eq!(outcome(&f.last()), "refused-unsigned");
    assert_eq!(
        head(&f),
        start,
        "an unsigned commit never reaches the checkout"
    );

    land_signed(
        &elsewhere,
        &format!("{GOOD}unit b.timer active\n"),
        Some(&stranger),
    );
    let foreign = f.agent(&["deploy", "--pull"]);
    assert_eq!(foreign.code, 17, "{}\n{}", foreign.stdout, foreign.stderr);
    assert_eq!(head(&f), start);

    let good = land_signed(
        &elsewhere,
        &format!("{GOOD}unit cc-ci-mirrors.timer active\n"),
        Some(&trusted),
    );
    let signed = f.agent(&["deploy", "--pull"]);
    assert_eq!(signed.code, 0, "{}\n{}", signed.stdout, signed.stderr);
    assert_eq!(head(&f), good);
    assert_eq!(outcome(&f.last()), "deployed");
}

/// `health`'s `deploy` host check, from what the deploy published (health, as the job user,
/// cannot read root's journal).
fn deploy_check(f: &Fixture) -> serde_json::Value {
    let run = f.agent(&["--format", "json", "health"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout, run.stderr));
    v["host"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "deploy")
        .cloned()
        .unwrap_or_else(|| panic!("no deploy check: {v}"))
}

#[test]
fn health_says_whether_the_host_runs_upstreams_head_and_how_far_behind() {
    let (f, _daemon, elsewhere) = pulling();
    land(
        &elsewhere,
        &format!("{GOOD}unit cc-ci-mirrors.timer active\n"),
    );
    assert_eq!(f.agent(&["deploy", "--auto"]).code, 0);
    let ok = deploy_check(&f);
    assert_eq!(ok["status"], "ok", "{ok}");
    assert!(
        ok["reason"]
            .as_str()
            .unwrap()
            .contains("runs upstream's head"),
        "{ok}"
    );
    land(
        &elsewhere,
        &format!("{GOOD}unit cc-ci-sweep.service failed\n"),
    );
    assert_eq!(f.agent(&["deploy", "--auto"]).code, 9);
    assert_eq!(f.agent(&["deploy", "--auto"]).code, 0, "not tried again");
    let behind = deploy_check(&f);
    assert_eq!(behind["status"], "warn", "{behind}");
    let reason = behind["reason"].as_str().unwrap();
    assert!(
        reason.contains("rolled-back") && reason.contains("1 commit(s) ahead of"),
        "{behind}"
    );
}

/// `--dry-run` shows, and the journal keeps, what the switch would change: the closure diff
/// (`nix store diff-closures`) and the units it would stop, restart and start (`dry-activate`).
#[test]
fn a_dry_run_shows_the_closure_diff_and_the_units_that_would_change() {
    let f = Fixture::new(GOOD, "", "");
    let before = f.host.generation().unwrap();
    f.commit_system(
        "unit cc-ci-bridge.service active POLL_REPOS=alpha,beta,gamma\nunit hello.service active\n",
    );
    let run = f.agent(&["deploy", "--dry-run"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("changes: "))
        .unwrap_or_else(|| panic!("no changes line:\n{}", run.stdout));
    assert!(line.contains("1 added, 1 removed"), "{line}");
    assert!(
        line.contains("stop cc-ci-enrollment-check.service"),
        "{line}"
    );
    assert!(line.contains("restart cc-ci-bridge.service"), "{line}");
    assert!(line.contains("start hello.service"), "{line}");
    let row = f.last();
    assert_eq!(outcome(&row), "dry-run");
    assert_eq!(
        row["changes"]["units"]["start"][0], "hello.service",
        "{row}"
    );
    assert_eq!(
        row["changes"]["closure"]["added"][0]["name"],
        "hello.service"
    );
    let status = f.agent(&["deploy", "status"]);
    assert!(status.stdout.contains("changes   "), "{}", status.stdout);
    assert_unchanged(&f, &before);
}

/// A diverged HEAD and an unsigned commit, each over five timer runs: refused every run, one
/// journal row and one hook each.
#[test]
fn auto_records_a_diverged_head_and_an_unsigned_commit_once_each() {
    let (f, _daemon, elsewhere) = pulling();
    let (trusted, line) = ssh_key(f.dir.path(), "trusted");
    let signers = f.dir.path().join("allowed_signers");
    std::fs::write(&signers, format!("{line}\n")).unwrap();
    f.trust(&signers);
    let log = f.hooked();
    let five = |code: i32| {
        for _ in 0..5 {
            let run = f.agent_hooked(&["deploy", "--auto"], &log);
            assert_eq!(run.code, code, "{}\n{}", run.stdout, run.stderr);
        }
    };
    land_signed(&elsewhere, &format!("{GOOD}unit a.timer active\n"), None);
    five(17);
    // Upstream signed again; the checkout has a commit of its own.
    land_signed(
        &elsewhere,
        &format!("{GOOD}unit b.timer active\n"),
        Some(&trusted),
    );
    let start = head(&f);
    commit_locally(&f);
    five(16);
    assert_ne!(head(&f), start);
    let outcomes = f.outcomes();
    let count = |o: &str| outcomes.iter().filter(|x| *x == o).count();
    assert_eq!(
        (count("refused-unsigned"), count("refused-diverged")),
        (1, 1),
        "{outcomes:?}"
    );
    let told = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        told.matches("\"deploy-refused-unsigned\"").count(),
        1,
        "{told}"
    );
    assert_eq!(
        told.matches("\"deploy-refused-diverged\"").count(),
        1,
        "{told}"
    );
}

/// A GPG home with one signing key made for the test, and that key's public part, armored.
struct GpgKey {
    home: PathBuf,
    public: String,
}

impl GpgKey {
    fn make(dir: &std::path::Path) -> Self {
        let home = dir.join("gnupg");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let gpg = |args: &[&str]| {
            Command::new("gpg")
                .env("GNUPGHOME", &home)
                .args(["--batch", "--quiet"])
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("gpg (gnupg) is needed to make a signing key: {e}"))
        };
        let made = gpg(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            "t <t@example.org>",
            "ed25519",
            "sign",
            "never",
        ]);
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let public =
            String::from_utf8(gpg(&["--armor", "--export", "t@example.org"]).stdout).unwrap();
        Self { home, public }
    }
}

impl Drop for GpgKey {
    fn drop(&mut self) {
        // The agent gpg started for the key stays until told to go.
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &self.home)
            .args(["--kill", "all"])
            .output();
    }
}

/// The same rule with OpenPGP keys: an armored key file is read as the keys to trust.
#[test]
fn a_gpg_signed_commit_is_deployed_and_an_unsigned_one_is_not() {
    let (f, _daemon, elsewhere) = pulling();
    let key = GpgKey::make(f.dir.path());
    let signers = f.dir.path().join("allowed.asc");
    std::fs::write(&signers, &key.public).unwrap();
    f.trust(&signers);
    let start = head(&f);
    land(&elsewhere, &format!("{GOOD}unit a.timer active\n"));
    let unsigned = f.agent(&["deploy", "--pull"]);
    assert_eq!(
        unsigned.code, 17,
        "{}\n{}",
        unsigned.stdout, unsigned.stderr
    );
    assert_eq!(head(&f), start);

    let good = land_gpg_signed(
        &elsewhere,
        &format!("{GOOD}unit cc-ci-mirrors.timer active\n"),
        &key,
    );
    let run = f.agent(&["deploy", "--pull"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(head(&f), good);
    assert_eq!(outcome(&f.last()), "deployed");
}

/// Commits `conf` in `elsewhere` signed with OpenPGP by `key` and pushes it; the commit.
fn land_gpg_signed(elsewhere: &std::path::Path, conf: &str, key: &GpgKey) -> String {
    std::fs::write(elsewhere.join("host/cc-ci.conf"), conf).unwrap();
    let signed = Command::new("git")
        .current_dir(elsewhere)
        .env("GNUPGHOME", &key.home)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.org",
            "-c",
            "gpg.format=openpgp",
            "-c",
            "user.signingkey=t@example.org",
            "commit",
            "-q",
            "-S",
            "-am",
            "signed with OpenPGP",
        ])
        .output()
        .unwrap();
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    git(elsewhere, &["push", "-q", "origin", "main"]);
    git(elsewhere, &["rev-parse", "HEAD"]).trim().to_string()
}

/// An SSH signers file, and a commit signed with OpenPGP by a key that sits in the deploying
/// user's own keyring (here its GNUPGHOME, with the secret key: trust cannot be higher): git
/// picks the verifier from the signature, so only a check of the signature's kind refuses it.
#[test]
fn an_openpgp_signature_never_passes_an_ssh_signers_file() {
    let (f, _daemon, elsewhere) = pulling();
    let (_trusted, line) = ssh_key(f.dir.path(), "trusted");
    let signers = f.dir.path().join("allowed_signers");
    std::fs::write(&signers, format!("{line}\n")).unwrap();
    f.trust(&signers);
    let start = head(&f);
    let key = GpgKey::make(f.dir.path());
    land_gpg_signed(&elsewhere, &format!("{GOOD}unit a.timer active\n"), &key);
    let run = f.agent_env(&["deploy", "--pull"], &[("GNUPGHOME", &key.home)]);
    assert_eq!(run.code, 17, "{}\n{}", run.stdout, run.stderr);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains("OpenPGP") && said.contains("SSH"),
        "the refusal names both kinds: {said}"
    );
    assert_eq!(head(&f), start, "the checkout did not move");
    assert_eq!(outcome(&f.last()), "refused-unsigned");
}

/// The other crossing: an OpenPGP signers file, and a commit signed with an SSH key that the
/// deploying user's own git configuration trusts (`gpg.ssh.allowedSignersFile`).
#[test]
fn an_ssh_signature_never_passes_an_openpgp_signers_file() {
    let (f, _daemon, elsewhere) = pulling();
    let key = GpgKey::make(f.dir.path());
    let signers = f.dir.path().join("allowed.asc");
    std::fs::write(&signers, &key.public).unwrap();
    f.trust(&signers);
    let (ssh, line) = ssh_key(f.dir.path(), "planted");
    let planted = f.dir.path().join("planted_signers");
    std::fs::write(&planted, format!("{line}\n")).unwrap();
    let global = f.dir.path().join("root.gitconfig");
    std::fs::write(
        &global,
        format!(
            "[gpg \"ssh\"]\n\tallowedSignersFile = {}\n",
            planted.display()
        ),
    )
    .unwrap();
    let start = head(&f);
    land_signed(
        &elsewhere,
        &format!("{GOOD}unit a.timer active\n"),
        Some(&ssh),
    );
    let run = f.agent_env(&["deploy", "--pull"], &[("GIT_CONFIG_GLOBAL", &global)]);
    assert_eq!(run.code, 17, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(head(&f), start, "the checkout did not move");
}

/// The signers file is read as untrusted files are: a FIFO (which would hang root's deploy
/// while it holds the host lock) and a device that never ends are refused at once, naming the
/// file; no commit can be shown signed, so the deploy is refused (exit 17), the checkout untouched.
#[test]
fn a_signers_file_that_is_no_plain_file_is_refused_at_once() {
    let (f, _daemon, elsewhere) = pulling();
    let fifo = f.dir.path().join("signers.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let start = head(&f);
    land(&elsewhere, &format!("{GOOD}unit a.timer active\n"));
    for (signers, what) in [
        (fifo.as_path(), "a FIFO"),
        (std::path::Path::new("/dev/zero"), "a device"),
    ] {
        let text = std::fs::read_to_string(&f.config).unwrap();
        f.trust(signers);
        let began = Instant::now();
        let run = f.agent(&["deploy", "--pull"]);
        std::fs::write(&f.config, text).unwrap();
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{what}: it waited"
        );
        assert_eq!(run.code, 17, "{what}: {}\n{}", run.stdout, run.stderr);
        let said = format!("{}{}", run.stdout, run.stderr);
        assert!(
            said.contains(&signers.display().to_string()) && said.contains(what),
            "{what}: {said}"
        );
        assert_eq!(head(&f), start, "{what}: the checkout did not move");
    }
}
