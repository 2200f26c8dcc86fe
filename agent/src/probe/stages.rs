//! The three stages of a probe, told apart from what the forge (and Drone) show. Pure: the
//! waiting loop gathers a [`Seen`], this says which stages it proves.

use serde::Serialize;

use crate::drone::Build;
use crate::forge::{Comment, CommitStatus, Reaction};

/// In the order they must happen. The words are what the journal and the report hold.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// The bridge saw the comment: a reaction to it, a reply, or a status on the head.
    PickedUp,
    /// A CI build of the head began: a Drone build of it, or the CI's status on it.
    BuildStarted,
    /// The CI set a final status on the head.
    Reported,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::PickedUp, Stage::BuildStarted, Stage::Reported];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::PickedUp => "picked-up",
            Stage::BuildStarted => "build-started",
            Stage::Reported => "reported",
        }
    }

    pub fn column(self) -> crate::ledger::StageColumn {
        use crate::ledger::StageColumn;
        match self {
            Stage::PickedUp => StageColumn::PickedUp,
            Stage::BuildStarted => StageColumn::BuildStarted,
            Stage::Reported => StageColumn::Reported,
        }
    }

    /// What it means that this stage did not happen, and where to look.
    pub fn failure(self, full_name: &str) -> String {
        match self {
            Stage::PickedUp => format!(
                "no reaction, reply or status from the bridge: the bridge does not poll \
                 {full_name} (is it in the live POLL_REPOS?), is not running, or cannot read \
                 the mirror's comments"
            ),
            Stage::BuildStarted => format!(
                "the bridge saw the comment, but no CI build of the head started: the \
                 repository is not activated in Drone, the bridge's Drone token is refused, or \
                 the build waits in Drone's queue for a runner ({full_name})"
            ),
            Stage::Reported => format!(
                "a CI build started but set no final status on the head: a runner is stuck or \
                 gone, or Drone cannot set statuses on the forge ({full_name})"
            ),
        }
    }
}

/// What the forge shows about the probe's comment and head, gathered in one look.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub reactions: Vec<Reaction>,
    /// Comments after the probe's own, that are not probe comments.
    pub replies: Vec<Comment>,
    /// Why the comments after the probe's could not be read (too many), when they could not.
    pub replies_unread: Option<String>,
    pub statuses: Vec<CommitStatus>,
    /// Drone's builds of the head; `None` without a Drone to ask.
    pub builds: Option<Vec<Build>>,
    /// Why Drone showed no build: it could not be read (never synced, a refused token), or it
    /// lists none of the repository at all (not activated).
    pub drone_note: Option<String>,
}

/// The event of a Drone build made through its API, as the bridge makes them
/// (handler/api/repos/builds/create.go). Drone's own builds from its webhook are `push` and
/// `pull_request`: they answer a push, not the comment.
pub const BRIDGE_EVENT: &str = "custom";

/// How the stages are recognised.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    /// Only this user's reactions, replies and statuses show the bridge picked it up.
    pub bridge_login: Option<&'a str>,
    /// The CI's status context, matched exactly; one ending in `*` is a prefix. Drone names a
    /// custom build's status `continuous-integration/drone` and its own webhook builds'
    /// `.../push` and `.../pr` (service/status/util.go), so a prefix would take those too.
    pub ci_context: &'a str,
}

impl Rules<'_> {
    /// Gitea's logins are case-insensitive (a user signs in as `Bridge-Bot` or `bridge-bot`).
    fn by_bridge(&self, login: &str) -> bool {
        self.bridge_login
            .is_none_or(|b| b.eq_ignore_ascii_case(login))
    }

    fn ci(&self, s: &CommitStatus) -> bool {
        match self.ci_context.strip_suffix('*') {
            Some(prefix) => s.context.starts_with(prefix),
            None => s.context == self.ci_context,
        }
    }

    /// What proves `stage` in `seen`, said for the journal; `None` when nothing does.
    pub fn evidence(&self, stage: Stage, seen: &Seen) -> Option<String> {
        match stage {
            Stage::PickedUp => self.picked_up(seen),
            Stage::BuildStarted => self.build_started(seen),
            Stage::Reported => self.reported(seen).map(|(s, _)| s),
        }
    }

    fn picked_up(&self, seen: &Seen) -> Option<String> {
        let reaction = seen.reactions.iter().find(|r| self.by_bridge(&r.login));
        let reply = seen.replies.iter().find(|c| self.by_bridge(&c.login));
        // Without a login, only the CI's own status counts: anyone's else (Drone's push and
        // pull-request builds among them) could be set without the bridge.
        let status = seen.statuses.iter().find(|s| match self.bridge_login {
            Some(_) => self.by_bridge(&s.login),
            None => self.ci(s),
        });
        reaction
            .map(|r| format!("a {:?} reaction by {}", r.content, r.login))
            .or_else(|| reply.map(|c| format!("a reply by {} (comment {})", c.login, c.id)))
            .or_else(|| {
                status.map(|s| format!("a {} status {:?} by {}", s.state, s.context, s.login))
            })
            .or_else(|| {
                // A build of a head made minutes ago for this comment: something answered it.
                let build = seen.builds.as_ref()?.first()?;
                self.bridge_login
                    .is_none()
                    .then(|| format!("Drone build #{} of the head", build.number))
            })
    }

    fn build_started(&self, seen: &Seen) -> Option<String> {
        match &seen.builds {
            Some(builds) => builds.first().map(|b| {
                format!(
                    "Drone build #{} ({}, {} event)",
                    b.number, b.status, b.event
                )
            }),
            // The CI's first status on the head: when the build began.
            None => seen
                .statuses
                .iter()
                .filter(|s| self.ci(s))
                .min_by_key(|s| s.id)
                .map(|s| format!("a {} status {:?} by {}", s.state, s.context, s.login)),
        }
    }

    /// The CI's newest status per context on the head; reported when one of them is final.
    pub fn reported(&self, seen: &Seen) -> Option<(String, String)> {
        let mut newest: Vec<&CommitStatus> = Vec::new();
        for s in seen.statuses.iter().filter(|s| self.ci(s)) {
            match newest.iter_mut().find(|n| n.context == s.context) {
                Some(n) if n.id < s.id => *n = s,
                Some(_) => {}
                None => newest.push(s),
            }
        }
        newest.into_iter().find(|s| s.is_final()).map(|s| {
            (
                format!("a {} status {:?} by {}", s.state, s.context, s.login),
                s.state.clone(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: u64, state: &str, context: &str) -> CommitStatus {
        CommitStatus {
            id,
            state: state.into(),
            context: context.into(),
            login: "drone".into(),
        }
    }

    const RULES: Rules<'static> = Rules {
        bridge_login: None,
        ci_context: "continuous-integration/drone",
    };

    #[test]
    fn nothing_seen_proves_nothing() {
        for stage in Stage::ALL {
            assert_eq!(RULES.evidence(stage, &Seen::default()), None);
        }
    }

    #[test]
    fn a_pending_status_starts_and_only_a_newer_final_one_reports() {
        let mut seen = Seen {
            statuses: vec![status(4, "pending", "continuous-integration/drone")],
            ..Seen::default()
        };
        assert!(RULES.evidence(Stage::BuildStarted, &seen).is_some());
        assert_eq!(RULES.reported(&seen), None);
        // An older final status under a newer pending one is a rerun in progress.
        seen.statuses
            .push(status(2, "failure", "continuous-integration/drone"));
        assert_eq!(RULES.reported(&seen), None);
        seen.statuses
            .push(status(9, "success", "continuous-integration/drone"));
        assert_eq!(
            RULES.reported(&seen).map(|(_, s)| s),
            Some("success".into())
        );
        // Another CI's status is not ours.
        let other = Seen {
            statuses: vec![status(1, "success", "woodpecker")],
            ..Seen::default()
        };
        assert_eq!(RULES.evidence(Stage::BuildStarted, &other), None);
    }

    #[test]
    fn drones_own_push_and_pr_statuses_are_not_the_ci_context_unless_a_prefix_is_asked() {
        let seen = Seen {
            statuses: vec![
                status(1, "success", "continuous-integration/drone/push"),
                status(2, "success", "continuous-integration/drone/pr"),
            ],
            ..Seen::default()
        };
        for stage in Stage::ALL {
            assert_eq!(RULES.evidence(stage, &seen), None, "{stage:?}");
        }
        let prefix = Rules {
            ci_context: "continuous-integration/drone*",
            ..RULES
        };
        assert!(prefix.evidence(Stage::Reported, &seen).is_some());
    }

    #[test]
    fn only_success_failure_and_error_are_final() {
        for (state, fin) in [
            ("success", true),
            ("failure", true),
            ("error", true),
            ("pending", false),
            ("running", false),
            ("skipped", false),
            ("warning", false),
        ] {
            let seen = Seen {
                statuses: vec![status(1, state, "continuous-integration/drone")],
                ..Seen::default()
            };
            assert_eq!(RULES.reported(&seen).is_some(), fin, "{state}");
        }
    }

    #[test]
    fn the_bridge_login_is_matched_without_case() {
        let rules = Rules {
            bridge_login: Some("Bridge-Bot"),
            ..RULES
        };
        let seen = Seen {
            reactions: vec![Reaction {
                login: "bridge-bot".into(),
                content: "eyes".into(),
            }],
            ..Seen::default()
        };
        assert!(rules.evidence(Stage::PickedUp, &seen).is_some());
    }

    #[test]
    fn with_a_bridge_login_only_its_answers_count() {
        let rules = Rules {
            bridge_login: Some("bridge"),
            ..RULES
        };
        let mut seen = Seen {
            reactions: vec![Reaction {
                login: "maintainer".into(),
                content: "eyes".into(),
            }],
            builds: Some(vec![Build {
                number: 3,
                status: "running".into(),
                event: "custom".into(),
                after: "a".repeat(40),
            }]),
            ..Seen::default()
        };
        assert_eq!(rules.evidence(Stage::PickedUp, &seen), None);
        assert!(RULES.evidence(Stage::PickedUp, &seen).is_some());
        seen.replies.push(Comment {
            id: 8,
            body: "starting".into(),
            login: "bridge".into(),
        });
        assert!(rules
            .evidence(Stage::PickedUp, &seen)
            .is_some_and(|e| e.contains("reply by bridge")));
        // With Drone asked, the build (not a status) shows a build started.
        assert!(rules
            .evidence(Stage::BuildStarted, &seen)
            .is_some_and(|e| e.contains("Drone build #3")));
    }
}
