//! One gc run: finish what a killed run left, take the inventory, plan, delete, record.

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::directory::Directory;
use super::plan::{self, human_bytes, Action, Plan, Shortfall, Volume};
use crate::context::Context;
use crate::error::Unusable;
use crate::exit::Exit;
use crate::host::docker::{Docker, DockerVolume};
use crate::ledger::{DeletionState, GcOutcome, JobLock, Ledger};
use crate::output::{table, Answer, Output, Tone};
use crate::settings::config::Config;
use crate::settings::disk::Volumes;
use crate::settings::enrollment::Enrollment;

enum Backend {
    Directory(Directory),
    Docker(Docker),
}

impl Backend {
    fn of(volumes: &Volumes) -> Self {
        match volumes {
            Volumes::Directory { root } => Backend::Directory(Directory { root: root.clone() }),
            Volumes::Docker { docker, data_root } => Backend::Docker(Docker {
                program: docker.clone(),
                data_root: data_root.clone(),
            }),
        }
    }

    /// The volumes, with docker's last use taken from the ledger; with `record`, volumes seen in
    /// use are remembered as used now.
    fn inventory(&self, ledger: &mut Ledger, record: bool) -> Result<Vec<Volume>> {
        match self {
            Backend::Directory(d) => d.inventory(ledger.clock().wall()),
            Backend::Docker(d) => {
                let now = ledger.clock().wall();
                let mut volumes: Vec<Volume> = d
                    .inventory()?
                    .into_iter()
                    .map(|v| from_docker(v, now))
                    .collect();
                if record {
                    let used: Vec<&str> = volumes
                        .iter()
                        .filter(|v| v.in_use)
                        .map(|v| v.name.as_str())
                        .collect();
                    ledger.volumes_used_now(&used)?;
                }
                for v in &mut volumes {
                    if let Some(t) = ledger.volume_last_used(&v.name)? {
                        if let Ok(t) = humantime::parse_rfc3339_weak(&t) {
                            v.last_used = v.last_used.max(t);
                        }
                    }
                }
                Ok(volumes)
            }
        }
        .and_then(|mut volumes| {
            distrust_the_future(ledger, &mut volumes, record)?;
            Ok(volumes)
        })
    }

    fn free_bytes(&self) -> Result<u64> {
        match self {
            Backend::Directory(d) => d.free_bytes(),
            Backend::Docker(d) => d.free_bytes(),
        }
    }

    fn delete(&self, name: &str) -> Result<()> {
        match self {
            Backend::Directory(d) => d.delete(name),
            // docker's refusal of a volume in use is gc's "came into use": kept, no failure.
            Backend::Docker(d) => {
                d.delete(name)
                    .map_err(|e| match e.downcast::<crate::host::docker::InUse>() {
                        Ok(used) => super::InUse(used.0).into(),
                        Err(e) => e,
                    })
            }
        }
    }

    fn exists(&self, name: &str) -> Result<bool> {
        match self {
            Backend::Directory(d) => Ok(d.exists(name)),
            Backend::Docker(d) => d.exists(name),
        }
    }
}

/// Settles deletions a killed run began: a volume still there was never touched (kept); one gone
/// was deleted. Half-deleted directories are finished first.
fn settle_interrupted(backend: &Backend, ledger: &Ledger) -> Result<usize> {
    if let Backend::Directory(d) = backend {
        for name in d.finish_interrupted()? {
            tracing::warn!(
                volume = name,
                "finished deleting a volume an interrupted gc left"
            );
        }
    }
    let unfinished = ledger.deletions_unfinished()?;
    for d in &unfinished {
        if backend.exists(&d.volume)? {
            ledger.deletion_end(
                d.id,
                DeletionState::Kept,
                Some("the gc deleting it was interrupted first"),
            )?;
        } else {
            ledger.deletion_end(d.id, DeletionState::Deleted, None)?;
            ledger.volume_forget(&d.volume)?;
        }
    }
    Ok(unfinished.len())
}

fn budget(config: &Config) -> Result<(u64, &Volumes)> {
    match (&config.disk.budget, &config.disk.volumes) {
        (Some(b), Some(v)) => Ok((b.0, v)),
        _ => Err(Unusable(format!(
            "{}: [disk] has no budget, so gc has nothing to keep: set budget and [disk.volumes] \
             (docs/disk.md)",
            config.path.display()
        ))
        .into()),
    }
}

fn make_plan(
    config: &Config,
    ledger: &Ledger,
    volumes: Vec<Volume>,
    free: Option<u64>,
) -> Result<Plan> {
    let (budget, _) = budget(config)?;
    // A canonical protects its volume while its recipe is in the enrollment. Deleting a recipe
    // from enrollment.toml is how an operator lets its volumes go; the canonical record stays.
    let enrollment = Enrollment::load(&config.enrollment_file)?;
    let canonicals: BTreeMap<String, String> = ledger
        .canonicals()?
        .into_iter()
        .filter(|c| enrollment.get(&c.recipe).is_some())
        .map(|c| (c.recipe, c.version))
        .collect();
    Ok(plan::plan(
        volumes,
        &plan::Inputs {
            budget,
            min_free: config.disk.min_free.0,
            free,
            grace: config.disk.grace,
            now: ledger.clock().wall(),
            canonicals: &canonicals,
            pins: &config.disk.pin,
        },
    ))
}

pub fn run(ctx: &Context, dry_run: bool) -> Result<Exit> {
    let config = ctx.config()?;
    let (_, volumes) = budget(&config)?;
    let backend = Backend::of(volumes);
    let mut ledger = Ledger::open(&config.state_dir, &ctx.clock)?;
    let free = |b: &Backend| match b.free_bytes() {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!("{e:#}; min_free is not checked");
            None
        }
    };
    if dry_run {
        let inventory = backend.inventory(&mut ledger, false)?;
        let plan = make_plan(&config, &ledger, inventory, free(&backend))?;
        print(ctx, &plan, None, &[], &[], true)?;
        return Ok(exit_of(&plan, 0));
    }

    let id = ledger.gc_begin()?;
    // The same lock as a sweep's: a promotion and a gc never interleave, so a volume cannot be
    // chosen for deletion while its recipe is being promoted to it.
    let _lock = JobLock::start_job(&config.state_dir, "gc", config.lock_wait, |why| {
        ledger.gc_abort(id, GcOutcome::RefusedBusy, why)
    })?;
    let result = collect(&config, &backend, &mut ledger, id, &free);
    match result {
        Ok(c) => {
            print(ctx, &c.plan, Some(c.freed), &c.failures, &c.taken, false)?;
            Ok(exit_of(&c.plan, c.failures.len()))
        }
        Err(e) => {
            ledger.gc_abort(id, GcOutcome::Failed, &format!("{e:#}"))?;
            Err(e)
        }
    }
}

/// What a gc run did: its plan, the bytes it freed, and each deletion that failed (volume, why).
struct Collected {
    plan: Plan,
    freed: u64,
    failures: Vec<(String, String)>,
    /// Volumes a run took between the inventory and their deletion: kept.
    taken: Vec<String>,
}

fn collect(
    config: &Config,
    backend: &Backend,
    ledger: &mut Ledger,
    id: i64,
    free: &dyn Fn(&Backend) -> Option<u64>,
) -> Result<Collected> {
    let settled = settle_interrupted(backend, ledger)?;
    if settled > 0 {
        tracing::warn!("{settled} deletion(s) of an interrupted gc settled");
    }
    let inventory = backend.inventory(ledger, true)?;
    let plan = make_plan(config, ledger, inventory, free(backend))?;
    let mut freed = 0u64;
    let mut taken_bytes = 0u64;
    let mut taken = Vec::new();
    let mut failures = Vec::new();
    for d in plan.volumes.iter().filter(|d| d.action == Action::Delete) {
        let v = &d.volume;
        let row = ledger.deletion_begin(
            id,
            &v.name,
            v.recipe.as_deref(),
            v.version.as_deref(),
            v.bytes,
            &humantime::format_rfc3339_seconds(v.last_used).to_string(),
            d.reason.as_str(),
        )?;
        tracing::info!(
            volume = v.name,
            bytes = v.bytes,
            reason = d.reason.as_str(),
            "deleting"
        );
        match backend.delete(&v.name) {
            Ok(()) => {
                ledger.deletion_end(row, DeletionState::Deleted, None)?;
                ledger.volume_forget(&v.name)?;
                freed = freed.saturating_add(v.bytes);
            }
            Err(e) if e.is::<super::InUse>() => {
                tracing::info!(volume = v.name, "{e}");
                ledger.deletion_end(row, DeletionState::Kept, Some(&e.to_string()))?;
                taken_bytes = taken_bytes.saturating_add(v.bytes);
                taken.push(v.name.clone());
            }
            Err(e) => {
                let why = format!("{e:#}");
                ledger.deletion_end(row, DeletionState::Failed, Some(&why))?;
                failures.push((v.name.clone(), why));
            }
        }
    }
    // A volume kept because a run took it may leave the total over the budget after all.
    let mut plan = plan;
    let over = plan.total.saturating_sub(freed).saturating_sub(plan.budget);
    if taken_bytes > 0 && over > 0 && plan.shortfalls.is_empty() {
        plan.shortfalls.push(Shortfall::OverBudget {
            by: over,
            budget: plan.budget,
        });
    }
    record_run(ledger, id, &plan, freed, failures.is_empty())?;
    Ok(Collected {
        plan,
        freed,
        failures,
        taken,
    })
}

/// The gc run's row and its event: the outcome, the figures, the shortfalls.
fn record_run(
    ledger: &mut Ledger,
    id: i64,
    plan: &Plan,
    freed: u64,
    none_failed: bool,
) -> Result<()> {
    let outcome = if !none_failed {
        GcOutcome::SomeFailed
    } else if plan.shortfalls.is_empty() {
        GcOutcome::Ok
    } else {
        GcOutcome::Short
    };
    let shortfalls = serde_json::to_value(&plan.shortfalls)?;
    let detail = format!(
        "{} volumes, {} of a {} budget; freed {}",
        plan.volumes.len(),
        human_bytes(plan.total),
        human_bytes(plan.budget),
        human_bytes(freed)
    );
    ledger.gc_finish(
        id,
        &crate::ledger::GcFigures {
            outcome,
            budget: plan.budget,
            min_free: plan.min_free,
            free: plan.free,
            total: plan.total,
            protected: plan.protected,
            freed,
            shortfalls: &shortfalls,
            detail: &detail,
        },
    )?;
    ledger
        .record_event(
            "gc",
            outcome.as_str(),
            &serde_json::json!({ "run": id, "freed": freed, "shortfalls": shortfalls }),
        )
        .context("cannot record the gc run")?;
    Ok(())
}

fn exit_of(plan: &Plan, failures: usize) -> Exit {
    if failures > 0 {
        Exit::SomeFailed
    } else if plan.shortfalls.is_empty() {
        Exit::Success
    } else {
        Exit::Degraded
    }
}

/// How long ago, in the one unit that matters at that scale.
fn ago(d: std::time::Duration) -> String {
    match d.as_secs() {
        s if s < 60 => "just now".into(),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 2 * 86400 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86400),
    }
}

/// One volume's row: name, recipe, version, size, last use, and what gc does with it and why.
fn volume_row(d: &plan::Decided, now: SystemTime, dry_run: bool) -> Vec<(String, Option<Tone>)> {
    let v = &d.volume;
    let age = now
        .duration_since(v.last_used)
        .map_or_else(|_| "in the future".into(), ago);
    let (what, tone) = match d.action {
        Action::Delete if dry_run => ("would delete", Tone::Warn),
        Action::Delete => ("delete", Tone::Warn),
        Action::Keep if d.reason.is_protected() => ("keep", Tone::Good),
        Action::Keep => ("keep", Tone::Dim),
    };
    let mut reason = d.reason.as_str().to_string();
    if let Some(p) = v.problem.as_ref().or(v.note.as_ref()) {
        reason.push_str(&format!(": {p}"));
    }
    vec![
        (v.name.clone(), None),
        (v.recipe.clone().unwrap_or_else(|| "-".into()), None),
        (v.version.clone().unwrap_or_else(|| "-".into()), None),
        (human_bytes(v.bytes), None),
        (age, None),
        (format!("{what} ({reason})"), Some(tone)),
    ]
}

fn print(
    ctx: &Context,
    plan: &Plan,
    freed: Option<u64>,
    failures: &[(String, String)],
    taken: &[String],
    dry_run: bool,
) -> Result<()> {
    ctx.out.give(&GcAnswer {
        dry_run,
        plan,
        freed,
        kept_in_use: taken,
        failures: failures
            .iter()
            .map(|(volume, error)| Failure { volume, error })
            .collect(),
        messages: plan.shortfalls.iter().map(Shortfall::message).collect(),
        now: ctx.clock.wall(),
    })
}

/// `gc`'s answer (docs/disk.md, "The answer"): the plan, what was freed, what was kept or failed.
#[derive(schemars::JsonSchema, Serialize)]
pub(super) struct GcAnswer<'a> {
    dry_run: bool,
    plan: &'a Plan,
    /// `None` under `--dry-run`.
    freed: Option<u64>,
    kept_in_use: &'a [String],
    failures: Vec<Failure<'a>>,
    messages: Vec<String>,
    /// What "last used" is shown against.
    #[serde(skip)]
    now: SystemTime,
}

#[derive(schemars::JsonSchema, Serialize)]
struct Failure<'a> {
    volume: &'a str,
    error: &'a str,
}

impl Answer for GcAnswer<'_> {
    fn human(&self, out: &Output) -> String {
        use std::fmt::Write as _;
        let plan = self.plan;
        let mut t = format!(
            "{}: {} volumes, {} in all, {} protected; budget {}, free {} (min_free {})\n",
            if self.dry_run { "gc --dry-run" } else { "gc" },
            plan.volumes.len(),
            human_bytes(plan.total),
            human_bytes(plan.protected),
            human_bytes(plan.budget),
            plan.free.map_or_else(|| "unknown".into(), human_bytes),
            human_bytes(plan.min_free),
        );
        let rows: Vec<Vec<(String, Option<Tone>)>> = plan
            .volumes
            .iter()
            .map(|d| volume_row(d, self.now, self.dry_run))
            .collect();
        if !rows.is_empty() {
            let head = [
                "VOLUME",
                "RECIPE",
                "VERSION",
                "SIZE",
                "LAST USED",
                "DECISION",
            ];
            t.push_str(&table(out, &head, &rows));
        }
        let _ = match self.freed {
            Some(f) => {
                let deleted = plan.volumes.iter().filter(|d| d.action == Action::Delete);
                let gone = deleted
                    .count()
                    .saturating_sub(self.failures.len() + self.kept_in_use.len());
                writeln!(t, "freed {} ({gone} volumes)", human_bytes(f))
            }
            None => writeln!(t, "would free {}", human_bytes(plan.to_free)),
        };
        for v in self.kept_in_use {
            let kept = out.paint("KEPT", Tone::Good);
            let _ = writeln!(t, "{kept} {v}: a run took it since the inventory");
        }
        for f in &self.failures {
            let _ = writeln!(
                t,
                "{} {}: {}",
                out.paint("FAILED", Tone::Bad),
                f.volume,
                f.error
            );
        }
        for m in &self.messages {
            let _ = writeln!(t, "{} {m}", out.paint("degraded:", Tone::Warn));
        }
        t
    }
}

/// Where the warm volumes stand against the disk budget, as the last gc measured them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskStanding {
    /// No gc run has measured them yet.
    Unmeasured(String),
    /// Under the budget.
    Within(String),
    /// The budget or `min_free` could not be met (everything left is protected).
    Short(String),
}

/// The host's disk standing for `health`: from the last gc run that measured the volumes.
/// `None` when no budget is configured.
pub fn disk_check(config: &Config, ledger: &Ledger) -> Result<Option<DiskStanding>> {
    if config.disk.budget.is_none() {
        return Ok(None);
    }
    let Some(run) = ledger.gc_last_measured()? else {
        return Ok(Some(DiskStanding::Unmeasured(
            "no gc run has measured the volumes yet".into(),
        )));
    };
    let shortfalls: Vec<Shortfall> =
        serde_json::from_value(run.shortfalls.clone()).unwrap_or_default();
    if shortfalls.is_empty() {
        let total = run.total_bytes.unwrap_or(0).max(0) as u64;
        let budget = run.budget.unwrap_or(0).max(0) as u64;
        return Ok(Some(DiskStanding::Within(format!(
            "{} of a {} budget (gc {})",
            human_bytes(total.saturating_sub(run.freed_bytes.max(0) as u64)),
            human_bytes(budget),
            run.started_at
        ))));
    }
    let text: Vec<String> = shortfalls.iter().map(Shortfall::message).collect();
    Ok(Some(DiskStanding::Short(format!(
        "{} (gc {})",
        text.join("; "),
        run.started_at
    ))))
}

/// A last use dated in the future (a label recipe CI wrote, a clock gone back) would keep its
/// volume within grace for ever. It counts instead from the last use the agent saw itself, or
/// from the first gc that saw the date (remembered unless `record` is off, then now), and the
/// plan says so.
fn distrust_the_future(ledger: &mut Ledger, volumes: &mut [Volume], record: bool) -> Result<()> {
    let now = ledger.clock().wall();
    for v in volumes.iter_mut().filter(|v| v.last_used > now) {
        let seen = if record {
            Some(ledger.volume_seen(&v.name)?)
        } else {
            ledger.volume_last_used(&v.name)?
        };
        let counted = seen
            .and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
            .filter(|t| *t <= now)
            .unwrap_or(now);
        let note = format!(
            "last use dated {} is in the future: counted from {}, when gc first saw it",
            humantime::format_rfc3339_seconds(v.last_used),
            humantime::format_rfc3339_seconds(counted)
        );
        tracing::warn!("{}: {note}", v.name);
        v.note = Some(note);
        v.last_used = counted;
    }
    Ok(())
}

/// A docker volume as gc weighs it; `last_used` is its creation time until the ledger knows
/// better (or `now`, without a creation time). One `system df` does not list (no size) is kept,
/// and says why.
fn from_docker(v: DockerVolume, now: SystemTime) -> Volume {
    let problem = v
        .bytes
        .is_none()
        .then(|| "docker reports no size for it".to_string());
    Volume {
        in_use: v.links.is_none_or(|l| l > 0),
        recipe: v.id.as_ref().map(|i| i.0.clone()),
        version: v.id.map(|i| i.1),
        bytes: v.bytes.unwrap_or(0),
        last_used: v.created.unwrap_or(now),
        problem,
        note: None,
        name: v.name,
    }
}
