//! Warm volumes as directories under one root: `<recipe>_<version>`, or any name with a
//! `.cc-ci-volume.json` label inside.
//!
//! A run that uses a volume holds an `flock` on `<volume>/.cc-ci-volume.lock`; the agent takes the
//! same lock before deleting, so it never deletes a volume in use. Deletion first renames the
//! volume to `.cc-ci-deleting.<name>` (one atomic step: the volume is gone for every reader), then
//! removes it; a run killed between the two leaves a tombstone the next run finishes.

use std::collections::HashSet;
use std::fs::{File, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use serde::Deserialize;

use super::plan::Volume;
use crate::settings::rules::check_recipe_name;

pub const LABEL_FILE: &str = ".cc-ci-volume.json";
pub const LOCK_FILE: &str = ".cc-ci-volume.lock";
const TOMBSTONE: &str = ".cc-ci-deleting.";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Label {
    recipe: String,
    version: String,
    /// RFC 3339; when the harness last reattached it. Else the newest mtime inside counts.
    last_used: Option<String>,
}

pub struct Directory {
    pub root: PathBuf,
}

/// Allocated bytes and the newest modification time under `path`, without following symlinks
/// or crossing into another filesystem. Hard links are counted once.
fn measure(path: &Path) -> std::io::Result<(u64, SystemTime)> {
    let top = std::fs::symlink_metadata(path)?;
    let dev = top.dev();
    let mut seen = HashSet::new();
    let mut bytes = 0u64;
    let mut newest = top.modified()?;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.dev() != dev {
                continue;
            }
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert(meta.ino()) {
                continue;
            }
            bytes = bytes.saturating_add(meta.blocks().saturating_mul(512));
            newest = newest.max(meta.modified()?);
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok((
        bytes.saturating_add(top.blocks().saturating_mul(512)),
        newest,
    ))
}

/// Whether a run holds the volume's lock now.
fn locked(volume: &Path) -> std::io::Result<bool> {
    match open_lock(volume)? {
        Some(f) => match f.try_lock() {
            Ok(()) => Ok(false),
            Err(TryLockError::WouldBlock) => Ok(true),
            Err(TryLockError::Error(e)) => Err(e),
        },
        None => Ok(false),
    }
}

/// The volume's lock file, `None` when there is none. A run writes the volume, so what stands at
/// that name may be anything: a FIFO would block an open forever and a link leads elsewhere. Only
/// a regular file is a lock; anything else is an error, and the volume is kept as unreadable.
fn open_lock(volume: &Path) -> std::io::Result<Option<File>> {
    use rustix::fs::{FileType, Mode, OFlags};
    let path = volume.join(LOCK_FILE);
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = match rustix::fs::open(&path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(std::io::Error::other(format!("{}: {e}", path.display()))),
    };
    let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
    if kind != FileType::RegularFile {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file ({kind:?})",
            path.display()
        )));
    }
    Ok(Some(File::from(fd)))
}

/// The recipe and version a volume belongs to: its label, else its name.
fn identify(path: &Path, name: &str) -> std::result::Result<Option<Label>, String> {
    match crate::fsutil::read_regular(&path.join(LABEL_FILE), 64 * 1024, false) {
        Ok(text) => {
            let label: Label = serde_json::from_slice(&text)
                .map_err(|e| format!("{}: {e}", path.join(LABEL_FILE).display()))?;
            check_recipe_name(&label.recipe)
                .map_err(|e| format!("{}: {e}", path.join(LABEL_FILE).display()))?;
            return Ok(Some(label));
        }
        Err(crate::fsutil::ReadError::Io { error, .. })
            if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok(name.split_once('_').and_then(|(recipe, version)| {
        (check_recipe_name(recipe).is_ok() && !version.is_empty()).then(|| Label {
            recipe: recipe.to_string(),
            version: version.to_string(),
            last_used: None,
        })
    }))
}

impl Directory {
    /// The volumes under the root; one that cannot be sized counts as used at `now`.
    pub fn inventory(&self, now: SystemTime) -> Result<Vec<Volume>> {
        let entries = std::fs::read_dir(&self.root).with_context(|| {
            format!(
                "cannot list volumes in {} (create it, or fix [disk.volumes] root)",
                self.root.display()
            )
        })?;
        let mut volumes = Vec::new();
        for entry in entries {
            let entry =
                entry.with_context(|| format!("cannot list volumes in {}", self.root.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let mut problem = None;
            let (recipe, version, labelled_use) = match identify(&path, &name) {
                Ok(Some(l)) => (Some(l.recipe), Some(l.version), l.last_used),
                Ok(None) => (None, None, None),
                Err(e) => {
                    problem = Some(e);
                    (None, None, None)
                }
            };
            let (bytes, newest) = match measure(&path) {
                Ok(m) => m,
                Err(e) => {
                    problem.get_or_insert(format!("cannot size {}: {e}", path.display()));
                    (0, now)
                }
            };
            let last_used = match labelled_use.as_deref().map(humantime::parse_rfc3339_weak) {
                Some(Ok(t)) => t,
                Some(Err(e)) => {
                    problem.get_or_insert(format!(
                        "{}: last_used: {e}",
                        path.join(LABEL_FILE).display()
                    ));
                    newest
                }
                None => newest,
            };
            let in_use = locked(&path).unwrap_or_else(|e| {
                problem.get_or_insert(format!(
                    "cannot probe {}: {e}",
                    path.join(LOCK_FILE).display()
                ));
                true
            });
            volumes.push(Volume {
                name,
                recipe,
                version,
                bytes,
                last_used,
                in_use,
                problem,
                note: None,
            });
        }
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    pub fn free_bytes(&self) -> Result<u64> {
        crate::fsutil::free_bytes(&self.root)
    }

    /// Deletes one volume, unless a run took its lock since the inventory.
    pub fn delete(&self, name: &str) -> Result<()> {
        let path = self.root.join(name);
        // Held across the rename: a run that opened the lock file before waits, then finds the
        // volume gone (it must check after locking).
        let lock = open_lock(&path)
            .with_context(|| format!("cannot open {}", path.join(LOCK_FILE).display()))?;
        if let Some(f) = &lock {
            match f.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(super::InUse(name.to_string()).into()),
                Err(TryLockError::Error(e)) => {
                    return Err(e)
                        .with_context(|| format!("cannot lock {}", path.join(LOCK_FILE).display()))
                }
            }
        }
        let tomb = self.root.join(format!("{TOMBSTONE}{name}"));
        std::fs::rename(&path, &tomb)
            .with_context(|| format!("cannot move {} aside", path.display()))?;
        drop(lock);
        std::fs::remove_dir_all(&tomb).with_context(|| format!("cannot remove {}", tomb.display()))
    }

    /// Finishes deletions a killed run left half done; their names.
    pub fn finish_interrupted(&self) -> Result<Vec<String>> {
        let mut finished = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Ok(finished);
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(volume) = name.strip_prefix(TOMBSTONE) {
                std::fs::remove_dir_all(entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
                finished.push(volume.to_string());
            }
        }
        Ok(finished)
    }

    /// Whether a volume of this name is there now.
    pub fn exists(&self, name: &str) -> bool {
        self.root.join(name).is_dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_a_run_took_since_the_inventory_is_kept_whole() -> Result<()> {
        let root = tempfile::tempdir()?;
        let volume = root.path().join("a_1.0.0+1");
        std::fs::create_dir_all(volume.join("data"))?;
        std::fs::write(volume.join("data/db"), b"x")?;
        let lock = File::create(volume.join(LOCK_FILE))?;
        lock.lock()?;
        let dir = Directory {
            root: root.path().to_path_buf(),
        };
        let err = dir.delete("a_1.0.0+1").err();
        assert!(
            err.as_ref().is_some_and(|e| e.is::<super::super::InUse>()),
            "{err:?}"
        );
        assert!(volume.join("data/db").is_file());
        drop(lock);
        dir.delete("a_1.0.0+1")?;
        assert!(!volume.exists());
        assert_eq!(
            std::fs::read_dir(root.path())?.count(),
            0,
            "no tombstone left"
        );
        Ok(())
    }
}
