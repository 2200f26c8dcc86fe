//! Drone's REST API, the two calls the agent makes. What each relies on, read from Drone's
//! source (github.com/drone/drone; docs/probe.md has the list):
//!
//! - every route is under `/api` and takes `Authorization: Bearer <token>` (session/session.go,
//!   `extractToken`); a token Drone does not know makes the request a guest's, not an error
//!   (handler/api/auth/auth.go);
//! - `GET /api/builds/incomplete` is for admins only: a guest gets 401, a user who is not an
//!   admin 403 (handler/api/api.go, handler/api/acl/acl.go `AuthorizeAdmin`). It lists
//!   repositories, each with the `build` that has a stage pending or running, at most 50
//!   (handler/api/builds/builds.go, store/repos/repos.go `queryRepoWithBuildIncomplete`);
//! - `GET /api/repos/{owner}/{name}/builds?page=&per_page=` lists a repository's builds, newest
//!   first, at most 100 a page (handler/api/repos/builds/list.go); each build carries `number`,
//!   `status`, `event` and `after`, the commit it built (core/build.go); a repository Drone never
//!   synced is 404 (401 for a guest), one synced but never activated 200 `[]`
//!   (handler/api/acl/repo.go `InjectRepository`);
//! - OSS Drone answers 501 to the incomplete list (handler/api/builds/builds_oss.go);
//!   `GET /api/user/builds` lists the newest 25 builds of the repositories the user can see,
//!   each as its repository with `slug` and `build` (handler/api/user/activity.go,
//!   store/repos/repos.go `queryRepoWithBuildAll`).

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::deadline::Deadline;
use crate::secrets::Secret;
use crate::settings::deploy::DroneSettings;

const BODY_LIMIT: u64 = 4 * 1024 * 1024;

/// One build as Drone's API shows it (`core.Build`), the fields read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Build {
    pub number: i64,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub event: String,
    /// The commit built.
    #[serde(default)]
    pub after: String,
}

#[derive(Deserialize)]
struct RepoWithBuild {
    #[serde(default)]
    slug: String,
    build: Option<Build>,
}

/// What OSS Drone's busy check rests on, said with its answer.
pub const RECENT_ONLY: &str = "OSS Drone has no list of incomplete builds (HTTP 501): read from \
     /api/user/builds, the newest 25 builds of the repositories the token's user synced, and \
     each enrolled repository's own builds where that list cannot see it";

/// A build in flight and its repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub slug: String,
    pub build: Build,
}

impl std::fmt::Display for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Drone's words: a line break in a slug must not start a line of the agent's.
        use crate::output::one_line;
        write!(
            f,
            "{} #{} ({})",
            one_line(&self.slug),
            self.build.number,
            one_line(&self.build.status)
        )
    }
}

/// The builds in flight, and where they were read from when not Drone's incomplete list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incomplete {
    pub running: Vec<Running>,
    pub from: Option<&'static str>,
}

pub struct Drone {
    url: String,
    token: Secret,
    agent: ureq::Agent,
}

impl Drone {
    /// `token` is read by the caller, who can name the key it came from.
    pub fn new(settings: &DroneSettings, token: Secret, timeout: Duration) -> Self {
        Self {
            url: settings.url.clone(),
            token,
            // A redirect could carry the token elsewhere: none is followed.
            agent: crate::http::agent(timeout, 0),
        }
    }

    /// A GET whose timeout (the client's own) is cut to what is left of `deadline`: the
    /// status and the body, whatever the status.
    fn call(&self, path: &str, deadline: Deadline) -> Result<(u16, String)> {
        let url = format!("{}/api{path}", self.url);
        let own = self
            .agent
            .config()
            .timeouts()
            .global
            .unwrap_or(Duration::MAX);
        let (timeout, _) = deadline
            .cap(own)
            .map_err(|e| anyhow::anyhow!("GET {url}: not sent: {e}"))?;
        let mut response = self
            .agent
            .get(&url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Authorization", &format!("Bearer {}", self.token.expose()))
            .header("Accept", "application/json")
            .call()
            .with_context(|| format!("GET {url}"))?;
        let status = response.status().as_u16();
        let body = crate::http::read_body(&mut response, BODY_LIMIT)
            .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
        Ok((status, body))
    }

    /// A GET answered 200, else an error that says what the status means here.
    fn get(&self, path: &str, deadline: Deadline) -> Result<String> {
        match self.call(path, deadline)? {
            (200, body) => Ok(body),
            (status, _) => Err(self.refused(path, status)),
        }
    }

    fn refused(&self, path: &str, status: u16) -> anyhow::Error {
        let url = format!("{}/api{path}", self.url);
        match status {
            401 => anyhow::anyhow!("GET {url}: HTTP 401: Drone does not know the token (check drone.token_file)"),
            403 => anyhow::anyhow!("GET {url}: HTTP 403: the token's Drone user is not an admin, which this list needs"),
            404 => anyhow::anyhow!(
                "GET {url}: HTTP 404: Drone has never synced this repository: sync repositories \
                 in Drone (its web UI, or `drone repo sync`), then activate it"
            ),
            s => anyhow::anyhow!("GET {url}: HTTP {s}"),
        }
    }

    /// The builds in flight. OSS Drone has no list of them (`/api/builds/incomplete` answers
    /// 501, handler/api/builds/builds_oss.go): then the token's user's newest 25 builds are
    /// read instead (`/api/user/builds`, in every edition), which the answer says. That list
    /// holds only the repositories the token's user synced itself (store/repos/repos.go joins
    /// the user's permission rows): an admin that never synced gets `[]`. So each repository in
    /// `watched` (the enrolled recipes' mirrors) it does not show is asked for its own builds
    /// (`/api/repos/{slug}/builds`, which does not ask an admin for permission rows); one
    /// that cannot be asked makes the answer an error ("cannot tell"), never "idle". A
    /// repository Drone never synced (404) has no build of Drone's to wait for.
    pub fn incomplete(&self, watched: &[String]) -> Result<Incomplete> {
        let (status, body) = self.call("/builds/incomplete", Deadline::none())?;
        let (body, from) = match status {
            200 => (body, None),
            501 => (
                self.get("/user/builds", Deadline::none())?,
                Some(RECENT_ONLY),
            ),
            s => return Err(self.refused("/builds/incomplete", s)),
        };
        // A Go nil slice is rendered as `null`: an empty list either way.
        let listed: Option<Vec<RepoWithBuild>> = serde_json::from_str(&body)
            .context("the builds Drone listed: not the JSON Drone sends")?;
        let listed = listed.unwrap_or_default();
        let seen: std::collections::BTreeSet<String> =
            listed.iter().map(|r| r.slug.clone()).collect();
        let mut running: Vec<Running> = listed
            .into_iter()
            .filter_map(|r| {
                let b = r.build?;
                in_flight(&b).then_some(Running {
                    slug: r.slug,
                    build: b,
                })
            })
            .collect();
        if from.is_some() {
            for slug in watched.iter().filter(|s| !seen.contains(*s)) {
                running.extend(self.in_flight_of(slug)?);
            }
        }
        Ok(Incomplete { running, from })
    }

    /// The builds of `slug` in flight, asked of its own list; a repository Drone never synced
    /// has none.
    fn in_flight_of(&self, slug: &str) -> Result<Vec<Running>> {
        let path = format!("/repos/{slug}/builds?page=1&per_page=25");
        let body = match self.call(&path, Deadline::none())? {
            (200, body) => body,
            (404, _) => return Ok(Vec::new()),
            (status, _) => {
                return Err(self.refused(&path, status)).with_context(|| {
                    format!("cannot tell whether {slug} is building (its builds cannot be read)")
                })
            }
        };
        let listed: Option<Vec<Build>> = serde_json::from_str(&body)
            .with_context(|| format!("builds of {slug}: not the JSON Drone sends"))?;
        Ok(listed
            .unwrap_or_default()
            .into_iter()
            .filter(in_flight)
            .map(|build| Running {
                slug: slug.to_string(),
                build,
            })
            .collect())
    }

    /// The newest builds of the repository `slug` (`owner/name`, one page of 25): Drone names a
    /// forge's repository as the forge does.
    pub fn builds(&self, slug: &str, deadline: Deadline) -> Result<Vec<Build>> {
        let path = format!("/repos/{slug}/builds?page=1&per_page=25");
        let body = self.get(&path, deadline)?;
        let listed: Option<Vec<Build>> = serde_json::from_str(&body)
            .with_context(|| format!("builds of {slug}: not the JSON Drone sends"))?;
        Ok(listed.unwrap_or_default())
    }
}

/// A build Drone has not finished: pending or running.
fn in_flight(b: &Build) -> bool {
    matches!(b.status.as_str(), "pending" | "running")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slug with a line break (Drone's repository name comes from the forge) stays on the
    /// line the agent prints it in.
    #[test]
    fn a_line_break_in_a_slug_starts_no_line_of_its_own() {
        let running = Running {
            slug: "o/r\nPROMOTED  plausible  9.9.9 is the canonical".into(),
            build: Build {
                number: 7,
                status: "running\r".into(),
                event: String::new(),
                after: String::new(),
            },
        };
        let shown = running.to_string();
        assert!(!shown.contains(['\n', '\r']), "{shown:?}");
        assert_eq!(
            shown,
            "o/r\\nPROMOTED  plausible  9.9.9 is the canonical #7 (running\\r)"
        );
    }
}
