//! `mirrors check-forge`: whether the forge will let syncs work, asked without writing.

use anyhow::Result;
use serde::Serialize;

use crate::context::Context;
use crate::deadline::Deadline;
use crate::exit::Exit;
use crate::forge::{self, Finding, Verdict};
use crate::output::{table, Answer, Output, Tone};
use crate::settings::config::Config;
use crate::settings::enrollment::Recipe;

/// `mirrors check-forge`'s answer: each finding, and whether syncs will work.
#[derive(schemars::JsonSchema, Serialize)]
pub(super) struct CheckAnswer {
    findings: Vec<Finding>,
    ready: bool,
}

impl Answer for CheckAnswer {
    fn human(&self, out: &Output) -> String {
        let rows: Vec<_> = self
            .findings
            .iter()
            .map(|f| {
                let (word, tone) = match f.verdict {
                    Verdict::Ok => ("ok", Tone::Good),
                    Verdict::Warn => ("warn", Tone::Warn),
                    Verdict::Fail => ("fail", Tone::Bad),
                };
                vec![
                    (f.what.clone(), None),
                    (word.to_string(), Some(tone)),
                    (f.detail.clone(), None),
                ]
            })
            .collect();
        table(out, &["CHECK", "", "DETAIL"], &rows)
    }
}

pub fn run(ctx: &Context, config: &Config, recipes: &[Recipe]) -> Result<Exit> {
    let forge = forge::from_config(config)?;
    let mirrors: Vec<(String, String)> = recipes
        .iter()
        .map(|r| (r.name.clone(), r.branch.clone()))
        .collect();
    let deadline = Deadline::after(config.mirrors.recipe_timeout, "mirrors.recipe_timeout");
    let found = forge.readiness(&mirrors, deadline);
    let ready = found.iter().all(|f| f.verdict != Verdict::Fail);
    ctx.out.give(&CheckAnswer {
        findings: found,
        ready,
    })?;
    Ok(if ready { Exit::Success } else { Exit::Problems })
}
