//! `canonical list|show|base|import` and `history RECIPE`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use serde_json::json;

use crate::context::Context;
use crate::error::InputError;
use crate::error::Unusable;
use crate::exit::Exit;
use crate::git::RefSet;
use crate::ledger::{Canonical, Ledger, RunRow};
use crate::output::table;
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
    let ledger = Ledger::open(&config.state_dir)?;
    match args.command {
        Command::List => {
            let all = ledger.canonicals()?;
            if ctx.out.is_json() {
                ctx.out.json(&json!({ "canonicals": all }))?;
            } else {
                let rows: Vec<_> = all
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
                crate::say_raw!(
                    "{}",
                    table(
                        &ctx.out,
                        &["RECIPE", "CANONICAL", "COMMIT", "PROMOTED", "FROM"],
                        &rows
                    )
                );
            }
            Ok(Exit::Success)
        }
        Command::Show { recipe } => {
            let c = ledger.canonical(&recipe)?;
            let run = match c.as_ref().and_then(|c| c.run) {
                Some(id) => ledger
                    .history(&recipe, u32::MAX)?
                    .into_iter()
                    .find(|r| r.id == id),
                None => None,
            };
            if ctx.out.is_json() {
                ctx.out
                    .json(&json!({ "recipe": recipe, "canonical": c, "run": run }))?;
                return Ok(Exit::Success);
            }
            match c {
                None => crate::say!(
                    "{recipe}: no canonical (no green release recorded, so it is not green)"
                ),
                Some(c) => {
                    crate::say!(
                        "{recipe}: {} at {} since {}",
                        c.version,
                        c.commit,
                        c.promoted_at
                    );
                    if let Some(r) = run {
                        crate::say!(
                            "  promoted by run {} ({}, log {})",
                            r.id,
                            r.detail.unwrap_or_default(),
                            r.log_path.unwrap_or_default()
                        );
                    }
                }
            }
            Ok(Exit::Success)
        }
        Command::Base { recipe } => {
            let r = named.context("the recipe was looked up above")?;
            let base = match r.upgrade_base.clone() {
                Some(pin) => Some(pin),
                None => standing_canonical(&config, &ledger, &r)?,
            };
            match base {
                Some(b) => {
                    if ctx.out.is_json() {
                        ctx.out.json(&json!({ "recipe": recipe, "base": b }))?;
                    } else {
                        crate::say!("{b}");
                    }
                    Ok(Exit::Success)
                }
                None => {
                    eprintln!("{recipe}: no upgrade_base and no canonical: there is no version to upgrade from");
                    Ok(Exit::NoBase)
                }
            }
        }
        Command::Import { dir } => {
            let mut imported = Vec::new();
            let entries = std::fs::read_dir(&dir)
                .with_context(|| format!("cannot read {}", dir.display()))?;
            let mut files: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path().join("canonical.json"))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            let mut parsed = Vec::new();
            for file in &files {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let c: Canonical = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| {
                        Some(Canonical {
                            recipe: v["recipe"].as_str()?.to_string(),
                            version: v["version"].as_str()?.to_string(),
                            commit: v["commit"].as_str()?.to_string(),
                            run: None,
                            promoted_at: v["promoted_at"].as_str().unwrap_or_default().to_string(),
                        })
                    })
                    .ok_or_else(|| {
                        InputError::file(
                            file,
                            "not a canonical.json (needs recipe, version, commit)",
                        )
                    })?;
                check_release_tag(&c.version).map_err(|e| InputError {
                    file: file.clone(),
                    line: None,
                    key: "version".into(),
                    message: e,
                })?;
                if !crate::git::is_oid(&c.commit) {
                    return Err(InputError {
                        file: file.clone(),
                        line: None,
                        key: "commit".into(),
                        message: format!(
                            "{:?} is not a commit id (40 or 64 lowercase hex digits)",
                            c.commit
                        ),
                    }
                    .into());
                }
                crate::settings::rules::check_recipe_name(&c.recipe).map_err(|e| InputError {
                    file: file.clone(),
                    line: None,
                    key: "recipe".into(),
                    message: e,
                })?;
                parsed.push(c);
            }
            // All files checked before anything is written.
            for c in parsed {
                ledger.canonical_set(&c)?;
                imported.push(c.recipe);
            }
            if ctx.out.is_json() {
                ctx.out.json(&json!({ "imported": imported }))?;
            } else {
                crate::say!(
                    "imported {} canonicals: {}",
                    imported.len(),
                    imported.join(", ")
                );
            }
            Ok(Exit::Success)
        }
    }
}

pub fn history(ctx: &Context, args: HistoryArgs) -> Result<Exit> {
    let config = ctx.config()?;
    declared(&config, &args.recipe)?;
    let ledger = Ledger::open(&config.state_dir)?;
    let runs = ledger.history(&args.recipe, args.limit)?;
    if ctx.out.is_json() {
        ctx.out
            .json(&json!({ "recipe": args.recipe, "runs": runs }))?;
        return Ok(Exit::Success);
    }
    let rows: Vec<_> = runs
        .iter()
        .map(|r| {
            vec![
                (r.id.to_string(), None),
                (r.started_at.clone(), None),
                (r.tag.clone().unwrap_or_default(), None),
                (crate::git::short(&r.commit).to_string(), None),
                (r.result.clone(), None),
                (r.base.clone().unwrap_or_default(), None),
                (r.trigger.clone(), None),
            ]
        })
        .collect();
    crate::say_raw!(
        "{}",
        table(
            &ctx.out,
            &["RUN", "STARTED", "TAG", "COMMIT", "RESULT", "BASE", "TRIGGER"],
            &rows
        )
    );
    Ok(Exit::Success)
}
