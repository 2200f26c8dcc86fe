//! Helpers shared by the integration tests: they drive the real `cc-ci-agent` binary.
#![allow(dead_code)]

pub mod answers;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cc-ci-agent")
}

/// The repository root (the workspace holding `agent/` and `tests/`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

pub fn agent(args: &[&str]) -> Run {
    agent_in(None, args)
}

/// Runs the agent with a clean environment for the variables it reads.
pub fn agent_in(dir: Option<&Path>, args: &[&str]) -> Run {
    agent_env(dir, args, &[])
}

/// [`agent_in`] with these variables set.
pub fn agent_env(dir: Option<&Path>, args: &[&str], env: &[(&str, &Path)]) -> Run {
    let mut cmd = Command::new(bin());
    cmd.envs(env.iter().copied());
    cmd.args(args)
        .env_remove("CC_CI_AGENT_CONFIG")
        .env_remove("NO_COLOR")
        .env("CC_CI_LOG", "warn");
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    run(&mut cmd)
}

/// Runs the agent as `cmd` says; a `--format json` answer is checked against its command's
/// schema ([`answers::check`]).
pub fn run(cmd: &mut Command) -> Run {
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let run = finish(cmd.output());
    answers::check(&args, &run);
    run
}

pub fn finish(out: std::io::Result<Output>) -> Run {
    match out {
        Ok(o) => Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
        Err(e) => panic!("cannot run {}: {e}", bin()),
    }
}

/// `cc-ci-agent enrollment --file FILE poll-repos`.
pub fn poll_repos(file: &Path) -> Run {
    agent(&[
        "enrollment",
        "--file",
        &file.to_string_lossy(),
        "poll-repos",
    ])
}

/// Every `*.toml` in a corpus directory, sorted.
pub fn corpus(dir: &str) -> Vec<PathBuf> {
    let dir = repo().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// The `# expect: LINE KEY` header of an invalid corpus file.
pub fn expectation(path: &Path) -> (String, String) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let first = text
        .trim_start_matches('\u{feff}')
        .lines()
        .next()
        .unwrap_or_default();
    let rest = first
        .strip_prefix("# expect: ")
        .unwrap_or_else(|| panic!("{} has no '# expect: LINE KEY' first line", path.display()));
    let (line, key) = rest.split_once(' ').unwrap_or((rest, ""));
    (line.to_string(), key.to_string())
}

/// A snapshot of a directory: every file's name and bytes, to prove nothing was written.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut all: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| (e.path(), std::fs::read(e.path()).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    all.sort();
    all
}

/// Runs the agent, killed if it is still running after `guard`: for a test whose failure would
/// be a hang. `None` when it had to be killed. The guard is a bound on a hang, never a measure
/// of speed: pick one far beyond what the command needs.
pub fn agent_guarded(
    args: &[&str],
    env: &[(&str, &Path)],
    guard: std::time::Duration,
) -> Option<Run> {
    let mut cmd = Command::new(bin());
    cmd.envs(env.iter().copied())
        .args(args)
        .env_remove("CC_CI_AGENT_CONFIG")
        .env_remove("NO_COLOR")
        .env("CC_CI_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin()));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(guard) {
        Ok(out) => Some(finish(out)),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            None
        }
    }
}

/// The agent's binary where every user may run it, as the Nix store is on a host: for the tests
/// that run it as another user, or whose agent, started as root, runs itself again as another
/// user (the keeper's helpers as the CI user, the page as the state directory's owner). The
/// build's own binary may sit below a directory only its owner can enter (a checkout under a
/// `mktemp -d`). One copy per checkout, renewed when the build changes.
pub fn bin_for_everyone() -> &'static str {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    static COPY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        let built = std::fs::metadata(bin()).expect("the agent's binary");
        let key: u64 = bin().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let dir = std::env::temp_dir().join(format!("cc-ci-agent-for-everyone-{key:016x}"));
        let copy = dir.join("cc-ci-agent");
        let current = std::fs::metadata(&copy)
            .is_ok_and(|m| m.size() == built.size() && m.mtime() >= built.mtime());
        if !current {
            std::fs::create_dir_all(&dir).expect("a directory for the binary");
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            let fresh = dir.join(format!(".cc-ci-agent.{}", std::process::id()));
            std::fs::copy(bin(), &fresh).expect("a copy of the binary");
            std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::rename(&fresh, &copy).expect("the copy in place");
        }
        copy.to_string_lossy().into_owned()
    })
}

/// [`agent`] from [`bin_for_everyone`].
pub fn agent_for_everyone(args: &[&str]) -> Run {
    let mut cmd = Command::new(bin_for_everyone());
    cmd.args(args)
        .env_remove("CC_CI_AGENT_CONFIG")
        .env_remove("NO_COLOR")
        .env("CC_CI_LOG", "warn");
    run(&mut cmd)
}
