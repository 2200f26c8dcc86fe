//! `kind = "local"`: mirrors are bare repositories `<path>/<recipe>.git`. No pull requests.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{Closed, Forge, Pulls, Repository};
use crate::deadline::Deadline;
use crate::git::Git;

pub struct Local {
    path: PathBuf,
}

impl Local {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    fn repo(&self, recipe: &str) -> PathBuf {
        self.path.join(format!("{recipe}.git"))
    }
}

impl Forge for Local {
    fn mirror_url(&self, recipe: &str) -> String {
        self.repo(recipe).to_string_lossy().into_owned()
    }

    fn repository(&self, recipe: &str, _deadline: Deadline) -> Result<Option<Repository>> {
        Ok(self
            .repo(recipe)
            .join("HEAD")
            .is_file()
            .then(Repository::default))
    }

    fn full_name(&self, recipe: &str) -> String {
        self.repo(recipe).display().to_string()
    }

    fn create(&self, recipe: &str, branch: &str, _deadline: Deadline) -> Result<()> {
        std::fs::create_dir_all(&self.path)
            .with_context(|| format!("cannot create {}", self.path.display()))?;
        Git::new(std::time::Duration::from_secs(60), 0).create_bare(&self.repo(recipe), branch)?;
        Ok(())
    }

    fn open_pulls(&self, _recipe: &str, _deadline: Deadline) -> Result<Pulls> {
        Ok(Pulls {
            complete: true,
            ..Pulls::default()
        })
    }

    fn close_pull(&self, recipe: &str, number: u64, _: Deadline) -> Result<Closed> {
        anyhow::bail!("a local forge has no pull requests ({recipe} #{number})")
    }

    fn comment_once(
        &self,
        recipe: &str,
        number: u64,
        _: &str,
        _: &str,
        _: Deadline,
    ) -> Result<bool> {
        anyhow::bail!("a local forge has no pull requests ({recipe} #{number})")
    }
}
