//! `cc-ci-agent status-page --out DIR`: the fleet as a static site, from the ledger
//! (docs/status-page.md). No server of its own and no JavaScript: `index.html`, a page per
//! recipe, `deploys.html` and `status.json`, readable from `file://` or any web server.

mod html;
pub mod model;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::clock::Clock;
use crate::context::Context;
use crate::exit::Exit;
use crate::settings::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the site (replaced whole, in one rename). Default: `[status_page] dir`.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: Args) -> Result<Exit> {
    let config = ctx.config()?;
    let Some(out) = args.out.or_else(|| config.status_page.clone()) else {
        return Err(crate::error::Unusable(format!(
            "{}: no --out DIR and no [status_page] dir to write the page to: pass --out DIR, \
             or set dir under [status_page] (docs/status-page.md)",
            config.path.display()
        ))
        .into());
    };
    let written = write(&config, &ctx.clock, &out)?;
    ctx.out.give(&Wrote {
        dir: &out,
        files: written.files,
        index_bytes: written.index_bytes,
    })?;
    Ok(Exit::Success)
}

/// What a job that changed the ledger does last when `[status_page] dir` is set: rewrite the
/// page. A page that cannot be written is a warning, never the job's failure.
pub fn refresh(config: &Config, clock: &Clock) {
    if let Some(dir) = &config.status_page {
        if let Err(e) = write(config, clock, dir) {
            tracing::warn!(
                "the status page in {} was not rewritten: {e:#}",
                dir.display()
            );
        }
    }
}

/// `status-page`'s answer (docs/status-page.md): where the site went and how much was written.
#[derive(serde::Serialize)]
struct Wrote<'a> {
    dir: &'a Path,
    files: usize,
    index_bytes: usize,
}

impl crate::output::Answer for Wrote<'_> {
    fn human(&self, _out: &crate::output::Output) -> String {
        format!(
            "wrote the status page: {} ({} files)\n",
            self.dir.join("index.html").display(),
            self.files
        )
    }
}

pub struct Written {
    pub files: usize,
    pub index_bytes: usize,
}

/// Builds the site in a fresh directory beside `out`, then puts it in `out`'s place in one
/// rename (an exchange when `out` exists), so a reader sees the old site or the new, never half
/// of one; the old one is then removed without following anything in it.
pub fn write(config: &Config, clock: &Clock, out: &Path) -> Result<Written> {
    let site = model::build(config, clock)?;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let fresh = crate::fsutil::private_dir(parent, ".status-page.new-")
        .with_context(|| format!("cannot make a directory in {}", parent.display()))?;
    let owner = owner_for(parent)?;
    let written = fill(&fresh, &site, owner);
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&fresh);
            return Err(e);
        }
    };
    set_mode(&fresh, 0o755)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&fresh, Some(uid), Some(gid))?;
    }
    replace(&fresh, out)?;
    Ok(written)
}

/// Root (a deploy) writes the page as the state directory's owner, so the jobs that run as
/// that user can replace it next; anyone else writes it as themselves.
fn owner_for(parent: &Path) -> Result<Option<(u32, u32)>> {
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let m =
        std::fs::metadata(parent).with_context(|| format!("cannot read {}", parent.display()))?;
    Ok(Some((m.uid(), m.gid())))
}

fn fill(dir: &Path, site: &model::Site, owner: Option<(u32, u32)>) -> Result<Written> {
    let index = html::index(site);
    let mut files = 0;
    // A directory of our own, made a moment ago with mode 0700: nothing in it can be a link,
    // and no file needs its own rename or fsync, since the whole site is swapped in at once.
    let mut put = |name: &Path, text: &str| -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        std::io::Write::write_all(&mut file, text.as_bytes())?;
        // The mode given to open is cut by the umask (the units' 0027): a page is for everyone.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        files += 1;
        Ok(())
    };
    put(Path::new("index.html"), &index)?;
    put(Path::new("deploys.html"), &html::deploys(site))?;
    std::fs::create_dir(dir.join("recipe"))?;
    set_mode(&dir.join("recipe"), 0o755)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir.join("recipe"), Some(uid), Some(gid))?;
    }
    for r in &site.recipes {
        let page = Path::new("recipe").join(format!("{}.html", r.name));
        put(&page, &html::recipe(site, r))?;
    }
    // The fleet with each recipe's newest run: its history is on its page (and in `history
    // --format json`); at 1,000 recipes with 50 runs each, all of it as JSON would be 55 MB.
    let mut fleet = site.clone();
    for r in &mut fleet.recipes {
        r.runs.truncate(1);
    }
    put(Path::new("status.json"), &serde_json::to_string(&fleet)?)?;
    Ok(Written {
        files,
        index_bytes: index.len(),
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

/// `fresh` takes `out`'s name. An existing `out` (a directory, or anything planted there) is
/// exchanged with it in one `renameat2(RENAME_EXCHANGE)`, then removed from its new name.
fn replace(fresh: &Path, out: &Path) -> Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    let exists = std::fs::symlink_metadata(out).is_ok();
    if !exists {
        return std::fs::rename(fresh, out)
            .with_context(|| format!("cannot put the status page at {}", out.display()));
    }
    renameat_with(CWD, fresh, CWD, out, RenameFlags::EXCHANGE)
        .with_context(|| format!("cannot put the status page at {}", out.display()))?;
    // `fresh` now names what was at `out`: a link is removed as a link, a directory whole
    // (remove_dir_all follows no link inside it).
    let old = std::fs::symlink_metadata(fresh)?;
    if old.is_dir() {
        std::fs::remove_dir_all(fresh)
    } else {
        std::fs::remove_file(fresh)
    }
    .with_context(|| format!("cannot remove the old page at {}", fresh.display()))
}
