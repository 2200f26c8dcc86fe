//! `[mirrors]` in agent.toml: how `cc-ci-agent mirrors sync` talks to upstreams and the forge.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::source::TomlSource;
use super::values::Seconds;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMirrors {
    concurrency: Option<i64>,
    git_timeout: Option<Seconds>,
    recipe_timeout: Option<Seconds>,
    retries: Option<i64>,
    retry_pause: Option<Seconds>,
    close_merged_prs: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MirrorSettings {
    /// Recipes synced at once.
    pub concurrency: usize,
    /// Longest a single git call may take.
    pub git_timeout: Duration,
    /// Longest one recipe's sync (or status) may take, every call and retry included.
    pub recipe_timeout: Duration,
    /// Further tries of a git call that failed for a transient network reason.
    pub retries: u32,
    /// The first pause before another try, of a git call or a forge API call; then doubled.
    pub retry_pause: Duration,
    /// Close open mirror PRs whose head commit is already on upstream's branch.
    pub close_merged_prs: bool,
}

pub(super) fn resolve(
    raw: RawMirrors,
    source: &TomlSource,
    errors: &mut Vec<crate::error::InputError>,
) -> MirrorSettings {
    let concurrency = raw.concurrency.unwrap_or(8);
    if !(1..=64).contains(&concurrency) {
        errors.push(source.error_at(&["mirrors", "concurrency"], "must be between 1 and 64"));
    }
    let retries = raw.retries.unwrap_or(3);
    if !(0..=10).contains(&retries) {
        errors.push(source.error_at(&["mirrors", "retries"], "must be between 0 and 10"));
    }
    let git_timeout = raw.git_timeout.map_or(Duration::from_secs(300), |s| s.0);
    if git_timeout.is_zero() {
        errors.push(source.error_at(&["mirrors", "git_timeout"], "must be more than zero"));
    }
    let recipe_timeout = raw.recipe_timeout.map_or(2 * git_timeout, |s| s.0);
    if recipe_timeout.is_zero() {
        errors.push(source.error_at(&["mirrors", "recipe_timeout"], "must be more than zero"));
    }
    MirrorSettings {
        concurrency: usize::try_from(concurrency.clamp(1, 64)).unwrap_or(8),
        git_timeout,
        recipe_timeout,
        retries: u32::try_from(retries.clamp(0, 10)).unwrap_or(3),
        retry_pause: raw.retry_pause.map_or(Duration::from_secs(1), |s| s.0),
        close_merged_prs: raw.close_merged_prs.unwrap_or(true),
    }
}
