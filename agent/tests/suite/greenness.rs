//! Greenness as a degree (docs/sweep.md, "Greenness"): `cc-ci-agent sweep` against recipes
//! whose CI writes JUnit XML into `{results}` (pytest's format, tests/junit/), judged tier by
//! tier; hostile results; the hooks that hear a recipe's greenness change.

use crate::common;
use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Run;
use support::Upstream;

/// The stand-in CI: copies `$CASES/<recipe>/` (files, links and FIFOs as they are) into
/// `{results}`, then exits with `$CASES/<recipe>.exit` (0 when there is none).
const CI: &str = r#"cp -a "$CASES/$1/." "$2/" 2>/dev/null; exit "$(cat "$CASES/$1.exit" 2>/dev/null || echo 0)""#;

pub(crate) const FOUR: &str = "tiers = [\"install\", \"upgrade\", \"backup\", \"functional\"]\n";

pub(crate) struct Fleet {
    dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
    _upstreams: Vec<Upstream>,
}

impl Fleet {
    /// `recipes` each with one release; `sweep` goes under `[sweep]` after the command.
    pub(crate) fn new(recipes: &[&str], sweep: &str, command: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["upstream", "work", "cases"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let mut enrollment = format!(
            "[defaults]\nupstream = \"file://{}/upstream/{{recipe}}.git\"\n",
            root.display()
        );
        let mut upstreams = Vec::new();
        for n in recipes {
            let up = Upstream::create(&root.join("upstream"), &root.join("work"), n, "main");
            up.commit("compose.yml", "services: {}\n");
            up.tag("1.0.0+1.0", true);
            upstreams.push(up);
            enrollment.push_str(&format!("\n[recipe.{n}]\ncanonical = true\n"));
            std::fs::create_dir_all(root.join("cases").join(n)).unwrap();
        }
        std::fs::write(root.join("enrollment.toml"), enrollment).unwrap();
        let config = root.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\n\n[forge]\nkind = \"local\"\npath = \"mirrors\"\n\n\
                 [[hooks]]\nevents = [\"green\", \"not-green\", \"degree-changed\"]\ncommand = [\"sh\", \"-c\", \"cat >> \\\"$HOOK_LOG\\\"; echo >> \\\"$HOOK_LOG\\\"\"]\npass_env = [\"HOOK_LOG\"]\n\n\
                 [sweep]\ncommand = {command}\npass_env = [\"CASES\", \"FAIL_TIER\"]\ntimeout = \"60s\"\n{sweep}"
            ),
        )
        .unwrap();
        Self {
            dir,
            config,
            _upstreams: upstreams,
        }
    }

    pub(crate) fn with_cases(recipes: &[&str], sweep: &str) -> Self {
        let command = format!("[\"sh\", \"-c\", {CI:?}, \"ci\", \"{{recipe}}\", \"{{results}}\"]");
        Self::new(recipes, sweep, &command)
    }

    /// The same fleet with another `[sweep] command`.
    fn rewrite_command(self, command: &str) -> Self {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let (head, sweep) = text.split_once("[sweep]\n").unwrap();
        let (old, rest) = sweep.split_once('\n').unwrap();
        assert!(old.starts_with("command = "), "{old}");
        let text = format!("{head}[sweep]\ncommand = {command}\n{rest}");
        std::fs::write(&self.config, text).unwrap();
        self
    }

    pub(crate) fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `recipe`'s CI writes these fixture files from tests/junit/ and exits `exit`.
    pub(crate) fn case(&self, recipe: &str, fixtures: &[&str], exit: i32) {
        let dir = self.path(&format!("cases/{recipe}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in fixtures {
            let from = common::repo().join("tests/junit").join(f);
            let name = Path::new(f).file_name().unwrap();
            std::fs::copy(&from, dir.join(name)).unwrap();
        }
        std::fs::write(self.path(&format!("cases/{recipe}.exit")), exit.to_string()).unwrap();
    }

    pub(crate) fn agent(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = std::process::Command::new(common::bin());
        c.args(["--config", self.config.to_str().unwrap()])
            .args(args)
            .env("CASES", self.path("cases"))
            .env("HOOK_LOG", self.path("hooks.log"))
            .env("CC_CI_LOG", "warn");
        for (k, v) in env {
            c.env(k, v);
        }
        common::run(&mut c)
    }

    pub(crate) fn sweep(&self, args: &[&str]) -> (Run, serde_json::Value) {
        let mut all = vec!["--format", "json", "sweep"];
        all.extend_from_slice(args);
        let run = self.agent(&all, &[]);
        let v = serde_json::from_str(&run.stdout).unwrap_or(serde_json::Value::Null);
        (run, v)
    }

    pub(crate) fn last_run(&self, recipe: &str) -> serde_json::Value {
        let run = self.agent(&["--format", "json", "history", recipe], &[]);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        v["runs"][0].clone()
    }

    fn health_of(&self, recipe: &str) -> serde_json::Value {
        let run = self.agent(&["--format", "json", "health"], &[]);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        v["recipes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["recipe"] == recipe)
            .cloned()
            .unwrap()
    }
}

pub(crate) fn decision(v: &serde_json::Value, recipe: &str) -> String {
    let r = v["recipes"].as_array().unwrap();
    let found = r.iter().find(|r| r["recipe"] == recipe).unwrap();
    found["decision"].as_str().unwrap().to_string()
}

#[test]
fn every_tier_green_is_degree_0_and_promoted() {
    let f = Fleet::with_cases(&["plausible"], FOUR);
    f.case("plausible", &["pytest-7.2/green.xml"], 0);
    let (run, v) = f.sweep(&[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(decision(&v, "plausible"), "promoted", "{v:#}");
    let last = f.last_run("plausible");
    assert_eq!(last["greenness"], 0.0, "{last:#}");
    let tiers: Vec<&str> = last["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tier"].as_str().unwrap())
        .collect();
    assert_eq!(tiers, ["install", "upgrade", "backup", "functional"]);
    let human = f.agent(&["history", "plausible"], &[]);
    assert!(
        human
            .stdout
            .contains("install ✓ upgrade ✓ backup ✓ functional ✓"),
        "{}",
        human.stdout
    );
}

#[test]
fn one_red_tier_of_four_is_a_quarter_not_promoted_and_named_by_health() {
    let f = Fleet::with_cases(&["plausible"], FOUR);
    f.case("plausible", &["pytest-7.2/backup-red.xml"], 1);
    let (run, v) = f.sweep(&[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(decision(&v, "plausible"), "red", "{v:#}");
    let last = f.last_run("plausible");
    assert_eq!(last["greenness"], 0.25, "{last:#}");
    assert_eq!(last["result"], "red");
    let backup = last["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == "backup")
        .unwrap()
        .clone();
    assert_eq!(backup["failures"], 1, "{backup:#}");
    assert_eq!(backup["skipped"], 1, "{backup:#}");
    assert!(backup["first_failure"]
        .as_str()
        .unwrap()
        .ends_with("test_restore_keeps_posts"));
    assert!(backup["first_message"]
        .as_str()
        .unwrap()
        .contains("posts lost after restore"));
    let human = f.agent(&["history", "plausible"], &[]);
    assert!(
        human.stdout.contains("0.25")
            && human
                .stdout
                .contains("backup ✗ (backup.test_backup::test_restore_keeps_posts)"),
        "{}",
        human.stdout
    );
    let health = f.health_of("plausible");
    assert_eq!(health["greenness"]["degree"], 0.25, "{health:#}");
    assert_eq!(
        health["greenness"]["failing"][0]["tier"], "backup",
        "{health:#}"
    );
    let canonical = f.agent(&["--format", "json", "canonical", "show", "plausible"], &[]);
    let shown: serde_json::Value = serde_json::from_str(&canonical.stdout).unwrap();
    assert!(shown["canonical"].is_null(), "{shown:#}");
    assert_eq!(shown["newest"]["greenness"], 0.25, "{shown:#}");
}

#[test]
fn a_tier_that_never_reported_is_not_green_and_named() {
    let f = Fleet::with_cases(&["plausible"], FOUR);
    f.case("plausible", &["pytest-7.2/no-functional.xml"], 0);
    let (_, v) = f.sweep(&[]);
    assert_eq!(decision(&v, "plausible"), "red", "{v:#}");
    let last = f.last_run("plausible");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("functional never reported"),
        "{last:#}"
    );
}

#[test]
fn a_failed_exit_with_green_results_is_red_and_no_results_at_all_an_error() {
    let f = Fleet::with_cases(&["plausible", "ghost"], FOUR);
    f.case("plausible", &["pytest-7.2/green.xml"], 1);
    f.case("ghost", &[], 0);
    let (run, v) = f.sweep(&[]);
    assert_eq!(run.code, 11, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(decision(&v, "plausible"), "red", "{v:#}");
    let last = f.last_run("plausible");
    assert_eq!(last["greenness"], 0.2, "{last:#}");
    assert_eq!(last["exit_code"], 1, "{last:#}");
    assert_eq!(decision(&v, "ghost"), "error", "{v:#}");
    assert!(
        f.last_run("ghost")["detail"]
            .as_str()
            .unwrap()
            .contains("no results"),
        "{v:#}"
    );
    // Not a verdict: tried again by the next sweep, which says how many times it has been.
    let (_, again) = f.sweep(&[]);
    assert_eq!(decision(&again, "plausible"), "skip-already-judged");
    let found = again["recipes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["recipe"] == "ghost")
        .unwrap()
        .clone();
    assert!(
        found["detail"]
            .as_str()
            .unwrap()
            .contains("in error 2 times at this commit"),
        "{found:#}"
    );
}

/// Results no tool writes on purpose (tests/junit/hand-written/), each beside the CI's exit 0:
/// suites nested as aggregates nest them, UTF-16 as .NET writes it, a file cut off before its
/// failing case, and an empty, non-XML, non-JUnit or case-less file beside good results.
#[test]
fn what_no_tool_writes_on_purpose_is_never_promoted() {
    let cases: [(&str, &[&str], &str); 8] = [
        ("nested", &["hand-written/nested-suites.xml"], "red"),
        ("utf16le", &["hand-written/utf-16le.xml"], "red"),
        ("utf16be", &["hand-written/utf-16be.xml"], "red"),
        (
            "truncated",
            &["hand-written/truncated-before-the-failure.xml"],
            "error",
        ),
        (
            "empty",
            &["pytest-7.2/green.xml", "hand-written/empty.xml"],
            "error",
        ),
        (
            "notxml",
            &["pytest-7.2/green.xml", "hand-written/not-xml.xml"],
            "error",
        ),
        (
            "notjunit",
            &["pytest-7.2/green.xml", "hand-written/not-junit.xml"],
            "error",
        ),
        (
            "nocase",
            &["pytest-7.2/green.xml", "hand-written/no-test-case.xml"],
            "error",
        ),
    ];
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let f = Fleet::with_cases(&names, "tiers = [\"install\", \"backup\"]\n");
    for (recipe, fixtures, _) in &cases {
        f.case(recipe, fixtures, 0);
    }
    let (_, v) = f.sweep(&[]);
    for (recipe, fixtures, want) in &cases {
        assert_eq!(&decision(&v, recipe), want, "{recipe} {fixtures:?}: {v:#}");
        let last = f.last_run(recipe);
        if *want == "red" {
            let backup = last["tiers"][1].clone();
            assert_eq!(backup["tier"], "backup", "{last:#}");
            assert_eq!(backup["failures"], 1, "{recipe}: {last:#}");
        } else {
            let named = Path::new(fixtures.last().unwrap()).file_name().unwrap();
            assert!(
                last["detail"]
                    .as_str()
                    .unwrap()
                    .contains(named.to_str().unwrap()),
                "{recipe}: the file is named: {last:#}"
            );
        }
    }
}

/// Without `tiers`, a host judges by the exit code as before, and the results it gets are
/// recorded beside the run.
#[test]
fn without_tiers_the_exit_code_still_decides() {
    let f = Fleet::with_cases(&["plausible"], "");
    f.case("plausible", &["pytest-7.2/backup-red.xml"], 0);
    let (_, v) = f.sweep(&[]);
    assert_eq!(decision(&v, "plausible"), "promoted", "{v:#}");
    assert_eq!(f.last_run("plausible")["greenness"], 0.0);
}

/// Each hostile result makes its recipe's run `error`, fast and in bounded memory, and the
/// next recipe is still judged.
#[test]
fn hostile_results_are_errors_and_the_next_recipe_is_still_judged() {
    let cases: [(&str, &Plant); 9] = [
        ("billion-laughs", &|d| copy_hostile(d, "billion-laughs.xml")),
        ("external-entity", &|d| {
            copy_hostile(d, "external-entity.xml")
        }),
        ("malformed", &|d| copy_hostile(d, "malformed.xml")),
        ("deep", &|d| {
            let xml = format!(
                "<testsuites>{}{}",
                "<a>".repeat(100_000),
                "</a>".repeat(100_000)
            );
            std::fs::write(d.join("deep.xml"), format!("{xml}</testsuites>")).unwrap();
        }),
        ("huge", &|d| {
            let case = "<testcase classname=\"install.t\" name=\"x\" time=\"0\"/>";
            let body = case.repeat((20 << 20) / case.len());
            let xml =
                format!("<testsuites><testsuite name=\"pytest\">{body}</testsuite></testsuites>");
            std::fs::write(d.join("huge.xml"), xml).unwrap();
        }),
        ("link", &|d| {
            std::os::unix::fs::symlink("/etc/passwd", d.join("link.xml")).unwrap()
        }),
        ("fifo", &|d| {
            let path = d.join("fifo.xml");
            let made = std::process::Command::new("mkfifo")
                .arg(&path)
                .status()
                .unwrap();
            assert!(made.success());
        }),
        ("bytes", &|d| {
            let mut xml =
                b"<testsuites><testsuite name=\"pytest\"><testcase classname=\"install.t\" name=\""
                    .to_vec();
            xml.extend_from_slice(&[0xc3, 0x28, 0x1b, b'[', b'2', b'J']);
            xml.extend_from_slice(b"\"/></testsuite></testsuites>");
            std::fs::write(d.join("bytes.xml"), xml).unwrap();
        }),
        ("controls", &|d| {
            let xml = "<testsuites><testsuite name=\"pytest\"><testcase classname=\"install.t\" \
                       name=\"\u{1b}[2J\u{202e}\"><failure message=\"\u{1b}]0;owned\u{7}\"/>\
                       </testcase></testsuite></testsuites>";
            std::fs::write(d.join("controls.xml"), xml).unwrap();
        }),
    ];
    let names: Vec<&str> = cases.iter().map(|(n, _)| *n).chain(["zz-fine"]).collect();
    let f = Fleet::with_cases(&names, "tiers = [\"install\"]\n");
    for (name, make) in &cases {
        make(&f.path(&format!("cases/{name}")));
    }
    f.case("zz-fine", &["pytest-7.2/green.xml"], 0);
    let started = Instant::now();
    let (run, v) = f.sweep(&[]);
    let took = started.elapsed();
    assert_eq!(run.code, 11, "{}\n{}", run.stdout, run.stderr);
    for (name, _) in &cases {
        let d = decision(&v, name);
        // Control characters are read (escaped), and the one tier fails: red, never a crash.
        let want = if *name == "controls" { "red" } else { "error" };
        assert_eq!(d, want, "{name}: {v:#}");
    }
    assert_eq!(decision(&v, "zz-fine"), "promoted", "{v:#}");
    // A bound, not a timing test: the whole sweep of nine recipes, far below a hang.
    assert!(took < Duration::from_secs(120), "{took:?}");
    let controls = f.last_run("controls");
    let said = serde_json::to_string(&controls).unwrap();
    assert!(
        !said.contains('\u{1b}') && !said.contains('\u{202e}'),
        "a control character reached the ledger: {said}"
    );
    for (name, says) in [
        ("billion-laughs", "DOCTYPE"),
        ("malformed", "malformed.xml:"),
        ("huge", "huge.xml"),
        ("link", "no results"),
        ("bytes", "bytes.xml: not UTF-8"),
    ] {
        let detail = f.last_run(name)["detail"].as_str().unwrap().to_string();
        assert!(detail.contains(says), "{name}: {detail}");
    }
}

/// Writes a hostile result into a recipe's case directory.
type Plant = dyn Fn(&Path);

fn copy_hostile(dir: &Path, name: &str) {
    let from = common::repo().join("tests/junit/hostile").join(name);
    std::fs::copy(from, dir.join(name)).unwrap();
}

/// The hooks hear a recipe's greenness change once per change: green, then not green, then a
/// changed degree, and nothing for a repeat.
#[test]
fn hooks_hear_each_change_of_greenness_once() {
    let f = Fleet::with_cases(&["plausible"], FOUR);
    let hooks = || {
        std::fs::read_to_string(f.path("hooks.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    f.case("plausible", &["pytest-7.2/backup-red.xml"], 1);
    f.sweep(&["--force"]);
    assert_eq!(hooks(), ["not-green"]);
    f.sweep(&["--force"]);
    assert_eq!(hooks(), ["not-green"], "a repeat says nothing");
    f.case("plausible", &["pytest-7.2/no-functional.xml"], 0);
    f.sweep(&["--force"]);
    assert_eq!(
        hooks(),
        ["not-green"],
        "the same degree, other tiers: no change of degree"
    );
    f.case("plausible", &["pytest-7.2/green.xml"], 0);
    f.sweep(&["--force"]);
    assert_eq!(hooks(), ["not-green", "green"]);
}

/// A real pytest run where pytest is installed (`.ci/run` installs python3-pytest).
#[test]
fn a_real_pytest_suite_is_judged_tier_by_tier() {
    let Some(python) = python_with_pytest() else {
        eprintln!("greenness: NOT RUN HERE: no python3 with pytest (apt install python3-pytest)");
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have pytest: .ci/run installs it"
        );
        return;
    };
    let suite = common::repo().join("tests/junit/suite");
    let command = format!(
        "[{python:?}, \"-B\", \"-m\", \"pytest\", \"-q\", \"-p\", \"no:cacheprovider\", \"--rootdir\", {s:?}, \"--junitxml\", \"{{results}}/junit.xml\", {s:?}]",
        s = suite.to_string_lossy()
    );
    let f = Fleet::new(&["plausible"], FOUR, &command);
    let run = f.agent(&["--format", "json", "sweep"], &[("FAIL_TIER", "backup")]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(decision(&v, "plausible"), "red", "{v:#}\n{}", run.stderr);
    let last = f.last_run("plausible");
    assert_eq!(last["greenness"], 0.25, "{last:#}");
    let run = f.agent(&["--format", "json", "sweep", "--force"], &[]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(decision(&v, "plausible"), "promoted", "{v:#}");
}

pub(crate) fn python_with_pytest() -> Option<String> {
    ["/usr/bin/python3", "python3"].into_iter().find_map(|p| {
        let ok = std::process::Command::new(p)
            .args(["-c", "import pytest"])
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| p.to_string())
    })
}

/// `kill -9` while the agent reads the results (a large, valid set, read after CI signals it is
/// done) leaves no half-recorded run: the run is whole with every tier, or unfinished with none,
/// and the next sweep records it interrupted.
#[test]
fn a_kill_while_results_are_read_leaves_no_half_recorded_run() {
    let f = Fleet::with_cases(&["plausible"], FOUR);
    let dir = f.path("cases/plausible");
    std::fs::create_dir_all(&dir).unwrap();
    let case = "<testcase classname=\"install.test_install\" name=\"test_a_long_name_for_bulk\" time=\"0.01\"/>";
    for (i, tier) in ["install", "upgrade", "backup", "functional"]
        .iter()
        .enumerate()
    {
        let body = case.replace("install", tier).repeat(20_000);
        let xml = format!("<testsuites><testsuite name=\"pytest\">{body}</testsuite></testsuites>");
        std::fs::write(dir.join(format!("{i}.xml")), xml).unwrap();
    }
    // CI's last act: say it is done, so the kill lands after it, while the agent reads.
    let ci = format!(
        "[\"sh\", \"-c\", {:?}, \"ci\", \"{{recipe}}\", \"{{results}}\", {:?}]",
        r#"cp -a "$CASES/$1/." "$2/"; touch "$3""#,
        f.path("ci-done").to_string_lossy()
    );
    let f = f.rewrite_command(&ci);
    let mut child = std::process::Command::new(common::bin())
        .args(["--config", f.config.to_str().unwrap(), "sweep"])
        .env("CASES", f.path("cases"))
        .env("CC_CI_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let waited = Instant::now();
    while !f.path("ci-done").exists() {
        assert!(waited.elapsed() < Duration::from_secs(60), "CI never ran");
        std::thread::yield_now();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let db = rusqlite::Connection::open(f.path("state/state.db")).unwrap();
    let (result, tiers): (String, i64) = db
        .query_row(
            "SELECT r.result, (SELECT count(*) FROM run_tiers t WHERE t.run = r.id) FROM runs r",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    eprintln!("greenness: killed after CI: the run was {result} with {tiers} tiers");
    assert!(
        (result == "running" && tiers == 0) || (result == "green" && tiers == 4),
        "half recorded: {result} with {tiers} tiers"
    );
    let (run, _) = f.sweep(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

/// On a terminal, a sweep says what it is doing while CI runs: which recipe of how many, its
/// release, for how long, and CI's last line; piped, nothing but the records. (script(1) gives
/// the agent a terminal; CI waits for the test's word, so the line is seen while it runs.)
#[test]
fn a_sweep_on_a_terminal_shows_its_progress_and_piped_only_its_records() {
    let Ok(script) = which::which("script") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "script(1) missing: the progress check cannot run"
        );
        eprintln!("greenness: NOT RUN HERE: no script(1) (util-linux) for a terminal");
        return;
    };
    let ci = r#"echo "pulling image"; while [ ! -e "$3" ]; do sleep 0.05; done; cp -a "$CASES/$1/." "$2/""#;
    let f = Fleet::with_cases(&["plausible"], FOUR);
    let gate = f.path("gate");
    let command = format!(
        "[\"sh\", \"-c\", {ci:?}, \"ci\", \"{{recipe}}\", \"{{results}}\", {:?}]",
        gate.to_string_lossy()
    );
    let f = f.rewrite_command(&command);
    f.case("plausible", &["pytest-7.2/green.xml"], 0);
    let line = format!(
        "{} --config {} sweep",
        common::bin(),
        f.config.to_string_lossy()
    );
    let mut child = std::process::Command::new(script)
        .args(["-qec", &line, "/dev/null"])
        .env("CASES", f.path("cases"))
        .env("CC_CI_LOG", "warn")
        .env_remove("JOURNAL_STREAM")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let (seen, mut out) = (seen.clone(), child.stdout.take().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let want = "sweep 1 of 1: plausible 1.0.0+1.0 cold, CI, 0:0";
    let until = Instant::now() + Duration::from_secs(60);
    while !(seen.lock().unwrap().contains(want) && seen.lock().unwrap().contains("pulling image")) {
        assert!(
            Instant::now() < until,
            "no progress line: {:?}",
            seen.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(&gate, "").unwrap();
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    assert!(
        seen.lock().unwrap().contains("promoted"),
        "{:?}",
        seen.lock().unwrap()
    );
    std::fs::remove_file(&gate).unwrap();
    std::fs::write(&gate, "").unwrap();
    let piped = f.agent(&["sweep", "--force"], &[]);
    assert!(
        !piped.stderr.contains('\r') && !piped.stderr.contains("sweep 1 of 1"),
        "{:?}",
        piped.stderr
    );
}
