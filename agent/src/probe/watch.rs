//! One recipe's probe: the comment, then the wait for the three stages, each recorded in the
//! journal as it is first seen. Each probe comments once, on a head of its own; the comment
//! carries a marker with the head, so later looks tell probe comments from the bridge's replies.
//! Anyone may comment on the pull request, so the looks read only the comments since the
//! probe's own, and judge from reactions and statuses when even those are too many to read.

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use super::scratch::Scratch;
use super::stages::{Rules, Seen, Stage, BRIDGE_EVENT};
use crate::deadline::Deadline;
use crate::drone::{Build, Drone};
use crate::forge::{Discussion, Listed, Posted};
use crate::ledger::{Ledger, ProbeOutcome};
use crate::settings::probe::ProbeSettings;

/// The comments' hidden marker: `<!-- cc-ci-probe HEAD -->`.
const MARKER: &str = "<!-- cc-ci-probe";

pub fn marker(head: &str) -> String {
    format!("{MARKER} {head} -->")
}

fn comment_body(settings: &ProbeSettings, recipe: &str, head: &str) -> String {
    format!(
        "{}\n\n{}\nThis comment is cc-ci's probe: it checks that `{}` on this mirror starts a CI \
         build of {} and that the build reports back. It comments once per head of this pull \
         request. To stop it for this recipe, set `probe = false` under `[recipe.{recipe}]` in \
         the CI host's enrollment.",
        settings.comment,
        marker(head),
        settings.comment,
        crate::git::short(head),
    )
}

/// One stage as a probe saw it.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct StageSeen {
    pub stage: Stage,
    /// Milliseconds from the comment.
    pub after_ms: u64,
    pub seen: String,
}

/// How one probe ended.
#[derive(Debug, Clone, Serialize)]
pub struct Ending {
    pub outcome: ProbeOutcome,
    pub stopped_at: Option<Stage>,
    pub stages: Vec<StageSeen>,
    pub ci_state: Option<String>,
    pub detail: String,
}

pub struct Watch<'a> {
    pub talk: &'a dyn Discussion,
    pub drone: Option<&'a Drone>,
    pub settings: &'a ProbeSettings,
    pub ledger: &'a Ledger,
    /// The mirror's `org/recipe`, which is Drone's name for it too.
    pub full_name: String,
}

impl Watch<'_> {
    /// Posts the trigger on `scratch`'s head and records it, within the probe's `deadline`.
    pub fn comment(
        &self,
        id: i64,
        recipe: &str,
        scratch: &Scratch,
        deadline: Deadline,
    ) -> Result<Posted> {
        let body = comment_body(self.settings, recipe, &scratch.head);
        let posted = self
            .talk
            .post_comment(recipe, scratch.pull, &body, deadline)?;
        self.ledger.probe_commented(id, posted.id)?;
        Ok(posted)
    }

    /// Everything the forge (and Drone) show of the probe now.
    fn look(
        &self,
        recipe: &str,
        scratch: &Scratch,
        comment: &Posted,
        deadline: Deadline,
    ) -> Result<Seen> {
        let since = Some(comment.created_at.as_str());
        let (replies, replies_unread) =
            match self.talk.comments(recipe, scratch.pull, since, deadline)? {
                Listed::All(all) => (
                    all.into_iter()
                        .filter(|c| c.id > comment.id && !c.body.contains(MARKER))
                        .collect(),
                    None,
                ),
                Listed::TooMany(why) => (Vec::new(), Some(why)),
            };
        let (builds, drone_note) = self.drone_builds(&scratch.head, deadline);
        Ok(Seen {
            reactions: self.talk.reactions(recipe, comment.id, deadline)?,
            replies,
            replies_unread,
            statuses: self.talk.statuses(recipe, &scratch.head, deadline)?,
            builds,
            drone_note,
        })
    }

    /// The bridge's Drone builds of `head`, and why Drone showed none where it could not be
    /// read or lists nothing at all. A Drone that cannot answer fails only the stage it
    /// proves: the reactions and statuses are read all the same.
    fn drone_builds(&self, head: &str, deadline: Deadline) -> (Option<Vec<Build>>, Option<String>) {
        let Some(d) = self.drone else {
            return (None, None);
        };
        match d.builds(&self.full_name, deadline) {
            // Drone's list of a repository's builds does not look at activation (handler/api/
            // repos/builds/list.go): `[]` is a repository never activated, or activated and
            // never built. Both are said; which it is, Drone's repository page shows.
            Ok(all) if all.is_empty() => (
                Some(all),
                Some(format!(
                    "Drone lists no build of {} at all: it is not activated in Drone (activate \
                     it there, which also installs Drone's webhook), or it is and has never \
                     been built",
                    self.full_name
                )),
            ),
            Ok(all) => {
                let ours = all
                    .into_iter()
                    .filter(|b| b.after == head && b.event == BRIDGE_EVENT)
                    .collect();
                (Some(ours), None)
            }
            Err(e) => (Some(Vec::new()), Some(format!("{e:#}"))),
        }
    }

    /// Waits until `deadline` (the probe's `probe.timeout`) for the stages, in order, asking
    /// every `poll_interval`. Every request of a look is under the deadline, so a slow forge
    /// cuts the look short instead of keeping the probe running.
    pub fn wait(
        &self,
        (id, recipe): (i64, &str),
        (scratch, comment): (&Scratch, &Posted),
        deadline: Deadline,
    ) -> Result<Ending> {
        let rules = Rules {
            bridge_login: self.settings.bridge_login.as_deref(),
            ci_context: &self.settings.ci_context,
        };
        let start = Instant::now();
        let mut stages: Vec<StageSeen> = Vec::new();
        let mut answered = false;
        // Why the replies could not be read, if at some look they could not; what Drone said
        // when it showed no build, at the last look it answered.
        let (mut unread, mut drone_note) = (None, None);
        loop {
            // The last look's error: a forge that does not answer now may at the next look.
            let trouble = match self.look(recipe, scratch, comment, deadline) {
                Ok(seen) => {
                    answered = true;
                    unread = seen.replies_unread.clone().or(unread);
                    if !deadline.left().is_some_and(|l| l.is_zero()) {
                        drone_note.clone_from(&seen.drone_note);
                    }
                    self.record(id, (&rules, &seen), start, &mut stages)?;
                    if stages.len() == Stage::ALL.len() {
                        return Ok(proven(&rules, &seen, start, stages));
                    }
                    None
                }
                // A look the deadline cut short, after one that was answered, is the wait
                // ending, not trouble: what the earlier looks saw is the verdict.
                Err(_) if answered && deadline.left().is_some_and(|l| l.is_zero()) => None,
                Err(e) => {
                    tracing::warn!("{recipe}: cannot look at the probe now: {e:#}");
                    Some(format!("{e:#}"))
                }
            };
            let left = deadline.left().unwrap_or(self.settings.poll_interval);
            if left.is_zero() {
                return Ok(self.ran_out(stages, trouble, (unread, drone_note)));
            }
            std::thread::sleep(self.settings.poll_interval.min(left));
        }
    }

    /// Records, in order, the stages `seen` shows beyond those already in `stages`.
    fn record(
        &self,
        id: i64,
        (rules, seen): (&Rules<'_>, &Seen),
        start: Instant,
        stages: &mut Vec<StageSeen>,
    ) -> Result<()> {
        for stage in Stage::ALL.into_iter().skip(stages.len()) {
            let Some(evidence) = rules.evidence(stage, seen) else {
                break;
            };
            self.ledger.probe_stage(id, stage.column(), &evidence)?;
            stages.push(StageSeen {
                stage,
                after_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
                seen: evidence,
            });
        }
        Ok(())
    }

    fn ran_out(
        &self,
        stages: Vec<StageSeen>,
        trouble: Option<String>,
        (unread, drone_note): (Option<String>, Option<String>),
    ) -> Ending {
        let waited = humantime::format_duration(self.settings.timeout);
        if let Some(e) = trouble {
            return Ending {
                outcome: ProbeOutcome::Failed,
                stopped_at: None,
                stages,
                ci_state: None,
                detail: format!(
                    "the forge did not answer the last look before probe.timeout ({waited}) \
                     ran out ({e}): nothing is judged; check the forge's load, or raise \
                     probe.timeout if it is always this slow"
                ),
            };
        }
        let missing = Stage::ALL[stages.len()];
        // Only the first stage can rest on a reply.
        let unread = match unread {
            Some(why) if missing == Stage::PickedUp => format!(
                " (too many comments after the probe's to read them, so a reply by the bridge \
                 would not have been seen: {why}; reactions and statuses were read)"
            ),
            _ => String::new(),
        };
        // What Drone said is the cause where it showed no build.
        let why = match drone_note {
            Some(note) if missing == Stage::BuildStarted => {
                format!("the bridge saw the comment, but Drone shows no build of the head: {note}")
            }
            _ => missing.failure(&self.full_name),
        };
        Ending {
            outcome: ProbeOutcome::Stopped,
            stopped_at: Some(missing),
            detail: format!(
                "stopped at {} after {waited}: {why}{unread}",
                missing.as_str()
            ),
            stages,
            ci_state: None,
        }
    }
}

/// The ending of a probe whose every stage was seen.
fn proven(rules: &Rules<'_>, seen: &Seen, start: Instant, stages: Vec<StageSeen>) -> Ending {
    let state = rules.reported(seen).map(|(_, s)| s);
    Ending {
        outcome: ProbeOutcome::Proven,
        stopped_at: None,
        detail: format!(
            "the CI reported {} after {}s",
            state.as_deref().unwrap_or("back"),
            start.elapsed().as_secs()
        ),
        ci_state: state,
        stages,
    }
}
