//! HTTP/1.1 GETs to one server over one kept-alive connection, pipelined (RFC 9112 section 9.3.2):
//! up to [`WINDOW`] requests are on the wire before their answers are read, so a hundred small
//! answers cost about one round trip and one TLS handshake, not a hundred of each.
//!
//! Why not `ureq`, which the agent uses for everything else: it keeps connections alive but sends
//! one request at a time on each, so one connection per server means one round trip per
//! repository; docs/performance.md has the figures. Only what a ref advertisement needs is
//! spoken: GET, `Content-Length`, chunked bodies, `Connection: close`. A server that closes the
//! connection is reconnected to and asked again for what it did not answer (GETs are safe to
//! repeat); one that answers nothing gets no second try, and its requests are left to the caller.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests sent ahead of their answers. Each is a few hundred bytes, so the window never fills
/// a socket buffer: the server is never kept from writing answers by requests it has not read.
const WINDOW: usize = 32;
/// Connections to one server per call at most: a server that closes after every few answers
/// (nginx's `keepalive_requests`, a proxy's limit) is followed, not chased forever.
const MAX_CONNECTIONS: usize = 16;
const LINE_LIMIT: u64 = 8 * 1024;
const HEADER_LIMIT: usize = 100;
/// Interim answers (`100 Continue`) before the real one at most: a server has no reason to send
/// more than one to a GET.
const INTERIM_LIMIT: usize = 4;

/// Why a request has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server took longer than a read or write may, or the call ran out of time: it is
    /// hanging, and asking again would only wait again.
    TimedOut,
    /// Anything else: refused, reset, not HTTP, too large.
    Broken(String),
    /// Not asked: the server closed so many connections that the call stopped opening new ones.
    /// Nothing is known of the request; the caller asks another way.
    NotAsked,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::TimedOut => f.write_str("no answer in time"),
            Failure::Broken(why) => f.write_str(why),
            Failure::NotAsked => write!(
                f,
                "not asked: the server closed {MAX_CONNECTIONS} connections in a row"
            ),
        }
    }
}

impl From<String> for Failure {
    fn from(why: String) -> Self {
        Failure::Broken(why)
    }
}

impl From<&str> for Failure {
    fn from(why: &str) -> Self {
        Failure::Broken(why.to_string())
    }
}

fn io_failure(e: io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::TimedOut,
        _ => Failure::Broken(e.to_string()),
    }
}

/// Where the requests go: the scheme, host and port of a URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    pub tls: bool,
    /// As written in the URL (an IPv6 address in brackets), for the `Host` header.
    pub host: String,
    pub port: u16,
}

/// One GET: the path with its query, and the `Authorization` header, if any (sent, never logged).
pub struct Get<'a> {
    pub path: String,
    pub auth: Option<&'a str>,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// The limits of one call: each read or write, the whole call, each body.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub io_timeout: Duration,
    pub until: Instant,
    pub body_limit: u64,
}

/// A TCP connection that holds the call's limits on every read and write, not only between
/// answers: each may take `io_timeout` and none may end past `until`, so a server that sends a
/// byte now and then (a status line, a body, chunks, endless interim answers) is cut off at the
/// call's end like one that sends nothing. TLS reads and writes through it, so the same holds
/// inside TLS.
struct Timed {
    tcp: TcpStream,
    limits: Limits,
}

impl Timed {
    /// Sets the socket's timeout to what this read or write may take; out of time, an error.
    fn arm(&self, write: bool) -> io::Result<()> {
        let left = self.limits.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "out of time for the listing",
            ));
        }
        let timeout = Some(self.limits.io_timeout.min(left));
        if write {
            self.tcp.set_write_timeout(timeout)
        } else {
            self.tcp.set_read_timeout(timeout)
        }
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm(false)?;
        self.tcp.read(buf)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm(true)?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

enum Stream {
    Plain(Timed),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, Timed>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// The GETs of `gets`, answered in order over as few connections as the server allows: each
/// answer goes to `on_answer` as it arrives (with its request's index), so only one body is held
/// at a time; a request left unanswered gets the reason. Returns the connections it took.
pub fn get_all(
    origin: &Origin,
    gets: &[Get<'_>],
    tls: Option<&Arc<rustls::ClientConfig>>,
    limits: Limits,
    on_answer: &mut dyn FnMut(usize, Result<Response, Failure>),
) -> usize {
    let mut todo: VecDeque<usize> = (0..gets.len()).collect();
    let mut connections = 0;
    let mut why = Failure::TimedOut;
    // Fresh connections in a row whose first answer did not come: two, and the server is taken
    // to hang, not one slow repository.
    let mut stalled = 0;
    while !todo.is_empty() && connections < MAX_CONNECTIONS && Instant::now() < limits.until {
        connections += 1;
        let (answered, ended) = one_connection(origin, gets, tls, limits, &mut todo, on_answer);
        if answered > 0 {
            stalled = 0;
        }
        match ended {
            // The request at the front was too slow: it fails alone, the rest are asked again
            // on a new connection.
            Some(Failure::TimedOut) => {
                if let Some(i) = todo.pop_front() {
                    on_answer(i, Err(Failure::TimedOut));
                }
                if answered == 0 {
                    stalled += 1;
                    if stalled == 2 {
                        break;
                    }
                }
            }
            // Refused, reset or not HTTP before any answer: the next connection fares no better.
            Some(e) if answered == 0 => {
                why = e;
                break;
            }
            _ => {}
        }
    }
    // Every connection the cap allows was used and answered something: the server closes after
    // each few answers. What is left was never asked, which is no sign of a hang.
    if connections == MAX_CONNECTIONS && stalled < 2 && Instant::now() < limits.until {
        why = Failure::NotAsked;
    }
    for i in todo {
        on_answer(i, Err(why.clone()));
    }
    connections
}

/// Sends and reads on one connection until everything is answered or it ends; requests it did
/// not answer go back to the front of `todo`, in order. How many it answered, and why it ended
/// early, if it did.
fn one_connection(
    origin: &Origin,
    gets: &[Get<'_>],
    tls: Option<&Arc<rustls::ClientConfig>>,
    limits: Limits,
    todo: &mut VecDeque<usize>,
    on_answer: &mut dyn FnMut(usize, Result<Response, Failure>),
) -> (usize, Option<Failure>) {
    let mut conn = match connect(origin, tls, limits) {
        Ok(s) => BufReader::with_capacity(64 * 1024, s),
        Err(e) => return (0, Some(io_failure(e))),
    };
    let mut in_flight: VecDeque<usize> = VecDeque::new();
    let mut answered = 0;
    let give_back = |todo: &mut VecDeque<usize>, in_flight: VecDeque<usize>| {
        for i in in_flight.into_iter().rev() {
            todo.push_front(i);
        }
    };
    loop {
        let mut batch = Vec::new();
        while in_flight.len() < WINDOW {
            let Some(i) = todo.pop_front() else { break };
            write_request(&mut batch, origin, &gets[i]);
            in_flight.push_back(i);
        }
        if !batch.is_empty() {
            let sent = conn
                .get_mut()
                .write_all(&batch)
                .and_then(|()| conn.get_mut().flush());
            if let Err(e) = sent {
                give_back(todo, in_flight);
                return (answered, Some(io_failure(e)));
            }
        }
        let Some(&i) = in_flight.front() else {
            return (answered, None);
        };
        let read = read_response(&mut conn, limits.body_limit);
        match read {
            Ok((response, keep_open)) => {
                in_flight.pop_front();
                on_answer(i, Ok(response));
                answered += 1;
                if !keep_open {
                    give_back(todo, in_flight);
                    return (answered, None);
                }
            }
            Err(e) => {
                give_back(todo, in_flight);
                return (answered, Some(e));
            }
        }
    }
}

fn connect(
    origin: &Origin,
    tls: Option<&Arc<rustls::ClientConfig>>,
    limits: Limits,
) -> io::Result<Stream> {
    let bare = origin.host.trim_start_matches('[').trim_end_matches(']');
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    for addr in (bare, origin.port).to_socket_addrs()? {
        let timeout = limits
            .io_timeout
            .min(limits.until.saturating_duration_since(Instant::now()));
        match TcpStream::connect_timeout(&addr, timeout.max(Duration::from_millis(1))) {
            Ok(tcp) => {
                // Pipelined requests are small writes that must leave at once.
                tcp.set_nodelay(true)?;
                return wrap(Timed { tcp, limits }, origin, bare, tls);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn wrap(
    tcp: Timed,
    origin: &Origin,
    bare: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> io::Result<Stream> {
    if !origin.tls {
        return Ok(Stream::Plain(tcp));
    }
    let config = tls.ok_or_else(|| io::Error::other("no TLS configuration"))?;
    let name = rustls::pki_types::ServerName::try_from(bare.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let conn = rustls::ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
}

fn write_request(out: &mut Vec<u8>, origin: &Origin, get: &Get<'_>) {
    let default_port = if origin.tls { 443 } else { 80 };
    let host = if origin.port == default_port {
        origin.host.clone()
    } else {
        format!("{}:{}", origin.host, origin.port)
    };
    out.extend_from_slice(format!("GET {} HTTP/1.1\r\nHost: {host}\r\n", get.path).as_bytes());
    out.extend_from_slice(
        concat!(
            "User-Agent: git/cc-ci-agent-",
            env!("CARGO_PKG_VERSION"),
            "\r\nAccept: */*\r\nPragma: no-cache\r\n"
        )
        .as_bytes(),
    );
    if let Some(auth) = get.auth {
        out.extend_from_slice(format!("Authorization: {auth}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// One line of at most [`LINE_LIMIT`] bytes, without its line end.
fn read_line(conn: &mut impl BufRead) -> Result<String, Failure> {
    let mut line = Vec::new();
    conn.take(LINE_LIMIT)
        .read_until(b'\n', &mut line)
        .map_err(io_failure)?;
    if !line.ends_with(b"\n") {
        return Err(Failure::from(if line.is_empty() {
            "the server closed the connection"
        } else {
            "a line of the answer is too long or cut off"
        }));
    }
    let text = String::from_utf8_lossy(&line);
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// How the body is framed and whether the connection stays open after it.
struct Head {
    status: u16,
    content_type: Option<String>,
    length: Option<u64>,
    chunked: bool,
    keep_open: bool,
}

fn read_head(conn: &mut impl BufRead) -> Result<Head, Failure> {
    for _ in 0..=INTERIM_LIMIT {
        let status_line = read_line(conn)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| {
                let start: String = status_line.chars().take(40).collect();
                format!("not an HTTP answer: {start:?}")
            })?;
        let mut head = Head {
            status,
            content_type: None,
            length: None,
            chunked: false,
            keep_open: version == "HTTP/1.1",
        };
        for n in 0.. {
            let line = read_line(conn)?;
            if line.is_empty() {
                break;
            }
            if n == HEADER_LIMIT {
                return Err(format!("more than {HEADER_LIMIT} header lines").into());
            }
            read_header(&mut head, &line)?;
        }
        // An interim answer (100 Continue) is followed by the real one.
        if !(100..200).contains(&status) {
            return Ok(head);
        }
    }
    Err(format!("more than {INTERIM_LIMIT} interim answers").into())
}

fn read_header(head: &mut Head, line: &str) -> Result<(), String> {
    let Some((name, value)) = line.split_once(':') else {
        return Err("a header line without a colon".into());
    };
    let value = value.trim();
    match name.to_ascii_lowercase().as_str() {
        "content-type" => head.content_type = Some(value.to_string()),
        "content-length" => {
            let length = value.parse().map_err(|_| "a bad Content-Length")?;
            if head.length.replace(length).is_some_and(|l| l != length) {
                return Err("two different Content-Lengths".into());
            }
        }
        "transfer-encoding" => head.chunked = value.to_ascii_lowercase().ends_with("chunked"),
        "connection" => {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                head.keep_open = false;
            } else if value.contains("keep-alive") {
                head.keep_open = true;
            }
        }
        _ => {}
    }
    Ok(())
}

/// One answer; whether the connection can carry the next.
fn read_response(conn: &mut impl BufRead, limit: u64) -> Result<(Response, bool), Failure> {
    let head = read_head(conn)?;
    let too_large = || format!("the answer is larger than {limit} bytes");
    let mut body = Vec::new();
    let mut keep_open = head.keep_open;
    if head.chunked {
        read_chunks(conn, limit, &mut body)?;
    } else if let Some(length) = head.length {
        if length > limit {
            return Err(too_large().into());
        }
        conn.take(length)
            .read_to_end(&mut body)
            .map_err(io_failure)?;
        if body.len() as u64 != length {
            return Err("the server closed the connection inside an answer".into());
        }
    } else if head.status != 204 && head.status != 304 {
        // No framing: the body runs to the end of the connection.
        conn.take(limit + 1)
            .read_to_end(&mut body)
            .map_err(io_failure)?;
        if body.len() as u64 > limit {
            return Err(too_large().into());
        }
        keep_open = false;
    }
    let response = Response {
        status: head.status,
        content_type: head.content_type,
        body,
    };
    Ok((response, keep_open))
}

fn read_chunks(conn: &mut impl BufRead, limit: u64, body: &mut Vec<u8>) -> Result<(), Failure> {
    loop {
        let line = read_line(conn)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size, 16).map_err(|_| "a bad chunk size")?;
        if size == 0 {
            // Trailers, if any, up to the empty line.
            while !read_line(conn)?.is_empty() {}
            return Ok(());
        }
        // A size near 2^64 must not wrap the sum past the limit.
        if size > limit.saturating_sub(body.len() as u64) {
            return Err(format!("the answer is larger than {limit} bytes").into());
        }
        let before = body.len();
        conn.take(size).read_to_end(body).map_err(io_failure)?;
        if (body.len() - before) as u64 != size || !read_line(conn)?.is_empty() {
            return Err("a chunk of the answer is cut off".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Status, body, and whether the connection stays open.
    type Answer = (u16, Vec<u8>, bool);

    fn read_all(wire: &[u8]) -> Vec<Result<Answer, Failure>> {
        let mut conn = BufReader::new(wire);
        let mut out = Vec::new();
        while !conn.fill_buf().map(<[u8]>::is_empty).unwrap_or(true) {
            let r = read_response(&mut conn, 64).map(|(r, keep)| (r.status, r.body, keep));
            let stop = r.is_err();
            out.push(r);
            if stop {
                break;
            }
        }
        out
    }

    #[test]
    fn reads_answers_back_to_back_in_each_framing() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc\
            HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nno\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n\
            HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nz\
            HTTP/1.0 200 OK\r\n\r\nto the end";
        let got = read_all(wire);
        assert_eq!(
            got,
            [
                Ok((200, b"abc".to_vec(), true)),
                Ok((404, b"no!".to_vec(), true)),
                Ok((200, b"z".to_vec(), false)),
                Ok((200, b"to the end".to_vec(), false)),
            ]
        );
    }

    #[test]
    fn refuses_what_breaks_the_framing_or_the_limit() {
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n",
        ] {
            let got = read_all(bad);
            assert!(
                got.last().is_some_and(Result::is_err),
                "{:?}: {got:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 9000));
        assert!(read_all(&long).last().is_some_and(Result::is_err));
    }

    /// A chunk of size 1 then one of size 2^64 - 1: the sum must not wrap past the limit (in a
    /// release build it did, and the read ran to the end of the connection).
    #[test]
    fn a_chunk_size_near_two_to_the_64_is_over_the_limit() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\nbbbb";
        let got = read_all(wire);
        assert!(
            matches!(got.last(), Some(Err(Failure::Broken(why))) if why.contains("larger than")),
            "{got:?}"
        );
    }

    #[test]
    fn endless_interim_answers_are_refused() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(50);
        let got = read_all(&wire);
        assert!(
            matches!(got.last(), Some(Err(Failure::Broken(why))) if why.contains("interim")),
            "{got:?}"
        );
    }

    #[test]
    fn a_request_names_its_host_and_carries_the_header_it_is_given() {
        let origin = Origin {
            tls: true,
            host: "forge.example".into(),
            port: 443,
        };
        let mut out = Vec::new();
        let get = Get {
            path: "/o/r.git/info/refs?service=git-upload-pack".into(),
            auth: Some("token T"),
        };
        write_request(&mut out, &origin, &get);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("GET /o/r.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: forge.example\r\n"), "{text}");
        assert!(text.contains("\r\nAuthorization: token T\r\n") && text.ends_with("\r\n\r\n"));
        let origin = Origin {
            port: 3000,
            ..origin
        };
        let mut out = Vec::new();
        write_request(
            &mut out,
            &origin,
            &Get {
                path: "/".into(),
                auth: None,
            },
        );
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("Host: forge.example:3000\r\n") && !text.contains("Authorization"));
    }

    /// A server that answers two requests per connection, then closes (as nginx does after
    /// `keepalive_requests`), and whose fifth path hangs.
    fn closing_server() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().ok()?);
                    for served in 1..=2 {
                        let line = read_line(&mut reader).ok()?;
                        while !read_line(&mut reader).ok()?.is_empty() {}
                        if line.contains("/hang ") {
                            std::thread::sleep(Duration::from_secs(5));
                            return None;
                        }
                        let body = line.split(' ').nth(1)?.to_string();
                        let close = if served == 2 {
                            "Connection: close\r\n"
                        } else {
                            ""
                        };
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\n{close}Content-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        (&stream).write_all(answer.as_bytes()).ok()?;
                    }
                    Some(())
                });
            }
        });
        port
    }

    #[test]
    fn a_server_that_closes_is_asked_again_and_a_hanging_answer_fails_alone() {
        let origin = Origin {
            tls: false,
            host: "127.0.0.1".into(),
            port: closing_server(),
        };
        let paths = ["/a", "/b", "/c", "/d", "/hang", "/e"];
        let gets: Vec<Get<'_>> = paths
            .iter()
            .map(|p| Get {
                path: p.to_string(),
                auth: None,
            })
            .collect();
        let limits = Limits {
            io_timeout: Duration::from_millis(500),
            until: Instant::now() + Duration::from_secs(30),
            body_limit: 1024,
        };
        let mut got: Vec<(usize, Result<String, Failure>)> = Vec::new();
        let connections = get_all(&origin, &gets, None, limits, &mut |i, answer| {
            got.push((
                i,
                answer.map(|r| String::from_utf8_lossy(&r.body).into_owned()),
            ));
        });
        got.sort_by_key(|(i, _)| *i);
        let expected: Vec<(usize, Result<String, Failure>)> = vec![
            (0, Ok("/a".into())),
            (1, Ok("/b".into())),
            (2, Ok("/c".into())),
            (3, Ok("/d".into())),
            (4, Err(Failure::TimedOut)),
            (5, Ok("/e".into())),
        ];
        assert_eq!(got, expected);
        assert_eq!(
            connections, 4,
            "two answers per connection, the hanging one alone"
        );
    }
}
