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
//!   `status`, `event` and `after`, the commit it built (core/build.go); a repository Drone does
//!   not know is 404.

use std::time::Duration;

use anyhow::{bail, Context, Result};
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

    /// A GET whose timeout (the client's own) is cut to what is left of `deadline`.
    fn get(&self, path: &str, deadline: Deadline) -> Result<String> {
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
        match status {
            200 => Ok(body),
            401 => bail!("GET {url}: HTTP 401: Drone does not know the token (check drone.token_file)"),
            403 => bail!("GET {url}: HTTP 403: the token's Drone user is not an admin, which this list needs"),
            404 => bail!("GET {url}: HTTP 404: Drone does not know this repository (is it activated?)"),
            s => bail!("GET {url}: HTTP {s}"),
        }
    }

    /// The builds in flight, as `slug #number (status)`; empty when Drone is idle.
    pub fn incomplete(&self) -> Result<Vec<String>> {
        let body = self.get("/builds/incomplete", Deadline::none())?;
        // A Go nil slice is rendered as `null`: an empty list either way.
        let listed: Option<Vec<RepoWithBuild>> = serde_json::from_str(&body)
            .context("/api/builds/incomplete: not the JSON Drone sends")?;
        Ok(listed
            .unwrap_or_default()
            .into_iter()
            .map(|r| match r.build {
                Some(b) => format!("{} #{} ({})", r.slug, b.number, b.status),
                None => r.slug,
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
