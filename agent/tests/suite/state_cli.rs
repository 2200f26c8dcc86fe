//! The state database and the job lock, seen from separate processes.
use crate::common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cc_ci_agent::ledger::JobLock;
use common::{agent, repo};

fn config_in(dir: &Path) -> String {
    let config = dir.join("agent.toml");
    let enrollment = repo().join("tests/enrollment/valid/example.toml");
    fs::write(
        &config,
        format!(
            "enrollment_file = {:?}\nstate_dir = \"state\"\n",
            enrollment.to_string_lossy()
        ),
    )
    .expect("write config");
    config.to_string_lossy().into_owned()
}

fn status(config: &str) -> serde_json::Value {
    let run = agent(&["--config", config, "--format", "json", "state", "status"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).expect("json")
}

#[test]
fn status_creates_the_database_at_the_current_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_in(dir.path());
    let v = status(&config);
    assert_eq!(v["schema_version"], cc_ci_agent::ledger::SCHEMA_VERSION);
    assert_eq!(v["lock_holder"], serde_json::Value::Null);
    assert!(dir.path().join("state/state.db").is_file());
    // Opening again migrates nothing and loses nothing.
    assert_eq!(
        status(&config)["schema_version"],
        cc_ci_agent::ledger::SCHEMA_VERSION
    );
}

#[test]
fn a_lock_held_by_another_process_is_named_by_job_and_pid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_in(dir.path());
    let held = JobLock::acquire(&dir.path().join("state"), "deploy").expect("lock");
    let v = status(&config);
    assert_eq!(v["lock_holder"]["job"], "deploy");
    assert_eq!(v["lock_holder"]["pid"], std::process::id());
    let human = agent(&["--config", &config, "state", "status"]);
    assert!(
        human.stdout.contains("lock: held by deploy (pid "),
        "{}",
        human.stdout
    );
    drop(held);
    assert_eq!(status(&config)["lock_holder"], serde_json::Value::Null);
}

/// The lock is the kernel's: a holder killed with SIGKILL leaves no stale lock behind.
#[test]
fn a_holder_killed_with_sigkill_releases_the_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    fs::create_dir_all(&state).expect("mkdir");
    // util-linux flock(1) takes the same flock(2) lock on the state directory that the agent uses;
    // -o keeps the lock in flock itself rather than in the `sleep` it runs, so killing flock is
    // killing the holder.
    let child = Command::new("flock")
        .arg("-o")
        .arg(&state)
        .args(["sleep", "20"])
        .stdout(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        assert!(
            std::env::var_os("CI").is_none(),
            "flock(1) missing: the SIGKILL lock check cannot run"
        );
        eprintln!("SKIPPED: flock(1) not found (util-linux)");
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while JobLock::holder(&state).expect("holder").is_none() {
        assert!(Instant::now() < deadline, "flock(1) never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = JobLock::acquire(&state, "sweep").expect_err("lock must be refused while held");
    assert!(
        refused
            .to_string()
            .starts_with("busy: another process holds"),
        "{refused}"
    );

    child.kill().expect("kill -9");
    child.wait().expect("wait");
    // flock(1)'s forked child closes its copy of the locked descriptor just before it execs
    // `sleep`; killed in that moment, the lock outlives the holder by that instant. Wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lock = loop {
        match JobLock::acquire(&state, "sweep") {
            Ok(lock) => break lock,
            Err(e) => assert!(Instant::now() < deadline, "lock free after SIGKILL: {e}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let holder = JobLock::holder(&state).expect("holder").expect("held");
    assert_eq!(
        (holder.job.as_str(), holder.pid),
        ("sweep", std::process::id())
    );
    drop(lock);
}
