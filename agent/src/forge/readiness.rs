//! `mirrors check-forge` for a Gitea or Forgejo: what the forge says, asked without writing
//! anything, about whether syncs will work. Calls and answers follow forge-facts.md; the scope a
//! call needs follows Gitea's routers/api/v1/api.go (`tokenRequiresScopes` per route group).

use serde::{Deserialize, Serialize};

use super::gitea::Gitea;
use super::{Finding, Verdict};
use crate::deadline::Deadline;

fn finding(what: impl Into<String>, verdict: Verdict, detail: impl Into<String>) -> Finding {
    Finding {
        what: what.into(),
        verdict,
        detail: detail.into(),
    }
}

#[derive(Deserialize)]
pub(super) struct ApiVersion {
    version: String,
}

#[derive(Deserialize)]
pub(super) struct ApiUser {
    login: String,
}

#[derive(Deserialize)]
pub(super) struct ApiOrgPermissions {
    #[serde(default)]
    can_create_repository: bool,
}

/// A branch protection rule (`api.BranchProtection`, modules/structs/repo_branch.go). Gitea
/// before 1.23 has no `enable_force_push`: a protected branch refuses every force push there.
#[derive(Deserialize, Serialize, Default)]
pub(super) struct ApiBranchProtection {
    #[serde(default)]
    branch_name: String,
    #[serde(default)]
    rule_name: String,
    #[serde(default)]
    enable_push: bool,
    #[serde(default)]
    enable_push_whitelist: bool,
    #[serde(default)]
    push_whitelist_usernames: Vec<String>,
    enable_force_push: Option<bool>,
    #[serde(default)]
    enable_force_push_allowlist: bool,
    #[serde(default)]
    force_push_allowlist_usernames: Vec<String>,
}

/// The characters that make a rule name a glob (gobwas/glob's special characters).
const GLOB: [char; 7] = ['*', '?', '[', ']', '{', '}', '\\'];

/// Whether a protection rule's name covers `branch`, as Gitea matches it
/// (models/git/protected_branch.go `Match`): a plain name case-insensitively; a glob with `/` as
/// the separator (`*` and `?` never cross it, `**` does; `[a-z]`, `[!a]`, `{a,b}`, `\`).
fn covers(rule: &str, branch: &str) -> bool {
    if !rule.contains(GLOB) {
        return rule.eq_ignore_ascii_case(branch);
    }
    let pattern: Vec<char> = rule.chars().collect();
    let text: Vec<char> = branch.chars().collect();
    glob_match(&pattern, &text)
}

fn glob_match(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => (0..=t.len()).any(|i| glob_match(&p[2..], &t[i..])),
        Some('*') => (0..=t.len())
            .take_while(|&i| i == 0 || t[i - 1] != '/')
            .any(|i| glob_match(&p[1..], &t[i..])),
        Some('?') => t.first().is_some_and(|c| *c != '/') && glob_match(&p[1..], &t[1..]),
        Some('\\') => match (p.get(1), t.first()) {
            (Some(e), Some(c)) => e == c && glob_match(&p[2..], &t[1..]),
            _ => false,
        },
        Some('[') => match p.iter().position(|c| *c == ']') {
            Some(end) => {
                t.first().is_some_and(|c| in_class(&p[1..end], *c))
                    && glob_match(&p[end + 1..], &t[1..])
            }
            None => t.first() == Some(&'[') && glob_match(&p[1..], &t[1..]),
        },
        Some('{') => match p.iter().position(|c| *c == '}') {
            Some(end) => p[1..end].split(|c| *c == ',').any(|alt| {
                let mut rest = alt.to_vec();
                rest.extend_from_slice(&p[end + 1..]);
                glob_match(&rest, t)
            }),
            None => t.first() == Some(&'{') && glob_match(&p[1..], &t[1..]),
        },
        Some(c) => t.first() == Some(c) && glob_match(&p[1..], &t[1..]),
    }
}

/// `[...]`'s inside: characters and `a-z` ranges, `!` first to negate; never the separator.
fn in_class(class: &[char], c: char) -> bool {
    let (negated, class) = match class.first() {
        Some('!') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut hit = false;
    let mut i = 0;
    while i < class.len() {
        if class.get(i + 1) == Some(&'-') && i + 2 < class.len() {
            hit |= class[i] <= c && c <= class[i + 2];
            i += 3;
        } else {
            hit |= class[i] == c;
            i += 1;
        }
    }
    c != '/' && hit != negated
}

/// The rule Gitea applies to `branch`: the first plain name that covers it, else the first glob
/// (protected_branch_list.go: plain names before globs, each kind in the order made, which is
/// the order the API lists them in within each kind).
fn applied_rule<'a>(
    rules: &'a [ApiBranchProtection],
    branch: &str,
) -> Option<&'a ApiBranchProtection> {
    let name = |r: &'a ApiBranchProtection| {
        if r.rule_name.is_empty() {
            r.branch_name.as_str()
        } else {
            r.rule_name.as_str()
        }
    };
    let plain = rules
        .iter()
        .find(|r| !name(r).contains(GLOB) && covers(name(r), branch));
    plain.or_else(|| {
        rules
            .iter()
            .find(|r| name(r).contains(GLOB) && covers(name(r), branch))
    })
}

/// What a rule that covers the branch means for the bot `login` (`None`: unknown).
fn judge_protection(rule: &ApiBranchProtection, login: Option<&str>, branch: &str) -> Finding {
    let what = format!("protection of {branch}");
    let listed = |names: &[String]| login.is_some_and(|l| names.iter().any(|n| n == l));
    let name = if rule.rule_name.is_empty() {
        &rule.branch_name
    } else {
        &rule.rule_name
    };
    if !rule.enable_push {
        return finding(
            what,
            Verdict::Fail,
            format!("rule {name:?} allows no pushes: allow pushes for the bot, or remove the rule"),
        );
    }
    if rule.enable_push_whitelist && !listed(&rule.push_whitelist_usernames) {
        return finding(
            what,
            Verdict::Fail,
            format!(
                "rule {name:?} allows pushes only by others: add the bot to its push allowlist"
            ),
        );
    }
    let force = match rule.enable_force_push {
        None => Some("this Gitea refuses every force push to a protected branch"),
        Some(false) => Some("it refuses force pushes"),
        Some(true)
            if rule.enable_force_push_allowlist
                && !listed(&rule.force_push_allowlist_usernames) =>
        {
            Some("it allows force pushes only by others")
        }
        Some(true) => None,
    };
    match force {
        Some(why) => finding(what, Verdict::Warn, format!(
            "rule {name:?}: {why}, so a branch upstream rewrote cannot be mirrored; allow the bot to force-push, or exempt it")),
        None => finding(what, Verdict::Ok, format!("rule {name:?} lets the bot push and force-push")),
    }
}

impl Gitea {
    /// Everything `check-forge` asks, in order; `mirrors` are (recipe, branch) of the enrolled.
    pub fn check_readiness(
        &self,
        mirrors: &[(String, String)],
        deadline: Deadline,
    ) -> Vec<Finding> {
        let mut found = Vec::new();
        found.push(match self.get_json::<ApiVersion>("/version", deadline) {
            Ok(Some(v)) => finding("server", Verdict::Ok, format!("version {}", v.version)),
            Ok(None) => finding(
                "server",
                Verdict::Fail,
                "no /api/v1/version: not a Gitea or Forgejo",
            ),
            Err(e) => finding("server", Verdict::Fail, format!("{e:#}")),
        });
        let login = match self.get_json::<ApiUser>("/user", deadline) {
            Ok(Some(u)) => {
                found.push(finding(
                    "token",
                    Verdict::Ok,
                    format!("accepted by the API, as {}", u.login),
                ));
                Some(u.login)
            }
            Ok(None) => None,
            Err(e) => {
                // 403 here is a token without read:user: it may still do all a sync needs.
                let verdict = if format!("{e:#}").contains("HTTP 403") {
                    Verdict::Warn
                } else {
                    Verdict::Fail
                };
                found.push(finding(
                    "token",
                    verdict,
                    format!("{e:#}; (read:user lets this check name the token's user)"),
                ));
                None
            }
        };
        let org = self.org().to_string();
        found.push(
            match self.get_json::<serde_json::Value>(&format!("/orgs/{org}"), deadline) {
                Ok(Some(_)) => finding("org", Verdict::Ok, format!("{org} exists")),
                Ok(None) => finding(
                    "org",
                    Verdict::Fail,
                    format!("no org {org}, or the token's user cannot see it: check forge.org"),
                ),
                Err(e) => finding("org", Verdict::Fail, format!("{e:#}")),
            },
        );
        if let Some(l) = &login {
            let path = format!("/users/{l}/orgs/{org}/permissions");
            found.push(match self.get_json::<ApiOrgPermissions>(&path, deadline) {
                Ok(Some(p)) if p.can_create_repository => finding("create", Verdict::Ok, format!("{l} may create repositories in {org}")),
                Ok(_) => finding("create", Verdict::Fail, format!("{l} may not create repositories in {org}: make it an owner, or a member of a team that may create repositories")),
                Err(e) => finding("create", Verdict::Warn, format!("{e:#}")),
            });
        }
        for (recipe, branch) in mirrors {
            found.extend(self.mirror_readiness(recipe, branch, login.as_deref(), deadline));
        }
        found
    }

    fn mirror_readiness(
        &self,
        recipe: &str,
        branch: &str,
        login: Option<&str>,
        deadline: Deadline,
    ) -> Vec<Finding> {
        use super::Forge;
        let full = self.full_name(recipe);
        let repo = match self.repository(recipe, deadline) {
            Ok(Some(r)) => r,
            Ok(None) => {
                return vec![finding(
                    full,
                    Verdict::Ok,
                    "missing: the next sync creates it",
                )]
            }
            Err(e) => return vec![finding(full, Verdict::Fail, format!("{e:#}"))],
        };
        if let Some(why) = repo.unwritable(&full) {
            return vec![finding(full, Verdict::Fail, why)];
        }
        let mut found = vec![match self.git_push_allowed(recipe, deadline) {
            Ok(()) => finding(
                &full,
                Verdict::Ok,
                "a normal repository; git's push service takes the token (the user's right to push is the API's permissions.push, checked above; Gitea checks it again in its pre-receive hook)",
            ),
            Err(e) => finding(&full, Verdict::Fail, format!("{e:#}")),
        }];
        let issues = format!("/repos/{}/{recipe}/issues?type=pulls&limit=1", self.org());
        if let Err(e) = self.get_json::<serde_json::Value>(&issues, deadline) {
            found.push(finding(
                format!("{full} pull requests"),
                Verdict::Warn,
                format!("{e:#}; merged pull requests cannot be closed or commented on"),
            ));
        }
        let path = format!("/repos/{}/{recipe}/branch_protections", self.org());
        match self.get_json::<Vec<ApiBranchProtection>>(&path, deadline) {
            Ok(Some(rules)) => {
                if let Some(rule) = applied_rule(&rules, branch) {
                    let mut f = judge_protection(rule, login, branch);
                    f.what = format!("{full} {}", f.what);
                    found.push(f);
                }
            }
            Ok(None) => {}
            Err(e) => found.push(finding(
                format!("{full} protection of {branch}"),
                Verdict::Warn,
                format!(
                    "cannot be read ({e:#}); make sure the bot may push and force-push {branch}"
                ),
            )),
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which rule Gitea applies to a branch (models/git/protected_branch.go `Match`,
    /// protected_branch_list.go `GetFirstMatched` after `sort`): globs with `/` as a separator,
    /// a plain name case-insensitively and before any glob.
    #[test]
    fn the_rule_gitea_applies_is_the_one_judged() {
        for (rule, branch, covered) in [
            ("main", "main", true),
            ("Main", "main", true),
            ("ma*", "main", true),
            ("*", "main", true),
            ("*", "release/1.0", false),
            ("release/*", "release/1.0", true),
            ("release/*", "release/1.0/hotfix", false),
            ("release/**", "release/1.0/hotfix", true),
            ("ma?n", "main", true),
            ("m[a-c]in", "main", true),
            ("m[!a]in", "main", false),
            ("{main,master}", "master", true),
            ("mai", "main", false),
        ] {
            assert_eq!(covers(rule, branch), covered, "{rule:?} on {branch:?}");
        }
        let rule = |name: &str, push: bool| ApiBranchProtection {
            rule_name: name.into(),
            enable_push: push,
            enable_force_push: Some(true),
            ..Default::default()
        };
        // Listed glob first, then the plain rule: Gitea applies the plain one.
        let rules = [rule("*", false), rule("main", true)];
        let applied = applied_rule(&rules, "main").map(|r| r.rule_name.as_str());
        assert_eq!(applied, Some("main"));
        assert_eq!(
            applied_rule(&rules, "feature/x").map(|r| r.rule_name.as_str()),
            None
        );
    }

    #[test]
    fn protection_rules_as_gitea_applies_them() {
        let open = ApiBranchProtection {
            enable_push: true,
            enable_force_push: Some(true),
            ..Default::default()
        };
        assert_eq!(
            judge_protection(&open, Some("bot"), "main").verdict,
            Verdict::Ok
        );
        let old = ApiBranchProtection {
            enable_push: true,
            enable_force_push: None,
            ..Default::default()
        };
        assert_eq!(
            judge_protection(&old, Some("bot"), "main").verdict,
            Verdict::Warn
        );
        let closed = ApiBranchProtection::default();
        assert_eq!(
            judge_protection(&closed, Some("bot"), "main").verdict,
            Verdict::Fail
        );
        let others = ApiBranchProtection {
            enable_push: true,
            enable_push_whitelist: true,
            push_whitelist_usernames: vec!["alice".into()],
            ..Default::default()
        };
        assert_eq!(
            judge_protection(&others, Some("bot"), "main").verdict,
            Verdict::Fail
        );
    }
}
