//! HTTPS in front of a test server, as a forge runs behind a TLS-terminating proxy (nginx, Caddy,
//! or Gitea's own `PROTOCOL = https`): a CA made for the test by `openssl`, a server certificate
//! for 127.0.0.1 signed by it, and [`TlsFront`], which accepts TLS (rustls), counts handshakes,
//! and forwards the plain bytes to the server behind it. The counts are what a test asks: how
//! many connections a client opened.

// A stand-in for tests: a set-up that cannot work panics at once, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A CA and a certificate for 127.0.0.1 and localhost signed by it, as PEM files in `dir`.
pub struct TestCa {
    /// The CA certificate: what a client must trust (`SSL_CERT_FILE`, `GIT_SSL_CAINFO`).
    pub ca_pem: PathBuf,
    pub server_pem: PathBuf,
    pub server_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl; .ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    pub fn make(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=cc-ci test CA"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &ca);
        let mut csr = vec!["req", "-subj", "/CN=127.0.0.1"];
        csr.extend(ec);
        csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
        openssl(dir, &csr);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        Self {
            ca_pem: dir.join("ca.pem"),
            server_pem: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.server_pem)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(&self.server_key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Arc::new(config)
    }
}

/// TLS on a port of its own, forwarding to `backend`.
pub struct TlsFront {
    /// `https://127.0.0.1:PORT`
    pub url: String,
    handshakes: Arc<AtomicUsize>,
}

impl TlsFront {
    pub fn start(ca: &TestCa, backend: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let handshakes = Arc::new(AtomicUsize::new(0));
        let config = ca.server_config();
        let counted = handshakes.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (config, counted) = (config.clone(), counted.clone());
                std::thread::spawn(move || serve(client, config, backend, &counted));
            }
        });
        Self { url, handshakes }
    }

    /// TLS handshakes completed so far: one per connection a client made.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

/// One client: the handshake, then bytes both ways until either side closes.
fn serve(
    mut client: TcpStream,
    config: Arc<rustls::ServerConfig>,
    backend: SocketAddr,
    counted: &AtomicUsize,
) {
    let Ok(mut conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    while conn.is_handshaking() {
        if conn.complete_io(&mut client).is_err() {
            return;
        }
    }
    counted.fetch_add(1, Ordering::SeqCst);
    let Ok(server) = TcpStream::connect(backend) else {
        return;
    };
    let conn = Arc::new(Mutex::new(conn));
    let (tls_out, server_in) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let answers = {
        let conn = conn.clone();
        std::thread::spawn(move || server_to_client(server_in, tls_out, &conn))
    };
    client_to_server(client, server, &conn);
    let _ = answers.join();
}

fn client_to_server(
    mut client: TcpStream,
    mut server: TcpStream,
    conn: &Mutex<rustls::ServerConnection>,
) {
    let mut buf = vec![0; 64 * 1024];
    let mut plain = vec![0; 64 * 1024];
    loop {
        // First what is already decrypted: the handshake may have read the first requests.
        {
            let mut c = conn.lock().unwrap();
            loop {
                match c.reader().read(&mut plain) {
                    Ok(0) => return close_write(&server),
                    Ok(k) => {
                        if server.write_all(&plain[..k]).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            while c.wants_write() {
                if c.write_tls(&mut client).is_err() {
                    return;
                }
            }
        }
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => return close_write(&server),
            Ok(n) => n,
        };
        let mut c = conn.lock().unwrap();
        if c.read_tls(&mut &buf[..n]).is_err() || c.process_new_packets().is_err() {
            return close_write(&server);
        }
    }
}

fn close_write(server: &TcpStream) {
    let _ = server.shutdown(Shutdown::Write);
}

fn server_to_client(
    mut server: TcpStream,
    mut client: TcpStream,
    conn: &Mutex<rustls::ServerConnection>,
) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut c = conn.lock().unwrap();
        if c.writer().write_all(&buf[..n]).is_err() {
            break;
        }
        while c.wants_write() {
            if c.write_tls(&mut client).is_err() {
                return;
            }
        }
    }
    let mut c = conn.lock().unwrap();
    c.send_close_notify();
    while c.wants_write() {
        if c.write_tls(&mut client).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Write);
}
