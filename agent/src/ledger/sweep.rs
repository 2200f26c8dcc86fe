//! The greenness ledger: queues, runs, canonicals, and the sweeps themselves.

use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::{Ledger, RunResult, SweepOutcome};
use anyhow::Result;

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canonical {
    pub recipe: String,
    pub version: String,
    pub commit: String,
    pub run: Option<i64>,
    pub promoted_at: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub recipe: String,
    pub branch: String,
    pub commit: String,
    pub tag: Option<String>,
    pub version: Option<String>,
    pub base: Option<String>,
    pub result: RunResult,
    pub greenness: Option<f64>,
    pub cold: bool,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub log_path: Option<String>,
    pub trigger: String,
    pub exit_code: Option<i64>,
    pub detail: Option<String>,
}

/// What the last look at a recipe's refs found: unchanged refs, unchanged latest release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepState {
    pub digest: String,
    pub latest_tag: Option<String>,
    pub latest_commit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SweepRecord {
    pub started_at: String,
    pub outcome: Option<SweepOutcome>,
    pub detail: Option<String>,
}

/// What a finished CI run gave.
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub result: RunResult,
    pub greenness: f64,
    pub exit_code: Option<i32>,
    pub detail: String,
    /// Tier by tier, from the run's results; empty for a run judged by its exit code alone.
    pub tiers: Vec<TierRow>,
    /// The end of its log (CI's and the teardown's output), with the agent's tokens taken out.
    pub log_tail: Option<String>,
}

/// A judged run's result and degree.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub result: RunResult,
    pub degree: f64,
}

/// One tier of a run, as its results gave it.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize)]
pub struct TierRow {
    pub tier: String,
    /// Named in the recipe's tiers (else reported beyond them, and not counted).
    pub expected: bool,
    /// In the results at all: an expected tier that is not is "never reported", not green.
    pub reported: bool,
    pub tests: u64,
    pub failures: u64,
    pub errors: u64,
    pub skipped: u64,
    pub seconds: f64,
    pub green: bool,
    pub first_failure: Option<String>,
    pub first_message: Option<String>,
}

impl TierRow {
    /// Whether the tier counts in the run's degree: expected of the recipe, or reported beyond
    /// them with a failure or an error. A failing test is never ignored, wherever its producer
    /// put it (a nested suite, a case with no class).
    pub fn judged(&self) -> bool {
        self.expected || (self.reported && self.failures + self.errors > 0)
    }

    /// Why an expected tier is not green, in a few words.
    pub fn why_not_green(&self) -> String {
        if !self.reported {
            return format!("{} never reported", self.tier);
        }
        match &self.first_failure {
            Some(test) => format!("{} ✗ ({test})", self.tier),
            None if self.tests <= self.skipped => format!("{} ran no test", self.tier),
            None => format!("{} ✗", self.tier),
        }
    }
}

/// A degree as people read it: 0, 1, or two decimals.
pub fn degree_shown(degree: f64) -> String {
    if degree == 0.0 || degree == 1.0 {
        format!("{degree:.0}")
    } else {
        format!("{degree:.2}")
    }
}

/// A judged run's verdict as people read it: `red, degree 0.25: install ✓ … backup ✗ (test_x)`,
/// the degree and the tiers only when the run has them.
pub fn verdict_line(run: &RunRow, tiers: &[TierRow]) -> String {
    let mut line = run.result.to_string();
    if let Some(degree) = run.greenness {
        line.push_str(&format!(", degree {}", degree_shown(degree)));
    }
    let shown = tiers_line(tiers);
    if !shown.is_empty() {
        line.push_str(&format!(": {shown}"));
    }
    line
}

/// The expected tiers of a run in one line: `install ✓ upgrade ✓ backup ✗ (test_x) functional ✓`.
pub fn tiers_line(tiers: &[TierRow]) -> String {
    tiers
        .iter()
        .filter(|t| t.judged())
        .map(|t| {
            if t.green {
                format!("{} ✓", t.tier)
            } else {
                t.why_not_green()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The run's row and its tiers, in the transaction `tx`.
fn finish_in(tx: &rusqlite::Transaction<'_>, id: i64, end: &RunEnd, now: &str) -> Result<()> {
    tx.execute(
        "UPDATE runs SET result = ?1, greenness = ?2, exit_code = ?3, detail = ?4, finished_at = ?5,
         log_tail = ?7 WHERE id = ?6",
        params![end.result, end.greenness, end.exit_code, end.detail, now, id, end.log_tail],
    )?;
    let mut insert = tx.prepare(
        "INSERT INTO run_tiers (run, tier, place, expected, reported, tests, failures,
         errors, skipped, seconds, green, first_failure, first_message)
         VALUES (?1, ?2, ?13, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    for (place, t) in end.tiers.iter().enumerate() {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        insert.execute(params![
            id,
            t.tier,
            t.expected,
            t.reported,
            n(t.tests),
            n(t.failures),
            n(t.errors),
            n(t.skipped),
            t.seconds,
            t.green,
            t.first_failure,
            t.first_message,
            n(place as u64)
        ])?;
    }
    Ok(())
}

fn canonical_of(r: &Row<'_>) -> rusqlite::Result<Canonical> {
    Ok(Canonical {
        recipe: r.get(0)?,
        version: r.get(1)?,
        commit: r.get(2)?,
        run: r.get(3)?,
        promoted_at: r.get(4)?,
    })
}

const RUN_COLUMNS: &str =
    "r.id, q.recipe, q.ref, r.commit_id, r.tag, r.version, r.base, r.result, r.greenness, \
    r.cold, r.started_at, r.finished_at, r.log_path, r.trigger, r.exit_code, r.detail";

fn run_of(r: &Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        recipe: r.get(1)?,
        branch: r.get(2)?,
        commit: r.get(3)?,
        tag: r.get(4)?,
        version: r.get(5)?,
        base: r.get(6)?,
        result: r.get(7)?,
        greenness: r.get(8)?,
        cold: r.get::<_, i64>(9)? != 0,
        started_at: r.get(10)?,
        finished_at: r.get(11)?,
        log_path: r.get(12)?,
        trigger: r.get(13)?,
        exit_code: r.get(14)?,
        detail: r.get(15)?,
    })
}

impl Ledger {
    pub fn queue(&self, recipe: &str, branch: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT OR IGNORE INTO queues (recipe, ref) VALUES (?1, ?2)",
            params![recipe, branch],
        )?;
        Ok(self.conn.query_row(
            "SELECT id FROM queues WHERE recipe = ?1 AND ref = ?2",
            params![recipe, branch],
            |r| r.get(0),
        )?)
    }

    /// A run that already judged this commit (green or red), if any.
    pub fn judged(&self, queue: i64, commit: &str) -> Result<Option<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN queues q ON q.id = r.queue
             WHERE r.queue = ?1 AND r.commit_id = ?2 AND r.result IN ('green', 'red') ORDER BY r.id DESC LIMIT 1"
        );
        Ok(self
            .conn
            .query_row(&sql, params![queue, commit], run_of)
            .optional()?)
    }

    /// How many runs of this commit ended in `error`: it is not judged, so each sweep tries it
    /// again, and says how many times it has.
    pub fn errors_of(&self, queue: i64, commit: &str) -> Result<u32> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM runs WHERE queue = ?1 AND commit_id = ?2 AND result = 'error'",
            params![queue, commit],
            |r| r.get(0),
        )?)
    }

    /// A cold CI run of `tag` at `commit` begins.
    pub fn run_start(
        &self,
        queue: i64,
        commit: &str,
        tag: &str,
        version: &str,
        base: Option<&str>,
        trigger: &str,
    ) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO runs (queue, commit_id, tag, version, base, result, cold, started_at, trigger)
             VALUES (?1, ?2, ?3, ?4, ?5, 'running', 1, ?6, ?7)",
            params![queue, commit, tag, version, base, self.now(), trigger],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn run_log(&self, id: i64, path: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET log_path = ?1 WHERE id = ?2",
            params![path, id],
        )?;
        Ok(())
    }

    /// Records a run's end and its tiers in one transaction: a kill leaves the run `running`
    /// (then `interrupted`), never half its tiers.
    pub fn run_finish(&mut self, id: i64, end: &RunEnd) -> Result<()> {
        let now = self.now();
        let tx = self.conn.transaction()?;
        finish_in(&tx, id, end, &now)?;
        tx.commit()?;
        Ok(())
    }

    /// Run `id`'s result and degree, and those of the judged run (green or red) before it in
    /// its queue: what tells a change of greenness from a repeat.
    pub fn greenness_step(&self, id: i64) -> Result<(Judged, Option<Judged>)> {
        let judged = |r: &Row<'_>| {
            Ok(Judged {
                result: r.get(0)?,
                degree: r.get::<_, Option<f64>>(1)?.unwrap_or(1.0),
            })
        };
        let now = self.conn.query_row(
            "SELECT result, greenness FROM runs WHERE id = ?1",
            [id],
            judged,
        )?;
        let before = self
            .conn
            .query_row(
                "SELECT result, greenness FROM runs WHERE queue = (SELECT queue FROM runs WHERE id = ?1)
                 AND id < ?1 AND result IN ('green', 'red') ORDER BY id DESC LIMIT 1",
                [id],
                judged,
            )
            .optional()?;
        Ok((now, before))
    }

    /// The tiers of each of `ids`, in one query (a page of fifty runs asks once, not fifty times).
    /// The log tails the runs `ids` recorded ([`RunEnd::log_tail`]), by run.
    pub fn run_log_tails(&self, ids: &[i64]) -> Result<std::collections::HashMap<i64, String>> {
        let (Some(lo), Some(hi)) = (ids.iter().min(), ids.iter().max()) else {
            return Ok(std::collections::HashMap::new());
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, log_tail FROM runs WHERE id >= ?1 AND id <= ?2 AND log_tail IS NOT NULL",
        )?;
        let rows = stmt.query_map([lo, hi], |r| Ok((r.get::<_, i64>(0)?, r.get(1)?)))?;
        Ok(rows
            .collect::<Result<std::collections::HashMap<_, _>, _>>()?
            .into_iter()
            .filter(|(id, _)| ids.contains(id))
            .collect())
    }

    pub fn run_tiers_of(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, Vec<TierRow>>> {
        let mut out: std::collections::HashMap<i64, Vec<TierRow>> =
            std::collections::HashMap::new();
        let (Some(lo), Some(hi)) = (ids.iter().min(), ids.iter().max()) else {
            return Ok(out);
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT run, tier, expected, reported, tests, failures, errors, skipped, seconds, green,
             first_failure, first_message FROM run_tiers WHERE run >= ?1 AND run <= ?2
             ORDER BY run, place",
        )?;
        let n = |v: i64| u64::try_from(v).unwrap_or_default();
        let rows = stmt.query_map([lo, hi], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                TierRow {
                    tier: r.get(1)?,
                    expected: r.get(2)?,
                    reported: r.get(3)?,
                    tests: n(r.get(4)?),
                    failures: n(r.get(5)?),
                    errors: n(r.get(6)?),
                    skipped: n(r.get(7)?),
                    seconds: r.get(8)?,
                    green: r.get(9)?,
                    first_failure: r.get(10)?,
                    first_message: r.get(11)?,
                },
            ))
        })?;
        for row in rows {
            let (run, tier) = row?;
            if ids.contains(&run) {
                out.entry(run).or_default().push(tier);
            }
        }
        Ok(out)
    }

    /// The tiers recorded for run `id`, in their place (the recipe's order, then the rest).
    pub fn run_tiers(&self, id: i64) -> Result<Vec<TierRow>> {
        Ok(self.run_tiers_of(&[id])?.remove(&id).unwrap_or_default())
    }

    /// Records a green run and makes it the recipe's canonical, in one transaction: after a crash
    /// the ledger holds either the old canonical and a running run, or both new.
    pub fn finish_and_promote(
        &mut self,
        id: i64,
        end: &RunEnd,
        recipe: &str,
        version: &str,
        commit: &str,
    ) -> Result<Canonical> {
        let now = self.now();
        let tx = self.conn.transaction()?;
        finish_in(&tx, id, end, &now)?;
        let c = promote_in(&tx, id, recipe, version, commit, now)?;
        tx.commit()?;
        Ok(c)
    }

    /// Makes `version` the canonical on the strength of an earlier green run of the same commit
    /// (the commit was green under another tag): the canonical names that run.
    pub fn promote_judged(
        &mut self,
        run: i64,
        recipe: &str,
        version: &str,
        commit: &str,
    ) -> Result<Canonical> {
        let now = self.now();
        let tx = self.conn.transaction()?;
        let c = promote_in(&tx, run, recipe, version, commit, now)?;
        tx.commit()?;
        Ok(c)
    }

    /// Green runs of `recipe` on any branch, newest first.
    pub fn green_runs(&self, recipe: &str) -> Result<Vec<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN queues q ON q.id = r.queue
             WHERE q.recipe = ?1 AND r.result = 'green' ORDER BY r.id DESC"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([recipe], run_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The canonical's tag is gone or names another commit now: `to` (version, commit, run)
    /// replaces it, or nothing does; a `canonical-demoted` event says why. One transaction.
    pub fn demote_canonical(
        &mut self,
        recipe: &str,
        to: Option<(&str, &str, i64)>,
        detail: &str,
    ) -> Result<()> {
        let now = self.now();
        let tx = self.conn.transaction()?;
        match to {
            Some((version, commit, run)) => tx.execute(
                "UPDATE canonicals SET version = ?2, commit_id = ?3, run = ?4, promoted_at = ?5 WHERE recipe = ?1",
                params![recipe, version, commit, run, now],
            )?,
            None => tx.execute("DELETE FROM canonicals WHERE recipe = ?1", [recipe])?,
        };
        tx.execute(
            "INSERT INTO mirror_events (recipe, at, kind, detail) VALUES (?1, ?2, 'canonical-demoted', ?3)",
            params![recipe, now, detail],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Runs left `running` by an agent that died are errors, not results.
    pub fn runs_interrupted(&self) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE runs SET result = 'error', detail = 'interrupted: the agent stopped during the run', finished_at = ?1
             WHERE result = 'running'",
            [self.now()],
        )?)
    }

    pub fn canonical(&self, recipe: &str) -> Result<Option<Canonical>> {
        Ok(self
            .conn
            .query_row("SELECT recipe, version, commit_id, run, promoted_at FROM canonicals WHERE recipe = ?1", [recipe], canonical_of)
            .optional()?)
    }

    pub fn canonicals(&self) -> Result<Vec<Canonical>> {
        let mut stmt = self.conn.prepare(
            "SELECT recipe, version, commit_id, run, promoted_at FROM canonicals ORDER BY recipe",
        )?;
        let rows = stmt.query_map([], canonical_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Sets a canonical from outside the sweep (`canonical import`).
    pub fn canonical_set(&self, c: &Canonical) -> Result<()> {
        self.conn.execute(
            "INSERT INTO canonicals (recipe, version, commit_id, run, promoted_at) VALUES (?1, ?2, ?3, NULL, ?4)
             ON CONFLICT (recipe) DO UPDATE SET version = ?2, commit_id = ?3, run = NULL, promoted_at = ?4",
            params![c.recipe, c.version, c.commit, c.promoted_at],
        )?;
        Ok(())
    }

    /// Runs of `recipe`, newest first.
    pub fn history(&self, recipe: &str, limit: u32) -> Result<Vec<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN queues q ON q.id = r.queue WHERE q.recipe = ?1 ORDER BY r.id DESC LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![recipe, limit], run_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn sweep_state(&self, recipe: &str) -> Result<Option<SweepState>> {
        Ok(self
            .conn
            .query_row(
                "SELECT refs_digest, latest_tag, latest_commit FROM sweep_state WHERE recipe = ?1",
                [recipe],
                |r| {
                    Ok(SweepState {
                        digest: r.get(0)?,
                        latest_tag: r.get(1)?,
                        latest_commit: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn sweep_state_set(
        &self,
        recipe: &str,
        digest: &str,
        tag: Option<&str>,
        commit: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO sweep_state (recipe, refs_digest, latest_tag, latest_commit) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (recipe) DO UPDATE SET refs_digest = ?2, latest_tag = ?3, latest_commit = ?4",
            params![recipe, digest, tag, commit],
        )?;
        Ok(())
    }

    pub fn sweep_begin(&self) -> Result<i64> {
        self.conn
            .execute("INSERT INTO sweeps (started_at) VALUES (?1)", [self.now()])?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn sweep_finish(&self, id: i64, outcome: SweepOutcome, detail: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE sweeps SET outcome = ?1, detail = ?2, finished_at = ?3 WHERE id = ?4",
            params![outcome, detail, self.now(), id],
        )?;
        Ok(())
    }

    /// (outcome, detail) of recent sweeps, newest first.
    pub fn sweeps(&self, limit: u32) -> Result<Vec<SweepRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT started_at, outcome, detail FROM sweeps ORDER BY id DESC LIMIT ?1")?;
        let rows = stmt.query_map([limit], |r| {
            Ok(SweepRecord {
                started_at: r.get(0)?,
                outcome: r.get(1)?,
                detail: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Makes `version` at `commit` the recipe's canonical on the strength of green `run`, with a
/// `promoted` event beside it: the events say, in order, whether a demotion still stands
/// (timestamps have whole seconds, and both can fall in one).
fn promote_in(
    tx: &rusqlite::Transaction<'_>,
    run: i64,
    recipe: &str,
    version: &str,
    commit: &str,
    now: String,
) -> Result<Canonical> {
    tx.execute(
        "INSERT INTO canonicals (recipe, version, commit_id, run, promoted_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (recipe) DO UPDATE SET version = ?2, commit_id = ?3, run = ?4, promoted_at = ?5",
        params![recipe, version, commit, run, now],
    )?;
    tx.execute(
        "INSERT INTO mirror_events (recipe, at, kind, detail) VALUES (?1, ?2, 'promoted', ?3)",
        params![recipe, now, format!("{version} promoted to canonical")],
    )?;
    Ok(Canonical {
        recipe: recipe.into(),
        version: version.into(),
        commit: commit.into(),
        run: Some(run),
        promoted_at: now,
    })
}
