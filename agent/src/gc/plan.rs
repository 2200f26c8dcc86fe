//! What to delete: a pure function of the inventory, the protected set and the budget, so every
//! rule is tested without a disk.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::settings::disk::Pin;

/// One warm volume as a backend sees it.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// The directory name or the docker volume name: what is deleted.
    pub name: String,
    /// `None`: not labelled as a cc-ci volume; never deleted.
    pub recipe: Option<String>,
    pub version: Option<String>,
    /// Bytes on disk (allocated, as `du` counts them).
    pub bytes: u64,
    /// When it was last used (RFC 3339, UTC).
    #[serde(serialize_with = "serialize_time")]
    #[schemars(with = "String")]
    pub last_used: SystemTime,
    /// A run holds it now (directory: its lock is taken; docker: a container uses it).
    pub in_use: bool,
    /// Why the volume could not be fully read; such a volume is kept.
    pub problem: Option<String>,
    /// What the agent did not believe of what it read, and what it counted instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn serialize_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_rfc3339_seconds(*t).to_string())
}

#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The volume of its recipe's current canonical.
    Canonical,
    /// A run is using it.
    InFlight,
    /// `disk.pin` names it.
    Pinned,
    /// Not labelled with a recipe and version: not the agent's to delete.
    Unlabelled,
    /// Could not be sized or read.
    Unreadable,
    /// Used more recently than `disk.grace` ago.
    WithinGrace,
    /// Deletable, but the budget and min_free hold without deleting it.
    UnderBudget,
    /// Deleted to bring the total under the budget.
    OverBudget,
    /// Deleted to bring free space up to min_free.
    BelowMinFree,
}

impl Reason {
    pub fn is_protected(self) -> bool {
        matches!(self, Reason::Canonical | Reason::InFlight | Reason::Pinned)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Canonical => "canonical",
            Reason::InFlight => "in-flight",
            Reason::Pinned => "pinned",
            Reason::Unlabelled => "unlabelled",
            Reason::Unreadable => "unreadable",
            Reason::WithinGrace => "within-grace",
            Reason::UnderBudget => "under-budget",
            Reason::OverBudget => "over-budget",
            Reason::BelowMinFree => "below-min-free",
        }
    }
}

#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Keep,
    Delete,
}

#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct Decided {
    #[serde(flatten)]
    pub volume: Volume,
    pub action: Action,
    pub reason: Reason,
}

/// Why the budget or min_free still does not hold after the plan.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Shortfall {
    /// The protected volumes alone take more than the budget: raise it or unpin.
    BudgetTooSmall {
        by: u64,
        protected: u64,
        budget: u64,
    },
    /// Over budget, but what could go is within its grace, unlabelled or unreadable.
    OverBudget { by: u64, budget: u64 },
    /// Free space stays under min_free with every deletable volume gone.
    BelowMinFree { by: u64, min_free: u64, free: u64 },
}

#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct Plan {
    pub budget: u64,
    pub min_free: u64,
    /// Free bytes on the volumes' filesystem before, if known.
    pub free: Option<u64>,
    pub total: u64,
    pub protected: u64,
    pub to_free: u64,
    pub volumes: Vec<Decided>,
    pub shortfalls: Vec<Shortfall>,
}

pub struct Inputs<'a> {
    pub budget: u64,
    pub min_free: u64,
    pub free: Option<u64>,
    pub grace: Duration,
    pub now: SystemTime,
    /// Each canonical recipe's version.
    pub canonicals: &'a BTreeMap<String, String>,
    pub pins: &'a [Pin],
}

/// Why a volume is kept whatever the budget, or `None` for a candidate.
fn keep_reason(v: &Volume, i: &Inputs<'_>) -> Option<Reason> {
    let (Some(recipe), Some(version)) = (&v.recipe, &v.version) else {
        return Some(Reason::Unlabelled);
    };
    if i.canonicals.get(recipe) == Some(version) {
        return Some(Reason::Canonical);
    }
    if v.in_use {
        return Some(Reason::InFlight);
    }
    if i.pins.iter().any(|p| p.matches(recipe, version)) {
        return Some(Reason::Pinned);
    }
    if v.problem.is_some() {
        return Some(Reason::Unreadable);
    }
    // A last use in the future counts as just now: kept. The inventory has already replaced an
    // implausible one by when the agent first saw it (collect.rs), so this holds only briefly.
    let age = i.now.duration_since(v.last_used).unwrap_or(Duration::ZERO);
    if age < i.grace {
        return Some(Reason::WithinGrace);
    }
    None
}

pub fn plan(volumes: Vec<Volume>, i: &Inputs<'_>) -> Plan {
    // Saturating: sizes come from outside (a docker CLI may print anything), and a sum that
    // wraps would turn "far over budget" into "under".
    let total: u64 = volumes.iter().fold(0, |t, v| t.saturating_add(v.bytes));
    let mut decided: Vec<Decided> = volumes
        .into_iter()
        .map(|volume| {
            let reason = keep_reason(&volume, i).unwrap_or(Reason::UnderBudget);
            Decided {
                volume,
                action: Action::Keep,
                reason,
            }
        })
        .collect();
    let protected: u64 = decided
        .iter()
        .filter(|d| d.reason.is_protected())
        .fold(0, |t, d| t.saturating_add(d.volume.bytes));
    let need_budget = total.saturating_sub(i.budget);
    let need_free = i.free.map_or(0, |f| i.min_free.saturating_sub(f));

    // Oldest use first; the name breaks ties so a plan is deterministic.
    let mut order: Vec<usize> = (0..decided.len())
        .filter(|&n| decided[n].reason == Reason::UnderBudget)
        .collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&decided[a].volume, &decided[b].volume);
        (a.last_used, &a.name).cmp(&(b.last_used, &b.name))
    });
    let mut to_free = 0u64;
    for n in order {
        if to_free >= need_budget.max(need_free) {
            break;
        }
        decided[n].action = Action::Delete;
        decided[n].reason = if to_free < need_budget {
            Reason::OverBudget
        } else {
            Reason::BelowMinFree
        };
        to_free = to_free.saturating_add(decided[n].volume.bytes);
    }

    let mut shortfalls = Vec::new();
    let over = (total - to_free).saturating_sub(i.budget);
    if over > 0 {
        shortfalls.push(if protected > i.budget {
            Shortfall::BudgetTooSmall {
                by: protected - i.budget,
                protected,
                budget: i.budget,
            }
        } else {
            Shortfall::OverBudget {
                by: over,
                budget: i.budget,
            }
        });
    }
    if let Some(free) = i.free {
        let after = free.saturating_add(to_free);
        if after < i.min_free {
            shortfalls.push(Shortfall::BelowMinFree {
                by: i.min_free - after,
                min_free: i.min_free,
                free: after,
            });
        }
    }
    Plan {
        budget: i.budget,
        min_free: i.min_free,
        free: i.free,
        total,
        protected,
        to_free,
        volumes: decided,
        shortfalls,
    }
}

/// Bytes for people: binary units, one decimal.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl Shortfall {
    /// One line for people and for the health report.
    pub fn message(&self) -> String {
        match self {
            Shortfall::BudgetTooSmall {
                by,
                protected,
                budget,
            } => format!(
                "disk budget too small by {}: protected volumes take {} of a {} budget",
                human_bytes(*by),
                human_bytes(*protected),
                human_bytes(*budget)
            ),
            Shortfall::OverBudget { by, budget } => format!(
                "over the {} disk budget by {}: what could go is within its grace or unlabelled",
                human_bytes(*budget),
                human_bytes(*by)
            ),
            Shortfall::BelowMinFree { by, min_free, free } => format!(
                "free space {} is {} under min_free {} with every deletable volume gone",
                human_bytes(*free),
                human_bytes(*by),
                human_bytes(*min_free)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86400);

    fn vol(name: &str, recipe: &str, version: &str, mib: u64, days_ago: u64) -> Volume {
        Volume {
            name: name.into(),
            recipe: Some(recipe.into()),
            version: Some(version.into()),
            bytes: mib << 20,
            last_used: SystemTime::UNIX_EPOCH + 100 * DAY - DAY * days_ago as u32,
            in_use: false,
            problem: None,
            note: None,
        }
    }

    fn inputs<'a>(
        budget_mib: u64,
        canonicals: &'a BTreeMap<String, String>,
        pins: &'a [Pin],
    ) -> Inputs<'a> {
        Inputs {
            budget: budget_mib << 20,
            min_free: 0,
            free: None,
            grace: DAY,
            now: SystemTime::UNIX_EPOCH + 100 * DAY,
            canonicals,
            pins,
        }
    }

    fn actions(p: &Plan) -> Vec<(&str, Action, Reason)> {
        p.volumes
            .iter()
            .map(|d| (d.volume.name.as_str(), d.action, d.reason))
            .collect()
    }

    #[test]
    fn oldest_use_goes_first_until_under_budget() {
        let canon = BTreeMap::from([("a".to_string(), "2".to_string())]);
        let p = plan(
            vec![
                vol("a_1", "a", "1", 30, 10),
                vol("a_2", "a", "2", 30, 20),
                vol("b_1", "b", "1", 30, 5),
                vol("c_1", "c", "1", 30, 3),
            ],
            &inputs(70, &canon, &[]),
        );
        assert_eq!(
            actions(&p),
            vec![
                ("a_1", Action::Delete, Reason::OverBudget),
                ("a_2", Action::Keep, Reason::Canonical),
                ("b_1", Action::Delete, Reason::OverBudget),
                ("c_1", Action::Keep, Reason::UnderBudget),
            ]
        );
        assert_eq!(p.to_free, 60 << 20);
        assert!(p.shortfalls.is_empty());
    }

    #[test]
    fn protected_alone_over_budget_deletes_nothing_protected() {
        let canon = BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "1".to_string()),
        ]);
        let pins = [Pin {
            recipe: "c".into(),
            version: None,
        }];
        let mut in_use = vol("d_1", "d", "1", 10, 50);
        in_use.in_use = true;
        let p = plan(
            vec![
                vol("a_1", "a", "1", 40, 50),
                vol("b_1", "b", "1", 40, 50),
                vol("c_1", "c", "1", 10, 50),
                in_use,
                vol("e_1", "e", "1", 5, 50),
            ],
            &inputs(64, &canon, &pins),
        );
        let kept: Vec<Reason> = p.volumes.iter().map(|d| d.reason).collect();
        assert_eq!(
            kept,
            vec![
                Reason::Canonical,
                Reason::Canonical,
                Reason::Pinned,
                Reason::InFlight,
                Reason::OverBudget
            ]
        );
        assert_eq!(p.protected, 100 << 20);
        assert_eq!(
            p.shortfalls,
            vec![Shortfall::BudgetTooSmall {
                by: 36 << 20,
                protected: 100 << 20,
                budget: 64 << 20
            }]
        );
        assert!(p.shortfalls[0]
            .message()
            .starts_with("disk budget too small by 36.0 MiB"));
    }

    #[test]
    fn grace_unlabelled_and_unreadable_are_kept_and_named() {
        let canon = BTreeMap::new();
        let mut foreign = vol("lost+found", "x", "1", 10, 90);
        foreign.recipe = None;
        let mut unreadable = vol("u_1", "u", "1", 10, 90);
        unreadable.problem = Some("permission denied".into());
        let p = plan(
            vec![vol("a_1", "a", "1", 50, 0), foreign, unreadable],
            &inputs(10, &canon, &[]),
        );
        assert_eq!(
            actions(&p),
            vec![
                ("a_1", Action::Keep, Reason::WithinGrace),
                ("lost+found", Action::Keep, Reason::Unlabelled),
                ("u_1", Action::Keep, Reason::Unreadable),
            ]
        );
        assert_eq!(
            p.shortfalls,
            vec![Shortfall::OverBudget {
                by: 60 << 20,
                budget: 10 << 20
            }]
        );
    }

    #[test]
    fn min_free_deletes_beyond_the_budget_and_says_when_it_cannot() {
        let canon = BTreeMap::new();
        let mut i = inputs(1000, &canon, &[]);
        i.min_free = 100 << 20;
        i.free = Some(75 << 20);
        let p = plan(
            vec![
                vol("a_1", "a", "1", 20, 9),
                vol("b_1", "b", "1", 20, 8),
                vol("c_1", "c", "1", 20, 7),
            ],
            &i,
        );
        assert_eq!(
            actions(&p),
            vec![
                ("a_1", Action::Delete, Reason::BelowMinFree),
                ("b_1", Action::Delete, Reason::BelowMinFree),
                ("c_1", Action::Keep, Reason::UnderBudget),
            ]
        );
        i.min_free = 200 << 20;
        let p = plan(vec![vol("a_1", "a", "1", 20, 9)], &i);
        assert_eq!(
            p.shortfalls,
            vec![Shortfall::BelowMinFree {
                by: 105 << 20,
                min_free: 200 << 20,
                free: 95 << 20
            }]
        );
    }

    #[test]
    fn a_clock_gone_backwards_keeps_volumes_within_grace() {
        let canon = BTreeMap::new();
        let mut future = vol("a_1", "a", "1", 50, 0);
        future.last_used = SystemTime::UNIX_EPOCH + 200 * DAY;
        let p = plan(vec![future], &inputs(10, &canon, &[]));
        assert_eq!(p.volumes[0].reason, Reason::WithinGrace);
        assert_eq!(p.to_free, 0);
    }

    #[test]
    fn absurd_sizes_saturate_instead_of_wrapping_under_the_budget() {
        let canon = BTreeMap::new();
        let mut huge = vol("a_1", "a", "1", 0, 90);
        huge.bytes = u64::MAX;
        let p = plan(vec![huge.clone(), huge], &inputs(10, &canon, &[]));
        assert_eq!(p.total, u64::MAX);
        assert_eq!(p.volumes[0].action, Action::Delete);
    }

    #[test]
    fn under_budget_deletes_nothing() {
        let canon = BTreeMap::new();
        let p = plan(
            vec![vol("a_1", "a", "1", 5, 90), vol("b_1", "b", "1", 5, 90)],
            &inputs(10, &canon, &[]),
        );
        assert!(p.volumes.iter().all(|d| d.action == Action::Keep));
        assert!(p.shortfalls.is_empty());
    }
}
