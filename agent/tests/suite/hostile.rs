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

/// Whether this test can run here (as root); where it cannot it says so, and CI, which runs as
/// root, fails rather than pass without running it.
fn root_here(why: &str) -> bool {
    if is_root() {
        return true;
    }
    println!("NOT RUN HERE: {why}");
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs as root: this must run there"
    );
    false
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

/// A fleet synced once, all of it the job user's (its state and metrics directories, its
/// configuration and upstreams), as on a real host where the units' user owns its files.
fn synced_fleet_of_the_job_user() -> (Fleet, PathBuf) {
    let fleet = synced_fleet();
    chown_tree(fleet.root(), JOB_UID);
    let state = fleet.state();
    (fleet, state)
}

/// Every file under `dir` that root owns: what a root job left behind in the job user's tree.
fn owned_by_root(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let m = std::fs::symlink_metadata(entry.path()).unwrap();
            if m.uid() == 0 {
                found.push(entry.path());
            }
            if m.is_dir() {
                todo.push(entry.path());
            }
        }
    }
    found
}

/// The agent run as the job user, as its units run it.
fn as_job_user(fleet: &Fleet, args: &[&str]) -> common::Run {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(common::bin_for_everyone());
    cmd.arg("--config")
        .arg(&fleet.config)
        .args(args)
        .env_remove("CC_CI_AGENT_CONFIG")
        .env("CC_CI_LOG", "warn")
        .env("HOME", fleet.root())
        // As a unit runs it: in a directory of its own (systemd's default is `/`).
        .current_dir(fleet.root())
        .uid(JOB_UID)
        .gid(JOB_UID);
    common::run(&mut cmd)
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
    upstream: Upstream,
}

impl Fleet {
    fn new(sweep_command: &str) -> Self {
        Self::with(|_| sweep_command.to_string(), "")
    }

    /// A fleet whose CI command is made knowing the fleet's directory, with more of agent.toml.
    fn with(sweep_command: impl Fn(&Path) -> String, more_config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let sweep_command = sweep_command(root);
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
                 [health]\npoll_repos_file = \"poll-repos\"\nmetrics_file = \"metrics/cc-ci.prom\"\n{more_config}"
            ),
        )
        .unwrap();
        Self {
            config: config.to_string_lossy().into_owned(),
            dir,
            upstream: up,
        }
    }

    /// A new commit on upstream's main (made by root; the tree is chowned after).
    fn upstream_commit(&self, file: &str, content: &str) {
        chown_tree(self.root(), 0);
        self.upstream.commit(file, content);
        chown_tree(self.root(), JOB_UID);
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
        common::agent_for_everyone(&full)
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
    assert_eq!(sync.code, 0, "{}{}", sync.stdout, sync.stderr);
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

/// `sudo cc-ci-agent mirrors sync` from `/root`: the job becomes the state directory's owner,
/// who cannot enter root's working directory, where git fails ("failed to stat"); it works from
/// the state directory instead.
#[test]
fn a_root_job_started_where_the_owner_cannot_go_still_works() {
    if !root_here("root is needed to run the agent as root over another user's state") {
        return;
    }
    let (fleet, _state) = synced_fleet_of_the_job_user();
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let inside = private.path().join("here");
    std::fs::create_dir(&inside).unwrap();
    fleet.upstream_commit("compose.yml", "from root's directory\n");
    let run = std::process::Command::new(common::bin_for_everyone())
        .args(["--config", &fleet.config, "mirrors", "sync"])
        .current_dir(&inside)
        .env("CC_CI_LOG", "warn")
        .output()
        .unwrap();
    let run = common::finish(Ok(run));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

/// An operator's root `mirrors sync`, `sweep`, `health` and `status-page` in the job user's
/// state directory leave nothing of root's behind: the next run as the job user works (git's
/// "dubious ownership" stopped it), and the ledger is the owner's alone (0600), even where the
/// state directory is 0751 for a web server.
#[test]
fn root_jobs_in_the_job_users_directory_leave_nothing_of_roots() {
    if !is_root() {
        println!("NOT RUN HERE: root is needed to run the agent as root over another user's state");
        return;
    }
    let (fleet, state) = synced_fleet_of_the_job_user();
    fleet.upstream_commit("compose.yml", "v2\n");
    for args in [
        &["mirrors", "sync"][..],
        &["sweep"],
        &["health"],
        &[
            "status-page",
            "--out",
            &state.join("page").to_string_lossy(),
        ],
    ] {
        let run = fleet.agent(args);
        assert!(
            [0, 13].contains(&run.code),
            "{args:?}: {}{}",
            run.stdout,
            run.stderr
        );
    }
    assert_eq!(owned_by_root(&state), Vec::<PathBuf>::new());
    for db in ["state.db", "state.db-wal", "state.db-shm"] {
        if let Ok(m) = std::fs::metadata(state.join(db)) {
            assert_eq!(m.mode() & 0o777, 0o600, "{db}: mode");
        }
    }
    fleet.upstream_commit("compose.yml", "v3\n");
    let again = as_job_user(&fleet, &["--format", "json", "mirrors", "sync"]);
    assert_eq!(
        again.code, 0,
        "the job user's sync after root's: {}{}",
        again.stdout, again.stderr
    );
}

/// The job user points a run's `log_path` in the ledger (its own file) at a file only root can
/// read; root's `status-page` shows nothing of it: the page shows what the ledger holds, and
/// reads no path a run recorded.
#[test]
fn root_never_publishes_a_file_the_ledger_names() {
    if !is_root() {
        println!("NOT RUN HERE: root is needed to run the agent as root over another user's state");
        return;
    }
    let (fleet, state) = synced_fleet_of_the_job_user();
    // The sweep as its unit runs it: as the job user.
    let sweep = as_job_user(&fleet, &["sweep"]);
    assert_eq!(sweep.code, 0, "{}{}", sweep.stdout, sweep.stderr);
    let victim = Victim::new(fleet.root(), "shadow");
    let db = rusqlite::Connection::open(state.join("state.db")).unwrap();
    db.execute(
        "UPDATE runs SET log_path = ?1",
        [victim.path.to_string_lossy()],
    )
    .unwrap();
    drop(db);
    let page = state.join("page");
    let run = fleet.agent(&["status-page", "--out", &page.to_string_lossy()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for file in ["status.json", "recipe/app.html"] {
        let text = std::fs::read_to_string(page.join(file)).unwrap();
        assert!(
            !text.contains("precious shadow"),
            "{file} shows root's file:\n{text}"
        );
    }
    victim.assert_untouched();
}

/// While root writes the page, the job user swaps the directory being built for a link to a
/// directory of root's, over and over: root writes nothing there and gives nothing away.
#[test]
fn the_job_user_cannot_redirect_roots_page_write() {
    if !is_root() {
        println!("NOT RUN HERE: root is needed to run the agent as root over another user's state");
        return;
    }
    let (fleet, state) = synced_fleet_of_the_job_user();
    let victim_dir = fleet.root().join("root-only");
    std::fs::create_dir(&victim_dir).unwrap();
    std::fs::set_permissions(&victim_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stop = fleet.root().join("stop");
    // The attacker, as the job user: renames each new site directory away and plants a link to
    // root's directory at its name, as fast as it can.
    let attacker = format!(
        "import os, sys\nos.setgid({JOB_UID}); os.setuid({JOB_UID})\nstate, victim, stop = sys.argv[1:4]\n\
         n = 0\nwhile not os.path.exists(stop):\n    for name in os.listdir(state):\n        \
         if name.startswith('.status-page.new-') and not name.endswith('.away'):\n            \
         p = os.path.join(state, name)\n            try:\n                os.rename(p, p + '.away'); \
         os.symlink(victim, p); n += 1\n            except OSError:\n                pass\n\
         print(n)\n"
    );
    let child = std::process::Command::new("python3")
        .args(["-c", &attacker])
        .arg(&state)
        .arg(&victim_dir)
        .arg(&stop)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let page = state.join("page");
    for _ in 0..60 {
        let _ = fleet.agent(&["status-page", "--out", &page.to_string_lossy()]);
    }
    std::fs::write(&stop, "").unwrap();
    let out = child.wait_with_output().unwrap();
    let swaps = String::from_utf8_lossy(&out.stdout);
    let m = std::fs::metadata(&victim_dir).unwrap();
    assert_eq!(
        (m.uid(), m.mode() & 0o7777),
        (0, 0o755),
        "root's directory was given away"
    );
    let inside: Vec<_> = std::fs::read_dir(&victim_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        inside.is_empty(),
        "root wrote into its own directory for the job user ({swaps} swaps): {inside:?}"
    );
}

/// Recipe CI prints a token of the agent's (here the bridge's, which the sweep holds), placed so
/// that the log's last 4 KiB cut it in two. The log, the ledger and the page written later by a
/// job that holds no token show neither the token nor its last half.
#[test]
fn a_token_ci_printed_is_on_no_page_whoever_writes_it() {
    const TOKEN: &str = "bridge-token-zyxwvutsrq9876543210";
    let half = &TOKEN[TOKEN.len() - 10..];
    let fleet = Fleet::with(
        |root| {
            format!(
                "[\"sh\", \"-c\", \"cat {}/bridge-token; head -c 4080 /dev/zero | tr '\\\\0' x\"]",
                root.display()
            )
        },
        "\n[bridge]\ntoken_file = \"bridge-token\"\n",
    );
    std::fs::write(fleet.root().join("bridge-token"), format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(
        fleet.root().join("bridge-token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    assert_eq!(fleet.agent(&["mirrors", "sync"]).code, 0);
    let sweep = fleet.agent(&["sweep"]);
    assert_eq!(sweep.code, 0, "{}{}", sweep.stdout, sweep.stderr);
    // The next writer of the page holds no token at all.
    std::fs::remove_file(fleet.root().join("bridge-token")).unwrap();
    let page = fleet.root().join("page");
    let run = fleet.agent(&["status-page", "--out", &page.to_string_lossy()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut seen = vec![
        (
            "status.json",
            std::fs::read_to_string(page.join("status.json")).unwrap(),
        ),
        (
            "recipe/app.html",
            std::fs::read_to_string(page.join("recipe/app.html")).unwrap(),
        ),
    ];
    let logs = fleet.state().join("sweep/logs/app");
    for entry in std::fs::read_dir(&logs).unwrap().flatten() {
        seen.push(("the log", std::fs::read_to_string(entry.path()).unwrap()));
    }
    let db = std::fs::read(fleet.state().join("state.db")).unwrap();
    seen.push(("state.db", String::from_utf8_lossy(&db).into_owned()));
    for (what, text) in &seen {
        assert!(!text.contains(half), "{what} shows the token's last half");
    }
    assert!(
        seen[1].1.contains("xxxxxxxx"),
        "the page shows the log's end: {}",
        seen[1].1
    );
}

/// Who recipe CI runs as in the `run_as` tests: an account every Debian has, not the job user.
const CI_USER: &str = "daemon";
const CI_UID: u32 = 1;

/// The tests that run CI as [`CI_USER`] take turns: at a run's end the keeper ends every process
/// of that user (on a host, one sweep runs at a time under the host lock).
static CI_USER_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn ci_user_turn() -> std::sync::MutexGuard<'static, ()> {
    CI_USER_TURN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The processes whose real user is `uid`.
fn processes_of(uid: u32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let real = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .next()?
                .parse::<u32>()
                .ok()?;
            // A zombie has ended; it waits only for its parent (PID 1 here) to reap it.
            let zombie = status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains("(zombie)"));
            (real == uid && !zombie).then(|| status.lines().next().unwrap_or_default().to_string())
        })
        .collect()
}

/// A fleet whose CI (a script) runs as `daemon`, with everything of the fleet the job user's.
fn fleet_with_a_ci_user(more_config: &str) -> (Fleet, PathBuf, std::sync::MutexGuard<'static, ()>) {
    fleet_with_a_ci_user_and("", more_config)
}

/// [`fleet_with_a_ci_user`] with more lines in `[sweep]`.
fn fleet_with_a_ci_user_and(
    more_sweep: &str,
    more_config: &str,
) -> (Fleet, PathBuf, std::sync::MutexGuard<'static, ()>) {
    let turn = ci_user_turn();
    let fleet = Fleet::with(
        |root| {
            let state = root.join("state");
            // The rest of [sweep] follows its command.
            format!(
                "[\"{}/ci.sh\", \"{{results}}\", \"{}\", \"{}\"]\n\
                 run_as = \"{CI_USER}\"\nrun_dir = \"runs\"\ntiers = [\"install\"]\n{more_sweep}",
                root.display(),
                state.display(),
                root.display()
            )
        },
        more_config,
    );
    let script = r#"#!/bin/sh
results="$1"; state="$2"; root="$3"
echo "ci runs as uid $(id -u)"
if echo tamper >> "$state/state.db" 2>/dev/null; then echo "WROTE THE LEDGER"; else echo "could not write the ledger"; fi
if cat "$root/agent-token" 2>/dev/null; then echo "READ THE TOKEN"; else echo "could not read the token"; fi
setsid sleep 600 > /dev/null 2>&1 < /dev/null &
cat > "$results/install.xml" <<XML
<testsuite name="pytest"><testcase classname="install.test_deploy" name="test_up" time="0.1"/></testsuite>
XML
"#;
    std::fs::write(fleet.root().join("ci.sh"), script).unwrap();
    std::fs::set_permissions(
        fleet.root().join("ci.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(fleet.root().join("agent-token"), "agent-token-0123456789\n").unwrap();
    std::fs::set_permissions(
        fleet.root().join("agent-token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    assert_eq!(fleet.agent(&["mirrors", "sync"]).code, 0);
    chown_tree(fleet.root(), JOB_UID);
    // The CI user enters the fleet's directory (to reach its run directory), and reads nothing.
    std::fs::set_permissions(fleet.root(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(fleet.state(), std::fs::Permissions::from_mode(0o750)).unwrap();
    let state = fleet.state();
    (fleet, state, turn)
}

/// `[sweep] run_as`: a sweep root starts runs as the state directory's owner and CI as a user
/// of its own, which can write neither the ledger nor read the agent's token, whose results are
/// read back (as that user) and judged, and which leaves nothing running and nothing behind.
#[test]
fn recipe_ci_runs_as_a_user_of_its_own_that_cannot_touch_the_agents_files() {
    if !root_here("root is needed to run CI as a user of its own") {
        return;
    }
    let (fleet, state, _turn) = fleet_with_a_ci_user("");
    let sweep = fleet.agent(&["--format", "json", "sweep"]);
    assert_eq!(sweep.code, 0, "{}{}", sweep.stdout, sweep.stderr);
    assert!(sweep.stdout.contains("\"promoted\""), "{}", sweep.stdout);
    let db = rusqlite::Connection::open(state.join("state.db")).unwrap();
    let tail: String = db
        .query_row(
            "SELECT log_tail FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(db);
    assert!(tail.contains(&format!("ci runs as uid {CI_UID}")), "{tail}");
    assert!(tail.contains("could not write the ledger"), "{tail}");
    assert!(tail.contains("could not read the token"), "{tail}");
    assert_eq!(
        processes_of(CI_UID),
        Vec::<String>::new(),
        "CI left processes running"
    );
    assert_eq!(owned_by_root(fleet.root()), Vec::<PathBuf>::new());
    let runs: Vec<_> = std::fs::read_dir(fleet.root().join("runs"))
        .unwrap()
        .flatten()
        .collect();
    assert!(runs.is_empty(), "the run's directory is left: {runs:?}");
}

/// The job user's uid as a name the keeper service's unit gives (`--job-user`).
fn job_user_name() -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find(|l| l.split(':').nth(2) == Some(&JOB_UID.to_string()))
        .and_then(|l| l.split(':').next())
        .unwrap()
        .to_string()
}

/// The keeper service's command, as the NixOS module's `cc-ci-keeper@.service` runs it.
fn keeper_service() -> Vec<String> {
    [
        common::bin_for_everyone(),
        "internal",
        "keeper",
        "--runner",
        CI_USER,
        "--job-user",
    ]
    .map(String::from)
    .into_iter()
    .chain([job_user_name()])
    .collect()
}

/// The sweep, started as the job user itself: no root anywhere in it.
fn sweep_as_the_job_user(fleet: &Fleet) -> common::Run {
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(common::bin_for_everyone())
        .args(["--config", &fleet.config, "--format", "json", "sweep"])
        .env("CC_CI_LOG", "warn")
        .current_dir(fleet.root())
        .uid(JOB_UID)
        .gid(JOB_UID)
        .output();
    common::finish(out)
}

/// A fleet whose sweep reaches its keeper through a socket unit (systemd's
/// `cc-ci-keeper.socket`, `Accept=yes`; a stand-in here) serving one connection.
struct WithKeeperService {
    fleet: Fleet,
    state: PathBuf,
    unit: support::socket_unit::SocketUnit,
    _sockets: tempfile::TempDir,
    _turn: std::sync::MutexGuard<'static, ()>,
}

fn fleet_with_a_keeper_service() -> WithKeeperService {
    let sockets = tempfile::tempdir().unwrap();
    std::fs::set_permissions(sockets.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = sockets.path().join("keeper.sock");
    let (fleet, state, turn) =
        fleet_with_a_ci_user_and(&format!("keeper_socket = {socket:?}\n"), "");
    // Open to all: what keeps others out is the keeper's own check (the module's is 0660).
    let unit = support::socket_unit::SocketUnit::listen(&socket, 0o666, 1, keeper_service());
    WithKeeperService {
        fleet,
        state,
        unit,
        _sockets: sockets,
        _turn: turn,
    }
}

/// `[sweep] keeper_socket`: the sweep runs as the job user with no root at all, and CI still
/// runs as a user of its own, through a keeper that the socket unit starts as root for the
/// connection, in a unit whose sandbox fits CI. The keeper ends with the sweep and leaves
/// nothing running.
#[test]
fn a_sweep_without_root_runs_ci_through_a_keeper_service() {
    if !root_here("root is needed to run CI as a user of its own") {
        return;
    }
    let k = fleet_with_a_keeper_service();
    let sweep = sweep_as_the_job_user(&k.fleet);
    assert_eq!(sweep.code, 0, "{}{}", sweep.stdout, sweep.stderr);
    assert!(sweep.stdout.contains("\"promoted\""), "{}", sweep.stdout);
    let keeper = &k.unit.served()[0];
    assert!(
        keeper.status.success(),
        "the keeper: {}",
        String::from_utf8_lossy(&keeper.stderr)
    );
    let db = rusqlite::Connection::open(k.state.join("state.db")).unwrap();
    let tail: String = db
        .query_row(
            "SELECT log_tail FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(tail.contains(&format!("ci runs as uid {CI_UID}")), "{tail}");
    assert!(tail.contains("could not write the ledger"), "{tail}");
    assert_eq!(
        processes_of(CI_UID),
        Vec::<String>::new(),
        "CI left processes running"
    );
    assert_eq!(owned_by_root(k.fleet.root()), Vec::<PathBuf>::new());
}

/// Whoever else reaches the keeper's socket (a mode left open, a group too wide) gets no
/// keeper: it serves root and the sweep's user only, and says whom it refused.
#[test]
fn the_keeper_service_serves_the_sweeps_user_only() {
    if !root_here("root is needed to run CI as a user of its own") {
        return;
    }
    let k = fleet_with_a_keeper_service();
    // The CI user itself, whose code would then start anything as itself with the keeper's
    // help, or end the sweep's runs.
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(common::bin_for_everyone())
        .args(["--config", &k.fleet.config, "sweep"])
        .env("CC_CI_LOG", "warn")
        .current_dir("/")
        .uid(CI_UID)
        .gid(CI_UID)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let keeper = &k.unit.served()[0];
    let said = String::from_utf8_lossy(&keeper.stderr);
    assert!(!keeper.status.success(), "the keeper served uid {CI_UID}");
    assert!(
        said.contains(&format!(
            "uid {CI_UID} is neither root nor the sweep's user"
        )),
        "{said}"
    );
}

/// CI that plants links in its results (to the ledger, to a file of root's): they are read as
/// the CI user, so neither is read, and the run is judged from what CI itself wrote.
#[test]
fn links_in_a_ci_users_results_reach_nothing_of_the_agents() {
    if !root_here("root is needed to run CI as a user of its own") {
        return;
    }
    let (fleet, state, _turn) = fleet_with_a_ci_user("");
    let script = format!(
        "#!/bin/sh\nln -s {}/state.db \"$1/ledger.xml\"\nln -s /etc/shadow \"$1/shadow.xml\"\n\
         echo '<testsuite name=\"install\"><testcase classname=\"install.t\" name=\"ok\"/></testsuite>' > \"$1/install.xml\"\n",
        state.display()
    );
    std::fs::write(fleet.root().join("ci.sh"), script).unwrap();
    let sweep = fleet.agent(&["--format", "json", "sweep"]);
    assert_eq!(sweep.code, 0, "{}{}", sweep.stdout, sweep.stderr);
    assert!(sweep.stdout.contains("\"promoted\""), "{}", sweep.stdout);
}

/// The sweep killed (`kill -9`) while CI runs as its own user: the keeper sees it go and ends
/// every process of the CI user, then itself; the next sweep records the run interrupted.
#[test]
fn killing_the_sweep_ends_its_ci_users_processes() {
    if !root_here("root is needed to run CI as a user of its own") {
        return;
    }
    let (fleet, _state, _turn) = fleet_with_a_ci_user("");
    let marks = fleet.root().join("marks");
    std::fs::create_dir(&marks).unwrap();
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o777)).unwrap();
    let started = marks.join("started");
    std::fs::write(
        fleet.root().join("ci.sh"),
        format!("#!/bin/sh\ntouch {}\nsleep 600\n", started.display()),
    )
    .unwrap();
    let mut sweep = std::process::Command::new(common::bin_for_everyone())
        .args(["--config", &fleet.config, "sweep"])
        .env("CC_CI_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !started.exists() {
        assert!(std::time::Instant::now() < until, "CI never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!processes_of(CI_UID).is_empty(), "CI runs as its user");
    sweep.kill().unwrap();
    let _ = sweep.wait();
    while !processes_of(CI_UID).is_empty() {
        assert!(
            std::time::Instant::now() < until,
            "CI outlived the sweep: {:?}",
            processes_of(CI_UID)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `run_as` in a sweep not started as root cannot be honoured: refused (exit 2), never CI run
/// as the agent's user in its place.
#[test]
fn run_as_without_root_is_refused_not_ignored() {
    if !root_here("root is needed to run the agent as another user") {
        return;
    }
    let (fleet, _, _turn) = fleet_with_a_ci_user("");
    let sweep = as_job_user(&fleet, &["sweep"]);
    assert_eq!(sweep.code, 2, "{}{}", sweep.stdout, sweep.stderr);
    assert!(
        sweep.stderr.contains("only in a sweep started as root"),
        "{}",
        sweep.stderr
    );
    let health = as_job_user(&fleet, &["health"]);
    assert!(
        !health.stdout.contains("could not write the ledger"),
        "CI ran"
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
    let refused = common::agent_for_everyone(&["--config", &c, "deploy"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("set [deploy] state_dir"),
        "{}",
        refused.stderr
    );
    victim.assert_untouched();

    let journal = dir.path().join("deploy-journal");
    // The page too: a deploy rewrites it last, through a child that has become the job user
    // (from a ledger of its own: the link planted at state.db was for the journal's sake).
    std::fs::remove_file(state.join("state.db")).unwrap();
    write_config(&format!(
        "state_dir = {:?}\n\n[status_page]\ndir = \"state/page\"\n",
        journal.display().to_string()
    ));
    let run = common::agent_for_everyone(&["--config", &c, "deploy"]);
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
    // Nothing in the job user's directory is root's, the page included.
    assert!(
        state.join("page/index.html").is_file(),
        "the deploy rewrote the page: {}",
        run.stderr
    );
    assert_eq!(owned_by_root(&state), Vec::<PathBuf>::new());
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
                std::process::Command::new(common::bin_for_everyone())
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
    let out = std::process::Command::new(common::bin_for_everyone())
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
    let mut child = std::process::Command::new(common::bin_for_everyone())
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
    let mut child = std::process::Command::new(common::bin_for_everyone())
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
    let first = std::process::Command::new(common::bin_for_everyone())
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
