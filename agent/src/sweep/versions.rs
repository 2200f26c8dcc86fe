//! Which tag is a recipe's latest release: `<semver>+<app version>`, on the branch, ordered by
//! semver precedence of the recipe version. Everything else is ignored, with a reason.

use std::cmp::Ordering;

use serde::Serialize;

use crate::settings::rules::check_release_tag;

/// A tag known to be a release on the branch. Only [`choose`] makes one, so anything promoted
/// came from a release tag: an untagged state has no way to become a canonical.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    pub tag: String,
    pub commit: String,
    #[serde(skip)]
    pub version: semver::Version,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub tag: String,
    pub taken: bool,
    pub reason: String,
}

/// A tag as listed: name and the commit it points at (peeled).
pub struct Candidate<'a> {
    pub tag: &'a str,
    pub commit: &'a str,
}

/// Picks the highest release among `tags` whose commit `on_branch` says is on the branch.
/// `on_branch` is asked for the highest candidates first and only until one is found.
pub fn choose(
    tags: &[Candidate<'_>],
    allow_prerelease: bool,
    mut on_branch: impl FnMut(&str) -> bool,
) -> (Option<Release>, Vec<Verdict>) {
    let mut verdicts = Vec::new();
    let mut releases: Vec<(semver::Version, &Candidate<'_>)> = Vec::new();
    for c in tags {
        match check_release_tag(c.tag) {
            Err(reason) => verdicts.push(Verdict {
                tag: c.tag.into(),
                taken: false,
                reason: format!("not a release: {reason}"),
            }),
            Ok(v) if !v.pre.is_empty() && !allow_prerelease => verdicts.push(Verdict {
                tag: c.tag.into(),
                taken: false,
                reason: "a pre-release (sweep.allow_prerelease = false)".into(),
            }),
            Ok(v) => releases.push((v, c)),
        }
    }
    // Highest precedence first; equal precedence (differing only in build metadata) by the
    // full order, so the choice never depends on listing order.
    releases.sort_by(|(a, _), (b, _)| b.cmp_precedence(a).then_with(|| b.cmp(a)));
    let mut chosen: Option<Release> = None;
    for (version, c) in releases {
        let verdict = match &chosen {
            Some(best) => Verdict {
                tag: c.tag.into(),
                taken: false,
                reason: match version.cmp_precedence(&best.version) {
                    Ordering::Equal => {
                        format!("same precedence as {} (which sorts higher)", best.tag)
                    }
                    _ => format!("lower than {}", best.tag),
                },
            },
            None if on_branch(c.commit) => {
                chosen = Some(Release {
                    tag: c.tag.into(),
                    commit: c.commit.into(),
                    version,
                });
                Verdict {
                    tag: c.tag.into(),
                    taken: true,
                    reason: "the latest release on the branch".into(),
                }
            }
            None => Verdict {
                tag: c.tag.into(),
                taken: false,
                reason: "not on the branch (its commit is not reachable from it)".into(),
            },
        };
        verdicts.push(verdict);
    }
    verdicts.sort_by(|a, b| a.tag.cmp(&b.tag));
    (chosen, verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(tags: &[&str], allow_pre: bool, off_branch: &[&str]) -> Option<String> {
        let cands: Vec<Candidate<'_>> = tags
            .iter()
            .map(|t| Candidate { tag: t, commit: t })
            .collect();
        choose(&cands, allow_pre, |c| !off_branch.contains(&c))
            .0
            .map(|r| r.tag)
    }

    #[test]
    fn orders_by_semver_not_by_bytes_or_date() {
        assert_eq!(
            pick(&["9.1.0+y", "10.0.0+x", "2.0.0+z"], false, &[]).as_deref(),
            Some("10.0.0+x")
        );
        // A backport tagged later but lower is not the latest.
        assert_eq!(
            pick(&["6.0.1+28.0.2-fpm", "5.0.3+27.0.1-fpm"], false, &[]).as_deref(),
            Some("6.0.1+28.0.2-fpm")
        );
    }

    #[test]
    fn ignores_what_is_not_a_release() {
        assert_eq!(
            pick(&["v2.4.8", "1.14.1-rootless_1", "latest"], false, &[]),
            None
        );
        let cands = [
            Candidate {
                tag: "v2.4.8",
                commit: "c",
            },
            Candidate {
                tag: "1.0.0+1",
                commit: "c",
            },
        ];
        let (_, verdicts) = choose(&cands, false, |_| true);
        assert!(verdicts
            .iter()
            .any(|v| v.tag == "v2.4.8" && !v.taken && v.reason.starts_with("not a release")));
    }

    #[test]
    fn prereleases_only_when_allowed() {
        assert_eq!(
            pick(&["2.0.0-rc.1+x", "1.9.0+x"], false, &[]).as_deref(),
            Some("1.9.0+x")
        );
        assert_eq!(
            pick(&["2.0.0-rc.1+x", "1.9.0+x"], true, &[]).as_deref(),
            Some("2.0.0-rc.1+x")
        );
        assert_eq!(
            pick(&["2.0.0-rc.1+x", "2.0.0+x"], true, &[]).as_deref(),
            Some("2.0.0+x")
        );
    }

    #[test]
    fn a_tag_off_the_branch_is_not_on_main() {
        assert_eq!(
            pick(&["3.0.0+x", "2.0.0+x"], false, &["3.0.0+x"]).as_deref(),
            Some("2.0.0+x")
        );
    }

    #[test]
    fn asks_about_the_branch_only_as_far_as_needed() {
        let tags = ["1.0.0+a", "3.0.0+a", "2.0.0+a"];
        let cands: Vec<Candidate<'_>> = tags
            .iter()
            .map(|t| Candidate { tag: t, commit: t })
            .collect();
        let mut asked = Vec::new();
        let (chosen, _) = choose(&cands, false, |c| {
            asked.push(c.to_string());
            true
        });
        assert_eq!(chosen.map(|r| r.tag).as_deref(), Some("3.0.0+a"));
        assert_eq!(asked, ["3.0.0+a"]);
    }
}
