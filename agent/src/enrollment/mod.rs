//! `cc-ci-agent enrollment ...`: read, check and edit `enrollment.toml`.

mod check;
mod edit;
mod show;

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::context::Context;
use crate::exit::Exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The enrollment file to use instead of the one named by the agent configuration. With it,
    /// no configuration is read unless --config is given too.
    #[arg(long, global = true, value_name = "FILE")]
    file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List declared recipes with every default applied.
    List,
    /// Check the file, and that every enrolled recipe has a test suite or an exemption.
    Check(check::Args),
    /// Print the bridge's POLL_REPOS: enrolled recipe names, sorted, comma-joined.
    PollRepos,
    /// Declare and enroll a recipe, keeping the file's comments and order.
    Add(edit::AddArgs),
    /// Change a declared recipe's settings, keeping the file's comments and order.
    Set(edit::SetArgs),
    /// Remove a recipe's declaration, keeping the file's comments and order.
    Remove(edit::RemoveArgs),
    /// Write a new enrollment file from today's POLL_REPOS CSV.
    Import(edit::ImportArgs),
}

/// The enrollment file this invocation works on, and the test suites directory if known.
struct Target {
    file: PathBuf,
    tests_dir: Option<PathBuf>,
    /// Where the canonicals are, when a configuration was read.
    state_dir: Option<PathBuf>,
}

impl Target {
    fn resolve(ctx: &Context, file: Option<PathBuf>, tests_dir: Option<PathBuf>) -> Result<Self> {
        let (file, config) = match file {
            Some(f) if !ctx.config_given() => (f, None),
            Some(f) => (f, Some(ctx.config()?)),
            None => {
                let config = ctx.config()?;
                (config.enrollment_file.clone(), Some(config))
            }
        };
        let state_dir = config.as_ref().map(|c| c.state_dir.clone());
        let tests_dir = tests_dir.or_else(|| config.and_then(|c| c.tests_dir));
        Ok(Self {
            file,
            tests_dir,
            state_dir,
        })
    }
}

pub fn run(ctx: &Context, args: Args) -> Result<Exit> {
    match args.command {
        Command::List => show::list(ctx, &Target::resolve(ctx, args.file, None)?),
        Command::PollRepos => show::poll_repos(ctx, &Target::resolve(ctx, args.file, None)?),
        Command::Check(a) => {
            let target = Target::resolve(ctx, args.file, a.tests_dir.clone())?;
            check::run(ctx, &target)
        }
        Command::Add(a) => edit::add(ctx, &Target::resolve(ctx, args.file, None)?, a),
        Command::Set(a) => edit::set(ctx, &Target::resolve(ctx, args.file, None)?, a),
        Command::Remove(a) => edit::remove(ctx, &Target::resolve(ctx, args.file, None)?, a),
        Command::Import(a) => edit::import(ctx, &Target::resolve(ctx, args.file, None)?, a),
    }
}

/// This family's JSON answers, for `crate::schemas`.
pub(crate) fn answers() -> Vec<crate::output::Answers> {
    use crate::output::{of, Answers};
    let edit = || -> Vec<crate::output::Of> { vec![of::<edit::EditAnswer>] };
    vec![
        Answers::new("enrollment list", vec![of::<show::Listed<'static>>]),
        Answers::new("enrollment poll-repos", vec![of::<show::PollRepos>]),
        Answers::new("enrollment check", vec![of::<check::Report>]),
        Answers::new("enrollment add", edit()),
        Answers::new("enrollment set", edit()),
        Answers::new("enrollment remove", edit()),
        Answers::new("enrollment import", vec![of::<edit::Imported>]),
    ]
}
