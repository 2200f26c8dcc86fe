//! The bad-input corpus in tests/bad-input/: command lines, release tags and forge answers. Each
//! case must give a clear error, its documented exit code, no panic, and write nothing it should
//! not. (Enrollment and config files are the corpus in tests/enrollment/ and tests/config/, walked
//! by corpus.rs and checked against Nix by nix_parity.rs.)

use crate::common;
use crate::support;

use std::path::{Path, PathBuf};

use common::{agent, corpus, snapshot};
use support::forge::{Canned, TestForge};
use support::{refs, GitDaemon, Upstream};

fn case(path: &Path) -> toml::Table {
    toml::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn no_panic(path: &Path, out: &common::Run) {
    assert!(
        !out.stderr.contains("panicked") && !out.stderr.contains("RUST_BACKTRACE"),
        "{}: the agent panicked:\n{}",
        path.display(),
        out.stderr
    );
}

/// A directory with a valid agent.toml and enrollment.toml for cases to point at.
fn host() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let enrollment = dir.path().join("enrollment.toml");
    std::fs::write(
        &enrollment,
        "[defaults]\nupstream = \"https://git.example.org/{recipe}.git\"\n\n[recipe.a]\ncanonical = true\n\n[recipe.not-canonical]\n",
    )
    .unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\n\n[forge]\nkind = \"local\"\npath = \"mirrors\"\n\n[sweep]\ncommand = [\"true\"]\n",
    )
    .unwrap();
    (dir, config, enrollment)
}

#[test]
fn command_lines() {
    let cases = corpus("tests/bad-input/cli");
    assert!(cases.len() >= 14, "{} CLI cases", cases.len());
    for path in &cases {
        let c = case(path);
        let (dir, config, enrollment) = host();
        let args: Vec<String> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                a.as_str()
                    .unwrap()
                    .replace("CONFIG", config.to_str().unwrap())
                    .replace("ENROLLMENT", enrollment.to_str().unwrap())
            })
            .collect();
        let before = snapshot(dir.path());
        let out = agent(&args.iter().map(String::as_str).collect::<Vec<_>>());
        no_panic(path, &out);
        let want = c["exit"].as_integer().unwrap() as i32;
        assert_eq!(
            out.code,
            want,
            "{}: {}\n{}",
            path.display(),
            out.stdout,
            out.stderr
        );
        let message = c["message"].as_str().unwrap();
        assert!(
            out.stderr.contains(message),
            "{}: stderr lacks {message:?}:\n{}",
            path.display(),
            out.stderr
        );
        if let Some(want) = c.get("stdout").and_then(|v| v.as_str()) {
            // JSON is compared as JSON: the same object, however it is laid out.
            let as_json = |t: &str| serde_json::from_str::<serde_json::Value>(t).ok();
            let same = match (as_json(want), as_json(&out.stdout)) {
                (Some(w), Some(got)) => w == got,
                _ => out.stdout.contains(want),
            };
            assert!(
                same,
                "{}: stdout lacks {want:?}:\n{}",
                path.display(),
                out.stdout
            );
        }
        assert_eq!(
            snapshot(dir.path()),
            before,
            "{}: something was written",
            path.display()
        );
        assert!(
            !dir.path().join("state").exists() || args.iter().any(|a| a == "import"),
            "{}: state created",
            path.display()
        );
    }
}

#[test]
fn release_tags() {
    let cases = corpus("tests/bad-input/tags");
    assert!(cases.len() >= 10, "{} tag cases", cases.len());
    for path in &cases {
        let tag = case(path)["tag"].as_str().unwrap().to_string();
        let (dir, config, _) = host();
        let import = dir.path().join("import");
        std::fs::create_dir_all(import.join("a")).unwrap();
        let file = import.join("a/canonical.json");
        std::fs::write(
            &file,
            serde_json::json!({ "recipe": "a", "version": tag, "commit": "0".repeat(40) })
                .to_string(),
        )
        .unwrap();
        let out = agent(&[
            "--config",
            config.to_str().unwrap(),
            "canonical",
            "import",
            import.to_str().unwrap(),
        ]);
        no_panic(path, &out);
        assert_eq!(
            out.code,
            2,
            "{} ({tag:?}): {}\n{}",
            path.display(),
            out.stdout,
            out.stderr
        );
        let first = out.stderr.lines().next().unwrap_or_default().to_string();
        assert!(
            first.contains(&file.display().to_string()) && first.contains("version"),
            "{} ({tag:?}): the error names neither the file nor the key: {first}",
            path.display()
        );
        let list = agent(&[
            "--config",
            config.to_str().unwrap(),
            "--format",
            "json",
            "canonical",
            "list",
        ]);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&list.stdout).unwrap()["canonicals"],
            serde_json::json!([]),
            "{}: a canonical was written",
            path.display()
        );
    }
}

/// An imported canonical.json's commit must be an object id: it is shown cut to 12 characters and
/// handed to git and CI later.
#[test]
fn imported_commits() {
    for commit in [
        "not-a-commit",
        "ééééééééééééééééééééééééééééééééééééééé",
        "--upload-pack=x",
    ] {
        let (dir, config, _) = host();
        let import = dir.path().join("import");
        std::fs::create_dir_all(import.join("a")).unwrap();
        let file = import.join("a/canonical.json");
        std::fs::write(
            &file,
            serde_json::json!({ "recipe": "a", "version": "1.0.0+1", "commit": commit })
                .to_string(),
        )
        .unwrap();
        let out = agent(&[
            "--config",
            config.to_str().unwrap(),
            "canonical",
            "import",
            import.to_str().unwrap(),
        ]);
        no_panic(&file, &out);
        assert_eq!(out.code, 2, "{commit:?}: {}\n{}", out.stdout, out.stderr);
        let first = out.stderr.lines().next().unwrap_or_default().to_string();
        assert!(
            first.contains(&file.display().to_string()) && first.contains("commit"),
            "{commit:?}: the error names neither the file nor the key: {first}"
        );
    }
}

#[test]
fn forge_answers() {
    let cases = corpus("tests/bad-input/forge");
    assert!(cases.len() >= 12, "{} forge cases", cases.len());
    for path in &cases {
        let c = case(path);
        let dir = tempfile::tempdir().unwrap();
        let (up_root, work_root) = (dir.path().join("upstream"), dir.path().join("work"));
        std::fs::create_dir_all(&up_root).unwrap();
        std::fs::create_dir_all(&work_root).unwrap();
        let up = Upstream::create(&up_root, &work_root, "a", "main");
        up.tag("1.0.0+1", true);
        let daemon = GitDaemon::start(&up_root);
        let forge = TestForge::start(&dir.path().join("forge"), "org", "s3cret-token-for-tests");
        std::fs::write(dir.path().join("token"), "s3cret-token-for-tests\n").unwrap();
        std::fs::write(
            dir.path().join("enrollment.toml"),
            format!(
                "[recipe.a]\nupstream = \"git://127.0.0.1:{}/a.git\"\n",
                daemon.port
            ),
        )
        .unwrap();
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\n\n[forge]\nkind = \"gitea\"\nurl = \"{}\"\norg = \"org\"\n\
                 token_file = \"token\"\nallow_insecure = true\n\n[mirrors]\nretries = 0\ngit_timeout = \"20s\"\n\
                 # The forge's 5xx answers are asked again: not a second's wait each here.\n\
                 retry_pause = \"10ms\"\n",
                forge.url
            ),
        )
        .unwrap();
        let sync = || agent(&["--config", config.to_str().unwrap(), "mirrors", "sync"]);
        if !c.get("fresh").and_then(|v| v.as_bool()).unwrap_or(false) {
            let first = sync();
            assert_eq!(
                first.code,
                0,
                "{}: the good first sync: {}",
                path.display(),
                first.stderr
            );
        }
        if c.get("change").and_then(|v| v.as_bool()).unwrap_or(false) {
            up.commit("README.md", "changed\n");
        }
        let mut body = c["body"].as_str().unwrap().as_bytes().to_vec();
        if let Some(n) = c.get("body_repeat").and_then(|v| v.as_integer()) {
            body = body.repeat(n as usize);
        }
        let mut headers = vec![(
            "Content-Type".to_string(),
            c.get("content_type")
                .and_then(|v| v.as_str())
                .unwrap_or("application/json")
                .to_string(),
        )];
        if let Some(l) = c.get("location").and_then(|v| v.as_str()) {
            headers.push(("Location".into(), l.into()));
        }
        let before = refs(&forge.repo("a"));
        let requests_before = forge.requests().len();
        forge.state.lock().unwrap().canned.push(Canned {
            method: c["method"].as_str().unwrap().into(),
            path: c["path"].as_str().unwrap().replace("ORG", "org"),
            status: c["status"].as_integer().unwrap() as u16,
            headers,
            body,
            endless: c.get("endless").and_then(|v| v.as_bool()).unwrap_or(false),
            times: None,
        });
        let out = sync();
        no_panic(path, &out);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(
            out.code,
            c["exit"].as_integer().unwrap() as i32,
            "{}: {all}",
            path.display()
        );
        let message = c["message"].as_str().unwrap();
        assert!(
            all.contains(message),
            "{}: output lacks {message:?}:\n{all}",
            path.display()
        );
        assert!(
            !all.contains("s3cret-token-for-tests"),
            "{}: the token was printed",
            path.display()
        );
        assert!(
            !all.contains('\u{1b}') && !all.contains('\u{7}'),
            "{}: control characters from the forge reached the terminal",
            path.display()
        );
        // No pull request was touched, and the mirror's refs are either as they were or upstream's.
        let writes: Vec<String> = forge.requests()[requests_before..]
            .iter()
            .map(|(r, _)| r.clone())
            .filter(|r| {
                (r.starts_with("POST ") && !r.contains("/git-") && !r.contains("/orgs/"))
                    || r.starts_with("PATCH ")
            })
            .collect();
        assert!(
            writes.is_empty(),
            "{}: the forge was written to: {writes:?}",
            path.display()
        );
        let after = refs(&forge.repo("a"));
        let upstream: Vec<String> = refs(&up.bare);
        assert!(
            after == before
                || after
                    .iter()
                    .filter(|r| !r.contains("refs/pull/"))
                    .eq(upstream.iter()),
            "{}: the mirror is neither as it was nor upstream's: {after:?}",
            path.display()
        );
    }
}

/// docs/configuration.md's sample error is the one the agent prints for that mistake.
#[test]
fn the_documented_sample_error_is_the_agents() {
    let doc = std::fs::read_to_string(common::repo().join("docs/configuration.md")).unwrap();
    let (_, after) = doc.split_once("<!-- sample error:").unwrap();
    let sample = after
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap()
        .replace("/etc/cc-ci/agent.toml", "AGENT_TOML");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "enrollment_file = \"e.toml\"\n\n[deploy]\nflak = \"/srv/cc-ci#cc-ci\"\n",
    )
    .unwrap();
    let run = common::agent(&[
        "--config",
        config.to_str().unwrap(),
        "enrollment",
        "poll-repos",
    ]);
    assert_eq!(run.code, 2);
    let said = run
        .stderr
        .trim()
        .replace(config.to_str().unwrap(), "AGENT_TOML");
    assert_eq!(said, sample);
}
