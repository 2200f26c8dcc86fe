//! The NixOS system profile: `/nix/var/nix/profiles/system -> system-N-link -> /nix/store/...`.
//! The little parsing of store paths and generation links the agent needs, kept strict: a link
//! that does not look right is an error, never a guess.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Nix's base-32 alphabet: digits and lowercase letters without e, o, u and t.
const NIX_BASE32: &str = "0123456789abcdfghijklmnpqrsvwxyz";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Generation {
    pub number: u64,
    /// The store path of the system the generation points at.
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error("cannot read the profile link {path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("{path} points at {target:?}, which is not a generation link `<profile>-<N>-link`")]
    NotAGeneration { path: PathBuf, target: String },
    #[error("{path} points at {target:?}, which is not a store path `/.../<32-char hash>-<name>`")]
    NotAStorePath { path: PathBuf, target: String },
}

/// Checks that `path` looks like a store path: an absolute path whose last component is a 32
/// character Nix base-32 hash, a dash and a name. Returns the name.
pub fn store_path_name(path: &Path) -> Option<&str> {
    if !path.is_absolute() {
        return None;
    }
    let base = path.file_name()?.to_str()?;
    let (hash, name) = base.split_at_checked(32)?;
    let name = name.strip_prefix('-')?;
    let ok = hash.chars().all(|c| NIX_BASE32.contains(c)) && !name.is_empty();
    ok.then_some(name)
}

/// The generation number in a link name such as `system-42-link`, for the profile `system`.
pub fn generation_number(profile_name: &str, link_name: &str) -> Option<u64> {
    let n = link_name
        .strip_prefix(profile_name)?
        .strip_prefix('-')?
        .strip_suffix("-link")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

fn read_link(path: &Path) -> Result<PathBuf, ProfileError> {
    std::fs::read_link(path).map_err(|e| ProfileError::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The generation the profile points at now.
pub fn current(profile: &Path) -> Result<Generation, ProfileError> {
    let profile_name = profile
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("system");
    let link = read_link(profile)?;
    let link_name = link
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let number =
        generation_number(profile_name, link_name).ok_or_else(|| ProfileError::NotAGeneration {
            path: profile.to_path_buf(),
            target: link.display().to_string(),
        })?;
    let dir = profile.parent().unwrap_or(Path::new("/"));
    let link_path = if link.is_absolute() {
        link
    } else {
        dir.join(link)
    };
    let path = resolve_store_path(&link_path)?;
    Ok(Generation { number, path })
}

/// The store path a generation link (or `/run/current-system`) points at.
pub fn resolve_store_path(link: &Path) -> Result<PathBuf, ProfileError> {
    let target = read_link(link)?;
    if store_path_name(&target).is_none() {
        return Err(ProfileError::NotAStorePath {
            path: link.to_path_buf(),
            target: target.display().to_string(),
        });
    }
    Ok(target)
}

/// Every generation of the profile, oldest first.
pub fn list(profile: &Path) -> Result<Vec<Generation>, ProfileError> {
    let profile_name = profile
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("system");
    let dir = profile.parent().unwrap_or(Path::new("/"));
    let entries = std::fs::read_dir(dir).map_err(|e| ProfileError::Unreadable {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut generations = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| generation_number(profile_name, n))
        else {
            continue;
        };
        let path = resolve_store_path(&entry.path())?;
        generations.push(Generation { number, path });
    }
    generations.sort_by_key(|g| g.number);
    Ok(generations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const HASH: &str = "0c5q7b2a1yw4rxd9lkjhgfsn8m3v6p0z";

    #[test]
    fn store_paths() {
        let good = format!("/nix/store/{HASH}-nixos-system-cc-ci-25.11");
        assert_eq!(
            store_path_name(Path::new(&good)),
            Some("nixos-system-cc-ci-25.11")
        );
        for bad in [
            format!("nix/store/{HASH}-x"),
            format!("/nix/store/{HASH}"),
            format!("/nix/store/{HASH}-"),
            "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x".to_string(),
            "/nix/store/short-x".to_string(),
            "/".to_string(),
        ] {
            assert_eq!(store_path_name(Path::new(&bad)), None, "{bad}");
        }
    }

    #[test]
    fn generation_links() {
        assert_eq!(generation_number("system", "system-42-link"), Some(42));
        for bad in [
            "system-link",
            "system--link",
            "system-4x-link",
            "other-4-link",
            "system-4",
        ] {
            assert_eq!(generation_number("system", bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_a_profile_like_nixos_lays_it_out() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let store = root.path().join("store");
        let profiles = root.path().join("profiles");
        std::fs::create_dir_all(&profiles)?;
        for n in [1u64, 2, 10] {
            let sys = store.join(format!("{HASH}-nixos-system-{n}"));
            std::fs::create_dir_all(&sys)?;
            symlink(&sys, profiles.join(format!("system-{n}-link")))?;
        }
        symlink("system-10-link", profiles.join("system"))?;
        let profile = profiles.join("system");
        let g = current(&profile)?;
        assert_eq!(
            (g.number, g.path.clone()),
            (10, store.join(format!("{HASH}-nixos-system-10")))
        );
        assert_eq!(
            list(&profile)?.iter().map(|g| g.number).collect::<Vec<_>>(),
            [1, 2, 10]
        );

        std::fs::remove_file(&profile)?;
        symlink("elsewhere", &profile)?;
        assert!(matches!(
            current(&profile),
            Err(ProfileError::NotAGeneration { .. })
        ));
        std::fs::remove_file(&profile)?;
        assert!(matches!(
            current(&profile),
            Err(ProfileError::Unreadable { .. })
        ));
        Ok(())
    }
}
