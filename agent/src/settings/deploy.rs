//! `[deploy]` in agent.toml: how `cc-ci-agent deploy` builds, activates, verifies and commits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::source::TomlSource;
pub use super::values::Seconds;

pub const DEFAULT_FLAKE: &str = ".#cc-ci";
pub const DEFAULT_PROFILE: &str = "/nix/var/nix/profiles/system";
pub const DEFAULT_CURRENT_SYSTEM: &str = "/run/current-system";
/// The dead-man switch must not fire while a healthy deploy is still verifying.
pub const DEADMAN_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeploy {
    flake: Option<String>,
    state_dir: Option<PathBuf>,
    require_synced: Option<bool>,
    allowed_signers: Option<PathBuf>,
    confirm_timeout: Option<Seconds>,
    verify_timeout: Option<Seconds>,
    verify_interval: Option<Seconds>,
    build_timeout: Option<Seconds>,
    required_units: Option<Vec<String>>,
    profile: Option<PathBuf>,
    current_system: Option<PathBuf>,
    nixos_rebuild: Option<PathBuf>,
    nix_env: Option<PathBuf>,
    nix: Option<PathBuf>,
    systemctl: Option<PathBuf>,
    systemd_run: Option<PathBuf>,
    busy_check: Option<RawBusyCheck>,
    #[serde(default)]
    checks: Vec<RawCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBusyCheck {
    command: Option<Vec<String>>,
    url: Option<String>,
    drone: Option<RawDrone>,
    timeout: Option<Seconds>,
}

/// `{ url, token_file, allow_insecure }` of a Drone server: `busy_check.drone` and
/// `probe.drone`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrone {
    url: String,
    token_file: Option<PathBuf>,
    allow_insecure: Option<bool>,
}

/// A Drone server and where its token is: `token_file`, else the systemd credential
/// [`DRONE_TOKEN_CREDENTIAL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DroneSettings {
    pub url: String,
    pub token_file: Option<PathBuf>,
}

pub const DRONE_TOKEN_CREDENTIAL: &str = "drone-token";

/// `<section>.drone` (or `<section>.busy_check.drone`): an https URL with a host (http only
/// with `allow_insecure`, as for the forge: Drone's token is an admin's, sent on every call).
pub(super) fn resolve_drone(
    raw: RawDrone,
    at: &[&str],
    source: &TomlSource,
    abs: &dyn Fn(&Path) -> PathBuf,
    errors: &mut Vec<crate::error::InputError>,
) -> Option<DroneSettings> {
    let mut key: Vec<&str> = at.to_vec();
    key.push("url");
    let checked = check_http_url(&raw.url).and_then(|()| {
        if raw.url.starts_with("http://") && raw.allow_insecure != Some(true) {
            Err(format!(
                "URL {:?} uses http://, which sends Drone's token in clear text: use https://, \
                 or set allow_insecure = true",
                raw.url
            ))
        } else {
            Ok(())
        }
    });
    match checked {
        Ok(()) if !raw.url.contains('@') => Some(DroneSettings {
            url: raw.url.trim_end_matches('/').to_string(),
            token_file: raw.token_file.as_deref().map(abs),
        }),
        Ok(()) => {
            errors.push(source.error_at(
                &key,
                "holds user information: give Drone's token in token_file",
            ));
            None
        }
        Err(e) => {
            errors.push(source.error_at(&key, e));
            None
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    name: String,
    url: Option<String>,
    command: Option<Vec<String>>,
    timeout: Option<Seconds>,
}

/// "Is a CI build in flight?" Shared by deploy and sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BusyCheck {
    /// Exit 0: idle. Exit 1: busy (its first line of stdout says with what). Anything else: the
    /// check itself failed, which counts as busy.
    Command {
        argv: Vec<String>,
        timeout: Duration,
    },
    /// A 2xx answer: idle. 423 Locked: busy (the body says with what). Anything else: failed.
    Url { url: String, timeout: Duration },
    /// Drone's list of incomplete builds (`GET /api/builds/incomplete`, an admin's token):
    /// empty is idle, any build is busy, any other answer failed.
    Drone {
        drone: DroneSettings,
        timeout: Duration,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CheckProbe {
    /// GET, expecting 2xx.
    Url(String),
    /// Exit 0 passes.
    Command(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserCheck {
    pub name: String,
    pub probe: CheckProbe,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlakeRef {
    /// The flake's directory, a git checkout.
    pub dir: PathBuf,
    /// The `nixosConfigurations` attribute.
    pub attr: String,
}

impl FlakeRef {
    /// `PATH#ATTR` with a local PATH (plain, `path:` or `git+file://`); relative to `cwd`.
    pub fn parse(s: &str, cwd: &Path) -> Result<Self, String> {
        let Some((path, attr)) = s.rsplit_once('#') else {
            return Err(format!(
                "flake {s:?} must be PATH#CONFIGURATION, e.g. \".#cc-ci\""
            ));
        };
        let path = path
            .strip_prefix("git+file://")
            .or_else(|| path.strip_prefix("path:"))
            .unwrap_or(path);
        if path.is_empty() || path.contains("://") || path.contains(':') {
            return Err(format!(
                "flake {s:?} must be a local directory (a git checkout the agent can check is clean and \
                 up to date), not a remote reference"
            ));
        }
        let attr_ok = !attr.is_empty()
            && attr
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !attr.starts_with(['-', '.']);
        if !attr_ok {
            return Err(format!("flake {s:?}: {attr:?} is not a configuration name"));
        }
        let dir = Path::new(path);
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            cwd.join(dir)
        };
        Ok(Self {
            dir,
            attr: attr.to_string(),
        })
    }

    /// The reference handed to `nixos-rebuild --flake`.
    pub fn to_arg(&self) -> String {
        format!("{}#{}", self.dir.display(), self.attr)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploySettings {
    /// As written; parsed against the working directory when a deploy starts.
    pub flake: String,
    /// Where the deploy keeps its journal and work directory. `None`: the agent's `state_dir`.
    /// A root deploy refuses a directory any other user can write (docs/deploy.md).
    pub state_dir: Option<PathBuf>,
    pub require_synced: bool,
    /// When set, the commit to deploy must carry a good SSH signature by a key in this file
    /// (git's `gpg.ssh.allowedSignersFile` format).
    pub allowed_signers: Option<PathBuf>,
    pub confirm_timeout: Duration,
    pub verify_timeout: Duration,
    pub verify_interval: Duration,
    pub build_timeout: Duration,
    /// Units that must be active after activation. Defaults to the bridge.
    pub required_units: Vec<String>,
    pub profile: PathBuf,
    pub current_system: PathBuf,
    /// `None`: found on `PATH` when needed.
    pub nixos_rebuild: Option<PathBuf>,
    pub nix_env: Option<PathBuf>,
    /// `nix`, for `nix store diff-closures`; without one a deploy does not show the closure diff.
    pub nix: Option<PathBuf>,
    pub systemctl: Option<PathBuf>,
    pub systemd_run: Option<PathBuf>,
    pub busy_check: Option<BusyCheck>,
    pub checks: Vec<UserCheck>,
}

/// `[[deploy.checks]]`: each exactly one of a URL or a command, with its timeout.
fn user_checks(
    raw: Vec<RawCheck>,
    source: &TomlSource,
    errors: &mut Vec<crate::error::InputError>,
) -> Vec<UserCheck> {
    let secs = |v: Option<Seconds>, default: u64| v.map_or(Duration::from_secs(default), |s| s.0);
    let mut checks = Vec::new();
    for (i, c) in raw.into_iter().enumerate() {
        let timeout = secs(c.timeout, 10);
        let probe = match (c.url, c.command) {
            (Some(url), None) => match check_http_url(&url) {
                Ok(()) => CheckProbe::Url(url),
                Err(e) => {
                    errors.push(source.error_at(
                        &["deploy", "checks"],
                        format!("check {} ({:?}): {e}", i + 1, c.name),
                    ));
                    continue;
                }
            },
            (None, Some(argv)) if !argv.is_empty() => CheckProbe::Command(argv),
            _ => {
                errors.push(source.error_at(
                    &["deploy", "checks"],
                    format!(
                        "check {} ({:?}) needs exactly one of url or command (non-empty)",
                        i + 1,
                        c.name
                    ),
                ));
                continue;
            }
        };
        checks.push(UserCheck {
            name: c.name,
            probe,
            timeout,
        });
    }
    checks
}

pub(super) fn resolve(
    raw: RawDeploy,
    bridge_unit: &str,
    source: &TomlSource,
    abs: &dyn Fn(&Path) -> PathBuf,
    errors: &mut Vec<crate::error::InputError>,
) -> DeploySettings {
    let at = |key: &'static str| ["deploy", key];
    let flake = raw.flake.unwrap_or_else(|| DEFAULT_FLAKE.to_string());
    if let Err(e) = FlakeRef::parse(&flake, Path::new("/")) {
        errors.push(source.error_at(&at("flake"), e));
    }
    let secs = |v: Option<Seconds>, default: u64| v.map_or(Duration::from_secs(default), |s| s.0);
    let confirm_timeout = secs(raw.confirm_timeout, 120);
    let verify_timeout = secs(raw.verify_timeout, 60);
    let verify_interval = secs(raw.verify_interval, 2);
    if confirm_timeout < verify_timeout + DEADMAN_MARGIN {
        errors.push(source.error_at(
            &at("confirm_timeout"),
            format!(
                "must be at least verify_timeout + {}s ({}s), or the dead-man switch would roll back \
                 a deploy that is still verifying",
                DEADMAN_MARGIN.as_secs(),
                (verify_timeout + DEADMAN_MARGIN).as_secs()
            ),
        ));
    }
    if verify_interval.is_zero() {
        errors.push(source.error_at(&at("verify_interval"), "must be more than zero"));
    }
    // Only a list written here is checked: the default is the bridge unit, checked as bridge.unit.
    for unit in raw.required_units.iter().flatten() {
        if let Err(e) = super::rules::check_unit_name(unit) {
            errors.push(source.error_at(&at("required_units"), e));
        }
    }
    let required_units = raw
        .required_units
        .unwrap_or_else(|| vec![bridge_unit.to_string()]);
    let busy_check = raw
        .busy_check
        .and_then(|b| resolve_busy_check(b, "deploy", source, abs, errors));
    let checks = user_checks(raw.checks, source, errors);
    DeploySettings {
        flake,
        state_dir: raw.state_dir.as_deref().map(abs),
        require_synced: raw.require_synced.unwrap_or(true),
        allowed_signers: raw.allowed_signers.as_deref().map(abs),
        confirm_timeout,
        verify_timeout,
        verify_interval,
        build_timeout: secs(raw.build_timeout, 3600),
        required_units,
        profile: raw
            .profile
            .as_deref()
            .map_or_else(|| DEFAULT_PROFILE.into(), abs),
        current_system: raw
            .current_system
            .as_deref()
            .map_or_else(|| DEFAULT_CURRENT_SYSTEM.into(), abs),
        nixos_rebuild: raw.nixos_rebuild.as_deref().map(abs),
        nix_env: raw.nix_env.as_deref().map(abs),
        nix: raw.nix.as_deref().map(abs),
        systemctl: raw.systemctl.as_deref().map(abs),
        systemd_run: raw.systemd_run.as_deref().map(abs),
        busy_check,
        checks,
    }
}

/// `[<section>.busy_check]`, shared by deploy and sweep.
pub(super) fn resolve_busy_check(
    b: RawBusyCheck,
    section: &str,
    source: &TomlSource,
    abs: &dyn Fn(&Path) -> PathBuf,
    errors: &mut Vec<crate::error::InputError>,
) -> Option<BusyCheck> {
    let timeout = b.timeout.map_or(Duration::from_secs(10), |s| s.0);
    match (b.command, b.url, b.drone) {
        (Some(argv), None, None) if !argv.is_empty() => Some(BusyCheck::Command { argv, timeout }),
        (None, None, Some(drone)) => resolve_drone(
            drone,
            &[section, "busy_check", "drone"],
            source,
            abs,
            errors,
        )
        .map(|drone| BusyCheck::Drone { drone, timeout }),
        (None, Some(url), None) => match check_http_url(&url) {
            Ok(()) => Some(BusyCheck::Url { url, timeout }),
            Err(e) => {
                errors.push(source.error_at(&[section, "busy_check", "url"], e));
                None
            }
        },
        _ => {
            errors.push(source.error_at(
                &[section, "busy_check"],
                "needs exactly one of command = [argv...] (non-empty), url = \"http(s)://...\" \
                 or drone = { url = \"http(s)://...\", token_file = \"...\" }",
            ));
            None
        }
    }
}

/// Check and busy URLs are plain HTTP(S) GETs.
pub fn check_http_url(url: &str) -> Result<(), String> {
    let ok = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match ok {
        Some(rest)
            if !rest.is_empty() && !rest.starts_with('/') && !url.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "URL {:?} must be http:// or https:// with a host",
            super::rules::without_credentials(url)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flake_refs() {
        let cwd = Path::new("/srv/cc-ci");
        assert_eq!(
            FlakeRef::parse(".#cc-ci", cwd),
            Ok(FlakeRef {
                dir: "/srv/cc-ci/.".into(),
                attr: "cc-ci".into()
            })
        );
        assert_eq!(
            FlakeRef::parse("/etc/nixos#host", cwd).map(|f| f.dir),
            Ok("/etc/nixos".into())
        );
        assert_eq!(
            FlakeRef::parse("git+file:///srv/x#h", cwd).map(|f| f.dir),
            Ok("/srv/x".into())
        );
        for bad in [
            "github:org/repo#h",
            ".",
            ".#",
            "#h",
            "https://x/y#h",
            ".#a b",
            ".#-x",
        ] {
            assert!(FlakeRef::parse(bad, cwd).is_err(), "{bad}");
        }
    }
}
