//! JUnit XML results, as recipe CI writes them into `{results}` (pytest's `--junitxml`,
//! GoogleTest's `--gtest_output=xml`, mocha-junit-reporter, Catch2's `-r junit`, Surefire and most
//! runners' format): `<testsuites>` holding `<testsuite name>`s (nested, in aggregates) holding
//! `<testcase classname name>`s, each with `<failure>`, `<error>` or `<skipped>` children, or a
//! `status="notrun"` (a disabled test).
//!
//! Each case is one outcome: a failure or an error wins over a skip (GoogleTest writes
//! `<failure>` then `<skipped>` for a check that failed before `GTEST_SKIP`), and a test that
//! never ran (`status="notrun"`) is skipped, never passed. Each case's tier comes by one rule
//! ([`TierFrom`]), file by file, whatever else is in the directory.
//!
//! Recipe CI is untrusted, so its results are read as hostile input: only regular files named
//! `*.xml`, opened without following a link and without blocking on a FIFO; bounded in bytes
//! per file and in all, in test cases, in nesting and in time, not in the number of files (one
//! per test class is a thousand for a Java project); no DTD (a `<!DOCTYPE>` is refused, so no
//! entity is ever defined, let alone expanded); an entity reference other than XML's five and
//! character references is kept as the text it is. A file that is empty, is not XML, is not
//! JUnit, is cut off before its root closes, or holds no test case makes the whole result
//! unreadable, naming the file and line: never green. UTF-16 (with a byte-order mark, as .NET
//! writes it) is read; another encoding that is not UTF-8 is refused, naming it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

pub use crate::settings::sweep::TierFrom;

/// What a results directory may hold before it is refused.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub files: usize,
    pub file_bytes: u64,
    pub total_bytes: u64,
    pub cases: usize,
    pub depth: usize,
    /// How long reading them all may take.
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            files: 20_000,
            file_bytes: 16 << 20,
            total_bytes: 64 << 20,
            cases: 100_000,
            depth: 32,
            time: Duration::from_secs(120),
        }
    }
}

/// The first failing test of a tier: its name and what it said, cut to [`TEXT_LIMIT`].
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct FirstFailure {
    pub test: String,
    pub message: String,
}

/// One tier's counts, summed over its test cases.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub tests: u64,
    pub failures: u64,
    pub errors: u64,
    pub skipped: u64,
    pub seconds: f64,
    pub first_failure: Option<FirstFailure>,
}

impl Counts {
    /// Green: at least one test ran (skipped ones do not count) and none failed or errored.
    pub fn green(&self) -> bool {
        self.tests > self.skipped && self.failures == 0 && self.errors == 0
    }
}

/// The results, by tier.
pub type Tiers = BTreeMap<String, Counts>;

/// Names and messages longer than this are cut: they come from recipe CI.
pub const TEXT_LIMIT: usize = 500;

/// Why the results could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{0}")]
pub struct Unreadable(pub String);

/// Reads every `*.xml` in `dir` and sums its test cases by tier, each case's tier by `tier_from`.
pub fn read_dir(dir: &Path, limits: Limits, tier_from: TierFrom) -> Result<Tiers, Unreadable> {
    let until = Instant::now() + limits.time;
    let files = xml_files(dir, limits)?;
    if files.is_empty() {
        return Err(Unreadable(format!(
            "{}: no results: the suite wrote no *.xml file there",
            dir.display()
        )));
    }
    let mut cases = Vec::new();
    for (name, bytes) in &files {
        if Instant::now() > until {
            return Err(Unreadable(format!(
                "{}: reading the results took longer than {}s",
                dir.display(),
                limits.time.as_secs()
            )));
        }
        parse(name, bytes, (limits, tier_from), &mut cases)?;
    }
    Ok(summed(cases))
}

/// One file's results, as [`read_dir`] reads each: what a fuzzer drives.
pub fn read_bytes(
    name: &str,
    bytes: &[u8],
    limits: Limits,
    tier_from: TierFrom,
) -> Result<Tiers, Unreadable> {
    let mut cases = Vec::new();
    parse(name, bytes, (limits, tier_from), &mut cases)?;
    Ok(summed(cases))
}

fn summed(cases: Vec<Case>) -> Tiers {
    let mut tiers = Tiers::new();
    for case in cases {
        add(tiers.entry(case.tier.clone()).or_default(), case);
    }
    tiers
}

fn add(counts: &mut Counts, case: Case) {
    counts.tests += 1;
    counts.seconds += case.seconds;
    let message = match case.outcome {
        Outcome::Passed => return,
        Outcome::Skipped => {
            counts.skipped += 1;
            return;
        }
        Outcome::Failed(message) => {
            counts.failures += 1;
            message
        }
        Outcome::Errored(message) => {
            counts.errors += 1;
            message
        }
    };
    if counts.first_failure.is_none() {
        let test = if case.class.is_empty() {
            cut(&case.name)
        } else {
            cut(&format!("{}::{}", case.class, case.name))
        };
        counts.first_failure = Some(FirstFailure { test, message });
    }
}

/// The regular `*.xml` files of `dir`, read within the limits; anything else there is ignored
/// unread (a link, a FIFO, a directory), and said in the log.
fn xml_files(dir: &Path, limits: Limits) -> Result<Vec<(String, Vec<u8>)>, Unreadable> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Unreadable(format!("{}: cannot list the results: {e}", dir.display())))?;
    let mut names: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    names.sort();
    let mut files = Vec::new();
    let mut total = 0u64;
    for name in names {
        let shown = crate::output::terminal_safe(&name.to_string_lossy());
        if !name.to_string_lossy().ends_with(".xml") {
            continue;
        }
        let path = dir.join(&name);
        let kind = std::fs::symlink_metadata(&path).map(|m| m.file_type());
        if !kind.is_ok_and(|k| k.is_file()) {
            tracing::warn!("results: {shown} is not a plain file: not read");
            continue;
        }
        if files.len() == limits.files {
            return Err(Unreadable(format!(
                "{}: more than {} result files",
                dir.display(),
                limits.files
            )));
        }
        let bytes = crate::fsutil::read_regular(&path, limits.file_bytes, false)
            .map_err(|e| Unreadable(format!("{shown}: {e:#}")))?;
        total += bytes.len() as u64;
        if total > limits.total_bytes {
            return Err(Unreadable(format!(
                "{}: the result files hold more than {} bytes in all",
                dir.display(),
                limits.total_bytes
            )));
        }
        files.push((shown, bytes));
    }
    Ok(files)
}

#[derive(Debug)]
enum Outcome {
    Passed,
    Skipped,
    Failed(String),
    Errored(String),
}

#[derive(Debug)]
struct Case {
    tier: String,
    class: String,
    name: String,
    seconds: f64,
    outcome: Outcome,
}

/// `bytes` as UTF-8 for the parser: a UTF-8 byte-order mark dropped; UTF-16 (either byte order,
/// with a byte-order mark, or without one where the declaration starts the file) decoded; a
/// file in another encoding refused, naming it.
fn as_utf8<'a>(file: &str, bytes: &'a [u8]) -> Result<Cow<'a, [u8]>, Unreadable> {
    let utf16 = |body: &[u8], big: bool| -> Result<Cow<'a, [u8]>, Unreadable> {
        let units: Vec<u16> = body
            .chunks_exact(2)
            .map(|c| {
                if big {
                    u16::from_be_bytes([c[0], c[1]])
                } else {
                    u16::from_le_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16(&units)
            .map(|s| Cow::Owned(s.into_bytes()))
            .map_err(|_| Unreadable(format!("{file}: declares UTF-16 but is not UTF-16")))
    };
    match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => Ok(Cow::Borrowed(rest)),
        [0xFF, 0xFE, rest @ ..] => utf16(rest, false),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, true),
        [b'<', 0, b'?', 0, ..] => utf16(bytes, false),
        [0, b'<', 0, b'?', ..] => utf16(bytes, true),
        _ if std::str::from_utf8(bytes).is_ok() => Ok(Cow::Borrowed(bytes)),
        _ => Err(Unreadable(format!(
            "{file}: not UTF-8{}: write the results in UTF-8 (or UTF-16)",
            declared_encoding(bytes)
                .map(|e| format!(" (it declares {e})"))
                .unwrap_or_default()
        ))),
    }
}

/// The encoding an XML declaration at the start of `bytes` names, if any.
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
    let decl = head.strip_prefix("<?xml")?.split("?>").next()?.to_string();
    let at = decl.find("encoding")?;
    let value = decl[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?
        .trim_start();
    let mut chars = value.chars();
    let quote = chars.next()?;
    let inner: String = chars.take_while(|c| *c != quote).collect();
    Some(crate::output::one_line(&inner))
}

/// The test cases of one file, appended to `cases`: refused when it is not whole JUnit XML with
/// at least one test case.
fn parse(
    file: &str,
    bytes: &[u8],
    (limits, tier_from): (Limits, TierFrom),
    cases: &mut Vec<Case>,
) -> Result<(), Unreadable> {
    let text = as_utf8(file, bytes)?;
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(Unreadable(format!(
            "{file}: is empty: the suite wrote no results into it"
        )));
    }
    let stem = file.strip_suffix(".xml").unwrap_or(file).to_string();
    let mut reader = Reader::from_reader(text.as_ref());
    let line = |at: u64| {
        let upto = usize::try_from(at).unwrap_or(usize::MAX).min(text.len());
        text[..upto].iter().filter(|b| **b == b'\n').count() + 1
    };
    let mut walk = Walk::new(stem, tier_from);
    let before = cases.len();
    loop {
        let event = reader.read_event().map_err(|e| {
            let at = reader.error_position();
            // An error at the very end is a file that stops in the middle of something.
            let cut = usize::try_from(reader.buffer_position()).is_ok_and(|p| p >= text.len());
            Unreadable(format!(
                "{file}:{}: {}: {e}",
                line(at),
                if cut {
                    "the file is cut off (a run killed while writing it?)"
                } else {
                    "not well-formed XML"
                }
            ))
        })?;
        let refuse =
            |why: String| Unreadable(format!("{file}:{}: {why}", line(reader.buffer_position())));
        if walk.step(event, limits, cases).map_err(refuse)? {
            break;
        }
    }
    walk.finished(cases.len() - before)
        .map_err(|why| Unreadable(format!("{file}: {why}")))
}

fn predefined(name: &str) -> Option<&'static str> {
    Some(match name {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        _ => return None,
    })
}

/// Where the reader is in one file: the elements open, the suites around, the case open, and
/// the failure text being gathered.
struct Walk {
    /// Names of the elements open now, outermost first.
    open: Vec<String>,
    /// The names of the `<testsuite>`s open now, outermost first.
    suites: Vec<String>,
    /// The first element's name: a JUnit file's is `testsuites` or `testsuite`.
    root: Option<String>,
    /// The case open now (its `<testcase>` not yet closed).
    case: Option<Case>,
    /// Inside a `<failure>` or `<error>`: its text is the message when it had no attribute.
    in_failure: bool,
    /// The file's name without `.xml`, for [`TierFrom::File`].
    stem: String,
    tier_from: TierFrom,
}

impl Walk {
    fn new(stem: String, tier_from: TierFrom) -> Self {
        Self {
            open: Vec::new(),
            suites: Vec::new(),
            root: None,
            case: None,
            in_failure: false,
            stem,
            tier_from,
        }
    }

    /// One event; whether the file has ended.
    fn step(
        &mut self,
        event: Event<'_>,
        limits: Limits,
        cases: &mut Vec<Case>,
    ) -> Result<bool, String> {
        match event {
            Event::Eof => return Ok(true),
            Event::DocType(_) => {
                return Err("a DOCTYPE: results may not declare a DTD or entities".into())
            }
            Event::Start(e) => {
                if self.open.len() >= limits.depth {
                    return Err(format!("nested deeper than {}", limits.depth));
                }
                self.element(&e, false, cases, limits)?;
                self.open
                    .push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
            }
            Event::Empty(e) => self.element(&e, true, cases, limits)?,
            Event::End(e) => {
                self.open.pop();
                self.close(e.name().as_ref(), cases);
            }
            Event::Text(t) => self.text(&t.decode().unwrap_or_default()),
            Event::CData(t) => self.text(&String::from_utf8_lossy(&t)),
            Event::GeneralRef(r) => {
                // XML's own and character references only; any other stays as written.
                let name = String::from_utf8_lossy(&r);
                let text = match r.resolve_char_ref().ok().flatten() {
                    Some(c) => c.to_string(),
                    None => predefined(&name).map_or_else(|| format!("&{name};"), str::to_string),
                };
                self.text(&text);
            }
            _ => {}
        }
        Ok(false)
    }

    /// At the file's end: its root closed, and at least one test case in it.
    fn finished(&self, cases: usize) -> Result<(), String> {
        match (&self.root, self.open.last()) {
            (None, _) => Err("is not XML: it holds no element".into()),
            (Some(root), _) if root != "testsuites" && root != "testsuite" => Err(format!(
                "is not JUnit XML: its root is <{}>, not <testsuites> or <testsuite>",
                crate::output::one_line(root)
            )),
            (_, Some(open)) => Err(format!(
                "ends before its <{}> is closed: the file is cut off (a run killed while writing \
                 it?)",
                crate::output::one_line(open)
            )),
            _ if cases == 0 => Err("holds no test case".into()),
            _ => Ok(()),
        }
    }

    fn element(
        &mut self,
        e: &BytesStart<'_>,
        empty: bool,
        cases: &mut Vec<Case>,
        limits: Limits,
    ) -> Result<(), String> {
        let name = e.name();
        if self.root.is_none() {
            self.root = Some(String::from_utf8_lossy(name.as_ref()).into_owned());
        }
        match name.as_ref() {
            b"testsuite" if !empty => self.suites.push(attr(e, "name")),
            b"testcase" => {
                if cases.len() >= limits.cases {
                    return Err(format!("more than {} test cases", limits.cases));
                }
                let case = self.case_of(e);
                if empty {
                    cases.push(case);
                } else {
                    self.case = Some(case);
                }
            }
            kind @ (b"failure" | b"error" | b"skipped") => {
                let message = attr(e, "message");
                if let Some(case) = &mut self.case {
                    outcome_of(case, kind, &message);
                }
                self.in_failure = !empty && kind != b"skipped" && message.is_empty();
            }
            _ => {}
        }
        Ok(())
    }

    fn case_of(&self, e: &BytesStart<'_>) -> Case {
        let class = attr(e, "classname");
        let name = attr(e, "name");
        // GoogleTest's disabled tests and Jasmine's excluded ones: they never ran.
        let not_run = attr(e, "status") == "notrun";
        Case {
            tier: tier_of(self.tier_from, (&self.suites, &self.stem), &class, &name),
            class,
            name,
            seconds: attr(e, "time")
                .parse()
                .ok()
                .filter(|t: &f64| t.is_finite())
                .unwrap_or(0.0),
            outcome: if not_run {
                Outcome::Skipped
            } else {
                Outcome::Passed
            },
        }
    }

    fn close(&mut self, name: &[u8], cases: &mut Vec<Case>) {
        match name {
            b"testcase" => cases.extend(self.case.take()),
            b"failure" | b"error" => self.in_failure = false,
            b"testsuite" => {
                self.suites.pop();
            }
            _ => {}
        }
    }

    /// A failure's text, when its `message` attribute was empty: the first line of it.
    fn text(&mut self, text: &str) {
        if !self.in_failure {
            return;
        }
        if let Some(Case {
            outcome: Outcome::Failed(m) | Outcome::Errored(m),
            ..
        }) = &mut self.case
        {
            if m.len() < TEXT_LIMIT {
                m.push_str(text);
                *m = cut(m.lines().find(|l| !l.trim().is_empty()).unwrap_or(m));
            }
        }
    }
}

/// A `<failure>`, `<error>` or `<skipped>` of a case: a failure or an error wins over a skip and
/// over what came before it but another failure (the first is kept); a skip changes only a case
/// that passed.
fn outcome_of(case: &mut Case, kind: &[u8], message: &str) {
    let failed = matches!(case.outcome, Outcome::Failed(_) | Outcome::Errored(_));
    case.outcome = match kind {
        _ if failed => return,
        b"failure" => Outcome::Failed(cut(message)),
        b"error" => Outcome::Errored(cut(message)),
        _ if matches!(case.outcome, Outcome::Passed) => Outcome::Skipped,
        _ => return,
    };
}

/// The tier of a case the rule finds none for (no suite around it, no classname or name): no
/// tier can be named so (a tier name does not start with `(`), and a failure in it still counts.
pub const NO_TIER: &str = "(no tier)";

/// A case's tier by `rule` ([`TierFrom`]), shown escaped and cut as any text from CI.
fn tier_of(rule: TierFrom, around: (&[String], &str), class: &str, name: &str) -> String {
    match found_tier(rule, around, class, name) {
        t if t.is_empty() => NO_TIER.to_string(),
        t => cut(&t),
    }
}

/// A case's tier by `rule`: `suites` are the suites around it, outermost first.
fn found_tier(
    rule: TierFrom,
    (suites, stem): (&[String], &str),
    class: &str,
    name: &str,
) -> String {
    let outermost = suites.iter().find(|s| !s.is_empty()).cloned();
    // pytest's own case names (`classname` the module path; a collection error has none, and
    // its `name` is the module path or the file's).
    let first_part = || {
        let from = if class.is_empty() { name } else { class };
        from.split(['.', '/'])
            .next()
            .unwrap_or_default()
            .to_string()
    };
    match rule {
        TierFrom::File => stem.to_string(),
        TierFrom::Suite => outermost.unwrap_or_default(),
        TierFrom::Classname => first_part(),
        TierFrom::Auto => match outermost {
            Some(suite) if suite != "pytest" => suite,
            _ => first_part(),
        },
    }
}

/// An attribute's value, unescaped; empty when absent or not readable.
fn attr(e: &BytesStart<'_>, name: &str) -> String {
    match e.try_get_attribute(name) {
        Ok(Some(a)) => a
            .unescape_value()
            .map(|v| v.into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(&a.value).into_owned()),
        _ => String::new(),
    }
}

/// Text from recipe CI, cut to [`TEXT_LIMIT`] characters, control characters shown escaped.
fn cut(text: &str) -> String {
    let safe = crate::output::terminal_safe(text);
    match safe.char_indices().nth(TEXT_LIMIT) {
        Some((at, _)) => format!("{}…", &safe[..at]),
        None => safe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RED: &[u8] = include_bytes!("../../../tests/junit/pytest-7.2/backup-red.xml");

    #[test]
    fn pytests_results_sum_by_tier_with_the_first_failure() {
        let tiers = read_bytes("backup-red.xml", RED, Limits::default(), TierFrom::Auto).unwrap();
        let backup = &tiers["backup"];
        assert_eq!((backup.tests, backup.failures, backup.skipped), (2, 1, 1));
        let first = backup.first_failure.as_ref().unwrap();
        assert_eq!(first.test, "backup.test_backup::test_restore_keeps_posts");
        assert!(first
            .message
            .starts_with("AssertionError: posts lost after restore"));
        assert!(tiers["install"].green() && !backup.green());
    }

    fn hand_written(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../tests/junit/hand-written/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn read(name: &str, bytes: &[u8], rule: TierFrom) -> Result<Tiers, Unreadable> {
        read_bytes(name, bytes, Limits::default(), rule)
    }

    /// What GoogleTest 1.12 writes for a check that failed before `GTEST_SKIP`, for disabled
    /// tests, and for a skip (as tests/producers/gtest/suite.cc makes it write): the failure
    /// wins over the skip, a tier of disabled tests alone is not green.
    #[test]
    fn a_failure_beats_a_skip_and_a_test_not_run_is_skipped() {
        let xml = br#"<testsuites name="AllTests"><testsuite name="Backup">
<testcase name="RestoreKeepsPosts" status="run" result="completed" classname="Backup"><failure message="posts lost" type=""/><skipped message="restore cannot go on"/></testcase>
<testcase name="ArchiveIsWritten" status="run" result="completed" classname="Backup"/>
<testcase name="DISABLED_Offsite" status="notrun" result="suppressed" classname="Backup"/>
</testsuite><testsuite name="Upgrade"><testcase name="DISABLED_FromLast" status="notrun" result="suppressed" classname="Upgrade"/></testsuite></testsuites>"#;
        let tiers = read("gtest.xml", xml, TierFrom::Auto).unwrap();
        let b = &tiers["Backup"];
        assert_eq!((b.tests, b.failures, b.skipped), (3, 1, 1), "{b:?}");
        assert!(!b.green());
        let u = &tiers["Upgrade"];
        assert_eq!((u.tests, u.skipped), (1, 1));
        assert!(!u.green(), "a tier of disabled tests alone ran nothing");
    }

    /// Nested suites (testmo's, Jenkins', Surefire's aggregates): a case after an inner suite
    /// closed is its outer suite's, failures included.
    #[test]
    fn nested_suites_keep_their_cases_in_the_outer_suites_tier() {
        let tiers = read(
            "nested.xml",
            &hand_written("nested-suites.xml"),
            TierFrom::Auto,
        )
        .unwrap();
        assert_eq!(tiers.keys().collect::<Vec<_>>(), ["backup", "install"]);
        assert_eq!((tiers["install"].tests, tiers["install"].failures), (2, 0));
        assert_eq!((tiers["backup"].tests, tiers["backup"].failures), (2, 1));
    }

    /// pytest's collection error: `classname=""`, `name` the module's dotted path; its tier is
    /// that path's first part, so its tier is red.
    #[test]
    fn a_pytest_collection_error_lands_in_its_tier() {
        let xml = br#"<testsuites><testsuite name="pytest" errors="1" tests="2"><testcase classname="" name="backup.test_restore" time="0.000"><error message="collection failure">ImportError</error></testcase><testcase classname="backup.test_backup" name="test_archive" time="0.001"/></testsuite></testsuites>"#;
        let tiers = read("junit.xml", xml, TierFrom::Auto).unwrap();
        assert_eq!(tiers.keys().collect::<Vec<_>>(), ["backup"]);
        assert_eq!((tiers["backup"].errors, tiers["backup"].tests), (1, 2));
        assert!(!tiers["backup"].green());
        let by_file = read("junit.xml", b"<testsuite><testcase classname=\"\" name=\"backup/test_restore.py\"><error/></testcase></testsuite>", TierFrom::Classname).unwrap();
        assert!(by_file.contains_key("backup"), "{by_file:?}");
    }

    /// What cannot be judged is unreadable, naming the file: cut off, empty, not XML, not
    /// JUnit, without a test case, in an encoding other than UTF-8 and UTF-16.
    #[test]
    fn a_file_that_is_not_whole_junit_is_unreadable() {
        for (name, says) in [
            ("truncated-before-the-failure.xml", "cut off"),
            ("empty.xml", "is empty"),
            ("not-xml.xml", "is not XML"),
            ("not-junit.xml", "not JUnit XML"),
            ("no-test-case.xml", "holds no test case"),
            ("latin-1.xml", "ISO-8859-1"),
        ] {
            let e = read(name, &hand_written(name), TierFrom::Auto).unwrap_err();
            assert!(e.0.starts_with(name) && e.0.contains(says), "{name}: {e}");
        }
    }

    /// UTF-16, in either byte order, as .NET's loggers may write it: read as what it says.
    #[test]
    fn utf_16_results_are_read() {
        for name in ["utf-16le.xml", "utf-16be.xml"] {
            let tiers = read(name, &hand_written(name), TierFrom::Auto).unwrap();
            assert!(tiers["install"].green(), "{name}: {tiers:?}");
            assert_eq!(tiers["backup"].failures, 1, "{name}");
        }
    }

    /// Each rule reads each file alone: pytest's results keep their classname tiers beside a
    /// GoogleTest file, and the file rule names the tier after the file.
    #[test]
    fn the_tier_rule_does_not_depend_on_the_other_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pytest.xml"), RED).unwrap();
        std::fs::write(
            dir.path().join("gtest.xml"),
            br#"<testsuites name="AllTests"><testsuite name="Install"><testcase classname="Install" name="Ok"/></testsuite></testsuites>"#,
        )
        .unwrap();
        let tiers = read_dir(dir.path(), Limits::default(), TierFrom::Auto).unwrap();
        assert!(
            tiers.contains_key("backup") && tiers.contains_key("Install"),
            "{tiers:?}"
        );
        assert!(!tiers.contains_key("pytest"), "{tiers:?}");
        let by_file = read_dir(dir.path(), Limits::default(), TierFrom::File).unwrap();
        assert_eq!(by_file.keys().collect::<Vec<_>>(), ["gtest", "pytest"]);
    }

    /// A case the rule finds no tier for has one no configured tier can be, and its failure is
    /// kept; a tier name from the results is shown escaped.
    #[test]
    fn a_case_without_a_tier_lands_in_one_and_names_are_escaped() {
        let xml = "<testsuites><testcase classname=\"\" name=\"\"><failure message=\"x\"/>\
                   </testcase><testsuite name=\"in\u{1b}[2Jstall\"><testcase name=\"a\"/>\
                   </testsuite></testsuites>";
        let tiers =
            read_bytes("x.xml", xml.as_bytes(), Limits::default(), TierFrom::Suite).unwrap();
        assert_eq!(tiers[NO_TIER].failures, 1, "{tiers:?}");
        assert!(tiers.keys().all(|t| !t.contains('\u{1b}')), "{tiers:?}");
    }

    /// A thousand files, one per test class (Surefire's, Gradle's): read, not refused by count.
    #[test]
    fn one_file_per_test_class_is_read_in_its_thousands() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..1500 {
            let xml = format!(
                r#"<testsuite name="com.example.T{i}Test"><testcase classname="com.example.T{i}Test" name="works"/></testsuite>"#
            );
            std::fs::write(
                dir.path().join(format!("TEST-com.example.T{i}Test.xml")),
                xml,
            )
            .unwrap();
        }
        let tiers = read_dir(dir.path(), Limits::default(), TierFrom::Suite).unwrap();
        assert_eq!(tiers.len(), 1500);
    }

    /// Every bound of a results directory refuses, naming what it met: the number of files,
    /// the bytes in all, the number of test cases.
    #[test]
    fn too_many_files_bytes_or_cases_are_refused() {
        let small = Limits {
            files: 2,
            file_bytes: 1 << 20,
            total_bytes: 1500,
            cases: 3,
            depth: 32,
            time: Duration::from_secs(60),
        };
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            std::fs::write(dir.path().join(format!("{i}.xml")), "<testsuites/>").unwrap();
        }
        let e = read_dir(dir.path(), small, TierFrom::Auto).unwrap_err();
        assert!(e.0.contains("more than 2 result files"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.xml"), RED).unwrap();
        std::fs::write(dir.path().join("b.xml"), RED).unwrap();
        let roomy = Limits {
            cases: 1000,
            ..small
        };
        let e = read_dir(dir.path(), roomy, TierFrom::Auto).unwrap_err();
        assert!(e.0.contains("in all"), "{e}");

        let e = read_bytes(
            "red.xml",
            RED,
            Limits {
                total_bytes: 1 << 20,
                ..small
            },
            TierFrom::Auto,
        )
        .unwrap_err();
        assert!(e.0.contains("more than 3 test cases"), "{e}");
    }

    /// The parser's fuzz target, run as a test with a fixed seed so CI holds it: thousands of
    /// mutations of real results (bytes flipped, cut, repeated, tags spliced in) never panic,
    /// never loop, and whatever is read is consistent.
    #[test]
    fn mutated_results_never_panic_and_what_is_read_adds_up() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let splices: [&[u8]; 6] = [
            b"<testcase>",
            b"</testsuite>",
            b"&lol;",
            b"<!DOCTYPE x>",
            b"\xff\xfe",
            b"<failure/>",
        ];
        for _ in 0..3000 {
            let mut bytes = RED.to_vec();
            for _ in 0..(next() % 8 + 1) {
                if bytes.is_empty() {
                    break;
                }
                let at = (next() as usize) % bytes.len();
                match next() % 4 {
                    0 => bytes[at] = next() as u8,
                    1 => bytes.truncate(at),
                    2 => {
                        let piece = splices[(next() as usize) % splices.len()];
                        bytes.splice(at..at, piece.iter().copied());
                    }
                    _ => {
                        let copy = bytes[at..].iter().take(64).copied().collect::<Vec<_>>();
                        bytes.splice(at..at, copy);
                    }
                }
            }
            if let Ok(tiers) = read_bytes("fuzz.xml", &bytes, Limits::default(), TierFrom::Auto) {
                for c in tiers.values() {
                    assert!(c.failures + c.errors + c.skipped <= c.tests, "{c:?}");
                }
            }
        }
    }
}
