//! `cc-ci-agent sweep`, `canonical ...` and `history`: the canonical sweep and its ledger.

mod canonical;
mod export;
pub mod greenness;
pub mod junit;
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
