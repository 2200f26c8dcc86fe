//! What happens on a mirror's pull requests: comments, the reactions to them and the commit
//! statuses CI sets; what the probe writes and watches. Gitea's answers, as its sources give them:
//!
//! | call | answer | source |
//! | --- | --- | --- |
//! | `POST /repos/{o}/{r}/pulls` `{head, base, title, body}` | 201 with `number`; 409 "pull request already exists for these targets" | routers/api/v1/repo/pull.go, models/issues/pull.go (`ErrPullRequestAlreadyExists`) |
//! | `GET /repos/{o}/{r}/pulls/{n}` | one pull request, open or closed: `state`, `title`, `head.ref`, `head.sha`, `head.repo_id`, `base.ref`, `base.repo_id`; 404 for none. From 1.23, `head.sha` is read from `refs/pull/N/head`, which a queued task moves after a push | routers/api/v1/repo/pull.go (`GetPullRequest`), modules/structs/pull.go, services/convert/pull.go, services/pull/pull.go (`AddTestPullRequestTask`) |
//! | `PATCH /repos/{o}/{r}/pulls/{n}` `{title}` | 201 with the pull request | routers/api/v1/repo/pull.go (`EditPullRequest`) |
//! | `GET /repos/{o}/{r}/issues/{n}/comments?since=T` | every comment whose `updated_unix` is at or after T, at once, oldest first, each with `id`, `body`, `user.login`: no `page` or `limit`, so `since` is the only bound | routers/api/v1/repo/issue_comment.go (`ListIssueComments`), models/issues/comment.go (`FindCommentsOptions`) |
//! | `POST /repos/{o}/{r}/issues/{n}/comments` `{body}` | 201 with the comment's `id` and `created_at`, in the server's clock | the same file (`CreateIssueComment`) |
//! | `GET /repos/{o}/{r}/issues/comments/{id}/reactions` | a list of `{user.login, content}`; `null` when there is none | routers/api/v1/repo/issue_reaction.go |
//! | `GET /repos/{o}/{r}/statuses/{sha}?page&limit` | a page of `{id, status, context, creator.login}` (`status`: the name in a listed status, `api.CommitStatus`; `state` only in the request that creates one), with `X-Total-Count`; states pending, success, error, failure, warning | routers/api/v1/repo/status.go, modules/structs/status.go |

use anyhow::{Context, Result};
use serde::Deserialize;

use super::gitea::Gitea;
use crate::deadline::Deadline;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    pub body: String,
    pub login: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaction {
    pub login: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    pub id: u64,
    /// pending, success, error or failure from Drone; Gitea stores whatever it is sent.
    pub state: String,
    pub context: String,
    pub login: String,
}

impl CommitStatus {
    /// Whether the CI said how it ended: success, failure or error, the final states Drone
    /// sends Gitea (go-scm maps killed, declined and skipped to error). Gitea stores any state
    /// it is sent (`NewCommitStatus`): `running` (1.19, 1.20), `skipped` (1.25), `warning` or a
    /// word of another CI's are not an ending.
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "success" | "failure" | "error")
    }
}

/// A comment the agent posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub id: u64,
    /// When, in the forge's own clock and words (RFC 3339): what `since` is given later, so
    /// the two clocks never need to agree.
    pub created_at: String,
}

/// What a listing could read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed<T> {
    All(Vec<T>),
    /// The answer was larger than the agent reads (anyone who may comment can make it so):
    /// why, for the caller to say.
    TooMany(String),
}

/// One pull request looked up by number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullState {
    pub open: bool,
    pub head_ref: String,
    pub base_ref: String,
    /// Its head branch is in the repository itself, not in a fork.
    pub same_repo: bool,
    pub title: String,
    /// The head commit as the forge shows it: Gitea 1.23 and later read it from
    /// `refs/pull/N/head`, which a queued task moves after a push, so it may lag the branch.
    pub head_sha: String,
}

/// Every call finishes by its `deadline`, retries included.
pub trait Discussion {
    /// Opens a pull request from `head` into `base`; its number. When an open one from `head`
    /// into `base` exists already, its number as the forge's refusal gives it, if it does.
    fn open_pull(
        &self,
        recipe: &str,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
        deadline: Deadline,
    ) -> Result<Opened>;
    /// Pull request `number`; `None` when there is none.
    fn pull(&self, recipe: &str, number: u64, deadline: Deadline) -> Result<Option<PullState>>;
    /// Gives pull request `number` a new title.
    fn retitle_pull(
        &self,
        recipe: &str,
        number: u64,
        title: &str,
        deadline: Deadline,
    ) -> Result<()>;
    /// The comments of pull request `number`, oldest first; with `since` (the forge's time, as
    /// [`Posted::created_at`] gives it), only those written or edited at or after it.
    fn comments(
        &self,
        recipe: &str,
        number: u64,
        since: Option<&str>,
        deadline: Deadline,
    ) -> Result<Listed<Comment>>;
    fn post_comment(
        &self,
        recipe: &str,
        number: u64,
        body: &str,
        deadline: Deadline,
    ) -> Result<Posted>;
    fn reactions(&self, recipe: &str, comment: u64, deadline: Deadline) -> Result<Vec<Reaction>>;
    /// The commit statuses set on `sha` (the first page of 50: a probe's head has a few).
    fn statuses(&self, recipe: &str, sha: &str, deadline: Deadline) -> Result<Vec<CommitStatus>>;
}

/// How opening a pull request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    New(u64),
    /// One from the same head into the same base is open already: Gitea's 409 names its
    /// number (`issue_id`), which the caller checks before it trusts it.
    Exists(Option<u64>),
}

#[derive(Deserialize, Default)]
pub(super) struct ApiUser {
    #[serde(default)]
    login: String,
}

#[derive(Deserialize)]
pub(super) struct ApiComment {
    id: i64,
    #[serde(default)]
    body: String,
    #[serde(default)]
    user: Option<ApiUser>,
}

#[derive(Deserialize)]
pub(super) struct ApiReaction {
    #[serde(default)]
    user: Option<ApiUser>,
    #[serde(default)]
    content: String,
}

#[derive(Deserialize)]
pub(super) struct ApiStatus {
    id: i64,
    /// `status` in a listed status (`api.CommitStatus`, modules/structs/status.go, every
    /// version); `state` is only the name in the request that creates one.
    #[serde(default)]
    status: String,
    #[serde(default)]
    context: String,
    #[serde(default)]
    creator: Option<ApiUser>,
}

#[derive(Deserialize)]
pub(super) struct ApiBranch {
    #[serde(default)]
    r#ref: String,
    #[serde(default)]
    sha: String,
    /// -1 when the branch's repository is gone (services/convert/pull.go).
    #[serde(default)]
    repo_id: Option<i64>,
}

/// What `POST .../pulls` answers that the agent reads: its number (the issue APIs take it).
#[derive(Deserialize)]
pub(super) struct ApiCreatedPull {
    number: i64,
}

/// What `POST .../issues/{n}/comments` answers that the agent reads.
#[derive(Deserialize)]
pub(super) struct ApiCreatedComment {
    id: i64,
    #[serde(default)]
    created_at: String,
}

#[derive(Deserialize)]
pub(super) struct ApiPullState {
    #[serde(default)]
    state: String,
    #[serde(default)]
    title: String,
    head: ApiBranch,
    base: ApiBranch,
}

/// The number in Gitea's "pull request already exists for these targets [id: ROW, issue_id:
/// NUMBER, ...]" (models/issues/pull.go; routers/api/v1/repo/pull.go sets `IssueID` to the
/// pull request's index).
fn existing_number(refusal: &str) -> Option<u64> {
    let rest = &refusal[refusal.find("issue_id: ")? + "issue_id: ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A time for a query string: RFC 3339 has `+` and `:`, which a query must escape.
fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn login_of(user: Option<ApiUser>) -> String {
    user.unwrap_or_default().login
}

impl Gitea {
    fn read<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        deadline: Deadline,
    ) -> Result<T> {
        let answer = self.call("GET", path, None, deadline)?;
        let body = self.expect(what, answer, &[200])?;
        serde_json::from_str(&body).with_context(|| format!("{what}: not the JSON Gitea sends"))
    }

    /// A POST answered 201; what it created.
    fn created<T: serde::de::DeserializeOwned>(
        &self,
        (what, path): (&str, &str),
        body: &serde_json::Value,
        causes: &[(u16, String)],
        deadline: Deadline,
    ) -> Result<T> {
        let answer = self.call("POST", path, Some(body), deadline)?;
        let text = self.expect_with(what, answer, &[201], causes)?;
        serde_json::from_str(&text).with_context(|| format!("{what}: not the JSON Gitea sends"))
    }
}

/// A number Gitea gives as an int64 that the agent takes only when positive (an index, an id).
fn positive(n: i64, what: &str, field: &str) -> Result<u64> {
    u64::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .with_context(|| format!("{what}: {field} {n} is not one"))
}

/// A list answer read item by item: `null` items (Gitea 1.19 to 1.22 write one after a
/// converter error) and items that do not decode are left out, counted, and never fail the
/// rest; a `null` list is an empty one (Go's nil slice).
fn items<T: serde::de::DeserializeOwned>(body: &str, what: &str) -> Result<(Vec<T>, usize)> {
    let listed: Option<Vec<serde_json::Value>> =
        serde_json::from_str(body).with_context(|| format!("{what}: not the JSON Gitea sends"))?;
    let mut odd = 0;
    let kept = listed
        .unwrap_or_default()
        .into_iter()
        .filter_map(|item| {
            let decoded = serde_json::from_value(item).ok();
            odd += usize::from(decoded.is_none());
            decoded
        })
        .collect();
    if odd > 0 {
        tracing::warn!("{what}: {odd} item(s) of the answer were not what Gitea sends, left out");
    }
    Ok((kept, odd))
}

/// Pages of commit statuses read at most: 20 pages of 50 (the probe's head has a few).
const STATUS_PAGES: u32 = 20;
const STATUS_PAGE_SIZE: usize = 50;

impl Discussion for Gitea {
    fn open_pull(
        &self,
        recipe: &str,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
        deadline: Deadline,
    ) -> Result<Opened> {
        let org = self.org();
        let request =
            serde_json::json!({ "head": head, "base": base, "title": title, "body": body });
        let causes = [
            (404, format!("the branch {head} or {base} is not on {org}/{recipe}, or its pull requests are turned off (the repository's settings)")),
            (403, "the token's user may not open pull requests here (write:repository, and the pull-request unit enabled)".to_string()),
        ];
        let what = format!("opening a pull request on {org}/{recipe}");
        let path = format!("/repos/{org}/{recipe}/pulls");
        let answer = self.call("POST", &path, Some(&request), deadline)?;
        if answer.status == 409 && answer.oversized.is_none() {
            return Ok(Opened::Exists(existing_number(&answer.body)));
        }
        let text = self.expect_with(&what, answer, &[201], &causes)?;
        let created: ApiCreatedPull = serde_json::from_str(&text)
            .with_context(|| format!("{what}: not the JSON Gitea sends"))?;
        // `number`, not `id`: the issue APIs take the number.
        positive(created.number, &what, "number").map(Opened::New)
    }

    fn pull(&self, recipe: &str, number: u64, deadline: Deadline) -> Result<Option<PullState>> {
        let org = self.org();
        let path = format!("/repos/{org}/{recipe}/pulls/{number}");
        let answer = self.call("GET", &path, None, deadline)?;
        if answer.status == 404 && answer.oversized.is_none() {
            return Ok(None);
        }
        let what = format!("looking up {org}/{recipe}#{number}");
        let body = self.expect(&what, answer, &[200])?;
        let p: ApiPullState = serde_json::from_str(&body)
            .with_context(|| format!("{what}: not the JSON Gitea sends for a pull request"))?;
        Ok(Some(PullState {
            open: p.state == "open",
            same_repo: super::gitea::same_repository(p.head.repo_id, p.base.repo_id),
            head_ref: p.head.r#ref,
            head_sha: p.head.sha,
            base_ref: p.base.r#ref,
            title: p.title,
        }))
    }

    fn retitle_pull(
        &self,
        recipe: &str,
        number: u64,
        title: &str,
        deadline: Deadline,
    ) -> Result<()> {
        let org = self.org();
        let path = format!("/repos/{org}/{recipe}/pulls/{number}");
        let request = serde_json::json!({ "title": title });
        let answer = self.call("PATCH", &path, Some(&request), deadline)?;
        self.expect(
            &format!("retitling {org}/{recipe}#{number}"),
            answer,
            &[201],
        )?;
        Ok(())
    }

    fn comments(
        &self,
        recipe: &str,
        number: u64,
        since: Option<&str>,
        deadline: Deadline,
    ) -> Result<Listed<Comment>> {
        let org = self.org();
        let what = format!("listing the comments of {org}/{recipe}#{number}");
        let mut path = format!("/repos/{org}/{recipe}/issues/{number}/comments");
        if let Some(since) = since {
            path.push_str(&format!("?since={}", query_escape(since)));
        }
        let answer = self.call("GET", &path, None, deadline)?;
        if let (200, Some(why)) = (answer.status, &answer.oversized) {
            return Ok(Listed::TooMany(why.clone()));
        }
        let body = self.expect(&what, answer, &[200])?;
        let (listed, _) = items::<ApiComment>(&body, &what)?;
        Ok(Listed::All(
            listed
                .into_iter()
                .filter_map(|c| {
                    Some(Comment {
                        id: u64::try_from(c.id).ok()?,
                        body: c.body,
                        login: login_of(c.user),
                    })
                })
                .collect(),
        ))
    }

    fn post_comment(
        &self,
        recipe: &str,
        number: u64,
        body: &str,
        deadline: Deadline,
    ) -> Result<Posted> {
        let org = self.org();
        let what = format!("commenting on {org}/{recipe}#{number}");
        let path = format!("/repos/{org}/{recipe}/issues/{number}/comments");
        let causes = [(
            403,
            "the pull request is locked, or the token's user is blocked or lacks write:issue"
                .to_string(),
        )];
        let request = serde_json::json!({ "body": body });
        let created: ApiCreatedComment =
            self.created((&what, &path), &request, &causes, deadline)?;
        let id = positive(created.id, &what, "id")?;
        anyhow::ensure!(
            !created.created_at.is_empty(),
            "{what}: the answer has no created_at"
        );
        Ok(Posted {
            id,
            created_at: created.created_at,
        })
    }

    fn reactions(&self, recipe: &str, comment: u64, deadline: Deadline) -> Result<Vec<Reaction>> {
        let org = self.org();
        let listed: Option<Vec<ApiReaction>> = self.read(
            &format!("listing the reactions to comment {comment} on {org}/{recipe}"),
            &format!("/repos/{org}/{recipe}/issues/comments/{comment}/reactions"),
            deadline,
        )?;
        Ok(listed
            .unwrap_or_default()
            .into_iter()
            .map(|r| Reaction {
                login: login_of(r.user),
                content: r.content,
            })
            .collect())
    }

    /// Every page of the statuses (`X-Total-Count` says how many there are; a server may cap
    /// a page below the `limit` asked), up to [`STATUS_PAGES`].
    fn statuses(&self, recipe: &str, sha: &str, deadline: Deadline) -> Result<Vec<CommitStatus>> {
        let org = self.org();
        let what = format!(
            "listing the commit statuses of {} on {org}/{recipe}",
            crate::git::short(sha)
        );
        let mut all = Vec::new();
        let mut seen = 0;
        for page in 1..=STATUS_PAGES {
            let path = format!(
                "/repos/{org}/{recipe}/statuses/{sha}?page={page}&limit={STATUS_PAGE_SIZE}"
            );
            let answer = self.call("GET", &path, None, deadline)?;
            let total = answer.total;
            let body = self.expect(&what, answer, &[200])?;
            let (listed, odd) = items::<ApiStatus>(&body, &what)?;
            let n = listed.len() + odd;
            seen += n;
            all.extend(listed.into_iter().filter_map(|s| {
                Some(CommitStatus {
                    id: u64::try_from(s.id).ok()?,
                    state: s.status,
                    context: s.context,
                    login: login_of(s.creator),
                })
            }));
            if n == 0 || total.map_or(n < STATUS_PAGE_SIZE, |t| seen >= t) {
                break;
            }
        }
        Ok(all)
    }
}
