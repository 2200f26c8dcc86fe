//! The agent's one clock: the wall time every record and report holds (RFC 3339 UTC seconds),
//! the monotonic time its own waits are measured on, and the pause between tries. The CLI makes
//! one ([`Clock::system`]) and passes it to every job and to the ledger, so a test can hand in a
//! clock it moves itself and the grace, interval, age and timeout rules run without real waits.
//!
//! Waits on something outside the agent stay on the operating system's clock: a child process's
//! timeout, a socket's, another process's lock or SQLite's busy wait. What is waited for there runs
//! in real time, and no clock of ours can make it let go sooner.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Where a [`Clock`] reads the time.
pub trait TimeSource: Send + Sync {
    fn wall(&self) -> SystemTime;
    fn monotonic(&self) -> Instant;
    fn sleep(&self, pause: Duration);
}

/// The time as the agent reads it; cheap to clone, one per process.
#[derive(Clone)]
pub struct Clock(Arc<dyn TimeSource>);

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

struct System;

impl TimeSource for System {
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
    fn monotonic(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, pause: Duration) {
        std::thread::sleep(pause);
    }
}

impl Clock {
    /// The operating system's clocks: what the binary runs on.
    pub fn system() -> Self {
        Self(Arc::new(System))
    }

    pub fn wall(&self) -> SystemTime {
        self.0.wall()
    }

    /// The monotonic now, for measuring the agent's own waits.
    pub fn now(&self) -> Instant {
        self.0.monotonic()
    }

    pub fn elapsed(&self, since: Instant) -> Duration {
        self.now().saturating_duration_since(since)
    }

    pub fn sleep(&self, pause: Duration) {
        self.0.sleep(pause);
    }

    /// The wall time in the form every record holds: RFC 3339, UTC, whole seconds.
    pub fn rfc3339(&self) -> String {
        humantime::format_rfc3339_seconds(self.wall()).to_string()
    }

    /// How long ago `then` was on the wall clock; `None` for a time in the future.
    pub fn age(&self, then: SystemTime) -> Option<Duration> {
        self.wall().duration_since(then).ok()
    }
}

/// A clock that moves only when told to, or by the pause a caller sleeps: the tests' clock.
#[cfg(test)]
pub mod manual {
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::{Duration, Instant, SystemTime};

    use super::{Clock, TimeSource};

    pub struct Manual {
        wall: SystemTime,
        monotonic: Instant,
        moved: Mutex<Duration>,
    }

    /// A clock at `wall`, and the handle that moves it.
    pub fn at(wall: SystemTime) -> (Clock, Arc<Manual>) {
        let manual = Arc::new(Manual {
            wall,
            monotonic: Instant::now(),
            moved: Mutex::new(Duration::ZERO),
        });
        (Clock(manual.clone()), manual)
    }

    impl Manual {
        pub fn advance(&self, by: Duration) {
            *self.moved.lock().unwrap_or_else(PoisonError::into_inner) += by;
        }

        /// How far the clock has moved since it was made.
        pub fn moved(&self) -> Duration {
            *self.moved.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    impl TimeSource for Manual {
        fn wall(&self) -> SystemTime {
            self.wall + self.moved()
        }
        fn monotonic(&self) -> Instant {
            self.monotonic + self.moved()
        }
        fn sleep(&self, pause: Duration) {
            self.advance(pause);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    #[test]
    fn a_manual_clock_moves_both_times_by_what_is_slept_and_not_otherwise() {
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (clock, hand) = super::manual::at(start);
        let t0 = clock.now();
        assert_eq!(clock.wall(), start);
        clock.sleep(Duration::from_secs(90));
        hand.advance(Duration::from_secs(30));
        assert_eq!(clock.elapsed(t0), Duration::from_secs(120));
        assert_eq!(clock.rfc3339(), "2027-01-15T08:02:00Z");
        assert_eq!(clock.age(start), Some(Duration::from_secs(120)));
        assert_eq!(
            clock.age(SystemTime::now() + Duration::from_secs(1e9 as u64)),
            None
        );
    }
}
