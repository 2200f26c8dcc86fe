//! Warm volumes as Docker volumes labelled `cc-ci.recipe` and `cc-ci.version`, through the docker
//! CLI: `volume ls` finds them, `volume inspect` gives labels and creation time, `system df
//! --verbose` gives sizes and how many containers use each, `volume rm` deletes.
//!
//! The only place that knows docker's command lines (gc asks it for its warm volumes). Docker
//! keeps no last-use time: gc remembers when it last saw a volume in use (ledger `volume_use`)
//! and counts from that or the creation time, whichever is later.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use serde::Deserialize;

use crate::process::Cmd;
use crate::settings::rules::check_recipe_name;

pub const RECIPE_LABEL: &str = "cc-ci.recipe";
pub const VERSION_LABEL: &str = "cc-ci.version";
const TIMEOUT: Duration = Duration::from_secs(300);

/// A labelled volume as docker shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerVolume {
    pub name: String,
    /// Its labels' (recipe, version), when both are there and well-formed.
    pub id: Option<(String, String)>,
    pub created: Option<SystemTime>,
    /// Containers using it, and its size, from `system df`; `None` when it is not listed there.
    pub links: Option<u64>,
    pub bytes: Option<u64>,
}

/// `docker volume rm` refused: a container uses the volume.
#[derive(Debug, thiserror::Error)]
#[error("{0} is in use by a container: kept")]
pub struct InUse(pub String);

pub struct Docker {
    pub program: String,
    pub data_root: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspected {
    name: String,
    created_at: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

/// One row of `system df --verbose`'s "Local Volumes space usage" table.
#[derive(Debug, PartialEq, Eq)]
pub struct Usage {
    pub links: u64,
    pub bytes: Option<u64>,
}

/// A size as the docker CLI prints it (go-units `HumanSize`: decimal units, up to 4 significant
/// digits): "0B", "5B", "24.58kB", "1.234GB". `None` for "N/A" or anything else.
pub fn parse_size(text: &str) -> Option<u64> {
    const UNITS: [(&str, f64); 7] = [
        ("kB", 1e3),
        ("MB", 1e6),
        ("GB", 1e9),
        ("TB", 1e12),
        ("PB", 1e15),
        ("EB", 1e18),
        ("B", 1.0),
    ];
    let (number, scale) = UNITS
        .iter()
        .find_map(|(u, s)| text.strip_suffix(u).map(|n| (n, *s)))?;
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| (value * scale).round() as u64)
}

/// The volume rows of `docker system df --verbose`, by name.
pub fn parse_system_df(text: &str) -> Result<BTreeMap<String, Usage>> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with("Local Volumes space usage"));
    if lines.next().is_none() {
        anyhow::bail!(
            "`docker system df --verbose` printed no \"Local Volumes space usage\" section"
        );
    }
    let mut lines = lines.skip_while(|l| l.trim().is_empty());
    let header = lines.next().unwrap_or_default();
    let columns: Vec<&str> = header
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if columns != ["VOLUME NAME", "LINKS", "SIZE"] {
        anyhow::bail!("`docker system df --verbose`: unexpected volume table header {header:?}");
    }
    let mut usage = BTreeMap::new();
    for line in lines.take_while(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, links, size] = fields[..] else {
            anyhow::bail!("`docker system df --verbose`: cannot read volume row {line:?}");
        };
        let links = links
            .parse()
            .with_context(|| format!("`docker system df --verbose`: LINKS in {line:?}"))?;
        usage.insert(
            name.to_string(),
            Usage {
                links,
                bytes: parse_size(size),
            },
        );
    }
    Ok(usage)
}

/// One volume from `docker volume inspect`.
#[derive(Debug)]
pub struct Labelled {
    pub name: String,
    /// Recipe and version, when both labels are there and the recipe name is valid.
    pub id: Option<(String, String)>,
    pub created: Option<SystemTime>,
}

/// Volumes from `docker volume inspect`'s JSON.
pub fn parse_inspect(text: &str) -> Result<Vec<Labelled>> {
    let all: Vec<Inspected> =
        serde_json::from_str(text).context("`docker volume inspect` printed unexpected JSON")?;
    Ok(all
        .into_iter()
        .map(|v| {
            let labels = v.labels.unwrap_or_default();
            let id = match (labels.get(RECIPE_LABEL), labels.get(VERSION_LABEL)) {
                (Some(r), Some(ver)) if check_recipe_name(r).is_ok() && !ver.is_empty() => {
                    Some((r.clone(), ver.clone()))
                }
                _ => None,
            };
            let created = v.created_at.as_deref().and_then(|t| {
                humantime::parse_rfc3339_weak(t)
                    .ok()
                    .or_else(|| parse_offset_time(t))
            });
            Labelled {
                name: v.name,
                id,
                created,
            }
        })
        .collect())
}

/// Docker writes local times with an offset ("2017-09-29T09:14:12-05:00"); humantime reads only
/// UTC, so the offset is applied here.
fn parse_offset_time(t: &str) -> Option<SystemTime> {
    let (body, sign, offset) = match (t.rfind('+'), t.rfind('-')) {
        (Some(p), _) if p > 10 => (&t[..p], 1i64, &t[p + 1..]),
        (_, Some(p)) if p > 10 => (&t[..p], -1i64, &t[p + 1..]),
        _ => return None,
    };
    let (h, m) = offset.split_once(':')?;
    let shift = (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60) * sign;
    let local = humantime::parse_rfc3339_weak(body).ok()?;
    let secs = shift.unsigned_abs();
    if shift >= 0 {
        local.checked_sub(Duration::from_secs(secs))
    } else {
        local.checked_add(Duration::from_secs(secs))
    }
}

impl Docker {
    fn docker(&self, args: &[&str]) -> Result<String> {
        Cmd::new(&self.program)
            .args(args)
            .timeout(TIMEOUT)
            .run()
            .map_err(|e| match e {
                crate::process::ProcessError::Spawn { .. } => anyhow::anyhow!(
                    "{e} (is Docker installed? [disk.volumes] docker names its CLI)"
                ),
                e => anyhow::anyhow!("{e}"),
            })
    }

    /// Names of the volumes that carry the recipe label.
    fn labelled(&self) -> Result<Vec<String>> {
        let listed = self.docker(&[
            "volume",
            "ls",
            "--quiet",
            "--filter",
            &format!("label={RECIPE_LABEL}"),
        ])?;
        Ok(listed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Every volume labelled as a cc-ci volume, with what docker says of it.
    pub fn inventory(&self) -> Result<Vec<DockerVolume>> {
        let names = self.labelled()?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["volume", "inspect"];
        args.extend(names.iter().map(String::as_str));
        let inspected = parse_inspect(&self.docker(&args)?)?;
        let usage = parse_system_df(&self.docker(&["system", "df", "--verbose"])?)?;
        let mut volumes: Vec<DockerVolume> = inspected
            .into_iter()
            .map(|Labelled { name, id, created }| {
                let u = usage.get(&name);
                DockerVolume {
                    links: u.map(|u| u.links),
                    bytes: u.and_then(|u| u.bytes),
                    id,
                    created,
                    name,
                }
            })
            .collect();
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    pub fn free_bytes(&self) -> Result<u64> {
        crate::fsutil::free_bytes(&self.data_root)
    }

    /// `docker volume rm` refuses a volume a container uses, so a run that started since the
    /// inventory keeps its volume.
    pub fn delete(&self, name: &str) -> Result<()> {
        match self.docker(&["volume", "rm", name]) {
            Ok(_) => Ok(()),
            // "Error response from daemon: remove NAME: volume is in use - [CONTAINER...]"
            Err(e) if format!("{e:#}").contains("volume is in use") => {
                Err(InUse(name.to_string()).into())
            }
            Err(e) => Err(e),
        }
    }

    pub fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.labelled()?.iter().any(|l| l == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_the_cli_prints_them() {
        assert_eq!(parse_size("0B"), Some(0));
        assert_eq!(parse_size("5B"), Some(5));
        assert_eq!(parse_size("24.58kB"), Some(24_580));
        assert_eq!(parse_size("1.234GB"), Some(1_234_000_000));
        assert_eq!(parse_size("N/A"), None);
        assert_eq!(parse_size("-1B"), None);
    }

    #[test]
    fn offset_times_are_converted_to_utc() {
        let t = parse_offset_time("2017-09-29T09:14:12-05:00").unwrap();
        assert_eq!(t, humantime::parse_rfc3339("2017-09-29T14:14:12Z").unwrap());
    }
}
