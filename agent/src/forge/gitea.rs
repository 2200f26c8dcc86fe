//! `kind = "gitea"`: Gitea and Forgejo, REST API v1, `Authorization: token ...`.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::{Closed, Forge, Pull, Pulls, Repository};
use crate::deadline::{Backoff, Deadline};
use crate::secrets::Secret;

/// Pull request pages asked for at most: a listing that never ends stops there.
const MAX_PAGES: u32 = 100;
const PAGE_SIZE: u32 = 50;
/// Bodies read at most: a page of pull requests, an error document.
const BODY_LIMIT: u64 = 4 * 1024 * 1024;
/// Longest a single request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Further tries of a request the forge answered with 429 or a 5xx, within the deadline.
const RETRIES: u32 = 3;
/// Longest wait between tries that a `Retry-After` may ask for.
const MAX_WAIT: Duration = Duration::from_secs(120);

/// One answer of the forge, and why it was not tried again if it could have been.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: String,
    gave_up: Option<String>,
    /// `X-Total-Count`: how many items a listing has in all, when the forge says.
    pub(super) total: Option<usize>,
    /// `Location` of a redirect: where a renamed repository or org is now.
    location: Option<String>,
    /// The body was longer than the agent reads (and `body` is empty): why, for a caller that
    /// can do without it; every other caller fails with it.
    pub(super) oversized: Option<String>,
}

/// A forge's words for a person to read: the first 200 characters, no control characters, so an
/// answer cannot drive the operator's terminal.
fn excerpt(body: &str) -> String {
    let text: String = body
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    text.trim().to_string()
}

/// Whether the forge may answer `status` differently next time without having acted on this
/// request. This follows HTTP (RFC 6585's 429, RFC 9110's 5xx and `Retry-After`), not Gitea:
/// ../shared/forge-facts.md names no rate limit of Gitea's own, so a 429 comes from a limiter or
/// proxy in front of it, and a 5xx from Gitea failing or a proxy losing it. A 429 is a refusal before any work, for every method; a 5xx may come after a POST
/// took effect, and a second comment or repository is worse than an error, so only the methods
/// that are safe to repeat (GET, and the PATCH that sets a state) retry on it.
fn worth_retrying(method: &str, status: u16) -> bool {
    status == 429 || (method != "POST" && matches!(status, 500 | 502 | 503 | 504))
}

/// `Retry-After` as seconds or as an HTTP date (RFC 9110, 10.2.3); `None` when absent or unread.
fn retry_after(response: &ureq::http::Response<ureq::Body>) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// One page of `GET /repos/{org}/{repo}/pulls`, item by item: one odd item never fails the
/// page. Each head sha must be a git object id, because it is handed to git as an argument; a
/// pull request with no head sha (Gitea sends an empty one when the head branch is gone) is
/// returned apart, by number, to be skipped; an item that is no pull request (`null`, which
/// Gitea 1.19 to 1.22 put in a list after a converter error, or one that does not decode) is
/// returned apart with why, to be said.
pub fn decode_pulls(body: &str) -> Result<DecodedPulls> {
    let items: Vec<serde_json::Value> =
        serde_json::from_str(body).context("not the JSON Gitea sends for pull requests")?;
    let mut page = DecodedPulls::default();
    let listed = items.len();
    for (i, item) in items.into_iter().enumerate() {
        match pull_of(item) {
            Ok(Some(pull)) => page.pulls.push(pull),
            Ok(None) => {}
            Err(PullItem::Headless(number)) => page.headless.push(number),
            Err(PullItem::Odd(why)) => page.odd.push(format!("item {} of the page: {why}", i + 1)),
        }
    }
    // One odd item among pull requests is Gitea's (a converter error); a page of nothing else
    // is not a page of pull requests at all.
    if listed > 0 && page.odd.len() == listed {
        bail!(
            "not the JSON Gitea sends for pull requests: {}",
            page.odd.first().map_or("", String::as_str)
        );
    }
    Ok(page)
}

/// What one page of pull requests held.
#[derive(Debug, Default)]
pub struct DecodedPulls {
    pub pulls: Vec<Pull>,
    pub headless: Vec<u64>,
    pub odd: Vec<String>,
}

enum PullItem {
    Headless(u64),
    Odd(String),
}

fn pull_of(item: serde_json::Value) -> Result<Option<Pull>, PullItem> {
    if item.is_null() {
        return Err(PullItem::Odd("null, not a pull request".into()));
    }
    let p: ApiPull = serde_json::from_value(item)
        .map_err(|e| PullItem::Odd(format!("not a pull request as Gitea sends one: {e}")))?;
    let number = u64::try_from(p.number)
        .map_err(|_| PullItem::Odd(format!("number {} is not a pull request's", p.number)))?;
    if p.head.sha.is_empty() {
        return Err(PullItem::Headless(number));
    }
    if !crate::git::is_oid(&p.head.sha) {
        return Err(PullItem::Odd(format!(
            "pull request #{number}: head sha {:?} is not a commit id",
            p.head.sha
        )));
    }
    Ok(Some(Pull {
        number,
        same_repo: same_repository(p.head.repo_id, p.base.as_ref().and_then(|b| b.repo_id)),
        head_sha: p.head.sha,
        head_ref: p.head.r#ref,
        title: p.title,
    }))
}

/// Whether a pull request's head is in its base's repository: both ids known and equal. Gitea
/// writes -1 for a head repository that is gone (services/convert/pull.go): never the same.
pub(super) fn same_repository(head: Option<i64>, base: Option<i64>) -> bool {
    matches!((head, base), (Some(h), Some(b)) if h > 0 && h == b)
}

pub struct Gitea {
    url: String,
    org: String,
    token: Secret,
    /// Where the token came from, for the message when the forge refuses it.
    token_source: String,
    agent: ureq::Agent,
    /// The first pause before asking again after a 429 or 5xx without `Retry-After`.
    retry_pause: Duration,
}

#[derive(Deserialize)]
pub(super) struct ApiPull {
    number: i64,
    #[serde(default)]
    title: String,
    head: ApiHead,
    #[serde(default)]
    base: Option<ApiBase>,
}

#[derive(Deserialize)]
pub(super) struct ApiBase {
    #[serde(default)]
    repo_id: Option<i64>,
}

/// The parts of `GET /repos/{owner}/{repo}` the agent reads (Gitea's `api.Repository`,
/// modules/structs/repo.go); absent fields are taken as a plain, writable repository.
#[derive(Deserialize, Default)]
pub(super) struct ApiRepository {
    #[serde(default)]
    mirror: bool,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    empty: bool,
    #[serde(default)]
    permissions: Option<ApiPermissions>,
}

#[derive(Deserialize)]
pub(super) struct ApiPermissions {
    push: bool,
}

#[derive(Deserialize)]
pub(super) struct ApiHead {
    sha: String,
    /// The head branch's name (`api.PRBranchInfo.Ref`).
    #[serde(default)]
    r#ref: String,
    /// The head branch's repository: the base's own, or a fork's (`api.PRBranchInfo.RepoID`);
    /// -1 when that repository is gone.
    #[serde(default)]
    repo_id: Option<i64>,
}

impl Gitea {
    pub fn new(
        url: &str,
        org: &str,
        token: Secret,
        token_source: String,
        retry_pause: Duration,
    ) -> Self {
        // A redirect could carry the token to another host: follow none.
        let agent = crate::http::agent(REQUEST_TIMEOUT, 0);
        Self {
            url: url.trim_end_matches('/').to_string(),
            org: org.to_string(),
            token,
            token_source,
            agent,
            retry_pause,
        }
    }

    pub(super) fn org(&self) -> &str {
        &self.org
    }

    /// A GET of the API read as `T`; `None` for a 404.
    pub(super) fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        deadline: Deadline,
    ) -> Result<Option<T>> {
        let answer = self.call("GET", path, None, deadline)?;
        if answer.status == 404 {
            return Ok(None);
        }
        let what = format!("GET /api/v1{}", path.split('?').next().unwrap_or(path));
        let body = self.expect(&what, answer, &[200])?;
        let value = serde_json::from_str(&body)
            .with_context(|| format!("{what}: not the JSON Gitea sends"))?;
        Ok(Some(value))
    }

    /// Whether git's push service takes the token for `recipe`'s mirror: its advertisement is
    /// asked for, and nothing is sent. Gitea answers it to a signed-in user who may read the
    /// repository and whose token holds write:repository; an archived repository or a
    /// pull-mirror answers 403. With a git that has proc-receive (2.29 on) it leaves the user's
    /// right to push to its pre-receive hook, so that right is read from the API's
    /// `permissions.push` instead (routers/web/repo/githttp.go, `httpBase`).
    pub(super) fn git_push_allowed(&self, recipe: &str, deadline: Deadline) -> Result<()> {
        use super::Forge;
        let url = format!(
            "{}/info/refs?service=git-receive-pack",
            self.mirror_url(recipe)
        );
        let (timeout, _) = deadline.cap(REQUEST_TIMEOUT)?;
        let ask = |auth: &str| {
            self.agent
                .get(&url)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .header("Authorization", auth)
                .call()
                .map(|r| r.status().as_u16())
                .with_context(|| format!("GET {url}"))
        };
        let basic = self.token.as_basic_auth("cc-ci");
        match ask(basic.expose())? {
            200 => Ok(()),
            // Only when Basic fails: does the server take the token in the other form?
            401 if ask(&self.auth())? == 200 => bail!(
                "git takes the token only as an `Authorization: token` header, not as Basic, \
                 which the agent sends: a proxy in front of the forge may be taking Basic \
                 credentials for itself"
            ),
            401 => bail!("git refuses the token ({}): HTTP 401", self.token_source),
            403 => bail!(
                "git's push service refuses: HTTP 403 (an archived repository, a pull-mirror, or a \
                 token without write:repository)"
            ),
            404 => {
                bail!("git cannot see the repository: HTTP 404 (the token's user may not read it)")
            }
            s => bail!("GET {url}: HTTP {s}"),
        }
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    fn auth(&self) -> String {
        format!("token {}", self.token.expose())
    }

    /// One API call, tried again on 429 and (when safe) 5xx after the forge's `Retry-After` or
    /// `mirrors.retry_pause` (1 s, 2 s, 4 s by default), never past `deadline`. Errors name the
    /// method and path, never the token.
    pub(super) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        deadline: Deadline,
    ) -> Result<Answer> {
        let mut backoff = Backoff::new(self.retry_pause, RETRIES);
        for tries in 0.. {
            let (mut answer, asked) = self.call_once(method, path, body, deadline)?;
            if !worth_retrying(method, answer.status) {
                return Ok(answer);
            }
            let own = backoff.next_pause();
            let wait = asked.or(own).unwrap_or_default();
            let stop = if own.is_none() {
                Some(format!(
                    "still HTTP {} after {} tries",
                    answer.status,
                    tries + 1
                ))
            } else if wait > MAX_WAIT || !deadline.allows(wait) {
                Some(format!(
                    "the forge asked to wait {}s, past the call's deadline",
                    wait.as_secs()
                ))
            } else {
                None
            };
            if stop.is_some() {
                answer.gave_up = stop;
                return Ok(answer);
            }
            tracing::info!(
                "{method} {path}: HTTP {}, trying again in {wait:?}",
                answer.status
            );
            std::thread::sleep(wait);
        }
        unreachable!("the loop returns")
    }

    /// Every API request: its own timeout, the token, JSON asked for.
    fn prepare<B>(&self, r: ureq::RequestBuilder<B>, timeout: Duration) -> ureq::RequestBuilder<B> {
        r.config()
            .timeout_global(Some(timeout))
            .build()
            .header("Authorization", &self.auth())
            .header("Accept", "application/json")
    }

    /// One request, its timeout cut to what is left of `deadline`; the answer and its
    /// `Retry-After`.
    fn call_once(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        deadline: Deadline,
    ) -> Result<(Answer, Option<Duration>)> {
        let url = self.api(path);
        let (timeout, _) = deadline
            .cap(REQUEST_TIMEOUT)
            .map_err(|e| anyhow::anyhow!("{method} {url}: not sent: {e}"))?;
        let result = match (method, body) {
            ("GET", _) => self.prepare(self.agent.get(&url), timeout).call(),
            ("POST", Some(b)) => self.prepare(self.agent.post(&url), timeout).send_json(b),
            ("PATCH", Some(b)) => self.prepare(self.agent.patch(&url), timeout).send_json(b),
            _ => bail!("unsupported API call {method} {path}"),
        };
        let mut response = result.with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let asked = retry_after(&response);
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(excerpt)
        };
        let total = header("x-total-count").and_then(|v| v.parse().ok());
        let location = header("location");
        let (body, oversized) = match crate::http::read_body(&mut response, BODY_LIMIT) {
            Ok(body) => (body, None),
            Err(e @ crate::http::BodyError::TooLarge { .. }) => {
                (String::new(), Some(e.to_string()))
            }
            Err(e) => bail!("{method} {path}: {e}"),
        };
        let answer = Answer {
            status,
            body,
            gave_up: None,
            total,
            location,
            oversized,
        };
        Ok((answer, asked))
    }

    pub(super) fn expect(&self, what: &str, answer: Answer, ok: &[u16]) -> Result<String> {
        self.expect_with(what, answer, ok, &[])
    }

    /// `expect`, with what the forge means by some statuses in this call.
    pub(super) fn expect_with(
        &self,
        what: &str,
        answer: Answer,
        ok: &[u16],
        causes: &[(u16, String)],
    ) -> Result<String> {
        if let Some(why) = &answer.oversized {
            bail!("{what}: HTTP {}: {why}", answer.status);
        }
        if ok.contains(&answer.status) {
            return Ok(answer.body);
        }
        let status = answer.status;
        let hint = match (causes.iter().find(|(s, _)| *s == status), status) {
            (Some((_, cause)), _) => format!(": {cause}"),
            (None, 401) => format!(
                ": the forge refused the token; check {}: its token, and that it is not expired",
                self.token_source
            ),
            (None, 403) => {
                ": the forge refused the token (check forge.token_file and the token's scopes)"
                    .into()
            }
            // A renamed repository: 307 up to Gitea 1.23, 301 from 1.24; a renamed
            // organisation: 307 in every version (forge-facts.md).
            (None, 301 | 307 | 308) => match &answer.location {
                Some(to) => format!(
                    ": the forge answered with a redirect to {to}, which is not followed; if the \
                     repository or org was renamed or moved, update the enrollment or forge.org"
                ),
                None => ": the forge answered with a redirect, which is not followed".into(),
            },
            (None, 300..=399) => {
                ": the forge answered with a redirect, which is not followed".into()
            }
            _ => String::new(),
        };
        let gave_up = answer
            .gave_up
            .map(|g| format!(" ({g})"))
            .unwrap_or_default();
        bail!(
            "{what}: HTTP {status}{gave_up}{hint}: {}",
            excerpt(&answer.body)
        )
    }
}

impl Forge for Gitea {
    fn mirror_url(&self, recipe: &str) -> String {
        format!("{}/{}/{recipe}.git", self.url, self.org)
    }

    fn repository(&self, recipe: &str, deadline: Deadline) -> Result<Option<Repository>> {
        let path = format!("/repos/{}/{recipe}", self.org);
        let answer = self.call("GET", &path, None, deadline)?;
        if answer.status == 404 {
            return Ok(None);
        }
        let what = format!("looking up {}/{recipe}", self.org);
        let body = self.expect(&what, answer, &[200])?;
        let repo: ApiRepository = serde_json::from_str(&body)
            .with_context(|| format!("{what}: not the JSON Gitea sends for a repository"))?;
        Ok(Some(Repository {
            mirror: repo.mirror,
            archived: repo.archived,
            empty: repo.empty,
            can_push: repo.permissions.map(|p| p.push),
        }))
    }

    fn full_name(&self, recipe: &str) -> String {
        format!("{}/{recipe}", self.org)
    }

    fn create(&self, recipe: &str, branch: &str, deadline: Deadline) -> Result<()> {
        let body = serde_json::json!({
            "name": recipe,
            "default_branch": branch,
            "auto_init": false,
            "private": false,
            "description": format!("Mirror of the {recipe} recipe, kept by cc-ci"),
        });
        let path = format!("/orgs/{}/repos", self.org);
        let answer = self.call("POST", &path, Some(&body), deadline)?;
        let org = &self.org;
        let causes = [
            (404, format!("the org {org} does not exist, or the token's user cannot see it: check forge.org and the user's membership")),
            (409, format!("{org}/{recipe} exists, but the token's user cannot see it: give the user access to it, or delete it")),
            (403, format!("the token's user may not create repositories in {org}: make it an owner of the org or a member of a team that may create repositories, and give the token write:organization")),
            (422, format!("the forge will not take the name {recipe:?} (reserved or invalid)")),
            (413, "the forge's quota for the org is used up".to_string()),
        ];
        self.expect_with(&format!("creating {org}/{recipe}"), answer, &[201], &causes)?;
        Ok(())
    }

    /// Pages until an empty page or the `X-Total-Count` the forge gave: a server whose
    /// `MAX_RESPONSE_ITEMS` is below the limit asked for sends shorter pages, not fewer pull
    /// requests. A 404 is a repository Gitea still counts as empty just after its first push:
    /// no pull requests (forge-facts.md, services/repository/push.go).
    fn open_pulls(&self, recipe: &str, deadline: Deadline) -> Result<Pulls> {
        let mut listing = Pulls {
            complete: true,
            ..Pulls::default()
        };
        for page in 1..=MAX_PAGES {
            let path = format!(
                "/repos/{}/{recipe}/pulls?state=open&page={page}&limit={PAGE_SIZE}",
                self.org
            );
            let answer = self.call("GET", &path, None, deadline)?;
            if answer.status == 404 && page == 1 {
                return Ok(listing);
            }
            let total = answer.total;
            let body = self.expect(
                &format!("listing pull requests of {}/{recipe}", self.org),
                answer,
                &[200],
            )?;
            let batch = decode_pulls(&body)
                .with_context(|| format!("pull requests of {}/{recipe}, page {page}", self.org))?;
            let n = batch.pulls.len() + batch.headless.len() + batch.odd.len();
            listing.pulls.extend(batch.pulls);
            listing.skipped.extend(batch.headless);
            listing
                .odd
                .extend(batch.odd.into_iter().map(|o| format!("page {page}, {o}")));
            let seen = listing.pulls.len() + listing.skipped.len() + listing.odd.len();
            if n == 0 || total.is_some_and(|t| seen >= t) {
                return Ok(listing);
            }
        }
        listing.complete = false;
        Ok(listing)
    }

    /// Closes first, and only then may a comment say so: a comment on a pull request the forge
    /// then refuses to close would be repeated by every sync.
    fn close_pull(&self, recipe: &str, number: u64, deadline: Deadline) -> Result<Closed> {
        let body = serde_json::json!({ "state": "closed" });
        let path = format!("/repos/{}/{recipe}/pulls/{number}", self.org);
        let answer = self.call("PATCH", &path, Some(&body), deadline)?;
        let why = match answer.status {
            200 | 201 => return Ok(Closed::Closed),
            412 => "HTTP 412: already merged on the forge, or it has open dependencies",
            403 => "HTTP 403: the token's user may not close it (write access to the repository is needed)",
            _ => {
                let what = format!("closing {}/{recipe}#{number}", self.org);
                self.expect(&what, answer, &[200, 201])?;
                return Ok(Closed::Closed);
            }
        };
        Ok(Closed::Refused(format!("{why}: {}", excerpt(&answer.body))))
    }

    /// Gitea lists every comment of an issue in one answer (`ListIssueComments` takes no
    /// `page` or `limit`). When there are more than the agent reads, it does not comment: a
    /// sync repeats this for a pull request the forge will not close, and a note it cannot
    /// see it left would be posted again by every sync.
    fn comment_once(
        &self,
        recipe: &str,
        number: u64,
        marker: &str,
        body: &str,
        deadline: Deadline,
    ) -> Result<bool> {
        use super::{Discussion, Listed};
        match self.comments(recipe, number, None, deadline)? {
            Listed::All(comments) if comments.iter().any(|c| c.body.contains(marker)) => Ok(false),
            Listed::All(_) => {
                self.post_comment(recipe, number, body, deadline)?;
                Ok(true)
            }
            Listed::TooMany(why) => bail!(
                "the comments of {}/{recipe}#{number} cannot be read ({why}), so the agent \
                 cannot tell whether it said this already: not commented",
                self.org
            ),
        }
    }

    fn discussion(&self) -> Option<&dyn super::Discussion> {
        Some(self)
    }

    fn readiness(&self, mirrors: &[(String, String)], deadline: Deadline) -> Vec<super::Finding> {
        self.check_readiness(mirrors, deadline)
    }

    /// Basic with the token as the password: every Gitea and Forgejo version honours it on git's
    /// paths, where Gitea before 1.20.5 ignores a `token` header (forge-facts.md,
    /// services/auth/basic.go). Scoped to the forge's URL: upstreams never see it.
    fn git_auth(&self) -> Option<(String, Secret)> {
        Some((format!("{}/", self.url), self.token.as_basic_auth("cc-ci")))
    }
}
