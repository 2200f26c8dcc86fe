//! `cc-ci-agent health` over a real fleet: upstream repos, a local forge, a synced and swept
//! state, a bridge whose live POLL_REPOS is a file.

// Test crate: a panic is how a failure is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

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
    assert!(
        run.stdout.contains("tests: exempt: suite being written"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("host: degraded"), "{}", run.stdout);
}
