//! `cc-ci-agent deploy`, `deploy status|history|deadman`, and `cc-ci-agent rollback`.

mod auto;
mod commands;
mod interrupted;
mod machine;
mod observer;
mod preflight;
mod steps;
mod verify;

use anyhow::Result;
use clap::Subcommand;

use crate::context::Context;
use crate::exit::Exit;

pub use steps::Options;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// The configuration to deploy, PATH#NAME (default: deploy.flake, ".#cc-ci").
    #[arg(long, value_name = "REF")]
    flake: Option<String>,
    /// Build and show what would change; activate nothing.
    #[arg(long)]
    dry_run: bool,
    /// Deploy even if a CI build is in flight.
    #[arg(long)]
    force: bool,
    /// First fetch the checkout's upstream branch and fast-forward a clean checkout to it; a
    /// dirty tree, a diverged HEAD or an unreachable upstream is refused (never a merge, rebase,
    /// reset or stash).
    #[arg(long)]
    pull: bool,
    /// What the deploy timer runs: --pull, but quiet when nothing landed (one ls-remote), when
    /// the landed commit already went back once, or while CI or another job is busy; a refusal
    /// is recorded once per state.
    #[arg(long, conflicts_with_all = ["pull", "dry_run", "force"])]
    auto: bool,
    /// With --auto: try again a commit whose deploy went back.
    #[arg(long, requires = "auto")]
    retry: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The last deploy, and any that did not finish.
    Status,
    /// Past deploys and rollbacks, newest first.
    History {
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Run by the dead-man timer: roll deploy ID back unless it was confirmed.
    #[command(hide = true)]
    Deadman {
        /// The deploy's journal id.
        id: i64,
    },
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The system profile generation to return to (default: the one before the current).
    #[arg(long, value_name = "GENERATION")]
    to: Option<u64>,
    /// Roll back even if a CI build is in flight.
    #[arg(long)]
    force: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<Exit> {
    match args.command {
        None if args.auto => auto::run(ctx, args.flake, args.retry),
        None => commands::deploy(
            ctx,
            args.flake,
            Options {
                dry_run: args.dry_run,
                force: args.force,
                pull: args.pull,
            },
        ),
        Some(Command::Status) => commands::status(ctx),
        Some(Command::History { limit }) => commands::history(ctx, limit),
        Some(Command::Deadman { id }) => commands::deadman(ctx, id),
    }
}

pub fn rollback(ctx: &Context, args: RollbackArgs) -> Result<Exit> {
    commands::rollback(ctx, args.to, args.force)
}

/// The exit code of a deploy that ended in `outcome`: the policy lives here, with the deploy,
/// not in the journal that stores the outcome (docs/exit-codes.md).
pub(crate) fn exit_of(outcome: crate::ledger::Outcome) -> crate::exit::Exit {
    use crate::exit::Exit;
    use crate::ledger::Outcome;
    match outcome {
        Outcome::Deployed | Outcome::Unchanged | Outcome::DryRun => Exit::Success,
        Outcome::BuildFailed => Exit::BuildFailed,
        Outcome::RolledBack => Exit::RolledBack,
        Outcome::RollbackFailed => Exit::RollbackFailed,
        Outcome::Failed | Outcome::Interrupted => Exit::Failure,
        Outcome::RefusedNotACheckout => Exit::BadInput,
        Outcome::RefusedDirty => Exit::DirtyTree,
        Outcome::RefusedStale => Exit::StaleTree,
        Outcome::RefusedDiverged => Exit::Diverged,
        Outcome::RefusedUnsigned => Exit::Unsigned,
        Outcome::RefusedCiBusy => Exit::CiBusy,
    }
}

/// This family's JSON answers, for `crate::schemas`.
pub(crate) fn answers() -> Vec<crate::output::Answers> {
    use crate::output::{of, Answers};
    vec![
        Answers::new("deploy", vec![of::<commands::Deployed>]),
        Answers::new("rollback", vec![of::<commands::Deployed>]),
        Answers::new("deploy status", vec![of::<commands::Status>]),
        Answers::new("deploy history", vec![of::<commands::History>]),
    ]
}
