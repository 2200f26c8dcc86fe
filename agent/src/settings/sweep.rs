//! `[sweep]` in agent.toml: how `cc-ci-agent sweep` runs CI on new releases.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::deploy::{resolve_busy_check, BusyCheck, RawBusyCheck};
use super::source::TomlSource;
use super::values::Seconds;

/// Placeholders an argv template may use; anything else in braces is an error.
pub const PLACEHOLDERS: [&str; 7] = [
    "{recipe}",
    "{version}",
    "{commit}",
    "{mirror_url}",
    "{workdir}",
    "{base}",
    "{results}",
];

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSweep {
    command: Option<Vec<String>>,
    teardown: Option<Vec<String>>,
    timeout: Option<Seconds>,
    run_timeout: Option<Seconds>,
    canonical_export_dir: Option<PathBuf>,
    allow_prerelease: Option<bool>,
    busy_check: Option<RawBusyCheck>,
    #[serde(default)]
    pass_env: Vec<String>,
    #[serde(default)]
    credentials: Vec<String>,
    log_limit: Option<super::values::ByteSize>,
    tiers: Option<Vec<String>>,
    run_as: Option<String>,
    run_dir: Option<PathBuf>,
    tier_from: Option<TierFrom>,
    keeper_socket: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SweepSettings {
    /// The CI run, an argv template (no shell). `None`: the sweep cannot run.
    pub command: Option<Vec<String>>,
    /// Always run after the CI run, pass or fail.
    pub teardown: Option<Vec<String>>,
    /// Longest one recipe's CI run may take.
    pub timeout: Duration,
    /// Longest a whole sweep may take; recipes not reached are skipped.
    pub run_timeout: Duration,
    pub canonical_export_dir: Option<PathBuf>,
    pub allow_prerelease: bool,
    pub busy_check: Option<BusyCheck>,
    /// Variables of the agent's environment the CI command and teardown also get, beyond
    /// [`crate::process::BASE_ENV`]. Nothing else of the agent's environment reaches them.
    pub pass_env: Vec<String>,
    /// Credentials of the sweep unit the CI may read, by name; the forge and bridge tokens never.
    pub credentials: Vec<String>,
    /// How much of one CI run's output its log keeps; the last part is kept besides.
    pub log_limit: u64,
    /// The tiers every recipe's results must report green (an enrollment entry's `tiers`
    /// narrows it); `None`: a run is judged by its exit code alone.
    pub tiers: Option<Vec<String>>,
    /// The user recipe CI runs as, other than the agent's (docs/reliability.md); `None`: CI
    /// runs as the agent's user, which `health` says.
    pub run_as: Option<String>,
    /// Where each case's tier comes from, unless a recipe says otherwise.
    pub tier_from: TierFrom,
    /// Where each run gets its directory (`<run_dir>/<recipe>-<run>/`, holding `{workdir}` and
    /// `{results}`); `None`: `<state_dir>/sweep/runs`. With `run_as`, a directory that user can
    /// enter.
    pub run_dir: Option<PathBuf>,
    /// With `run_as`: where a keeper service listens (systemd's `cc-ci-keeper.socket`, one
    /// keeper per connection), so the sweep needs no root and CI runs in a unit of its own;
    /// `None`: a sweep started as root starts its own keeper (docs/reliability.md).
    pub keeper_socket: Option<PathBuf>,
}

/// Where a test case's tier comes from (docs/sweep.md, "Greenness"), for the host
/// (`[sweep] tier_from`) or a recipe (its enrollment entry's `tier_from`). Each file of results
/// is read by the same rule, whatever else is in the directory.
#[derive(
    schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TierFrom {
    /// pytest's results (its one suite is named `pytest`): the classname's first part; any
    /// other producer's: the outermost suite's name.
    #[default]
    Auto,
    /// The outermost `<testsuite>`'s name.
    Suite,
    /// The `classname`'s first dotted part (a case without one: its name's).
    Classname,
    /// The results file's name: `{results}/install.xml` is tier `install`.
    File,
}

/// The agent's own credentials: never handed to recipe CI.
pub const AGENT_CREDENTIALS: [&str; 2] = ["forge-token", "bridge-token"];

fn check_template(
    argv: &[String],
    key: &'static str,
    source: &TomlSource,
    errors: &mut Vec<crate::error::InputError>,
) {
    if argv.is_empty() {
        errors.push(source.error_at(&["sweep", key], "must name a program"));
    }
    for arg in argv {
        if let Some(unknown) = placeholders_in(arg)
            .into_iter()
            .find(|p| !PLACEHOLDERS.contains(&p.as_str()))
        {
            errors.push(source.error_at(
                &["sweep", key],
                format!(
                    "{arg:?} has an unknown placeholder {unknown}; known: {}",
                    PLACEHOLDERS.join(" ")
                ),
            ));
        }
    }
}

/// `{name}` with a lowercase name: what a placeholder looks like. Other braces (a shell's
/// `${VAR:-x}`, JSON) belong to the program and pass through untouched.
fn placeholders_in(arg: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = arg;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let name_len = after
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
            .count();
        if name_len > 0 && after[name_len..].starts_with('}') {
            found.push(format!("{{{}}}", &after[..name_len]));
        }
        rest = after;
    }
    found
}

/// What recipe CI is handed of the agent's: environment variables and credentials, by name;
/// never the agent's own tokens.
fn check_what_ci_gets(
    raw: &RawSweep,
    source: &TomlSource,
    errors: &mut Vec<crate::error::InputError>,
) {
    for name in &raw.pass_env {
        let valid = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !valid {
            errors.push(source.error_at(
                &["sweep", "pass_env"],
                format!("{name:?} is not an environment variable name"),
            ));
        } else if name == "CREDENTIALS_DIRECTORY" {
            errors.push(source.error_at(
                &["sweep", "pass_env"],
                "CREDENTIALS_DIRECTORY holds the agent's own tokens: name the credentials CI may \
                 read in sweep.credentials instead",
            ));
        }
    }
    for name in &raw.credentials {
        if AGENT_CREDENTIALS.contains(&name.as_str()) {
            errors.push(source.error_at(
                &["sweep", "credentials"],
                format!("{name:?} is the agent's own token and is never handed to recipe CI"),
            ));
        } else if name.is_empty() || name.contains('/') || name.starts_with('.') {
            errors.push(source.error_at(
                &["sweep", "credentials"],
                format!("{name:?} is not a credential name"),
            ));
        }
    }
}

/// `run_as`: a user name, never root.
fn check_run_as(user: &str, source: &TomlSource, errors: &mut Vec<crate::error::InputError>) {
    let valid = !user.is_empty()
        && user.len() <= 32
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !user.starts_with('-');
    if !valid {
        errors.push(source.error_at(&["sweep", "run_as"], format!("{user:?} is not a user name")));
    } else if user == "root" {
        errors.push(source.error_at(
            &["sweep", "run_as"],
            "recipe CI is untrusted code: never root; name a user of its own",
        ));
    }
}

pub(super) fn resolve(
    raw: RawSweep,
    source: &TomlSource,
    abs: &dyn Fn(&Path) -> PathBuf,
    errors: &mut Vec<crate::error::InputError>,
) -> SweepSettings {
    if let Some(argv) = &raw.command {
        check_template(argv, "command", source, errors);
    }
    if let Some(argv) = &raw.teardown {
        check_template(argv, "teardown", source, errors);
    }
    let timeout = raw.timeout.map_or(Duration::from_secs(2 * 3600), |s| s.0);
    let run_timeout = raw
        .run_timeout
        .map_or(Duration::from_secs(24 * 3600), |s| s.0);
    if timeout.is_zero() || run_timeout < timeout {
        errors.push(source.error_at(
            &["sweep", "run_timeout"],
            "must be at least sweep.timeout, and both more than zero",
        ));
    }
    check_what_ci_gets(&raw, source, errors);
    if let Some(Err(e)) = raw.tiers.as_deref().map(super::rules::check_tiers) {
        errors.push(source.error_at(&["sweep", "tiers"], e));
    }
    if let Some(user) = &raw.run_as {
        check_run_as(user, source, errors);
    }
    if let Some(socket) = &raw.keeper_socket {
        if raw.run_as.is_none() {
            errors.push(source.error_at(
                &["sweep", "keeper_socket"],
                "a keeper runs CI as sweep.run_as, which is not set",
            ));
        } else if !socket.is_absolute() {
            errors.push(source.error_at(
                &["sweep", "keeper_socket"],
                format!("{} is not an absolute path", socket.display()),
            ));
        }
    }
    let log_limit = raw.log_limit.map_or(64 << 20, |b| b.0);
    if log_limit < 4096 {
        errors.push(source.error_at(&["sweep", "log_limit"], "must be at least 4 KiB"));
    }
    let program = |argv: Option<Vec<String>>| {
        argv.map(|mut a| {
            // A path with a slash is relative to this file, like every path here; a bare name is
            // looked up on PATH.
            if let Some(first) = a.first_mut() {
                if first.contains('/') && !first.starts_with('/') {
                    *first = abs(Path::new(first.as_str()))
                        .to_string_lossy()
                        .into_owned();
                }
            }
            a
        })
    };
    SweepSettings {
        command: program(raw.command),
        teardown: program(raw.teardown),
        pass_env: raw.pass_env,
        credentials: raw.credentials,
        log_limit,
        tiers: raw.tiers,
        run_as: raw.run_as,
        run_dir: raw.run_dir.as_deref().map(abs),
        tier_from: raw.tier_from.unwrap_or_default(),
        keeper_socket: raw.keeper_socket,
        timeout,
        run_timeout,
        canonical_export_dir: raw.canonical_export_dir.as_deref().map(abs),
        allow_prerelease: raw.allow_prerelease.unwrap_or(false),
        busy_check: raw
            .busy_check
            .and_then(|b| resolve_busy_check(b, "sweep", source, abs, errors)),
    }
}
