//! The deploy state machine, shared by `deploy`, `rollback` and the dead-man switch:
//!
//! pre-flight → record → build → arm dead-man → activate (test) → verify ─┬→ commit (profile, boot)
//!                                                                       └→ roll back → verify again
//!
//! Each step is a function with a typed result; [`Deploy::run`] reads as the list above. After
//! arming, every step moves the journal row by compare-and-set, so the agent and its dead-man
//! switch can never both act: whoever moves the row first owns the deploy. Each step records in
//! the journal before it tells the observer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::machine::{Checks, Machine};
use super::observer::{Event, Observer};
use super::preflight::Refused;
use super::verify::Verdict;
use crate::busy::Busy;
use crate::host::{Generation, Mode};
use crate::ledger::{Field, Ledger, Outcome, Stage};
use crate::settings::deploy::FlakeRef;

/// What to activate.
pub enum Target {
    /// Build this flake's configuration and activate the result.
    Build(FlakeRef),
    /// Activate an existing generation of the system profile.
    Generation(Generation),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub dry_run: bool,
    pub force: bool,
    /// Fast-forward the checkout to its upstream branch first.
    pub pull: bool,
}

/// The dead-man switch: the transient timer that rolls an unconfirmed deploy back.
pub struct Deadman {
    /// How long a deploy has to confirm itself.
    pub after: Duration,
    /// What the timer runs: this agent's `deploy deadman ID`.
    pub argv: Vec<String>,
}

pub struct Deploy<'a> {
    pub id: i64,
    pub journal: &'a Ledger,
    pub machine: &'a dyn Machine,
    pub checks: &'a dyn Checks,
    pub observer: &'a dyn Observer,
    pub deadman: Deadman,
    /// Where builds leave their `result` link.
    pub workdir: PathBuf,
    /// How long a deploy the dead-man took over waits for its verdict.
    pub lost_wait: Duration,
}

/// Where the host was before anything changed.
pub struct Before {
    pub from: Generation,
    pub failed: BTreeSet<String>,
    running: Option<PathBuf>,
}

/// How the activation went, as the verification step needs to know it.
enum Activated {
    /// switch-to-configuration ran (perhaps with failed units: judged by verification).
    Ran,
    /// It did not run through: no verification is worth doing.
    Failed(String),
}

fn json_of<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn millis(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// No checks ran: what activation or restoring failed before verifying.
fn unverified() -> Verdict {
    Verdict {
        ok: false,
        attempts: 0,
        elapsed_ms: 0,
        results: Vec::new(),
    }
}

impl Deploy<'_> {
    pub fn run(&self, target: Target, opts: Options) -> Result<Outcome> {
        if let Some(refused) = self.preflight(&target, opts)? {
            return Ok(refused);
        }
        let before = self.record()?;
        let to = match self.build(&target)? {
            Ok(to) => to,
            Err(outcome) => return Ok(outcome),
        };
        self.show_changes(&before, &to)?;
        if let Some(ended) = self.nothing_to_do(&before, &to, opts.dry_run)? {
            return Ok(ended);
        }
        let unit = self.arm()?;
        let Some(activated) = self.activate(&to)? else {
            return self.lost();
        };
        let Some(verdict) = self.verify(&before, activated)? else {
            return self.lost();
        };
        match verdict {
            Ok(()) => self.commit(&target, &to, &before, &unit),
            Err(reason) => {
                if !self.advance(&[Stage::Verifying], Stage::RollingBack)? {
                    return self.lost();
                }
                self.roll_back(&before.from, &before.failed, &reason, Some(&unit))
            }
        }
    }

    fn finish(&self, outcome: Outcome, message: &str) -> Result<Outcome> {
        self.journal.deploy_finish(self.id, outcome, message)?;
        Ok(outcome)
    }

    fn advance(&self, from: &[Stage], to: Stage) -> Result<bool> {
        self.journal.deploy_advance(self.id, from, to)
    }

    fn refuse(&self, r: Refused) -> Result<Option<Outcome>> {
        self.finish(r.outcome, &r.message)?;
        self.observer.on(&Event::Refused(&r.message));
        Ok(Some(r.outcome))
    }

    /// Step 1: the tree is a clean, current checkout, and no CI build is in flight (unless forced).
    fn preflight(&self, target: &Target, opts: Options) -> Result<Option<Outcome>> {
        if let (Target::Build(flake), true) = (target, opts.pull) {
            match self.checks.pull(flake) {
                Ok(p) => {
                    if p.from != p.to {
                        self.journal
                            .deploy_set(self.id, Field::PulledFrom, &p.from)?;
                    }
                    self.observer.on(&Event::Pulled {
                        from: &p.from,
                        to: &p.to,
                    });
                }
                Err(r) => return self.refuse(r),
            }
        }
        if let Target::Build(flake) = target {
            match self.checks.tree(flake) {
                Ok(tree) => {
                    self.journal
                        .deploy_set(self.id, Field::FlakeCommit, &tree.commit)?;
                    self.journal
                        .deploy_set(self.id, Field::FlakeLock, &tree.flake_lock)?;
                    self.observer.on(&Event::Tree {
                        flake: &flake.to_arg(),
                        commit: &tree.commit,
                        flake_lock: tree.flake_lock.as_deref(),
                    });
                }
                Err(r) => return self.refuse(r),
            }
        }
        if opts.force {
            return Ok(None);
        }
        let why = match self.checks.ci() {
            None => return Ok(None),
            Some(Busy::Idle) => {
                self.observer.on(&Event::CiIdle);
                return Ok(None);
            }
            Some(Busy::Busy(what)) => format!(
                "a CI build is in flight ({what}): deploy when it has finished, or pass --force"
            ),
            Some(Busy::Unknown(why)) => format!(
                "cannot tell whether a CI build is in flight ({why}): fix busy_check, or pass --force"
            ),
        };
        self.refuse(Refused::new(Outcome::RefusedCiBusy, why))
    }

    /// Step 2: where the host is: the generation to come back to, and what was failing already.
    fn record(&self) -> Result<Before> {
        let from = self.machine.current_generation()?;
        let failed = self.machine.failed_units()?;
        self.journal
            .deploy_set(self.id, Field::FromGeneration, from.number as i64)?;
        self.journal
            .deploy_set(self.id, Field::FromPath, from.path.to_string_lossy())?;
        self.journal
            .deploy_set(self.id, Field::FailedBefore, json_of(&failed))?;
        self.observer.on(&Event::From(&from));
        if !failed.is_empty() {
            self.observer.on(&Event::FailingBefore(
                failed.iter().map(String::as_str).collect(),
            ));
        }
        let running = self.machine.running_system().ok();
        if running.as_ref() != Some(&from.path) {
            self.observer.on(&Event::RunningElsewhere {
                running: running.as_deref(),
                generation: from.number,
            });
        }
        Ok(Before {
            from,
            failed,
            running,
        })
    }

    /// Step 3: the system to activate: built from the flake, or the generation asked for.
    fn build(&self, target: &Target) -> Result<Result<PathBuf, Outcome>> {
        let to = match target {
            Target::Generation(g) => g.path.clone(),
            Target::Build(flake) => {
                self.advance(&[Stage::Preflight], Stage::Building)?;
                std::fs::create_dir_all(&self.workdir)
                    .with_context(|| format!("cannot create {}", self.workdir.display()))?;
                let t = Instant::now();
                let built = self.machine.build(flake, &self.workdir);
                self.journal
                    .deploy_set(self.id, Field::BuildMs, millis(t))?;
                match built {
                    Ok(path) => {
                        self.observer.on(&Event::Built {
                            system: &path,
                            seconds: t.elapsed().as_secs_f64(),
                        });
                        path
                    }
                    Err(e) => {
                        let message = format!("build failed, nothing was activated: {e:#}");
                        self.finish(Outcome::BuildFailed, &message)?;
                        self.observer.on(&Event::BuildFailed(&format!("{e:#}")));
                        return Ok(Err(Outcome::BuildFailed));
                    }
                }
            }
        };
        self.journal
            .deploy_set(self.id, Field::ToPath, to.to_string_lossy())?;
        Ok(Ok(to))
    }

    /// What the switch will change, recorded and shown before anything does (nothing when the
    /// new system is the running one).
    fn show_changes(&self, before: &Before, to: &Path) -> Result<()> {
        let Some(running) = before.running.as_deref().filter(|r| *r != to) else {
            return Ok(());
        };
        let changes = self.machine.changes(running, to);
        self.journal
            .deploy_set(self.id, Field::Changes, json_of(&changes))?;
        self.observer.on(&Event::Changes(&changes));
        Ok(())
    }

    /// A dry run ends after the build; so does a deploy of what already runs.
    fn nothing_to_do(&self, before: &Before, to: &Path, dry_run: bool) -> Result<Option<Outcome>> {
        let from = &before.from;
        let (outcome, message) = if dry_run {
            let message = if to == from.path {
                format!(
                    "dry run: {} is what generation {} runs already; nothing would change",
                    to.display(),
                    from.number
                )
            } else {
                format!(
                    "dry run: would activate {} in place of generation {} ({})",
                    to.display(),
                    from.number,
                    from.path.display()
                )
            };
            (Outcome::DryRun, message)
        } else if to == from.path && before.running.as_ref() == Some(&from.path) {
            let message = format!(
                "generation {} already runs {}: nothing to do",
                from.number,
                to.display()
            );
            (Outcome::Unchanged, message)
        } else {
            return Ok(None);
        };
        self.finish(outcome, &message)?;
        self.observer.on(&Event::Ended(&message));
        Ok(Some(outcome))
    }

    /// Step 4: arm the dead-man switch before anything changes; its unit name.
    fn arm(&self) -> Result<String> {
        let unit = format!("cc-ci-deadman-{}", self.id);
        let description = format!(
            "cc-ci: roll back deploy #{} unless it is confirmed",
            self.id
        );
        let after = self.deadman.after;
        if let Err(e) = self
            .machine
            .arm(&unit, after, &description, &self.deadman.argv)
        {
            let message =
                format!("cannot arm the dead-man switch, so nothing was activated: {e:#}");
            self.finish(Outcome::Failed, &message)?;
            return Err(e.context("cannot arm the dead-man switch; nothing was activated"));
        }
        self.journal
            .deploy_set(self.id, Field::DeadmanUnit, &unit)?;
        self.advance(&[Stage::Preflight, Stage::Building], Stage::Armed)?;
        self.observer.on(&Event::Armed {
            unit: &unit,
            seconds: after.as_secs(),
        });
        Ok(unit)
    }

    /// Step 5: activate without committing. `None`: the dead-man took the deploy over first.
    fn activate(&self, to: &Path) -> Result<Option<Activated>> {
        if !self.advance(&[Stage::Armed], Stage::Activating)? {
            return Ok(None);
        }
        let t = Instant::now();
        let activation = self.machine.activate(to, Mode::Test);
        self.journal
            .deploy_set(self.id, Field::ActivateMs, millis(t))?;
        Ok(Some(match activation {
            Ok(a) => {
                self.observer.on(&Event::Activated(Ok(a)));
                Activated::Ran
            }
            Err(e) => {
                let e = format!("{e:#}");
                self.observer.on(&Event::Activated(Err(&e)));
                Activated::Failed(format!("activation failed: {e}"))
            }
        }))
    }

    /// Step 6, verify: `Ok` to commit, or the reason to roll back. `None`: the dead-man took over.
    fn verify(&self, before: &Before, activated: Activated) -> Result<Option<Result<(), String>>> {
        if !self.advance(&[Stage::Activating], Stage::Verifying)? {
            return Ok(None);
        }
        let (verdict, failed) = match activated {
            Activated::Ran => (self.checks.verify(&before.failed), None),
            Activated::Failed(reason) => (unverified(), Some(reason)),
        };
        self.journal
            .deploy_set(self.id, Field::Checks, json_of(&verdict.results))?;
        self.journal.deploy_set(
            self.id,
            Field::VerifyMs,
            i64::try_from(verdict.elapsed_ms).unwrap_or(i64::MAX),
        )?;
        if let Some(reason) = failed {
            return Ok(Some(Err(reason)));
        }
        self.observer.on(&Event::Verified(&verdict));
        Ok(Some(if verdict.ok {
            Ok(())
        } else {
            Err(format!("verification failed: {}", verdict.summary()))
        }))
    }

    /// Step 7: make the verified system the boot default and stand the dead-man down. A commit
    /// that fails rolls back.
    fn commit(&self, target: &Target, to: &Path, before: &Before, unit: &str) -> Result<Outcome> {
        if !self.advance(&[Stage::Verifying], Stage::Committing)? {
            return self.lost();
        }
        let committed = (|| -> Result<Generation> {
            let generation = match target {
                Target::Build(_) => self.machine.set_profile(to)?,
                Target::Generation(g) => self.machine.switch_generation(g.number)?,
            };
            self.machine.activate(to, Mode::Boot)?;
            self.machine.disarm(unit)?;
            Ok(generation)
        })();
        match committed {
            Ok(generation) => {
                let message = format!(
                    "generation {} ({}) is active, verified, and the boot default",
                    generation.number,
                    to.display()
                );
                self.journal
                    .deploy_set(self.id, Field::ToGeneration, generation.number as i64)?;
                self.finish(Outcome::Deployed, &message)?;
                self.observer.on(&Event::Committed(&message));
                Ok(Outcome::Deployed)
            }
            Err(e) => {
                self.advance(&[Stage::Committing], Stage::RollingBack)?;
                let reason = format!("commit failed: {e:#}");
                self.roll_back(&before.from, &before.failed, &reason, Some(unit))
            }
        }
    }

    /// Steps 8 and 9: back to `from` (profile, activation), then the same verification as a deploy.
    pub fn roll_back(
        &self,
        from: &Generation,
        failed_before: &BTreeSet<String>,
        reason: &str,
        deadman_unit: Option<&str>,
    ) -> Result<Outcome> {
        self.observer.on(&Event::RollingBack(reason));
        self.forget_new_failures(failed_before);
        let restored = self.restore(from);
        let verdict = match &restored {
            Ok(()) => self.checks.verify(failed_before),
            Err(_) => unverified(),
        };
        self.journal
            .deploy_set(self.id, Field::RollbackChecks, json_of(&verdict.results))?;
        if let Some(unit) = deadman_unit {
            if let Err(e) = self.machine.disarm(unit) {
                tracing::warn!("cannot stop the dead-man switch {unit}: {e:#}");
            }
        }
        let back = format!("generation {} ({})", from.number, from.path.display());
        if restored.is_ok() && verdict.ok {
            let message = format!("{reason}; back on {back}, which verified");
            self.finish(Outcome::RolledBack, &message)?;
            self.observer.on(&Event::RolledBack {
                verdict: &verdict,
                message: &message,
            });
            return Ok(Outcome::RolledBack);
        }
        let why = match restored {
            Err(e) => format!("re-activating it failed: {e:#}"),
            Ok(()) => format!("it does not verify: {}", verdict.summary()),
        };
        let message = format!(
            "{reason}; rolling back to {back} FAILED: {why}. The host needs a person: \
             see `cc-ci-agent deploy status` and `systemctl --failed`"
        );
        self.finish(Outcome::RollbackFailed, &message)?;
        self.observer.on(&Event::RollbackFailed {
            verdict: &verdict,
            message: &message,
        });
        Ok(Outcome::RollbackFailed)
    }

    /// Failures of the bad system are history: cleared, so the old one is judged afresh.
    fn forget_new_failures(&self, failed_before: &BTreeSet<String>) {
        if let Ok(now) = self.machine.failed_units() {
            let new: Vec<String> = now.difference(failed_before).cloned().collect();
            if let Err(e) = self.machine.reset_failed(&new) {
                tracing::warn!("cannot reset failed units {new:?}: {e:#}");
            }
        }
    }

    fn restore(&self, from: &Generation) -> Result<()> {
        if self.machine.current_generation()?.number != from.number {
            self.machine.switch_generation(from.number)?;
            self.machine.activate(&from.path, Mode::Boot)?;
        }
        self.machine.activate(&from.path, Mode::Test)?;
        Ok(())
    }

    /// The dead-man switch moved the row first: it owns the deploy. Wait for its verdict.
    fn lost(&self) -> Result<Outcome> {
        self.observer.on(&Event::Lost);
        let deadline = Instant::now() + self.lost_wait;
        loop {
            let row = self
                .journal
                .deploy_get(self.id)?
                .context("the deploy's journal row vanished")?;
            if row.state == Stage::Finished {
                self.observer.on(&Event::DeadmanDone(
                    row.message.as_deref().unwrap_or_default(),
                ));
                return Ok(match row.outcome {
                    Some(o @ (Outcome::RolledBack | Outcome::RollbackFailed)) => o,
                    _ => Outcome::Failed,
                });
            }
            if Instant::now() > deadline {
                anyhow::bail!("the dead-man switch has not finished rolling back deploy #{}: see `cc-ci-agent deploy status`", self.id);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[cfg(test)]
#[path = "steps_tests.rs"]
mod tests;
