//! `cc-ci-agent probe [RECIPE...]`: proves, per recipe, that `!testme` on its mirror starts a CI
//! build and that the build reports back (docs/probe.md).

mod plan;
mod run;
mod scratch;
mod stages;
mod watch;

use anyhow::Result;

pub use plan::{choose, Choice, Fingerprint};
pub use run::fingerprint;
pub use scratch::BRANCH;
pub use stages::Stage;

use crate::context::Context;
use crate::exit::Exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only these recipes, probed even when their proof is fresh (default: every enrolled recipe
    /// never proven, stopped last time, changed since, or proven longer ago than probe.max_age).
    recipes: Vec<String>,
    /// Say which recipes would be probed and why; write nothing, comment nowhere.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<Exit> {
    run::run(ctx, &args.recipes, args.dry_run)
}
