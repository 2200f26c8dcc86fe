//! The one place that starts programs. Argv only (never a shell), an optional timeout, stdout and
//! stderr captured; a failure carries the program, its exit status and the tail of its stderr.
//! Secrets go to children through the environment ([`Cmd::env`]), never through argv.
//!
//! Each child leads a process group of its own, so that a timeout, or the agent being stopped
//! (see `crate::signals`), ends the child and everything it started (a CI script's own children),
//! not the child alone.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};

pub mod keeper;

/// Process groups of the children running now (each child's pid is its group's id).
static RUNNING: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Sends `signal` to every running child's process group: the agent is stopping.
pub fn signal_children(signal: Signal) {
    let groups = RUNNING.lock().map(|g| g.clone()).unwrap_or_default();
    for group in groups {
        if let Some(pid) = Pid::from_raw(group) {
            let _ = kill_process_group(pid, signal);
        }
    }
}

/// Registers a child's group while it runs; unregisters however the wait ends.
struct Running(i32);

impl Running {
    fn new(child: &Child) -> Self {
        let group = i32::try_from(child.id()).unwrap_or(0);
        if let Ok(mut g) = RUNNING.lock() {
            g.insert(group);
        }
        Self(group)
    }

    /// Kills the whole group: the child and whatever it started.
    fn kill(&self) {
        if let Some(pid) = Pid::from_raw(self.0) {
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut g) = RUNNING.lock() {
            g.remove(&self.0);
        }
    }
}

/// How much of a failed program's stderr an error keeps.
const STDERR_TAIL: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} did not finish within {}s and was killed", timeout.as_secs())]
    Timeout { program: String, timeout: Duration },
    #[error("{program} printed more than {limit} bytes, more than it may: not read")]
    TooMuchOutput { program: String, limit: u64 },
    #[error("{program} failed ({status}){}", stderr_suffix(stderr))]
    Failed {
        program: String,
        status: String,
        code: Option<i32>,
        stderr: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// What a child given a clean environment ([`Cmd::clean_env`]) keeps of the agent's: enough to
/// find programs, name files and speak a locale. Never `CREDENTIALS_DIRECTORY` or a token.
pub const BASE_ENV: [&str; 11] = [
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TERM",
    "NIX_PATH",
];

#[derive(Debug, Clone)]
pub struct Cmd {
    program: PathBuf,
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    /// `Some`: the child starts from an empty environment plus [`BASE_ENV`] and these names.
    clean_env: Option<Vec<String>>,
    timeout: Option<Duration>,
    stdin: Option<Vec<u8>>,
    /// Bytes of stdout kept at most ([`Cmd::stdout_limit`]).
    stdout_limit: Option<u64>,
    /// Tokens taken out of a logged run's output before it reaches its log ([`Cmd::redact`]).
    redact: crate::secrets::Known,
    /// The user the child becomes before it runs ([`Cmd::user`]).
    user: Option<crate::privilege::Account>,
    /// Started by the keeper, as the CI user ([`Cmd::as_ci_user`]).
    kept: bool,
}

/// How this program was started: its executable and the arguments before the agent's own (the
/// demo runs the agent as `cc-ci-demo agent ARGS`), for a child that is the agent again.
static THIS_PROGRAM: std::sync::OnceLock<(PathBuf, Vec<OsString>)> = std::sync::OnceLock::new();

/// Notes how the agent was started: `args` are the agent's own arguments, the program's name
/// first, as `cli::main_from` got them.
pub fn note_this_program(args: &[OsString]) {
    let all: Vec<OsString> = std::env::args_os().collect();
    let own = args.len().saturating_sub(1);
    let prefix = if all.len() > own && all[all.len() - own..] == args[1..] {
        all[1..all.len() - own].to_vec()
    } else {
        Vec::new()
    };
    if let Ok(exe) = std::env::current_exe() {
        let _ = THIS_PROGRAM.set((exe, prefix));
    }
}

/// A command that runs this agent again with `args`; `None` when how it was started is unknown.
pub fn this_program<I, S>(args: I) -> Option<Cmd>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let (exe, prefix) = THIS_PROGRAM.get()?;
    Some(Cmd::new(exe).args(prefix).args(args))
}

impl Cmd {
    pub fn new(program: impl AsRef<Path>) -> Self {
        Self {
            program: program.as_ref().to_path_buf(),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            clean_env: None,
            timeout: None,
            stdin: None,
            stdout_limit: None,
            redact: crate::secrets::Known::default(),
            user: None,
            kept: false,
        }
    }

    /// Recipe CI's own user runs it (`[sweep] run_as`): the keeper starts it, since this process
    /// cannot ([`keeper`]). Only its output comes back; it gets no stdin. Where this process has
    /// no keeper (no `run_as`), it runs as any other command.
    pub fn as_ci_user(mut self) -> Self {
        self.kept = keeper::present();
        self
    }

    /// The child becomes `account` (its groups, group and user, for good) before it runs: how
    /// root starts work that belongs to another user. Needs root.
    pub fn user(mut self, account: crate::privilege::Account) -> Self {
        self.user = Some(account);
        self
    }

    /// [`Cmd::output_logged`] writes the output with these tokens replaced, as it comes: the
    /// log, and the tail the run's record keeps, never hold one.
    pub fn redact(mut self, known: crate::secrets::Known) -> Self {
        self.redact = known;
        self
    }

    /// At most `bytes` of stdout are held; a program that prints more is an error
    /// ([`ProcessError::TooMuchOutput`]) and what it printed beyond them is read and dropped,
    /// so memory stays bounded whatever a remote makes it print.
    pub fn stdout_limit(mut self, bytes: u64) -> Self {
        self.stdout_limit = Some(bytes);
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// For code the agent does not trust (recipe CI, hooks, checks): the child sees none of the
    /// agent's environment but [`BASE_ENV`], the names in `pass`, and what [`Cmd::env`] sets.
    pub fn clean_env(mut self, pass: &[String]) -> Self {
        self.clean_env = Some(pass.to_vec());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    /// The command as a person would read it, for logs and errors (argv holds no secrets); a
    /// long one (a push of hundreds of refs) is cut.
    pub fn display(&self) -> String {
        const MAX: usize = 300;
        let full = std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        match full.char_indices().nth(MAX) {
            Some((i, _)) => format!("{}... ({} arguments)", &full[..i], self.args.len()),
            None => full,
        }
    }

    /// The program, its arguments, directory and environment, in a process group of its own.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .process_group(0);
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        if let Some(pass) = &self.clean_env {
            command.env_clear();
            let names = BASE_ENV
                .iter()
                .copied()
                .chain(pass.iter().map(String::as_str));
            for name in names {
                if let Some(v) = std::env::var_os(name) {
                    command.env(name, v);
                }
            }
        }
        for (k, v) in &self.env {
            command.env(k, v);
        }
        if let Some(account) = self.user.clone() {
            command
                .env("HOME", &account.home)
                .env("USER", &account.name)
                .env("LOGNAME", &account.name);
            let switch = crate::privilege::ChildSwitch::of(&account);
            // SAFETY: after fork, in the child, before exec: raw system calls on values made
            // before the fork, nothing allocated or locked.
            unsafe {
                command.pre_exec(move || switch.apply());
            }
        }
        command
    }

    /// Runs to completion (or timeout) whatever its exit status.
    pub fn output(&self) -> Result<Finished, ProcessError> {
        let program = self.display();
        tracing::debug!(command = %program, "running");
        let (mut started, out, err) = self
            .start()
            .map_err(|e| self.wait_error(&program, WaitError::Io(e)))?;
        let (closed_tx, closed) = std::sync::mpsc::channel();
        let limit = self.stdout_limit.unwrap_or(u64::MAX);
        let stdout = drain(Some(out), limit, closed_tx.clone());
        let stderr = drain(Some(err), u64::MAX, closed_tx);
        let status = started
            .wait(&closed, self.timeout)
            .map_err(|e| self.wait_error(&program, e))?;
        let (stdout, over) = stdout.join().unwrap_or_default();
        if over {
            return Err(ProcessError::TooMuchOutput { program, limit });
        }
        Ok(Finished {
            status,
            stdout,
            stderr: stderr.join().unwrap_or_default().0,
        })
    }

    /// Runs to completion (or timeout) with stdout and stderr going to `log` as they come, in
    /// arrival order: at most `cap` bytes of them, then the last [`LOG_TAIL`] bytes. Nothing is
    /// held in memory but that tail, so a CI that prints gigabytes costs no more than one that
    /// prints a line.
    pub fn output_logged(&self, log: std::fs::File, cap: u64) -> Result<Logged, ProcessError> {
        let program = self.display();
        tracing::debug!(command = %program, "running, output to its log");
        let (mut started, out, err) = self
            .start()
            .map_err(|e| self.wait_error(&program, WaitError::Io(e)))?;
        let sink = std::sync::Arc::new(Mutex::new(LogSink::new(log, cap, self.redact.stream())));
        let (closed_tx, closed) = std::sync::mpsc::channel();
        let out = drain_to(Some(out), sink.clone(), closed_tx.clone());
        let err = drain_to(Some(err), sink.clone(), closed_tx);
        let waited = started.wait(&closed, self.timeout);
        let _ = (out.join(), err.join());
        let (tail, dropped) = match sink.lock() {
            Ok(mut s) => s.finish(),
            Err(_) => (String::new(), 0),
        };
        let status = waited.map_err(|e| self.wait_error(&program, e))?;
        Ok(Logged {
            status,
            tail,
            dropped,
        })
    }

    /// Starts the command with its stdout and stderr on pipes, and its stdin given or null:
    /// as this process's child, or as the CI user's through the keeper.
    fn start(&self) -> std::io::Result<(Started, std::fs::File, std::fs::File)> {
        if self.kept {
            if self.stdin.is_some() {
                return Err(std::io::Error::other(
                    "a command run by the keeper gets no stdin",
                ));
            }
            let pipe = || rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC);
            let ((out_r, out_w), (err_r, err_w)) = (pipe()?, pipe()?);
            let (argv, cwd, env) = self.for_keeper();
            let kept = keeper::run(&argv, cwd.as_deref(), &env, (out_w, err_w))?;
            return Ok((Started::Kept(kept), out_r.into(), err_r.into()));
        }
        let mut command = self.command();
        command
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn()?;
        let running = Running::new(&child);
        if let (Some(bytes), Some(mut pipe)) = (self.stdin.clone(), child.stdin.take()) {
            // A child that exits without reading its stdin is not an error of ours.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            });
        }
        let missing = || std::io::Error::other("no pipe to the child");
        let out = child.stdout.take().ok_or_else(missing)?;
        let err = child.stderr.take().ok_or_else(missing)?;
        let (out, err) = (OwnedFd::from(out).into(), OwnedFd::from(err).into());
        Ok((Started::Local { child, running }, out, err))
    }

    fn wait_error(&self, program: &str, e: WaitError) -> ProcessError {
        match e {
            WaitError::Timeout => ProcessError::Timeout {
                program: program.to_string(),
                timeout: self.timeout.unwrap_or_default(),
            },
            WaitError::Io(source) => ProcessError::Spawn {
                program: program.to_string(),
                source,
            },
        }
    }

    /// Runs and requires exit status 0; returns stdout.
    pub fn run(&self) -> Result<String, ProcessError> {
        let done = self.output()?;
        if done.status.success() {
            Ok(done.stdout)
        } else {
            Err(failed(self.display(), &done))
        }
    }
}

/// How much of a logged run's last output is kept for its message and the log's end.
pub const LOG_TAIL: usize = 64 * 1024;

/// A run whose output went to its log.
#[derive(Debug)]
pub struct Logged {
    pub status: ExitStatus,
    /// The last [`LOG_TAIL`] bytes of its output.
    pub tail: String,
    /// Bytes over the cap that the log does not hold.
    pub dropped: u64,
}

struct LogSink {
    file: std::fs::File,
    cap: u64,
    written: u64,
    dropped: u64,
    tail: std::collections::VecDeque<u8>,
    redactor: crate::secrets::StreamRedactor,
}

impl LogSink {
    fn new(file: std::fs::File, cap: u64, redactor: crate::secrets::StreamRedactor) -> Self {
        Self {
            file,
            cap,
            written: 0,
            dropped: 0,
            tail: std::collections::VecDeque::with_capacity(LOG_TAIL),
            redactor,
        }
    }

    /// A piece of output, its tokens taken out.
    fn take(&mut self, bytes: &[u8]) {
        let clean = self.redactor.push(bytes);
        self.keep(&clean);
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = usize::try_from(self.cap.saturating_sub(self.written)).unwrap_or(usize::MAX);
        let (kept, over) = bytes.split_at(room.min(bytes.len()));
        if !kept.is_empty() && self.file.write_all(kept).is_ok() {
            self.written += kept.len() as u64;
        }
        self.dropped += over.len() as u64;
        for &b in bytes.iter().rev().take(LOG_TAIL).rev() {
            if self.tail.len() == LOG_TAIL {
                self.tail.pop_front();
            }
            self.tail.push_back(b);
        }
    }

    /// Notes in the log what the cap left out and appends the tail; returns the tail.
    fn finish(&mut self) -> (String, u64) {
        let held = self.redactor.finish();
        self.keep(&held);
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        if self.dropped > 0 {
            let note = format!(
                "\n[cc-ci: the log keeps the first {} bytes; {} more were not kept. The last {} bytes follow.]\n",
                self.written,
                self.dropped,
                tail.len()
            );
            let _ = self.file.write_all(note.as_bytes());
            let _ = self.file.write_all(&tail);
        }
        let _ = self.file.sync_data();
        (String::from_utf8_lossy(&tail).into_owned(), self.dropped)
    }
}

fn drain_to<R: Read + Send + 'static>(
    pipe: Option<R>,
    sink: std::sync::Arc<Mutex<LogSink>>,
    closed: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if let Some(mut p) = pipe {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = p.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.take(&buf[..n]);
                }
            }
        }
        let _ = closed.send(());
    })
}

pub fn failed(program: String, done: &Finished) -> ProcessError {
    // A child's stderr can carry a remote's words (git's "remote:" lines): keep line breaks and
    // tabs, but no control character that could drive the operator's terminal.
    let printable: String = done
        .stderr
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                ' '
            } else {
                c
            }
        })
        .collect();
    let stderr = printable.trim();
    let tail = match stderr.char_indices().rev().nth(STDERR_TAIL) {
        Some((i, _)) => format!("...{}", &stderr[i..]),
        None => stderr.to_string(),
    };
    ProcessError::Failed {
        program,
        status: done.status.to_string(),
        code: done.status.code(),
        stderr: tail,
    }
}

/// Reads a pipe to its end, keeping at most `limit` bytes (whether more came is the second
/// part); says so on `closed`, since both pipes closing means the child exited (or shut them),
/// which is how `wait` learns it promptly without polling.
fn drain<R: Read + Send + 'static>(
    pipe: Option<R>,
    limit: u64,
    closed: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<(String, bool)> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut over = false;
        if let Some(mut p) = pipe {
            let _ = (&mut p).take(limit).read_to_end(&mut bytes);
            // Past the limit: read on and drop, so the child is never blocked on a full pipe.
            over = std::io::copy(&mut p, &mut std::io::sink()).is_ok_and(|n| n > 0);
        }
        let _ = closed.send(());
        (String::from_utf8_lossy(&bytes).into_owned(), over)
    })
}

enum WaitError {
    Timeout,
    Io(std::io::Error),
}

/// A started command: this process's child, or the CI user's, which the keeper started.
enum Started {
    Local { child: Child, running: Running },
    Kept(keeper::Kept),
}

impl Started {
    fn wait(
        &mut self,
        closed: &std::sync::mpsc::Receiver<()>,
        timeout: Option<Duration>,
    ) -> Result<ExitStatus, WaitError> {
        match self {
            Started::Local { child, running } => wait(child, running, closed, timeout),
            Started::Kept(kept) => wait_kept(kept, closed, timeout),
        }
    }
}

/// [`wait`] for a command the keeper started: its exit comes from the keeper, and so does its
/// end at the timeout (this process cannot signal another user's processes).
fn wait_kept(
    kept: &keeper::Kept,
    closed: &std::sync::mpsc::Receiver<()>,
    timeout: Option<Duration>,
) -> Result<ExitStatus, WaitError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut open_pipes = 2;
    let pipes_close = |open_pipes: &mut i32| {
        while *open_pipes > 0 {
            let closed_now = match deadline {
                Some(d) => closed
                    .recv_timeout(d.saturating_duration_since(Instant::now()))
                    .is_ok(),
                None => closed.recv().is_ok(),
            };
            if !closed_now {
                break;
            }
            *open_pipes -= 1;
        }
    };
    pipes_close(&mut open_pipes);
    match kept.wait(deadline).map_err(WaitError::Io)? {
        Some(status) => {
            // What it started in the background and still holds the pipes gets until the
            // deadline, then its group is ended.
            pipes_close(&mut open_pipes);
            if open_pipes > 0 {
                kept.kill();
            }
            Ok(status)
        }
        None => {
            kept.kill();
            let _ = kept.wait(None);
            Err(WaitError::Timeout)
        }
    }
}

fn wait(
    child: &mut Child,
    running: &Running,
    closed: &std::sync::mpsc::Receiver<()>,
    timeout: Option<Duration>,
) -> Result<ExitStatus, WaitError> {
    let Some(timeout) = timeout else {
        return child.wait().map_err(WaitError::Io);
    };
    let deadline = Instant::now() + timeout;
    // First until both pipes close (normally: the child exited), then poll briefly for the
    // status; a child that closes its pipes and lingers still meets the deadline.
    let mut open_pipes = 2;
    while open_pipes > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if closed.recv_timeout(left).is_err() {
            break;
        }
        open_pipes -= 1;
    }
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(status) = child.try_wait().map_err(WaitError::Io)? {
            // The child is done; whatever still holds its pipes is something it started in the
            // background. That gets until the deadline, then the group is ended, so that reading
            // the pipes ends too.
            while open_pipes > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if closed.recv_timeout(left).is_err() {
                    running.kill();
                    break;
                }
                open_pipes -= 1;
            }
            return Ok(status);
        }
        if Instant::now() >= deadline {
            running.kill();
            let _ = child.kill();
            let _ = child.wait();
            return Err(WaitError::Timeout);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Finds a program on `PATH`, as `which` does (the `which` crate: an executable regular file).
pub fn which(name: &str) -> Option<PathBuf> {
    which::which(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() -> Result<(), ProcessError> {
        let out = Cmd::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .output()?;
        assert_eq!(
            (out.code(), out.stdout.as_str(), out.stderr.as_str()),
            (Some(3), "out\n", "err\n")
        );
        Ok(())
    }

    #[test]
    fn failure_carries_program_status_and_stderr() {
        let err = Cmd::new("sh")
            .args(["-c", "echo boom >&2; exit 7"])
            .run()
            .err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.starts_with("sh -c ")
                && text.contains("exit status: 7")
                && text.ends_with(": boom"),
            "{text}"
        );
    }

    #[test]
    fn a_childs_control_characters_never_reach_the_error() {
        let err = Cmd::new("sh")
            .args([
                "-c",
                "printf 'remote: \\033]0;owned\\007\\033[2Jbad\\n\\tnext' >&2; exit 1",
            ])
            .run()
            .err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("remote:") && text.contains("bad\n\tnext"),
            "{text:?}"
        );
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
    }

    #[test]
    fn argv_is_never_a_shell() -> Result<(), ProcessError> {
        let out = Cmd::new("echo").arg("$(id); rm -rf /").run()?;
        assert_eq!(out, "$(id); rm -rf /\n");
        Ok(())
    }

    #[test]
    fn timeout_kills() {
        let start = Instant::now();
        let err = Cmd::new("sleep")
            .arg("5")
            .timeout(Duration::from_millis(100))
            .run();
        assert!(matches!(err, Err(ProcessError::Timeout { .. })));
        assert!(start.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn a_timeout_kills_what_the_child_started_too() {
        let dir = std::env::temp_dir().join(format!("cc-ci-timeout-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let pid_file = dir.join("sleep.pid");
        let err = Cmd::new("sh")
            .args(["-c", "sleep 30 & echo $! > \"$1\"; wait", "sh"])
            .arg(&pid_file)
            .timeout(Duration::from_millis(300))
            .run();
        assert!(matches!(err, Err(ProcessError::Timeout { .. })));
        let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        let deadline = Instant::now() + Duration::from_secs(5);
        let alive = |pid: &str| {
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
            })
        };
        assert!(
            !pid.trim().is_empty(),
            "the child never wrote its grandchild's pid"
        );
        while alive(&pid) {
            assert!(
                Instant::now() < deadline,
                "the grandchild {pid} outlived the timeout"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_background_grandchild_holding_the_pipes_does_not_outlast_the_timeout() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let out = Cmd::new("sh")
                .args(["-c", "sleep 30 & echo started"])
                .timeout(Duration::from_millis(500))
                .output();
            let _ = tx.send(out.map(|o| (o.status.success(), o.stdout)));
        });
        let got = rx.recv_timeout(Duration::from_secs(15));
        assert!(
            matches!(&got, Ok(Ok((true, out))) if out == "started\n"),
            "{got:?}"
        );
    }

    #[test]
    fn stdin_and_env_reach_the_child() -> Result<(), ProcessError> {
        let out = Cmd::new("sh")
            .args(["-c", "cat; printf %s \"$SECRET_FOR_TEST\""])
            .env("SECRET_FOR_TEST", "s3")
            .stdin(b"in:".to_vec())
            .run()?;
        assert_eq!(out, "in:s3");
        Ok(())
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = Cmd::new("/nonexistent/prog").run();
        assert!(matches!(err, Err(ProcessError::Spawn { .. })));
    }
}
