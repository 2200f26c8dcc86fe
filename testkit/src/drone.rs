//! A test Drone on 127.0.0.1: the API calls the agent and the bridge make, and builds that set
//! commit statuses on the forge as Drone does. It follows Drone's source (github.com/drone/drone),
//! not the agent:
//!
//! | behaviour | follows |
//! | --- | --- |
//! | `Authorization: Bearer <token>`; an unknown token is a guest, not an error | session/session.go, handler/api/auth/auth.go |
//! | `GET /api/builds/incomplete`: 401 `{"message":"Unauthorized"}` for a guest, 403 `{"message":"Forbidden"}` for a user who is not an admin; else the repositories with a pending or running build, each with `slug` and `build` | handler/api/api.go, handler/api/acl/acl.go (`AuthorizeAdmin`), store/repos/repos.go |
//! | `POST /api/repos/{o}/{n}/builds?branch=&commit=`: a user with write access; 404 for a repository not activated; a `custom` event build of the commit, answered 200 with the build | handler/api/repos/builds/create.go |
//! | `GET /api/repos/{o}/{n}/builds`: newest first; 404 for a repository not activated | handler/api/repos/builds/list.go |
//! | a build sets the commit status `continuous-integration/drone` (a custom event's label) to pending when it is created and to its result when it ends, through the forge's API | service/status/status.go, service/status/util.go |
//!
//! Unlike Drone: no stages or steps (a build runs as `runs` says), and guests read every
//! repository (Drone lets them read public ones only).

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
    /// `owner/name` of the repositories activated in Drone.
    pub activated: BTreeSet<String>,
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
                activated: BTreeSet::new(),
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

    pub fn activate(&self, slug: &str) {
        self.state
            .lock()
            .expect("state")
            .activated
            .insert(slug.to_string());
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
                    .map(|(slug, b)| serde_json::json!({ "slug": slug, "build": b }))
                    .collect();
                json(200, serde_json::Value::Array(list))
            }
        },
        ("GET", ["api", "repos", o, n, "builds"]) => {
            let slug = format!("{o}/{n}");
            let s = state.lock().expect("state");
            if !s.activated.contains(&slug) {
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
        ("POST", ["api", "repos", o, n, "builds"]) => create(
            state,
            &format!("{o}/{n}"),
            &param("branch"),
            &param("commit"),
        ),
        _ => json(404, serde_json::json!({ "message": "Not Found" })),
    };
    let _ = request.respond(response);
}

/// `HandleCreate`: a custom build of the commit, then the run, which sets statuses.
fn create(
    state: &Arc<Mutex<DroneState>>,
    slug: &str,
    branch: &str,
    commit: &str,
) -> Response<std::io::Cursor<Vec<u8>>> {
    let mut s = state.lock().expect("state");
    if !s.activated.contains(slug) {
        return json(404, serde_json::json!({ "message": "Not Found" }));
    }
    let builds = s.builds.entry(slug.to_string()).or_default();
    let build = BuildRec {
        number: builds.len() as i64 + 1,
        status: "pending".into(),
        event: "custom".into(),
        after: commit.to_string(),
        git_ref: format!("refs/heads/{branch}"),
    };
    builds.push(build.clone());
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
                    "state": word, "context": CONTEXT, "description": description,
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
    json(200, serde_json::json!(build))
}
