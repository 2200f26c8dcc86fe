//! `cc-ci-agent state status`: the state database (the ledger) as an operator looks at it: where it
//! is, its schema and integrity, who holds the locks, the latest events.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use crate::context::Context;
use crate::exit::Exit;
use crate::ledger::{JobLock, Ledger};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the state database, its schema version, the lock holder and recent events.
    Status {
        /// How many recent events to show.
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
}

pub fn run(ctx: &Context, args: Args) -> Result<Exit> {
    let Command::Status { limit } = args.command;
    let config = ctx.config()?;
    let ledger = Ledger::open(&config.state_dir)?;
    // Cheap at this size, and the one place an operator asks "is the state sound?".
    ledger.check_integrity()?;
    let holders = JobLock::holders(&config.state_dir)?;
    let events = ledger.recent_events(limit)?;
    let schema = ledger.schema_version()?;
    ctx.out.answer(
        &json!({
            "database": ledger.path(),
            "schema_version": schema,
            "integrity": "ok",
            "lock_holder": holders.first(),
            "lock_holders": holders,
            "events": events,
        }),
        |_| {
            crate::say!(
                "database: {} (schema {}, integrity ok)",
                ledger.path().display(),
                schema
            );
            if holders.is_empty() {
                crate::say!("lock: free");
            }
            for h in &holders {
                crate::say!("lock: held by {} (pid {}) since {}", h.job, h.pid, h.since);
            }
            for e in events {
                crate::say!("{}  {:<10} {}  {}", e.at, e.job, e.kind, e.detail);
            }
        },
    )?;
    Ok(Exit::Success)
}
