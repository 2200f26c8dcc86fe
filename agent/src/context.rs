//! What every command gets: how to print, the clock, and where its configuration is. A leaf: capabilities
//! import it, and the CLI that builds it imports them.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::clock::Clock;
use crate::error::InputError;
use crate::output::Output;
use crate::settings::config::{Config, DEFAULT_CONFIG};

/// How to print, where the configuration is, and the clock every job reads the time from.
pub struct Context {
    pub out: Output,
    pub clock: Clock,
    config: Option<PathBuf>,
}

impl Context {
    pub fn new(out: Output, clock: Clock, config: Option<PathBuf>) -> Self {
        Self { out, clock, config }
    }

    /// Whether the user named a config file (by flag or environment).
    pub fn config_given(&self) -> bool {
        self.config.is_some()
    }

    pub fn config_path(&self) -> &Path {
        self.config.as_deref().unwrap_or(Path::new(DEFAULT_CONFIG))
    }

    pub fn config(&self) -> Result<Config> {
        let path = self.config_path();
        if self.config.is_none() && !path.exists() {
            return Err(InputError::file(
                path,
                "no agent configuration here: pass --config FILE or set CC_CI_AGENT_CONFIG",
            )
            .into());
        }
        Ok(Config::load(path)?)
    }
}
