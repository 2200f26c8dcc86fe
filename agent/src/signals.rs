//! Stopping on SIGTERM, SIGINT or SIGHUP: the children's process groups get SIGTERM, then the agent
//! exits with 128 + the signal's number, as a shell would report it.
//!
//! Nothing else needs doing. Every job's state survives `kill -9` at any instant (transactions,
//! atomic writes, a journal the next run settles), and the agent lock is an `flock` that the kernel
//! releases on exit. What a signal adds over `kill -9` is that the agent's children stop with it
//! instead of running on orphaned. Under systemd, `systemctl stop` signals the whole control group
//! anyway; run by hand, this is what stops a CI script's `sleep` or a `git fetch`.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::process::signal_children;

/// Starts the thread that waits for a stop signal. Without it (if the handler cannot be
/// installed), signals keep their default action, which also stops the agent.
pub fn stop_on_signals() {
    let mut signals = match Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot handle stop signals, the default action applies: {e}");
            return;
        }
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            tracing::warn!(
                signal,
                "stopping: the job is left for the next run to settle"
            );
            signal_children(rustix::process::Signal::TERM);
            std::process::exit(128 + signal);
        }
    });
}
