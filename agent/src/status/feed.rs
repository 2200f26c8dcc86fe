//! `feed.xml`: an Atom feed (RFC 4287) of the fleet's greenness changes, so maintainers hear
//! without visiting: a release promoted, a recipe turning not green, a tier breaking. Read from
//! the runs the page shows (each recipe's last [`super::model::RUNS`]), newest first, at most
//! [`ENTRIES`]. Every value escaped by maud; links relative to the feed, which sits beside the
//! page's `index.html`.

use maud::{html, Markup};

use super::model::{RunView, Site};
use crate::ledger::RunResult;

/// The most entries the feed holds.
pub const ENTRIES: usize = 100;

/// One change of a recipe's greenness.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub recipe: String,
    pub run: i64,
    pub at: String,
    pub title: String,
    pub summary: String,
}

/// The changes in `site`, newest first.
pub fn changes(site: &Site) -> Vec<Change> {
    let mut all: Vec<Change> = site
        .recipes
        .iter()
        .flat_map(|r| of_recipe(&r.name, &r.runs))
        .collect();
    all.sort_by(|a, b| b.at.cmp(&a.at).then(b.run.cmp(&a.run)));
    all.truncate(ENTRIES);
    all
}

/// A recipe's changes, from its runs (newest first, as the page holds them): each judged run
/// against the judged run before it. Runs in error or still running judge nothing.
fn of_recipe(recipe: &str, runs: &[RunView]) -> Vec<Change> {
    let judged: Vec<&RunView> = runs
        .iter()
        .rev()
        .filter(|v| matches!(v.run.result, RunResult::Green | RunResult::Red))
        .collect();
    let mut out = Vec::new();
    for (i, v) in judged.iter().enumerate() {
        let before = i.checked_sub(1).map(|b| judged[b]);
        if let Some((title, summary)) = change(recipe, before, v) {
            out.push(Change {
                recipe: recipe.to_string(),
                run: v.run.id,
                at: v
                    .run
                    .finished_at
                    .clone()
                    .unwrap_or_else(|| v.run.started_at.clone()),
                title,
                summary,
            });
        }
    }
    out
}

/// What `now` changed after `before`: a green release promoted (a first green, a new release,
/// or green again), a recipe no longer green, or tiers that broke while it was not green.
fn change(recipe: &str, before: Option<&RunView>, now: &RunView) -> Option<(String, String)> {
    let tag = now.run.tag.as_deref().unwrap_or("?");
    let was_green = before.map(|b| b.run.result == RunResult::Green);
    let broken = |v: &RunView| -> Vec<String> {
        v.tiers
            .iter()
            .filter(|t| t.judged() && !t.green)
            .map(|t| t.tier.clone())
            .collect()
    };
    match (now.run.result, was_green) {
        (RunResult::Green, Some(true))
            if before.and_then(|b| b.run.tag.as_deref()) == Some(tag) =>
        {
            None
        }
        (RunResult::Green, _) => Some((
            format!("{recipe} {tag} is green: promoted"),
            format!("Every tier of {recipe} {tag} passed; it is the canonical release."),
        )),
        (_, Some(true) | None) => Some((
            format!("{recipe} {tag} is not green"),
            crate::ledger::tiers_line(&now.tiers),
        )),
        (_, Some(false)) => {
            let was = before.map(broken).unwrap_or_default();
            let new: Vec<String> = broken(now)
                .into_iter()
                .filter(|t| !was.contains(t))
                .collect();
            (!new.is_empty()).then(|| {
                (
                    format!("{recipe} {tag}: {} broke", new.join(", ")),
                    crate::ledger::tiers_line(&now.tiers),
                )
            })
        }
    }
}

/// The feed, as XML.
pub fn atom(site: &Site) -> String {
    let changes = changes(site);
    let updated = changes
        .first()
        .map_or(site.generated_at.as_str(), |c| c.at.as_str());
    let feed = html! {
        feed xmlns="http://www.w3.org/2005/Atom" {
            id { "tag:cc-ci,2026:fleet" }
            title { "cc-ci: greenness of the fleet" }
            updated { (updated) }
            author { name { "cc-ci" } }
            link rel="alternate" type="text/html" href="index.html" {}
            link rel="self" type="application/atom+xml" href="feed.xml" {}
            @for c in &changes {
                (entry(c))
            }
        }
    };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n{}\n",
        feed.into_string()
    );
    super::html::visible_bidi(&xml)
}

fn entry(c: &Change) -> Markup {
    html! {
        entry {
            id { "tag:cc-ci,2026:run/" (c.recipe) "/" (c.run) }
            title { (c.title) }
            updated { (c.at) }
            link rel="alternate" type="text/html" href=(format!("recipe/{}.html", c.recipe)) {}
            summary { (c.summary) }
            // The recipe's name as a category: a reader can follow one recipe.
            category term=(c.recipe) {}
        }
    }
}
