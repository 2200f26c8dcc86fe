//! The ref advertisement of git's smart HTTP, protocol v0 (gitprotocol-http "Smart Clients",
//! gitprotocol-pack "Reference Discovery"): `# service=<service>`, a flush, then `<oid> <ref>`
//! lines, the first with `\0` and the capabilities (an empty repository sends `capabilities^{}`
//! in place of a ref), then a flush. Upload-pack also sends each annotated tag's commit as
//! `<oid> refs/tags/<name>^{}`.

use std::collections::HashSet;

use super::pkt::{self, Pkt, Reader};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Advertisement {
    /// (oid, ref name), in the order the server sent them.
    pub refs: Vec<(String, String)>,
    pub caps: HashSet<String>,
}

/// Reads the advertisement of `service` (`git-upload-pack` or `git-receive-pack`).
pub fn parse(body: &[u8], service: &str) -> Result<Advertisement, String> {
    let mut refs = Vec::new();
    let caps = each_ref(body, service, |oid, name| {
        refs.push((oid.to_string(), name.to_string()));
        Ok(())
    })?;
    Ok(Advertisement { refs, caps })
}

/// Reads the advertisement of `service`, handing each `(oid, ref name)` to `each` as it is read
/// (nothing is collected here); returns the capabilities.
fn each_ref(
    body: &[u8],
    service: &str,
    mut each: impl FnMut(&str, &str) -> Result<(), String>,
) -> Result<HashSet<String>, String> {
    let mut r = Reader::new(body);
    let not_one = || format!("not a {service} advertisement");
    let framing = |e: pkt::PktError| format!("not a {service} advertisement: {e}");
    match r.expect().map_err(framing)? {
        Pkt::Data(d) if pkt::line(d) == format!("# service={service}") => {}
        _ => return Err(not_one()),
    }
    if r.expect().map_err(framing)? != Pkt::Flush {
        return Err(format!("{}: no flush after the service line", not_one()));
    }
    let mut caps = HashSet::new();
    let mut first = true;
    loop {
        let data = match r.expect().map_err(framing)? {
            Pkt::Flush => return Ok(caps),
            Pkt::Data(d) => d,
        };
        let text = pkt::line(data);
        let refline = if first {
            first = false;
            let (refline, listed) = text.split_once('\0').unwrap_or((&text, ""));
            caps = listed
                .split(' ')
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect();
            refline.to_string()
        } else {
            text
        };
        let (oid, name) = refline
            .split_once(' ')
            .filter(|(oid, _)| super::is_oid(oid))
            .ok_or_else(|| format!("unexpected line in the advertisement: {refline:?}"))?;
        if name != "capabilities^{}" && name != ".have" {
            each(oid, name)?;
        }
    }
}

/// The branch and tags of an upload-pack advertisement, held to the rules of a listing by
/// `git ls-remote` ([`super::RefSet::parse`]): a ref git would not make, one named twice, or
/// more tags than a listing may hold is not believed. Read ref by ref: what is kept is the
/// branch and the tags, never a copy of the whole advertisement.
pub fn ref_set(body: &[u8], branch: &str) -> Result<super::RefSet, String> {
    let mut reader = super::RefSet::reader(branch);
    each_ref(body, "git-upload-pack", |oid, name| {
        reader.add(oid, name).map_err(|e| e.to_string())
    })?;
    Ok(reader.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::git::pkt::lines as pkts;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    #[test]
    fn an_upload_pack_advertisement_gives_the_branch_and_peeled_tags() {
        let first = format!("{A} HEAD\0multi_ack side-band-64k symref=HEAD:refs/heads/main\n");
        let lines = [
            format!("{A} refs/heads/main\n"),
            format!("{B} refs/pull/1/head\n"),
            format!("{B} refs/tags/1.0.0\n"),
            format!("{A} refs/tags/1.0.0^{{}}\n"),
        ];
        let mut parts: Vec<&[u8]> = vec![b"# service=git-upload-pack\n", b"", first.as_bytes()];
        parts.extend(lines.iter().map(|l| l.as_bytes()));
        parts.push(b"");
        let set = ref_set(&pkts(&parts), "main");
        let set = set.unwrap_or_default();
        assert_eq!(set.branch.as_deref(), Some(A));
        assert_eq!(set.tags["1.0.0"].oid, B);
        assert_eq!(set.tags["1.0.0"].commit(), A);
        assert_eq!(set.tags.len(), 1);
    }

    #[test]
    fn an_empty_repository_and_foreign_answers() {
        let zero = "0".repeat(40);
        let empty = format!("{zero} capabilities^{{}}\0report-status\n");
        let body = pkts(&[b"# service=git-upload-pack\n", b"", empty.as_bytes(), b""]);
        assert_eq!(ref_set(&body, "main"), Ok(crate::git::RefSet::default()));
        let receive = pkts(&[b"# service=git-receive-pack\n", b"", empty.as_bytes(), b""]);
        assert!(ref_set(&receive, "main").is_err(), "another service");
        assert!(ref_set(b"<html>sign in</html>", "main").is_err());
        let twice = format!("{A} refs/heads/main\n");
        let body = pkts(&[
            b"# service=git-upload-pack\n",
            b"",
            twice.as_bytes(),
            twice.as_bytes(),
            b"",
        ]);
        assert!(ref_set(&body, "main").is_err(), "a ref named twice");
    }
}
