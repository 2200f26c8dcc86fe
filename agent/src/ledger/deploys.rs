//! The deploy journal: one row per deploy or rollback, written as it goes.

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::Ledger;
use anyhow::Result;

pub use super::words::Stage;

impl Stage {
    /// States in which the new system may be active but is not committed: the dead-man's to take.
    pub const UNCONFIRMED: [Stage; 3] = [Stage::Armed, Stage::Activating, Stage::Verifying];
}

/// How a deploy or rollback ended: the word in the journal and the exit code it gives.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Active, verified, and the boot default.
    Deployed,
    /// The host already runs what would be deployed.
    Unchanged,
    /// Built and shown; nothing activated.
    DryRun,
    /// Nothing was activated.
    BuildFailed,
    /// The new system did not verify; the old one is back and verified.
    RolledBack,
    /// Going back did not verify either: the host needs a person.
    RollbackFailed,
    /// An error stopped it (the message says which); see the row's state for how far it got.
    Failed,
    /// An agent that died left it unfinished; a later one closed the row.
    Interrupted,
    RefusedNotACheckout,
    RefusedDirty,
    RefusedStale,
    RefusedDiverged,
    RefusedUnsigned,
    RefusedCiBusy,
}

impl Outcome {
    const ALL: [Outcome; 14] = [
        Outcome::Deployed,
        Outcome::Unchanged,
        Outcome::DryRun,
        Outcome::BuildFailed,
        Outcome::RolledBack,
        Outcome::RollbackFailed,
        Outcome::Failed,
        Outcome::Interrupted,
        Outcome::RefusedNotACheckout,
        Outcome::RefusedDirty,
        Outcome::RefusedStale,
        Outcome::RefusedDiverged,
        Outcome::RefusedUnsigned,
        Outcome::RefusedCiBusy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deployed => "deployed",
            Outcome::Unchanged => "unchanged",
            Outcome::DryRun => "dry-run",
            Outcome::BuildFailed => "build-failed",
            Outcome::RolledBack => "rolled-back",
            Outcome::RollbackFailed => "rollback-failed",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
            Outcome::RefusedNotACheckout => "refused-not-a-checkout",
            Outcome::RefusedDirty => "refused-dirty",
            Outcome::RefusedStale => "refused-stale",
            Outcome::RefusedDiverged => "refused-diverged",
            Outcome::RefusedUnsigned => "refused-unsigned",
            Outcome::RefusedCiBusy => "refused-ci-busy",
        }
    }

    pub fn parse(word: &str) -> Option<Outcome> {
        Self::ALL.into_iter().find(|o| o.as_str() == word)
    }

    /// Went back to the old system (or tried to): what the rollback hook is for.
    pub fn went_back(self) -> bool {
        matches!(self, Outcome::RolledBack | Outcome::RollbackFailed)
    }

    /// The deploy did not start: nothing on the host changed.
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            Outcome::RefusedNotACheckout
                | Outcome::RefusedDirty
                | Outcome::RefusedStale
                | Outcome::RefusedDiverged
                | Outcome::RefusedUnsigned
                | Outcome::RefusedCiBusy
        )
    }
}

#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct DeployRow {
    pub id: i64,
    pub kind: String,
    pub state: Stage,
    pub outcome: Option<Outcome>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub pid: i64,
    pub flake: Option<String>,
    pub flake_commit: Option<String>,
    pub flake_lock: Option<String>,
    pub from_generation: Option<i64>,
    pub from_path: Option<String>,
    pub to_generation: Option<i64>,
    pub to_path: Option<String>,
    pub failed_before: serde_json::Value,
    pub checks: serde_json::Value,
    pub rollback_checks: serde_json::Value,
    pub deadman_unit: Option<String>,
    /// `--pull`: the commit the checkout was at before it fast-forwarded (to `flake_commit`).
    pub pulled_from: Option<String>,
    /// The closure diff and unit changes read before activating (`null` when not read).
    pub changes: serde_json::Value,
    pub build_ms: Option<i64>,
    pub activate_ms: Option<i64>,
    pub verify_ms: Option<i64>,
    pub message: Option<String>,
}

const COLUMNS: &str =
    "id, kind, state, outcome, started_at, finished_at, pid, flake, flake_commit, \
    flake_lock, from_generation, from_path, to_generation, to_path, failed_before, checks, \
    rollback_checks, deadman_unit, build_ms, activate_ms, verify_ms, message, pulled_from, changes";

fn json(s: String) -> serde_json::Value {
    serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s))
}

impl DeployRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            kind: r.get(1)?,
            state: r.get(2)?,
            outcome: match r.get::<_, Option<String>>(3)? {
                None => None,
                Some(word) => Some(Outcome::parse(&word).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        3,
                        rusqlite::types::Type::Text,
                        format!("{word:?} is not a deploy outcome").into(),
                    )
                })?),
            },
            started_at: r.get(4)?,
            finished_at: r.get(5)?,
            pid: r.get(6)?,
            flake: r.get(7)?,
            flake_commit: r.get(8)?,
            flake_lock: r.get(9)?,
            from_generation: r.get(10)?,
            from_path: r.get(11)?,
            to_generation: r.get(12)?,
            to_path: r.get(13)?,
            failed_before: json(r.get(14)?),
            checks: json(r.get(15)?),
            rollback_checks: json(r.get(16)?),
            deadman_unit: r.get(17)?,
            build_ms: r.get(18)?,
            activate_ms: r.get(19)?,
            verify_ms: r.get(20)?,
            message: r.get(21)?,
            pulled_from: r.get(22)?,
            changes: r
                .get::<_, Option<String>>(23)?
                .map_or(serde_json::Value::Null, json),
        })
    }
}

/// A column of `deploys` that a running deploy fills in.
#[derive(Debug, Clone, Copy)]
pub enum Field {
    FlakeCommit,
    FlakeLock,
    FromGeneration,
    FromPath,
    ToGeneration,
    ToPath,
    FailedBefore,
    Checks,
    RollbackChecks,
    DeadmanUnit,
    PulledFrom,
    Changes,
    BuildMs,
    ActivateMs,
    VerifyMs,
    Message,
}

impl Field {
    fn column(self) -> &'static str {
        match self {
            Field::FlakeCommit => "flake_commit",
            Field::FlakeLock => "flake_lock",
            Field::FromGeneration => "from_generation",
            Field::FromPath => "from_path",
            Field::ToGeneration => "to_generation",
            Field::ToPath => "to_path",
            Field::FailedBefore => "failed_before",
            Field::Checks => "checks",
            Field::RollbackChecks => "rollback_checks",
            Field::DeadmanUnit => "deadman_unit",
            Field::PulledFrom => "pulled_from",
            Field::Changes => "changes",
            Field::BuildMs => "build_ms",
            Field::ActivateMs => "activate_ms",
            Field::VerifyMs => "verify_ms",
            Field::Message => "message",
        }
    }
}

impl Ledger {
    pub fn deploy_begin(&self, kind: &str, flake: Option<&str>) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO deploys (kind, state, started_at, pid, flake) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                kind,
                Stage::Preflight.as_str(),
                self.now(),
                std::process::id(),
                flake
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn deploy_set(&self, id: i64, field: Field, value: impl rusqlite::ToSql) -> Result<()> {
        let sql = format!("UPDATE deploys SET {} = ?1 WHERE id = ?2", field.column());
        self.conn.execute(&sql, params![value, id])?;
        Ok(())
    }

    /// Moves `id` to `to` only if it is in one of `from`, recording this process as the one
    /// acting on it; false when someone else moved it first.
    pub fn deploy_advance(&self, id: i64, from: &[Stage], to: Stage) -> Result<bool> {
        let placeholders = from
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "UPDATE deploys SET state = ?1, pid = ?3 WHERE id = ?2 AND state IN ({placeholders})"
        );
        Ok(self
            .conn
            .execute(&sql, params![to.as_str(), id, std::process::id()])?
            == 1)
    }

    /// Ends a deploy with its outcome and a message, whatever state it was in.
    pub fn deploy_finish(&self, id: i64, outcome: Outcome, message: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE deploys SET state = ?1, outcome = ?2, message = ?3, finished_at = ?4 WHERE id = ?5",
            params![Stage::Finished.as_str(), outcome.as_str(), message, self.now(), id],
        )?;
        Ok(())
    }

    pub fn deploy_get(&self, id: i64) -> Result<Option<DeployRow>> {
        let sql = format!("SELECT {COLUMNS} FROM deploys WHERE id = ?1");
        Ok(self
            .conn
            .query_row(&sql, [id], DeployRow::from_row)
            .optional()?)
    }

    /// The newest deploy that got as far as reading `commit` from its checkout.
    pub fn deploy_last_of_commit(&self, commit: &str) -> Result<Option<DeployRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM deploys WHERE kind = 'deploy' AND flake_commit = ?1 ORDER BY id DESC LIMIT 1"
        );
        Ok(self
            .conn
            .query_row(&sql, [commit], DeployRow::from_row)
            .optional()?)
    }

    /// The newest deploy that left its commit running (`deployed` or `unchanged`).
    pub fn deploy_last_running(&self) -> Result<Option<DeployRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM deploys WHERE kind = 'deploy' AND outcome IN ('deployed', 'unchanged') ORDER BY id DESC LIMIT 1"
        );
        Ok(self
            .conn
            .query_row(&sql, [], DeployRow::from_row)
            .optional()?)
    }

    /// Newest first.
    pub fn deploy_history(&self, limit: u32) -> Result<Vec<DeployRow>> {
        let sql = format!("SELECT {COLUMNS} FROM deploys ORDER BY id DESC LIMIT ?1");
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([limit], DeployRow::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn deploys_unfinished(&self) -> Result<Vec<DeployRow>> {
        let sql = format!("SELECT {COLUMNS} FROM deploys WHERE finished_at IS NULL ORDER BY id");
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], DeployRow::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_side_wins_a_transition() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let agent = Ledger::open(dir.path(), &crate::clock::Clock::system())?;
        let deadman = Ledger::open(dir.path(), &crate::clock::Clock::system())?;
        let id = agent.deploy_begin("deploy", Some(".#cc-ci"))?;
        assert!(agent.deploy_advance(id, &[Stage::Preflight], Stage::Armed)?);
        assert!(agent.deploy_advance(id, &[Stage::Armed], Stage::Verifying)?);
        // The dead-man takes it; the agent's commit then loses.
        assert!(deadman.deploy_advance(id, &Stage::UNCONFIRMED, Stage::RollingBack)?);
        assert!(!agent.deploy_advance(id, &[Stage::Verifying], Stage::Committing)?);
        deadman.deploy_finish(id, Outcome::RolledBack, "dead-man")?;
        let row = agent
            .deploy_get(id)?
            .ok_or_else(|| anyhow::anyhow!("row"))?;
        assert_eq!(
            (row.state, row.outcome),
            (Stage::Finished, Some(Outcome::RolledBack))
        );
        assert!(agent.deploys_unfinished()?.is_empty());
        Ok(())
    }

    /// A stage word this agent never writes (a newer agent's, or a hand edit) is damage, said
    /// as such: read as `finished` it took the row out of the dead-man switch's unconfirmed set.
    #[test]
    fn an_unknown_stage_word_is_an_error_not_finished() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let journal = Ledger::open(dir.path(), &crate::clock::Clock::system())?;
        let id = journal.deploy_begin("deploy", Some(".#cc-ci"))?;
        journal.conn.execute(
            "UPDATE deploys SET state = 'half-armed' WHERE id = ?1",
            [id],
        )?;
        let read = journal.deploy_get(id);
        let err = read.err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(err.contains("\"half-armed\""), "{err}");
        assert!(journal.deploys_unfinished().is_err());
        Ok(())
    }

    #[test]
    fn every_outcome_reads_back_as_the_word_it_was_written_as() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
            assert_eq!(
                serde_json::to_value(o).ok(),
                Some(serde_json::Value::String(o.as_str().into()))
            );
        }
        assert_eq!(Outcome::parse("deployed-ish"), None);
    }
}
