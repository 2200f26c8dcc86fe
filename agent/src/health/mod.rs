//! `cc-ci-agent health`: is every recipe that should be tested actually testable? Answered from
//! local state (the enrollment, the live bridge, the journal of mirror syncs and sweeps, the test
//! suites), per recipe and for the host.

mod delivery;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::clock::Clock;
use crate::context::Context;
use crate::exit::Exit;
use crate::fsutil::publish;
use crate::ledger::{Ledger, MirrorResult, RunResult, SweepOutcome};
use crate::output::{table, Answer, Output, Tone};
use crate::settings::config::Config;
use crate::settings::enrollment::{Enrollment, Recipe, TestPolicy};

pub const SCHEMA: &str = "cc-ci.health/v1";

#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    /// Could not be told (e.g. no tests directory configured).
    Unknown,
    Warn,
    Fail,
}

#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Healthy,
    Degraded,
    Failed,
}

#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub reason: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct RecipeHealth {
    pub recipe: String,
    pub enrolled: bool,
    /// `None` for a recipe declared but not enrolled: it is not expected to be testable.
    pub verdict: Option<Verdict>,
    pub checks: Vec<Check>,
    /// The last judged run's degree and the tiers it failed (docs/sweep.md, "Greenness").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub greenness: Option<Greenness>,
}

/// A run's greenness as the health report carries it.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct Greenness {
    pub tag: String,
    pub result: RunResult,
    /// 0 green … 1 fully broken.
    pub degree: f64,
    /// The expected tiers that were not green, each with why.
    pub failing: Vec<FailingTier>,
}

#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct FailingTier {
    pub tier: String,
    pub reason: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    /// Set when the report is queued for the bridge: its id and sequence number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub generated_at: String,
    pub verdict: Verdict,
    pub recipes: Vec<RecipeHealth>,
    /// Checks of the host itself, not of one recipe (the disk budget).
    pub host: Vec<Check>,
}

fn check(name: &'static str, status: Status, reason: impl Into<String>) -> Check {
    Check {
        name,
        status,
        reason: reason.into(),
    }
}

/// The report goes to stdout, health.json and the bridge, and its reasons quote what recipe CI
/// wrote (a run's detail, a tier's failing test): a token of the agent's in them is not repeated.
/// A sweep records runs redacted already; this covers runs recorded before it did.
fn redact(recipes: &mut [RecipeHealth], host: &mut [Check], known: &crate::secrets::Known) {
    for c in host
        .iter_mut()
        .chain(recipes.iter_mut().flat_map(|r| r.checks.iter_mut()))
    {
        c.reason = known.redact(&c.reason);
    }
    for r in recipes {
        for t in r.greenness.iter_mut().flat_map(|g| g.failing.iter_mut()) {
            t.reason = known.redact(&t.reason);
        }
    }
}

/// How long ago a recorded time was, by the ledger's clock; `None` for a time in the future.
fn age(clock: &Clock, rfc3339: &str) -> Option<Duration> {
    clock.age(humantime::parse_rfc3339(rfc3339).ok()?)
}

type Live = std::collections::BTreeMap<String, (crate::mirrors::Standing, String)>;

/// What every recipe's checks read, gathered once per report.
#[derive(Clone, Copy)]
struct Inputs<'a> {
    config: &'a Config,
    ledger: &'a Ledger,
    live: &'a Result<BTreeSet<String>, String>,
    mirrors: Option<&'a Live>,
    /// Whether any probe ever ran: until one has, nothing is said of triggerability.
    probing: bool,
}

fn recipe_health(inputs: Inputs<'_>, r: &Recipe) -> Result<RecipeHealth> {
    let Inputs {
        config,
        ledger,
        live,
        mirrors,
        probing,
    } = inputs;
    if !r.enrolled {
        return Ok(RecipeHealth {
            recipe: r.name.clone(),
            enrolled: false,
            verdict: None,
            checks: Vec::new(),
            greenness: None,
        });
    }
    let mut checks = vec![
        check("declared", Status::Ok, "in the enrollment"),
        bridge_check(live, r),
        mirror_check(config, ledger, mirrors, r)?,
        tests_check(config, r),
    ];
    let mut greenness = None;
    if r.canonical {
        checks.push(canonical_check(ledger, r)?);
        if let Some((last, g)) = last_sweep(ledger, r)? {
            checks.push(last);
            greenness = g;
        }
    }
    if probing {
        checks.extend(triggerable(config, ledger, live, r)?);
    }
    let worst = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
    let verdict = match worst {
        Status::Ok => Verdict::Healthy,
        Status::Unknown | Status::Warn => Verdict::Degraded,
        Status::Fail => Verdict::Failed,
    };
    Ok(RecipeHealth {
        recipe: r.name.clone(),
        enrolled: true,
        verdict: Some(verdict),
        checks,
        greenness,
    })
}

/// Whether the live bridge polls the recipe's mirror.
fn bridge_check(live: &Result<BTreeSet<String>, String>, r: &Recipe) -> Check {
    match live {
        Ok(names) if names.contains(&r.name) => {
            check("bridge", Status::Ok, "the live bridge polls it")
        }
        Ok(_) => check(
            "bridge",
            Status::Fail,
            "enrolled, but the live bridge does not poll it: deploy to apply the enrollment",
        ),
        Err(e) => check(
            "bridge",
            Status::Unknown,
            format!("the live bridge's POLL_REPOS cannot be read: {e}"),
        ),
    }
}

/// The mirror as asked now (`mirrors`, with `--live`), else as the last sync recorded it.
fn mirror_check(
    config: &Config,
    ledger: &Ledger,
    mirrors: Option<&Live>,
    r: &Recipe,
) -> Result<Check> {
    if let Some((standing, detail)) = mirrors.and_then(|m| m.get(&r.name)) {
        use crate::mirrors::Standing;
        let status = match standing {
            Standing::InSync => Status::Ok,
            Standing::Behind => Status::Warn,
            _ => Status::Fail,
        };
        let name = serde_json::to_value(standing)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        return Ok(check(
            "mirror",
            status,
            format!("{name} (asked now): {detail}"),
        ));
    }
    Ok(match ledger.mirror_state(&r.name)? {
        None => check(
            "mirror",
            Status::Warn,
            "never synced: run `cc-ci-agent mirrors sync`",
        ),
        Some(m) if m.result == MirrorResult::Failed => check(
            "mirror",
            Status::Fail,
            format!("the last sync failed: {}", m.error.unwrap_or_default()),
        ),
        Some(m) => match age(ledger.clock(), &m.synced_at) {
            Some(a) if a > config.health.stale_after => check(
                "mirror",
                Status::Warn,
                format!(
                    "last synced {} ago ({})",
                    humantime::format_duration(Duration::from_secs(a.as_secs())),
                    m.synced_at
                ),
            ),
            _ => check(
                "mirror",
                Status::Ok,
                format!("{} at {}", m.result, m.synced_at),
            ),
        },
    })
}

fn tests_check(config: &Config, r: &Recipe) -> Check {
    match (&r.tests, &config.tests_dir) {
        (TestPolicy::Exempt { reason }, _) => {
            check("tests", Status::Warn, format!("exempt: {reason}"))
        }
        (TestPolicy::Required, None) => check("tests", Status::Unknown, "no tests_dir configured"),
        (TestPolicy::Required, Some(dir)) if dir.join(&r.name).is_dir() => {
            check("tests", Status::Ok, "suite present")
        }
        (TestPolicy::Required, Some(dir)) => check(
            "tests",
            Status::Fail,
            format!("no suite at {}", dir.join(&r.name).display()),
        ),
    }
}

fn canonical_check(ledger: &Ledger, r: &Recipe) -> Result<Check> {
    let canonical = ledger.canonical(&r.name)?;
    // A demotion stands until a release is promoted after it.
    let demoted = ledger
        .mirror_events(&r.name, 200)?
        .into_iter()
        .find(|e| e.kind == "canonical-demoted" || e.kind == "promoted")
        .filter(|e| e.kind == "canonical-demoted");
    Ok(match (canonical, demoted) {
        (_, Some(e)) => check(
            "canonical",
            Status::Warn,
            format!("{} ({}); the next green release ends this", e.detail, e.at),
        ),
        (Some(c), None) => {
            let days = age(ledger.clock(), &c.promoted_at).map_or(String::new(), |a| {
                format!(", {} days old", a.as_secs() / 86400)
            });
            check(
                "canonical",
                Status::Ok,
                format!("{} at {}{days}", c.version, crate::git::short(&c.commit)),
            )
        }
        (None, None) => check(
            "canonical",
            Status::Warn,
            "none yet: upgrade tests have no base",
        ),
    })
}

/// The last run's check, and its greenness once it has ended; `None` before any run.
fn last_sweep(ledger: &Ledger, r: &Recipe) -> Result<Option<(Check, Option<Greenness>)>> {
    let Some(run) = ledger.history(&r.name, 1)?.into_iter().next() else {
        return Ok(None);
    };
    let tag = run.tag.clone().unwrap_or_default();
    let greenness = if run.result == RunResult::Running {
        None
    } else {
        let failing = ledger
            .run_tiers(run.id)?
            .iter()
            .filter(|t| t.judged() && !t.green)
            .map(|t| FailingTier {
                tier: t.tier.clone(),
                reason: t.why_not_green(),
            })
            .collect();
        Some(Greenness {
            tag: tag.clone(),
            result: run.result,
            degree: run.greenness.unwrap_or(1.0),
            failing,
        })
    };
    let last = match run.result {
        RunResult::Green => check("last sweep", Status::Ok, format!("{tag} green")),
        RunResult::Running => check("last sweep", Status::Ok, format!("{tag} running")),
        other @ (RunResult::Red | RunResult::Error) => check(
            "last sweep",
            Status::Warn,
            format!("{tag} {other}: {}", run.detail.unwrap_or_default()),
        ),
    };
    Ok(Some((last, greenness)))
}

/// Whether a probe proved `!testme` answered on the recipe's mirror (docs/probe.md), for a recipe
/// that has not opted out.
fn triggerable(
    config: &Config,
    ledger: &Ledger,
    live: &Result<BTreeSet<String>, String>,
    r: &Recipe,
) -> Result<Option<Check>> {
    if !r.probe {
        return Ok(None);
    }
    let name = "triggerable";
    let Some(last) = ledger.probe_last_judged(&r.name)? else {
        return Ok(Some(check(
            name,
            Status::Warn,
            format!("never proven: run `cc-ci-agent probe {}`", r.name),
        )));
    };
    let at = last.finished_at.clone().unwrap_or_default();
    if last.outcome == Some(crate::ledger::ProbeOutcome::Stopped) {
        return Ok(Some(check(
            name,
            Status::Fail,
            format!(
                "the last probe ({at}) {}",
                last.detail.unwrap_or_else(|| "stopped".into())
            ),
        )));
    }
    let fingerprint = crate::probe::fingerprint(config, live, r);
    let changed = fingerprint.changed_since(&last.fingerprint);
    let stale = age(ledger.clock(), &at).is_none_or(|a| a > config.probe.max_age);
    Ok(Some(if !changed.is_empty() {
        check(
            name,
            Status::Warn,
            format!(
                "proven at {at}, but {} changed since: probe it again",
                changed.join(" and ")
            ),
        )
    } else if stale {
        check(
            name,
            Status::Warn,
            format!("proven at {at}, longer ago than probe.max_age: probe it again"),
        )
    } else {
        check(
            name,
            Status::Ok,
            format!(
                "proven at {at}: `!testme` started CI, which reported {}",
                last.ci_state.as_deref().unwrap_or("back")
            ),
        )
    }))
}

/// The other direction of the `bridge` check: names the live bridge polls that are neither an
/// enrolled recipe nor in `[bridge] also_poll`.
fn polled_but_not_enrolled(
    enrollment: &Enrollment,
    live: &Result<BTreeSet<String>, String>,
) -> Option<String> {
    let names = live.as_ref().ok()?;
    let extra: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| {
            !enrollment.enrolled().any(|r| r.name == *n)
                && !enrollment.also_poll.iter().any(|a| a == n)
        })
        .collect();
    (!extra.is_empty()).then(|| {
        format!(
            "the live bridge polls {}, which the enrollment neither enrolls nor lists in [bridge] also_poll: deploy to apply the enrollment, or declare them",
            extra.join(", ")
        )
    })
}

/// The last deploy, as the deploy published it (health cannot read root's journal): how it ended,
/// and whether the host runs what upstream's branch names.
fn deploy_check(r: &crate::published::DeployReport) -> (Status, String) {
    use crate::ledger::Outcome;
    let short = |c: &Option<String>| c.as_deref().map_or("-", crate::git::short).to_string();
    let said = format!(
        "deploy #{} {} at {}: {}",
        r.id,
        r.outcome.as_deref().unwrap_or("unfinished"),
        r.finished_at.as_deref().unwrap_or("-"),
        r.message.as_deref().unwrap_or_default()
    );
    let status = match r.outcome() {
        Some(Outcome::Deployed | Outcome::Unchanged | Outcome::DryRun) => Status::Ok,
        Some(Outcome::RollbackFailed | Outcome::Failed) | None => Status::Fail,
        Some(_) => Status::Warn,
    };
    let Some(upstream) = &r.upstream_commit else {
        return (status, said);
    };
    let checked = r.checked_at.as_deref().unwrap_or("-");
    match r.behind {
        Some(0) => (
            status,
            format!(
                "{said}; the host runs upstream's head {} (as of {checked})",
                short(&r.upstream_commit)
            ),
        ),
        behind => (
            status.max(Status::Warn),
            format!(
                "{said}; upstream's branch is at {}, {} the running commit (as of {checked})",
                crate::git::short(upstream),
                behind.map_or("ahead of".to_string(), |n| format!(
                    "{n} commit(s) ahead of"
                ))
            ),
        ),
    }
}

/// Who recipe CI runs as, where the sweep runs CI at all: a user of its own (`[sweep] run_as`),
/// or the agent's user, which leaves the ledger, the outbox, the page and the agent's tokens
/// within CI's reach (docs/reliability.md): a warning, so that a host set up that way says so.
fn ci_user_check(config: &Config) -> Option<(Status, String)> {
    config.sweep.command.as_ref()?;
    Some(match &config.sweep.run_as {
        Some(user) => (
            Status::Ok,
            format!("recipe CI runs as {user}, a user of its own"),
        ),
        None => (
            Status::Warn,
            "recipe CI runs as the agent's own user: it can write the ledger and read the \
             agent's tokens; set [sweep] run_as to a user of its own (docs/reliability.md)"
                .to_string(),
        ),
    })
}

/// The sweep as a whole: a sweep that was refused is a week's releases not judged, and a sweep
/// over no canonical recipe is green timers that promote nothing (the "hollow" sweep a real host
/// ran for months). `None` when no recipe is canonical and no sweep ever ran: nothing to say.
fn sweep_check(
    enrollment: &Enrollment,
    ledger: &Ledger,
    within: Option<Duration>,
) -> Result<Option<(Status, String)>> {
    let canonical = enrollment.enrolled().filter(|r| r.canonical).count();
    let recent = ledger.sweeps(100)?;
    let last = recent.first().cloned();
    // With the sweep's period known: the newest sweep that ran to its end is recent enough.
    if let (Some(within), true) = (within, canonical > 0) {
        let done = recent
            .iter()
            .find(|s| s.outcome == Some(SweepOutcome::Done));
        let late = done
            .and_then(|s| age(ledger.clock(), &s.started_at))
            .is_none_or(|a| a > within);
        if late {
            let since = done.map_or("never".to_string(), |s| format!("last at {}", s.started_at));
            return Ok(Some((
                Status::Warn,
                format!(
                    "no sweep has completed within health.sweep_within ({}; {since}): the timer may be off, or every sweep was refused",
                    humantime::format_duration(within)
                ),
            )));
        }
    }
    Ok(match (canonical, last) {
        (0, None) => None,
        (0, Some(_)) => Some((
            Status::Warn,
            "sweeps run, but no enrolled recipe has canonical = true: they judge nothing and \
             promote nothing (`enrollment set RECIPE --canonical`)"
                .into(),
        )),
        (_, None) => Some((
            Status::Warn,
            "no sweep has run yet: canonical recipes have no judged release".into(),
        )),
        (_, Some(s)) => match s.outcome {
            Some(o) if o.is_refusal() => Some((
                Status::Warn,
                format!(
                    "the last sweep ({}) was refused ({o}): {}; this period's releases are not judged",
                    s.started_at,
                    s.detail.unwrap_or_default()
                ),
            )),
            Some(SweepOutcome::Failed) => Some((
                Status::Warn,
                format!(
                    "the last sweep ({}) failed: {}",
                    s.started_at,
                    s.detail.unwrap_or_default()
                ),
            )),
            Some(o) => Some((Status::Ok, format!("last sweep {} ({o})", s.started_at))),
            None => Some((Status::Ok, format!("a sweep is running since {}", s.started_at))),
        },
    })
}

pub fn build(config: &Config, clock: &Clock) -> Result<Report> {
    build_with(config, clock, false)
}

/// With `live_mirrors`, each enrolled recipe's mirror is asked now instead of read from the
/// last sync.
pub fn build_with(config: &Config, clock: &Clock, live_mirrors: bool) -> Result<Report> {
    let ledger = Ledger::open(&config.state_dir, clock)?;
    let known = crate::secrets::Known::of(config);
    build_from(config, &ledger, live_mirrors, &known)
}

/// [`build_with`] on a ledger the caller has open (the status page reads more from it).
/// `known`: the agent's tokens, kept out of the report's reasons.
pub fn build_from(
    config: &Config,
    ledger: &Ledger,
    live_mirrors: bool,
    known: &crate::secrets::Known,
) -> Result<Report> {
    let enrollment = Enrollment::load(&config.enrollment_file)?;
    let live = crate::bridge::live_poll_repos(config);
    let mirrors: Option<Live> = if live_mirrors {
        let enrolled: Vec<Recipe> = enrollment.enrolled().cloned().collect();
        Some(
            crate::mirrors::standings(config, &enrolled)?
                .into_iter()
                .collect(),
        )
    } else {
        None
    };
    let inputs = Inputs {
        config,
        ledger,
        live: &live,
        mirrors: mirrors.as_ref(),
        probing: ledger.probes_ran()?,
    };
    let mut recipes = enrollment
        .recipes
        .iter()
        .map(|r| recipe_health(inputs, r))
        .collect::<Result<Vec<_>>>()?;
    let mut host = Vec::new();
    if let Some(standing) = crate::gc::disk_check(config, ledger)? {
        use crate::gc::DiskStanding;
        let (status, reason) = match standing {
            DiskStanding::Unmeasured(r) => (Status::Unknown, r),
            DiskStanding::Within(r) => (Status::Ok, r),
            DiskStanding::Short(r) => (Status::Warn, r),
        };
        host.push(check("disk", status, reason));
    }
    if let Some((status, reason)) = sweep_check(&enrollment, ledger, config.health.sweep_within)? {
        host.push(check("sweep", status, reason));
    }
    if let Some((status, reason)) = ci_user_check(config) {
        host.push(check("ci user", status, reason));
    }
    if let Some(reason) = polled_but_not_enrolled(&enrollment, &live) {
        host.push(check("bridge", Status::Warn, reason));
    }
    if let Some(report) = crate::published::read(&config.state_dir) {
        let (status, reason) = deploy_check(&report);
        host.push(check("deploy", status, reason));
    }
    redact(&mut recipes, &mut host, known);
    let host_verdict = host.iter().map(|c| match c.status {
        Status::Ok | Status::Unknown => Verdict::Healthy,
        Status::Warn => Verdict::Degraded,
        Status::Fail => Verdict::Failed,
    });
    let verdict = recipes
        .iter()
        .filter_map(|r| r.verdict)
        .chain(host_verdict)
        .max()
        .unwrap_or(Verdict::Healthy);
    Ok(Report {
        schema: SCHEMA,
        id: None,
        seq: None,
        generated_at: ledger.clock().rfc3339(),
        verdict,
        recipes,
        host,
    })
}

/// Fires `health-change` when the host's or any recipe's verdict differs from the last report.
fn announce_change(config: &Config, clock: &Clock, last: &std::path::Path, report: &Report) {
    // The state directory is the job user's: never follow a link, block on a FIFO, read for ever.
    let previous: serde_json::Value = crate::fsutil::read_regular(last, 64 << 20, false)
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .unwrap_or_default();
    let before = |recipe: &str| {
        previous["recipes"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["recipe"] == recipe))
            .map(|r| r["verdict"].clone())
            .unwrap_or_default()
    };
    let changed: Vec<serde_json::Value> = report
        .recipes
        .iter()
        .filter_map(|r| {
            let now = serde_json::to_value(r.verdict).unwrap_or_default();
            let was = before(&r.recipe);
            (now != was).then(|| serde_json::json!({ "recipe": r.recipe, "from": was, "to": now }))
        })
        .collect();
    let host_now = serde_json::to_value(report.verdict).unwrap_or_default();
    if changed.is_empty() && previous["verdict"] == host_now {
        return;
    }
    crate::hooks::fire(
        config,
        clock,
        crate::settings::config::HookEvent::HealthChange,
        serde_json::json!({ "verdict": host_now, "previous_verdict": previous["verdict"], "changed": changed }),
    );
}

/// Each enrolled recipe's verdict, for comparing a host before and after a change.
pub fn verdicts(report: &Report) -> std::collections::BTreeMap<String, Verdict> {
    report
        .recipes
        .iter()
        .filter_map(|r| r.verdict.map(|v| (r.recipe.clone(), v)))
        .collect()
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Healthy => "healthy",
        Verdict::Degraded => "degraded",
        Verdict::Failed => "failed",
    }
}

/// A label value in the text exposition format: backslash, quote and newline escaped. Recipe names
/// are checked long before, but the format must not depend on that.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition for node_exporter's textfile collector.
pub fn metrics(report: &Report) -> String {
    let mut text = String::from(
        "# HELP cc_ci_host_health 1 for the host's verdict.\n# TYPE cc_ci_host_health gauge\n",
    );
    for v in [Verdict::Healthy, Verdict::Degraded, Verdict::Failed] {
        text.push_str(&format!(
            "cc_ci_host_health{{verdict=\"{}\"}} {}\n",
            verdict_name(v),
            u8::from(report.verdict == v)
        ));
    }
    text.push_str("# HELP cc_ci_recipe_health 1 for each enrolled recipe's verdict.\n# TYPE cc_ci_recipe_health gauge\n");
    for r in report.recipes.iter() {
        let Some(verdict) = r.verdict else { continue };
        for v in [Verdict::Healthy, Verdict::Degraded, Verdict::Failed] {
            text.push_str(&format!(
                "cc_ci_recipe_health{{recipe=\"{}\",verdict=\"{}\"}} {}\n",
                label_value(&r.recipe),
                verdict_name(v),
                u8::from(verdict == v)
            ));
        }
    }
    text
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ask each mirror and its upstream now, instead of reading the last sync.
    #[arg(long)]
    live: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<Exit> {
    let config = ctx.config()?;
    let mut report = build_with(&config, &ctx.clock, args.live)?;
    // Queued before anything is sent: a report that cannot be delivered now goes first next time.
    let mut delivery = None;
    if let Some(url) = &config.bridge.report_url {
        let token = crate::secrets::read_token(
            config.bridge.token_file.as_deref(),
            crate::settings::config::BRIDGE_TOKEN_CREDENTIAL,
            "bridge",
            &config.path,
        )?;
        let mut ledger = Ledger::open(&config.state_dir, &ctx.clock)?;
        ledger.outbox_push(|id, seq| {
            report.id = Some(id.to_string());
            report.seq = Some(seq);
            Ok(serde_json::to_string(&report)?)
        })?;
        delivery = Some(delivery::deliver(
            &ledger,
            url,
            &token,
            config.bridge.report_timeout,
        )?);
    }
    let json = serde_json::to_string_pretty(&report)? + "\n";
    // Always written, for bridges that read files.
    let path = config.state_dir.join("health.json");
    announce_change(&config, &ctx.clock, &path, &report);
    publish(&path, json.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", path.display()))?;
    if let Some(file) = &config.health.metrics_file {
        publish(file, metrics(&report).as_bytes(), 0o644)
            .with_context(|| format!("writing {}", file.display()))?;
    }
    if let Some(d) = &delivery {
        match &d.last_error {
            None => tracing::info!(
                delivered = d.delivered,
                "health reports delivered to the bridge"
            ),
            Some(e) => tracing::warn!("{} health report(s) wait for the bridge: {e}", d.waiting),
        }
    }
    // The JSON answer is the report as written to health.json.
    ctx.out.give(&HealthAnswer {
        report: &report,
        delivery,
    })?;
    Ok(match report.verdict {
        Verdict::Healthy => Exit::Success,
        Verdict::Degraded => Exit::Degraded,
        Verdict::Failed => Exit::Unhealthy,
    })
}

/// `health`'s answer: in JSON the report exactly as health.json holds it; for people, the table,
/// the host's verdict and how the report's delivery to the bridge went.
struct HealthAnswer<'a> {
    report: &'a Report,
    delivery: Option<delivery::Delivery>,
}

impl serde::Serialize for HealthAnswer<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.report.serialize(s)
    }
}

/// Its JSON is the report's, so its schema is too.
impl schemars::JsonSchema for HealthAnswer<'_> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        Report::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Report::json_schema(generator)
    }
}

impl Answer for HealthAnswer<'_> {
    fn human(&self, out: &Output) -> String {
        use std::fmt::Write as _;
        let mut t = table_of(out, self.report);
        let _ = match &self.delivery {
            None => Ok(()),
            Some(d) => match &d.last_error {
                None => writeln!(t, "report: delivered ({} sent)", d.delivered),
                Some(e) => writeln!(
                    t,
                    "report: {} waiting for the bridge; kept, sent first next time: {e}",
                    d.waiting
                ),
            },
        };
        t
    }
}

fn table_of(out: &Output, report: &Report) -> String {
    use std::fmt::Write as _;
    let tone = |v: Verdict| match v {
        Verdict::Healthy => Tone::Good,
        Verdict::Degraded => Tone::Warn,
        Verdict::Failed => Tone::Bad,
    };
    let rows: Vec<_> = report
        .recipes
        .iter()
        .map(|r| {
            let (verdict, t) = match r.verdict {
                Some(v) => (verdict_name(v).to_string(), Some(tone(v))),
                None => ("not enrolled".to_string(), Some(Tone::Dim)),
            };
            let notes: Vec<String> = r
                .checks
                .iter()
                .filter(|c| c.status != Status::Ok)
                .map(|c| format!("{}: {}", c.name, c.reason))
                .collect();
            vec![
                (r.recipe.clone(), None),
                (verdict, t),
                (notes.join("; "), None),
            ]
        })
        .collect();
    let mut t = table(out, &["RECIPE", "VERDICT", "WHAT NEEDS A LOOK"], &rows);
    for c in report.host.iter().filter(|c| c.status != Status::Ok) {
        let (word, shade) = match c.status {
            Status::Warn => ("degraded", Tone::Warn),
            Status::Fail => ("failed", Tone::Bad),
            _ => ("unknown", Tone::Dim),
        };
        let reason = crate::output::one_reason(&c.reason);
        let _ = writeln!(t, "{}: {}: {reason}", c.name, out.paint(word, shade));
    }
    let _ = writeln!(
        t,
        "host: {}",
        out.paint(verdict_name(report.verdict), tone(report.verdict))
    );
    t
}

/// This family's JSON answers, for `crate::schemas`.
pub(crate) fn answers() -> Vec<crate::output::Answers> {
    use crate::output::{of, Answers};
    vec![Answers::new("health", vec![of::<HealthAnswer<'static>>])]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_gone_backwards_makes_no_sync_stale() {
        let start = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (clock, hand) = crate::clock::manual::at(start);
        let synced = humantime::format_rfc3339_seconds(start).to_string();
        // A sync recorded "in the future" (the clock was set back since): no age, so not stale.
        let ahead = humantime::format_rfc3339_seconds(start + Duration::from_secs(86400));
        assert_eq!(age(&clock, &ahead.to_string()), None);
        hand.advance(Duration::from_secs(7200));
        assert_eq!(age(&clock, &synced), Some(Duration::from_secs(7200)));
    }

    #[test]
    fn metric_label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
