//! Value rules shared by the enrollment file and the agent config. `nix/lib.nix` applies the same
//! rules on the Nix side; `tests/enrollment/` holds the corpus that keeps the two in step.

/// `^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$`: a DNS label, so a name is safe as a path component,
/// a repository name on any forge, and an element of the comma-separated `POLL_REPOS`.
///
/// ```
/// use cc_ci_agent::settings::rules::check_recipe_name;
/// assert!(check_recipe_name("custom-html").is_ok());
/// // A Cyrillic look-alike is named by its code point.
/// let err = check_recipe_name("\u{441}ustom-html").unwrap_err();
/// assert!(err.contains("U+0441"));
/// ```
pub fn check_recipe_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    if bytes.is_empty() || bytes.len() > 64 {
        return Err(format!("recipe name {name:?} must be 1 to 64 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !c.is_ascii() || !allowed(&(*c as u8)))
    {
        return Err(format!(
            "recipe name {name:?} has {c:?} (U+{:04X}): only lowercase ASCII letters, digits \
             and '-' are allowed",
            c as u32
        ));
    }
    if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
        return Err(format!(
            "recipe name {name:?} must not start or end with '-'"
        ));
    }
    Ok(())
}

/// A git branch name from a conservative character set, with git's structural rules.
/// A list of tiers, as `[sweep] tiers` and an enrollment entry's `tiers` give it: not empty,
/// each a name of lowercase letters, digits, `_` and `-` starting with a letter or digit (the
/// JUnit suite name or the first part of a classname the suite reports), none twice.
pub fn check_tiers(tiers: &[String]) -> Result<(), String> {
    if tiers.is_empty() {
        return Err("must name at least one tier, such as [\"install\"]".into());
    }
    for (i, t) in tiers.iter().enumerate() {
        if !is_tier_name(t) {
            return Err(format!(
                "entry {i}: {t:?} is not a tier name (1 to 128 bytes, no control character, no \
                 white space at either end, not starting with `(`)"
            ));
        }
        if tiers[..i].contains(t) {
            return Err(format!("entry {i}: {t:?} is listed twice"));
        }
    }
    Ok(())
}

/// A tier as producers name their suites (`install`, `Tests.Registration`, `Install`,
/// `github.com/coop-cloud/x`): up to 128 bytes, no control character, no white space at either
/// end, and not starting with `(`, which is kept for the rows the agent adds (`(CI)`, the
/// command's exit status). Shown escaped wherever it is shown.
pub fn is_tier_name(t: &str) -> bool {
    !t.is_empty()
        && !t.starts_with('(')
        && t.len() <= 128
        && !t.chars().any(char::is_control)
        && t.trim() == t
}

pub fn check_branch(branch: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._/+-".contains(c);
    if branch.is_empty() || !branch.chars().all(ok_char) {
        return Err(format!(
            "branch {branch:?} must be non-empty and use only ASCII letters, digits and . _ / + -"
        ));
    }
    let bad = branch.starts_with(['-', '/', '.'])
        || branch.ends_with(['/', '.'])
        || branch.ends_with(".lock")
        || branch.contains("..")
        || branch.contains("//")
        || branch.contains("/.");
    if bad {
        return Err(format!("branch {branch:?} is not a valid git branch name"));
    }
    Ok(())
}

/// Remote URLs the agent hands to git: never plain http unless allowed, never a password.
pub fn check_url(url: &str, allow_insecure: bool) -> Result<(), String> {
    let shown = without_credentials(url);
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "URL {shown:?} contains white space or control characters"
        ));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "URL {shown:?} has no scheme: use https://, ssh://, git:// or file://"
        ));
    };
    match scheme {
        "https" | "ssh" | "git" | "file" => {}
        "http" if allow_insecure => {}
        "http" => {
            return Err(format!(
                "URL {shown:?} uses http://: use https://, or set allow_insecure = true"
            ))
        }
        _ => {
            return Err(format!(
                "URL {shown:?} has scheme {scheme:?}: use https://, ssh://, git:// or file://"
            ))
        }
    }
    if scheme == "file" {
        if !rest.starts_with('/') {
            return Err(format!(
                "URL {shown:?} must name an absolute path (file:///...)"
            ));
        }
        return Ok(());
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(format!("URL {shown:?} has no host"));
    }
    match userinfo {
        // ssh's login name (`ssh://git@host/...`) is no secret; its password would be.
        Some(user) if scheme == "ssh" && !user.contains(':') => Ok(()),
        // Over HTTP a user name is as good as a password (a token given as the login is how
        // some forges take one), and git:// has no logins: never echoed.
        Some(_) => Err(format!(
            "URL {shown:?} holds credentials: remove them and give the token in a token file"
        )),
        None => Ok(()),
    }
}

/// `url` with whatever stands before an `@` in its authority shown as `***`, for messages: a
/// URL's credentials are never echoed.
pub fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[end..]),
        None => url.to_string(),
    }
}

/// A recipe release tag, `<semver>+<app version>`: a valid semantic version with build metadata.
///
/// ```
/// use cc_ci_agent::settings::rules::check_release_tag;
/// assert_eq!(check_release_tag("5.0.3+27.0.1-fpm").map(|v| v.major), Ok(5));
/// assert!(check_release_tag("v2.4.8").is_err());
/// assert!(check_release_tag("1.14.1-rootless_1").is_err());
/// ```
pub fn check_release_tag(tag: &str) -> Result<semver::Version, String> {
    match semver::Version::parse(tag) {
        Ok(v) if !v.build.is_empty() => Ok(v),
        Ok(_) => Err(format!(
            "{tag:?} is not a release tag: it has no \"+<app version>\" part"
        )),
        Err(e) => Err(format!(
            "{tag:?} is not a release tag (<semver>+<app version>): {e}"
        )),
    }
}

/// A Gitea organisation name, as Gitea's username rule accepts one (its validation helpers, as
/// recalled here, not checked against its source in this change): letters, digits, `-`, `_` and
/// `.`; starting and ending with a letter or digit; never two of `-_.` in a row; at most 40.
pub fn check_org_name(org: &str) -> Result<(), String> {
    let bytes = org.as_bytes();
    let edge = |b: u8| b.is_ascii_alphanumeric();
    let valid = !org.is_empty()
        && org.len() <= 40
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && bytes.first().copied().is_some_and(edge)
        && bytes.last().copied().is_some_and(edge)
        && !bytes
            .windows(2)
            .any(|w| b"-_.".contains(&w[0]) && b"-_.".contains(&w[1]));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{org:?} is not an organisation name (letters, digits, '-', '_' and '.', at most 40, \
             starting and ending with a letter or digit)"
        ))
    }
}

/// A systemd unit name as `systemctl` accepts it; the agent passes it as one argv element.
pub fn check_unit_name(unit: &str) -> Result<(), String> {
    let ok = !unit.is_empty()
        && unit.len() <= 255
        && !unit.starts_with(['-', '.'])
        && unit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.@\\".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("{unit:?} is not a systemd unit name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "custom-html", "0", "a1-b2", &"x".repeat(64)] {
            assert!(check_recipe_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "-x",
            "x-",
            "a b",
            "../x",
            "a_b",
            "café",
            &"x".repeat(65),
            "a.b",
        ] {
            assert!(check_recipe_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn branches() {
        for ok in ["main", "master", "release/1.x", "v2+fix"] {
            assert!(check_branch(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-f", "a..b", "a b", "x.lock", "a/", "/a", ".a", "a/.b", "a//b", "a~1", "é",
        ] {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls() {
        for ok in [
            "https://git.coopcloud.tech/coop-cloud/x.git",
            "ssh://git@host:2222/org/x.git",
            "git://127.0.0.1/x",
            "file:///srv/git/x.git",
        ] {
            assert!(check_url(ok, false).is_ok(), "{ok}");
        }
        assert!(check_url("http://127.0.0.1/x", false).is_err());
        assert!(check_url("http://127.0.0.1/x", true).is_ok());
        for bad in [
            "ftp://h/x",
            "git@host:org/x.git",
            "https:///x",
            "https://u:p@h/x",
            "file://rel/x",
            "https://h/a b",
        ] {
            assert!(check_url(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_are_refused_and_never_echoed() {
        for url in [
            "https://bot:hunter2@h/x.git",
            "https://ghp_hunter2@h/x.git",
            "http://ghp_hunter2@h/x.git",
            "git://hunter2@h/x.git",
            "ssh://git:hunter2@h/x.git",
            "https://ghp_hunter2@h/a b",
        ] {
            let e = check_url(url, true).err().unwrap_or_default();
            assert!(!e.is_empty() && !e.contains("hunter2"), "{url}: {e}");
        }
        assert!(check_url("ssh://git@h/x.git", false).is_ok());
        assert_eq!(
            without_credentials("https://u:p@h:3000/o/r.git"),
            "https://***@h:3000/o/r.git"
        );
    }

    #[test]
    fn release_tags() {
        assert!(check_release_tag("3.0.1+v2.0.0").is_ok());
        assert!(check_release_tag("1.0.0+1.0.5-social-amd64").is_ok());
        assert!(check_release_tag("2.0.0-rc.1+x").is_ok());
        for bad in [
            "v2.4.8",
            "1.14.1-rootless_1",
            "latest",
            "1.0.0",
            "1.0+x",
            "01.0.0+x",
        ] {
            assert!(check_release_tag(bad).is_err(), "{bad}");
        }
    }
}
