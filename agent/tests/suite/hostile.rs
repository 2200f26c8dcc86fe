//! The host as recipe code sees it: CI runs as the agent's user, in the state directory that the
//! root deploy also writes. Nothing that user can plant there (a link, a FIFO, a deleted lock, a
//! huge output) may make the agent follow it, hang, grow without bound, leak a secret or mis-record
//! a result. docs/reliability.md lists each case with its test.

use crate::common;
use crate::support;

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

/// A fleet whose CI is `true`, its mirrors synced once.
fn synced_fleet() -> Fleet {
    let fleet = Fleet::new("[\"true\"]");
    assert_eq!(fleet.agent(&["mirrors", "sync"]).code, 0);
    fleet
}

/// A fleet synced once, whose state and metrics directories the job user owns, as on a real host.
fn synced_fleet_of_the_job_user() -> (Fleet, PathBuf) {
    let fleet = synced_fleet();
    let state = fleet.state();
    chown_tree(&state, JOB_UID);
    chown_tree(&fleet.root().join("metrics"), JOB_UID);
    (fleet, state)
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
    let (fleet, state) = synced_fleet_of_the_job_user();
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

/// A hard link planted at a published name (where `fs.protected_hardlinks=0` lets the job user
/// link a root-owned setuid file): root's `health` writes `health.json` and the metrics file
/// with their own fixed mode and the directory's owner, never the mode or owner of what was
/// there, and the linked file keeps its bytes and mode.
#[test]
fn a_hard_link_at_a_published_name_lends_it_neither_mode_nor_owner() {
    if !is_root() {
        println!("NOT RUN HERE: root is needed to write as root over another user's state");
        return;
    }
    let (fleet, state) = synced_fleet_of_the_job_user();
    let setuid = fleet.root().join("setuid-tool");
    std::fs::write(&setuid, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let published = [
        state.join("health.json"),
        fleet.root().join("metrics/cc-ci.prom"),
    ];
    for at in &published {
        let _ = std::fs::remove_file(at);
        std::fs::hard_link(&setuid, at).unwrap();
    }
    let report = fleet.agent(&["health"]);
    assert!(
        [0, 13, 14].contains(&report.code),
        "health ran: {}",
        report.stderr
    );
    for at in &published {
        let m = std::fs::metadata(at).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o644, "{}: mode", at.display());
        assert_eq!(m.uid(), JOB_UID, "{}: owner", at.display());
    }
    let m = std::fs::metadata(&setuid).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755);
    assert_eq!(std::fs::read_to_string(&setuid).unwrap(), "#!/bin/sh\n");
}

/// A FIFO planted at `health.json`: `health` reads the last report to tell what changed, and
/// must neither block on it nor fail; it writes a fresh report in its place.
#[test]
fn a_fifo_at_health_json_does_not_hang_health() {
    let fleet = synced_fleet();
    let at = fleet.state().join("health.json");
    let _ = std::fs::remove_file(&at);
    let made = std::process::Command::new("mkfifo")
        .arg(&at)
        .status()
        .unwrap();
    assert!(made.success());
    let report = fleet.agent(&["health"]);
    assert!(
        [0, 13, 14].contains(&report.code),
        "health ran: {}",
        report.stderr
    );
    assert!(
        std::fs::symlink_metadata(&at).unwrap().is_file(),
        "a report again"
    );
}

/// Terminal control from text the agent did not write: a `deploy.json` planted with a carriage
/// return, cursor-up and a screen clear is printed by `health` with each control character
/// shown escaped, so what the operator's terminal shows is what the file says.
#[test]
fn control_characters_from_a_planted_report_never_reach_the_terminal() {
    let fleet = synced_fleet();
    let forged = serde_json::json!({
        "id": 7, "outcome": "failed", "finished_at": "2026-12-01T00:00:00Z",
        "flake_commit": null, "upstream_commit": null, "checked_at": null, "behind": null,
        "message": "all fine\r\u{1b}[1A\u{1b}[2Jhealthy\u{7}\u{9b}31m",
    });
    std::fs::write(fleet.state().join("deploy.json"), forged.to_string()).unwrap();
    let report = fleet.agent(&["health"]);
    assert!(
        [0, 13, 14].contains(&report.code),
        "health ran: {}",
        report.stderr
    );
    assert!(report.stdout.contains("all fine"), "{}", report.stdout);
    for c in ['\r', '\u{1b}', '\u{7}', '\u{9b}'] {
        assert!(
            !report.stdout.contains(c),
            "{c:?} reached stdout: {:?}",
            report.stdout
        );
    }
    assert!(
        report.stdout.contains("\\u{1b}[2J"),
        "shown escaped: {}",
        report.stdout
    );
}

/// A database that SQLite finds whole but that lost a table (`DROP TABLE outbox`, by recipe CI
/// or a bad restore) is not "integrity ok": `state status` names the missing table (exit 15).
#[test]
fn a_database_missing_a_table_fails_the_integrity_check() {
    let fleet = synced_fleet();
    let db = fleet.state().join("state.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("DROP TABLE outbox").unwrap();
    drop(conn);
    let status = fleet.agent(&["state", "status"]);
    assert_eq!(status.code, 15, "{}{}", status.stdout, status.stderr);
    assert!(status.stderr.contains("outbox"), "{}", status.stderr);
}

/// The same database seen by the jobs: `health` (and every job that opens the ledger) refuses a
/// database with a table dropped as damaged (exit 15), naming the table, rather than reporting
/// from what is left of it.
#[test]
fn every_job_refuses_a_database_missing_a_table() {
    for table in ["outbox", "runs", "probes"] {
        let fleet = synced_fleet();
        let db = fleet.state().join("state.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(&format!("PRAGMA foreign_keys = OFF; DROP TABLE {table}"))
            .unwrap();
        drop(conn);
        for args in [&["health"][..], &["mirrors", "sync"], &["history", "app"]] {
            let run = fleet.agent(args);
            assert_eq!(
                run.code, 15,
                "{table}, {args:?}: {}{}",
                run.stdout, run.stderr
            );
            assert!(
                run.stderr.contains(table),
                "{table}, {args:?}: {}",
                run.stderr
            );
        }
    }
}

/// Links planted at SQLite's `-wal` and `-shm` names: the open is refused (SQLite opens them
/// without following), and the error names the planted file, not only "unable to open".
#[test]
fn a_link_planted_at_the_wal_or_shm_file_is_named() {
    for suffix in ["-wal", "-shm"] {
        let fleet = synced_fleet();
        let planted = fleet.state().join(format!("state.db{suffix}"));
        let _ = std::fs::remove_file(&planted);
        std::os::unix::fs::symlink(fleet.root().join("elsewhere"), &planted).unwrap();
        let status = fleet.agent(&["state", "status"]);
        assert_ne!(status.code, 0);
        assert!(
            status.stderr.contains(&planted.display().to_string()),
            "{suffix}: {}",
            status.stderr
        );
    }
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
    let host = cc_ci_testkit::emulator::EmulatedHost::create(
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
    assert_eq!(
        (after.uid(), after.gid()),
        (before.uid(), before.gid()),
        "owner"
    );
    let text = std::fs::read_to_string(&real).unwrap();
    let expected = "\u{feff}# The fleet of this host.\r\n# Keep it sorted.\r\n\r\n[defaults]\r\nbranch = \"main\"\r\n\r\n\
                    # Going away soon.\r\n# A note on keep.\r\n[recipe.keep]\r\ncanonical = true\r\n\r\n# The end.\r\n\r\n[recipe.new]\r\n";
    assert_eq!(text, expected, "{text:?}");
}

impl Fleet {
    /// Writes an executable script beside agent.toml.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.root().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn append_config(&self, text: &str) {
        let mut config = std::fs::read_to_string(&self.config).unwrap();
        config = config.replace("[sweep]\n", &format!("[sweep]\n{text}"));
        std::fs::write(&self.config, config).unwrap();
    }

    /// The newest CI log of the recipe.
    fn last_log(&self) -> String {
        let dir = self.state().join("sweep/logs/app");
        let mut logs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        logs.sort_by_key(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
        });
        std::fs::read_to_string(logs.last().unwrap()).unwrap()
    }
}

/// Recipe CI sees none of the agent's credentials: not the variable, not the files. A credential
/// granted by name reaches it, in a directory of the run's own.
#[test]
fn recipe_ci_gets_no_credential_it_was_not_granted() {
    // A relative command[0] is relative to agent.toml, like every other path.
    let fleet = Fleet::new("[\"./ci.sh\"]");
    fleet.script(
        "ci.sh",
        "env\nfor d in \"$CREDENTIALS_DIRECTORY\" \"$AGENT_CREDS\"; do [ -n \"$d\" ] && cat \"$d\"/* ; done\nexit 0",
    );
    fleet.append_config("credentials = [\"registry\"]\n");
    let creds = fleet.root().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("forge-token"), "forge-s3cret-7731\n").unwrap();
    std::fs::write(creds.join("bridge-token"), "bridge-s3cret-8842\n").unwrap();
    std::fs::write(creds.join("registry"), "registry-granted-9953\n").unwrap();
    assert_eq!(fleet.agent(&["mirrors", "sync"]).code, 0);
    let out = std::process::Command::new(common::bin())
        .args(["--config", &fleet.config, "sweep"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("CC_CI_LOG", "warn")
        .output()
        .unwrap();
    let run = common::finish(Ok(out));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let log = fleet.last_log();
    assert!(
        log.contains("registry-granted-9953"),
        "the grant reached CI:\n{log}"
    );
    for secret in ["forge-s3cret-7731", "bridge-s3cret-8842"] {
        assert!(!log.contains(secret), "CI read {secret}:\n{log}");
        assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret));
    }
    assert!(
        !log.contains(&creds.to_string_lossy().into_owned()),
        "CI was told where the agent's credentials are:\n{log}"
    );
    // The agent's own tokens cannot be granted.
    fleet.append_config("credentials = [\"forge-token\"]\n");
    let refused = fleet.agent(&["sweep"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("sweep.credentials"),
        "{}",
        refused.stderr
    );
}

/// A CI command that cannot be executed is not a red release: the run could not be judged (exit
/// 11), and once it is fixed the release is tested, not skipped as already judged.
#[test]
fn a_ci_that_cannot_start_is_not_a_red_release() {
    let fleet = Fleet::new("[\"./ci.sh\"]");
    let ci = fleet.script("ci.sh", "exit 0");
    std::fs::set_permissions(&ci, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(fleet.agent(&["mirrors", "sync"]).code, 0);
    let first = fleet.agent(&["sweep"]);
    assert_eq!(first.code, 11, "{}{}", first.stdout, first.stderr);
    let list = fleet.agent(&["--format", "json", "canonical", "list"]);
    assert!(!list.stdout.contains("1.0.0+1.0"), "{}", list.stdout);

    std::fs::set_permissions(&ci, std::fs::Permissions::from_mode(0o755)).unwrap();
    let second = fleet.agent(&["sweep"]);
    assert_eq!(second.code, 0, "{}{}", second.stdout, second.stderr);
    assert!(
        !second.stdout.contains("already-judged"),
        "{}",
        second.stdout
    );
    let list = fleet.agent(&["--format", "json", "canonical", "list"]);
    assert!(
        list.stdout.contains("1.0.0+1.0"),
        "promoted: {}",
        list.stdout
    );
}

/// The peak resident memory of a process, sampled from /proc until it exits (VmHWM only grows).
fn peak_rss_kib(child: &mut std::process::Child) -> u64 {
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(text) = std::fs::read_to_string(&status) {
            if let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    peak
}

/// 512 MiB of CI output: the log exists while CI runs, is capped with its tail kept, and the
/// agent's memory stays flat.
#[test]
fn ci_output_goes_to_its_log_as_it_comes_with_a_cap() {
    let fleet = Fleet::new("[\"./ci.sh\"]");
    fleet.script(
        "ci.sh",
        "head -c 536870912 /dev/zero | tr '\\0' 'x'\necho\necho the-last-line\nexit 1",
    );
    fleet.append_config("log_limit = \"1M\"\n");
    assert_eq!(fleet.agent(&["mirrors", "sync"]).code, 0);
    let mut child = std::process::Command::new(common::bin())
        .args(["--config", &fleet.config, "sweep"])
        .env("CC_CI_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let peak = peak_rss_kib(&mut child);
    println!("agent peak RSS over 512 MiB of CI output: {peak} KiB");
    assert!(peak < 64 * 1024, "the agent held the output: {peak} KiB");
    let log = fleet.last_log();
    assert!(
        log.len() < 2 << 20,
        "the log is capped: {} bytes",
        log.len()
    );
    assert!(log.contains("more were not kept"), "the cap is said");
    assert!(
        log.trim_end().ends_with("the-last-line"),
        "the tail is kept"
    );
    let history = fleet.agent(&["--format", "json", "history", "app"]);
    assert!(
        history.stdout.contains("the-last-line"),
        "{}",
        history.stdout
    );
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
}

/// Runs the agent, killing it if it has not finished by `limit`: a hang is a failure, not a
/// test that never ends.
fn agent_within(args: &[&str], limit: std::time::Duration) -> common::Run {
    let mut child = std::process::Command::new(common::bin())
        .args(args)
        .env("CC_CI_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("cc-ci-agent {args:?} hung for {}s", limit.as_secs());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    common::finish(child.wait_with_output())
}

/// A FIFO where gc reads a volume's label and lock: gc finishes, and keeps that volume as
/// unreadable. Files the agent is pointed at that are not regular, or are huge, are refused.
#[test]
fn fifos_devices_and_huge_files_are_refused_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for v in ["volumes/a_1.0.0+1", "volumes/b_1.0.0+1"] {
        std::fs::create_dir_all(root.join(v)).unwrap();
        std::fs::write(root.join(v).join("db"), vec![7u8; 8192]).unwrap();
    }
    mkfifo(&root.join("volumes/a_1.0.0+1/.cc-ci-volume.json"));
    mkfifo(&root.join("volumes/b_1.0.0+1/.cc-ci-volume.lock"));
    std::fs::write(root.join("enrollment.toml"), "[recipe.a]\n[recipe.b]\n").unwrap();
    let config = root.join("agent.toml");
    std::fs::write(
        &config,
        "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\n\n[disk]\nbudget = 1\ngrace = 0\n\
         [disk.volumes]\nkind = \"directory\"\nroot = \"volumes\"\n",
    )
    .unwrap();
    let c = config.to_string_lossy().into_owned();
    let limit = std::time::Duration::from_secs(30);
    let gc = agent_within(&["--config", &c, "--format", "json", "gc"], limit);
    assert!([11, 13].contains(&gc.code), "{} {}", gc.code, gc.stderr);
    assert!(
        root.join("volumes/a_1.0.0+1/db").exists() && root.join("volumes/b_1.0.0+1/db").exists()
    );
    assert!(
        gc.stdout.contains("not a regular file") || gc.stdout.contains("unreadable"),
        "{}",
        gc.stdout
    );

    mkfifo(&root.join("enrollment.fifo"));
    for file in ["/dev/zero", &root.join("enrollment.fifo").to_string_lossy()] {
        let run = agent_within(&["enrollment", "--file", file, "check"], limit);
        assert_eq!(run.code, 2, "{file}: {}", run.stderr);
        assert!(
            run.stderr.contains("not a regular file"),
            "{file}: {}",
            run.stderr
        );
    }
    let huge = root.join("huge-token");
    std::fs::write(&huge, vec![b'a'; 1 << 20]).unwrap();
    let bom = root.join("bom-token");
    std::fs::write(&bom, "\u{feff}abc\n").unwrap();
    for (token, says) in [(&huge, "larger than"), (&bom, "byte-order mark")] {
        std::fs::write(
            &config,
            format!(
                "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\n\n[forge]\nkind = \"gitea\"\n\
                 url = \"http://127.0.0.1:9\"\norg = \"o\"\ntoken_file = {:?}\nallow_insecure = true\n",
                token.display().to_string()
            ),
        )
        .unwrap();
        let run = agent_within(&["--config", &c, "mirrors", "sync"], limit);
        // Bad input, named by the key that points at it (exit 2).
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains(says), "{says}: {}", run.stderr);
        assert!(run.stderr.contains("forge.token_file"), "{}", run.stderr);
    }
}

/// A corrupted page or an emptied database is said as such (exit 15, with what to do), and no job
/// runs on it; a command that only reads does not need it.
#[test]
fn a_damaged_state_database_is_said_and_no_job_runs_on_it() {
    let fleet = synced_fleet();
    assert_eq!(fleet.agent(&["sweep"]).code, 0);
    let db = fleet.state().join("state.db");
    let status = fleet.agent(&["state", "status"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    // Garbage over every page but the header page: SQLite finds it on open or when checking.
    let len = std::fs::metadata(&db).unwrap().len();
    assert!(len >= 3 * 4096, "the database has pages to corrupt");
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        f.seek(std::io::SeekFrom::Start(4096)).unwrap();
        f.write_all(&vec![0xA5; (len - 4096) as usize]).unwrap();
    }
    for args in [&["state", "status"][..], &["mirrors", "sync"], &["sweep"]] {
        let run = fleet.agent(args);
        assert_eq!(run.code, 15, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("backup"),
            "{args:?} says what to do: {}",
            run.stderr
        );
    }
    let check = fleet.agent(&["enrollment", "check"]);
    assert_eq!(
        check.code, 0,
        "a read-only command needs no database: {}",
        check.stderr
    );

    std::fs::write(&db, b"").unwrap();
    let _ = std::fs::remove_file(fleet.state().join("state.db-wal"));
    let run = fleet.agent(&["mirrors", "sync"]);
    assert_eq!(run.code, 15, "{}", run.stderr);
    assert!(run.stderr.contains("empty"), "{}", run.stderr);
    assert_eq!(
        std::fs::metadata(&db).unwrap().len(),
        0,
        "not silently re-created"
    );
}

/// Recipe CI deletes `agent.lock` and every lock file while its sweep runs: a second sweep is still
/// refused, and the first sweep's run is not marked interrupted.
#[test]
fn deleting_the_lock_files_mid_sweep_lets_no_second_sweep_in() {
    let fleet = Fleet::new("[\"./ci.sh\"]");
    let started = fleet.root().join("ci-started");
    let release = fleet.root().join("ci-release");
    fleet.script(
        "ci.sh",
        &format!(
            "touch {0:?}\nrm -rf \"$STATE/agent.lock\" \"$STATE/locks\"\nwhile [ ! -e {1:?} ]; do sleep 0.05; done\nexit 0",
            started.display().to_string(),
            release.display().to_string()
        ),
    );
    fleet.append_config("pass_env = [\"STATE\"]\n");
    assert_eq!(fleet.agent(&["mirrors", "sync"]).code, 0);
    let first = std::process::Command::new(common::bin())
        .args(["--config", &fleet.config, "sweep"])
        .env("CC_CI_LOG", "warn")
        .env("STATE", fleet.state())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !started.exists() || fleet.state().join("agent.lock").exists() {
        assert!(std::time::Instant::now() < deadline, "CI never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = fleet.agent(&["sweep"]);
    // A sync runs beside a sweep by design; with the recipe's lock file gone it syncs the
    // recipe under test too, which changes nothing the CI run is testing.
    let sync = fleet.agent(&["mirrors", "sync"]);
    std::fs::write(&release, "").unwrap();
    let first = common::finish(first.wait_with_output());
    assert_eq!(second.code, 4, "a second sweep got in: {}", second.stderr);
    assert_eq!(sync.code, 0, "{}{}", sync.stdout, sync.stderr);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    let history = fleet.agent(&["--format", "json", "history", "app"]);
    assert!(
        !history.stdout.contains("interrupted"),
        "{}",
        history.stdout
    );
}
