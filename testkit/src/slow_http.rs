//! HTTP servers that misbehave on the wire, for the agent's ref listing (its own pipelined HTTP/1.1
//! client, `agent/src/git/pipeline.rs`): not stand-ins for any real program, but what a slow link,
//! a broken proxy or a hostile upstream can send, per HTTP/1.1's framing (RFC 9112).
//!
//! | manner | what the server does on every connection, after reading a request's head |
//! | --- | --- |
//! | [`Manner::TrickleStatus`] | sends `HTTP/1.1 100 Continue` interim answers one byte per pause, for ever |
//! | [`Manner::EndlessContinue`] | sends whole `100 Continue` interim answers, one per pause, for ever |
//! | [`Manner::TrickleBody`] | a 200 with `Content-Length: 1000000`, then the body one byte per pause |
//! | [`Manner::TrickleChunks`] | a chunked 200, then one-byte chunks, one per pause, for ever |
//! | [`Manner::WrappingChunk`] | a chunked 200 with a chunk of size 1, then one of size `ffffffffffffffff`, then zeros as fast as the client reads, up to 256 MiB |
//! | [`Manner::CloseAfterEach`] | a real git server (`git http-backend` as CGI, as in [`crate::forge`]) that answers in HTTP/1.0 with `Connection: close`: one answer per connection |
//!
//! Every server counts its connections and the bytes it wrote, so a test can see what a client
//! did without timing it.

// A test server: a set-up that cannot work panics at once, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Manner {
    TrickleStatus,
    EndlessContinue,
    TrickleBody,
    TrickleChunks,
    WrappingChunk,
    /// Serves the bare repositories under this directory (`<dir>/<name>.git`).
    CloseAfterEach(PathBuf),
}

pub struct SlowServer {
    pub port: u16,
    connections: Arc<AtomicUsize>,
    written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// How long a trickling server waits between bytes: short, so that a test whose client does
/// not give up sees many bytes, and long enough that the client's read timeout never fires.
const PAUSE: Duration = Duration::from_millis(50);
const WRAP_LIMIT: u64 = 256 << 20;

impl SlowServer {
    pub fn start(manner: Manner) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, w, s) = (connections.clone(), written.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                c.fetch_add(1, Ordering::SeqCst);
                let (manner, w, s) = (manner.clone(), w.clone(), s.clone());
                std::thread::spawn(move || serve(stream, &manner, &w, &s));
            }
        });
        Self {
            port,
            connections,
            written,
            stop,
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}.git", self.port)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Bytes written to clients so far, over every connection.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }
}

impl Drop for SlowServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The request line and headers of one request, up to the empty line; `None` when the client
/// closed first.
fn read_head(reader: &mut impl BufRead) -> Option<(String, Vec<String>)> {
    let mut first = String::new();
    if reader.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line.trim_end().is_empty() {
            return Some((first.trim_end().to_string(), headers));
        }
        headers.push(line.trim_end().to_string());
    }
}

fn header<'a>(headers: &'a [String], name: &str) -> Option<&'a str> {
    headers.iter().find_map(|h| {
        let (n, v) = h.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A request body as HTTP/1.1 frames it: by `Content-Length`, or chunked (git sends a large
/// negotiation chunked).
fn read_body(reader: &mut impl BufRead, headers: &[String]) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(length) = header(headers, "content-length").and_then(|l| l.parse::<u64>().ok()) {
        let _ = reader.take(length).read_to_end(&mut body);
    } else if header(headers, "transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).unwrap_or(0) == 0 {
                break;
            }
            let size = u64::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 {
                let mut end = String::new();
                let _ = reader.read_line(&mut end);
                break;
            }
            let _ = reader.by_ref().take(size).read_to_end(&mut body);
            let mut crlf = String::new();
            let _ = reader.read_line(&mut crlf);
        }
    }
    body
}

fn serve(stream: TcpStream, manner: &Manner, written: &AtomicU64, stop: &AtomicBool) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some((request, headers)) = read_head(&mut reader) else {
        return;
    };
    let mut out = Counted {
        stream,
        written,
        stop,
    };
    let _ = match manner {
        Manner::TrickleStatus => out.trickle_forever(b"HTTP/1.1 100 Continue\r\n\r\n"),
        Manner::EndlessContinue => loop {
            if out.send(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                break Ok(());
            }
            std::thread::sleep(PAUSE);
        },
        Manner::TrickleBody => out
            .send(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\nContent-Length: 1000000\r\n\r\n")
            .and_then(|()| out.trickle_forever(b"0")),
        Manner::TrickleChunks => out
            .send(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\nTransfer-Encoding: chunked\r\n\r\n")
            .and_then(|()| loop {
                out.send(b"1\r\n0\r\n")?;
                std::thread::sleep(PAUSE);
            }),
        Manner::WrappingChunk => out
            .send(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n0\r\nffffffffffffffff\r\n")
            .and_then(|()| {
                let zeros = vec![0u8; 64 * 1024];
                while out.written.load(Ordering::SeqCst) < WRAP_LIMIT {
                    out.send(&zeros)?;
                }
                Ok(())
            }),
        Manner::CloseAfterEach(root) => {
            let body = read_body(&mut reader, &headers);
            let encoding = header(&headers, "content-encoding").map(str::to_string);
            cgi_once(&mut out, &request, (body, encoding), root);
            Ok(())
        }
    };
}

struct Counted<'a> {
    stream: TcpStream,
    written: &'a AtomicU64,
    stop: &'a AtomicBool,
}

impl Counted<'_> {
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.stop.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the server stopped"));
        }
        self.stream.write_all(bytes)?;
        self.written.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        Ok(())
    }

    /// `bytes` one at a time, a pause between each, over and over, until the client goes.
    fn trickle_forever(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        loop {
            for b in bytes {
                self.send(&[*b])?;
                std::thread::sleep(PAUSE);
            }
        }
    }
}

/// One request through `git http-backend` (a CGI program: gitprotocol-http, git's
/// http-backend.c), answered in HTTP/1.0 with `Connection: close`, then the connection closed.
fn cgi_once(
    out: &mut Counted<'_>,
    request: &str,
    (body, encoding): (Vec<u8>, Option<String>),
    root: &Path,
) {
    let mut parts = request.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut cmd = std::process::Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", &method)
        .env("CONTENT_TYPE", "application/x-git-upload-pack-request")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    if let Some(e) = encoding {
        cmd.env("HTTP_CONTENT_ENCODING", e);
    }
    let mut child = cmd.spawn().expect("git http-backend");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut cgi = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut cgi).unwrap();
    let _ = (child.wait(), feeder.join());
    let split = cgi
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| cgi.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        return;
    };
    let headers = String::from_utf8_lossy(&cgi[..end]).into_owned();
    let mut status = "200 OK".to_string();
    let mut head = String::new();
    for line in headers.lines() {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_string();
            }
            Some(_) => head.push_str(&format!("{}\r\n", line.trim_end())),
            None => {}
        }
    }
    let body = &cgi[end + sep..];
    let answer = format!(
        "HTTP/1.0 {status}\r\n{head}Connection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let _ = out.send(answer.as_bytes());
    let _ = out.send(body);
}
