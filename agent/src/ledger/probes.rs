//! The probe journal: one row per attempt to prove a recipe triggerable. A row is begun before
//! anything is written to the forge, and the head and comment it will post are recorded before
//! the comment is, so a probe killed at any instant leaves a row that says how far it got.

use anyhow::Result;
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{Ledger, ProbeOutcome};

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeRow {
    pub id: i64,
    pub recipe: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: Option<ProbeOutcome>,
    pub stopped_at: Option<String>,
    pub fingerprint: String,
    pub pull: Option<i64>,
    pub head: Option<String>,
    pub comment_id: Option<i64>,
    pub commented_at: Option<String>,
    pub picked_up_at: Option<String>,
    pub build_started_at: Option<String>,
    pub reported_at: Option<String>,
    pub ci_state: Option<String>,
    pub evidence: serde_json::Value,
    pub detail: Option<String>,
}

/// A stage's time column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageColumn {
    PickedUp,
    BuildStarted,
    Reported,
}

impl StageColumn {
    fn column(self) -> &'static str {
        match self {
            StageColumn::PickedUp => "picked_up_at",
            StageColumn::BuildStarted => "build_started_at",
            StageColumn::Reported => "reported_at",
        }
    }
}

const COLUMNS: &str =
    "id, recipe, started_at, finished_at, outcome, stopped_at, fingerprint, pull, \
     head, comment_id, commented_at, picked_up_at, build_started_at, reported_at, ci_state, \
     evidence, detail";

fn row(r: &Row<'_>) -> rusqlite::Result<ProbeRow> {
    let evidence: String = r.get(15)?;
    Ok(ProbeRow {
        id: r.get(0)?,
        recipe: r.get(1)?,
        started_at: r.get(2)?,
        finished_at: r.get(3)?,
        outcome: r.get(4)?,
        stopped_at: r.get(5)?,
        fingerprint: r.get(6)?,
        pull: r.get(7)?,
        head: r.get(8)?,
        comment_id: r.get(9)?,
        commented_at: r.get(10)?,
        picked_up_at: r.get(11)?,
        build_started_at: r.get(12)?,
        reported_at: r.get(13)?,
        ci_state: r.get(14)?,
        evidence: serde_json::from_str(&evidence).unwrap_or(serde_json::Value::Null),
        detail: r.get(16)?,
    })
}

impl Ledger {
    /// A new probe of `recipe`, begun now; its id.
    pub fn probe_begin(&self, recipe: &str, fingerprint: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO probes (recipe, started_at, fingerprint) VALUES (?1, ?2, ?3)",
            params![recipe, self.now(), fingerprint],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The pull request and head the probe is about to comment on.
    pub fn probe_target(&self, id: i64, pull: u64, head: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE probes SET pull = ?2, head = ?3 WHERE id = ?1",
            params![id, i64::try_from(pull)?, head],
        )?;
        Ok(())
    }

    /// The trigger comment, posted.
    pub fn probe_commented(&self, id: i64, comment: u64) -> Result<()> {
        self.conn.execute(
            "UPDATE probes SET comment_id = ?2, commented_at = ?3 WHERE id = ?1",
            params![id, i64::try_from(comment)?, self.now()],
        )?;
        Ok(())
    }

    /// A stage happened now; what showed it goes into `evidence`.
    pub fn probe_stage(&self, id: i64, stage: StageColumn, seen: &str) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        let evidence: String =
            tx.query_row("SELECT evidence FROM probes WHERE id = ?1", [id], |r| {
                r.get(0)
            })?;
        let mut list: Vec<serde_json::Value> = serde_json::from_str(&evidence).unwrap_or_default();
        list.push(
            serde_json::json!({ "stage": stage.column().trim_end_matches("_at"), "seen": seen }),
        );
        let sql = format!(
            "UPDATE probes SET {} = ?2, evidence = ?3 WHERE id = ?1",
            stage.column()
        );
        tx.execute(&sql, params![id, self.now(), serde_json::to_string(&list)?])?;
        tx.commit()?;
        Ok(())
    }

    pub fn probe_end(
        &self,
        id: i64,
        outcome: ProbeOutcome,
        stopped_at: Option<&str>,
        ci_state: Option<&str>,
        detail: &str,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE probes SET finished_at = ?2, outcome = ?3, stopped_at = ?4, ci_state = ?5, detail = ?6
             WHERE id = ?1",
            params![id, self.now(), outcome, stopped_at, ci_state, detail],
        )?;
        Ok(())
    }

    /// Probes a killed run left unfinished: marked interrupted, returned for the log.
    pub fn probes_interrupted(&self) -> Result<Vec<ProbeRow>> {
        let open = self.probes_where("finished_at IS NULL", &[])?;
        self.conn.execute(
            "UPDATE probes SET finished_at = ?1, outcome = 'interrupted',
                detail = 'the agent stopped before this probe ended'
             WHERE finished_at IS NULL",
            [self.now()],
        )?;
        Ok(open)
    }

    /// The newest probe of `recipe` that judged it (proven or stopped).
    pub fn probe_last_judged(&self, recipe: &str) -> Result<Option<ProbeRow>> {
        Ok(self
            .probes_where(
                "recipe = ?1 AND outcome IN ('proven', 'stopped') ORDER BY id DESC LIMIT 1",
                &[recipe],
            )?
            .pop())
    }

    /// The newest proof of `recipe`.
    pub fn probe_last_proof(&self, recipe: &str) -> Result<Option<ProbeRow>> {
        Ok(self
            .probes_where(
                "recipe = ?1 AND outcome = 'proven' ORDER BY id DESC LIMIT 1",
                &[recipe],
            )?
            .pop())
    }

    /// The pull request the newest probe of `recipe` that reached one used.
    pub fn probe_last_pull(&self, recipe: &str) -> Result<Option<u64>> {
        Ok(self
            .probes_where(
                "recipe = ?1 AND pull IS NOT NULL ORDER BY id DESC LIMIT 1",
                &[recipe],
            )?
            .pop()
            .and_then(|p| p.pull)
            .and_then(|n| u64::try_from(n).ok()))
    }

    /// Whether any probe ever ran: until one has, health says nothing of triggerability.
    pub fn probes_ran(&self) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT EXISTS (SELECT 1 FROM probes)", [], |r| r.get(0))?)
    }

    /// When any probe last commented on the forge: the rate limit counts from it.
    pub fn probe_last_comment_at(&self) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT commented_at FROM probes WHERE commented_at IS NOT NULL
                 ORDER BY commented_at DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Every probe row of `recipe`, newest first (`None`: every recipe), at most `limit`.
    pub fn probe_history(&self, recipe: Option<&str>, limit: u32) -> Result<Vec<ProbeRow>> {
        match recipe {
            Some(r) => {
                self.probes_where(&format!("recipe = ?1 ORDER BY id DESC LIMIT {limit}"), &[r])
            }
            None => self.probes_where(&format!("1 ORDER BY id DESC LIMIT {limit}"), &[]),
        }
    }

    fn probes_where(&self, clause: &str, args: &[&str]) -> Result<Vec<ProbeRow>> {
        let sql = format!("SELECT {COLUMNS} FROM probes WHERE {clause}");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_row_keeps_its_stages_and_a_killed_one_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), &crate::clock::Clock::system()).unwrap();
        let id = ledger.probe_begin("plausible", "fp").unwrap();
        ledger.probe_target(id, 3, "a".repeat(40).as_str()).unwrap();
        ledger.probe_commented(id, 17).unwrap();
        ledger
            .probe_stage(id, StageColumn::PickedUp, "a reaction by bridge")
            .unwrap();
        let killed = ledger.probe_begin("ghost", "fp").unwrap();
        ledger
            .probe_end(
                id,
                ProbeOutcome::Stopped,
                Some("build-started"),
                None,
                "no build",
            )
            .unwrap();
        let found = ledger.probes_interrupted().unwrap();
        assert_eq!(found.iter().map(|p| p.id).collect::<Vec<_>>(), [killed]);
        let last = ledger.probe_last_judged("plausible").unwrap().unwrap();
        assert_eq!(last.outcome, Some(ProbeOutcome::Stopped));
        assert_eq!(last.comment_id, Some(17));
        assert!(last.picked_up_at.is_some() && last.build_started_at.is_none());
        assert_eq!(last.evidence[0]["stage"], "picked_up");
        assert!(ledger.probe_last_proof("plausible").unwrap().is_none());
        let ghost = ledger.probe_history(Some("ghost"), 5).unwrap();
        assert_eq!(ghost[0].outcome, Some(ProbeOutcome::Interrupted));
        assert!(ledger.probe_last_comment_at().unwrap().is_some());
    }
}
