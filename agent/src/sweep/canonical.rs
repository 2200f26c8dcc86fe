//! `canonical list|show|base|import` and `history RECIPE`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use serde::Serialize;

use crate::context::Context;
use crate::error::InputError;
use crate::error::Unusable;
use crate::exit::Exit;
use crate::git::RefSet;
use crate::ledger::{Canonical, Ledger, RunResult, RunRow, TierRow};
use crate::output::{table, Answer, Output};
use crate::settings::enrollment::Enrollment;
use crate::settings::rules::check_release_tag;

/// Whether the canonical is still a release that exists: its tag is on the mirror and names the
/// canonical's commit.
pub fn holds(c: &Canonical, refs: &RefSet) -> bool {
    refs.tags
        .get(&c.version)
        .is_some_and(|t| t.commit() == c.commit)
}

/// What a canonical that no longer holds falls back to: the highest version among the green
/// runs whose tag still names the commit that was judged.
pub fn fallback<'a>(greens: &'a [RunRow], refs: &RefSet) -> Option<(&'a str, &'a RunRow)> {
    greens
        .iter()
        .filter_map(|run| {
            let tag = run.tag.as_deref()?;
            let version = check_release_tag(tag).ok()?;
            refs.tags
                .get(tag)
                .is_some_and(|t| t.commit() == run.commit)
                .then_some((version, tag, run))
        })
        .max_by(|a, b| a.0.cmp_precedence(&b.0))
        .map(|(_, tag, run)| (tag, run))
}

/// The canonical's version if its tag still names its commit in the recipe's cache (the mirror
/// as last synced), else the release it falls back to: never a version whose tag is gone. Reads
/// only; the next sweep records the demotion.
fn standing_canonical(
    config: &crate::settings::config::Config,
    ledger: &Ledger,
    recipe: &crate::settings::enrollment::Recipe,
) -> Result<Option<String>> {
    let Some(c) = ledger.canonical(&recipe.name)? else {
        return Ok(None);
    };
    let cache = config
        .state_dir
        .join("mirrors")
        .join(format!("{}.git", recipe.name));
    if !cache.join("HEAD").is_file() {
        return Ok(Some(c.version));
    }
    let git = crate::git::Git::new(config.mirrors.git_timeout, 0);
    let refs = git
        .local_refs(&cache, &recipe.branch)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", cache.display()))?;
    if holds(&c, &refs) {
        return Ok(Some(c.version));
    }
    let greens = ledger.green_runs(&recipe.name)?;
    Ok(fallback(&greens, &refs).map(|(tag, _)| tag.to_string()))
}

/// A recipe name the enrollment declares, or bad input (exit 2): a typo must not read as "no
/// history".
fn declared(
    config: &crate::settings::config::Config,
    name: &str,
) -> Result<crate::settings::enrollment::Recipe> {
    let enrollment = Enrollment::load(&config.enrollment_file)?;
    enrollment
        .get(name)
        .cloned()
        .ok_or_else(|| Unusable(format!("{name:?} is not a declared recipe")).into())
}

/// Why a canonical that no longer holds does not, in words.
pub fn why_not(c: &Canonical, refs: &RefSet) -> String {
    match refs.tags.get(&c.version) {
        None => format!("its tag {} was deleted upstream", c.version),
        Some(t) => format!(
            "its tag {} now names {}, not the commit that was judged ({})",
            c.version,
            crate::git::short(t.commit()),
            crate::git::short(&c.commit)
        ),
    }
}

#[derive(Debug, clap::Args)]
pub struct CanonicalArgs {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every recipe's canonical: the last known-good tagged release.
    List,
    /// One recipe's canonical and the run that promoted it.
    Show {
        /// A declared recipe.
        recipe: String,
    },
    /// The version an upgrade test should start from: upgrade_base if set, else the canonical.
    Base {
        /// A declared recipe.
        recipe: String,
    },
    /// Read existing canonical.json files (DIR/<recipe>/canonical.json) into the ledger.
    Import {
        /// The directory of <recipe>/canonical.json files.
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// A declared recipe.
    recipe: String,
    /// How many runs to show.
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

pub fn canonical(ctx: &Context, args: CanonicalArgs) -> Result<Exit> {
    let config = ctx.config()?;
    // An import reads and checks every file before the state database is even opened: bad input
    // writes nothing, not even an empty database.
    if let Command::Import { dir } = &args.command {
        if !dir.is_dir() {
            return Err(
                InputError::file(dir, "not a directory of <recipe>/canonical.json files").into(),
            );
        }
    }
    // A name the enrollment does not declare is bad input, before anything is opened.
    let named = match &args.command {
        Command::Show { recipe } | Command::Base { recipe } => Some(declared(&config, recipe)?),
        _ => None,
    };
    let ledger = Ledger::open(&config.state_dir, &ctx.clock)?;
    match args.command {
        Command::List => list(ctx, &ledger),
        Command::Show { recipe } => show(ctx, &ledger, &recipe),
        Command::Base { .. } => {
            let r = named.context("the recipe was looked up above")?;
            base(ctx, &config, &ledger, &r)
        }
        Command::Import { dir } => import(ctx, &ledger, &dir),
    }
}

fn list(ctx: &Context, ledger: &Ledger) -> Result<Exit> {
    ctx.out.give(&Canonicals {
        canonicals: ledger.canonicals()?,
    })?;
    Ok(Exit::Success)
}

/// `canonical list`'s answer: every recipe's canonical release.
#[derive(schemars::JsonSchema, Serialize)]
pub(super) struct Canonicals {
    canonicals: Vec<Canonical>,
}

impl Answer for Canonicals {
    fn human(&self, out: &Output) -> String {
        let rows: Vec<_> = self
            .canonicals
            .iter()
            .map(|c| {
                vec![
                    (c.recipe.clone(), None),
                    (c.version.clone(), None),
                    (crate::git::short(&c.commit).to_string(), None),
                    (c.promoted_at.clone(), None),
                    (
                        c.run.map_or("imported".into(), |r| format!("run {r}")),
                        None,
                    ),
                ]
            })
            .collect();
        let header = ["RECIPE", "CANONICAL", "COMMIT", "PROMOTED", "FROM"];
        table(out, &header, &rows)
    }
}

fn show(ctx: &Context, ledger: &Ledger, recipe: &str) -> Result<Exit> {
    let c = ledger.canonical(recipe)?;
    let run = match c.as_ref().and_then(|c| c.run) {
        Some(id) => ledger
            .history(recipe, u32::MAX)?
            .into_iter()
            .find(|r| r.id == id),
        None => None,
    };
    let tiers = match &run {
        Some(r) => ledger.run_tiers(r.id)?,
        None => Vec::new(),
    };
    // The newest run, when it is not the canonical's: what keeps a newer release out.
    let newest = ledger
        .history(recipe, 1)?
        .into_iter()
        .find(|r| Some(r.id) != c.as_ref().and_then(|c| c.run) && r.result != RunResult::Running);
    let newest_tiers = match &newest {
        Some(r) => ledger.run_tiers(r.id)?,
        None => Vec::new(),
    };
    ctx.out.give(&Shown {
        recipe,
        canonical: c,
        run,
        tiers,
        newest,
        newest_tiers,
    })?;
    Ok(Exit::Success)
}

/// `canonical show RECIPE`'s answer (docs/sweep.md): the canonical, the run that promoted it and
/// its tiers, and the newest run when it is another (what keeps a newer release out).
#[derive(schemars::JsonSchema, Serialize)]
pub(super) struct Shown<'a> {
    recipe: &'a str,
    canonical: Option<Canonical>,
    run: Option<RunRow>,
    tiers: Vec<TierRow>,
    newest: Option<RunRow>,
    newest_tiers: Vec<TierRow>,
}

impl Answer for Shown<'_> {
    fn human(&self, _out: &Output) -> String {
        use std::fmt::Write as _;
        let recipe = self.recipe;
        let mut t = String::new();
        let _ = match &self.canonical {
            None => writeln!(
                t,
                "{recipe}: no canonical (no green release recorded, so it is not green)"
            ),
            Some(c) => writeln!(
                t,
                "{recipe}: {} at {} since {}",
                c.version, c.commit, c.promoted_at
            ),
        };
        if let (Some(_), Some(r)) = (&self.canonical, &self.run) {
            let _ = writeln!(
                t,
                "  promoted by run #{} ({}, log {})",
                r.id,
                r.detail.as_deref().unwrap_or_default(),
                r.log_path.as_deref().unwrap_or_default()
            );
        }
        if self.canonical.is_some() && !self.tiers.is_empty() {
            let _ = writeln!(t, "  {}", crate::ledger::tiers_line(&self.tiers));
        }
        if let Some(n) = &self.newest {
            let tag = n.tag.as_deref().unwrap_or_default();
            let verdict = crate::ledger::verdict_line(n, &self.newest_tiers);
            let _ = writeln!(t, "{recipe}: newest run #{} of {tag}: {verdict}", n.id);
        }
        t
    }
}

fn base(
    ctx: &Context,
    config: &crate::settings::config::Config,
    ledger: &Ledger,
    r: &crate::settings::enrollment::Recipe,
) -> Result<Exit> {
    let base = match r.upgrade_base.clone() {
        Some(pin) => Some(pin),
        None => standing_canonical(config, ledger, r)?,
    };
    let Some(b) = base else {
        let reason = "no upgrade_base and no canonical: there is no version to upgrade from";
        let answer = Base {
            recipe: r.name.clone(),
            base: None,
            reason: Some(reason.into()),
        };
        // A person reads why on stderr; a script's `$(canonical base ...)` gets nothing.
        ctx.out
            .answer(&answer, |_| eprintln!("{}: {reason}", r.name))?;
        return Ok(Exit::NoBase);
    };
    ctx.out.give(&Base {
        recipe: r.name.clone(),
        base: Some(b),
        reason: None,
    })?;
    Ok(Exit::Success)
}

/// `canonical base`'s answer: the version an upgrade test starts from, or none and why
/// (exit 12).
#[derive(schemars::JsonSchema, Serialize)]
pub(super) struct Base {
    recipe: String,
    base: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl Answer for Base {
    fn human(&self, _out: &Output) -> String {
        self.base
            .as_deref()
            .map(|b| format!("{b}\n"))
            .unwrap_or_default()
    }
}

/// Every `DIR/<recipe>/canonical.json`, all checked before any is written.
fn import(ctx: &Context, ledger: &Ledger, dir: &std::path::Path) -> Result<Exit> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path().join("canonical.json"))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let parsed = files
        .iter()
        .map(|f| super::export::read(f))
        .collect::<Result<Vec<_>>>()?;
    let mut imported = Vec::new();
    for c in parsed {
        ledger.canonical_set(&c)?;
        imported.push(c.recipe);
    }
    ctx.out.give(&Imported { imported })?;
    Ok(Exit::Success)
}

/// `canonical import`'s answer: the recipes whose canonical was imported.
#[derive(schemars::JsonSchema, Serialize)]
pub(super) struct Imported {
    imported: Vec<String>,
}

impl Answer for Imported {
    fn human(&self, _out: &Output) -> String {
        let names = self.imported.join(", ");
        format!("imported {} canonicals: {names}\n", self.imported.len())
    }
}

/// `history`'s answer: a recipe's runs, newest first, each with its tiers.
#[derive(schemars::JsonSchema, Serialize)]
pub(super) struct History {
    recipe: String,
    runs: Vec<RunWithTiers>,
}

#[derive(schemars::JsonSchema, Serialize)]
struct RunWithTiers {
    #[serde(flatten)]
    run: RunRow,
    tiers: Vec<crate::ledger::TierRow>,
}

impl Answer for History {
    fn human(&self, out: &Output) -> String {
        let rows: Vec<_> = self
            .runs
            .iter()
            .map(|RunWithTiers { run: r, tiers: t }| {
                vec![
                    (r.id.to_string(), None),
                    (r.started_at.clone(), None),
                    (r.tag.clone().unwrap_or_default(), None),
                    (crate::git::short(&r.commit).to_string(), None),
                    (r.result.to_string(), None),
                    (
                        r.greenness
                            .map(crate::ledger::degree_shown)
                            .unwrap_or_default(),
                        None,
                    ),
                    (crate::ledger::tiers_line(t), None),
                    (r.base.clone().unwrap_or_default(), None),
                    (r.trigger.clone(), None),
                ]
            })
            .collect();
        let header = [
            "RUN", "STARTED", "TAG", "COMMIT", "RESULT", "DEGREE", "TIERS", "BASE", "TRIGGER",
        ];
        table(out, &header, &rows)
    }
}

pub fn history(ctx: &Context, args: HistoryArgs) -> Result<Exit> {
    let config = ctx.config()?;
    declared(&config, &args.recipe)?;
    let ledger = Ledger::open(&config.state_dir, &ctx.clock)?;
    let runs = ledger.history(&args.recipe, args.limit)?;
    let mut tiers = Vec::with_capacity(runs.len());
    for r in &runs {
        tiers.push(ledger.run_tiers(r.id)?);
    }
    let runs = runs
        .into_iter()
        .zip(tiers)
        .map(|(run, tiers)| RunWithTiers { run, tiers })
        .collect();
    ctx.out.give(&History {
        recipe: args.recipe,
        runs,
    })?;
    Ok(Exit::Success)
}
