//! A run's verdict, from its exit status and its results: greenness as a degree, from 0 (every
//! tier expected of the recipe green) to 1 (none), with "not recorded" counting as not green.
//! Pure: the sweep reads the results, this says what they mean (docs/sweep.md, "Greenness").

use super::junit::{Counts, Tiers, Unreadable};
use crate::ledger::{RunResult, TierRow};

/// What a run gave, ready for the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `green`, `red` or `error`.
    pub result: RunResult,
    pub degree: f64,
    pub tiers: Vec<TierRow>,
    pub detail: String,
}

/// How the CI command ended: `Ok` for exit 0, else what is said of it ("exit status: 1",
/// "timed out after 1h").
pub type Exited<'a> = Result<(), &'a str>;

/// The verdict of a run whose command ended as `exited`, with `results` read from `{results}`,
/// for a recipe expected to report `expected` (none: judged by its exit code, as before tiers).
pub fn judge(
    expected: Option<&[String]>,
    exited: Exited<'_>,
    results: Result<Tiers, Unreadable>,
) -> Verdict {
    let Some(expected) = expected else {
        return by_exit_code(exited, results.unwrap_or_default());
    };
    let reported = match results {
        Ok(tiers) => tiers,
        Err(why) => {
            return Verdict {
                result: RunResult::Error,
                degree: 1.0,
                tiers: Vec::new(),
                detail: format!("the results could not be read: {why}"),
            }
        }
    };
    let tiers = rows(expected, &reported);
    let not_green: Vec<&TierRow> = tiers.iter().filter(|t| t.expected && !t.green).collect();
    #[allow(clippy::cast_precision_loss)]
    let degree = not_green.len() as f64 / expected.len().max(1) as f64;
    match (not_green.is_empty(), exited) {
        (true, Ok(())) => Verdict {
            result: RunResult::Green,
            degree: 0.0,
            detail: format!("every tier green: {}", expected.join(", ")),
            tiers,
        },
        (true, Err(how)) => Verdict {
            result: RunResult::Error,
            degree: 1.0,
            detail: format!(
                "CI ended with {how} though every tier's results are green: the results do not \
                 tell the whole run, so it is not judged"
            ),
            tiers,
        },
        (false, exited) => {
            let broken: Vec<String> = not_green.iter().map(|t| t.why_not_green()).collect();
            let how = exited
                .err()
                .map(|h| format!(" (CI ended with {h})"))
                .unwrap_or_default();
            Verdict {
                result: RunResult::Red,
                degree,
                detail: format!(
                    "degree {}: {}{how}",
                    crate::ledger::degree_shown(degree),
                    broken.join("; ")
                ),
                tiers,
            }
        }
    }
}

/// Today's verdict for a host without `tiers`: exit 0 is green. Whatever results there are
/// are recorded beside it, not counted.
fn by_exit_code(exited: Exited<'_>, reported: Tiers) -> Verdict {
    let tiers = reported
        .iter()
        .map(|(name, c)| row(name, false, Some(c)))
        .collect();
    match exited {
        Ok(()) => Verdict {
            result: RunResult::Green,
            degree: 0.0,
            tiers,
            detail: "CI exited 0".into(),
        },
        Err(how) => Verdict {
            result: RunResult::Red,
            degree: 1.0,
            tiers,
            detail: format!("CI failed ({how})"),
        },
    }
}

/// A row per expected tier (reported or not), then one per tier reported beyond them.
fn rows(expected: &[String], reported: &Tiers) -> Vec<TierRow> {
    let mut out: Vec<TierRow> = expected
        .iter()
        .map(|name| row(name, true, reported.get(name)))
        .collect();
    out.extend(
        reported
            .iter()
            .filter(|(name, _)| !expected.contains(name))
            .map(|(name, c)| row(name, false, Some(c))),
    );
    out
}

fn row(name: &str, expected: bool, counts: Option<&Counts>) -> TierRow {
    let c = counts.cloned().unwrap_or_default();
    TierRow {
        tier: name.to_string(),
        expected,
        reported: counts.is_some(),
        green: counts.is_some() && c.green(),
        tests: c.tests,
        failures: c.failures,
        errors: c.errors,
        skipped: c.skipped,
        seconds: c.seconds,
        first_failure: c.first_failure.as_ref().map(|f| f.test.clone()),
        first_message: c.first_failure.map(|f| f.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::junit::FirstFailure;

    fn tiers(list: &[(&str, u64, u64)]) -> Tiers {
        list.iter()
            .map(|(name, tests, failures)| {
                let c = Counts {
                    tests: *tests,
                    failures: *failures,
                    first_failure: (*failures > 0).then(|| FirstFailure {
                        test: "t::test_restore".into(),
                        message: "boom".into(),
                    }),
                    ..Counts::default()
                };
                (name.to_string(), c)
            })
            .collect()
    }

    fn four() -> Vec<String> {
        ["install", "upgrade", "backup", "functional"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn one_red_tier_of_four_is_a_quarter_and_names_its_first_failure() {
        let got = tiers(&[
            ("install", 2, 0),
            ("upgrade", 1, 0),
            ("backup", 3, 1),
            ("functional", 5, 0),
        ]);
        let v = judge(Some(&four()), Err("exit status: 1"), Ok(got));
        assert_eq!((v.result, v.degree), (RunResult::Red, 0.25));
        assert_eq!(
            crate::ledger::tiers_line(&v.tiers),
            "install ✓ upgrade ✓ backup ✗ (t::test_restore) functional ✓"
        );
    }

    #[test]
    fn a_tier_never_reported_is_not_green_and_said() {
        let got = tiers(&[("install", 2, 0), ("upgrade", 1, 0), ("backup", 3, 0)]);
        let v = judge(Some(&four()), Ok(()), Ok(got));
        assert_eq!((v.result, v.degree), (RunResult::Red, 0.25));
        assert!(
            v.detail.contains("functional never reported"),
            "{}",
            v.detail
        );
    }

    #[test]
    fn a_failed_exit_with_every_tier_green_and_unreadable_results_are_errors() {
        let got = tiers(&[
            ("install", 1, 0),
            ("upgrade", 1, 0),
            ("backup", 1, 0),
            ("functional", 1, 0),
        ]);
        assert_eq!(
            judge(Some(&four()), Err("exit status: 1"), Ok(got.clone())).result,
            RunResult::Error
        );
        assert_eq!(
            judge(Some(&four()), Ok(()), Ok(got)).result,
            RunResult::Green
        );
        let v = judge(
            Some(&four()),
            Ok(()),
            Err(Unreadable("a.xml:3: bad".into())),
        );
        assert_eq!((v.result, v.degree), (RunResult::Error, 1.0));
    }

    #[test]
    fn skipped_tests_do_not_make_a_tier_green() {
        let mut got = tiers(&[("install", 1, 0)]);
        got.get_mut("install").unwrap().skipped = 1;
        let only = vec!["install".to_string()];
        let v = judge(Some(&only), Ok(()), Ok(got));
        assert_eq!((v.result, v.degree), (RunResult::Red, 1.0));
        assert!(v.detail.contains("install ran no test"), "{}", v.detail);
    }

    #[test]
    fn without_tiers_the_exit_code_decides_as_before() {
        assert_eq!(
            judge(None, Ok(()), Err(Unreadable("none".into()))).result,
            RunResult::Green
        );
        let v = judge(None, Err("exit status: 2"), Ok(Tiers::new()));
        assert_eq!((v.result, v.degree), (RunResult::Red, 1.0));
    }
}
