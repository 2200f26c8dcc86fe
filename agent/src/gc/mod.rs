//! `cc-ci-agent gc`: keep the warm volumes under `[disk] budget` without ever deleting a
//! canonical's volume, a volume in use, or a pinned one.

mod collect;
pub mod directory;
pub mod plan;

use anyhow::Result;

use crate::context::Context;
use crate::exit::Exit;

pub use collect::{disk_check, DiskStanding};

/// A volume a run took between the inventory and its deletion: kept, and not a failure.
#[derive(Debug, thiserror::Error)]
#[error("{0} came into use since the inventory; kept")]
pub struct InUse(pub String);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the inventory and the decision for each volume; delete and record nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<Exit> {
    collect::run(ctx, args.dry_run)
}

/// This family's JSON answers, for `crate::schemas`.
pub(crate) fn answers() -> Vec<crate::output::Answers> {
    use crate::output::{of, Answers};
    vec![Answers::new("gc", vec![of::<collect::GcAnswer<'static>>])]
}
