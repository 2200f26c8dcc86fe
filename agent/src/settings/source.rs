//! A TOML file kept together with its text, so that every error can name the file, the line and
//! the dotted key it is about. Parsing, deserializing and later checks all report through here.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::InputError;
use toml_edit::{ImDocument, Item, Table, Value};

/// Formats a key path the way TOML would accept it back: bare keys as they are, others quoted.
pub fn dotted(path: &[&str]) -> String {
    path.iter()
        .map(|part| {
            let bare = !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if bare {
                (*part).to_string()
            } else {
                format!("{part:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The largest agent.toml or enrollment.toml read: far above any real one, far below memory.
pub const MAX_FILE: u64 = 16 << 20;
pub const BOM: &str = "\u{feff}";

pub struct TomlSource {
    path: PathBuf,
    text: String,
    doc: ImDocument<String>,
}

impl TomlSource {
    pub fn read(path: &Path) -> Result<Self, InputError> {
        let bytes = crate::fsutil::read_regular(path, MAX_FILE, true)
            .map_err(|e| InputError::file(path, format!("cannot read: {e}")))?;
        let mut text = String::from_utf8(bytes)
            .map_err(|e| InputError::file(path, format!("not UTF-8: {e}")))?;
        // A byte-order mark is not TOML; editors put one there. Edits put it back.
        if let Some(rest) = text.strip_prefix(BOM) {
            text = rest.to_string();
        }
        Self::parse(path, text)
    }

    pub fn parse(path: &Path, text: String) -> Result<Self, InputError> {
        match ImDocument::parse(text.clone()) {
            Ok(doc) => Ok(Self {
                path: path.to_path_buf(),
                text,
                doc,
            }),
            Err(e) => {
                let offset = e.span().map(|s| s.start);
                Err(InputError {
                    file: path.to_path_buf(),
                    line: offset.map(|o| line_of(&text, o)),
                    key: offset.map(|o| key_near(&text, o)).unwrap_or_default(),
                    message: format!("TOML syntax error: {}", e.message()),
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn root(&self) -> &Table {
        self.doc.as_table()
    }

    /// Deserializes the whole document; type errors and unknown keys come back located.
    ///
    /// Every unknown key is reported, not only the first: a `key = value` line found unknown is
    /// blanked (the same bytes, as spaces, so every later line keeps its number) and the
    /// document read again, until it reads or an error of another kind is found.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, Vec<InputError>> {
        let mut errors = Vec::new();
        let mut text = self.text.clone();
        for _ in 0..64 {
            let Ok(doc) = ImDocument::parse(text.clone()) else {
                break;
            };
            let source = TomlSource {
                path: self.path.clone(),
                text: text.clone(),
                doc,
            };
            match source.deserialize_once::<T>() {
                Ok(value) if errors.is_empty() => return Ok(value),
                Ok(_) => break,
                Err((error, unknown_at)) => {
                    errors.push(error);
                    match unknown_at.and_then(|at| key_line(&text, at)) {
                        Some(line) => text.replace_range(line.clone(), &" ".repeat(line.len())),
                        None => break,
                    }
                }
            }
        }
        Err(errors)
    }

    /// One reading; on an unknown key, also where it is.
    fn deserialize_once<T: DeserializeOwned>(&self) -> Result<T, (InputError, Option<usize>)> {
        let de = toml_edit::de::Deserializer::from(self.doc.clone());
        T::deserialize(de).map_err(|e| {
            let unknown_at = e
                .message()
                .starts_with("unknown field `")
                .then(|| e.span().map(|s| s.start))
                .flatten();
            // A field missing from the file itself comes with the root table's span: it is
            // named alone, not inside the first key that span starts at.
            let whole = e.message().starts_with("missing field `")
                && e.span() == self.doc.as_table().span();
            let (line, mut key) = match e.span() {
                Some(span) => (
                    Some(line_of(&self.text, span.start)),
                    self.key_at(span.start),
                ),
                None => (None, Vec::new()),
            };
            // `[recipes.x]` is found as the table recipes.x; the unknown key is `recipes`.
            let unknown = e
                .message()
                .strip_prefix("unknown field `")
                .and_then(|m| m.split('`').next());
            if let Some(i) = unknown.and_then(|field| key.iter().rposition(|k| k == field)) {
                key.truncate(i + 1);
            }
            if whole {
                key.clear();
            }
            // A missing key has no span of its own: name it inside the table that lacks it.
            if let Some(field) = e
                .message()
                .strip_prefix("missing field `")
                .and_then(|m| m.split('`').next())
            {
                key.push(field.to_string());
            }
            let key = dotted(&key.iter().map(String::as_str).collect::<Vec<_>>());
            let message = match e.message().strip_suffix(", there are no fields") {
                Some(m) => format!("{m}: this agent version reads no keys in this section yet"),
                None => e.message().to_string(),
            };
            let error = InputError {
                file: self.path.clone(),
                line,
                key,
                message,
            };
            (error, unknown_at)
        })
    }

    /// An error about the value at `path`, located at that key's line when the key exists.
    pub fn error_at(&self, path: &[&str], message: impl Into<String>) -> InputError {
        InputError {
            file: self.path.clone(),
            line: self.span_of(path).map(|s| line_of(&self.text, s.start)),
            key: dotted(path),
            message: message.into(),
        }
    }

    /// Span of the key at `path`; for a key that is absent, of the nearest table that holds it.
    fn span_of(&self, path: &[&str]) -> Option<Range<usize>> {
        let mut table: &dyn toml_edit::TableLike = self.doc.as_table();
        let mut span = None;
        for part in path {
            let Some((key, item)) = table.get_key_value(part) else {
                break;
            };
            span = key.span().or_else(|| item.span()).or(span);
            match item.as_table_like() {
                Some(t) => table = t,
                None => break,
            }
        }
        span
    }

    /// The dotted path of the innermost key whose key or value covers `offset`.
    fn key_at(&self, offset: usize) -> Vec<String> {
        let mut best = Vec::new();
        walk(self.doc.as_table(), &mut Vec::new(), offset, &mut best);
        best
    }
}

fn walk(table: &Table, prefix: &mut Vec<String>, offset: usize, best: &mut Vec<String>) {
    for (name, item) in table.iter() {
        prefix.push(name.to_string());
        let key_hit = table
            .key(name)
            .and_then(|k| k.span())
            .is_some_and(|s| covers(&s, offset));
        match item {
            Item::Table(t) => {
                let header_hit = t.span().is_some_and(|s| covers(&s, offset));
                if (key_hit || header_hit) && prefix.len() > best.len() {
                    *best = prefix.clone();
                }
                walk(t, prefix, offset, best);
            }
            Item::Value(v) => walk_value(v, key_hit, prefix, offset, best),
            Item::ArrayOfTables(a) => {
                let hit = key_hit
                    || a.iter()
                        .any(|t| t.span().is_some_and(|s| covers(&s, offset)));
                if hit && prefix.len() > best.len() {
                    *best = prefix.clone();
                }
                for t in a.iter() {
                    walk(t, prefix, offset, best);
                }
            }
            Item::None => {}
        }
        prefix.pop();
    }
}

fn walk_value(
    v: &Value,
    key_hit: bool,
    prefix: &mut Vec<String>,
    offset: usize,
    best: &mut Vec<String>,
) {
    let value_hit = v.span().is_some_and(|s| covers(&s, offset));
    if (key_hit || value_hit) && prefix.len() >= best.len() {
        *best = prefix.clone();
    }
    if let Value::InlineTable(t) = v {
        for (name, inner) in t.iter() {
            prefix.push(name.to_string());
            let hit = t
                .key(name)
                .and_then(|k| k.span())
                .is_some_and(|s| covers(&s, offset));
            walk_value(inner, hit, prefix, offset, best);
            prefix.pop();
        }
    }
}

fn covers(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && (offset < span.end || span.is_empty() && offset == span.start)
}

/// For a syntax error, where no document exists to walk: the key written on the error's line,
/// inside the nearest table header above it (`recipe.plausible.canonical`), or that header.
fn key_near(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let start = text.as_bytes()[..offset]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let header_of = |line: &str| {
        let t = line.trim_start().strip_prefix('[')?;
        let t = t.trim_start_matches('[');
        Some(
            t.split(']')
                .next()
                .unwrap_or(t)
                .split('#')
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
        )
    };
    let line = text[start..].lines().next().unwrap_or("");
    if let Some(h) = header_of(line) {
        return h;
    }
    let table = text[..start]
        .lines()
        .rev()
        .find_map(header_of)
        .unwrap_or_default();
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('#'))
        .unwrap_or("");
    match (table.is_empty(), key.is_empty()) {
        (_, true) => table,
        (true, false) => key.to_string(),
        (false, false) => format!("{table}.{key}"),
    }
}

/// 1-based line number of a byte offset.
/// The byte range of the line holding `offset`, when it is a `key = value` line (not a table
/// header, not inside a value that spans lines: blanking it must leave valid TOML).
fn key_line(text: &str, offset: usize) -> Option<Range<usize>> {
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let end = text
        .get(offset..)?
        .find('\n')
        .map_or(text.len(), |i| offset + i);
    let line = text.get(start..end)?;
    if line.trim_start().starts_with('[') || !line.contains('=') {
        return None;
    }
    let mut blanked = text.to_string();
    blanked.replace_range(start..end, &" ".repeat(end - start));
    ImDocument::parse(blanked).ok().map(|_| start..end)
}

pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
