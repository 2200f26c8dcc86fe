//! A TOML file kept together with its text, so that every error can name the file, the line and
//! the dotted key it is about. Parsing, deserializing and later checks all report through here.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml_edit::{ImDocument, Item, Table, Value};

/// Bad input in a file the user wrote: one line, `FILE:LINE: KEY: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InputError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// Dotted key path (`recipe.plausible.upstream`), or empty when the error is about the file.
    pub key: String,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        // Messages from the parsers can span lines; the contract is one line per error.
        let message = self
            .message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        write!(f, ": {message}")
    }
}

impl InputError {
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            key: String::new(),
            message: message.into(),
        }
    }
}

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

pub struct TomlSource {
    path: PathBuf,
    text: String,
    doc: ImDocument<String>,
}

impl TomlSource {
    pub fn read(path: &Path) -> Result<Self, InputError> {
        let bytes =
            std::fs::read(path).map_err(|e| InputError::file(path, format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|e| InputError::file(path, format!("not UTF-8: {e}")))?;
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
                let line = e.span().map(|s| line_of(&text, s.start));
                Err(InputError {
                    file: path.to_path_buf(),
                    line,
                    key: String::new(),
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
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, InputError> {
        let de = toml_edit::de::Deserializer::from(self.doc.clone());
        T::deserialize(de).map_err(|e| {
            let (line, key) = match e.span() {
                Some(span) => (
                    Some(line_of(&self.text, span.start)),
                    self.key_at(span.start),
                ),
                None => (None, String::new()),
            };
            InputError {
                file: self.path.clone(),
                line,
                key,
                message: e.message().to_string(),
            }
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

    /// Span of the key at `path`, or of its table header when the path names a table.
    fn span_of(&self, path: &[&str]) -> Option<Range<usize>> {
        let mut table: &dyn toml_edit::TableLike = self.doc.as_table();
        let mut span = None;
        for (i, part) in path.iter().enumerate() {
            let (key, item) = table.get_key_value(part)?;
            span = key.span().or_else(|| item.span()).or(span);
            if i + 1 < path.len() {
                table = item.as_table_like()?;
            }
        }
        span
    }

    /// The dotted path of the innermost key whose key or value covers `offset`.
    fn key_at(&self, offset: usize) -> String {
        let mut best = Vec::new();
        walk(self.doc.as_table(), &mut Vec::new(), offset, &mut best);
        let parts: Vec<&str> = best.iter().map(String::as_str).collect();
        dotted(&parts)
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

/// 1-based line number of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
