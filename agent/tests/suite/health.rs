//! `cc-ci-agent health` over a real fleet: upstream repos, a local forge, a synced and swept
//! state, a bridge whose live POLL_REPOS is a file.

use crate::common;
use crate::support;

use support::Upstream;

fn setup() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in ["upstream", "work", "suites/good", "suites/unpolled"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for n in ["good", "unpolled", "exempt"] {
        let up = Upstream::create(&root.join("upstream"), &root.join("work"), n, "main");
        up.tag("1.0.0+1.0", true);
    }
    std::fs::write(
        root.join("enrollment.toml"),
        format!(
            "[defaults]\nupstream = \"file://{}/upstream/{{recipe}}.git\"\n\n[recipe.good]\ncanonical = true\n\n\
             [recipe.unpolled]\n\n[recipe.exempt]\ntests = \"exempt\"\nreason = \"suite being written\"\n\n\
             [recipe.retired]\nenrolled = false\n",
            root.display()
        ),
    )
    .unwrap();
    std::fs::write(root.join("poll-repos"), "exempt,good\n").unwrap();
    let config = root.join("agent.toml");
    std::fs::write(
        &config,
        "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\ntests_dir = \"suites\"\n\n[forge]\nkind = \"local\"\npath = \"mirrors\"\n\n\
         [sweep]\ncommand = [\"true\"]\n\n[health]\npoll_repos_file = \"poll-repos\"\nmetrics_file = \"metrics/cc-ci.prom\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("metrics")).unwrap();
    let c = config.to_string_lossy().into_owned();
    assert_eq!(common::agent(&["--config", &c, "mirrors", "sync"]).code, 0);
    assert_eq!(common::agent(&["--config", &c, "sweep"]).code, 0);
    (dir, c)
}

fn verdicts(v: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    v["recipes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["recipe"].as_str().unwrap().to_string(),
                r["verdict"].clone(),
            )
        })
        .collect()
}

#[test]
fn verdicts_per_recipe_and_for_the_host() {
    let (dir, config) = setup();
    let run = common::agent(&["--config", &config, "--format", "json", "health"]);
    assert_eq!(
        run.code, 14,
        "a failed recipe fails the host: {}\n{}",
        run.stdout, run.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["schema"], "cc-ci.health/v1");
    assert_eq!(v["verdict"], "failed");
    assert_eq!(
        verdicts(&v),
        [
            ("exempt".to_string(), serde_json::json!("degraded")),
            ("good".to_string(), serde_json::json!("healthy")),
            ("retired".to_string(), serde_json::Value::Null),
            ("unpolled".to_string(), serde_json::json!("failed")),
        ]
    );
    let unpolled = v["recipes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["recipe"] == "unpolled")
        .unwrap();
    let bridge = unpolled["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "bridge")
        .unwrap();
    assert!(
        bridge["reason"]
            .as_str()
            .unwrap()
            .contains("deploy to apply"),
        "{bridge}"
    );

    // health.json is the same report, written atomically; the metrics file is Prometheus text.
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("state/health.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(file["verdict"], "failed");
    let metrics = std::fs::read_to_string(dir.path().join("metrics/cc-ci.prom")).unwrap();
    assert!(
        metrics.contains("cc_ci_host_health{verdict=\"failed\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cc_ci_recipe_health{recipe=\"good\",verdict=\"healthy\"} 1\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("retired"),
        "unenrolled recipes are not measured"
    );

    // The bridge picks up the enrollment: the host is only degraded (the exemption).
    std::fs::write(dir.path().join("poll-repos"), "exempt,good,unpolled\n").unwrap();
    let run = common::agent(&["--config", &config, "health"]);
    assert_eq!(run.code, 13, "{}", run.stdout);
    insta::assert_snapshot!(
        "health_degraded",
        crate::screens::screen(&run.stdout, dir.path())
    );
}

/// One request the bridge stored: id header, seq header, authorization, body.
type Seen = (String, String, String, serde_json::Value);

/// A bridge on 127.0.0.1 answering with the scripted statuses in turn (then 200), recording each
/// request's id, sequence number, authorization and body.
struct Bridge {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
    statuses: std::sync::Arc<std::sync::Mutex<Vec<u16>>>,
    /// While set, each request waits before it is answered: a bridge that takes its time.
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Requests that reached the bridge, counted as they arrive (before any wait).
    arrived: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Bridge {
    fn hold(&self, held: bool) {
        self.held.store(held, std::sync::atomic::Ordering::SeqCst);
    }

    fn start() -> Self {
        let server = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let url = format!(
            "http://{}/health-report",
            server.server_addr().to_ip().unwrap()
        );
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let statuses = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let arrived = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s2, st2, h2, a2) = (
            seen.clone(),
            statuses.clone(),
            held.clone(),
            arrived.clone(),
        );
        std::thread::spawn(move || {
            for mut request in server.incoming_requests() {
                a2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let header = |name: &str| {
                    request
                        .headers()
                        .iter()
                        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                        .map(|h| h.value.to_string())
                        .unwrap_or_default()
                };
                let (id, seq, auth) = (
                    header("X-CC-CI-Report-Id"),
                    header("X-CC-CI-Report-Seq"),
                    header("Authorization"),
                );
                let mut body = String::new();
                let _ = std::io::Read::read_to_string(request.as_reader(), &mut body);
                while h2.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                let status = {
                    let mut st = st2.lock().unwrap();
                    if st.is_empty() {
                        200
                    } else {
                        st.remove(0)
                    }
                };
                if status == 200 {
                    s2.lock().unwrap().push((
                        id,
                        seq,
                        auth,
                        serde_json::from_str(&body).unwrap_or_default(),
                    ));
                }
                let _ = request.respond(tiny_http::Response::empty(status));
            }
        });
        Self {
            url,
            seen,
            statuses,
            held,
            arrived,
        }
    }

    fn delivered(&self) -> Vec<i64> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, seq, _, _)| seq.parse().unwrap())
            .collect()
    }
}

fn with_bridge(dir: &tempfile::TempDir, url: &str) {
    std::fs::write(dir.path().join("bridge-token"), "bridge-secret-token\n").unwrap();
    let config = dir.path().join("agent.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replacen("[forge]", &format!("[bridge]\nreport_url = \"{url}\"\ntoken_file = \"bridge-token\"\nreport_timeout = \"1s\"\n\n[forge]"), 1);
    std::fs::write(&config, text).unwrap();
}

#[test]
fn reports_reach_the_bridge_in_order_and_wait_when_it_is_down() {
    let (dir, config) = setup();
    let bridge = Bridge::start();
    with_bridge(&dir, &bridge.url);

    let run = common::agent(&["--config", &config, "health"]);
    assert!(
        run.stdout.contains("report: delivered (1 sent)"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    {
        let seen = bridge.seen.lock().unwrap();
        let (id, seq, auth, body) = &seen[0];
        assert_eq!(auth, "Bearer bridge-secret-token");
        assert_eq!(
            (body["id"].as_str().unwrap(), body["seq"].as_i64().unwrap()),
            (id.as_str(), seq.parse().unwrap())
        );
        assert_eq!(body["schema"], "cc-ci.health/v1");
    }

    // The bridge fails (500, three tries), then refuses the token (401, no retry): both reports wait.
    bridge.statuses.lock().unwrap().extend([500, 500, 500]);
    let run = common::agent(&["--config", &config, "health"]);
    assert!(
        run.stdout.contains("report: 1 waiting for the bridge") && run.stdout.contains("HTTP 500"),
        "{}",
        run.stdout
    );
    bridge.statuses.lock().unwrap().push(401);
    let run = common::agent(&["--config", &config, "health"]);
    assert!(
        run.stdout.contains("report: 2 waiting") && run.stdout.contains("refused the token"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("bridge-secret-token") && !run.stderr.contains("bridge-secret-token")
    );

    // Back up: the outbox drains oldest first, each once, then the new one.
    let run = common::agent(&["--config", &config, "health"]);
    assert!(
        run.stdout.contains("report: delivered (3 sent)"),
        "{}",
        run.stdout
    );
    assert_eq!(bridge.delivered(), [1, 2, 3, 4]);

    // A bridge slower than the timeout: the agent cannot know the report arrived, so it keeps it
    // and sends it again, with the same id, which the bridge uses to drop the repeats.
    bridge.hold(true);
    let start = std::time::Instant::now();
    let run = common::agent(&["--config", &config, "health"]);
    assert!(run.stdout.contains("report: 1 waiting"), "{}", run.stdout);
    assert!(start.elapsed() < std::time::Duration::from_secs(60));
    bridge.hold(false);
    let run = common::agent(&["--config", &config, "health"]);
    assert!(run.stdout.contains("report: delivered"), "{}", run.stdout);
    let seen = bridge.seen.lock().unwrap().clone();
    let mut by_id: Vec<(String, i64)> = Vec::new();
    for (id, seq, _, body) in &seen {
        assert_eq!(
            body["id"].as_str(),
            Some(id.as_str()),
            "the body carries the header's id"
        );
        match by_id.iter().find(|(i, _)| i == id) {
            Some((_, s)) => assert_eq!(s.to_string(), *seq, "a resend keeps its sequence number"),
            None => by_id.push((id.clone(), seq.parse().unwrap())),
        }
    }
    let seqs: Vec<i64> = by_id.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        seqs,
        [1, 2, 3, 4, 5, 6],
        "deduplicated by id: each report once, in order, none lost"
    );
}

#[test]
fn health_change_fires_only_when_a_verdict_changes() {
    let (dir, config) = setup();
    let log = dir.path().join("hooks.log");
    let text = std::fs::read_to_string(&config).unwrap()
        + &format!("\n[[hooks]]\nevents = [\"health-change\"]\ncommand = [\"sh\", \"-c\", \"cat >> {0}; echo >> {0}\"]\n", log.display());
    std::fs::write(&config, text).unwrap();
    let events = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    common::agent(&["--config", &config, "health"]);
    assert_eq!(
        events().len(),
        1,
        "the first report is a change from nothing"
    );
    common::agent(&["--config", &config, "health"]);
    assert_eq!(events().len(), 1, "nothing changed, nothing fired");
    std::fs::write(dir.path().join("poll-repos"), "exempt,good,unpolled\n").unwrap();
    common::agent(&["--config", &config, "health"]);
    let all = events();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (
            all[1]["previous_verdict"].as_str(),
            all[1]["verdict"].as_str()
        ),
        (Some("failed"), Some("degraded"))
    );
    assert_eq!(
        all[1]["changed"],
        serde_json::json!([{ "recipe": "unpolled", "from": "failed", "to": "healthy" }])
    );
}

/// The report, as printed, written to health.json and sent to the bridge, against the schema.
#[test]
fn real_reports_match_the_published_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo().join("docs/schemas/health-report.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let (dir, config) = setup();
    let bridge = Bridge::start();
    with_bridge(&dir, &bridge.url);
    let printed = common::agent(&["--config", &config, "--format", "json", "health"]);
    let file = std::fs::read_to_string(dir.path().join("state/health.json")).unwrap();
    let sent = bridge.seen.lock().unwrap()[0].3.clone();
    for (what, report) in [
        ("printed", serde_json::from_str(&printed.stdout).unwrap()),
        ("health.json", serde_json::from_str(&file).unwrap()),
        ("sent", sent),
    ] {
        let errors: Vec<String> = validator
            .iter_errors(&report)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{what}: {errors:#?}");
    }
    // The schema can fail: a report with an unknown verdict does not pass.
    let mut bad: serde_json::Value = serde_json::from_str(&file).unwrap();
    bad["verdict"] = serde_json::json!("fine");
    assert!(!validator.is_valid(&bad));
}

#[test]
fn live_asks_the_mirrors_now() {
    let (dir, config) = setup();
    std::fs::write(dir.path().join("poll-repos"), "exempt,good,unpolled\n").unwrap();
    let up = Upstream {
        bare: dir.path().join("upstream/good.git"),
        work: dir.path().join("work/good"),
    };
    up.commit("compose.yml", "moved on\n");
    let mirror_check = |args: &[&str]| -> serde_json::Value {
        let mut full = vec!["--config", config.as_str(), "--format", "json", "health"];
        full.extend_from_slice(args);
        let v: serde_json::Value = serde_json::from_str(&common::agent(&full).stdout).unwrap();
        let good = v["recipes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["recipe"] == "good")
            .unwrap()
            .clone();
        good["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "mirror")
            .unwrap()
            .clone()
    };
    // From the journal, the last sync was fine; asked now, upstream has moved on.
    assert_eq!(mirror_check(&[])["status"], "ok");
    let live = mirror_check(&["--live"]);
    assert_eq!(live["status"], "warn", "{live}");
    assert!(
        live["reason"]
            .as_str()
            .unwrap()
            .starts_with("behind (asked now)"),
        "{live}"
    );
}

#[test]
fn a_report_survives_kill_9_before_it_is_sent() {
    let (dir, config) = setup();
    let bridge = Bridge::start();
    with_bridge(&dir, &bridge.url);
    // The bridge takes its time: the agent is killed while its POST is in flight.
    bridge.hold(true);
    bridge.statuses.lock().unwrap().push(503);
    let mut child = std::process::Command::new(common::bin())
        .args(["--config", &config, "health"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The event: the POST has reached the bridge.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while bridge.arrived.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the report never reached the bridge"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let waiting = cc_ci_agent::ledger::Ledger::open(
        &dir.path().join("state"),
        &cc_ci_agent::clock::Clock::system(),
    )
    .unwrap()
    .outbox()
    .unwrap();
    assert_eq!(
        waiting.len(),
        1,
        "queued before sending, so it outlives the agent"
    );
    let id = waiting[0].id.clone();
    bridge.hold(false);
    let run = common::agent(&["--config", &config, "health"]);
    assert!(
        run.stdout.contains("report: delivered (2 sent)"),
        "{}",
        run.stdout
    );
    let seen = bridge.seen.lock().unwrap();
    assert_eq!(seen[0].0, id, "the report built before the kill went first");
    assert_eq!(
        seen.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(),
        ["1", "2"]
    );
}

#[test]
fn the_bridge_polling_what_is_not_enrolled_is_said_and_also_poll_is_not_a_recipe() {
    let (dir, config) = setup();
    let root = dir.path();
    // The bridge polls the host's own repository and a recipe enrolled nowhere.
    std::fs::write(root.join("poll-repos"), "cc-ci,exempt,good,gone\n").unwrap();
    let host = |run: &common::Run| -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        v["host"].as_array().cloned().unwrap_or_default()
    };
    let run = common::agent(&["--config", &config, "--format", "json", "health"]);
    let bridge: Vec<_> = host(&run)
        .into_iter()
        .filter(|c| c["name"] == "bridge")
        .collect();
    assert_eq!(bridge.len(), 1, "{}", run.stdout);
    let reason = bridge[0]["reason"].as_str().unwrap();
    assert!(reason.contains("cc-ci, gone"), "{reason}");

    // Declared as polled but not a recipe: no longer said, and never checked as a recipe.
    let enrollment = root.join("enrollment.toml");
    let text = std::fs::read_to_string(&enrollment).unwrap();
    std::fs::write(
        &enrollment,
        format!("[bridge]\nalso_poll = [\"cc-ci\"]\n\n{text}"),
    )
    .unwrap();
    let run = common::agent(&["--config", &config, "--format", "json", "health"]);
    let bridge: Vec<_> = host(&run)
        .into_iter()
        .filter(|c| c["name"] == "bridge")
        .collect();
    let reason = bridge[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("gone") && !reason.contains("cc-ci"),
        "{reason}"
    );
    assert!(
        !run.stdout.contains("\"recipe\": \"cc-ci\""),
        "{}",
        run.stdout
    );
    let poll = common::agent(&[
        "enrollment",
        "--file",
        enrollment.to_str().unwrap(),
        "poll-repos",
    ]);
    assert_eq!(poll.stdout, "cc-ci,exempt,good,unpolled\n");
}

/// A reason holding a program's stderr of several lines is one line of `health`: here
/// systemctl on a host not booted with systemd (its two lines, as Debian's systemctl prints them
/// without systemd as PID 1; a stand-in says them, so every machine sees the same).
#[test]
fn a_reason_of_several_lines_is_one_line_of_health() {
    let (dir, config) = setup();
    let systemctl = dir.path().join("systemctl");
    std::fs::write(
        &systemctl,
        "#!/bin/sh\necho 'System has not been booted with systemd as init system (PID 1). Can'\\''t operate.' >&2\n\
         echo 'Failed to connect to bus: Host is down' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &systemctl,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("poll_repos_file = \"poll-repos\"\n", "")
        + &format!(
            "\n[deploy]\nsystemctl = {:?}\n",
            systemctl.to_string_lossy()
        );
    std::fs::write(&config, text).unwrap();
    let run = common::agent(&["--config", &config, "health"]);
    assert!(
        run.stdout.contains("Failed to connect to bus"),
        "{}",
        run.stdout
    );
    for line in run.stdout.lines() {
        assert!(
            !line.starts_with("Failed to connect") && !line.starts_with("System has not"),
            "a line that starts nowhere:\n{}",
            run.stdout
        );
    }
}
