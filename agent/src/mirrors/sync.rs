//! One recipe's mirror made equal to its upstream: branch and tags, nothing else.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

use serde::Serialize;

use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::error::Busy;
use crate::forge::{Closed, Forge};
use crate::ledger::JobLock;

/// In every comment the agent makes on a pull request, so that it never makes a second one.
const MARKER: &str = "<!-- cc-ci: merged upstream -->";
use crate::git::{plan, Change, ErrorKind, Git, GitError, RefSet};
use crate::settings::enrollment::Recipe;

#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Equal already: no fetch, no push.
    InSync,
    /// Changes were pushed (or the mirror was created and filled).
    Synced,
    Failed,
    /// Another job (the sweep, testing it) held the recipe past `lock_wait`: not synced this run,
    /// and not a failure; the holder synced it when it began.
    Busy,
}

#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct RecipeResult {
    pub recipe: String,
    pub outcome: Outcome,
    pub created: bool,
    pub changes: Vec<Change>,
    /// Upstream's branch moved to a commit that does not contain the old one: (old, new).
    pub rewritten: Option<(String, String)>,
    pub closed_pulls: Vec<u64>,
    /// What went wrong after the mirror was made equal: pull request housekeeping.
    pub warnings: Vec<String>,
    /// The mirror's tags deleted because an operator accepted that upstream has none.
    pub accepted_deletions: Option<usize>,
    pub error: Option<String>,
    pub upstream_head: Option<String>,
    pub tags: Option<usize>,
    /// Upstream's branch and tags as this sync saw them (the mirror's too, once synced).
    #[serde(skip)]
    pub refs: Option<RefSet>,
}

impl RecipeResult {
    fn failed(recipe: &Recipe, error: String) -> Self {
        Self {
            error: Some(error),
            ..Self::new(&recipe.name)
        }
    }

    fn busy(recipe: &Recipe, why: String) -> Self {
        Self {
            outcome: Outcome::Busy,
            error: Some(why),
            ..Self::new(&recipe.name)
        }
    }

    pub(super) fn new(recipe: &str) -> Self {
        Self {
            recipe: recipe.to_string(),
            outcome: Outcome::Failed,
            created: false,
            changes: Vec::new(),
            rewritten: None,
            closed_pulls: Vec::new(),
            warnings: Vec::new(),
            accepted_deletions: None,
            error: None,
            upstream_head: None,
            tags: None,
            refs: None,
        }
    }

    /// "main 1a2b3c4d5e6f..9f8e7d6c5b4a, 2 tags created, 1 moved, 1 deleted".
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let (mut created, mut moved, mut deleted) = (0, 0, 0);
        for c in &self.changes {
            match c {
                Change::Branch { name, from, to } => {
                    let from = from.as_deref().map_or("(none)", crate::git::short);
                    parts.push(format!("{name} {from}..{}", crate::git::short(to)));
                }
                Change::TagCreate { .. } => created += 1,
                Change::TagMove { .. } => moved += 1,
                Change::TagDelete { .. } => deleted += 1,
            }
        }
        let tags: Vec<String> = [(created, "created"), (moved, "moved"), (deleted, "deleted")]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        if !tags.is_empty() {
            parts.push(format!("tags {}", tags.join(", ")));
        }
        if self.rewritten.is_some() {
            parts.push("upstream rewrote its branch".into());
        }
        if !self.closed_pulls.is_empty() {
            let list = self
                .closed_pulls
                .iter()
                .map(|n| format!("#{n}"))
                .collect::<Vec<_>>()
                .join(", ");
            parts.push(format!("closed merged PRs {list}"));
        }
        parts.join("; ")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Upstream,
    Mirror,
}

/// Upstream's and the mirror's refs as listed before the run; `None` where git is to be asked.
type Listing = (
    Option<Result<RefSet, GitError>>,
    Option<Result<RefSet, GitError>>,
);

pub struct Syncer<'a> {
    pub forge: &'a dyn Forge,
    pub git: Git,
    /// One persistent bare cache per recipe: `<cache_dir>/<recipe>.git`.
    pub cache_dir: PathBuf,
    pub close_merged_prs: bool,
    /// One recipe's whole sync, every call and retry included.
    pub recipe_timeout: Duration,
    /// An operator accepted, for this run, that upstream deleted every tag.
    pub accept_deletions: bool,
    /// Upstream's and the mirror's refs as listed together before the run ([`Syncer::list_all`]),
    /// each side that could be read that way: a mirror found equal to upstream is in sync with
    /// no further call to the forge.
    pub listed: HashMap<String, Listing>,
}

impl Syncer<'_> {
    /// The deadline of one recipe's work, starting now.
    pub fn deadline(&self) -> Deadline {
        Deadline::after(self.recipe_timeout, "mirrors.recipe_timeout")
    }

    /// Lists both sides of every recipe at once, one connection per HTTP server
    /// ([`Git::list_many`]), and keeps the pairs it could read. Returns the connections it opened.
    pub fn list_all(&mut self, recipes: &[Recipe]) -> usize {
        let urls: Vec<(String, String)> = recipes
            .iter()
            .map(|r| (r.upstream.clone(), self.forge.mirror_url(&r.name)))
            .collect();
        let mut wanted = Vec::with_capacity(2 * recipes.len());
        for (recipe, (upstream, mirror)) in recipes.iter().zip(&urls) {
            wanted.push((upstream.as_str(), recipe.branch.as_str()));
            wanted.push((mirror.as_str(), recipe.branch.as_str()));
        }
        let listed = self.git.list_many(&wanted, self.deadline());
        let mut refs = listed.refs.into_iter();
        for recipe in recipes {
            let pair = (refs.next().flatten(), refs.next().flatten());
            if pair.0.is_some() || pair.1.is_some() {
                self.listed.insert(recipe.name.clone(), pair);
            }
        }
        listed.connections
    }

    /// The mirror as listed before the run: equal to upstream, the recipe is in sync (said in
    /// `result`) without a question to the forge's API. Upstream's refs, if they were read.
    fn look_at_listing(
        &self,
        recipe: &Recipe,
        git: &Git,
        result: &mut RecipeResult,
    ) -> Result<Option<RefSet>, String> {
        let Some((_, Some(mirror))) = self.listed.get(&recipe.name) else {
            return Ok(None);
        };
        let mirror = mirror.as_ref().map_err(mirror_unreachable)?;
        let upstream = self.upstream(recipe, git)?;
        if !upstream.same_as(mirror) {
            return Ok(Some(upstream));
        }
        result.upstream_head = upstream.branch.clone();
        result.tags = Some(upstream.tags.len());
        result.outcome = Outcome::InSync;
        result.refs = Some(upstream);
        Ok(None)
    }

    /// The recipe's cache brought up to upstream's branch and tags, and what it then holds.
    fn fill_cache(&self, recipe: &Recipe, git: &Git) -> Result<(PathBuf, RefSet), String> {
        let branch = &recipe.branch;
        let cache = self.cache_dir.join(format!("{}.git", recipe.name));
        git.init_bare(&cache)
            .map_err(|e| format!("cache {}: {e}", cache.display()))?;
        git.fetch(&cache, &recipe.upstream, branch).map_err(|e| {
            if e.message.contains("couldn't find remote ref") {
                no_branch(git, recipe)
            } else {
                format!("upstream unreachable, mirror left alone: {e}")
            }
        })?;
        let fetched = git
            .local_refs(&cache, branch)
            .map_err(|e| format!("reading the cache: {e}"))?;
        Ok((cache, fetched))
    }

    /// One side's refs (upstream's, or the mirror's with `Side::Mirror`), as listed before the
    /// run or asked of git now.
    pub(super) fn refs_of(
        &self,
        recipe: &Recipe,
        git: &Git,
        side: Side,
    ) -> Result<RefSet, GitError> {
        let listed = self.listed.get(&recipe.name).and_then(|(u, m)| match side {
            Side::Upstream => u.clone(),
            Side::Mirror => m.clone(),
        });
        listed.unwrap_or_else(|| match side {
            Side::Upstream => git.ls_remote(&recipe.upstream, &recipe.branch),
            Side::Mirror => git.ls_remote(&self.forge.mirror_url(&recipe.name), &recipe.branch),
        })
    }

    /// Upstream's refs, as listed before the run or asked now.
    fn upstream(&self, recipe: &Recipe, git: &Git) -> Result<RefSet, String> {
        let upstream = self
            .refs_of(recipe, git, Side::Upstream)
            .map_err(|e| format!("upstream unreachable, mirror left alone: {e}"))?;
        if upstream.branch.is_none() {
            return Err(no_branch(git, recipe));
        }
        Ok(upstream)
    }

    pub fn sync(&self, recipe: &Recipe) -> RecipeResult {
        let mut result = RecipeResult::new(&recipe.name);
        let deadline = self.deadline();
        let git = self.git.within(deadline);
        if let Err(e) = self.try_sync(recipe, &git, deadline, &mut result) {
            result.outcome = Outcome::Failed;
            result.error = Some(e);
        }
        result
    }

    fn try_sync(
        &self,
        recipe: &Recipe,
        git: &Git,
        deadline: Deadline,
        result: &mut RecipeResult,
    ) -> Result<(), String> {
        let name = &recipe.name;
        let branch = &recipe.branch;
        let upstream = self.look_at_listing(recipe, git, result)?;
        if result.outcome == Outcome::InSync {
            return Ok(());
        }
        let mirror_url = self.forge.mirror_url(name);

        // Look before pushing: a mirror the forge will refuse is said so before any push.
        let repository = self
            .forge
            .repository(name, deadline)
            .map_err(|e| format!("{e:#}"))?;
        if let Some(why) = repository.and_then(|r| r.unwritable(&self.forge.full_name(name))) {
            return Err(why);
        }
        let mirror = match repository {
            Some(_) => {
                let upstream = match upstream {
                    Some(refs) => refs,
                    None => self.upstream(recipe, git)?,
                };
                result.upstream_head = upstream.branch.clone();
                result.tags = Some(upstream.tags.len());
                // The cheap look: the mirror as listed before the run, or asked now. A listing
                // the mirror moved since only makes the push's lease refuse; nothing is lost.
                let mirror = self
                    .refs_of(recipe, git, Side::Mirror)
                    .map_err(|e| mirror_unreachable(&e))?;
                check_safe(&upstream, &mirror, branch, self.accept_deletions)?;
                if upstream.same_as(&mirror) {
                    result.outcome = Outcome::InSync;
                    result.refs = Some(upstream);
                    return Ok(());
                }
                Some(mirror)
            }
            // No mirror yet: the fetch below reads upstream first, so an upstream that cannot be
            // read gets no empty mirror made, and no listing of its own. One whose listing ran
            // out of time is not asked again: the fetch would only wait again.
            None => {
                if let Some((Some(Err(e)), _)) = self.listed.get(name) {
                    return Err(format!("upstream unreachable, mirror left alone: {e}"));
                }
                None
            }
        };

        // Something differs: bring the cache up to upstream, push the difference under leases.
        let (cache, fetched) = self.fill_cache(recipe, git)?;
        let mirror = match mirror {
            Some(refs) => refs,
            None => {
                self.forge
                    .create(name, branch, deadline)
                    .map_err(|e| format!("cannot create the mirror: {e:#}"))?;
                result.created = true;
                RefSet::default()
            }
        };
        check_safe(&fetched, &mirror, branch, self.accept_deletions)?;
        if fetched.tags.is_empty() && !mirror.tags.is_empty() {
            result.accepted_deletions = Some(mirror.tags.len());
        }
        let changes = plan(&fetched, &mirror, branch);
        result.upstream_head = fetched.branch.clone();
        result.tags = Some(fetched.tags.len());
        result.refs = Some(fetched.clone());

        result.rewritten = rewritten(git, (&cache, &mirror_url, branch), &mirror, &fetched);
        git.push(&cache, &mirror_url, &changes)
            .map_err(|e| push_error(&e))?;
        result.changes = changes;
        result.outcome = Outcome::Synced;

        // Housekeeping: the mirror is equal now, whatever happens here. A mirror made or still
        // empty before this push has no pull requests yet, and Gitea answers 404 on their list
        // until it has noticed the push.
        let was_empty = result.created || repository.is_some_and(|r| r.empty);
        if self.close_merged_prs && !was_empty {
            if let Some(head) = &fetched.branch {
                if let Err(w) = self.close_merged(recipe, git, &cache, head, deadline, result) {
                    result.warnings.push(w);
                }
            }
        }
        Ok(())
    }

    /// Closes open mirror PRs whose head commit upstream's branch now contains.
    fn close_merged(
        &self,
        recipe: &Recipe,
        git: &Git,
        cache: &std::path::Path,
        head: &str,
        deadline: Deadline,
        result: &mut RecipeResult,
    ) -> Result<(), String> {
        let listing = self
            .forge
            .open_pulls(&recipe.name, deadline)
            .map_err(|e| format!("synced, but listing pull requests failed: {e:#}"))?;
        if !listing.odd.is_empty() {
            let more = listing.odd.len().saturating_sub(3);
            result.warnings.push(format!(
                "{} listed pull request(s) could not be read, and were not looked at: {}{}",
                listing.odd.len(),
                listing.odd[..listing.odd.len().min(3)].join("; "),
                if more > 0 {
                    format!("; and {more} more")
                } else {
                    String::new()
                }
            ));
        }
        if !listing.skipped.is_empty() {
            let list: Vec<String> = listing.skipped.iter().map(|n| format!("#{n}")).collect();
            result.warnings.push(format!(
                "pull requests {} have no head commit (their branch is gone); not looked at",
                list.join(", ")
            ));
        }
        if !listing.complete {
            result.warnings.push(format!(
                "more open pull requests than the agent lists; only the first {} were checked \
                 for having been merged upstream",
                listing.pulls.len()
            ));
        }
        for pull in listing.pulls {
            if git.has_commit(cache, &pull.head_sha) && git.is_ancestor(cache, &pull.head_sha, head)
            {
                let n = pull.number;
                let merged = format!(
                    "its head commit {} is already on upstream's `{}` ({}), so it has been merged \
                     upstream",
                    pull.head_sha, recipe.branch, recipe.upstream
                );
                let said = match self.forge.close_pull(&recipe.name, n, deadline) {
                    Ok(Closed::Closed) => {
                        result.closed_pulls.push(n);
                        let body = format!("{MARKER}\nClosed by cc-ci: {merged}.");
                        self.forge
                            .comment_once(&recipe.name, n, MARKER, &body, deadline)
                            .map(|_| None)
                    }
                    Ok(Closed::Refused(why)) => {
                        let body = format!(
                            "{MARKER}\ncc-ci could not close this pull request, although {merged}: \
                             the forge refused ({why}). Close it by hand."
                        );
                        // Said on the pull request once; later syncs find the comment and are quiet.
                        self.forge
                            .comment_once(&recipe.name, n, MARKER, &body, deadline)
                            .map(|new| new.then(|| format!("PR #{n} is merged upstream, but the forge refused to close it: {why}")))
                    }
                    Err(e) => Err(e),
                };
                match said {
                    Ok(Some(warning)) => result.warnings.push(warning),
                    Ok(None) => {}
                    Err(e) => result
                        .warnings
                        .push(format!("closing merged PR #{n}: {e:#}")),
                }
            }
        }
        Ok(())
    }
}

fn mirror_unreachable(e: &GitError) -> String {
    if e.kind == ErrorKind::Auth {
        format!("the forge refused the credentials: {e}")
    } else {
        format!("mirror unreachable: {e}")
    }
}

/// "upstream has no branch main", with the branches it has and the key to change.
fn no_branch(git: &Git, recipe: &Recipe) -> String {
    let branch = &recipe.branch;
    let has = match git.branches(&recipe.upstream) {
        Ok(b) if b.is_empty() => "it has no branches at all".to_string(),
        Ok(mut b) => {
            b.truncate(10);
            let likely = b.iter().find(|n| *n == "master").unwrap_or(&b[0]);
            format!(
                "it has {}; if the recipe's branch is one of those, set branch = \"{likely}\" in its [recipe.{}] table",
                b.join(", "),
                recipe.name
            )
        }
        Err(_) => "its branches could not be listed".into(),
    };
    format!("upstream has no branch {branch} ({has}): refusing to touch the mirror")
}

/// An upstream that looks wiped is a failure, never an instruction to wipe the mirror.
pub(super) fn check_safe(
    upstream: &RefSet,
    mirror: &RefSet,
    branch: &str,
    accept_deletions: bool,
) -> Result<(), String> {
    if upstream.branch.is_none() {
        return Err(format!(
            "upstream has no branch {branch}: refusing to touch the mirror"
        ));
    }
    if upstream.tags.is_empty() && !mirror.tags.is_empty() && !accept_deletions {
        return Err(format!(
            "upstream answered with no tags while the mirror has {}: refusing to delete them; \
             if upstream really deleted every tag, accept it once with \
             `cc-ci-agent mirrors sync --accept-deletions RECIPE`",
            mirror.tags.len()
        ));
    }
    Ok(())
}

/// Syncs `recipes` with at most `concurrency` at once, each under its recipe lock; `on_result`
/// runs on this thread, in the order results arrive, so it can record each one as soon as it is
/// known.
///
/// A recipe whose lock another job holds (the sweep, running its CI) is put off until every other
/// recipe is done, then waited for until `wait` after the start; still held then, it is
/// [`Outcome::Busy`], left to its holder.
pub fn sync_all(
    syncer: &Syncer<'_>,
    recipes: &[Recipe],
    concurrency: usize,
    (lock, wait): (&JobLock, Duration),
    mut on_result: impl FnMut(RecipeResult),
) {
    let until = Instant::now() + wait;
    let next = AtomicUsize::new(0);
    let put_off = Mutex::new(Vec::new());
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..concurrency.clamp(1, recipes.len().max(1)) {
            let tx = tx.clone();
            let (next, put_off) = (&next, &put_off);
            scope.spawn(move || {
                while let Some(recipe) = recipes.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let result = match lock.recipe(&recipe.name, Duration::ZERO) {
                        Ok(_held) => syncer.sync(recipe),
                        Err(e) if e.is::<Busy>() => {
                            put_off
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(recipe);
                            continue;
                        }
                        Err(e) => RecipeResult::failed(recipe, format!("{e:#}")),
                    };
                    if tx.send(result).is_err() {
                        return;
                    }
                }
                loop {
                    let Some(recipe) = put_off.lock().unwrap_or_else(|p| p.into_inner()).pop()
                    else {
                        return;
                    };
                    let left = until.saturating_duration_since(Instant::now());
                    let result = match lock.recipe(&recipe.name, left) {
                        Ok(_held) => syncer.sync(recipe),
                        Err(e) if e.is::<Busy>() => RecipeResult::busy(recipe, format!("{e:#}")),
                        Err(e) => RecipeResult::failed(recipe, format!("{e:#}")),
                    };
                    if tx.send(result).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        for result in rx {
            on_result(result);
        }
    });
}

/// The mirror's old head and upstream's new one, when upstream's history was rewritten (the old
/// head is not an ancestor of the new); the old head may be only on the mirror, so it is fetched.
fn rewritten(
    git: &Git,
    (cache, mirror_url, branch): (&std::path::Path, &str, &str),
    mirror: &RefSet,
    fetched: &RefSet,
) -> Option<(String, String)> {
    let (Some(old), Some(new)) = (&mirror.branch, &fetched.branch) else {
        return None;
    };
    if old == new {
        return None;
    }
    if !git.has_commit(cache, old) {
        let _ = git.fetch_ref(
            cache,
            mirror_url,
            &format!("refs/heads/{branch}"),
            "refs/cc-ci/mirror-head",
        );
    }
    (git.has_commit(cache, old) && !git.is_ancestor(cache, old, new))
        .then(|| (old.clone(), new.clone()))
}

/// A refused push in the words that say whether a retry can help.
fn push_error(e: &crate::git::GitError) -> String {
    match e.kind {
        ErrorKind::Rejected => format!(
            "the mirror changed while it was being synced, so the push was refused and \
             nothing was overwritten; the next sync will try again: {e}"
        ),
        ErrorKind::Auth => format!("the forge refused the credentials: {e}"),
        ErrorKind::Refused => format!(
            "the forge refused the push by its own rules, so a retry will not help until \
             that is changed on the forge: {e}"
        ),
        _ => format!("pushing to the mirror: {e}"),
    }
}
