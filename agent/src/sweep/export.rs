//! `<canonical_export_dir>/<recipe>/canonical.json`: what the sweep publishes for other tools, and
//! what `canonical import` reads back (from this agent, or from the hand-run host before it). One
//! struct for both directions.

use std::path::Path;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::error::InputError;
use crate::fsutil::{publish, read_regular};
use crate::ledger::Canonical;
use crate::settings::rules::{check_recipe_name, check_release_tag};

/// The file's fields. Others in a file being imported are ignored, as is a missing `status` or
/// `promoted_at`: the hand-run host's files carried only what it needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanonicalFile {
    pub recipe: String,
    pub version: String,
    pub commit: String,
    /// Always "green": only a green release is ever a canonical.
    #[serde(default = "green")]
    pub status: String,
    #[serde(default)]
    pub promoted_at: String,
}

fn green() -> String {
    "green".into()
}

impl From<&Canonical> for CanonicalFile {
    fn from(c: &Canonical) -> Self {
        Self {
            recipe: c.recipe.clone(),
            version: c.version.clone(),
            commit: c.commit.clone(),
            status: green(),
            promoted_at: c.promoted_at.clone(),
        }
    }
}

/// Writes `c`'s file under `dir`, atomically, and only when it changed.
pub fn export(dir: &Path, c: &Canonical) -> Result<()> {
    let path = dir.join(&c.recipe).join("canonical.json");
    std::fs::create_dir_all(path.parent().unwrap_or(dir))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let text = serde_json::to_string_pretty(&CanonicalFile::from(c))? + "\n";
    // Read as any file in a directory others may write: never a FIFO, a link or without end.
    if read_regular(&path, 1 << 20, false).ok().as_deref() == Some(text.as_bytes()) {
        return Ok(());
    }
    publish(&path, text.as_bytes(), 0o644)
}

/// Reads one file for `canonical import`: bad input names the file and the field.
pub fn read(file: &Path) -> Result<Canonical> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let f: CanonicalFile = serde_json::from_str(&text).map_err(|_| {
        InputError::file(file, "not a canonical.json (needs recipe, version, commit)")
    })?;
    let bad = |key: &str, message: String| InputError {
        file: file.to_path_buf(),
        line: None,
        key: key.into(),
        message,
    };
    check_release_tag(&f.version).map_err(|e| bad("version", e))?;
    if !crate::git::is_oid(&f.commit) {
        let message = format!(
            "{:?} is not a commit id (40 or 64 lowercase hex digits)",
            f.commit
        );
        return Err(bad("commit", message).into());
    }
    check_recipe_name(&f.recipe).map_err(|e| bad("recipe", e))?;
    Ok(Canonical {
        recipe: f.recipe,
        version: f.version,
        commit: f.commit,
        run: None,
        promoted_at: f.promoted_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_exported_is_what_is_imported() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let c = Canonical {
            recipe: "ghost".into(),
            version: "5.0.0+5.1".into(),
            commit: "a".repeat(40),
            run: Some(7),
            promoted_at: "2026-12-01T00:00:00Z".into(),
        };
        export(dir.path(), &c)?;
        let file = dir.path().join("ghost/canonical.json");
        let back = read(&file)?;
        assert_eq!(back, Canonical { run: None, ..c });
        let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
        assert_eq!(written["status"], "green");
        Ok(())
    }
}
