//! `enrollment.toml`: which recipes the CI host tracks. See docs/enrollment.md for the contract.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::rules::{check_branch, check_recipe_name, check_release_tag, check_url};
use super::source::TomlSource;
use crate::error::InputError;
use crate::error::Invalid;

pub const DEFAULT_UPSTREAM: &str = "https://git.coopcloud.tech/coop-cloud/{recipe}.git";
pub const DEFAULT_BRANCH: &str = "main";
pub const RECIPE_PLACEHOLDER: &str = "{recipe}";

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEnrollment {
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    bridge: RawBridgeSection,
    #[serde(default)]
    recipe: BTreeMap<String, RawRecipe>,
}

/// `[bridge]`: what the bridge polls besides the enrolled recipes.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBridgeSection {
    #[serde(default)]
    also_poll: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    upstream: Option<String>,
    branch: Option<String>,
    allow_insecure: Option<bool>,
    /// Every recipe takes part in the sweep unless its own table says `canonical = false`.
    canonical: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    enrolled: Option<bool>,
    canonical: Option<bool>,
    upgrade_base: Option<String>,
    tests: Option<TestsMode>,
    reason: Option<String>,
    upstream: Option<String>,
    branch: Option<String>,
    allow_insecure: Option<bool>,
    probe: Option<bool>,
    tiers: Option<Vec<String>>,
    tier_from: Option<super::sweep::TierFrom>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TestsMode {
    Required,
    Exempt,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum TestPolicy {
    Required,
    Exempt { reason: String },
}

/// One declared recipe with every default applied.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipe {
    pub name: String,
    pub enrolled: bool,
    pub canonical: bool,
    pub upgrade_base: Option<String>,
    pub tests: TestPolicy,
    /// The upstream URL with `{recipe}` substituted.
    pub upstream: String,
    pub branch: String,
    /// `probe = false`: `cc-ci-agent probe` leaves this recipe's mirror alone (docs/probe.md).
    pub probe: bool,
    /// The tiers this recipe's results must report green, instead of `[sweep] tiers`
    /// (docs/sweep.md, "Greenness"): a recipe with one release has no upgrade tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Vec<String>>,
    /// Where its cases' tiers come from, instead of `[sweep] tier_from`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier_from: Option<super::sweep::TierFrom>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enrollment {
    /// Sorted by name (byte order, as `POLL_REPOS` is).
    pub recipes: Vec<Recipe>,
    /// Repositories the bridge polls that are not recipes (`[bridge] also_poll`, the host's
    /// own repository): in `POLL_REPOS`, never mirrored, swept or checked as recipes.
    pub also_poll: Vec<String>,
}

/// `[defaults]`: an upstream with `{recipe}` that is a URL the agent takes, a branch name.
/// Whether the upstream is good (a recipe inheriting a bad one is not reported again).
fn check_defaults(d: &RawDefaults, source: &TomlSource, errors: &mut Vec<InputError>) -> bool {
    let insecure = d.allow_insecure.unwrap_or(false);
    let upstream = d.upstream.as_deref().unwrap_or(DEFAULT_UPSTREAM);
    let mut upstream_ok = true;
    if d.upstream.is_some() {
        let problem = if upstream.contains(RECIPE_PLACEHOLDER) {
            check_upstream(upstream, "example", insecure).err()
        } else {
            Some("must contain {recipe}, or every recipe would share one upstream".to_string())
        };
        if let Some(e) = problem {
            errors.push(source.error_at(&["defaults", "upstream"], e));
            upstream_ok = false;
        }
    }
    let branch = d.branch.as_deref().unwrap_or(DEFAULT_BRANCH);
    if let Err(e) = check_branch(branch) {
        errors.push(source.error_at(&["defaults", "branch"], e));
    }
    upstream_ok
}

/// `tests` and `reason` as a policy: an exemption needs a reason, and only an exemption has one.
fn test_policy(
    (tests, reason): (Option<TestsMode>, Option<String>),
    name: &str,
    source: &TomlSource,
    errors: &mut Vec<InputError>,
) -> TestPolicy {
    let at = |key: &'static str| vec!["recipe", name, key];
    match (tests.unwrap_or(TestsMode::Required), reason) {
        (TestsMode::Required, None) => TestPolicy::Required,
        (TestsMode::Required, Some(_)) => {
            errors.push(source.error_at(
                &at("reason"),
                "reason is only allowed with tests = \"exempt\"",
            ));
            TestPolicy::Required
        }
        (TestsMode::Exempt, Some(reason)) if !reason.trim().is_empty() => {
            TestPolicy::Exempt { reason }
        }
        (TestsMode::Exempt, _) => {
            errors.push(source.error_at(
                &at("tests"),
                "tests = \"exempt\" needs a non-empty reason = \"...\" saying why",
            ));
            TestPolicy::Exempt {
                reason: String::new(),
            }
        }
    }
}

/// `[bridge] also_poll`: names, each once, none a recipe.
fn also_poll(
    names: Vec<String>,
    recipes: &[Recipe],
    source: &TomlSource,
    errors: &mut Vec<InputError>,
) -> Vec<String> {
    let mut also_poll = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        let at = source.error_at(&["bridge", "also_poll"], String::new());
        let fail = |m: String| InputError {
            message: format!("entry {i}: {m}"),
            ..at.clone()
        };
        if let Err(e) = check_recipe_name(&name) {
            errors.push(fail(e));
        } else if recipes.iter().any(|r| r.name == name) {
            errors.push(fail(format!(
                "{name:?} is declared as a recipe too: it is one or the other"
            )));
        } else if also_poll.contains(&name) {
            errors.push(fail(format!("{name:?} is listed twice")));
        } else {
            also_poll.push(name);
        }
    }
    also_poll
}

impl Enrollment {
    pub fn load(path: &Path) -> Result<Self, Invalid> {
        let source = TomlSource::read(path)?;
        Self::from_source(&source)
    }

    pub fn from_source(source: &TomlSource) -> Result<Self, Invalid> {
        let raw: RawEnrollment = source.deserialize().map_err(Invalid)?;
        let mut errors = Vec::new();

        let default_insecure = raw.defaults.allow_insecure.unwrap_or(false);
        let default_upstream = raw.defaults.upstream.as_deref().unwrap_or(DEFAULT_UPSTREAM);
        let default_branch = raw.defaults.branch.as_deref().unwrap_or(DEFAULT_BRANCH);
        // A bad default is reported once, not again for every recipe that inherits it.
        let defaults_upstream_ok = check_defaults(&raw.defaults, source, &mut errors);

        let mut recipes = Vec::with_capacity(raw.recipe.len());
        for (name, r) in raw.recipe {
            let at = |key: &'static str| -> Vec<&str> {
                let mut path = vec!["recipe", name.as_str()];
                path.extend((!key.is_empty()).then_some(key));
                path
            };
            if let Err(e) = check_recipe_name(&name) {
                errors.push(source.error_at(&at(""), e));
                continue;
            }
            let insecure = r.allow_insecure.unwrap_or(default_insecure);
            let upstream_template = r.upstream.as_deref().unwrap_or(default_upstream);
            let inherited = r.upstream.is_none() && r.allow_insecure.is_none();
            let upstream = match check_upstream(upstream_template, &name, insecure) {
                Ok(url) => url,
                // Already reported once at defaults.upstream.
                Err(_) if inherited && !defaults_upstream_ok => continue,
                Err(e) => {
                    let key = if r.upstream.is_some() {
                        "upstream"
                    } else {
                        "allow_insecure"
                    };
                    let path = if r.upstream.is_some() || r.allow_insecure.is_some() {
                        at(key)
                    } else {
                        vec!["defaults", "upstream"]
                    };
                    errors.push(source.error_at(&path, e));
                    continue;
                }
            };
            let branch = r.branch.unwrap_or_else(|| default_branch.to_string());
            if let Err(e) = check_branch(&branch) {
                errors.push(source.error_at(&at("branch"), e));
            }
            let tests = test_policy((r.tests, r.reason), &name, source, &mut errors);
            if let Some(base) = &r.upgrade_base {
                if let Err(e) = check_release_tag(base) {
                    errors.push(source.error_at(&at("upgrade_base"), e));
                }
            }
            if let Some(Err(e)) = r.tiers.as_deref().map(super::rules::check_tiers) {
                errors.push(source.error_at(&at("tiers"), e));
            }
            recipes.push(Recipe {
                name,
                enrolled: r.enrolled.unwrap_or(true),
                canonical: r.canonical.or(raw.defaults.canonical).unwrap_or(false),
                upgrade_base: r.upgrade_base,
                tests,
                upstream,
                branch,
                probe: r.probe.unwrap_or(true),
                tiers: r.tiers,
                tier_from: r.tier_from,
            });
        }
        let also_poll = also_poll(raw.bridge.also_poll, &recipes, source, &mut errors);
        if errors.is_empty() {
            Ok(Self { recipes, also_poll })
        } else {
            Err(Invalid(errors))
        }
    }

    /// The enrolled recipes `names` names, in that order (every enrolled one when it is empty);
    /// a name that is not an enrolled recipe is bad input.
    pub fn enrolled_named(&self, names: &[String]) -> Result<Vec<Recipe>, crate::error::Unusable> {
        if names.is_empty() {
            return Ok(self.enrolled().cloned().collect());
        }
        names
            .iter()
            .map(|n| {
                self.enrolled()
                    .find(|r| &r.name == n)
                    .cloned()
                    .ok_or_else(|| {
                        crate::error::Unusable(format!(
                        "{n:?} is not an enrolled recipe (`cc-ci-agent enrollment list` shows them)"
                    ))
                    })
            })
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&Recipe> {
        self.recipes.iter().find(|r| r.name == name)
    }

    pub fn enrolled(&self) -> impl Iterator<Item = &Recipe> {
        self.recipes.iter().filter(|r| r.enrolled)
    }

    /// The bridge's `POLL_REPOS`: enrolled recipe names, sorted, comma-joined. `nix/lib.nix`
    /// renders the same string; the two are compared byte for byte on `tests/enrollment/`.
    pub fn poll_repos(&self) -> String {
        let mut names: Vec<&str> = self
            .enrolled()
            .map(|r| r.name.as_str())
            .chain(self.also_poll.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.join(",")
    }
}

/// Substitutes `{recipe}` and checks the resulting URL.
fn check_upstream(template: &str, recipe: &str, allow_insecure: bool) -> Result<String, String> {
    let url = template.replace(RECIPE_PLACEHOLDER, recipe);
    if url.contains(['{', '}']) {
        return Err(format!(
            "{template:?} has a placeholder other than {{recipe}}"
        ));
    }
    check_url(&url, allow_insecure)?;
    Ok(url)
}

impl From<InputError> for Invalid {
    fn from(e: InputError) -> Self {
        Invalid(vec![e])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Enrollment, Invalid> {
        let source = TomlSource::parse(Path::new("e.toml"), text.to_string())?;
        Enrollment::from_source(&source)
    }

    fn first_error(text: &str) -> InputError {
        match parse(text) {
            Ok(e) => panic!("accepted: {e:?}"),
            Err(Invalid(errors)) => errors
                .into_iter()
                .next()
                .unwrap_or_else(|| panic!("no error")),
        }
    }

    #[test]
    fn defaults_apply() -> Result<(), Invalid> {
        let e =
            parse("[recipe.custom-html]\n[recipe.old]\nenrolled = false\nbranch = \"master\"\n")?;
        assert_eq!(e.recipes.len(), 2);
        let r = &e.recipes[0];
        assert_eq!(
            r.upstream,
            "https://git.coopcloud.tech/coop-cloud/custom-html.git"
        );
        assert_eq!(
            (r.branch.as_str(), r.enrolled, r.canonical),
            ("main", true, false)
        );
        assert_eq!(e.recipes[1].branch, "master");
        assert_eq!(e.poll_repos(), "custom-html");
        Ok(())
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = first_error("[recipe.a]\n\n[recipe.b]\ncanonical = true\ncolour = 1\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(5), "recipe.b.colour"),
            "{e}"
        );
        let e = first_error("[recipe.a]\ncanonical = \"yes\"\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(2), "recipe.a.canonical"),
            "{e}"
        );
        let e = first_error("[recipe.a]\n\n[recipe.\"a b\"]\n");
        assert_eq!((e.line, e.key.as_str()), (Some(3), "recipe.\"a b\""), "{e}");
        let e = first_error("[recipe.h]\ntests = \"exempt\"\n");
        assert_eq!((e.line, e.key.as_str()), (Some(2), "recipe.h.tests"), "{e}");
    }

    #[test]
    fn sorted_poll_repos_skips_unenrolled() -> Result<(), Invalid> {
        let e = parse("[recipe.b]\n[recipe.a]\n[recipe.c]\nenrolled = false\n[recipe.a-1]\n")?;
        assert_eq!(e.poll_repos(), "a,a-1,b");
        assert_eq!(parse("")?.poll_repos(), "");
        Ok(())
    }
}
