//! Where mirrors live: a Gitea/Forgejo org (REST API v1) or a local directory of bare repos.

#[cfg(test)]
mod contract;
mod discussion;
mod gitea;
mod local;
mod readiness;

use anyhow::Result;
use serde::Serialize;

pub use discussion::{
    Comment, CommitStatus, Discussion, Listed, Opened, Posted, PullState, Reaction,
};
pub use gitea::{decode_pulls, DecodedPulls, Gitea};
pub use local::Local;

use crate::deadline::Deadline;
use crate::secrets::read_token;
use crate::settings::config::{Config, Forge as ForgeSettings, FORGE_TOKEN_CREDENTIAL};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pull {
    pub number: u64,
    pub head_sha: String,
    /// The head branch's name.
    pub head_ref: String,
    /// The head branch is in the repository itself; false for a fork's, or when the forge
    /// did not say.
    pub same_repo: bool,
    pub title: String,
}

/// What the forge says of an existing mirror repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Repository {
    /// A pull-mirror: read-only, refuses pushes.
    pub mirror: bool,
    pub archived: bool,
    /// No commit yet. Gitea clears this some time after the first push, not at it.
    pub empty: bool,
    /// Whether the token's user may push; `None` when the forge did not say.
    pub can_push: Option<bool>,
}

impl Repository {
    /// Why the agent cannot keep this repository as a mirror, and what to change on the forge.
    pub fn unwritable(&self, full_name: &str) -> Option<String> {
        if self.mirror {
            Some(format!(
                "{full_name} is a pull-mirror on the forge, which refuses pushes and cannot carry \
                 pull requests: delete it (or convert it to a normal repository in its settings) and \
                 the next sync creates it as one"
            ))
        } else if self.archived {
            Some(format!(
                "{full_name} is archived on the forge, which refuses pushes: unarchive it in the \
                 repository's settings"
            ))
        } else if self.can_push == Some(false) {
            Some(format!(
                "the token's user may not push to {full_name}: give it write access (an org team \
                 with write on the repository, or ownership of the org)"
            ))
        } else {
            None
        }
    }
}

/// One answer of `mirrors check-forge`.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub what: String,
    pub verdict: Verdict,
    pub detail: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Ok,
    /// Syncs work, but something they do (or this check) will not.
    Warn,
    /// Syncs will fail until this is changed on the forge.
    Fail,
}

/// What became of asking the forge to close a pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    Closed,
    /// The forge will not close it, and why (already merged there, open dependencies, no right).
    Refused(String),
}

/// A recipe's open pull requests, as far as the listing went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pulls {
    pub pulls: Vec<Pull>,
    /// Pull requests without a head commit (their branch is gone), by number: not looked at.
    pub skipped: Vec<u64>,
    /// Items of a page that were no pull request the agent could read, and why: not looked at.
    pub odd: Vec<String>,
    /// False when there were more than the agent lists; only `pulls` were looked at.
    pub complete: bool,
}

/// Every call finishes by its `deadline`, retries included.
pub trait Forge: Send + Sync {
    /// The mirror's git URL (never with credentials in it).
    fn mirror_url(&self, recipe: &str) -> String;
    /// The mirror repository, `None` when it does not exist.
    fn repository(&self, recipe: &str, deadline: Deadline) -> Result<Option<Repository>>;
    /// The mirror's name as the forge's users know it (`org/recipe`, or a path).
    fn full_name(&self, recipe: &str) -> String;
    /// Creates the mirror as an ordinary repository, which can carry pull requests.
    fn create(&self, recipe: &str, branch: &str, deadline: Deadline) -> Result<()>;
    fn open_pulls(&self, recipe: &str, deadline: Deadline) -> Result<Pulls>;
    fn close_pull(&self, recipe: &str, number: u64, deadline: Deadline) -> Result<Closed>;
    /// Comments on a pull request unless a comment holding `marker` is already there; whether
    /// it commented.
    fn comment_once(
        &self,
        recipe: &str,
        number: u64,
        marker: &str,
        body: &str,
        deadline: Deadline,
    ) -> Result<bool>;
    /// The URL prefix of this forge's repositories and the `Authorization` header git's HTTP
    /// calls to them carry; `None` when they need none.
    fn git_auth(&self) -> Option<(String, crate::secrets::Secret)> {
        None
    }
    /// Pull requests, comments, reactions and commit statuses, where the forge has them.
    fn discussion(&self) -> Option<&dyn Discussion> {
        None
    }
    /// Whether syncs to `mirrors` (recipe, branch) will work, asked without writing anything.
    fn readiness(&self, mirrors: &[(String, String)], deadline: Deadline) -> Vec<Finding> {
        let _ = (mirrors, deadline);
        vec![Finding {
            what: "forge".into(),
            verdict: Verdict::Ok,
            detail: "mirrors on a local path: nothing to ask".into(),
        }]
    }
}

/// Git as the agent speaks it to `forge`'s mirrors: `[mirrors]`' timeouts and retries, and the
/// forge's credentials for its own URLs only.
pub fn git_to(
    forge: &dyn Forge,
    settings: &crate::settings::mirrors::MirrorSettings,
) -> crate::git::Git {
    let git = crate::git::Git::new(settings.git_timeout, settings.retries)
        .with_retry_pause(settings.retry_pause);
    match forge.git_auth() {
        Some((prefix, header)) => git.with_http_auth(prefix, header),
        None => git,
    }
}

/// The forge the configuration names.
pub fn from_config(config: &Config) -> Result<Box<dyn Forge>> {
    match &config.forge {
        None => Err(crate::error::Unusable(format!(
            "{}: no [forge] section: mirrors need kind = \"gitea\" (url, org) or kind = \"local\" (path)",
            config.path.display()
        ))
        .into()),
        Some(ForgeSettings::Local { path }) => Ok(Box::new(Local::new(path.clone()))),
        Some(ForgeSettings::Gitea { url, org, token_file }) => {
            // A token that cannot be read is bad input, named by the key that points at it.
            let token = read_token(
                token_file.as_deref(),
                FORGE_TOKEN_CREDENTIAL,
                "forge",
                &config.path,
            )?;
            let source = token_file.as_ref().map_or_else(
                || format!("the systemd credential {FORGE_TOKEN_CREDENTIAL}"),
                |p| format!("forge.token_file ({})", p.display()),
            );
            let pause = config.mirrors.retry_pause;
            Ok(Box::new(Gitea::new(url, org, token, source, pause)))
        }
    }
}
