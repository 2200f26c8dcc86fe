//! `--format json` as a script reads it: one JSON object on stdout for every exit and every
//! refusal, valid whatever text from outside it carries (docs/development.md, "Answers").

use crate::common;

/// Text from outside (an exempt reason here; a forge's words, CI's output elsewhere) holding
/// the agent's own colour marks, a bidi override, a C1 control and an escape.
const HOSTILE: &str = "a\u{E000}31\u{E001}b \u{202E}c \u{9B}31m d \u{1b}[2J e";

fn parse(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout:?}"))
}

/// JSON is escaped by the JSON writer alone: the marks, bidi and C1 controls travel as JSON
/// escapes, and the value a script reads is exactly the text.
#[test]
fn json_answers_stay_json_whatever_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("enrollment.toml");
    let toml_reason: String = HOSTILE
        .chars()
        .map(|c| match c {
            c if c.is_ascii() && !c.is_control() => c.to_string(),
            c => format!("\\u{:04X}", c as u32),
        })
        .collect();
    std::fs::write(
        &file,
        format!("[recipe.app]\ntests = \"exempt\"\nreason = \"{toml_reason}\"\n"),
    )
    .unwrap();
    let run = common::agent(&[
        "--format",
        "json",
        "enrollment",
        "--file",
        file.to_str().unwrap(),
        "list",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = parse(&run.stdout);
    assert_eq!(v["recipes"][0]["tests"]["reason"], HOSTILE, "{v:#}");
    for c in ['\u{1b}', '\u{202E}', '\u{9B}', '\u{E000}'] {
        assert!(
            !run.stdout.contains(c),
            "{c:?} raw on stdout: {:?}",
            run.stdout
        );
    }
}

/// `canonical base` with nothing to upgrade from: exit 12, and still one JSON object.
#[test]
fn canonical_base_answers_json_on_every_exit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("enrollment.toml"), "[recipe.mailu]\n").unwrap();
    std::fs::write(
        dir.path().join("agent.toml"),
        "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\n",
    )
    .unwrap();
    let config = dir.path().join("agent.toml");
    let run = common::agent(&[
        "--config",
        config.to_str().unwrap(),
        "--format",
        "json",
        "canonical",
        "base",
        "mailu",
    ]);
    assert_eq!(run.code, 12, "{}{}", run.stdout, run.stderr);
    let v = parse(&run.stdout);
    assert_eq!(v["recipe"], "mailu", "{v:#}");
    assert!(v["base"].is_null(), "{v:#}");
    assert!(
        v["reason"].as_str().unwrap().contains("no canonical"),
        "{v:#}"
    );
    let human = common::agent(&[
        "--config",
        config.to_str().unwrap(),
        "canonical",
        "base",
        "mailu",
    ]);
    assert_eq!(
        (human.code, human.stdout.as_str()),
        (12, ""),
        "a script's $(...) gets nothing"
    );
}
