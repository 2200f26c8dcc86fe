//! Every command's JSON answer as a JSON schema, generated from the answer types themselves
//! (schemars), so the contract a script reads cannot drift from what the agent prints.
//! docs/schemas/<command>.schema.json are these, written by `cargo run --example
//! answer_schemas -- docs/schemas`; the tests check the committed files are what the types
//! say, and check every `--format json` answer they see against its command's schema.

use crate::output::{of, Of};

/// Every command with a JSON answer, and its schema: one of its answers, or the error object
/// every command prints when it fails (docs/exit-codes.md).
pub fn commands() -> Vec<(&'static str, serde_json::Value)> {
    let families = [
        crate::enrollment::answers(),
        crate::database::answers(),
        crate::deploy::answers(),
        crate::mirrors::answers(),
        crate::sweep::answers(),
        crate::gc::answers(),
        crate::health::answers(),
        crate::probe::answers(),
        crate::status::answers(),
    ];
    families
        .into_iter()
        .flatten()
        .map(|a| (a.command, schema(a.command, &a.types)))
        .collect()
}

/// The files the agent publishes for others to read, each with its schema: `health.json` (the
/// health report, also `health --format json`) and the status page's `status.json`.
pub fn published() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "health-report",
            single::<crate::health::Report>("health.json"),
        ),
        (
            "status",
            single::<crate::status::model::Site>("status.json"),
        ),
    ]
}

fn single<T: schemars::JsonSchema>(file: &str) -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    if let Some(map) = schema.as_object_mut() {
        map.insert("title".into(), format!("cc-ci {file}").into());
    }
    close(&mut schema, false);
    schema
}

/// The file a command's schema is kept in: `canonical base` is `canonical-base.schema.json`.
pub fn file_name(command: &str) -> String {
    format!("{}.schema.json", command.replace(' ', "-"))
}

fn schema(command: &str, types: &[Of]) -> serde_json::Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut any: Vec<schemars::Schema> = types.iter().map(|of| of(&mut generator)).collect();
    any.push(of::<crate::output::ErrorAnswer>(&mut generator));
    let defs: serde_json::Map<String, serde_json::Value> =
        generator.take_definitions(true).into_iter().collect();
    let mut schema = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("cc-ci-agent {command} --format json"),
        "anyOf": any,
        "$defs": defs,
    });
    close(&mut schema, false);
    schema
}

/// Closes every object the agent prints: a property the types do not have is an error
/// (`unevaluatedProperties`, which sees what a flattened or tagged part adds). A part of a
/// composite whose object has properties of its own is left open: the whole is closed.
fn close(schema: &mut serde_json::Value, part_of_object: bool) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    let has_properties = map.contains_key("properties");
    if has_properties && !part_of_object {
        map.insert("unevaluatedProperties".into(), false.into());
    }
    for (key, value) in map.iter_mut() {
        match key.as_str() {
            "properties" | "$defs" => {
                if let Some(children) = value.as_object_mut() {
                    children.values_mut().for_each(|c| close(c, false));
                }
            }
            "oneOf" | "anyOf" | "allOf" => {
                if let Some(parts) = value.as_array_mut() {
                    parts.iter_mut().for_each(|p| close(p, has_properties));
                }
            }
            "items" | "additionalProperties" => close(value, false),
            _ => {}
        }
    }
}
