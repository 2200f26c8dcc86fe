//! Health reports waiting for the bridge.

use rusqlite::params;

use super::Ledger;
use anyhow::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub seq: i64,
    pub id: String,
    pub body: String,
    pub attempts: i64,
}

impl Ledger {
    /// Queues a report; `make(id, seq)` builds its body, which carries both. One transaction, so
    /// a report is either queued whole with the next sequence number, or not at all.
    pub fn outbox_push(
        &mut self,
        make: impl FnOnce(&str, i64) -> Result<String>,
    ) -> Result<Outgoing> {
        let now = self.now();
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO outbox (id, created_at, body) VALUES ('', ?1, '')",
            [&now],
        )?;
        let seq = tx.last_insert_rowid();
        let id = report_id(seq);
        let body = make(&id, seq)?;
        tx.execute(
            "UPDATE outbox SET id = ?1, body = ?2 WHERE seq = ?3",
            params![id, body, seq],
        )?;
        tx.commit()?;
        Ok(Outgoing {
            seq,
            id,
            body,
            attempts: 0,
        })
    }

    /// Waiting reports, oldest first.
    pub fn outbox(&self) -> Result<Vec<Outgoing>> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, id, body, attempts FROM outbox ORDER BY seq")?;
        let rows = stmt.query_map([], |r| {
            Ok(Outgoing {
                seq: r.get(0)?,
                id: r.get(1)?,
                body: r.get(2)?,
                attempts: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn outbox_delivered(&self, seq: i64) -> Result<()> {
        self.conn
            .execute("DELETE FROM outbox WHERE seq = ?1", [seq])?;
        Ok(())
    }

    pub fn outbox_failed(&self, seq: i64, error: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?1 WHERE seq = ?2",
            params![error, seq],
        )?;
        Ok(())
    }
}

/// A report id: the host's boot-independent time and the sequence number, unique per state db.
fn report_id(seq: i64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{seq}")
}
