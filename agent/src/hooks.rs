//! `[[hooks]]`: operators' commands run on events (argv, no shell), with the event as JSON on
//! stdin, so they can page someone or post to chat without patching the agent. A hook that fails
//! is logged and never fails the job.

use serde_json::{json, Value};

use crate::clock::Clock;
use crate::process::Cmd;
use crate::settings::config::{Config, HookEvent};

/// Runs every hook that wants `event`; returns how many failed (they are logged, nothing more).
pub fn fire(config: &Config, clock: &Clock, event: HookEvent, details: Value) -> usize {
    let event = event.as_str();
    let host = config.path.display().to_string();
    let mut payload = json!({ "event": event, "at": clock.rfc3339(), "host": host });
    if let (Some(p), Value::Object(d)) = (payload.as_object_mut(), details) {
        p.extend(d);
    }
    let stdin = payload.to_string().into_bytes();
    let mut failed = 0;
    for hook in config
        .hooks
        .iter()
        .filter(|h| h.events.is_empty() || h.events.iter().any(|e| e.as_str() == event))
    {
        let Some((program, args)) = hook.command.split_first() else {
            continue;
        };
        match Cmd::new(program)
            .clean_env(&hook.pass_env)
            .args(args)
            .stdin(stdin.clone())
            .timeout(hook.timeout)
            .run()
        {
            Ok(_) => tracing::debug!(event, hook = program, "hook ran"),
            Err(e) => {
                failed += 1;
                tracing::warn!(event, "hook failed (the job goes on): {e}");
            }
        }
    }
    failed
}
