//! The keeper: how a sweep started as root runs recipe CI as a user of its own (`[sweep]
//! run_as`) while the sweep itself runs as the state directory's owner.
//!
//! Recipe CI is untrusted code. Run as the agent's user it could write the ledger, the outbox
//! and the page, and read the agent's tokens; so it runs as another user, which cannot. Only
//! root can start a process as another user, and root must not do the sweep's work in the
//! agent's directory (docs/reliability.md). So a sweep started as root splits in two before it
//! does anything: a small process stays root, the keeper ([`serve`], `cc-ci-agent internal
//! keeper`), and the sweep becomes the state directory's owner. The keeper does only what the
//! sweep asks over a socket they alone share, and only this:
//!
//! - **give**: hands directories and files the sweep made (for one run: its working directory,
//!   its results directory, the credentials it grants) to the CI user, checking each is the
//!   sweep user's own, a directory or a file with one link, by its descriptor (no path);
//! - **run**: starts a program as the CI user (its groups, group and user, the user's `HOME`),
//!   in a process group of its own, its output to the pipes the sweep passed, and says when it
//!   exits;
//! - **kill**: ends a process group it started;
//! - **clear**: ends every process of the CI user (what a CI left running in the background).
//!
//! When the sweep goes (done, killed, `kill -9`), the socket closes and the keeper ends every
//! process of the CI user, then itself. It reads no file and takes no path from the sweep but
//! the program's and its working directory's, which the CI user then runs in with its own rights.

use std::collections::BTreeSet;
use std::ffi::{CString, OsStr, OsString};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

use crate::privilege::{Account, ChildSwitch};

/// Descriptors that travel with one message at most.
const MAX_FDS: usize = 8;
/// The longest message: a command line and its environment.
const MAX_MESSAGE: usize = 1 << 20;
/// The descriptor the keeper finds its end of the socket at.
const KEEPER_FD: i32 = 3;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "kebab-case")]
enum Ask {
    /// The descriptors that come with it go to the CI user.
    Give,
    /// The descriptors are the child's stdout and stderr.
    Run {
        argv: Vec<Vec<u8>>,
        cwd: Option<Vec<u8>>,
        env: Vec<(Vec<u8>, Vec<u8>)>,
    },
    Kill {
        pid: u32,
    },
    Clear,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "kebab-case")]
enum Answer {
    Done,
    Started { pid: u32 },
    Exited { pid: u32, raw: i32 },
    Refused { why: String },
}

fn send<T: Serialize>(
    sock: BorrowedFd<'_>,
    message: &T,
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(message)?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other(
            "too many descriptors for one message",
        ));
    }
    rustix::net::sendmsg(
        sock,
        &[IoSlice::new(&bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// The next message and the descriptors that came with it; `None` when the other side closed.
/// A receive timeout that passes is an error of kind `WouldBlock`.
fn recv<T: for<'de> Deserialize<'de>>(
    sock: BorrowedFd<'_>,
) -> std::io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut bytes = vec![0u8; MAX_MESSAGE];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut bytes)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if got.bytes == 0 {
        return Ok(None);
    }
    let message = serde_json::from_slice(&bytes[..got.bytes])?;
    Ok(Some((message, fds)))
}

// ---- The sweep's side. ----

/// The sweep's end of the socket, once a keeper was started for it.
static HANDLE: OnceLock<Handle> = OnceLock::new();

struct Handle {
    sock: OwnedFd,
    /// One conversation at a time: a run holds it from start to exit.
    talking: Mutex<()>,
}

/// Starts the keeper as `runner` for a sweep that will run as `job`, while this process is
/// still root; this process keeps the other end. `program` runs the agent again.
pub fn start(program: super::Cmd, runner: &Account, job: &Account) -> Result<()> {
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    let (mine, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("cannot make the keeper's socket")?;
    let mut command = program
        .args(["internal", "keeper", "--runner", &runner.name])
        .arg("--job-uid")
        .arg(job.uid.to_string())
        .command();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&theirs);
    // SAFETY: after fork, before exec: one system call on a descriptor number.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(raw, KEEPER_FD) == KEEPER_FD {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    command
        .stdin(std::process::Stdio::null())
        .spawn()
        .context("cannot start the keeper")?;
    drop(theirs);
    HANDLE
        .set(Handle {
            sock: mine,
            talking: Mutex::new(()),
        })
        .map_err(|_| anyhow::anyhow!("a keeper was started already"))
}

/// Connects to a keeper service listening at `path` (`[sweep] keeper_socket`; on NixOS
/// `cc-ci-keeper.socket`, which starts one keeper as root for each connection, in a unit whose
/// sandbox fits a CI). The sweep then needs no root at all.
pub fn connect(path: &std::path::Path) -> Result<()> {
    use rustix::net::{socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let reach = || {
        format!(
            "cannot reach the keeper at {} ([sweep] keeper_socket; on NixOS, is \
             cc-ci-keeper.socket active?)",
            path.display()
        )
    };
    let sock = socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .with_context(reach)?;
    let addr = SocketAddrUnix::new(path).with_context(reach)?;
    rustix::net::connect(&sock, &addr).with_context(reach)?;
    HANDLE
        .set(Handle {
            sock,
            talking: Mutex::new(()),
        })
        .map_err(|_| anyhow::anyhow!("a keeper was started already"))
}

/// Whether this process has a keeper: CI runs as `[sweep] run_as` through it.
pub fn present() -> bool {
    HANDLE.get().is_some()
}

fn handle() -> Result<&'static Handle> {
    HANDLE
        .get()
        .context("no keeper: CI cannot run as another user")
}

fn lock(h: &Handle) -> MutexGuard<'_, ()> {
    h.talking
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Gives `fds` (directories and files this process made) to the CI user.
pub fn give(fds: &[BorrowedFd<'_>]) -> Result<()> {
    let h = handle()?;
    let _talking = lock(h);
    for chunk in fds.chunks(MAX_FDS) {
        send(h.sock.as_fd(), &Ask::Give, chunk)?;
        expect_done(h)?;
    }
    Ok(())
}

/// Ends every process of the CI user.
pub fn clear() -> Result<()> {
    let h = handle()?;
    let _talking = lock(h);
    send(h.sock.as_fd(), &Ask::Clear, &[])?;
    expect_done(h)
}

fn expect_done(h: &Handle) -> Result<()> {
    match recv::<Answer>(h.sock.as_fd())? {
        Some((Answer::Done, _)) => Ok(()),
        Some((Answer::Refused { why }, _)) => bail!("the keeper refused: {why}"),
        other => bail!("the keeper answered {other:?}"),
    }
}

/// A program the keeper started for this process, until it has exited.
pub struct Kept {
    pub pid: u32,
    _talking: MutexGuard<'static, ()>,
    sock: BorrowedFd<'static>,
}

/// Starts `argv` as the CI user in `cwd` with exactly `env`, its output to `stdout`/`stderr`.
pub fn run(
    argv: &[OsString],
    cwd: Option<&std::path::Path>,
    env: &[(OsString, OsString)],
    (stdout, stderr): (OwnedFd, OwnedFd),
) -> Result<Kept, std::io::Error> {
    let h = handle().map_err(std::io::Error::other)?;
    let talking = lock(h);
    let ask = Ask::Run {
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        cwd: cwd.map(|c| c.as_os_str().as_bytes().to_vec()),
        env: env
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
    };
    send(h.sock.as_fd(), &ask, &[stdout.as_fd(), stderr.as_fd()])?;
    drop((stdout, stderr));
    match recv::<Answer>(h.sock.as_fd())? {
        Some((Answer::Started { pid }, _)) => Ok(Kept {
            pid,
            _talking: talking,
            sock: h.sock.as_fd(),
        }),
        Some((Answer::Refused { why }, _)) => Err(std::io::Error::other(why)),
        other => Err(std::io::Error::other(format!(
            "the keeper answered {other:?}"
        ))),
    }
}

impl Kept {
    /// Its exit status, once it exits before `until` (`None`: wait as long as it takes);
    /// `Ok(None)` when `until` came first.
    pub fn wait(&self, until: Option<Instant>) -> std::io::Result<Option<ExitStatus>> {
        loop {
            let timeout = match until {
                Some(t) => {
                    let left = t.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    Some(left.max(Duration::from_millis(1)))
                }
                None => None,
            };
            rustix::net::sockopt::set_socket_timeout(
                self.sock,
                rustix::net::sockopt::Timeout::Recv,
                timeout,
            )?;
            match recv::<Answer>(self.sock) {
                Ok(Some((Answer::Exited { pid, raw }, _))) if pid == self.pid => {
                    return Ok(Some(ExitStatus::from_raw(raw)));
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err(std::io::Error::other("the keeper is gone")),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Ends its process group (and so it, and what it started there).
    pub fn kill(&self) {
        let _ = send(self.sock, &Ask::Kill { pid: self.pid }, &[]);
    }
}

// ---- The keeper's side. ----

/// The user a keeper serves: the one the sweep runs as (the state directory's owner).
#[derive(Debug, Clone)]
pub enum JobUser {
    /// Given by the sweep that started the keeper itself.
    Uid(u32),
    /// Given by a keeper service's unit, which cannot know the number.
    Name(String),
}

/// `cc-ci-agent internal keeper`: serves the sweep on descriptor 3 until it goes: the socket a
/// sweep started as root made for it (`start`), or one connection systemd accepted for it
/// (`Accept=yes`, `connect`). Only root or the job user may be at the other end.
pub fn serve(runner_name: &str, job: &JobUser) -> Result<()> {
    anyhow::ensure!(
        crate::privilege::is_root(),
        "the keeper runs as root, started by a sweep or by cc-ci-keeper.socket"
    );
    let runner = Account::by_name(runner_name).map_err(anyhow::Error::msg)?;
    let job_uid = match job {
        JobUser::Uid(uid) => *uid,
        JobUser::Name(name) => Account::by_name(name).map_err(anyhow::Error::msg)?.uid,
    };
    anyhow::ensure!(
        runner.uid != 0 && runner.uid != job_uid,
        "[sweep] run_as must name a user other than root and the agent's own"
    );
    // SAFETY: the descriptor this process was started with for this alone.
    let sock: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(KEEPER_FD) };
    let peer = rustix::net::sockopt::socket_peercred(&sock)
        .context("descriptor 3 is not the sweep's socket")?;
    let peer_uid = peer.uid.as_raw();
    anyhow::ensure!(
        peer_uid == 0 || peer_uid == job_uid,
        "refused: uid {peer_uid} is neither root nor the sweep's user (uid {job_uid})"
    );
    let keeper = Keeper {
        sock: Arc::new(sock),
        runner,
        job_uid,
        running: Arc::new(Mutex::new(BTreeSet::new())),
    };
    while let Ok(Some((ask, fds))) = recv::<Ask>(keeper.sock.as_fd()) {
        if let Some(answer) = keeper.answer(ask, fds) {
            send(keeper.sock.as_fd(), &answer, &[])?;
        }
    }
    // The sweep is gone: nothing of the CI user's outlives it.
    let running: Vec<u32> = keeper.running().iter().copied().collect();
    for pid in running {
        kill_group(pid);
    }
    clear_user(keeper.runner.uid);
    Ok(())
}

struct Keeper {
    sock: Arc<OwnedFd>,
    runner: Account,
    job_uid: u32,
    running: Arc<Mutex<BTreeSet<u32>>>,
}

impl Keeper {
    fn running(&self) -> MutexGuard<'_, BTreeSet<u32>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn answer(&self, ask: Ask, fds: Vec<OwnedFd>) -> Option<Answer> {
        let refused = |why: String| Some(Answer::Refused { why });
        match ask {
            Ask::Give => match fds.iter().try_for_each(|fd| self.give(fd)) {
                Ok(()) => Some(Answer::Done),
                Err(why) => refused(why),
            },
            Ask::Run { argv, cwd, env } => {
                let mut fds = fds.into_iter();
                match (fds.next(), fds.next()) {
                    (Some(out), Some(err)) => self.run(&argv, cwd, &env, (out, err)),
                    _ => refused("a run needs its stdout and stderr".into()),
                }
            }
            Ask::Kill { pid } => {
                if self.running().contains(&pid) {
                    kill_group(pid);
                }
                None
            }
            Ask::Clear => {
                clear_user(self.runner.uid);
                Some(Answer::Done)
            }
        }
    }

    /// Gives one of the sweep user's own directories, or files with one link, to the CI user.
    fn give(&self, fd: &OwnedFd) -> Result<(), String> {
        use rustix::fs::{FileType, Gid, Uid};
        let s = rustix::fs::fstat(fd).map_err(|e| e.to_string())?;
        let kind = FileType::from_raw_mode(s.st_mode);
        let shape =
            kind == FileType::Directory || (kind == FileType::RegularFile && s.st_nlink == 1);
        if s.st_uid != self.job_uid || !shape {
            return Err("only the sweep user's own directories and files are given".into());
        }
        rustix::fs::fchown(
            fd,
            Some(Uid::from_raw(self.runner.uid)),
            Some(Gid::from_raw(self.runner.gid)),
        )
        .map_err(|e| e.to_string())
    }

    fn run(
        &self,
        argv: &[Vec<u8>],
        cwd: Option<Vec<u8>>,
        env: &[(Vec<u8>, Vec<u8>)],
        (out, err): (OwnedFd, OwnedFd),
    ) -> Option<Answer> {
        let refused = |why: String| Some(Answer::Refused { why });
        let Some(program) = argv.first() else {
            return refused("no program".into());
        };
        let cwd = match cwd.map(CString::new).transpose() {
            Ok(c) => c,
            Err(_) => return refused("a working directory with a NUL in it".into()),
        };
        let mut command = std::process::Command::new(OsStr::from_bytes(program));
        command
            .args(argv[1..].iter().map(|a| OsStr::from_bytes(a)))
            .env_clear()
            .envs(
                env.iter()
                    .map(|(k, v)| (OsStr::from_bytes(k), OsStr::from_bytes(v))),
            )
            .env("HOME", &self.runner.home)
            .env("USER", &self.runner.name)
            .env("LOGNAME", &self.runner.name)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(out))
            .stderr(std::process::Stdio::from(err))
            .process_group(0);
        let switch = ChildSwitch::of(&self.runner);
        // SAFETY: after fork, before exec: raw system calls on values made before the fork. The
        // working directory is entered after the switch, with the CI user's rights alone.
        unsafe {
            command.pre_exec(move || {
                switch.apply()?;
                if let Some(dir) = &cwd {
                    if libc::chdir(dir.as_ptr()) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => return refused(e.to_string()),
        };
        let pid = child.id();
        self.running().insert(pid);
        // Said before the waiter can say it exited.
        if send(self.sock.as_fd(), &Answer::Started { pid }, &[]).is_err() {
            kill_group(pid);
        }
        let (sock, running) = (Arc::clone(&self.sock), Arc::clone(&self.running));
        std::thread::spawn(move || {
            let raw = child.wait().map(ExitStatusExt::into_raw).unwrap_or(-1);
            running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&pid);
            let _ = send(sock.as_fd(), &Answer::Exited { pid, raw }, &[]);
        });
        None
    }
}

fn kill_group(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Ends every process whose real user is `uid`, until none is left (a process that forks as it
/// dies is found on the next look), at most a hundred looks.
fn clear_user(uid: u32) {
    for _ in 0..100 {
        let mut found = false;
        for pid in processes_of(uid) {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                found = true;
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
        if !found {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The processes whose real user is `uid`, from `/proc/<pid>/status`.
fn processes_of(uid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                // A zombie has ended already: only its parent's wait is left.
                let zombie = s
                    .lines()
                    .any(|l| l.starts_with("State:") && l.contains("(zombie)"));
                !zombie
                    && s.lines()
                        .find_map(|l| l.strip_prefix("Uid:"))
                        .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok())
                        == Some(uid)
            })
        })
        .collect()
}

impl super::Cmd {
    /// The argv, working directory and environment a keeper needs to start this command.
    pub(super) fn for_keeper(&self) -> (Vec<OsString>, Option<PathBuf>, Vec<(OsString, OsString)>) {
        let command = self.command();
        let argv = std::iter::once(command.get_program().to_os_string())
            .chain(command.get_args().map(OsStr::to_os_string))
            .collect();
        let env = command
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_os_string(), v?.to_os_string())))
            .collect();
        (argv, self.cwd.clone(), env)
    }
}
