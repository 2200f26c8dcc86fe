//! `deploy.json` in the state directory: what the last deploy did and what upstream had, for
//! `health`, which runs as the job user and cannot read root's deploy journal. A report, not the
//! record: the journal is the truth, and recipe CI, which can write the state directory, could
//! forge this file; health says what it says, nothing acts on it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fsutil::{publish, read_regular};
use crate::ledger::{DeployRow, Outcome};

pub const DEPLOY_FILE: &str = "deploy.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployReport {
    /// The journal row of the last deploy that ran.
    pub id: i64,
    pub outcome: Option<String>,
    pub finished_at: Option<String>,
    /// The commit it built (the checkout's HEAD then).
    pub flake_commit: Option<String>,
    pub message: Option<String>,
    /// What the upstream branch named when `deploy --auto` last looked, and when.
    pub upstream_commit: Option<String>,
    pub checked_at: Option<String>,
    /// Commits upstream has that the deployed one lacks, when the checkout could count them.
    pub behind: Option<u64>,
}

impl DeployReport {
    pub fn of(row: &DeployRow) -> Self {
        Self {
            id: row.id,
            outcome: row.outcome.map(|o| o.as_str().to_string()),
            finished_at: row.finished_at.clone(),
            flake_commit: row.flake_commit.clone(),
            message: row.message.clone(),
            upstream_commit: None,
            checked_at: None,
            behind: None,
        }
    }

    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome.as_deref().and_then(Outcome::parse)
    }
}

/// Writes the report atomically; a report that cannot be written is logged, never a failed job.
pub fn write(state_dir: &Path, report: &DeployReport) {
    let written = serde_json::to_vec_pretty(report)
        .map_err(anyhow::Error::from)
        .and_then(|bytes| publish(&state_dir.join(DEPLOY_FILE), &bytes, 0o644));
    if let Err(e) = written {
        tracing::warn!(
            "cannot write {}: {e:#}",
            state_dir.join(DEPLOY_FILE).display()
        );
    }
}

/// The last report, if there is one that reads as one (never through a link, at most 64 KiB).
pub fn read(state_dir: &Path) -> Option<DeployReport> {
    let bytes = read_regular(&state_dir.join(DEPLOY_FILE), 64 << 10, false).ok()?;
    serde_json::from_slice(&bytes).ok()
}
