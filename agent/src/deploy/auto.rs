//! `deploy --auto`: what the deploy timer runs every few minutes. An idle host costs one
//! `ls-remote`; a commit that landed upstream is pulled (fast-forward only) and deployed with
//! verify-and-rollback; a commit whose deploy went back is not tried again until the branch moves
//! (or `--retry`); CI busy, or another job at work, defers to the next run; a refusal is recorded
//! and told to the hooks once per state, not once per run.

use anyhow::Result;

use super::commands::{announce, finish_output, flake_of, host_of, open_journal, run_deploy};
use super::interrupted::settle_unfinished;
use super::observer::{Event, Observer, Printer};
use super::preflight;
use super::steps::Options;
use crate::busy::{self, Busy as CiBusy};
use crate::context::Context;
use crate::error::Busy;
use crate::exit::Exit;
use crate::ledger::{DeployRow, JobLock, Ledger, Outcome};
use crate::published::{self, DeployReport};

/// Why a timer run does nothing this time.
enum Quiet {
    /// HEAD is upstream's commit, and that commit is deployed.
    UpToDate(String),
    /// Upstream's commit already went back once.
    WentBack(Box<DeployRow>),
    /// CI, or another agent job, is busy: the next run tries again.
    Deferred(String),
}

pub fn run(ctx: &Context, flake: Option<String>, retry: bool) -> Result<Exit> {
    let config = ctx.config()?;
    let flake = flake_of(&config, flake)?;
    let (host, _) = host_of(&config)?;
    let printer = Printer { out: &ctx.out };
    let _lock = match JobLock::acquire(&config.state_dir, "deploy") {
        Ok(lock) => lock,
        Err(e) if e.is::<Busy>() => return quiet(&printer, &Quiet::Deferred(format!("{e:#}"))),
        Err(e) => return Err(e),
    };
    let journal = open_journal(&config, &ctx.clock)?;
    if let Err(e) = settle_unfinished(&journal, &host, &printer, false) {
        return match e.downcast_ref::<Busy>() {
            Some(b) => quiet(&printer, &Quiet::Deferred(b.0.clone())),
            None => Err(e),
        };
    }
    // The one round trip of an idle run. Upstream not answering, or no upstream: the pull
    // below says why, once.
    if let Ok((head, upstream)) = preflight::upstream_head(&flake.dir) {
        if let Some(q) = look(&config, &journal, (&head, &upstream), retry)? {
            publish(&config, &journal, &flake.dir, Some(&upstream))?;
            return quiet(&printer, &q);
        }
    }
    match preflight::pull(&flake.dir, config.deploy.allowed_signers.as_deref()) {
        Ok(p) => {
            printer.on(&Event::Pulled {
                from: &p.from,
                to: &p.to,
            });
            // Pulled already; the steps check the tree and deploy it.
            let from = (p.from != p.to).then_some(p.from.as_str());
            let opts = (Options::default(), from);
            let dir = flake.dir.clone();
            let exit = run_deploy(ctx, &config, (&host, &journal, &printer), flake, opts)?;
            publish(&config, &journal, &dir, Some(&p.to))?;
            Ok(exit)
        }
        Err(refused) => {
            let last = journal.deploy_history(1)?.into_iter().next();
            let same = last.as_ref().is_some_and(|r| {
                r.outcome == Some(refused.outcome)
                    && r.message.as_deref() == Some(refused.message.as_str())
            });
            if same {
                // Said and recorded when it began; the unit's exit code still says it.
                tracing::info!("still refused, as at the last run: {}", refused.message);
                return Ok(super::exit_of(refused.outcome));
            }
            let id = journal.deploy_begin("deploy", Some(&flake.to_arg()))?;
            journal.deploy_finish(id, refused.outcome, &refused.message)?;
            printer.on(&Event::Refused(&refused.message));
            announce(&config, &journal, id);
            finish_output(ctx, &journal, id, refused.outcome)
        }
    }
}

/// What makes this run a quiet one, if anything, given the checkout's HEAD and what upstream
/// names: the journal, and the CI busy check.
fn look(
    config: &crate::settings::config::Config,
    journal: &Ledger,
    (head, upstream): (&str, &str),
    retry: bool,
) -> Result<Option<Quiet>> {
    if let Some(row) = journal.deploy_last_of_commit(upstream)? {
        match row.outcome {
            Some(Outcome::Deployed | Outcome::Unchanged) if head == upstream => {
                return Ok(Some(Quiet::UpToDate(upstream.to_string())));
            }
            Some(o) if !retry && (o.went_back() || o == Outcome::BuildFailed) => {
                return Ok(Some(Quiet::WentBack(Box::new(row))));
            }
            _ => {}
        }
    }
    if let Some(check) = &config.deploy.busy_check {
        busy::usable(check, "deploy")?;
        match busy::check(check, &busy::watched(config)) {
            CiBusy::Idle => {}
            CiBusy::Busy(what) => {
                return Ok(Some(Quiet::Deferred(format!(
                    "a CI build is in flight ({what})"
                ))))
            }
            CiBusy::Unknown(why) => {
                return Ok(Some(Quiet::Deferred(format!(
                    "cannot tell whether a CI build is in flight ({why})"
                ))))
            }
        }
    }
    Ok(None)
}

/// Adds to the published deploy report what upstream named just now, and how far the running
/// commit is behind it.
fn publish(
    config: &crate::settings::config::Config,
    journal: &Ledger,
    dir: &std::path::Path,
    upstream: Option<&str>,
) -> Result<()> {
    let Some(last) = journal.deploy_history(1)?.into_iter().next() else {
        return Ok(());
    };
    let mut report = DeployReport::of(&last);
    let running = journal.deploy_last_running()?.and_then(|r| r.flake_commit);
    report.upstream_commit = upstream.map(String::from);
    report.checked_at = Some(journal.clock().rfc3339());
    report.behind = match (running.as_deref(), upstream) {
        (Some(r), Some(u)) if r == u => Some(0),
        (Some(r), Some(u)) => preflight::behind(dir, r, u),
        _ => None,
    };
    published::write(&config.state_dir, &report);
    Ok(())
}

fn quiet(printer: &Printer<'_>, q: &Quiet) -> Result<Exit> {
    let text = match q {
        Quiet::UpToDate(commit) => format!(
            "nothing new: the checkout is at upstream's {}, deployed",
            crate::git::short(commit)
        ),
        Quiet::WentBack(row) => format!(
            "upstream's {} was {} by deploy #{}: not tried again until the branch moves, or \
             `cc-ci-agent deploy --auto --retry`",
            row.flake_commit.as_deref().map_or("-", crate::git::short),
            row.outcome.map_or("-", Outcome::as_str),
            row.id
        ),
        Quiet::Deferred(why) => format!("deferred to the next run: {why}"),
    };
    tracing::info!("{text}");
    printer.on(&Event::Line(text));
    Ok(Exit::Success)
}
