//! The probe run: choose the recipes, then one at a time (under the probe lock, never while CI
//! is busy, no faster than `probe.min_interval`): make the head, comment, wait, record.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde_json::json;

use super::plan::{choose, Choice, Fingerprint};
use super::scratch::{Mirror, Scratch};
use super::stages::Stage;
use super::watch::{StageSeen, Watch};
use crate::busy::{self, Busy};
use crate::context::Context;
use crate::deadline::Deadline;
use crate::drone::Drone;
use crate::error::Unusable;
use crate::exit::Exit;
use crate::forge;
use crate::ledger::{JobLock, Ledger, ProbeOutcome};
use crate::output::{Answer, Output};
use crate::secrets::read_token;
use crate::settings::config::Config;
use crate::settings::enrollment::{Enrollment, Recipe};

/// What a proof of `recipe` rests on (see [`Fingerprint`]).
pub fn fingerprint(
    config: &Config,
    live: &Result<BTreeSet<String>, String>,
    recipe: &Recipe,
) -> Fingerprint {
    let polled = match live {
        Ok(names) => json!(names.contains(&recipe.name)),
        Err(_) => json!("unknown"),
    };
    let p = &config.probe;
    Fingerprint {
        recipe: json!({ "upstream": recipe.upstream, "branch": recipe.branch }),
        // From the configuration, not the forge: health, which has no forge token, asks too.
        mirror: match &config.forge {
            Some(crate::settings::config::Forge::Gitea { url, org, .. }) => {
                json!({ "url": url, "org": org })
            }
            Some(crate::settings::config::Forge::Local { path }) => json!({ "path": path }),
            None => serde_json::Value::Null,
        },
        bridge: json!({
            "unit": config.bridge.unit,
            "polls_it": polled,
            "comment": p.comment,
            "ci_context": p.ci_context,
            "bridge_login": p.bridge_login,
            "drone": p.drone.as_ref().map(|d| &d.url),
        }),
    }
}

#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
struct Report {
    recipe: String,
    outcome: ProbeOutcome,
    /// Why it was probed.
    reason: String,
    pull: Option<u64>,
    head: Option<String>,
    stopped_at: Option<Stage>,
    stages: Vec<StageSeen>,
    ci_state: Option<String>,
    detail: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
struct Skipped {
    recipe: String,
    #[serde(flatten)]
    choice: Choice,
}

pub fn run(ctx: &Context, names: &[String], dry_run: bool) -> Result<Exit> {
    let config = ctx.config()?;
    let enrollment = Enrollment::load(&config.enrollment_file)?;
    // Named recipes are probed whatever their last proof.
    let named = !names.is_empty();
    let chosen = enrollment.enrolled_named(names)?;
    let forge = forge::from_config(&config)?;
    let Some(talk) = forge.discussion() else {
        return Err(Unusable(format!(
            "{}: the probe comments on pull requests, which a forge of kind = \"local\" does \
             not have: it needs kind = \"gitea\"",
            config.path.display()
        ))
        .into());
    };
    let live = crate::bridge::live_poll_repos(&config);
    let ledger = Ledger::open(&config.state_dir, &ctx.clock)?;
    let (due, skipped) = due_and_skipped(&config, &ledger, &live, chosen, named)?;
    if dry_run {
        return answer_plan(&ctx.out, &due, &skipped);
    }
    let _lock = JobLock::probe(&config.state_dir, config.lock_wait)?;
    for left in ledger.probes_interrupted()? {
        tracing::warn!(
            "{}: probe #{} of {} never ended (the agent was stopped): recorded as interrupted",
            left.recipe,
            left.id,
            left.started_at
        );
    }
    let drone = probe_drone(&config)?;
    let git = forge::git_to(forge.as_ref(), &config.mirrors);
    let mirror = Mirror {
        git: &git,
        forge: forge.as_ref(),
        talk,
        cache_dir: &config.state_dir.join("probe"),
    };
    let mut reports: Vec<Report> = Vec::new();
    for (recipe, fp, reason) in due {
        // The builds of heads probed before in this run are the probe's own, not CI at work.
        let own: Vec<(String, String)> = reports
            .iter()
            .filter_map(|r| Some((forge.full_name(&r.recipe), r.head.clone()?)))
            .collect();
        let watch = Watch {
            talk,
            drone: drone.as_ref(),
            settings: &config.probe,
            ledger: &ledger,
            full_name: forge.full_name(&recipe.name),
        };
        let report = probe_one(
            (&config, &ledger),
            (&mirror, &watch),
            (&recipe, &fp, reason),
            &own,
            &ctx.out,
        )?;
        ctx.out.progress(line(&report));
        reports.push(report);
    }
    answer(&ctx.out, &reports, &skipped)
}

/// What is due now: each recipe to probe with what its proof would rest on and why, and those
/// left alone, with why.
type Due = Vec<(Recipe, Fingerprint, String)>;

fn due_and_skipped(
    config: &Config,
    ledger: &Ledger,
    live: &Result<BTreeSet<String>, String>,
    chosen: Vec<Recipe>,
    named: bool,
) -> Result<(Due, Vec<Skipped>)> {
    let now = ledger.clock().wall();
    let mut due = Vec::new();
    let mut skipped = Vec::new();
    for recipe in chosen {
        let fp = fingerprint(config, live, &recipe);
        let last = ledger.probe_last_judged(&recipe.name)?;
        match choose(
            &recipe,
            named,
            last.as_ref(),
            &fp,
            config.probe.max_age,
            now,
        ) {
            Choice::Probe { reason } => due.push((recipe, fp, reason)),
            choice => skipped.push(Skipped {
                recipe: recipe.name.clone(),
                choice,
            }),
        }
    }
    Ok((due, skipped))
}

/// `[probe.drone]`'s client, its token read as the probe unit's credential or file.
fn probe_drone(config: &Config) -> Result<Option<Drone>> {
    let Some(d) = &config.probe.drone else {
        return Ok(None);
    };
    let credential = crate::settings::deploy::DRONE_TOKEN_CREDENTIAL;
    let token = read_token(
        d.token_file.as_deref(),
        credential,
        "probe.drone",
        &config.path,
    )?;
    Ok(Some(Drone::new(d, token, Duration::from_secs(30))))
}

/// `probe --history`: the journal's probes, newest first, read without writing anything.
pub fn history(ctx: &Context, names: &[String], limit: u32) -> Result<Exit> {
    let config = ctx.config()?;
    let enrollment = Enrollment::load(&config.enrollment_file)?;
    if let Some(n) = names.iter().find(|n| enrollment.get(n).is_none()) {
        return Err(Unusable(format!("{n:?} is not declared in the enrollment")).into());
    }
    let rows = match Ledger::open_read_only(&config.state_dir, &ctx.clock)? {
        None => Vec::new(),
        Some(ledger) if names.is_empty() => ledger.probe_history(None, limit)?,
        Some(ledger) => {
            let mut rows = Vec::new();
            for n in names {
                rows.extend(ledger.probe_history(Some(n), limit)?);
            }
            rows.sort_by_key(|r| std::cmp::Reverse(r.id));
            rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            rows
        }
    };
    ctx.out.give(&ProbeHistory { probes: rows })?;
    Ok(Exit::Success)
}

/// `probe --history`'s answer: the journal's probes, newest first.
#[derive(schemars::JsonSchema, Serialize)]
pub(super) struct ProbeHistory {
    probes: Vec<crate::ledger::ProbeRow>,
}

impl Answer for ProbeHistory {
    fn human(&self, out: &Output) -> String {
        let cells: Vec<_> = self
            .probes
            .iter()
            .map(|r| {
                let outcome = r.outcome.map_or("running", ProbeOutcome::as_str);
                vec![
                    (r.id.to_string(), None),
                    (r.recipe.clone(), None),
                    (r.started_at.clone(), None),
                    (outcome.to_string(), None),
                    (r.stopped_at.clone().unwrap_or_default(), None),
                    (r.pull.map(|p| format!("#{p}")).unwrap_or_default(), None),
                    (
                        r.head.as_deref().map_or("", crate::git::short).to_string(),
                        None,
                    ),
                    (r.ci_state.clone().unwrap_or_default(), None),
                    (r.detail.clone().unwrap_or_default(), None),
                ]
            })
            .collect();
        let header = [
            "PROBE",
            "RECIPE",
            "STARTED",
            "OUTCOME",
            "STOPPED AT",
            "PR",
            "HEAD",
            "CI",
            "DETAIL",
        ];
        crate::output::table(out, &header, &cells)
    }
}

/// Waits, on the ledger's clock, until `min_interval` (`probe.min_interval`) has passed since any
/// probe last commented on the forge.
fn wait_for_turn(min_interval: Duration, ledger: &Ledger, out: &Output) -> Result<()> {
    let Some(last) = ledger.probe_last_comment_at()? else {
        return Ok(());
    };
    let Ok(then) = humantime::parse_rfc3339(&last) else {
        return Ok(());
    };
    let clock = ledger.clock();
    let since = clock.age(then).unwrap_or_default();
    let wait = min_interval.saturating_sub(since);
    if !wait.is_zero() {
        out.progress(format!(
            "waiting {}s: probes comment at most once per probe.min_interval ({})",
            wait.as_secs(),
            humantime::format_duration(min_interval)
        ));
        clock.sleep(wait);
    }
    Ok(())
}

fn probe_one(
    (config, ledger): (&Config, &Ledger),
    (mirror, watch): (&Mirror<'_>, &Watch<'_>),
    (recipe, fp, reason): (&Recipe, &Fingerprint, String),
    own: &[(String, String)],
    out: &Output,
) -> Result<Report> {
    let name = &recipe.name;
    let mut report = Report {
        recipe: name.clone(),
        outcome: ProbeOutcome::Deferred,
        reason,
        pull: None,
        head: None,
        stopped_at: None,
        stages: Vec::new(),
        ci_state: None,
        detail: String::new(),
    };
    if let Some(check) = &config.probe.busy_check {
        busy::usable(check, "probe")?;
        let accounted = |r: &crate::drone::Running| {
            own.iter()
                .any(|(slug, head)| r.slug == *slug && r.build.after == *head)
        };
        let watched = busy::watched(config);
        if let Busy::Busy(why) | Busy::Unknown(why) =
            busy::check_beside(check, &watched, &accounted)
        {
            let id = ledger.probe_begin(name, &fp.text())?;
            report.detail = format!("CI is busy ({why}): not probed now, the next run will");
            ledger.probe_end(id, ProbeOutcome::Deferred, None, None, &report.detail)?;
            return Ok(report);
        }
    }
    wait_for_turn(config.probe.min_interval, ledger, out)?;
    let id = ledger.probe_begin(name, &fp.text())?;
    let attempt = || -> Result<(Scratch, super::watch::Ending)> {
        let deadline = Deadline::after(config.mirrors.recipe_timeout, "preparing the probe");
        let last = ledger.probe_last_pull(name)?;
        let scratch = mirror
            .prepare(recipe, (id, last), deadline)
            .context("making the probe's head and pull request")?;
        ledger.probe_target(id, scratch.pull, &scratch.head)?;
        // One bound on the comment and the wait, whatever the forge's pace.
        let deadline = Deadline::after(config.probe.timeout, "probe.timeout");
        let comment = watch.comment(id, name, &scratch, deadline)?;
        let ending = watch.wait((id, name), (&scratch, &comment), deadline)?;
        Ok((scratch, ending))
    };
    match attempt() {
        Ok((scratch, ending)) => {
            let stopped = ending.stopped_at.map(Stage::as_str);
            let state = ending.ci_state.as_deref();
            ledger.probe_end(id, ending.outcome, stopped, state, &ending.detail)?;
            report.pull = Some(scratch.pull);
            report.head = Some(scratch.head);
            report.outcome = ending.outcome;
            report.stopped_at = ending.stopped_at;
            report.stages = ending.stages;
            report.ci_state = ending.ci_state;
            report.detail = ending.detail;
        }
        Err(e) => {
            report.outcome = ProbeOutcome::Failed;
            report.detail = format!("{e:#}");
            ledger.probe_end(id, ProbeOutcome::Failed, None, None, &report.detail)?;
        }
    }
    Ok(report)
}

fn line(r: &Report) -> String {
    let stages = r
        .stages
        .iter()
        .map(|s| {
            let secs = s.after_ms as f64 / 1000.0;
            format!("{} after {secs:.1}s ({})", s.stage.as_str(), s.seen)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let on = match r.pull {
        Some(n) => format!(" on #{n}"),
        None => String::new(),
    };
    match r.outcome {
        ProbeOutcome::Proven => format!("{}: proven{on}: {stages}", r.recipe),
        ProbeOutcome::Stopped if stages.is_empty() => format!("{}: {}{on}", r.recipe, r.detail),
        ProbeOutcome::Stopped => format!("{}: {}{on} (seen: {stages})", r.recipe, r.detail),
        other => format!("{}: {}: {}", r.recipe, other.as_str(), r.detail),
    }
}

fn answer_plan(
    out: &Output,
    due: &[(Recipe, Fingerprint, String)],
    skipped: &[Skipped],
) -> Result<Exit> {
    let due = due
        .iter()
        .map(|(r, _, reason)| WouldProbe {
            recipe: r.name.clone(),
            reason: reason.clone(),
        })
        .collect();
    out.give(&Plan { due, skipped })?;
    Ok(Exit::Success)
}

/// `probe --dry-run`'s answer: what would be probed and why, and what would not.
#[derive(schemars::JsonSchema, Serialize)]
pub(super) struct Plan<'a> {
    due: Vec<WouldProbe>,
    skipped: &'a [Skipped],
}

#[derive(schemars::JsonSchema, Serialize)]
struct WouldProbe {
    recipe: String,
    reason: String,
}

impl Answer for Plan<'_> {
    fn human(&self, _out: &Output) -> String {
        let mut text = String::new();
        for d in &self.due {
            text.push_str(&format!("{}: would probe: {}\n", d.recipe, d.reason));
        }
        for s in self.skipped {
            text.push_str(&format!("{}: {}\n", s.recipe, skip_words(&s.choice)));
        }
        text
    }
}

fn skip_words(choice: &Choice) -> String {
    match choice {
        Choice::Fresh { proven_at } => format!("proven at {proven_at}: not due"),
        Choice::OptedOut => "opted out (probe = false in the enrollment)".into(),
        Choice::Probe { reason } => reason.clone(),
    }
}

/// `probe`'s answer: each recipe probed, and each one not due.
#[derive(schemars::JsonSchema, Serialize)]
pub(super) struct ProbeAnswer<'a> {
    probes: &'a [Report],
    skipped: &'a [Skipped],
}

impl ProbeAnswer<'_> {
    fn count(&self, outcome: ProbeOutcome) -> usize {
        self.probes.iter().filter(|r| r.outcome == outcome).count()
    }
}

impl Answer for ProbeAnswer<'_> {
    fn human(&self, _out: &Output) -> String {
        let mut text = String::new();
        for s in self.skipped {
            text.push_str(&format!("{}: {}\n", s.recipe, skip_words(&s.choice)));
        }
        text.push_str(&format!(
            "{} probed: {} proven, {} stopped, {} deferred, {} failed\n",
            self.probes.len(),
            self.count(ProbeOutcome::Proven),
            self.count(ProbeOutcome::Stopped),
            self.count(ProbeOutcome::Deferred),
            self.count(ProbeOutcome::Failed),
        ));
        text
    }
}

fn answer(out: &Output, reports: &[Report], skipped: &[Skipped]) -> Result<Exit> {
    let answer = ProbeAnswer {
        probes: reports,
        skipped,
    };
    out.give(&answer)?;
    Ok(if answer.count(ProbeOutcome::Failed) > 0 {
        Exit::SomeFailed
    } else if answer.count(ProbeOutcome::Stopped) > 0 {
        Exit::NotTriggerable
    } else {
        Exit::Success
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::{Duration, SystemTime};

    use crate::clock::manual;
    use crate::ledger::Ledger;
    use crate::output::{Format, Output};

    /// probe.min_interval counts from the last comment on the ledger's clock: the wait is what is
    /// left of it, slept on that clock, and nothing once it has passed. No real second goes by.
    #[test]
    fn a_probe_waits_what_is_left_of_min_interval_since_the_last_comment() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (clock, hand) = manual::at(start);
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), &clock).unwrap();
        let out = Output::new(Format::Json);
        let min = Duration::from_secs(600);
        super::wait_for_turn(min, &ledger, &out).unwrap();
        assert_eq!(hand.moved(), Duration::ZERO, "no probe commented yet");
        let id = ledger.probe_begin("plausible", "{}").unwrap();
        ledger.probe_commented(id, 7).unwrap();
        hand.advance(Duration::from_secs(240));
        super::wait_for_turn(min, &ledger, &out).unwrap();
        assert_eq!(hand.moved(), min, "waited the 360 s left");
        super::wait_for_turn(min, &ledger, &out).unwrap();
        assert_eq!(hand.moved(), min, "its turn has come: no wait");
    }
}
