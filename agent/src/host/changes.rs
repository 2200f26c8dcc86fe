//! What a deploy will change, read from the programs' own reports: `nix store diff-closures OLD
//! NEW` (packages added, removed and changed, and the size delta) and `switch-to-configuration
//! dry-activate` (units it would stop, restart, reload and start).
//!
//! diff-closures prints one line per package whose versions or size differ, `NAME: OLD → NEW,
//! ±SIZE`, with comma-separated versions, `∅` for none, and the size in KiB (or MiB, GiB); a line
//! may carry only the versions or only the size. dry-activate says `would stop the following
//! units: a.service, b.service` and so on, one line per kind.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClosureDiff {
    pub added: Vec<Package>,
    pub removed: Vec<Package>,
    pub changed: Vec<Package>,
    /// The closure's size change, in bytes.
    pub size_delta: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitChanges {
    pub stop: Vec<String>,
    pub restart: Vec<String>,
    pub reload: Vec<String>,
    pub start: Vec<String>,
}

/// What changes between the running system and the new one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Changes {
    pub closure: Option<ClosureDiff>,
    pub units: Option<UnitChanges>,
}

fn versions(text: &str) -> Vec<String> {
    match text.trim() {
        "∅" | "" => Vec::new(),
        t => t.split(", ").map(|v| v.trim().to_string()).collect(),
    }
}

/// "+12.3 KiB", "-1.5 MiB": bytes.
fn size(text: &str) -> Option<i64> {
    let (number, unit) = text.trim().split_once(' ')?;
    let n: f64 = number.parse().ok()?;
    let scale = match unit {
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * scale).round() as i64)
}

/// Reads `nix store diff-closures` output; lines it does not recognise are skipped.
pub fn parse_diff_closures(text: &str) -> ClosureDiff {
    let mut diff = ClosureDiff::default();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(": ") else {
            continue;
        };
        let (change, delta) = match rest.rsplit_once(", ") {
            Some((c, s)) if size(s).is_some() => (Some(c), size(s)),
            _ if size(rest).is_some() => (None, size(rest)),
            _ => (Some(rest), None),
        };
        diff.size_delta += delta.unwrap_or(0);
        let Some((from, to)) = change.and_then(|c| c.split_once(" → ")) else {
            continue;
        };
        let p = Package {
            name: name.trim().to_string(),
            from: versions(from),
            to: versions(to),
        };
        match (p.from.is_empty(), p.to.is_empty()) {
            (true, false) => diff.added.push(p),
            (false, true) => diff.removed.push(p),
            _ => diff.changed.push(p),
        }
    }
    diff
}

/// Reads `switch-to-configuration dry-activate` output.
pub fn parse_dry_activate(text: &str) -> UnitChanges {
    let mut units = UnitChanges::default();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("would ") else {
            continue;
        };
        let Some((verb, list)) = rest.split_once(" the following units: ") else {
            continue;
        };
        let names = list
            .split(", ")
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty());
        match verb {
            "stop" => units.stop.extend(names),
            "restart" => units.restart.extend(names),
            "reload" => units.reload.extend(names),
            "start" => units.start.extend(names),
            _ => {}
        }
    }
    units
}

impl Changes {
    /// One line for people: "3 packages changed, 1 added, 0 removed, +12.3 KiB; units: start a; stop b".
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &self.closure {
            let kib = c.size_delta as f64 / 1024.0;
            parts.push(format!(
                "{} package(s) changed, {} added, {} removed, {kib:+.1} KiB",
                c.changed.len(),
                c.added.len(),
                c.removed.len()
            ));
        }
        if let Some(u) = &self.units {
            let each: Vec<String> = [
                ("stop", &u.stop),
                ("restart", &u.restart),
                ("reload", &u.reload),
                ("start", &u.start),
            ]
            .into_iter()
            .filter(|(_, l)| !l.is_empty())
            .map(|(verb, l)| format!("{verb} {}", l.join(", ")))
            .collect();
            parts.push(if each.is_empty() {
                "units: none stopped, restarted, reloaded or started".into()
            } else {
                format!("units: {}", each.join("; "))
            });
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_closures_lines_are_read_as_added_removed_changed_and_a_size() {
        let text = "\
bash-interactive: 5.2p32 → 5.2p37, +8.2 KiB
cc-ci-agent: 0.1.0 → ∅, -10600.0 KiB
cc-ci-agent-rebuilt: ∅ → 0.1.0, +10612.5 KiB
openssl: 3.0.14, 3.3.1 → 3.3.2
python3: +1.5 MiB
something unreadable
";
        let d = parse_diff_closures(text);
        assert_eq!(d.added.len(), 1);
        assert_eq!(d.added[0].name, "cc-ci-agent-rebuilt");
        assert_eq!(d.removed[0].from, ["0.1.0"]);
        assert_eq!(d.changed.len(), 2);
        assert_eq!(d.changed[1].from, ["3.0.14", "3.3.1"]);
        let expected = ((8.2 - 10600.0 + 10612.5) * 1024.0_f64).round() as i64
            + (1.5 * 1024.0 * 1024.0_f64).round() as i64;
        assert!((d.size_delta - expected).abs() <= 2, "{}", d.size_delta);
    }

    #[test]
    fn dry_activate_lines_are_read_per_kind() {
        let text = "\
would stop the following units: old.service
would NOT stop the following changed units: getty@tty1.service
would activate the configuration...
would restart systemd
would restart the following units: cc-ci-bridge.service, nginx.service
would reload the following units: dbus.service
would start the following units: hello.service
";
        let u = parse_dry_activate(text);
        assert_eq!(u.stop, ["old.service"]);
        assert_eq!(u.restart, ["cc-ci-bridge.service", "nginx.service"]);
        assert_eq!(u.reload, ["dbus.service"]);
        assert_eq!(u.start, ["hello.service"]);
    }
}
