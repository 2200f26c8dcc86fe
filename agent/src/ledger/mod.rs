//! The state database: one SQLite file in `state_dir`, WAL mode, versioned migrations.
//! Everything that must survive `kill -9` is written here inside a transaction.

mod deploys;
mod gc;
mod lock;
mod migrations;
mod mirrors;
mod outbox;
mod sweep;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, TransactionBehavior};
use serde::Serialize;

pub use deploys::{DeployRow, Field, State};
pub use gc::{Deletion, GcFigures, GcRun};
pub use lock::{Holder, JobLock};
pub use mirrors::{MirrorEvent, MirrorState};
pub use outbox::Outgoing;
pub use sweep::{Canonical, RunEnd, RunRow, SweepRecord, SweepState};

pub const DB_FILE: &str = "state.db";
/// The schema version this agent writes: the number of migrations.
pub const SCHEMA_VERSION: usize = migrations::ALL.len();

pub struct Ledger {
    pub(crate) conn: Connection,
    path: PathBuf,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    pub at: String,
    pub job: String,
    pub kind: String,
    pub detail: serde_json::Value,
}

impl Ledger {
    /// Opens (creating if needed) `state_dir/state.db` and brings its schema up to date.
    pub fn open(state_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        let path = state_dir.join(DB_FILE);
        let setup = || -> Result<Connection> {
            let mut conn = Connection::open(&path)?;
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            migrate(&mut conn, &path)?;
            Ok(conn)
        };
        // Two agents creating the database at once: switching a new file to WAL takes an
        // exclusive lock, and SQLite reports that as "locked" at once rather than waiting out
        // the busy timeout. Retried here, within the same patience.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut opened = setup();
        while opened.as_ref().is_err_and(is_busy) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            opened = setup();
        }
        let conn = opened.with_context(|| {
            format!(
                "cannot open state database {}{}",
                path.display(),
                diagnose(state_dir)
            )
        })?;
        adopt_owner(state_dir, &[DB_FILE, "state.db-wal", "state.db-shm"]);
        Ok(Self { conn, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn schema_version(&self) -> Result<u32> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    pub fn record_event(&self, job: &str, kind: &str, detail: &serde_json::Value) -> Result<()> {
        self.conn.execute(
            "INSERT INTO events (at, job, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            params![now_rfc3339(), job, kind, detail.to_string()],
        )?;
        Ok(())
    }

    /// The newest `limit` events, newest first.
    pub fn recent_events(&self, limit: u32) -> Result<Vec<Event>> {
        let mut stmt = self
            .conn
            .prepare("SELECT at, job, kind, detail FROM events ORDER BY id DESC LIMIT ?1")?;
        let rows = stmt.query_map([limit], |r| {
            let detail: String = r.get(3)?;
            Ok(Event {
                at: r.get(0)?,
                job: r.get(1)?,
                kind: r.get(2)?,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: usize = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = migrations::ALL.len();
    if current > known {
        bail!(
            "state database {} has schema version {current}, newer than this agent's {known}: \
             run a cc-ci-agent at least as new as the one that last wrote it",
            path.display()
        );
    }
    for (i, sql) in migrations::ALL.iter().enumerate().skip(current) {
        tx.execute_batch(sql)
            .with_context(|| format!("migration {} failed", i + 1))?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()?;
    Ok(())
}

/// Gives files in `state_dir` the directory's owner. The units run as the `cc-ci` user, but an
/// operator may run the agent as root: a root-owned database would lock the units out. Only root
/// can change an owner, so for anyone else this quietly does nothing.
pub(crate) fn adopt_owner(state_dir: &Path, names: &[&str]) {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::metadata(state_dir) else {
        return;
    };
    for name in names {
        let path = state_dir.join(name);
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.uid() != dir.uid() || meta.gid() != dir.gid() {
                if let Err(e) = std::os::unix::fs::chown(&path, Some(dir.uid()), Some(dir.gid())) {
                    tracing::debug!(path = %path.display(), "cannot adopt the state directory's owner: {e}");
                }
            }
        }
    }
}

fn is_busy(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<rusqlite::Error>()
            .and_then(rusqlite::Error::sqlite_error_code)
            .is_some_and(|code| {
                matches!(
                    code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                )
            })
    })
}

/// Why a state directory may refuse writes, said plainly: SQLite's own errors ("disk I/O error",
/// "unable to open database file") do not tell a full disk from a read-only one.
fn diagnose(state_dir: &Path) -> String {
    use rustix::fs::{access, Access};
    if access(state_dir, Access::WRITE_OK).is_err() {
        return format!(
            ": {} is not writable (read-only filesystem or permissions)",
            state_dir.display()
        );
    }
    match crate::fsutil::free_bytes(state_dir) {
        Ok(0) => format!(
            ": the filesystem of {} is full (no space left)",
            state_dir.display()
        ),
        _ => String::new(),
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_migrates_and_reopens() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");
        let ledger = Ledger::open(&state)?;
        assert_eq!(ledger.schema_version()? as usize, migrations::ALL.len());
        ledger.record_event("test", "hello", &serde_json::json!({"n": 1}))?;
        drop(ledger);
        let again = Ledger::open(&state)?;
        let events = again.recent_events(10)?;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].detail["n"], 1);
        let mode: String = again
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        assert_eq!(mode, "wal");
        Ok(())
    }

    /// Run as root (as CI and the deploy unit are), files created in a state directory owned by
    /// someone else are handed to that owner.
    #[test]
    fn state_files_take_the_directory_owner() -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");
        std::fs::create_dir(&state)?;
        let me = std::fs::metadata(&state)?.uid();
        if me != 0 {
            eprintln!("SKIPPED part: not root, so ownership cannot be handed to another user here");
            drop(Ledger::open(&state)?);
            return Ok(());
        }
        std::os::unix::fs::chown(&state, Some(65534), Some(65534))?;
        let owner = |name: &str| std::fs::metadata(state.join(name)).map(|m| (m.uid(), m.gid()));
        let ledger = Ledger::open(&state)?;
        // While open, WAL mode keeps -wal and -shm beside the database; SQLite removes them on close.
        for name in [DB_FILE, "state.db-wal", "state.db-shm"] {
            assert_eq!(owner(name)?, (65534, 65534), "{name}");
        }
        drop(ledger);
        assert_eq!(owner(DB_FILE)?, (65534, 65534));
        Ok(())
    }

    #[test]
    fn refuses_a_newer_schema() -> Result<()> {
        let dir = tempfile::tempdir()?;
        drop(Ledger::open(dir.path())?);
        let conn = Connection::open(dir.path().join(DB_FILE))?;
        conn.pragma_update(None, "user_version", 999)?;
        drop(conn);
        let err = Ledger::open(dir.path())
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("schema version 999"), "{err}");
        Ok(())
    }
}
