//! `cc-ci-agent mirrors sync` and `mirrors status`.

mod check;
mod status;
mod sync;

use std::collections::HashMap;

use anyhow::Result;
use clap::Subcommand;
use serde::Serialize;
use serde_json::json;

pub use status::{standings, Standing};
pub use sync::{Outcome, RecipeResult, Syncer};

use crate::context::Context;
use crate::exit::Exit;
use crate::forge;
use crate::ledger::{JobLock, Ledger, MirrorResult, MirrorState};
use crate::output::{Answer, Output, Tone};
use crate::settings::config::Config;
use crate::settings::enrollment::{Enrollment, Recipe};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make every enrolled recipe's mirror equal to upstream: its branch and tags, nothing else.
    Sync {
        /// Only these recipes (default: every enrolled recipe).
        recipes: Vec<String>,
        /// Accept, this once and for the recipes named, that upstream deleted every tag: the
        /// mirror's are deleted too, and that is recorded. Without it such an upstream is refused.
        #[arg(long, requires = "recipes")]
        accept_deletions: bool,
    },
    /// Per recipe: missing, in sync, behind, diverged or upstream unreachable (asked live).
    Status {
        /// Only these recipes (default: every enrolled recipe).
        recipes: Vec<String>,
    },
    /// Ask the forge, writing nothing, whether syncs will work: the token for the API and for
    /// git, the org and the right to create in it, and each existing mirror (a normal, writable
    /// repository whose branch the bot may push and force-push). Exit 0 ready, 3 problems.
    CheckForge {
        /// Only these recipes' mirrors (default: every enrolled recipe's).
        recipes: Vec<String>,
    },
}

pub fn run(ctx: &Context, args: Args) -> Result<Exit> {
    let config = ctx.config()?;
    let enrollment = Enrollment::load(&config.enrollment_file)?;
    match args.command {
        Command::Sync {
            recipes,
            accept_deletions,
        } => {
            let chosen = enrollment.enrolled_named(&recipes)?;
            let lock = JobLock::mirrors(&config.state_dir, config.lock_wait)?;
            let mut ledger = Ledger::open(&config.state_dir, &ctx.clock)?;
            let forge = forge::from_config(&config)?;
            let results = sync_accepting(
                (&config, forge.as_ref()),
                &chosen,
                &mut ledger,
                &ctx.out,
                (&lock, accept_deletions),
            )?;
            let answer = SyncAnswer::new(results);
            ctx.out.give(&answer)?;
            Ok(if answer.failed == 0 {
                Exit::Success
            } else {
                Exit::SomeFailed
            })
        }
        Command::Status { recipes } => {
            status::run(ctx, &config, &enrollment.enrolled_named(&recipes)?)
        }
        Command::CheckForge { recipes } => {
            check::run(ctx, &config, &enrollment.enrolled_named(&recipes)?)
        }
    }
}

/// `mirrors sync`'s answer (its JSON schema is in docs/mirrors.md, "The answer").
#[derive(schemars::JsonSchema, Debug, Serialize)]
pub struct SyncAnswer {
    /// Every recipe's result, sorted by name.
    pub results: Vec<RecipeResult>,
    pub failed: usize,
}

impl SyncAnswer {
    pub fn new(results: Vec<RecipeResult>) -> Self {
        let failed = results
            .iter()
            .filter(|r| r.outcome == Outcome::Failed)
            .count();
        Self { results, failed }
    }

    fn count(&self, outcome: Outcome) -> usize {
        self.results.iter().filter(|r| r.outcome == outcome).count()
    }
}

impl Answer for SyncAnswer {
    /// The last line; each recipe's line was printed as it arrived.
    fn human(&self, _out: &Output) -> String {
        let busy = match self.count(Outcome::Busy) {
            0 => String::new(),
            n => format!(", {n} left to the job testing them"),
        };
        format!(
            "{} recipes: {} in sync, {} synced, {} failed{busy}\n",
            self.results.len(),
            self.count(Outcome::InSync),
            self.count(Outcome::Synced),
            self.failed,
        )
    }
}

pub fn syncer<'a>(config: &Config, forge: &'a dyn forge::Forge) -> Syncer<'a> {
    let m = &config.mirrors;
    Syncer {
        forge,
        git: forge::git_to(forge, m),
        cache_dir: config.state_dir.join("mirrors"),
        close_merged_prs: m.close_merged_prs,
        recipe_timeout: m.recipe_timeout,
        accept_deletions: false,
        listed: HashMap::new(),
    }
}

/// Syncs `recipes` (the caller holds `lock`, and each recipe's lock is taken in turn), records
/// each result as it arrives, prints a line per recipe for people. The sweep calls this too.
/// `forge` is the caller's, so a job that talks to the forge again (the sweep) builds it and
/// reads its token once.
pub fn sync_recipes(
    (config, forge): (&Config, &dyn forge::Forge),
    recipes: &[Recipe],
    ledger: &mut Ledger,
    out: &Output,
    lock: &JobLock,
) -> Result<Vec<RecipeResult>> {
    sync_accepting((config, forge), recipes, ledger, out, (lock, false))
}

/// [`sync_recipes`], accepting (or not) that upstream deleted every tag.
fn sync_accepting(
    (config, forge): (&Config, &dyn forge::Forge),
    recipes: &[Recipe],
    ledger: &mut Ledger,
    out: &Output,
    (lock, accept_deletions): (&JobLock, bool),
) -> Result<Vec<RecipeResult>> {
    let mut syncer = Syncer {
        accept_deletions,
        ..syncer(config, forge)
    };
    let progress = crate::progress::Progress::start(out);
    let total = recipes.len();
    progress.set(format!("mirrors sync: listing {total} recipes"), None);
    let connections = syncer.list_all(recipes);
    tracing::debug!(
        connections,
        listed = syncer.listed.len(),
        "refs listed before the run"
    );
    let mut results = Vec::with_capacity(recipes.len());
    let mut record_error = None;
    // What changed is recorded the moment it is known; recipes found in sync are recorded
    // together at the end, one transaction instead of one synced commit each.
    let mut unchanged = Vec::new();
    let locks = (lock, config.lock_wait);
    sync::sync_all(
        &syncer,
        recipes,
        config.mirrors.concurrency,
        locks,
        |result| {
            let recorded = match result.outcome {
                Outcome::InSync => {
                    unchanged.push(entry(&result, ledger.clock().rfc3339()));
                    Ok(())
                }
                // Its holder records what it does; this run only notes that it stood aside.
                Outcome::Busy => ledger.record_event(
                    "mirrors",
                    "busy",
                    &json!({ "recipe": result.recipe, "detail": result.error }),
                ),
                Outcome::Synced | Outcome::Failed => record(ledger, &result),
            };
            if let Err(e) = recorded {
                record_error.get_or_insert(e);
            }
            // Each result for people as it arrives; the answer at the end has them all.
            print_result(out, &result);
            results.push(result);
            progress.set(
                format!("mirrors sync: {} of {total} done", results.len()),
                None,
            );
        },
    );
    drop(progress);
    if let Err(e) = ledger.mirror_record_many(&unchanged) {
        record_error.get_or_insert(e);
    }
    if let Some(e) = record_error {
        return Err(e.context("recording mirror results in the state database"));
    }
    results.sort_by(|a, b| a.recipe.cmp(&b.recipe));
    Ok(results)
}

fn record(ledger: &mut Ledger, r: &RecipeResult) -> Result<()> {
    let (state, events) = entry(r, ledger.clock().rfc3339());
    ledger.mirror_record(&state, &events)
}

/// The journal row and events of one result, synced at `at`.
fn entry(r: &RecipeResult, at: String) -> (MirrorState, Vec<(String, String)>) {
    let result = match (r.outcome, r.created) {
        (Outcome::Failed | Outcome::Busy, _) => MirrorResult::Failed,
        (_, true) => MirrorResult::Created,
        (Outcome::Synced, false) => MirrorResult::Synced,
        (Outcome::InSync, false) => MirrorResult::InSync,
    };
    let mut events = Vec::new();
    if r.created {
        events.push((
            "created".to_string(),
            "mirror repository created".to_string(),
        ));
    }
    if r.outcome == Outcome::Synced {
        events.push(("synced".into(), r.summary()));
    }
    // Last, so `mirrors status` (which shows the newest event) shows it.
    if let Some((old, new)) = &r.rewritten {
        events.push((
            "rewritten".into(),
            format!("upstream's branch was rewritten: {old} is not in {new}; the mirror follows"),
        ));
    }
    for n in &r.closed_pulls {
        events.push(("pr-closed".into(), format!("#{n} closed: merged upstream")));
    }
    for w in &r.warnings {
        events.push(("warning".into(), w.clone()));
    }
    if let Some(n) = r.accepted_deletions {
        events.push((
            "deletions-accepted".into(),
            format!("upstream has no tags; the mirror's {n} deleted, as an operator accepted"),
        ));
    }
    if let Some(e) = &r.error {
        events.push(("failed".into(), e.clone()));
    }
    let state = MirrorState {
        recipe: r.recipe.clone(),
        synced_at: at,
        result,
        error: r.error.clone(),
        upstream_head: r.upstream_head.clone(),
        mirror_head: if r.outcome == Outcome::Failed {
            None
        } else {
            r.upstream_head.clone()
        },
        tags: r.tags.and_then(|n| i64::try_from(n).ok()),
    };
    (state, events)
}

fn print_result(out: &Output, r: &RecipeResult) {
    let (mark, text) = match r.outcome {
        Outcome::InSync => (out.paint("=", Tone::Dim), "in sync".to_string()),
        Outcome::Synced if r.created => (
            out.paint("+", Tone::Good),
            format!("created and synced: {}", r.summary()),
        ),
        Outcome::Synced => (
            out.paint("✓", Tone::Good),
            format!("synced: {}", r.summary()),
        ),
        Outcome::Failed => (
            out.paint("✗", Tone::Bad),
            r.error.clone().unwrap_or_default(),
        ),
        Outcome::Busy => (
            out.paint("~", Tone::Warn),
            format!(
                "not synced this run: {}; that job synced it when it began",
                r.error.as_deref().unwrap_or("busy")
            ),
        ),
    };
    out.progress(format!("{mark} {:<24} {text}", r.recipe));
    for w in &r.warnings {
        out.progress(format!("  {} {w}", out.paint("warning:", Tone::Warn)));
    }
}

/// This family's JSON answers, for `crate::schemas`.
pub(crate) fn answers() -> Vec<crate::output::Answers> {
    use crate::output::{of, Answers};
    vec![
        Answers::new("mirrors sync", vec![of::<SyncAnswer>]),
        Answers::new("mirrors status", vec![of::<status::StatusAnswer>]),
        Answers::new("mirrors check-forge", vec![of::<check::CheckAnswer>]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, outcome: Outcome) -> RecipeResult {
        let mut r = RecipeResult::new(name);
        r.outcome = outcome;
        r
    }

    /// The line people read says what the JSON of the same answer says.
    #[test]
    fn the_human_line_and_the_json_are_one_answer() {
        let answer = SyncAnswer::new(vec![
            result("a", Outcome::InSync),
            result("b", Outcome::Synced),
            result("c", Outcome::Failed),
            result("d", Outcome::Busy),
            result("e", Outcome::InSync),
        ]);
        let json = serde_json::to_value(&answer).unwrap_or_default();
        let outcomes: Vec<&str> = json["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["outcome"].as_str())
            .collect();
        let count = |o: &str| outcomes.iter().filter(|x| **x == o).count();
        let out = Output::new(crate::output::Format::Human);
        assert_eq!(
            answer.human(&out),
            format!(
                "{} recipes: {} in sync, {} synced, {} failed, {} left to the job testing them\n",
                outcomes.len(),
                count("in-sync"),
                count("synced"),
                json["failed"],
                count("busy"),
            )
        );
        assert_eq!(json["failed"], 1);
    }
}
