//! `enrollment add`, `set`, `remove` and `import`.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::Target;
use crate::context::Context;
use crate::error::InputError;
use crate::exit::Exit;
use crate::fsutil::write_atomic;
use crate::output::{Answer, Output};
use crate::settings::edit::{import_poll_repos, EnrollmentEdit, NewRecipe, RecipeChanges};

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// Recipe name (lowercase letters, digits and '-').
    recipe: String,
    /// Upstream git URL, if not the default from [defaults].
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Take part in the canonical sweep.
    #[arg(long)]
    canonical: bool,
    /// Enroll without a test suite, giving the reason.
    #[arg(long, value_name = "REASON")]
    tests_exempt: Option<String>,
    /// The recipe's branch, if not the default from [defaults].
    #[arg(long, value_name = "BRANCH")]
    branch: Option<String>,
    /// Pin the upgrade base to this release tag.
    #[arg(long, value_name = "VERSION")]
    upgrade_base: Option<String>,
    /// Declare it without enrolling it.
    #[arg(long)]
    not_enrolled: bool,
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// A declared recipe.
    recipe: String,
    /// Take part in the canonical sweep.
    #[arg(long, conflicts_with = "no_canonical")]
    canonical: bool,
    /// Take no part in the canonical sweep.
    #[arg(long)]
    no_canonical: bool,
    /// Pin the upgrade base to this release tag.
    #[arg(long, value_name = "VERSION", conflicts_with = "no_upgrade_base")]
    upgrade_base: Option<String>,
    /// Remove the upgrade-base pin: the canonical is the base.
    #[arg(long)]
    no_upgrade_base: bool,
    /// The recipe's branch (older recipes use master).
    #[arg(long, value_name = "BRANCH")]
    branch: Option<String>,
    /// Upstream git URL.
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Exempt from tests, giving the reason.
    #[arg(long, value_name = "REASON", conflicts_with = "tests_required")]
    tests_exempt: Option<String>,
    /// Tests required again (removes an exemption).
    #[arg(long)]
    tests_required: bool,
    /// Enrolled: mirrored, polled, swept.
    #[arg(long, conflicts_with = "not_enrolled")]
    enrolled: bool,
    /// Declared but not enrolled.
    #[arg(long)]
    not_enrolled: bool,
}

/// `--x` / `--no-x` as a change: `Some(true)`, `Some(false)`, or none asked for.
fn either(on: bool, off: bool) -> Option<bool> {
    (on || off).then_some(on)
}

impl SetArgs {
    fn changes(&self) -> RecipeChanges {
        RecipeChanges {
            canonical: either(self.canonical, self.no_canonical),
            upgrade_base: match (&self.upgrade_base, self.no_upgrade_base) {
                (Some(v), _) => Some(Some(v.clone())),
                (None, true) => Some(None),
                (None, false) => None,
            },
            branch: self.branch.clone(),
            upstream: self.upstream.clone(),
            tests_exempt: match (&self.tests_exempt, self.tests_required) {
                (Some(r), _) => Some(Some(r.clone())),
                (None, true) => Some(None),
                (None, false) => None,
            },
            enrolled: either(self.enrolled, self.not_enrolled),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    /// A declared recipe.
    recipe: String,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Today's comma-separated list of repository names.
    #[arg(long, value_name = "CSV")]
    poll_repos: String,
    /// Where to write; `-` for stdout. Defaults to the enrollment file.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
    /// Every imported recipe takes part in the canonical sweep.
    #[arg(long)]
    canonical: bool,
    /// A name in the list that is not a recipe (the host's own repository): kept in POLL_REPOS
    /// through `[bridge] also_poll`, never mirrored or swept. Repeatable.
    #[arg(long, value_name = "NAME")]
    not_recipe: Vec<String>,
}

pub fn add(ctx: &Context, target: &Target, args: AddArgs) -> Result<Exit> {
    let mut edit = EnrollmentEdit::open(&target.file)?;
    let new = NewRecipe {
        upstream: args.upstream,
        canonical: args.canonical,
        tests_exempt: args.tests_exempt,
        branch: args.branch,
        upgrade_base: args.upgrade_base,
        not_enrolled: args.not_enrolled,
    };
    edit.add(&args.recipe, &new)?;
    let edited = edit.commit()?;
    done(ctx, Edited::Added(args.recipe), target, edited.poll_repos())
}

pub fn set(ctx: &Context, target: &Target, args: SetArgs) -> Result<Exit> {
    let changes = args.changes();
    let mut edit = EnrollmentEdit::open(&target.file)?;
    edit.set(&args.recipe, &changes)?;
    let edited = edit.commit()?;
    done(ctx, Edited::Set(args.recipe), target, edited.poll_repos())
}

pub fn remove(ctx: &Context, target: &Target, args: RemoveArgs) -> Result<Exit> {
    let mut edit = EnrollmentEdit::open(&target.file)?;
    edit.remove(&args.recipe)?;
    let edited = edit.commit()?;
    done(
        ctx,
        Edited::Removed(args.recipe),
        target,
        edited.poll_repos(),
    )
}

fn done(ctx: &Context, edited: Edited, target: &Target, poll_repos: String) -> Result<Exit> {
    let (action, recipe) = edited.parts();
    tracing::info!(recipe, file = %target.file.display(), "{action}");
    ctx.out.give(&EditAnswer {
        edited,
        file: target.file.clone(),
        poll_repos,
    })?;
    Ok(Exit::Success)
}

/// What an edit did, to which recipe: `{"added": NAME}` (or `set`, `removed`) in the answer.
#[derive(schemars::JsonSchema, Serialize)]
#[serde(rename_all = "lowercase")]
enum Edited {
    Added(String),
    Set(String),
    Removed(String),
}

impl Edited {
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Edited::Added(r) => ("added", r),
            Edited::Set(r) => ("set", r),
            Edited::Removed(r) => ("removed", r),
        }
    }
}

/// `enrollment add|set|remove`'s answer: what was done, in which file, and the bridge's
/// `POLL_REPOS` after it.
#[derive(schemars::JsonSchema, Serialize)]
pub(super) struct EditAnswer {
    #[serde(flatten)]
    edited: Edited,
    file: PathBuf,
    poll_repos: String,
}

impl Answer for EditAnswer {
    fn human(&self, _out: &Output) -> String {
        let (action, recipe) = self.edited.parts();
        format!(
            "{action} {recipe} ({}); POLL_REPOS is now: {}\n",
            self.file.display(),
            self.poll_repos
        )
    }
}

pub fn import(ctx: &Context, target: &Target, args: ImportArgs) -> Result<Exit> {
    let output = args.output.unwrap_or_else(|| target.file.clone());
    let text = import_poll_repos(&args.poll_repos, &output, args.canonical, &args.not_recipe)?;
    if output.as_os_str() == "-" {
        crate::say_raw!("{text}");
        return Ok(Exit::Success);
    }
    if output.exists() && !args.force {
        return Err(InputError::file(
            &output,
            "exists; nothing was written: pass --force to replace it",
        )
        .into());
    }
    write_atomic(&output, text.as_bytes(), 0o644)?;
    ctx.out.give(&Imported {
        recipes: text.matches("\n[recipe.").count(),
        file: output,
    })?;
    Ok(Exit::Success)
}

/// `enrollment import`'s answer: the file written and how many recipes it declares.
#[derive(schemars::JsonSchema, serde::Serialize)]
pub(super) struct Imported {
    file: std::path::PathBuf,
    recipes: usize,
}

impl Answer for Imported {
    fn human(&self, _out: &Output) -> String {
        format!(
            "wrote {} with {} recipes\n",
            self.file.display(),
            self.recipes
        )
    }
}
