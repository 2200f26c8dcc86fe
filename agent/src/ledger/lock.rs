//! The agent's locks: which jobs may run at once. Each is an advisory `flock`, so the kernel
//! releases it when its holder exits for any reason, `kill -9` included: none is ever stale.
//!
//! - **The host lock**, on the state directory itself: deploy, rollback, the dead-man, gc and the
//!   sweep. One of them at a time: a sweep's CI must not meet a deploy or a gc deleting the warm
//!   volume it uses, and two sweeps must not judge one release twice.
//! - **The mirrors lock**, `locks/mirrors.lock`: one mirror sync at a time. A sync takes no host
//!   lock: it touches only mirrors, so the hourly sync goes on through the week's sweep, hours of
//!   CI long, and through gc.
//! - **Recipe locks**, `locks/recipe.<name>.lock`: one job at a time syncs a recipe's mirror or runs
//!   its CI, so a sync stands aside for the recipe the sweep is testing. A job holds at most one at
//!   a time, and takes it after its job lock, so no two jobs ever wait for each other.
//!
//! Recipe CI runs as the user that owns the state directory and can delete or replace any file in
//! it, but not the directory: the host lock cannot be broken. Who holds a lock is noted for people
//! only (`agent.lock` for the host lock, each file in `locks/` for its own). A file in `locks/` is
//! never followed through a link (one that is not a plain file is removed and made again), and a
//! job owns such a lock only while the name still names the file it locked. One deleted while
//! held lets a second sync at a recipe; git's ref locks and the forge's push leases then fail one
//! of them, and nothing is recorded that did not happen (docs/reliability.md).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use crate::error::Busy;
use crate::fsutil::Dir;

/// The exclusive holder's note; the lock itself is on the directory.
pub const LOCK_FILE: &str = "agent.lock";
/// Where the named locks live, below the state directory.
pub const LOCKS_DIR: &str = "locks";
/// The mirror sync's job lock, in [`LOCKS_DIR`].
const MIRRORS: &str = "mirrors";
const PROBE: &str = "probe";
/// How often a waiting job tries again.
const RETRY: Duration = Duration::from_millis(100);

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub job: String,
    pub pid: u32,
    pub since: String,
}

impl Holder {
    fn me(job: &str) -> Self {
        Self {
            job: job.to_string(),
            pid: std::process::id(),
            // Read by other processes, like the lock itself: the operating system's clock (clock.rs).
            since: crate::clock::Clock::system().rfc3339(),
        }
    }

    fn describe(who: Option<&Holder>) -> String {
        match who {
            Some(h) => format!("{} (pid {}) since {}", h.job, h.pid, h.since),
            None => "another process".to_string(),
        }
    }
}

/// A job's lock, released when dropped: the host lock, or the mirrors lock.
#[derive(Debug)]
pub struct JobLock {
    dir: Dir,
    locks: Dir,
    job: String,
    /// The host lock holder's note.
    note: Option<File>,
    /// The mirrors lock, for a sync.
    named: Option<NamedLock>,
}

/// One named lock, held until dropped; its file holds its holder's note.
#[derive(Debug)]
pub struct NamedLock {
    file: File,
}

impl Drop for NamedLock {
    fn drop(&mut self) {
        // Clear the note before closing the file lets the kernel drop the lock.
        let _ = self.file.set_len(0);
    }
}

/// Tries the host lock on `dir` without waiting: true when taken.
fn try_lock(dir: &Dir) -> Result<bool> {
    match rustix::fs::flock(dir.fd(), FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot lock {}", dir.path().display())),
    }
}

/// Calls `attempt` until it gives a value or `wait` has passed; then the last refusal.
fn within<T>(wait: Duration, mut attempt: impl FnMut() -> Result<Result<T, Busy>>) -> Result<T> {
    let deadline = Instant::now() + wait;
    let mut said = false;
    loop {
        match attempt()? {
            Ok(held) => return Ok(held),
            Err(busy) if Instant::now() >= deadline => return Err(busy.into()),
            Err(busy) => {
                if !said {
                    tracing::info!("busy: {}; waiting up to {}s for it", busy.0, wait.as_secs());
                    said = true;
                }
                std::thread::sleep(RETRY.min(deadline.saturating_duration_since(Instant::now())));
            }
        }
    }
}

fn open_state(state_dir: &Path) -> Result<(Dir, Dir)> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    let dir = Dir::open(state_dir)?;
    let locks = match dir.subdir(LOCKS_DIR, 0o750) {
        Ok(locks) => locks,
        // A link or a file planted at the name: removed (never followed), and the directory made.
        Err(e) => {
            tracing::warn!("{e:#}; making it again");
            dir.remove(LOCKS_DIR)?;
            dir.subdir(LOCKS_DIR, 0o750)?
        }
    };
    Ok((dir, locks))
}

impl JobLock {
    /// Takes the host lock for `job`, or fails at once with [`Busy`] naming the holder.
    pub fn acquire(state_dir: &Path, job: &str) -> Result<Self> {
        Self::acquire_wait(state_dir, job, Duration::ZERO)
    }

    /// Like [`JobLock::acquire`], but waits up to `wait` for the holders to finish.
    pub fn acquire_wait(state_dir: &Path, job: &str, wait: Duration) -> Result<Self> {
        let (dir, locks) = open_state(state_dir)?;
        within(wait, || {
            if try_lock(&dir)? {
                return Ok(Ok(()));
            }
            Ok(Err(busy_host(&dir)))
        })?;
        let note = write_exclusive_note(&dir, &Holder::me(job));
        Ok(Self {
            dir,
            locks,
            job: job.to_string(),
            note,
            named: None,
        })
    }

    /// A job's start under the host lock: [`JobLock::acquire_wait`], and when the lock cannot
    /// be had, `refused` records why on the job's own row (`refused-busy`) before the error
    /// goes up. Every job that takes the host lock starts so.
    pub fn start_job(
        state_dir: &Path,
        job: &str,
        wait: Duration,
        refused: impl FnOnce(&str) -> Result<()>,
    ) -> Result<Self> {
        match Self::acquire_wait(state_dir, job, wait) {
            Ok(lock) => Ok(lock),
            Err(e) => {
                refused(&format!("{e:#}"))?;
                Err(e)
            }
        }
    }

    /// Takes the mirrors lock (not the host lock), waiting up to `wait` for another sync.
    pub fn mirrors(state_dir: &Path, wait: Duration) -> Result<Self> {
        Self::job_of_its_own(state_dir, MIRRORS, wait)
    }

    /// Takes the probe lock (not the host lock): one probe at a time on the forge, beside any
    /// other job.
    pub fn probe(state_dir: &Path, wait: Duration) -> Result<Self> {
        Self::job_of_its_own(state_dir, PROBE, wait)
    }

    /// The lock `locks/<job>.lock`, which only `job` takes.
    fn job_of_its_own(state_dir: &Path, job: &str, wait: Duration) -> Result<Self> {
        let (dir, locks) = open_state(state_dir)?;
        let file = format!("{job}.lock");
        let named = within(wait, || {
            try_named(&locks, job, &file, &format!("the {job} lock"))
        })?;
        Ok(Self {
            dir,
            locks,
            job: job.to_string(),
            note: None,
            named: Some(named),
        })
    }

    /// Takes the lock on `recipe`'s mirror and CI, waiting up to `wait` for its holder.
    pub fn recipe(&self, recipe: &str, wait: Duration) -> Result<NamedLock> {
        let file = recipe_lock_file(recipe)?;
        within(wait, || {
            try_named(&self.locks, &self.job, &file, &format!("recipe {recipe}"))
        })
    }

    /// Who holds the agent's job locks right now (never blocks, never writes): the host lock's
    /// holder ("unknown" when it left no note), then a running mirror sync.
    pub fn holders(state_dir: &Path) -> Result<Vec<Holder>> {
        if !state_dir.is_dir() {
            return Ok(Vec::new());
        }
        let dir = Dir::open(state_dir)?;
        let mut found = Vec::new();
        if !try_lock(&dir)? {
            found.push(host_note(&dir).unwrap_or(Holder {
                job: "unknown".into(),
                pid: 0,
                since: "unknown".into(),
            }));
        }
        drop(dir);
        let locks = Dir::open(state_dir)?.existing_subdir(LOCKS_DIR);
        if let Some(locks) = locks {
            for job in [MIRRORS, PROBE] {
                found.extend(live_note(&locks, &format!("{job}.lock")));
            }
        }
        Ok(found)
    }

    /// The first of [`JobLock::holders`], if anyone holds a lock.
    pub fn holder(state_dir: &Path) -> Result<Option<Holder>> {
        Ok(Self::holders(state_dir)?.into_iter().next())
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
        // The named lock goes first, the host lock with the directory after it.
        self.named.take();
    }
}

/// The note an exclusive holder leaves for people; something other than our own regular file at
/// its name (a link, a FIFO) is left alone, and the lock holds all the same.
fn write_exclusive_note(dir: &Dir, holder: &Holder) -> Option<File> {
    match dir.open_own_file(LOCK_FILE, 0o640) {
        Ok(Some(mut f)) => {
            write_note(&mut f, holder);
            Some(f)
        }
        Ok(None) => {
            tracing::warn!(
                "{} is not a plain file: the lock is held, but who holds it is not noted",
                dir.path().join(LOCK_FILE).display()
            );
            None
        }
        Err(e) => {
            tracing::debug!("cannot open the lock note: {e:#}");
            None
        }
    }
}

fn write_note(f: &mut File, holder: &Holder) {
    let Ok(text) = serde_json::to_string(holder) else {
        return;
    };
    let written = f
        .set_len(0)
        .and_then(|()| f.seek(SeekFrom::Start(0)))
        .and_then(|_| f.write_all(text.as_bytes()));
    if let Err(e) = written {
        tracing::debug!("cannot write the lock note: {e}");
    }
}

/// `recipe.<name>.lock`; enrolled names are already limited to these characters.
fn recipe_lock_file(recipe: &str) -> Result<String> {
    let plain = !recipe.is_empty()
        && !recipe.starts_with('.')
        && recipe
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    anyhow::ensure!(plain, "{recipe:?} cannot name a lock file");
    Ok(format!("recipe.{recipe}.lock"))
}

/// One try at the named lock in `file`: held, or who holds it.
fn try_named(locks: &Dir, job: &str, file: &str, what: &str) -> Result<Result<NamedLock, Busy>> {
    // The file can be replaced between our open and our lock; a few tries see it settle.
    for _ in 0..4 {
        let Some(mut f) = locks.open_own_file(file, 0o640)? else {
            tracing::warn!(
                "{} is not a plain file; removing it",
                locks.path().join(file).display()
            );
            locks.remove(file)?;
            continue;
        };
        match rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let who = read_note(&mut f);
                return Ok(Err(Busy(format!(
                    "{} holds {what}",
                    Holder::describe(who.as_ref())
                ))));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot lock {}", locks.path().join(file).display()))
            }
        }
        if !locks.names(file, &f) {
            continue;
        }
        write_note(&mut f, &Holder::me(job));
        return Ok(Ok(NamedLock { file: f }));
    }
    anyhow::bail!(
        "{} keeps being replaced while the agent locks it",
        locks.path().join(file).display()
    )
}

/// Why the host lock was refused, named from its holder's note.
fn busy_host(dir: &Dir) -> Busy {
    Busy(format!(
        "{} holds the agent lock on {}",
        Holder::describe(host_note(dir).as_ref()),
        dir.path().display()
    ))
}

/// The host lock holder's note.
fn host_note(dir: &Dir) -> Option<Holder> {
    live_note(dir, LOCK_FILE)
}

/// The note in `file`, read without taking its lock (a probe could make a job starting in that
/// instant find it taken). A holder clears its note as it lets go; a note whose process is gone
/// (killed, so it could not) is not believed.
fn live_note(dir: &Dir, file: &str) -> Option<Holder> {
    let alive = |h: &Holder| h.pid != 0 && Path::new(&format!("/proc/{}", h.pid)).exists();
    dir.open_existing(file)
        .and_then(|mut f| read_note(&mut f))
        .filter(alive)
}

fn read_note(f: &mut File) -> Option<Holder> {
    let mut bytes = Vec::new();
    f.seek(SeekFrom::Start(0)).ok()?;
    f.take(4096).read_to_end(&mut bytes).ok()?;
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

    #[test]
    fn a_mirror_sync_runs_beside_host_jobs_and_one_sync_at_a_time() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let sweep = JobLock::acquire(dir.path(), "sweep")?;
        let mirrors = JobLock::mirrors(dir.path(), Duration::ZERO)?;
        let jobs: Vec<String> = JobLock::holders(dir.path())?
            .into_iter()
            .map(|h| h.job)
            .collect();
        assert_eq!(jobs, ["sweep", "mirrors"]);
        let gc = JobLock::acquire(dir.path(), "gc")
            .err()
            .context("gc beside a sweep")?;
        assert_eq!(classify(&gc), Exit::Busy);
        assert!(gc.to_string().contains("sweep (pid"), "{gc}");
        let second = JobLock::mirrors(dir.path(), Duration::ZERO)
            .err()
            .context("two syncs at once")?;
        assert_eq!(classify(&second), Exit::Busy);
        assert!(second.to_string().contains("mirrors (pid"), "{second}");
        drop((sweep, mirrors));
        assert_eq!(JobLock::holders(dir.path())?, Vec::new());
        Ok(())
    }

    #[test]
    fn one_job_at_a_time_holds_a_recipe_and_others_stay_free() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let sweep = JobLock::acquire(dir.path(), "sweep")?;
        let mirrors = JobLock::mirrors(dir.path(), Duration::ZERO)?;
        let testing = sweep.recipe("ghost", Duration::ZERO)?;
        let refused = mirrors
            .recipe("ghost", Duration::ZERO)
            .err()
            .context("ghost held twice")?;
        let text = refused.to_string();
        assert!(
            text.starts_with("busy: sweep (pid") && text.contains("holds recipe ghost"),
            "{text}"
        );
        let _other = mirrors.recipe("plausible", Duration::ZERO)?;
        // A wait ends the moment the holder lets go.
        let waiter =
            std::thread::spawn(move || mirrors.recipe("ghost", Duration::from_secs(30)).map(drop));
        drop(testing);
        waiter
            .join()
            .map_err(|_| anyhow::anyhow!("waiter panicked"))??;
        Ok(())
    }

    #[test]
    fn a_lock_file_replaced_by_a_link_is_never_followed() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me")?;
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere)?;
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state)?;
        std::os::unix::fs::symlink(&elsewhere, state.join(LOCKS_DIR))?;
        let gc = JobLock::acquire(&state, "gc")?;
        assert!(std::fs::read_dir(&elsewhere)?.next().is_none(), "followed");
        drop(gc);
        let planted = state.join(LOCKS_DIR).join("recipe.ghost.lock");
        std::os::unix::fs::symlink(&target, &planted)?;
        let sweep = JobLock::acquire(&state, "sweep")?;
        let held = sweep.recipe("ghost", Duration::ZERO)?;
        assert_eq!(std::fs::read_to_string(&target)?, "keep me");
        assert!(!std::fs::symlink_metadata(&planted)?
            .file_type()
            .is_symlink());
        drop(held);
        assert!(
            sweep.recipe("../x", Duration::ZERO).is_err(),
            "a name that is a path"
        );
        Ok(())
    }
}
