//! The agent lock: at most one conflicting job (deploy, sweep, mirror sync, gc) at a time.
//!
//! It is an advisory `flock` on `state_dir/agent.lock`, so the kernel releases it when the holder
//! exits for any reason, `kill -9` included: there is no stale lock to clean up. The holder writes
//! who it is into the file so a refused job can say "busy: deploy since ...".

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::exit::Busy;

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
    file: File,
    path: PathBuf,
}

impl JobLock {
    /// Takes the lock for `job`, or fails at once with [`Busy`] naming the holder.
    pub fn acquire(state_dir: &Path, job: &str) -> Result<Self> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        let path = state_dir.join(LOCK_FILE);
        let mut file = open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let who = match read_holder(&mut file) {
                    Some(h) => format!("{} (pid {}) since {}", h.job, h.pid, h.since),
                    None => "another process".to_string(),
                };
                return Err(Busy(format!("{who} holds the agent lock {}", path.display())).into());
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        let holder = Holder {
            job: job.to_string(),
            pid: std::process::id(),
            since: super::now_rfc3339(),
        };
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(serde_json::to_string(&holder)?.as_bytes())?;
        file.sync_data()?;
        super::adopt_owner(state_dir, &[LOCK_FILE]);
        Ok(Self { file, path })
    }

    /// Like [`JobLock::acquire`], but waits up to `wait` for the holder to finish.
    pub fn acquire_wait(state_dir: &Path, job: &str, wait: std::time::Duration) -> Result<Self> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Self::acquire(state_dir, job) {
                Err(e) if e.is::<Busy>() && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    /// Who holds the lock right now, if anyone (never blocks).
    pub fn holder(state_dir: &Path) -> Result<Option<Holder>> {
        let path = state_dir.join(LOCK_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let mut file = open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(None),
            Err(TryLockError::WouldBlock) => Ok(Some(read_holder(&mut file).unwrap_or(Holder {
                job: "unknown".into(),
                pid: 0,
                since: "unknown".into(),
            }))),
            Err(TryLockError::Error(e)) => Err(e.into()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        // Clear the holder note before the kernel drops the lock with the file.
        let _ = self.file.set_len(0);
    }
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
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
