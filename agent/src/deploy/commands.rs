//! The deploy subcommands: set up config, host, lock and journal, run the steps, print the outcome.

use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::interrupted::settle_unfinished;
use super::machine::Live;
use super::observer::{Event, Observer, Printer};
use super::steps::{Deadman, Deploy, Options, Target};
use crate::clock::Clock;
use crate::context::Context;
use crate::error::Unusable;
use crate::exit::Exit;
use crate::host::{Generation, Host};
use crate::ledger::{DeployRow, Field, JobLock, Ledger, Outcome, Stage};
use crate::output::{table, Answer, Output, Tone};
use crate::settings::config::{Config, HookEvent};
use crate::settings::deploy::FlakeRef;

/// How long the dead-man waits for the deploy that armed it to finish on its own.
const DEADMAN_LOCK_WAIT: Duration = Duration::from_secs(60);

pub(super) fn host_of(config: &Config) -> Result<(Host, Generation)> {
    let host = Host::from_settings(&config.deploy).map_err(|e| Unusable(format!("{e:#}")))?;
    let current = host
        .current_generation()
        .map_err(|e| Unusable(format!("{e:#}")))?;
    Ok((host, current))
}

/// Each recipe's health verdict now, before anything changes; `None` if it cannot be told, in
/// which case verification makes no health comparison.
pub(super) fn health_picture(
    config: &Config,
    clock: &Clock,
) -> Option<std::collections::BTreeMap<String, crate::health::Verdict>> {
    crate::health::build(config, clock)
        .ok()
        .map(|r| crate::health::verdicts(&r))
}

/// Tells the hooks how a deploy or rollback ended.
pub(super) fn announce(config: &Config, ledger: &Ledger, id: i64) {
    let Ok(Some(row)) = ledger.deploy_get(id) else {
        return;
    };
    // For health, which cannot read root's journal: recorded above, published here.
    crate::published::write(&config.state_dir, &crate::published::DeployReport::of(&row));
    let details = serde_json::to_value(&row).unwrap_or_default();
    crate::hooks::fire(config, ledger.clock(), HookEvent::Deploy, details.clone());
    if row.pulled_from.is_some() {
        crate::hooks::fire(
            config,
            ledger.clock(),
            HookEvent::DeployPulled,
            details.clone(),
        );
    }
    match row.outcome {
        Some(Outcome::RefusedDiverged) => {
            crate::hooks::fire(
                config,
                ledger.clock(),
                HookEvent::DeployRefusedDiverged,
                details.clone(),
            );
        }
        Some(Outcome::RefusedUnsigned) => {
            crate::hooks::fire(
                config,
                ledger.clock(),
                HookEvent::DeployRefusedUnsigned,
                details.clone(),
            );
        }
        _ => {}
    }
    if row.outcome.is_some_and(Outcome::went_back) {
        crate::hooks::fire(config, ledger.clock(), HookEvent::Rollback, details);
    }
}

pub(super) fn finish_output(
    ctx: &Context,
    ledger: &Ledger,
    id: i64,
    outcome: Outcome,
) -> Result<Exit> {
    let exit = super::exit_of(outcome);
    // People saw the steps as they went; a script gets the journal row.
    let deploy = ledger.deploy_get(id)?;
    ctx.out.give(&Deployed {
        deploy,
        exit_code: exit as u8,
    })?;
    Ok(exit)
}

/// A deploy's or rollback's answer: its journal row and its exit code. People saw the steps as
/// they went, so their form is empty.
#[derive(schemars::JsonSchema, Serialize)]
pub(super) struct Deployed {
    deploy: Option<DeployRow>,
    exit_code: u8,
}

impl Answer for Deployed {
    fn human(&self, _out: &Output) -> String {
        String::new()
    }
}

/// The deploy journal. Root deploys the host, so what it reads back from its journal must be
/// something only root could have written: recipe CI runs as the owner of `state_dir`.
pub(crate) fn open_journal(config: &Config, clock: &Clock) -> Result<Ledger> {
    let dir = config.deploy_state_dir();
    if rustix::process::geteuid().is_root() {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the deploy journal's directory {}",
                dir.display()
            )
        })?;
        if let Err(why) = crate::fsutil::Dir::open(dir)?.check_root_only() {
            return Err(Unusable(format!(
                "{}: the deploy runs as root, and its journal's directory {why}: set [deploy] \
                 state_dir to a directory only root can write, such as /var/lib/cc-ci-deploy",
                config.path.display(),
            ))
            .into());
        }
    }
    Ledger::open(dir, clock)
}

/// `--flake`, else `deploy.flake`, relative to the working directory.
pub(super) fn flake_of(config: &Config, flake: Option<String>) -> Result<FlakeRef> {
    let written = flake.unwrap_or_else(|| config.deploy.flake.clone());
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    Ok(FlakeRef::parse(&written, &cwd).map_err(Unusable)?)
}

pub fn deploy(ctx: &Context, flake: Option<String>, opts: Options) -> Result<Exit> {
    let config = ctx.config()?;
    let flake = flake_of(&config, flake)?;
    let (host, _) = host_of(&config)?;
    if let (Some(check), false) = (&config.deploy.busy_check, opts.force) {
        crate::busy::usable(check, "deploy")?;
    }
    let _lock = JobLock::acquire(&config.state_dir, "deploy")?;
    let ledger = open_journal(&config, &ctx.clock)?;
    let printer = Printer { out: &ctx.out };
    settle_unfinished(&ledger, &host, &printer, false)?;
    run_deploy(
        ctx,
        &config,
        (&host, &ledger, &printer),
        flake,
        (opts, None),
    )
}

/// One deploy of `flake`, its journal row begun here: the steps, the hooks, the answer.
pub(super) fn run_deploy(
    ctx: &Context,
    config: &Config,
    (host, ledger, printer): (&Host, &Ledger, &Printer<'_>),
    flake: FlakeRef,
    (opts, pulled_from): (Options, Option<&str>),
) -> Result<Exit> {
    let id = ledger.deploy_begin("deploy", Some(&flake.to_arg()))?;
    // Pulled before the row began (`--auto`): the row still says from where.
    if let Some(from) = pulled_from {
        ledger.deploy_set(id, Field::PulledFrom, from)?;
    }
    printer.on(&Event::Line(format!("deploy #{id}")));
    let checks = Live {
        config,
        machine: host,
        clock: ledger.clock(),
        health_before: health_picture(config, ledger.clock()),
    };
    let d = steps(config, id, ledger, host, &checks, printer)?;
    let outcome = guard(&d, d.run(Target::Build(flake), opts))?;
    announce(config, ledger, id);
    finish_output(ctx, ledger, id, outcome)
}

/// The state machine for journal row `id`, on the real host.
fn steps<'a>(
    config: &Config,
    id: i64,
    journal: &'a Ledger,
    host: &'a Host,
    checks: &'a Live<'a>,
    observer: &'a dyn Observer,
) -> Result<Deploy<'a>> {
    let exe = std::env::current_exe()
        .context("cannot find the agent's own executable for the dead-man switch")?;
    let argv = vec![
        exe.to_string_lossy().into_owned(),
        "--config".into(),
        config.path.to_string_lossy().into_owned(),
        "deploy".into(),
        "deadman".into(),
        id.to_string(),
    ];
    Ok(Deploy {
        id,
        journal,
        machine: host,
        checks,
        observer,
        deadman: Deadman {
            after: config.deploy.confirm_timeout,
            argv,
        },
        workdir: config.deploy_state_dir().join("deploy"),
        lost_wait: config.deploy.verify_timeout + Duration::from_secs(300),
    })
}

pub fn rollback(ctx: &Context, to: Option<u64>, force: bool) -> Result<Exit> {
    let config = ctx.config()?;
    let (host, current) = host_of(&config)?;
    let _lock = JobLock::acquire(&config.state_dir, "rollback")?;
    let ledger = open_journal(&config, &ctx.clock)?;
    let printer = Printer { out: &ctx.out };
    let unconfirmed_from = settle_unfinished(&ledger, &host, &printer, true)?;
    let generations = host.generations()?;
    let target = match (to, unconfirmed_from) {
        (Some(n), _) => generations
            .iter()
            .find(|g| g.number == n)
            .cloned()
            .ok_or_else(|| {
                let known = generations
                    .iter()
                    .map(|g| g.number.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                Unusable(format!(
                    "there is no generation {n} (the profile has: {known})"
                ))
            })?,
        (None, Some(g)) => g,
        (None, None) => generations
            .iter()
            .rev()
            .find(|g| g.number < current.number)
            .cloned()
            .ok_or_else(|| {
                Unusable(format!(
                    "generation {} is the oldest: there is nothing to roll back to",
                    current.number
                ))
            })?,
    };
    let id = ledger.deploy_begin("rollback", None)?;
    printer.on(&Event::Line(format!(
        "rollback #{id}: to generation {} ({})",
        target.number,
        target.path.display()
    )));
    let checks = Live {
        config: &config,
        machine: &host,
        clock: ledger.clock(),
        health_before: health_picture(&config, ledger.clock()),
    };
    let d = steps(&config, id, &ledger, &host, &checks, &printer)?;
    // An operator's rollback that verifies is "deployed": exit 0, not "rolled back".
    let outcome = guard(
        &d,
        d.run(
            Target::Generation(target),
            Options {
                dry_run: false,
                force,
                pull: false,
            },
        ),
    )?;
    announce(&config, &ledger, id);
    finish_output(ctx, &ledger, id, outcome)
}

/// Run by the transient timer a deploy arms. Does nothing if the deploy was confirmed.
pub fn deadman(ctx: &Context, id: i64) -> Result<Exit> {
    let config = ctx.config()?;
    let (host, _) = host_of(&config)?;
    // If the deploy that armed us is alive, let it finish: it confirms or rolls back itself.
    let _lock = match JobLock::acquire_wait(&config.state_dir, "deploy-deadman", DEADMAN_LOCK_WAIT)
    {
        Ok(lock) => Some(lock),
        Err(e) => {
            tracing::warn!("dead-man for deploy #{id}: proceeding without the lock: {e:#}");
            None
        }
    };
    let ledger = open_journal(&config, &ctx.clock)?;
    let row = ledger
        .deploy_get(id)?
        .with_context(|| format!("no deploy #{id} in the journal"))?;
    if !ledger.deploy_advance(id, &Stage::UNCONFIRMED, Stage::RollingBack)? {
        crate::say!(
            "deploy #{id} is {} ({}): nothing to roll back",
            row.state.as_str(),
            row.outcome.map_or("running", Outcome::as_str)
        );
        return Ok(Exit::Success);
    }
    let from = Generation {
        number: u64::try_from(row.from_generation.unwrap_or_default()).unwrap_or_default(),
        path: row.from_path.clone().unwrap_or_default().into(),
    };
    let failed_before = serde_json::from_value(row.failed_before.clone()).unwrap_or_default();
    let printer = Printer { out: &ctx.out };
    let checks = Live {
        config: &config,
        machine: &host,
        clock: ledger.clock(),
        // The new system is already active: there is no "before" to compare with.
        health_before: None,
    };
    let d = steps(&config, id, &ledger, &host, &checks, &printer)?;
    let reason = format!(
        "the dead-man switch fired: deploy #{id} was not confirmed within {}s",
        config.deploy.confirm_timeout.as_secs()
    );
    let outcome = guard(&d, d.roll_back(&from, &failed_before, &reason, None))?;
    announce(&config, &ledger, id);
    Ok(super::exit_of(outcome))
}

/// An error escaping the steps still ends its journal row.
fn guard(d: &Deploy<'_>, result: Result<Outcome>) -> Result<Outcome> {
    if let Err(e) = &result {
        let still_open = d
            .journal
            .deploy_get(d.id)
            .ok()
            .flatten()
            .is_some_and(|r| r.state != Stage::Finished);
        if still_open {
            let _ = d
                .journal
                .deploy_finish(d.id, Outcome::Failed, &format!("{e:#}"));
        }
    }
    result
}

pub fn status(ctx: &Context) -> Result<Exit> {
    let config = ctx.config()?;
    let ledger = open_journal(&config, &ctx.clock)?;
    ctx.out.give(&Status {
        unfinished: ledger.deploys_unfinished()?,
        last: ledger.deploy_history(1)?.into_iter().next(),
    })?;
    Ok(Exit::Success)
}

/// `deploy status`'s answer: the last deploy, and any left unfinished.
#[derive(schemars::JsonSchema, Serialize)]
pub(super) struct Status {
    last: Option<DeployRow>,
    unfinished: Vec<DeployRow>,
}

impl Answer for Status {
    fn human(&self, out: &Output) -> String {
        let mut text = match &self.last {
            None => "no deploys yet\n".to_string(),
            Some(row) => row_text(out, row),
        };
        let last = self.last.as_ref().map(|l| l.id);
        for row in self.unfinished.iter().filter(|r| Some(r.id) != last) {
            text.push('\n');
            text.push_str(&row_text(out, row));
        }
        text
    }
}

fn row_text(out: &Output, row: &DeployRow) -> String {
    use std::fmt::Write as _;
    let outcome = row.outcome.map_or_else(
        || format!("unfinished ({})", row.state.as_str()),
        |o| o.as_str().to_string(),
    );
    let tone = match row.outcome {
        Some(Outcome::Deployed | Outcome::Unchanged | Outcome::DryRun) => Tone::Good,
        Some(Outcome::RolledBack | Outcome::BuildFailed) => Tone::Warn,
        Some(o) if o.is_refusal() => Tone::Warn,
        _ => Tone::Bad,
    };
    let mut t = String::new();
    let _ = writeln!(t, "{} #{}: {}", row.kind, row.id, out.paint(&outcome, tone));
    let finished = row.finished_at.as_deref().unwrap_or("-");
    let _ = writeln!(t, "  started   {}  finished {finished}", row.started_at);
    if let Some(flake) = &row.flake {
        let commit = row.flake_commit.as_deref().map_or("-", crate::git::short);
        let lock = row.flake_lock.as_deref().map_or("-", crate::git::short);
        let _ = writeln!(t, "  flake     {flake} at {commit} (flake.lock {lock})");
    }
    let gen = |g: Option<i64>| g.map_or("-".into(), |g| g.to_string());
    for (what, g, path) in [
        ("from", row.from_generation, &row.from_path),
        ("to", row.to_generation, &row.to_path),
    ] {
        let path = path.as_deref().unwrap_or("-");
        let _ = writeln!(t, "  {what:<9} generation {} {path}", gen(g));
    }
    if let Ok(c) = serde_json::from_value::<crate::host::changes::Changes>(row.changes.clone()) {
        let _ = writeln!(t, "  changes   {}", c.summary());
    }
    if let Some(m) = &row.message {
        let _ = writeln!(t, "  {m}");
    }
    t
}

pub fn history(ctx: &Context, limit: u32) -> Result<Exit> {
    let config = ctx.config()?;
    let ledger = open_journal(&config, &ctx.clock)?;
    ctx.out.give(&History {
        deploys: ledger.deploy_history(limit)?,
    })?;
    Ok(Exit::Success)
}

/// `deploy history`'s answer: the newest deploys and rollbacks first.
#[derive(schemars::JsonSchema, Serialize)]
pub(super) struct History {
    deploys: Vec<DeployRow>,
}

impl Answer for History {
    fn human(&self, out: &Output) -> String {
        let cells: Vec<_> = self
            .deploys
            .iter()
            .map(|r| {
                let g = |g: Option<i64>| g.map_or("-".into(), |g| g.to_string());
                vec![
                    (r.id.to_string(), None),
                    (r.kind.clone(), None),
                    (r.started_at.clone(), None),
                    (
                        r.outcome
                            .map_or(r.state.as_str(), Outcome::as_str)
                            .to_string(),
                        None,
                    ),
                    (
                        format!("{} → {}", g(r.from_generation), g(r.to_generation)),
                        None,
                    ),
                    (
                        r.flake_commit
                            .as_deref()
                            .map_or("-", crate::git::short)
                            .to_string(),
                        None,
                    ),
                ]
            })
            .collect();
        table(
            out,
            &["ID", "KIND", "STARTED", "OUTCOME", "GENERATION", "COMMIT"],
            &cells,
        )
    }
}
