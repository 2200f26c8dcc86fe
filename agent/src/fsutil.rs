//! File writes that survive `kill -9` and power loss: a reader sees the old file or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to a temporary file beside `path`, syncs it, renames it over `path` and syncs the
/// directory. An existing file keeps its permission bits; a new one gets `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let mode = fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(mode);
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    } else {
        remove_orphaned_temporaries(dir, &name.to_string_lossy());
    }
    result
}

/// Removes `.<name>.tmp-<pid>` files that writers killed mid-write left behind (`kill -9`, a stop
/// signal): those whose process is gone. A live writer's file is left alone.
fn remove_orphaned_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64> {
    let s = rustix::fs::statvfs(path)
        .with_context(|| format!("cannot read free space of {}", path.display()))?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_keeps_mode() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("f.toml");
        write_atomic(&p, b"one", 0o644)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600))?;
        write_atomic(&p, b"two", 0o644)?;
        assert_eq!(fs::read(&p)?, b"two");
        assert_eq!(fs::metadata(&p)?.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::read_dir(dir.path())?.count(),
            1,
            "no temporary file left behind"
        );
        Ok(())
    }

    #[test]
    fn temporaries_of_killed_writers_are_cleared_and_a_live_ones_kept() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("health.json");
        // pid_max is at most 2^22: this writer cannot be alive.
        let dead = dir.path().join(".health.json.tmp-4999999");
        let live = dir.path().join(format!(
            ".health.json.tmp-{}",
            std::os::unix::process::parent_id()
        ));
        let other = dir.path().join(".other.json.tmp-4999999");
        for f in [&dead, &live, &other] {
            fs::write(f, b"half")?;
        }
        write_atomic(&p, b"{}", 0o644)?;
        assert!(!dead.exists() && live.exists() && other.exists());
        Ok(())
    }

    #[test]
    fn failure_leaves_target_alone() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("missing-dir").join("f");
        assert!(write_atomic(&p, b"x", 0o644).is_err());
        assert!(!p.exists());
        Ok(())
    }
}
