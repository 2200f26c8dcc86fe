//! `[disk]` in agent.toml: the warm-volume budget that `cc-ci-agent gc` keeps.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rules::check_recipe_name;
use super::source::TomlSource;
use super::values::{ByteSize, Seconds};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDisk {
    budget: Option<ByteSize>,
    min_free: Option<ByteSize>,
    grace: Option<Seconds>,
    #[serde(default)]
    pin: Vec<String>,
    volumes: Option<RawVolumes>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVolumes {
    kind: VolumeKind,
    root: Option<PathBuf>,
    docker: Option<String>,
    data_root: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    Directory,
    Docker,
}

/// Where warm volumes live and how they are listed, sized and removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Volumes {
    /// One directory per volume under `root`, named `<recipe>_<version>` or labelled by a
    /// `.cc-ci-volume.json` inside it.
    Directory { root: PathBuf },
    /// Docker volumes labelled `cc-ci.recipe` and `cc-ci.version`, through the docker CLI.
    Docker {
        /// The docker program (argv[0]).
        docker: String,
        /// The filesystem whose free space `min_free` is about.
        data_root: PathBuf,
    },
}

/// A volume the operator keeps whatever the budget: every volume of a recipe, or one version's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pin {
    pub recipe: String,
    pub version: Option<String>,
}

impl Pin {
    pub fn matches(&self, recipe: &str, version: &str) -> bool {
        self.recipe == recipe && self.version.as_deref().is_none_or(|v| v == version)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    /// Most bytes the warm volumes may take in all. `None`: no garbage collection.
    pub budget: Option<ByteSize>,
    /// Free space to keep on the volumes' filesystem.
    pub min_free: ByteSize,
    /// How long a volume nobody protects may stay after its last use.
    pub grace: Duration,
    pub pin: Vec<Pin>,
    pub volumes: Option<Volumes>,
}

fn parse_pin(text: &str) -> Result<Pin, String> {
    let (recipe, version) = match text.split_once('@') {
        Some((r, v)) => (r, Some(v)),
        None => (text, None),
    };
    check_recipe_name(recipe).map_err(|e| format!("pin {text:?}: {e}"))?;
    if version.is_some_and(|v| v.is_empty() || v.contains(['/', '\0'])) {
        return Err(format!(
            "pin {text:?}: the version after '@' must be non-empty, without '/'"
        ));
    }
    Ok(Pin {
        recipe: recipe.to_string(),
        version: version.map(str::to_string),
    })
}

pub(super) fn resolve(
    raw: RawDisk,
    source: &TomlSource,
    abs: &dyn Fn(&Path) -> PathBuf,
    errors: &mut Vec<crate::error::InputError>,
) -> Disk {
    let mut pin = Vec::new();
    for text in &raw.pin {
        match parse_pin(text) {
            Ok(p) => pin.push(p),
            Err(e) => errors.push(source.error_at(&["disk", "pin"], e)),
        }
    }
    let volumes = raw.volumes.and_then(|v| match v.kind {
        VolumeKind::Directory => {
            if v.docker.is_some() || v.data_root.is_some() {
                errors.push(source.error_at(
                    &["disk", "volumes", "kind"],
                    "docker and data_root are for kind = \"docker\"",
                ));
            }
            match v.root {
                Some(root) => Some(Volumes::Directory { root: abs(&root) }),
                None => {
                    errors.push(source.error_at(
                        &["disk", "volumes", "kind"],
                        "kind = \"directory\" needs root",
                    ));
                    None
                }
            }
        }
        VolumeKind::Docker => {
            if v.root.is_some() {
                errors.push(source.error_at(
                    &["disk", "volumes", "root"],
                    "root is for kind = \"directory\"; docker volumes live in data_root",
                ));
            }
            let docker = v.docker.unwrap_or_else(|| "docker".to_string());
            if docker.is_empty() {
                errors.push(source.error_at(&["disk", "volumes", "docker"], "must name a program"));
            }
            Some(Volumes::Docker {
                docker,
                data_root: v
                    .data_root
                    .as_deref()
                    .map_or_else(|| PathBuf::from("/var/lib/docker"), abs),
            })
        }
    });
    if raw.budget.is_some() && volumes.is_none() && errors.is_empty() {
        errors.push(source.error_at(
            &["disk", "budget"],
            "a budget needs [disk.volumes]: where the warm volumes are",
        ));
    }
    Disk {
        budget: raw.budget,
        min_free: raw.min_free.unwrap_or(ByteSize(0)),
        grace: raw.grace.map_or(Duration::from_secs(24 * 3600), |s| s.0),
        pin,
        volumes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_name_a_recipe_or_one_version() {
        let p = parse_pin("plausible@2.0.0+2.1.4").unwrap();
        assert!(p.matches("plausible", "2.0.0+2.1.4"));
        assert!(!p.matches("plausible", "1.0.0+2.0.0"));
        let all = parse_pin("plausible").unwrap();
        assert!(all.matches("plausible", "anything"));
        assert!(!all.matches("other", "anything"));
        assert!(parse_pin("Plausible").is_err());
        assert!(parse_pin("plausible@").is_err());
        assert!(parse_pin("plausible@../x").is_err());
    }
}
