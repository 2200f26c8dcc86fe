//! `cc-ci-agent mirrors sync|status` over real protocols on 127.0.0.1: upstreams served by
//! `git daemon`, mirrors on a test forge (Gitea endpoints and `git http-backend` over HTTP, behind
//! a token).

use crate::common;
use crate::support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use cc_ci_testkit::tls::{TestCa, TlsFront};
use common::{agent, Run};
use support::forge::{Canned, TestForge, Version};
use support::odd::{CraftedRefs, Hanging};
use support::{git, git_stdin, refs, GitDaemon, Upstream};

const TOKEN: &str = "forge-token-0123456789abcdef";
const ORG: &str = "recipe-maintainers";

struct Fleet {
    dir: tempfile::TempDir,
    daemon: GitDaemon,
    forge: TestForge,
    upstreams: BTreeMap<String, Upstream>,
    config: PathBuf,
}

impl Fleet {
    fn new(names: &[&str]) -> Self {
        Self::with_version(names, Version::default())
    }

    /// A fleet whose mirror forge speaks `version`.
    fn with_version(names: &[&str], version: Version) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (daemon, upstreams) = support::upstream_fleet(dir.path(), names);
        let forge = TestForge::start_version(&dir.path().join("forge"), ORG, TOKEN, version);
        let token_file = dir.path().join("forge-token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\n\n[forge]\nkind = \"gitea\"\nurl = \"{}\"\norg = \"{ORG}\"\n\
                 token_file = \"forge-token\"\nallow_insecure = true\n\n[mirrors]\nconcurrency = 4\nretries = 1\ngit_timeout = \"30s\"\n",
                forge.url
            ),
        )
        .unwrap();
        Self {
            dir,
            daemon,
            forge,
            upstreams,
            config,
        }
    }

    fn up(&self, name: &str) -> &Upstream {
        &self.upstreams[name]
    }

    fn agent(&self, args: &[&str]) -> Run {
        let mut full = vec!["--config", self.config.to_str().unwrap()];
        full.extend_from_slice(args);
        agent(&full)
    }

    fn sync(&self) -> (Run, serde_json::Value) {
        let run = self.agent(&["--format", "json", "mirrors", "sync"]);
        let v = serde_json::from_str(&run.stdout).unwrap_or(serde_json::Value::Null);
        (run, v)
    }

    /// Branch and tag refs of upstream and mirror, which a sync must make equal.
    fn synced_refs(&self, name: &str) -> (Vec<String>, Vec<String>) {
        let keep = |r: &String| r.ends_with(" refs/heads/main") || r.contains(" refs/tags/");
        let up: Vec<String> = refs(&self.up(name).bare).into_iter().filter(keep).collect();
        let mirror: Vec<String> = refs(&self.forge.repo(name))
            .into_iter()
            .filter(keep)
            .collect();
        (up, mirror)
    }

    fn assert_mirrored(&self, name: &str) {
        let (up, mirror) = self.synced_refs(name);
        assert!(!up.is_empty());
        assert_eq!(
            mirror, up,
            "{name}: the mirror's main and tags must be upstream's exactly"
        );
    }

    /// A commit made on the mirror only, on top of its main: someone else's work.
    fn mirror_only_commit(&self, name: &str, message: &str) -> String {
        let mirror = self.forge.repo(name);
        let tree = git(&mirror, &["rev-parse", "refs/heads/main^{tree}"])
            .trim()
            .to_string();
        let parent = git(&mirror, &["rev-parse", "refs/heads/main"])
            .trim()
            .to_string();
        git(
            &mirror,
            &["commit-tree", &tree, "-p", &parent, "-m", message],
        )
        .trim()
        .to_string()
    }

    fn events(&self, name: &str) -> Vec<String> {
        let ledger = cc_ci_agent::ledger::Ledger::open(
            &self.dir.path().join("state"),
            &cc_ci_agent::clock::Clock::system(),
        )
        .unwrap();
        ledger
            .mirror_events(name, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    fn assert_error(&self, v: &serde_json::Value, name: &str, part: &str) {
        let error = self.result(v, name)["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(part),
            "{name}: error lacks {part:?}: {error}"
        );
    }

    fn result<'a>(&self, v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["recipe"] == name)
            .unwrap()
    }
}

fn assert_no_token(run: &Run) {
    assert!(
        !run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN),
        "the token leaked:\n{}\n{}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn a_missing_mirror_is_created_as_a_normal_repository_and_filled() {
    let f = Fleet::new(&["plausible"]);
    f.up("plausible").tag("1.0.0+2.0.1", true);
    f.up("plausible").commit("compose.yml", "version: '3.9'\n");
    f.up("plausible").tag("latest", false);
    let (run, v) = f.sync();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_no_token(&run);
    assert_eq!(f.result(&v, "plausible")["created"], true);
    f.assert_mirrored("plausible");
    let requests = f.forge.requests();
    assert!(
        requests
            .iter()
            .any(|(r, _)| r == "POST /api/v1/orgs/recipe-maintainers/repos"),
        "{requests:?}"
    );
    assert!(
        requests.iter().all(|(_, authorized)| *authorized),
        "every request carried the token: {requests:?}"
    );
    assert_eq!(f.events("plausible"), ["synced", "created"]);
}

#[test]
fn when_nothing_changed_there_is_no_fetch_and_no_push() {
    let f = Fleet::new(&["plausible"]);
    f.up("plausible").tag("1.0.0+2.0.1", true);
    assert_eq!(f.sync().0.code, 0);
    let before = f.forge.requests().len();
    let cache = f.dir.path().join("state/mirrors/plausible.git");
    let cache_refs = refs(&cache);
    let (run, v) = f.sync();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(f.result(&v, "plausible")["outcome"], "in-sync");
    let second: Vec<String> = f.forge.requests()[before..]
        .iter()
        .map(|(r, _)| r.clone())
        .collect();
    // One GET of the mirror's ref advertisement, made with every other recipe's on one
    // connection before the run; no question to the forge's API (issue 25).
    assert_eq!(
        second,
        ["GET /recipe-maintainers/plausible.git/info/refs?service=git-upload-pack"],
        "a no-change sync only lists; it never pushes"
    );
    assert_eq!(refs(&cache), cache_refs, "the cache was not fetched into");
}

#[test]
fn commits_and_tags_created_moved_and_deleted_are_mirrored_exactly() {
    let f = Fleet::new(&["ghost"]);
    let up = f.up("ghost");
    up.tag("1.0.0+5.0", true);
    up.tag("stable", false);
    up.tag("2.0.0+5.1", true);
    assert_eq!(f.sync().0.code, 0);
    f.assert_mirrored("ghost");

    up.commit("abra.sh", "export X=1\n");
    up.tag("3.0.0+6.0", true); // created, annotated
    up.delete_tag("stable");
    up.tag("stable", false); // moved, lightweight
    up.delete_tag("1.0.0+5.0"); // deleted
    up.delete_tag("2.0.0+5.1");
    up.tag("2.0.0+5.1", true); // re-made: a new tag object on another commit
    let (run, v) = f.sync();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let kinds: Vec<&str> = f.result(&v, "ghost")["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["branch", "tag-move", "tag-create", "tag-move", "tag-delete"]
    );
    f.assert_mirrored("ghost");
}

#[test]
fn an_upstream_force_push_is_followed_and_recorded() {
    let f = Fleet::new(&["mumble"]);
    let up = f.up("mumble");
    up.commit("a", "1\n");
    assert_eq!(f.sync().0.code, 0);
    up.rewrite_last("b", "2\n");
    let (run, v) = f.sync();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(f.result(&v, "mumble")["rewritten"].is_array(), "{v}");
    f.assert_mirrored("mumble");
    assert!(f.events("mumble").contains(&"rewritten".to_string()));
    let status = f.agent(&["mirrors", "status"]);
    assert!(
        status.stdout.contains("in-sync")
            && status
                .stdout
                .contains("rewritten: upstream's branch was rewritten"),
        "{}",
        status.stdout
    );
}

#[test]
fn feature_branches_and_pull_request_refs_on_the_mirror_survive_byte_for_byte() {
    let f = Fleet::new(&["n8n"]);
    let up = f.up("n8n");
    up.tag("1.0.0+1.0", true);
    assert_eq!(f.sync().0.code, 0);
    let mirror = f.forge.repo("n8n");
    let base = git(&mirror, &["rev-parse", "refs/heads/main"])
        .trim()
        .to_string();
    let feature = f.mirror_only_commit("n8n", "a maintainer's feature");
    git(
        &mirror,
        &["update-ref", "refs/heads/feature/smtp", &feature],
    );
    git(&mirror, &["update-ref", "refs/heads/wip", &base]);
    f.forge.add_pull("n8n", 1, &feature);
    let others = |repo: &std::path::Path| -> Vec<String> {
        refs(repo)
            .into_iter()
            .filter(|r| !r.ends_with(" refs/heads/main") && !r.contains(" refs/tags/"))
            .collect()
    };
    let before = others(&mirror);
    assert_eq!(before.len(), 3, "{before:?}");

    up.commit("compose.smtp.yml", "x\n");
    up.tag("1.1.0+1.0", true);
    up.delete_tag("1.0.0+1.0");
    let (run, _) = f.sync();
    assert_eq!(run.code, 0, "{}", run.stderr);
    f.assert_mirrored("n8n");
    assert_eq!(
        others(&mirror),
        before,
        "feature branches and refs/pull/* are never touched"
    );
    assert!(f.forge.pulls("n8n")[0].open);
}

#[test]
fn pull_requests_merged_upstream_are_closed_and_the_others_left_open() {
    let f = Fleet::new(&["keycloak"]);
    let up = f.up("keycloak");
    assert_eq!(f.sync().0.code, 0);
    // Two maintainer branches, proposed on the mirror as PRs #1 and #2.
    git(&up.work, &["checkout", "-q", "-b", "fix-healthcheck"]);
    std::fs::write(up.work.join("healthcheck"), "ok\n").unwrap();
    git(&up.work, &["add", "healthcheck"]);
    git(&up.work, &["commit", "-q", "-m", "fix healthcheck"]);
    let merged = git(&up.work, &["rev-parse", "HEAD"]).trim().to_string();
    git(&up.work, &["checkout", "-q", "-b", "bump", "main"]);
    std::fs::write(up.work.join("version"), "2\n").unwrap();
    git(&up.work, &["add", "version"]);
    git(&up.work, &["commit", "-q", "-m", "bump"]);
    let unmerged = git(&up.work, &["rev-parse", "HEAD"]).trim().to_string();
    let mirror = f.forge.repo("keycloak");
    git(
        &up.work,
        &[
            "push",
            "-q",
            mirror.to_str().unwrap(),
            &format!("{merged}:refs/pull/1/head"),
            &format!("{unmerged}:refs/pull/2/head"),
        ],
    );
    f.forge.add_pull("keycloak", 1, &merged);
    f.forge.add_pull("keycloak", 2, &unmerged);
    // Two maintainers discussed the first.
    for (id, who) in [(901, "ana"), (902, "bo")] {
        f.forge
            .state
            .lock()
            .unwrap()
            .pulls
            .get_mut("keycloak")
            .unwrap()[0]
            .comments
            .push(support::forge::CommentRec {
                id,
                body: format!("looks good to {who}"),
                login: who.into(),
                ..Default::default()
            });
    }

    // Upstream merges the first.
    git(&up.work, &["checkout", "-q", "main"]);
    git(
        &up.work,
        &[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            "Merge fix-healthcheck",
            "fix-healthcheck",
        ],
    );
    git(&up.work, &["push", "-q", "origin", "main"]);
    let (run, v) = f.sync();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        f.result(&v, "keycloak")["closed_pulls"],
        serde_json::json!([1])
    );
    let pulls = f.forge.pulls("keycloak");
    assert!(
        !pulls[0].open && pulls[0].comments[2].body.contains(&merged),
        "{pulls:?}"
    );
    assert!(pulls[1].open && pulls[1].comments.is_empty(), "{pulls:?}");
    // Gitea lists every comment in one answer, whatever `page` asks: one look, not a page loop.
    let looks = f
        .forge
        .requests()
        .iter()
        .filter(|(r, _)| {
            r.starts_with(&format!(
                "GET /api/v1/repos/{ORG}/keycloak/issues/1/comments"
            ))
        })
        .count();
    assert_eq!(looks, 1, "the comments of #1 were listed {looks} times");
}

#[test]
fn an_unreachable_upstream_leaves_the_mirror_untouched() {
    let mut f = Fleet::new(&["cryptpad"]);
    f.up("cryptpad").tag("1.0.0+5.0", true);
    assert_eq!(f.sync().0.code, 0);
    let before = refs(&f.forge.repo("cryptpad"));
    f.daemon.stop();
    let (run, v) = f.sync();
    assert_eq!(run.code, 11, "{}", run.stderr);
    let err = f.result(&v, "cryptpad")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains("upstream unreachable, mirror left alone"),
        "{err}"
    );
    assert_eq!(refs(&f.forge.repo("cryptpad")), before);
}

#[test]
fn an_upstream_answering_empty_or_without_tags_does_not_wipe_the_mirror() {
    let f = Fleet::new(&["discourse"]);
    let up = f.up("discourse");
    up.tag("1.0.0+3.0", true);
    up.tag("1.1.0+3.1", false);
    assert_eq!(f.sync().0.code, 0);
    let before = refs(&f.forge.repo("discourse"));

    // Every tag gone upstream: refused, the mirror keeps them.
    up.delete_tag("1.0.0+3.0");
    up.delete_tag("1.1.0+3.1");
    let (run, v) = f.sync();
    assert_eq!(run.code, 11);
    f.assert_error(&v, "discourse", "no tags while the mirror has 2");
    assert_eq!(refs(&f.forge.repo("discourse")), before);
    let status = f.agent(&["mirrors", "status", "discourse"]);
    assert!(
        status.stdout.contains("refused") && !status.stdout.contains("behind"),
        "a sync refuses it, so it is not behind:\n{}",
        status.stdout
    );
    // An operator accepts it, once, for this recipe: recorded.
    assert_eq!(
        f.agent(&["mirrors", "sync", "--accept-deletions"]).code,
        2,
        "names needed"
    );
    let accepted = f.agent(&["mirrors", "sync", "--accept-deletions", "discourse"]);
    assert_eq!(accepted.code, 0, "{}\n{}", accepted.stdout, accepted.stderr);
    f.assert_mirrored("discourse");
    assert!(!refs(&f.forge.repo("discourse"))
        .iter()
        .any(|r| r.contains("refs/tags/")));
    assert!(f
        .events("discourse")
        .contains(&"deletions-accepted".to_string()));
    up.tag("2.0.0+4.0", true);
    up.delete_tag("2.0.0+4.0");
    assert_eq!(f.sync().0.code, 0, "nothing left to refuse");
    let before = refs(&f.forge.repo("discourse"));

    // An upstream with nothing at all.
    std::fs::remove_dir_all(&up.bare).unwrap();
    git(
        up.bare.parent().unwrap(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            up.bare.to_str().unwrap(),
        ],
    );
    let (run, v) = f.sync();
    assert_eq!(run.code, 11);
    f.assert_error(&v, "discourse", "upstream has no branch main");
    assert_eq!(refs(&f.forge.repo("discourse")), before);
}

#[test]
fn a_wrong_token_is_a_clear_error_that_never_prints_a_token() {
    let f = Fleet::new(&["mailu"]);
    let wrong = "wrong-token-fedcba9876543210";
    std::fs::write(f.dir.path().join("forge-token"), wrong).unwrap();
    let (run, v) = f.sync();
    assert_eq!(run.code, 11, "{}\n{}", run.stdout, run.stderr);
    let err = f.result(&v, "mailu")["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("HTTP 401") && err.contains("refused the token"),
        "{err}"
    );
    assert_no_token(&run);
    assert!(!run.stdout.contains(wrong) && !run.stderr.contains(wrong));
    assert!(!f.forge.repo("mailu").exists());
    let db = std::fs::read(f.dir.path().join("state/state.db")).unwrap();
    assert!(
        !String::from_utf8_lossy(&db).contains(wrong)
            && !String::from_utf8_lossy(&db).contains(TOKEN)
    );
}

#[test]
fn one_recipe_failing_does_not_stop_the_others() {
    let f = Fleet::new(&["alpha", "beta", "gamma"]);
    std::fs::remove_dir_all(&f.up("beta").bare).unwrap();
    let (run, v) = f.sync();
    assert_eq!(run.code, 11, "{}", run.stderr);
    assert_eq!(v["failed"], 1);
    assert_eq!(f.result(&v, "beta")["outcome"], "failed");
    f.assert_mirrored("alpha");
    f.assert_mirrored("gamma");
    let human = f.agent(&["mirrors", "sync"]);
    assert!(
        human.stdout.contains("✗ beta") && human.stdout.contains("1 failed"),
        "{}",
        human.stdout
    );
}

#[test]
fn a_concurrent_push_to_the_mirror_is_not_overwritten() {
    let f = Fleet::new(&["immich"]);
    assert_eq!(f.sync().0.code, 0);
    f.up("immich").commit("compose.yml", "new\n");
    let mirror = f.forge.repo("immich");
    let theirs = f.mirror_only_commit("immich", "pushed by someone else mid-sync");
    let (m, t) = (mirror.clone(), theirs.clone());
    f.forge.state.lock().unwrap().before_receive_pack = Some(Box::new(move || {
        git(&m, &["update-ref", "refs/heads/main", &t]);
    }));
    let (run, v) = f.sync();
    assert_eq!(run.code, 11, "{}", run.stderr);
    f.assert_error(&v, "immich", "changed while it was being synced");
    assert_eq!(
        git(&mirror, &["rev-parse", "refs/heads/main"]).trim(),
        theirs,
        "their push survived"
    );
}

#[test]
fn status_tells_missing_in_sync_behind_diverged_and_unreachable_apart() {
    let mut f = Fleet::new(&["a-in-sync", "b-behind", "c-diverged", "d-missing"]);
    let (run, _) = f.agent_sync_only(&["a-in-sync", "b-behind", "c-diverged"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    f.up("b-behind").commit("x", "1\n");
    let mirror = f.forge.repo("c-diverged");
    let own = f.mirror_only_commit("c-diverged", "only on the mirror");
    git(&mirror, &["update-ref", "refs/heads/main", &own]);
    let run = f.agent(&["--format", "json", "mirrors", "status"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let standing: BTreeMap<String, String> = v["mirrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["recipe"].as_str().unwrap().to_string(),
                r["standing"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(standing["a-in-sync"], "in-sync");
    assert_eq!(standing["b-behind"], "behind");
    assert_eq!(standing["c-diverged"], "diverged");
    assert_eq!(standing["d-missing"], "missing");
    f.daemon.stop();
    let run = f.agent(&["--format", "json", "mirrors", "status", "a-in-sync"]);
    assert!(
        run.stdout.contains("upstream-unreachable"),
        "{}",
        run.stdout
    );
}

impl Fleet {
    fn agent_sync_only(&self, names: &[&str]) -> (Run, ()) {
        let mut args = vec!["mirrors", "sync"];
        args.extend_from_slice(names);
        (self.agent(&args), ())
    }
}

impl Fleet {
    /// Installs a pre-receive hook (a shell script body) in a mirror: how Gitea refuses pushes
    /// by its protection rules, with the reason on stderr.
    fn pre_receive(&self, name: &str, body: &str) {
        let hook = self.forge.repo(name).join("hooks/pre-receive");
        std::fs::write(&hook, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }

    /// Points one recipe at another upstream URL.
    fn set_upstream(&self, name: &str, url: &str) {
        let path = self.dir.path().join("enrollment.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let table = format!("[recipe.{name}]\n");
        assert!(text.contains(&table));
        let text = text.replace(
            &table,
            &format!("{table}upstream = \"{url}\"\nallow_insecure = true\n"),
        );
        std::fs::write(&path, text).unwrap();
    }

    /// Replaces the `[mirrors]` section of agent.toml.
    fn set_mirrors(&self, settings: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let at = text.find("[mirrors]").unwrap();
        std::fs::write(
            &self.config,
            format!("{}[mirrors]\n{settings}", &text[..at]),
        )
        .unwrap();
    }

    fn can(
        &self,
        method: &str,
        path: &str,
        status: u16,
        headers: &[(&str, &str)],
        times: Option<usize>,
    ) {
        self.can_body(
            method,
            path,
            status,
            headers,
            times,
            b"{\"message\":\"canned\"}".to_vec(),
        );
    }

    fn can_body(
        &self,
        method: &str,
        path: &str,
        status: u16,
        headers: &[(&str, &str)],
        times: Option<usize>,
        body: Vec<u8>,
    ) {
        let mut headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        headers.push(("Content-Type".into(), "application/json".into()));
        self.forge.state.lock().unwrap().canned.push(Canned {
            method: method.into(),
            path: path.replace("ORG", ORG),
            status,
            headers,
            body,
            endless: false,
            times,
        });
    }

    fn requests_like(&self, prefix: &str) -> usize {
        let prefix = prefix.replace("ORG", ORG);
        self.forge
            .requests()
            .iter()
            .filter(|(r, _)| r.starts_with(&prefix))
            .count()
    }
}

// Odd upstreams and a busy forge.

#[test]
fn an_unreachable_upstream_gets_no_mirror_made() {
    let mut f = Fleet::new(&["plausible"]);
    f.daemon.stop();
    let (run, v) = f.sync();
    assert_eq!(run.code, 11, "{}", run.stderr);
    f.assert_error(&v, "plausible", "upstream unreachable, mirror left alone");
    assert!(
        !f.forge.repo("plausible").exists(),
        "an empty mirror was made"
    );
    assert_eq!(f.requests_like("POST "), 0, "{:?}", f.forge.requests());
}

#[test]
fn a_hanging_upstream_costs_one_git_timeout_in_sync_and_status() {
    let f = Fleet::new(&["outline"]);
    assert_eq!(f.sync().0.code, 0);
    let before = refs(&f.forge.repo("outline"));
    let hanging = Hanging::start();
    f.set_upstream("outline", &hanging.url("outline"));
    f.set_mirrors("retries = 3\ngit_timeout = \"2s\"\n");

    let (run, v) = f.sync();
    assert_eq!(run.code, 11, "{}", run.stderr);
    f.assert_error(&v, "outline", "did not finish within 2s");
    assert_eq!(hanging.connections(), 1, "a timeout was retried");
    assert_eq!(refs(&f.forge.repo("outline")), before);

    let status = f.agent(&["--format", "json", "mirrors", "status"]);
    assert!(
        status.stdout.contains("upstream-unreachable"),
        "{}",
        status.stdout
    );
    assert_eq!(hanging.connections(), 2, "status retried a timeout");
}

#[test]
fn one_recipe_cannot_take_longer_than_its_deadline() {
    let f = Fleet::new(&["wekan"]);
    let hanging = Hanging::start();
    f.set_upstream("wekan", &hanging.url("wekan"));
    f.set_mirrors("retries = 3\ngit_timeout = \"10m\"\nrecipe_timeout = \"2s\"\n");
    let (run, v) = f.sync();
    assert_eq!(run.code, 11, "{}", run.stderr);
    f.assert_error(
        &v,
        "wekan",
        "cut to what was left of mirrors.recipe_timeout",
    );
    assert_eq!(hanging.connections(), 1);
}

/// A listing server that sends its answer slowly, by any of HTTP/1.1's framings, ends with its
/// recipe's deadline: the sync and the status finish, that recipe fails as a timeout, and a recipe
/// on another upstream is synced.
#[test]
fn a_slow_answer_in_any_framing_ends_with_its_recipes_deadline() {
    use cc_ci_testkit::slow_http::{Manner, SlowServer};
    let guard = std::time::Duration::from_secs(90);
    for manner in [
        Manner::TrickleStatus,
        Manner::EndlessContinue,
        Manner::TrickleBody,
        Manner::TrickleChunks,
    ] {
        let f = Fleet::new(&["slow", "fine"]);
        let server = SlowServer::start(manner.clone());
        f.set_upstream("slow", &server.url("slow"));
        f.set_mirrors("retries = 1\ngit_timeout = \"10m\"\nrecipe_timeout = \"3s\"\n");
        let config = f.config.to_str().unwrap();
        let run = common::agent_guarded(
            &["--config", config, "--format", "json", "mirrors", "sync"],
            &[],
            guard,
        )
        .unwrap_or_else(|| panic!("{manner:?}: mirrors sync still ran after {guard:?}"));
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_default();
        assert_eq!(run.code, 11, "{manner:?}: {}\n{}", run.stdout, run.stderr);
        f.assert_error(&v, "slow", "did not finish within");
        f.assert_mirrored("fine");
        let status = common::agent_guarded(&["--config", config, "mirrors", "status"], &[], guard)
            .unwrap_or_else(|| panic!("{manner:?}: mirrors status still ran after {guard:?}"));
        assert_eq!(status.code, 3, "{manner:?}: {}", status.stdout);
    }
}

/// The same over TLS: the deadline holds inside the TLS stream too.
#[test]
fn a_slow_answer_over_tls_ends_with_its_recipes_deadline() {
    use cc_ci_testkit::slow_http::{Manner, SlowServer};
    let guard = std::time::Duration::from_secs(90);
    let f = Fleet::new(&["slow", "fine"]);
    let server = SlowServer::start(Manner::TrickleChunks);
    let ca = TestCa::make(&f.dir.path().join("ca"));
    let front = TlsFront::start(&ca, server.addr());
    f.set_upstream("slow", &format!("{}/slow.git", front.url));
    f.set_mirrors("retries = 1\ngit_timeout = \"10m\"\nrecipe_timeout = \"3s\"\n");
    let config = f.config.to_str().unwrap();
    let ca_pem = ca.ca_pem.as_path();
    let run = common::agent_guarded(
        &["--config", config, "--format", "json", "mirrors", "sync"],
        &[("SSL_CERT_FILE", ca_pem), ("GIT_SSL_CAINFO", ca_pem)],
        guard,
    )
    .unwrap_or_else(|| panic!("mirrors sync over TLS still ran after {guard:?}"));
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_default();
    assert_eq!(run.code, 11, "{}\n{}", run.stdout, run.stderr);
    assert!(front.handshakes() >= 1, "the listing went through TLS");
    f.assert_error(&v, "slow", "did not finish within");
    f.assert_mirrored("fine");
}

/// A chunk of size 1, then one of size 2^64 - 1: the body limit is not fooled by the sum
/// wrapping, and the client stops reading at once rather than reading the connection dry.
#[test]
fn a_chunk_size_that_wraps_the_body_limit_is_refused_at_once() {
    use cc_ci_testkit::slow_http::{Manner, SlowServer};
    let f = Fleet::new(&["wraps"]);
    let server = SlowServer::start(Manner::WrappingChunk);
    f.set_upstream("wraps", &server.url("wraps"));
    f.set_mirrors("retries = 1\ngit_timeout = \"30s\"\n");
    let config = f.config.to_str().unwrap();
    let run = common::agent_guarded(
        &["--config", config, "--format", "json", "mirrors", "sync"],
        &[],
        std::time::Duration::from_secs(90),
    )
    .unwrap_or_else(|| panic!("mirrors sync still ran"));
    // The listing refuses the answer and leaves the recipe to git, which this server cannot
    // serve either: the recipe fails, the rest of the run goes on.
    assert_eq!(run.code, 11, "{}\n{}", run.stdout, run.stderr);
    assert!(
        server.written() < 32 << 20,
        "the client read {} bytes of a body it should have refused at its chunk size",
        server.written()
    );
}

/// A server that answers once per connection, in HTTP/1.0 (`Connection: close`): the recipes
/// the listing's connection cap leaves unasked go to `git ls-remote`, and every one is synced.
#[test]
fn a_server_that_closes_after_each_answer_leaves_the_rest_to_git() {
    use cc_ci_testkit::slow_http::{Manner, SlowServer};
    let names: Vec<String> = (0..20).map(|i| format!("r{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let f = Fleet::new(&refs);
    let server = SlowServer::start(Manner::CloseAfterEach(f.dir.path().join("upstream")));
    for n in &refs {
        f.set_upstream(n, &server.url(n));
    }
    let (run, v) = f.sync();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for n in &refs {
        f.assert_mirrored(n);
        assert_eq!(f.result(&v, n)["outcome"], "synced", "{n}");
    }
}

/// 20 000 commits on upstream's main, each tagged (every tenth annotated), by fast-import.
fn many_tags(bare: &std::path::Path, n: usize) {
    let mut script = String::new();
    for i in 1..=n {
        script.push_str(&format!(
            "commit refs/heads/main\nmark :{i}\ncommitter t <t@example.org> {} +0000\ndata 2\nc\n",
            1_600_000_000 + i
        ));
        if i == 1 {
            script.push_str("from refs/heads/main^0\n");
        }
        script.push_str(&format!(
            "M 644 inline n\ndata {}\n{i}\n",
            i.to_string().len()
        ));
        if i % 10 == 0 {
            script.push_str(&format!(
                "tag 1.{i}.0+2.{i}\nfrom :{i}\ntagger t <t@example.org> 1600000000 +0000\ndata 1\nr\n"
            ));
        } else {
            script.push_str(&format!("reset refs/tags/1.{i}.0+2.{i}\nfrom :{i}\n\n"));
        }
    }
    git_stdin(bare, &["fast-import", "--quiet"], &script);
}

#[test]
fn twenty_thousand_tags_are_mirrored_and_kept_exact() {
    let f = Fleet::new(&["bigtags"]);
    let up = f.up("bigtags");
    many_tags(&up.bare, 20_000);
    let (run, v) = f.sync();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(f.result(&v, "bigtags")["tags"], 20_000);
    f.assert_mirrored("bigtags");

    // 1 000 tags re-made on another commit, 1 000 deleted: one sync makes the mirror exact.
    let mut edits = String::new();
    for i in 1..=1000 {
        edits.push_str(&format!("update refs/tags/1.{i}.0+2.{i} refs/heads/main\n"));
        let j = i + 10_000;
        edits.push_str(&format!("delete refs/tags/1.{j}.0+2.{j}\n"));
    }
    git_stdin(&up.bare, &["update-ref", "--stdin"], &edits);
    let (run, v) = f.sync();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let summary = f.agent(&["mirrors", "status"]);
    assert_eq!(summary.code, 0, "{}", summary.stdout);
    assert_eq!(f.result(&v, "bigtags")["tags"], 19_000);
    f.assert_mirrored("bigtags");
}

/// An upstream with more tags than a recipe could have (100 001, written straight into
/// `packed-refs`): its listing is refused as it is read, by the pipelined listing and by git's
/// alike, with a message that says why; the rest of the fleet is synced.
#[test]
fn an_upstream_with_more_tags_than_a_listing_may_hold_fails_alone() {
    let f = Fleet::new(&["huge", "small"]);
    let up = f.up("huge");
    let head = git(&up.bare, &["rev-parse", "refs/heads/main"])
        .trim()
        .to_string();
    let mut packed = String::from("# pack-refs with: peeled\n");
    for i in 0..=100_000 {
        packed.push_str(&format!("{head} refs/tags/0.{i}.0+1\n"));
    }
    std::fs::write(up.bare.join("packed-refs"), packed).unwrap();
    let (run, v) = f.sync();
    assert_eq!(run.code, 11, "{}\n{}", run.stdout, run.stderr);
    f.assert_error(&v, "huge", "more than 100000 tags");
    f.assert_mirrored("small");
}

#[test]
fn a_tag_named_like_an_option_is_mirrored() {
    let f = Fleet::new(&["dashes"]);
    let up = f.up("dashes");
    up.tag("1.0.0+1.0", false);
    git(
        &up.bare,
        &["update-ref", "refs/tags/-dash", "refs/heads/main"],
    );
    git(
        &up.bare,
        &["update-ref", "refs/tags/--upload-pack=x", "refs/heads/main"],
    );
    let (run, _) = f.sync();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    f.assert_mirrored("dashes");
    let status = f.agent(&["mirrors", "status"]);
    assert_eq!(status.code, 0, "{}", status.stdout);
}

#[test]
fn a_ref_name_with_a_line_break_is_refused_not_believed() {
    let f = Fleet::new(&["glitch"]);
    f.up("glitch").tag("1.0.0+1.0", false);
    assert_eq!(f.sync().0.code, 0);
    let before = refs(&f.forge.repo("glitch"));
    let head = f.up("glitch").head();
    let other = "ab".repeat(20);
    let crafted = CraftedRefs::start(vec![
        (head.clone(), "refs/heads/main".into()),
        (head.clone(), "refs/tags/1.0.0+1.0".into()),
        (head, format!("refs/tags/x\n{other}\trefs/heads/main")),
    ]);
    f.set_upstream("glitch", &format!("{}/glitch.git", crafted.url));

    let status = f.agent(&["--format", "json", "mirrors", "status"]);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let row = &v["mirrors"][0];
    assert_eq!(row["standing"], "upstream-unreachable", "{row}");
    assert!(
        row["detail"].as_str().unwrap().contains("more than once"),
        "{row}"
    );

    let (run, v) = f.sync();
    assert_eq!(run.code, 11, "{}", run.stderr);
    f.assert_error(&v, "glitch", "more than once");
    assert_eq!(refs(&f.forge.repo("glitch")), before);
}

#[test]
fn the_forge_is_asked_again_after_429_and_503_when_it_says_when() {
    let f = Fleet::new(&["zammad"]);
    // Seconds, then an HTTP date already past: the two forms RFC 9110 allows.
    for (status, after) in [(429, "1"), (503, "Wed, 21 Oct 2015 07:28:00 GMT")] {
        f.can(
            "GET",
            "/repos/ORG/zammad",
            status,
            &[("Retry-After", after)],
            Some(1),
        );
    }
    let (run, _) = f.sync();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let lookups = f
        .forge
        .requests()
        .iter()
        .filter(|(r, _)| *r == format!("GET /api/v1/repos/{ORG}/zammad"))
        .count();
    assert_eq!(lookups, 3, "429, 503, then the answer");
    f.assert_mirrored("zammad");
}

#[test]
fn a_create_that_failed_on_the_server_is_not_sent_twice() {
    let f = Fleet::new(&["nextcloud"]);
    f.can(
        "POST",
        "/orgs/ORG/repos",
        503,
        &[("Retry-After", "0")],
        Some(1),
    );
    let (run, v) = f.sync();
    assert_eq!(run.code, 11, "{}", run.stderr);
    f.assert_error(&v, "nextcloud", "HTTP 503");
    assert_eq!(
        f.requests_like("POST /api/v1/orgs/"),
        1,
        "a POST was repeated"
    );
    assert_eq!(f.sync().0.code, 0, "the next sync makes it");
    f.assert_mirrored("nextcloud");
}

#[test]
fn a_retry_after_past_the_deadline_fails_at_once() {
    let f = Fleet::new(&["bookstack"]);
    f.can(
        "GET",
        "/repos/ORG/bookstack",
        429,
        &[("Retry-After", "3600")],
        None,
    );
    let (run, v) = f.sync();
    assert_eq!(run.code, 11, "{}", run.stderr);
    f.assert_error(&v, "bookstack", "asked to wait 3600s");
    assert_eq!(f.requests_like("GET /api/v1/repos/ORG/bookstack"), 1);
}

#[test]
fn more_open_pull_requests_than_listed_is_a_warning_on_a_synced_recipe() {
    let f = Fleet::new(&["lemmy"]);
    assert_eq!(f.sync().0.code, 0);
    f.up("lemmy").commit("compose.yml", "next\n");
    let page: Vec<serde_json::Value> = (1..=50)
        .map(|n| serde_json::json!({"number": n, "title": "t", "head": {"sha": "ab".repeat(20)}}))
        .collect();
    let body = serde_json::to_vec(&page).unwrap();
    f.can_body("GET", "/repos/ORG/lemmy/pulls", 200, &[], None, body);
    let (run, v) = f.sync();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = f.result(&v, "lemmy");
    assert_eq!(r["outcome"], "synced");
    let warning = r["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("more open pull requests than the agent lists"),
        "{r}"
    );
    assert!(f.events("lemmy").contains(&"warning".to_string()));
    f.assert_mirrored("lemmy");
}

#[test]
fn a_push_the_server_refuses_says_so_with_its_words() {
    let f = Fleet::new(&["gitea-protected"]);
    assert_eq!(f.sync().0.code, 0);
    // What Gitea's pre-receive hook does for a protected tag: a reason on stderr, exit 1.
    f.pre_receive(
        "gitea-protected",
        "echo 'Gitea: Tag 1.0.0+1.0 is protected' >&2\nexit 1",
    );
    let before = refs(&f.forge.repo("gitea-protected"));
    f.up("gitea-protected").tag("1.0.0+1.0", true);
    let (run, v) = f.sync();
    assert_eq!(run.code, 11, "{}", run.stderr);
    f.assert_error(&v, "gitea-protected", "refused the push by its own rules");
    f.assert_error(&v, "gitea-protected", "pre-receive hook declined");
    f.assert_error(
        &v,
        "gitea-protected",
        "remote: Gitea: Tag 1.0.0+1.0 is protected",
    );
    assert_eq!(refs(&f.forge.repo("gitea-protected")), before);
}

#[test]
fn an_old_gitea_that_ignores_the_token_header_on_git_paths_is_still_pushed_to() {
    let f = Fleet::new(&["lasuite-drive"]);
    f.forge.state.lock().unwrap().old_server = true;
    f.up("lasuite-drive").tag("1.0.0+1.0", true);
    let (run, _) = f.sync();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    f.assert_mirrored("lasuite-drive");
    assert_no_token(&run);
    f.up("lasuite-drive").commit("compose.yml", "v2\n");
    assert_eq!(f.sync().0.code, 0);
    f.assert_mirrored("lasuite-drive");
}

// The forge as Gitea is: repository flags, emptiness after the first push, paging.

#[test]
fn a_pull_mirror_an_archived_repo_or_no_push_right_is_refused_before_any_push() {
    let f = Fleet::new(&["a-pull-mirror", "b-archived", "c-read-only"]);
    assert_eq!(f.sync().0.code, 0);
    {
        let mut s = f.forge.state.lock().unwrap();
        s.repos.get_mut("a-pull-mirror").unwrap().mirror = true;
        s.repos.get_mut("b-archived").unwrap().archived = true;
        s.repos.get_mut("c-read-only").unwrap().no_push = true;
    }
    for name in ["a-pull-mirror", "b-archived", "c-read-only"] {
        f.up(name).commit("compose.yml", "new\n");
    }
    let before = f.forge.requests().len();
    let (run, v) = f.sync();
    assert_eq!(run.code, 11, "{}", run.stderr);
    f.assert_error(&v, "a-pull-mirror", "is a pull-mirror on the forge");
    f.assert_error(&v, "b-archived", "is archived on the forge");
    f.assert_error(&v, "b-archived", "unarchive it");
    f.assert_error(
        &v,
        "c-read-only",
        "may not push to recipe-maintainers/c-read-only",
    );
    let git_calls: Vec<String> = f.forge.requests()[before..]
        .iter()
        .map(|(r, _)| r.clone())
        .filter(|r| r.contains(".git/") && !r.ends_with("/info/refs?service=git-upload-pack"))
        .collect();
    // The mirrors' refs are read (listed with every other recipe's before the run), never
    // fetched from or pushed to.
    assert!(git_calls.is_empty(), "git was spoken to: {git_calls:?}");
    let status = f.agent(&["mirrors", "status"]);
    assert_eq!(
        status.stdout.matches("unwritable").count(),
        3,
        "{}",
        status.stdout
    );
}

#[test]
fn three_new_mirrors_are_created_filled_and_green_with_no_warning() {
    // The real host's first sync: lasuite-drive, mailu and mumble had no mirror yet.
    let names = ["lasuite-drive", "mailu", "mumble"];
    let f = Fleet::new(&names);
    for n in names {
        f.up(n).tag("1.0.0+1.0", true);
    }
    let (run, v) = f.sync();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for n in names {
        let r = f.result(&v, n);
        assert!(
            r["created"] == true && r["warnings"] == serde_json::json!([]),
            "{r}"
        );
        f.assert_mirrored(n);
        assert!(!f.events(n).contains(&"warning".to_string()));
    }
    // Gitea has noticed the pushes by the next sync: its pull requests are looked at again.
    let merged = f.up("mumble").head();
    f.forge.add_pull("mumble", 1, &merged);
    f.up("mumble").commit("compose.yml", "next\n");
    let (run, v) = f.sync();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        f.result(&v, "mumble")["closed_pulls"],
        serde_json::json!([1])
    );
}

#[test]
fn a_server_maximum_below_the_page_size_hides_no_pull_request() {
    let f = Fleet::new(&["discourse"]);
    assert_eq!(f.sync().0.code, 0);
    f.forge.state.lock().unwrap().max_items = Some(20);
    let merged = f.up("discourse").head();
    for n in 1..=45 {
        f.forge.add_pull("discourse", n, &merged);
    }
    // One without a head commit (its branch is gone): skipped, and said.
    f.forge
        .state
        .lock()
        .unwrap()
        .pulls
        .get_mut("discourse")
        .unwrap()
        .push(support::forge::PullRec {
            number: 46,
            head_sha: String::new(),
            title: "gone".into(),
            open: true,
            ..Default::default()
        });
    f.up("discourse").commit("compose.yml", "next\n");
    let (run, v) = f.sync();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = f.result(&v, "discourse");
    assert_eq!(r["closed_pulls"].as_array().unwrap().len(), 45, "{r}");
    assert!(
        r["warnings"][0]
            .as_str()
            .unwrap()
            .contains("#46 have no head commit"),
        "{r}"
    );
}

#[test]
fn a_merged_pull_request_the_forge_will_not_close_gets_one_comment_in_five_syncs() {
    let f = Fleet::new(&["mattermost"]);
    assert_eq!(f.sync().0.code, 0);
    let merged = f.up("mattermost").head();
    f.forge.add_pull("mattermost", 7, &merged);
    f.forge
        .state
        .lock()
        .unwrap()
        .pulls
        .get_mut("mattermost")
        .unwrap()[0]
        .refuse_close = true;
    let mut warned = 0;
    for round in 0..5 {
        f.up("mattermost")
            .commit("compose.yml", &format!("round {round}\n"));
        let (run, v) = f.sync();
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        let warnings = f.result(&v, "mattermost")["warnings"]
            .as_array()
            .unwrap()
            .len();
        warned += warnings;
    }
    let pulls = f.forge.pulls("mattermost");
    assert!(pulls[0].open, "{pulls:?}");
    assert_eq!(pulls[0].comments.len(), 1, "{pulls:?}");
    assert!(
        pulls[0].comments[0].body.contains("could not close"),
        "{pulls:?}"
    );
    assert_eq!(warned, 1, "said once, when it first happened");
}

#[test]
fn a_repository_the_forge_will_not_create_is_named_by_cause() {
    for (status, cause) in [
        (404, "does not exist, or the token's user cannot see it"),
        (409, "exists, but the token's user cannot see it"),
        (403, "may not create repositories in recipe-maintainers"),
        (422, "will not take the name"),
    ] {
        let f = Fleet::new(&["peertube"]);
        f.can("POST", "/orgs/ORG/repos", status, &[], None);
        let (run, v) = f.sync();
        assert_eq!(run.code, 11, "{}", run.stderr);
        f.assert_error(&v, "peertube", &format!("HTTP {status}: "));
        f.assert_error(&v, "peertube", cause);
    }
}

/// A pull request whose head repository was deleted (`head.repo_id` -1) and, on Gitea 1.19 to
/// 1.22, a `null` where converting one failed: the page is read around them, the merged pull
/// request on it is still closed, and the unreadable item is said as a warning.
#[test]
fn a_gone_head_repository_and_a_null_item_never_fail_a_page() {
    for version in [Version::Gitea1_19, Version::Gitea1_21, Version::Gitea1_25] {
        let f = Fleet::with_version(&["keycloak"], version);
        let up = f.up("keycloak");
        assert_eq!(f.sync().0.code, 0);
        git(&up.work, &["checkout", "-q", "-b", "fix"]);
        std::fs::write(up.work.join("fix"), "ok\n").unwrap();
        git(&up.work, &["add", "fix"]);
        git(&up.work, &["commit", "-q", "-m", "fix"]);
        let merged = git(&up.work, &["rev-parse", "HEAD"]).trim().to_string();
        let mirror = f.forge.repo("keycloak");
        let refspecs: Vec<String> = (1..=3)
            .map(|n| format!("{merged}:refs/pull/{n}/head"))
            .collect();
        let mut push = vec!["push", "-q", mirror.to_str().unwrap()];
        push.extend(refspecs.iter().map(String::as_str));
        git(&up.work, &push);
        for n in 1..=3 {
            f.forge.add_pull("keycloak", n, &merged);
        }
        {
            let mut s = f.forge.state.lock().unwrap();
            let pulls = s.pulls.get_mut("keycloak").unwrap();
            pulls[1].head_repo_gone = true;
            pulls[2].converter_error = true;
        }
        git(&up.work, &["checkout", "-q", "main"]);
        git(
            &up.work,
            &["merge", "-q", "--no-ff", "-m", "Merge fix", "fix"],
        );
        git(&up.work, &["push", "-q", "origin", "main"]);
        let (run, v) = f.sync();
        assert_eq!(run.code, 0, "{version:?}: {}", run.stderr);
        let closed = f.result(&v, "keycloak")["closed_pulls"].clone();
        let warnings = f.result(&v, "keycloak")["warnings"].to_string();
        assert!(
            !warnings.contains("listing pull requests failed"),
            "{version:?}: {warnings}"
        );
        if version == Version::Gitea1_25 {
            assert_eq!(closed, serde_json::json!([3, 2, 1]), "{version:?}: {v:#}");
        } else {
            assert_eq!(closed, serde_json::json!([2, 1]), "{version:?}: {v:#}");
            assert!(
                warnings.contains("could not be read"),
                "{version:?}: {warnings}"
            );
        }
    }
}

/// The org named in `forge.org` is not on the forge: creating a mirror there is Gitea's 404
/// (`orgAssignment`), which the error explains; nothing is created.
#[test]
fn a_missing_org_is_named_when_a_mirror_cannot_be_created() {
    let f = Fleet::new(&["wordpress"]);
    std::fs::remove_dir_all(f.forge.root.join(ORG)).unwrap();
    let (run, v) = f.sync();
    assert_eq!(run.code, 11, "{}", run.stderr);
    f.assert_error(&v, "wordpress", "HTTP 404");
    f.assert_error(
        &v,
        "wordpress",
        "does not exist, or the token's user cannot see it",
    );
}

/// Branch protections are for repository admins only (Gitea's `reqAdmin`): on a mirror the
/// bot did not create, check-forge cannot read them, says so, and tells what to make sure of.
#[test]
fn check_forge_says_when_protections_cannot_be_read() {
    let f = Fleet::new(&["made-elsewhere"]);
    assert_eq!(f.sync().0.code, 0);
    f.forge.state.lock().unwrap().admin_of.clear();
    let run = f.agent(&["--format", "json", "mirrors", "check-forge"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let finding = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["what"]
                .as_str()
                .unwrap_or_default()
                .contains("protection of main")
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(finding["verdict"], "warn", "{v:#}");
    let detail = finding["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("403") && detail.contains("make sure the bot may push"),
        "{detail}"
    );
}

/// A mirror renamed on the forge: its old path answers with a redirect, 307 up to Gitea 1.23
/// and 301 from 1.24 (forge-facts.md); either way the error says where it is now, and nothing
/// is created in its place.
#[test]
fn a_renamed_repository_says_where_it_is_now() {
    for version in [Version::Gitea1_23, Version::Gitea1_25] {
        let f = Fleet::with_version(&["wordpress"], version);
        f.forge
            .state
            .lock()
            .unwrap()
            .renamed_repos
            .insert("wordpress".into(), "wordpress-old".into());
        let (run, v) = f.sync();
        assert_eq!(run.code, 11, "{version:?}: {}", run.stderr);
        f.assert_error(&v, "wordpress", "a redirect to");
        f.assert_error(&v, "wordpress", "renamed or moved");
        f.assert_error(&v, "wordpress", "wordpress-old");
        assert!(!f.forge.repo("wordpress").exists());
    }
}

#[test]
fn check_forge_says_what_is_ready_and_what_to_change_and_writes_nothing() {
    let f = Fleet::new(&["ready", "protected"]);
    assert_eq!(f.sync().0.code, 0);
    // Gitea before 1.23: a protected branch has no force-push setting and refuses them all.
    f.forge.state.lock().unwrap().protections.insert(
        "protected".into(),
        vec![serde_json::json!({"branch_name": "main", "rule_name": "main", "enable_push": true})],
    );
    let before = f.forge.requests().len();
    let check = |expect: i32| {
        let run = f.agent(&["--format", "json", "mirrors", "check-forge"]);
        assert_eq!(run.code, expect, "{}\n{}", run.stdout, run.stderr);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let verdicts: BTreeMap<String, String> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["what"].as_str().unwrap().to_string(),
                    format!("{} {}", f["verdict"], f["detail"]),
                )
            })
            .collect();
        verdicts
    };
    let found = check(0);
    assert!(found["token"].contains("cc-ci-bot"), "{found:?}");
    assert!(found["create"].starts_with("\"ok\""), "{found:?}");
    assert!(
        found[&format!("{ORG}/ready")].starts_with("\"ok\""),
        "{found:?}"
    );
    let protection = &found[&format!("{ORG}/protected protection of main")];
    assert!(
        protection.starts_with("\"warn\"") && protection.contains("force"),
        "{found:?}"
    );

    // The user may not create in the org, and a mirror was archived: not ready.
    {
        let mut s = f.forge.state.lock().unwrap();
        s.no_create = true;
        s.repos.get_mut("ready").unwrap().archived = true;
    }
    let found = check(3);
    assert!(found["create"].starts_with("\"fail\""), "{found:?}");
    assert!(
        found[&format!("{ORG}/ready")].contains("archived"),
        "{found:?}"
    );

    let writes: Vec<String> = f.forge.requests()[before..]
        .iter()
        .map(|(r, _)| r.clone())
        .filter(|r| !r.starts_with("GET "))
        .collect();
    assert!(writes.is_empty(), "check-forge wrote: {writes:?}");
}

#[test]
fn a_token_without_the_issue_scope_syncs_green_with_a_housekeeping_warning() {
    let f = Fleet::new(&["matrix-synapse"]);
    assert_eq!(f.sync().0.code, 0);
    f.forge.state.lock().unwrap().scopes =
        Some(vec!["write:repository".into(), "write:organization".into()]);
    let merged = f.up("matrix-synapse").head();
    f.forge.add_pull("matrix-synapse", 3, &merged);
    f.up("matrix-synapse").commit("compose.yml", "next\n");
    let (run, v) = f.sync();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = f.result(&v, "matrix-synapse");
    assert_eq!(r["outcome"], "synced");
    let warning = r["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("required scope(s): [read:issue]"), "{r}");
    f.assert_mirrored("matrix-synapse");
}

#[test]
fn a_main_protected_from_force_pushes_is_a_refusal_that_says_what_to_change() {
    let f = Fleet::new(&["keycloak"]);
    let up = f.up("keycloak");
    up.commit("a", "1\n");
    assert_eq!(f.sync().0.code, 0);
    // Gitea's rule for a branch protected from force pushes, as its pre-receive hook applies it.
    f.pre_receive(
        "keycloak",
        "while read old new ref; do\n  [ \"$ref\" = refs/heads/main ] || continue\n  \
         git merge-base --is-ancestor \"$old\" \"$new\" || { echo 'Gitea: branch main is protected from force push' >&2; exit 1; }\ndone",
    );
    let before = refs(&f.forge.repo("keycloak"));
    up.rewrite_last("b", "2\n");
    let (run, v) = f.sync();
    assert_eq!(run.code, 11, "{}", run.stderr);
    f.assert_error(
        &v,
        "keycloak",
        "a retry will not help until that is changed on the forge",
    );
    f.assert_error(
        &v,
        "keycloak",
        "remote: Gitea: branch main is protected from force push",
    );
    assert_eq!(refs(&f.forge.repo("keycloak")), before);
    let health = f.agent(&["health"]);
    assert!(
        health.stdout.contains("protected from force push"),
        "health shows the refusal until it is fixed:\n{}",
        health.stdout
    );
}

#[test]
fn check_forge_tells_a_server_that_takes_only_the_token_header_on_git_paths() {
    let f = Fleet::new(&["jitsi"]);
    assert_eq!(f.sync().0.code, 0);
    f.forge.state.lock().unwrap().proxy_eats_basic = true;
    let run = f.agent(&["mirrors", "check-forge"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("only as an `Authorization: token` header"),
        "{}",
        run.stdout
    );
    assert_no_token(&run);
}

#[test]
fn an_upstream_without_the_branch_names_the_branches_it_has_and_the_key() {
    let f = Fleet::new(&["rallly"]);
    let up = f.up("rallly");
    // An older recipe: its branch is master.
    git(&up.bare, &["branch", "-m", "main", "master"]);
    let (run, v) = f.sync();
    assert_eq!(run.code, 11, "{}", run.stderr);
    f.assert_error(&v, "rallly", "upstream has no branch main (it has master");
    f.assert_error(
        &v,
        "rallly",
        "set branch = \"master\" in its [recipe.rallly] table",
    );
    assert!(!f.forge.repo("rallly").exists(), "no mirror made");
}

#[test]
fn status_with_an_unreadable_token_reports_each_mirror_instead_of_aborting() {
    let f = Fleet::new(&["ghost", "mumble"]);
    std::fs::remove_file(f.dir.path().join("forge-token")).unwrap();
    let status = f.agent(&["mirrors", "status"]);
    assert_eq!(status.code, 3, "{}\n{}", status.stdout, status.stderr);
    assert_eq!(
        status.stdout.matches("mirror-unreachable").count(),
        2,
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("forge.token_file"),
        "{}",
        status.stdout
    );
    let sync = f.agent(&["mirrors", "sync"]);
    assert_eq!(
        sync.code, 2,
        "a sync cannot run without it: bad input\n{}",
        sync.stderr
    );
}

// Over HTTPS, as the real host reaches both forges (issue 25).

/// Upstreams and mirrors each on a test forge behind TLS, with a CA made for the test that the
/// agent (`SSL_CERT_FILE`) and git (`GIT_SSL_CAINFO`) trust.
struct HttpsFleet {
    fleet: Fleet,
    _upstream_forge: TestForge,
    upstream_front: TlsFront,
    mirror_front: TlsFront,
    ca: TestCa,
}

impl HttpsFleet {
    fn new(names: &[&str]) -> Self {
        let fleet = Fleet::new(names);
        let ca = TestCa::make(&fleet.dir.path().join("ca"));
        let addr = |f: &TestForge| f.url.trim_start_matches("http://").parse().unwrap();
        // The upstreams Fleet made under upstream/ are served over git's smart HTTP too.
        let upstream_forge = TestForge::start(fleet.dir.path(), "upstream", "unused");
        let upstream_front = TlsFront::start(&ca, addr(&upstream_forge));
        let mirror_front = TlsFront::start(&ca, addr(&fleet.forge));
        let config = std::fs::read_to_string(&fleet.config).unwrap();
        let config = config
            .replace(&fleet.forge.url, &mirror_front.url)
            .replace("allow_insecure = true\n", "");
        std::fs::write(&fleet.config, config).unwrap();
        let mut enrollment = format!(
            "[defaults]\nupstream = \"{}/upstream/{{recipe}}.git\"\n",
            upstream_front.url
        );
        for n in names {
            enrollment.push_str(&format!("\n[recipe.{n}]\n"));
        }
        std::fs::write(fleet.dir.path().join("enrollment.toml"), enrollment).unwrap();
        Self {
            fleet,
            _upstream_forge: upstream_forge,
            upstream_front,
            mirror_front,
            ca,
        }
    }

    fn sync(&self) -> (Run, serde_json::Value) {
        let config = self.fleet.config.to_str().unwrap();
        let ca = self.ca.ca_pem.as_path();
        let run = common::agent_env(
            None,
            &["--config", config, "--format", "json", "mirrors", "sync"],
            &[("SSL_CERT_FILE", ca), ("GIT_SSL_CAINFO", ca)],
        );
        let v = serde_json::from_str(&run.stdout).unwrap_or(serde_json::Value::Null);
        (run, v)
    }

    fn handshakes(&self) -> (usize, usize) {
        (
            self.upstream_front.handshakes(),
            self.mirror_front.handshakes(),
        )
    }
}

#[test]
fn over_https_an_idle_sync_takes_one_tls_handshake_per_forge_and_asks_the_api_nothing() {
    let names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    let h = HttpsFleet::new(&names);
    let (run, _) = h.sync();
    assert_eq!(
        run.code, 0,
        "the cold sync over HTTPS: {}\n{}",
        run.stderr, run.stdout
    );
    for n in names {
        h.fleet.assert_mirrored(n);
    }

    let (up_before, mirror_before) = h.handshakes();
    let requests_before = h.fleet.forge.requests().len();
    let (run, v) = h.sync();
    assert_eq!(run.code, 0, "{}", run.stderr);
    for n in names {
        assert_eq!(h.fleet.result(&v, n)["outcome"], "in-sync", "{n}");
    }
    let (up, mirror) = h.handshakes();
    assert_eq!(
        (up - up_before, mirror - mirror_before),
        (1, 1),
        "one TLS connection to each forge for {} recipes",
        names.len()
    );
    let asked: Vec<String> = h.fleet.forge.requests()[requests_before..]
        .iter()
        .map(|(r, _)| r.clone())
        .collect();
    assert_eq!(asked.len(), names.len(), "{asked:?}");
    assert!(
        asked.iter().all(
            |r| r.starts_with("GET /") && r.ends_with(".git/info/refs?service=git-upload-pack")
        ),
        "an idle sync reads each mirror's refs and asks the forge's API nothing: {asked:?}"
    );
    assert_no_token(&run);

    // `mirrors status` asks both sides live, the same way: one connection to the upstreams.
    let config = h.fleet.config.to_str().unwrap();
    let ca = h.ca.ca_pem.as_path();
    let (up_before, _) = h.handshakes();
    let status = common::agent_env(
        None,
        &["--config", config, "mirrors", "status"],
        &[("SSL_CERT_FILE", ca), ("GIT_SSL_CAINFO", ca)],
    );
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    assert_eq!(h.handshakes().0 - up_before, 1, "{}", status.stdout);

    // A change upstream is found by the same listing and synced; the rest stay as they are.
    h.fleet.up("charlie").commit("compose.yml", "v2\n");
    let before = h.fleet.forge.requests().len();
    let (run, v) = h.sync();
    let charlie_listings = h.fleet.forge.requests()[before..]
        .iter()
        .filter(|(r, _)| {
            r == "GET /recipe-maintainers/charlie.git/info/refs?service=git-upload-pack"
        })
        .count();
    assert_eq!(
        charlie_listings, 1,
        "the changed mirror's refs are read once, not again by git"
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(h.fleet.result(&v, "charlie")["outcome"], "synced");
    assert_eq!(h.fleet.result(&v, "alpha")["outcome"], "in-sync");
    h.fleet.assert_mirrored("charlie");
}
