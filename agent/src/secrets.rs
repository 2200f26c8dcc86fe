//! Tokens: read from a file (or a systemd credential), held in a type that never prints itself.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::settings::config::secret_path;

#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `Authorization: Basic` with this token as the password: what every Gitea and Forgejo
    /// version accepts on git's HTTP paths, whatever the user name (services/auth/basic.go).
    pub fn as_basic_auth(&self, user: &str) -> Secret {
        Secret(format!(
            "Basic {}",
            base64(format!("{user}:{}", self.0).as_bytes())
        ))
    }
}

/// RFC 4648 base64 with padding: a few lines, where a crate would be a dependency for one header.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A token file is a line; anything near this size is not one.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// Says so when users other than the owner and its group can read the token, or its group can
/// change it: the token is only as secret as its file.
fn warn_if_shared(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o026 != 0 {
            tracing::warn!(
                "the {what} token file {} has mode {mode:03o}: other users can read or change it; `chmod 600` it",
                path.display()
            );
        }
    }
}

/// [`read_token_file`] as bad input (exit 2), named by the `agent.toml` key that points at it:
/// `<config>: forge.token_file: ...`.
pub fn read_token(
    configured: Option<&Path>,
    credential: &str,
    what: &str,
    config: &Path,
) -> Result<Secret> {
    read_token_file(configured, credential, what).map_err(|e| {
        crate::error::Unusable(format!("{}: {what}.token_file: {e:#}", config.display())).into()
    })
}

/// Reads the token from `configured`, else from `$CREDENTIALS_DIRECTORY/<credential>`. Errors
/// name the file, never its content.
pub fn read_token_file(configured: Option<&Path>, credential: &str, what: &str) -> Result<Secret> {
    let path: PathBuf = secret_path(configured, credential).with_context(|| {
        format!("no {what} token: set its token_file, or run under systemd with the credential {credential}")
    })?;
    let bytes = crate::fsutil::read_regular(&path, MAX_TOKEN_FILE, true)
        .with_context(|| format!("cannot read the {what} token file"))?;
    warn_if_shared(&path, what);
    anyhow::ensure!(
        !bytes.starts_with("\u{feff}".as_bytes()),
        "the {what} token file {} starts with a byte-order mark: save it as plain ASCII",
        path.display()
    );
    anyhow::ensure!(
        bytes.is_ascii(),
        "the {what} token file {} holds non-ASCII characters: a token is plain ASCII",
        path.display()
    );
    let text = String::from_utf8_lossy(&bytes);
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the {what} token file {} is empty",
        path.display()
    );
    anyhow::ensure!(
        !token.contains(|c: char| c.is_control() || c.is_whitespace()),
        "the {what} token file {} holds more than one token-like word",
        path.display()
    );
    Ok(Secret(token.to_string()))
}

/// What stands in for a token of the agent's in anything it records or shows.
pub const REDACTED: &str = "[a token of the agent's, not shown]";

/// The agent's own tokens (forge, bridge, Drone), read as the jobs read them. Recipe CI runs as
/// the agent's user and may find one (a credential file, a process's memory) and write it into
/// its results or its output; what the agent records from a run, reports to the bridge or shows
/// on the status page is passed through [`Known::redact`] first.
pub struct Known(Vec<String>);

impl Known {
    pub fn of(config: &crate::settings::config::Config) -> Self {
        use crate::settings::config::{Forge, BRIDGE_TOKEN_CREDENTIAL, FORGE_TOKEN_CREDENTIAL};
        use crate::settings::deploy::{BusyCheck, DRONE_TOKEN_CREDENTIAL};
        let mut found = Vec::new();
        // Shorter than 8 bytes, a "token" would be found in ordinary words: not a real token.
        let mut add = |file: Option<&Path>, credential: &str| {
            if let Ok(t) = read_token_file(file, credential, "redaction") {
                if t.expose().len() >= 8 {
                    found.push(t.expose().to_string());
                }
            }
        };
        if let Some(Forge::Gitea { token_file, .. }) = &config.forge {
            add(token_file.as_deref(), FORGE_TOKEN_CREDENTIAL);
        }
        add(config.bridge.token_file.as_deref(), BRIDGE_TOKEN_CREDENTIAL);
        let checks = [
            &config.deploy.busy_check,
            &config.sweep.busy_check,
            &config.probe.busy_check,
        ];
        for check in checks.into_iter().flatten() {
            if let BusyCheck::Drone { drone, .. } = check {
                add(drone.token_file.as_deref(), DRONE_TOKEN_CREDENTIAL);
            }
        }
        if let Some(d) = &config.probe.drone {
            add(d.token_file.as_deref(), DRONE_TOKEN_CREDENTIAL);
        }
        Self(found)
    }

    pub fn redact(&self, text: &str) -> String {
        self.0
            .iter()
            .fold(text.to_string(), |t, s| t.replace(s.as_str(), REDACTED))
    }

    /// [`Known::redact`] on a text that may be absent, where it lies.
    pub fn redact_each(&self, texts: [&mut Option<String>; 2]) {
        for text in texts {
            *text = text.take().map(|t| self.redact(&t));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_rfc_4648_says() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
        let s = Secret("t0k".into()).as_basic_auth("cc-ci");
        assert_eq!(s.expose(), "Basic Y2MtY2k6dDBr");
    }

    #[test]
    fn never_prints_itself() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("t");
        std::fs::write(&file, "s3cr3t-token\n")?;
        let s = read_token_file(Some(&file), "forge-token", "forge")?;
        assert_eq!(s.expose(), "s3cr3t-token");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        std::fs::write(&file, "\n")?;
        let err = read_token_file(Some(&file), "forge-token", "forge")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("is empty"), "{err}");
        Ok(())
    }
}
