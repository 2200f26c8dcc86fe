//! `cc-ci-agent status-page --out DIR`: the fleet as a static site, from the ledger
//! (docs/status-page.md). No server of its own and no JavaScript: `index.html`, a page per
//! recipe, `deploys.html`, `status.json`, a badge per recipe (`badge/<recipe>.svg`) and an Atom
//! feed of greenness changes (`feed.xml`), readable from `file://` or any web server.

mod badge;
mod feed;
mod html;
pub mod model;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::clock::Clock;
use crate::context::Context;
use crate::exit::Exit;
use crate::fsutil::Dir;
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
#[derive(schemars::JsonSchema, serde::Serialize)]
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

/// Where a site is built, beside `out`: `.status-page.new-<pid>-<unpredictable>`.
const FRESH: &str = ".status-page.new";

/// Builds the site in a fresh directory beside `out`, then puts it in `out`'s place in one
/// rename (an exchange when `out` exists), so a reader sees the old site or the new, never half
/// of one; the old one is then removed without following anything in it. Everything goes
/// through the open parent directory, never a path again: a directory swapped or a link planted
/// meanwhile is never written through. What a writer killed mid-way left is removed first.
pub fn write(config: &Config, clock: &Clock, out: &Path) -> Result<Written> {
    let site = model::build(config, clock)?;
    let parent_path = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable directory name", out.display()))?;
    std::fs::create_dir_all(parent_path)
        .with_context(|| format!("cannot create {}", parent_path.display()))?;
    let parent = Dir::open(parent_path)?;
    parent.remove_orphans(FRESH);
    let (fresh_name, fresh) = parent.fresh_subdir(FRESH, 0o755)?;
    let written = match fill(&fresh, &site) {
        Ok(w) => w,
        Err(e) => {
            let _ = parent.remove_tree(&fresh_name);
            return Err(e);
        }
    };
    if parent.swap_in(&fresh_name, name)? {
        parent
            .remove_tree(&fresh_name)
            .with_context(|| format!("cannot remove the old page beside {}", out.display()))?;
    }
    Ok(written)
}

fn fill(dir: &Dir, site: &model::Site) -> Result<Written> {
    let index = html::index(site);
    let mut files = 0;
    // Pages are for everyone: 0644 whatever the umask (the units' is 0027).
    let mut put = |dir: &Dir, name: &str, text: &str| -> Result<()> {
        dir.create_new(name, text.as_bytes(), 0o644)?;
        files += 1;
        Ok(())
    };
    put(dir, "index.html", &index)?;
    put(dir, "deploys.html", &html::deploys(site))?;
    let recipes = dir.new_subdir("recipe", 0o755)?;
    for r in &site.recipes {
        put(
            &recipes,
            &format!("{}.html", r.name),
            &html::recipe(site, r),
        )?;
    }
    // For recipe maintainers: a badge per recipe, and the feed of greenness changes.
    let badges = dir.new_subdir("badge", 0o755)?;
    for r in &site.recipes {
        put(&badges, &format!("{}.svg", r.name), &badge::svg(r))?;
    }
    put(dir, "feed.xml", &feed::atom(site))?;
    // The fleet with each recipe's newest run: its history is on its page (and in `history
    // --format json`); at 1,000 recipes with 50 runs each, all of it as JSON would be 55 MB.
    let mut fleet = site.clone();
    for r in &mut fleet.recipes {
        r.runs.truncate(1);
    }
    put(dir, "status.json", &serde_json::to_string(&fleet)?)?;
    Ok(Written {
        files,
        index_bytes: index.len(),
    })
}

/// This family's JSON answers, for `crate::schemas`.
pub(crate) fn answers() -> Vec<crate::output::Answers> {
    use crate::output::{of, Answers};
    vec![Answers::new("status-page", vec![of::<Wrote<'static>>])]
}
