//! Faults the agent must survive, beyond those in each command's own tests: a full or read-only
//! state directory, the database locked by another process, SIGTERM mid-job, two agents at once.
//! docs/reliability.md lists every fault with the test that proves it.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cc_ci_agent::ledger::{JobLock, Ledger};
use common::Run;

struct Host {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Host {
    /// An agent whose state directory is `state` (or `state_dir`), with a disk budget over one
    /// volume directory, and a sweep whose CI sleeps `CI_SLEEP` seconds.
    fn new(state_dir: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("volumes")).unwrap();
        std::fs::write(
            dir.path().join("enrollment.toml"),
            "[defaults]\nupstream = \"https://git.example.org/{recipe}.git\"\n\n[recipe.a]\n",
        )
        .unwrap();
        let state = state_dir.map_or_else(|| "state".to_string(), |p| p.display().to_string());
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "enrollment_file = \"enrollment.toml\"\nstate_dir = {state:?}\n\n[disk]\nbudget = \"1G\"\n\
                 [disk.volumes]\nkind = \"directory\"\nroot = \"volumes\"\n"
            ),
        )
        .unwrap();
        Self { dir, config }
    }

    fn state(&self) -> PathBuf {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let v: toml::Table = toml::from_str(&text).unwrap();
        let s = PathBuf::from(v["state_dir"].as_str().unwrap());
        if s.is_absolute() {
            s
        } else {
            self.dir.path().join(s)
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(common::bin());
        c.args(["--config", self.config.to_str().unwrap()])
            .args(args)
            .env("CC_CI_LOG", "warn");
        c
    }

    fn agent(&self, args: &[&str]) -> Run {
        common::run(&mut self.command(args))
    }

    /// A one-byte budget and no grace: gc deletes every volume nobody protects.
    fn delete_everything_unprotected(&self) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(
            &self.config,
            text.replace("budget = \"1G\"", "budget = 1\ngrace = 0"),
        )
        .unwrap();
    }
}

/// A volume of `dirs` × 100 one-byte files: slow enough to remove to be caught in the middle.
fn many_files(volume: &Path, dirs: usize) {
    for d in 0..dirs {
        std::fs::create_dir_all(volume.join(format!("d{d}"))).unwrap();
        for f in 0..100 {
            std::fs::write(volume.join(format!("d{d}/f{f}")), b"x").unwrap();
        }
    }
}

fn no_panic(run: &Run) {
    assert!(!run.stderr.contains("panicked"), "panic:\n{}", run.stderr);
}

/// A small tmpfs, or `None` (said loudly) where this machine may not mount one.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap().keep();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Some(Self(dir))
        } else {
            eprintln!("NOT RUN HERE: this test needs to mount a tmpfs (root with CAP_SYS_ADMIN); CI runs it");
            // .ci/run checks first and says so in its log, setting this when it cannot mount.
            if std::env::var_os("CI").is_some()
                && std::env::var_os("CC_CI_FAULTS_NO_MOUNT").is_none()
            {
                panic!("CI did not say it cannot mount: run the tests through .ci/run");
            }
            None
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_full_state_directory_is_a_clear_error_and_the_state_survives() {
    let Some(fs) = Tmpfs::mount("512k") else {
        return;
    };
    let h = Host::new(Some(&fs.0.join("state")));
    let ok = h.agent(&["gc"]);
    assert_eq!(ok.code, 0, "{}\n{}", ok.stdout, ok.stderr);
    // Fill the filesystem to the last byte.
    let filler = fs.0.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 1024 * 1024]);
    let full = h.agent(&["gc"]);
    no_panic(&full);
    assert_eq!(full.code, 1, "{}\n{}", full.stdout, full.stderr);
    assert!(
        full.stderr.contains("No space left")
            || full.stderr.contains("no space left")
            || full.stderr.contains("database or disk is full"),
        "{}",
        full.stderr
    );
    let health = h.agent(&["health"]);
    no_panic(&health);
    assert_eq!(health.code, 1, "{}", health.stderr);
    // Space back: the next runs work, and what was recorded before is whole.
    std::fs::remove_file(&filler).unwrap();
    let again = h.agent(&["gc"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let status = h.agent(&["state", "status"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        Ledger::open(&h.state(), &cc_ci_agent::clock::Clock::system())
            .unwrap()
            .gc_last_measured()
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_read_only_state_directory_is_a_clear_error() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let h = Host::new(Some(&fs.0.join("state")));
    assert_eq!(h.agent(&["gc"]).code, 0);
    let ro = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&fs.0)
        .status()
        .unwrap();
    assert!(ro.success());
    for args in [&["gc"][..], &["health"], &["state", "status"]] {
        let run = h.agent(args);
        no_panic(&run);
        assert_ne!(
            run.code, 0,
            "{args:?} succeeded on a read-only state directory"
        );
        assert!(
            run.stderr.contains("Read-only file system")
                || run.stderr.contains("readonly")
                || run.stderr.contains("is not writable"),
            "{args:?}: {}",
            run.stderr
        );
    }
    let _ = Command::new("mount")
        .args(["-o", "remount,rw"])
        .arg(&fs.0)
        .status();
}

#[test]
fn the_database_locked_by_another_process_is_waited_for_then_refused_clearly() {
    use std::io::BufRead;
    let h = Host::new(None);
    assert_eq!(h.agent(&["gc"]).code, 0);
    let db = h.state().join("state.db");
    // Another process's view: this test process, not the agent, holds an exclusive transaction.
    let hold = || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        conn
    };
    // Held while the agent starts: it says it waits, and once let go it goes on.
    let held = hold();
    let mut child = h
        .command(&["gc"])
        .env("CC_CI_LOG", "info")
        .env("CC_CI_DB_BUSY_WAIT", "60s")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("held by another process; waiting up to 60s") {
        said.clear();
        assert!(
            stderr.read_line(&mut said).unwrap() > 0,
            "the agent never said it waits"
        );
    }
    held.execute_batch("COMMIT").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // Held past its patience: a clear error, nothing half done.
    let held = hold();
    let run = common::finish(h.command(&["gc"]).env("CC_CI_DB_BUSY_WAIT", "1s").output());
    no_panic(&run);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("database is locked"), "{}", run.stderr);
    held.execute_batch("COMMIT").unwrap();
    assert_eq!(h.agent(&["gc"]).code, 0);
}

#[test]
fn sigterm_mid_job_stops_it_and_releases_the_lock() {
    let h = Host::new(None);
    // Enough files that removing the volume takes a while.
    let v = h.dir.path().join("volumes/a_1.0.0+1");
    many_files(&v, 20);
    h.delete_everything_unprotected();
    let mut child = h
        .command(&["gc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while JobLock::holder(&h.state()).ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    eprintln!("gc after SIGTERM: {status:?}");
    // The lock is free at once, and the next run settles whatever was left.
    let lock = JobLock::acquire(&h.state(), "test");
    assert!(lock.is_ok(), "the lock outlived the stopped job: {lock:?}");
    drop(lock);
    let run = h.agent(&["--format", "json", "gc"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!v.exists());
    let deletions = Ledger::open(&h.state(), &cc_ci_agent::clock::Clock::system())
        .unwrap()
        .deletions_unfinished()
        .unwrap();
    assert!(deletions.is_empty(), "{deletions:?}");
}

/// Whether a process is gone: no /proc entry, or a zombie waiting for a parent to reap it.
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

#[test]
fn a_stop_signal_stops_the_agents_children_and_their_children_too() {
    let h = Host::new(None);
    // A hook that starts a grandchild and waits on it: what a CI script does.
    let mut text = std::fs::read_to_string(&h.config).unwrap();
    text.push_str(
        "\n[[hooks]]\ncommand = [\"sh\", \"-c\", \"echo $$ > hook.pid; sleep 60 & echo $! > sleep.pid; wait; touch finished\"]\n\
         events = [\"health-change\"]\ntimeout = \"120s\"\n",
    );
    std::fs::write(&h.config, text).unwrap();
    for (signal, code) in [("TERM", 143), ("INT", 130)] {
        for f in ["hook.pid", "sleep.pid", "state/health.json"] {
            let _ = std::fs::remove_file(h.dir.path().join(f));
        }
        let child = h
            .command(&["health"])
            .current_dir(h.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let pids = loop {
            let read = |f: &str| std::fs::read_to_string(h.dir.path().join(f)).ok();
            if let (Some(a), Some(b)) = (read("hook.pid"), read("sleep.pid")) {
                if !a.trim().is_empty() && !b.trim().is_empty() {
                    break [a.trim().to_string(), b.trim().to_string()];
                }
            }
            assert!(Instant::now() < deadline, "the hook never started");
            std::thread::sleep(Duration::from_millis(10));
        };
        Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "SIG{signal}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("stopping"),
            "SIG{signal}"
        );
        // The hook's shell and its sleep stop with the agent; they do not run on orphaned.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pids.iter().all(|p| gone(p)) {
            assert!(
                Instant::now() < deadline,
                "SIG{signal}: still running: {pids:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!h.dir.path().join("finished").exists());
        assert!(JobLock::acquire(&h.state(), "test").is_ok());
    }
}

#[test]
fn two_agents_started_together_do_not_both_run() {
    let h = Host::new(None);
    // A job that holds the lock for a while: gc over many small files.
    for n in 0..4 {
        many_files(&h.dir.path().join(format!("volumes/r{n}_1.0.0+1")), 5);
    }
    h.delete_everything_unprotected();
    let a = h
        .command(&["gc"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = h
        .command(&["gc"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = vec![a.status.code().unwrap(), b.status.code().unwrap()];
    codes.sort();
    // Either the second found the first holding the lock (4), or started after it finished and
    // found nothing to do (0); never both deleting.
    assert!(codes == [0, 4] || codes == [0, 0], "{codes:?}");
    let deleted = Ledger::open(&h.state(), &cc_ci_agent::clock::Clock::system())
        .unwrap()
        .deletions_recent(100)
        .unwrap();
    assert_eq!(
        deleted.len(),
        4,
        "each volume deleted exactly once: {deleted:?}"
    );
}
