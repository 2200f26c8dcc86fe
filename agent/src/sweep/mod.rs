//! `cc-ci-agent sweep`, `canonical ...` and `history`: the canonical sweep and its ledger.

mod canonical;
mod export;
pub mod greenness;
pub mod junit;
mod place;
mod run;
pub mod versions;

use anyhow::Result;

use crate::context::Context;
use crate::exit::Exit;

pub use canonical::{CanonicalArgs, HistoryArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only these canonical recipes (default: every enrolled recipe with canonical = true).
    recipes: Vec<String>,
    /// Run CI even on a commit already judged.
    #[arg(long)]
    force: bool,
    /// Say why each of RECIPE's tags was or was not taken as its latest release; test nothing.
    #[arg(long, value_name = "RECIPE", conflicts_with_all = ["recipes", "force"])]
    explain: Option<String>,
}

impl Args {
    /// Whether it runs CI (rather than explaining a recipe's tags).
    pub fn runs_ci(&self) -> bool {
        self.explain.is_none()
    }
}

/// `cc-ci-agent internal ...`: what the agent runs of itself as another user. Not for people:
/// hidden from `--help` (docs/reliability.md, "Who can write what").
#[derive(Debug, clap::Subcommand)]
pub enum Internal {
    /// Reads a run's results as the CI user and answers them as JSON on stdout.
    ReadResults {
        /// Where each case's tier comes from: auto, suite, classname or file.
        #[arg(long, default_value = "auto")]
        tier_from: String,
        /// The run's results directory.
        dir: std::path::PathBuf,
    },
    /// Empties a run's directory as the CI user.
    Empty {
        /// The run's directory.
        dir: std::path::PathBuf,
    },
    /// The keeper, started by a sweep that started as root or by a keeper service for each
    /// connection: runs CI as `run_as` for it.
    Keeper {
        /// The CI user (`[sweep] run_as`).
        #[arg(long)]
        runner: String,
        /// The user the sweep runs as (the state directory's owner), by number.
        #[arg(
            long,
            conflicts_with = "job_user",
            required_unless_present = "job_user"
        )]
        job_uid: Option<u32>,
        /// The same, by name (a keeper service's unit).
        #[arg(long)]
        job_user: Option<String>,
    },
}

pub fn internal(command: Internal) -> Result<Exit> {
    match command {
        Internal::ReadResults { dir, tier_from } => place::internal_read_results(&dir, &tier_from)?,
        Internal::Empty { dir } => place::internal_empty(&dir)?,
        Internal::Keeper {
            runner,
            job_uid,
            job_user,
        } => {
            use crate::process::keeper::{serve, JobUser};
            let job = match (job_uid, job_user) {
                (Some(uid), _) => JobUser::Uid(uid),
                (None, Some(name)) => JobUser::Name(name),
                (None, None) => anyhow::bail!("--job-uid or --job-user is needed"),
            };
            serve(&runner, &job)?
        }
    }
    Ok(Exit::Success)
}

pub fn run(ctx: &Context, args: Args) -> Result<Exit> {
    match args.explain {
        Some(recipe) => run::explain(ctx, &recipe),
        None => run::run(
            ctx,
            run::Options {
                force: args.force,
                only: args.recipes,
            },
        ),
    }
}

pub use canonical::{canonical, history};
pub use export::export;
pub use run::upgrade_base;

/// This family's JSON answers, for `crate::schemas`.
pub(crate) fn answers() -> Vec<crate::output::Answers> {
    use crate::output::{of, Answers};
    vec![
        Answers::new(
            "sweep",
            vec![
                of::<run::SweepAnswer<'static>>,
                of::<run::Explained<'static>>,
                of::<run::Refused>,
            ],
        ),
        Answers::new("canonical list", vec![of::<canonical::Canonicals>]),
        Answers::new("canonical show", vec![of::<canonical::Shown<'static>>]),
        Answers::new("canonical base", vec![of::<canonical::Base>]),
        Answers::new("canonical import", vec![of::<canonical::Imported>]),
        Answers::new("history", vec![of::<canonical::History>]),
    ]
}
