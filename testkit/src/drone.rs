//! A test Drone on 127.0.0.1: the API calls the agent and the bridge make, the webhook the forge
//! sends, and builds that set commit statuses on the forge as Drone does. It follows Drone's
//! source (github.com/drone/drone, harness/drone v2.25), not the agent:
//!
//! | behaviour | follows |
//! | --- | --- |
//! | `Authorization: Bearer <token>`; an unknown token is a guest, not an error | session/session.go, handler/api/auth/auth.go |
//! | `GET /api/builds/incomplete`: 401 `{"message":"Unauthorized"}` for a guest, 403 `{"message":"Forbidden"}` for a user who is not an admin; else the repositories with a pending or running build, each with `slug` and `build`, at most 50; `oss`: 501 `{"message":"Not Implemented"}` for everyone | handler/api/api.go, handler/api/acl/acl.go (`AuthorizeAdmin`), store/repos/repos.go (`queryRepoWithBuildIncomplete`), handler/api/builds/builds_oss.go |
//! | `GET /api/user/builds`: 401 for a guest; else the newest 25 builds of the repositories whose permission rows are the token's user's (those it synced), newest first, each as its repository with `slug` and `build` (in OSS too): an admin that never synced gets `[]` | handler/api/user/activity.go (`HandleRecent`), store/repos/repos.go (`queryRepoWithBuildAll`: joined on `perms` by user id) |
//! | `POST /api/repos/{o}/{n}/builds?branch=&commit=`: a user with write access; 404 for a repository not activated; a `custom` event build of the commit, answered 200 with the build | handler/api/repos/builds/create.go |
//! | `GET /api/repos/{o}/{n}/builds`: newest first; a repository Drone never synced 404, or 401 for a guest; one synced but never activated 200 `[]` | handler/api/repos/builds/list.go, handler/api/acl/repo.go (`InjectRepository`) |
//! | `POST /hook` (the webhook activation installs on the forge): a `push` or a pull request `opened`/`synchronized` of an activated repository starts a build of that event, unless `[ci skip]` or `[skip ci]` is in the push's head commit message or the pull request's title or body; a custom build is never skipped so | service/hook/parser/parse.go, trigger/skip.go (`skipMessage`), trigger/trigger.go |
//! | a build sets the commit status `continuous-integration/drone` plus `/push` or `/pr` for those events (a custom build the bare name) to pending when it is created and to its result when it ends, through the forge's API | service/status/status.go, service/status/util.go (`createLabel`) |
//!
//! Unlike Drone: no stages or steps (a build runs as `runs` says), guests read every
//! repository (Drone lets them read public ones only), and the hook is not signed.

// A stand-in for tests: a set-up that cannot work panics at once, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tiny_http::{Header, Request, Response, Server};

/// What a build does once created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runs {
    /// Runs, then ends with this status (`success`, `failure`).
    Ends(String),
    /// Runs and never ends: no final status.
    Hangs,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildRec {
    pub number: i64,
    pub status: String,
    pub event: String,
    pub after: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
}

pub struct DroneState {
    /// `owner/name` of the repositories Drone has synced from the forge (activated or not).
    pub synced: BTreeSet<String>,
    /// The repositories each Drone user (`admin`, `user`) synced itself: its permission rows,
    /// which `/api/user/builds` is joined on.
    pub synced_by: BTreeMap<&'static str, BTreeSet<String>>,
    /// `owner/name` of the repositories activated in Drone.
    pub activated: BTreeSet<String>,
    /// Drone's OSS build: no list of incomplete builds.
    pub oss: bool,
    /// Every build's place in the order all were made, by (slug, number).
    pub made: Vec<(String, i64)>,
    pub builds: BTreeMap<String, Vec<BuildRec>>,
    pub runs: Runs,
    /// The forge Drone sets statuses on, and the token of the user who activated the repositories.
    pub forge_url: String,
    pub forge_token: String,
}

pub struct TestDrone {
    pub url: String,
    pub admin_token: String,
    pub user_token: String,
    pub state: Arc<Mutex<DroneState>>,
    server: Arc<Server>,
}

const CONTEXT: &str = "continuous-integration/drone";

fn json(status: u16, body: serde_json::Value) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_data(body.to_string().into_bytes())
        .with_status_code(status)
        .with_header(Header::from_bytes("Content-Type", "application/json").expect("a header"))
}

impl TestDrone {
    pub fn start(forge_url: &str, forge_token: &str) -> Self {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("a port"));
        let url = format!(
            "http://{}",
            server.server_addr().to_ip().expect("an address")
        );
        let drone = Self {
            url,
            admin_token: "drone-admin-token".into(),
            user_token: "drone-user-token".into(),
            state: Arc::new(Mutex::new(DroneState {
                synced: BTreeSet::new(),
                synced_by: BTreeMap::new(),
                activated: BTreeSet::new(),
                oss: false,
                made: Vec::new(),
                builds: BTreeMap::new(),
                runs: Runs::Ends("success".into()),
                forge_url: forge_url.to_string(),
                forge_token: forge_token.to_string(),
            })),
            server: server.clone(),
        };
        let (admin, user, state) = (
            drone.admin_token.clone(),
            drone.user_token.clone(),
            drone.state.clone(),
        );
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                let (admin, user, state) = (admin.clone(), user.clone(), state.clone());
                std::thread::spawn(move || handle(request, &admin, &user, &state));
            }
        });
        drone
    }

    /// Synced and activated: what activation in Drone's web UI does (the forge's webhook is
    /// installed by [`TestDrone::hook_url`] on the test forge, where a test wants it).
    pub fn activate(&self, slug: &str) {
        let mut s = self.state.lock().expect("state");
        s.synced.insert(slug.to_string());
        s.activated.insert(slug.to_string());
        s.synced_by
            .entry("user")
            .or_default()
            .insert(slug.to_string());
    }

    /// The admin's own Drone user synced `slug` too (it then has permission rows for it).
    pub fn synced_by_admin(&self, slug: &str) {
        let mut s = self.state.lock().expect("state");
        s.synced_by
            .entry("admin")
            .or_default()
            .insert(slug.to_string());
    }

    /// Where the forge sends its webhooks for activated repositories.
    pub fn hook_url(&self) -> String {
        format!("{}/hook", self.url)
    }

    pub fn set_runs(&self, runs: Runs) {
        self.state.lock().expect("state").runs = runs;
    }

    pub fn builds(&self, slug: &str) -> Vec<BuildRec> {
        let s = self.state.lock().expect("state");
        s.builds.get(slug).cloned().unwrap_or_default()
    }

    /// A build of another repository that runs until [`TestDrone::finish_all`]: CI is busy.
    pub fn hold(&self, slug: &str) {
        let mut s = self.state.lock().expect("state");
        let builds = s.builds.entry(slug.to_string()).or_default();
        let number = builds.len() as i64 + 1;
        builds.push(BuildRec {
            number,
            status: "running".into(),
            event: "push".into(),
            after: "0".repeat(40),
            git_ref: "refs/heads/main".into(),
        });
        s.made.push((slug.to_string(), number));
    }

    /// The builds [`TestDrone::hold`] made on `slug` end, as a success.
    pub fn release(&self, slug: &str) {
        let mut s = self.state.lock().expect("state");
        for b in s.builds.entry(slug.to_string()).or_default() {
            if b.status == "running" {
                b.status = "success".into();
            }
        }
    }

    pub fn finish_all(&self) {
        let mut s = self.state.lock().expect("state");
        for b in s.builds.values_mut().flatten() {
            if b.status == "running" || b.status == "pending" {
                b.status = "success".into();
            }
        }
    }
}

impl Drop for TestDrone {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn handle(request: Request, admin: &str, user: &str, state: &Arc<Mutex<DroneState>>) {
    let method = request.method().as_str().to_string();
    let full = request.url().to_string();
    let (path, query) = full.split_once('?').unwrap_or((&full, ""));
    let bearer = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().trim_start_matches("Bearer ").to_string())
        .unwrap_or_default();
    // A token Drone does not know is a guest (auth.go), refused only where a route needs a user.
    let who = if bearer == admin {
        "admin"
    } else if bearer == user {
        "user"
    } else {
        "guest"
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or_default()
            .to_string()
    };
    let response = match (method.as_str(), parts.as_slice()) {
        ("GET", ["api", "builds", "incomplete"]) if state.lock().expect("state").oss => {
            json(501, serde_json::json!({ "message": "Not Implemented" }))
        }
        ("GET", ["api", "builds", "incomplete"]) => match who {
            "guest" => json(401, serde_json::json!({ "message": "Unauthorized" })),
            "user" => json(403, serde_json::json!({ "message": "Forbidden" })),
            _ => {
                let s = state.lock().expect("state");
                let list: Vec<serde_json::Value> = s
                    .builds
                    .iter()
                    .flat_map(|(slug, bs)| bs.iter().map(move |b| (slug, b)))
                    .filter(|(_, b)| b.status == "pending" || b.status == "running")
                    .take(50)
                    .map(|(slug, b)| serde_json::json!({ "slug": slug, "build": b }))
                    .collect();
                json(200, serde_json::Value::Array(list))
            }
        },
        ("GET", ["api", "user", "builds"]) if who == "guest" => {
            json(401, serde_json::json!({ "message": "Unauthorized" }))
        }
        ("GET", ["api", "user", "builds"]) => json(200, recent(&state.lock().expect("state"), who)),
        ("POST", ["hook"]) => {
            hook(state, request_event(&request), request);
            return;
        }
        ("GET", ["api", "repos", o, n, "builds"]) => {
            let slug = format!("{o}/{n}");
            let s = state.lock().expect("state");
            if !s.synced.contains(&slug) && who == "guest" {
                json(401, serde_json::json!({ "message": "Unauthorized" }))
            } else if !s.synced.contains(&slug) {
                json(404, serde_json::json!({ "message": "Not Found" }))
            } else {
                let list: Vec<serde_json::Value> = s
                    .builds
                    .get(&slug)
                    .into_iter()
                    .flatten()
                    .rev()
                    .map(|b| serde_json::json!(b))
                    .collect();
                json(200, serde_json::Value::Array(list))
            }
        }
        ("POST", ["api", "repos", o, n, "builds"]) if who == "guest" => {
            let _ = (o, n);
            json(401, serde_json::json!({ "message": "Unauthorized" }))
        }
        ("POST", ["api", "repos", o, n, "builds"]) => {
            let slug = format!("{o}/{n}");
            let git_ref = format!("refs/heads/{}", param("branch"));
            match start(state, &slug, "custom", (&git_ref, &param("commit"))) {
                Some(build) => json(200, serde_json::json!(build)),
                None => json(404, serde_json::json!({ "message": "Not Found" })),
            }
        }
        _ => json(404, serde_json::json!({ "message": "Not Found" })),
    };
    let _ = request.respond(response);
}

/// The newest 25 builds of the repositories `who` synced, newest first, each as its repository.
fn recent(s: &DroneState, who: &str) -> serde_json::Value {
    let mine = s.synced_by.get(who).cloned().unwrap_or_default();
    let list: Vec<serde_json::Value> = s
        .made
        .iter()
        .rev()
        .filter(|(slug, _)| mine.contains(slug))
        .take(25)
        .filter_map(|(slug, n)| {
            let b = s.builds.get(slug)?.iter().find(|b| b.number == *n)?;
            Some(serde_json::json!({ "slug": slug, "build": b }))
        })
        .collect();
    serde_json::Value::Array(list)
}

fn request_event(request: &Request) -> String {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv("X-Gitea-Event"))
        .map(|h| h.value.as_str().to_string())
        .unwrap_or_default()
}

/// `[ci skip]` and its spellings, as trigger/skip.go looks for them, in lower case.
fn skip_asked(text: &str) -> bool {
    let lower = text.to_lowercase();
    ["[ci skip]", "[skip ci]", "***no_ci***"]
        .iter()
        .any(|w| lower.contains(w))
}

/// The forge's webhook: a build of a push or a pull request opened or synchronized, unless its
/// message, title or body asks to skip it.
fn hook(state: &Arc<Mutex<DroneState>>, event: String, mut request: Request) {
    let mut body = String::new();
    let _ = request.as_reader().read_to_string(&mut body);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let slug = v["repository"]["full_name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let planned = match event.as_str() {
        "push" if !skip_asked(v["head_commit"]["message"].as_str().unwrap_or_default()) => Some((
            "push",
            v["ref"].as_str().unwrap_or_default().to_string(),
            v["after"].as_str().unwrap_or_default().to_string(),
        )),
        "pull_request"
            if matches!(v["action"].as_str(), Some("opened" | "synchronized"))
                && !skip_asked(v["pull_request"]["title"].as_str().unwrap_or_default())
                && !skip_asked(v["pull_request"]["body"].as_str().unwrap_or_default()) =>
        {
            Some((
                "pull_request",
                format!("refs/pull/{}/head", v["number"]),
                v["pull_request"]["head"]["sha"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ))
        }
        _ => None,
    };
    if let Some((event, git_ref, after)) = planned {
        let _ = start(state, &slug, event, (&git_ref, &after));
    }
    let _ = request.respond(json(200, serde_json::json!({})));
}

/// A build of `commit` for `event` in an activated repository, then its run, which sets
/// statuses; `None` for a repository not activated.
fn start(
    state: &Arc<Mutex<DroneState>>,
    slug: &str,
    event: &str,
    (git_ref, commit): (&str, &str),
) -> Option<BuildRec> {
    let mut s = state.lock().expect("state");
    if !s.activated.contains(slug) {
        return None;
    }
    let builds = s.builds.entry(slug.to_string()).or_default();
    let build = BuildRec {
        number: builds.len() as i64 + 1,
        status: "pending".into(),
        event: event.to_string(),
        after: commit.to_string(),
        git_ref: git_ref.to_string(),
    };
    builds.push(build.clone());
    s.made.push((slug.to_string(), build.number));
    let context = match event {
        "push" => format!("{CONTEXT}/push"),
        "pull_request" => format!("{CONTEXT}/pr"),
        _ => CONTEXT.to_string(),
    };
    let (runs, forge, token) = (s.runs.clone(), s.forge_url.clone(), s.forge_token.clone());
    drop(s);
    let (state, slug, number) = (state.clone(), slug.to_string(), build.number);
    let commit = commit.to_string();
    std::thread::spawn(move || {
        let status = |word: &str, description: &str| {
            let url = format!("{forge}/api/v1/repos/{slug}/statuses/{commit}");
            let _ = crate::bridge::agent()
                .post(&url)
                .header("Authorization", &format!("token {token}"))
                .send_json(serde_json::json!({
                    "state": word, "context": context, "description": description,
                    "target_url": format!("http://drone/{slug}/{number}"),
                }));
        };
        let set = |word: &str| {
            let mut s = state.lock().expect("state");
            if let Some(b) = s
                .builds
                .get_mut(&slug)
                .and_then(|bs| bs.iter_mut().find(|b| b.number == number))
            {
                b.status = word.to_string();
            }
        };
        status("pending", "Build is pending");
        set("running");
        if let Runs::Ends(end) = runs {
            set(&end);
            let description = if end == "success" {
                "Build is passing"
            } else {
                "Build is failing"
            };
            status(&end, description);
        }
    });
    Some(build)
}
