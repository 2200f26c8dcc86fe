//! `enrollment check`: the file is valid, and every enrolled recipe can actually be tested.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::Target;
use crate::context::Context;
use crate::exit::Exit;
use crate::output::{Answer, Output, Tone};
use crate::settings::enrollment::{Enrollment, TestPolicy};
use crate::settings::rules::check_release_tag;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory holding one test suite per recipe (`<dir>/<recipe>/`); overrides `tests_dir`.
    #[arg(long, value_name = "DIR")]
    pub tests_dir: Option<PathBuf>,
}

#[derive(schemars::JsonSchema, Debug, Serialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(schemars::JsonSchema, Debug, Serialize)]
pub struct Problem {
    pub recipe: String,
    pub severity: Severity,
    pub message: String,
}

#[derive(schemars::JsonSchema, Debug, Serialize)]
pub(super) struct Report {
    file: PathBuf,
    ok: bool,
    declared: usize,
    enrolled: usize,
    canonical: usize,
    poll_repos: String,
    /// `null` when no tests directory was given, so suites were not checked.
    tests_dir: Option<PathBuf>,
    problems: Vec<Problem>,
}

/// Problems with test suites: enrolled + required + no `<tests_dir>/<recipe>/` is an error.
pub fn suite_problems(enrollment: &Enrollment, tests_dir: &std::path::Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    for r in enrollment.enrolled() {
        let suite = tests_dir.join(&r.name);
        let present = suite.is_dir();
        match (&r.tests, present) {
            (TestPolicy::Required, false) => problems.push(Problem {
                recipe: r.name.clone(),
                severity: Severity::Error,
                message: format!(
                    "enrolled with tests required, but its suite {} is missing: \
                     add the suite, or set tests = \"exempt\" with a reason",
                    suite.display()
                ),
            }),
            (TestPolicy::Exempt { .. }, true) => problems.push(Problem {
                recipe: r.name.clone(),
                severity: Severity::Warning,
                message: format!(
                    "exempt from tests, but {} exists: remove the exemption",
                    suite.display()
                ),
            }),
            _ => {}
        }
    }
    problems
}

/// Settings that contradict each other: a canonical recipe exempt from tests would be promoted
/// by nothing, so the sweep never promotes it.
fn conflicts(enrollment: &Enrollment) -> Vec<Problem> {
    enrollment
        .enrolled()
        .filter(|r| r.canonical && matches!(r.tests, TestPolicy::Exempt { .. }))
        .map(|r| Problem {
            recipe: r.name.clone(),
            severity: Severity::Error,
            message: "canonical = true and tests = \"exempt\" conflict: with no suite there is \
                      nothing to judge a release by, so the sweep never promotes it; give it a \
                      suite, or set canonical = false"
                .into(),
        })
        .collect()
}

/// An `upgrade_base` at or below the recipe's canonical is redundant: the canonical is already
/// the base. Read from the state database, when there is one; nothing is created.
fn redundant_pins(
    enrollment: &Enrollment,
    state_dir: Option<&std::path::Path>,
    clock: &crate::clock::Clock,
) -> Result<Vec<Problem>> {
    let Some(dir) = state_dir else {
        return Ok(Vec::new());
    };
    // Only for a warning: a database that cannot be read costs the warning, not the check.
    let found = crate::ledger::Ledger::open_read_only(dir, clock).and_then(|l| {
        l.map(|l| pins_at_or_below_canonical(enrollment, &l))
            .transpose()
    });
    match found {
        Ok(problems) => Ok(problems.unwrap_or_default()),
        Err(e) => {
            tracing::warn!("redundant pins not checked: {e:#}");
            Ok(Vec::new())
        }
    }
}

fn pins_at_or_below_canonical(
    enrollment: &Enrollment,
    ledger: &crate::ledger::Ledger,
) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    for r in &enrollment.recipes {
        let (Some(pin), Some(c)) = (&r.upgrade_base, ledger.canonical(&r.name)?) else {
            continue;
        };
        let (Ok(p), Ok(cv)) = (check_release_tag(pin), check_release_tag(&c.version)) else {
            continue;
        };
        if p.cmp_precedence(&cv) == std::cmp::Ordering::Less {
            problems.push(Problem {
                recipe: r.name.clone(),
                severity: Severity::Warning,
                message: format!(
                    "upgrade_base {pin} is below the canonical {}: the pin is redundant and can be removed",
                    c.version
                ),
            });
        }
    }
    Ok(problems)
}

pub fn run(ctx: &Context, target: &Target) -> Result<Exit> {
    let enrollment = Enrollment::load(&target.file)?;
    let problems = match &target.tests_dir {
        Some(dir) if !dir.is_dir() => {
            return Err(crate::error::InputError::file(
                dir,
                "tests directory does not exist (tests_dir or --tests-dir)",
            )
            .into())
        }
        Some(dir) => suite_problems(&enrollment, dir),
        None => Vec::new(),
    };
    let mut problems = problems;
    problems.extend(conflicts(&enrollment));
    problems.extend(redundant_pins(
        &enrollment,
        target.state_dir.as_deref(),
        &ctx.clock,
    )?);
    let ok = !problems.iter().any(|p| p.severity == Severity::Error);
    let report = Report {
        file: target.file.clone(),
        ok,
        declared: enrollment.recipes.len(),
        enrolled: enrollment.enrolled().count(),
        canonical: enrollment
            .recipes
            .iter()
            .filter(|r| r.enrolled && r.canonical)
            .count(),
        poll_repos: enrollment.poll_repos(),
        tests_dir: target.tests_dir.clone(),
        problems,
    };
    ctx.out.give(&report)?;
    Ok(if ok { Exit::Success } else { Exit::Problems })
}

impl Answer for Report {
    fn human(&self, out: &Output) -> String {
        use std::fmt::Write as _;
        let r = self;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{}: {} declared, {} enrolled, {} canonical",
            r.file.display(),
            r.declared,
            r.enrolled,
            r.canonical
        );
        let _ = match &r.tests_dir {
            Some(dir) => writeln!(t, "test suites: checked against {}", dir.display()),
            None => writeln!(
                t,
                "test suites: {} (no tests_dir in the configuration and no --tests-dir)",
                out.paint("not checked", Tone::Warn)
            ),
        };
        for p in &r.problems {
            let label = match p.severity {
                Severity::Error => out.paint("error", Tone::Bad),
                Severity::Warning => out.paint("warning", Tone::Warn),
            };
            let _ = writeln!(t, "{label}: {}: {}", p.recipe, p.message);
        }
        let verdict = if r.ok {
            out.paint("ok", Tone::Good)
        } else {
            out.paint("problems found", Tone::Bad)
        };
        let _ = writeln!(t, "{verdict}");
        t
    }
}
