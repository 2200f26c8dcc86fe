//! Greenness from real producers (docs/sweep.md, "Greenness"): suites in pytest, GoogleTest,
//! mocha and Catch2 (tests/producers/) run by the real sweep as a recipe's CI, with the tool's
//! own exit status and the JUnit XML it writes. Each has a passing tier, a failing tier, a
//! skipped and a disabled test and, where the tool has one, a set-up or collection error. A
//! red suite is never promoted, whatever wrote it.
//!
//! `.ci/run` installs the tools (python3-pytest, libgtest-dev, catch2, g++, and mocha from the
//! npm registry) and sets `CC_CI_PRODUCERS=required`: there a missing tool fails the test; on a
//! machine without them each test says NOT RUN HERE.

use crate::common;
use crate::greenness::{decision, python_with_pytest, Fleet};

use std::path::{Path, PathBuf};

/// Each recipe's name says how its suite runs: `fails-<tier>` sets `FAIL=<tier>` (that tier's
/// suite fails), `broken-import` makes a pytest module fail to import; then the tool's own
/// command, `"$1"` the recipe, `"$2"` the results directory, `"$3"`… the test's arguments.
const AS_NAMED: &str = r#"case "$1" in fails-*) export FAIL="${1#fails-}";; broken-import) export BROKEN_IMPORT=1;; esac; "#;

/// A command in the fleet's TOML: `sh -c '<AS_NAMED><tool>' ci {recipe} {results} <args>`.
fn command(tool: &str, args: &[&Path]) -> String {
    let mut argv = vec![
        "sh".to_string(),
        "-c".into(),
        format!("{AS_NAMED}{tool}"),
        "ci".into(),
        "{recipe}".into(),
        "{results}".into(),
    ];
    argv.extend(args.iter().map(|a| a.to_string_lossy().into_owned()));
    let quoted: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// `false` (and says so) where the producer is not installed; fails where `.ci/run` installed
/// the producers, as a missing one there means the test would pass without running.
fn have(producer: &str, present: bool, install: &str) -> bool {
    if !present {
        eprintln!("producers: NOT RUN HERE: no {producer} ({install})");
        let required = std::env::var_os("CC_CI_PRODUCERS").is_some_and(|v| v == "required")
            || std::env::var_os("CI").is_some();
        assert!(!required, "CI must have {producer}: .ci/run installs it");
    }
    present
}

/// Sweeps once and gives each recipe's decision and its last run (result, degree, tiers).
fn sweep_all(f: &Fleet, recipes: &[&str]) -> Vec<(String, serde_json::Value)> {
    let (run, v) = f.sweep(&[]);
    assert!(
        run.code == 0 || run.code == 11,
        "exit {}\n{}\n{}",
        run.code,
        run.stdout,
        run.stderr
    );
    recipes
        .iter()
        .map(|r| (decision(&v, r), f.last_run(r)))
        .collect()
}

/// The tiers line as `history` shows it, for the assertion messages and the checks.
fn tiers_shown(f: &Fleet, recipe: &str) -> String {
    f.agent(&["history", recipe], &[]).stdout
}

fn tier<'a>(last: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    last["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == name)
        .unwrap_or_else(|| panic!("no tier {name}: {last:#}"))
}

/// Compiles a C++ suite with g++ into `dir`; `None` when g++ or the library is missing.
fn compiled(source: &str, libs: &[&str], dir: &Path) -> Option<PathBuf> {
    let out = dir.join("suite");
    let built = std::process::Command::new("g++")
        .args(["-std=c++17", "-O0", "-o"])
        .arg(&out)
        .arg(common::repo().join("tests/producers").join(source))
        .args(libs)
        .output()
        .ok()?;
    if !built.status.success() {
        eprintln!(
            "producers: g++ {source}: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        return None;
    }
    Some(out)
}

/// A fleet whose CI runs tests/producers/pytest with `tool` (`"$3"` the Python with pytest,
/// `"$4"` the suite), expecting the four tiers; `None` where pytest is missing.
fn pytest_fleet(recipes: &[&str], tool: &str) -> Option<Fleet> {
    let Some(python) = python_with_pytest() else {
        have("pytest", false, "apt install python3-pytest");
        return None;
    };
    let suite = common::repo().join("tests/producers/pytest");
    let command = command(tool, &[Path::new(&python), &suite]);
    Some(Fleet::new(recipes, crate::greenness::FOUR, &command))
}

/// pytest 7: a tier per directory (the classname's first part). A failing test, a failing
/// set-up (an error, not a failure) and a module that cannot be imported (a collection error,
/// written with an empty classname) each make their tier red; the skipped test does not count.
#[test]
fn pytest_red_suites_are_never_promoted() {
    let tool = r#"exec "$3" -B -m pytest -q -p no:cacheprovider --continue-on-collection-errors --rootdir "$4" --junitxml "$2/junit.xml" "$4""#;
    let recipes = ["passes", "fails-backup", "fails-upgrade", "broken-import"];
    let Some(f) = pytest_fleet(&recipes, tool) else {
        return;
    };
    let got = sweep_all(&f, &recipes);
    assert_eq!(got[0].0, "promoted", "{:#}", got[0].1);
    let backup = tier(&got[0].1, "backup");
    assert_eq!(
        (&backup["tests"], &backup["skipped"]),
        (&4.into(), &1.into())
    );
    for (i, (red_tier, first)) in [
        ("backup", "test_restore_keeps_posts"),
        ("upgrade", "test_upgrade_keeps_data"),
        ("backup", "test_restore"),
    ]
    .into_iter()
    .enumerate()
    {
        let (decided, last) = &got[i + 1];
        let shown = tiers_shown(&f, recipes[i + 1]);
        assert_eq!(decided, "red", "{}: {last:#}\n{shown}", recipes[i + 1]);
        assert_eq!(last["greenness"], 0.25, "{last:#}");
        let t = tier(last, red_tier);
        assert_eq!(t["green"], false, "{last:#}");
        assert!(
            t["first_failure"].as_str().unwrap().contains(first),
            "{last:#}"
        );
    }
    assert_eq!(tier(&got[2].1, "upgrade")["errors"], 1, "a set-up error");
}

/// GoogleTest 1.12: a tier per test suite (`Install`, `Backup`: capitals, as GoogleTest names
/// them). A check that fails before `GTEST_SKIP` is written `<failure>` then `<skipped>`: red.
/// A tier whose only test is disabled (`status="notrun"`) ran nothing: not green.
#[test]
fn googletest_red_suites_are_never_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let Some(bin) = compiled(
        "gtest/suite.cc",
        &["-lgtest", "-lgtest_main", "-pthread"],
        dir.path(),
    ) else {
        have("GoogleTest", false, "apt install g++ libgtest-dev");
        return;
    };
    let tool = r#"exec "$3" --gtest_output="xml:$2/gtest.xml""#;
    let recipes = ["passes", "fails-backup", "fails-functional", "disabled"];
    let f = Fleet::new(
        &recipes,
        "tiers = [\"Install\", \"Backup\", \"Functional\"]\n",
        &command(tool, &[&bin]),
    );
    let enrollment = f.path("enrollment.toml");
    let text = std::fs::read_to_string(&enrollment).unwrap().replace(
        "[recipe.disabled]\n",
        "[recipe.disabled]\ntiers = [\"Install\", \"Upgrade\", \"Backup\", \"Functional\"]\n",
    );
    std::fs::write(&enrollment, text).unwrap();
    let got = sweep_all(&f, &recipes);
    assert_eq!(got[0].0, "promoted", "{:#}", got[0].1);
    let backup = tier(&got[0].1, "Backup");
    assert_eq!(
        (&backup["tests"], &backup["skipped"]),
        (&3.into(), &1.into()),
        "the disabled test is skipped: {backup:#}"
    );
    for (i, red) in ["Backup", "Functional"].into_iter().enumerate() {
        let (decided, last) = &got[i + 1];
        assert_eq!(decided, "red", "{}: {last:#}", recipes[i + 1]);
        assert_eq!(tier(last, red)["failures"], 1, "{last:#}");
        assert!((last["greenness"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    }
    let (decided, last) = &got[3];
    assert_eq!(decided, "red", "{last:#}");
    let upgrade = tier(last, "Upgrade");
    assert_eq!(
        (&upgrade["tests"], &upgrade["skipped"]),
        (&1.into(), &1.into())
    );
    assert!(
        tiers_shown(&f, "disabled").contains("Upgrade ran no test"),
        "{}",
        tiers_shown(&f, "disabled")
    );
}

/// mocha 10 with mocha-junit-reporter 2, a tier per top-level `describe`. In Jenkins mode the
/// classname is the describe's path (`backup.nightly`): `tier_from = "classname"`. With the
/// reporter's defaults a nested `describe` is a suite of its own (`nightly`), a tier nobody
/// expects: its failure still makes the run red.
#[test]
fn mocha_red_suites_are_never_promoted() {
    let mocha = common::repo().join("tests/producers/mocha");
    let runner = mocha.join("node_modules/mocha/bin/mocha.js");
    let node = which_node();
    if !have(
        "mocha",
        runner.exists() && node.is_some(),
        "apt install nodejs; npm ci in tests/producers/mocha",
    ) {
        return;
    }
    let tool = r#"exec "$3" "$4" --reporter mocha-junit-reporter --reporter-options "mochaFile=$2/mocha.xml,$6" "$5""#;
    let args = |options: &str| {
        command(
            tool,
            &[
                node.as_deref().unwrap(),
                &runner,
                &mocha.join("test/suite.js"),
                Path::new(options),
            ],
        )
    };
    let recipes = ["passes", "fails-backup", "fails-upgrade"];
    let jenkins = Fleet::new(
        &recipes,
        &format!("{}tier_from = \"classname\"\n", crate::greenness::FOUR),
        &args("jenkinsMode=true,includePending=true"),
    );
    let got = sweep_all(&jenkins, &recipes);
    assert_eq!(got[0].0, "promoted", "{:#}", got[0].1);
    assert_eq!(tier(&got[0].1, "backup")["tests"], 4, "{:#}", got[0].1);
    assert_eq!(tier(&got[0].1, "backup")["skipped"], 1, "{:#}", got[0].1);
    for (i, red) in ["backup", "upgrade"].into_iter().enumerate() {
        let (decided, last) = &got[i + 1];
        assert_eq!(decided, "red", "{}: {last:#}", recipes[i + 1]);
        assert_eq!(tier(last, red)["green"], false, "{last:#}");
        assert_eq!(last["greenness"], 0.25, "{last:#}");
    }
    let nested = ["passes", "fails-nightly"];
    let defaults = Fleet::new(
        &nested,
        "tiers = [\"install\", \"upgrade\", \"backup\", \"functional\"]\n",
        &args("includePending=true"),
    );
    let got = sweep_all(&defaults, &nested);
    assert_eq!(got[0].0, "promoted", "{:#}", got[0].1);
    let (decided, last) = &got[1];
    assert_eq!(decided, "red", "{last:#}");
    assert_eq!(tier(last, "nightly")["expected"], false, "{last:#}");
    assert!(
        tiers_shown(&defaults, "fails-nightly").contains("nightly ✗"),
        "{}",
        tiers_shown(&defaults, "fails-nightly")
    );
}

fn which_node() -> Option<PathBuf> {
    ["node", "nodejs"].into_iter().find_map(|n| {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {n}")])
            .output()
            .ok()?;
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
    })
}

/// Catch2 2, a tier per tag, run once per tier, each run writing `{results}/<tier>.xml`:
/// `tier_from = "file"`, the rule any runner can follow. A failing section is red; the hidden
/// test (`[.]`, Catch2's disabled) is not run and not written.
#[test]
fn catch2_red_suites_are_never_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let v3 = ["-lCatch2Main", "-lCatch2"];
    let built = compiled("catch2/suite.cc", &[], dir.path())
        .or_else(|| compiled("catch2/suite.cc", &v3, dir.path()));
    let Some(bin) = built else {
        have("Catch2", false, "apt install g++ catch2");
        return;
    };
    let tool = r#"rc=0; for t in install backup functional; do "$3" "[$t]~[.]" -r junit -o "$2/$t.xml" >/dev/null || rc=$?; done; exit $rc"#;
    let recipes = ["passes", "fails-backup"];
    let f = Fleet::new(
        &recipes,
        "tiers = [\"install\", \"backup\", \"functional\"]\ntier_from = \"file\"\n",
        &command(tool, &[&bin]),
    );
    let got = sweep_all(&f, &recipes);
    assert_eq!(got[0].0, "promoted", "{:#}", got[0].1);
    assert_eq!(tier(&got[0].1, "backup")["tests"], 2, "{:#}", got[0].1);
    assert_eq!(tier(&got[0].1, "install")["tests"], 1, "{:#}", got[0].1);
    let (decided, last) = &got[1];
    assert_eq!(decided, "red", "{last:#}");
    let backup = tier(last, "backup");
    assert_eq!(backup["failures"], 1, "{last:#}");
    assert!(
        backup["first_failure"]
            .as_str()
            .unwrap()
            .contains("from last night"),
        "{last:#}"
    );
}

/// The results are all green, but the command failed after writing them (here a teardown step
/// in the CI command that exits 3): the run is red, and the command's status is a row of its
/// own beside the tiers, never a row of ticks beside a failed command.
#[test]
fn green_results_beside_a_failed_command_are_red_and_say_the_exit_status() {
    let tool = r#""$3" -B -m pytest -q -p no:cacheprovider --rootdir "$4" --junitxml "$2/junit.xml" "$4" && exit 3"#;
    let Some(f) = pytest_fleet(&["plausible"], tool) else {
        return;
    };
    let got = sweep_all(&f, &["plausible"]);
    let (decided, last) = &got[0];
    assert_eq!(decided, "red", "{last:#}");
    assert_eq!(last["greenness"], 0.2, "{last:#}");
    let shown = tiers_shown(&f, "plausible");
    assert!(
        shown.contains("install ✓ upgrade ✓ backup ✓ functional ✓ (CI) ✗ (exit status: 3)"),
        "{shown}"
    );
    let (_, again) = f.sweep(&[]);
    assert_eq!(
        decision(&again, "plausible"),
        "skip-already-judged",
        "a verdict, not tried again: {again:#}"
    );
}
