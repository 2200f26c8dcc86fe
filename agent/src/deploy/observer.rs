//! What a deploy tells people as it goes. The state machine reports events; it never prints.
//! [`Printer`] writes them for people (nothing in JSON mode, where the journal row is printed at
//! the end); the unit tests record them.

use std::path::Path;

use super::verify::Verdict;
use crate::host::changes::Changes;
use crate::host::{Activation, Generation};
use crate::output::{Output, Tone};

/// One thing that happened, in the order it happened. Each is recorded in the journal first.
pub enum Event<'a> {
    /// A line said as it is: what a deploy or rollback is for, and the like.
    Line(String),
    Tree {
        flake: &'a str,
        commit: &'a str,
        flake_lock: Option<&'a str>,
    },
    /// `--pull`: HEAD before and after (the same: upstream had nothing new).
    Pulled {
        from: &'a str,
        to: &'a str,
    },
    CiIdle,
    Refused(&'a str),
    From(&'a Generation),
    FailingBefore(Vec<&'a str>),
    /// The running system is not the profile's current generation's.
    RunningElsewhere {
        running: Option<&'a Path>,
        generation: u64,
    },
    Built {
        system: &'a Path,
        seconds: f64,
    },
    BuildFailed(&'a str),
    /// What the switch will change, read before activating.
    Changes(&'a Changes),
    /// A dry run, or nothing to do: the deploy ends here, said in full.
    Ended(&'a str),
    Armed {
        unit: &'a str,
        seconds: u64,
    },
    Activated(Result<Activation, &'a str>),
    Verified(&'a Verdict),
    Committed(&'a str),
    RollingBack(&'a str),
    RolledBack {
        verdict: &'a Verdict,
        message: &'a str,
    },
    RollbackFailed {
        verdict: &'a Verdict,
        message: &'a str,
    },
    /// The dead-man switch took the deploy over; then what it said when it finished.
    Lost,
    DeadmanDone(&'a str),
    /// Something a person should know that is not this deploy's doing.
    Notice(&'a str),
}

pub trait Observer {
    fn on(&self, event: &Event<'_>);
}

/// Lines for people.
pub struct Printer<'a> {
    pub out: &'a Output,
}

impl Printer<'_> {
    fn line(&self, text: impl AsRef<str>) {
        self.out.progress(text);
    }

    fn mark(&self, ok: bool) -> String {
        if ok {
            self.out.paint("ok", Tone::Good)
        } else {
            self.out.paint("FAILED", Tone::Bad)
        }
    }

    fn verdict(&self, v: &Verdict) {
        for r in &v.results {
            let sign = if r.ok {
                self.out.paint("✓", Tone::Good)
            } else {
                self.out.paint("✗", Tone::Bad)
            };
            self.line(format!("    {sign} {}: {}", r.name, r.detail));
        }
    }
}

impl Observer for Printer<'_> {
    fn on(&self, event: &Event<'_>) {
        let paint = |text: &str, tone| self.out.paint(text, tone);
        match event {
            Event::Line(text) => self.line(text),
            Event::Tree {
                flake,
                commit,
                flake_lock,
            } => self.line(format!(
                "tree: {flake} at {} (flake.lock {})",
                crate::git::short(commit),
                flake_lock.map_or("none", crate::git::short)
            )),
            Event::Pulled { from, to } if from == to => self.line(format!(
                "pull: already at upstream's {}",
                crate::git::short(to)
            )),
            Event::Pulled { from, to } => self.line(format!(
                "pull: fast-forwarded {} to upstream's {}",
                crate::git::short(from),
                crate::git::short(to)
            )),
            Event::CiIdle => self.line("CI: no build in flight"),
            Event::Refused(message) => self.out.aside(
                format!("{}: {message}", paint("refused", Tone::Bad)),
                format!("error: {message}"),
            ),
            Event::From(g) => self.line(format!(
                "from: generation {} {}",
                g.number,
                g.path.display()
            )),
            Event::FailingBefore(units) => self.line(format!(
                "already failing before the deploy (not held against it): {}",
                units.join(", ")
            )),
            Event::RunningElsewhere {
                running,
                generation,
            } => self.line(format!(
                "{}: the running system ({}) is not generation {generation}'s; a rollback returns to generation {generation}",
                paint("note", Tone::Warn),
                running.map_or("unknown".into(), |p| p.display().to_string()),
            )),
            Event::Built { system, seconds } => self.line(format!(
                "build: {} ({seconds:.1}s) {}",
                self.mark(true),
                system.display()
            )),
            Event::BuildFailed(e) => self.line(format!("build: {}: {e}", self.mark(false))),
            Event::Changes(c) => self.line(format!("changes: {}", c.summary())),
            Event::Ended(message) => self.line(message),
            Event::Notice(message) => self.out.aside(
                format!("{}: {message}", paint("notice", Tone::Warn)),
                format!("notice: {message}"),
            ),
            other => self.say_from_activation_on(other),
        }
    }
}

impl Printer<'_> {
    /// The events from the dead-man switch's arming on: activation, verification, the end.
    fn say_from_activation_on(&self, event: &Event<'_>) {
        let paint = |text: &str, tone| self.out.paint(text, tone);
        match event {
            Event::Armed { unit, seconds } => self.line(format!(
                "dead-man switch: {unit}.timer rolls back in {seconds}s unless this deploy is confirmed"
            )),
            Event::Activated(Ok(Activation::Clean)) => {
                self.line(format!("activate: {}", self.mark(true)));
            }
            Event::Activated(Ok(Activation::UnitsFailed)) => self.line(
                "activate: done; switch-to-configuration reports failed units (judged against those failing before)",
            ),
            Event::Activated(Err(e)) => {
                self.line(format!("activate: {}: {e}", self.mark(false)));
            }
            Event::Verified(v) => {
                self.line(format!(
                    "verify: {} after {} attempt(s), {:.1}s",
                    self.mark(v.ok),
                    v.attempts,
                    v.elapsed_ms as f64 / 1000.0
                ));
                self.verdict(v);
            }
            Event::Committed(message) => {
                self.line(format!("commit: {}: {message}", self.mark(true)));
            }
            Event::RollingBack(reason) => {
                self.line(format!("{}: {reason}", paint("rolling back", Tone::Warn)));
            }
            Event::RolledBack { verdict, message } => {
                self.line(format!("rollback: {}", self.mark(true)));
                self.verdict(verdict);
                self.line(format!("{}: {message}", paint("rolled back", Tone::Warn)));
            }
            Event::RollbackFailed { verdict, message } => {
                self.verdict(verdict);
                self.line(format!("{}: {message}", paint("ROLLBACK FAILED", Tone::Bad)));
            }
            Event::Lost => self.line(
                "the dead-man switch took this deploy over before it was confirmed; waiting for its rollback",
            ),
            Event::DeadmanDone(message) => self.line(format!("dead-man switch: {message}")),
            // Said by `on`; named here so a new event must be placed in one or the other.
            Event::Line(_)
            | Event::Tree { .. }
            | Event::Pulled { .. }
            | Event::CiIdle
            | Event::Refused(_)
            | Event::From(_)
            | Event::FailingBefore(_)
            | Event::RunningElsewhere { .. }
            | Event::Built { .. }
            | Event::BuildFailed(_)
            | Event::Changes(_)
            | Event::Ended(_)
            | Event::Notice(_) => {}
        }
    }
}
