//! `badge/<recipe>.svg`: a recipe's standing as a badge its README can embed
//! (`![cc-ci](https://ci.example.org/badge/plausible.svg)`): "cc-ci" and the canonical version
//! with its standing, in the page's colours, the same words as text a screen reader reads
//! (`role="img"`, `aria-label`, `<title>`). Built like the page: every value escaped by maud,
//! bidirectional controls shown as escapes.

use maud::html;

use super::model::{RecipeView, Standing};

/// Pixels a character takes at the badge's 11px sans-serif, and the padding either side.
const CHAR: usize = 7;
const PAD: usize = 6;
const LABEL: &str = "cc-ci";

/// The page's light-scheme colours (html.rs), readable under white text.
fn colour(s: Standing) -> &'static str {
    match s {
        Standing::Green => "#1a7f37",
        Standing::PartlyBroken => "#9a6700",
        Standing::Broken => "#c62828",
        Standing::NeverJudged => "#6e7781",
    }
}

/// What the badge says after its label: `3.0.1+v2.0.0 green`, or `never judged`.
pub fn message(r: &RecipeView) -> String {
    match (&r.canonical, r.standing) {
        (_, Standing::NeverJudged) | (None, _) => r.standing.word().to_string(),
        (Some(c), s) => format!("{} {}", c.version, s.word()),
    }
}

pub fn svg(r: &RecipeView) -> String {
    let message = message(r);
    let (lw, mw) = (width(LABEL), width(&message));
    let total = lw + mw;
    let said = format!("{}: {LABEL} {message}", r.name);
    let badge = html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(total) height="20" role="img" aria-label=(said) {
            title { (said) }
            rect width=(lw) height="20" fill="#555" {}
            rect x=(lw) width=(mw) height="20" fill=(colour(r.standing)) {}
            g fill="#fff" font-family="DejaVu Sans,Verdana,Geneva,sans-serif" font-size="11" text-anchor="middle" aria-hidden="true" {
                text x=(lw / 2) y="14" textLength=(lw - 2 * PAD) lengthAdjust="spacingAndGlyphs" { (LABEL) }
                text x=(lw + mw / 2) y="14" textLength=(mw - 2 * PAD) lengthAdjust="spacingAndGlyphs" { (message) }
            }
        }
    };
    super::html::visible_bidi(&badge.into_string())
}

fn width(text: &str) -> usize {
    text.chars().count() * CHAR + 2 * PAD
}
