//! A push over git's smart HTTP protocol, spoken by the agent itself: the advertisement from
//! `GET <repo>/info/refs?service=git-receive-pack`, then one `POST <repo>/git-receive-pack` with
//! an update command per ref (`<old> <new> <ref>`) and a pack, answered by a status per ref
//! (gitprotocol-pack "Pushing Data To a Server", gitprotocol-http "Smart Service
//! git-receive-pack", gitprotocol-capabilities).
//!
//! Why not `git push`: over HTTP git hands every ref it pushes to `send-pack` as an explicit
//! refspec, each matched against every local and remote ref, and every lease as an argument. A
//! mirror of 20 000 tags took 103 s to fill, and past about 15 000 the argument list overflowed.
//! Here each command is a line of the request body, and the server itself checks each ref's old
//! value under its lock, so the lease holds at the moment of the update, not only at the listing.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::advertisement;
use super::pkt::{self, Pkt, Reader};
use super::{Change, ErrorKind, Git, GitError};

/// Answers larger than this are not read: an advertisement of 100 000 refs is about 8 MiB.
const ADVERTISEMENT_LIMIT: u64 = 64 * 1024 * 1024;
const REPORT_LIMIT: u64 = 16 * 1024 * 1024;

fn error(kind: ErrorKind, message: impl Into<String>) -> GitError {
    GitError {
        kind,
        message: message.into(),
    }
}

/// What the server said it has and can do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Advertised {
    pub refs: HashMap<String, String>,
    pub caps: HashSet<String>,
}

/// Reads a v0 receive-pack advertisement as smart HTTP sends it ([`advertisement::parse`]).
pub fn parse_advertisement(body: &[u8]) -> Result<Advertised, String> {
    let parsed = advertisement::parse(body, "git-receive-pack")?;
    Ok(Advertised {
        refs: parsed
            .refs
            .into_iter()
            .map(|(oid, name)| (name, oid))
            .collect(),
        caps: parsed.caps,
    })
}

/// One ref's update: what the mirror must hold now, what it is to hold after.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Update {
    old: String,
    new: String,
    name: String,
}

fn updates(changes: &[Change]) -> Vec<Update> {
    changes
        .iter()
        .map(|c| {
            let (old, new) = match c {
                Change::Branch { from, to, .. } => (from.clone(), Some(to.clone())),
                Change::TagCreate { to, .. } => (None, Some(to.clone())),
                Change::TagMove { from, to, .. } => (Some(from.clone()), Some(to.clone())),
                Change::TagDelete { from, .. } => (Some(from.clone()), None),
            };
            let width = old.as_ref().or(new.as_ref()).map_or(40, String::len);
            let zero = "0".repeat(width);
            Update {
                old: old.unwrap_or_else(|| zero.clone()),
                new: new.unwrap_or(zero),
                name: c.refname(),
            }
        })
        .collect()
}

fn is_zero(oid: &str) -> bool {
    oid.bytes().all(|b| b == b'0')
}

/// Every update's old value is what the server has now (absent for zero), or the push is stale.
fn check_leases(adv: &Advertised, updates: &[Update]) -> Result<(), GitError> {
    let stale: Vec<String> = updates
        .iter()
        .filter(|u| {
            let has = adv.refs.get(&u.name);
            if is_zero(&u.old) {
                has.is_some()
            } else {
                has != Some(&u.old)
            }
        })
        .map(|u| format!("{} (stale info)", u.name))
        .take(5)
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    Err(error(
        ErrorKind::Rejected,
        format!(
            "[rejected] the mirror no longer holds what it was listed with: {}",
            stale.join(", ")
        ),
    ))
}

/// The command lines of the request, the first carrying the capabilities asked for.
fn commands(updates: &[Update], caps: &[&str]) -> Result<Vec<u8>, GitError> {
    let mut out = Vec::new();
    for (i, u) in updates.iter().enumerate() {
        let mut line = format!("{} {} {}", u.old, u.new, u.name);
        if i == 0 {
            line.push('\0');
            line.push_str(&caps.join(" "));
        }
        pkt::write(&mut out, line.as_bytes())
            .map_err(|e| error(ErrorKind::Other, format!("{}: {e}", u.name)))?;
    }
    out.extend_from_slice(pkt::FLUSH);
    Ok(out)
}

/// The report, without side-band (or out of band 1), and the server's messages (band 2).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub unpack: Option<String>,
    /// Each ref the server reported: `None` for ok, the reason for ng.
    pub refs: Vec<(String, Option<String>)>,
    pub messages: String,
}

/// Separates side-band-64k's bands: 1 the report, 2 the server's messages, 3 a fatal error.
fn demultiplex(body: &[u8]) -> Result<(Vec<u8>, String), String> {
    let mut r = Reader::new(body);
    let (mut data, mut messages) = (Vec::new(), String::new());
    while let Some(p) = r.next_pkt() {
        match p.map_err(|e| format!("the push's answer: {e}"))? {
            Pkt::Flush => break,
            Pkt::Data([1, rest @ ..]) => data.extend_from_slice(rest),
            Pkt::Data([2, rest @ ..]) => messages.push_str(&String::from_utf8_lossy(rest)),
            Pkt::Data([3, rest @ ..]) => {
                return Err(format!(
                    "the forge ended the push: {}",
                    printable(&String::from_utf8_lossy(rest))
                ))
            }
            Pkt::Data(_) => return Err("the push's answer has an unknown side-band".into()),
        }
    }
    Ok((data, messages))
}

/// The server's words for a person to read: no control characters but line feeds, one
/// `remote:` line each, as git prints them.
fn printable(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(|l| l.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("remote: {}", l.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn parse_report(body: &[u8], sideband: bool) -> Result<Report, String> {
    let (data, messages) = if sideband {
        demultiplex(body)?
    } else {
        (body.to_vec(), String::new())
    };
    let mut report = Report {
        messages,
        ..Report::default()
    };
    let mut r = Reader::new(&data);
    while let Some(p) = r.next_pkt() {
        let line = match p.map_err(|e| format!("the push's report: {e}"))? {
            Pkt::Flush => break,
            Pkt::Data(d) => pkt::line(d),
        };
        if let Some(status) = line.strip_prefix("unpack ") {
            report.unpack = Some(status.to_string());
        } else if let Some(name) = line.strip_prefix("ok ") {
            report.refs.push((name.to_string(), None));
        } else if let Some(rest) = line.strip_prefix("ng ") {
            let (name, why) = rest.split_once(' ').unwrap_or((rest, "refused"));
            report.refs.push((name.to_string(), Some(why.to_string())));
        } else {
            return Err(format!("unexpected line in the push's report: {line:?}"));
        }
    }
    if report.unpack.is_none() {
        return Err("the push's report has no unpack status".into());
    }
    Ok(report)
}

/// Whether the server refused a ref because it no longer held the expected old value (someone
/// else's update won), which the next sync settles, rather than by its own rules.
fn lost_a_race(why: &str) -> bool {
    [
        "but expected",
        "cannot lock ref",
        "failed to lock",
        "incorrect old value",
    ]
    .iter()
    .any(|n| why.contains(n))
}

/// Ok when the server unpacked and updated every ref; otherwise its reasons, per ref.
fn judge(report: &Report, updates: &[Update]) -> Result<(), GitError> {
    let messages = printable(&report.messages);
    let with_messages = |text: String| {
        if messages.is_empty() {
            text
        } else {
            format!("{text}\n{messages}")
        }
    };
    if report.unpack.as_deref() != Some("ok") {
        let why = report.unpack.clone().unwrap_or_default();
        return Err(error(
            ErrorKind::Other,
            with_messages(format!("the mirror could not unpack the push: {why}")),
        ));
    }
    let refused: Vec<&(String, Option<String>)> = report
        .refs
        .iter()
        .filter(|(_, why)| why.is_some())
        .collect();
    // In an atomic push every other ref is refused for the one that failed: show that one.
    let first: Vec<&&(String, Option<String>)> = refused
        .iter()
        .filter(|(_, why)| why.as_deref() != Some("atomic push failure"))
        .collect();
    let shown = if first.is_empty() {
        refused.iter().collect()
    } else {
        first
    };
    if let Some((_, Some(why))) = shown.first().map(|r| **r) {
        let list: Vec<String> = shown
            .iter()
            .take(5)
            .map(|(name, why)| format!("{name} ({})", why.as_deref().unwrap_or_default()))
            .collect();
        let kind = if lost_a_race(why) {
            ErrorKind::Rejected
        } else {
            ErrorKind::Refused
        };
        return Err(error(
            kind,
            with_messages(format!("[remote rejected] {}", list.join(", "))),
        ));
    }
    let reported: HashSet<&str> = report.refs.iter().map(|(n, _)| n.as_str()).collect();
    if let Some(u) = updates.iter().find(|u| !reported.contains(u.name.as_str())) {
        return Err(error(
            ErrorKind::Other,
            format!("the push's report says nothing of {}", u.name),
        ));
    }
    Ok(())
}

/// The HTTP side: one client per push, no redirects (they could carry the credentials away).
struct Remote<'a> {
    url: &'a str,
    auth: Option<&'a str>,
    agent: ureq::Agent,
}

impl Remote<'_> {
    fn http_error(&self, what: &str, e: &ureq::Error) -> GitError {
        let kind = match e {
            ureq::Error::Timeout(_) => ErrorKind::Timeout,
            ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                ErrorKind::Transient
            }
            _ => ErrorKind::Other,
        };
        error(kind, format!("{what} {}: {e}", self.url))
    }

    fn status_error(&self, what: &str, status: u16) -> GitError {
        let (kind, hint) = match status {
            401 => (ErrorKind::Auth, "the forge refused the credentials"),
            403 => (
                ErrorKind::Refused,
                "the forge refused the push: an archived repository, a pull-mirror, or a token \
                 without write:repository",
            ),
            404 => (
                ErrorKind::Other,
                "the forge shows no such repository to the token's user (it may not read it)",
            ),
            500..=599 => (ErrorKind::Transient, "the forge failed"),
            _ => (ErrorKind::Other, "unexpected answer"),
        };
        error(kind, format!("{what} {}: HTTP {status}: {hint}", self.url))
    }

    /// The headers of both requests, and each request's own timeout.
    fn prepare<B>(
        &self,
        request: ureq::RequestBuilder<B>,
        timeout: Duration,
    ) -> ureq::RequestBuilder<B> {
        let request = request
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header(
                "User-Agent",
                concat!("git/cc-ci-agent-", env!("CARGO_PKG_VERSION")),
            );
        match self.auth {
            Some(a) => request.header("Authorization", a),
            None => request,
        }
    }

    /// The body of a 200 answer of `content_type`, at most `limit` bytes.
    fn answer(
        &self,
        what: &str,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        content_type: &str,
        limit: u64,
    ) -> Result<Vec<u8>, GitError> {
        let mut response = sent.map_err(|e| self.http_error(what, &e))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(self.status_error(what, status));
        }
        let smart = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(content_type));
        if !smart {
            return Err(error(
                ErrorKind::Other,
                format!(
                    "{what} {}: not a smart git HTTP server (no {content_type})",
                    self.url
                ),
            ));
        }
        response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| self.http_error(what, &e))
    }

    fn get_advertisement(&self, timeout: Duration) -> Result<Advertised, GitError> {
        let url = format!("{}/info/refs?service=git-receive-pack", self.url);
        let sent = self.prepare(self.agent.get(url), timeout).call();
        let body = self.answer(
            "asking the mirror for its refs at",
            sent,
            "application/x-git-receive-pack-advertisement",
            ADVERTISEMENT_LIMIT,
        )?;
        parse_advertisement(&body).map_err(|e| error(ErrorKind::Other, e))
    }

    fn post(&self, request_file: &std::fs::File, timeout: Duration) -> Result<Vec<u8>, GitError> {
        let url = format!("{}/git-receive-pack", self.url);
        let sent = self
            .prepare(self.agent.post(url), timeout)
            .header("Content-Type", "application/x-git-receive-pack-request")
            .header("Accept", "application/x-git-receive-pack-result")
            .send(request_file);
        self.answer(
            "pushing to",
            sent,
            "application/x-git-receive-pack-result",
            REPORT_LIMIT,
        )
    }
}

/// Pushes `changes` from `cache` to the repository at `url` (http or https), each ref checked
/// by the server against the value the mirror was listed with; atomic where the server can.
pub fn push(
    git: &Git,
    cache: &Path,
    url: &str,
    auth: Option<&str>,
    changes: &[Change],
) -> Result<(), GitError> {
    let remote = Remote {
        url: url.trim_end_matches('/'),
        auth,
        agent: crate::http::agent(git.timeout, 0),
    };
    let adv = remote.get_advertisement(git.time_left()?)?;
    let updates = updates(changes);
    check_leases(&adv, &updates)?;
    let offered = |c: &str| adv.caps.contains(c);
    if updates.iter().any(|u| is_zero(&u.new)) && !offered("delete-refs") {
        return Err(error(
            ErrorKind::Refused,
            "the mirror's server does not allow deleting refs (no delete-refs capability)",
        ));
    }
    let mut caps = vec!["report-status"];
    caps.extend(
        [
            "side-band-64k",
            "quiet",
            "atomic",
            "ofs-delta",
            "delete-refs",
        ]
        .into_iter()
        .filter(|c| offered(c)),
    );
    let agent_cap = concat!("agent=cc-ci-agent/", env!("CARGO_PKG_VERSION"));
    caps.push(agent_cap);

    let work = cache.join("cc-ci-push");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir(&work)
        .map_err(|e| error(ErrorKind::Other, format!("{}: {e}", work.display())))?;
    let sent = send(git, &remote, cache, &work, &adv, &updates, &caps);
    let _ = std::fs::remove_dir_all(&work);
    let report =
        parse_report(&sent?, offered("side-band-64k")).map_err(|e| error(ErrorKind::Other, e))?;
    judge(&report, &updates)
}

/// Writes the request (commands, then the pack when anything is not a deletion) to a file in
/// `work` and posts it: the pack is never held in memory.
fn send(
    git: &Git,
    remote: &Remote<'_>,
    cache: &Path,
    work: &Path,
    adv: &Advertised,
    updates: &[Update],
    caps: &[&str],
) -> Result<Vec<u8>, GitError> {
    let io = |e: std::io::Error| error(ErrorKind::Other, format!("{}: {e}", work.display()));
    let path = work.join("request");
    let mut file = std::fs::File::create(&path).map_err(io)?;
    file.write_all(&commands(updates, caps)?).map_err(io)?;
    let wants: Vec<&str> = updates
        .iter()
        .map(|u| u.new.as_str())
        .filter(|n| !is_zero(n))
        .collect();
    if !wants.is_empty() {
        let theirs: Vec<&str> = adv.refs.values().map(String::as_str).collect();
        let haves = git.present(cache, &theirs)?;
        let pack = git.pack_objects(cache, work, &wants, &haves, caps.contains(&"ofs-delta"))?;
        let mut pack = std::fs::File::open(pack).map_err(io)?;
        std::io::copy(&mut pack, &mut file).map_err(io)?;
    }
    file.flush().map_err(io)?;
    drop(file);
    let file = std::fs::File::open(&path).map_err(io)?;
    remote.post(&file, git.time_left()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    use crate::git::pkt::lines as pkts;

    #[test]
    fn reads_advertisements_of_full_and_empty_repositories() {
        let first =
            format!("{A} refs/heads/main\0report-status delete-refs side-band-64k atomic\n");
        let second = format!("{B} refs/tags/1.0\n");
        let body = pkts(&[
            b"# service=git-receive-pack\n",
            b"",
            first.as_bytes(),
            second.as_bytes(),
            b"",
        ]);
        let adv = parse_advertisement(&body).unwrap_or_default();
        assert_eq!(adv.refs.len(), 2);
        assert_eq!(adv.refs["refs/tags/1.0"], B);
        assert!(adv.caps.contains("atomic") && adv.caps.contains("delete-refs"));

        let empty = format!("{Z} capabilities^{{}}\0report-status\n");
        let body = pkts(&[b"# service=git-receive-pack\n", b"", empty.as_bytes(), b""]);
        let adv = parse_advertisement(&body).unwrap_or_default();
        assert!(adv.refs.is_empty() && adv.caps.contains("report-status"));

        for bad in [
            &b"<html>"[..],
            &pkts(&[b"# service=git-upload-pack\n", b""]),
        ] {
            assert!(parse_advertisement(bad).is_err());
        }
    }

    #[test]
    fn leases_are_checked_against_the_advertisement() {
        let changes = [
            Change::TagCreate {
                name: "new".into(),
                to: A.into(),
            },
            Change::TagMove {
                name: "moved".into(),
                from: A.into(),
                to: B.into(),
            },
            Change::TagDelete {
                name: "gone".into(),
                from: B.into(),
            },
        ];
        let u = updates(&changes);
        assert_eq!(
            u[0],
            Update {
                old: Z.into(),
                new: A.into(),
                name: "refs/tags/new".into()
            }
        );
        assert_eq!(u[2].new, Z);
        let mut adv = Advertised::default();
        adv.refs.insert("refs/tags/moved".into(), A.into());
        adv.refs.insert("refs/tags/gone".into(), B.into());
        assert!(check_leases(&adv, &u).is_ok());
        adv.refs.insert("refs/tags/new".into(), B.into());
        let e = check_leases(&adv, &u).err().map(|e| (e.kind, e.message));
        assert!(
            matches!(e, Some((ErrorKind::Rejected, m)) if m.contains("refs/tags/new (stale info)"))
        );
    }

    #[test]
    fn reads_reports_in_and_out_of_side_band() {
        let report = pkts(&[
            b"unpack ok\n",
            b"ok refs/heads/main\n",
            b"ng refs/tags/1.0 pre-receive hook declined\n",
            b"",
        ]);
        let mut body = Vec::new();
        let _ = pkt::write(&mut body, b"\x02Tag 1.0 is protected\n");
        let mut banded = vec![1u8];
        banded.extend_from_slice(&report);
        let _ = pkt::write(&mut body, &banded);
        body.extend_from_slice(pkt::FLUSH);
        let r = parse_report(&body, true).unwrap_or_default();
        assert_eq!(r.unpack.as_deref(), Some("ok"));
        assert_eq!(
            r.refs[1],
            (
                "refs/tags/1.0".into(),
                Some("pre-receive hook declined".into())
            )
        );
        let updates = updates(&[Change::TagCreate {
            name: "1.0".into(),
            to: A.into(),
        }]);
        let e = judge(&r, &updates).err().map(|e| (e.kind, e.message));
        assert!(
            matches!(&e, Some((ErrorKind::Refused, m))
            if m.contains("[remote rejected] refs/tags/1.0 (pre-receive hook declined)")
                && m.contains("remote: Tag 1.0 is protected")),
            "{e:?}"
        );

        let plain = parse_report(
            &pkts(&[
                b"unpack ok\n",
                b"ng refs/heads/main cannot lock ref 'refs/heads/main': is at 1 but expected 2\n",
                b"",
            ]),
            false,
        )
        .unwrap_or_default();
        let e = judge(&plain, &[]).err().map(|e| e.kind);
        assert_eq!(e, Some(ErrorKind::Rejected));

        let mut fatal = Vec::new();
        let _ = pkt::write(&mut fatal, b"\x03quota exceeded\x1b[2J");
        let e = parse_report(&fatal, true).err().unwrap_or_default();
        assert!(e.contains("quota exceeded") && !e.contains('\u{1b}'), "{e}");
        assert!(parse_report(&pkts(&[b"ok refs/heads/main\n", b""]), false).is_err());
    }
}
