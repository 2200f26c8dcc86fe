//! Is the host healthy after an activation? Retried until every check passes or time is up, so a
//! service that needs a few seconds to come up is not a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::machine::Machine;
use crate::clock::Clock;
use crate::health::Verdict as HealthVerdict;
use crate::http;
use crate::process::Cmd;
use crate::settings::config::Config;
use crate::settings::deploy::{CheckProbe, UserCheck};
use crate::settings::enrollment::Enrollment;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl CheckResult {
    fn new(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok,
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub ok: bool,
    pub attempts: u32,
    pub elapsed_ms: u128,
    pub results: Vec<CheckResult>,
}

impl Verdict {
    pub fn failing(&self) -> Vec<&CheckResult> {
        self.results.iter().filter(|r| !r.ok).collect()
    }

    /// "bridge POLL_REPOS: ...; check web: HTTP 502" for messages.
    pub fn summary(&self) -> String {
        self.failing()
            .iter()
            .map(|r| format!("{}: {}", r.name, r.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What the host must look like after activating a system.
pub struct Expectations<'a> {
    pub config_path: &'a Path,
    pub failed_before: &'a BTreeSet<String>,
    /// Each enrolled recipe's health verdict before the deploy, when it could be told.
    pub health_before: Option<&'a BTreeMap<String, HealthVerdict>>,
    /// What the rounds wait on, and the health comparison's ages.
    pub clock: &'a Clock,
}

/// One round of every check.
pub fn once(host: &dyn Machine, exp: &Expectations<'_>) -> Vec<CheckResult> {
    // Activation may have replaced agent.toml: read it again, as the new system wrote it.
    let config = Config::load(exp.config_path);
    let mut results = Vec::new();
    let (required, bridge, checks) = match &config {
        Ok(c) => (
            c.deploy.required_units.clone(),
            Some(c.bridge.unit.clone()),
            c.deploy.checks.clone(),
        ),
        Err(e) => {
            results.push(CheckResult::new(
                "agent configuration",
                false,
                e.to_string(),
            ));
            (Vec::new(), None, Vec::new())
        }
    };
    for unit in &required {
        let result = match host.unit_state(unit) {
            Ok(state) if state == "active" => {
                CheckResult::new(format!("unit {unit}"), true, "active")
            }
            Ok(state) => CheckResult::new(format!("unit {unit}"), false, state),
            Err(e) => CheckResult::new(format!("unit {unit}"), false, e.to_string()),
        };
        results.push(result);
    }
    results.push(match host.failed_units() {
        Ok(now) => {
            let new: Vec<&String> = now.difference(exp.failed_before).collect();
            let old = now.intersection(exp.failed_before).count();
            let note = if old > 0 {
                format!(" ({old} failing before and still failing)")
            } else {
                String::new()
            };
            if new.is_empty() {
                CheckResult::new("failed units", true, format!("none new{note}"))
            } else {
                let names = new
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                CheckResult::new(
                    "failed units",
                    false,
                    format!("newly failed: {names}{note}"),
                )
            }
        }
        Err(e) => CheckResult::new("failed units", false, e.to_string()),
    });
    if let (Ok(c), Some(bridge)) = (&config, bridge) {
        results.push(bridge_poll_repos(host, &bridge, &c.enrollment_file));
    }
    for check in &checks {
        results.push(user_check(check));
    }
    if let (Ok(c), Some(before)) = (&config, exp.health_before) {
        results.push(health_regressions(c, exp.clock, before));
    }
    results
}

/// A recipe failed now that was not failed before the deploy is a regression.
fn health_regressions(
    config: &Config,
    clock: &Clock,
    before: &BTreeMap<String, HealthVerdict>,
) -> CheckResult {
    match crate::health::build(config, clock) {
        Ok(report) => {
            let now = crate::health::verdicts(&report);
            let regressed: Vec<&str> = now
                .iter()
                .filter(|(r, v)| {
                    **v == HealthVerdict::Failed && before.get(*r) != Some(&HealthVerdict::Failed)
                })
                .map(|(r, _)| r.as_str())
                .collect();
            if regressed.is_empty() {
                CheckResult::new("recipe health", true, "no recipe newly failed")
            } else {
                CheckResult::new(
                    "recipe health",
                    false,
                    format!("newly failed: {}", regressed.join(", ")),
                )
            }
        }
        Err(e) => CheckResult::new("recipe health", false, format!("{e:#}")),
    }
}

fn bridge_poll_repos(host: &dyn Machine, bridge: &str, enrollment_file: &Path) -> CheckResult {
    let name = "bridge POLL_REPOS";
    let expected = match Enrollment::load(enrollment_file) {
        Ok(e) => e.poll_repos(),
        Err(e) => return CheckResult::new(name, false, format!("enrollment: {e}")),
    };
    match host.unit_environment(bridge) {
        Ok(env) => match env.get("POLL_REPOS") {
            Some(live) if *live == expected => {
                let n = if expected.is_empty() {
                    0
                } else {
                    expected.split(',').count()
                };
                CheckResult::new(
                    name,
                    true,
                    format!("{bridge} polls the {n} enrolled recipes"),
                )
            }
            Some(live) => CheckResult::new(
                name,
                false,
                format!("{bridge} runs with POLL_REPOS={live:?}, the enrollment says {expected:?}"),
            ),
            None => CheckResult::new(name, false, format!("{bridge} runs without POLL_REPOS")),
        },
        Err(e) => CheckResult::new(name, false, e.to_string()),
    }
}

fn user_check(check: &UserCheck) -> CheckResult {
    let name = format!("check {:?}", check.name);
    match &check.probe {
        CheckProbe::Url(url) => match http::get(url, check.timeout) {
            Ok(a) if (200..300).contains(&a.status) => {
                CheckResult::new(name, true, format!("HTTP {}", a.status))
            }
            Ok(a) => CheckResult::new(name, false, format!("{url} answered HTTP {}", a.status)),
            Err(e) => CheckResult::new(name, false, format!("{url}: {e}")),
        },
        CheckProbe::Command(argv) => {
            let Some((program, args)) = argv.split_first() else {
                return CheckResult::new(name, false, "empty command");
            };
            match Cmd::new(program)
                .args(args)
                .clean_env(&[])
                .timeout(check.timeout)
                .run()
            {
                Ok(_) => CheckResult::new(name, true, "exit 0"),
                Err(e) => CheckResult::new(name, false, e.to_string()),
            }
        }
    }
}

/// Rounds of [`once`] until all pass or `timeout` has passed since the first.
pub fn until_ok(
    host: &dyn Machine,
    exp: &Expectations<'_>,
    timeout: Duration,
    interval: Duration,
) -> Verdict {
    let clock = exp.clock;
    let start = clock.now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let results = once(host, exp);
        let ok = results.iter().all(|r| r.ok);
        if ok || clock.elapsed(start) + interval > timeout {
            return Verdict {
                ok,
                attempts,
                elapsed_ms: clock.elapsed(start).as_millis(),
                results,
            };
        }
        tracing::info!(attempt = attempts, "verification not yet passing; retrying");
        clock.sleep(interval);
    }
}
