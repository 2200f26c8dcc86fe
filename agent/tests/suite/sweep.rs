//! `cc-ci-agent sweep`, `canonical` and `history`: real upstream repos with release tags, a local
//! forge, and a stand-in CI command whose verdict per release the test decides.

use crate::common;
use crate::support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cc_ci_agent::ledger::{JobLock, Ledger};
use common::{agent, Run};
use support::{git, Upstream};

/// The stand-in CI: logs "recipe version base" and fails when verdicts/<recipe>-<version> says red.
/// With `CI_GATE` set, each run first waits for that file to appear (a CI run as long as the test
/// wants).
const CI: &str = r#"echo "$1 $2 base=$3" >> "$CI_LOG"; while [ -n "$CI_GATE" ] && [ ! -e "$CI_GATE" ]; do sleep 0.05; done; sleep "${CI_SLEEP:-0}"; test "$(cat "$VERDICTS/$1-$2" 2>/dev/null)" != red"#;

struct Sweep {
    dir: tempfile::TempDir,
    upstreams: Vec<(String, Upstream)>,
    config: PathBuf,
}

impl Sweep {
    fn new(recipes: &[&str], extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("upstream")).unwrap();
        std::fs::create_dir_all(root.join("work")).unwrap();
        std::fs::create_dir_all(root.join("verdicts")).unwrap();
        let upstreams = recipes
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Upstream::create(&root.join("upstream"), &root.join("work"), n, "main"),
                )
            })
            .collect();
        let mut enrollment = format!(
            "[defaults]\nupstream = \"file://{}/upstream/{{recipe}}.git\"\n",
            root.display()
        );
        for n in recipes {
            enrollment.push_str(&format!("\n[recipe.{n}]\ncanonical = true\n"));
        }
        enrollment.push_str("\n[recipe.not-canonical]\nupstream = \"file:///nonexistent/x.git\"\n");
        std::fs::write(root.join("enrollment.toml"), enrollment).unwrap();
        let config = root.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\n\n[forge]\nkind = \"local\"\npath = \"mirrors\"\n\n\
                 [sweep]\ncommand = [\"sh\", \"-c\", {ci:?}, \"ci\", \"{{recipe}}\", \"{{version}}\", \"{{base}}\"]\npass_env = [\"CI_LOG\", \"VERDICTS\", \"CI_SLEEP\", \"CI_GATE\"]\n\
                 teardown = [\"sh\", \"-c\", \"echo teardown $1 >> \\\"$CI_LOG\\\"\", \"td\", \"{{recipe}}\"]\n\
                 canonical_export_dir = \"export\"\ntimeout = \"60s\"\n{extra}",
                ci = CI
            ),
        )
        .unwrap();
        Self {
            dir,
            upstreams,
            config,
        }
    }

    fn up(&self, name: &str) -> &Upstream {
        &self.upstreams.iter().find(|(n, _)| n == name).unwrap().1
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(common::bin());
        c.args(["--config", self.config.to_str().unwrap()])
            .args(args)
            .env("CI_LOG", self.path("ci.log"))
            .env("VERDICTS", self.path("verdicts"))
            .env("HOOK_LOG", self.path("hooks.log"))
            .env("CC_CI_LOG", "warn");
        c
    }

    fn agent(&self, args: &[&str]) -> Run {
        common::run(&mut self.command(args))
    }

    fn sweep(&self) -> (Run, serde_json::Value) {
        let run = self.agent(&["--format", "json", "sweep"]);
        let v = serde_json::from_str(&run.stdout).unwrap_or(serde_json::Value::Null);
        (run, v)
    }

    fn decision(v: &serde_json::Value, recipe: &str) -> String {
        v["recipes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["recipe"] == recipe)
            .unwrap()["decision"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn ci_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("ci.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with("teardown"))
            .map(str::to_string)
            .collect()
    }

    fn red(&self, recipe: &str, version: &str) {
        std::fs::write(self.path(&format!("verdicts/{recipe}-{version}")), "red").unwrap();
    }

    /// The named check of `health`'s host list.
    fn host_check(&self, name: &str) -> serde_json::Value {
        let health = self.agent(&["--format", "json", "health"]);
        let v: serde_json::Value = serde_json::from_str(&health.stdout).unwrap();
        let found = v["host"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name);
        found
            .cloned()
            .unwrap_or_else(|| panic!("no {name} check: {v}"))
    }

    fn canonical(&self, recipe: &str) -> Option<String> {
        Ledger::open(&self.path("state"), &cc_ci_agent::clock::Clock::system())
            .unwrap()
            .canonical(recipe)
            .unwrap()
            .map(|c| c.version)
    }
}

#[test]
fn a_second_sweep_skips_everything_and_starts_no_ci() {
    let s = Sweep::new(&["plausible", "ghost"], "");
    s.up("plausible").tag("1.0.0+2.0", true);
    s.up("ghost").tag("5.0.0+5.1", false);
    let (run, v) = s.sweep();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(Sweep::decision(&v, "plausible"), "promoted");
    assert_eq!(Sweep::decision(&v, "ghost"), "promoted");
    assert_eq!(s.ci_calls().len(), 2);
    let (run, v) = s.sweep();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(Sweep::decision(&v, "plausible"), "skip-no-new-version");
    assert_eq!(Sweep::decision(&v, "ghost"), "skip-no-new-version");
    assert_eq!(
        s.ci_calls().len(),
        2,
        "the determinism proof: no CI the second time"
    );
}

#[test]
fn untagged_commits_are_skipped_and_never_promoted() {
    let s = Sweep::new(&["mumble"], "");
    let (_, v) = s.sweep();
    assert_eq!(Sweep::decision(&v, "mumble"), "skip-no-release");
    s.up("mumble").tag("1.0.0+1.4", true);
    s.sweep();
    s.up("mumble").commit("compose.yml", "untagged work\n");
    let (run, v) = s.sweep();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(Sweep::decision(&v, "mumble"), "skip-no-new-version");
    assert_eq!(s.ci_calls().len(), 1);
    assert_eq!(s.canonical("mumble").as_deref(), Some("1.0.0+1.4"));
}

#[test]
fn a_green_release_is_promoted_and_a_red_one_keeps_the_canonical() {
    let s = Sweep::new(&["n8n"], "");
    let up = s.up("n8n");
    up.tag("1.0.0+1.0", true);
    s.sweep();
    let exported: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.path("export/n8n/canonical.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(exported["version"], "1.0.0+1.0");
    assert_eq!(exported["status"], "green");
    assert_eq!(exported["commit"].as_str().unwrap(), up.head());
    assert_eq!(exported["recipe"], "n8n");

    up.commit("compose.yml", "2\n");
    up.tag("1.1.0+1.1", true);
    s.red("n8n", "1.1.0+1.1");
    let (run, v) = s.sweep();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(Sweep::decision(&v, "n8n"), "red");
    assert_eq!(
        s.canonical("n8n").as_deref(),
        Some("1.0.0+1.0"),
        "a red release never replaces a green canonical"
    );
    let exported: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.path("export/n8n/canonical.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(exported["version"], "1.0.0+1.0");

    // The red commit is judged: the next sweep does not run it again, unless forced.
    let (_, v) = s.sweep();
    assert_eq!(Sweep::decision(&v, "n8n"), "skip-already-judged");
    std::fs::remove_file(s.path("verdicts/n8n-1.1.0+1.1")).unwrap();
    let run = s.agent(&["--format", "json", "sweep", "--force"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(Sweep::decision(&v, "n8n"), "promoted");

    let history = s.agent(&["--format", "json", "history", "n8n"]);
    let h: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    let results: Vec<&str> = h["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["green", "red", "green"]);
    assert!(h["runs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["cold"] == true
            && r["log_path"]
                .as_str()
                .is_some_and(|p| std::path::Path::new(p).is_file())));
}

#[test]
fn the_upgrade_base_is_always_strictly_older_than_the_version() {
    let s = Sweep::new(&["keycloak"], "");
    let up = s.up("keycloak");
    up.tag("1.0.0+20.0", true);
    s.sweep();
    up.commit("x", "1\n");
    up.tag("2.0.0+21.0", true);
    s.sweep();
    let calls = s.ci_calls();
    assert_eq!(
        calls,
        [
            "keycloak 1.0.0+20.0 base=",
            "keycloak 2.0.0+21.0 base=1.0.0+20.0"
        ]
    );

    // A pin at or above the new version is never handed over.
    let text = std::fs::read_to_string(s.path("enrollment.toml"))
        .unwrap()
        .replace(
            "[recipe.keycloak]\ncanonical = true\n",
            "[recipe.keycloak]\ncanonical = true\nupgrade_base = \"3.0.0+22.0\"\n",
        );
    std::fs::write(s.path("enrollment.toml"), text).unwrap();
    up.commit("x", "2\n");
    up.tag("3.0.0+22.0", true);
    s.sweep();
    assert_eq!(s.ci_calls().last().unwrap(), "keycloak 3.0.0+22.0 base=");
    for call in s.ci_calls() {
        let parts: Vec<&str> = call.split(' ').collect();
        let base = parts[2].trim_start_matches("base=");
        if !base.is_empty() {
            let (b, v) = (
                semver::Version::parse(base).unwrap(),
                semver::Version::parse(parts[1]).unwrap(),
            );
            assert_eq!(b.cmp_precedence(&v), std::cmp::Ordering::Less, "{call}");
        }
    }
    // canonical base: the pin wins over the canonical.
    let base = s.agent(&["canonical", "base", "keycloak"]);
    assert_eq!((base.code, base.stdout.trim()), (0, "3.0.0+22.0"));
    // The canonical is the pinned version: the pin is not redundant (it still holds the base if
    // that canonical were demoted to an older, broken one).
    let check = s.agent(&["enrollment", "check"]);
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(!check.stdout.contains("redundant"), "{}", check.stdout);
    // Once the canonical is past the pin, enrollment check says it can go.
    up.commit("x", "3\n");
    up.tag("4.0.0+23.0", true);
    s.sweep();
    let check = s.agent(&["enrollment", "check"]);
    assert!(
        check.stdout.contains(
            "warning: keycloak: upgrade_base 3.0.0+22.0 is below the canonical 4.0.0+23.0"
        ),
        "{}",
        check.stdout
    );
}

/// A Drone busy check whose token file is missing, empty or a FIFO is a configuration error
/// (exit 2, naming the file and the setting), not "CI is busy" (exit 5) for ever; CI never runs,
/// the sweep row says so and `health` tells the operator.
#[test]
fn a_broken_drone_token_file_is_a_configuration_error_not_a_busy_ci() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("token.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    for token in [dir.path().join("missing"), empty, fifo] {
        let s = Sweep::new(
            &["immich"],
            &format!(
                "[sweep.busy_check.drone]\nurl = \"https://drone.invalid\"\ntoken_file = \"{}\"\n",
                token.display()
            ),
        );
        s.up("immich").tag("1.0.0+1.9", true);
        let (run, _) = s.sweep();
        assert_eq!(run.code, 2, "{}: {}", token.display(), run.stderr);
        assert!(
            run.stderr.contains(&token.display().to_string())
                && run.stderr.contains("busy_check.drone.token_file"),
            "{}",
            run.stderr
        );
        assert!(s.ci_calls().is_empty());
        let sweep = s.host_check("sweep");
        assert!(
            sweep["reason"].as_str().unwrap().contains("configuration"),
            "{sweep}"
        );
    }
}

#[test]
fn ci_busy_or_another_agent_refuses_the_whole_sweep_and_it_is_recorded() {
    let flag = tempfile::NamedTempFile::new().unwrap();
    let s = Sweep::new(
        &["immich"],
        &format!("[sweep.busy_check]\ncommand = [\"sh\", \"-c\", \"test -s {0} || exit 0; cat {0}; exit 1\"]\n", flag.path().display()),
    );
    s.up("immich").tag("1.0.0+1.9", true);
    std::fs::write(flag.path(), "immich #7 since 09:00\n").unwrap();
    let (run, _) = s.sweep();
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(s.ci_calls().is_empty());
    std::fs::write(flag.path(), "").unwrap();

    let held = JobLock::acquire(&s.path("state"), "deploy").unwrap();
    let (run, _) = s.sweep();
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains("busy: deploy"), "{}", run.stderr);
    drop(held);
    let sweeps = Ledger::open(&s.path("state"), &cc_ci_agent::clock::Clock::system())
        .unwrap()
        .sweeps(10)
        .unwrap();
    let outcomes: Vec<&str> = sweeps
        .iter()
        .map(|s| s.outcome.map_or("", |o| o.as_str()))
        .collect();
    assert_eq!(outcomes, ["refused-busy", "refused-ci-busy"]);
    assert!(s.ci_calls().is_empty());
    // Shown nowhere no more: health says the week's sweep was refused.
    let sweep = s.host_check("sweep");
    assert_eq!(sweep["status"], "warn", "{sweep}");
    assert!(
        sweep["reason"]
            .as_str()
            .unwrap()
            .contains("was refused (refused-busy)"),
        "{sweep}"
    );
}

#[test]
fn a_hollow_sweep_over_no_canonical_recipe_is_a_health_warning() {
    let s = Sweep::new(&["nextcloud"], "");
    let enrollment = s.path("enrollment.toml");
    let text = std::fs::read_to_string(&enrollment)
        .unwrap()
        .replace("canonical = true\n", "");
    std::fs::write(&enrollment, text).unwrap();
    let (run, _) = s.sweep();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let sweep = s.host_check("sweep");
    assert_eq!(sweep["status"], "warn", "{sweep}");
    assert!(
        sweep["reason"].as_str().unwrap().contains("judge nothing"),
        "{sweep}"
    );
}

#[test]
fn prereleases_and_tags_off_the_branch_are_not_latest_and_explain_says_why() {
    let s = Sweep::new(&["cryptpad"], "");
    let up = s.up("cryptpad");
    up.tag("1.0.0+5.0", true);
    up.tag("v2.4.8", false);
    up.commit("a", "1\n");
    up.tag("2.0.0-rc.1+6.0", true);
    git(&up.work, &["checkout", "-q", "-b", "side"]);
    up.commit("b", "side\n");
    up.tag("9.0.0+9.9", true);
    git(&up.work, &["checkout", "-q", "main"]);
    let (_, v) = s.sweep();
    assert_eq!(Sweep::decision(&v, "cryptpad"), "promoted");
    assert_eq!(s.canonical("cryptpad").as_deref(), Some("1.0.0+5.0"));

    let explain = s.agent(&["sweep", "--explain", "cryptpad"]);
    assert_eq!(explain.code, 0, "{}", explain.stderr);
    for (tag, why) in [
        ("1.0.0+5.0", "the latest release on the branch"),
        ("2.0.0-rc.1+6.0", "a pre-release"),
        ("9.0.0+9.9", "not on the branch"),
        ("v2.4.8", "not a release"),
    ] {
        let line = explain
            .stdout
            .lines()
            .find(|l| l.contains(tag))
            .unwrap_or_else(|| panic!("{tag}: {}", explain.stdout));
        assert!(line.contains(why), "{line}");
    }
}

#[test]
fn canonical_import_base_and_list() {
    let s = Sweep::new(&["mailu"], "");
    let none = s.agent(&["canonical", "base", "mailu"]);
    assert_eq!(none.code, 12, "{}", none.stderr);
    let import = s.path("old");
    std::fs::create_dir_all(import.join("mailu")).unwrap();
    std::fs::write(
        import.join("mailu/canonical.json"),
        r#"{"recipe":"mailu","version":"1.2.0+2024.06","commit":"0123456789abcdef0123456789abcdef01234567","status":"green","promoted_at":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let run = s.agent(&["canonical", "import", import.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(s.canonical("mailu").as_deref(), Some("1.2.0+2024.06"));
    let base = s.agent(&["canonical", "base", "mailu"]);
    assert_eq!(base.stdout.trim(), "1.2.0+2024.06");
    let list = s.agent(&["canonical", "list"]);
    assert!(
        list.stdout.contains("mailu") && list.stdout.contains("imported"),
        "{}",
        list.stdout
    );

    std::fs::write(
        import.join("mailu/canonical.json"),
        r#"{"recipe":"mailu","version":"latest","commit":"x"}"#,
    )
    .unwrap();
    let bad = s.agent(&["canonical", "import", import.to_str().unwrap()]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert_eq!(
        s.canonical("mailu").as_deref(),
        Some("1.2.0+2024.06"),
        "nothing written"
    );
}

/// kill -9 at random points during 50 promotions: the ledger and canonical.json are always a
/// whole state, old or new, and the next complete sweep agrees with both.
#[test]
fn kill_9_during_promotions_never_tears_the_ledger_or_canonical_json() {
    let s = Sweep::new(&["lasuite-docs"], "");
    let up = s.up("lasuite-docs");
    let json = s.path("export/lasuite-docs/canonical.json");
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut tags = Vec::new();
    for i in 1..=50u32 {
        up.commit("compose.yml", &format!("{i}\n"));
        let tag = format!("{i}.0.0+1.0");
        up.tag(&tag, false);
        tags.push(tag);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 120);
        let mut child = s
            .command(&["sweep"])
            .env("CI_SLEEP", "0.02")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while start.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        child.wait().unwrap();
        // Whatever the moment, both are whole: the ledger opens and names a released tag or
        // nothing; canonical.json parses and names a released tag.
        let ledger_version = s.canonical("lasuite-docs");
        if let Some(v) = &ledger_version {
            assert!(tags.contains(v), "ledger holds {v}");
        }
        if json.exists() {
            let parsed: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&json).unwrap())
                    .expect("canonical.json is torn");
            assert!(
                tags.iter().any(|t| parsed["version"] == t.as_str()),
                "{parsed}"
            );
        }
    }
    let run = s.agent(&["sweep"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(s.canonical("lasuite-docs").as_deref(), Some("50.0.0+1.0"));
    let parsed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(parsed["version"], "50.0.0+1.0");
    let h = s.agent(&[
        "--format",
        "json",
        "history",
        "lasuite-docs",
        "--limit",
        "1000",
    ]);
    let v: serde_json::Value = serde_json::from_str(&h.stdout).unwrap();
    assert!(
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["result"] != "running"),
        "no run is left running"
    );
}

#[test]
fn no_sweep_command_is_bad_input() {
    let s = Sweep::new(&["ghost"], "");
    let text = std::fs::read_to_string(&s.config).unwrap();
    let cut: String = text
        .lines()
        .filter(|l| !l.starts_with("command =") && !l.starts_with("teardown ="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&s.config, cut).unwrap();
    let run = s.agent(&["sweep"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no command"), "{}", run.stderr);
    let _ = agent;
}

#[test]
fn hooks_hear_promotions_and_failures_and_a_failing_hook_fails_nothing() {
    let hooks = "\n[[hooks]]\nevents = [\"promotion\", \"sweep-failure\"]\n\
                 command = [\"sh\", \"-c\", \"cat >> \\\"$HOOK_LOG\\\"; echo >> \\\"$HOOK_LOG\\\"\"]\npass_env = [\"HOOK_LOG\"]\n\
                 \n[[hooks]]\ncommand = [\"false\"]\n";
    let s = Sweep::new(&["ghost", "mumble"], hooks);
    s.up("ghost").tag("1.0.0+5.0", true);
    s.up("mumble").tag("1.0.0+1.5", true);
    s.red("mumble", "1.0.0+1.5");
    let (run, _) = s.sweep();
    assert_eq!(
        run.code, 0,
        "a failing hook never fails the job: {}",
        run.stderr
    );
    let log = std::fs::read_to_string(s.path("hooks.log")).unwrap();
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{log}");
    let promotion = events.iter().find(|e| e["event"] == "promotion").unwrap();
    assert_eq!(
        (
            promotion["recipe"].as_str(),
            promotion["decision"]["tag"].as_str()
        ),
        (Some("ghost"), Some("1.0.0+5.0"))
    );
    let failure = events
        .iter()
        .find(|e| e["event"] == "sweep-failure")
        .unwrap();
    assert_eq!(
        (
            failure["recipe"].as_str(),
            failure["decision"]["decision"].as_str()
        ),
        (Some("mumble"), Some("red"))
    );
}

#[test]
fn an_exempt_recipe_is_never_promoted_and_check_says_the_settings_conflict() {
    let s = Sweep::new(&["outline"], "");
    let enrollment = s.path("enrollment.toml");
    let text = std::fs::read_to_string(&enrollment).unwrap().replace(
        "[recipe.outline]\ncanonical = true\n",
        "[recipe.outline]\ncanonical = true\ntests = \"exempt\"\nreason = \"suite being written\"\n",
    );
    std::fs::write(&enrollment, text).unwrap();
    s.up("outline").tag("1.0.0+1.0", true);
    let (run, v) = s.sweep();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(Sweep::decision(&v, "outline"), "skip-exempt");
    assert!(s.ci_calls().is_empty(), "no CI for a recipe with no suite");
    assert_eq!(s.canonical("outline"), None);
    let check = s.agent(&["enrollment", "check"]);
    assert_eq!(check.code, 3, "{}\n{}", check.stdout, check.stderr);
    let all = format!("{}{}", check.stdout, check.stderr);
    assert!(all.contains("conflict"), "{all}");
}

#[test]
fn a_new_tag_on_a_commit_already_green_is_promoted_without_running_ci_again() {
    let s = Sweep::new(&["mattermost"], "");
    let up = s.up("mattermost");
    up.tag("10.3.0+10.3.0", true);
    let (_, v) = s.sweep();
    assert_eq!(Sweep::decision(&v, "mattermost"), "promoted");
    assert_eq!(s.ci_calls().len(), 1);
    // The same commit, tagged again as the next version.
    up.tag("10.4.0+10.4.0", false);
    let (run, v) = s.sweep();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(Sweep::decision(&v, "mattermost"), "promoted", "{v}");
    assert_eq!(v["recipes"][0]["green_as"], "10.3.0+10.3.0", "{v}");
    assert_eq!(s.canonical("mattermost").as_deref(), Some("10.4.0+10.4.0"));
    assert_eq!(
        s.ci_calls().len(),
        1,
        "the commit's green result was reused"
    );
    let base = s.agent(&["canonical", "base", "mattermost"]);
    assert_eq!(base.stdout.trim(), "10.4.0+10.4.0", "{}", base.stderr);
    // A red commit tagged again stays judged red.
    up.commit("compose.yml", "broken\n");
    up.tag("10.5.0+10.5.0", true);
    s.red("mattermost", "10.5.0+10.5.0");
    s.sweep();
    up.tag("10.5.1+10.5.1", false);
    let (_, v) = s.sweep();
    assert_eq!(
        Sweep::decision(&v, "mattermost"),
        "skip-already-judged",
        "{v}"
    );
    assert_eq!(s.canonical("mattermost").as_deref(), Some("10.4.0+10.4.0"));
}

#[test]
fn a_canonical_whose_tag_is_deleted_or_moved_upstream_is_demoted() {
    let s = Sweep::new(&["gitea"], "");
    let up = s.up("gitea");
    up.tag("1.0.0+1.0", true);
    s.sweep();
    up.commit("compose.yml", "v2\n");
    up.tag("1.1.0+1.1", false);
    s.sweep();
    assert_eq!(s.canonical("gitea").as_deref(), Some("1.1.0+1.1"));

    // The lightweight canonical tag deleted upstream: back to the green release still tagged.
    up.delete_tag("1.1.0+1.1");
    // The hourly sync sees it first; base already answers from the mirror as synced.
    assert_eq!(s.agent(&["mirrors", "sync", "gitea"]).code, 0);
    let before = s.agent(&["canonical", "base", "gitea"]);
    let (run, v) = s.sweep();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        before.stdout.trim(),
        "1.0.0+1.0",
        "base after the sync, before the sweep"
    );
    assert_eq!(s.canonical("gitea").as_deref(), Some("1.0.0+1.0"), "{v}");
    assert_eq!(Sweep::decision(&v, "gitea"), "skip-no-new-version", "{v}");
    let base = s.agent(&["canonical", "base", "gitea"]);
    assert_eq!(base.stdout.trim(), "1.0.0+1.0");
    let health = s.agent(&["health"]);
    assert!(health.stdout.contains("demoted"), "{}", health.stdout);
    assert_eq!(s.ci_calls().len(), 2);

    // The annotated one re-made on a new commit: no green release is left tagged, and the
    // re-made tag is a new release, tested.
    up.commit("compose.yml", "v3\n");
    support::git(&up.work, &["tag", "-f", "-a", "1.0.0+1.0", "-m", "re-made"]);
    support::git(
        &up.work,
        &["push", "-q", "--force", "origin", "refs/tags/1.0.0+1.0"],
    );
    let (run, v) = s.sweep();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(Sweep::decision(&v, "gitea"), "promoted", "{v}");
    assert_eq!(
        s.ci_calls().len(),
        3,
        "the moved tag was tested at its new commit"
    );
    let head = up.head();
    let list = s.agent(&["--format", "json", "canonical", "list"]);
    assert!(list.stdout.contains(&head), "{}", list.stdout);
    let health = s.agent(&["health"]);
    assert!(
        !health.stdout.contains("demoted"),
        "resolved by the promotion: {}",
        health.stdout
    );
}

/// Runs the agent with its stdout a pipe whose reading end is already closed, as in
/// `cc-ci-agent health | head -0`.
fn with_stdout_closed(s: &Sweep, args: &[&str]) -> (i32, String) {
    let mut child = s
        .command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_command_survives_a_closed_stdout_and_records_what_it_did() {
    let s = Sweep::new(&["wekan"], "");
    s.up("wekan").tag("1.0.0+1.0", true);
    for format in ["human", "json"] {
        for args in [
            &["mirrors", "sync", "wekan"][..],
            &["sweep"],
            &["sweep", "--explain", "wekan"],
            &["mirrors", "status", "wekan"],
            &["canonical", "list"],
            &["canonical", "show", "wekan"],
            &["canonical", "base", "wekan"],
            &["history", "wekan"],
            &["health"],
            &["state", "status"],
            &["enrollment", "list"],
            &["enrollment", "check"],
            &["gc", "--dry-run"],
            &["--help"],
        ] {
            let mut full = vec!["--format", format];
            full.extend_from_slice(args);
            let (code, stderr) = with_stdout_closed(&s, &full);
            assert!(
                code != 101 && !stderr.contains("panicked"),
                "{full:?} under a closed stdout: exit {code}\n{stderr}"
            );
        }
    }
    // The sweep run first under a closed pipe still promoted, recorded and finished.
    assert_eq!(s.canonical("wekan").as_deref(), Some("1.0.0+1.0"));
    let ledger = Ledger::open(&s.path("state"), &cc_ci_agent::clock::Clock::system()).unwrap();
    let sweeps = ledger.sweeps(10).unwrap();
    assert!(
        sweeps
            .iter()
            .all(|r| r.outcome.map(|o| o.as_str()) == Some("done")),
        "every sweep row finished: {:?}",
        sweeps.iter().map(|r| &r.outcome).collect::<Vec<_>>()
    );
}

#[test]
fn explain_reads_only_takes_no_lock_and_says_as_of_when() {
    let s = Sweep::new(&["cryptpad"], "");
    let up = s.up("cryptpad");
    up.tag("1.0.0+5.0", true);
    s.sweep();
    // Upstream moves on; a deploy holds the job lock.
    up.commit("compose.yml", "next\n");
    up.tag("1.1.0+5.1", true);
    let held = JobLock::acquire(&s.path("state"), "deploy").unwrap();
    let db = std::fs::read(s.path("state/state.db")).unwrap();
    let mirror = support::refs(&s.path("mirrors/cryptpad.git"));
    let explain = s.agent(&["sweep", "--explain", "cryptpad"]);
    assert_eq!(explain.code, 0, "{}", explain.stderr);
    insta::assert_snapshot!(
        "sweep_explain",
        crate::screens::screen(&explain.stdout, s.dir.path())
    );
    drop(held);
    assert_eq!(
        support::refs(&s.path("mirrors/cryptpad.git")),
        mirror,
        "nothing pushed"
    );
    assert_eq!(
        std::fs::read(s.path("state/state.db")).unwrap(),
        db,
        "nothing written"
    );
}

#[test]
fn state_status_shows_the_latest_events_of_every_job() {
    let s = Sweep::new(&["ghost"], "");
    s.up("ghost").tag("5.0.0+5.1", true);
    s.sweep();
    let status = s.agent(&["state", "status"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    for (job, kind) in [
        ("mirrors", "created"),
        ("sweep", "promoted"),
        ("sweep", "done"),
        ("ci", "green"),
    ] {
        assert!(
            status
                .stdout
                .lines()
                .any(|l| l.contains(job) && l.contains(kind)),
            "no {job} {kind} event:\n{}",
            status.stdout
        );
    }
}

#[test]
fn a_job_that_meets_the_lock_waits_its_turn_within_lock_wait() {
    use std::io::BufRead;
    let s = Sweep::new(&["ghost"], "");
    s.up("ghost").tag("5.0.0+5.1", true);
    let config = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("lock_wait = \"60s\"\n{config}")).unwrap();
    let held = JobLock::acquire(&s.path("state"), "gc").unwrap();
    let mut child = s
        .command(&["sweep"])
        .env("CC_CI_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The event, not a sleep: the sweep says it is waiting, then the lock is let go.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.contains("waiting up to 60s") {
            break;
        }
        line.clear();
    }
    assert!(
        seen.contains("gc (pid"),
        "the sweep names who holds the lock:\n{seen}"
    );
    drop(held);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{seen}");
    assert_eq!(
        s.canonical("ghost").as_deref(),
        Some("5.0.0+5.1"),
        "the week's sweep was not lost"
    );
}

#[test]
fn no_sweep_done_within_its_period_is_a_health_warning() {
    let s = Sweep::new(&["peertube"], "\n[health]\nsweep_within = \"7d\"\n");
    s.up("peertube").tag("1.0.0+1.0", true);
    let never = s.host_check("sweep");
    assert!(
        never["reason"].as_str().unwrap().contains("never"),
        "{never}"
    );
    s.sweep();
    assert_eq!(s.host_check("sweep")["status"], "ok");
    // The week's sweep did not happen: the last one that ran to its end is eight days old.
    let db = rusqlite::Connection::open(s.path("state/state.db")).unwrap();
    db.execute("UPDATE sweeps SET started_at = '2026-01-01T00:00:00Z'", [])
        .unwrap();
    drop(db);
    let late = s.host_check("sweep");
    assert_eq!(late["status"], "warn", "{late}");
    assert!(
        late["reason"]
            .as_str()
            .unwrap()
            .contains("no sweep has completed within"),
        "{late}"
    );
}

/// The week's sweep is in the middle of a long CI run: the hourly mirror sync goes on for every
/// other recipe, stands aside for the one under test (not a failure), and gc, which must not
/// delete a volume in use, waits its turn. When the CI run ends, nothing was lost.
/// A disk budget, so that gc has work to be refused or to do.
const DISK: &str =
    "\n[disk]\nbudget = \"1G\"\n\n[disk.volumes]\nkind = \"directory\"\nroot = \"volumes\"\n";

#[test]
fn mirror_syncs_go_on_while_a_sweep_runs_its_ci() {
    let s = Sweep::new(&["ghost", "plausible"], DISK);
    std::fs::create_dir_all(s.path("volumes")).unwrap();
    s.up("ghost").tag("5.0.0+5.1", true);
    s.up("plausible").tag("1.0.0+2.0", true);
    let gate = s.path("gate");
    let sweep = s
        .command(&["--format", "json", "sweep"])
        .env("CI_GATE", &gate)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The event: the sweep's first CI run has begun (and waits for the gate).
    let deadline = Instant::now() + Duration::from_secs(60);
    let testing = loop {
        if let Some(first) = s.ci_calls().first() {
            break first.split(' ').next().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the sweep never started CI");
        std::thread::sleep(Duration::from_millis(20));
    };
    let other = if testing == "ghost" {
        "plausible"
    } else {
        "ghost"
    };
    s.up(other).commit("compose.yml", "moved on upstream\n");
    s.up(&testing).commit("compose.yml", "moved on upstream\n");

    let sync = s.agent(&["mirrors", "sync", "ghost", "plausible"]);
    assert_eq!(sync.code, 0, "{}\n{}", sync.stdout, sync.stderr);
    let mirror = |r: &str| {
        support::git(
            &s.path(&format!("mirrors/{r}.git")),
            &["rev-parse", "refs/heads/main"],
        )
        .trim()
        .to_string()
    };
    assert_eq!(
        mirror(other),
        s.up(other).head(),
        "the other recipe was synced during the CI run:\n{}",
        sync.stdout
    );
    assert_ne!(
        mirror(&testing),
        s.up(&testing).head(),
        "the recipe under test is left alone"
    );
    let line = sync
        .stdout
        .lines()
        .find(|l| l.contains(&testing))
        .unwrap_or_default();
    assert!(
        line.contains("not synced this run") && line.contains("sweep (pid"),
        "{}",
        sync.stdout
    );
    let gc = s.agent(&["gc"]);
    assert_eq!(gc.code, 4, "gc waits for the sweep: {}", gc.stderr);

    std::fs::write(&gate, "").unwrap();
    let out = sweep.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(Sweep::decision(&v, "ghost"), "promoted");
    assert_eq!(Sweep::decision(&v, "plausible"), "promoted");
    let after = s.agent(&["mirrors", "sync", &testing]);
    assert_eq!(after.code, 0, "{}", after.stderr);
    assert_eq!(
        mirror(&testing),
        s.up(&testing).head(),
        "synced once the sweep let go"
    );
}

/// The hourly sync, the daily gc and the weekly sweep fire at the same second, twenty times: each
/// waits its turn within lock_wait, none is refused and none is lost.
#[test]
fn three_jobs_started_at_once_are_neither_refused_nor_lost() {
    let s = Sweep::new(&["ghost"], DISK);
    std::fs::create_dir_all(s.path("volumes")).unwrap();
    let config = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("lock_wait = \"120s\"\n{config}")).unwrap();
    for round in 1..=20 {
        let version = format!("{round}.0.0+1.0");
        s.up("ghost").commit("compose.yml", &format!("{round}\n"));
        s.up("ghost").tag(&version, round % 2 == 0);
        let jobs: Vec<_> = [&["sweep"][..], &["mirrors", "sync", "ghost"], &["gc"]]
            .iter()
            .map(|args| {
                let child = s
                    .command(args)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                (args.join(" "), child)
            })
            .collect();
        for (job, child) in jobs {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {job} exited {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(
            s.canonical("ghost").as_deref(),
            Some(version.as_str()),
            "round {round}: the sweep was lost"
        );
    }
    let db = rusqlite::Connection::open(s.path("state/state.db")).unwrap();
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("SELECT count(*) FROM sweeps WHERE outcome = 'done'"),
        20
    );
    assert_eq!(
        count("SELECT count(*) FROM sweeps WHERE outcome <> 'done'"),
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM gc_runs WHERE outcome = 'ok'"),
        20
    );
    assert_eq!(
        count("SELECT count(*) FROM gc_runs WHERE outcome <> 'ok'"),
        0
    );
}

/// Every refusal of every job that takes a lock, under `--format json`, is one JSON object on
/// stdout with the exit code the refusal has: CI busy, and the host or mirrors lock held.
#[test]
fn every_refusal_under_format_json_is_one_json_object() {
    let flag = tempfile::NamedTempFile::new().unwrap();
    let s = Sweep::new(
        &["immich"],
        &format!("[sweep.busy_check]\ncommand = [\"sh\", \"-c\", \"test -s {0} || exit 0; cat {0}; exit 1\"]\n\n\
                  [disk]\nbudget = \"1G\"\n[disk.volumes]\nkind = \"directory\"\nroot = \"volumes\"\n", flag.path().display()),
    );
    std::fs::create_dir_all(s.path("volumes")).unwrap();
    s.up("immich").tag("1.0.0+1.9", true);
    let one_object = |args: &[&str], code: i32| {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        let run = s.agent(&all);
        assert_eq!(run.code, code, "{args:?}: {}\n{}", run.stdout, run.stderr);
        let v: serde_json::Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not one JSON object ({e}): {:?}", run.stdout));
        assert!(v.is_object(), "{args:?}: {v}");
        v
    };
    std::fs::write(flag.path(), "immich #7 since 09:00\n").unwrap();
    let v = one_object(&["sweep"], 5);
    assert_eq!(v["refused"], "ci-busy", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("immich #7"), "{v}");
    std::fs::write(flag.path(), "").unwrap();
    let held = JobLock::acquire(&s.path("state"), "deploy").unwrap();
    for job in [&["sweep"][..], &["gc"]] {
        let v = one_object(job, 4);
        assert!(v["error"].as_str().is_some(), "{job:?}: {v}");
    }
    drop(held);
    let held = JobLock::mirrors(&s.path("state"), std::time::Duration::ZERO).unwrap();
    let v = one_object(&["mirrors", "sync"], 4);
    assert!(v["error"].as_str().is_some(), "{v}");
    drop(held);
}

/// The screens a maintainer reads after a promotion and a red release after it: the canonical
/// (with the newest run, which keeps the release out), and the recipe's history.
#[test]
fn canonical_show_and_history_after_a_promotion() {
    let s = Sweep::new(&["wekan"], "");
    let up = s.up("wekan");
    up.tag("1.0.0+1.0", true);
    s.sweep();
    up.commit("compose.yml", "next\n");
    up.tag("1.1.0+1.1", true);
    s.red("wekan", "1.1.0+1.1");
    s.sweep();
    for (name, args) in [
        ("canonical_show", &["canonical", "show", "wekan"][..]),
        ("history", &["history", "wekan"]),
    ] {
        let run = s.agent(args);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        insta::assert_snapshot!(name, crate::screens::screen(&run.stdout, s.dir.path()));
    }
}
