//! `enrollment list` and `enrollment poll-repos`.

use std::path::Path;

use anyhow::Result;

use super::Target;
use crate::context::Context;
use crate::exit::Exit;
use crate::output::{table, Answer, Output, Tone};
use crate::settings::enrollment::{Enrollment, Recipe, TestPolicy};

pub fn list(ctx: &Context, target: &Target) -> Result<Exit> {
    let enrollment = Enrollment::load(&target.file)?;
    ctx.out.give(&Listed {
        file: &target.file,
        recipes: &enrollment.recipes,
    })?;
    Ok(Exit::Success)
}

/// `enrollment list`'s answer (docs/enrollment.md): the file, and every recipe it declares with
/// its settings resolved.
#[derive(schemars::JsonSchema, serde::Serialize)]
pub(super) struct Listed<'a> {
    file: &'a Path,
    recipes: &'a [Recipe],
}

impl Answer for Listed<'_> {
    fn human(&self, out: &Output) -> String {
        let yes_no = |b: bool, tone: Tone| {
            if b {
                ("yes".to_string(), Some(tone))
            } else {
                ("no".to_string(), Some(Tone::Dim))
            }
        };
        let rows: Vec<_> = self
            .recipes
            .iter()
            .map(|r| {
                let tests = match &r.tests {
                    TestPolicy::Required => ("required".to_string(), None),
                    TestPolicy::Exempt { reason } => {
                        (format!("exempt: {reason}"), Some(Tone::Warn))
                    }
                };
                vec![
                    (r.name.clone(), None),
                    yes_no(r.enrolled, Tone::Good),
                    yes_no(r.canonical, Tone::Good),
                    tests,
                    (r.upgrade_base.clone().unwrap_or_else(|| "-".into()), None),
                    (r.branch.clone(), None),
                    (r.upstream.clone(), None),
                ]
            })
            .collect();
        let head = [
            "RECIPE",
            "ENROLLED",
            "CANONICAL",
            "TESTS",
            "BASE PIN",
            "BRANCH",
            "UPSTREAM",
        ];
        table(out, &head, &rows)
    }
}

/// `enrollment poll-repos`'s answer: the bridge's `POLL_REPOS` value, as people and scripts see it.
#[derive(schemars::JsonSchema, serde::Serialize)]
pub(super) struct PollRepos {
    poll_repos: String,
}

impl Answer for PollRepos {
    fn human(&self, _out: &Output) -> String {
        format!("{}\n", self.poll_repos)
    }
}

pub fn poll_repos(ctx: &Context, target: &Target) -> Result<Exit> {
    let enrollment = Enrollment::load(&target.file)?;
    ctx.out.give(&PollRepos {
        poll_repos: enrollment.poll_repos(),
    })?;
    Ok(Exit::Success)
}
