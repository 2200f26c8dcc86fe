//! A stand-in for a systemd socket unit with `Accept=yes` (systemd cannot run here), as
//! `cc-ci-keeper.socket` is one: it listens on a `SOCK_SEQPACKET` socket at a path and, for each
//! connection it accepts, starts the service's command with that connection at descriptor 3
//! (`LISTEN_FDS=1`), as systemd.socket(5) describes for `Accept=yes`. (`LISTEN_PID` is left
//! out: the keeper does not read it.) The command runs as this process's user (root in the
//! tests that use it), like the unit.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

pub struct SocketUnit {
    accepting: JoinHandle<Vec<Output>>,
}

impl SocketUnit {
    /// Listens at `path` (mode `mode`), accepting `connections` connections, each served by
    /// `argv` with the connection at descriptor 3.
    pub fn listen(path: &Path, mode: u32, connections: usize, argv: Vec<String>) -> Self {
        let listener = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::bind(&listener, &SocketAddrUnix::new(path).unwrap()).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        rustix::net::listen(&listener, 8).unwrap();
        let accepting = std::thread::spawn(move || {
            (0..connections)
                .map(|_| {
                    let connection = rustix::net::accept(&listener).unwrap();
                    serve(&argv, connection)
                })
                .collect()
        });
        Self { accepting }
    }

    /// What each started command wrote and how it exited, once every connection was served.
    pub fn served(self) -> Vec<Output> {
        self.accepting.join().unwrap()
    }
}

fn serve(argv: &[String], connection: OwnedFd) -> Output {
    let raw = connection.as_raw_fd();
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env("LISTEN_FDS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: after fork, before exec: one system call on a descriptor number.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(raw, 3) == 3 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let out = command.output().unwrap();
    drop(connection);
    out
}
