//! Which recipes a probe run proves, and why. Pure: from the enrollment, the journal's last
//! judgement of each recipe and the fingerprint of what a proof depends on.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::json;

use crate::ledger::{ProbeOutcome, ProbeRow};
use crate::settings::enrollment::Recipe;

/// What a proof of one recipe rests on: its enrollment entry, its mirror, and the bridge that
/// answers for it. A proof of another fingerprint proves nothing about this one.
pub struct Fingerprint {
    pub recipe: serde_json::Value,
    pub mirror: serde_json::Value,
    pub bridge: serde_json::Value,
}

impl Fingerprint {
    pub fn text(&self) -> String {
        json!({ "enrollment": self.recipe, "mirror": self.mirror, "bridge": self.bridge })
            .to_string()
    }

    /// The parts that differ from an earlier fingerprint, as words; empty when none does.
    pub fn changed_since(&self, earlier: &str) -> Vec<&'static str> {
        let then: serde_json::Value = serde_json::from_str(earlier).unwrap_or_default();
        [
            ("enrollment", "the enrollment", &self.recipe),
            ("mirror", "the mirror", &self.mirror),
            ("bridge", "the bridge", &self.bridge),
        ]
        .into_iter()
        .filter(|(key, _, now)| then.get(key) != Some(now))
        .map(|(_, words, _)| words)
        .collect()
    }
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "why", rename_all = "kebab-case")]
pub enum Choice {
    /// Probed now: never proven, stale, changed, stopped last time, or named.
    Probe { reason: String },
    /// Proven recently enough, of the same fingerprint: left alone.
    Fresh { proven_at: String },
    /// `probe = false` in the enrollment.
    OptedOut,
}

fn age(rfc3339: &str, now: SystemTime) -> Option<Duration> {
    let then = humantime::parse_rfc3339(rfc3339).ok()?;
    now.duration_since(then).ok()
}

/// Whether `recipe` is probed by this run. `named`: the operator asked for it by name.
pub fn choose(
    recipe: &Recipe,
    named: bool,
    last: Option<&ProbeRow>,
    fingerprint: &Fingerprint,
    max_age: Duration,
    now: SystemTime,
) -> Choice {
    if !recipe.probe {
        return Choice::OptedOut;
    }
    let probe = |reason: String| Choice::Probe { reason };
    if named {
        return probe("asked for by name".into());
    }
    let Some(last) = last else {
        return probe("never probed".into());
    };
    let at = last.finished_at.clone().unwrap_or_default();
    if last.outcome == Some(ProbeOutcome::Stopped) {
        let stage = last.stopped_at.as_deref().unwrap_or("a stage");
        return probe(format!("the last probe ({at}) stopped at {stage}"));
    }
    let changed = fingerprint.changed_since(&last.fingerprint);
    if !changed.is_empty() {
        return probe(format!(
            "{} changed since it was proven ({at})",
            changed.join(" and ")
        ));
    }
    match age(&at, now) {
        Some(a) if a > max_age => probe(format!(
            "proven {} ago ({at}), more than probe.max_age",
            humantime::format_duration(Duration::from_secs(a.as_secs()))
        )),
        _ => Choice::Fresh { proven_at: at },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::enrollment::TestPolicy;

    fn recipe(probe: bool) -> Recipe {
        Recipe {
            name: "plausible".into(),
            enrolled: true,
            canonical: false,
            upgrade_base: None,
            tests: TestPolicy::Required,
            upstream: "https://git.coopcloud.tech/coop-cloud/plausible".into(),
            branch: "main".into(),
            probe,
            tiers: None,
            tier_from: None,
        }
    }

    fn fingerprint(bridge: &str) -> Fingerprint {
        Fingerprint {
            recipe: json!({ "branch": "main" }),
            mirror: json!("org/plausible"),
            bridge: json!({ "unit": bridge }),
        }
    }

    fn proven(days_ago: u64, fingerprint: &Fingerprint) -> ProbeRow {
        let at = SystemTime::now() - Duration::from_secs(days_ago * 86400);
        ProbeRow {
            id: 1,
            recipe: "plausible".into(),
            started_at: String::new(),
            finished_at: Some(humantime::format_rfc3339_seconds(at).to_string()),
            outcome: Some(ProbeOutcome::Proven),
            stopped_at: None,
            fingerprint: fingerprint.text(),
            pull: Some(1),
            head: None,
            comment_id: None,
            commented_at: None,
            picked_up_at: None,
            build_started_at: None,
            reported_at: None,
            ci_state: Some("success".into()),
            evidence: json!([]),
            detail: None,
        }
    }

    #[test]
    fn a_fresh_proof_of_the_same_fingerprint_is_left_alone_and_nothing_else_is() {
        let now = SystemTime::now();
        let month = Duration::from_secs(30 * 86400);
        let fp = fingerprint("cc-ci-bridge.service");
        let pick = |named, last: Option<&ProbeRow>, fp: &Fingerprint| {
            choose(&recipe(true), named, last, fp, month, now)
        };
        assert!(matches!(pick(false, None, &fp), Choice::Probe { .. }));
        let fresh = proven(3, &fp);
        assert!(matches!(
            pick(false, Some(&fresh), &fp),
            Choice::Fresh { .. }
        ));
        assert!(matches!(
            pick(true, Some(&fresh), &fp),
            Choice::Probe { .. }
        ));
        let old = proven(31, &fp);
        assert!(
            matches!(pick(false, Some(&old), &fp), Choice::Probe { reason } if reason.contains("max_age"))
        );
        let moved = fingerprint("other-bridge.service");
        assert!(matches!(
            pick(false, Some(&fresh), &moved),
            Choice::Probe { reason } if reason.starts_with("the bridge changed")
        ));
        let mut stopped = fresh.clone();
        stopped.outcome = Some(ProbeOutcome::Stopped);
        stopped.stopped_at = Some("picked-up".into());
        assert!(
            matches!(pick(false, Some(&stopped), &fp), Choice::Probe { reason } if reason.contains("picked-up"))
        );
        assert_eq!(
            choose(&recipe(false), true, None, &fp, month, now),
            Choice::OptedOut
        );
    }
}
