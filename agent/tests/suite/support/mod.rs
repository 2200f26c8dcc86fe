//! Real servers on 127.0.0.1 for the mirror tests: `git daemon` for upstreams, and a test forge
//! speaking the Gitea endpoints the agent uses, with `git http-backend` behind it, over HTTP.
#![allow(dead_code)]

/// The test forge lives in the test kit, which the demo shares.
pub mod forge {
    pub use cc_ci_testkit::forge::*;
}
pub mod odd;
pub mod socket_unit;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use cc_ci_testkit::forge::git;

/// Runs git in `repo` with `input` on its stdin (fast-import, update-ref --stdin).
pub fn git_stdin(repo: &Path, args: &[&str], input: &str) {
    use std::io::Write;
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("git");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "git {args:?}");
}

/// `git show-ref` of a repository, as lines, for byte-for-byte comparisons.
pub fn refs(repo: &Path) -> Vec<String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .arg("show-ref")
        .output()
        .expect("git");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `git daemon` serving every bare repository under `root` on 127.0.0.1, read-only.
pub struct GitDaemon {
    pub port: u16,
    pub root: PathBuf,
    child: Child,
}

impl GitDaemon {
    pub fn start(root: &Path) -> Self {
        let port = free_port();
        // git-daemon itself, not `git daemon`, which would run it as a child that outlives a kill.
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git --exec-path");
        let exec_path = String::from_utf8_lossy(&exec_path.stdout)
            .trim()
            .to_string();
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args([
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
                "--informative-errors",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", root.display()))
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        wait_for_port(port);
        Self {
            port,
            root: root.to_path_buf(),
            child,
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}.git", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Upstream repositories `names` (bare under `dir/upstream`, work trees under `dir/work`), served
/// by a git daemon, and `dir/enrollment.toml` enrolling each of them from it.
pub fn upstream_fleet(
    dir: &Path,
    names: &[&str],
) -> (GitDaemon, std::collections::BTreeMap<String, Upstream>) {
    let (up_root, work_root) = (dir.join("upstream"), dir.join("work"));
    std::fs::create_dir_all(&up_root).unwrap();
    std::fs::create_dir_all(&work_root).unwrap();
    let upstreams = names
        .iter()
        .map(|n| {
            let up = Upstream::create(&up_root, &work_root, n, "main");
            (n.to_string(), up)
        })
        .collect();
    let daemon = GitDaemon::start(&up_root);
    let mut enrollment = format!(
        "[defaults]\nupstream = \"git://127.0.0.1:{}/{{recipe}}.git\"\n",
        daemon.port
    );
    for n in names {
        enrollment.push_str(&format!("\n[recipe.{n}]\n"));
    }
    std::fs::write(dir.join("enrollment.toml"), enrollment).unwrap();
    (daemon, upstreams)
}

/// An upstream recipe repository: a bare repo under the daemon's root and a work tree to change it.
pub struct Upstream {
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl Upstream {
    pub fn create(daemon_root: &Path, work_root: &Path, name: &str, branch: &str) -> Self {
        let bare = daemon_root.join(format!("{name}.git"));
        let work = work_root.join(name);
        git(
            daemon_root,
            &["init", "-q", "--bare", "-b", branch, bare.to_str().unwrap()],
        );
        git(
            work_root,
            &["init", "-q", "-b", branch, work.to_str().unwrap()],
        );
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        let up = Self { bare, work };
        up.commit("compose.yml", "version: '3.8'\n");
        up
    }

    pub fn commit(&self, file: &str, content: &str) -> String {
        std::fs::write(self.work.join(file), content).unwrap();
        git(&self.work, &["add", file]);
        git(
            &self.work,
            &["commit", "-q", "-m", &format!("change {file}")],
        );
        git(&self.work, &["push", "-q", "origin", "HEAD"]);
        git(&self.work, &["rev-parse", "HEAD"]).trim().to_string()
    }

    pub fn tag(&self, name: &str, annotated: bool) {
        if annotated {
            git(
                &self.work,
                &["tag", "-a", name, "-m", &format!("release {name}")],
            );
        } else {
            git(&self.work, &["tag", name]);
        }
        git(
            &self.work,
            &["push", "-q", "origin", &format!("refs/tags/{name}")],
        );
    }

    pub fn delete_tag(&self, name: &str) {
        git(&self.work, &["tag", "-d", name]);
        git(
            &self.work,
            &["push", "-q", "origin", &format!(":refs/tags/{name}")],
        );
    }

    /// Replaces the last commit with another (`file` holding `content`) and force-pushes it:
    /// upstream rewrote its branch.
    pub fn rewrite_last(&self, file: &str, content: &str) {
        git(&self.work, &["reset", "-q", "--hard", "HEAD~1"]);
        std::fs::write(self.work.join(file), content).unwrap();
        git(&self.work, &["add", file]);
        git(&self.work, &["commit", "-q", "-m", "rewritten"]);
        git(&self.work, &["push", "-q", "--force", "origin", "main"]);
    }

    pub fn head(&self) -> String {
        git(&self.bare, &["rev-parse", "HEAD"]).trim().to_string()
    }
}
