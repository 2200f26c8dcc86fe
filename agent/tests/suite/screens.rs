//! Whole screens of human output, as snapshots (`insta`; the files in `snapshots/`): where a test
//! means the screen, it compares all of it, not a few `contains`. What differs from run to run
//! (the temporary directory, ports, times, object ids) is replaced by a placeholder first, so a
//! snapshot changes only when what a person reads does. A new or changed screen: run the test
//! with `INSTA_UPDATE=always`, read the `.snap` diff, commit it. In CI a mismatch fails.

use std::path::Path;

use crate::common::{agent, repo, Run};
use crate::support;

/// The screen with what varies between runs replaced: `dir` by `[DIR]`, `127.0.0.1:PORT` by
/// `127.0.0.1:[PORT]`, RFC 3339 times by `[TIME]`, hex runs of 12 or more by `[OID]`.
pub(crate) fn screen(text: &str, dir: &Path) -> String {
    let text = text.replace(&dir.to_string_lossy().into_owned(), "[DIR]");
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if let Some(n) = time_at(&chars[i..]) {
            out.push_str("[TIME]");
            i += n;
            continue;
        }
        let hex = chars[i..]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            .count();
        let boundary = i == 0 || !chars[i - 1].is_ascii_alphanumeric();
        if hex >= 12
            && boundary
            && chars
                .get(i + hex)
                .is_none_or(|c| !c.is_ascii_alphanumeric())
        {
            out.push_str("[OID]");
            i += hex;
            continue;
        }
        if let Some(n) = seconds_at(&chars[i..]).filter(|_| boundary) {
            out.push_str("[SECS]");
            i += n;
            continue;
        }
        if chars[i..].starts_with(&['1', '2', '7', '.', '0', '.', '0', '.', '1', ':']) {
            out.push_str("127.0.0.1:[PORT]");
            i += 10;
            while chars.get(i).is_some_and(char::is_ascii_digit) {
                i += 1;
            }
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// The length of a measured duration (`0.0s`, `12.34s`) at the start: it differs run to run.
fn seconds_at(s: &[char]) -> Option<usize> {
    let whole = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if whole == 0 || s.get(whole) != Some(&'.') {
        return None;
    }
    let frac = s[whole + 1..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    let n = whole + 1 + frac;
    let ends = s.get(n + 1).is_none_or(|c| !c.is_ascii_alphanumeric());
    (frac > 0 && s.get(n) == Some(&'s') && ends).then_some(n + 1)
}

/// The length of an RFC 3339 UTC time (`2026-12-04T21:49:48Z`, fractions allowed) at the start.
fn time_at(s: &[char]) -> Option<usize> {
    let shape = "dddd-dd-ddTdd:dd:dd";
    if s.len() < shape.len() + 1 {
        return None;
    }
    let fits = shape.chars().zip(s).all(|(want, c)| match want {
        'd' => c.is_ascii_digit(),
        w => w == *c,
    });
    if !fits {
        return None;
    }
    let mut n = shape.len();
    if s.get(n) == Some(&'.') {
        n += 1;
        while s.get(n).is_some_and(char::is_ascii_digit) {
            n += 1;
        }
    }
    (s.get(n) == Some(&'Z')).then_some(n + 1)
}

fn ok(run: &Run) -> &str {
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    &run.stdout
}

#[test]
fn the_placeholders_cover_what_varies_and_nothing_else() {
    let dir = Path::new("/tmp/.tmpAbC123");
    let text = "at 2026-12-04T21:49:48.123Z in /tmp/.tmpAbC123/state: main \
                (none)..f8ce446fcdde, git://127.0.0.1:34579/a.git, 1.0.0+2.0.1, cafe, 2026-12-04, \
                build ok (0.4s), in 12s, 1.5 MiB, v1.2s3";
    assert_eq!(
        screen(text, dir),
        "at [TIME] in [DIR]/state: main (none)..[OID], git://127.0.0.1:[PORT]/a.git, \
         1.0.0+2.0.1, cafe, 2026-12-04, build ok ([SECS]), in 12s, 1.5 MiB, v1.2s3"
    );
}

#[test]
fn enrollment_list_check_and_poll_repos() {
    let file = repo().join("tests/enrollment/valid/example.toml");
    let file = file.to_string_lossy();
    let list = agent(&["enrollment", "--file", &file, "list"]);
    insta::assert_snapshot!("enrollment_list", ok(&list));
    let check = agent(&["enrollment", "--file", &file, "check"]);
    insta::assert_snapshot!("enrollment_check", screen(ok(&check), &repo()));
    let poll = agent(&["enrollment", "--file", &file, "poll-repos"]);
    insta::assert_snapshot!("enrollment_poll_repos", ok(&poll));
}

#[test]
fn a_first_sync_an_idle_one_and_the_status_after() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["hedgedoc", "mumble", "plausible"];
    let (_daemon, upstreams) = support::upstream_fleet(dir.path(), &names);
    for (i, name) in names.iter().enumerate() {
        for n in 0..=i {
            upstreams[*name].tag(&format!("1.{n}.0+2.{n}.0"), n % 2 == 0);
        }
    }
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\n\n[forge]\n\
         kind = \"local\"\npath = \"forge\"\n\n[mirrors]\nconcurrency = 1\n",
    )
    .unwrap();
    let config = config.to_string_lossy();
    let run = |args: &[&str]| {
        let mut full = vec!["--config", &config];
        full.extend_from_slice(args);
        screen(ok(&agent(&full)), dir.path())
    };
    insta::assert_snapshot!("mirrors_sync_first", run(&["mirrors", "sync"]));
    insta::assert_snapshot!("mirrors_sync_idle", run(&["mirrors", "sync"]));
    insta::assert_snapshot!("mirrors_status", run(&["mirrors", "status"]));
    insta::assert_snapshot!("state_status", run(&["state", "status"]));
}

#[test]
fn the_top_level_help() {
    insta::assert_snapshot!("help", ok(&agent(&["--help"])));
}
