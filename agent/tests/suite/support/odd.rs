//! Upstreams that misbehave on purpose, over real TCP and HTTP on 127.0.0.1.
//!
//! - [`Hanging`] accepts connections and never answers: a server whose process is stuck, or a
//!   firewall that lets SYNs through. It counts connections, so a test can see retries happen
//!   (or not) without timing anything.
//! - [`CraftedRefs`] speaks just enough of git's smart HTTP protocol v2 to answer `ls-refs` with
//!   ref names of its choosing, which a real git server would never send (one with a line break
//!   in it). The framing follows git's own documentation and server: `Documentation/
//!   gitprotocol-v2.txt` (capability advertisement "version 2", then one capability per line and
//!   a flush; the `ls-refs` command answered with "<oid> <refname>" lines and a flush),
//!   `Documentation/gitprotocol-http.txt` and `http-backend.c` (for v2 the `info/refs` answer
//!   has no "# service=" line; content types `application/x-git-upload-pack-advertisement` and
//!   `-result`).

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tiny_http::{Header, Response, Server};

pub struct Hanging {
    pub port: u16,
    accepted: Arc<AtomicUsize>,
    /// Held open, never written to, until the test ends.
    _held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Hanging {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (a, h) = (accepted.clone(), held.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                a.fetch_add(1, Ordering::SeqCst);
                h.lock().unwrap().push(stream);
            }
        });
        Self {
            port,
            accepted,
            _held: held,
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}.git", self.port)
    }

    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

pub struct CraftedRefs {
    pub url: String,
    server: Arc<Server>,
}

fn pkt(line: &str) -> Vec<u8> {
    let mut out = format!("{:04x}", line.len() + 4).into_bytes();
    out.extend_from_slice(line.as_bytes());
    out
}

impl CraftedRefs {
    /// Serves `refs` (oid, full ref name, each name sent byte for byte) at `<url>/<any>.git`.
    pub fn start(refs: Vec<(String, String)>) -> Self {
        let server = Arc::new(Server::http("127.0.0.1:0").unwrap());
        let url = format!("http://{}", server.server_addr().to_ip().unwrap());
        let s = server.clone();
        std::thread::spawn(move || {
            for mut request in s.incoming_requests() {
                let url = request.url().to_string();
                let (body, kind) = if url.ends_with("/info/refs?service=git-upload-pack") {
                    let mut b = pkt("version 2\n");
                    b.extend(pkt("agent=crafted/1\n"));
                    b.extend(pkt("ls-refs\n"));
                    b.extend(b"0000");
                    (b, "advertisement")
                } else if url.ends_with("/git-upload-pack") {
                    let mut asked = Vec::new();
                    let _ = request.as_reader().read_to_end(&mut asked);
                    let mut b = Vec::new();
                    if String::from_utf8_lossy(&asked).contains("command=ls-refs") {
                        for (oid, name) in &refs {
                            b.extend(pkt(&format!("{oid} {name}\n")));
                        }
                    }
                    b.extend(b"0000");
                    (b, "result")
                } else {
                    let _ = request.respond(Response::empty(404));
                    continue;
                };
                let ct = format!("application/x-git-upload-pack-{kind}");
                let response = Response::from_data(body)
                    .with_header(Header::from_bytes("Content-Type", ct.as_bytes()).unwrap())
                    .with_header(Header::from_bytes("Cache-Control", "no-cache").unwrap());
                let _ = request.respond(response);
            }
        });
        Self { url, server }
    }
}

impl Drop for CraftedRefs {
    fn drop(&mut self) {
        self.server.unblock();
    }
}
