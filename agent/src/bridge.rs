//! What the agent knows of the bridge it feeds: the `POLL_REPOS` it runs with.

use std::collections::BTreeSet;

use crate::settings::config::Config;

/// The bridge's live POLL_REPOS: from `health.poll_repos_file`, else the running unit's environment.
pub fn live_poll_repos(config: &Config) -> Result<BTreeSet<String>, String> {
    let text = match &config.health.poll_repos_file {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?,
        None => crate::host::unit_environment(&config.deploy, &config.bridge.unit)
            .map_err(|e| format!("{e:#}"))?
            .remove("POLL_REPOS")
            .ok_or_else(|| format!("{} runs without POLL_REPOS", config.bridge.unit))?,
    };
    parse_poll_repos(&text).map_err(|e| match &config.health.poll_repos_file {
        Some(file) => format!("{}: {e}", file.display()),
        None => e,
    })
}

/// `POLL_REPOS` as the bridge reads it: one line of comma-separated repository names. Anything
/// else (an env file's `POLL_REPOS=...`, JSON, one name per line) is said, not half-read.
pub fn parse_poll_repos(text: &str) -> Result<BTreeSet<String>, String> {
    let line = text.trim();
    if line.contains('\n') || line.contains(['=', '{', '[', '"']) {
        return Err(
            "not in the POLL_REPOS format: one line of comma-separated repository names \
             (like `a,b,c`; not `POLL_REPOS=...`, not JSON, not one name per line)"
                .into(),
        );
    }
    let names: BTreeSet<String> = line
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    match names
        .iter()
        .find(|n| crate::settings::rules::check_recipe_name(n).is_err())
    {
        Some(bad) => Err(format!("{bad:?} in POLL_REPOS is not a repository name")),
        None => Ok(names),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_repos_is_one_line_of_names_and_nothing_else_is_half_read() {
        let names = parse_poll_repos(" b,a ,, c\n").unwrap_or_default();
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
        for other in ["POLL_REPOS=a,b", "a\nb", "[\"a\"]", "{\"a\": 1}", "a,B"] {
            assert!(parse_poll_repos(other).is_err(), "{other:?}");
        }
    }
}
