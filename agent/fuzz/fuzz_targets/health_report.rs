//! The health report: whatever the reasons and verdicts, the JSON encodes and decodes back to the
//! same report, and the Prometheus text has one well-formed sample per line.
#![no_main]

use cc_ci_agent::health::{metrics, Check, RecipeHealth, Report, Status, Verdict, SCHEMA};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 4] = ["mirror", "tests", "bridge", "disk"];

fn verdict(b: u8) -> Verdict {
    match b % 3 {
        0 => Verdict::Healthy,
        1 => Verdict::Degraded,
        _ => Verdict::Failed,
    }
}

fn status(b: u8) -> Status {
    match b % 4 {
        0 => Status::Ok,
        1 => Status::Unknown,
        2 => Status::Warn,
        _ => Status::Fail,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\u{1f}');
    let mut recipes = Vec::new();
    while let (Some(name), Some(reason)) = (parts.next(), parts.next()) {
        let b = name.bytes().next().unwrap_or(0);
        recipes.push(RecipeHealth {
            recipe: name.to_string(),
            enrolled: b % 2 == 0,
            verdict: (b % 5 != 0).then(|| verdict(b)),
            checks: vec![Check {
                name: NAMES[b as usize % 4],
                status: status(b / 3),
                reason: reason.to_string(),
            }],
            greenness: (b % 3 == 0).then(|| cc_ci_agent::health::Greenness {
                tag: name.to_string(),
                result: cc_ci_agent::ledger::RunResult::Red,
                degree: f64::from(b % 5) / 4.0,
                failing: vec![cc_ci_agent::health::FailingTier {
                    tier: reason.to_string(),
                    reason: reason.to_string(),
                }],
            }),
        });
    }
    let report = Report {
        schema: SCHEMA,
        id: None,
        seq: Some(1),
        generated_at: "2026-11-22T00:00:00Z".into(),
        verdict: verdict(data.len() as u8),
        host: Vec::new(),
        recipes,
    };
    let json = serde_json::to_string(&report).expect("a report always encodes");
    let back: serde_json::Value = serde_json::from_str(&json).expect("and decodes");
    let recipes = back["recipes"].as_array().expect("recipes");
    assert_eq!(recipes.len(), report.recipes.len());
    for (r, v) in report.recipes.iter().zip(recipes) {
        assert_eq!(v["recipe"], r.recipe.as_str());
        assert_eq!(v["checks"][0]["reason"], r.checks[0].reason.as_str());
    }
    for line in metrics(&report).lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        assert!(value == "0" || value == "1", "{line:?}");
        let labels = series.split_once('{').expect("labels").1;
        assert!(labels.ends_with('}'), "{line:?}");
        // Quotes inside label values are escaped: unescaped quotes come in pairs.
        let unescaped = labels.replace("\\\\", "").replace("\\\"", "");
        assert_eq!(unescaped.matches('"').count() % 2, 0, "{line:?}");
        assert!(!labels.contains('\n'));
    }
});
