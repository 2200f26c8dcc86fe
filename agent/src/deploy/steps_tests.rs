//! Every branch of the state machine, against a fake host: which calls it makes, in which order,
//! what it records, and that it records before it tells.

// Test module: a panic is how a failure is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};

use super::*;
use crate::deploy::preflight::Tree;
use crate::deploy::verify::CheckResult;
use crate::exit::Exit;
use crate::host::Activation;

const OLD: &str = "/nix/store/aaaa-nixos-system-old";
const NEW: &str = "/nix/store/bbbb-nixos-system-new";

/// A host that does what it is told and writes down what it was asked.
struct FakeHost {
    calls: RefCell<Vec<String>>,
    generation: Cell<u64>,
    running: RefCell<PathBuf>,
    failed: RefCell<BTreeSet<String>>,
    /// Calls that fail, by the name they are written down as.
    failing: BTreeSet<&'static str>,
    /// What `activate test` of the new system leaves failed.
    breaks: Vec<&'static str>,
    /// The dead-man switch fires while the new system is activated (on its own connection).
    deadman_fires: Option<(PathBuf, i64)>,
}

impl FakeHost {
    fn new() -> Self {
        Self {
            calls: RefCell::new(Vec::new()),
            generation: Cell::new(1),
            running: RefCell::new(PathBuf::from(OLD)),
            failed: RefCell::new(BTreeSet::new()),
            failing: BTreeSet::new(),
            breaks: Vec::new(),
            deadman_fires: None,
        }
    }

    fn failing(mut self, call: &'static str) -> Self {
        self.failing.insert(call);
        self
    }

    fn call(&self, name: &str) -> Result<()> {
        self.calls.borrow_mut().push(name.to_string());
        if self.failing.contains(name) {
            bail!("{name} failed");
        }
        Ok(())
    }

    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn path_of(&self, number: u64) -> PathBuf {
        PathBuf::from(if number == 1 { OLD } else { NEW })
    }
}

impl Machine for FakeHost {
    fn current_generation(&self) -> Result<Generation> {
        let number = self.generation.get();
        Ok(Generation {
            number,
            path: self.path_of(number),
        })
    }
    fn running_system(&self) -> Result<PathBuf> {
        Ok(self.running.borrow().clone())
    }
    fn failed_units(&self) -> Result<BTreeSet<String>> {
        Ok(self.failed.borrow().clone())
    }
    fn reset_failed(&self, units: &[String]) -> Result<()> {
        if units.is_empty() {
            return Ok(());
        }
        self.call(&format!("reset-failed {}", units.join(" ")))?;
        let mut failed = self.failed.borrow_mut();
        for u in units {
            failed.remove(u);
        }
        Ok(())
    }
    fn unit_state(&self, _unit: &str) -> Result<String> {
        Ok("active".into())
    }
    fn unit_environment(&self, _unit: &str) -> Result<BTreeMap<String, String>> {
        Ok(BTreeMap::new())
    }
    fn build(&self, _flake: &FlakeRef, workdir: &Path) -> Result<PathBuf> {
        assert!(workdir.is_dir(), "the build's work directory is made first");
        self.call("build")?;
        Ok(PathBuf::from(NEW))
    }
    fn activate(&self, system: &Path, mode: Mode) -> Result<Activation> {
        let which = if system == Path::new(NEW) {
            "new"
        } else {
            "old"
        };
        let mode = match mode {
            Mode::Test => "test",
            Mode::Boot => "boot",
        };
        self.call(&format!("activate {mode} {which}"))?;
        if let (Some((state, id)), "new") = (&self.deadman_fires, which) {
            let deadman = Ledger::open(state, &crate::clock::Clock::system())?;
            assert!(deadman.deploy_advance(*id, &Stage::UNCONFIRMED, Stage::RollingBack)?);
            deadman.deploy_finish(*id, Outcome::RolledBack, "the dead-man rolled it back")?;
        }
        if mode == "test" {
            *self.running.borrow_mut() = system.to_path_buf();
            if which == "new" && !self.breaks.is_empty() {
                self.failed
                    .borrow_mut()
                    .extend(self.breaks.iter().map(|s| s.to_string()));
                return Ok(Activation::UnitsFailed);
            }
        }
        Ok(Activation::Clean)
    }
    fn set_profile(&self, _system: &Path) -> Result<Generation> {
        self.call("set-profile")?;
        self.generation.set(2);
        self.current_generation()
    }
    fn switch_generation(&self, number: u64) -> Result<Generation> {
        self.call(&format!("switch-generation {number}"))?;
        self.generation.set(number);
        self.current_generation()
    }
    fn arm(&self, unit: &str, _delay: Duration, _description: &str, argv: &[String]) -> Result<()> {
        assert_eq!(argv, ["deadman-argv"]);
        self.call(&format!("arm {unit}"))
    }
    fn disarm(&self, unit: &str) -> Result<()> {
        self.call(&format!("disarm {unit}"))
    }
    fn changes(&self, _from: &Path, _to: &Path) -> crate::host::changes::Changes {
        crate::host::changes::Changes::default()
    }
}

/// Pre-flight and verification answers, in turn.
struct FakeChecks<'a> {
    tree: Option<Outcome>,
    ci: Option<Busy>,
    /// One per verification, in order; the host's failed units must also be none new.
    verdicts: RefCell<VecDeque<bool>>,
    host: &'a FakeHost,
}

impl<'a> FakeChecks<'a> {
    fn new(host: &'a FakeHost, verdicts: &[bool]) -> Self {
        Self {
            tree: None,
            ci: None,
            verdicts: RefCell::new(verdicts.iter().copied().collect()),
            host,
        }
    }
}

impl Checks for FakeChecks<'_> {
    fn pull(&self, _flake: &FlakeRef) -> Result<crate::deploy::preflight::Pulled, Refused> {
        self.host.calls.borrow_mut().push("pull".into());
        Ok(crate::deploy::preflight::Pulled {
            from: "a".repeat(40),
            to: "b".repeat(40),
        })
    }

    fn tree(&self, _flake: &FlakeRef) -> Result<Tree, Refused> {
        match self.tree {
            Some(o) => Err(Refused::new(o, format!("{} by the fake", o.as_str()))),
            None => Ok(Tree {
                commit: "c0ffee".repeat(6) + "c0ff",
                flake_lock: None,
            }),
        }
    }
    fn ci(&self) -> Option<Busy> {
        self.ci.clone()
    }
    fn verify(&self, failed_before: &BTreeSet<String>) -> Verdict {
        let host = self.host;
        host.calls.borrow_mut().push("verify".into());
        let said = self.verdicts.borrow_mut().pop_front().unwrap_or(true);
        let new = host.failed.borrow().difference(failed_before).count();
        let ok = said && new == 0;
        Verdict {
            ok,
            attempts: 1,
            elapsed_ms: 0,
            results: vec![CheckResult {
                name: "fake".into(),
                ok,
                detail: if ok { "fine" } else { "not fine" }.into(),
            }],
        }
    }
}

/// Writes down each event with the journal's outcome as it stood when the event was told.
struct Recorder<'a> {
    journal: &'a Ledger,
    id: Cell<i64>,
    seen: RefCell<Vec<(String, Option<Outcome>)>>,
}

impl Observer for Recorder<'_> {
    fn on(&self, event: &Event<'_>) {
        let name = match event {
            Event::Line(_) => "line",
            Event::Tree { .. } => "tree",
            Event::Pulled { .. } => "pulled",
            Event::CiIdle => "ci-idle",
            Event::Refused(_) => "refused",
            Event::From(_) => "from",
            Event::FailingBefore(_) => "failing-before",
            Event::RunningElsewhere { .. } => "running-elsewhere",
            Event::Built { .. } => "built",
            Event::BuildFailed(_) => "build-failed",
            Event::Changes(_) => "changes",
            Event::Ended(_) => "ended",
            Event::Armed { .. } => "armed",
            Event::Activated(Ok(_)) => "activated",
            Event::Activated(Err(_)) => "activation-failed",
            Event::Verified(_) => "verified",
            Event::Committed(_) => "committed",
            Event::RollingBack(_) => "rolling-back",
            Event::RolledBack { .. } => "rolled-back",
            Event::RollbackFailed { .. } => "rollback-failed",
            Event::Lost => "lost",
            Event::DeadmanDone(_) => "deadman-done",
            Event::Notice(_) => "notice",
        };
        let row = self.journal.deploy_get(self.id.get()).unwrap().unwrap();
        self.seen.borrow_mut().push((name.into(), row.outcome));
    }
}

struct Run {
    outcome: Result<Outcome>,
    calls: Vec<String>,
    events: Vec<String>,
    row: crate::ledger::DeployRow,
}

impl Run {
    /// Every event that ends the deploy was told after its outcome was recorded.
    fn recorded_before_told(&self, seen: &[(String, Option<Outcome>)]) {
        for (event, outcome) in seen {
            let ends = [
                "refused",
                "build-failed",
                "ended",
                "committed",
                "rolled-back",
                "rollback-failed",
            ];
            if ends.contains(&event.as_str()) {
                assert_eq!(
                    *outcome, self.row.outcome,
                    "{event} told before it was recorded"
                );
            }
        }
    }
}

fn run(host: &FakeHost, checks: &FakeChecks, target: Target, opts: Options) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let journal = Ledger::open(dir.path(), &crate::clock::Clock::system()).unwrap();
    let id = journal.deploy_begin("deploy", Some(".#cc-ci")).unwrap();
    run_in(dir.path(), &journal, id, host, checks, target, opts)
}

fn run_in(
    state: &Path,
    journal: &Ledger,
    id: i64,
    host: &FakeHost,
    checks: &FakeChecks,
    target: Target,
    opts: Options,
) -> Run {
    let recorder = Recorder {
        journal,
        id: Cell::new(id),
        seen: RefCell::new(Vec::new()),
    };
    let d = Deploy {
        id,
        journal,
        machine: host,
        checks,
        observer: &recorder,
        deadman: Deadman {
            after: Duration::from_secs(120),
            argv: vec!["deadman-argv".into()],
        },
        workdir: state.join("work"),
        lost_wait: Duration::from_secs(5),
    };
    let outcome = d.run(target, opts);
    let row = journal.deploy_get(id).unwrap().unwrap();
    let seen = recorder.seen.into_inner();
    let run = Run {
        outcome,
        calls: host.calls(),
        events: seen.iter().map(|(e, _)| e.clone()).collect(),
        row,
    };
    run.recorded_before_told(&seen);
    run
}

fn build() -> Target {
    Target::Build(FlakeRef {
        dir: PathBuf::from("/etc/nixos"),
        attr: "cc-ci".into(),
    })
}

const UNIT: &str = "cc-ci-deadman-1";

#[test]
fn a_good_deploy_builds_arms_activates_verifies_and_commits_in_that_order() {
    let host = FakeHost::new();
    let checks = FakeChecks::new(&host, &[true]);
    let r = run(&host, &checks, build(), Options::default());
    assert_eq!(r.outcome.unwrap(), Outcome::Deployed);
    assert_eq!(
        r.calls,
        [
            "build",
            &format!("arm {UNIT}"),
            "activate test new",
            "verify",
            "set-profile",
            "activate boot new",
            &format!("disarm {UNIT}"),
        ]
    );
    assert_eq!(
        r.events,
        [
            "tree",
            "from",
            "built",
            "changes",
            "armed",
            "activated",
            "verified",
            "committed"
        ]
    );
    assert_eq!(
        (r.row.state, r.row.to_generation),
        (Stage::Finished, Some(2))
    );
    assert_eq!(r.row.deadman_unit.as_deref(), Some(UNIT));
}

#[test]
fn a_refused_tree_runs_nothing_on_the_host() {
    for refusal in [
        Outcome::RefusedDirty,
        Outcome::RefusedStale,
        Outcome::RefusedNotACheckout,
    ] {
        let host = FakeHost::new();
        let mut checks = FakeChecks::new(&host, &[]);
        checks.tree = Some(refusal);
        let r = run(&host, &checks, build(), Options::default());
        assert_eq!(r.outcome.unwrap(), refusal);
        assert!(r.calls.is_empty(), "{:?}", r.calls);
        assert_eq!(r.events, ["refused"]);
    }
}

#[test]
fn ci_in_flight_or_unknown_refuses_unless_forced() {
    for busy in [
        Busy::Busy("build 7".into()),
        Busy::Unknown("no answer".into()),
    ] {
        let host = FakeHost::new();
        let mut checks = FakeChecks::new(&host, &[true]);
        checks.ci = Some(busy.clone());
        let r = run(&host, &checks, build(), Options::default());
        assert_eq!(r.outcome.unwrap(), Outcome::RefusedCiBusy);
        assert!(r.calls.is_empty());
        assert_eq!(crate::deploy::exit_of(r.row.outcome.unwrap()), Exit::CiBusy);

        let host = FakeHost::new();
        let mut checks = FakeChecks::new(&host, &[true]);
        checks.ci = Some(busy);
        let forced = Options {
            force: true,
            ..Options::default()
        };
        let r = run(&host, &checks, build(), forced);
        assert_eq!(r.outcome.unwrap(), Outcome::Deployed);
    }
    let host = FakeHost::new();
    let mut checks = FakeChecks::new(&host, &[true]);
    checks.ci = Some(Busy::Idle);
    let r = run(&host, &checks, build(), Options::default());
    assert_eq!(r.events[..2], ["tree", "ci-idle"]);
}

#[test]
fn a_failed_build_arms_and_activates_nothing() {
    let host = FakeHost::new().failing("build");
    let checks = FakeChecks::new(&host, &[]);
    let r = run(&host, &checks, build(), Options::default());
    assert_eq!(r.outcome.unwrap(), Outcome::BuildFailed);
    assert_eq!(r.calls, ["build"]);
    assert!(r.row.message.unwrap().contains("nothing was activated"));
    assert_eq!(
        crate::deploy::exit_of(r.row.outcome.unwrap()),
        Exit::BuildFailed
    );
}

#[test]
fn a_dry_run_and_an_unchanged_host_stop_after_the_build() {
    let host = FakeHost::new();
    let checks = FakeChecks::new(&host, &[]);
    let dry = Options {
        dry_run: true,
        ..Options::default()
    };
    let r = run(&host, &checks, build(), dry);
    assert_eq!(r.outcome.unwrap(), Outcome::DryRun);
    assert_eq!(r.calls, ["build"]);
    assert_eq!(r.events.last().map(String::as_str), Some("ended"));

    let host = FakeHost::new();
    let checks = FakeChecks::new(&host, &[]);
    let same = Target::Generation(Generation {
        number: 1,
        path: PathBuf::from(OLD),
    });
    let r = run(&host, &checks, same, Options::default());
    assert_eq!(r.outcome.unwrap(), Outcome::Unchanged);
    assert!(r.calls.is_empty(), "{:?}", r.calls);
}

#[test]
fn a_dead_man_that_cannot_be_armed_stops_the_deploy_before_activation() {
    let host = FakeHost::new().failing("arm cc-ci-deadman-1");
    let checks = FakeChecks::new(&host, &[]);
    let r = run(&host, &checks, build(), Options::default());
    let e = r.outcome.unwrap_err();
    assert!(format!("{e:#}").contains("nothing was activated"), "{e:#}");
    assert_eq!(r.calls, ["build", &format!("arm {UNIT}")]);
    assert_eq!(r.row.outcome, Some(Outcome::Failed));
}

#[test]
fn a_failed_activation_rolls_back_without_judging_the_new_system() {
    let host = FakeHost::new().failing("activate test new");
    let checks = FakeChecks::new(&host, &[true]);
    let r = run(&host, &checks, build(), Options::default());
    assert_eq!(r.outcome.unwrap(), Outcome::RolledBack);
    assert_eq!(
        r.calls[2..],
        [
            "activate test new",
            "activate test old",
            "verify",
            &format!("disarm {UNIT}")
        ]
    );
    assert!(!r.events.contains(&"verified".to_string()));
    assert!(r.row.message.unwrap().starts_with("activation failed"));
    assert_eq!(
        crate::deploy::exit_of(r.row.outcome.unwrap()),
        Exit::RolledBack
    );
}

#[test]
fn a_system_that_does_not_verify_is_rolled_back_and_its_failures_forgotten() {
    let mut host = FakeHost::new();
    host.breaks = vec!["bridge.service"];
    host.failed
        .borrow_mut()
        .insert("old-trouble.service".into());
    let checks = FakeChecks::new(&host, &[true, true]);
    let r = run(&host, &checks, build(), Options::default());
    assert_eq!(r.outcome.unwrap(), Outcome::RolledBack);
    assert!(
        r.calls.contains(&"reset-failed bridge.service".to_string()),
        "only the new failure is reset: {:?}",
        r.calls
    );
    assert_eq!(
        r.events,
        [
            "tree",
            "from",
            "failing-before",
            "built",
            "changes",
            "armed",
            "activated",
            "verified",
            "rolling-back",
            "rolled-back"
        ]
    );
    assert!(r.row.message.unwrap().contains("verification failed"));
}

#[test]
fn a_failed_commit_rolls_back_to_the_old_generation() {
    let host = FakeHost::new().failing("activate boot new");
    let checks = FakeChecks::new(&host, &[true, true]);
    let r = run(&host, &checks, build(), Options::default());
    assert_eq!(r.outcome.unwrap(), Outcome::RolledBack);
    let calls = r.calls.join(", ");
    assert!(
        calls.ends_with(&format!(
            "set-profile, activate boot new, switch-generation 1, activate boot old, activate test old, verify, disarm {UNIT}"
        )),
        "{calls}"
    );
    assert!(r.row.message.unwrap().starts_with("commit failed"));
}

#[test]
fn a_rollback_that_does_not_verify_or_cannot_restore_needs_a_person() {
    let host = FakeHost::new();
    let checks = FakeChecks::new(&host, &[false, false]);
    let r = run(&host, &checks, build(), Options::default());
    assert_eq!(r.outcome.unwrap(), Outcome::RollbackFailed);
    assert!(r.row.message.unwrap().contains("does not verify"));
    assert_eq!(
        crate::deploy::exit_of(r.row.outcome.unwrap()),
        Exit::RollbackFailed
    );

    let host = FakeHost::new().failing("activate test old");
    let checks = FakeChecks::new(&host, &[false]);
    let r = run(&host, &checks, build(), Options::default());
    assert_eq!(r.outcome.unwrap(), Outcome::RollbackFailed);
    assert!(r.row.message.unwrap().contains("re-activating it failed"));
    assert_eq!(r.events.last().map(String::as_str), Some("rollback-failed"));
}

#[test]
fn when_the_dead_man_moves_first_the_deploy_is_its_to_finish() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Ledger::open(dir.path(), &crate::clock::Clock::system()).unwrap();
    let id = journal.deploy_begin("deploy", Some(".#cc-ci")).unwrap();
    let mut host = FakeHost::new();
    host.deadman_fires = Some((dir.path().to_path_buf(), id));
    let checks = FakeChecks::new(&host, &[true]);
    let r = run_in(
        dir.path(),
        &journal,
        id,
        &host,
        &checks,
        build(),
        Options::default(),
    );
    assert_eq!(r.outcome.unwrap(), Outcome::RolledBack);
    assert_eq!(
        r.calls,
        ["build", &format!("arm {UNIT}"), "activate test new"],
        "nothing judged, committed or rolled back twice"
    );
    assert_eq!(r.events[r.events.len() - 2..], ["lost", "deadman-done"]);
}

#[test]
fn a_generation_is_switched_to_not_set_as_a_new_one() {
    let host = FakeHost::new();
    host.generation.set(3);
    *host.running.borrow_mut() = PathBuf::from(NEW);
    let checks = FakeChecks::new(&host, &[true]);
    let back = Target::Generation(Generation {
        number: 1,
        path: PathBuf::from(OLD),
    });
    let r = run(&host, &checks, back, Options::default());
    assert_eq!(r.outcome.unwrap(), Outcome::Deployed);
    assert_eq!(
        r.calls,
        [
            &format!("arm {UNIT}"),
            "activate test old",
            "verify",
            "switch-generation 1",
            "activate boot old",
            &format!("disarm {UNIT}"),
        ]
    );
}

#[test]
fn pull_comes_first_and_only_when_asked() {
    let host = FakeHost::new();
    let checks = FakeChecks::new(&host, &[true]);
    let pull = Options {
        pull: true,
        ..Options::default()
    };
    let r = run(&host, &checks, build(), pull);
    assert_eq!(r.outcome.unwrap(), Outcome::Deployed);
    assert_eq!(r.calls[..2], ["pull", "build"]);
    assert_eq!(r.events[..2], ["pulled", "tree"]);

    let host = FakeHost::new();
    let checks = FakeChecks::new(&host, &[true]);
    let r = run(&host, &checks, build(), Options::default());
    assert!(!r.calls.contains(&"pull".to_string()), "{:?}", r.calls);
}

/// Verification's rounds are timed on the clock they are given: a check that never passes is
/// tried every `verify_interval` until `verify_timeout`, then given up, with no real wait. (Here
/// the agent's configuration cannot be read, so every round fails.)
#[test]
fn verification_tries_every_interval_until_the_timeout_on_its_clock() {
    let start = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (clock, hand) = crate::clock::manual::at(start);
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new();
    let exp = crate::deploy::verify::Expectations {
        config_path: &dir.path().join("no-agent.toml"),
        failed_before: &BTreeSet::new(),
        health_before: None,
        clock: &clock,
    };
    let verdict = crate::deploy::verify::until_ok(
        &host,
        &exp,
        Duration::from_secs(5),
        Duration::from_millis(200),
    );
    assert!(!verdict.ok);
    // Rounds at 0, 0.2, ... 5.0 s; one more pause would pass the timeout.
    assert_eq!(verdict.attempts, 26);
    assert_eq!(verdict.elapsed_ms, 5000);
    assert_eq!(
        hand.moved(),
        Duration::from_secs(5),
        "every pause slept on the clock"
    );
}
