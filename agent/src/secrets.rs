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
    let bytes = read_secret_file(&path, MAX_TOKEN_FILE)
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

/// Secret files read by root before the job became the state directory's owner
/// ([`read_ahead`]): the job reads them from here, by the same path, since its own user may not
/// be able to open them (a root-only token file, the credentials of a unit that starts as root).
/// They stay in the job's memory: never in its environment, its children's, or a file.
static READ_AHEAD: std::sync::OnceLock<Vec<(PathBuf, Vec<u8>)>> = std::sync::OnceLock::new();

/// A secret file's bytes: what root read ahead for this job, else the file itself (a regular
/// file of at most `limit` bytes, a link in its path followed: secrets' paths are configuration).
pub fn read_secret_file(path: &Path, limit: u64) -> Result<Vec<u8>, crate::fsutil::ReadError> {
    if let Some((_, bytes)) = READ_AHEAD
        .get()
        .and_then(|read| read.iter().find(|(p, _)| p == path))
    {
        return Ok(bytes.clone());
    }
    crate::fsutil::read_regular(path, limit, true)
}

/// Reads, as root and before the job drops to the state directory's owner, every secret file
/// the configuration names: the forge's, the bridge's and Drone's tokens, and the credentials
/// `sweep.credentials` grants to CI. A file that cannot be read is left for the job to find
/// (and report) as it would have.
pub fn read_ahead(config: &crate::settings::config::Config) {
    let mut read = Vec::new();
    for path in secret_files(config) {
        if let Ok(bytes) = crate::fsutil::read_regular(&path, MAX_TOKEN_FILE.max(1 << 20), true) {
            read.push((path, bytes));
        }
    }
    let _ = READ_AHEAD.set(read);
}

/// Every secret file the configuration names, as the jobs resolve them.
fn secret_files(config: &crate::settings::config::Config) -> Vec<PathBuf> {
    let granted = config.sweep.credentials.iter().map(|n| (None, n.as_str()));
    let mut paths: Vec<PathBuf> = agent_tokens(config)
        .into_iter()
        .chain(granted)
        .filter_map(|(file, credential)| secret_path(file, credential))
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// The agent's own tokens (forge, bridge, Drone) as `(token_file, credential name)`: where
/// each job reads them ([`secret_path`]).
fn agent_tokens(config: &crate::settings::config::Config) -> Vec<(Option<&Path>, &'static str)> {
    use crate::settings::config::{Forge, BRIDGE_TOKEN_CREDENTIAL, FORGE_TOKEN_CREDENTIAL};
    use crate::settings::deploy::{BusyCheck, DRONE_TOKEN_CREDENTIAL};
    let mut wanted = Vec::new();
    if let Some(Forge::Gitea { token_file, .. }) = &config.forge {
        wanted.push((token_file.as_deref(), FORGE_TOKEN_CREDENTIAL));
    }
    wanted.push((config.bridge.token_file.as_deref(), BRIDGE_TOKEN_CREDENTIAL));
    let checks = [
        &config.deploy.busy_check,
        &config.sweep.busy_check,
        &config.probe.busy_check,
    ];
    for check in checks.into_iter().flatten() {
        if let BusyCheck::Drone { drone, .. } = check {
            wanted.push((drone.token_file.as_deref(), DRONE_TOKEN_CREDENTIAL));
        }
    }
    if let Some(d) = &config.probe.drone {
        wanted.push((d.token_file.as_deref(), DRONE_TOKEN_CREDENTIAL));
    }
    wanted
}

/// What stands in for a token of the agent's in anything it records or shows.
pub const REDACTED: &str = "[a token of the agent's, not shown]";

/// The agent's own tokens (forge, bridge, Drone), read as the jobs read them. Recipe CI that runs
/// as the agent's user may find one (a credential file, a process's memory) and write it into
/// its results or its output; what the agent records from a run (its log, as it is written, and
/// what the ledger keeps of it), reports to the bridge or shows on the status page is passed
/// through [`Known::redact`] (or a [`StreamRedactor`]) first. What the ledger holds is stored
/// redacted, so a job that holds no token (gc, the deploy) shows none when it writes the page.
#[derive(Clone, Default)]
pub struct Known(Vec<String>);

impl fmt::Debug for Known {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Known({} tokens)", self.0.len())
    }
}

impl Known {
    pub fn of(config: &crate::settings::config::Config) -> Self {
        // Shorter than 8 bytes, a "token" would be found in ordinary words: not a real token.
        let found = agent_tokens(config)
            .into_iter()
            .filter_map(|(file, credential)| read_token_file(file, credential, "redaction").ok())
            .map(|t| t.expose().to_string())
            .filter(|t| t.len() >= 8)
            .collect();
        Self(found)
    }

    pub fn redact(&self, text: &str) -> String {
        self.0
            .iter()
            .fold(text.to_string(), |t, s| t.replace(s.as_str(), REDACTED))
    }

    /// A redactor for a stream of bytes (a CI run's output on its way to its log).
    pub fn stream(&self) -> StreamRedactor {
        StreamRedactor {
            tokens: self.0.iter().map(|t| t.as_bytes().to_vec()).collect(),
            held: Vec::new(),
        }
    }

    /// [`Known::redact`] on a text that may be absent, where it lies.
    pub fn redact_each(&self, texts: [&mut Option<String>; 2]) {
        for text in texts {
            *text = text.take().map(|t| self.redact(&t));
        }
    }
}

/// [`Known::redact`] for bytes that arrive in pieces: a token split across two reads is still
/// found, since the last bytes that could begin one are held back until the next piece (or
/// [`StreamRedactor::finish`]).
pub struct StreamRedactor {
    tokens: Vec<Vec<u8>>,
    held: Vec<u8>,
}

impl StreamRedactor {
    /// Takes the next piece; gives back what can be written now, tokens replaced.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.tokens.is_empty() {
            return bytes.to_vec();
        }
        self.held.extend_from_slice(bytes);
        self.held = replace_all(&self.held, &self.tokens);
        let keep = self.tokens.iter().map(Vec::len).max().unwrap_or(1) - 1;
        let cut = self.held.len().saturating_sub(keep);
        let rest = self.held.split_off(cut);
        std::mem::replace(&mut self.held, rest)
    }

    /// What was held back, at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

fn replace_all(bytes: &[u8], tokens: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    'scan: while i < bytes.len() {
        for t in tokens {
            if bytes[i..].starts_with(t) {
                out.extend_from_slice(REDACTED.as_bytes());
                i += t.len();
                continue 'scan;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
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

    /// A token split across pieces at every place is still replaced, and what is not a token
    /// comes out byte for byte.
    #[test]
    fn a_stream_loses_no_token_at_any_split() {
        let known = Known(vec!["tok-0123456789".into(), "abcdefgh".into()]);
        let text = b"start tok-0123456789 mid abcdefghabcdefg end tok-01234567";
        let want = known.redact(std::str::from_utf8(text).unwrap_or_default());
        for split in 0..text.len() {
            let mut r = known.stream();
            let mut out = r.push(&text[..split]);
            out.extend(r.push(&text[split..]));
            out.extend(r.finish());
            assert_eq!(String::from_utf8_lossy(&out), want, "split at {split}");
        }
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
