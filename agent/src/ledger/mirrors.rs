//! The mirror journal: per recipe, the last sync and its events.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{Ledger, MirrorResult};
use anyhow::Result;

#[derive(schemars::JsonSchema, Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MirrorState {
    pub recipe: String,
    pub synced_at: String,
    pub result: MirrorResult,
    pub error: Option<String>,
    pub upstream_head: Option<String>,
    pub mirror_head: Option<String>,
    pub tags: Option<i64>,
}

#[derive(schemars::JsonSchema, Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MirrorEvent {
    pub at: String,
    pub kind: String,
    pub detail: String,
}

impl Ledger {
    /// Records one recipe's sync and its events in one transaction.
    pub fn mirror_record(
        &mut self,
        state: &MirrorState,
        events: &[(String, String)],
    ) -> Result<()> {
        self.mirror_record_many(&[(state.clone(), events.to_vec())])
    }

    /// Records several recipes' syncs and events in one transaction.
    pub fn mirror_record_many(
        &mut self,
        entries: &[(MirrorState, Vec<(String, String)>)],
    ) -> Result<()> {
        let now = self.now();
        let tx = self.conn.transaction()?;
        for (state, events) in entries {
            tx.execute(
                "INSERT INTO mirror_state (recipe, synced_at, result, error, upstream_head, mirror_head, tags)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (recipe) DO UPDATE SET synced_at = ?2, result = ?3, error = ?4,
                    upstream_head = COALESCE(?5, upstream_head), mirror_head = COALESCE(?6, mirror_head),
                    tags = COALESCE(?7, tags)",
                params![
                    state.recipe,
                    state.synced_at,
                    state.result,
                    state.error,
                    state.upstream_head,
                    state.mirror_head,
                    state.tags
                ],
            )?;
            for (kind, detail) in events {
                tx.execute(
                    "INSERT INTO mirror_events (recipe, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
                    params![state.recipe, &now, kind, detail],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn mirror_state(&self, recipe: &str) -> Result<Option<MirrorState>> {
        Ok(self
            .conn
            .query_row(
                "SELECT recipe, synced_at, result, error, upstream_head, mirror_head, tags FROM mirror_state WHERE recipe = ?1",
                [recipe],
                |r| {
                    Ok(MirrorState {
                        recipe: r.get(0)?,
                        synced_at: r.get(1)?,
                        result: r.get(2)?,
                        error: r.get(3)?,
                        upstream_head: r.get(4)?,
                        mirror_head: r.get(5)?,
                        tags: r.get(6)?,
                    })
                },
            )
            .optional()?)
    }

    /// Events of `recipe`, newest first.
    pub fn mirror_events(&self, recipe: &str, limit: u32) -> Result<Vec<MirrorEvent>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT at, kind, detail FROM mirror_events WHERE recipe = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![recipe, limit], |r| {
            Ok(MirrorEvent {
                at: r.get(0)?,
                kind: r.get(1)?,
                detail: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
