//! `cc-ci-agent gc`: real directories with real bytes, canonicals in the real ledger, volume locks
//! held by this process, and the docker backend through a stand-in `docker` that prints recorded
//! CLI output and logs its argv.

use crate::common;
use crate::support;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use cc_ci_agent::ledger::{Canonical, Ledger};
use common::Run;

const MIB: usize = 1 << 20;
const DAY: Duration = Duration::from_secs(86400);

struct Host {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Host {
    /// A host whose warm volumes are directories under `volumes/`.
    fn new(disk: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("volumes")).unwrap();
        std::fs::write(
            dir.path().join("enrollment.toml"),
            "[defaults]\nupstream = \"https://git.example.org/{recipe}.git\"\n\n[recipe.a]\ncanonical = true\n\n\
             [recipe.keep]\ncanonical = true\n\n[recipe.plausible]\ncanonical = true\n",
        )
        .unwrap();
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\n\n[disk]\n{disk}\n\n\
                 [disk.volumes]\nkind = \"directory\"\nroot = \"volumes\"\n"
            ),
        )
        .unwrap();
        Self { dir, config }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn agent(&self, args: &[&str]) -> Run {
        common::run(&mut self.command(args))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(common::bin());
        c.args(["--config", self.config.to_str().unwrap()])
            .args(args)
            .env("CC_CI_LOG", "warn")
            .env_remove("NO_COLOR");
        c
    }

    fn gc_json(&self, args: &[&str]) -> (Run, serde_json::Value) {
        let mut all = vec!["--format", "json", "gc"];
        all.extend(args);
        let run = self.agent(&all);
        let v = serde_json::from_str(&run.stdout).unwrap_or(serde_json::Value::Null);
        (run, v)
    }

    /// A volume of `mib` MiB of real bytes, last used `days_ago`.
    fn volume(&self, name: &str, mib: usize, days_ago: u64) -> PathBuf {
        let path = self.path("volumes").join(name);
        std::fs::create_dir_all(path.join("data")).unwrap();
        let mut f = File::create(path.join("data/db")).unwrap();
        let block = vec![0x5a_u8; MIB];
        for _ in 0..mib {
            f.write_all(&block).unwrap();
        }
        f.sync_all().unwrap();
        age(&path, days_ago);
        path
    }

    fn canonical(&self, recipe: &str, version: &str) {
        Ledger::open(&self.path("state"), &cc_ci_agent::clock::Clock::system())
            .unwrap()
            .canonical_set(&Canonical {
                recipe: recipe.into(),
                version: version.into(),
                commit: "0".repeat(40),
                run: None,
                promoted_at: "2026-01-01T00:00:00Z".into(),
            })
            .unwrap();
    }

    fn volumes(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("volumes"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn deletions(&self) -> Vec<(String, String, String)> {
        let mut rows: Vec<_> =
            Ledger::open(&self.path("state"), &cc_ci_agent::clock::Clock::system())
                .unwrap()
                .deletions_recent(100)
                .unwrap()
                .into_iter()
                .map(|d| (d.volume, d.reason, d.state.to_string()))
                .collect();
        rows.sort();
        rows
    }
}

/// Sets the modification time of everything under `path` to `days_ago`.
fn age(path: &Path, days_ago: u64) {
    let t = SystemTime::now() - DAY * days_ago as u32;
    let mut stack = vec![path.to_path_buf()];
    let mut all = Vec::new();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        all.push(p);
    }
    // Deepest first, so setting a directory's time is not undone by touching its entries.
    for p in all.iter().rev() {
        File::open(p).unwrap().set_modified(t).unwrap();
    }
}

fn decision(v: &serde_json::Value, volume: &str) -> (String, String) {
    let d = v["plan"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == volume)
        .unwrap_or_else(|| panic!("{volume} not in the plan: {v}"));
    (
        d["action"].as_str().unwrap().to_string(),
        d["reason"].as_str().unwrap().to_string(),
    )
}

#[test]
fn over_budget_deletes_the_oldest_unprotected_until_under_and_a_second_run_deletes_nothing() {
    let h = Host::new("budget = \"7M\"\ngrace = \"1d\"");
    h.volume("a_1.0.0+1", 3, 10);
    h.volume("a_0.9.0+1", 3, 20);
    h.volume("b_1.0.0+1", 3, 5);
    h.volume("c_1.0.0+1", 3, 2);
    h.canonical("a", "1.0.0+1");

    // The dry run says what it would do, and does nothing.
    let before = h.volumes();
    let dry = h.agent(&["gc", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}\n{}", dry.stdout, dry.stderr);
    // The filesystem's free space is the machine's: a placeholder too.
    let text = crate::screens::screen(&dry.stdout, h.dir.path());
    let (head, rest) = text.split_once(", free ").unwrap();
    let (_, tail) = rest.split_once(" (min_free").unwrap();
    insta::assert_snapshot!("gc_dry_run", format!("{head}, free [FREE] (min_free{tail}"));
    assert_eq!(h.volumes(), before);
    assert!(h.deletions().is_empty());

    let (run, v) = h.gc_json(&[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        decision(&v, "a_0.9.0+1"),
        ("delete".into(), "over-budget".into())
    );
    assert_eq!(
        decision(&v, "b_1.0.0+1"),
        ("delete".into(), "over-budget".into())
    );
    assert_eq!(
        decision(&v, "a_1.0.0+1"),
        ("keep".into(), "canonical".into())
    );
    assert_eq!(
        decision(&v, "c_1.0.0+1"),
        ("keep".into(), "under-budget".into())
    );
    assert_eq!(h.volumes(), vec!["a_1.0.0+1", "c_1.0.0+1"]);
    let freed = v["freed"].as_u64().unwrap();
    assert!(
        freed >= 6 * MIB as u64 && freed < 7 * MIB as u64,
        "freed {freed}"
    );
    assert_eq!(
        h.deletions(),
        vec![
            ("a_0.9.0+1".into(), "over-budget".into(), "deleted".into()),
            ("b_1.0.0+1".into(), "over-budget".into(), "deleted".into()),
        ]
    );

    let (again, v) = h.gc_json(&[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(v["freed"], 0);
    assert_eq!(h.deletions().len(), 2);

    let health = h.agent(&["--format", "json", "health"]);
    let report: serde_json::Value = serde_json::from_str(&health.stdout).unwrap();
    assert_eq!(report["host"][0]["name"], "disk");
    assert_eq!(report["host"][0]["status"], "ok", "{report}");
}

#[test]
fn protected_volumes_over_budget_are_all_kept_and_health_says_by_how_much() {
    let h = Host::new("budget = \"7M\"\ngrace = \"1d\"\npin = [\"b\"]");
    h.volume("a_1.0.0+1", 4, 30);
    h.volume("b_2.0.0+1", 2, 30);
    let c = h.volume("c_3.0.0+1", 2, 30);
    h.volume("d_1.0.0+1", 1, 30);
    h.canonical("a", "1.0.0+1");
    // A run holds c's volume: its lock is taken.
    let lock = File::create(c.join(".cc-ci-volume.lock")).unwrap();
    lock.lock().unwrap();

    let (run, v) = h.gc_json(&[]);
    assert_eq!(run.code, 13, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(decision(&v, "a_1.0.0+1").1, "canonical");
    assert_eq!(decision(&v, "b_2.0.0+1").1, "pinned");
    assert_eq!(decision(&v, "c_3.0.0+1").1, "in-flight");
    // The one unprotected volume goes; it does not bring the total under budget.
    assert_eq!(
        decision(&v, "d_1.0.0+1"),
        ("delete".into(), "over-budget".into())
    );
    assert_eq!(h.volumes(), vec!["a_1.0.0+1", "b_2.0.0+1", "c_3.0.0+1"]);
    let message = v["messages"][0].as_str().unwrap();
    assert!(
        message.starts_with("disk budget too small by 1.0 MiB"),
        "{message}"
    );

    let human = h.agent(&["gc"]);
    assert_eq!(human.code, 13);
    assert!(
        human.stdout.contains("degraded: disk budget too small by"),
        "{}",
        human.stdout
    );

    // The cheap record of the canonical stays whatever happens to volumes.
    let canon = h.agent(&["--format", "json", "canonical", "list"]);
    assert!(canon.stdout.contains("1.0.0+1"), "{}", canon.stdout);

    let health = h.agent(&["health"]);
    assert_eq!(health.code, 13, "{}\n{}", health.stdout, health.stderr);
    assert!(
        health
            .stdout
            .contains("disk: degraded: disk budget too small by"),
        "{}",
        health.stdout
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(h.path("state/health.json")).unwrap())
            .unwrap();
    assert_eq!(written["verdict"], "degraded");
    assert_eq!(written["host"][0]["status"], "warn");

    // Once the run lets go (and the grace since its last use has passed), c's volume is an
    // ordinary candidate.
    drop(lock);
    age(&c, 30);
    let (run, v) = h.gc_json(&[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(decision(&v, "c_3.0.0+1").0, "delete");
}

#[test]
fn a_recipe_gone_from_the_enrollment_no_longer_protects_its_volume() {
    let h = Host::new("budget = \"1M\"\ngrace = \"1d\"");
    h.volume("a_1.0.0+1", 1, 30);
    h.volume("gone_1.0.0+1", 1, 30);
    h.canonical("a", "1.0.0+1");
    h.canonical("gone", "1.0.0+1");
    let (run, v) = h.gc_json(&[]);
    assert_eq!(
        decision(&v, "a_1.0.0+1"),
        ("keep".into(), "canonical".into())
    );
    assert_eq!(
        decision(&v, "gone_1.0.0+1"),
        ("delete".into(), "over-budget".into())
    );
    assert_eq!(h.volumes(), vec!["a_1.0.0+1"]);
    // Its canonical record stays.
    let canon = h.agent(&["--format", "json", "canonical", "list"]);
    assert!(canon.stdout.contains("\"gone\""), "{}", canon.stdout);
    // a alone is a little over 1 MiB: short, not failed.
    assert_eq!(run.code, 13, "{}", run.stderr);
}

#[test]
fn grace_keeps_a_recent_volume_and_unlabelled_ones_are_never_touched() {
    let h = Host::new("budget = \"1M\"\ngrace = \"2d\"");
    h.volume("a_1.0.0+1", 2, 1);
    h.volume("lost+found", 2, 90);
    let (run, v) = h.gc_json(&[]);
    assert_eq!(run.code, 13, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        decision(&v, "a_1.0.0+1"),
        ("keep".into(), "within-grace".into())
    );
    assert_eq!(
        decision(&v, "lost+found"),
        ("keep".into(), "unlabelled".into())
    );
    assert!(v["messages"][0]
        .as_str()
        .unwrap()
        .starts_with("over the 1.0 MiB disk budget"));
    assert_eq!(h.volumes().len(), 2);

    // A label inside names the volume and when it was last reattached.
    let labelled = h.volume("warm-volume-x", 1, 0);
    std::fs::write(
        labelled.join(".cc-ci-volume.json"),
        r#"{"recipe": "b", "version": "1.0.0+1", "last_used": "2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let (_, v) = h.gc_json(&["--dry-run"]);
    assert_eq!(decision(&v, "warm-volume-x").0, "delete");
}

/// A label dated in the future (recipe CI writes the label) would keep its volume within grace
/// for ever: it counts from when gc first saw it, and the plan says so.
#[test]
fn a_last_use_dated_in_the_future_counts_from_when_gc_first_saw_it() {
    let h = Host::new("budget = \"1M\"\ngrace = \"1d\"");
    let planted = h.volume("warm-volume-x", 2, 90);
    std::fs::write(
        planted.join(".cc-ci-volume.json"),
        r#"{"recipe": "b", "version": "1.0.0+1", "last_used": "2999-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let (run, v) = h.gc_json(&[]);
    assert_eq!(run.code, 13, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        decision(&v, "warm-volume-x"),
        ("keep".into(), "within-grace".into())
    );
    let said = v["plan"]["volumes"][0]["note"].as_str().unwrap_or_default();
    assert!(
        said.contains("2999-01-01") && said.contains("in the future"),
        "{v:#}"
    );
    // Two days pass since gc first saw it (moved in the ledger, not waited for).
    let two_days_ago = humantime::format_rfc3339_seconds(SystemTime::now() - DAY * 2);
    rusqlite::Connection::open(h.path("state/state.db"))
        .unwrap()
        .execute(
            "UPDATE volume_use SET last_used = ?1 WHERE volume = 'warm-volume-x'",
            [two_days_ago.to_string()],
        )
        .unwrap();
    let (run, v) = h.gc_json(&[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        decision(&v, "warm-volume-x"),
        ("delete".into(), "over-budget".into())
    );
    assert!(!planted.exists());
}

#[test]
fn min_free_deletes_beyond_the_budget() {
    // More free space than the filesystem has: every deletable volume goes, and it says so.
    let h = Host::new("budget = \"1T\"\nmin_free = \"1000000T\"\ngrace = \"1d\"");
    h.volume("a_1.0.0+1", 1, 10);
    h.volume("b_1.0.0+1", 1, 10);
    h.canonical("a", "1.0.0+1");
    let (run, v) = h.gc_json(&[]);
    assert_eq!(run.code, 13, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        decision(&v, "b_1.0.0+1"),
        ("delete".into(), "below-min-free".into())
    );
    assert_eq!(h.volumes(), vec!["a_1.0.0+1"]);
    assert!(v["messages"][0]
        .as_str()
        .unwrap()
        .contains("under min_free"));
}

#[test]
fn no_budget_or_a_busy_lock_is_refused_and_recorded() {
    let h = Host::new("budget = \"1M\"");
    h.volume("a_1.0.0+1", 2, 10);
    let lock = cc_ci_agent::ledger::JobLock::acquire(&h.path("state"), "sweep").unwrap();
    let run = h.agent(&["gc"]);
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("sweep (pid"), "{}", run.stderr);
    assert_eq!(h.volumes(), vec!["a_1.0.0+1"]);
    drop(lock);

    // Volumes where there are none: the error says which setting to look at.
    std::fs::remove_dir_all(h.path("volumes")).unwrap();
    let run = h.agent(&["gc"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("fix [disk.volumes] root"),
        "{}",
        run.stderr
    );

    std::fs::write(
        &h.config,
        "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\n",
    )
    .unwrap();
    let run = h.agent(&["gc"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("[disk] has no budget"),
        "{}",
        run.stderr
    );
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| {
                let p = e.unwrap().path();
                if p.is_dir() {
                    count_files(&p)
                } else {
                    1
                }
            })
            .sum()
        })
        .unwrap_or(0)
}

#[test]
fn kill_9_mid_delete_leaves_a_state_the_next_run_settles() {
    // None: killed as soon as the ledger says a deletion began; else after that many ms.
    for (n, when) in [None, Some(0u64), Some(25), Some(60)]
        .into_iter()
        .enumerate()
    {
        let h = Host::new("budget = \"2M\"\ngrace = \"1d\"");
        h.volume("keep_1.0.0+1", 1, 30);
        h.canonical("keep", "1.0.0+1");
        // Many small files: removing them takes long enough to be killed in the middle.
        let big = h.path("volumes/old_1.0.0+1");
        for d in 0..10 {
            let sub = big.join(format!("d{d}"));
            std::fs::create_dir_all(&sub).unwrap();
            for f in 0..100 {
                std::fs::write(sub.join(format!("f{f}")), b"x").unwrap();
            }
        }
        age(&big, 30);

        let mut child = h
            .command(&["gc"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        match when {
            Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
            None => {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let began =
                        Ledger::open(&h.path("state"), &cc_ci_agent::clock::Clock::system())
                            .ok()
                            .and_then(|l| l.deletions_recent(1).ok())
                            .is_some_and(|d| !d.is_empty());
                    if began || Instant::now() > deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();

        // Whatever the moment, no reader sees half a volume under its name.
        let names = h.volumes();
        assert!(
            names.contains(&"keep_1.0.0+1".to_string()),
            "run {n}: {names:?}"
        );
        if names.contains(&"old_1.0.0+1".to_string()) {
            assert_eq!(
                count_files(&big),
                1000,
                "run {n}: a volume under its own name was half deleted"
            );
        }

        let (run, v) = h.gc_json(&[]);
        assert_eq!(
            run.code, 0,
            "run {n} killed at {when:?}: {}\n{}",
            run.stdout, run.stderr
        );
        assert_eq!(h.volumes(), vec!["keep_1.0.0+1"], "run {n}: {v}");
        let states: Vec<String> = h.deletions().into_iter().map(|d| d.2).collect();
        assert!(
            !states.contains(&"deleting".to_string()),
            "run {n}: {states:?}"
        );
        assert!(
            states.contains(&"deleted".to_string()),
            "run {n}: {states:?}"
        );
    }
}

/// A sweep promotes a recipe while gc is asked to run: gc is refused (the sweep holds the lock),
/// and the next gc protects the new canonical and lets the old one's volume go.
#[test]
fn a_promotion_and_a_gc_never_interleave() {
    let h = Host::new("budget = \"3M\"\ngrace = \"1s\"");
    let root = h.dir.path();
    std::fs::create_dir_all(root.join("upstream")).unwrap();
    std::fs::create_dir_all(root.join("work")).unwrap();
    let up = support::Upstream::create(&root.join("upstream"), &root.join("work"), "a", "main");
    up.tag("2.0.0+2", true);
    std::fs::write(
        root.join("enrollment.toml"),
        format!(
            "[defaults]\nupstream = \"file://{}/upstream/{{recipe}}.git\"\n\n[recipe.a]\ncanonical = true\n",
            root.display()
        ),
    )
    .unwrap();
    // The CI run makes the warm volume of the version it tests, then holds on until the test
    // has tried its gc (the gate file): an event, not a pause long enough on a fast machine.
    let ci = r#"mkdir -p "$VOLUMES/$1_$2" && head -c 2097152 /dev/zero > "$VOLUMES/$1_$2/db" && while [ ! -e "$GATE" ]; do sleep 0.02; done"#;
    let mut config = std::fs::read_to_string(&h.config).unwrap();
    config.push_str(&format!(
        "\n[forge]\nkind = \"local\"\npath = \"mirrors\"\n\n[sweep]\ncommand = [\"sh\", \"-c\", {ci:?}, \"ci\", \"{{recipe}}\", \"{{version}}\"]\npass_env = [\"VOLUMES\", \"GATE\"]\n"
    ));
    std::fs::write(&h.config, config).unwrap();
    h.volume("a_1.0.0+1", 2, 30);
    h.canonical("a", "1.0.0+1");

    let sweep = h
        .command(&["sweep"])
        .env("VOLUMES", h.path("volumes"))
        .env("GATE", h.path("gate"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the sweep's CI run has made its volume: the promotion is under way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !h.path("volumes/a_2.0.0+2/db").exists() {
        assert!(Instant::now() < deadline, "the sweep never started CI");
        std::thread::sleep(Duration::from_millis(20));
    }
    let during = h.agent(&["gc"]);
    assert_eq!(during.code, 4, "{}\n{}", during.stdout, during.stderr);
    assert!(during.stderr.contains("sweep (pid"), "{}", during.stderr);
    assert_eq!(h.volumes(), vec!["a_1.0.0+1", "a_2.0.0+2"]);
    std::fs::write(h.path("gate"), "").unwrap();
    let out = sweep.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (run, v) = h.gc_json(&[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        decision(&v, "a_2.0.0+2"),
        ("keep".into(), "canonical".into())
    );
    assert_eq!(
        decision(&v, "a_1.0.0+1"),
        ("delete".into(), "over-budget".into())
    );
    assert_eq!(h.volumes(), vec!["a_2.0.0+2"]);
}

/// The docker backend: the argv it runs, and decisions from recorded output.
#[test]
fn docker_volumes_are_listed_sized_and_removed_through_the_cli() {
    let fixtures = common::repo().join("agent/tests/fixtures/docker");
    let h = Host::new("budget = \"2G\"\ngrace = \"1d\"");
    let docker = h.path("docker");
    std::fs::write(
        &docker,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {log:?}\ncase \"$1 $2\" in\n\
             'volume ls') cat {f:?}/volume-ls.txt ;;\n\
             'volume inspect') cat {f:?}/volume-inspect.json ;;\n\
             'system df') cat {f:?}/system-df-verbose.txt ;;\n\
             'volume rm') if [ \"$3\" = \"$DOCKER_IN_USE\" ]; then \
             echo \"Error response from daemon: remove $3: volume is in use - [3c7a1c4d2b1e]\" >&2; exit 1; fi; echo \"$3\" ;;\n\
             *) echo \"unexpected: $*\" >&2; exit 1 ;;\nesac\n",
            log = h.path("docker.log"),
            f = fixtures,
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", docker.to_str().unwrap()])
        .status()
        .unwrap();
    std::fs::write(
        &h.config,
        format!(
            "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\n\n[disk]\nbudget = \"2G\"\ngrace = \"1d\"\n\n\
             [disk.volumes]\nkind = \"docker\"\ndocker = {:?}\ndata_root = {:?}\n",
            docker.to_str().unwrap(),
            h.path("state").to_str().unwrap()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(h.path("state")).unwrap();
    h.canonical("plausible", "2.1.0+2.1.5");

    let (run, v) = h.gc_json(&[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    // 24.58kB + 1.2GB + 1.1GB + 512.3MB: over 2G (2147483648) by about 0.67 GB.
    assert_eq!(
        v["plan"]["total"],
        24_580u64 + 1_200_000_000 + 1_100_000_000 + 512_300_000
    );
    assert_eq!(decision(&v, "plausible_2-1-0").1, "canonical");
    assert_eq!(decision(&v, "wordpress_6-1-0").1, "in-flight");
    assert_eq!(
        decision(&v, "plausible_2-0-0"),
        ("delete".into(), "over-budget".into())
    );
    assert_eq!(
        decision(&v, "custom-html_1-0-0"),
        ("keep".into(), "under-budget".into())
    );
    let calls = std::fs::read_to_string(h.path("docker.log")).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        vec![
            "volume ls --quiet --filter label=cc-ci.recipe",
            "volume inspect custom-html_1-0-0 plausible_2-0-0 plausible_2-1-0 wordpress_6-1-0",
            "system df --verbose",
            "volume rm plausible_2-0-0",
        ],
        "{calls}"
    );
    // The volume seen in use is remembered as used now.
    let last = Ledger::open(&h.path("state"), &cc_ci_agent::clock::Clock::system())
        .unwrap()
        .volume_last_used("wordpress_6-1-0")
        .unwrap();
    assert!(last.is_some());

    // A container takes the volume between the inventory and `volume rm`: docker refuses, the
    // volume is kept, and that is no failure; the budget still does not hold.
    let run = common::finish(
        h.command(&["--format", "json", "gc"])
            .env("DOCKER_IN_USE", "plausible_2-0-0")
            .output(),
    );
    assert_eq!(run.code, 13, "{}\n{}", run.stdout, run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["kept_in_use"], serde_json::json!(["plausible_2-0-0"]));
    assert!(
        v["messages"][0].as_str().unwrap().starts_with("over the"),
        "{v}"
    );
    let states = h.deletions();
    assert!(
        states.contains(&(
            "plausible_2-0-0".into(),
            "over-budget".into(),
            "kept".into()
        )),
        "{states:?}"
    );

    // No docker CLI where the config says: the error says what to check.
    let text = std::fs::read_to_string(&h.config).unwrap();
    std::fs::write(
        &h.config,
        text.replace(docker.to_str().unwrap(), "/nonexistent/docker"),
    )
    .unwrap();
    let run = h.agent(&["gc", "--dry-run"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("is Docker installed?"),
        "{}",
        run.stderr
    );
}
