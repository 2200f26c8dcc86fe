//! The status page's HTML, from maud templates: every interpolated string is escaped by the
//! template itself (maud's `(value)` escapes `<`, `>`, `&`, `"` and `'`), so a tag named
//! `<script>` or a test name holding `"><img onerror=…>` is text. No JavaScript; one stylesheet
//! inline, light and dark (`prefers-color-scheme`), a table that scrolls sideways on a phone, and
//! every colour doubled by a word or a mark.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::model::{RecipeView, RunView, Site, Standing, Summary, STRIP};
use crate::health::Status;
use crate::ledger::{degree_shown, tiers_line, DeployRow};

const STYLE: &str = "
:root { color-scheme: light dark; --bg: #fff; --fg: #1b1b1b; --muted: #555; --line: #ccc;
  --green: #1a7f37; --amber: #9a6700; --red: #c62828; --grey: #6e7781; }
@media (prefers-color-scheme: dark) { :root { --bg: #111; --fg: #eee; --muted: #aaa;
  --line: #444; --green: #4ac26b; --amber: #d4a72c; --red: #ff7b72; --grey: #8b949e; } }
body { background: var(--bg); color: var(--fg); font: 15px/1.45 system-ui, sans-serif;
  margin: 0 auto; padding: 1rem; max-width: 80rem; }
a { color: inherit; }
.muted { color: var(--muted); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: .35rem .5rem; text-align: left;
  vertical-align: top; }
th { font-weight: 600; }
.green { color: var(--green); } .partly-broken { color: var(--amber); }
.broken { color: var(--red); } .never-judged { color: var(--grey); }
.ok { color: var(--green); } .warn, .unknown { color: var(--amber); } .fail { color: var(--red); }
pre { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 13px; }
svg { vertical-align: middle; } td svg { height: 12px; } svg path, svg rect { fill: currentColor; }
tr.green td:nth-of-type(1) { color: var(--green); }
tr.partly-broken td:nth-of-type(1) { color: var(--amber); }
tr.broken td:nth-of-type(1) { color: var(--red); }
tr.never-judged td:nth-of-type(1) { color: var(--grey); }
@media (max-width: 40rem) {
  #recipes thead { display: none; }
  #recipes tr { display: block; border-bottom: 1px solid var(--line); padding: .4rem 0; }
  #recipes th, #recipes td { display: block; border: 0; padding: .1rem 0; }
  #recipes td::before { font-weight: 600; }
  #recipes td:nth-of-type(1)::before { content: \"Standing: \"; }
  #recipes td:nth-of-type(2)::before { content: \"Tests: \"; }
  #recipes td:nth-of-type(3)::before { content: \"Mirror: \"; }
  #recipes td:nth-of-type(4)::before { content: \"Canonical: \"; }
  #recipes td:nth-of-type(5)::before { content: \"Last run: \"; }
  #recipes td:nth-of-type(6)::before { content: \"Runs: \"; }
  #recipes td:nth-of-type(7)::before { content: \"Triggerable: \"; }
  #recipes td:nth-of-type(8)::before { content: \"Health: \"; }
}
";

fn page(title: &str, body: Markup) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
    .into_string();
    visible_bidi(&page)
}

/// The page with every bidirectional formatting character shown as its escape (`\u{202e}`):
/// text from outside (a test name, CI's output, a forge's words) cannot reorder what a
/// maintainer reads. The templates hold none of their own, so one pass over the page is all.
pub(super) fn visible_bidi(page: &str) -> String {
    if !page.chars().any(crate::output::is_bidi_control) {
        return page.to_string();
    }
    page.chars()
        .map(|c| {
            if crate::output::is_bidi_control(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `index.html`: the summary, the host, one row per recipe.
pub fn index(site: &Site) -> String {
    let s = &site.summary;
    let body = html! {
        h1 { "cc-ci: the fleet" }
        p class="muted" { "Generated " (site.generated_at) " from the CI host's ledger. "
            a href="status.json" { "status.json" } " · " a href="deploys.html" { "deploys" } }
        p id="summary" {
            (s.recipes) " recipes: " (s.green) " green, " (s.partly_broken) " partly broken, "
            (s.broken) " broken, " (s.never_judged) " never judged"
        }
        (summary_bar(s))
        h2 { "The host" }
        (host(site))
        h2 { "Recipes" }
        div class="scroll" {
            table id="recipes" {
                thead { tr {
                    th scope="col" { "Recipe" } th scope="col" { "Standing" }
                    th scope="col" { "Tests" } th scope="col" { "Mirror" }
                    th scope="col" { "Canonical" } th scope="col" { "Last run" }
                    th scope="col" title="the newest runs' degrees, oldest first" { "Runs" } th scope="col" { "Triggerable" }
                    th scope="col" { "Health" }
                } }
                tbody {
                    @for r in site.recipes.iter().filter(|r| r.enrolled) { (recipe_row(r)) }
                }
            }
        }
    };
    page("cc-ci: the fleet", body)
}

/// One recipe on the index, kept short (a fleet of 1,000 fits in well under 500 KB): the words
/// that say where it stands; the reasons are on its own page.
fn recipe_row(r: &RecipeView) -> Markup {
    let class = standing_class(r.standing);
    let tests = if r.tests == "required" {
        "required"
    } else {
        "exempt"
    };
    html! {
        tr class=(class) data-recipe=(r.name) {
            th { a href={ "recipe/" (r.name) ".html" } { (r.name) } }
            td { (mark(r.standing)) " " (r.standing.word()) }
            td { (tests) }
            td { (short_check(r, "mirror")) }
            td { @match &r.canonical { Some(c) => (c.version), None => "none" } }
            td { @match r.runs.first() { Some(v) => (last_run(v)), None => "never run" } }
            td { (strip(&r.runs)) }
            td { (short_check(r, "triggerable")) }
            td { @if let Some(v) = r.health.verdict { (format!("{v:?}").to_lowercase()) } }
        }
    }
}

/// `tag result degree` and the tiers that broke, by name.
fn last_run(v: &RunView) -> String {
    let degree = v.run.greenness.map(degree_shown).unwrap_or_default();
    let broken: Vec<&str> = v
        .tiers
        .iter()
        .filter(|t| t.judged() && !t.green)
        .map(|t| t.tier.as_str())
        .collect();
    let tag = v.run.tag.clone().unwrap_or_default();
    let mut text = format!("{tag} {} {degree}", v.run.result);
    if !broken.is_empty() {
        text.push_str(": ");
        text.push_str(&broken.join(", "));
    }
    text
}

/// A check's mark and the first words of its reason (up to a colon, " at " or " (").
fn short_check(r: &RecipeView, name: &str) -> Markup {
    match r.health.checks.iter().find(|c| c.name == name) {
        None => html! { "-" },
        Some(c) => {
            let end = [
                c.reason.find(": "),
                c.reason.find(" at "),
                c.reason.find(" ("),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(c.reason.len());
            html! { span class=(status_class(c.status)) { (status_mark(c.status)) " " (c.reason[..end]) } }
        }
    }
}

fn host(site: &Site) -> Markup {
    let last = site.deploys.first();
    html! {
        div class="scroll" { table id="host" {
            thead { tr { th scope="col" { "Check" } th scope="col" { "Status" } th scope="col" { "Why" } } }
            tbody {
                @for c in &site.health.host {
                    tr { th scope="row" { (c.name) } td class=(status_class(c.status)) { (status_mark(c.status)) " " (format!("{:?}", c.status).to_lowercase()) } td { (c.reason) } }
                }
                tr { th scope="row" { "last deploy" }
                    @match last {
                        Some(d) => {
                            td { (d.outcome.map(|o| o.as_str()).unwrap_or("running")) }
                            td { "#" (d.id) " of " (d.flake_commit.clone().unwrap_or_default()) " at " (d.started_at) }
                        }
                        None => { td { "-" } td class="muted" { "no deploy recorded" } }
                    }
                }
            }
        } }
    }
}

/// The fleet as one bar, a segment per standing, with the numbers as its text.
fn summary_bar(s: &Summary) -> Markup {
    #[allow(clippy::cast_precision_loss)]
    let total = s.recipes.max(1) as f64;
    let parts = [
        (s.green, "green"),
        (s.partly_broken, "partly-broken"),
        (s.broken, "broken"),
        (s.never_judged, "never-judged"),
    ];
    let mut x = 0.0;
    let mut segments = Vec::new();
    for (n, class) in parts {
        #[allow(clippy::cast_precision_loss)]
        let w = n as f64 * 100.0 / total;
        segments.push((format!("{x:.3}"), format!("{w:.3}"), class));
        x += w;
    }
    let label = format!(
        "{} green, {} partly broken, {} broken, {} never judged",
        s.green, s.partly_broken, s.broken, s.never_judged
    );
    html! {
        svg width="100%" height="14" viewBox="0 0 100 14" preserveAspectRatio="none" role="img" aria-label=(label) {
            title { (label) }
            @for (x, w, class) in &segments {
                rect x=(x) y="0" width=(w) height="14" class=(class) fill="currentColor" {}
            }
        }
    }
}

/// A recipe's newest runs, oldest on the left, coloured by degree, with the degrees as text:
/// one path per colour, so a row stays small.
fn strip(runs: &[RunView]) -> Markup {
    let shown: Vec<&RunView> = runs.iter().take(STRIP).rev().collect();
    if shown.is_empty() {
        return html! { "-" };
    }
    let label: Vec<String> = shown
        .iter()
        .map(|v| {
            v.run
                .greenness
                .map(degree_shown)
                .unwrap_or_else(|| v.run.result.to_string())
        })
        .collect();
    // One path per colour, each bar a move relative to the last one of that colour.
    let mut paths: Vec<(&str, String, usize)> = Vec::new();
    for (i, v) in shown.iter().enumerate() {
        let class = run_class(v);
        match paths.iter_mut().find(|(c, _, _)| *c == class) {
            Some((_, d, last)) => {
                d.push_str(&format!("m{} 0v12h6V0z", (i - *last) * 8));
                *last = i;
            }
            None => paths.push((class, format!("M{} 0v12h6V0z", i * 8), i)),
        }
    }
    html! {
        svg width=(shown.len() * 8) role="img" aria-label=(label.join(" ")) {
            @for (class, d, _) in &paths { path class=(class) d=(d) {} }
        }
    }
}

fn run_class(v: &RunView) -> &'static str {
    match (v.run.result.as_str(), v.run.greenness) {
        ("green", _) => "green",
        ("red", Some(d)) if d < 1.0 => "partly-broken",
        ("running", _) => "never-judged",
        _ => "broken",
    }
}

fn standing_class(s: Standing) -> &'static str {
    match s {
        Standing::Green => "green",
        Standing::PartlyBroken => "partly-broken",
        Standing::Broken => "broken",
        Standing::NeverJudged => "never-judged",
    }
}

fn mark(s: Standing) -> &'static str {
    match s {
        Standing::Green => "✓",
        Standing::PartlyBroken => "◐",
        Standing::Broken => "✗",
        Standing::NeverJudged => "–",
    }
}

fn status_class(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Unknown => "unknown",
        Status::Warn => "warn",
        Status::Fail => "fail",
    }
}

fn status_mark(s: Status) -> &'static str {
    match s {
        Status::Ok => "✓",
        Status::Unknown => "?",
        Status::Warn => "!",
        Status::Fail => "✗",
    }
}

/// `recipe/<name>.html`: the runs, the canonical, mirror events and probes.
pub fn recipe(site: &Site, r: &RecipeView) -> String {
    let body = html! {
        p { a href="../index.html" { "← the fleet" } }
        h1 { (r.name) }
        p class=(standing_class(r.standing)) { (mark(r.standing)) " " (r.standing.word()) }
        p class="muted" { "Generated " (site.generated_at) ". Tests: " (r.tests) }
        h2 { "Health" }
        ul { @for c in &r.health.checks { li class=(status_class(c.status)) { (status_mark(c.status)) " " strong { (c.name) } ": " (c.reason) } } }
        h2 { "Canonical" }
        @match &r.canonical {
            Some(c) => p { (c.version) " at " code { (c.commit) } " since " (c.promoted_at) },
            None => p class="muted" { "No canonical: no green release recorded." },
        }
        h2 { "The canonical's history" }
        @let changes: Vec<_> = r.mirror_events.iter().filter(|e| e.kind == "promoted" || e.kind == "canonical-demoted").collect();
        @if changes.is_empty() { p class="muted" { "No promotion or demotion among the recent events." } }
        ul { @for e in &changes { li { (e.at) " " strong { (e.kind) } " " (e.detail) } } }
        h2 { "Runs, newest first" }
        div class="scroll" { table id="runs" {
            thead { tr { th scope="col" { "Run" } th scope="col" { "Started" } th scope="col" { "Tag" }
                th scope="col" { "Result" } th scope="col" { "Degree" } th scope="col" { "Tiers" }
                th scope="col" { "Base" } th scope="col" { "Detail" } } }
            tbody { @for v in &r.runs { tr {
                th scope="row" { (v.run.id) } td { (v.run.started_at) } td { (v.run.tag.clone().unwrap_or_default()) }
                td class=(run_class(v)) { (v.run.result) } td { (v.run.greenness.map(degree_shown).unwrap_or_default()) }
                td { (tiers_line(&v.tiers))
                    @for t in v.tiers.iter().filter(|t| t.judged() && !t.green) {
                        @if let Some(m) = &t.first_message { br; span class="muted" { (t.tier) ": " (m) } }
                    } }
                td { (v.run.base.clone().unwrap_or_default()) }
                td { (v.run.detail.clone().unwrap_or_default())
                    @if let Some(t) = &v.log_tail { details { summary { "the log's end" } pre { (t) } } } }
            } } }
        } }
        h2 { "Mirror" }
        ul { @for e in r.mirror_events.iter().filter(|e| e.kind != "promoted" && e.kind != "canonical-demoted") {
            li { (e.at) " " strong { (e.kind) } " " (e.detail) } } }
        h2 { "Probes" }
        ul { @for p in &r.probes { li { (p.started_at) " " strong { (p.outcome.map(|o| o.as_str()).unwrap_or("running")) }
            @if let Some(s) = &p.stopped_at { " at " (s) } " " (p.detail.clone().unwrap_or_default()) } } }
    };
    page(&format!("cc-ci: {}", r.name), body)
}

/// `deploys.html`: the deploy journal, each deploy's closure diff and unit changes.
pub fn deploys(site: &Site) -> String {
    let body = html! {
        p { a href="index.html" { "← the fleet" } }
        h1 { "Deploys, newest first" }
        div class="scroll" { table id="deploys" {
            thead { tr { th scope="col" { "Deploy" } th scope="col" { "Started" } th scope="col" { "Kind" }
                th scope="col" { "Outcome" } th scope="col" { "Commit" } th scope="col" { "Changes" } } }
            tbody { @for d in &site.deploys { (deploy_row(d)) } }
        } }
    };
    page("cc-ci: deploys", body)
}

fn deploy_row(d: &DeployRow) -> Markup {
    let changes = serde_json::to_string_pretty(&d.changes).unwrap_or_default();
    html! { tr {
        th scope="row" { (d.id) } td { (d.started_at) } td { (d.kind) }
        td { (d.outcome.map(|o| o.as_str()).unwrap_or("running")) }
        td { code { (d.flake_commit.clone().unwrap_or_default()) } }
        td { @if !d.changes.is_null() { details { summary { "closure and units" } pre { (changes) } } } }
    } }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bidi_controls_from_outside_are_shown_not_obeyed() {
        let page = super::page("t", text("test_\u{202E}gnp.exe"));
        assert!(page.contains("test_\\u{202e}gnp.exe"), "{page}");
        assert!(!page.contains('\u{202E}'));
    }

    fn text(t: &str) -> maud::Markup {
        maud::html! { p { (t) } }
    }
}
