//! Plain HTTP GETs for checks: a timeout on the whole call, a cap on the body, no status-as-error.

use std::time::Duration;

/// Bodies beyond this are cut: a check needs a status and a line or two, never a page.
const BODY_LIMIT: u64 = 64 * 1024;

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// A client with a timeout on the whole call, statuses returned rather than raised, and at most
/// `max_redirects` redirects followed. It trusts the host's certificate store (on NixOS,
/// `security.pki`), as git does: a forge or bridge behind a private CA works for both or neither.
pub fn agent(timeout: Duration, max_redirects: u32) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(max_redirects)
        .build()
        .into()
}

pub fn get(url: &str, timeout: Duration) -> Result<Answer, String> {
    let agent = agent(timeout, 5);
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    // A check needs the status; a body it cannot read is no reason to fail it.
    let body = read_body(&mut response, BODY_LIMIT).unwrap_or_default();
    Ok(Answer { status, body })
}

/// Why a body was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Longer than the limit: what a caller that can do without the body may match on.
    TooLarge {
        limit: u64,
    },
    Unreadable(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge { limit } => write!(
                f,
                "the answer is larger than {} MiB, more than any real one; not read further",
                limit >> 20
            ),
            BodyError::Unreadable(e) => write!(f, "cannot read the answer: {e}"),
        }
    }
}

/// Reads a response's body as text, at most `limit` bytes. A longer body is an error that says so,
/// not a truncated or empty string for a parser to stumble over.
pub fn read_body(
    response: &mut ureq::http::Response<ureq::Body>,
    limit: u64,
) -> Result<String, BodyError> {
    response
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_string()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => BodyError::TooLarge { limit },
            e => BodyError::Unreadable(e.to_string()),
        })
}

#[cfg(test)]
mod tests {
    /// A private CA in the host's store works for the agent's HTTPS as it does for git's.
    #[test]
    fn the_agent_trusts_the_hosts_certificate_store() {
        let agent = super::agent(std::time::Duration::from_secs(1), 0);
        assert!(matches!(
            agent.config().tls_config().root_certs(),
            ureq::tls::RootCerts::PlatformVerifier
        ));
    }
}
