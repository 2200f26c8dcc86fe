//! The state database: one SQLite file in `state_dir`, WAL mode, versioned migrations.
//! Everything that must survive `kill -9` is written here inside a transaction.

mod deploys;
mod gc;
mod lock;
mod migrations;
mod mirrors;
mod outbox;
mod probes;
mod sweep;
mod words;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use crate::clock::Clock;
use crate::error::{Damaged, Unusable};
use crate::fsutil::Dir;
use serde::Serialize;

pub use deploys::{DeployRow, Field, Outcome, Stage};
pub use gc::{Deletion, GcFigures, GcRun};
pub use lock::{Holder, JobLock};
pub use mirrors::{MirrorEvent, MirrorState};
pub use outbox::Outgoing;
pub use probes::{ProbeRow, StageColumn};
pub use sweep::{
    degree_shown, tiers_line, verdict_line, Canonical, Judged, RunEnd, RunRow, SweepRecord,
    SweepState, TierRow,
};
pub use words::{DeletionState, GcOutcome, MirrorResult, ProbeOutcome, RunResult, SweepOutcome};

pub const DB_FILE: &str = "state.db";
const WAL_FILE: &str = "state.db-wal";
const SHM_FILE: &str = "state.db-shm";
/// The ledger's permission bits: its owner's alone.
const DB_MODE: u32 = 0o600;
/// The schema version this agent writes: the number of migrations.
pub const SCHEMA_VERSION: usize = migrations::ALL.len();

pub struct Ledger {
    pub(crate) conn: Connection,
    path: PathBuf,
    /// Stamps every record: the job's clock, so a test that moves time sees it in the records.
    clock: Clock,
}

#[derive(schemars::JsonSchema, Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    pub at: String,
    pub job: String,
    pub kind: String,
    pub detail: serde_json::Value,
}

impl Ledger {
    /// Opens (creating if needed) `state_dir/state.db` and brings its schema up to date.
    pub fn open(state_dir: &Path, clock: &Clock) -> Result<Self> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        let dir = Dir::open(state_dir)?;
        dir.check_private().map_err(Unusable)?;
        let path = state_dir.join(DB_FILE);
        // An existing database that is empty lost its contents (a truncation, a bad restore):
        // SQLite would take it for a new one and the history would be gone without a word.
        let size = dir.regular_size(DB_FILE).map_err(Unusable)?;
        if size.is_none() {
            create_whole(&dir, &path)?;
        }
        if size == Some(0) {
            return Err(Damaged(format!(
                "state database {} is empty (0 bytes): its history is lost. Restore it from a \
                 backup, or move it away to start a new one",
                path.display()
            ))
            .into());
        }
        // A database an older agent made as root goes to the directory's owner. Before SQLite opens
        // it: closing any other descriptor of an open SQLite file drops SQLite's POSIX locks on it.
        // SQLite itself hands the -wal and -shm files it makes as root to the database's owner.
        dir.adopt(DB_FILE);
        // The ledger is the owner's alone: a state directory a web server may enter (0751 with
        // the status page) must not let any local user read it. SQLite gives its -wal and -shm
        // files the database's mode when it makes them; older ones are brought in line.
        for file in [DB_FILE, WAL_FILE, SHM_FILE] {
            dir.restrict_mode(file, DB_MODE);
        }
        let setup = || -> Result<Connection> {
            // No link anywhere in the path: the job user owns this directory.
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NOFOLLOW
                | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let mut conn = Connection::open_with_flags(&path, flags)?;
            conn.busy_handler(Some(wait_while_busy))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            check_integrity(&conn, &path, "quick_check")?;
            migrate(&mut conn, &path)?;
            // SQLite calls a database with a dropped table whole: every job would go on with
            // what is left of it (health reporting without its outbox, a sweep without runs).
            check_schema(&conn, &path)?;
            Ok(conn)
        };
        // Two agents creating the database at once: switching a new file to WAL takes an
        // exclusive lock, and SQLite reports that as "locked" at once rather than waiting out
        // the busy timeout. Retried here, within the same patience.
        let deadline = std::time::Instant::now() + busy_wait();
        let mut opened = setup();
        while opened.as_ref().is_err_and(is_busy) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            opened = setup();
        }
        let conn = opened.map_err(|e| damaged_or(e, &path)).with_context(|| {
            format!(
                "cannot open state database {}{}",
                path.display(),
                diagnose(state_dir)
            )
        })?;
        Ok(Self {
            conn,
            path,
            clock: clock.clone(),
        })
    }

    /// Opens an existing database to read, without creating, migrating or writing anything:
    /// `None` when there is none. For commands that only look.
    pub fn open_read_only(state_dir: &Path, clock: &Clock) -> Result<Option<Self>> {
        let path = state_dir.join(DB_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags)
            .with_context(|| format!("cannot open state database {}", path.display()))?;
        conn.busy_handler(Some(wait_while_busy))?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != SCHEMA_VERSION {
            bail!(
                "state database {} has schema {version}, this agent reads {SCHEMA_VERSION}",
                path.display()
            );
        }
        check_schema(&conn, &path)?;
        Ok(Some(Self {
            conn,
            path,
            clock: clock.clone(),
        }))
    }

    /// SQLite's full `integrity_check`: every page, index and constraint; and the schema: every
    /// table, index and trigger the migrations make is there as they made it (SQLite calls a
    /// database with a dropped table whole).
    pub fn check_integrity(&self) -> Result<()> {
        check_integrity(&self.conn, &self.path, "integrity_check")?;
        check_schema(&self.conn, &self.path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The time a record made now holds.
    pub(crate) fn now(&self) -> String {
        self.clock.rfc3339()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn schema_version(&self) -> Result<u32> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    pub fn record_event(&self, job: &str, kind: &str, detail: &serde_json::Value) -> Result<()> {
        self.conn.execute(
            "INSERT INTO events (at, job, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            params![self.now(), job, kind, detail.to_string()],
        )?;
        Ok(())
    }

    /// The newest `limit` events, newest first.
    pub fn recent_events(&self, limit: u32) -> Result<Vec<Event>> {
        let mut stmt = self.conn.prepare(RECENT_EVENTS)?;
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

/// The newest events of every job, by time: gc's own events, mirror events, sweeps, CI runs
/// and deploys, each as (at, job, kind, detail).
const RECENT_EVENTS: &str = "
    SELECT at, job, kind, detail FROM (
        SELECT at, job, kind, detail, 0 AS src, id FROM events
        UNION ALL SELECT at, CASE WHEN kind IN ('promoted', 'canonical-demoted') THEN 'sweep' ELSE 'mirrors' END, kind, json_quote(recipe || ': ' || detail), 1, id FROM mirror_events
        UNION ALL SELECT started_at, 'sweep', COALESCE(outcome, 'running'), json_quote(COALESCE(detail, '')), 2, id FROM sweeps
        UNION ALL SELECT r.started_at, 'ci', r.result, json_quote(q.recipe || ' ' || COALESCE(r.tag, r.commit_id)), 3, r.id
            FROM runs r JOIN queues q ON q.id = r.queue
        UNION ALL SELECT started_at, kind, COALESCE(outcome, 'running'), json_quote(state), 4, id FROM deploys
    ) ORDER BY at DESC, src, id DESC LIMIT ?1";

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

/// Makes a new database under a temporary name, migrated and in WAL mode, and moves it into
/// place only if none is there yet. So `state.db` is never seen empty: an empty one is damage,
/// not a database another agent is still creating.
fn create_whole(dir: &Dir, path: &Path) -> Result<()> {
    let tmp = format!(".{DB_FILE}.new-{}", std::process::id());
    let tmp_path = dir.path().join(&tmp);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = rustix::fs::unlinkat(
            dir.fd(),
            format!("{tmp}{suffix}"),
            rustix::fs::AtFlags::empty(),
        );
    }
    let made = (|| -> Result<()> {
        // Made here first, empty and 0600 whatever the umask, so that SQLite (which takes an
        // empty file for a new database) and its -wal and -shm files have the owner's mode.
        let empty = dir
            .open_own_file(&tmp, DB_MODE)?
            .with_context(|| format!("{} is not a plain file", tmp_path.display()))?;
        rustix::fs::fchmod(&empty, rustix::fs::Mode::from_raw_mode(DB_MODE))?;
        drop(empty);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&tmp_path, flags)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut conn, path)?;
        conn.close().map_err(|(_, e)| e)?;
        dir.adopt(&tmp);
        match rustix::fs::renameat_with(
            dir.fd(),
            tmp.as_str(),
            dir.fd(),
            DB_FILE,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            // Another agent made it first: theirs is as good as ours.
            Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(e.into()),
        }
    })();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = rustix::fs::unlinkat(
            dir.fd(),
            format!("{tmp}{suffix}"),
            rustix::fs::AtFlags::empty(),
        );
    }
    made.with_context(|| {
        format!(
            "cannot create state database {}{}",
            path.display(),
            diagnose(dir.path())
        )
    })
}

/// A database SQLite calls corrupt or not a database is [`Damaged`], not a passing failure.
fn damaged_or(e: anyhow::Error, path: &Path) -> anyhow::Error {
    let code = e.chain().find_map(|c| {
        c.downcast_ref::<rusqlite::Error>()
            .and_then(rusqlite::Error::sqlite_error_code)
    });
    match code {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            Damaged(format!(
                "state database {} is damaged ({e:#}): {}",
                path.display(),
                DAMAGED_ADVICE
            ))
            .into()
        }
        _ => e,
    }
}

/// Runs `PRAGMA quick_check` (cheap: no index cross-check) or `integrity_check`; anything but
/// "ok" is [`Damaged`].
fn check_integrity(conn: &Connection, path: &Path, pragma: &str) -> Result<()> {
    let mut stmt = conn.prepare(&format!("PRAGMA {pragma}(20)"))?;
    let found: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    if found.len() == 1 && found[0] == "ok" {
        return Ok(());
    }
    Err(Damaged(format!(
        "state database {} fails SQLite's {pragma}: {}: {}",
        path.display(),
        found.join("; "),
        DAMAGED_ADVICE
    ))
    .into())
}

/// The schema objects of `conn`, SQLite's own left out: (kind, name) → the SQL that made it.
type Schema = std::collections::BTreeMap<(String, String), String>;

fn schema_of(conn: &Connection) -> Result<Schema> {
    let mut stmt = conn.prepare(
        "SELECT type, name, coalesce(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'",
    )?;
    let rows = stmt
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// [`Damaged`] unless `conn` has exactly the schema the migrations make in a new database.
fn check_schema(conn: &Connection, path: &Path) -> Result<()> {
    let mut fresh = Connection::open_in_memory()?;
    migrate(&mut fresh, path)?;
    let want = schema_of(&fresh)?;
    let have = schema_of(conn)?;
    let mut differs: Vec<String> = want
        .iter()
        .filter_map(
            |((kind, name), sql)| match have.get(&(kind.clone(), name.clone())) {
                None => Some(format!("{kind} {name} is missing")),
                Some(theirs) if theirs != sql => {
                    Some(format!("{kind} {name} differs from the agent's"))
                }
                Some(_) => None,
            },
        )
        .collect();
    differs.extend(
        have.keys()
            .filter(|k| !want.contains_key(*k))
            .map(|(kind, name)| format!("{kind} {name} is not the agent's")),
    );
    if differs.is_empty() {
        return Ok(());
    }
    Err(Damaged(format!(
        "state database {} does not have the agent's schema: {}: {}",
        path.display(),
        differs.join("; "),
        DAMAGED_ADVICE
    ))
    .into())
}

/// What to do with a damaged database, said wherever damage is found.
pub const DAMAGED_ADVICE: &str =
    "stop the agent's timers, keep a copy of the file, then restore it \
     from a backup or try `sqlite3 state.db .recover`; the mirrors and canonical.json are not \
     affected";

/// How long a job waits while another process holds the state database ("database is locked"):
/// 10 s, or `CC_CI_DB_BUSY_WAIT` (a duration such as "30s"), for a host whose jobs hold it longer
/// and for tests that need not wait 10 s to see the refusal.
fn busy_wait() -> Duration {
    static WAIT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *WAIT.get_or_init(|| {
        std::env::var("CC_CI_DB_BUSY_WAIT")
            .ok()
            .and_then(|v| humantime::parse_duration(&v).ok())
            .unwrap_or(Duration::from_secs(10))
    })
}

/// SQLite's busy handler: says once that it waits, then tries every 10 ms until [`busy_wait`]
/// has passed.
fn wait_while_busy(tries: i32) -> bool {
    const STEP: Duration = Duration::from_millis(10);
    if tries == 0 {
        tracing::info!(
            "the state database is held by another process; waiting up to {}s",
            busy_wait().as_secs()
        );
    }
    if STEP * u32::try_from(tries).unwrap_or(u32::MAX) >= busy_wait() {
        return false;
    }
    std::thread::sleep(STEP);
    true
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
    // SQLite opens its -wal and -shm files without following a link: one planted there (by
    // whoever can write the directory) fails the open with no name of its own.
    for name in [format!("{DB_FILE}-wal"), format!("{DB_FILE}-shm")] {
        let at = state_dir.join(&name);
        if let Ok(m) = std::fs::symlink_metadata(&at) {
            if !m.file_type().is_file() {
                let what = if m.file_type().is_symlink() {
                    "a symbolic link"
                } else {
                    "not a plain file"
                };
                return format!(
                    ": {} is {what}, which SQLite refuses to open: remove it (with no agent \
                     running) and look into who put it there",
                    at.display()
                );
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_migrates_and_reopens() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");
        let ledger = Ledger::open(&state, &crate::clock::Clock::system())?;
        assert_eq!(ledger.schema_version()? as usize, migrations::ALL.len());
        ledger.record_event("test", "hello", &serde_json::json!({"n": 1}))?;
        drop(ledger);
        let again = Ledger::open(&state, &crate::clock::Clock::system())?;
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
            drop(Ledger::open(&state, &crate::clock::Clock::system())?);
            return Ok(());
        }
        std::os::unix::fs::chown(&state, Some(65534), Some(65534))?;
        let owner = |name: &str| std::fs::metadata(state.join(name)).map(|m| (m.uid(), m.gid()));
        let ledger = Ledger::open(&state, &crate::clock::Clock::system())?;
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
        drop(Ledger::open(dir.path(), &crate::clock::Clock::system())?);
        let conn = Connection::open(dir.path().join(DB_FILE))?;
        conn.pragma_update(None, "user_version", 999)?;
        drop(conn);
        let err = Ledger::open(dir.path(), &crate::clock::Clock::system())
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("schema version 999"), "{err}");
        Ok(())
    }
}
