//! Where mirrors live: a Gitea/Forgejo org (REST API v1) or a local directory of bare repos.

mod gitea;
mod local;

use anyhow::Result;
use serde::Serialize;

pub use gitea::{decode_pulls, Gitea};
pub use local::Local;

use crate::deadline::Deadline;
use crate::secrets::read_token;
use crate::settings::config::{Config, Forge as ForgeSettings, FORGE_TOKEN_CREDENTIAL};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pull {
    pub number: u64,
    pub head_sha: String,
    pub title: String,
}

/// A recipe's open pull requests, as far as the listing went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pulls {
    pub pulls: Vec<Pull>,
    /// False when there were more than the agent lists; only `pulls` were looked at.
    pub complete: bool,
}

/// Every call finishes by its `deadline`, retries included.
pub trait Forge: Send + Sync {
    /// The mirror's git URL (never with credentials in it).
    fn mirror_url(&self, recipe: &str) -> String;
    fn exists(&self, recipe: &str, deadline: Deadline) -> Result<bool>;
    /// Creates the mirror as an ordinary repository, which can carry pull requests.
    fn create(&self, recipe: &str, branch: &str, deadline: Deadline) -> Result<()>;
    fn open_pulls(&self, recipe: &str, deadline: Deadline) -> Result<Pulls>;
    fn close_pull(
        &self,
        recipe: &str,
        number: u64,
        comment: &str,
        deadline: Deadline,
    ) -> Result<()>;
    /// Environment for git so that it authenticates to this forge, and only to it.
    fn git_env(&self) -> Vec<(String, String)>;
    /// The URL prefix of this forge's repositories and the `Authorization` header for pushing to
    /// them over HTTP; `None` when pushes need none.
    fn push_auth(&self) -> Option<(String, crate::secrets::Secret)> {
        None
    }
}

/// The forge the configuration names.
pub fn from_config(config: &Config) -> Result<Box<dyn Forge>> {
    match &config.forge {
        None => Err(crate::exit::Unusable(format!(
            "{}: no [forge] section: mirrors need kind = \"gitea\" (url, org) or kind = \"local\" (path)",
            config.path.display()
        ))
        .into()),
        Some(ForgeSettings::Local { path }) => Ok(Box::new(Local::new(path.clone()))),
        Some(ForgeSettings::Gitea { url, org, token_file }) => {
            let token = read_token(token_file.as_deref(), FORGE_TOKEN_CREDENTIAL, "forge")?;
            Ok(Box::new(Gitea::new(url, org, token)))
        }
    }
}
