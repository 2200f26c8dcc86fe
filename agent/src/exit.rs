//! Exit codes: one per outcome, stable, documented in docs/exit-codes.md. Never renumber; add.

use crate::error::{Busy, Damaged, InputError, Invalid, Unusable};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done; nothing to report.
    Success = 0,
    /// An unexpected failure (I/O, a bug); the message says what.
    Failure = 1,
    /// Bad input: command line, `agent.toml` or `enrollment.toml`. Nothing was written.
    BadInput = 2,
    /// A check ran and found problems (e.g. `enrollment check`: an enrolled recipe has no suite).
    Problems = 3,
    /// Another agent job holds the lock, or a file changed underneath. Try again later.
    Busy = 4,
    /// A CI build is in flight (`busy_check`); `--force` overrides.
    CiBusy = 5,
    /// deploy: the flake checkout has uncommitted changes.
    DirtyTree = 6,
    /// deploy: the flake checkout is not at its upstream branch's commit, or upstream is unreachable.
    StaleTree = 7,
    /// deploy: the build failed; nothing was activated.
    BuildFailed = 8,
    /// deploy: the new system was activated, did not verify, and the host is back on the previous
    /// generation, which verified.
    RolledBack = 9,
    /// deploy or rollback: returning to the previous generation did not verify either. The host
    /// needs a person.
    RollbackFailed = 10,
    /// mirrors sync: some recipes failed (the others were synced); per-recipe results say which.
    SomeFailed = 11,
    /// canonical base: the recipe has neither an upgrade_base nor a canonical.
    NoBase = 12,
    /// health: something wants a look (a warning), but every enrolled recipe can be tested.
    Degraded = 13,
    /// health: an enrolled recipe cannot be tested as it stands.
    Unhealthy = 14,
    Damaged = 15,
    /// deploy --pull: HEAD is not an ancestor of its upstream branch (local commits, or upstream
    /// rewrote the branch); nothing was pulled or deployed.
    Diverged = 16,
    /// deploy: `deploy.allowed_signers` is set and the commit to deploy carries no good signature
    /// by one of them; nothing was pulled or deployed.
    Unsigned = 17,
    /// probe: a recipe's `!testme` went unanswered: a stage (picked up, build started,
    /// reported) did not happen within `probe.timeout`; the report names it.
    NotTriggerable = 18,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

pub fn classify(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if cause.is::<Invalid>() || cause.is::<InputError>() || cause.is::<Unusable>() {
            return Exit::BadInput;
        }
        if cause.is::<Busy>() {
            return Exit::Busy;
        }
        if cause.is::<Damaged>() {
            return Exit::Damaged;
        }
    }
    Exit::Failure
}

#[cfg(test)]
mod tests {
    /// docs/exit-codes.md lists every code once, in order, from 0 to the highest: a reader
    /// looking for 12 finds it between 11 and 13.
    #[test]
    fn the_documented_codes_are_every_code_in_order() {
        let doc = include_str!("../../docs/exit-codes.md");
        let codes: Vec<u8> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| ")?.split(' ').next()?.parse().ok())
            .collect();
        let highest = super::Exit::NotTriggerable as u8;
        assert_eq!(codes, (0..=highest).collect::<Vec<u8>>());
    }
}
