//! Many repositories' branch and tags at once, for the check that finds a fleet in sync: every
//! repository on an `http://` or `https://` server is asked over one kept-alive, pipelined
//! connection to that server (one TLS handshake per forge, about one round trip per window of
//! requests), by the protocol-v0 advertisement `GET <repo>/info/refs?service=git-upload-pack`
//! that `git ls-remote` itself starts with.
//!
//! What is not listed here (another scheme, a URL with credentials or a query in it, an answer
//! that is not a clean advertisement: a redirect, a 401, a dumb server, a broken connection) is
//! `None`, and the caller asks `git ls-remote` as before: this is a shortcut for the common case,
//! never a second opinion that could overrule git.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::pipeline::{self, Failure, Get, Limits, Origin, Response};
use super::{advertisement, ErrorKind, Git, GitError, RefSet};
use crate::deadline::Deadline;

/// Advertisements larger than this are not read: 100 000 tags, each annotated, are about
/// 14 MiB ([`super::refs::MAX_TAGS`]). Git is asked instead, and its listing has the same bounds.
pub(super) const ADVERTISEMENT_LIMIT: u64 = 16 * 1024 * 1024;
const CONTENT_TYPE: &str = "application/x-git-upload-pack-advertisement";

/// What [`Git::list_many`] found.
#[derive(Debug, Default)]
pub struct Listed {
    /// Per repository asked, in order: its branch and tags; a timeout, which git would only
    /// wait for again; or `None` when git must be asked.
    pub refs: Vec<Option<Result<RefSet, GitError>>>,
    /// Connections opened, over all servers: for `https://`, TLS handshakes.
    pub connections: usize,
}

/// The server of an `http://` or `https://` URL and the path to ask there; `None` for anything
/// the listing leaves to git.
fn origin_of(url: &str) -> Option<(Origin, String)> {
    let uri: ureq::http::Uri = url.parse().ok()?;
    let tls = match uri.scheme_str()? {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    let authority = uri.authority()?;
    // Credentials in a URL are never sent from here (nor, by the agent, put there).
    if authority.as_str().contains('@') || uri.query().is_some() {
        return None;
    }
    let origin = Origin {
        tls,
        host: authority.host().to_string(),
        port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
    };
    let path = format!(
        "{}/info/refs?service=git-upload-pack",
        uri.path().trim_end_matches('/')
    );
    Some((origin, path))
}

/// Trust as git's: the host's certificate store (the same platform verifier as every other
/// HTTPS call of the agent, [`crate::http::agent`]).
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|e| e.to_string())?
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An answer that is a clean upload-pack advertisement, read as the branch and tags.
fn judge(answer: Result<Response, Failure>, branch: &str) -> Result<RefSet, Failure> {
    let response = answer?;
    if response.status != 200 {
        return Err(format!("HTTP {}", response.status).into());
    }
    // The media type, whatever parameters a proxy appends (`; charset=utf-8`), as git's own
    // client reads it (and the push path here).
    let media = response
        .content_type
        .as_deref()
        .and_then(|t| t.split(';').next())
        .map(str::trim);
    if !media.is_some_and(|m| m.eq_ignore_ascii_case(CONTENT_TYPE)) {
        return Err(format!(
            "not a smart HTTP answer (Content-Type {:?})",
            response.content_type.unwrap_or_default()
        )
        .into());
    }
    advertisement::ref_set(&response.body, branch).map_err(Failure::Broken)
}

impl Git {
    /// The branch and tags of each `(url, branch)`, asked at once, one connection per server
    /// (more only if a server closes it), all within `deadline`.
    pub fn list_many(&self, wanted: &[(&str, &str)], deadline: Deadline) -> Listed {
        let mut by_origin: BTreeMap<Origin, Vec<(usize, String)>> = BTreeMap::new();
        for (i, (url, _)) in wanted.iter().enumerate() {
            if let Some((origin, path)) = origin_of(url) {
                by_origin.entry(origin).or_default().push((i, path));
            }
        }
        let mut listed = Listed {
            refs: wanted.iter().map(|_| None).collect(),
            connections: 0,
        };
        if by_origin.is_empty() {
            return listed;
        }
        let tls = match tls_config() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("no TLS for ref listings, git will be asked instead: {e}");
                None
            }
        };
        let Ok((io_timeout, cut)) = deadline.cap(self.timeout) else {
            return listed;
        };
        let limits = Limits {
            io_timeout,
            until: Instant::now() + io_timeout.max(deadline.left().unwrap_or(io_timeout)),
            body_limit: ADVERTISEMENT_LIMIT,
        };
        let timed_out = |url: &str| GitError {
            kind: ErrorKind::Timeout,
            message: format!(
                "the ref listing of {url} did not finish within {}{}",
                humantime::format_duration(io_timeout),
                if cut {
                    format!(" (cut to what was left of {})", deadline.what())
                } else {
                    String::new()
                }
            ),
        };
        let found = std::sync::Mutex::new(&mut listed);
        std::thread::scope(|scope| {
            for (origin, asks) in &by_origin {
                if origin.tls && tls.is_none() {
                    continue;
                }
                let (found, tls, timed_out) = (&found, tls.as_ref(), &timed_out);
                scope.spawn(move || {
                    let auth: Vec<Option<&str>> = asks
                        .iter()
                        .map(|(i, _)| self.auth_for(wanted[*i].0))
                        .collect();
                    let gets: Vec<Get<'_>> = asks
                        .iter()
                        .zip(&auth)
                        .map(|((_, path), auth)| Get {
                            path: path.clone(),
                            auth: *auth,
                        })
                        .collect();
                    let mut on_answer = |k: usize, answer| {
                        let (i, _) = asks[k];
                        let (url, branch) = wanted[i];
                        let refs = match judge(answer, branch) {
                            Ok(refs) => Some(Ok(refs)),
                            Err(Failure::TimedOut) => Some(Err(timed_out(url))),
                            Err(e) => {
                                tracing::debug!("listing {url}: {e}; git will be asked");
                                None
                            }
                        };
                        lock(found).refs[i] = refs;
                    };
                    let connections = pipeline::get_all(origin, &gets, tls, limits, &mut on_answer);
                    lock(found).connections += connections;
                });
            }
        });
        listed
    }
}

fn lock<'a, 'b>(
    m: &'a std::sync::Mutex<&'b mut Listed>,
) -> std::sync::MutexGuard<'a, &'b mut Listed> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An advertisement whose Content-Type a proxy gave a charset is still the advertisement:
    /// no fallback to git for it; another type is not.
    #[test]
    fn a_content_type_with_parameters_is_still_the_advertisement() {
        let pkt = |l: &str| format!("{:04x}{l}", l.len() + 4);
        let oid = "0123456789abcdef0123456789abcdef01234567";
        let body = format!(
            "{}0000{}0000",
            pkt("# service=git-upload-pack\n"),
            pkt(&format!("{oid} refs/heads/main\n"))
        )
        .into_bytes();
        let answer = |t: &str| {
            Ok(Response {
                status: 200,
                content_type: Some(t.to_string()),
                body: body.clone(),
            })
        };
        for t in [
            CONTENT_TYPE,
            "application/x-git-upload-pack-advertisement; charset=utf-8",
        ] {
            let refs = judge(answer(t), "main").map(|r| r.branch);
            assert!(refs.is_ok(), "{t}: {refs:?}");
        }
        assert!(judge(answer("text/plain"), "main").is_err());
    }

    #[test]
    fn only_http_urls_without_credentials_are_listed_here() {
        let (origin, path) = origin_of("https://forge.example/org/r.git/").unwrap_or_else(|| {
            panic!("an https URL is listed");
        });
        assert_eq!(
            (origin.tls, origin.host.as_str(), origin.port, path.as_str()),
            (
                true,
                "forge.example",
                443,
                "/org/r.git/info/refs?service=git-upload-pack"
            )
        );
        let (origin, _) = origin_of("http://127.0.0.1:3000/o/r").unwrap_or_else(|| panic!("http"));
        assert_eq!((origin.tls, origin.port), (false, 3000));
        for other in [
            "git://host/r.git",
            "ssh://git@host/r.git",
            "git@host:r.git",
            "/srv/git/r.git",
            "file:///srv/r.git",
            "https://user:secret@host/r.git",
            "https://host/r.git?x=1",
        ] {
            assert!(origin_of(other).is_none(), "{other}");
        }
    }
}
