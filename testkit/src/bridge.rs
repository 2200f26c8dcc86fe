//! A test bridge: polls the forge's open pull requests of the repositories in its POLL_REPOS for
//! a `!testme` comment, answers it, and starts a build of the pull request's head on Drone.
//!
//! The real bridge's source is not public, so this follows the bridge contract cc-ci documents
//! (docs/health.md, "The bridge's side", and docs/probe.md): it polls the mirrors it is told to
//! poll (no webhooks), answers each trigger once, with a reaction or a reply, and starts a Drone
//! build of the head through Drone's API (`POST /api/repos/{o}/{n}/builds?branch=&commit=`,
//! handler/api/repos/builds/create.go). When Drone refuses, it says so in a reply, as a bridge
//! that answers every `!testme` does. It reads every page of open pull requests and the
//! comments of those whose comment count moved since its last look, as a bridge that keeps up
//! with a busy mirror must.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How the bridge answers a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An "eyes" reaction to the comment.
    React,
    /// A reply comment.
    Reply,
}

#[derive(Debug, Clone)]
pub struct BridgeSpec {
    pub forge_url: String,
    pub org: String,
    /// The bridge's own forge token.
    pub forge_token: String,
    /// POLL_REPOS.
    pub polls: Vec<String>,
    pub trigger: String,
    pub answer: Answer,
    pub drone_url: String,
    pub drone_token: String,
    pub interval: Duration,
}

pub struct TestBridge {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestBridge {
    pub fn start(spec: BridgeSpec) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Seen::default();
            while !flag.load(Ordering::Relaxed) {
                for repo in &spec.polls {
                    poll(&spec, repo, &mut seen);
                }
                std::thread::sleep(spec.interval);
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every call ends within seconds: a server that went away never hangs the bridge's thread.
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

/// What the bridge remembers between polls.
#[derive(Default)]
struct Seen {
    /// Trigger comments already answered, by id.
    answered: BTreeSet<u64>,
    /// Each pull request's comment count when its comments were last read, by (repo, number).
    counted: BTreeMap<(String, u64), u64>,
}

fn get(spec: &BridgeSpec, path: &str) -> Option<serde_json::Value> {
    let url = format!("{}/api/v1{path}", spec.forge_url);
    let mut response = agent()
        .get(&url)
        .header("Authorization", &format!("token {}", spec.forge_token))
        .call()
        .ok()?;
    // Read whole, then parse: a flood of comments is megabytes, which serde_json's reader
    // would take byte by byte, past the bridge's own timeout.
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .ok()?;
    serde_json::from_slice(&body).ok()
}

/// Every open pull request of `repo`, page by page: Gitea lists newest first and pages at
/// `MAX_RESPONSE_ITEMS`, so a bridge that read only the first page would miss old ones.
fn open_pulls(spec: &BridgeSpec, repo: &str) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for page in 1.. {
        let path = format!(
            "/repos/{}/{repo}/pulls?state=open&limit=50&page={page}",
            spec.org
        );
        let Some(serde_json::Value::Array(pulls)) = get(spec, &path) else {
            break;
        };
        if pulls.is_empty() {
            break;
        }
        all.extend(pulls);
    }
    all
}

fn post(spec: &BridgeSpec, path: &str, body: serde_json::Value) {
    let url = format!("{}/api/v1{path}", spec.forge_url);
    let _ = agent()
        .post(&url)
        .header("Authorization", &format!("token {}", spec.forge_token))
        .send_json(body);
}

/// One look at `repo`: the comments of every open pull request whose comment count moved
/// (the pull request's `comments`, Gitea's `Issue.NumComments`); each new trigger answered once.
fn poll(spec: &BridgeSpec, repo: &str, seen: &mut Seen) {
    let org = &spec.org;
    for pull in open_pulls(spec, repo) {
        let number = pull["number"].as_u64().unwrap_or_default();
        let count = pull["comments"].as_u64().unwrap_or_default();
        let key = (repo.to_string(), number);
        if count == 0 || seen.counted.get(&key) == Some(&count) {
            continue;
        }
        let comments = get(
            spec,
            &format!("/repos/{org}/{repo}/issues/{number}/comments"),
        );
        if comments.is_some() {
            seen.counted.insert(key, count);
        }
        for c in comments.iter().filter_map(|c| c.as_array()).flatten() {
            let id = c["id"].as_u64().unwrap_or_default();
            let first = c["body"]
                .as_str()
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default();
            if first.trim() != spec.trigger || !seen.answered.insert(id) {
                continue;
            }
            match spec.answer {
                Answer::React => post(
                    spec,
                    &format!("/repos/{org}/{repo}/issues/comments/{id}/reactions"),
                    serde_json::json!({ "content": "eyes" }),
                ),
                Answer::Reply => post(
                    spec,
                    &format!("/repos/{org}/{repo}/issues/{number}/comments"),
                    serde_json::json!({ "body": "Starting CI." }),
                ),
            }
            let started = start_build(spec, repo, &pull["head"]);
            if let Err(why) = started {
                post(
                    spec,
                    &format!("/repos/{org}/{repo}/issues/{number}/comments"),
                    serde_json::json!({ "body": format!("Could not start CI: {why}") }),
                );
            }
        }
    }
}

fn start_build(spec: &BridgeSpec, repo: &str, head: &serde_json::Value) -> Result<(), String> {
    let url = format!(
        "{}/api/repos/{}/{repo}/builds?branch={}&commit={}",
        spec.drone_url,
        spec.org,
        head["ref"].as_str().unwrap_or_default(),
        head["sha"].as_str().unwrap_or_default()
    );
    let answer = agent()
        .post(&url)
        .header("Authorization", &format!("Bearer {}", spec.drone_token))
        .send_empty();
    match answer {
        Ok(r) if r.status().as_u16() == 200 => Ok(()),
        Ok(r) => Err(format!("Drone answered HTTP {}", r.status())),
        Err(ureq::Error::StatusCode(code)) => Err(format!("Drone answered HTTP {code}")),
        Err(e) => Err(e.to_string()),
    }
}
