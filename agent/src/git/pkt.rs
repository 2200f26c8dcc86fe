//! git's pkt-line framing (gitprotocol-common): four lowercase hex digits giving the length of
//! the line, those four included, then the payload; `0000` is a flush. Only what a push over
//! smart HTTP (protocol v0/v1) needs: no delimiter or response-end packets, which are v2's.

/// The largest payload a pkt-line may carry (65520 bytes in all).
pub const MAX_PAYLOAD: usize = 65516;
pub const FLUSH: &[u8] = b"0000";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PktError {
    #[error("a pkt-line of {0} bytes is more than git allows")]
    TooLong(usize),
    #[error("the answer ends inside a pkt-line")]
    Truncated,
    #[error("the answer is not in git's pkt-line framing (length {0:?})")]
    BadLength(String),
}

/// Appends `payload` as one pkt-line.
pub fn write(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), PktError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(PktError::TooLong(payload.len()));
    }
    out.extend_from_slice(format!("{:04x}", payload.len() + 4).as_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pkt<'a> {
    Flush,
    Data(&'a [u8]),
}

/// Reads pkt-lines out of a buffer, one at a time.
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }

    /// The next pkt-line, `None` at the end of the buffer.
    pub fn next_pkt(&mut self) -> Option<Result<Pkt<'a>, PktError>> {
        if self.at == self.buf.len() {
            return None;
        }
        Some(self.read())
    }

    /// The next pkt-line, the end of the buffer being an error.
    pub fn expect(&mut self) -> Result<Pkt<'a>, PktError> {
        self.next_pkt().unwrap_or(Err(PktError::Truncated))
    }

    fn read(&mut self) -> Result<Pkt<'a>, PktError> {
        let head = self
            .buf
            .get(self.at..self.at + 4)
            .ok_or(PktError::Truncated)?;
        let text = String::from_utf8_lossy(head).into_owned();
        let len = std::str::from_utf8(head)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or_else(|| PktError::BadLength(text.clone()))?;
        if len == 0 {
            self.at += 4;
            return Ok(Pkt::Flush);
        }
        if len < 4 {
            return Err(PktError::BadLength(text));
        }
        let data = self
            .buf
            .get(self.at + 4..self.at + len)
            .ok_or(PktError::Truncated)?;
        self.at += len;
        Ok(Pkt::Data(data))
    }
}

/// A payload without its line feed, as text.
pub fn line(data: &[u8]) -> String {
    String::from_utf8_lossy(data.strip_suffix(b"\n").unwrap_or(data)).into_owned()
}

/// Test answers: each item a pkt-line, an empty one a flush.
#[cfg(test)]
pub fn lines(lines: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        if l.is_empty() {
            out.extend_from_slice(FLUSH);
        } else {
            let _ = write(&mut out, l);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back() {
        let mut out = Vec::new();
        assert!(write(&mut out, b"# service=git-receive-pack\n").is_ok());
        out.extend_from_slice(FLUSH);
        assert!(write(&mut out, b"").is_ok());
        assert_eq!(&out[..4], b"001f");
        let mut r = Reader::new(&out);
        assert_eq!(
            r.expect(),
            Ok(Pkt::Data(&b"# service=git-receive-pack\n"[..]))
        );
        assert_eq!(r.expect(), Ok(Pkt::Flush));
        assert_eq!(r.expect(), Ok(Pkt::Data(&b""[..])));
        assert_eq!(r.next_pkt(), None);
        assert_eq!(
            write(&mut out, &[b'x'; MAX_PAYLOAD + 1]),
            Err(PktError::TooLong(MAX_PAYLOAD + 1))
        );
    }

    #[test]
    fn refuses_what_is_not_pkt_lines() {
        for bad in [&b"00"[..], b"0009abc", b"zzzzabc", b"0003", b"<htm"] {
            assert!(Reader::new(bad).expect().is_err(), "{bad:?}");
        }
    }
}
