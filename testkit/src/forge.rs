//! A test forge on 127.0.0.1: the Gitea REST endpoints the agent uses and git smart HTTP through
//! `git http-backend` (so real `receive-pack`, with real server-side hooks). Repositories are
//! real bare repos under `root/<org>/`. It follows Gitea, not the agent; where each behaviour
//! comes from (paths in the Gitea repository; ../shared/forge-facts.md has the facts):
//!
//! | behaviour | follows |
//! | --- | --- |
//! | `Authorization: token` on the API; on git's paths also Basic with the token as the password, any user name | services/auth/oauth2.go, services/auth/basic.go |
//! | `old_server`: a `token` header on git's paths is ignored, the request anonymous (Gitea < 1.20.5) | PR 26430 and its backports |
//! | anonymous reads of a public repository's git; a push without credentials 401; a wrong token 401 | services/auth, routers/web/repo/githttp.go |
//! | `scopes`: a call outside the token's scopes 403 "token does not have at least one of required scope(s)"; a write scope holds its read scope; `/users/{u}/orgs/{o}/permissions` needs both user and organization; git's push service needs write:repository | routers/api/v1/api.go (`tokenRequiresScopes`), models/auth/access_token_scope.go, routers/web/repo/githttp.go (`CheckRepoScopedToken`) |
//! | `GET /repos/{o}/{r}`: `mirror`, `archived`, `empty`, `permissions.push`; 404 missing | modules/structs/repo.go, routers/api/v1/repo/repo.go |
//! | `POST /orgs/{o}/repos`: 201; 409 exists; 403 `no_create` | routers/api/v1/repo/repo.go (`CreateOrgRepo`) |
//! | a new repository is empty until the lookup after its first push, or until `settle()` (the queue has run); its pull-request list 404 while empty | services/repository/push.go (queued `is_empty` update) |
//! | `archived` or `mirror`: 403 on git-receive-pack | routers/web/repo/githttp.go |
//! | pull requests paged at `max_items` (default 50) whatever `limit` asks, with `X-Total-Count` and `Link` | modules/setting (`MAX_RESPONSE_ITEMS`), routers/api/v1/repo/pull.go |
//! | `PATCH .../pulls/{n}` closed 201; `refuse_close` 412 | routers/api/v1/repo/pull.go (`EditPullRequest`) |
//! | a comment on a missing issue 500, not 404; every comment listed in one answer, oldest first (`ListIssueComments` takes no page or limit), each with `id`, `user.login`, `created_at`, `updated_at` in the server's zone (`+02:00`, not `Z`); ids are the instance's; `since`/`before` keep those with `updated_unix` >= since, <= before, and a time that does not parse is 422 | routers/api/v1/repo/issue_comment.go, routers/api/v1/utils (`GetQueryBeforeSince`), models/issues/comment.go (`FindCommentsOptions.ToConds`) |
//! | the open pull requests listed newest first; `GET .../pulls/{n}` one of them, open or closed, 404 for none; `head` and `base` carry `ref` and `repo_id`, a fork's head its own repository's id (`fork`); `comments` the pull request's comment count | models/issues/issue_search.go (`applySorts` default), routers/api/v1/repo/pull.go (`GetPullRequest`), modules/structs/pull.go (`PRBranchInfo`, `Comments`), services/convert/pull.go (`Issue.NumComments`) |
//! | `POST .../pulls` `{head, base, title, body}`: 201 with `number`; 404 a branch missing (`parseCompareInfo`); 409 "pull request already exists for these targets [id: ROW, issue_id: NUMBER, ...]" for an open, unmerged one of the same head repository, head and base (`GetUnmergedPullRequest`: `head_repo_id`, `is_closed = false`, `has_merged = false`; `IssueID: existingPr.Index`) | routers/api/v1/repo/pull.go (`CreatePullRequest`), models/issues/pull.go (`ErrPullRequestAlreadyExists`) |
//! | a branch-backed pull request's `head.sha` is its branch's tip, at once unless `head_lag` is set | forge-facts.md (`head.sha` is read from `refs/pull/N/head`, moved after a push from a queue) |
//! | `PATCH .../pulls/{n}` `{title}`: 201, the title changed | routers/api/v1/repo/pull.go (`EditPullRequest`) |
//! | `hooks`: after a push, a `push` webhook per branch that moved and a pull request `synchronized` for each open one from it; a new pull request `opened`; delivered from a thread, after the answer ([`crate::webhook`]) | services/repository/push.go, services/pull/pull.go, services/webhook/deliver.go |
//! | `version` ([`Version`]): `/version`, and the differences below follow it; every request is held to each supported version's published API and every answer to this version's ([`crate::contract`]) | ../shared/gitea-api/, tests/contract/ |
//! | a renamed repository (`renamed_repos`): its old paths redirect, 307 up to 1.23, 301 from 1.24; a renamed org (`renamed_orgs`) 307 in every version | services/context (repo assignment, `RedirectToUser`) |
//! | `POST /orgs/{o}/repos` for an org that does not exist: 404 | routers/api/v1/api.go (`orgAssignment`) |
//! | `GET .../branch_protections`: 403 unless the token's user is the repository's admin (`admin_of`: what it created through the API) | routers/api/v1/api.go (`reqAdmin`) |
//! | `GET .../statuses/{sha}`: each status's state under `status`, paged (`limit` capped at `max_items`), `X-Total-Count` | modules/structs/status.go, routers/api/v1/repo/status.go |
//! | 1.19 to 1.22: a pull request converting failed (`converter_error`) is `null` in the list; a deleted head repository (`head_repo_gone`) is `repo_id` -1 | services/convert/pull.go |
//! | `head_lag` (1.23 and later): in the pull-request LIST, `head.sha` stays the old head this long after a push to the branch, while the queue has not moved `refs/pull/N/head`; `GET .../pulls/{n}` shows the branch's tip at once | forge-facts.md; services/convert/pull.go (`ToAPIPullRequests` vs `ToAPIPullRequest`), services/pull/pull.go (`AddTestPullRequestTask`) |
//! | `GET`/`POST .../issues/comments/{id}/reactions`: `{user.login, content}`; the list is `null` when empty | routers/api/v1/repo/issue_reaction.go |
//! | `POST .../statuses/{sha}` `{state, context, description}`: 201, the state stored as sent; `GET .../statuses/{sha}` lists them with `id` and `creator.login` (the swagger's states: pending, success, error, failure, warning; the order is not relied on) | routers/api/v1/repo/status.go (`NewCommitStatus`, `GetCommitStatuses`) |
//! | several users, each by its own token (`add_user`): the bridge's and Drone's | services/auth |
//! | `GET /user`, `/orgs/{o}`, `/users/{u}/orgs/{o}/permissions` (`can_create_repository`), `/repos/{o}/{r}/branch_protections` | routers/api/v1/user, org, repo/branch.go |
//! | `canned` answers (429 or 5xx with `Retry-After`, redirects, bodies that never end) | not Gitea: what a rate limiter, proxy or broken server in front of it may send, per HTTP (RFC 6585, RFC 9110) |
//! | `Authorization: token X` or `bearer X` (any case) | services/auth/oauth2.go (`parseToken`) |
//! | `trickle`: the real answer, one byte per pause | not Gitea: a slow link or an overloaded server |
//!
//! Still unlike Gitea: `no_push` is only the API's `permissions.push` (Gitea, with a git that
//! has proc-receive, serves the push advertisement to any reader and refuses in its pre-receive
//! hook: tests that need that refusal write the hook), anonymous API reads get 401 (Gitea
//! answers them for public repositories; the agent always sends its token), tag and branch protection are
//! pre-receive hooks a test writes rather than Gitea's rules, `Link` is sent on pull-request
//! pages only, and a pull request whose head is its base is not refused (Gitea: 422
//! "BaseHeadSame").

// A stand-in for tests: a set-up that cannot work panics at once, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tiny_http::{Header, Request, Response, Server};

use crate::webhook;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PullRec {
    pub number: u64,
    /// The head commit, for a pull request a test made without a branch.
    pub head_sha: String,
    /// The head branch, for one opened through the API: its head is the branch's tip.
    pub head_ref: Option<String>,
    pub base: String,
    pub title: String,
    pub open: bool,
    pub comments: Vec<CommentRec>,
    /// The forge will not close it: Gitea's 412 for a pull request already merged there or with
    /// open dependencies (routers/api/v1/repo/pull.go).
    pub refuse_close: bool,
    /// Opened from a fork (its owner): `head.repo_id` is the fork's, not the mirror's.
    pub fork: Option<String>,
    /// Its head repository was deleted: `head.repo_id` is -1 and `head.repo` null
    /// (services/convert/pull.go).
    pub head_repo_gone: bool,
    /// Gitea 1.19 to 1.22 only: converting it failed, and the list holds `null` in its place
    /// (services/convert/pull.go `ToAPIPullRequests` appended the nil on error).
    pub converter_error: bool,
    /// With `State::head_lag`: the head the pull request shows until Gitea's queue has moved
    /// `refs/pull/N/head` (the old head, and when the queue runs).
    #[serde(skip)]
    pub lagging: Option<(String, std::time::Instant)>,
}

/// One comment, with the reactions to it. Ids are the instance's, as Gitea's are.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CommentRec {
    pub id: u64,
    pub body: String,
    pub login: String,
    /// (login, content) of each reaction.
    pub reactions: Vec<(String, String)>,
    /// Unix seconds, as Gitea keeps `created_unix` and `updated_unix`; 0 is "now" when listed
    /// for a comment a test planted without a time.
    pub created: u64,
    pub updated: u64,
}

/// One commit status, as `POST /repos/{o}/{r}/statuses/{sha}` set it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusRec {
    pub id: u64,
    pub state: String,
    pub context: String,
    pub description: String,
    pub creator: String,
}

/// What Gitea's repository answer says of one repository (`api.Repository`), and when it stops
/// counting as empty.
#[derive(Debug, Clone, Default)]
pub struct RepoFlags {
    pub mirror: bool,
    pub archived: bool,
    /// `permissions.push` of the token's user (true unless a test says otherwise).
    pub no_push: bool,
    pub empty: bool,
    /// A push arrived while empty: the next lookup finds it non-empty. Gitea clears `is_empty`
    /// from a queue after the push, not in it (services/repository/push.go).
    pub pushed: bool,
}

#[derive(Default)]
pub struct State {
    /// The token's user.
    pub login: String,
    /// The token's scopes (`None`: all of them). A call outside them gets Gitea's 403.
    pub scopes: Option<Vec<String>>,
    /// The token's user may not create repositories in the org.
    pub no_create: bool,
    /// Branch protection rules per repository, as `GET .../branch_protections` lists them.
    pub protections: BTreeMap<String, Vec<serde_json::Value>>,
    pub repos: BTreeMap<String, RepoFlags>,
    /// Gitea's `MAX_RESPONSE_ITEMS` (default 50): no page is longer, whatever `limit` asks.
    pub max_items: Option<usize>,
    pub pulls: BTreeMap<String, Vec<PullRec>>,
    /// "METHOD path" of every request, and whether its token was right.
    pub requests: Vec<(String, bool)>,
    /// Further users by token (the bridge's, Drone's): token → login.
    pub users: BTreeMap<String, String>,
    /// The last comment, reaction or status id given: ids are the instance's.
    pub last_id: u64,
    /// Commit statuses by (repository, commit).
    pub statuses: BTreeMap<(String, String), Vec<StatusRec>>,
    /// Run once, just before the first receive-pack advertisement (a concurrent pusher).
    pub before_receive_pack: Option<Box<dyn FnOnce() + Send>>,
    /// Answers given instead of the real API's, for bad-input cases.
    pub canned: Vec<Canned>,
    /// Gitea before 1.20.5: a `token` header on git's paths is ignored, so the request is
    /// anonymous there (forge-facts.md, PR 26430).
    pub old_server: bool,
    /// A proxy in front of the forge that takes Basic credentials for itself: git's paths see
    /// none (not a Gitea behaviour; the setup `check-forge` must tell apart).
    pub proxy_eats_basic: bool,
    /// GETs of the API whose path (after /api/v1) starts with the first part are answered as
    /// usual but one byte per pause: a slow link or a server under load (not a Gitea behaviour).
    pub trickle: Option<(String, Duration)>,
    /// Webhook receivers (Drone's `/hook`): every push and pull-request event is sent there
    /// ([`crate::webhook`]).
    pub hooks: Vec<String>,
    /// Gitea 1.23 and later: a pull request's `head.sha` is read from `refs/pull/N/head`, which
    /// a queued task moves this long after a push to its branch (services/pull/pull.go
    /// `AddTestPullRequestTask`); before 1.23 it was the branch's tip at once.
    pub head_lag: Option<Duration>,
    /// The server and version the forge speaks ([`Version`]).
    pub version: Version,
    /// Repositories renamed (old name, new name): their old API paths answer with a redirect.
    pub renamed_repos: BTreeMap<String, String>,
    /// Organisations renamed (old, new).
    pub renamed_orgs: BTreeMap<String, String>,
    /// Repositories the token's user is an admin of: those it created through the API (the
    /// creator becomes admin, forge-facts.md), and those a test names.
    pub admin_of: std::collections::BTreeSet<String>,
    /// What was asked or answered that the published API does not allow ([`crate::contract`]):
    /// the forge's drop fails the test that made them.
    pub violations: Vec<String>,
}

/// The servers the test forge can speak, with the differences that follow each (forge-facts.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    Gitea1_19,
    Gitea1_21,
    Gitea1_23,
    #[default]
    Gitea1_25,
    Forgejo8,
}

impl Version {
    pub const ALL: [Version; 5] = [
        Version::Gitea1_19,
        Version::Gitea1_21,
        Version::Gitea1_23,
        Version::Gitea1_25,
        Version::Forgejo8,
    ];

    /// Its published API ([`crate::contract`]).
    pub fn contract(self) -> &'static str {
        match self {
            Version::Gitea1_19 => "gitea-1.19.0",
            Version::Gitea1_21 => "gitea-1.21.0",
            Version::Gitea1_23 => "gitea-1.23.0",
            Version::Gitea1_25 => "gitea-1.25.4",
            Version::Forgejo8 => "forgejo-8.0.0",
        }
    }

    /// What `GET /version` says (`api.ServerVersion`; Forgejo's Gitea-compatible version string
    /// carries its own after `+`, routers/api/v1/misc/version.go).
    pub fn version_string(self) -> &'static str {
        match self {
            Version::Gitea1_19 => "1.19.0",
            Version::Gitea1_21 => "1.21.0",
            Version::Gitea1_23 => "1.23.0",
            Version::Gitea1_25 => "1.25.4",
            Version::Forgejo8 => "8.0.0+gitea-1.22.0",
        }
    }

    /// Gitea 1.23 and later read a listed pull request's head from `refs/pull/N/head`
    /// (services/convert/pull.go `ToAPIPullRequests`); Forgejo 8 forked from 1.22.
    pub fn lists_heads_from_pull_refs(self) -> bool {
        matches!(self, Version::Gitea1_23 | Version::Gitea1_25)
    }

    /// A renamed repository: 301 from Gitea 1.24, 307 before and in Forgejo 8 (services/context
    /// repo assignment, `RedirectToRepo`); a renamed organisation is 307 in every version
    /// (context_response.go `RedirectToUser`).
    pub fn renamed_repo_status(self) -> u16 {
        if self == Version::Gitea1_25 {
            301
        } else {
            307
        }
    }

    /// Gitea before 1.20.5: a `token` header on git's paths is ignored (PR 26430).
    pub fn ignores_token_header_on_git(self) -> bool {
        self == Version::Gitea1_19
    }
}

/// An API answer given to any `method` request whose path (after /api/v1) starts with `path`.
#[derive(Clone)]
pub struct Canned {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body never ends: `body` repeated forever, without a length.
    pub endless: bool,
    /// Given this many times, then the real answer again (`None`: always).
    pub times: Option<usize>,
}

pub struct TestForge {
    pub url: String,
    pub root: PathBuf,
    pub org: String,
    pub token: String,
    pub state: Arc<Mutex<State>>,
    server: Arc<Server>,
}

impl TestForge {
    /// The forge speaking the newest Gitea ([`Version::default`]).
    pub fn start(root: &Path, org: &str, token: &str) -> Self {
        Self::start_version(root, org, token, Version::default())
    }

    /// The forge speaking `version`: its answers, its differences, its published API.
    pub fn start_version(root: &Path, org: &str, token: &str, version: Version) -> Self {
        std::fs::create_dir_all(root.join(org)).unwrap();
        let server = Arc::new(Server::http("127.0.0.1:0").unwrap());
        let url = format!("http://{}", server.server_addr().to_ip().unwrap());
        let forge = Self {
            url,
            root: root.to_path_buf(),
            org: org.to_string(),
            token: token.to_string(),
            state: Arc::new(Mutex::new(State {
                login: "cc-ci-bot".into(),
                version,
                old_server: version.ignores_token_header_on_git(),
                ..State::default()
            })),
            server: server.clone(),
        };
        let (root, token, state) = (forge.root.clone(), forge.token.clone(), forge.state.clone());
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                let (root, token, state) = (root.clone(), token.clone(), state.clone());
                std::thread::spawn(move || handle(request, &root, &token, &state));
            }
        });
        forge
    }

    pub fn repo(&self, name: &str) -> PathBuf {
        self.root.join(&self.org).join(format!("{name}.git"))
    }

    pub fn add_pull(&self, name: &str, number: u64, head_sha: &str) {
        // A pull request's head lives on the mirror as refs/pull/N/head, as on Gitea.
        git(
            &self.repo(name),
            &["update-ref", &format!("refs/pull/{number}/head"), head_sha],
        );
        let mut s = self.state.lock().unwrap();
        s.pulls.entry(name.to_string()).or_default().push(PullRec {
            number,
            head_sha: head_sha.to_string(),
            title: format!("PR {number}"),
            open: true,
            ..PullRec::default()
        });
    }

    pub fn pulls(&self, name: &str) -> Vec<PullRec> {
        self.state
            .lock()
            .unwrap()
            .pulls
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    pub fn requests(&self) -> Vec<(String, bool)> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Gitea's queue has run: every repository pushed to is no longer empty (until then only
    /// a repository lookup after the push sees it so; services/repository/push.go).
    pub fn settle(&self) {
        let mut s = self.state.lock().unwrap();
        for flags in s.repos.values_mut().filter(|f| f.pushed) {
            flags.empty = false;
        }
    }

    /// Another user of the forge, who signs in with `token`.
    pub fn add_user(&self, login: &str, token: &str) {
        let mut s = self.state.lock().unwrap();
        s.users.insert(token.to_string(), login.to_string());
    }

    /// The statuses set on `sha` of `repo`.
    pub fn statuses(&self, repo: &str, sha: &str) -> Vec<StatusRec> {
        let s = self.state.lock().unwrap();
        s.statuses
            .get(&(repo.to_string(), sha.to_string()))
            .cloned()
            .unwrap_or_default()
    }
}

impl TestForge {
    /// What was asked or answered outside the published API so far.
    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }
}

impl Drop for TestForge {
    fn drop(&mut self) {
        self.server.unblock();
        let violations = std::mem::take(&mut self.state.lock().unwrap().violations);
        if !violations.is_empty() && !std::thread::panicking() {
            panic!(
                "the test forge was asked or answered what the published API does not allow:\n{}",
                violations.join("\n")
            );
        }
    }
}

thread_local! {
    /// The status and JSON of the last answer [`json`] made on this thread: what the contract
    /// check reads back.
    static ANSWERED: std::cell::RefCell<Option<(u16, serde_json::Value)>> =
        const { std::cell::RefCell::new(None) };
}

fn base64_decode(text: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        bits = (bits << 6) | ALPHABET.iter().position(|&a| a == c)? as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8(out).ok()
}

fn json(status: u16, body: serde_json::Value) -> Response<std::io::Cursor<Vec<u8>>> {
    ANSWERED.with(|a| *a.borrow_mut() = Some((status, body.clone())));
    Response::from_data(body.to_string().into_bytes())
        .with_status_code(status)
        .with_header(Header::from_bytes("Content-Type", "application/json").unwrap())
}

fn header(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().to_string())
}

fn handle(mut request: Request, root: &Path, token: &str, state: &Mutex<State>) {
    let method = request.method().as_str().to_string();
    let full = request.url().to_string();
    let (path, query) = full
        .split_once('?')
        .map_or((full.clone(), String::new()), |(p, q)| {
            (p.to_string(), q.to_string())
        });
    // The token header everywhere (ignored on git's paths by an old server); on git's paths also
    // Basic with the token as the password and any user name, which every Gitea version accepts
    // there (services/auth/basic.go). No credential on git's paths is an anonymous reader of a
    // public repository, who may fetch but not push; a wrong one is a 401.
    let git_path = !path.starts_with("/api/");
    let (old_server, eats_basic, users, main_login) = {
        let s = state.lock().unwrap();
        (
            s.old_server,
            s.proxy_eats_basic,
            s.users.clone(),
            s.login.clone(),
        )
    };
    // The login a token signs in as: the agent's, or another user's.
    let login_of = |t: &str| {
        if t == token {
            Some(main_login.clone())
        } else {
            users.get(t).cloned()
        }
    };
    let given = header(&request, "Authorization").unwrap_or_default();
    let basic_token = given
        .strip_prefix("Basic ")
        .and_then(base64_decode)
        .and_then(|d| d.split_once(':').map(|(_, p)| p.to_string()))
        .filter(|_| !eats_basic);
    // `token X` or `bearer X` (any case), two fields: services/auth/oauth2.go (`parseToken`).
    let header_token = match given.split_whitespace().collect::<Vec<_>>().as_slice() {
        [kind, t] if *kind == "token" || kind.eq_ignore_ascii_case("bearer") => Some(t.to_string()),
        _ => None,
    };
    let login = basic_token
        .as_deref()
        .or(header_token.as_deref())
        .and_then(login_of)
        .unwrap_or_default();
    let basic = basic_token.map(|t| login_of(&t).is_some());
    let token_header = header_token.map(|t| login_of(&t).is_some());
    let credential = match (git_path, basic, token_header) {
        (true, Some(ok), _) => Some(ok),
        (true, None, Some(_)) if old_server => None,
        (_, _, Some(ok)) => Some(ok),
        _ => None,
    };
    let reading = query == "service=git-upload-pack" || path.ends_with("/git-upload-pack");
    let authorized = credential == Some(true) || (credential.is_none() && git_path && reading);
    state
        .lock()
        .unwrap()
        .requests
        .push((format!("{method} {full}"), credential == Some(true)));
    if !authorized {
        let response = json(401, serde_json::json!({"message": "token is required"})).with_header(
            Header::from_bytes("WWW-Authenticate", "Basic realm=\"test forge\"").unwrap(),
        );
        let _ = request.respond(response);
        return;
    }
    if let Some(api) = path.strip_prefix("/api/v1") {
        let canned = {
            let mut s = state.lock().unwrap();
            let at = s
                .canned
                .iter()
                .position(|c| c.method == method && api.starts_with(&c.path));
            at.map(|i| {
                let c = s.canned[i].clone();
                if let Some(n) = &mut s.canned[i].times {
                    *n -= 1;
                    if *n == 0 {
                        s.canned.remove(i);
                    }
                }
                c
            })
        };
        if let Some(c) = canned {
            let headers: Vec<Header> = c
                .headers
                .iter()
                .map(|(k, v)| Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap())
                .collect();
            let _ = if c.endless {
                let body = c.body.clone();
                let endless = Endless {
                    pattern: body,
                    at: 0,
                };
                request.respond(Response::new(c.status.into(), headers, endless, None, None))
            } else {
                let len = c.body.len();
                request.respond(Response::new(
                    c.status.into(),
                    headers,
                    std::io::Cursor::new(c.body),
                    Some(len),
                    None,
                ))
            };
            return;
        }
        let mut body = String::new();
        let _ = request.as_reader().read_to_string(&mut body);
        ANSWERED.with(|a| a.borrow_mut().take());
        let response = api_call(&method, api, &query, &body, root, state, &login);
        held_to_the_contract(state, (&method, api, &query, &body));
        let trickle = state.lock().unwrap().trickle.clone();
        match trickle.filter(|(p, _)| method == "GET" && api.starts_with(p.as_str())) {
            Some((_, pause)) => {
                let (status, len) = (response.status_code(), response.data_length());
                let headers = response.headers().to_vec();
                let inner = response.into_reader();
                let body = Trickle { inner, pause };
                let _ = request.respond(Response::new(status, headers, body, len, None));
            }
            None => {
                let _ = request.respond(response);
            }
        }
        return;
    }
    let receive = query == "service=git-receive-pack" || path.ends_with("/git-receive-pack");
    if receive {
        // git's push service asks the token for write:repository (`CheckRepoScopedToken` in
        // routers/web/repo/githttp.go); an archived repository or a pull-mirror refuses pushes
        // with 403 (forge-facts.md).
        if let Err(refused) = scope_held(state, "write", &["repository"]) {
            let _ = request.respond(refused);
            return;
        }
        let name = path
            .trim_start_matches('/')
            .split('/')
            .nth(1)
            .unwrap_or_default();
        let name = name.trim_end_matches(".git").to_string();
        let mut s = state.lock().unwrap();
        let flags = s.repos.entry(name).or_default();
        if flags.archived || flags.mirror {
            drop(s);
            let _ = request.respond(json(
                403,
                serde_json::json!({"message": "repo is archived or a mirror"}),
            ));
            return;
        }
        if path.ends_with("/git-receive-pack") {
            flags.pushed = true;
        }
    }
    if query == "service=git-receive-pack" {
        let hook = state.lock().unwrap().before_receive_pack.take();
        if let Some(hook) = hook {
            hook();
        }
    }
    let pushed = (method == "POST" && path.ends_with("/git-receive-pack")).then(|| {
        let full = path
            .trim_start_matches('/')
            .trim_end_matches("/git-receive-pack");
        let full = full.trim_end_matches(".git").to_string();
        let tips = branch_tips(&root.join(format!("{full}.git")));
        (full, tips)
    });
    cgi(request, &method, &path, &query, root);
    if let Some((full, before)) = pushed {
        after_push(state, root, &full, &before);
    }
}

/// A renamed repository's or organisation's old path answers with a redirect to the new one:
/// a repository's with 307 up to Gitea 1.23 and 301 from 1.24 (`RedirectToRepo`), an
/// organisation's with 307 in every version (context_response.go `RedirectToUser`); see
/// [`Version::renamed_repo_status`].
fn redirect_of_rename(
    state: &Mutex<State>,
    parts: &[&str],
) -> Option<Response<std::io::Cursor<Vec<u8>>>> {
    let s = state.lock().unwrap();
    let (status, to) = match parts {
        ["repos", org, repo, rest @ ..] => {
            let new = s.renamed_repos.get(*repo)?;
            let tail: String = rest.iter().map(|p| format!("/{p}")).collect();
            (
                s.version.renamed_repo_status(),
                format!("/api/v1/repos/{org}/{new}{tail}"),
            )
        }
        ["orgs", org, rest @ ..] => {
            let new = s.renamed_orgs.get(*org)?;
            let tail: String = rest.iter().map(|p| format!("/{p}")).collect();
            (307, format!("/api/v1/orgs/{new}{tail}"))
        }
        _ => return None,
    };
    Some(
        Response::from_data(Vec::new())
            .with_status_code(status)
            .with_header(Header::from_bytes("Location", to.as_bytes()).unwrap()),
    )
}

/// The request against every supported version's published API, the answer against this
/// forge's version's; what breaks either is kept for the forge's drop to fail the test with.
fn held_to_the_contract(
    state: &Mutex<State>,
    (method, api, query, body): (&str, &str, &str, &str),
) {
    let mut faults = crate::contract::check_request(method, api, query, body);
    let version = state.lock().unwrap().version;
    if let Some((status, answer)) = ANSWERED.with(|a| a.borrow_mut().take()) {
        let contract = crate::contract::named(version.contract());
        faults.extend(contract.check_answer(method, api, status, &answer));
    }
    if !faults.is_empty() {
        state.lock().unwrap().violations.extend(faults);
    }
}

/// Every branch of a bare repository and its tip.
fn branch_tips(repo: &Path) -> BTreeMap<String, String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args([
            "for-each-ref",
            "--format=%(refname:strip=2) %(objectname)",
            "refs/heads",
        ])
        .output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    text.unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(b, o)| (b.to_string(), o.to_string()))
        .collect()
}

/// What Gitea does once a push is in: a push hook per branch that moved, and for each open pull
/// request from that branch a `synchronized` hook, its head moved now or, with `head_lag`,
/// by the queue later (services/repository/push.go, services/pull/pull.go).
fn after_push(state: &Mutex<State>, root: &Path, full: &str, before: &BTreeMap<String, String>) {
    let repo = root.join(format!("{full}.git"));
    let name = full.rsplit('/').next().unwrap_or_default().to_string();
    let mut s = state.lock().unwrap();
    // Only the versions that list heads from `refs/pull/N/head` show the queue's lag.
    let lag = s
        .head_lag
        .filter(|_| s.version.lists_heads_from_pull_refs());
    let hooks = s.hooks.clone();
    for (branch, after) in branch_tips(&repo) {
        let old = before
            .get(&branch)
            .cloned()
            .unwrap_or_else(|| "0".repeat(40));
        if old == after {
            continue;
        }
        let message = git_output(&repo, &["log", "-1", "--format=%B", &after]);
        webhook::deliver(
            &hooks,
            "push",
            webhook::push(full, &branch, (&old, &after), &message),
        );
        let from_branch = s.pulls.get_mut(&name).into_iter().flatten().filter(|p| {
            p.open && p.fork.is_none() && p.head_ref.as_deref() == Some(branch.as_str())
        });
        for p in from_branch {
            if let Some(lag) = lag {
                p.lagging = Some((old.clone(), std::time::Instant::now() + lag));
            }
            let payload = webhook::pull_request(
                full,
                "synchronized",
                (p.number, &p.title),
                (&branch, &after),
            );
            webhook::deliver(&hooks, "pull_request", payload);
        }
    }
}

/// git's stdout in a bare repository, empty when git fails.
fn git_output(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(args)
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The scope category a route needs, as Gitea's routers/api/v1/api.go groups them with
/// `tokenRequiresScopes`; `None` for routes that need none.
fn scope_categories(parts: &[&str]) -> &'static [&'static str] {
    match parts {
        ["version"] => &[],
        ["users", _, "orgs", ..] => &["user", "organization"],
        ["user", ..] | ["users", ..] => &["user"],
        ["orgs", ..] => &["organization"],
        ["repos", _, _, "issues", ..] => &["issue"],
        ["repos", ..] => &["repository"],
        _ => &[],
    }
}

/// Gitea's 403 when the token's scopes (when a test sets them) lack `level` on any of
/// `categories`; a write scope holds its read scope (models/auth/access_token_scope.go).
fn scope_held(
    state: &Mutex<State>,
    level: &str,
    categories: &[&str],
) -> Result<(), Response<std::io::Cursor<Vec<u8>>>> {
    let Some(scopes) = state.lock().unwrap().scopes.clone() else {
        return Ok(());
    };
    for category in categories {
        let needed = format!("{level}:{category}");
        let held = scopes
            .iter()
            .any(|s| *s == needed || *s == format!("write:{category}"));
        if !held {
            return Err(json(
                403,
                serde_json::json!({ "message": format!("token does not have at least one of required scope(s): [{needed}]") }),
            ));
        }
    }
    Ok(())
}

fn api_call(
    method: &str,
    api: &str,
    query: &str,
    body: &str,
    root: &Path,
    state: &Mutex<State>,
    login: &str,
) -> Response<std::io::Cursor<Vec<u8>>> {
    let parts: Vec<&str> = api.trim_matches('/').split('/').collect();
    if let Some(moved) = redirect_of_rename(state, &parts) {
        return moved;
    }
    let level = if method == "GET" { "read" } else { "write" };
    if let Err(refused) = scope_held(state, level, scope_categories(&parts)) {
        return refused;
    }
    match (method, parts.as_slice()) {
        ("GET", ["version"]) => {
            let version = state.lock().unwrap().version.version_string();
            json(200, serde_json::json!({ "version": version }))
        }
        ("GET", ["user"]) => json(200, serde_json::json!({ "id": 7, "login": login })),
        ("GET", ["orgs", org]) => {
            if root.join(org).is_dir() {
                json(
                    200,
                    serde_json::json!({ "id": 3, "name": org, "username": org }),
                )
            } else {
                json(404, serde_json::json!({ "message": "GetUserByName" }))
            }
        }
        ("GET", ["users", _login, "orgs", _org, "permissions"]) => {
            let can = !state.lock().unwrap().no_create;
            json(
                200,
                serde_json::json!({ "is_owner": false, "is_admin": false, "can_write": true, "can_read": true, "can_create_repository": can }),
            )
        }
        // `reqAdmin` on the route (routers/api/v1/api.go): repository admins only.
        ("GET", ["repos", _org, repo, "branch_protections"])
            if !state.lock().unwrap().admin_of.contains(*repo) =>
        {
            json(
                403,
                serde_json::json!({ "message": "user should be an owner or a collaborator with admin write of a repository" }),
            )
        }
        ("GET", ["repos", _org, repo, "branch_protections"]) => {
            let rules = state
                .lock()
                .unwrap()
                .protections
                .get(*repo)
                .cloned()
                .unwrap_or_default();
            json(200, serde_json::Value::Array(rules))
        }
        ("GET", ["repos", _org, _repo, "issues"]) => json(200, serde_json::json!([])),
        ("GET", ["repos", org, repo]) => {
            if root.join(org).join(format!("{repo}.git")).exists() {
                let mut s = state.lock().unwrap();
                let flags = s.repos.entry(repo.to_string()).or_default();
                if flags.pushed {
                    flags.empty = false;
                }
                json(
                    200,
                    serde_json::json!({
                        "name": repo, "full_name": format!("{org}/{repo}"),
                        "mirror": flags.mirror, "archived": flags.archived, "empty": flags.empty,
                        "permissions": { "admin": false, "push": !flags.no_push, "pull": true },
                    }),
                )
            } else {
                json(
                    404,
                    serde_json::json!({ "message": "The target couldn't be found." }),
                )
            }
        }
        // `orgAssignment` finds no org: 404 (routers/api/v1/api.go), before any right is asked.
        ("POST", ["orgs", org, "repos"]) if !root.join(org).is_dir() => json(
            404,
            serde_json::json!({ "message": "GetOrgByName", "errors": [] }),
        ),
        ("POST", ["orgs", org, "repos"]) => {
            if state.lock().unwrap().no_create {
                return json(
                    403,
                    serde_json::json!({ "message": "user is not allowed to create repositories in this org" }),
                );
            }
            let req: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let name = req["name"].as_str().unwrap_or_default();
            let branch = req["default_branch"].as_str().unwrap_or("main");
            assert!(
                req.get("mirror").is_none(),
                "mirrors must be created as normal repositories"
            );
            let repo = root.join(org).join(format!("{name}.git"));
            if repo.exists() {
                return json(
                    409,
                    serde_json::json!({ "message": "repository already exists" }),
                );
            }
            git(
                root,
                &["init", "-q", "--bare", "-b", branch, repo.to_str().unwrap()],
            );
            let mut s = state.lock().unwrap();
            s.repos.entry(name.to_string()).or_default().empty = true;
            s.admin_of.insert(name.to_string());
            json(201, serde_json::json!({ "name": name }))
        }
        ("GET", ["repos", _org, repo, "pulls"]) => {
            let _org = *_org;
            let get = |k: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.parse::<usize>().ok())
            };
            let s = state.lock().unwrap();
            if s.repos.get(*repo).is_some_and(|f| f.empty) {
                // Gitea: no pull requests of an empty repository, and a 404 for asking.
                return json(
                    404,
                    serde_json::json!({ "message": "The target couldn't be found." }),
                );
            }
            let max = s.max_items.unwrap_or(50);
            let (page, limit) = (
                get("page").unwrap_or(1),
                get("limit").unwrap_or(30).min(max),
            );
            // Newest first: the list's default sort (models/issues/issue_search.go,
            // `applySorts`: created_unix, then id, descending); numbers here grow with time.
            let mut open: Vec<_> = s
                .pulls
                .get(*repo)
                .into_iter()
                .flatten()
                .filter(|p| p.open)
                .collect();
            open.sort_by_key(|p| std::cmp::Reverse(p.number));
            let nulls = !matches!(s.version, Version::Gitea1_23 | Version::Gitea1_25);
            let items: Vec<serde_json::Value> = open
                .iter()
                .skip((page - 1) * limit)
                .take(limit)
                .map(|p| match p.converter_error && nulls {
                    true => serde_json::Value::Null,
                    false => pull_json(root, (_org, repo), p, Listed::InList),
                })
                .collect();
            // Gitea's paging headers (routers/api/v1/repo/pull.go, `ctx.SetLinkHeader`).
            let last = open.len().div_ceil(limit.max(1)).max(1);
            let link = |p: usize, rel: &str| {
                format!("<http://forge/api/v1/repos/{_org}/{repo}/pulls?page={p}&limit={limit}>; rel=\"{rel}\"")
            };
            let mut links = vec![link(last, "last")];
            if page < last {
                links.insert(0, link(page + 1, "next"));
            }
            json(200, serde_json::Value::Array(items))
                .with_header(
                    Header::from_bytes("X-Total-Count", open.len().to_string().as_bytes()).unwrap(),
                )
                .with_header(Header::from_bytes("Link", links.join(",").as_bytes()).unwrap())
        }
        // One pull request by number, open or not: routers/api/v1/repo/pull.go
        // (`GetPullRequest`); 404 for a number it does not have.
        ("GET", ["repos", org, repo, "pulls", n]) => {
            let s = state.lock().unwrap();
            match s
                .pulls
                .get(*repo)
                .and_then(|ps| ps.iter().find(|p| p.number.to_string() == *n))
            {
                Some(p) => json(200, pull_json(root, (org, repo), p, Listed::Alone)),
                None => json(
                    404,
                    serde_json::json!({ "message": "The target couldn't be found." }),
                ),
            }
        }
        ("POST", ["repos", _org, repo, "issues", n, "comments"]) => {
            let req: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let mut s = state.lock().unwrap();
            s.last_id += 1;
            let id = s.last_id;
            let pull = s
                .pulls
                .get_mut(*repo)
                .and_then(|ps| ps.iter_mut().find(|p| p.number.to_string() == *n));
            match pull {
                Some(p) => {
                    let body = req["body"].as_str().unwrap_or_default().to_string();
                    let now = unix(std::time::SystemTime::now());
                    let c = CommentRec {
                        id,
                        body,
                        login: login.to_string(),
                        reactions: Vec::new(),
                        created: now,
                        updated: now,
                    };
                    let answer = comment_json(&c);
                    p.comments.push(c);
                    json(201, answer)
                }
                // Gitea answers 500, not 404, for a comment on a missing issue.
                None => json(
                    500,
                    serde_json::json!({ "message": "issue does not exist" }),
                ),
            }
        }
        // Every comment at once, oldest first: `ListIssueComments` takes no page or limit, only
        // `since` and `before` (RFC 3339; kept when `updated_unix` >= since, <= before; 422
        // for a time it cannot parse): routers/api/v1/repo/issue_comment.go,
        // routers/api/v1/utils (`GetQueryBeforeSince`), models/issues/comment.go (`ToConds`).
        ("GET", ["repos", _org, repo, "issues", n, "comments"]) => {
            let bound = |k: &str| -> Result<Option<u64>, ()> {
                match query_value(query, k) {
                    None => Ok(None),
                    Some(v) => parse_rfc3339(&v).map(Some).ok_or(()),
                }
            };
            let (Ok(since), Ok(before)) = (bound("since"), bound("before")) else {
                return json(
                    422,
                    serde_json::json!({ "message": "GetQueryBeforeSince: invalid time" }),
                );
            };
            let s = state.lock().unwrap();
            let comments: Vec<serde_json::Value> = s
                .pulls
                .get(*repo)
                .and_then(|ps| ps.iter().find(|p| p.number.to_string() == *n))
                .map(|p| p.comments.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|c| since.is_none_or(|t| c.updated >= t))
                .filter(|c| before.is_none_or(|t| c.updated <= t))
                .map(|c| comment_json(&c))
                .collect();
            json(200, serde_json::Value::Array(comments))
        }
        // A comment's reactions: `null` when there is none, as Gitea's nil slice renders.
        ("GET", ["repos", _org, repo, "issues", "comments", id, "reactions"]) => {
            let s = state.lock().unwrap();
            match find_comment(&s, repo, id) {
                Some(c) if c.reactions.is_empty() => json(200, serde_json::Value::Null),
                Some(c) => json(
                    200,
                    serde_json::Value::Array(
                        c.reactions
                            .iter()
                            .map(|(l, content)| serde_json::json!({ "user": { "login": l }, "content": content }))
                            .collect(),
                    ),
                ),
                None => json(404, serde_json::json!({ "message": "comment does not exist" })),
            }
        }
        ("POST", ["repos", _org, repo, "issues", "comments", id, "reactions"]) => {
            let req: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let content = req["content"].as_str().unwrap_or_default().to_string();
            let mut s = state.lock().unwrap();
            let comment = s
                .pulls
                .get_mut(*repo)
                .into_iter()
                .flatten()
                .flat_map(|p| p.comments.iter_mut())
                .find(|c| c.id.to_string() == *id);
            match comment {
                Some(c) => {
                    c.reactions.push((login.to_string(), content.clone()));
                    json(
                        201,
                        serde_json::json!({ "user": { "login": login }, "content": content }),
                    )
                }
                None => json(
                    404,
                    serde_json::json!({ "message": "comment does not exist" }),
                ),
            }
        }
        ("POST", ["repos", _org, repo, "statuses", sha]) => {
            let req: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let field = |k: &str| req[k].as_str().unwrap_or_default().to_string();
            // `NewCommitStatus` stores the state it is sent, unchecked.
            let state_word = field("state");
            let mut s = state.lock().unwrap();
            s.last_id += 1;
            let rec = StatusRec {
                id: s.last_id,
                state: state_word,
                context: field("context"),
                description: field("description"),
                creator: login.to_string(),
            };
            s.statuses
                .entry((repo.to_string(), sha.to_string()))
                .or_default()
                .push(rec.clone());
            json(201, status_json(&rec))
        }
        // Paged like every list (`utils.GetListOptions`: `page` from 1, `limit` capped at
        // MAX_RESPONSE_ITEMS), with `X-Total-Count` (routers/api/v1/repo/status.go).
        ("GET", ["repos", _org, repo, "statuses", sha]) => {
            let s = state.lock().unwrap();
            let all: Vec<serde_json::Value> = s
                .statuses
                .get(&(repo.to_string(), sha.to_string()))
                .into_iter()
                .flatten()
                .rev()
                .map(status_json)
                .collect();
            let max = s.max_items.unwrap_or(50);
            let number = |k: &str| query_value(query, k).and_then(|v| v.parse::<usize>().ok());
            let limit = number("limit").unwrap_or(30).clamp(1, max);
            let page = number("page").unwrap_or(1).max(1);
            let list: Vec<serde_json::Value> = all
                .iter()
                .skip((page - 1) * limit)
                .take(limit)
                .cloned()
                .collect();
            json(200, serde_json::Value::Array(list)).with_header(
                Header::from_bytes("X-Total-Count", all.len().to_string().as_bytes()).unwrap(),
            )
        }
        ("POST", ["repos", org, repo, "pulls"]) => {
            let req: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let head = req["head"].as_str().unwrap_or_default().to_string();
            let base = req["base"].as_str().unwrap_or_default().to_string();
            let repo_dir = root.join(org).join(format!("{repo}.git"));
            let (Some(_), Some(_)) = (tip(&repo_dir, &head), tip(&repo_dir, &base)) else {
                return json(
                    404,
                    serde_json::json!({ "message": "branch does not exist" }),
                );
            };
            let mut s = state.lock().unwrap();
            let pulls = s.pulls.entry(repo.to_string()).or_default();
            if let Some(p) = pulls.iter().find(|p| {
                p.open
                    && p.fork.is_none()
                    && p.head_ref.as_deref() == Some(head.as_str())
                    && p.base == base
            }) {
                // `id` is the pull request's row id, `issue_id` its number (`existingPr.Index`);
                // row ids here are the number plus 1000, so the two never agree by chance.
                let same = repo_id(&format!("{org}/{repo}"));
                return json(
                    409,
                    serde_json::json!({ "message": format!("pull request already exists for these targets [id: {}, issue_id: {}, head_repo_id: {same}, base_repo_id: {same}, head_branch: {head}, base_branch: {base}]", p.number + 1000, p.number) }),
                );
            }
            let number = pulls.iter().map(|p| p.number).max().unwrap_or(0) + 1;
            let title = req["title"].as_str().unwrap_or_default().to_string();
            let sha = tip(&repo_dir, &head).unwrap_or_default();
            let payload = webhook::pull_request(
                &format!("{org}/{repo}"),
                "opened",
                (number, &title),
                (&head, &sha),
            );
            pulls.push(PullRec {
                number,
                head_ref: Some(head),
                base,
                title,
                open: true,
                ..PullRec::default()
            });
            webhook::deliver(&s.hooks, "pull_request", payload);
            json(201, serde_json::json!({ "number": number }))
        }
        ("PATCH", ["repos", _org, repo, "pulls", n]) => {
            let req: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let mut s = state.lock().unwrap();
            let pull = s
                .pulls
                .get_mut(*repo)
                .and_then(|ps| ps.iter_mut().find(|p| p.number.to_string() == *n));
            match pull {
                Some(p) if p.refuse_close => json(
                    412,
                    serde_json::json!({ "message": "The pull request has been merged already" }),
                ),
                Some(p) if req["state"] == "closed" => {
                    p.open = false;
                    json(
                        201,
                        serde_json::json!({ "number": p.number, "state": "closed" }),
                    )
                }
                Some(p) if req["title"].is_string() => {
                    p.title = req["title"].as_str().unwrap_or_default().to_string();
                    json(
                        201,
                        serde_json::json!({ "number": p.number, "title": p.title }),
                    )
                }
                _ => json(422, serde_json::json!({ "message": "unsupported" })),
            }
        }
        _ => json(
            404,
            serde_json::json!({ "message": format!("no route {method} {api}") }),
        ),
    }
}

/// A query parameter's value, percent-decoded as Go's `url.ParseQuery` does (`+` is a space).
fn query_value(query: &str, key: &str) -> Option<String> {
    let raw = query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The offset of the forge's clock: Gitea writes times in the server's zone (`+02:00` for a
/// server in Central Europe in summer), not always `Z` (modules/timeutil, `AsTime` in the
/// configured location); the agent must pass them back as they came.
const SERVER_OFFSET_MINUTES: i64 = 120;

/// `secs` as Gitea writes a time: RFC 3339 in the server's zone, `2026-07-01T14:00:00+02:00`.
fn rfc3339(secs: u64) -> String {
    let local = secs as i64 + SERVER_OFFSET_MINUTES * 60;
    let t = std::time::UNIX_EPOCH + Duration::from_secs(local.max(0) as u64);
    let utc = humantime::format_rfc3339_seconds(t).to_string();
    let sign = if SERVER_OFFSET_MINUTES < 0 { '-' } else { '+' };
    let off = SERVER_OFFSET_MINUTES.abs();
    format!(
        "{}{sign}{:02}:{:02}",
        utc.trim_end_matches('Z'),
        off / 60,
        off % 60
    )
}

/// An RFC 3339 time with any offset (`Z`, `+02:00`, `-05:30`), as Go's `time.Parse` reads a
/// query's `since` and `before` (routers/api/v1/utils `GetQueryBeforeSince`).
fn parse_rfc3339(text: &str) -> Option<u64> {
    if text.ends_with('Z') || text.ends_with('z') {
        return humantime::parse_rfc3339_weak(&text[..text.len() - 1])
            .ok()
            .map(unix);
    }
    let (local, off) = text.split_at(text.len().checked_sub(6)?);
    let sign = match off.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = off[1..].split_once(':')?;
    let minutes = h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?;
    let at = unix(humantime::parse_rfc3339_weak(local).ok()?) as i64;
    u64::try_from(at - sign * minutes * 60).ok()
}

/// A comment as Gitea's `api.Comment` has it (modules/structs/issue_comment.go).
fn comment_json(c: &CommentRec) -> serde_json::Value {
    let now = unix(std::time::SystemTime::now());
    let or_now = |t: u64| if t == 0 { now } else { t };
    serde_json::json!({
        "id": c.id,
        "body": c.body,
        "user": { "login": c.login },
        "created_at": rfc3339(or_now(c.created)),
        "updated_at": rfc3339(or_now(c.updated)),
    })
}

/// A stable id per repository name, as Gitea's `repo_id` is per repository.
fn repo_id(name: &str) -> u64 {
    name.bytes().fold(1_469_598_103_934_665_603u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1_099_511_628_211)
    }) % 1_000_000
        + 1
}

/// A pull request as Gitea's `api.PullRequest` has it (modules/structs/pull.go): `head` and
/// `base` are `PRBranchInfo` with `ref`, `sha` and `repo_id`.
/// The old head a pull request still shows while Gitea's queue has not moved its ref.
fn lag_shown(p: &PullRec) -> Option<String> {
    let (old, at) = p.lagging.as_ref()?;
    (*at > std::time::Instant::now()).then(|| old.clone())
}

/// Where a pull request is shown: Gitea fills `head.sha` differently in the list and alone.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listed {
    /// `GET .../pulls`: from 1.23 (`ToAPIPullRequests`) `refs/pull/N/head`, which may lag.
    InList,
    /// `GET .../pulls/{n}` (`ToAPIPullRequest`): the head branch's tip, at once.
    Alone,
}

fn pull_json(
    root: &Path,
    (org, repo): (&str, &str),
    p: &PullRec,
    shown: Listed,
) -> serde_json::Value {
    // Gitea reads a pull request's head from refs/pull/N/head, which it moves with the head
    // branch on every push to it.
    let (sha, head_ref) = match &p.head_ref {
        Some(branch) if p.fork.is_some() => (p.head_sha.clone(), branch.clone()),
        Some(branch) if shown == Listed::InList && lag_shown(p).is_some() => {
            (lag_shown(p).unwrap_or_default(), branch.clone())
        }
        Some(branch) => (
            tip(&root.join(org).join(format!("{repo}.git")), branch).unwrap_or_default(),
            branch.clone(),
        ),
        None => (p.head_sha.clone(), "feature".to_string()),
    };
    let head_repo = match &p.fork {
        _ if p.head_repo_gone => -1,
        Some(owner) => repo_id(&format!("{owner}/{repo}")) as i64,
        None => repo_id(&format!("{org}/{repo}")) as i64,
    };
    serde_json::json!({
        "number": p.number,
        "title": p.title,
        "state": if p.open { "open" } else { "closed" },
        "comments": p.comments.len(),
        "head": { "sha": sha, "ref": head_ref, "repo_id": head_repo },
        "base": { "ref": p.base, "repo_id": repo_id(&format!("{org}/{repo}")) },
    })
}

fn find_comment<'a>(s: &'a State, repo: &str, id: &str) -> Option<&'a CommentRec> {
    s.pulls
        .get(repo)
        .into_iter()
        .flatten()
        .flat_map(|p| p.comments.iter())
        .find(|c| c.id.to_string() == id)
}

/// A commit status as Gitea lists it: its state under `status` (`api.CommitStatus`,
/// modules/structs/status.go, every version); `state` is only the name in the request.
fn status_json(s: &StatusRec) -> serde_json::Value {
    serde_json::json!({
        "id": s.id, "status": s.state, "context": s.context, "description": s.description,
        "creator": { "login": s.creator },
    })
}

/// The commit a branch of a bare repository is at, if it has the branch.
fn tip(repo: &Path, branch: &str) -> Option<String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["rev-parse", "--verify", "--quiet"])
        .arg(format!("refs/heads/{branch}^{{commit}}"))
        .output()
        .ok()?;
    let oid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !oid.is_empty()).then_some(oid)
}

/// Runs git in `dir` as a test's user would, and its stdout; a failure panics with git's words.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `git http-backend` as a CGI program for one request.
fn cgi(mut request: Request, method: &str, path: &str, query: &str, root: &Path) {
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REMOTE_USER", "cc-ci")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", method)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (h, var) in [
        ("Content-Type", "CONTENT_TYPE"),
        ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
        ("Git-Protocol", "HTTP_GIT_PROTOCOL"),
    ] {
        if let Some(v) = header(&request, h) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd.spawn().expect("git http-backend");
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut out = Vec::new();
    let _ = child.stdout.take().unwrap().read_to_end(&mut out);
    let _ = writer.join();
    let _ = child.wait();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        let _ = request.respond(Response::from_data(out).with_status_code(500));
        return;
    };
    let head = String::from_utf8_lossy(&out[..end]).to_string();
    let mut response = Response::from_data(out[end + sep..].to_vec());
    for line in head.lines() {
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("Status") {
                let code = v
                    .trim()
                    .split(' ')
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(200);
                response = response.with_status_code(code);
            } else if let Ok(h) = Header::from_bytes(k.trim(), v.trim()) {
                response = response.with_header(h);
            }
        }
    }
    let _ = request.respond(response);
}

/// One byte per read, after a pause.
struct Trickle<R> {
    inner: R,
    pause: Duration,
}

impl<R: Read> Read for Trickle<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(self.pause);
        let n = buf.len().min(1);
        self.inner.read(&mut buf[..n])
    }
}

/// A body that repeats its pattern forever.
struct Endless {
    pattern: Vec<u8>,
    at: usize,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pattern.is_empty() {
            return Ok(0);
        }
        for b in buf.iter_mut() {
            *b = self.pattern[self.at];
            self.at = (self.at + 1) % self.pattern.len();
        }
        Ok(buf.len())
    }
}
