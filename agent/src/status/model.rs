//! The status page's read model: `health`'s report (so the page, the terminal and the JSON cannot
//! disagree on a verdict or a reason) and, beside it, what a maintainer reads further: each
//! recipe's runs with their tiers, its canonical, mirror events and probes, and the deploy
//! journal. Built once, serialised as `status.json`, rendered as HTML.

use anyhow::Result;
use serde::Serialize;

use crate::health::{RecipeHealth, Report};
use crate::ledger::{
    Canonical, DeployRow, Ledger, MirrorEvent, MirrorState, ProbeRow, RunRow, TierRow,
};
use crate::settings::config::Config;
use crate::settings::enrollment::{Enrollment, Recipe, TestPolicy};

pub const SCHEMA: &str = "cc-ci.status/v1";
/// Runs kept per recipe page; the strip on the index shows the newest of them.
pub const RUNS: u32 = 50;
pub const STRIP: usize = 6;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Site {
    pub schema: &'static str,
    pub generated_at: String,
    pub summary: Summary,
    pub health: Report,
    pub recipes: Vec<RecipeView>,
    pub deploys: Vec<DeployRow>,
}

/// The fleet in numbers: each enrolled recipe is in exactly one of the last five.
#[derive(schemars::JsonSchema, Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub recipes: usize,
    pub green: usize,
    pub partly_broken: usize,
    pub broken: usize,
    pub never_judged: usize,
}

/// Where a recipe stands, as the index colours and words it.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    Green,
    PartlyBroken,
    Broken,
    NeverJudged,
}

impl Standing {
    pub fn word(self) -> &'static str {
        match self {
            Standing::Green => "green",
            Standing::PartlyBroken => "partly broken",
            Standing::Broken => "broken",
            Standing::NeverJudged => "never judged",
        }
    }
}

#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct RecipeView {
    pub name: String,
    pub enrolled: bool,
    pub standing: Standing,
    /// `exempt: REASON`, or `required`.
    pub tests: String,
    pub health: RecipeHealth,
    pub canonical: Option<Canonical>,
    pub mirror: Option<MirrorState>,
    pub mirror_events: Vec<MirrorEvent>,
    pub probes: Vec<ProbeRow>,
    pub runs: Vec<RunView>,
}

#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct RunView {
    pub run: RunRow,
    pub tiers: Vec<TierRow>,
    /// The end of its log as the sweep recorded it in the ledger (escaped when rendered). The
    /// page reads no file a run names: see [`crate::ledger::RunEnd::log_tail`].
    pub log_tail: Option<String>,
}

/// Reads everything the page shows, from the health report and the ledger.
pub fn build(config: &Config, clock: &crate::clock::Clock) -> Result<Site> {
    let ledger = Ledger::open(&config.state_dir, clock)?;
    let secrets = crate::secrets::Known::of(config);
    let health = crate::health::build_from(config, &ledger, false, &secrets)?;
    let enrollment = Enrollment::load(&config.enrollment_file)?;
    // The health report comes redacted; what the page reads from the ledger and the logs besides
    // (runs recorded before the sweep redacted, CI's own log) is redacted here.
    let mut recipes = Vec::new();
    for r in &enrollment.recipes {
        let Some(h) = health.recipes.iter().find(|h| h.recipe == r.name) else {
            continue;
        };
        let mut view = recipe_view(&ledger, r, h.clone())?;
        for v in &mut view.runs {
            v.log_tail = v.log_tail.take().map(|t| secrets.redact(&t));
            v.run.detail = v.run.detail.take().map(|d| secrets.redact(&d));
            for t in &mut v.tiers {
                secrets.redact_each([&mut t.first_failure, &mut t.first_message]);
            }
        }
        recipes.push(view);
    }
    let summary = summary(&recipes);
    Ok(Site {
        schema: SCHEMA,
        generated_at: health.generated_at.clone(),
        summary,
        deploys: ledger.deploy_history(50)?,
        health,
        recipes,
    })
}

fn recipe_view(ledger: &Ledger, r: &Recipe, health: RecipeHealth) -> Result<RecipeView> {
    let mut runs = Vec::new();
    let history = ledger.history(&r.name, RUNS)?;
    let ids: Vec<i64> = history.iter().map(|r| r.id).collect();
    let mut all_tiers = ledger.run_tiers_of(&ids)?;
    let mut tails = ledger.run_log_tails(&ids)?;
    for run in history {
        let tiers = all_tiers.remove(&run.id).unwrap_or_default();
        let log_tail = tails.remove(&run.id);
        runs.push(RunView {
            run,
            tiers,
            log_tail,
        });
    }
    Ok(RecipeView {
        name: r.name.clone(),
        enrolled: r.enrolled,
        standing: standing(&health),
        tests: match &r.tests {
            TestPolicy::Required => "required".into(),
            TestPolicy::Exempt { reason } => format!("exempt: {reason}"),
        },
        canonical: ledger.canonical(&r.name)?,
        mirror: ledger.mirror_state(&r.name)?,
        mirror_events: ledger.mirror_events(&r.name, 20)?,
        probes: ledger.probe_history(Some(&r.name), 10)?,
        runs,
        health,
    })
}

/// From the health report's greenness, so the page says what `health` says.
pub fn standing(h: &RecipeHealth) -> Standing {
    match &h.greenness {
        None => Standing::NeverJudged,
        Some(g) if g.result == crate::ledger::RunResult::Green => Standing::Green,
        Some(g) if g.degree > 0.0 && g.degree < 1.0 => Standing::PartlyBroken,
        Some(_) => Standing::Broken,
    }
}

pub fn summary(recipes: &[RecipeView]) -> Summary {
    let enrolled: Vec<&RecipeView> = recipes.iter().filter(|r| r.enrolled).collect();
    let count = |s: Standing| enrolled.iter().filter(|r| r.standing == s).count();
    Summary {
        recipes: enrolled.len(),
        green: count(Standing::Green),
        partly_broken: count(Standing::PartlyBroken),
        broken: count(Standing::Broken),
        never_judged: count(Standing::NeverJudged),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Greenness, Verdict};

    fn with(result: crate::ledger::RunResult, degree: f64) -> RecipeHealth {
        RecipeHealth {
            recipe: "x".into(),
            enrolled: true,
            verdict: Some(Verdict::Healthy),
            checks: Vec::new(),
            greenness: Some(Greenness {
                tag: "1.0.0+1".into(),
                result,
                degree,
                failing: Vec::new(),
            }),
        }
    }

    #[test]
    fn each_greenness_is_one_standing() {
        assert_eq!(
            standing(&with(crate::ledger::RunResult::Green, 0.0)),
            Standing::Green
        );
        assert_eq!(
            standing(&with(crate::ledger::RunResult::Red, 0.25)),
            Standing::PartlyBroken
        );
        assert_eq!(
            standing(&with(crate::ledger::RunResult::Red, 1.0)),
            Standing::Broken
        );
        assert_eq!(
            standing(&with(crate::ledger::RunResult::Error, 1.0)),
            Standing::Broken
        );
        let mut never = with(crate::ledger::RunResult::Green, 0.0);
        never.greenness = None;
        assert_eq!(standing(&never), Standing::NeverJudged);
    }
}
