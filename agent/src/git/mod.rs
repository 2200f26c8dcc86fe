//! The only place that knows git's command lines: `ls-remote`, the per-recipe bare cache,
//! leased, atomic pushes, and the deploy's look at its checkout. Credentials arrive as environment
//! (`GIT_CONFIG_*`), never in argv.

mod advertisement;
mod checkout;
mod listing;
mod pipeline;
pub mod pkt;
mod receive_pack;
pub mod refs;

use std::path::Path;
use std::time::Duration;

use crate::deadline::{Backoff, Deadline};
use crate::process::{Cmd, ProcessError};
use crate::secrets::Secret;
pub use checkout::Checkout;
pub use listing::Listed;
pub use refs::{is_oid, plan, Change, RefSet, Tag};

/// Leased ref updates per push at most. Git checks each lease against every ref it pushes (and
/// over HTTP passes each one to `send-pack` as an argument), so a push's cost grows with leases
/// times tags; tag creations need no lease and are not counted.
const LEASES_PER_PUSH: usize = 500;

/// An object id as people read it: its first 12 characters (all of it when shorter, or when the
/// text is not an id at all and 12 bytes would split a character).
pub fn short(oid: &str) -> &str {
    oid.get(..12).unwrap_or(oid)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth another try: the network or the server faltered.
    Transient,
    /// The credentials were refused. Retrying will not help.
    Auth,
    /// The remote refused the update: a lease did not hold, or a hook said no.
    Rejected,
    /// The server refused the update by its own rules (a protected branch or tag, an archived
    /// repository, a quota). Retrying will not help until that is changed on the forge.
    Refused,
    /// The call ran out of time. Not retried: a server that hangs once hangs again, and each
    /// try would cost the whole timeout.
    Timeout,
    Other,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct GitError {
    pub kind: ErrorKind,
    pub message: String,
}

fn classify(stderr: &str) -> ErrorKind {
    let s = stderr.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| s.contains(n));
    if any(&[
        "authentication failed",
        "http 401",
        "http 403",
        "returned error: 401",
        "returned error: 403",
        "permission denied",
    ]) {
        ErrorKind::Auth
    } else if any(&[
        "stale info",
        "[rejected]",
        "! [remote rejected]",
        "failed to push some refs",
        "atomic push failed",
    ]) {
        ErrorKind::Rejected
    } else if any(&[
        "could not resolve host",
        "connection refused",
        "connection timed out",
        "connection reset",
        "timed out",
        "early eof",
        "the remote end hung up unexpectedly",
        "returned error: 5",
        "http 5",
        "temporary failure",
        "unable to connect",
        "did not finish within",
    ]) {
        ErrorKind::Transient
    } else {
        ErrorKind::Other
    }
}

fn to_git_error(e: ProcessError) -> GitError {
    let message = e.to_string();
    let kind = match &e {
        ProcessError::Timeout { .. } => ErrorKind::Timeout,
        ProcessError::Failed { stderr, .. } => classify(stderr),
        ProcessError::Spawn { .. } | ProcessError::TooMuchOutput { .. } => ErrorKind::Other,
    };
    GitError { kind, message }
}

#[derive(Debug, Clone)]
pub struct Git {
    timeout: Duration,
    retries: u32,
    /// The first pause before another try of a call that failed transiently; then doubled.
    retry_pause: Duration,
    /// Bounds every call and every retry's pause, on top of `timeout`.
    deadline: Deadline,
    /// The `Authorization` header of HTTP calls to URLs under the prefix (the forge's): given to
    /// git as environment configuration (`http.<prefix>.extraHeader` through `GIT_CONFIG_*`),
    /// never in argv, and sent with the pushes the agent speaks itself.
    http_auth: Option<(String, Secret)>,
}

impl Git {
    pub fn new(timeout: Duration, retries: u32) -> Self {
        Self {
            timeout,
            retries,
            retry_pause: Duration::from_secs(1),
            deadline: Deadline::none(),
            http_auth: None,
        }
    }

    /// Pauses `first` before the first retry (`mirrors.retry_pause`), then twice as long each time.
    pub fn with_retry_pause(self, first: Duration) -> Self {
        Self {
            retry_pause: first,
            ..self
        }
    }

    /// Sends `header` as `Authorization` with every HTTP call to URLs that start with `prefix`,
    /// and to no other.
    pub fn with_http_auth(self, prefix: String, header: Secret) -> Self {
        Self {
            http_auth: Some((prefix, header)),
            ..self
        }
    }

    /// The `Authorization` header for an HTTP call to `url`: only under the forge's prefix.
    fn auth_for(&self, url: &str) -> Option<&str> {
        self.http_auth
            .as_ref()
            .filter(|(prefix, _)| url.starts_with(prefix.as_str()))
            .map(|(_, header)| header.expose())
    }

    /// What a call may take now: `timeout`, or less when the deadline is nearer.
    fn time_left(&self) -> Result<Duration, GitError> {
        self.deadline
            .cap(self.timeout)
            .map(|(t, _)| t)
            .map_err(|e| GitError {
                kind: ErrorKind::Timeout,
                message: format!("not started: {e}"),
            })
    }

    /// The same git, with every call and retry inside `deadline`.
    pub fn within(&self, deadline: Deadline) -> Self {
        Self {
            deadline,
            ..self.clone()
        }
    }

    /// A git command whose timeout is what is left of the deadline, when that is less.
    fn cmd(&self) -> Result<Cmd, GitError> {
        let (timeout, _) = self.deadline.cap(self.timeout).map_err(|e| GitError {
            kind: ErrorKind::Timeout,
            message: format!("not started: {e}"),
        })?;
        let mut cmd = Cmd::new("git")
            .timeout(timeout)
            // Never ask a person for anything; answer in a language we can read.
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .env("SSH_ASKPASS", "true")
            .env("LC_ALL", "C");
        if let Some((prefix, header)) = &self.http_auth {
            cmd = cmd
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", format!("http.{prefix}.extraHeader"))
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: {}", header.expose()),
                );
        }
        Ok(cmd)
    }

    /// Runs a git command, naming the deadline when it was what cut the call short.
    fn run(&self, build: impl FnOnce(Cmd) -> Cmd) -> Result<String, GitError> {
        let (_, cut) = self.deadline.cap(self.timeout).unwrap_or_default();
        build(self.cmd()?).run().map_err(|e| {
            let mut e = to_git_error(e);
            if cut && e.kind == ErrorKind::Timeout {
                e.message = format!(
                    "{} (cut to what was left of {})",
                    e.message,
                    self.deadline.what()
                );
            }
            e
        })
    }

    /// Runs `call()` until it succeeds, fails for a reason other than the network, or runs out
    /// of tries or of time; the pauses between tries double from `retry_pause`.
    fn retrying<T>(&self, mut call: impl FnMut() -> Result<T, GitError>) -> Result<T, GitError> {
        let mut backoff = Backoff::new(self.retry_pause, self.retries);
        loop {
            match call() {
                Err(e) if e.kind == ErrorKind::Transient => match backoff.next_pause() {
                    Some(pause) if self.deadline.allows(pause) => {
                        tracing::info!("transient git failure, retrying in {pause:?}: {e}");
                        std::thread::sleep(pause);
                    }
                    _ => return Err(e),
                },
                other => return other,
            }
        }
    }

    /// The branch and the tags of a remote, filtered by the server (protocol v2 ref prefixes).
    pub fn ls_remote(&self, url: &str, branch: &str) -> Result<RefSet, GitError> {
        let out = self.retrying(|| {
            self.run(|cmd| {
                cmd.args(["-c", "protocol.version=2", "ls-remote", "--", url])
                    .arg(format!("refs/heads/{branch}"))
                    .arg("refs/tags/*")
                    .stdout_limit(listing::ADVERTISEMENT_LIMIT)
            })
        })?;
        RefSet::parse(&out, branch).map_err(|e| GitError {
            kind: ErrorKind::Other,
            message: e.to_string(),
        })
    }

    /// The commits of the remote's branches among `names` (protocol v2 filters them on the
    /// server); a branch the remote does not have is left out.
    pub fn heads(
        &self,
        url: &str,
        names: &[&str],
    ) -> Result<std::collections::BTreeMap<String, String>, GitError> {
        let out = self.retrying(|| {
            self.run(|cmd| {
                cmd.args(["-c", "protocol.version=2", "ls-remote", "--", url])
                    .args(names.iter().map(|n| format!("refs/heads/{n}")))
            })
        })?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(oid, _)| is_oid(oid))
            .filter_map(|(oid, name)| {
                let name = name.strip_prefix("refs/heads/")?;
                names
                    .contains(&name)
                    .then(|| (name.to_string(), oid.to_string()))
            })
            .collect())
    }

    /// A new commit in `cache` with `parent`'s tree and `parent` as its only parent: a change of
    /// nothing, authored by `author` (`Name <email>`), never signed; its id.
    pub fn empty_commit(
        &self,
        cache: &Path,
        parent: &str,
        author: (&str, &str),
        message: &str,
    ) -> Result<String, GitError> {
        let (name, email) = author;
        let out = self.run(|cmd| {
            cmd.env("GIT_AUTHOR_NAME", name)
                .env("GIT_AUTHOR_EMAIL", email)
                .env("GIT_COMMITTER_NAME", name)
                .env("GIT_COMMITTER_EMAIL", email)
                .arg("-C")
                .arg(cache)
                .args(["commit-tree", "--no-gpg-sign", "-p", parent])
                .arg(format!("{parent}^{{tree}}"))
                .stdin(message.as_bytes().to_vec())
        })?;
        let oid = out.trim();
        if !is_oid(oid) {
            return Err(GitError {
                kind: ErrorKind::Other,
                message: format!("git commit-tree printed {oid:?}, not a commit id"),
            });
        }
        Ok(oid.to_string())
    }

    /// The branch names a remote has, for a message when the configured one is missing.
    pub fn branches(&self, url: &str) -> Result<Vec<String>, GitError> {
        let out = self.run(|cmd| {
            cmd.args([
                "-c",
                "protocol.version=2",
                "ls-remote",
                "--heads",
                "--",
                url,
            ])
        })?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter_map(|(_, name)| name.strip_prefix("refs/heads/"))
            .filter(|n| !n.chars().any(char::is_control))
            .map(String::from)
            .collect())
    }

    /// A new, empty bare repository whose HEAD names `branch` (a mirror forge's repository).
    pub fn create_bare(&self, path: &Path, branch: &str) -> Result<(), GitError> {
        self.run(|cmd| {
            // No template: its sample hooks are a dozen files nothing runs.
            cmd.args(["init", "--quiet", "--bare", "--template="])
                .arg(format!("--initial-branch={branch}"))
                .arg(path)
        })?;
        Ok(())
    }

    pub fn init_bare(&self, path: &Path) -> Result<(), GitError> {
        if path.join("HEAD").exists() {
            return Ok(());
        }
        self.run(|cmd| {
            cmd.args(["init", "--quiet", "--bare", "--template="])
                .arg(path)
        })?;
        Ok(())
    }

    /// Brings `cache` to upstream's branch and tags: only new objects travel; tags upstream
    /// deleted are pruned; the branch follows even a rewrite.
    pub fn fetch(&self, cache: &Path, url: &str, branch: &str) -> Result<(), GitError> {
        self.retrying(|| {
            self.run(|cmd| {
                cmd.arg("-C")
                    .arg(cache)
                    // Keep what arrives as a pack: exploding small packs into loose objects
                    // costs a write per object now and a re-pack at the push.
                    .args(["-c", "fetch.unpackLimit=1"])
                    .args([
                        "fetch",
                        "--quiet",
                        "--prune",
                        "--no-write-fetch-head",
                        "--",
                        url,
                    ])
                    .arg(format!("+refs/heads/{branch}:refs/heads/{branch}"))
                    .arg("+refs/tags/*:refs/tags/*")
            })
        })?;
        Ok(())
    }

    /// Fetches one ref of another remote into a private ref of the cache.
    pub fn fetch_ref(&self, cache: &Path, url: &str, from: &str, to: &str) -> Result<(), GitError> {
        self.retrying(|| {
            self.run(|cmd| {
                cmd.arg("-C")
                    .arg(cache)
                    .args([
                        "fetch",
                        "--quiet",
                        "--no-tags",
                        "--no-write-fetch-head",
                        "--",
                        url,
                    ])
                    .arg(format!("+{from}:{to}"))
            })
        })?;
        Ok(())
    }

    /// The cache's own branch and tags, peeled, in the form `RefSet::parse` reads.
    pub fn local_refs(&self, cache: &Path, branch: &str) -> Result<RefSet, GitError> {
        let out = self.run(|cmd| {
            cmd.arg("-C")
                .arg(cache)
                .args(["for-each-ref", "--format=%(objectname)%09%(refname)%(if)%(*objectname)%(then)%0a%(*objectname)%09%(refname)^{}%(end)"])
                .arg(format!("refs/heads/{branch}"))
                .arg("refs/tags")
        })?;
        RefSet::parse(&out, branch).map_err(|e| GitError {
            kind: ErrorKind::Other,
            message: e.to_string(),
        })
    }

    /// Pushes `changes` (the plan from the cache's refs to the mirror's as listed) from `cache`
    /// to `url`, each ref only while the mirror still holds the value it was listed with, all or
    /// nothing where the server can do atomic pushes. Over HTTP the agent speaks the protocol
    /// itself ([`receive_pack`]), in time and memory linear in the refs. To a path, `git push`:
    /// the branch, every moved tag and every deleted tag is leased; created tags travel through
    /// one `refs/tags/*` refspec, which git never lets overwrite an existing tag without force,
    /// so a tag that appeared meanwhile is refused like a broken lease. Past
    /// [`LEASES_PER_PUSH`] moves and deletions they go first, in batches.
    pub fn push(&self, cache: &Path, url: &str, changes: &[Change]) -> Result<(), GitError> {
        if changes.is_empty() {
            return Ok(());
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            return receive_pack::push(self, cache, url, self.auth_for(url), changes);
        }
        self.push_with_git(cache, url, changes)
    }

    /// `git push` for mirrors on a path (`kind = "local"`), where git's own transport matches
    /// the `refs/tags/*` pattern once instead of ref by ref.
    fn push_with_git(&self, cache: &Path, url: &str, changes: &[Change]) -> Result<(), GitError> {
        let leased: Vec<&Change> = changes
            .iter()
            .filter(|c| matches!(c, Change::TagMove { .. } | Change::TagDelete { .. }))
            .collect();
        let (early, last) = if leased.len() > LEASES_PER_PUSH {
            (leased.as_slice(), &[][..])
        } else {
            (&[][..], leased.as_slice())
        };
        for batch in early.chunks(LEASES_PER_PUSH) {
            let refspecs: Vec<String> = batch.iter().map(|c| c.refspec()).collect();
            self.push_once(cache, url, batch, &refspecs)?;
        }
        let branch = changes.iter().find(|c| matches!(c, Change::Branch { .. }));
        let mut refspecs: Vec<String> = branch.iter().map(|c| c.refspec()).collect();
        refspecs.push("refs/tags/*:refs/tags/*".into());
        // Moved tags ride on the pattern, forced by their lease; deletions are named.
        refspecs.extend(
            last.iter()
                .filter(|c| matches!(c, Change::TagDelete { .. }))
                .map(|c| c.refspec()),
        );
        let leases: Vec<&Change> = branch.into_iter().chain(last.iter().copied()).collect();
        self.push_once(cache, url, &leases, &refspecs)
    }

    fn push_once(
        &self,
        cache: &Path,
        url: &str,
        leased: &[&Change],
        refspecs: &[String],
    ) -> Result<(), GitError> {
        let push = |atomic: bool| {
            self.run(|cmd| {
                let cmd = cmd
                    .arg("-C")
                    .arg(cache)
                    .args(["push", "--porcelain", "--no-verify"]);
                let cmd = if atomic { cmd.arg("--atomic") } else { cmd };
                cmd.args(leased.iter().map(|c| c.lease()))
                    .arg("--")
                    .arg(url)
                    .args(refspecs)
            })
        };
        match push(true) {
            Err(e) if e.message.contains("does not support --atomic") => push(false).map(|_| ()),
            other => other.map(|_| ()),
        }
    }

    /// Those of `oids` that `cache` has: what a pack may leave out.
    fn present(&self, cache: &Path, oids: &[&str]) -> Result<Vec<String>, GitError> {
        if oids.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.run(|cmd| {
            cmd.arg("-C")
                .arg(cache)
                .args(["cat-file", "--batch-check=%(objectname) %(objecttype)"])
                .stdin(oids.join("\n").into_bytes())
        })?;
        Ok(out
            .lines()
            .filter(|l| !l.ends_with(" missing"))
            .filter_map(|l| l.split(' ').next())
            .map(String::from)
            .collect())
    }

    /// Packs what `wants` reach and `haves` do not into a pack file under `dir`; its path.
    fn pack_objects(
        &self,
        cache: &Path,
        dir: &Path,
        wants: &[&str],
        haves: &[String],
        ofs_delta: bool,
    ) -> Result<std::path::PathBuf, GitError> {
        let mut revs = String::new();
        for w in wants {
            revs.push_str(w);
            revs.push('\n');
        }
        for h in haves {
            revs.push('^');
            revs.push_str(h);
            revs.push('\n');
        }
        let base = dir.join("push");
        let out = self.run(|cmd| {
            let cmd = cmd
                .arg("-C")
                .arg(cache)
                .args(["pack-objects", "--revs", "--quiet"]);
            let cmd = if ofs_delta {
                cmd.arg("--delta-base-offset")
            } else {
                cmd
            };
            cmd.arg(&base).stdin(revs.into_bytes())
        })?;
        let name = out.trim();
        if !is_oid(name) {
            return Err(GitError {
                kind: ErrorKind::Other,
                message: format!("git pack-objects named its pack {name:?}"),
            });
        }
        Ok(dir.join(format!("push-{name}.pack")))
    }

    /// Whether `ancestor` is reachable from `descendant` in `cache`; false if either is missing.
    pub fn is_ancestor(&self, cache: &Path, ancestor: &str, descendant: &str) -> bool {
        self.succeeds(|cmd| {
            cmd.arg("-C")
                .arg(cache)
                .args(["merge-base", "--is-ancestor", ancestor, descendant])
        })
    }

    pub fn has_commit(&self, cache: &Path, oid: &str) -> bool {
        self.succeeds(|cmd| {
            cmd.arg("-C")
                .arg(cache)
                .args(["cat-file", "-e", &format!("{oid}^{{commit}}")])
        })
    }

    fn succeeds(&self, build: impl FnOnce(Cmd) -> Cmd) -> bool {
        self.cmd()
            .is_ok_and(|cmd| build(cmd).output().is_ok_and(|o| o.status.success()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_failures() {
        assert_eq!(
            classify("fatal: Authentication failed for 'http://x/'"),
            ErrorKind::Auth
        );
        assert_eq!(
            classify("fatal: unable to access 'http://x/': The requested URL returned error: 403"),
            ErrorKind::Auth
        );
        assert_eq!(
            classify(" ! [rejected] main -> main (stale info)"),
            ErrorKind::Rejected
        );
        assert_eq!(
            classify("fatal: unable to connect to 127.0.0.1:\nConnection refused"),
            ErrorKind::Transient
        );
        assert_eq!(
            classify("fatal: the remote end hung up unexpectedly"),
            ErrorKind::Transient
        );
        assert_eq!(
            classify("fatal: '/x' does not appear to be a git repository"),
            ErrorKind::Other
        );
    }
}
