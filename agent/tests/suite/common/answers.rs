//! Every `--format json` answer a test sees is checked against its command's schema in
//! docs/schemas/ (generated from the answer types, `cc_ci_agent::schemas`): the contract a
//! script reads holds on every path the tests take, refusals and errors included.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::Run;

/// The command families and their subcommands (`cc-ci-agent --help`).
const FAMILIES: [(&str, &[&str]); 12] = [
    (
        "enrollment",
        &[
            "list",
            "check",
            "poll-repos",
            "add",
            "set",
            "remove",
            "import",
        ],
    ),
    ("state", &["status"]),
    ("deploy", &["status", "history"]),
    ("rollback", &[]),
    ("mirrors", &["sync", "status", "check-forge"]),
    ("sweep", &[]),
    ("canonical", &["list", "show", "base", "import"]),
    ("history", &[]),
    ("gc", &[]),
    ("health", &[]),
    ("probe", &[]),
    ("status-page", &[]),
];

/// The command `args` run, as the schemas name it (`canonical base`), if it has a JSON answer.
fn command(args: &[String]) -> Option<String> {
    let at = args
        .iter()
        .position(|a| FAMILIES.iter().any(|(f, _)| f == a))?;
    let (family, subs) = FAMILIES.iter().find(|(f, _)| *f == args[at])?;
    let sub = args[at + 1..].iter().find(|a| subs.contains(&a.as_str()));
    Some(match sub {
        Some(sub) => format!("{family} {sub}"),
        None => (*family).to_string(),
    })
}

fn wants_json(args: &[String]) -> bool {
    args.windows(2)
        .any(|w| w[0] == "--format" && w[1] == "json")
        || args.iter().any(|a| a == "--format=json")
}

fn validators() -> &'static HashMap<String, jsonschema::Validator> {
    static VALIDATORS: OnceLock<HashMap<String, jsonschema::Validator>> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        let dir = super::repo().join("docs/schemas");
        cc_ci_agent::schemas::commands()
            .into_iter()
            .map(|(command, _)| {
                let file = dir.join(cc_ci_agent::schemas::file_name(command));
                let text = std::fs::read_to_string(&file)
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
                let validator = jsonschema::validator_for(&schema)
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                (command.to_string(), validator)
            })
            .collect()
    })
}

/// Checks `run`'s stdout when `args` asked for JSON: one JSON object, valid against the
/// command's schema, on every exit a command chooses (not a signal's).
pub fn check(args: &[String], run: &Run) {
    if !wants_json(args) || args.iter().any(|a| a == "--help" || a == "--version") {
        return;
    }
    let Some(command) = command(args) else {
        return;
    };
    let Some(validator) = validators().get(&command) else {
        return;
    };
    if !(0..128).contains(&run.code) {
        return;
    }
    let answer: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "`{command} --format json` (exit {}) answered no single JSON object ({e}): {:?}\nstderr: {}",
            run.code, run.stdout, run.stderr
        )
    });
    if validator.is_valid(&answer) {
        return;
    }
    let errors = why_invalid(&command, &answer);
    assert!(
        errors.is_empty(),
        "`{command} --format json` (exit {}) breaks docs/schemas/{}:\n{}\n{answer:#}",
        run.code,
        cc_ci_agent::schemas::file_name(&command),
        errors.join("\n")
    );
}

/// Why `answer` fits none of the command's answers: each answer type's own errors.
fn why_invalid(command: &str, answer: &serde_json::Value) -> Vec<String> {
    let (_, schema) = cc_ci_agent::schemas::commands()
        .into_iter()
        .find(|(c, _)| *c == command)
        .unwrap();
    let mut said = Vec::new();
    for branch in schema["anyOf"].as_array().unwrap() {
        let mut one = schema.clone();
        one.as_object_mut().unwrap().remove("anyOf");
        one["$ref"] = branch["$ref"].clone();
        let v = jsonschema::validator_for(&one).unwrap();
        let errors: Vec<String> = v
            .iter_errors(answer)
            .map(|e| format!("  {e} (at {})", e.instance_path()))
            .collect();
        said.push(format!("as {}:\n{}", branch["$ref"], errors.join("\n")));
    }
    said
}
