//! File writes that survive `kill -9` and power loss (a reader sees the old file or the new one),
//! and file access that a hostile co-tenant cannot redirect.
//!
//! Recipe CI runs as the agent's user and can write the state directory that root jobs (the
//! deploy, an operator's `sudo cc-ci-agent ...`) also write. So everything here works relative to
//! an open directory: temporaries get unpredictable names and are created with
//! `O_EXCL|O_NOFOLLOW`, owners are changed with `fchown` on the open file, and nothing follows a
//! link it did not make. docs/reliability.md says which user may write what.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// An open directory: every name below is resolved against it, never through a path again.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// What is found under a name, without following a link.
struct Found {
    kind: FileType,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
}

impl Dir {
    /// Opens `path` as a directory. The path itself is configuration (root's or the operator's), so
    /// a link in it is followed; what is inside is not.
    pub fn open(path: &Path) -> Result<Self> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open directory {}", path.display()))?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The parent directory of `path` and the file name in it.
    pub fn of_file(path: &Path) -> Result<(Self, String)> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no usable file name", path.display()))?;
        Ok((Self::open(dir)?, name.to_string()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The directory's owner and group.
    pub fn owner(&self) -> Result<(u32, u32)> {
        let s = rustix::fs::fstat(&self.fd)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        Ok((s.st_uid, s.st_gid))
    }

    /// Refuses a directory that anyone but root could write: where root keeps what it later
    /// trusts (the deploy journal).
    pub fn check_root_only(&self) -> Result<(), String> {
        let s = rustix::fs::fstat(&self.fd).map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mode = s.st_mode & 0o7777;
        if s.st_uid == 0 && mode & 0o022 == 0 {
            return Ok(());
        }
        Err(format!(
            "{} can be written by another user (owner uid {}, mode {mode:04o})",
            self.path.display(),
            s.st_uid
        ))
    }

    fn find(&self, name: &str) -> Option<Found> {
        let s = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        Some(Found {
            kind: FileType::from_raw_mode(s.st_mode),
            mode: s.st_mode & 0o7777,
            uid: s.st_uid,
            gid: s.st_gid,
            size: u64::try_from(s.st_size).unwrap_or_default(),
        })
    }

    /// Opens (creating if missing) the regular file `name` for reading and writing, never through a
    /// link, a FIFO or a device. A new file gets `mode` and, when root creates it, the directory's
    /// owner. `None` when something else stands at that name.
    pub fn open_own_file(&self, name: &str, mode: u32) -> Result<Option<File>> {
        let flags = OFlags::RDWR
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::CLOEXEC
            | OFlags::NOCTTY;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => fd,
            // ELOOP: a link stands there; ENXIO: a FIFO or socket without a peer.
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NXIO) => return Ok(None),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot open {}", self.path.join(name).display()))
            }
        };
        let s = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(s.st_mode) != FileType::RegularFile || s.st_nlink != 1 {
            return Ok(None);
        }
        rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
        let (uid, gid) = self.owner()?;
        give(&fd, uid, gid);
        Ok(Some(File::from(fd)))
    }

    /// Opens (creating if missing) the subdirectory `name`, never through a link: what stands at
    /// the name must be a directory. A new one gets `mode` and, when root creates it, this
    /// directory's owner.
    pub fn subdir(&self, name: &str, mode: u32) -> Result<Dir> {
        let path = self.path.join(name);
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => anyhow::bail!(
                "{} is not a directory (a link or a file stands there): remove it",
                path.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        let (uid, gid) = self.owner()?;
        give(&fd, uid, gid);
        Ok(Dir { fd, path })
    }

    /// Opens the existing regular file `name` for reading, never through a link; `None` when
    /// missing or something else stands there.
    pub fn open_existing(&self, name: &str) -> Option<File> {
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::empty()).ok()?;
        let s = rustix::fs::fstat(&fd).ok()?;
        (FileType::from_raw_mode(s.st_mode) == FileType::RegularFile).then(|| File::from(fd))
    }

    /// Opens the existing subdirectory `name`, never through a link; `None` when there is none.
    pub fn existing_subdir(&self, name: &str) -> Option<Dir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::empty()).ok()?;
        Some(Dir {
            fd,
            path: self.path.join(name),
        })
    }

    /// Whether `name` still names the very file `file` is open on (not a replacement).
    pub fn names(&self, name: &str, file: &File) -> bool {
        let (Ok(here), Ok(open)) = (
            rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW),
            rustix::fs::fstat(file),
        ) else {
            return false;
        };
        (here.st_dev, here.st_ino) == (open.st_dev, open.st_ino)
    }

    /// Removes the entry `name` (a file or a link, never what a link points to).
    pub fn remove(&self, name: &str) -> Result<()> {
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())
            .with_context(|| format!("cannot remove {}", self.path.join(name).display()))
    }

    /// Writes `bytes` as `name` atomically: a temporary beside it, synced, renamed over it, and the
    /// directory synced. An existing regular file keeps its permission bits (never setuid,
    /// setgid or sticky), and (when root writes) its owner and group; a new file, or one
    /// replacing a link, gets `mode` and the directory's owner. For a file someone edits.
    pub fn write_atomic(&self, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let (mode, uid, gid) = match self.find(name) {
            Some(f) if f.kind == FileType::RegularFile => (f.mode & 0o777, f.uid, f.gid),
            _ => {
                let (uid, gid) = self.owner()?;
                (mode, uid, gid)
            }
        };
        self.replace(name, bytes, mode, uid, gid)
    }

    /// [`Self::write_atomic`] for a file the agent publishes (a report, metrics): always `mode`
    /// and the directory's owner, whatever is at the name. A hard link planted there (to a
    /// root-owned setuid file, say) lends the new file nothing.
    pub fn publish(&self, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let (uid, gid) = self.owner()?;
        self.replace(name, bytes, mode, uid, gid)
    }

    fn replace(&self, name: &str, bytes: &[u8], mode: u32, uid: u32, gid: u32) -> Result<()> {
        let target = self.path.join(name);
        let (tmp, fd) = self.create_temporary(name, mode)?;
        let result = (|| -> Result<()> {
            give(&fd, uid, gid);
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
            let mut file = File::from(fd);
            file.write_all(bytes)
                .with_context(|| format!("cannot write {}", target.display()))?;
            file.sync_all()
                .with_context(|| format!("cannot sync {}", target.display()))?;
            rustix::fs::renameat(&self.fd, &tmp, &self.fd, name)
                .with_context(|| format!("cannot replace {}", target.display()))?;
            rustix::fs::fsync(&self.fd)
                .with_context(|| format!("cannot sync {}", self.path.display()))
        })();
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, &tmp, AtFlags::empty());
        } else {
            self.remove_orphaned_temporaries(name);
        }
        result
    }

    /// A new temporary `.<name>.tmp-<pid>-<unique>`, made with `O_EXCL|O_NOFOLLOW`: whatever someone
    /// planted at a name, we never open it.
    fn create_temporary(&self, name: &str, mode: u32) -> Result<(String, OwnedFd)> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut last = None;
        for _ in 0..16 {
            let tmp = format!(".{name}.tmp-{}-{:016x}", std::process::id(), unique());
            match rustix::fs::openat(
                &self.fd,
                tmp.as_str(),
                flags,
                Mode::from_raw_mode(mode & 0o700),
            ) {
                Ok(fd) => return Ok((tmp, fd)),
                Err(rustix::io::Errno::EXIST) => last = Some(rustix::io::Errno::EXIST),
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot create a temporary for {}",
                            self.path.join(name).display()
                        )
                    })
                }
            }
        }
        Err(anyhow::anyhow!(
            "cannot create a temporary for {}: {:?}",
            self.path.join(name).display(),
            last
        ))
    }

    /// Removes `.<name>.tmp-<pid>[-<unique>]` files that writers killed mid-write left behind
    /// (`kill -9`, a stop signal): those whose process is gone. A live writer's file is left
    /// alone. Unlinking never follows a link.
    fn remove_orphaned_temporaries(&self, name: &str) {
        let prefix = format!(".{name}.tmp-");
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or_default();
            let alive = pid
                .parse::<u32>()
                .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                let _ = rustix::fs::unlinkat(&self.fd, file.as_os_str(), AtFlags::empty());
            }
        }
    }
}

impl Dir {
    /// Refuses a directory that a user other than the one running the agent (or root) could
    /// swap files in: group- or world-writable without the sticky bit, or owned by someone else
    /// while the agent is not root. Root may work in the job user's directory: everything it does
    /// there goes through this handle, which follows no link.
    pub fn check_private(&self) -> Result<(), String> {
        let s = rustix::fs::fstat(&self.fd).map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mode = s.st_mode & 0o7777;
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(format!(
                "{} is writable by its group or by others (mode {mode:04o}), so another user could \
                 replace the agent's files in it: `chmod go-w` it",
                self.path.display()
            ));
        }
        let me = rustix::process::geteuid().as_raw();
        if me != 0 && s.st_uid != me && s.st_uid != 0 {
            return Err(format!(
                "{} belongs to uid {}, and this agent runs as uid {me}: run it as the directory's \
                 owner (the units' user), or as root",
                self.path.display(),
                s.st_uid
            ));
        }
        Ok(())
    }

    /// Gives the regular file `name` the directory's owner, through the open file (a link or a
    /// file with other hard links is left alone). Only root can; for anyone else a no-op.
    ///
    /// It opens the file only when its owner differs: a file SQLite has open must not be opened
    /// and closed beside it, which would drop SQLite's POSIX locks.
    pub fn adopt(&self, name: &str) {
        let Ok((uid, gid)) = self.owner() else {
            return;
        };
        match self.find(name) {
            Some(f) if f.kind == FileType::RegularFile && (f.uid, f.gid) != (uid, gid) => {}
            _ => return,
        }
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let Ok(fd) = rustix::fs::openat(&self.fd, name, flags, Mode::empty()) else {
            return;
        };
        let Ok(s) = rustix::fs::fstat(&fd) else {
            return;
        };
        let regular = FileType::from_raw_mode(s.st_mode) == FileType::RegularFile;
        if regular && s.st_nlink == 1 && (s.st_uid, s.st_gid) != (uid, gid) {
            give(&fd, uid, gid);
        }
    }

    /// Gives the regular file `name` exactly the permission bits `mode`, when this process owns
    /// it and they differ (a file made by an older agent, or under a wide umask); a link or a
    /// file with other hard links is left alone.
    ///
    /// Like [`Self::adopt`], it opens the file only when there is something to change: closing a
    /// descriptor of a file SQLite has open would drop SQLite's locks on it.
    pub fn restrict_mode(&self, name: &str, mode: u32) {
        let me = rustix::process::geteuid().as_raw();
        match self.find(name) {
            Some(f) if f.kind == FileType::RegularFile && f.uid == me && f.mode != mode => {}
            _ => return,
        }
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let Ok(fd) = rustix::fs::openat(&self.fd, name, flags, Mode::empty()) else {
            return;
        };
        let regular = rustix::fs::fstat(&fd).is_ok_and(|s| {
            FileType::from_raw_mode(s.st_mode) == FileType::RegularFile && s.st_nlink == 1
        });
        if regular {
            let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode));
        }
    }

    /// Whether a directory (not a link to one) stands at `name`.
    pub fn has_subdir(&self, name: &str) -> bool {
        self.find(name)
            .is_some_and(|f| f.kind == FileType::Directory)
    }

    /// A new subdirectory `<prefix>-<pid>-<unpredictable>` with `mode` (whatever the umask),
    /// made here and opened without following anything: never one that stood there before.
    pub fn fresh_subdir(&self, prefix: &str, mode: u32) -> Result<(String, Dir)> {
        for _ in 0..16 {
            let name = format!("{prefix}-{}-{:016x}", std::process::id(), unique());
            match rustix::fs::mkdirat(&self.fd, name.as_str(), Mode::from_raw_mode(0o700)) {
                Err(rustix::io::Errno::EXIST) => continue,
                made => made.with_context(|| {
                    format!("cannot make a directory in {}", self.path.display())
                })?,
            }
            let dir = self.opened_subdir(&name)?;
            rustix::fs::fchmod(&dir.fd, Mode::from_raw_mode(mode))?;
            return Ok((name, dir));
        }
        anyhow::bail!(
            "no free name for a new directory in {}",
            self.path.display()
        )
    }

    /// A new subdirectory `name` with `mode`; it must not exist.
    pub fn new_subdir(&self, name: &str, mode: u32) -> Result<Dir> {
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700))
            .with_context(|| format!("cannot create {}", self.path.join(name).display()))?;
        let dir = self.opened_subdir(name)?;
        rustix::fs::fchmod(&dir.fd, Mode::from_raw_mode(mode))?;
        Ok(dir)
    }

    fn opened_subdir(&self, name: &str) -> Result<Dir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::empty())
            .with_context(|| format!("cannot open {}", self.path.join(name).display()))?;
        Ok(Dir {
            fd,
            path: self.path.join(name),
        })
    }

    /// Writes a new file `name` (it must not exist; nothing at the name is followed) with
    /// `bytes` and exactly `mode`. For a directory of the writer's own, filled then swapped in
    /// whole: no file of it needs a rename or a sync of its own.
    pub fn create_new(&self, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode & 0o700))
            .with_context(|| format!("cannot create {}", self.path.join(name).display()))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
        File::from(fd)
            .write_all(bytes)
            .with_context(|| format!("cannot write {}", self.path.join(name).display()))
    }

    /// Puts `from` at `to` in one rename: when `to` exists (whatever stands there) the two are
    /// exchanged, and `from` then names what was at `to`. Whether something was there.
    pub fn swap_in(&self, from: &str, to: &str) -> Result<bool> {
        use rustix::fs::{renameat_with, RenameFlags};
        let target = self.path.join(to);
        loop {
            match renameat_with(&self.fd, from, &self.fd, to, RenameFlags::EXCHANGE) {
                Ok(()) => return Ok(true),
                Err(rustix::io::Errno::NOENT) if self.find(to).is_none() => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot put {} in place", target.display()))
                }
            }
            match renameat_with(&self.fd, from, &self.fd, to, RenameFlags::NOREPLACE) {
                Ok(()) => return Ok(false),
                // Someone made `to` in between: exchange with it after all.
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot put {} in place", target.display()))
                }
            }
        }
    }

    /// Removes the entry `name` and, when it is a directory, all it holds, never following a
    /// link (a link is removed as a link).
    pub fn remove_tree(&self, name: &str) -> Result<()> {
        match self.find(name) {
            None => Ok(()),
            Some(f) if f.kind == FileType::Directory => {
                // An empty directory goes without being listed (one another user emptied, which
                // this process may not be able to read).
                match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
                    Ok(()) => Ok(()),
                    Err(_) => std::fs::remove_dir_all(self.path.join(name)).with_context(|| {
                        format!("cannot remove {}", self.path.join(name).display())
                    }),
                }
            }
            Some(_) => self.remove(name),
        }
    }

    /// Removes what writers killed mid-write left: entries `<prefix>-<pid>-...` whose process is
    /// gone (`kill -9`, a power cut). A live writer's is left alone.
    pub fn remove_orphans(&self, prefix: &str) {
        let start = format!("{prefix}-");
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&start)) else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or_default();
            let alive = pid
                .parse::<u32>()
                .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                if let Some(name) = name.to_str() {
                    let _ = self.remove_tree(name);
                }
            }
        }
    }

    /// The size of the regular file `name`, `None` when missing; an error when something other than
    /// a regular file stands there.
    pub fn regular_size(&self, name: &str) -> Result<Option<u64>, String> {
        match self.find(name) {
            None => Ok(None),
            Some(f) if f.kind == FileType::RegularFile => Ok(Some(f.size)),
            Some(_) => Err(format!(
                "{} is not a regular file (a link or something else stands there)",
                self.path.join(name).display()
            )),
        }
    }
}

/// Hands a file to `uid:gid` when root writes it (a root job in the `cc-ci` user's directory); for
/// anyone else it keeps the group where the writer may, and quietly does nothing otherwise.
fn give(fd: &OwnedFd, uid: u32, gid: u32) {
    use rustix::fs::{Gid, Uid};
    let root = rustix::process::geteuid().is_root();
    let owner = root.then(|| Uid::from_raw(uid));
    if let Err(e) = rustix::fs::fchown(fd, owner, Some(Gid::from_raw(gid))) {
        if root {
            tracing::debug!("cannot hand a file to {uid}:{gid}: {e}");
        }
    }
}

/// Unpredictable enough that nobody plants a file at the name ahead of us; `O_EXCL` makes a guess
/// that does land harmless anyway.
fn unique() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let stack = &nanos as *const u64 as u64;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // splitmix64 over what differs between processes, threads and calls.
    let mut z = nanos ^ stack.rotate_left(32) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A new directory under `parent` that only its owner can enter, `PREFIX-<unpredictable>`:
/// created here, never an existing one taken over, so nothing planted beforehand is used.
pub fn private_dir(parent: &Path, prefix: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    for _ in 0..16 {
        let dir = parent.join(format!("{prefix}-{:016x}", unique()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            made => return made.map(|()| dir),
        }
    }
    Err(std::io::Error::other(format!(
        "no free name for a new directory in {}",
        parent.display()
    )))
}

/// [`Dir::write_atomic`] for a file named by path: its directory is opened once.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let (dir, name) = Dir::of_file(path)?;
    dir.write_atomic(&name, bytes, mode)
}

/// [`Dir::publish`] for a file named by path.
pub fn publish(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let (dir, name) = Dir::of_file(path)?;
    dir.publish(&name, bytes, mode)
}

/// Why a file could not be read as a small regular file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The I/O error is in the message, not a `source`: chained, it would be said twice.
    #[error("cannot read {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is not a regular file ({kind})")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path} is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
}

/// Reads a regular file of at most `limit` bytes. Never blocks on a FIFO or a device, never reads
/// without end (`/dev/zero`); with `follow = false` a link is refused too.
pub fn read_regular(path: &Path, limit: u64, follow: bool) -> Result<Vec<u8>, ReadError> {
    let io = |error: std::io::Error| ReadError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| match e {
        rustix::io::Errno::LOOP if !follow => ReadError::NotRegular {
            path: path.to_path_buf(),
            kind: "a symbolic link",
        },
        e => io(e.into()),
    })?;
    let s = rustix::fs::fstat(&fd).map_err(|e| io(e.into()))?;
    let kind = match FileType::from_raw_mode(s.st_mode) {
        FileType::RegularFile => None,
        FileType::Directory => Some("a directory"),
        FileType::Fifo => Some("a FIFO"),
        FileType::Socket => Some("a socket"),
        FileType::CharacterDevice | FileType::BlockDevice => Some("a device"),
        _ => Some("not a plain file"),
    };
    if let Some(kind) = kind {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    let too_large = || ReadError::TooLarge {
        path: path.to_path_buf(),
        limit,
    };
    if u64::try_from(s.st_size).unwrap_or(u64::MAX) > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    File::from(fd)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64> {
    let s = rustix::fs::statvfs(path)
        .with_context(|| format!("cannot read free space of {}", path.display()))?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// Threads of one process writing one file at once: each temporary is its own, so none
    /// fails and the file is always one whole write.
    #[test]
    fn threads_writing_one_file_never_collide() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..8)
                .map(|t| {
                    let path = &path;
                    scope.spawn(move || -> Result<()> {
                        for i in 0..50 {
                            write_atomic(path, format!("{t}-{i}").repeat(100).as_bytes(), 0o644)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            writers
                .into_iter()
                .try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("a writer panicked"))?)
        })?;
        let text = std::fs::read_to_string(&path)?;
        let piece = &text[..text.len() / 100];
        assert_eq!(text, piece.repeat(100), "a torn or mixed file");
        Ok(())
    }

    /// A published file over a hard link to a setuid file: it is 0644, the file is untouched;
    /// an edited file keeps its permission bits but never a setuid bit.
    #[test]
    fn a_published_file_takes_no_mode_from_a_planted_hard_link() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let tool = dir.path().join("tool");
        fs::write(&tool, b"#!/bin/sh\n")?;
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o4755))?;
        let report = dir.path().join("deploy.json");
        fs::hard_link(&tool, &report)?;
        publish(&report, b"{}", 0o644)?;
        assert_eq!(fs::metadata(&report)?.permissions().mode() & 0o7777, 0o644);
        assert_eq!(fs::metadata(&tool)?.permissions().mode() & 0o7777, 0o4755);
        assert_eq!(fs::read(&tool)?, b"#!/bin/sh\n");
        let edited = dir.path().join("e.toml");
        fs::hard_link(&tool, &edited)?;
        write_atomic(&edited, b"x", 0o644)?;
        assert_eq!(fs::metadata(&edited)?.permissions().mode() & 0o7777, 0o755);
        Ok(())
    }

    #[test]
    fn replaces_and_keeps_mode() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("f.toml");
        write_atomic(&p, b"one", 0o644)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600))?;
        write_atomic(&p, b"two", 0o644)?;
        assert_eq!(fs::read(&p)?, b"two");
        assert_eq!(fs::metadata(&p)?.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::read_dir(dir.path())?.count(),
            1,
            "no temporary file left behind"
        );
        Ok(())
    }

    #[test]
    fn temporaries_of_killed_writers_are_cleared_and_a_live_ones_kept() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("health.json");
        // pid_max is at most 2^22: this writer cannot be alive.
        let dead = dir.path().join(".health.json.tmp-4999999");
        let live = dir.path().join(format!(
            ".health.json.tmp-{}",
            std::os::unix::process::parent_id()
        ));
        let other = dir.path().join(".other.json.tmp-4999999");
        for f in [&dead, &live, &other] {
            fs::write(f, b"half")?;
        }
        write_atomic(&p, b"{}", 0o644)?;
        assert!(!dead.exists() && live.exists() && other.exists());
        Ok(())
    }

    #[test]
    fn failure_leaves_target_alone() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("missing-dir").join("f");
        assert!(write_atomic(&p, b"x", 0o644).is_err());
        assert!(!p.exists());
        Ok(())
    }
}
