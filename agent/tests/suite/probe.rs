//! `cc-ci-agent probe` against a test forge, a test bridge that polls it for `!testme` as the
//! real one does, and a test Drone that sets commit statuses through the forge's API: real HTTP
//! on 127.0.0.1, real git, the real state database.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cc_ci_testkit::bridge::{Answer, BridgeSpec, TestBridge};
use cc_ci_testkit::drone::{Runs, TestDrone};

use crate::common::{agent, Run};
use crate::support::forge::{TestForge, Version};
use crate::support::{refs, GitDaemon, Upstream};

pub(crate) const TOKEN: &str = "forge-token-0123456789abcdef";
const BRIDGE_TOKEN: &str = "bridge-forge-token-0123456789";
const DRONE_FORGE_TOKEN: &str = "drone-forge-token-0123456789";
pub(crate) const ORG: &str = "recipe-maintainers";

/// Fields drop in order: the bridge stops before the servers it talks to.
pub(crate) struct Host {
    pub(crate) bridge: Option<TestBridge>,
    pub(crate) dir: tempfile::TempDir,
    _daemon: GitDaemon,
    pub(crate) forge: TestForge,
    pub(crate) drone: TestDrone,
    upstreams: BTreeMap<String, Upstream>,
    config: PathBuf,
    names: Vec<String>,
}

impl Host {
    /// `names` enrolled and mirrored (by a real sync); each activated in Drone. `probe_toml`
    /// goes under `[probe]` in agent.toml.
    pub(crate) fn new(names: &[&str], probe_toml: &str) -> Self {
        Self::with_version(names, probe_toml, Version::default())
    }

    /// [`Host::new`] with a forge that speaks `version`.
    pub(crate) fn with_version(names: &[&str], probe_toml: &str, version: Version) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (daemon, upstreams) = crate::support::upstream_fleet(dir.path(), names);
        for up in upstreams.values() {
            up.tag("1.0.0+1.2.3", true);
        }
        let forge = TestForge::start_version(&dir.path().join("forge"), ORG, TOKEN, version);
        forge.add_user("bridge-bot", BRIDGE_TOKEN);
        forge.add_user("drone-bot", DRONE_FORGE_TOKEN);
        let drone = TestDrone::start(&forge.url, DRONE_FORGE_TOKEN);
        for n in names {
            drone.activate(&format!("{ORG}/{n}"));
        }
        std::fs::write(dir.path().join("forge-token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(dir.path().join("drone-token"), &drone.admin_token).unwrap();
        let host = Self {
            config: dir.path().join("agent.toml"),
            dir,
            _daemon: daemon,
            forge,
            drone,
            bridge: None,
            upstreams,
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        host.write_config(probe_toml);
        let sync = host.agent(&["mirrors", "sync"]);
        assert_eq!(sync.code, 0, "{}", sync.stderr);
        // Some time later, as the bridge will find them: pull requests can be listed.
        host.forge.settle();
        host
    }

    pub(crate) fn write_config(&self, probe_toml: &str) {
        // No waiting between probes and a short wait for stages, unless a test asks otherwise.
        let mut pace = String::new();
        for (key, value) in [
            ("min_interval", "0s"),
            ("timeout", "3s"),
            ("poll_interval", "100ms"),
        ] {
            if !probe_toml.contains(&format!("{key} =")) {
                pace.push_str(&format!("{key} = \"{value}\"\n"));
            }
        }
        std::fs::write(
            &self.config,
            format!(
                "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\n\n[forge]\nkind = \"gitea\"\n\
                 url = \"{}\"\norg = \"{ORG}\"\ntoken_file = \"forge-token\"\nallow_insecure = true\n\n\
                 [health]\npoll_repos_file = \"poll-repos\"\n\n[probe]\n{pace}{probe_toml}\n",
                self.forge.url
            ),
        )
        .unwrap();
    }

    /// A bridge polling `polls`, answering as `answer` says.
    pub(crate) fn bridge(&mut self, polls: &[&str], answer: Answer) {
        std::fs::write(self.dir.path().join("poll-repos"), polls.join(",")).unwrap();
        self.bridge = Some(TestBridge::start(BridgeSpec {
            forge_url: self.forge.url.clone(),
            org: ORG.into(),
            forge_token: BRIDGE_TOKEN.into(),
            polls: polls.iter().map(|p| p.to_string()).collect(),
            trigger: "!testme".into(),
            answer,
            drone_url: self.drone.url.clone(),
            drone_token: self.drone.user_token.clone(),
            interval: Duration::from_millis(50),
        }));
    }

    pub(crate) fn agent(&self, args: &[&str]) -> Run {
        let mut full = vec!["--config", self.config.to_str().unwrap()];
        full.extend_from_slice(args);
        agent(&full)
    }

    pub(crate) fn probe(&self, args: &[&str]) -> (Run, serde_json::Value) {
        let mut full = vec!["--format", "json", "probe"];
        full.extend_from_slice(args);
        let run = self.agent(&full);
        let v = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout, run.stderr));
        (run, v)
    }

    /// Every ref of every upstream and every mirror except the probe's branch.
    fn untouched_refs(&self) -> Vec<String> {
        let mut all = Vec::new();
        for n in &self.names {
            all.extend(refs(&self.upstreams[n].bare));
            all.extend(
                refs(&self.forge.repo(n))
                    .into_iter()
                    .filter(|r| !r.ends_with(" refs/heads/cc-ci/probe")),
            );
        }
        all
    }

    pub(crate) fn health(&self) -> serde_json::Value {
        let run = self.agent(&["--format", "json", "health"]);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
    }

    pub(crate) fn check(&self, recipe: &str, name: &str) -> Option<serde_json::Value> {
        let report = self.health();
        let r = report["recipes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["recipe"] == recipe)
            .cloned()
            .unwrap();
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
    }
}

/// Every file below `dir`, links not followed.
fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            found.extend(files_under(&entry.path()));
        } else if kind.is_file() {
            found.push(entry.path());
        }
    }
    found
}

/// A probe that saw the bridge's answer (`seen` names it) and stopped at build-started: exit 18.
pub(crate) fn stopped_at_build_started<'a>(
    run: &Run,
    v: &'a serde_json::Value,
    seen: &str,
) -> &'a serde_json::Value {
    assert_eq!(run.code, 18, "{v:#}\n{}", run.stderr);
    let p = only(v);
    assert_eq!(p["stopped_at"], "build-started", "{p:#}");
    let first = p["stages"][0]["seen"].as_str().unwrap_or_default();
    assert!(first.contains(seen), "{p:#}");
    p
}

pub(crate) fn only(v: &serde_json::Value) -> &serde_json::Value {
    let probes = v["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 1, "{v:#}");
    &probes[0]
}

/// Against the oldest and newest Gitea and Forgejo 8 (each with its differences, and each
/// request and answer held to its published API): sync, `check-forge` and a probe, proven.
#[test]
fn sync_check_forge_and_a_probe_work_on_each_supported_server() {
    for version in [Version::Gitea1_19, Version::Gitea1_25, Version::Forgejo8] {
        let mut host = Host::with_version(&["plausible"], "", version);
        let probe =
            "[probe.drone]\nurl = \"DRONE\"\nallow_insecure = true\ntoken_file = \"drone-token\"\n";
        host.write_config(&probe.replace("DRONE", &host.drone.url));
        let check = host.agent(&["--format", "json", "mirrors", "check-forge"]);
        let findings: serde_json::Value = serde_json::from_str(&check.stdout).unwrap_or_default();
        assert!(
            findings["findings"]
                .as_array()
                .is_some_and(|f| !f.is_empty()),
            "{version:?}: {}{}",
            check.stdout,
            check.stderr
        );
        assert!(
            check.stdout.contains(version.version_string()),
            "{version:?}: {}",
            check.stdout
        );
        host.bridge(&["plausible"], Answer::React);
        let (run, v) = host.probe(&[]);
        assert_eq!(run.code, 0, "{version:?}: {v:#}\n{}", run.stderr);
        assert_eq!(v["probes"][0]["outcome"], "proven", "{version:?}: {v:#}");
        assert_eq!(host.forge.violations(), Vec::<String>::new(), "{version:?}");
    }
}

#[test]
fn the_whole_path_is_proven_stage_by_stage_and_nothing_but_the_probe_branch_moves() {
    for drone in [true, false] {
        let probe = if drone {
            "[probe.drone]\nurl = \"DRONE\"\nallow_insecure = true\ntoken_file = \"drone-token\"\n"
        } else {
            ""
        };
        let mut host = Host::new(&["plausible", "ghost"], "");
        // probe.min_interval is the ledger clock's rule, proven without a real wait by
        // probe::run::tests::a_probe_waits_what_is_left_of_min_interval_since_the_last_comment.
        host.write_config(&probe.replace("DRONE", &host.drone.url));
        host.bridge(&["plausible", "ghost"], Answer::React);
        let before = host.untouched_refs();

        let (run, v) = host.probe(&[]);
        assert_eq!(run.code, 0, "{v:#}\n{}", run.stderr);
        let probes = v["probes"].as_array().unwrap();
        assert_eq!(probes.len(), 2, "{v:#}");
        for p in probes {
            assert_eq!(p["outcome"], "proven", "{p:#}");
            assert_eq!(p["ci_state"], "success", "{p:#}");
            let stages: Vec<&str> = p["stages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["stage"].as_str().unwrap())
                .collect();
            assert_eq!(stages, ["picked-up", "build-started", "reported"], "{p:#}");
            assert!(
                p["stages"][0]["seen"]
                    .as_str()
                    .unwrap()
                    .contains("bridge-bot"),
                "{p:#}"
            );
            let evidence = p["stages"][1]["seen"].as_str().unwrap();
            assert_eq!(evidence.contains("Drone build #1"), drone, "{evidence}");
            // One open probe pull request, whose head is the probe's, one commit on main.
            let name = p["recipe"].as_str().unwrap();
            let pulls = host.forge.pulls(name);
            assert_eq!(pulls.len(), 1, "{pulls:?}");
            assert_eq!(pulls[0].head_ref.as_deref(), Some("cc-ci/probe"));
            let head = p["head"].as_str().unwrap();
            let mirror = host.forge.repo(name);
            let parent = crate::support::git(&mirror, &["rev-parse", &format!("{head}^")]);
            let main = crate::support::git(&mirror, &["rev-parse", "refs/heads/main"]);
            assert_eq!(parent, main);
            assert_eq!(pulls[0].comments[0].login, "cc-ci-bot");
            assert!(pulls[0].comments[0].body.starts_with("!testme\n"));
            assert!(pulls[0].comments[0].body.contains("probe = false"));
        }
        assert_eq!(
            host.untouched_refs(),
            before,
            "upstream, mirror main and tags must not move"
        );
        // Neither token is in what the probe printed or wrote.
        for secret in [TOKEN, host.drone.admin_token.as_str()] {
            assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret));
            for file in files_under(&host.dir.path().join("state")) {
                let bytes = std::fs::read(&file).unwrap_or_default();
                let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
                assert!(!found, "a token is in {}", file.display());
            }
        }
        let triggerable = host.check("plausible", "triggerable").unwrap();
        assert_eq!(triggerable["status"], "ok", "{triggerable:#}");
    }
}

#[test]
fn a_recipe_the_bridge_does_not_poll_stops_at_picked_up() {
    let mut host = Host::new(&["plausible", "ghost"], "");
    host.bridge(&["plausible"], Answer::React);
    let (run, v) = host.probe(&["ghost"]);
    assert_eq!(run.code, 18, "{v:#}\n{}", run.stderr);
    let p = only(&v);
    assert_eq!(p["outcome"], "stopped");
    assert_eq!(p["stopped_at"], "picked-up");
    assert!(
        p["detail"].as_str().unwrap().contains("POLL_REPOS"),
        "{p:#}"
    );
    assert!(p["stages"].as_array().unwrap().is_empty());
    let check = host.check("ghost", "triggerable").unwrap();
    assert_eq!(check["status"], "fail", "{check:#}");
    assert!(
        check["reason"].as_str().unwrap().contains("picked-up"),
        "{check:#}"
    );
}

#[test]
fn ci_that_never_starts_stops_at_build_started() {
    let mut host = Host::new(&["plausible"], "");
    // Not activated in Drone: the bridge's build is refused, and the bridge says so.
    host.drone.state.lock().unwrap().activated.clear();
    host.bridge(&["plausible"], Answer::Reply);
    let (run, v) = host.probe(&[]);
    stopped_at_build_started(&run, &v, "reply by bridge-bot");
    assert!(host.drone.builds(&format!("{ORG}/plausible")).is_empty());
}

#[test]
fn ci_that_starts_but_never_reports_stops_at_reported() {
    let mut host = Host::new(&["plausible"], "");
    host.drone.set_runs(Runs::Hangs);
    host.bridge(&["plausible"], Answer::React);
    let (run, v) = host.probe(&[]);
    assert_eq!(run.code, 18, "{v:#}\n{}", run.stderr);
    let p = only(&v);
    assert_eq!(p["stopped_at"], "reported", "{p:#}");
    assert_eq!(p["stages"].as_array().unwrap().len(), 2, "{p:#}");
    assert!(
        p["detail"].as_str().unwrap().contains("no final status"),
        "{p:#}"
    );
}

#[test]
fn probing_again_comments_once_per_head_and_a_fresh_proof_is_left_alone() {
    let mut host = Host::new(&["plausible"], "");
    host.bridge(&["plausible"], Answer::React);
    let (first, v1) = host.probe(&[]);
    assert_eq!(first.code, 0, "{v1:#}");
    // Not due: proven just now, of the same enrollment, mirror and bridge.
    let (idle, v2) = host.probe(&[]);
    assert_eq!(idle.code, 0, "{v2:#}");
    assert!(v2["probes"].as_array().unwrap().is_empty(), "{v2:#}");
    assert_eq!(v2["skipped"][0]["why"], "fresh", "{v2:#}");
    // Upstream moves on and the mirror follows; named, the recipe is probed again, on a new
    // head whose parent is the mirror's new main.
    host.upstreams["plausible"].commit("compose.yml", "version: '3.9'\n");
    assert_eq!(host.agent(&["mirrors", "sync"]).code, 0);
    let (again, v3) = host.probe(&["plausible"]);
    assert_eq!(again.code, 0, "{v3:#}");
    let mirror = host.forge.repo("plausible");
    let head = only(&v3)["head"].as_str().unwrap().to_string();
    assert_eq!(
        crate::support::git(&mirror, &["rev-parse", &format!("{head}^")]),
        crate::support::git(&mirror, &["rev-parse", "refs/heads/main"]),
    );
    // The journal, newest first: the two probes, both proven, on their heads.
    let (_, history) = host.probe(&["--history"]);
    let heads: Vec<&serde_json::Value> = history["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["head"])
        .collect();
    assert_eq!(
        heads,
        [&only(&v3)["head"], &only(&v1)["head"]],
        "{history:#}"
    );
    assert_eq!(history["probes"][0]["outcome"], "proven");
    let (h1, h3) = (only(&v1)["head"].clone(), only(&v3)["head"].clone());
    assert_ne!(h1, h3);
    let pulls = host.forge.pulls("plausible");
    assert_eq!(pulls.len(), 1, "one probe pull request, reused: {pulls:?}");
    let probe_comments: Vec<&str> = pulls[0]
        .comments
        .iter()
        .filter(|c| c.body.contains("<!-- cc-ci-probe"))
        .map(|c| c.body.as_str())
        .collect();
    assert_eq!(probe_comments.len(), 2, "{probe_comments:#?}");
    for head in [h1, h3] {
        let marker = format!("<!-- cc-ci-probe {} -->", head.as_str().unwrap());
        assert_eq!(
            probe_comments
                .iter()
                .filter(|b| b.contains(&marker))
                .count(),
            1,
            "one comment on {head}"
        );
    }
}

#[test]
fn while_ci_is_busy_the_probe_is_deferred_not_failed() {
    let mut host = Host::new(&["plausible"], "");
    let busy = format!(
        "[probe.busy_check.drone]\nurl = \"{}\"\nallow_insecure = true\ntoken_file = \"drone-token\"\n",
        host.drone.url
    );
    host.write_config(&busy);
    host.bridge(&["plausible"], Answer::React);
    host.drone.hold("coop-cloud/other");
    let (run, v) = host.probe(&[]);
    assert_eq!(run.code, 0, "{v:#}\n{}", run.stderr);
    let p = only(&v);
    assert_eq!(p["outcome"], "deferred", "{p:#}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("coop-cloud/other #1"),
        "{p:#}"
    );
    assert!(
        host.forge.pulls("plausible").is_empty(),
        "nothing was written to the forge"
    );
    // Health does not count a deferral as a judgement.
    let check = host.check("plausible", "triggerable").unwrap();
    assert_eq!(check["status"], "warn", "{check:#}");
    assert!(
        check["reason"].as_str().unwrap().contains("never proven"),
        "{check:#}"
    );
    host.drone.finish_all();
    let (run, v) = host.probe(&[]);
    assert_eq!(run.code, 0, "{v:#}");
    assert_eq!(only(&v)["outcome"], "proven");
}

#[test]
fn a_recipe_opted_out_is_never_touched() {
    let mut host = Host::new(&["plausible", "ghost"], "");
    let enrollment = host.dir.path().join("enrollment.toml");
    let text = std::fs::read_to_string(&enrollment).unwrap();
    std::fs::write(
        &enrollment,
        text.replace("[recipe.ghost]\n", "[recipe.ghost]\nprobe = false\n"),
    )
    .unwrap();
    host.bridge(&["plausible", "ghost"], Answer::React);
    let (run, v) = host.probe(&[]);
    assert_eq!(run.code, 0, "{v:#}\n{}", run.stderr);
    assert_eq!(only(&v)["recipe"], "plausible");
    assert_eq!(v["skipped"][0]["recipe"], "ghost");
    assert_eq!(v["skipped"][0]["why"], "opted-out");
    // Named, too, it is left alone.
    let (run, v) = host.probe(&["ghost"]);
    assert_eq!(run.code, 0, "{v:#}");
    assert!(v["probes"].as_array().unwrap().is_empty());
    assert!(host.forge.pulls("ghost").is_empty());
    assert!(!refs(&host.forge.repo("ghost"))
        .iter()
        .any(|r| r.contains("cc-ci/probe")));
    assert!(host.check("ghost", "triggerable").is_none());
}

#[test]
fn health_says_never_proven_proven_and_changed_since() {
    let mut host = Host::new(&["plausible", "ghost"], "");
    // Before any probe has run, health says nothing of triggerability.
    assert!(host.check("plausible", "triggerable").is_none());
    host.bridge(&["plausible", "ghost"], Answer::React);
    let (run, _) = host.probe(&["plausible"]);
    assert_eq!(run.code, 0);
    assert_eq!(
        host.check("plausible", "triggerable").unwrap()["status"],
        "ok"
    );
    let never = host.check("ghost", "triggerable").unwrap();
    assert_eq!(never["status"], "warn", "{never:#}");
    // What the proof rested on changed: the trigger the bridge is sent.
    host.write_config("comment = \"!ci\"");
    let changed = host.check("plausible", "triggerable").unwrap();
    assert_eq!(changed["status"], "warn", "{changed:#}");
    assert!(
        changed["reason"]
            .as_str()
            .unwrap()
            .contains("the bridge changed"),
        "{changed:#}"
    );
    // And the next run probes it again, by itself.
    let (_, v) = host.probe(&["--dry-run"]);
    let due: Vec<&str> = v["due"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["recipe"].as_str().unwrap())
        .collect();
    assert_eq!(due, ["ghost", "plausible"], "{v:#}");
}

#[test]
fn a_forge_without_pull_requests_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("enrollment.toml"), "[recipe.plausible]\n").unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\n[forge]\nkind = \"local\"\npath = \"mirrors\"\n",
    )
    .unwrap();
    let run = agent(&["--config", config.to_str().unwrap(), "probe"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("kind = \"gitea\""), "{}", run.stderr);
    assert!(
        !dir.path().join("state/state.db").exists(),
        "nothing written"
    );
}

#[test]
fn a_probe_killed_while_it_waits_is_recorded_interrupted_and_never_comments_twice_on_a_head() {
    let mut host = Host::new(&["plausible"], "");
    host.write_config("timeout = \"10m\"");
    // No bridge yet: the probe comments and waits.
    let mut child = std::process::Command::new(crate::common::bin())
        .args([
            "--config",
            host.config.to_str().unwrap(),
            "probe",
            "plausible",
        ])
        .env("CC_CI_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let commented = || {
        host.forge
            .pulls("plausible")
            .first()
            .is_some_and(|p| !p.comments.is_empty())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !commented() {
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the probe never commented: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    host.write_config("");
    host.bridge(&["plausible"], Answer::React);
    let (run, v) = host.probe(&["plausible"]);
    assert_eq!(run.code, 0, "{v:#}\n{}", run.stderr);
    assert!(
        run.stderr.contains("recorded as interrupted"),
        "{}",
        run.stderr
    );
    let db = rusqlite::Connection::open(host.dir.path().join("state/state.db")).unwrap();
    let outcomes: Vec<(String, String)> = db
        .prepare("SELECT outcome, head FROM probes ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(outcomes[0].0, "interrupted");
    assert_eq!(outcomes[1].0, "proven");
    assert_ne!(
        outcomes[0].1, outcomes[1].1,
        "the second probe has a head of its own"
    );
    let pulls = host.forge.pulls("plausible");
    assert_eq!(pulls.len(), 1);
    for (_, head) in &outcomes {
        let marker = format!("<!-- cc-ci-probe {head} -->");
        let n = pulls[0]
            .comments
            .iter()
            .filter(|c| c.body.contains(&marker))
            .count();
        assert_eq!(n, 1, "comments on {head}");
    }
}

#[test]
fn a_probe_under_a_closed_stdout_still_records_its_proof() {
    let mut host = Host::new(&["plausible"], "");
    host.bridge(&["plausible"], Answer::React);
    for format in ["human", "json"] {
        let mut child = std::process::Command::new(crate::common::bin())
            .args([
                "--config",
                host.config.to_str().unwrap(),
                "--format",
                format,
            ])
            .args(["probe", "plausible"])
            .env("CC_CI_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{format}: {stderr}");
    }
    let (_, history) = host.probe(&["--history"]);
    let outcomes: Vec<&str> = history["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["proven", "proven"], "{history:#}");
}

#[test]
fn a_second_pull_request_from_the_probe_branch_is_closed_and_the_oldest_kept() {
    let mut host = Host::new(&["plausible"], "");
    host.bridge(&["plausible"], Answer::React);
    let (run, _) = host.probe(&[]);
    assert_eq!(run.code, 0);
    // The agent lists the pull requests when it has no probe pull request of its own on
    // record (a new host, or one that lost its state): then it keeps one and closes the rest.
    std::fs::remove_dir_all(host.dir.path().join("state")).unwrap();
    // Someone opened another from cc-ci/probe (into another base, as Gitea would allow).
    host.forge
        .state
        .lock()
        .unwrap()
        .pulls
        .get_mut("plausible")
        .unwrap()
        .push(crate::support::forge::PullRec {
            number: 2,
            head_ref: Some("cc-ci/probe".into()),
            base: "next".into(),
            title: "mine".into(),
            open: true,
            ..Default::default()
        });
    let (run, v) = host.probe(&["plausible"]);
    assert_eq!(run.code, 0, "{v:#}");
    assert_eq!(only(&v)["pull"], 1);
    let open: Vec<u64> = host
        .forge
        .pulls("plausible")
        .iter()
        .filter(|p| p.open)
        .map(|p| p.number)
        .collect();
    assert_eq!(open, [1], "one probe pull request stays open");
}

#[test]
fn a_drone_token_that_is_not_an_admins_defers_the_probe_and_says_why() {
    let mut host = Host::new(&["plausible"], "");
    std::fs::write(host.dir.path().join("drone-token"), &host.drone.user_token).unwrap();
    let busy = format!(
        "[probe.busy_check.drone]\nurl = \"{}\"\nallow_insecure = true\ntoken_file = \"drone-token\"\n",
        host.drone.url
    );
    host.write_config(&busy);
    host.bridge(&["plausible"], Answer::React);
    let (run, v) = host.probe(&[]);
    assert_eq!(run.code, 0, "{v:#}");
    let p = only(&v);
    assert_eq!(p["outcome"], "deferred", "{p:#}");
    assert!(
        p["detail"].as_str().unwrap().contains("not an admin"),
        "{p:#}"
    );
    assert!(host.forge.pulls("plausible").is_empty());
}

/// A forge that answers the comment list one byte every 300 ms (a probe comment is hundreds
/// of bytes) cannot keep the probe running past `probe.timeout`: every request is under the
/// probe's deadline, and the record ends.
#[test]
fn a_trickling_forge_cannot_keep_a_probe_past_its_timeout() {
    let host = Host::new(&["plausible"], "timeout = \"3s\"\n");
    host.forge.state.lock().unwrap().trickle = Some((
        format!("/repos/{ORG}/plausible/issues/"),
        Duration::from_millis(300),
    ));
    let started = std::time::Instant::now();
    let (run, v) = host.probe(&[]);
    let took = started.elapsed();
    // Far above 3 s, far below the 60 s a single request may take on its own.
    assert!(
        took < Duration::from_secs(20),
        "took {took:?}\n{}",
        run.stderr
    );
    let p = only(&v);
    assert_ne!(p["outcome"], "running", "{p:#}");
    assert!(
        p["detail"].as_str().unwrap().contains("probe.timeout"),
        "the detail names the setting that ran out: {p:#}"
    );
    let h = host.check("plausible", "triggerable").unwrap();
    assert!(
        !h.to_string().contains("running"),
        "health sees an ended probe: {h:#}"
    );
}

/// Comments planted on `recipe`'s pull request `number` by another forge user, `count` of
/// `size` bytes each, last touched `age` ago.
fn flood(host: &Host, recipe: &str, number: u64, (count, size): (usize, usize), age: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut s = host.forge.state.lock().unwrap();
    let mut next = s.last_id;
    let pull = s
        .pulls
        .get_mut(recipe)
        .unwrap()
        .iter_mut()
        .find(|p| p.number == number)
        .unwrap();
    for _ in 0..count {
        next += 1;
        pull.comments.push(crate::support::forge::CommentRec {
            id: next,
            body: "x".repeat(size),
            login: "someone".into(),
            created: now - age,
            updated: now - age,
            ..Default::default()
        });
    }
    s.last_id = next;
}

/// Five MiB of comments on the probe's pull request (more than the agent reads in one answer)
/// do not stop the next probe: it asks only for the comments since its own.
#[test]
fn a_comment_flood_on_the_probe_pull_request_does_not_fail_the_next_probe() {
    let mut host = Host::new(&["plausible"], "");
    host.bridge(&["plausible"], Answer::Reply);
    let (first, v1) = host.probe(&[]);
    assert_eq!(first.code, 0, "{v1:#}");
    flood(&host, "plausible", 1, (5, 1 << 20), 120);
    let (again, v2) = host.probe(&["plausible"]);
    assert_eq!(again.code, 0, "{v2:#}\n{}", again.stderr);
    assert_eq!(only(&v2)["outcome"], "proven", "{v2:#}");
    assert!(
        only(&v2)["stages"][0]["seen"]
            .as_str()
            .unwrap()
            .contains("reply by bridge-bot"),
        "the bridge's reply is still found among the newest comments: {v2:#}"
    );
}

/// A flood that arrives while the probe waits leaves the replies unreadable; the probe still
/// judges what it can read (reactions, statuses) and ends stopped, saying why, not failed.
#[test]
fn a_comment_flood_during_the_wait_is_a_stopped_probe_that_says_so_not_a_failure() {
    // No bridge: nothing will pick the comment up.
    let host = Host::new(&["plausible"], "timeout = \"4s\"\n");
    let state = host.forge.state.clone();
    let flooder = std::thread::spawn(move || {
        // Waits for the event: the probe's comment on the forge.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let posted = state
                .lock()
                .unwrap()
                .pulls
                .get("plausible")
                .is_some_and(|ps| {
                    ps.iter().any(|p| {
                        p.comments
                            .iter()
                            .any(|c| c.body.contains("<!-- cc-ci-probe"))
                    })
                });
            if posted || std::time::Instant::now() > deadline {
                return posted;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let started = std::thread::spawn({
        let config = host.config.clone();
        move || {
            let run = agent(&[
                "--config",
                config.to_str().unwrap(),
                "--format",
                "json",
                "probe",
            ]);
            run
        }
    });
    assert!(flooder.join().unwrap(), "the probe commented");
    flood(&host, "plausible", 1, (5, 1 << 20), 0);
    let run = started.join().unwrap();
    let v: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout, run.stderr));
    let p = only(&v);
    assert_eq!(p["outcome"], "stopped", "{p:#}\n{}", run.stderr);
    assert_eq!(p["stopped_at"], "picked-up", "{p:#}");
    assert!(
        p["detail"].as_str().unwrap().contains("too many"),
        "the detail says the replies could not be read: {p:#}"
    );
    assert_eq!(run.code, 18, "not triggerable, not failed: {}", run.stderr);
}

/// More open pull requests than the agent lists (Gitea lists newest first) do not lose the
/// probe's own: the one it used last is looked up by number.
#[test]
fn more_open_pull_requests_than_the_agent_lists_do_not_lose_the_probes_own() {
    let mut host = Host::new(&["plausible"], "");
    host.bridge(&["plausible"], Answer::React);
    let (first, v1) = host.probe(&[]);
    assert_eq!(first.code, 0, "{v1:#}");
    let head = crate::support::git(&host.forge.repo("plausible"), &["rev-parse", "main"])
        .trim()
        .to_string();
    {
        let mut s = host.forge.state.lock().unwrap();
        let pulls = s.pulls.get_mut("plausible").unwrap();
        for number in 2..=5_001 {
            pulls.push(crate::support::forge::PullRec {
                number,
                head_sha: head.clone(),
                title: format!("spam {number}"),
                open: true,
                ..Default::default()
            });
        }
    }
    let (again, v2) = host.probe(&["plausible"]);
    assert_eq!(again.code, 0, "{v2:#}\n{}", again.stderr);
    assert_eq!(only(&v2)["pull"], 1, "{v2:#}");
    // A host that lost its journal finds it too: Gitea's 409 names the open one's number.
    std::fs::remove_dir_all(host.dir.path().join("state")).unwrap();
    let (fresh, v3) = host.probe(&["plausible"]);
    assert_eq!(fresh.code, 0, "{v3:#}\n{}", fresh.stderr);
    assert_eq!(only(&v3)["pull"], 1, "{v3:#}");
}

/// A pull request from someone's fork whose branch is also called `cc-ci/probe` is not the
/// probe's: a `!testme` on it would have CI run the fork's code.
#[test]
fn a_fork_pull_request_named_like_the_probe_branch_is_never_commented_on() {
    let mut host = Host::new(&["plausible"], "");
    host.bridge(&["plausible"], Answer::React);
    host.forge
        .state
        .lock()
        .unwrap()
        .pulls
        .entry("plausible".into())
        .or_default()
        .push(crate::support::forge::PullRec {
            number: 1,
            head_sha: "1".repeat(40),
            head_ref: Some("cc-ci/probe".into()),
            base: "main".into(),
            title: "innocent".into(),
            open: true,
            fork: Some("mallory".into()),
            ..Default::default()
        });
    let (run, v) = host.probe(&[]);
    assert_eq!(run.code, 0, "{v:#}\n{}", run.stderr);
    assert_eq!(only(&v)["pull"], 2, "{v:#}");
    let pulls = host.forge.pulls("plausible");
    let fork = pulls.iter().find(|p| p.number == 1).unwrap();
    assert!(fork.comments.is_empty(), "{:?}", fork.comments);
    assert!(
        fork.open,
        "the fork's pull request is not the agent's to close"
    );
}
