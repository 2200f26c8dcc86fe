//! Gitea's and Forgejo's published API, version by version, as the test forge is held to it.
//!
//! `tests/contract/<server>-<version>.json` are extracts of the API document each server
//! publishes (`/swagger.v1.json`; ../shared/gitea-api/), made by `tests/contract/extract.py`:
//! the operations cc-ci and the test kit's bridge and Drone use, their parameters and
//! responses, and the definitions those reach. With them:
//!
//! - [`check_request`]: a request (the agent's, the bridge's, Drone's) must be one every
//!   supported version has: the path template and method exist, each query parameter is
//!   declared, and a JSON body validates against the body parameter's schema, with no field the
//!   schema lacks;
//! - [`Contract::check_answer`]: what the test forge answers must be what its version would:
//!   the JSON validates against the response schema of that path, method and status, with no
//!   field the definition lacks (so a field under another name, `state` for `status`, fails).
//!
//! Go's encoding/json writes a nil slice, map or pointer as `null`: an array, an object or a
//! referenced definition may be `null` in an answer, and so may an element of a list of them
//! (Gitea 1.19 to 1.22 put one in a pull-request list after a converter error). Status codes a document does not list
//! (Gitea's own error pages) are not checked here; forge-facts.md has those.

// Test kit: a set-up that cannot work panics at once, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{json, Value};

/// Every supported version's extract, oldest first.
pub const DOCUMENTS: [(&str, &str); 9] = [
    (
        "gitea-1.19.0",
        include_str!("../../tests/contract/gitea-1.19.0.json"),
    ),
    (
        "gitea-1.20.0",
        include_str!("../../tests/contract/gitea-1.20.0.json"),
    ),
    (
        "gitea-1.21.0",
        include_str!("../../tests/contract/gitea-1.21.0.json"),
    ),
    (
        "gitea-1.22.0",
        include_str!("../../tests/contract/gitea-1.22.0.json"),
    ),
    (
        "gitea-1.23.0",
        include_str!("../../tests/contract/gitea-1.23.0.json"),
    ),
    (
        "gitea-1.24.0",
        include_str!("../../tests/contract/gitea-1.24.0.json"),
    ),
    (
        "gitea-1.25.4",
        include_str!("../../tests/contract/gitea-1.25.4.json"),
    ),
    (
        "forgejo-7.0.0",
        include_str!("../../tests/contract/forgejo-7.0.0.json"),
    ),
    (
        "forgejo-8.0.0",
        include_str!("../../tests/contract/forgejo-8.0.0.json"),
    ),
];

/// One version's extract.
pub struct Contract {
    pub name: &'static str,
    doc: Value,
}

/// Every supported version's contract.
pub fn all() -> &'static [Contract] {
    static ALL: OnceLock<Vec<Contract>> = OnceLock::new();
    ALL.get_or_init(|| {
        DOCUMENTS
            .iter()
            .map(|(name, text)| Contract {
                name,
                doc: serde_json::from_str(text).unwrap(),
            })
            .collect()
    })
}

/// The contract named `name` (`gitea-1.25.4`).
pub fn named(name: &str) -> &'static Contract {
    all()
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no contract {name}"))
}

/// What is wrong with a request in any supported version: one line per fault, naming it.
pub fn check_request(method: &str, api_path: &str, query: &str, body: &str) -> Vec<String> {
    all()
        .iter()
        .flat_map(|c| c.check_request(method, api_path, query, body))
        .collect()
}

impl Contract {
    /// The operation `method path` matches, and its template.
    pub fn operation(&self, method: &str, api_path: &str) -> Option<(&str, &Value)> {
        let parts: Vec<&str> = api_path.trim_matches('/').split('/').collect();
        let paths = self.doc["paths"].as_object()?;
        paths.iter().find_map(|(template, ops)| {
            let t: Vec<&str> = template.trim_matches('/').split('/').collect();
            let fits = t.len() == parts.len()
                && t.iter()
                    .zip(&parts)
                    .all(|(a, b)| (a.starts_with('{') && a.ends_with('}')) || a == b);
            let op = ops.get(method.to_ascii_lowercase())?;
            fits.then_some((template.as_str(), op))
        })
    }

    pub fn check_request(
        &self,
        method: &str,
        api_path: &str,
        query: &str,
        body: &str,
    ) -> Vec<String> {
        let at = format!("{}: {method} {api_path}", self.name);
        let Some((template, op)) = self.operation(method, api_path) else {
            return vec![format!("{at}: no such operation in the published API")];
        };
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let mut faults = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let name = pair.split('=').next().unwrap_or_default();
            let declared = params
                .iter()
                .any(|p| p["in"] == "query" && p["name"] == name);
            if !declared {
                faults.push(format!(
                    "{at}: query parameter {name:?} is not one of {template}'s"
                ));
            }
        }
        if let Some(schema) = params
            .iter()
            .find(|p| p["in"] == "body")
            .map(|p| &p["schema"])
        {
            match serde_json::from_str::<Value>(body) {
                Ok(sent) => faults.extend(
                    self.validate(schema, &sent, false)
                        .into_iter()
                        .map(|e| format!("{at}: the body: {e}")),
                ),
                Err(e) => faults.push(format!("{at}: the body is not JSON: {e}")),
            }
        }
        faults
    }

    /// What is wrong with the answer `status` `body` to `method api_path` in this version.
    pub fn check_answer(
        &self,
        method: &str,
        api_path: &str,
        status: u16,
        body: &Value,
    ) -> Vec<String> {
        let at = format!("{}: {method} {api_path} answered {status}", self.name);
        let Some((_, op)) = self.operation(method, api_path) else {
            return vec![format!("{at}: no such operation in the published API")];
        };
        match op["responses"].get(status.to_string()) {
            Some(schema) if !schema.is_null() => self
                .validate(schema, body, true)
                .into_iter()
                .map(|e| format!("{at}: {e}"))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `instance` against `schema`, every object closed to the fields its definition names;
    /// in an answer, what Go may write as `null` may be `null`.
    fn validate(&self, schema: &Value, instance: &Value, answer: bool) -> Vec<String> {
        let definitions: BTreeMap<String, Value> = self.doc["definitions"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), json_schema(v, answer)))
            .collect();
        let mut root = json_schema(schema, answer);
        if answer {
            root = nullable(root);
        }
        root["definitions"] = json!(definitions);
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("{}: not a schema: {e}", self.name));
        validator
            .iter_errors(instance)
            .map(|e| format!("{} (at {})", e, e.instance_path()))
            .collect()
    }
}

/// A swagger 2.0 schema as a JSON Schema: objects closed to their properties, and (in an
/// answer) what Go may write as `null` allowed to be `null`.
fn json_schema(schema: &Value, answer: bool) -> Value {
    let Some(obj) = schema.as_object() else {
        return schema.clone();
    };
    let mut out = serde_json::Map::new();
    for (k, v) in obj {
        let converted = match k.as_str() {
            "properties" => Value::Object(
                v.as_object()
                    .unwrap()
                    .iter()
                    .map(|(name, s)| {
                        let s = json_schema(s, answer);
                        (name.clone(), if answer { nullable(s) } else { s })
                    })
                    .collect(),
            ),
            // A slice of pointers (`[]*api.PullRequest`) may hold a nil, written `null`.
            "items" if answer && v.get("$ref").is_some() => nullable(json_schema(v, answer)),
            "items" | "additionalProperties" if v.is_object() => json_schema(v, answer),
            "allOf" => Value::Array(
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|s| json_schema(s, answer))
                    .collect(),
            ),
            "x-nullable" => continue,
            _ => v.clone(),
        };
        out.insert(k.clone(), converted);
    }
    if out.contains_key("properties") && !out.contains_key("additionalProperties") {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    Value::Object(out)
}

/// `schema`, or `null` where Go writes a nil slice, map or pointer.
fn nullable(schema: Value) -> Value {
    let may_be_nil = schema.get("$ref").is_some()
        || matches!(
            schema.get("type").and_then(Value::as_str),
            Some("array" | "object")
        );
    if may_be_nil {
        json!({ "anyOf": [schema, { "type": "null" }] })
    } else {
        schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checks can fail: a commit status under the field name only the request that creates
    /// one uses, an undeclared query parameter, a body field the option lacks, an unknown path.
    #[test]
    fn the_checks_find_what_they_look_for() {
        let c = named("gitea-1.19.0");
        let bad = json!([{ "id": 1, "state": "success", "context": "ci" }]);
        let good = json!([{ "id": 1, "status": "success", "context": "ci", "creator": null }]);
        let path = "/repos/o/r/statuses/abc";
        assert!(!c.check_answer("GET", path, 200, &bad).is_empty());
        assert_eq!(
            c.check_answer("GET", path, 200, &good),
            Vec::<String>::new()
        );
        assert!(!check_request("GET", path, "page=1&colour=red", "").is_empty());
        assert!(check_request("GET", path, "page=1&limit=50", "").is_empty());
        assert!(
            !check_request("POST", "/orgs/o/repos", "", r#"{"name":"x","mirror":true}"#).is_empty()
        );
        assert!(check_request(
            "POST",
            "/orgs/o/repos",
            "",
            r#"{"name":"x","private":false}"#
        )
        .is_empty());
        assert!(!check_request("GET", "/repos/o/r/nothing", "", "").is_empty());
    }
}
