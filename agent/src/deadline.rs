//! A bound on a whole piece of work (one recipe's sync or status): every call inside it gets the
//! smaller of its own timeout and what is left, and no retry waits past it. Without one, a
//! hanging server costs each call's timeout once per try, and the tries add up.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Option<Instant>,
    budget: Duration,
    /// The setting the budget comes from, for the message when it runs out.
    what: &'static str,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{what} ({}s) ran out", budget.as_secs())]
pub struct Expired {
    pub what: &'static str,
    pub budget: Duration,
}

impl Deadline {
    pub fn after(budget: Duration, what: &'static str) -> Self {
        Self {
            at: Instant::now().checked_add(budget),
            budget,
            what,
        }
    }

    /// No bound beyond each call's own timeout.
    pub fn none() -> Self {
        Self {
            at: None,
            budget: Duration::MAX,
            what: "no deadline",
        }
    }

    fn expired(&self) -> Expired {
        Expired {
            what: self.what,
            budget: self.budget,
        }
    }

    /// `timeout`, cut to what is left; whether it was cut; an error when nothing is left.
    pub fn cap(&self, timeout: Duration) -> Result<(Duration, bool), Expired> {
        let Some(at) = self.at else {
            return Ok((timeout, false));
        };
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.expired());
        }
        Ok((timeout.min(left), left < timeout))
    }

    /// Whether waiting `pause` still leaves time to try again.
    pub fn allows(&self, pause: Duration) -> bool {
        self.at
            .is_none_or(|at| Instant::now().checked_add(pause).is_some_and(|t| t < at))
    }

    /// What is left; `None` without a bound.
    pub fn left(&self) -> Option<Duration> {
        self.at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    pub fn what(&self) -> &'static str {
        self.what
    }
}

/// The pauses between tries of a call that failed for a reason worth another try: `first`, then
/// twice as long each time, for at most `tries` more tries. Git calls and forge API calls share it.
#[derive(Debug, Clone)]
pub struct Backoff {
    pause: Duration,
    left: u32,
}

impl Backoff {
    pub fn new(first: Duration, tries: u32) -> Self {
        Self {
            pause: first,
            left: tries,
        }
    }

    /// The pause before the next try; `None` when no tries are left.
    pub fn next_pause(&mut self) -> Option<Duration> {
        self.left = self.left.checked_sub(1)?;
        let pause = self.pause;
        self.pause = self.pause.saturating_mul(2);
        Some(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_cuts_timeouts_and_refuses_once_passed() {
        let none = Deadline::none();
        assert_eq!(
            none.cap(Duration::from_secs(5)),
            Ok((Duration::from_secs(5), false))
        );
        assert!(none.allows(Duration::from_secs(3600)));

        let d = Deadline::after(Duration::from_secs(60), "mirrors.recipe_timeout");
        let (t, cut) = d.cap(Duration::from_secs(600)).unwrap_or_default();
        assert!(cut && t <= Duration::from_secs(60) && t > Duration::from_secs(50));
        assert_eq!(
            d.cap(Duration::from_secs(1)),
            Ok((Duration::from_secs(1), false))
        );
        assert!(d.allows(Duration::from_secs(1)) && !d.allows(Duration::from_secs(61)));

        let gone = Deadline::after(Duration::ZERO, "mirrors.recipe_timeout");
        let e = gone.cap(Duration::from_secs(1)).err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("mirrors.recipe_timeout (0s) ran out")
        );
    }

    #[test]
    fn backoff_doubles_and_stops_after_its_tries() {
        let mut b = Backoff::new(Duration::from_millis(500), 3);
        let pauses: Vec<_> = std::iter::from_fn(|| b.next_pause()).collect();
        assert_eq!(
            pauses,
            [500, 1000, 2000].map(Duration::from_millis),
            "then no more"
        );
        assert_eq!(Backoff::new(Duration::from_secs(1), 0).next_pause(), None);
    }
}
