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
use super::source::TomlSource;
use crate::error::Busy;
use crate::error::InputError;
use crate::error::Invalid;
use crate::fsutil::write_atomic;

#[derive(Debug, Default, Clone)]
pub struct NewRecipe {
    pub upstream: Option<String>,
    pub canonical: bool,
    pub tests_exempt: Option<String>,
    pub branch: Option<String>,
    pub upgrade_base: Option<String>,
    /// Declared but not enrolled.
    pub not_enrolled: bool,
}

/// What `enrollment set` changes in one recipe's table; `None` leaves a key as it is.
#[derive(Debug, Default)]
pub struct RecipeChanges {
    pub canonical: Option<bool>,
    /// `Some(None)` removes the pin.
    pub upgrade_base: Option<Option<String>>,
    pub branch: Option<String>,
    pub upstream: Option<String>,
    /// `Some(Some(reason))` exempts, `Some(None)` requires tests.
    pub tests_exempt: Option<Option<String>>,
    pub enrolled: Option<bool>,
}

pub struct EnrollmentEdit {
    /// As the user named it, for messages.
    path: PathBuf,
    /// Where the bytes are: the link's target when `path` is a link.
    target: PathBuf,
    /// The file's own flock, held from the read to the rename.
    _lock: std::fs::File,
    original: String,
    style: Style,
    doc: DocumentMut,
    current: Enrollment,
}

/// How the file is written, kept across an edit: a byte-order mark, CRLF line ends, and
/// whether its last line ends.
#[derive(Debug, Clone, Copy, Default)]
struct Style {
    bom: bool,
    crlf: bool,
    open_end: bool,
}

impl Style {
    fn of(raw: &str) -> Self {
        Self {
            bom: raw.starts_with(super::source::BOM),
            crlf: raw.contains("\r\n"),
            open_end: !raw.is_empty() && !raw.ends_with('\n'),
        }
    }

    fn apply(self, text: &str) -> String {
        // toml_edit ends every line it writes; a file whose last line did not end keeps it so.
        let text = if self.open_end {
            text.strip_suffix('\n').unwrap_or(text)
        } else {
            text
        };
        let body = if self.crlf {
            text.replace("\r\n", "\n").replace('\n', "\r\n")
        } else {
            text.to_string()
        };
        if self.bom {
            format!("{}{body}", super::source::BOM)
        } else {
            body
        }
    }
}

/// How long an edit waits for another edit of the same file to finish.
const EDIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Takes the exclusive flock of the file at `target`. An edit replaces the file by rename, so a
/// lock taken on the old file while it was being replaced is dropped and taken on the new one.
fn lock_file(path: &Path, target: &Path) -> Result<std::fs::File, Invalid> {
    use std::os::unix::fs::MetadataExt;
    let deadline = std::time::Instant::now() + EDIT_WAIT;
    loop {
        let file = std::fs::File::open(target)
            .map_err(|e| Invalid(vec![InputError::file(path, format!("cannot read: {e}"))]))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Invalid(vec![InputError::file(
                    path,
                    format!(
                        "another edit has held it for {}s; nothing was written",
                        EDIT_WAIT.as_secs()
                    ),
                )]))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Invalid(vec![InputError::file(
                    path,
                    format!("cannot lock: {e}"),
                )]))
            }
        }
        let same = match (file.metadata(), std::fs::metadata(target)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if same {
            return Ok(file);
        }
    }
}

impl EnrollmentEdit {
    pub fn open(path: &Path) -> Result<Self, Invalid> {
        let target = match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path).map_err(|e| {
                Invalid(vec![InputError::file(
                    path,
                    format!("cannot resolve the link: {e}"),
                )])
            })?,
            _ => path.to_path_buf(),
        };
        let lock = lock_file(path, &target)?;
        // Read once, under the lock: the same bytes give the style, the check and the edit.
        let raw = crate::fsutil::read_regular(&target, super::source::MAX_FILE, true)
            .map_err(|e| InputError::file(path, format!("cannot read: {e}")))
            .and_then(|b| {
                String::from_utf8(b).map_err(|e| InputError::file(path, format!("not UTF-8: {e}")))
            })?;
        let style = Style::of(&raw);
        let text = raw
            .strip_prefix(super::source::BOM)
            .unwrap_or(&raw)
            .to_string();
        let current = Enrollment::from_source(&TomlSource::parse(path, text.clone())?)?;
        // Edited with LF line ends; written back as the file had them.
        let original = text.replace("\r\n", "\n");
        let doc = original.parse::<DocumentMut>().map_err(|e| {
            Invalid(vec![InputError::file(
                path,
                format!("TOML syntax error: {}", e.message()),
            )])
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            target,
            _lock: lock,
            original: raw,
            style,
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
            return Err(self.arg_error(
                &key,
                format!("cannot add {name:?}: {hint}; `enrollment set {name} ...` changes it"),
            ));
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
        if let Some(b) = &new.branch {
            table.insert("branch", value(b.as_str()));
        }
        if let Some(v) = &new.upgrade_base {
            table.insert("upgrade_base", value(v.as_str()));
        }
        if new.not_enrolled {
            table.insert("enrolled", value(false));
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

    /// Changes keys of a declared recipe's own table; the whole file is checked again at commit.
    pub fn set(&mut self, name: &str, changes: &RecipeChanges) -> Result<(), Invalid> {
        let key = format!("recipe.{name}");
        if self.current.get(name).is_none() {
            return Err(self.arg_error(
                &key,
                format!("cannot set {name:?}: it is not declared (`enrollment add` declares it)"),
            ));
        }
        if let Some(url) = &changes.upstream {
            check_url(url, false).map_err(|e| self.arg_error(&format!("{key}.upstream"), e))?;
        }
        if let Some(Some(reason)) = &changes.tests_exempt {
            if reason.trim().is_empty() {
                return Err(
                    self.arg_error(&format!("{key}.reason"), "the exemption needs a reason")
                );
            }
        }
        let default_canonical = self
            .doc
            .get("defaults")
            .and_then(|d| d.get("canonical"))
            .and_then(Item::as_bool)
            .unwrap_or(false);
        let table = match self.doc.get_mut("recipe").and_then(|r| r.get_mut(name)) {
            Some(Item::Table(t)) => t,
            _ => return Err(self.arg_error(
                &key,
                "declared in a form this command cannot edit (an inline table): edit it by hand",
            )),
        };
        let mut put = |k: &str, v: Option<toml_edit::Value>| match v {
            Some(v) => {
                table.insert(k, Item::Value(v));
            }
            None => {
                table.remove(k);
            }
        };
        if let Some(c) = changes.canonical {
            // The key goes when the value is the default's; it stays to say otherwise.
            put("canonical", (c != default_canonical).then(|| c.into()));
        }
        if let Some(pin) = &changes.upgrade_base {
            put("upgrade_base", pin.as_deref().map(Into::into));
        }
        if let Some(b) = &changes.branch {
            put("branch", Some(b.as_str().into()));
        }
        if let Some(u) = &changes.upstream {
            put("upstream", Some(u.as_str().into()));
        }
        if let Some(exempt) = &changes.tests_exempt {
            put("tests", exempt.as_ref().map(|_| "exempt".into()));
            put("reason", exempt.as_deref().map(Into::into));
        }
        if let Some(e) = changes.enrolled {
            put("enrolled", (!e).then(|| false.into()));
        }
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<(), Invalid> {
        let key = format!("recipe.{name}");
        if self.current.get(name).is_none() {
            return Err(self.arg_error(&key, format!("cannot remove {name:?}: it is not declared")));
        }
        let removed = match self.doc.get_mut("recipe") {
            Some(Item::Table(t)) => remove_keeping_dotted_comments(t, name),
            Some(Item::Value(toml_edit::Value::InlineTable(t))) => {
                t.remove(name).map(|_| Removed::Kept)
            }
            _ => None,
        };
        match removed {
            None => Err(self.arg_error(&key, "declared in a form this command cannot edit")),
            Some(Removed::Kept) => Ok(()),
            Some(Removed::Table(gone)) => {
                if self.is_last_table(gone.position()) {
                    self.give_back_to_the_end(&prefix_of(&gone));
                } else {
                    self.keep_comments_of(&prefix_of(&gone), gone.position());
                }
                Ok(())
            }
            Some(Removed::Dotted { comments, parent }) => {
                // Dotted lines sit close together; a blank line sets the comments off the line
                // above them.
                self.keep_comments_of(&format!("\n{comments}"), parent);
                Ok(())
            }
        }
    }

    /// Whether no `[table]` is written after the place `at`.
    fn is_last_table(&self, at: Option<usize>) -> bool {
        let mut tables = Vec::new();
        explicit_tables(self.doc.as_table(), &mut Vec::new(), &mut tables);
        at.is_some_and(|at| tables.iter().all(|(t, _)| *t < at))
    }

    /// What stood above the removed last table (comments, blank lines) is the file's end again,
    /// less the blank line that set the table off: what `add` found at the end is given back as
    /// it was, and a hand-written last table takes its blank line with it.
    fn give_back_to_the_end(&mut self, prefix: &str) {
        let prefix = prefix.strip_suffix('\n').unwrap_or(prefix);
        let trailing = self.doc.trailing().as_str().unwrap_or_default().to_string();
        self.doc.set_trailing(format!("{prefix}{trailing}"));
    }

    /// Comments above a removed table (a file header, a note on the next section) stay: they go
    /// above the first `[table]` written after `after` (a place in the document; `None` is
    /// the top), or to the end of the file.
    fn keep_comments_of(&mut self, prefix: &str, after: Option<usize>) {
        if !prefix.lines().any(|l| l.trim_start().starts_with('#')) {
            return;
        }
        let mut tables = Vec::new();
        explicit_tables(self.doc.as_table(), &mut Vec::new(), &mut tables);
        let next = tables
            .into_iter()
            .filter(|(at, _)| after.is_none_or(|after| *at > after))
            .min_by_key(|(at, _)| *at)
            .and_then(|(_, path)| table_at(self.doc.as_table_mut(), &path));
        match next {
            Some(t) => {
                let own = prefix_of(t);
                t.decor_mut()
                    .set_prefix(format!("{prefix}{}", own.trim_start_matches('\n')));
            }
            None => {
                let trailing = self.doc.trailing().as_str().unwrap_or_default().to_string();
                self.doc.set_trailing(format!("{prefix}{trailing}"));
            }
        }
    }

    /// Checks the edited text with the same parser and writes it atomically.
    pub fn commit(self) -> Result<Enrollment> {
        let text = self.doc.to_string();
        let source = TomlSource::parse(&self.path, text.clone())?;
        let edited = Enrollment::from_source(&source)?;
        let text = self.style.apply(&text);
        // Under the lock, only an editor that does not take it (a person) can have changed it.
        let on_disk = std::fs::read_to_string(&self.target).unwrap_or_default();
        if on_disk != self.original {
            return Err(Busy(format!(
                "{} changed while it was being edited; nothing was written: run the command again",
                self.path.display()
            ))
            .into());
        }
        write_atomic(&self.target, text.as_bytes(), 0o644)?;
        Ok(edited)
    }
}

/// What stands above a table's header: blank lines and comments.
/// What removing a recipe left to place.
enum Removed {
    /// A `[recipe.x]` table, whose own comments are above it.
    Table(Table),
    /// Dotted lines (`recipe.x.canonical = true`) whose comments had no later line of the same
    /// table to go above; `parent` is where the table holding them is written.
    Dotted {
        comments: String,
        parent: Option<usize>,
    },
    /// Nothing left to place.
    Kept,
}

/// Removes `name` from `recipes`. toml_edit keeps the comment above a dotted line on that
/// line's last key, so removing the lines would drop it: it goes above the next line of the
/// same table when there is one.
fn remove_keeping_dotted_comments(recipes: &mut Table, name: &str) -> Option<Removed> {
    let at = recipes.iter().position(|(k, _)| k == name)?;
    let gone = match recipes.remove(name)? {
        Item::Table(gone) if !gone.is_dotted() => return Some(Removed::Table(gone)),
        Item::Table(gone) => gone,
        _ => return Some(Removed::Kept),
    };
    let comments = dotted_comments(&gone);
    if comments.is_empty() {
        return Some(Removed::Kept);
    }
    let next = recipes.iter().nth(at).map(|(k, _)| k.to_string());
    let Some(next) = next else {
        let parent = recipes.position();
        return Some(Removed::Dotted { comments, parent });
    };
    match recipes.get_mut(&next) {
        Some(Item::Table(t)) if !t.is_dotted() => {
            let own = prefix_of(t);
            t.decor_mut().set_prefix(format!("{comments}{own}"));
        }
        _ => {
            if let Some(mut key) = first_line_key(recipes, &next) {
                let own = key.leaf_decor().prefix().and_then(|p| p.as_str());
                let joined = format!("{comments}{}", own.unwrap_or_default());
                key.leaf_decor_mut().set_prefix(joined);
            }
        }
    }
    Some(Removed::Kept)
}

/// The comment lines written above the lines of a dotted table, in order.
fn dotted_comments(table: &Table) -> String {
    let mut out = String::new();
    for (name, item) in table.iter() {
        let prefix = table.key(name).and_then(|k| k.leaf_decor().prefix());
        for line in prefix.and_then(|p| p.as_str()).unwrap_or_default().lines() {
            if line.trim_start().starts_with('#') {
                out.push_str(line);
                out.push('\n');
            }
        }
        if let Item::Table(t) = item {
            out.push_str(&dotted_comments(t));
        }
    }
    out
}

/// The key that carries the first line's comment of `name` in `table`: the last key of its
/// first dotted line.
fn first_line_key<'a>(table: &'a mut Table, name: &str) -> Option<toml_edit::KeyMut<'a>> {
    let inner = match table.get(name) {
        Some(Item::Table(t)) if t.is_dotted() => t.iter().next().map(|(k, _)| k.to_string()),
        _ => None,
    };
    match inner {
        Some(inner) => first_line_key(table.get_mut(name)?.as_table_mut()?, &inner),
        None => table.key_mut(name),
    }
}

fn prefix_of(table: &Table) -> String {
    table
        .decor()
        .prefix()
        .and_then(|p| p.as_str())
        .unwrap_or_default()
        .to_string()
}

/// Every `[table]` written in the file, with its place in the document and its key path.
fn explicit_tables(table: &Table, path: &mut Vec<String>, out: &mut Vec<(usize, Vec<String>)>) {
    for (key, item) in table.iter() {
        if let Item::Table(t) = item {
            path.push(key.to_string());
            if !t.is_implicit() {
                out.push((t.position().unwrap_or(0), path.clone()));
            }
            explicit_tables(t, path, out);
            path.pop();
        }
    }
}

fn table_at<'a>(mut table: &'a mut Table, path: &[String]) -> Option<&'a mut Table> {
    for key in path {
        table = table.get_mut(key)?.as_table_mut()?;
    }
    Some(table)
}

/// Today's hand-typed `POLL_REPOS` CSV turned into a new enrollment file's text.
pub fn import_poll_repos(
    csv: &str,
    origin: &Path,
    canonical: bool,
    not_recipes: &[String],
) -> Result<String, Invalid> {
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
    for n in not_recipes {
        if !names.contains(&n.as_str()) {
            errors.push(InputError {
                file: "--not-recipe".into(),
                line: None,
                key: n.clone(),
                message: format!("{n:?} is not in --poll-repos"),
            });
        }
    }
    if !errors.is_empty() {
        return Err(Invalid(errors));
    }
    names.retain(|n| !not_recipes.iter().any(|r| r == n));
    names.sort_unstable();
    let mut text = String::from(
        "# Recipes the cc-ci host tracks. See docs/enrollment.md for every key.\n\
         # Imported from POLL_REPOS by `cc-ci-agent enrollment import`.\n\n[defaults]\n",
    );
    text.push_str(&format!(
        "upstream = {:?}\nbranch = {:?}\n",
        DEFAULT_UPSTREAM, DEFAULT_BRANCH
    ));
    if !not_recipes.is_empty() {
        let mut polled: Vec<&String> = not_recipes.iter().collect();
        polled.sort_unstable();
        let list: Vec<String> = polled.iter().map(|n| format!("{n:?}")).collect();
        text.push_str(&format!(
            "\n# Polled by the bridge, but not recipes: never mirrored or swept.\n[bridge]\nalso_poll = [{}]\n",
            list.join(", ")
        ));
    }
    for name in &names {
        text.push_str(&format!("\n[recipe.{name}]\n"));
        if canonical {
            text.push_str("canonical = true\n");
        }
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
        let text = import_poll_repos(
            " plausible,custom-html ,, hedgedoc,",
            Path::new("e.toml"),
            false,
            &[],
        )?;
        let source = TomlSource::parse(Path::new("e.toml"), text)?;
        assert_eq!(
            Enrollment::from_source(&source)?.poll_repos(),
            "custom-html,hedgedoc,plausible"
        );
        assert!(import_poll_repos("a,b,a", Path::new("e.toml"), false, &[]).is_err());
        assert!(import_poll_repos("a,B", Path::new("e.toml"), false, &[]).is_err());
        Ok(())
    }
}
