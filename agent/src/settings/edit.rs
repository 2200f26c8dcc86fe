//! Edits to `enrollment.toml` that keep the operator's comments, order and formatting.
//!
//! Every edit starts from a file that passes its checks, re-checks the result with the same parser
//! before writing, refuses to overwrite a file that changed since it was read, and writes atomically.
//! So a failed edit writes nothing, and a written file is always a valid enrollment.

use std::path::{Path, PathBuf};

use anyhow::Result;
use toml_edit::{value, DocumentMut, Item, Table};

use super::enrollment::{Enrollment, DEFAULT_BRANCH, DEFAULT_UPSTREAM};
use super::rules::{check_recipe_name, check_url};
use super::source::{InputError, TomlSource};
use super::Invalid;
use crate::exit::Busy;
use crate::fsutil::write_atomic;

#[derive(Debug, Default, Clone)]
pub struct NewRecipe {
    pub upstream: Option<String>,
    pub canonical: bool,
    pub tests_exempt: Option<String>,
}

pub struct EnrollmentEdit {
    path: PathBuf,
    original: String,
    doc: DocumentMut,
    current: Enrollment,
}

impl EnrollmentEdit {
    pub fn open(path: &Path) -> Result<Self, Invalid> {
        let source = TomlSource::read(path)?;
        let current = Enrollment::from_source(&source)?;
        let original = source.text().to_string();
        let doc = original.parse::<DocumentMut>().map_err(|e| {
            Invalid(vec![InputError::file(
                path,
                format!("TOML syntax error: {}", e.message()),
            )])
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            original,
            doc,
            current,
        })
    }

    fn arg_error(&self, key: &str, message: impl Into<String>) -> Invalid {
        Invalid(vec![InputError {
            file: self.path.clone(),
            line: None,
            key: key.to_string(),
            message: message.into(),
        }])
    }

    pub fn add(&mut self, name: &str, new: &NewRecipe) -> Result<(), Invalid> {
        let key = format!("recipe.{name}");
        check_recipe_name(name).map_err(|e| self.arg_error(&key, e))?;
        if let Some(existing) = self.current.get(name) {
            let hint = if existing.enrolled {
                "it is already declared"
            } else {
                "it is already declared with enrolled = false: set enrolled = true there instead"
            };
            return Err(self.arg_error(&key, format!("cannot add {name:?}: {hint}")));
        }
        if let Some(url) = &new.upstream {
            check_url(url, false).map_err(|e| self.arg_error(&format!("{key}.upstream"), e))?;
        }
        if let Some(reason) = &new.tests_exempt {
            if reason.trim().is_empty() {
                return Err(
                    self.arg_error(&format!("{key}.reason"), "the exemption needs a reason")
                );
            }
        }

        let mut table = Table::new();
        if let Some(url) = &new.upstream {
            table.insert("upstream", value(url.as_str()));
        }
        if new.canonical {
            table.insert("canonical", value(true));
        }
        if let Some(reason) = &new.tests_exempt {
            table.insert("tests", value("exempt"));
            table.insert("reason", value(reason.as_str()));
        }
        // Comments at the end of the file belong to what is above them: keep them above.
        let trailing = self.doc.trailing().as_str().unwrap_or_default().to_string();
        self.doc.set_trailing("");
        let blank = if self.original.trim().is_empty() {
            ""
        } else {
            "\n"
        };
        table.decor_mut().set_prefix(format!("{trailing}{blank}"));

        let recipes = self.doc.entry("recipe").or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        match recipes {
            Item::Table(t) => {
                t.insert(name, Item::Table(table));
            }
            Item::Value(toml_edit::Value::InlineTable(t)) => {
                t.insert(
                    name,
                    toml_edit::Value::InlineTable(table.into_inline_table()),
                );
            }
            _ => return Err(self.arg_error("recipe", "is not a table")),
        }
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<(), Invalid> {
        let key = format!("recipe.{name}");
        if self.current.get(name).is_none() {
            return Err(self.arg_error(&key, format!("cannot remove {name:?}: it is not declared")));
        }
        let removed = match self.doc.get_mut("recipe") {
            Some(Item::Table(t)) => t.remove(name).is_some(),
            Some(Item::Value(toml_edit::Value::InlineTable(t))) => t.remove(name).is_some(),
            _ => false,
        };
        if !removed {
            return Err(self.arg_error(&key, "declared in a form this command cannot edit"));
        }
        Ok(())
    }

    /// Checks the edited text with the same parser and writes it atomically.
    pub fn commit(self) -> Result<Enrollment> {
        let text = self.doc.to_string();
        let source = TomlSource::parse(&self.path, text.clone())?;
        let edited = Enrollment::from_source(&source)?;
        let on_disk = std::fs::read_to_string(&self.path).unwrap_or_default();
        if on_disk != self.original {
            return Err(Busy(format!(
                "{} changed while it was being edited; nothing was written: run the command again",
                self.path.display()
            ))
            .into());
        }
        write_atomic(&self.path, text.as_bytes(), 0o644)?;
        Ok(edited)
    }
}

/// Today's hand-typed `POLL_REPOS` CSV turned into a new enrollment file's text.
pub fn import_poll_repos(csv: &str, origin: &Path) -> Result<String, Invalid> {
    let mut errors = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (i, entry) in csv.split(',').map(str::trim).enumerate() {
        let key = format!("POLL_REPOS[{i}]");
        if entry.is_empty() {
            continue;
        }
        if let Err(e) = check_recipe_name(entry) {
            errors.push(InputError {
                file: "--poll-repos".into(),
                line: None,
                key,
                message: e,
            });
        } else if names.contains(&entry) {
            errors.push(InputError {
                file: "--poll-repos".into(),
                line: None,
                key,
                message: format!("{entry:?} is listed twice"),
            });
        } else {
            names.push(entry);
        }
    }
    if !errors.is_empty() {
        return Err(Invalid(errors));
    }
    names.sort_unstable();
    let mut text = String::from(
        "# Recipes the cc-ci host tracks. See docs/enrollment.md for every key.\n\
         # Imported from POLL_REPOS by `cc-ci-agent enrollment import`.\n\n[defaults]\n",
    );
    text.push_str(&format!(
        "upstream = {:?}\nbranch = {:?}\n",
        DEFAULT_UPSTREAM, DEFAULT_BRANCH
    ));
    for name in &names {
        text.push_str(&format!("\n[recipe.{name}]\n"));
    }
    // The same parser that reads the file checks what we are about to write.
    let source = TomlSource::parse(origin, text.clone())?;
    Enrollment::from_source(&source)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{classify, Exit};

    #[test]
    fn a_file_changed_during_the_edit_is_not_overwritten() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("enrollment.toml");
        std::fs::write(&path, "[recipe.a]\n")?;
        let mut edit = EnrollmentEdit::open(&path)?;
        edit.add("b", &NewRecipe::default())?;
        std::fs::write(&path, "[recipe.a]\n[recipe.someone-else]\n")?;
        let err = edit
            .commit()
            .err()
            .ok_or_else(|| anyhow::anyhow!("commit succeeded"))?;
        assert_eq!(classify(&err), Exit::Busy, "{err}");
        assert_eq!(
            std::fs::read_to_string(&path)?,
            "[recipe.a]\n[recipe.someone-else]\n"
        );
        Ok(())
    }

    #[test]
    fn import_sorts_trims_and_refuses_duplicates() -> Result<(), Invalid> {
        let text = import_poll_repos(" plausible,custom-html ,, hedgedoc,", Path::new("e.toml"))?;
        let source = TomlSource::parse(Path::new("e.toml"), text)?;
        assert_eq!(
            Enrollment::from_source(&source)?.poll_repos(),
            "custom-html,hedgedoc,plausible"
        );
        assert!(import_poll_repos("a,b,a", Path::new("e.toml")).is_err());
        assert!(import_poll_repos("a,B", Path::new("e.toml")).is_err());
        Ok(())
    }
}
