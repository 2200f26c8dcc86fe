//! Garbage-collection records: each run, each deletion, and docker volumes' last use.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{DeletionState, GcOutcome, Ledger};
use anyhow::Result;

/// A finished (or interrupted) gc run, as `health` and `gc status` read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcRun {
    pub id: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: Option<GcOutcome>,
    pub budget: Option<i64>,
    pub total_bytes: Option<i64>,
    pub protected_bytes: Option<i64>,
    pub freed_bytes: i64,
    /// JSON list of shortfalls.
    pub shortfalls: serde_json::Value,
    pub detail: Option<String>,
}

/// One deletion, recorded as `deleting` before the volume is touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deletion {
    pub id: i64,
    pub gc_run: i64,
    pub volume: String,
    pub recipe: Option<String>,
    pub version: Option<String>,
    pub bytes: i64,
    pub reason: String,
    pub state: DeletionState,
    pub at: String,
    pub error: Option<String>,
}

pub struct GcFigures<'a> {
    pub outcome: GcOutcome,
    pub budget: u64,
    pub min_free: u64,
    pub free: Option<u64>,
    pub total: u64,
    pub protected: u64,
    pub freed: u64,
    pub shortfalls: &'a serde_json::Value,
    pub detail: &'a str,
}

fn i(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Ledger {
    pub fn gc_begin(&self) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO gc_runs (started_at) VALUES (?1)",
            params![self.now()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn gc_finish(&self, id: i64, f: &GcFigures<'_>) -> Result<()> {
        self.conn.execute(
            "UPDATE gc_runs SET finished_at = ?2, outcome = ?3, budget = ?4, min_free = ?5,
                 free_bytes = ?6, total_bytes = ?7, protected_bytes = ?8, freed_bytes = ?9,
                 shortfalls = ?10, detail = ?11
             WHERE id = ?1",
            params![
                id,
                self.now(),
                f.outcome,
                i(f.budget),
                i(f.min_free),
                f.free.map(i),
                i(f.total),
                i(f.protected),
                i(f.freed),
                f.shortfalls.to_string(),
                f.detail
            ],
        )?;
        Ok(())
    }

    /// Only the outcome, for a run refused or failed before it had figures.
    pub fn gc_abort(&self, id: i64, outcome: GcOutcome, detail: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE gc_runs SET finished_at = ?2, outcome = ?3, detail = ?4 WHERE id = ?1",
            params![id, self.now(), outcome, detail],
        )?;
        Ok(())
    }

    /// The newest gc run that got as far as measuring the volumes.
    pub fn gc_last_measured(&self) -> Result<Option<GcRun>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, started_at, finished_at, outcome, budget, total_bytes, protected_bytes,
                        freed_bytes, shortfalls, detail
                 FROM gc_runs WHERE total_bytes IS NOT NULL ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok(GcRun {
                        id: r.get(0)?,
                        started_at: r.get(1)?,
                        finished_at: r.get(2)?,
                        outcome: r.get(3)?,
                        budget: r.get(4)?,
                        total_bytes: r.get(5)?,
                        protected_bytes: r.get(6)?,
                        freed_bytes: r.get(7)?,
                        shortfalls: serde_json::from_str(&r.get::<_, String>(8)?)
                            .unwrap_or_default(),
                        detail: r.get(9)?,
                    })
                },
            )
            .optional()?)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn deletion_begin(
        &self,
        run: i64,
        volume: &str,
        recipe: Option<&str>,
        version: Option<&str>,
        bytes: u64,
        last_used: &str,
        reason: &str,
    ) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO gc_deletions (gc_run, volume, recipe, version, bytes, last_used, reason,
                                       state, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'deleting', ?8)",
            params![
                run,
                volume,
                recipe,
                version,
                i(bytes),
                last_used,
                reason,
                self.now()
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// `state`: deleted, failed or kept (a killed run's deletion that never touched the volume).
    pub fn deletion_end(&self, id: i64, state: DeletionState, error: Option<&str>) -> Result<()> {
        self.conn.execute(
            "UPDATE gc_deletions SET state = ?2, error = ?3, at = ?4 WHERE id = ?1",
            params![id, state, error, self.now()],
        )?;
        Ok(())
    }

    /// Deletions a killed run began and never finished.
    pub fn deletions_unfinished(&self) -> Result<Vec<Deletion>> {
        self.deletions_where("state = 'deleting'", 1000)
    }

    pub fn deletions_recent(&self, limit: u32) -> Result<Vec<Deletion>> {
        self.deletions_where("1", limit)
    }

    fn deletions_where(&self, filter: &str, limit: u32) -> Result<Vec<Deletion>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT id, gc_run, volume, recipe, version, bytes, reason, state, at, error
             FROM gc_deletions WHERE {filter} ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = stmt.query_map(params![limit], |r| {
            Ok(Deletion {
                id: r.get(0)?,
                gc_run: r.get(1)?,
                volume: r.get(2)?,
                recipe: r.get(3)?,
                version: r.get(4)?,
                bytes: r.get(5)?,
                reason: r.get(6)?,
                state: r.get(7)?,
                at: r.get(8)?,
                error: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Docker volumes seen in use now; their last use becomes now.
    pub fn volumes_used_now(&mut self, names: &[&str]) -> Result<()> {
        let now = self.now();
        let tx = self.conn.transaction()?;
        for name in names {
            tx.execute(
                "INSERT INTO volume_use (volume, last_used) VALUES (?1, ?2)
                 ON CONFLICT (volume) DO UPDATE SET last_used = excluded.last_used",
                params![name, now],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The last use of `name` the agent saw itself; else now, remembered from here on: what a
    /// volume whose own date cannot be believed counts from.
    pub fn volume_seen(&mut self, name: &str) -> Result<String> {
        self.conn.execute(
            "INSERT INTO volume_use (volume, last_used) VALUES (?1, ?2)
             ON CONFLICT (volume) DO NOTHING",
            params![name, self.now()],
        )?;
        Ok(self.volume_last_used(name)?.unwrap_or_else(|| self.now()))
    }

    pub fn volume_last_used(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT last_used FROM volume_use WHERE volume = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn volume_forget(&self, name: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM volume_use WHERE volume = ?1", params![name])?;
        Ok(())
    }
}
