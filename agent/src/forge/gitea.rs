//! `kind = "gitea"`: Gitea and Forgejo, REST API v1, `Authorization: token ...`.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::{Forge, Pull};
use crate::secrets::Secret;

/// Pull request pages asked for at most: a listing that never ends is an error, not a hang.
const MAX_PAGES: u32 = 100;
const PAGE_SIZE: u32 = 50;
/// Bodies read at most: a page of pull requests, an error document.
const BODY_LIMIT: u64 = 4 * 1024 * 1024;

/// One page of `GET /repos/{org}/{repo}/pulls`, checked: every head sha must be a git object id,
/// because it is handed to git as an argument.
pub fn decode_pulls(body: &str) -> Result<Vec<Pull>> {
    let batch: Vec<ApiPull> =
        serde_json::from_str(body).context("not the JSON Gitea sends for pull requests")?;
    batch
        .into_iter()
        .map(|p| {
            if !crate::git::is_oid(&p.head.sha) {
                bail!(
                    "pull request #{}: head sha {:?} is not a commit id",
                    p.number,
                    p.head.sha
                );
            }
            Ok(Pull {
                number: p.number,
                head_sha: p.head.sha,
                title: p.title,
            })
        })
        .collect()
}

pub struct Gitea {
    url: String,
    org: String,
    token: Secret,
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct ApiPull {
    number: u64,
    #[serde(default)]
    title: String,
    head: ApiHead,
}

#[derive(Deserialize)]
struct ApiHead {
    sha: String,
}

impl Gitea {
    pub fn new(url: &str, org: &str, token: Secret) -> Self {
        // A redirect could carry the token to another host: follow none.
        let agent = crate::http::agent(Duration::from_secs(60), 0);
        Self {
            url: url.trim_end_matches('/').to_string(),
            org: org.to_string(),
            token,
            agent,
        }
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    fn auth(&self) -> String {
        format!("token {}", self.token.expose())
    }

    /// One API call; returns status and body. Errors name the method and path, never the token.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, String)> {
        let url = self.api(path);
        let result = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("Authorization", &self.auth())
                .header("Accept", "application/json")
                .call(),
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &self.auth())
                .send_json(b),
            ("PATCH", Some(b)) => self
                .agent
                .patch(&url)
                .header("Authorization", &self.auth())
                .send_json(b),
            _ => bail!("unsupported API call {method} {path}"),
        };
        let mut response = result.with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let body = crate::http::read_body(&mut response, BODY_LIMIT)
            .map_err(|e| anyhow::anyhow!("{method} {path}: {e}"))?;
        Ok((status, body))
    }

    fn expect(&self, what: &str, (status, body): (u16, String), ok: &[u16]) -> Result<String> {
        if ok.contains(&status) {
            return Ok(body);
        }
        let hint = match status {
            401 | 403 => {
                ": the forge refused the token (check forge.token_file and the token's scopes)"
            }
            300..=399 => ": the forge answered with a redirect, which is not followed",
            _ => "",
        };
        // The forge's words, but never its control characters: an answer must not be able to
        // drive the operator's terminal.
        let excerpt: String = body
            .chars()
            .take(200)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        bail!("{what}: HTTP {status}{hint}: {}", excerpt.trim())
    }
}

impl Forge for Gitea {
    fn mirror_url(&self, recipe: &str) -> String {
        format!("{}/{}/{recipe}.git", self.url, self.org)
    }

    fn exists(&self, recipe: &str) -> Result<bool> {
        let answer = self.call("GET", &format!("/repos/{}/{recipe}", self.org), None)?;
        if answer.0 == 404 {
            return Ok(false);
        }
        self.expect(&format!("looking up {}/{recipe}", self.org), answer, &[200])?;
        Ok(true)
    }

    fn create(&self, recipe: &str, branch: &str) -> Result<()> {
        let body = serde_json::json!({
            "name": recipe,
            "default_branch": branch,
            "auto_init": false,
            "private": false,
            "description": format!("Mirror of the {recipe} recipe, kept by cc-ci"),
        });
        let answer = self.call("POST", &format!("/orgs/{}/repos", self.org), Some(body))?;
        self.expect(&format!("creating {}/{recipe}", self.org), answer, &[201])?;
        Ok(())
    }

    fn open_pulls(&self, recipe: &str) -> Result<Vec<Pull>> {
        let mut pulls = Vec::new();
        for page in 1..=MAX_PAGES {
            let path = format!(
                "/repos/{}/{recipe}/pulls?state=open&page={page}&limit={PAGE_SIZE}",
                self.org
            );
            let body = self.expect(
                &format!("listing pull requests of {}/{recipe}", self.org),
                self.call("GET", &path, None)?,
                &[200],
            )?;
            let batch = decode_pulls(&body)
                .with_context(|| format!("pull requests of {}/{recipe}, page {page}", self.org))?;
            let n = batch.len();
            pulls.extend(batch);
            if n < PAGE_SIZE as usize {
                return Ok(pulls);
            }
        }
        bail!(
            "pull requests of {}/{recipe}: still more after {MAX_PAGES} pages; refusing to go on",
            self.org
        )
    }

    fn close_pull(&self, recipe: &str, number: u64, comment: &str) -> Result<()> {
        let answer = self.call(
            "POST",
            &format!("/repos/{}/{recipe}/issues/{number}/comments", self.org),
            Some(serde_json::json!({ "body": comment })),
        )?;
        self.expect(
            &format!("commenting on {}/{recipe}#{number}", self.org),
            answer,
            &[201],
        )?;
        let answer = self.call(
            "PATCH",
            &format!("/repos/{}/{recipe}/pulls/{number}", self.org),
            Some(serde_json::json!({ "state": "closed" })),
        )?;
        self.expect(
            &format!("closing {}/{recipe}#{number}", self.org),
            answer,
            &[201, 200],
        )?;
        Ok(())
    }

    fn git_env(&self) -> Vec<(String, String)> {
        // Scoped to the forge's URL: upstreams on other hosts never see the token.
        vec![
            ("GIT_CONFIG_COUNT".into(), "1".into()),
            (
                "GIT_CONFIG_KEY_0".into(),
                format!("http.{}/.extraHeader", self.url),
            ),
            (
                "GIT_CONFIG_VALUE_0".into(),
                format!("Authorization: {}", self.auth()),
            ),
        ]
    }
}
