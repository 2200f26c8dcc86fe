//! Before anything is built: is the flake a clean checkout, and is it what upstream has?
//! Deploying a stale or dirty tree is how this host was broken before.

use std::path::Path;
use std::time::Duration;

use crate::ledger::Outcome;
use crate::process::Cmd;

/// The tree being deployed, as recorded in the journal.
#[derive(Debug, Clone)]
pub struct Tree {
    pub commit: String,
    /// The git object id of `flake.lock` at that commit, if it has one.
    pub flake_lock: Option<String>,
}

/// A refusal: the deploy does not start. Each kind is its own outcome, with its own exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub outcome: Outcome,
    pub message: String,
}

impl Refused {
    pub fn new(outcome: Outcome, message: impl Into<String>) -> Self {
        Self {
            outcome,
            message: message.into(),
        }
    }
}

fn git(dir: &Path) -> Cmd {
    Cmd::new("git")
        .arg("-C")
        .arg(dir)
        .timeout(Duration::from_secs(60))
}

pub fn tree(dir: &Path, require_synced: bool) -> Result<Tree, Refused> {
    let bad = |m: String| Refused::new(Outcome::RefusedNotACheckout, m);
    if !dir.is_dir() {
        return Err(bad(format!(
            "the flake directory {} does not exist",
            dir.display()
        )));
    }
    let top = git(dir)
        .args(["rev-parse", "--show-toplevel"])
        .run()
        .map_err(|e| {
            bad(format!(
                "the flake directory {} is not a git checkout: {e}",
                dir.display()
            ))
        })?;
    let top = Path::new(top.trim());
    let commit = git(top)
        .args(["rev-parse", "--verify", "HEAD"])
        .run()
        .map_err(|e| bad(format!("{} has no commit: {e}", top.display())))?
        .trim()
        .to_string();

    let status = git(top)
        .args(["status", "--porcelain=v1", "--untracked-files=normal"])
        .run()
        .map_err(|e| bad(e.to_string()))?;
    if !status.trim().is_empty() {
        let files: Vec<&str> = status.lines().take(10).collect();
        let more = status.lines().count().saturating_sub(files.len());
        let more = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        return Err(Refused::new(
            Outcome::RefusedDirty,
            format!(
                "{} has uncommitted changes, so what would be deployed is not what any commit says: \
                 commit or stash them first. {}{more}",
                top.display(),
                files.join(", ")
            ),
        ));
    }

    if require_synced {
        check_synced(top, &commit)?;
    }
    let flake_lock = git(top)
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{commit}:flake.lock"),
        ])
        .run()
        .ok()
        .map(|s| s.trim().to_string());
    Ok(Tree { commit, flake_lock })
}

fn check_synced(top: &Path, commit: &str) -> Result<(), Refused> {
    let stale = |m: String| {
        Refused::new(
            Outcome::RefusedStale,
            format!("{m} (deploy.require_synced = true: the deployed tree must be upstream's)"),
        )
    };
    let branch = git(top)
        .args(["symbolic-ref", "--quiet", "--short", "HEAD"])
        .run()
        .map_err(|_| {
            stale(format!(
                "{} is on a detached HEAD, not on a branch",
                top.display()
            ))
        })?;
    let branch = branch.trim();
    let config = |key: String| {
        git(top)
            .args(["config", "--get", &key])
            .run()
            .ok()
            .map(|s| s.trim().to_string())
    };
    let (Some(remote), Some(merge)) = (
        config(format!("branch.{branch}.remote")),
        config(format!("branch.{branch}.merge")),
    ) else {
        return Err(stale(format!(
            "branch {branch} has no upstream: set one with `git branch --set-upstream-to=origin/{branch}`"
        )));
    };
    let listed = git(top)
        .args(["ls-remote", "--heads", "--", &remote, &merge])
        .run()
        .map_err(|e| {
            stale(format!(
                "cannot reach upstream {remote} to check that the tree is current: {e}"
            ))
        })?;
    let upstream = listed
        .lines()
        .find_map(|l| {
            l.split_once('\t')
                .filter(|(_, r)| *r == merge)
                .map(|(oid, _)| oid.to_string())
        })
        .ok_or_else(|| stale(format!("upstream {remote} has no branch {merge}")))?;
    if upstream != commit {
        return Err(stale(format!(
            "HEAD is {} but upstream {remote} {} is {}: pull (or push) so they agree, then deploy",
            crate::git::short(commit),
            merge.trim_start_matches("refs/heads/"),
            crate::git::short(&upstream)
        )));
    }
    Ok(())
}
