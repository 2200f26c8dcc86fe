//! The probe's scratch pull request: branch `cc-ci/probe` on the mirror, at the mirror's branch
//! plus one empty commit the agent makes for each probe, and one open pull request from it,
//! kept open between probes. Upstream is never written; the mirror's branch and tags are never
//! written either: the only ref pushed is `cc-ci/probe`, under a lease on what it held.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::deadline::Deadline;
use crate::forge::{Closed, Discussion, Forge, Opened};
use crate::git::{Change, Git};
use crate::settings::enrollment::Recipe;

pub const BRANCH: &str = "cc-ci/probe";
/// `[ci skip]` keeps Drone's own webhook builds off the probe's pull request: Drone skips a
/// pull request's hook with it in the title, and never a custom build, which is the bridge's
/// (trigger/skip.go). Their statuses would otherwise answer the probe without the bridge.
pub const TITLE: &str =
    "cc-ci probe: does !testme start CI here? (kept open, never merged) [ci skip]";
/// What a title of the probe's needs, whatever else an older agent wrote.
const SKIP: &str = "[ci skip]";
/// How often the pull request is asked whether it shows the new head yet.
const HEAD_POLL: std::time::Duration = std::time::Duration::from_millis(250);
const AUTHOR: (&str, &str) = ("cc-ci probe", "cc-ci-probe@localhost");

/// The probe's pull request as found before the push.
enum Found {
    Pull(u64),
    /// None open; `listed_all`: the listing was complete.
    None {
        listed_all: bool,
    },
}

/// The pull request and the head a probe comments on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scratch {
    pub pull: u64,
    pub head: String,
}

pub struct Mirror<'a> {
    pub git: &'a Git,
    pub forge: &'a dyn Forge,
    pub talk: &'a dyn Discussion,
    /// Where the probe keeps a bare repository per recipe to make its commits in.
    pub cache_dir: &'a Path,
}

fn body(recipe: &str) -> String {
    format!(
        "The CI host's probe uses this pull request to check, now and then, that a `!testme` \
         comment on the {recipe} mirror starts a CI build and that the build reports back. Its \
         branch is the mirror's main branch plus one empty commit per probe. Leave it open; \
         closing it only makes the next probe open another. To stop probing {recipe}, set \
         `probe = false` under `[recipe.{recipe}]` in the CI host's enrollment."
    )
}

impl Mirror<'_> {
    /// A new head for probe `id` pushed to `cc-ci/probe`, and the one open pull request from it
    /// (`last`: the one the previous probe used, looked at first).
    pub fn prepare(
        &self,
        recipe: &Recipe,
        (id, last): (i64, Option<u64>),
        deadline: Deadline,
    ) -> Result<Scratch> {
        let git = self.git.within(deadline);
        let name = &recipe.name;
        let url = self.forge.mirror_url(name);
        let heads = git
            .heads(&url, &[recipe.branch.as_str(), BRANCH])
            .with_context(|| format!("listing the branches of {}", self.forge.full_name(name)))?;
        let Some(base) = heads.get(&recipe.branch) else {
            bail!(
                "the mirror {} has no branch {}: run `cc-ci-agent mirrors sync {name}` first",
                self.forge.full_name(name),
                recipe.branch
            );
        };
        let cache = self.cache_dir.join(format!("{name}.git"));
        std::fs::create_dir_all(self.cache_dir)
            .with_context(|| format!("cannot create {}", self.cache_dir.display()))?;
        git.init_bare(&cache)?;
        // An earlier probe may have fetched it already; only its tree is needed.
        if !git.has_commit(&cache, base) {
            let branch = format!("refs/heads/{}", recipe.branch);
            git.fetch_ref(&cache, &url, &branch, "refs/probe/base")?;
        }
        // `[ci skip]` in the message: Drone skips the push hook of a commit that says so.
        let message = format!(
            "cc-ci probe #{id} of {name} {SKIP}\n\nAn empty commit on {} at {}, made for one \
             `!testme` probe (docs/probe.md). Never merged.\n",
            recipe.branch,
            crate::git::short(base)
        );
        let head = git.empty_commit(&cache, base, AUTHOR, &message)?;
        // Found, and its title mended, before the push: the push's synchronize hook carries
        // the title Drone reads.
        let found = match heads.get(BRANCH) {
            Some(_) => self.find(recipe, last, deadline)?,
            None => Found::None { listed_all: true },
        };
        let change = Change::Branch {
            name: BRANCH.to_string(),
            from: heads.get(BRANCH).cloned(),
            to: head.clone(),
        };
        git.push(&cache, &url, &[change])
            .with_context(|| format!("pushing {BRANCH} to {}", self.forge.full_name(name)))?;
        let pull = match found {
            Found::Pull(n) => n,
            Found::None { listed_all } => self.open(recipe, listed_all, deadline)?,
        };
        self.await_head(recipe, pull, &head, deadline)?;
        Ok(Scratch { pull, head })
    }

    /// Pull request `number` when it is the probe's: open, from `cc-ci/probe` of the mirror
    /// itself (never a fork's branch of that name: a `!testme` there runs the fork's code) into
    /// the recipe's branch; its title given `[ci skip]` if an older agent's lacks it.
    fn ours(&self, recipe: &Recipe, number: u64, deadline: Deadline) -> Result<bool> {
        let Some(p) = self.talk.pull(&recipe.name, number, deadline)? else {
            return Ok(false);
        };
        let ours = p.open && p.same_repo && p.head_ref == BRANCH && p.base_ref == recipe.branch;
        if ours && !p.title.contains(SKIP) {
            self.talk
                .retitle_pull(&recipe.name, number, TITLE, deadline)?;
        }
        Ok(ours)
    }

    /// Waits until the pull-request list, which the bridge polls, shows `head` as the pull
    /// request's head: Gitea 1.23 and later fill the list's `head.sha` from `refs/pull/N/head`,
    /// which a queued task moves after the push, and a bridge that read the list before then
    /// would build the previous head. (`GET .../pulls/N` shows the branch's tip at once, so it
    /// cannot tell; forge-facts.md.)
    fn await_head(&self, recipe: &Recipe, pull: u64, head: &str, deadline: Deadline) -> Result<()> {
        loop {
            let listed = self.forge.open_pulls(&recipe.name, deadline)?;
            let found = listed.pulls.into_iter().find(|p| p.number == pull);
            // Beyond what the agent lists (thousands open): nothing it could see to wait for.
            if found.is_none() && !listed.complete {
                tracing::debug!("#{pull} is beyond the listed pull requests: not waited for");
                return Ok(());
            }
            let sha = found.map(|p| p.head_sha).unwrap_or_default();
            if sha == head {
                return Ok(());
            }
            let left = deadline.left().unwrap_or(HEAD_POLL);
            if left.is_zero() {
                bail!(
                    "{}#{pull} still shows head {} after the push of {}: the forge has not \
                     moved refs/pull/{pull}/head (Gitea's pull-request queue is stuck or slow), \
                     so a !testme now would build the old head",
                    self.forge.full_name(&recipe.name),
                    crate::git::short(&sha),
                    crate::git::short(head)
                );
            }
            std::thread::sleep(HEAD_POLL.min(left));
        }
    }

    /// The open pull request from `cc-ci/probe`: the one the last probe used while it is still
    /// open, else found among the open ones, else none (the caller opens one once the branch
    /// is pushed); when there are several (a person
    /// opened one too), the oldest is kept and the others closed. A mirror with more open pull
    /// requests than the agent lists (anyone may open them) does not hide it: the last one is
    /// looked up by number, and Gitea's refusal to open a second names the first.
    fn find(&self, recipe: &Recipe, last: Option<u64>, deadline: Deadline) -> Result<Found> {
        let name = &recipe.name;
        if let Some(n) = last {
            if self.ours(recipe, n, deadline)? {
                return Ok(Found::Pull(n));
            }
        }
        let listing = self.forge.open_pulls(name, deadline)?;
        let mut ours: Vec<u64> = listing
            .pulls
            .iter()
            .filter(|p| p.head_ref == BRANCH && p.same_repo)
            .map(|p| p.number)
            .collect();
        ours.sort_unstable();
        let Some((&keep, others)) = ours.split_first() else {
            return Ok(Found::None {
                listed_all: listing.complete,
            });
        };
        for &extra in others {
            if let Closed::Refused(why) = self.forge.close_pull(name, extra, deadline)? {
                tracing::warn!("{name}: a second probe pull request #{extra} stays open: {why}");
            }
        }
        // Listed, so same-repository and from the branch; the title may still need mending.
        self.ours(recipe, keep, deadline)?;
        Ok(Found::Pull(keep))
    }

    fn open(&self, recipe: &Recipe, listed_all: bool, deadline: Deadline) -> Result<u64> {
        let name = &recipe.name;
        let opened =
            self.talk
                .open_pull(name, BRANCH, &recipe.branch, TITLE, &body(name), deadline)?;
        match opened {
            Opened::New(n) => Ok(n),
            Opened::Exists(Some(n)) if self.ours(recipe, n, deadline)? => Ok(n),
            Opened::Exists(_) => {
                let unlisted = if listed_all {
                    ""
                } else {
                    " among more open pull requests than the agent lists"
                };
                bail!(
                    "{} has an open pull request from {BRANCH} into {}{unlisted}, which the \
                     agent cannot find: close it, and the next probe opens another",
                    self.forge.full_name(name),
                    recipe.branch
                )
            }
        }
    }
}
