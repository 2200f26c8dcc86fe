//! `agent.toml`: the agent's own settings, rendered by the NixOS module from
//! `services.cc-ci.settings`. See docs/configuration.md for every key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rules::{check_org_name, check_unit_name, check_url};
use super::source::TomlSource;
pub use super::values::ByteSize;
use crate::error::{InputError, Invalid};

pub const DEFAULT_CONFIG: &str = "/etc/cc-ci/agent.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cc-ci";
pub const DEFAULT_BRIDGE_UNIT: &str = "cc-ci-bridge.service";
/// Names of the systemd credentials (`LoadCredential=`) the NixOS module passes secrets by.
pub const FORGE_TOKEN_CREDENTIAL: &str = "forge-token";
pub const BRIDGE_TOKEN_CREDENTIAL: &str = "bridge-token";

/// Where a secret is read from: the configured file, else the systemd credential of that name.
/// Never the secret itself, so it can be named in messages.
pub fn secret_path(configured: Option<&Path>, credential: &str) -> Option<PathBuf> {
    configured.map(Path::to_path_buf).or_else(|| {
        std::env::var_os("CREDENTIALS_DIRECTORY").map(|dir| PathBuf::from(dir).join(credential))
    })
}

/// Every path-valued key (`*_dir`, `*_file`, `path`, `root`): nothing here expands `~` or a
/// variable, so one written that way would name a directory literally called `~`.
fn check_paths(
    table: &toml_edit::Table,
    at: &mut Vec<String>,
    source: &TomlSource,
    errors: &mut Vec<crate::error::InputError>,
) {
    for (key, item) in table.iter() {
        at.push(key.to_string());
        if let Some(t) = item.as_table() {
            check_paths(t, at, source, errors);
        } else if let Some(t) = item.as_inline_table() {
            check_paths(&t.clone().into_table(), at, source, errors);
        } else if let Some(value) = item.as_str() {
            let is_path =
                key.ends_with("_dir") || key.ends_with("_file") || key == "path" || key == "root";
            let problem = if !is_path {
                None
            } else if value.is_empty() {
                Some("is empty: give a path".to_string())
            } else if value.starts_with('~') {
                Some(format!(
                    "{value:?} starts with `~`, which is not expanded here: write the full path"
                ))
            } else if value.contains('$') {
                Some(format!(
                    "{value:?} holds `$`: variables are not expanded here, write the full path"
                ))
            } else {
                None
            };
            if let Some(message) = problem {
                let keys: Vec<&str> = at.iter().map(String::as_str).collect();
                errors.push(source.error_at(&keys, message));
            }
        }
        at.pop();
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    enrollment_file: PathBuf,
    state_dir: Option<PathBuf>,
    tests_dir: Option<PathBuf>,
    lock_wait: Option<super::values::Seconds>,
    forge: Option<RawForge>,
    #[serde(default)]
    bridge: RawBridge,
    #[serde(default)]
    deploy: super::deploy::RawDeploy,
    #[serde(default)]
    mirrors: super::mirrors::RawMirrors,
    #[serde(default)]
    sweep: super::sweep::RawSweep,
    #[serde(default)]
    disk: super::disk::RawDisk,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    probe: super::probe::RawProbe,
    #[serde(default)]
    hooks: Vec<RawHook>,
    #[serde(default)]
    status_page: RawStatusPage,
}

/// `[status_page]`: where every job that changes the ledger rewrites the status page.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStatusPage {
    dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    command: Vec<String>,
    #[serde(default)]
    events: Vec<String>,
    timeout: Option<super::values::Seconds>,
    #[serde(default)]
    pass_env: Vec<String>,
}

/// What a hook can be run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookEvent {
    Deploy,
    /// `--pull` or `--auto` fast-forwarded the checkout (then the deploy's own `deploy` event).
    DeployPulled,
    /// `--pull` or `--auto` met a HEAD that is not an ancestor of its upstream's.
    DeployRefusedDiverged,
    /// The commit to deploy carries no good signature by a key in `deploy.allowed_signers`.
    DeployRefusedUnsigned,
    Rollback,
    Promotion,
    CanonicalDemoted,
    SweepFailure,
    HealthChange,
    /// A recipe's queue turned green (docs/sweep.md, "Greenness").
    Green,
    /// ... turned not green: its degree and the tiers that broke.
    NotGreen,
    /// ... stayed not green, at another degree.
    DegreeChanged,
}

impl HookEvent {
    pub const ALL: [HookEvent; 12] = [
        HookEvent::Deploy,
        HookEvent::DeployPulled,
        HookEvent::DeployRefusedDiverged,
        HookEvent::DeployRefusedUnsigned,
        HookEvent::Rollback,
        HookEvent::Promotion,
        HookEvent::CanonicalDemoted,
        HookEvent::SweepFailure,
        HookEvent::HealthChange,
        HookEvent::Green,
        HookEvent::NotGreen,
        HookEvent::DegreeChanged,
    ];

    /// The name written in `[[hooks]] events` and sent as `event` on the hook's stdin.
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::Deploy => "deploy",
            HookEvent::DeployPulled => "deploy-pulled",
            HookEvent::DeployRefusedDiverged => "deploy-refused-diverged",
            HookEvent::DeployRefusedUnsigned => "deploy-refused-unsigned",
            HookEvent::Rollback => "rollback",
            HookEvent::Promotion => "promotion",
            HookEvent::CanonicalDemoted => "canonical-demoted",
            HookEvent::SweepFailure => "sweep-failure",
            HookEvent::HealthChange => "health-change",
            HookEvent::Green => "green",
            HookEvent::NotGreen => "not-green",
            HookEvent::DegreeChanged => "degree-changed",
        }
    }

    fn parse(name: &str) -> Option<HookEvent> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hook {
    /// argv, no shell; gets the event as JSON on stdin.
    pub command: Vec<String>,
    /// Events it wants; empty means all.
    pub events: Vec<HookEvent>,
    pub timeout: std::time::Duration,
    /// Variables of the agent's environment it gets beyond the base set; nothing else.
    pub pass_env: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    metrics_file: Option<PathBuf>,
    poll_repos_file: Option<PathBuf>,
    stale_after: Option<super::values::Seconds>,
    sweep_within: Option<super::values::Seconds>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForge {
    kind: ForgeKind,
    url: Option<String>,
    org: Option<String>,
    token_file: Option<PathBuf>,
    path: Option<PathBuf>,
    allow_insecure: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    Gitea,
    Local,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBridge {
    unit: Option<String>,
    token_file: Option<PathBuf>,
    report_url: Option<String>,
    report_timeout: Option<super::values::Seconds>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Forge {
    /// Gitea or Forgejo, REST API v1.
    /// With `token_file` unset, the systemd credential [`FORGE_TOKEN_CREDENTIAL`] is read.
    Gitea {
        url: String,
        org: String,
        token_file: Option<PathBuf>,
    },
    /// A directory of bare repositories `<path>/<recipe>.git`.
    Local { path: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bridge {
    pub unit: String,
    pub token_file: Option<PathBuf>,
    /// Where health reports are POSTed, with `Authorization: Bearer` from the token.
    pub report_url: Option<String>,
    /// Longest one delivery attempt may take.
    pub report_timeout: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub path: PathBuf,
    pub enrollment_file: PathBuf,
    pub state_dir: PathBuf,
    pub tests_dir: Option<PathBuf>,
    /// How long a job (mirror sync, sweep, gc) waits for another job's lock before it gives up
    /// with exit 4: timers that fire together take turns instead of one losing its run. Zero
    /// (the default for a person at a terminal) refuses at once; the NixOS module sets 30 minutes.
    pub lock_wait: std::time::Duration,
    pub forge: Option<Forge>,
    pub bridge: Bridge,
    pub deploy: super::deploy::DeploySettings,
    pub mirrors: super::mirrors::MirrorSettings,
    pub sweep: super::sweep::SweepSettings,
    pub disk: super::disk::Disk,
    pub health: Health,
    pub probe: super::probe::ProbeSettings,
    pub hooks: Vec<Hook>,
    /// `[status_page] dir`: rewritten as the last step of every job that changes the ledger.
    pub status_page: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Prometheus text file for node_exporter's textfile collector.
    pub metrics_file: Option<PathBuf>,
    /// Where the bridge's live POLL_REPOS is, when the bridge is not a local unit.
    pub poll_repos_file: Option<PathBuf>,
    /// A mirror not synced for this long is a warning.
    pub stale_after: std::time::Duration,
    /// The sweep's period plus a margin: no sweep done within it is a warning.
    pub sweep_within: Option<std::time::Duration>,
}

impl Config {
    /// Where the deploy journal lives: `[deploy] state_dir`, else `state_dir`.
    pub fn deploy_state_dir(&self) -> &Path {
        self.deploy.state_dir.as_deref().unwrap_or(&self.state_dir)
    }

    pub fn load(path: &Path) -> Result<Self, Invalid> {
        let source = TomlSource::read(path)?;
        Self::from_source(&source)
    }

    pub fn from_source(source: &TomlSource) -> Result<Self, Invalid> {
        let raw: RawConfig = source.deserialize().map_err(Invalid)?;
        // Absolute, so a path means the same thing whatever directory a child process runs in.
        let parent = source
            .path()
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
        let base = base.as_path();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let mut errors = Vec::new();
        check_paths(source.root(), &mut Vec::new(), source, &mut errors);
        if let Some(org) = raw.forge.as_ref().and_then(|f| f.org.as_deref()) {
            if let Err(e) = check_org_name(org) {
                errors.push(source.error_at(&["forge", "org"], e));
            }
        }

        let forge = raw
            .forge
            .and_then(|f| resolve_forge(f, source, &resolve, &mut errors));

        let unit = raw
            .bridge
            .unit
            .unwrap_or_else(|| DEFAULT_BRIDGE_UNIT.to_string());
        if let Err(e) = check_unit_name(&unit) {
            errors.push(source.error_at(&["bridge", "unit"], e));
        }
        let unit = with_service_suffix(&unit);
        if let Some(url) = &raw.bridge.report_url {
            check_report_url(url, source, &mut errors);
        }
        let deploy = super::deploy::resolve(raw.deploy, &unit, source, &resolve, &mut errors);
        let mirrors = super::mirrors::resolve(raw.mirrors, source, &mut errors);
        let sweep = super::sweep::resolve(raw.sweep, source, &resolve, &mut errors);
        let disk = super::disk::resolve(raw.disk, source, &resolve, &mut errors);
        let probe = super::probe::resolve(
            raw.probe,
            sweep.busy_check.as_ref(),
            source,
            &resolve,
            &mut errors,
        );
        let hooks = resolve_hooks(raw.hooks, source, &mut errors);

        if !errors.is_empty() {
            return Err(Invalid(errors));
        }
        Ok(Self {
            path: source.path().to_path_buf(),
            enrollment_file: resolve(&raw.enrollment_file),
            state_dir: resolve(
                raw.state_dir
                    .as_deref()
                    .unwrap_or(Path::new(DEFAULT_STATE_DIR)),
            ),
            tests_dir: raw.tests_dir.as_deref().map(resolve),
            lock_wait: raw.lock_wait.map_or(std::time::Duration::ZERO, |s| s.0),
            forge,
            bridge: Bridge {
                unit,
                token_file: raw.bridge.token_file.as_deref().map(resolve),
                report_url: raw.bridge.report_url.clone(),
                report_timeout: raw
                    .bridge
                    .report_timeout
                    .map_or(Duration::from_secs(10), |s| s.0),
            },
            deploy,
            mirrors,
            sweep,
            disk,
            health: health(&raw.health, &resolve),
            probe,
            hooks,
            status_page: raw.status_page.dir.as_deref().map(resolve),
        })
    }
}

/// `[health]`, its paths made absolute and its durations defaulted.
fn health(raw: &RawHealth, resolve: &dyn Fn(&Path) -> PathBuf) -> Health {
    Health {
        metrics_file: raw.metrics_file.as_deref().map(resolve),
        poll_repos_file: raw.poll_repos_file.as_deref().map(resolve),
        stale_after: raw
            .stale_after
            .map_or(Duration::from_secs(6 * 3600), |s| s.0),
        sweep_within: raw.sweep_within.map(|s| s.0),
    }
}

/// `[forge]`, checked for its kind: the keys it needs, and none it does not use.
fn resolve_forge(
    f: RawForge,
    source: &TomlSource,
    resolve: &dyn Fn(&Path) -> PathBuf,
    errors: &mut Vec<InputError>,
) -> Option<Forge> {
    let mut missing = |key: &str, v: bool| {
        if !v {
            errors.push(source.error_at(
                &["forge", key],
                format!("required when kind = {:?}", kind_name(f.kind)),
            ));
        }
        v
    };
    match f.kind {
        ForgeKind::Gitea => {
            let ok = missing("url", f.url.is_some()) & missing("org", f.org.is_some());
            if f.path.is_some() {
                errors.push(source.error_at(&["forge", "path"], "not used with kind = \"gitea\""));
            }
            if let Some(url) = &f.url {
                let web = url.starts_with("https://") || url.starts_with("http://");
                let checked = if web {
                    check_url(url, f.allow_insecure.unwrap_or(false))
                } else {
                    Err(format!("URL {url:?} must be https://"))
                };
                if let Err(e) = checked {
                    errors.push(source.error_at(&["forge", "url"], e));
                }
            }
            ok.then(|| Forge::Gitea {
                url: f.url.unwrap_or_default().trim_end_matches('/').to_string(),
                org: f.org.unwrap_or_default(),
                token_file: f.token_file.as_deref().map(&resolve),
            })
        }
        ForgeKind::Local => {
            let ok = missing("path", f.path.is_some());
            for (key, present) in [
                ("url", f.url.is_some()),
                ("org", f.org.is_some()),
                ("token_file", f.token_file.is_some()),
                ("allow_insecure", f.allow_insecure.is_some()),
            ] {
                if present {
                    errors.push(source.error_at(&["forge", key], "not used with kind = \"local\""));
                }
            }
            ok.then(|| Forge::Local {
                path: resolve(&f.path.unwrap_or_default()),
            })
        }
    }
}

/// `bridge.report_url`: an http(s) URL with a host, and no secret in it.
fn check_report_url(url: &str, source: &TomlSource, errors: &mut Vec<InputError>) {
    // Never echoed: a URL with user information carries a password.
    let authority = url
        .split("://")
        .nth(1)
        .unwrap_or_default()
        .split('/')
        .next();
    let message = if authority.is_some_and(|a| a.contains('@')) {
        Some("holds user information (a name or password): give the bridge's token in bridge.token_file")
    } else if url.contains('?') || url.contains('#') {
        Some("holds a query or fragment, where secrets hide: give the bridge's token in bridge.token_file")
    } else if super::deploy::check_http_url(url).is_err() {
        Some("must be http:// or https:// with a host")
    } else {
        None
    };
    if let Some(m) = message {
        errors.push(source.error_at(&["bridge", "report_url"], m));
    }
}

/// `[[hooks]]`: each names a program, and only events there are.
fn resolve_hooks(
    raw: Vec<RawHook>,
    source: &TomlSource,
    errors: &mut Vec<InputError>,
) -> Vec<Hook> {
    let mut hooks = Vec::new();
    for h in raw {
        if h.command.is_empty() {
            errors.push(source.error_at(&["hooks", "command"], "must name a program"));
        }
        let mut events = Vec::new();
        for name in &h.events {
            match HookEvent::parse(name) {
                Some(e) => events.push(e),
                None => errors.push(source.error_at(
                    &["hooks", "events"],
                    format!(
                        "{name:?} is not an event; known: {}",
                        HookEvent::ALL.map(HookEvent::as_str).join(", ")
                    ),
                )),
            }
        }
        let timeout = h
            .timeout
            .map_or(std::time::Duration::from_secs(30), |s| s.0);
        hooks.push(Hook {
            command: h.command,
            events,
            timeout,
            pass_env: h.pass_env,
        });
    }
    hooks
}

fn kind_name(kind: ForgeKind) -> &'static str {
    match kind {
        ForgeKind::Gitea => "gitea",
        ForgeKind::Local => "local",
    }
}

fn with_service_suffix(unit: &str) -> String {
    if unit.contains('.') && !unit.ends_with('.') {
        unit.to_string()
    } else {
        format!("{unit}.service")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Invalid> {
        let source = TomlSource::parse(Path::new("/etc/cc-ci/agent.toml"), text.to_string())?;
        Config::from_source(&source)
    }

    #[test]
    fn every_unknown_key_is_reported_each_at_its_line() {
        let text = "enrollment_file = \"e\"\ncolour = true\n\n[mirrors]\nconcurency = 8\ngit_timeout = \"5m\"\nretrys = 2\n";
        let Err(Invalid(errors)) = parse(text) else {
            panic!("accepted");
        };
        let found: Vec<(Option<usize>, &str)> =
            errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (Some(2), "colour"),
                (Some(5), "mirrors.concurency"),
                (Some(7), "mirrors.retrys")
            ],
            "{errors:?}"
        );
    }

    #[test]
    fn minimal_config_resolves_relative_paths() -> Result<(), Invalid> {
        let c = parse("enrollment_file = \"enrollment.toml\"\ntests_dir = \"/srv/tests\"\n")?;
        assert_eq!(c.enrollment_file, Path::new("/etc/cc-ci/enrollment.toml"));
        assert_eq!(c.state_dir, Path::new(DEFAULT_STATE_DIR));
        assert_eq!(c.tests_dir.as_deref(), Some(Path::new("/srv/tests")));
        assert_eq!(c.bridge.unit, DEFAULT_BRIDGE_UNIT);
        assert_eq!(c.forge, None);
        Ok(())
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("200G"), Ok(ByteSize(200 << 30)));
        assert_eq!(ByteSize::parse("1024"), Ok(ByteSize(1024)));
        assert_eq!(ByteSize::parse("3T"), Ok(ByteSize(3 << 40)));
        for bad in ["", "G", "1.5G", "10 G", "-1", "1g", "99999999999T"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_in_sections_are_errors() {
        let Err(Invalid(errors)) =
            parse("enrollment_file = \"e.toml\"\n[sweep]\ncommands = [\"x\"]\n")
        else {
            panic!("accepted")
        };
        assert_eq!(errors[0].line, Some(3));
        assert_eq!(errors[0].key, "sweep.commands");
    }

    #[test]
    fn forge_kinds() -> Result<(), Invalid> {
        let c = parse("enrollment_file = \"e\"\n[forge]\nkind = \"local\"\npath = \"mirrors\"\n")?;
        assert_eq!(
            c.forge,
            Some(Forge::Local {
                path: "/etc/cc-ci/mirrors".into()
            })
        );
        let Err(Invalid(errors)) =
            parse("enrollment_file = \"e\"\n[forge]\nkind = \"gitea\"\nurl = \"https://h\"\n")
        else {
            panic!("accepted")
        };
        // token_file may be absent (the systemd credential is used); org may not.
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].key, "forge.org");
        Ok(())
    }
}
