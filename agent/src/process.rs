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
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};

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

#[derive(Debug, Clone)]
pub struct Cmd {
    program: PathBuf,
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    timeout: Option<Duration>,
    stdin: Option<Vec<u8>>,
}

impl Cmd {
    pub fn new(program: impl AsRef<Path>) -> Self {
        Self {
            program: program.as_ref().to_path_buf(),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            timeout: None,
            stdin: None,
        }
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

    /// Runs to completion (or timeout) whatever its exit status.
    pub fn output(&self) -> Result<Finished, ProcessError> {
        let program = self.display();
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        for (k, v) in &self.env {
            command.env(k, v);
        }
        tracing::debug!(command = %program, "running");
        let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
            program: program.clone(),
            source,
        })?;
        let running = Running::new(&child);
        if let (Some(bytes), Some(mut pipe)) = (self.stdin.clone(), child.stdin.take()) {
            // A child that exits without reading its stdin is not an error of ours.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            });
        }
        let (closed_tx, closed) = std::sync::mpsc::channel();
        let stdout = drain(child.stdout.take(), closed_tx.clone());
        let stderr = drain(child.stderr.take(), closed_tx);
        let status = wait(&mut child, &running, &closed, self.timeout).map_err(|e| match e {
            WaitError::Timeout => ProcessError::Timeout {
                program: program.clone(),
                timeout: self.timeout.unwrap_or_default(),
            },
            WaitError::Io(source) => ProcessError::Spawn {
                program: program.clone(),
                source,
            },
        })?;
        Ok(Finished {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
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

/// Reads a pipe to its end; says so on `closed`, since both pipes closing means the child exited
/// (or shut them), which is how `wait` learns it promptly without polling.
fn drain<R: Read + Send + 'static>(
    pipe: Option<R>,
    closed: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        let _ = closed.send(());
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

enum WaitError {
    Timeout,
    Io(std::io::Error),
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

/// Finds a program on `PATH`, as `which` does.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
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
