//! Where one CI run happens: `<run_dir>/<recipe>-<run>/` with `work/` (`{workdir}`), `results/`
//! (`{results}`) and `.credentials/` (what `sweep.credentials` grants), made anew for each run.
//!
//! With `[sweep] run_as` the directory and all in it are given to that user (by the keeper,
//! through their descriptors) before CI starts: CI owns its directory, and the sweep, which runs
//! as the agent's user, reads its results back and removes it through a program of its own run
//! as the CI user (`cc-ci-agent internal`), never as itself: nothing CI made there is opened
//! with the agent's rights. Without `run_as`, all of it happens here, without following links.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::junit::{self, TierFrom, Tiers, Unreadable};
use crate::fsutil::Dir;
use crate::process::{keeper, this_program};
use crate::settings::config::Config;

/// Results read back as the CI user: at most this much JSON, within this time.
const READ_LIMIT: u64 = 8 << 20;
const HELPER_TIMEOUT: Duration = Duration::from_secs(600);

pub struct RunPlace {
    pub dir: PathBuf,
    pub work: PathBuf,
    pub results: PathBuf,
    /// The credentials granted to CI (`CREDENTIALS_DIRECTORY` for it), if any.
    pub credentials: Option<PathBuf>,
}

/// The directory the run directories are made in.
pub fn run_root(config: &Config) -> PathBuf {
    config
        .sweep
        .run_dir
        .clone()
        .unwrap_or_else(|| config.state_dir.join("sweep/runs"))
}

impl RunPlace {
    /// Makes run `run`'s directory for `recipe` (what an earlier run of it left is removed
    /// first), fills in the credentials granted, and gives it all to the CI user.
    pub fn make(config: &Config, recipe: &str, run: i64) -> Result<Self> {
        let root_path = run_root(config);
        std::fs::create_dir_all(&root_path)
            .with_context(|| format!("cannot create {}", root_path.display()))?;
        let root = Dir::open(&root_path)?;
        remove_leftovers(&root, recipe);
        let name = format!("{recipe}-{run}");
        let _ = remove(&root, &name);
        let dir = root.new_subdir(&name, 0o700)?;
        let work = dir.new_subdir("work", 0o700)?;
        let results = dir.new_subdir("results", 0o700)?;
        let granted = grant(&dir, &config.sweep.credentials)?;
        if keeper::present() {
            let mut given = vec![dir.fd().as_fd(), work.fd().as_fd(), results.fd().as_fd()];
            if let Some((creds, files)) = &granted {
                given.push(creds.fd().as_fd());
                given.extend(files.iter().map(AsFd::as_fd));
            }
            keeper::give(&given).with_context(|| {
                format!(
                    "cannot give {} to the CI user ([sweep] run_as)",
                    dir.path().display()
                )
            })?;
        }
        Ok(Self {
            dir: dir.path().to_path_buf(),
            work: work.path().to_path_buf(),
            results: results.path().to_path_buf(),
            credentials: granted.map(|(c, _)| c.path().to_path_buf()),
        })
    }

    /// The suite's results, each case's tier by `tier_from`, read as the CI user when it has
    /// one.
    pub fn read_results(&self, tier_from: TierFrom) -> Result<Tiers, Unreadable> {
        if !keeper::present() {
            return junit::read_dir(&self.results, junit::Limits::default(), tier_from);
        }
        let rule = serde_json::to_value(tier_from)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let helper = this_program([
            std::ffi::OsStr::new("internal"),
            std::ffi::OsStr::new("read-results"),
            std::ffi::OsStr::new("--tier-from"),
            std::ffi::OsStr::new(&rule),
            self.results.as_os_str(),
        ])
        .ok_or_else(|| Unreadable("cannot tell which program this is".into()))?;
        let out = helper
            .clean_env(&[])
            .as_ci_user()
            .stdout_limit(READ_LIMIT)
            .timeout(HELPER_TIMEOUT)
            .run()
            .map_err(|e| Unreadable(format!("reading the results as the CI user: {e}")))?;
        serde_json::from_str::<Result<Tiers, Unreadable>>(&out).map_err(|e| {
            Unreadable(format!(
                "reading the results as the CI user: not its answer: {e}"
            ))
        })?
    }

    /// Removes the run's directory and all CI left in it.
    pub fn remove(&self) {
        let (Some(parent), Some(name)) = (
            self.dir.parent(),
            self.dir.file_name().and_then(|n| n.to_str()),
        ) else {
            return;
        };
        if let Ok(root) = Dir::open(parent) {
            if let Err(e) = remove(&root, name) {
                tracing::warn!("cannot remove {}: {e:#}", self.dir.display());
            }
        }
    }
}

/// Copies the credentials `names` from the sweep unit's credentials (as root read them ahead,
/// or from `CREDENTIALS_DIRECTORY`) into `dir/.credentials`: CI sees those, never the agent's
/// tokens beside them. The directory and each file, opened, to give them away; `None` when
/// none are granted.
fn grant(dir: &Dir, names: &[String]) -> Result<Option<(Dir, Vec<std::fs::File>)>> {
    if names.is_empty() {
        return Ok(None);
    }
    let from = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(PathBuf::from)
        .context(
            "sweep.credentials names credentials, but the agent has no CREDENTIALS_DIRECTORY",
        )?;
    let to = dir.new_subdir(".credentials", 0o700)?;
    let mut files = Vec::new();
    for name in names {
        let bytes = crate::secrets::read_secret_file(&from.join(name), 1 << 20)?;
        to.create_new(name, &bytes, 0o400)?;
        files.push(
            to.open_existing(name)
                .with_context(|| format!("cannot open {}", to.path().join(name).display()))?,
        );
    }
    Ok(Some((to, files)))
}

/// What runs of `recipe` left behind (a sweep killed mid-run): `<recipe>-<number>`.
fn remove_leftovers(root: &Dir, recipe: &str) {
    let Ok(entries) = std::fs::read_dir(root.path()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let run = name
            .strip_prefix(recipe)
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if run {
            let _ = remove(root, name);
        }
    }
}

/// Removes `root/name` whole: what is in it as the CI user when it has one (the directory and
/// all in it are that user's), then the emptied directory itself here (`root` is ours).
fn remove(root: &Dir, name: &str) -> Result<()> {
    if keeper::present() && root.has_subdir(name) {
        let path = root.path().join(name);
        let helper = this_program([
            std::ffi::OsStr::new("internal"),
            std::ffi::OsStr::new("empty"),
            path.as_os_str(),
        ])
        .context("cannot tell which program this is")?;
        helper
            .clean_env(&[])
            .as_ci_user()
            .timeout(HELPER_TIMEOUT)
            .run()
            .with_context(|| format!("emptying {} as the CI user", path.display()))?;
    }
    root.remove_tree(name)
}

/// `cc-ci-agent internal read-results DIR`, run as the CI user: the results as JSON on stdout,
/// `{"Ok": tiers}` or `{"Err": why}`.
pub fn internal_read_results(dir: &Path, tier_from: &str) -> Result<()> {
    use std::io::Write as _;
    let rule: TierFrom = serde_json::from_value(serde_json::Value::String(tier_from.into()))
        .with_context(|| format!("{tier_from:?} is no tier rule"))?;
    let read = junit::read_dir(dir, junit::Limits::default(), rule);
    // Raw JSON for the sweep to parse, not a screen: not through the terminal's escaping.
    let mut out = std::io::stdout().lock();
    out.write_all(serde_json::to_string(&read)?.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `cc-ci-agent internal empty DIR`, run as the CI user: removes everything in `DIR`, never
/// following a link.
pub fn internal_empty(dir: &Path) -> Result<()> {
    let d = Dir::open(dir)?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        if let Some(name) = entry.file_name().to_str() {
            d.remove_tree(name)?;
        }
    }
    Ok(())
}
