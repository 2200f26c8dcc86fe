//! `cc-ci-agent state status`: the state database (the ledger) as an operator looks at it: where it
//! is, its schema and integrity, who holds the locks, the latest events.

use anyhow::Result;
use clap::Subcommand;
use serde::Serialize;

use crate::context::Context;
use crate::exit::Exit;
use std::path::PathBuf;

use crate::ledger::{Event, Holder, JobLock, Ledger};
use crate::output::{Answer, Output};

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
    let ledger = Ledger::open(&config.state_dir, &ctx.clock)?;
    // Cheap at this size, and the one place an operator asks "is the state sound?".
    ledger.check_integrity()?;
    let holders = JobLock::holders(&config.state_dir)?;
    let events = ledger.recent_events(limit)?;
    let schema = ledger.schema_version()?;
    ctx.out.give(&StateStatus {
        database: ledger.path().to_path_buf(),
        schema_version: schema,
        integrity: "ok",
        lock_holder: holders.first().cloned(),
        lock_holders: holders,
        events,
    })?;
    Ok(Exit::Success)
}

/// `state status`'s answer.
#[derive(schemars::JsonSchema, Serialize)]
struct StateStatus {
    database: PathBuf,
    schema_version: u32,
    /// Always "ok": a database that fails the check is an error (exit 15), not an answer.
    integrity: &'static str,
    /// The first of `lock_holders`, for scripts written before there could be more than one.
    lock_holder: Option<Holder>,
    lock_holders: Vec<Holder>,
    events: Vec<Event>,
}

impl Answer for StateStatus {
    fn human(&self, _out: &Output) -> String {
        use std::fmt::Write as _;
        let mut t = format!(
            "database: {} (schema {}, integrity ok)\n",
            self.database.display(),
            self.schema_version
        );
        if self.lock_holders.is_empty() {
            t.push_str("lock: free\n");
        }
        for h in &self.lock_holders {
            let _ = writeln!(
                t,
                "lock: held by {} (pid {}) since {}",
                h.job, h.pid, h.since
            );
        }
        for e in &self.events {
            let _ = writeln!(t, "{}  {:<10} {}  {}", e.at, e.job, e.kind, e.detail);
        }
        t
    }
}

/// This family's JSON answers, for `crate::schemas`.
pub(crate) fn answers() -> Vec<crate::output::Answers> {
    use crate::output::{of, Answers};
    vec![Answers::new("state status", vec![of::<StateStatus>])]
}
