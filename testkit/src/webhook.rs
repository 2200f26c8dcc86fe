//! Gitea's webhooks as the test forge sends them to a receiver such as the test Drone: the
//! `X-Gitea-Event` header names the event, the body is its payload (modules/structs/hook.go:
//! `PushPayload` with `ref`, `before`, `after`, `head_commit.message`, `repository.full_name`;
//! `PullRequestPayload` with `action`, `number`, `pull_request` (`title`, `body`, `head.ref`,
//! `head.sha`), `repository.full_name`). Gitea delivers from a queue after the event
//! (services/webhook/deliver.go), so delivery here is on a thread of its own: a push has been
//! answered before its hook arrives. A push to a pull request's head branch is `synchronized`
//! (modules/structs/hook.go `HookIssueSynchronized`), a new one `opened`.

// A stand-in for tests: a set-up that cannot work panics at once, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Sends `payload` as a Gitea `event` to every url, in the background.
pub fn deliver(urls: &[String], event: &str, payload: serde_json::Value) {
    for url in urls {
        let (url, event, payload) = (url.clone(), event.to_string(), payload.clone());
        std::thread::spawn(move || {
            let _ = crate::bridge::agent()
                .post(&url)
                .header("X-Gitea-Event", &event)
                .send_json(payload);
        });
    }
}

pub fn push(
    full_name: &str,
    branch: &str,
    (before, after): (&str, &str),
    message: &str,
) -> serde_json::Value {
    serde_json::json!({
        "ref": format!("refs/heads/{branch}"),
        "before": before,
        "after": after,
        "head_commit": { "id": after, "message": message },
        "repository": { "full_name": full_name },
    })
}

pub fn pull_request(
    full_name: &str,
    action: &str,
    (number, title): (u64, &str),
    (head_ref, head_sha): (&str, &str),
) -> serde_json::Value {
    serde_json::json!({
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "title": title,
            "body": "",
            "head": { "ref": head_ref, "sha": head_sha },
        },
        "repository": { "full_name": full_name },
    })
}
