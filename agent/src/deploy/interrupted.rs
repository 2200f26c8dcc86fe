//! Journal rows left unfinished by an agent that died: found, said, and closed, before a new
//! deploy or rollback starts.

use std::path::PathBuf;

use anyhow::Result;

use super::machine::Machine;
use super::observer::{Event, Observer};
use crate::error::Busy;
use crate::host::Generation;
use crate::ledger::{DeployRow, Ledger, Outcome, Stage};

fn process_alive(pid: i64) -> bool {
    pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Deals with journal rows left unfinished by an agent that died. Runs under the agent lock.
///
/// An unconfirmed deploy whose dead-man switch is still pending blocks everything but a rollback
/// (the switch would otherwise roll back under the next deploy); `take_over` is that rollback,
/// which claims the row and returns the generation to go back to.
pub fn settle_unfinished(
    journal: &Ledger,
    machine: &dyn Machine,
    observer: &dyn Observer,
    take_over: bool,
) -> Result<Option<Generation>> {
    let running = machine.running_system().ok();
    let mut back_to = None;
    for row in journal.deploys_unfinished()? {
        let pending = row.deadman_unit.as_deref().is_some_and(|u| {
            machine
                .unit_state(&format!("{u}.timer"))
                .is_ok_and(|s| s == "active")
        });
        let alive = process_alive(row.pid) && row.pid != i64::from(std::process::id());
        if Stage::UNCONFIRMED.contains(&row.state) && (pending || alive) {
            if !take_over {
                return Err(Busy(format!(
                    "deploy #{} was not confirmed and its dead-man switch will roll the host back to generation {}: \
                     wait for it, or run `cc-ci-agent rollback` to do it now",
                    row.id,
                    row.from_generation.unwrap_or_default()
                ))
                .into());
            }
            if journal.deploy_advance(row.id, &Stage::UNCONFIRMED, Stage::RollingBack)? {
                if let Some(unit) = &row.deadman_unit {
                    machine.disarm(unit)?;
                }
                back_to = generation_of(&row);
                journal.deploy_finish(
                    row.id,
                    Outcome::RolledBack,
                    "not confirmed; rolled back by `cc-ci-agent rollback`",
                )?;
                observer.on(&Event::Line(format!(
                    "deploy #{} was not confirmed: rolling back to generation {} now",
                    row.id,
                    row.from_generation.unwrap_or_default()
                )));
            }
            continue;
        }
        if row.state == Stage::RollingBack && alive {
            return Err(Busy(format!(
                "deploy #{} is being rolled back by pid {}",
                row.id, row.pid
            ))
            .into());
        }
        let message = describe(&row, running.as_ref());
        journal.deploy_finish(row.id, Outcome::Interrupted, &message)?;
        observer.on(&Event::Notice(&message));
    }
    Ok(back_to)
}

fn generation_of(row: &DeployRow) -> Option<Generation> {
    Some(Generation {
        number: u64::try_from(row.from_generation?).ok()?,
        path: PathBuf::from(row.from_path.as_ref()?),
    })
}

/// Says what an interrupted deploy did and where the host is now.
pub fn describe(row: &DeployRow, running: Option<&PathBuf>) -> String {
    let stage = match row.state {
        Stage::Preflight | Stage::Building => "stopped before activating anything",
        Stage::Armed | Stage::Activating | Stage::Verifying => {
            "stopped before it was confirmed, and its dead-man switch is gone (a reboot?)"
        }
        Stage::Committing => "stopped while making the new system the boot default",
        Stage::RollingBack => "stopped while rolling back",
        Stage::Finished => "finished",
    };
    let from = row.from_path.as_deref().map(PathBuf::from);
    let to = row.to_path.as_deref().map(PathBuf::from);
    let gen = row.from_generation.unwrap_or_default();
    let place = match running {
        Some(r) if Some(r) == from.as_ref() => format!("the host runs the system it ran before (generation {gen})"),
        Some(r) if Some(r) == to.as_ref() => format!(
            "the host runs that deploy's new system {}: if it was not verified, run `cc-ci-agent rollback` to return to generation {gen}",
            r.display()
        ),
        Some(r) => format!("the host runs {}", r.display()),
        None => "the running system cannot be read".to_string(),
    };
    format!(
        "{} #{} (pid {}) {stage}; {place}",
        row.kind, row.id, row.pid
    )
}
