//! docs/schemas/: each command's JSON answer schema, generated from the answer types
//! (`cc_ci_agent::schemas`). The committed files are what the types say, and every schema is
//! one a validator takes; every `--format json` answer the suite sees is checked against its
//! command's (common/answers.rs).

use crate::common;

/// The files are the types' schemas, byte for byte; regenerate with
/// `cargo run --example answer_schemas -- docs/schemas`.
#[test]
fn the_committed_schemas_are_the_answer_types() {
    let dir = common::repo().join("docs/schemas");
    let mut expected: Vec<String> = Vec::new();
    let all = cc_ci_agent::schemas::commands()
        .into_iter()
        .chain(cc_ci_agent::schemas::published());
    for (command, schema) in all {
        let name = cc_ci_agent::schemas::file_name(command);
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        let committed = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert!(
            committed == text,
            "docs/schemas/{name} is not what the answer types say: regenerate it with \
             `cargo run --example answer_schemas -- docs/schemas`"
        );
        jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name}: {e}"));
        expected.push(name);
    }
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    expected.sort();
    assert_eq!(
        found, expected,
        "docs/schemas/ holds a schema no command has"
    );
}

/// A schema that takes anything would check nothing: each answer is closed, so a field the
/// types do not have is refused, and each answer's fields are required where always printed.
#[test]
fn a_schema_refuses_an_answer_the_types_do_not_give() {
    let schemas = cc_ci_agent::schemas::commands();
    let (_, base) = schemas
        .iter()
        .find(|(c, _)| *c == "canonical base")
        .unwrap();
    let v = jsonschema::validator_for(base).unwrap();
    assert!(v.is_valid(&serde_json::json!({ "recipe": "x", "base": "1.0.0+1" })));
    assert!(v.is_valid(&serde_json::json!({ "error": "boom", "exit": 2 })));
    assert!(!v.is_valid(&serde_json::json!({ "recipe": "x", "base": "1", "colour": "red" })));
    assert!(!v.is_valid(&serde_json::json!({ "base": "1.0.0+1" })));
    assert!(!v.is_valid(&serde_json::json!({ "recipe": "x", "base": 7 })));
}
