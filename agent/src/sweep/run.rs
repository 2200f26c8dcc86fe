//! One sweep: sync the canonical recipes' mirrors, find each one's latest release, and run CI
//! cold on it only when it is newer than the canonical; promote it when green.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::canonical;
use super::export::export;
use super::greenness::Ended;
use super::junit::TierFrom;
use super::place::RunPlace;
use super::versions::{choose, Candidate, Release, Verdict};
use crate::busy::{self, Busy};
use crate::error::{Busy as BusyError, Unusable};
use crate::exit::Exit;
use crate::git::{Git, RefSet};
use crate::ledger::{Canonical, JobLock, Ledger, RunEnd, RunResult, SweepOutcome, SweepState};
use crate::mirrors::{self, Outcome as MirrorOutcome, RecipeResult};
use crate::output::{Answer, Output, Tone};
use crate::process::Cmd;
use crate::settings::config::{Config, HookEvent};
use crate::settings::enrollment::{Enrollment, Recipe, TestPolicy};
use crate::settings::rules::check_release_tag;

#[derive(schemars::JsonSchema, Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    /// No release tag on the branch at all.
    SkipNoRelease,
    /// `tests = "exempt"`: no suite to judge a release by, so nothing is promoted.
    SkipExempt {
        reason: String,
    },
    /// The latest release is the canonical (or older): nothing to test.
    SkipNoNewVersion {
        latest: String,
    },
    /// This commit was judged before (green or red); `--force` runs it again.
    SkipAlreadyJudged {
        tag: String,
        result: RunResult,
    },
    SkipMirrorFailed {
        error: String,
    },
    SkipOutOfTime,
    Promoted {
        tag: String,
        commit: String,
        run: i64,
        base: Option<String>,
        /// The tag under which this commit was already judged green: not run again.
        #[serde(skip_serializing_if = "Option::is_none")]
        green_as: Option<String>,
    },
    Red {
        tag: String,
        commit: String,
        run: i64,
        kept: Option<String>,
        detail: String,
    },
    Error {
        detail: String,
    },
}

#[derive(schemars::JsonSchema, Debug, Serialize)]
pub struct RecipeSweep {
    pub recipe: String,
    #[serde(flatten)]
    pub decision: Decision,
}

pub struct Options {
    pub force: bool,
    pub only: Vec<String>,
}

fn canonical_recipes(enrollment: &Enrollment, only: &[String]) -> Result<Vec<Recipe>> {
    let all: Vec<Recipe> = enrollment
        .enrolled()
        .filter(|r| r.canonical)
        .cloned()
        .collect();
    if only.is_empty() {
        return Ok(all);
    }
    only.iter()
        .map(|n| {
            all.iter().find(|r| &r.name == n).cloned().ok_or_else(|| {
                Unusable(format!(
                    "{n:?} is not an enrolled recipe with canonical = true"
                ))
                .into()
            })
        })
        .collect()
}

/// Every tag's name and commit, and a digest of the branch head and tags: when it has not
/// changed since the last sweep, neither has the latest release.
fn digest(refs: &RefSet) -> String {
    let mut d = format!("head={}", refs.branch.as_deref().unwrap_or("-"));
    for (name, tag) in &refs.tags {
        d.push_str(&format!(";{name}={}", tag.oid));
    }
    d
}

/// The recipe's latest release on its branch, from the ledger when the refs are unchanged,
/// else from the cache (brought up to the mirror first when it is behind).
fn latest_release(
    config: &Config,
    git: &Git,
    ledger: &Ledger,
    recipe: &Recipe,
    mirror_url: &str,
    refs: &RefSet,
) -> Result<(Option<Release>, Vec<Verdict>)> {
    let d = digest(refs);
    let remembered = ledger.sweep_state(&recipe.name)?;
    if let Some(SweepState {
        digest: stored,
        latest_tag: Some(tag),
        latest_commit: Some(commit),
    }) = remembered
    {
        if stored == d {
            if let Ok(version) = check_release_tag(&tag) {
                return Ok((
                    Some(Release {
                        tag,
                        commit,
                        version,
                    }),
                    Vec::new(),
                ));
            }
        }
    }
    let Some(head) = refs.branch.clone() else {
        return Ok((None, Vec::new()));
    };
    let cache = config
        .state_dir
        .join("mirrors")
        .join(format!("{}.git", recipe.name));
    git.init_bare(&cache)?;
    let cached = git.local_refs(&cache, &recipe.branch)?;
    if !cached.same_as(refs) {
        git.fetch(&cache, mirror_url, &recipe.branch)
            .context("updating the cache")?;
    }
    let (latest, verdicts) = release_in(config, git, &cache, refs, &head);
    ledger.sweep_state_set(
        &recipe.name,
        &d,
        latest.as_ref().map(|r| r.tag.as_str()),
        latest.as_ref().map(|r| r.commit.as_str()),
    )?;
    Ok((latest, verdicts))
}

/// The latest release among `refs`' tags on the branch at `head`, judged in `cache`.
fn release_in(
    config: &Config,
    git: &Git,
    cache: &Path,
    refs: &RefSet,
    head: &str,
) -> (Option<Release>, Vec<Verdict>) {
    let candidates: Vec<Candidate<'_>> = refs
        .tags
        .iter()
        .map(|(n, t)| Candidate {
            tag: n,
            commit: t.commit(),
        })
        .collect();
    choose(&candidates, config.sweep.allow_prerelease, |c| {
        git.is_ancestor(cache, c, head)
    })
}

/// The upgrade base handed to CI: `upgrade_base`, else the canonical; only if strictly older.
pub fn upgrade_base(
    recipe: &Recipe,
    canonical: Option<&Canonical>,
    version: &semver::Version,
) -> Option<String> {
    let base = recipe
        .upgrade_base
        .clone()
        .or_else(|| canonical.map(|c| c.version.clone()))?;
    let v = check_release_tag(&base).ok()?;
    (v.cmp_precedence(version) == std::cmp::Ordering::Less).then_some(base)
}

/// Fills the placeholders of an argv template in one pass: a value that itself contains
/// `{recipe}` (a tag, a URL) is left as it is, never substituted again.
fn substitute(argv: &[String], values: &[(&str, &str)]) -> Vec<String> {
    argv.iter()
        .map(|arg| {
            let mut out = String::with_capacity(arg.len());
            let mut rest = arg.as_str();
            'scan: while !rest.is_empty() {
                if rest.starts_with('{') {
                    for (k, v) in values {
                        if let Some(after) = rest.strip_prefix(k) {
                            out.push_str(v);
                            rest = after;
                            continue 'scan;
                        }
                    }
                }
                let mut chars = rest.chars();
                if let Some(c) = chars.next() {
                    out.push(c);
                }
                rest = chars.as_str();
            }
            out
        })
        .collect()
}

/// A teardown that failed is said in the log and the job's warnings; it changes no verdict.
fn said_teardown(
    done: &Result<crate::process::Logged, crate::process::ProcessError>,
    log: &mut std::fs::File,
) {
    match done {
        Ok(d) if !d.status.success() => {
            tracing::warn!("teardown failed ({})", d.status);
        }
        Ok(_) => {}
        Err(e) => {
            let _ = writeln!(log, "{e}");
            tracing::warn!("teardown: {e}");
        }
    }
}

/// What a finished CI command gave: a spawn failure is no verdict (nothing of the release ran);
/// anything else is judged from the exit status and the results (docs/sweep.md, "Greenness").
fn run_end(
    done: &Result<crate::process::Logged, crate::process::ProcessError>,
    (expected, tier_from): (Option<&[String]>, TierFrom),
    place: &RunPlace,
    log: &mut std::fs::File,
) -> RunEnd {
    let (exited, exit_code) = match done {
        Ok(d) if d.status.success() => (Ok(()), d.status.code()),
        Ok(d) => (
            Err((d.status.to_string(), last_line(&d.tail))),
            d.status.code(),
        ),
        Err(e @ crate::process::ProcessError::Spawn { .. }) => {
            let _ = writeln!(log, "{e}");
            return RunEnd {
                result: RunResult::Error,
                greenness: 1.0,
                exit_code: None,
                detail: format!("CI could not be started: {e}"),
                tiers: Vec::new(),
                log_tail: None,
            };
        }
        Err(e) => {
            let _ = writeln!(log, "{e}");
            (Err((e.to_string(), String::new())), None)
        }
    };
    let read = place.read_results(tier_from);
    // Without tiers, no results is the usual case, and the log's last line stays CI's own.
    if let (Err(why), Some(_)) = (&read, expected) {
        let _ = writeln!(log, "cc-ci: results: {why}");
    }
    let v = super::greenness::judge(
        expected,
        exited
            .as_ref()
            .map(|_| ())
            .map_err(|(status, said)| Ended { status, said }),
        read,
    );
    RunEnd {
        result: v.result,
        greenness: v.degree,
        exit_code,
        detail: v.detail,
        tiers: v.tiers,
        log_tail: None,
    }
}

/// How much of a run's log its record keeps, for its status page: the end, where CI says why
/// it failed.
const LOG_TAIL: usize = 4096;

/// What a finished command put at the end of the log: its output's tail (the agent's tokens
/// already out of it), or why it did not run to its end.
fn said(done: &Result<crate::process::Logged, crate::process::ProcessError>) -> String {
    match done {
        Ok(d) => d.tail.clone(),
        Err(e) => format!("{e}\n"),
    }
}

/// The last [`LOG_TAIL`] bytes of `text`, cut at a character.
fn log_end(text: &str) -> String {
    let mut at = text.len().saturating_sub(LOG_TAIL);
    while !text.is_char_boundary(at) {
        at += 1;
    }
    text[at..].to_string()
}

/// The log file of one run, opened in the state directory without following a link.
fn open_log(log: &Path) -> Result<std::fs::File> {
    let (dir, name) = crate::fsutil::Dir::of_file(log)?;
    let file = dir
        .open_own_file(&name, 0o640)?
        .with_context(|| format!("{} is not a plain file", log.display()))?;
    file.set_len(0)?;
    Ok(file)
}

/// The last non-empty line of a run's output, for its one-line detail.
fn last_line(tail: &str) -> String {
    let line: String = tail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    line
}

/// Writes `<dir>/<recipe>/canonical.json` atomically, for the harness that reattaches warm volumes.
struct Sweeper<'a> {
    config: &'a Config,
    forge: &'a dyn crate::forge::Forge,
    git: Git,
    out: &'a Output,
    force: bool,
    deadline: Instant,
    /// The agent's tokens, kept out of what a run records.
    known: crate::secrets::Known,
    /// What a person at the terminal sees while a recipe is tested, and which of how many.
    progress: crate::progress::Progress,
    at: std::cell::Cell<(usize, usize)>,
}

impl Sweeper<'_> {
    fn sweep_one(
        &self,
        ledger: &mut Ledger,
        recipe: &Recipe,
        synced: &RecipeResult,
    ) -> Result<Decision> {
        if let TestPolicy::Exempt { reason } = &recipe.tests {
            return Ok(Decision::SkipExempt {
                reason: reason.clone(),
            });
        }
        if matches!(synced.outcome, MirrorOutcome::Failed | MirrorOutcome::Busy) {
            return Ok(Decision::SkipMirrorFailed {
                error: synced.error.clone().unwrap_or_default(),
            });
        }
        let Some(refs) = &synced.refs else {
            return Ok(Decision::SkipMirrorFailed {
                error: "the mirror sync reported no refs".into(),
            });
        };
        self.recheck_canonical(ledger, recipe, refs)?;
        let mirror_url = self.forge.mirror_url(&recipe.name);
        let (latest, _) =
            latest_release(self.config, &self.git, ledger, recipe, &mirror_url, refs)?;
        let Some(release) = latest else {
            return Ok(Decision::SkipNoRelease);
        };
        let canonical = ledger.canonical(&recipe.name)?;
        if let Some(c) = &canonical {
            let newer = match check_release_tag(&c.version) {
                Ok(cv) => release.version.cmp_precedence(&cv) == std::cmp::Ordering::Greater,
                Err(_) => true,
            };
            if !newer {
                return Ok(Decision::SkipNoNewVersion {
                    latest: release.tag,
                });
            }
        }
        let queue = ledger.queue(&recipe.name, &recipe.branch)?;
        if !self.force {
            if let Some(run) = ledger.judged(queue, &release.commit)? {
                let earlier = run.tag.clone().unwrap_or_default();
                if run.result == RunResult::Green && earlier != release.tag {
                    // The same commit, green under another tag: the same tree was judged, so
                    // its result is this tag's too (docs/sweep.md).
                    let c = ledger.promote_judged(
                        run.id,
                        &recipe.name,
                        &release.tag,
                        &release.commit,
                    )?;
                    if let Some(dir) = &self.config.sweep.canonical_export_dir {
                        export(dir, &c)?;
                    }
                    return Ok(Decision::Promoted {
                        tag: release.tag,
                        commit: release.commit,
                        run: run.id,
                        base: None,
                        green_as: Some(earlier),
                    });
                }
                return Ok(Decision::SkipAlreadyJudged {
                    tag: release.tag,
                    result: run.result,
                });
            }
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Decision::SkipOutOfTime);
        }
        self.test_and_judge(
            ledger,
            recipe,
            &release,
            canonical.as_ref(),
            queue,
            &mirror_url,
            left,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn test_and_judge(
        &self,
        ledger: &mut Ledger,
        recipe: &Recipe,
        release: &Release,
        canonical: Option<&Canonical>,
        queue: i64,
        mirror_url: &str,
        left: Duration,
    ) -> Result<Decision> {
        let s = &self.config.sweep;
        let Some(command) = &s.command else {
            return Err(Unusable(format!(
                "{}: [sweep] has no command to run CI with",
                self.config.path.display()
            ))
            .into());
        };
        let base = upgrade_base(recipe, canonical, &release.version);
        let logs = self.config.state_dir.join("sweep/logs").join(&recipe.name);
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        let trigger = if self.force { "forced" } else { "sweep" };
        let run = ledger.run_start(
            queue,
            &release.commit,
            &release.tag,
            &release.tag,
            base.as_deref(),
            trigger,
        )?;
        let log = logs.join(format!("{run}.log"));
        ledger.run_log(run, &log.to_string_lossy())?;
        let place = RunPlace::make(self.config, &recipe.name, run)?;
        let (work, results) = (
            place.work.to_string_lossy(),
            place.results.to_string_lossy(),
        );
        let values = [
            ("{recipe}", recipe.name.as_str()),
            ("{version}", release.tag.as_str()),
            ("{commit}", release.commit.as_str()),
            ("{mirror_url}", mirror_url),
            ("{workdir}", work.as_ref()),
            ("{base}", base.as_deref().unwrap_or("")),
            ("{results}", results.as_ref()),
        ];
        self.say(
            recipe,
            &format!("testing {} cold (CI log {})", release.tag, log.display()),
        );
        let (at, of) = self.at.get();
        self.progress.set(
            format!(
                "sweep {at} of {of}: {} {} cold, CI",
                recipe.name, release.tag
            ),
            Some(log.clone()),
        );
        let expected = recipe.tiers.as_deref().or(s.tiers.as_deref());
        let judged_by = (expected, recipe.tier_from.unwrap_or(s.tier_from));
        let end = self.run_ci(
            command,
            &values,
            (&place, &log),
            judged_by,
            s.timeout.min(left),
        );
        place.remove();
        self.record(
            ledger,
            (run, queue, end?),
            (recipe, release, canonical),
            base,
        )
    }

    /// Runs CI and its teardown in the run's place, each as the CI user, their output to the
    /// log as it comes (the agent's tokens taken out), and judges the run by its exit status
    /// and its results; the log's end goes with the judgement.
    fn run_ci(
        &self,
        command: &[String],
        values: &[(&str, &str)],
        (place, log): (&RunPlace, &Path),
        judged_by: (Option<&[String]>, TierFrom),
        timeout: Duration,
    ) -> Result<RunEnd> {
        let s = &self.config.sweep;
        let ci = |argv: &[String], timeout: Duration| {
            let mut cmd = Cmd::new(&argv[0])
                .args(&argv[1..])
                .current_dir(&place.work)
                .clean_env(&s.pass_env)
                .redact(self.known.clone())
                .timeout(timeout);
            if let Some(dir) = &place.credentials {
                cmd = cmd.env("CREDENTIALS_DIRECTORY", dir);
            }
            cmd.as_ci_user()
        };
        // The log exists from the start and grows as CI prints: `tail -f` works, and memory
        // stays flat whatever CI prints.
        let mut file = open_log(log)?;
        let argv = substitute(command, values);
        let _ = writeln!(file, "$ {}", argv.join(" "));
        let done = ci(&argv, timeout).output_logged(file.try_clone()?, s.log_limit);
        let mut end = run_end(&done, judged_by, place, &mut file);
        // CI's words are recorded, reported and shown: never a token of the agent's it found.
        end.detail = self.known.redact(&end.detail);
        for t in &mut end.tiers {
            self.known
                .redact_each([&mut t.first_failure, &mut t.first_message]);
        }
        let mut tail = said(&done);
        if let Some(teardown) = &s.teardown {
            let argv = substitute(teardown, values);
            let line = format!("$ {}", argv.join(" "));
            let _ = writeln!(file, "{line}");
            let done = ci(&argv, s.timeout).output_logged(file.try_clone()?, s.log_limit);
            said_teardown(&done, &mut file);
            tail = format!("{tail}{}\n{}", self.known.redact(&line), said(&done));
        }
        end.log_tail = Some(log_end(&self.known.redact(&tail)));
        let _ = file.sync_all();
        if crate::process::keeper::present() {
            // Nothing CI started outlives its run.
            if let Err(e) = crate::process::keeper::clear() {
                tracing::warn!("cannot end what CI left running: {e:#}");
            }
        }
        Ok(end)
    }

    /// Records a run's end, and promotes it when it is green: the decision.
    fn record(
        &self,
        ledger: &mut Ledger,
        (run, queue, end): (i64, i64, RunEnd),
        (recipe, release, canonical): (&Recipe, &Release, Option<&Canonical>),
        base: Option<String>,
    ) -> Result<Decision> {
        let s = &self.config.sweep;
        if end.result == RunResult::Error {
            ledger.run_finish(run, &end)?;
            // Not a verdict, so the next sweep runs it again: say so, and how often it has been.
            let times = ledger.errors_of(queue, &release.commit)?;
            let again = match times {
                0 | 1 => "the next sweep tries it again".to_string(),
                n => format!("in error {n} times at this commit; the next sweep tries it again"),
            };
            return Ok(Decision::Error {
                detail: format!("{} ({again})", end.detail),
            });
        }
        if end.result == RunResult::Green {
            // Green, cold, the latest release, enrolled, and a tag: the only way to a canonical.
            let c = ledger.finish_and_promote(
                run,
                &end,
                &recipe.name,
                &release.tag,
                &release.commit,
            )?;
            if let Some(dir) = &s.canonical_export_dir {
                export(dir, &c)?;
            }
            Ok(Decision::Promoted {
                tag: release.tag.clone(),
                commit: release.commit.clone(),
                run,
                base,
                green_as: None,
            })
        } else {
            ledger.run_finish(run, &end)?;
            Ok(Decision::Red {
                tag: release.tag.clone(),
                commit: release.commit.clone(),
                run,
                kept: canonical.map(|c| c.version.clone()),
                detail: end.detail,
            })
        }
    }

    /// A canonical whose tag was deleted or re-made on another commit is no release any more: it
    /// falls back to the best green release still tagged, or to none, recorded and announced. A
    /// moved tag is then a new release at its new commit, tested like any other.
    fn recheck_canonical(&self, ledger: &mut Ledger, recipe: &Recipe, refs: &RefSet) -> Result<()> {
        let Some(c) = ledger.canonical(&recipe.name)? else {
            return Ok(());
        };
        if canonical::holds(&c, refs) {
            return Ok(());
        }
        let greens = ledger.green_runs(&recipe.name)?;
        let to = canonical::fallback(&greens, refs);
        let why = canonical::why_not(&c, refs);
        let detail = match to {
            Some((tag, _)) => format!("canonical {} demoted: {why}; now {tag}", c.version),
            None => format!(
                "canonical {} demoted: {why}; no other green release is still tagged, so there is none",
                c.version
            ),
        };
        ledger.demote_canonical(
            &recipe.name,
            to.map(|(tag, run)| (tag, run.commit.as_str(), run.id)),
            &detail,
        )?;
        if let Some(dir) = &self.config.sweep.canonical_export_dir {
            match ledger.canonical(&recipe.name)? {
                Some(now) => export(dir, &now)?,
                None => {
                    let _ = std::fs::remove_file(dir.join(&recipe.name).join("canonical.json"));
                }
            }
        }
        self.say(recipe, &detail);
        let details = serde_json::json!({
            "recipe": recipe.name,
            "from": c.version,
            "to": to.map(|(tag, _)| tag),
            "detail": detail,
        });
        crate::hooks::fire(
            self.config,
            ledger.clock(),
            HookEvent::CanonicalDemoted,
            details,
        );
        Ok(())
    }

    fn say(&self, recipe: &Recipe, text: &str) {
        self.out.progress(format!("  {:<24} {text}", recipe.name));
    }
}

pub fn run(ctx: &crate::context::Context, opts: Options) -> Result<Exit> {
    let config = ctx.config()?;
    let enrollment = Enrollment::load(&config.enrollment_file)?;
    let recipes = canonical_recipes(&enrollment, &opts.only)?;
    let mut ledger = Ledger::open(&config.state_dir, &ctx.clock)?;
    let sweep = ledger.sweep_begin()?;
    let lock = match start(ctx, &config, &mut ledger, sweep)? {
        Started::Go(lock) => lock,
        Started::Refused(exit) => return Ok(exit),
    };
    let interrupted = ledger.runs_interrupted()?;
    if interrupted > 0 {
        tracing::warn!(
            "{interrupted} CI run(s) were interrupted by an earlier agent; recorded as errors"
        );
    }
    // Bring canonical.json files in line with the ledger (a crash can fall between the two).
    if let Some(dir) = &config.sweep.canonical_export_dir {
        for c in ledger.canonicals()? {
            export(dir, &c)?;
        }
    }
    // One forge for the sync and the sweep: its token is read once.
    let forge = crate::forge::from_config(&config)?;
    let synced = mirrors::sync_recipes(
        (&config, forge.as_ref()),
        &recipes,
        &mut ledger,
        &ctx.out,
        &lock,
    )?;
    let sweeper = Sweeper {
        config: &config,
        forge: forge.as_ref(),
        git: mirrors::syncer(&config, forge.as_ref()).git,
        out: &ctx.out,
        force: opts.force,
        deadline: Instant::now() + config.sweep.run_timeout,
        known: crate::secrets::Known::of(&config),
        progress: crate::progress::Progress::start(&ctx.out),
        at: std::cell::Cell::new((0, recipes.len())),
    };
    let mut report = Vec::new();
    for (i, recipe) in recipes.iter().enumerate() {
        let Some(result) = synced.iter().find(|r| r.recipe == recipe.name) else {
            continue;
        };
        sweeper.at.set((i + 1, recipes.len()));
        sweeper.progress.set(
            format!("sweep {} of {}: {}", i + 1, recipes.len(), recipe.name),
            None,
        );
        // A recipe another job holds past lock_wait is not judged this week, and says why.
        let decision = match lock
            .recipe(&recipe.name, config.lock_wait)
            .map_err(|e| Decision::Error {
                detail: format!("{e:#}"),
            })
            .map(|_held| sweeper.sweep_one(&mut ledger, recipe, result))
        {
            Err(d) => d,
            Ok(Ok(d)) => d,
            Ok(Err(e)) if e.is::<Unusable>() || e.is::<BusyError>() => return Err(e),
            Ok(Err(e)) => Decision::Error {
                detail: format!("{e:#}"),
            },
        };
        print_decision(&ctx.out, &recipe.name, &decision);
        announce(&config, &ledger, &recipe.name, &decision)?;
        report.push(RecipeSweep {
            recipe: recipe.name.clone(),
            decision,
        });
    }
    finish(ctx, &mut ledger, sweep, &report)
}

enum Started {
    Go(JobLock),
    Refused(Exit),
}

/// The sweep's start: the host lock, the CI busy check, a command to run. Each refusal is
/// recorded on the sweep's row before it is said.
fn start(
    ctx: &crate::context::Context,
    config: &Config,
    ledger: &mut Ledger,
    sweep: i64,
) -> Result<Started> {
    // Mirror syncs go on beside the sweep, for every recipe but the one under test.
    let lock = JobLock::start_job(&config.state_dir, "sweep", config.lock_wait, |why| {
        ledger.sweep_finish(sweep, SweepOutcome::RefusedBusy, why)
    })?;
    if let Some(check) = &config.sweep.busy_check {
        if let Err(e) = busy::usable(check, "sweep") {
            ledger.sweep_finish(sweep, SweepOutcome::Failed, &format!("{e:#}"))?;
            return Err(e);
        }
        let refusal = match busy::check(check, &busy::watched(config)) {
            Busy::Idle => None,
            Busy::Busy(what) => Some(format!("a CI build is in flight ({what})")),
            Busy::Unknown(why) => Some(format!(
                "cannot tell whether a CI build is in flight ({why})"
            )),
        };
        if let Some(why) = refusal {
            ledger.sweep_finish(sweep, SweepOutcome::RefusedCiBusy, &why)?;
            // One answer in either format: under --format json, a refusal is an object too.
            let answer = Refused {
                sweep,
                refused: "ci-busy",
                reason: why,
            };
            ctx.out.answer(&answer, |_| {
                eprintln!(
                    "refused: {}: the whole sweep is skipped",
                    crate::output::terminal_safe(&answer.reason)
                );
            })?;
            return Ok(Started::Refused(Exit::CiBusy));
        }
    }
    if let Some(user) = &config.sweep.run_as {
        if !crate::process::keeper::present() {
            let why = format!(
                "{}: sweep.run_as = {user:?}: CI runs as {user} only through a keeper: set \
                 sweep.keeper_socket to a keeper service (as the NixOS module does), or start \
                 the sweep as root (only in a sweep started as root is the keeper its child), \
                 or remove run_as to run CI as the agent's own user (docs/reliability.md)",
                config.path.display()
            );
            ledger.sweep_finish(sweep, SweepOutcome::Failed, &why)?;
            return Err(Unusable(why).into());
        }
    }
    if config.sweep.command.is_none() {
        ledger.sweep_finish(sweep, SweepOutcome::Failed, "no sweep.command")?;
        return Err(Unusable(format!(
            "{}: [sweep] has no command to run CI with",
            config.path.display()
        ))
        .into());
    }
    Ok(Started::Go(lock))
}

/// The hooks a decision fires: greenness changes, promotions, failures.
fn announce(config: &Config, ledger: &Ledger, recipe: &str, decision: &Decision) -> Result<()> {
    announce_greenness(config, ledger, recipe, decision)?;
    let details = serde_json::json!({ "recipe": recipe, "decision": decision });
    match decision {
        Decision::Promoted { .. } => {
            crate::hooks::fire(config, ledger.clock(), HookEvent::Promotion, details);
        }
        Decision::Red { .. } | Decision::Error { .. } | Decision::SkipMirrorFailed { .. } => {
            crate::hooks::fire(config, ledger.clock(), HookEvent::SweepFailure, details);
        }
        _ => {}
    }
    Ok(())
}

/// Records the sweep's end and answers with every recipe's decision.
fn finish(
    ctx: &crate::context::Context,
    ledger: &mut Ledger,
    sweep: i64,
    report: &[RecipeSweep],
) -> Result<Exit> {
    let answer = SweepAnswer {
        sweep,
        recipes: report,
    };
    ledger.sweep_finish(sweep, SweepOutcome::Done, &answer.summary())?;
    ctx.out.give(&answer)?;
    Ok(if answer.errors() == 0 {
        Exit::Success
    } else {
        Exit::SomeFailed
    })
}

/// `sweep`'s answer: the sweep's journal id and every recipe's decision.
#[derive(schemars::JsonSchema, Serialize)]
pub(super) struct SweepAnswer<'a> {
    sweep: i64,
    recipes: &'a [RecipeSweep],
}

impl SweepAnswer<'_> {
    fn count(&self, f: fn(&Decision) -> bool) -> usize {
        self.recipes.iter().filter(|r| f(&r.decision)).count()
    }

    fn errors(&self) -> usize {
        self.count(|d| {
            matches!(
                d,
                Decision::Error { .. } | Decision::SkipMirrorFailed { .. }
            )
        })
    }

    /// The line people read and the sweep's journal row keeps.
    fn summary(&self) -> String {
        format!(
            "{} recipes: {} promoted, {} red, {} could not be judged",
            self.recipes.len(),
            self.count(|d| matches!(d, Decision::Promoted { .. })),
            self.count(|d| matches!(d, Decision::Red { .. })),
            self.errors()
        )
    }
}

impl Answer for SweepAnswer<'_> {
    fn human(&self, _out: &Output) -> String {
        format!("{}\n", self.summary())
    }
}

/// Tells the hooks when a recipe's greenness changed with this decision's run: `green`,
/// `not-green` (with the degree and the tiers that broke), or `degree-changed` between two
/// not-green runs; a repeat says nothing. Runs in error are no verdict and change nothing.
fn announce_greenness(
    config: &Config,
    ledger: &Ledger,
    recipe: &str,
    decision: &Decision,
) -> Result<()> {
    let run = match decision {
        Decision::Promoted {
            run,
            green_as: None,
            ..
        }
        | Decision::Red { run, .. } => *run,
        _ => return Ok(()),
    };
    let (now, before) = ledger.greenness_step(run)?;
    let was_green = before.as_ref().map(|b| b.result == RunResult::Green);
    let event = match (now.result, was_green) {
        (RunResult::Green, Some(true)) => return Ok(()),
        (RunResult::Green, _) => HookEvent::Green,
        (_, Some(false)) if before.is_some_and(|b| b.degree == now.degree) => return Ok(()),
        (_, Some(false)) => HookEvent::DegreeChanged,
        _ => HookEvent::NotGreen,
    };
    let failing: Vec<serde_json::Value> = ledger
        .run_tiers(run)?
        .iter()
        .filter(|t| t.judged() && !t.green)
        .map(|t| serde_json::json!({ "tier": t.tier, "reason": t.why_not_green() }))
        .collect();
    let details = serde_json::json!({
        "recipe": recipe, "run": run, "degree": now.degree, "failing": failing,
    });
    crate::hooks::fire(config, ledger.clock(), event, details);
    Ok(())
}

/// A recipe's decision for people, as it is made (the JSON answer at the end lists them all).
fn print_decision(out: &Output, recipe: &str, d: &Decision) {
    let (mark, text) = match d {
        Decision::SkipNoRelease => (
            out.paint("SKIP", Tone::Dim),
            "no-release: no release tag on the branch".into(),
        ),
        Decision::SkipExempt { reason } => (
            out.paint("SKIP", Tone::Warn),
            format!("exempt: no suite to judge a release by ({reason}), so nothing is promoted"),
        ),
        Decision::SkipNoNewVersion { latest } => (
            out.paint("SKIP", Tone::Dim),
            format!("no-new-version: {latest} is the canonical"),
        ),
        Decision::SkipAlreadyJudged { tag, result } => (
            out.paint("SKIP", Tone::Dim),
            format!("already-judged: {tag} was {result} (--force to run it again)"),
        ),
        Decision::SkipMirrorFailed { error } => (
            out.paint("SKIP", Tone::Bad),
            format!("mirror-failed: {error}"),
        ),
        Decision::SkipOutOfTime => (
            out.paint("SKIP", Tone::Warn),
            "out-of-time: sweep.run_timeout reached".into(),
        ),
        Decision::Promoted {
            tag,
            commit,
            green_as,
            ..
        } => (
            out.paint("PROMOTED", Tone::Good),
            match green_as {
                Some(was) => format!(
                    "{tag} ({}) is the canonical: its commit was green as {was}, not run again",
                    crate::git::short(commit)
                ),
                None => format!("{tag} ({}) is the canonical", crate::git::short(commit)),
            },
        ),
        Decision::Red {
            tag, kept, detail, ..
        } => (
            out.paint("RED", Tone::Bad),
            format!(
                "{tag}: {detail}; canonical stays {}",
                kept.as_deref().unwrap_or("(none)")
            ),
        ),
        Decision::Error { detail } => (out.paint("ERROR", Tone::Bad), detail.clone()),
    };
    out.progress(format!("{mark:<9} {recipe:<24} {text}"));
}

/// `sweep --explain RECIPE`'s answer (docs/sweep.md, "Why a tag was or was not taken").
#[derive(schemars::JsonSchema, Serialize)]
pub(super) struct Explained<'a> {
    recipe: &'a str,
    latest: Option<Release>,
    canonical: Option<Canonical>,
    tags: Vec<Verdict>,
    /// When the mirror the tags were read from was last synced.
    as_of: String,
    /// The last run, when it tested the latest release.
    last_run: Option<LastRun>,
}

#[derive(schemars::JsonSchema, Serialize)]
struct LastRun {
    run: crate::ledger::RunRow,
    tiers: Vec<crate::ledger::TierRow>,
}

impl Answer for Explained<'_> {
    fn human(&self, out: &Output) -> String {
        use std::fmt::Write as _;
        let mut t = String::new();
        for v in &self.tags {
            let mark = if v.taken {
                out.paint("TAKEN", Tone::Good)
            } else {
                out.paint("ignored", Tone::Dim)
            };
            let _ = writeln!(t, "{mark:<8} {:<32} {}", v.tag, v.reason);
        }
        if let Some(LastRun { run, tiers }) = &self.last_run {
            let verdict = crate::ledger::verdict_line(run, tiers);
            let _ = writeln!(t, "last run of it: run #{}, {verdict}", run.id);
        }
        let _ =
            writeln!(
            t,
            "latest release: {}; canonical: {} (the mirror as of {}; `mirrors sync` to look again)",
            self.latest.as_ref().map_or("none", |r| r.tag.as_str()),
            self.canonical.as_ref().map_or("none", |c| c.version.as_str()),
            self.as_of
        );
        t
    }
}

/// `sweep --explain RECIPE`: reads only. No lock, no sync, nothing written: the tags are the
/// mirror's as last synced (the recipe's cache), and the answer says so.
pub fn explain(ctx: &crate::context::Context, name: &str) -> Result<Exit> {
    let config = ctx.config()?;
    let enrollment = Enrollment::load(&config.enrollment_file)?;
    let recipe = enrollment
        .enrolled()
        .find(|r| r.name == name)
        .cloned()
        .ok_or_else(|| Unusable(format!("{name:?} is not an enrolled recipe")))?;
    let cache = config
        .state_dir
        .join("mirrors")
        .join(format!("{}.git", recipe.name));
    if !cache.join("HEAD").is_file() {
        return Err(Unusable(format!(
            "{name}: never synced, so there are no tags to explain: run `cc-ci-agent mirrors sync {name}` first"
        ))
        .into());
    }
    let git = Git::new(config.mirrors.git_timeout, 0);
    let refs = git
        .local_refs(&cache, &recipe.branch)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", cache.display()))?;
    let head = refs.branch.clone().unwrap_or_default();
    let (latest, verdicts) = release_in(&config, &git, &cache, &refs, &head);
    let ledger = Ledger::open_read_only(&config.state_dir, &ctx.clock)?;
    let synced_at = match &ledger {
        Some(l) => l.mirror_state(&recipe.name)?.map(|m| m.synced_at),
        None => None,
    };
    let as_of = synced_at.unwrap_or_else(|| "an unrecorded sync".into());
    let canonical = match &ledger {
        Some(l) => l.canonical(&recipe.name)?,
        None => None,
    };
    // How the latest release fared when it was last run, tier by tier.
    let judged = match (&ledger, &latest) {
        (Some(l), Some(rel)) => match l.history(&recipe.name, 1)?.into_iter().next() {
            Some(r) if r.tag.as_deref() == Some(rel.tag.as_str()) => {
                let tiers = l.run_tiers(r.id)?;
                Some((r, tiers))
            }
            _ => None,
        },
        _ => None,
    };
    ctx.out.give(&Explained {
        recipe: name,
        latest,
        canonical,
        tags: verdicts,
        as_of,
        last_run: judged.map(|(run, tiers)| LastRun { run, tiers }),
    })?;
    Ok(Exit::Success)
}
/// A sweep refused before it began (CI busy, exit 5): under `--format json` one object too.
#[derive(Serialize, schemars::JsonSchema)]
pub(super) struct Refused {
    /// The sweep's number in the ledger, refusals included.
    pub sweep: i64,
    /// Why it did not run: `ci-busy`.
    pub refused: &'static str,
    pub reason: String,
}
