//! The deploy state machine, shared by `deploy`, `rollback` and the dead-man switch:
//!
//! pre-flight → record → build → arm dead-man → activate (test) → verify ─┬→ commit (profile, boot)
//!                                                                       └→ roll back → verify again
//!
//! After arming, every step moves the journal row by compare-and-set, so the agent and its
//! dead-man switch can never both act: whoever moves the row first owns the deploy.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::preflight::{self, Refused};
use super::verify::{self, Expectations, Verdict};
use crate::busy::{self, Busy};
use crate::exit::{Busy as BusyError, Exit};
use crate::git::short;
use crate::host::{Activation, Generation, Host, Mode};
use crate::ledger::{DeployRow, Field, Ledger, State};
use crate::output::{Output, Tone};
use crate::settings::config::Config;
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
}

/// Prints progress for people; silent in JSON mode, where the journal row is printed at the end.
pub struct Progress<'a> {
    pub out: &'a Output,
}

impl Progress<'_> {
    pub fn line(&self, text: impl AsRef<str>) {
        if !self.out.is_json() {
            crate::say!("{}", text.as_ref());
        }
    }

    pub fn mark(&self, ok: bool) -> String {
        if ok {
            self.out.paint("ok", Tone::Good)
        } else {
            self.out.paint("FAILED", Tone::Bad)
        }
    }

    pub fn verdict(&self, v: &Verdict) {
        for r in &v.results {
            let sign = if r.ok {
                self.out.paint("✓", Tone::Good)
            } else {
                self.out.paint("✗", Tone::Bad)
            };
            self.line(format!("    {sign} {}: {}", r.name, r.detail));
        }
    }
}

pub struct Deploy<'a> {
    /// Each recipe's health before anything changed; a recipe failed afterwards that was not
    /// before is a regression.
    pub health_before: Option<std::collections::BTreeMap<String, crate::health::Verdict>>,
    pub id: i64,
    pub ledger: &'a Ledger,
    pub host: &'a Host,
    pub config: &'a Config,
    pub p: &'a Progress<'a>,
}

fn json_of<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn millis(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX)
}

impl Deploy<'_> {
    fn finish(&self, outcome: &str, message: &str) -> Result<()> {
        self.ledger.deploy_finish(self.id, outcome, message)
    }

    fn refuse(&self, r: Refused) -> Result<Exit> {
        self.finish(r.outcome, &r.message)?;
        self.p.line(format!(
            "{}: {}",
            self.p.out.paint("refused", Tone::Bad),
            r.message
        ));
        if self.p.out.is_json() {
            eprintln!("error: {}", r.message);
        }
        Ok(r.exit)
    }

    fn advance(&self, from: State, to: State) -> Result<bool> {
        self.ledger.deploy_advance(self.id, &[from], to)
    }

    pub fn run(&self, target: Target, opts: Options) -> Result<Exit> {
        let d = &self.config.deploy;

        // 1. Pre-flight.
        if let Target::Build(flake) = &target {
            match preflight::tree(&flake.dir, d.require_synced) {
                Ok(tree) => {
                    self.ledger
                        .deploy_set(self.id, Field::FlakeCommit, &tree.commit)?;
                    self.ledger
                        .deploy_set(self.id, Field::FlakeLock, &tree.flake_lock)?;
                    let lock = tree
                        .flake_lock
                        .as_deref()
                        .map_or("none".to_string(), |l| short(l).to_string());
                    self.p.line(format!(
                        "tree: {} at {} (flake.lock {lock})",
                        flake.to_arg(),
                        short(&tree.commit)
                    ));
                }
                Err(r) => return self.refuse(r),
            }
        }
        if let (Some(check), false) = (&d.busy_check, opts.force) {
            match busy::check(check) {
                Busy::Idle => self.p.line("CI: no build in flight"),
                Busy::Busy(what) => {
                    return self.refuse(Refused::new(
                        Exit::CiBusy,
                        "refused-ci-busy",
                        format!("a CI build is in flight ({what}): deploy when it has finished, or pass --force"),
                    ))
                }
                Busy::Unknown(why) => {
                    return self.refuse(Refused::new(
                        Exit::CiBusy,
                        "refused-ci-busy",
                        format!("cannot tell whether a CI build is in flight ({why}): fix busy_check, or pass --force"),
                    ))
                }
            }
        }

        // 2. Record where the host is.
        let from = self.host.current_generation()?;
        let failed_before = self.host.failed_units()?;
        self.ledger
            .deploy_set(self.id, Field::FromGeneration, from.number as i64)?;
        self.ledger
            .deploy_set(self.id, Field::FromPath, from.path.to_string_lossy())?;
        self.ledger
            .deploy_set(self.id, Field::FailedBefore, json_of(&failed_before))?;
        self.p.line(format!(
            "from: generation {} {}",
            from.number,
            from.path.display()
        ));
        if !failed_before.is_empty() {
            let list = failed_before.iter().cloned().collect::<Vec<_>>().join(", ");
            self.p.line(format!(
                "already failing before the deploy (not held against it): {list}"
            ));
        }
        let running = self.host.running_system().ok();
        if running.as_ref() != Some(&from.path) {
            let shown = running
                .as_ref()
                .map_or("unknown".into(), |p| p.display().to_string());
            self.p.line(format!(
                "{}: the running system ({shown}) is not generation {}'s; a rollback returns to generation {}",
                self.p.out.paint("note", Tone::Warn),
                from.number,
                from.number
            ));
        }

        // 3. Build (or pick the generation).
        let to: PathBuf = match &target {
            Target::Build(flake) => {
                self.advance(State::Preflight, State::Building)?;
                let t = Instant::now();
                let built = self.host.build(flake, &self.workdir()?);
                self.ledger.deploy_set(self.id, Field::BuildMs, millis(t))?;
                match built {
                    Ok(path) => {
                        self.p.line(format!(
                            "build: {} ({:.1}s) {}",
                            self.p.mark(true),
                            t.elapsed().as_secs_f64(),
                            path.display()
                        ));
                        path
                    }
                    Err(e) => {
                        let message = format!("build failed, nothing was activated: {e}");
                        self.finish("build-failed", &message)?;
                        self.p.line(format!("build: {}: {e}", self.p.mark(false)));
                        return Ok(Exit::BuildFailed);
                    }
                }
            }
            Target::Generation(g) => g.path.clone(),
        };
        self.ledger
            .deploy_set(self.id, Field::ToPath, to.to_string_lossy())?;

        if opts.dry_run {
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
            self.finish("dry-run", &message)?;
            self.p.line(message);
            return Ok(Exit::Success);
        }
        if to == from.path && running.as_ref() == Some(&from.path) {
            let message = format!(
                "generation {} already runs {}: nothing to do",
                from.number,
                to.display()
            );
            self.finish("unchanged", &message)?;
            self.p.line(message);
            return Ok(Exit::Success);
        }

        // 4. Arm the dead-man switch before anything changes.
        let unit = format!("cc-ci-deadman-{}", self.id);
        let exe = std::env::current_exe()
            .context("cannot find the agent's own executable for the dead-man switch")?;
        let argv = vec![
            exe.to_string_lossy().into_owned(),
            "--config".into(),
            self.config.path.to_string_lossy().into_owned(),
            "deploy".into(),
            "deadman".into(),
            self.id.to_string(),
        ];
        let description = format!(
            "cc-ci: roll back deploy #{} unless it is confirmed",
            self.id
        );
        if let Err(e) = self
            .host
            .arm_timer(&unit, d.confirm_timeout, &description, &argv)
        {
            let message =
                format!("cannot arm the dead-man switch, so nothing was activated: {e:#}");
            self.finish("failed", &message)?;
            return Err(e.context("cannot arm the dead-man switch; nothing was activated"));
        }
        self.ledger.deploy_set(self.id, Field::DeadmanUnit, &unit)?;
        self.ledger
            .deploy_advance(self.id, &[State::Preflight, State::Building], State::Armed)?;
        self.p.line(format!(
            "dead-man switch: {unit}.timer rolls back in {}s unless this deploy is confirmed",
            d.confirm_timeout.as_secs()
        ));

        // 5. Activate without committing.
        if !self.advance(State::Armed, State::Activating)? {
            return self.lost();
        }
        let t = Instant::now();
        let activation = self.host.activate(&to, Mode::Test);
        self.ledger
            .deploy_set(self.id, Field::ActivateMs, millis(t))?;
        let hard_failure = match &activation {
            Ok(Activation::Clean) => {
                self.p.line(format!("activate: {}", self.p.mark(true)));
                None
            }
            Ok(Activation::UnitsFailed) => {
                self.p.line("activate: done; switch-to-configuration reports failed units (judged against those failing before)");
                None
            }
            Err(e) => {
                self.p
                    .line(format!("activate: {}: {e:#}", self.p.mark(false)));
                Some(format!("activation failed: {e:#}"))
            }
        };

        // 6. Verify.
        if !self.advance(State::Activating, State::Verifying)? {
            return self.lost();
        }
        let verdict = match &hard_failure {
            None => self.verify(&failed_before),
            Some(_) => Verdict {
                ok: false,
                attempts: 0,
                elapsed_ms: 0,
                results: Vec::new(),
            },
        };
        self.ledger
            .deploy_set(self.id, Field::Checks, json_of(&verdict.results))?;
        self.ledger.deploy_set(
            self.id,
            Field::VerifyMs,
            i64::try_from(verdict.elapsed_ms).unwrap_or(i64::MAX),
        )?;
        if hard_failure.is_none() {
            self.p.line(format!(
                "verify: {} after {} attempt(s), {:.1}s",
                self.p.mark(verdict.ok),
                verdict.attempts,
                verdict.elapsed_ms as f64 / 1000.0
            ));
            self.p.verdict(&verdict);
        }

        // 7. Commit, or roll back.
        if verdict.ok {
            if !self.advance(State::Verifying, State::Committing)? {
                return self.lost();
            }
            match self.commit(&target, &to, &unit) {
                Ok(generation) => {
                    let message = format!(
                        "generation {} ({}) is active, verified, and the boot default",
                        generation.number,
                        to.display()
                    );
                    self.ledger.deploy_set(
                        self.id,
                        Field::ToGeneration,
                        generation.number as i64,
                    )?;
                    self.finish("deployed", &message)?;
                    self.p
                        .line(format!("commit: {}: {message}", self.p.mark(true)));
                    Ok(Exit::Success)
                }
                Err(e) => {
                    self.ledger.deploy_advance(
                        self.id,
                        &[State::Committing],
                        State::RollingBack,
                    )?;
                    self.roll_back(
                        &from,
                        &failed_before,
                        &format!("commit failed: {e:#}"),
                        Some(&unit),
                    )
                }
            }
        } else {
            if !self.advance(State::Verifying, State::RollingBack)? {
                return self.lost();
            }
            let reason = hard_failure
                .unwrap_or_else(|| format!("verification failed: {}", verdict.summary()));
            self.roll_back(&from, &failed_before, &reason, Some(&unit))
        }
    }

    fn workdir(&self) -> Result<PathBuf> {
        let dir = self.config.deploy_state_dir().join("deploy");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    fn verify(&self, failed_before: &BTreeSet<String>) -> Verdict {
        let d = &self.config.deploy;
        let exp = Expectations {
            config_path: &self.config.path,
            failed_before,
            health_before: self.health_before.as_ref(),
        };
        verify::until_ok(self.host, &exp, d.verify_timeout, d.verify_interval)
    }

    /// Makes the verified system the boot default, then stands the dead-man down.
    fn commit(&self, target: &Target, to: &std::path::Path, unit: &str) -> Result<Generation> {
        let generation = match target {
            Target::Build(_) => self.host.set_profile(to)?,
            Target::Generation(g) => self.host.switch_generation(g.number)?,
        };
        self.host.activate(to, Mode::Boot)?;
        self.host.cancel_timer(unit)?;
        Ok(generation)
    }

    /// Back to `from`: profile, activation, and the same verification as a deploy.
    pub fn roll_back(
        &self,
        from: &Generation,
        failed_before: &BTreeSet<String>,
        reason: &str,
        deadman_unit: Option<&str>,
    ) -> Result<Exit> {
        self.p.line(format!(
            "{}: {reason}",
            self.p.out.paint("rolling back", Tone::Warn)
        ));
        // Failures of the bad system are history: clear them so the old one is judged afresh.
        if let Ok(now) = self.host.failed_units() {
            let new: Vec<String> = now.difference(failed_before).cloned().collect();
            if let Err(e) = self.host.reset_failed(&new) {
                tracing::warn!("cannot reset failed units {new:?}: {e:#}");
            }
        }
        let restore = || -> Result<()> {
            if self.host.current_generation()?.number != from.number {
                self.host.switch_generation(from.number)?;
                self.host.activate(&from.path, Mode::Boot)?;
            }
            self.host.activate(&from.path, Mode::Test)?;
            Ok(())
        };
        let restored = restore();
        let verdict = match &restored {
            Ok(()) => self.verify(failed_before),
            Err(_) => Verdict {
                ok: false,
                attempts: 0,
                elapsed_ms: 0,
                results: Vec::new(),
            },
        };
        self.ledger
            .deploy_set(self.id, Field::RollbackChecks, json_of(&verdict.results))?;
        if let Some(unit) = deadman_unit {
            if let Err(e) = self.host.cancel_timer(unit) {
                tracing::warn!("cannot stop the dead-man switch {unit}: {e:#}");
            }
        }
        match restored {
            Ok(()) if verdict.ok => {
                let message = format!(
                    "{reason}; back on generation {} ({}), which verified",
                    from.number,
                    from.path.display()
                );
                self.finish("rolled-back", &message)?;
                self.p.line(format!("rollback: {}", self.p.mark(true)));
                self.p.verdict(&verdict);
                self.p.line(format!(
                    "{}: {message}",
                    self.p.out.paint("rolled back", Tone::Warn)
                ));
                Ok(Exit::RolledBack)
            }
            outcome => {
                let why = match outcome {
                    Err(e) => format!("re-activating it failed: {e:#}"),
                    Ok(()) => format!("it does not verify: {}", verdict.summary()),
                };
                let message = format!(
                    "{reason}; rolling back to generation {} ({}) FAILED: {why}. The host needs a person: \
                     see `cc-ci-agent deploy status` and `systemctl --failed`",
                    from.number,
                    from.path.display()
                );
                self.finish("rollback-failed", &message)?;
                self.p.verdict(&verdict);
                self.p.line(format!(
                    "{}: {message}",
                    self.p.out.paint("ROLLBACK FAILED", Tone::Bad)
                ));
                Ok(Exit::RollbackFailed)
            }
        }
    }

    /// The dead-man switch moved the row first: it owns the deploy. Wait for its verdict.
    fn lost(&self) -> Result<Exit> {
        self.p.line("the dead-man switch took this deploy over before it was confirmed; waiting for its rollback");
        let d = &self.config.deploy;
        let deadline = Instant::now() + d.verify_timeout + Duration::from_secs(300);
        loop {
            let row = self
                .ledger
                .deploy_get(self.id)?
                .context("the deploy's journal row vanished")?;
            if row.state == State::Finished {
                self.p.line(format!(
                    "dead-man switch: {}",
                    row.message.as_deref().unwrap_or_default()
                ));
                return Ok(match row.outcome.as_deref() {
                    Some("rolled-back") => Exit::RolledBack,
                    Some("rollback-failed") => Exit::RollbackFailed,
                    _ => Exit::Failure,
                });
            }
            if Instant::now() > deadline {
                anyhow::bail!("the dead-man switch has not finished rolling back deploy #{}: see `cc-ci-agent deploy status`", self.id);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn process_alive(pid: i64) -> bool {
    pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Deals with journal rows left unfinished by an agent that died. Runs under the agent lock.
///
/// An unconfirmed deploy whose dead-man switch is still pending blocks everything but a rollback
/// (the switch would otherwise roll back under the next deploy); `take_over` is that rollback,
/// which claims the row and returns the generation to go back to.
pub fn settle_unfinished(
    ledger: &Ledger,
    host: &Host,
    p: &Progress<'_>,
    take_over: bool,
) -> Result<Option<Generation>> {
    let running = host.running_system().ok();
    let mut back_to = None;
    for row in ledger.deploys_unfinished()? {
        let pending = row.deadman_unit.as_deref().is_some_and(|u| {
            host.unit_state(&format!("{u}.timer"))
                .is_ok_and(|s| s == "active")
        });
        let alive = process_alive(row.pid) && row.pid != i64::from(std::process::id());
        if State::UNCONFIRMED.contains(&row.state) && (pending || alive) {
            if !take_over {
                return Err(BusyError(format!(
                    "deploy #{} was not confirmed and its dead-man switch will roll the host back to generation {}: \
                     wait for it, or run `cc-ci-agent rollback` to do it now",
                    row.id,
                    row.from_generation.unwrap_or_default()
                ))
                .into());
            }
            if ledger.deploy_advance(row.id, &State::UNCONFIRMED, State::RollingBack)? {
                if let Some(unit) = &row.deadman_unit {
                    host.cancel_timer(unit)?;
                }
                back_to = generation_of(&row);
                ledger.deploy_finish(
                    row.id,
                    "rolled-back",
                    "not confirmed; rolled back by `cc-ci-agent rollback`",
                )?;
                p.line(format!(
                    "deploy #{} was not confirmed: rolling back to generation {} now",
                    row.id,
                    row.from_generation.unwrap_or_default()
                ));
            }
            continue;
        }
        if row.state == State::RollingBack && alive {
            return Err(BusyError(format!(
                "deploy #{} is being rolled back by pid {}",
                row.id, row.pid
            ))
            .into());
        }
        let message = describe_interrupted(&row, running.as_ref());
        ledger.deploy_finish(row.id, "interrupted", &message)?;
        p.line(format!("{}: {message}", p.out.paint("notice", Tone::Warn)));
        if p.out.is_json() {
            eprintln!("notice: {message}");
        }
    }
    Ok(back_to)
}

fn generation_of(row: &DeployRow) -> Option<Generation> {
    Some(Generation {
        number: u64::try_from(row.from_generation?).ok()?,
        path: PathBuf::from(row.from_path.as_ref()?),
    })
}

/// Says what an interrupted deploy did and where the host is now.
pub fn describe_interrupted(row: &DeployRow, running: Option<&PathBuf>) -> String {
    let stage = match row.state {
        State::Preflight | State::Building => "stopped before activating anything",
        State::Armed | State::Activating | State::Verifying => {
            "stopped before it was confirmed, and its dead-man switch is gone (a reboot?)"
        }
        State::Committing => "stopped while making the new system the boot default",
        State::RollingBack => "stopped while rolling back",
        State::Finished => "finished",
    };
    let from = row.from_path.as_deref().map(PathBuf::from);
    let to = row.to_path.as_deref().map(PathBuf::from);
    let gen = row.from_generation.unwrap_or_default();
    let place = match running {
        Some(r) if Some(r) == from.as_ref() => format!("the host runs the system it ran before (generation {gen})"),
        Some(r) if Some(r) == to.as_ref() => format!(
            "the host runs that deploy's new system {}: if it was not verified, run `cc-ci-agent rollback` to return to generation {gen}",
            r.display()
        ),
        Some(r) => format!("the host runs {}", r.display()),
        None => "the running system cannot be read".to_string(),
    };
    format!(
        "{} #{} (pid {}) {stage}; {place}",
        row.kind, row.id, row.pid
    )
}
