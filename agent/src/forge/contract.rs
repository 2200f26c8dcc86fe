//! The agent's own answer types against the definitions every supported Gitea and Forgejo
//! version publishes (`tests/contract/<server>-<version>.json`, extracts of
//! ../shared/gitea-api/ made by `tests/contract/extract.py`).
//!
//! Each type is walked as serde sees it (a deserializer that records every field the type asks
//! for, and of what kind) and each field is looked up in the definition the answer has, version by
//! version: a field the definition lacks fails (`state` where Gitea sends `status`), and so does
//! a kind that cannot hold what the definition allows (an unsigned number where Gitea sends a
//! signed 64-bit one, which it sets to -1 for a deleted head repository). A field only newer
//! versions send is declared below, with the versions that send it, and checked to be exactly so.

use std::cell::RefCell;
use std::rc::Rc;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Signed,
    Unsigned,
    Float,
    Bool,
    Seq,
    Struct,
    Any,
}

type Fields = Vec<(String, Kind)>;
type Trace = Rc<RefCell<Fields>>;

/// A deserializer that answers every request with an empty value and notes what was asked.
struct Recorder {
    path: String,
    trace: Trace,
}

impl Recorder {
    fn note(&self, kind: Kind) {
        if !self.path.is_empty() {
            self.trace.borrow_mut().push((self.path.clone(), kind));
        }
    }

    fn at(&self, part: &str) -> Recorder {
        let path = if self.path.is_empty() {
            part.to_string()
        } else {
            format!("{}.{part}", self.path)
        };
        Recorder {
            path,
            trace: Rc::clone(&self.trace),
        }
    }
}

#[derive(Debug)]
struct Stop(String);

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Stop(msg.to_string())
    }
}

macro_rules! noted {
    ($($method:ident => $kind:expr, $visit:ident($($value:expr)?);)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
            self.note($kind);
            visitor.$visit($($value)?)
        }
    )*};
}

impl<'de> Deserializer<'de> for Recorder {
    type Error = Stop;

    noted! {
        deserialize_any => Kind::Any, visit_unit();
        deserialize_bool => Kind::Bool, visit_bool(false);
        deserialize_i8 => Kind::Signed, visit_i64(0);
        deserialize_i16 => Kind::Signed, visit_i64(0);
        deserialize_i32 => Kind::Signed, visit_i64(0);
        deserialize_i64 => Kind::Signed, visit_i64(0);
        deserialize_u8 => Kind::Unsigned, visit_u64(0);
        deserialize_u16 => Kind::Unsigned, visit_u64(0);
        deserialize_u32 => Kind::Unsigned, visit_u64(0);
        deserialize_u64 => Kind::Unsigned, visit_u64(0);
        deserialize_f32 => Kind::Float, visit_f64(0.0);
        deserialize_f64 => Kind::Float, visit_f64(0.0);
        deserialize_char => Kind::Str, visit_char('x');
        deserialize_str => Kind::Str, visit_str("");
        deserialize_string => Kind::Str, visit_str("");
        deserialize_bytes => Kind::Str, visit_str("");
        deserialize_byte_buf => Kind::Str, visit_str("");
        deserialize_unit => Kind::Any, visit_unit();
        deserialize_map => Kind::Any, visit_unit();
        deserialize_ignored_any => Kind::Any, visit_unit();
        deserialize_identifier => Kind::Str, visit_str("");
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.note(Kind::Seq);
        visitor.visit_seq(One(Some(self.at("[]"))))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, Stop> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        self.note(Kind::Struct);
        visitor.visit_map(StructFields {
            fields,
            next: 0,
            parent: self,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        Err(Stop(format!("{}: an enum is not traced", self.path)))
    }
}

/// A sequence of one element.
struct One(Option<Recorder>);

impl<'de> SeqAccess<'de> for One {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Stop> {
        match self.0.take() {
            Some(r) => seed.deserialize(r).map(Some),
            None => Ok(None),
        }
    }
}

/// A struct's every field, once.
struct StructFields {
    fields: &'static [&'static str],
    next: usize,
    parent: Recorder,
}

impl<'de> MapAccess<'de> for StructFields {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        let Some(name) = self.fields.get(self.next) else {
            return Ok(None);
        };
        seed.deserialize(IntoDeserializer::<Stop>::into_deserializer(*name))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        let name = self.fields[self.next];
        self.next += 1;
        seed.deserialize(self.parent.at(name))
    }
}

/// Every field `T` reads, with its kind, as dotted paths (`head.repo_id`, `items[].id`).
fn trace<T: serde::de::DeserializeOwned>() -> Vec<(String, Kind)> {
    let trace: Trace = Rc::default();
    let root = Recorder {
        path: String::new(),
        trace: Rc::clone(&trace),
    };
    if let Err(e) = T::deserialize(root) {
        panic!("{}: cannot be traced: {e}", std::any::type_name::<T>());
    }
    let out = trace.borrow().clone();
    out
}

/// The schema at `path` below `schema` in `doc`, resolving `$ref`s; `None` when a part is missing.
fn schema_at<'a>(doc: &'a Value, schema: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = resolve(doc, schema);
    for part in path.split('.') {
        let (name, elements) = match part.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (part, false),
        };
        if !name.is_empty() {
            at = resolve(doc, at.get("properties")?.get(name)?);
        }
        if elements {
            at = resolve(doc, at.get("items")?);
        }
    }
    Some(at)
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/definitions/"))
    {
        Some(name) => resolve(doc, &doc["definitions"][name]),
        None => schema,
    }
}

/// Whether a field read as `kind` can hold every value the schema allows.
fn holds(kind: Kind, schema: &Value) -> bool {
    let ty = schema["type"].as_str().unwrap_or("object");
    match kind {
        Kind::Any => true,
        Kind::Str => ty == "string",
        Kind::Bool => ty == "boolean",
        Kind::Signed => ty == "integer",
        // Gitea's ids and counts are Go int64s: -1 is a value it writes.
        Kind::Unsigned => {
            ty == "integer" && !matches!(schema["format"].as_str(), Some("int64") | None)
        }
        Kind::Float => ty == "number" || ty == "integer",
        Kind::Seq => ty == "array",
        Kind::Struct => ty == "object",
    }
}

fn documents() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/contract");
    let mut docs: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (
                name,
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            )
        })
        .collect();
    docs.sort_by(|a, b| a.0.cmp(&b.0));
    docs
}

/// Fields only some versions send, and exactly which: the agent reads them as optional.
const NEWER_ONLY: [(&str, &str, &[&str]); 3] = [
    (
        "BranchProtection",
        "enable_force_push",
        &["gitea-1.23.0", "gitea-1.24.0", "gitea-1.25.4"],
    ),
    (
        "BranchProtection",
        "enable_force_push_allowlist",
        &["gitea-1.23.0", "gitea-1.24.0", "gitea-1.25.4"],
    ),
    (
        "BranchProtection",
        "force_push_allowlist_usernames",
        &["gitea-1.23.0", "gitea-1.24.0", "gitea-1.25.4"],
    ),
];

/// What is wrong with the fields `traced` read from `definition` in each document.
fn faults(definition: &str, traced: &[(String, Kind)], docs: &[(String, Value)]) -> Vec<String> {
    let mut faults = Vec::new();
    for (version, doc) in docs {
        let root = &doc["definitions"][definition];
        assert!(root.is_object(), "{version} has no definition {definition}");
        for (path, kind) in traced {
            let newer = NEWER_ONLY.iter().find(|(d, f, _)| {
                *d == definition && (f == path || path.starts_with(&format!("{f}.")))
            });
            match (schema_at(doc, root, path), newer) {
                (None, Some((_, _, sent_by))) if !sent_by.contains(&version.as_str()) => {}
                (Some(_), Some((_, _, sent_by))) if !sent_by.contains(&version.as_str()) => faults
                    .push(format!(
                        "{version}: {definition}.{path} is sent here too: declare it"
                    )),
                (None, _) => faults.push(format!("{version}: {definition} has no field {path}")),
                (Some(schema), _) if !holds(*kind, schema) => faults.push(format!(
                    "{version}: {definition}.{path} is {}, read as {kind:?}",
                    serde_json::to_string(schema).unwrap_or_default()
                )),
                _ => {}
            }
        }
    }
    faults
}

/// The agent's answer types and the definition each reads, in every supported version.
#[test]
fn every_field_the_agent_reads_is_in_every_versions_published_definition() {
    use super::discussion as d;
    use super::gitea as g;
    use super::readiness as r;
    let docs = documents();
    assert_eq!(docs.len(), 9, "the supported versions' extracts");
    let types: Vec<(&str, &str, Fields)> = vec![
        ("gitea::ApiPull", "PullRequest", trace::<g::ApiPull>()),
        (
            "gitea::ApiRepository",
            "Repository",
            trace::<g::ApiRepository>(),
        ),
        (
            "discussion::ApiPullState",
            "PullRequest",
            trace::<d::ApiPullState>(),
        ),
        (
            "discussion::ApiComment",
            "Comment",
            trace::<d::ApiComment>(),
        ),
        (
            "discussion::ApiReaction",
            "Reaction",
            trace::<d::ApiReaction>(),
        ),
        (
            "discussion::ApiStatus",
            "CommitStatus",
            trace::<d::ApiStatus>(),
        ),
        (
            "discussion::ApiCreatedPull",
            "PullRequest",
            trace::<d::ApiCreatedPull>(),
        ),
        (
            "discussion::ApiCreatedComment",
            "Comment",
            trace::<d::ApiCreatedComment>(),
        ),
        (
            "readiness::ApiVersion",
            "ServerVersion",
            trace::<r::ApiVersion>(),
        ),
        ("readiness::ApiUser", "User", trace::<r::ApiUser>()),
        (
            "readiness::ApiOrgPermissions",
            "OrganizationPermissions",
            trace::<r::ApiOrgPermissions>(),
        ),
        (
            "readiness::ApiBranchProtection",
            "BranchProtection",
            trace::<r::ApiBranchProtection>(),
        ),
    ];
    let mut all = Vec::new();
    for (name, definition, traced) in &types {
        assert!(!traced.is_empty(), "{name} traced no field");
        all.extend(
            faults(definition, traced, &docs)
                .into_iter()
                .map(|f| format!("{name}: {f}")),
        );
    }
    assert!(all.is_empty(), "{}", all.join("\n"));
}

/// The walk sees what it looks for: a misnamed field, an unsigned id, a nested field.
#[test]
fn the_walk_finds_a_misnamed_field_and_an_unsigned_id() {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Wrong {
        state: String,
        id: u64,
        creator: Option<Login>,
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Login {
        login: String,
    }
    let traced = trace::<Wrong>();
    assert!(
        traced.contains(&("creator.login".to_string(), Kind::Str)),
        "{traced:?}"
    );
    let found = faults("CommitStatus", &traced, &documents()[..1]);
    assert!(
        found.iter().any(|f| f.contains("no field state")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|f| f.contains("CommitStatus.id")),
        "{found:?}"
    );
    assert!(!found.iter().any(|f| f.contains("creator")), "{found:?}");
}
