//! The probe against Drone as it really runs (docs/probe.md, "Drone"): Drone's own webhook
//! builds of the probe's head, OSS Drone without an incomplete list, repositories Drone never
//! synced or never activated, and a forge that moves a pull request's head after the push.

use std::time::Duration;

use cc_ci_testkit::bridge::Answer;

use super::probe::{only, stopped_at_build_started, Host, ORG};

const DRONE_TOML: &str =
    "[probe.drone]\nurl = \"DRONE\"\nallow_insecure = true\ntoken_file = \"drone-token\"\n";

/// `names` enrolled, with Drone's webhook installed on the forge (what activation does), and
/// `probe_toml` under `[probe]`, `DRONE` replaced by the test Drone's URL.
fn host_with_webhooks(names: &[&str], probe_toml: &str) -> Host {
    let host = Host::new(names, "");
    host.write_config(&probe_toml.replace("DRONE", &host.drone.url));
    let hook = host.drone.hook_url();
    host.forge.state.lock().unwrap().hooks.push(hook);
    host
}

fn events(host: &Host, recipe: &str) -> Vec<String> {
    let builds = host.drone.builds(&format!("{ORG}/{recipe}"));
    builds.into_iter().map(|b| b.event).collect()
}

/// With the bridge deaf, nothing Drone does on its own (a push build of `cc-ci/probe`, a pull
/// request build) is taken for the bridge's: the probe stops at picked-up, and `[ci skip]`
/// keeps Drone from building the probe's head at all.
#[test]
fn drones_own_webhook_builds_prove_nothing_when_the_bridge_is_deaf() {
    for probe_toml in ["", DRONE_TOML] {
        let host = host_with_webhooks(&["plausible"], probe_toml);
        let (run, v) = host.probe(&[]);
        assert_eq!(run.code, 18, "{v:#}\n{}", run.stderr);
        assert_eq!(only(&v)["stopped_at"], "picked-up", "{v:#}");
        assert!(
            events(&host, "plausible").is_empty(),
            "Drone built the probe's head on its own: {:?}",
            events(&host, "plausible")
        );
    }
}

/// With webhooks on, the bridge's custom build is the proof; a pull request opened by an older
/// agent without `[ci skip]` in its title gets it; and the next recipe is probed, not deferred
/// as busy.
#[test]
fn with_webhooks_on_the_bridges_build_is_the_proof_and_no_recipe_waits() {
    let busy = "busy_check = { drone = { url = \"DRONE\", allow_insecure = true, token_file = \"drone-token\" } }\n";
    let mut host = host_with_webhooks(&["plausible", "ghost"], &format!("{busy}{DRONE_TOML}"));
    host.bridge(&["plausible", "ghost"], Answer::React);
    let (run, v) = host.probe(&[]);
    assert_eq!(run.code, 0, "{v:#}\n{}", run.stderr);
    for p in v["probes"].as_array().unwrap() {
        assert_eq!(p["outcome"], "proven", "{p:#}");
        let started = p["stages"][1]["seen"].as_str().unwrap();
        assert!(started.contains("custom event"), "{started}");
    }
    // The title an older agent gave it, without [ci skip]: the next probe mends it.
    for pull in host
        .forge
        .state
        .lock()
        .unwrap()
        .pulls
        .values_mut()
        .flatten()
    {
        pull.title = "cc-ci probe: does !testme start CI here?".into();
    }
    let (run, v) = host.probe(&["plausible", "ghost"]);
    assert_eq!(run.code, 0, "{v:#}\n{}", run.stderr);
    for name in ["plausible", "ghost"] {
        assert!(
            events(&host, name).iter().all(|e| e == "custom"),
            "{:?}",
            events(&host, name)
        );
        assert!(host.forge.pulls(name)[0].title.contains("[ci skip]"));
    }
}

/// OSS Drone answers 501 to the incomplete list: the busy check asks the user's recent builds
/// instead, and says so, rather than counting an answer it cannot have as busy for ever. That
/// list holds only what the token's user synced itself (an admin that never synced gets `[]`):
/// an enrolled repository it does not show is asked for its own builds, never taken as idle.
#[test]
fn an_oss_drone_is_asked_for_its_recent_builds_instead() {
    let busy = "busy_check = { drone = { url = \"DRONE\", allow_insecure = true, token_file = \"drone-token\" } }\n";
    let mut host = host_with_webhooks(&["plausible", "ghost"], busy);
    host.drone.state.lock().unwrap().oss = true;
    host.bridge(&["plausible", "ghost"], Answer::React);
    let (run, v) = host.probe(&["plausible"]);
    assert_eq!(run.code, 0, "{v:#}\n{}", run.stderr);
    assert_eq!(only(&v)["outcome"], "proven", "{v:#}");
    // A build the admin's own list shows: a repository it synced.
    host.drone.synced_by_admin(&format!("{ORG}/other"));
    host.drone.hold(&format!("{ORG}/other"));
    let (run, v) = host.probe(&["plausible"]);
    assert_eq!(run.code, 0, "{v:#}\n{}", run.stderr);
    let p = only(&v);
    assert_eq!(p["outcome"], "deferred", "{p:#}");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("{ORG}/other #1")), "{detail}");
    assert!(detail.contains("/api/user/builds"), "{detail}");
    // A build of an enrolled recipe the admin never synced: its own list is asked.
    host.drone.release(&format!("{ORG}/other"));
    host.drone.hold(&format!("{ORG}/ghost"));
    let (run, v) = host.probe(&["plausible"]);
    assert_eq!(run.code, 0, "{v:#}\n{}", run.stderr);
    let p = only(&v);
    assert_eq!(p["outcome"], "deferred", "{p:#}");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("{ORG}/ghost #")), "{detail}");
}

/// A repository Drone never synced (404) and one synced but not activated (200 `[]`): the probe
/// keeps the bridge's answer, stops at build-started, and names the case.
#[test]
fn a_repository_drone_never_synced_or_never_activated_is_named() {
    for (never_synced, says) in [
        (true, "never synced"),
        (false, "or it is and has never been built"),
    ] {
        let mut host = Host::new(&["plausible"], "");
        host.write_config(&DRONE_TOML.replace("DRONE", &host.drone.url));
        {
            let mut d = host.drone.state.lock().unwrap();
            d.activated.clear();
            if never_synced {
                d.synced.clear();
            }
        }
        host.bridge(&["plausible"], Answer::React);
        let (run, v) = host.probe(&[]);
        let p = stopped_at_build_started(&run, &v, "reaction");
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{detail}");
    }
}

/// Gitea 1.23 and later move `refs/pull/N/head` from a queue after the push: a bridge polling
/// at once would build the previous head. The probe waits for the pull request to show its
/// head before it comments, so the build is of the probe's head.
#[test]
fn a_pull_request_head_the_forge_moves_late_is_waited_for_before_the_comment() {
    let mut host = Host::new(&["plausible"], "");
    host.write_config(&format!(
        "timeout = \"6s\"\n{}",
        DRONE_TOML.replace("DRONE", &host.drone.url)
    ));
    host.bridge(&["plausible"], Answer::React);
    let (run, v) = host.probe(&[]);
    assert_eq!(run.code, 0, "{v:#}\n{}", run.stderr);
    host.forge.state.lock().unwrap().head_lag = Some(Duration::from_millis(1500));
    let (run, v) = host.probe(&["plausible"]);
    assert_eq!(run.code, 0, "{v:#}\n{}", run.stderr);
    let p = only(&v);
    assert_eq!(p["outcome"], "proven", "{p:#}");
    let head = p["head"].as_str().unwrap();
    let built: Vec<String> = host
        .drone
        .builds(&format!("{ORG}/plausible"))
        .into_iter()
        .map(|b| b.after)
        .collect();
    assert_eq!(built.last().map(String::as_str), Some(head), "{built:?}");
}
