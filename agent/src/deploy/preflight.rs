//! Before anything is built: is the flake a clean checkout, and is it what upstream has?
//! Deploying a stale or dirty tree is how this host was broken before.

use std::path::Path;
use std::time::Duration;

use crate::git::{Checkout, Git};
use crate::ledger::Outcome;

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

/// Git for the checkout: a minute per call, no retries (a person is waiting).
fn git() -> Git {
    Git::new(Duration::from_secs(60), 0)
}

/// Refuses `commit` unless it carries a good signature by a key in `allowed_signers`.
fn trusted(
    checkout: &Checkout<'_>,
    commit: &str,
    allowed_signers: Option<&Path>,
) -> Result<(), Refused> {
    let Some(file) = allowed_signers else {
        return Ok(());
    };
    checkout.verify_signature(commit, file).map_err(|e| {
        Refused::new(
            Outcome::RefusedUnsigned,
            format!(
                "commit {} carries no good signature by a key in {} (deploy.allowed_signers): {e}; \
                 sign it with one of those keys, or add its signer's key to that file",
                crate::git::short(commit),
                file.display()
            ),
        )
    })
}

pub fn tree(
    dir: &Path,
    require_synced: bool,
    allowed_signers: Option<&Path>,
) -> Result<Tree, Refused> {
    let bad = |m: String| Refused::new(Outcome::RefusedNotACheckout, m);
    if !dir.is_dir() {
        return Err(bad(format!(
            "the flake directory {} does not exist",
            dir.display()
        )));
    }
    let git = git();
    let checkout = git.checkout(dir).map_err(|e| {
        bad(format!(
            "the flake directory {} is not a git checkout: {e}",
            dir.display()
        ))
    })?;
    let top = checkout.top();
    let commit = checkout
        .head()
        .map_err(|e| bad(format!("{} has no commit: {e}", top.display())))?;
    let changes = checkout.changes().map_err(|e| bad(e.to_string()))?;
    if !changes.is_empty() {
        let files: Vec<&str> = changes.iter().take(10).map(String::as_str).collect();
        let more = match changes.len() - files.len() {
            0 => String::new(),
            n => format!(" (and {n} more)"),
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
    trusted(&checkout, &commit, allowed_signers)?;
    if require_synced {
        check_synced(&checkout, &commit)?;
    }
    let flake_lock = checkout.blob(&commit, "flake.lock");
    Ok(Tree { commit, flake_lock })
}

fn check_synced(checkout: &Checkout<'_>, commit: &str) -> Result<(), Refused> {
    let stale = |m: String| {
        Refused::new(
            Outcome::RefusedStale,
            format!("{m} (deploy.require_synced = true: the deployed tree must be upstream's)"),
        )
    };
    let (remote, merge) = checkout.tracked().map_err(stale)?;
    let upstream = checkout
        .remote_commit(&remote, &merge)
        .map_err(|e| {
            stale(format!(
                "cannot reach upstream {remote} to check that the tree is current: {e}"
            ))
        })?
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

/// What `deploy --pull` did to the checkout: HEAD before and after (the same when upstream had
/// nothing new).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub from: String,
    pub to: String,
}

/// Fetches the checkout's upstream branch and fast-forwards a clean checkout to it. A dirty
/// tree, a HEAD that is not an ancestor of upstream's, or an upstream that cannot be reached is
/// a refusal, and the checkout is left as it was.
pub fn pull(dir: &Path, allowed_signers: Option<&Path>) -> Result<Pulled, Refused> {
    let git = git();
    let checkout = git.checkout(dir).map_err(|e| {
        Refused::new(
            Outcome::RefusedNotACheckout,
            format!(
                "the flake directory {} is not a git checkout: {e}",
                dir.display()
            ),
        )
    })?;
    let top = checkout.top().display().to_string();
    let stale = |m: String| Refused::new(Outcome::RefusedStale, m);
    let changes = checkout.changes().map_err(|e| stale(e.to_string()))?;
    if !changes.is_empty() {
        return Err(Refused::new(
            Outcome::RefusedDirty,
            format!(
                "{top} has uncommitted changes ({}): --pull fast-forwards only a clean checkout, \
                 and never stashes; commit or remove them",
                changes
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let from = checkout.head().map_err(|e| stale(e.to_string()))?;
    let (remote, merge) = checkout
        .tracked()
        .map_err(|m| stale(format!("nothing to pull: {m}")))?;
    let to = checkout
        .fetch(&remote, &merge)
        .map_err(|e| stale(format!("cannot fetch {merge} from upstream {remote}: {e}")))?;
    if to == from {
        return Ok(Pulled { from, to });
    }
    // Checked before the checkout moves: an untrusted commit never reaches the work tree.
    trusted(&checkout, &to, allowed_signers)?;
    if !checkout.contains(&to, &from) {
        return Err(Refused::new(
            Outcome::RefusedDiverged,
            format!(
                "HEAD {} is not in upstream {remote}'s {} ({}): local commits, or a rewritten \
                 branch; --pull only fast-forwards, so reconcile the checkout by hand",
                crate::git::short(&from),
                merge.trim_start_matches("refs/heads/"),
                crate::git::short(&to)
            ),
        ));
    }
    checkout.fast_forward(&to).map_err(|e| {
        stale(format!(
            "cannot fast-forward {top} to {}: {e}",
            crate::git::short(&to)
        ))
    })?;
    Ok(Pulled { from, to })
}

/// The checkout's HEAD and the commit its upstream branch names now (one `ls-remote`, nothing
/// fetched): what `deploy --auto` compares before doing anything.
pub fn upstream_head(dir: &Path) -> Result<(String, String), String> {
    let git = git();
    let checkout = git.checkout(dir).map_err(|e| e.to_string())?;
    let head = checkout.head().map_err(|e| e.to_string())?;
    let (remote, merge) = checkout.tracked()?;
    let upstream = checkout
        .remote_commit(&remote, &merge)
        .map_err(|e| e.to_string())?
        .ok_or("upstream has no such branch")?;
    Ok((head, upstream))
}

/// Commits `upstream` has that `deployed` lacks, counted in the checkout (both must be there).
pub fn behind(dir: &Path, deployed: &str, upstream: &str) -> Option<u64> {
    git().checkout(dir).ok()?.count_between(deployed, upstream)
}
