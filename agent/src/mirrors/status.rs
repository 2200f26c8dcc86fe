//! `mirrors status`: asks both sides now, and reads the last sync and event from the journal.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Result;
use serde::Serialize;

use super::sync::Side;
use crate::context::Context;
use crate::exit::Exit;
use crate::forge;
use crate::ledger::Ledger;
use crate::output::{table, Answer, Output, Tone};
use crate::settings::config::Config;
use crate::settings::enrollment::Recipe;

#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    Missing,
    InSync,
    /// The mirror lacks some of upstream's commits or tags, and has nothing upstream lacks.
    Behind,
    /// The mirror's branch has commits upstream's lacks.
    Diverged,
    UpstreamUnreachable,
    MirrorUnreachable,
    /// The forge will refuse pushes to it: a pull-mirror, archived, or no push permission.
    Unwritable,
    /// Upstream looks wiped (no branch, or no tags while the mirror has some): a sync refuses
    /// to follow it until a person looks.
    Refused,
}

#[derive(schemars::JsonSchema, Debug, Serialize)]
struct Row {
    recipe: String,
    standing: Standing,
    detail: String,
    last_sync: Option<String>,
    last_result: Option<crate::ledger::MirrorResult>,
    last_event: Option<String>,
}

fn standing(syncer: &super::Syncer<'_>, recipe: &Recipe) -> (Standing, String) {
    let name = &recipe.name;
    let deadline = syncer.deadline();
    let git = syncer.git.within(deadline);
    match syncer.forge.repository(name, deadline) {
        Ok(None) => return (Standing::Missing, "no mirror repository".into()),
        Err(e) => return (Standing::MirrorUnreachable, format!("{e:#}")),
        Ok(Some(repo)) => {
            if let Some(why) = repo.unwritable(&syncer.forge.full_name(name)) {
                return (Standing::Unwritable, why);
            }
        }
    }
    let up = match syncer.refs_of(recipe, &git, Side::Upstream) {
        Ok(up) => up,
        Err(e) => return (Standing::UpstreamUnreachable, e.to_string()),
    };
    let mirror_url = syncer.forge.mirror_url(name);
    let mirror = match syncer.refs_of(recipe, &git, Side::Mirror) {
        Ok(m) => m,
        Err(e) => return (Standing::MirrorUnreachable, e.to_string()),
    };
    if up.same_as(&mirror) {
        let tags = match up.tags.len() {
            1 => "1 tag".to_string(),
            n => format!("{n} tags"),
        };
        return (Standing::InSync, tags);
    }
    // What a sync refuses to do is not "behind": the sync will not catch up.
    if let Err(why) = super::sync::check_safe(&up, &mirror, &recipe.branch, false) {
        return (Standing::Refused, why);
    }
    let tags = crate::git::plan(&up, &mirror, &recipe.branch).len();
    let (Some(u), Some(m)) = (&up.branch, &mirror.branch) else {
        return (Standing::Behind, format!("{tags} refs differ"));
    };
    if u == m {
        return (Standing::Behind, format!("tags differ ({tags} changes)"));
    }
    // Judge the ancestry in the recipe's cache, fetching both heads into private refs.
    let cache = syncer.cache_dir.join(format!("{name}.git"));
    let branch = format!("refs/heads/{}", recipe.branch);
    let fetched = git.init_bare(&cache).is_ok()
        && git
            .fetch_ref(
                &cache,
                &recipe.upstream,
                &branch,
                "refs/cc-ci/status-upstream",
            )
            .is_ok()
        && git
            .fetch_ref(&cache, &mirror_url, &branch, "refs/cc-ci/status-mirror")
            .is_ok();
    if fetched && !git.is_ancestor(&cache, m, u) {
        (
            Standing::Diverged,
            format!(
                "the mirror's {} has commits upstream's lacks",
                recipe.branch
            ),
        )
    } else {
        (Standing::Behind, format!("{tags} refs to update"))
    }
}

/// Each recipe's standing, asked of both sides now, `mirrors.concurrency` at a time; sorted.
pub fn standings(config: &Config, recipes: &[Recipe]) -> Result<Vec<(String, (Standing, String))>> {
    // A forge that cannot be used (no token, an unreadable one) is each mirror unreachable, said
    // per recipe: a report, not an abort.
    let forge = match forge::from_config(config) {
        Ok(f) => f,
        Err(e) => {
            let why = format!("{e:#}");
            return Ok(recipes
                .iter()
                .map(|r| (r.name.clone(), (Standing::MirrorUnreachable, why.clone())))
                .collect());
        }
    };
    let mut syncer = super::syncer(config, forge.as_ref());
    // Both sides of every recipe in one listing, as a sync does (one connection per forge).
    syncer.list_all(recipes);
    let next = AtomicUsize::new(0);
    let found = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..config.mirrors.concurrency.min(recipes.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(recipe) = recipes.get(i) else { break };
                let s = standing(&syncer, recipe);
                if let Ok(mut f) = found.lock() {
                    f.push((recipe.name.clone(), s));
                }
            });
        }
    });
    let mut found = found.into_inner().unwrap_or_default();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// `mirrors status`'s answer: every mirror's standing, and whether all are in sync.
#[derive(schemars::JsonSchema, Serialize)]
pub(super) struct StatusAnswer {
    mirrors: Vec<Row>,
    all_in_sync: bool,
}

impl Answer for StatusAnswer {
    fn human(&self, out: &Output) -> String {
        let cells: Vec<_> = self
            .mirrors
            .iter()
            .map(|r| {
                let tone = match r.standing {
                    Standing::InSync => Tone::Good,
                    Standing::Behind | Standing::Missing => Tone::Warn,
                    _ => Tone::Bad,
                };
                let name = serde_json::to_value(r.standing)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                vec![
                    (r.recipe.clone(), None),
                    (name, Some(tone)),
                    (r.last_sync.clone().unwrap_or_else(|| "never".into()), None),
                    (r.last_event.clone().unwrap_or_default(), None),
                    (r.detail.clone(), None),
                ]
            })
            .collect();
        let head = ["RECIPE", "MIRROR", "LAST SYNC", "LAST EVENT", "DETAIL"];
        table(out, &head, &cells)
    }
}

pub fn run(ctx: &Context, config: &Config, recipes: &[Recipe]) -> Result<Exit> {
    let found = standings(config, recipes)?;
    let ledger = Ledger::open(&config.state_dir, &ctx.clock)?;
    let mut rows = Vec::new();
    for (recipe, (standing, detail)) in found {
        let state = ledger.mirror_state(&recipe)?;
        let event = ledger.mirror_events(&recipe, 1)?.into_iter().next();
        rows.push(Row {
            recipe,
            standing,
            detail,
            last_sync: state.as_ref().map(|s| s.synced_at.clone()),
            last_result: state.map(|s| s.result),
            last_event: event.map(|e| format!("{} {}: {}", e.at, e.kind, e.detail)),
        });
    }
    let answer = StatusAnswer {
        all_in_sync: rows.iter().all(|r| r.standing == Standing::InSync),
        mirrors: rows,
    };
    ctx.out.give(&answer)?;
    let ok = answer.all_in_sync;
    Ok(if ok { Exit::Success } else { Exit::Problems })
}
