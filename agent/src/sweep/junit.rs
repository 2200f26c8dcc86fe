//! JUnit XML results, as recipe CI writes them into `{results}` (pytest's `--junitxml` and most
//! runners' format): `<testsuites>` holding `<testsuite name>`s holding `<testcase classname
//! name>`s, each with an optional `<failure message>`, `<error message>` or `<skipped>`.
//!
//! Recipe CI is untrusted, so its results are read as hostile input: only regular files named
//! `*.xml`, opened without following a link and without blocking on a FIFO; bounded in size per
//! file and in all, in number of files, of test cases and of nesting; no DTD (a `<!DOCTYPE>` is
//! refused, so no entity is ever defined, let alone expanded: a "billion laughs" file ends at its
//! first line); an entity reference other than XML's five and character references is kept as
//! the text it is. A file that breaks any of it makes the whole result unreadable, naming the
//! file and line.

use std::collections::BTreeMap;
use std::path::Path;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// What a results directory may hold before it is refused.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub files: usize,
    pub file_bytes: u64,
    pub total_bytes: u64,
    pub cases: usize,
    pub depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            files: 64,
            file_bytes: 16 << 20,
            total_bytes: 64 << 20,
            cases: 100_000,
            depth: 32,
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

/// Reads every `*.xml` in `dir` and sums its test cases by tier: the `<testsuite>` name when the
/// results hold more than one, else the first dotted part of each `<testcase classname>` (pytest
/// writes one suite, named `pytest`, and the classname is the test's module path).
pub fn read_dir(dir: &Path, limits: Limits) -> Result<Tiers, Unreadable> {
    let files = xml_files(dir, limits)?;
    if files.is_empty() {
        return Err(Unreadable(format!(
            "{}: no results: the suite wrote no *.xml file there",
            dir.display()
        )));
    }
    let mut cases = Vec::new();
    for (path, bytes) in &files {
        parse(path, bytes, limits, &mut cases)?;
    }
    Ok(summed(cases))
}

/// One file's results, as [`read_dir`] reads each: what a fuzzer drives.
pub fn read_bytes(name: &str, bytes: &[u8], limits: Limits) -> Result<Tiers, Unreadable> {
    let mut cases = Vec::new();
    parse(name, bytes, limits, &mut cases)?;
    Ok(summed(cases))
}

fn summed(cases: Vec<Case>) -> Tiers {
    let suites: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.suite.as_str()).collect();
    let by_suite = suites.len() > 1;
    let mut tiers = Tiers::new();
    for case in cases {
        let tier = if by_suite {
            case.suite.clone()
        } else {
            case.class.split('.').next().unwrap_or_default().to_string()
        };
        add(tiers.entry(tier).or_default(), case);
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
        let test = cut(&format!("{}::{}", case.class, case.name));
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
    suite: String,
    class: String,
    name: String,
    seconds: f64,
    outcome: Outcome,
}

/// The test cases of one file, appended to `cases`.
fn parse(
    file: &str,
    bytes: &[u8],
    limits: Limits,
    cases: &mut Vec<Case>,
) -> Result<(), Unreadable> {
    let mut reader = Reader::from_reader(bytes);
    let line = |at: u64| {
        let upto = usize::try_from(at).unwrap_or(usize::MAX).min(bytes.len());
        bytes[..upto].iter().filter(|b| **b == b'\n').count() + 1
    };
    let mut walk = Walk::default();
    loop {
        let event = reader.read_event().map_err(|e| {
            Unreadable(format!(
                "{file}:{}: not well-formed XML: {e}",
                line(reader.error_position())
            ))
        })?;
        let at = || line(reader.buffer_position());
        let refuse = |why: String| Unreadable(format!("{file}:{}: {why}", at()));
        match event {
            Event::Eof => break,
            Event::DocType(_) => {
                return Err(refuse(
                    "a DOCTYPE: results may not declare a DTD or entities".into(),
                ))
            }
            Event::Start(e) => {
                walk.depth += 1;
                if walk.depth > limits.depth {
                    return Err(refuse(format!("nested deeper than {}", limits.depth)));
                }
                walk.open(&e, false, cases, limits).map_err(refuse)?;
            }
            Event::Empty(e) => walk.open(&e, true, cases, limits).map_err(refuse)?,
            Event::End(e) => {
                walk.depth = walk.depth.saturating_sub(1);
                walk.close(e.name().as_ref(), cases);
            }
            Event::Text(t) => walk.text(&t.decode().unwrap_or_default()),
            Event::CData(t) => walk.text(&String::from_utf8_lossy(&t)),
            Event::GeneralRef(r) => {
                // XML's own and character references only; any other stays as written.
                let name = String::from_utf8_lossy(&r);
                let text = match r.resolve_char_ref().ok().flatten() {
                    Some(c) => c.to_string(),
                    None => predefined(&name).map_or_else(|| format!("&{name};"), str::to_string),
                };
                walk.text(&text);
            }
            _ => {}
        }
    }
    Ok(())
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

/// Where the reader is: the suite and test case open, and the failure text being gathered.
#[derive(Default)]
struct Walk {
    depth: usize,
    suite: String,
    /// The case open now (its `<testcase>` not yet closed).
    case: Option<Case>,
    /// Inside a `<failure>` or `<error>`: its text is the message when it had no attribute.
    in_failure: bool,
}

impl Walk {
    fn open(
        &mut self,
        e: &BytesStart<'_>,
        empty: bool,
        cases: &mut Vec<Case>,
        limits: Limits,
    ) -> Result<(), String> {
        match e.name().as_ref() {
            b"testsuite" if !empty => self.suite = attr(e, "name"),
            b"testcase" => {
                if cases.len() >= limits.cases {
                    return Err(format!("more than {} test cases", limits.cases));
                }
                let case = Case {
                    suite: self.suite.clone(),
                    class: attr(e, "classname"),
                    name: attr(e, "name"),
                    seconds: attr(e, "time")
                        .parse()
                        .ok()
                        .filter(|t: &f64| t.is_finite())
                        .unwrap_or(0.0),
                    outcome: Outcome::Passed,
                };
                if empty {
                    cases.push(case);
                } else {
                    self.case = Some(case);
                }
            }
            kind @ (b"failure" | b"error" | b"skipped") => {
                let message = attr(e, "message");
                if let Some(case) = &mut self.case {
                    case.outcome = match kind {
                        b"failure" => Outcome::Failed(cut(&message)),
                        b"error" => Outcome::Errored(cut(&message)),
                        _ => Outcome::Skipped,
                    };
                }
                self.in_failure = !empty && kind != b"skipped" && message.is_empty();
            }
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self, name: &[u8], cases: &mut Vec<Case>) {
        match name {
            b"testcase" => cases.extend(self.case.take()),
            b"failure" | b"error" => self.in_failure = false,
            b"testsuite" => self.suite.clear(),
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
        let tiers = read_bytes("backup-red.xml", RED, Limits::default()).unwrap();
        let backup = &tiers["backup"];
        assert_eq!((backup.tests, backup.failures, backup.skipped), (2, 1, 1));
        let first = backup.first_failure.as_ref().unwrap();
        assert_eq!(first.test, "backup.test_backup::test_restore_keeps_posts");
        assert!(first
            .message
            .starts_with("AssertionError: posts lost after restore"));
        assert!(tiers["install"].green() && !backup.green());
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
        };
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            std::fs::write(dir.path().join(format!("{i}.xml")), "<testsuites/>").unwrap();
        }
        let e = read_dir(dir.path(), small).unwrap_err();
        assert!(e.0.contains("more than 2 result files"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.xml"), RED).unwrap();
        std::fs::write(dir.path().join("b.xml"), RED).unwrap();
        let roomy = Limits {
            cases: 1000,
            ..small
        };
        let e = read_dir(dir.path(), roomy).unwrap_err();
        assert!(e.0.contains("in all"), "{e}");

        let e = read_bytes(
            "red.xml",
            RED,
            Limits {
                total_bytes: 1 << 20,
                ..small
            },
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
            if let Ok(tiers) = read_bytes("fuzz.xml", &bytes, Limits::default()) {
                for c in tiers.values() {
                    assert!(c.failures + c.errors + c.skipped <= c.tests, "{c:?}");
                }
            }
        }
    }
}
