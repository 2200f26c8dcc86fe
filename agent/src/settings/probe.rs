//! `[probe]` in agent.toml: how `cc-ci-agent probe` proves that `!testme` on a recipe's mirror
//! starts CI and reports back (docs/probe.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::deploy::{resolve_busy_check, resolve_drone, BusyCheck, DroneSettings, RawBusyCheck};
use super::source::TomlSource;
use super::values::Seconds;

pub const DEFAULT_COMMENT: &str = "!testme";
/// What Drone names its commit statuses unless `DRONE_STATUS_NAME` says otherwise
/// (service/status/util.go, `createLabel`); a build started through its API is a "custom" event,
/// whose status carries the name alone.
pub const DEFAULT_CI_CONTEXT: &str = "continuous-integration/drone";

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    comment: Option<String>,
    timeout: Option<Seconds>,
    max_age: Option<Seconds>,
    poll_interval: Option<Seconds>,
    min_interval: Option<Seconds>,
    ci_context: Option<String>,
    bridge_login: Option<String>,
    drone: Option<super::deploy::RawDrone>,
    busy_check: Option<RawBusyCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeSettings {
    /// The trigger the bridge answers, posted as the comment's first line.
    pub comment: String,
    /// Longest one recipe's probe waits for its three stages.
    pub timeout: Duration,
    /// A proof older than this is stale: the recipe is probed again.
    pub max_age: Duration,
    /// How often the forge (and Drone) are asked while a probe waits.
    pub poll_interval: Duration,
    /// The least time between two probe comments on the forge, across runs: the rate limit.
    pub min_interval: Duration,
    /// The commit status context the CI sets on a bridge's build, matched exactly; one ending
    /// in `*` is a prefix.
    pub ci_context: String,
    /// The bridge's forge user: when set, only its reactions and replies count as picked up.
    pub bridge_login: Option<String>,
    /// When set, "a build started" is read from Drone's builds of the repository.
    pub drone: Option<DroneSettings>,
    /// `[probe] busy_check`, else `[sweep] busy_check`: no probe while CI is busy.
    pub busy_check: Option<BusyCheck>,
}

pub(super) fn resolve(
    raw: RawProbe,
    sweep_busy: Option<&BusyCheck>,
    source: &TomlSource,
    abs: &dyn Fn(&Path) -> PathBuf,
    errors: &mut Vec<crate::error::InputError>,
) -> ProbeSettings {
    let at = |key: &'static str| ["probe", key];
    let comment = raw.comment.unwrap_or_else(|| DEFAULT_COMMENT.to_string());
    if comment.trim().is_empty() || comment.contains(['\n', '\r']) {
        errors.push(source.error_at(
            &at("comment"),
            "must be one non-empty line: the trigger the bridge answers, such as \"!testme\"",
        ));
    }
    let secs = |v: Option<Seconds>, default: u64| v.map_or(Duration::from_secs(default), |s| s.0);
    let timeout = secs(raw.timeout, 15 * 60);
    let poll_interval = secs(raw.poll_interval, 10);
    for (key, value) in [("timeout", timeout), ("poll_interval", poll_interval)] {
        if value.is_zero() {
            errors.push(source.error_at(&at(key), "must be more than zero"));
        }
    }
    let ci_context = raw
        .ci_context
        .unwrap_or_else(|| DEFAULT_CI_CONTEXT.to_string());
    if ci_context.trim().is_empty() {
        errors.push(source.error_at(&at("ci_context"), "must not be empty"));
    }
    if let Some(login) = &raw.bridge_login {
        if let Err(e) = super::rules::check_org_name(login) {
            errors.push(source.error_at(&at("bridge_login"), format!("not a user name: {e}")));
        }
    }
    let drone = raw
        .drone
        .and_then(|d| resolve_drone(d, &["probe", "drone"], source, abs, errors));
    let busy_check = match raw.busy_check {
        Some(b) => resolve_busy_check(b, "probe", source, abs, errors),
        None => sweep_busy.cloned(),
    };
    ProbeSettings {
        comment,
        timeout,
        max_age: secs(raw.max_age, 30 * 24 * 3600),
        poll_interval,
        min_interval: secs(raw.min_interval, 120),
        ci_context,
        bridge_login: raw.bridge_login,
        drone,
        busy_check,
    }
}
