//! Tokens: read from a file (or a systemd credential), held in a type that never prints itself.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::settings::config::secret_path;

#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Reads the token from `configured`, else from `$CREDENTIALS_DIRECTORY/<credential>`. Errors
/// name the file, never its content.
pub fn read_token(configured: Option<&Path>, credential: &str, what: &str) -> Result<Secret> {
    let path: PathBuf = secret_path(configured, credential).with_context(|| {
        format!("no {what} token: set its token_file, or run under systemd with the credential {credential}")
    })?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the {what} token file {}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the {what} token file {} is empty",
        path.display()
    );
    anyhow::ensure!(
        !token.contains(|c: char| c.is_control() || c.is_whitespace()),
        "the {what} token file {} holds more than one token-like word",
        path.display()
    );
    Ok(Secret(token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_itself() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("t");
        std::fs::write(&file, "s3cr3t-token\n")?;
        let s = read_token(Some(&file), "forge-token", "forge")?;
        assert_eq!(s.expose(), "s3cr3t-token");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        std::fs::write(&file, "\n")?;
        let err = read_token(Some(&file), "forge-token", "forge")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("is empty"), "{err}");
        Ok(())
    }
}
