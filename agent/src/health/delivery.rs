//! Delivering health reports to the bridge: queued in the outbox first, sent oldest first, each
//! kept until the bridge answers 2xx. Resends carry the same id, so the bridge can drop repeats.

use std::time::Duration;

use anyhow::Result;

use crate::ledger::{Ledger, Outgoing};
use crate::secrets::Secret;

const TRIES: u32 = 3;

#[derive(Debug, Default)]
pub struct Delivery {
    pub delivered: usize,
    pub waiting: usize,
    pub last_error: Option<String>,
}

/// POSTs one report; retries server errors and timeouts with backoff, not refusals.
fn post(url: &str, token: &Secret, item: &Outgoing, timeout: Duration) -> Result<(), String> {
    let agent = crate::http::agent(timeout, 0);
    let mut pause = Duration::from_millis(500);
    let mut last = String::new();
    for attempt in 1..=TRIES {
        let sent = agent
            .post(url)
            .header("Authorization", &format!("Bearer {}", token.expose()))
            .header("Content-Type", "application/json")
            .header("X-CC-CI-Report-Id", &item.id)
            .header("X-CC-CI-Report-Seq", &item.seq.to_string())
            .send(item.body.as_str());
        let retry = match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => {
                let status = r.status().as_u16();
                last = match status {
                    401 | 403 => format!("{url} answered HTTP {status}: the bridge refused the token (bridge.token_file)"),
                    _ => format!("{url} answered HTTP {status}"),
                };
                status >= 500 || status == 408 || status == 429
            }
            Err(e) => {
                last = format!("{url}: {e}");
                true
            }
        };
        if !retry || attempt == TRIES {
            break;
        }
        std::thread::sleep(pause);
        pause *= 2;
    }
    Err(last)
}

/// Sends every waiting report in order; stops at the first that cannot be delivered, so the
/// bridge never sees them out of order.
pub fn deliver(ledger: &Ledger, url: &str, token: &Secret, timeout: Duration) -> Result<Delivery> {
    let mut result = Delivery::default();
    let waiting = ledger.outbox()?;
    for item in &waiting {
        match post(url, token, item, timeout) {
            Ok(()) => {
                ledger.outbox_delivered(item.seq)?;
                result.delivered += 1;
            }
            Err(e) => {
                ledger.outbox_failed(item.seq, &e)?;
                result.last_error = Some(e);
                break;
            }
        }
    }
    result.waiting = waiting.len() - result.delivered;
    Ok(result)
}
