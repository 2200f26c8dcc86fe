//! What happens on a mirror's pull requests: comments, the reactions to them and the commit
//! statuses CI sets; what the probe writes and watches. Gitea's answers, as its sources give them:
//!
//! | call | answer | source |
//! | --- | --- | --- |
//! | `POST /repos/{o}/{r}/pulls` `{head, base, title, body}` | 201 with `number`; 409 "pull request already exists for these targets" | routers/api/v1/repo/pull.go, models/issues/pull.go (`ErrPullRequestAlreadyExists`) |
//! | `GET /repos/{o}/{r}/issues/{n}/comments` | every comment at once, oldest first, each with `id`, `body`, `user.login`: no `page` or `limit` | routers/api/v1/repo/issue_comment.go (`ListIssueComments`) |
//! | `POST /repos/{o}/{r}/issues/{n}/comments` `{body}` | 201 with the comment's `id` | the same file (`CreateIssueComment`) |
//! | `GET /repos/{o}/{r}/issues/comments/{id}/reactions` | a list of `{user.login, content}`; `null` when there is none | routers/api/v1/repo/issue_reaction.go |
//! | `GET /repos/{o}/{r}/statuses/{sha}?page&limit` | a page of `{id, state, context, creator.login}`; states pending, success, error, failure, warning | routers/api/v1/repo/status.go |

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
    /// pending, success, error, failure or warning.
    pub state: String,
    pub context: String,
    pub login: String,
}

impl CommitStatus {
    /// Whether the CI said how it ended (anything but pending).
    pub fn is_final(&self) -> bool {
        self.state != "pending"
    }
}

/// Every call finishes by its `deadline`, retries included.
pub trait Discussion {
    /// Opens a pull request from `head` into `base`; its number. An open one from `head` that
    /// already exists is an error the caller avoids by looking first.
    fn open_pull(
        &self,
        recipe: &str,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
        deadline: Deadline,
    ) -> Result<u64>;
    /// Every comment of pull request `number`, oldest first.
    fn comments(&self, recipe: &str, number: u64, deadline: Deadline) -> Result<Vec<Comment>>;
    /// Posts a comment; its id.
    fn post_comment(
        &self,
        recipe: &str,
        number: u64,
        body: &str,
        deadline: Deadline,
    ) -> Result<u64>;
    fn reactions(&self, recipe: &str, comment: u64, deadline: Deadline) -> Result<Vec<Reaction>>;
    /// The commit statuses set on `sha` (the first page of 50: a probe's head has a few).
    fn statuses(&self, recipe: &str, sha: &str, deadline: Deadline) -> Result<Vec<CommitStatus>>;
}

#[derive(Deserialize, Default)]
struct ApiUser {
    #[serde(default)]
    login: String,
}

#[derive(Deserialize)]
struct ApiComment {
    id: u64,
    #[serde(default)]
    body: String,
    #[serde(default)]
    user: Option<ApiUser>,
}

#[derive(Deserialize)]
struct ApiReaction {
    #[serde(default)]
    user: Option<ApiUser>,
    #[serde(default)]
    content: String,
}

#[derive(Deserialize)]
struct ApiStatus {
    id: u64,
    #[serde(default)]
    state: String,
    #[serde(default)]
    context: String,
    #[serde(default)]
    creator: Option<ApiUser>,
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

    /// A POST answered 201; the number `field` of what it created.
    fn created(
        &self,
        (what, path): (&str, &str),
        body: &serde_json::Value,
        causes: &[(u16, String)],
        field: &str,
        deadline: Deadline,
    ) -> Result<u64> {
        let answer = self.call("POST", path, Some(body), deadline)?;
        let text = self.expect_with(what, answer, &[201], causes)?;
        let created: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{what}: not the JSON Gitea sends"))?;
        created[field]
            .as_u64()
            .with_context(|| format!("{what}: the answer has no {field}"))
    }
}

impl Discussion for Gitea {
    fn open_pull(
        &self,
        recipe: &str,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
        deadline: Deadline,
    ) -> Result<u64> {
        let org = self.org();
        let request =
            serde_json::json!({ "head": head, "base": base, "title": title, "body": body });
        let causes = [
            (409, format!("an open pull request from {head} into {base} exists already")),
            (404, format!("the branch {head} or {base} is not on {org}/{recipe}, or its pull requests are turned off (the repository's settings)")),
            (403, "the token's user may not open pull requests here (write:repository, and the pull-request unit enabled)".to_string()),
        ];
        let what = format!("opening a pull request on {org}/{recipe}");
        let path = format!("/repos/{org}/{recipe}/pulls");
        // `number`, not `id`: the issue APIs take the number.
        self.created((&what, &path), &request, &causes, "number", deadline)
    }

    fn comments(&self, recipe: &str, number: u64, deadline: Deadline) -> Result<Vec<Comment>> {
        let org = self.org();
        let listed: Vec<ApiComment> = self.read(
            &format!("listing the comments of {org}/{recipe}#{number}"),
            &format!("/repos/{org}/{recipe}/issues/{number}/comments"),
            deadline,
        )?;
        Ok(listed
            .into_iter()
            .map(|c| Comment {
                id: c.id,
                body: c.body,
                login: login_of(c.user),
            })
            .collect())
    }

    fn post_comment(
        &self,
        recipe: &str,
        number: u64,
        body: &str,
        deadline: Deadline,
    ) -> Result<u64> {
        let org = self.org();
        let what = format!("commenting on {org}/{recipe}#{number}");
        let path = format!("/repos/{org}/{recipe}/issues/{number}/comments");
        let causes = [(
            403,
            "the pull request is locked, or the token's user is blocked or lacks write:issue"
                .to_string(),
        )];
        let request = serde_json::json!({ "body": body });
        self.created((&what, &path), &request, &causes, "id", deadline)
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

    fn statuses(&self, recipe: &str, sha: &str, deadline: Deadline) -> Result<Vec<CommitStatus>> {
        let org = self.org();
        let listed: Vec<ApiStatus> = self.read(
            &format!(
                "listing the commit statuses of {} on {org}/{recipe}",
                crate::git::short(sha)
            ),
            &format!("/repos/{org}/{recipe}/statuses/{sha}?page=1&limit=50"),
            deadline,
        )?;
        Ok(listed
            .into_iter()
            .map(|s| CommitStatus {
                id: s.id,
                state: s.state,
                context: s.context,
                login: login_of(s.creator),
            })
            .collect())
    }
}
