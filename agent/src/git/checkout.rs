//! A work tree the deploy builds from (the host's own flake checkout): its top, HEAD, whether it
//! is clean, and what its upstream branch is at. The one change it makes is a fast-forward, and
//! only `deploy --pull` asks for it: never a merge, rebase, reset or stash.

use std::path::{Path, PathBuf};

use super::{Git, GitError};

/// A git work tree, found from any directory in it.
pub struct Checkout<'a> {
    git: &'a Git,
    top: PathBuf,
}

impl Git {
    /// The work tree `dir` is in.
    pub fn checkout(&self, dir: &Path) -> Result<Checkout<'_>, GitError> {
        let top = self.run(|cmd| {
            cmd.arg("-C")
                .arg(dir)
                .args(["rev-parse", "--show-toplevel"])
        })?;
        Ok(Checkout {
            git: self,
            top: PathBuf::from(top.trim()),
        })
    }
}

impl Checkout<'_> {
    pub fn top(&self) -> &Path {
        &self.top
    }

    fn git(&self, args: &[&str]) -> Result<String, GitError> {
        self.git
            .run(|cmd| cmd.arg("-C").arg(&self.top).args(args))
            .map(|out| out.trim_end().to_string())
    }

    /// The commit HEAD names.
    pub fn head(&self) -> Result<String, GitError> {
        self.git(&["rev-parse", "--verify", "HEAD"])
    }

    /// Changed and untracked files, as `git status --porcelain` lists them; empty when clean.
    pub fn changes(&self) -> Result<Vec<String>, GitError> {
        let out = self.git(&["status", "--porcelain=v1", "--untracked-files=normal"])?;
        Ok(out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect())
    }

    /// The branch HEAD is on; `None` on a detached HEAD.
    pub fn branch(&self) -> Option<String> {
        self.git(&["symbolic-ref", "--quiet", "--short", "HEAD"])
            .ok()
    }

    /// The remote and the ref HEAD's branch follows; else what is missing and how to set it.
    pub fn tracked(&self) -> Result<(String, String), String> {
        let Some(branch) = self.branch() else {
            return Err(format!(
                "{} is on a detached HEAD, not on a branch",
                self.top.display()
            ));
        };
        self.upstream_of(&branch).ok_or_else(|| {
            format!(
                "branch {branch} has no upstream: set one with `git branch --set-upstream-to=origin/{branch}`"
            )
        })
    }

    /// The remote and the ref a branch follows (`branch.<b>.remote` and `.merge`).
    fn upstream_of(&self, branch: &str) -> Option<(String, String)> {
        let get = |key: String| self.git(&["config", "--get", &key]).ok();
        Some((
            get(format!("branch.{branch}.remote"))?,
            get(format!("branch.{branch}.merge"))?,
        ))
    }

    /// The commit `merge` names on `remote` now; `None` when the remote has no such ref.
    pub fn remote_commit(&self, remote: &str, merge: &str) -> Result<Option<String>, GitError> {
        let listed = self.git(&["ls-remote", "--heads", "--", remote, merge])?;
        Ok(listed.lines().find_map(|l| {
            l.split_once('\t')
                .filter(|(_, r)| *r == merge)
                .map(|(oid, _)| oid.to_string())
        }))
    }

    /// Fetches `merge` from `remote` (no tags): the commit it names there now.
    pub fn fetch(&self, remote: &str, merge: &str) -> Result<String, GitError> {
        self.git(&["fetch", "--quiet", "--no-tags", "--", remote, merge])?;
        self.git(&["rev-parse", "--verify", "FETCH_HEAD^{commit}"])
    }

    /// Whether `descendant` contains `ancestor` (the same commit counts).
    pub fn contains(&self, descendant: &str, ancestor: &str) -> bool {
        self.git.succeeds(|cmd| {
            cmd.arg("-C")
                .arg(&self.top)
                .args(["merge-base", "--is-ancestor", ancestor, descendant])
        })
    }

    /// Moves the branch and the work tree forward to `commit`, which must contain HEAD: git
    /// refuses anything but a fast-forward, and touches nothing when it refuses.
    pub fn fast_forward(&self, commit: &str) -> Result<(), GitError> {
        self.git(&["merge", "--ff-only", "--quiet", commit])
            .map(drop)
    }

    /// Whether `commit` carries a good signature by a key in `allowed_signers`: `Err` with git's
    /// own account of why not. The file is either OpenPGP public keys (armored, as
    /// `gpg --armor --export` writes them) or SSH keys in git's `gpg.ssh.allowedSignersFile`
    /// format; its first line says which.
    pub fn verify_signature(&self, commit: &str, allowed_signers: &Path) -> Result<(), GitError> {
        let openpgp = std::fs::read_to_string(allowed_signers)
            .map(|t| {
                t.trim_start()
                    .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
            })
            .unwrap_or(false);
        if openpgp {
            return self.verify_openpgp(commit, allowed_signers);
        }
        let file = format!("gpg.ssh.allowedSignersFile={}", allowed_signers.display());
        self.git
            .run(|cmd| {
                cmd.arg("-C").arg(&self.top).args([
                    "-c",
                    "gpg.format=ssh",
                    "-c",
                    &file,
                    "verify-commit",
                    "--",
                    commit,
                ])
            })
            .map(drop)
    }

    /// An OpenPGP signature, checked against only the keys in `keys`: they are imported into a
    /// keyring of this call's own (a new 0700 directory, removed after), never the user's.
    fn verify_openpgp(&self, commit: &str, keys: &Path) -> Result<(), GitError> {
        let home =
            crate::fsutil::private_dir(&std::env::temp_dir(), "cc-ci-keyring").map_err(|e| {
                GitError {
                    kind: super::ErrorKind::Other,
                    message: format!("cannot make a keyring directory: {e}"),
                }
            })?;
        let result = (|| {
            crate::process::Cmd::new("gpg")
                .args(["--batch", "--quiet", "--homedir"])
                .arg(&home)
                .arg("--import")
                .arg(keys)
                .timeout(std::time::Duration::from_secs(60))
                .run()
                .map_err(super::to_git_error)?;
            self.git.run(|cmd| {
                cmd.env("GNUPGHOME", &home).arg("-C").arg(&self.top).args([
                    "-c",
                    "gpg.format=openpgp",
                    "verify-commit",
                    "--",
                    commit,
                ])
            })
        })();
        // gpg may have started an agent for the keyring: it goes with it.
        let _ = crate::process::Cmd::new("gpgconf")
            .arg("--homedir")
            .arg(&home)
            .args(["--kill", "all"])
            .timeout(std::time::Duration::from_secs(10))
            .run();
        let _ = std::fs::remove_dir_all(&home);
        result.map(drop)
    }

    /// How many commits `to` has that `from` lacks, when both are here.
    pub fn count_between(&self, from: &str, to: &str) -> Option<u64> {
        self.git(&["rev-list", "--count", &format!("{from}..{to}")])
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The object id of `path` at `commit`, if the commit has it.
    pub fn blob(&self, commit: &str, path: &str) -> Option<String> {
        self.git(&[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{commit}:{path}"),
        ])
        .ok()
    }
}
