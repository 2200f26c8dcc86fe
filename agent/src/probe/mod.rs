//! `cc-ci-agent probe [RECIPE...]`: proves, per recipe, that `!testme` on its mirror starts a CI
//! build and that the build reports back (docs/probe.md).

mod plan;
mod run;
mod scratch;
mod stages;
mod watch;

use anyhow::Result;

pub use run::fingerprint;

use crate::context::Context;
use crate::exit::Exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only these recipes, probed even when their proof is fresh (default: every enrolled recipe
    /// never proven, stopped last time, changed since, or proven longer ago than probe.max_age).
    recipes: Vec<String>,
    /// Say which recipes would be probed and why; write nothing, comment nowhere.
    #[arg(long, conflicts_with = "history")]
    dry_run: bool,
    /// List the journal's probes (of the recipes named, or all), newest first; probe nothing.
    #[arg(long)]
    history: bool,
    /// With --history: how many probes to list at most.
    #[arg(long, default_value_t = 20, requires = "history")]
    limit: u32,
}

pub fn run(ctx: &Context, args: Args) -> Result<Exit> {
    if args.history {
        return run::history(ctx, &args.recipes, args.limit);
    }
    run::run(ctx, &args.recipes, args.dry_run)
}

/// This family's JSON answers, for `crate::schemas`.
pub(crate) fn answers() -> Vec<crate::output::Answers> {
    use crate::output::{of, Answers};
    vec![Answers::new(
        "probe",
        vec![
            of::<run::ProbeAnswer<'static>>,
            of::<run::ProbeHistory>,
            of::<run::Plan<'static>>,
        ],
    )]
}
