//! The host as recipe code sees it: CI runs as the agent's user, in the state directory that the
//! root deploy also writes. Nothing that user can plant there (a link, a FIFO, a deleted lock, a
//! huge output) may make the agent follow it, hang, grow without bound, leak a secret or mis-record
//! a result. docs/reliability.md lists each case with its test.

// Test crate: a panic is how a failure is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use support::Upstream;

/// Who recipe CI runs as in these tests: an unprivileged user that owns the state directory.
const JOB_UID: u32 = 65534;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A file the attacker wants root to damage: root's, 0600, with known bytes.
struct Victim {
    path: PathBuf,
}

impl Victim {
    fn new(dir: &Path, name: &str) -> Self {
        let path = dir.join(name);
        std::fs::write(&path, format!("precious {name}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        Self { path }
    }

    fn assert_untouched(&self) {
        let name = self.path.file_name().unwrap().to_string_lossy();
        let m = std::fs::metadata(&self.path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&self.path).unwrap(),
            format!("precious {name}\n"),
            "{name} was written through a link"
        );
        assert_eq!(m.mode() & 0o7777, 0o600, "{name}'s mode was changed");
        assert_eq!((m.uid(), m.gid()), (0, 0), "{name}'s owner was changed");
    }
}

fn chown_tree(path: &Path, uid: u32) {
    let status = std::process::Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}"), &path.to_string_lossy()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A fleet of one canonical recipe on a local forge, synced and swept once, with health writing
/// a report and a metrics file.
struct Fleet {
    dir: tempfile::TempDir,
    config: String,
}

impl Fleet {
    fn new(sweep_command: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["upstream", "work", "suites/app", "metrics"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let up = Upstream::create(&root.join("upstream"), &root.join("work"), "app", "main");
        up.tag("1.0.0+1.0", true);
        std::fs::write(
            root.join("enrollment.toml"),
            format!(
                "[defaults]\nupstream = \"file://{}/upstream/{{recipe}}.git\"\n\n[recipe.app]\ncanonical = true\n",
                root.display()
            ),
        )
        .unwrap();
        std::fs::write(root.join("poll-repos"), "app\n").unwrap();
        let config = root.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\ntests_dir = \"suites\"\n\n\
                 [forge]\nkind = \"local\"\npath = \"mirrors\"\n\n[sweep]\ncommand = {sweep_command}\n\n\
                 [health]\npoll_repos_file = \"poll-repos\"\nmetrics_file = \"metrics/cc-ci.prom\"\n"
            ),
        )
        .unwrap();
        Self {
            config: config.to_string_lossy().into_owned(),
            dir,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn state(&self) -> PathBuf {
        self.root().join("state")
    }

    fn agent(&self, args: &[&str]) -> common::Run {
        let mut full = vec!["--config", self.config.as_str()];
        full.extend_from_slice(args);
        common::agent(&full)
    }
}

/// The pids the next few hundred processes will get: where a writer naming its temporary by pid
/// can be waited for.
fn next_pids(n: u32) -> Vec<u32> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1000);
    (last + 1..last + 1 + n).collect()
}

#[test]
fn links_planted_in_the_state_directory_are_never_followed_by_root() {
    if !is_root() {
        println!("NOT RUN HERE: root is needed to run the agent as root over another user's state");
        return;
    }
    let fleet = Fleet::new("[\"true\"]");
    assert_eq!(fleet.agent(&["mirrors", "sync"]).code, 0);
    let state = fleet.state();
    // The job user owns the state and metrics directories, as on a real host.
    chown_tree(&state, JOB_UID);
    chown_tree(&fleet.root().join("metrics"), JOB_UID);
    let victims = fleet.root().join("victims");
    std::fs::create_dir(&victims).unwrap();
    let lock = Victim::new(&victims, "lock");
    let health = Victim::new(&victims, "health");
    let metrics = Victim::new(&victims, "metrics");
    let temporary = Victim::new(&victims, "temporary");
    let plant = |at: &Path, victim: &Victim| {
        let _ = std::fs::remove_file(at);
        std::os::unix::fs::symlink(&victim.path, at).unwrap();
        rustix::fs::chownat(
            rustix::fs::CWD,
            at,
            Some(rustix::fs::Uid::from_raw(JOB_UID)),
            Some(rustix::fs::Gid::from_raw(JOB_UID)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    };
    plant(&state.join("agent.lock"), &lock);
    plant(&state.join("health.json"), &health);
    plant(&fleet.root().join("metrics/cc-ci.prom"), &metrics);
    for pid in next_pids(400) {
        plant(&state.join(format!(".health.json.tmp-{pid}")), &temporary);
    }

    let sync = fleet.agent(&["mirrors", "sync"]);
    let report = fleet.agent(&["health"]);

    for v in [&lock, &health, &metrics, &temporary] {
        v.assert_untouched();
    }
    assert_eq!(sync.code, 0, "{}", sync.stderr);
    assert!(
        [0, 13, 14].contains(&report.code),
        "health ran: {}",
        report.stderr
    );
    // What root wrote in the job user's directory is the job user's, and nothing root owns is
    // left where that user could swap it.
    for entry in std::fs::read_dir(&state).unwrap().flatten() {
        let m = std::fs::symlink_metadata(entry.path()).unwrap();
        if m.file_type().is_file() {
            assert_eq!(
                m.uid(),
                JOB_UID,
                "{} is not the job user's",
                entry.path().display()
            );
        }
    }
    assert!(
        !std::fs::symlink_metadata(state.join("health.json"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "health.json is a report again, not the planted link"
    );
}

/// The root deploy over a state directory the job user owns: it keeps its journal where only root
/// writes, refuses to keep it anywhere else, and follows no link the job user planted.
#[test]
fn the_root_deploy_keeps_its_journal_where_the_job_user_cannot_write() {
    if !is_root() {
        println!(
            "NOT RUN HERE: root is needed to run the deploy as root over another user's state"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = cc_ci_agent::emulator::EmulatedHost::create(
        &dir.path().join("host"),
        "unit cc-ci-bridge.service active POLL_REPOS=app\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(dir.path().join("enrollment.toml"), "[recipe.app]\n").unwrap();
    // Not a checkout: the deploy is refused after taking the lock and opening its journal.
    std::fs::create_dir(dir.path().join("flake")).unwrap();
    let victim = Victim::new(dir.path(), "victim");
    std::os::unix::fs::symlink(&victim.path, state.join("agent.lock")).unwrap();
    std::os::unix::fs::symlink(&victim.path, state.join("state.db")).unwrap();
    chown_tree(&state, JOB_UID);
    let config = dir.path().join("agent.toml");
    let write_config = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\n\n[deploy]\nflake = \"{}#cc-ci\"\n{}{extra}",
                dir.path().join("flake").display(),
                host.deploy_settings()
            ),
        )
        .unwrap();
    };
    let c = config.to_string_lossy().into_owned();

    write_config("");
    let refused = common::agent(&["--config", &c, "deploy"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("set [deploy] state_dir"),
        "{}",
        refused.stderr
    );
    victim.assert_untouched();

    let journal = dir.path().join("deploy-journal");
    write_config(&format!(
        "state_dir = {:?}\n",
        journal.display().to_string()
    ));
    let run = common::agent(&["--config", &c, "deploy"]);
    assert!(
        run.stdout.contains("deploy #1") && run.stdout.contains("is not a git checkout"),
        "the deploy got as far as its pre-flight: {} {}{}",
        run.code,
        run.stdout,
        run.stderr
    );
    victim.assert_untouched();
    assert!(journal.join("state.db").is_file(), "the journal is root's");
    let status = common::agent(&["--config", &c, "--format", "json", "deploy", "status"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(status.stdout.contains("refused"), "{}", status.stdout);
    // Nothing in the job user's directory is root's.
    for entry in std::fs::read_dir(&state).unwrap().flatten() {
        let m = std::fs::symlink_metadata(entry.path()).unwrap();
        assert_eq!(m.uid(), JOB_UID, "{} is root's", entry.path().display());
    }
}

/// Two `enrollment add` of different names at the same moment: both exit 0 and both names are
/// in the file, every round.
#[test]
fn concurrent_enrollment_edits_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("enrollment.toml");
    std::fs::write(&file, "[recipe.base]\n").unwrap();
    let f = file.to_string_lossy().into_owned();
    for round in 0..20 {
        let names = [format!("a{round}"), format!("b{round}")];
        let children: Vec<_> = names
            .iter()
            .map(|n| {
                std::process::Command::new(common::bin())
                    .args(["enrollment", "--file", &f, "add", n])
                    .env("CC_CI_LOG", "warn")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for n in &names {
            assert!(
                text.contains(&format!("[recipe.{n}]")),
                "round {round}: {n} was lost:\n{text}"
            );
        }
    }
}

/// An edit keeps the file what it was: a link stays a link and its target is edited; owner, group
/// and mode stay; comments above a removed table and at the end stay; CRLF and a BOM stay. Only
/// the edited table differs.
#[test]
fn edits_keep_the_file_what_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("checkout/enrollment.toml");
    std::fs::create_dir(dir.path().join("checkout")).unwrap();
    let original = "\u{feff}# The fleet of this host.\r\n# Keep it sorted.\r\n\r\n[defaults]\r\nbranch = \"main\"\r\n\r\n\
                    # Going away soon.\r\n[recipe.old]\r\n\r\n# A note on keep.\r\n[recipe.keep]\r\ncanonical = true\r\n\r\n# The end.\r\n";
    std::fs::write(&real, original).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
    if is_root() {
        chown_tree(&real, JOB_UID);
    }
    let link = dir.path().join("enrollment.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let l = link.to_string_lossy().into_owned();
    let before = std::fs::metadata(&real).unwrap();

    let add = common::agent(&["enrollment", "--file", &l, "add", "new"]);
    assert_eq!(add.code, 0, "{}", add.stderr);
    let remove = common::agent(&["enrollment", "--file", &l, "remove", "old"]);
    assert_eq!(remove.code, 0, "{}", remove.stderr);

    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was replaced by a plain file"
    );
    let after = std::fs::metadata(&real).unwrap();
    assert_eq!(after.mode() & 0o7777, 0o640, "mode");
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()), "owner");
    let text = std::fs::read_to_string(&real).unwrap();
    let expected = "\u{feff}# The fleet of this host.\r\n# Keep it sorted.\r\n\r\n[defaults]\r\nbranch = \"main\"\r\n\r\n\
                    # Going away soon.\r\n# A note on keep.\r\n[recipe.keep]\r\ncanonical = true\r\n\r\n# The end.\r\n\r\n[recipe.new]\r\n";
    assert_eq!(text, expected, "{text:?}");
}
