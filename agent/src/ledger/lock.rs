//! The agent lock: at most one conflicting job (deploy, sweep, mirror sync, gc) at a time.
//!
//! It is an advisory `flock` on the state directory itself, so the kernel releases it when the
//! holder exits for any reason, `kill -9` included: there is no stale lock to clean up. Recipe CI
//! runs as the user that owns the state directory and can delete or replace any file in it, but
//! not the directory: deleting `agent.lock` does not let a second job in. The holder writes who it
//! is into `agent.lock`, a note only, so a refused job can say "busy: deploy since ...".

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use crate::exit::Busy;
use crate::fsutil::{read_regular, Dir};

/// The holder's note; the lock itself is on the directory.
pub const LOCK_FILE: &str = "agent.lock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub job: String,
    pub pid: u32,
    pub since: String,
}

/// Held until dropped.
#[derive(Debug)]
pub struct JobLock {
    dir: Dir,
    note: Option<File>,
}

/// Tries the lock on `dir` without waiting: true when taken.
fn try_lock(dir: &Dir) -> Result<bool> {
    match rustix::fs::flock(dir.fd(), FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot lock {}", dir.path().display())),
    }
}

impl JobLock {
    /// Takes the lock for `job`, or fails at once with [`Busy`] naming the holder.
    pub fn acquire(state_dir: &Path, job: &str) -> Result<Self> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        let dir = Dir::open(state_dir)?;
        if !try_lock(&dir)? {
            let who = match read_holder(state_dir) {
                Some(h) => format!("{} (pid {}) since {}", h.job, h.pid, h.since),
                None => "another process".to_string(),
            };
            return Err(Busy(format!(
                "{who} holds the agent lock on {}",
                state_dir.display()
            ))
            .into());
        }
        let holder = Holder {
            job: job.to_string(),
            pid: std::process::id(),
            since: super::now_rfc3339(),
        };
        // The note is for people. Something other than our own regular file at its name (a
        // link, a FIFO) is left alone, and the lock holds all the same.
        let note = match dir.open_own_file(LOCK_FILE, 0o640) {
            Ok(Some(mut f)) => {
                let text = serde_json::to_string(&holder)?;
                let written = f
                    .set_len(0)
                    .and_then(|()| f.seek(SeekFrom::Start(0)))
                    .and_then(|_| f.write_all(text.as_bytes()));
                if let Err(e) = written {
                    tracing::debug!("cannot write the lock note: {e}");
                }
                Some(f)
            }
            Ok(None) => {
                tracing::warn!(
                    "{} is not a plain file: the lock is held, but who holds it is not noted",
                    state_dir.join(LOCK_FILE).display()
                );
                None
            }
            Err(e) => {
                tracing::debug!("cannot open the lock note: {e:#}");
                None
            }
        };
        Ok(Self { dir, note })
    }

    /// Like [`JobLock::acquire`], but waits up to `wait` for the holder to finish.
    pub fn acquire_wait(state_dir: &Path, job: &str, wait: std::time::Duration) -> Result<Self> {
        let deadline = std::time::Instant::now() + wait;
        let mut said = false;
        loop {
            match Self::acquire(state_dir, job) {
                Err(e) if e.is::<Busy>() && std::time::Instant::now() < deadline => {
                    if !said {
                        tracing::info!("{e:#}; waiting up to {}s for it", wait.as_secs());
                        said = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    /// Who holds the lock right now, if anyone (never blocks).
    pub fn holder(state_dir: &Path) -> Result<Option<Holder>> {
        if !state_dir.is_dir() {
            return Ok(None);
        }
        let dir = Dir::open(state_dir)?;
        if try_lock(&dir)? {
            return Ok(None);
        }
        Ok(Some(read_holder(state_dir).unwrap_or(Holder {
            job: "unknown".into(),
            pid: 0,
            since: "unknown".into(),
        })))
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        // Clear the holder note before the kernel drops the lock with the directory.
        if let Some(f) = &self.note {
            let _ = f.set_len(0);
        }
    }
}

fn read_holder(state_dir: &Path) -> Option<Holder> {
    let bytes = read_regular(&state_dir.join(LOCK_FILE), 4096, false).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{classify, Exit};

    #[test]
    fn second_job_is_refused_with_the_holder_named() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let held = JobLock::acquire(dir.path(), "deploy")?;
        let err = JobLock::acquire(dir.path(), "sweep")
            .err()
            .context("second lock granted")?;
        assert_eq!(classify(&err), Exit::Busy);
        let text = err.to_string();
        assert!(text.starts_with("busy: deploy (pid "), "{text}");
        assert_eq!(
            JobLock::holder(dir.path())?.map(|h| h.job),
            Some("deploy".into())
        );
        drop(held);
        assert_eq!(JobLock::holder(dir.path())?, None);
        let _again = JobLock::acquire(dir.path(), "sweep")?;
        Ok(())
    }
}
