//! `mirrors check-forge`: whether the forge will let syncs work, asked without writing.

use anyhow::Result;
use serde_json::json;

use crate::context::Context;
use crate::deadline::Deadline;
use crate::exit::Exit;
use crate::forge::{self, Verdict};
use crate::output::{table, Tone};
use crate::settings::config::Config;
use crate::settings::enrollment::Recipe;

pub fn run(ctx: &Context, config: &Config, recipes: &[Recipe]) -> Result<Exit> {
    let forge = forge::from_config(config)?;
    let mirrors: Vec<(String, String)> = recipes
        .iter()
        .map(|r| (r.name.clone(), r.branch.clone()))
        .collect();
    let deadline = Deadline::after(config.mirrors.recipe_timeout, "mirrors.recipe_timeout");
    let found = forge.readiness(&mirrors, deadline);
    let ready = found.iter().all(|f| f.verdict != Verdict::Fail);
    ctx.out
        .answer(&json!({ "findings": found, "ready": ready }), |out| {
            let rows: Vec<_> = found
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
            crate::say_raw!("{}", table(out, &["CHECK", "", "DETAIL"], &rows));
        })?;
    Ok(if ready { Exit::Success } else { Exit::Problems })
}
