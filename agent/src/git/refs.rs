//! What a repository says about one branch and its tags, and the plan that makes a mirror equal
//! to its upstream: pure, so it is cheap to compute, print and test.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tag {
    /// The ref's own object: a tag object for an annotated tag, the commit for a lightweight one.
    pub oid: String,
    /// The commit an annotated tag points at (`^{}` in ls-remote), if it is annotated.
    pub peeled: Option<String>,
}

impl Tag {
    pub fn commit(&self) -> &str {
        self.peeled.as_deref().unwrap_or(&self.oid)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RefSet {
    pub branch: Option<String>,
    pub tags: BTreeMap<String, Tag>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("unexpected line in git's ref listing: {0:?}")]
    Line(String),
    /// Real servers list a ref once. A ref name with a newline in it, sent by a crafted server,
    /// prints as two lines, the second naming any ref it likes: refused, not believed.
    #[error("the ref listing names {0} more than once (a ref name with a line break in it?)")]
    Twice(String),
    /// A recipe has hundreds of tags; a listing of more than [`MAX_TAGS`] is not read whole,
    /// so that one repository cannot take the host's memory (a sync lists many at once).
    #[error("the ref listing holds more than {MAX_TAGS} tags: not read (a recipe has hundreds)")]
    TooMany,
}

/// Tags one listing may hold: a recipe repository has hundreds; 100 000 is a few tens of MiB in
/// memory, and a fleet is listed many repositories at a time.
pub const MAX_TAGS: usize = 100_000;

/// A full git object id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
pub fn is_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64)
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// A tag name as git itself would have made it (`git check-ref-format`'s rules, conservatively):
/// a remote that sends anything else is not believed. Found by fuzzing: `refs/tags/` alone was
/// taken as a tag with an empty name. A leading `-` is valid in a full ref name (`git tag` makes
/// `-dash` through `refs/tags/-dash`), and tag names only ever reach git inside a refspec or
/// after `--`, so it is accepted.
fn is_tag_name(tag: &str) -> bool {
    !tag.is_empty()
        && !tag.starts_with(['/', '.'])
        && !tag.ends_with(['/', '.'])
        && !tag.ends_with(".lock")
        && !tag.contains("..")
        && !tag.contains("//")
        && !tag.contains("@{")
        && !tag.contains("/.")
        && !tag
            .chars()
            .any(|c| c.is_control() || " ~^:?*[\\".contains(c))
}

impl RefSet {
    /// Parses `git ls-remote` output (`<oid>\t<ref>`) for `refs/heads/<branch>` and `refs/tags/*`;
    /// other refs are ignored. Also reads `for-each-ref --format='%(objectname)%09%(refname)'`.
    pub fn parse(text: &str, branch: &str) -> Result<Self, ParseError> {
        let mut reader = Self::reader(branch);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (oid, name) = line
                .split_once('\t')
                .ok_or_else(|| ParseError::Line(line.to_string()))?;
            reader.add(oid, name)?;
        }
        Ok(reader.finish())
    }

    /// Reads refs one at a time, as a listing arrives, by the rules of [`RefSet::parse`].
    pub fn reader(branch: &str) -> Reader {
        Reader {
            head: format!("refs/heads/{branch}"),
            set: RefSet::default(),
            peeled: BTreeMap::new(),
        }
    }

    /// Equal branch and equal tags, by tag object id: a re-made annotated tag on the same commit
    /// is a change.
    pub fn same_as(&self, other: &RefSet) -> bool {
        self.branch == other.branch
            && self.tags.len() == other.tags.len()
            && self
                .tags
                .iter()
                .all(|(n, t)| other.tags.get(n).is_some_and(|o| o.oid == t.oid))
    }
}

/// A [`RefSet`] being read, ref by ref.
pub struct Reader {
    head: String,
    set: RefSet,
    peeled: BTreeMap<String, String>,
}

impl Reader {
    /// One `<oid> <ref>`: the branch or a tag is kept, any other ref ignored; a ref git would
    /// not make, a ref named twice or one tag too many is an error.
    pub fn add(&mut self, oid: &str, name: &str) -> Result<(), ParseError> {
        let bad = || ParseError::Line(format!("{oid}\t{name}"));
        let twice = || ParseError::Twice(name.to_string());
        if !is_oid(oid) || name.is_empty() || name.contains(char::is_whitespace) {
            return Err(bad());
        }
        if name == self.head {
            if self.set.branch.replace(oid.to_string()).is_some() {
                return Err(twice());
            }
        } else if let Some(tag) = name.strip_prefix("refs/tags/") {
            if !is_tag_name(tag.strip_suffix("^{}").unwrap_or(tag)) {
                return Err(bad());
            }
            let known = match tag.strip_suffix("^{}") {
                Some(base) => self
                    .peeled
                    .insert(base.to_string(), oid.to_string())
                    .is_some(),
                None => {
                    if self.set.tags.len() == MAX_TAGS {
                        return Err(ParseError::TooMany);
                    }
                    let tag_ref = Tag {
                        oid: oid.to_string(),
                        peeled: None,
                    };
                    self.set.tags.insert(tag.to_string(), tag_ref).is_some()
                }
            };
            if known || self.peeled.len() > MAX_TAGS {
                return Err(if known { twice() } else { ParseError::TooMany });
            }
        }
        Ok(())
    }

    pub fn finish(mut self) -> RefSet {
        for (tag, commit) in std::mem::take(&mut self.peeled) {
            if let Some(t) = self.set.tags.get_mut(&tag) {
                t.peeled = Some(commit);
            }
        }
        self.set
    }
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Change {
    Branch {
        name: String,
        from: Option<String>,
        to: String,
    },
    TagCreate {
        name: String,
        to: String,
    },
    TagMove {
        name: String,
        from: String,
        to: String,
    },
    TagDelete {
        name: String,
        from: String,
    },
}

impl Change {
    pub fn refname(&self) -> String {
        match self {
            Change::Branch { name, .. } => format!("refs/heads/{name}"),
            Change::TagCreate { name, .. }
            | Change::TagMove { name, .. }
            | Change::TagDelete { name, .. } => format!("refs/tags/{name}"),
        }
    }

    /// What the mirror must hold for the push to go ahead (`--force-with-lease=REF:EXPECT`);
    /// empty means the ref must not exist.
    pub fn lease(&self) -> String {
        let expect = match self {
            Change::Branch { from, .. } => from.clone().unwrap_or_default(),
            Change::TagCreate { .. } => String::new(),
            Change::TagMove { from, .. } | Change::TagDelete { from, .. } => from.clone(),
        };
        format!("--force-with-lease={}:{expect}", self.refname())
    }

    /// The push refspec, or a deletion. Never with `+`: a `+` overrides the lease, and the lease
    /// (an explicit expected value) is what allows a forced update, and only while it holds.
    pub fn refspec(&self) -> String {
        match self {
            Change::Branch { to, .. }
            | Change::TagCreate { to, .. }
            | Change::TagMove { to, .. } => format!("{to}:{}", self.refname()),
            Change::TagDelete { .. } => format!(":{}", self.refname()),
        }
    }
}

/// The changes that make `mirror`'s branch and tags equal to `upstream`'s. Nothing else is touched.
pub fn plan(upstream: &RefSet, mirror: &RefSet, branch: &str) -> Vec<Change> {
    let mut changes = Vec::new();
    if let Some(to) = &upstream.branch {
        if mirror.branch.as_ref() != Some(to) {
            changes.push(Change::Branch {
                name: branch.to_string(),
                from: mirror.branch.clone(),
                to: to.clone(),
            });
        }
    }
    for (name, tag) in &upstream.tags {
        match mirror.tags.get(name) {
            None => changes.push(Change::TagCreate {
                name: name.clone(),
                to: tag.oid.clone(),
            }),
            Some(m) if m.oid != tag.oid => changes.push(Change::TagMove {
                name: name.clone(),
                from: m.oid.clone(),
                to: tag.oid.clone(),
            }),
            Some(_) => {}
        }
    }
    for (name, tag) in &mirror.tags {
        if !upstream.tags.contains_key(name) {
            changes.push(Change::TagDelete {
                name: name.clone(),
                from: tag.oid.clone(),
            });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const C: &str = "3333333333333333333333333333333333333333";
    const D: &str = "4444444444444444444444444444444444444444";

    /// A listing of more tags than a recipe could have is refused as it is read, whether git
    /// printed it or an advertisement held it: one repository cannot take the host's memory.
    #[test]
    fn a_listing_of_more_than_max_tags_is_refused() {
        let oid = "a".repeat(40);
        let mut text = format!("{oid}\trefs/heads/main\n");
        for i in 0..MAX_TAGS {
            text.push_str(&format!("{oid}\trefs/tags/1.{i}.0+1\n"));
        }
        let full = RefSet::parse(&text, "main").map(|s| s.tags.len());
        assert_eq!(full, Ok(MAX_TAGS));
        text.push_str(&format!("{oid}\trefs/tags/one-more\n"));
        assert_eq!(RefSet::parse(&text, "main"), Err(ParseError::TooMany));
    }

    #[test]
    fn parses_heads_annotated_and_lightweight_tags() {
        let text = format!(
            "{A}\trefs/heads/main\n{B}\trefs/heads/feature\n{C}\trefs/tags/1.0.0+2.0\n{A}\trefs/tags/1.0.0+2.0^{{}}\n\
             {D}\trefs/tags/light\n{B}\trefs/pull/1/head\n"
        );
        let set = RefSet::parse(&text, "main").unwrap_or_default();
        assert_eq!(set.branch.as_deref(), Some(A));
        assert_eq!(set.tags.len(), 2);
        assert_eq!(
            set.tags["1.0.0+2.0"],
            Tag {
                oid: C.into(),
                peeled: Some(A.into())
            }
        );
        assert_eq!(set.tags["1.0.0+2.0"].commit(), A);
        assert_eq!(set.tags["light"].commit(), D);
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "not a line",
            "xyz\trefs/heads/main",
            &format!("{A}\t"),
            &format!("{A} refs/heads/main"),
            // Tag names git would never make: found by fuzzing (the empty one).
            &format!("{A}\trefs/tags/"),
            &format!("{A}\trefs/tags/^{{}}"),
            &format!("{A}\trefs/tags/../../heads/main"),
            &format!("{A}\trefs/tags/x.lock"),
            &format!("{A}\trefs/tags/a\u{1b}[2J"),
            // A ref name with a line break, as a crafted server sends it: the same ref twice.
            &format!("{A}\trefs/tags/x\n{B}\trefs/heads/main\n{C}\trefs/heads/main"),
            &format!("{A}\trefs/tags/x\n{B}\trefs/tags/x"),
            &format!("{A}\trefs/tags/x\n{B}\trefs/tags/x^{{}}\n{C}\trefs/tags/x^{{}}"),
        ] {
            assert!(RefSet::parse(bad, "main").is_err(), "{bad}");
        }
        let dash = RefSet::parse(&format!("{A}\trefs/tags/-dash\n"), "main");
        assert!(
            dash.is_ok_and(|s| s.tags.contains_key("-dash")),
            "valid in git"
        );

        assert_eq!(RefSet::parse("", "main"), Ok(RefSet::default()));
    }

    #[test]
    fn plans_only_what_differs() {
        let up = RefSet::parse(
            &format!("{B}\trefs/heads/main\n{C}\trefs/tags/new\n{D}\trefs/tags/moved\n{A}\trefs/tags/same\n"),
            "main",
        )
        .unwrap_or_default();
        let mirror = RefSet::parse(
            &format!("{A}\trefs/heads/main\n{C}\trefs/tags/moved\n{A}\trefs/tags/same\n{B}\trefs/tags/gone\n"),
            "main",
        )
        .unwrap_or_default();
        let changes = plan(&up, &mirror, "main");
        assert_eq!(
            changes,
            [
                Change::Branch {
                    name: "main".into(),
                    from: Some(A.into()),
                    to: B.into()
                },
                Change::TagMove {
                    name: "moved".into(),
                    from: C.into(),
                    to: D.into()
                },
                Change::TagCreate {
                    name: "new".into(),
                    to: C.into()
                },
                Change::TagDelete {
                    name: "gone".into(),
                    from: B.into()
                },
            ]
        );
        assert_eq!(
            changes[0].lease(),
            format!("--force-with-lease=refs/heads/main:{A}")
        );
        assert_eq!(changes[2].lease(), "--force-with-lease=refs/tags/new:");
        assert_eq!(changes[3].refspec(), ":refs/tags/gone");
        assert_eq!(
            changes[0].refspec(),
            format!("{B}:refs/heads/main"),
            "no '+': it would override the lease"
        );
        assert!(plan(&up, &up, "main").is_empty());
        assert!(up.same_as(&up) && !up.same_as(&mirror));
    }

    #[test]
    fn a_remade_annotated_tag_on_the_same_commit_is_a_change() {
        let old = RefSet::parse(
            &format!("{C}\trefs/tags/v\n{A}\trefs/tags/v^{{}}\n"),
            "main",
        )
        .unwrap_or_default();
        let new = RefSet::parse(
            &format!("{D}\trefs/tags/v\n{A}\trefs/tags/v^{{}}\n"),
            "main",
        )
        .unwrap_or_default();
        assert!(!old.same_as(&new));
        assert_eq!(plan(&new, &old, "main").len(), 1);
    }
}
