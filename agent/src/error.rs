//! The errors whose kind decides the exit code ([`crate::exit::classify`] reads them in an error's
//! chain). Everything else is a plain `anyhow` error with context: exit 1.

use std::fmt;
use std::path::{Path, PathBuf};

/// Bad input in a file the user wrote: one line, `FILE:LINE: KEY: MESSAGE`. Exit 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InputError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// Dotted key path (`recipe.plausible.upstream`), or empty when the error is about the file.
    pub key: String,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        // Messages from the parsers can span lines; the contract is one line per error.
        let message = self
            .message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        write!(f, ": {message}")
    }
}

impl InputError {
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            key: String::new(),
            message: message.into(),
        }
    }
}

/// A file that failed its checks: one located error per problem found. Exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct Invalid(pub Vec<InputError>);

/// Refusal because something else is in the way (another job, a concurrent edit). Exit 4.
#[derive(Debug, thiserror::Error)]
#[error("busy: {0}")]
pub struct Busy(pub String);

/// The agent cannot work here at all: no `nixos-rebuild`, no system profile, a bad `--flake`.
/// Exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unusable(pub String);

/// The state database is damaged (a failed integrity check, an emptied file): no job may build on
/// it until a person restores it. Exit 15.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Damaged(pub String);
