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
    ///
    /// git picks the verifier from the signature, not from `gpg.format`, and each verifier
    /// falls back on the user's own trust (the default GnuPG keyring, the global
    /// `gpg.ssh.allowedSignersFile`). So a signature of the other kind is refused before git
    /// sees it, and git runs with a keyring of this call's own and every verifier setting
    /// given on its command line, whatever the deploying user has configured.
    pub fn verify_signature(&self, commit: &str, allowed_signers: &Path) -> Result<(), GitError> {
        let other = |message: String| GitError {
            kind: super::ErrorKind::Other,
            message,
        };
        let bytes = crate::fsutil::read_regular(allowed_signers, SIGNERS_LIMIT, true)
            .map_err(|e| other(e.to_string()))?;
        let trusted = SignatureKind::of_signers(&bytes);
        let raw = self.git(&["cat-file", "commit", commit])?;
        match SignatureKind::of_commit(&raw) {
            None => {
                return Err(other(format!(
                    "commit {} is not signed",
                    super::short(commit)
                )))
            }
            Some(kind) if kind != trusted => {
                return Err(other(format!(
                    "commit {} is signed with {}, but the file holds {} keys: only a signature \
                     of the file's kind is checked",
                    super::short(commit),
                    kind.name(),
                    trusted.name()
                )))
            }
            Some(_) => {}
        }
        let home = crate::fsutil::private_dir(&std::env::temp_dir(), "cc-ci-keyring")
            .map_err(|e| other(format!("cannot make a keyring directory: {e}")))?;
        let result = self.verify_in(&home, commit, allowed_signers, trusted);
        // gpg may have started an agent for the keyring: it goes with it.
        let _ = crate::process::Cmd::new("gpgconf")
            .arg("--homedir")
            .arg(&home)
            .args(["--kill", "all"])
            .timeout(std::time::Duration::from_secs(10))
            .run();
        let _ = std::fs::remove_dir_all(&home);
        result
    }

    /// `git verify-commit` with `home` as GnuPG's only keyring (OpenPGP keys imported into it)
    /// and `signers` as the only SSH allowed-signers file.
    fn verify_in(
        &self,
        home: &Path,
        commit: &str,
        signers: &Path,
        kind: SignatureKind,
    ) -> Result<(), GitError> {
        let ssh_signers = match kind {
            // `Other` never gets here: a signers file is of one of the two kinds, and a
            // commit's kind must match it.
            SignatureKind::Ssh | SignatureKind::Other => signers.to_path_buf(),
            SignatureKind::OpenPgp => {
                crate::process::Cmd::new("gpg")
                    .args(["--batch", "--quiet", "--homedir"])
                    .arg(home)
                    .arg("--import")
                    .arg(signers)
                    .timeout(std::time::Duration::from_secs(60))
                    .run()
                    .map_err(super::to_git_error)?;
                let none = home.join("no-ssh-signers");
                std::fs::write(&none, b"").map_err(|e| GitError {
                    kind: super::ErrorKind::Other,
                    message: format!("cannot write {}: {e}", none.display()),
                })?;
                none
            }
        };
        let ssh_file = format!("gpg.ssh.allowedSignersFile={}", ssh_signers.display());
        let format = format!("gpg.format={}", kind.format());
        self.git
            .run(|cmd| {
                cmd.env("GNUPGHOME", home).arg("-C").arg(&self.top).args([
                    "-c",
                    &format,
                    "-c",
                    "gpg.program=gpg",
                    "-c",
                    "gpg.openpgp.program=gpg",
                    "-c",
                    "gpg.ssh.program=ssh-keygen",
                    "-c",
                    &ssh_file,
                    "-c",
                    "gpg.ssh.revocationFile=",
                    "verify-commit",
                    "--",
                    commit,
                ])
            })
            .map(drop)
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

/// A signers file is a few keys: anything larger is not one.
const SIGNERS_LIMIT: u64 = 1 << 20;

/// The kinds of signature a commit can carry; `deploy.allowed_signers` trusts the first two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignatureKind {
    OpenPgp,
    Ssh,
    /// X.509 (gpgsm), or armor git does not know: no signers file holds its keys.
    Other,
}

impl SignatureKind {
    /// The kind a signers file's keys are: armored OpenPGP keys, else SSH allowed-signers lines.
    fn of_signers(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        if text
            .trim_start()
            .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        {
            Self::OpenPgp
        } else {
            Self::Ssh
        }
    }

    /// The kind of the signature in a raw commit object (its `gpgsig` or `gpgsig-sha256`
    /// header, whose first line is the armor's), `None` when it has none.
    fn of_commit(raw: &str) -> Option<Self> {
        let headers = raw.split("\n\n").next().unwrap_or_default();
        let first = headers.lines().find_map(|l| {
            l.strip_prefix("gpgsig ")
                .or_else(|| l.strip_prefix("gpgsig-sha256 "))
        })?;
        Some(match first.trim() {
            "-----BEGIN PGP SIGNATURE-----" => Self::OpenPgp,
            "-----BEGIN SSH SIGNATURE-----" => Self::Ssh,
            _ => Self::Other,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::OpenPgp => "OpenPGP",
            Self::Ssh => "SSH",
            Self::Other => "neither OpenPGP nor SSH (X.509?)",
        }
    }

    /// git's `gpg.format` for the kind.
    fn format(self) -> &'static str {
        match self {
            Self::OpenPgp => "openpgp",
            Self::Ssh | Self::Other => "ssh",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SignatureKind;

    #[test]
    fn a_commits_signature_kind_is_read_from_its_armor() {
        let commit = |sig: &str| {
            format!(
                "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor a <a@b> 1 +0000\n\
                 committer a <a@b> 1 +0000\n{sig}\nmessage\ngpgsig -----BEGIN SSH SIGNATURE-----\n"
            )
        };
        let of = |sig: &str| SignatureKind::of_commit(&commit(sig));
        assert_eq!(
            of("gpgsig -----BEGIN PGP SIGNATURE-----\n \n -----END PGP SIGNATURE-----\n"),
            Some(SignatureKind::OpenPgp)
        );
        assert_eq!(
            of("gpgsig -----BEGIN SSH SIGNATURE-----\n -----END SSH SIGNATURE-----\n"),
            Some(SignatureKind::Ssh)
        );
        assert_eq!(
            of("gpgsig-sha256 -----BEGIN SIGNED MESSAGE-----\n -----END SIGNED MESSAGE-----\n"),
            Some(SignatureKind::Other)
        );
        // A "gpgsig" line in the message is not a header.
        assert_eq!(of(""), None);
    }
}
