//! Secrets audit: with a forge token and a bridge token configured, run the commands that use
//! them (and the others) and look for either token in every process's argv while they run
//! (`/proc/<pid>/cmdline`), in stdout and stderr at debug log level, in the state database, in
//! health.json and the metrics file, and anywhere else under the state directory.

use crate::common;
use crate::support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use support::forge::TestForge;
use support::{GitDaemon, Upstream};

const FORGE_TOKEN: &str = "forge-secret-7c1e0d5a9b";
const BRIDGE_TOKEN: &str = "bridge-secret-44f1e2c3d8";

/// Reads every process's argv until stopped; returns the argv lines holding a token.
fn watch_argv(stop: Arc<AtomicBool>, found: Arc<Mutex<Vec<String>>>, seen: Arc<Mutex<usize>>) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Ok(raw) = std::fs::read(p.path().join("cmdline")) else {
                    continue;
                };
                if raw.is_empty() {
                    continue;
                }
                let argv = String::from_utf8_lossy(&raw).replace('\0', " ");
                if argv.contains("git") {
                    *seen.lock().unwrap() += 1;
                }
                if argv.contains(FORGE_TOKEN) || argv.contains(BRIDGE_TOKEN) {
                    let mut found = found.lock().unwrap();
                    if !found.contains(&argv) {
                        found.push(argv);
                    }
                }
            }
        }
    }
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn no_token_in_argv_output_logs_database_or_reports() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (up_root, work_root) = (root.join("upstream"), root.join("work"));
    std::fs::create_dir_all(&up_root).unwrap();
    std::fs::create_dir_all(&work_root).unwrap();
    let names = ["a", "b", "c", "d"];
    let ups: Vec<Upstream> = names
        .iter()
        .map(|n| {
            let u = Upstream::create(&up_root, &work_root, n, "main");
            u.tag("1.0.0+1", true);
            u
        })
        .collect();
    let daemon = GitDaemon::start(&up_root);
    let forge = TestForge::start(&root.join("forge"), "org", FORGE_TOKEN);
    // The bridge: a real HTTP receiver that wants the bridge token.
    let bridge = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let bridge_url = format!("http://{}/health", bridge.server_addr().to_ip().unwrap());
    let got_auth = Arc::new(Mutex::new(Vec::new()));
    {
        let got_auth = got_auth.clone();
        std::thread::spawn(move || {
            for mut r in bridge.incoming_requests() {
                let auth = r
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.to_string())
                    .unwrap_or_default();
                let mut body = String::new();
                let _ = r.as_reader().read_to_string(&mut body);
                got_auth.lock().unwrap().push(auth);
                let _ = r.respond(tiny_http::Response::empty(204));
            }
        });
    }
    std::fs::write(root.join("forge-token"), format!("{FORGE_TOKEN}\n")).unwrap();
    std::fs::write(root.join("bridge-token"), format!("{BRIDGE_TOKEN}\n")).unwrap();
    let mut enrollment = format!(
        "[defaults]\nupstream = \"git://127.0.0.1:{}/{{recipe}}.git\"\n",
        daemon.port
    );
    for n in names {
        enrollment.push_str(&format!("\n[recipe.{n}]\ncanonical = true\n"));
    }
    std::fs::write(root.join("enrollment.toml"), enrollment).unwrap();
    std::fs::create_dir_all(root.join("volumes")).unwrap();
    let config = root.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\n\n\
             [forge]\nkind = \"gitea\"\nurl = \"{}\"\norg = \"org\"\ntoken_file = \"forge-token\"\nallow_insecure = true\n\n\
             [bridge]\ntoken_file = \"bridge-token\"\nreport_url = \"{bridge_url}\"\n\n\
             [health]\nmetrics_file = \"metrics.prom\"\npoll_repos_file = \"poll-repos\"\n\n\
             [sweep]\ncommand = [\"sh\", \"-c\", \"sleep 0.2; echo CI for $1 with $(env | grep -c secret) secret vars\", \"ci\", \"{{recipe}}\"]\n\n\
             [disk]\nbudget = \"1G\"\n[disk.volumes]\nkind = \"directory\"\nroot = \"volumes\"\n",
            forge.url
        ),
    )
    .unwrap();
    std::fs::write(root.join("poll-repos"), "a,b,c,d\n").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let found = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(0usize));
    let watcher = {
        let (stop, found, seen) = (stop.clone(), found.clone(), seen.clone());
        std::thread::spawn(move || watch_argv(stop, found, seen))
    };
    let commands: &[&[&str]] = &[
        &["mirrors", "sync"],
        &["mirrors", "status"],
        &["sweep"],
        &["canonical", "list"],
        &["health"],
        &["health", "--live"],
        &["gc"],
        &["state", "status"],
        &["enrollment", "check"],
    ];
    let mut outputs = String::new();
    for args in commands {
        for format in ["human", "json"] {
            let mut full = vec!["--config", config.to_str().unwrap(), "--format", format];
            full.extend_from_slice(args);
            let out = common::finish(
                std::process::Command::new(common::bin())
                    .args(&full)
                    .env("CC_CI_LOG", "debug")
                    .env("RUST_LOG", "debug")
                    .output(),
            );
            outputs.push_str(&format!("$ {args:?}\n{}{}", out.stdout, out.stderr));
        }
    }
    // A change upstream, so the second sync fetches and pushes through the token-guarded forge.
    ups[0].commit("README.md", "changed\n");
    let out = common::agent(&["--config", config.to_str().unwrap(), "mirrors", "sync"]);
    outputs.push_str(&out.stdout);
    outputs.push_str(&out.stderr);
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();

    // The tokens were used: the forge saw its token, the bridge its bearer token.
    assert!(
        forge.requests().iter().any(|(_, ok)| *ok),
        "the forge never got the token"
    );
    assert!(
        got_auth
            .lock()
            .unwrap()
            .iter()
            .any(|a| a == &format!("Bearer {BRIDGE_TOKEN}")),
        "the bridge never got its token"
    );
    // The watcher saw git children: the argv check looked at real processes.
    assert!(
        *seen.lock().unwrap() > 0,
        "no git process was ever seen in /proc"
    );

    let in_argv = found.lock().unwrap().clone();
    assert!(
        in_argv.is_empty(),
        "a token in a process's argv: {in_argv:?}"
    );
    for token in [FORGE_TOKEN, BRIDGE_TOKEN] {
        assert!(!outputs.contains(token), "a token in output:\n{outputs}");
        let mut files = Vec::new();
        files_under(&root.join("state"), &mut files);
        files.push(root.join("metrics.prom"));
        assert!(
            files.iter().any(|f| f.ends_with("state.db"))
                && files.iter().any(|f| f.ends_with("health.json"))
        );
        for f in files {
            let bytes = std::fs::read(&f).unwrap_or_default();
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "a token in {}",
                f.display()
            );
        }
    }
}
