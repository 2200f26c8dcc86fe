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

/// How the CI command ended: `Ok` for exit 0, else how it ended and its output's last line.
pub type Exited<'a> = Result<(), Ended<'a>>;

/// A CI command that did not exit 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended<'a> {
    /// "exit status: 1", "timed out after 1h".
    pub status: &'a str,
    /// The last line of its output, or nothing.
    pub said: &'a str,
}

impl std::fmt::Display for Ended<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.said {
            "" => write!(f, "{}", self.status),
            said => write!(f, "{}: {said}", self.status),
        }
    }
}

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
    let mut tiers = rows(expected, &reported);
    let all_green = tiers.iter().all(|t| !t.judged() || t.green);
    if let (Err(how), true) = (exited, all_green) {
        // Results all green beside a failed command: a teardown that failed, a crash after the
        // results were written. Not a row of ticks beside a failed command: the command is a
        // tier of its own, not green, and the run is red (a verdict, not retried).
        tiers.insert(expected.len(), exit_row(how));
    }
    let judged = tiers.iter().filter(|t| t.judged()).count();
    let not_green: Vec<&TierRow> = tiers.iter().filter(|t| t.judged() && !t.green).collect();
    #[allow(clippy::cast_precision_loss)]
    let degree = not_green.len() as f64 / judged.max(1) as f64;
    if not_green.is_empty() {
        return Verdict {
            result: RunResult::Green,
            degree: 0.0,
            detail: format!("every tier green: {}", expected.join(", ")),
            tiers,
        };
    }
    let broken: Vec<String> = not_green.iter().map(|t| t.why_not_green()).collect();
    let how = match exited {
        Err(how) if all_green => {
            format!(": every tier's results are green, but CI ended with {how}")
        }
        Err(how) => format!(" (CI ended with {how})"),
        Ok(()) => String::new(),
    };
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

/// The row that stands for the CI command when it failed although every tier's results are
/// green. Its name cannot be a tier's: a tier name does not start with `(`.
pub const EXIT_TIER: &str = "(CI)";

fn exit_row(how: Ended<'_>) -> TierRow {
    TierRow {
        tier: EXIT_TIER.to_string(),
        expected: true,
        reported: true,
        green: false,
        tests: 0,
        failures: 0,
        errors: 1,
        skipped: 0,
        seconds: 0.0,
        first_failure: Some(how.status.to_string()),
        first_message: Some(format!(
            "CI ended with {how} although every tier's results are green"
        )),
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

    fn ended(status: &str) -> Ended<'_> {
        Ended { status, said: "" }
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
        let v = judge(Some(&four()), Err(ended("exit status: 1")), Ok(got));
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
    fn a_failed_exit_with_every_tier_green_is_red_and_names_the_exit_status() {
        let got = tiers(&[
            ("install", 1, 0),
            ("upgrade", 1, 0),
            ("backup", 1, 0),
            ("functional", 1, 0),
        ]);
        let v = judge(Some(&four()), Err(ended("exit status: 1")), Ok(got.clone()));
        assert_eq!((v.result, v.degree), (RunResult::Red, 0.2));
        assert_eq!(
            crate::ledger::tiers_line(&v.tiers),
            "install ✓ upgrade ✓ backup ✓ functional ✓ (CI) ✗ (exit status: 1)"
        );
        assert_eq!(
            v.detail,
            "degree 0.20: (CI) ✗ (exit status: 1): every tier's results are green, but CI \
             ended with exit status: 1"
        );
        assert_eq!(
            judge(Some(&four()), Ok(()), Ok(got)).result,
            RunResult::Green
        );
    }

    #[test]
    fn a_failure_in_a_tier_not_expected_counts_and_is_named() {
        let got = tiers(&[
            ("install", 1, 0),
            ("upgrade", 1, 0),
            ("backup", 1, 0),
            ("functional", 1, 0),
            ("nightly", 2, 1),
            ("extra", 1, 0),
        ]);
        let v = judge(Some(&four()), Err(ended("exit status: 1")), Ok(got));
        assert_eq!((v.result, v.degree), (RunResult::Red, 0.2));
        assert_eq!(
            crate::ledger::tiers_line(&v.tiers),
            "install ✓ upgrade ✓ backup ✓ functional ✓ nightly ✗ (t::test_restore)"
        );
    }

    #[test]
    fn unreadable_results_are_errors() {
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
        let v = judge(None, Err(ended("exit status: 2")), Ok(Tiers::new()));
        assert_eq!((v.result, v.degree), (RunResult::Red, 1.0));
    }
}
