//! The seam between the deploy's state machine and the host it changes: what a deploy asks of a
//! NixOS machine, and of the world around it (the checkout, CI, the checks after activation).
//! [`Host`] and [`Live`] are the real ones; the state machine's unit tests put fakes here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use super::preflight::{self, Pulled, Refused, Tree};
use super::verify::{self, Expectations, Verdict};
use crate::busy::{self, Busy};
use crate::host::changes::Changes;
use crate::host::{Activation, Generation, Host, Mode};
use crate::settings::config::Config;
use crate::settings::deploy::FlakeRef;

/// What the deploy does to the host.
pub trait Machine {
    /// The system profile's current generation.
    fn current_generation(&self) -> Result<Generation>;
    /// The system running now, which a `test` activation changes.
    fn running_system(&self) -> Result<PathBuf>;
    fn failed_units(&self) -> Result<BTreeSet<String>>;
    fn reset_failed(&self, units: &[String]) -> Result<()>;
    fn unit_state(&self, unit: &str) -> Result<String>;
    fn unit_environment(&self, unit: &str) -> Result<BTreeMap<String, String>>;
    /// Builds the flake's system in `workdir`; its store path.
    fn build(&self, flake: &FlakeRef, workdir: &Path) -> Result<PathBuf>;
    fn activate(&self, system: &Path, mode: Mode) -> Result<Activation>;
    /// A new profile generation for `system`.
    fn set_profile(&self, system: &Path) -> Result<Generation>;
    fn switch_generation(&self, number: u64) -> Result<Generation>;
    /// Arms the dead-man switch: `argv` runs after `delay` unless [`Machine::disarm`] is called.
    fn arm(&self, unit: &str, delay: Duration, description: &str, argv: &[String]) -> Result<()>;
    fn disarm(&self, unit: &str) -> Result<()>;
    /// What switching from `from` to `to` changes: each part `None` when it cannot be read.
    fn changes(&self, from: &Path, to: &Path) -> Changes;
}

impl Machine for Host {
    fn current_generation(&self) -> Result<Generation> {
        Host::current_generation(self)
    }
    fn running_system(&self) -> Result<PathBuf> {
        Host::running_system(self)
    }
    fn failed_units(&self) -> Result<BTreeSet<String>> {
        Host::failed_units(self)
    }
    fn reset_failed(&self, units: &[String]) -> Result<()> {
        Host::reset_failed(self, units)
    }
    fn unit_state(&self, unit: &str) -> Result<String> {
        Host::unit_state(self, unit)
    }
    fn unit_environment(&self, unit: &str) -> Result<BTreeMap<String, String>> {
        Host::unit_environment(self, unit)
    }
    fn build(&self, flake: &FlakeRef, workdir: &Path) -> Result<PathBuf> {
        Ok(Host::build(self, flake, workdir)?)
    }
    fn activate(&self, system: &Path, mode: Mode) -> Result<Activation> {
        Host::activate(self, system, mode)
    }
    fn set_profile(&self, system: &Path) -> Result<Generation> {
        Host::set_profile(self, system)
    }
    fn switch_generation(&self, number: u64) -> Result<Generation> {
        Host::switch_generation(self, number)
    }
    fn arm(&self, unit: &str, delay: Duration, description: &str, argv: &[String]) -> Result<()> {
        self.arm_timer(unit, delay, description, argv)
    }
    fn disarm(&self, unit: &str) -> Result<()> {
        self.cancel_timer(unit)
    }
    fn changes(&self, from: &Path, to: &Path) -> Changes {
        let noted = |what: &str, e: anyhow::Error| tracing::warn!("{what} cannot be shown: {e:#}");
        Changes {
            closure: self
                .closure_diff(from, to)
                .map_err(|e| noted("the closure diff", e))
                .ok(),
            units: self
                .dry_activate(to)
                .map_err(|e| noted("the unit changes", e))
                .ok(),
        }
    }
}

/// What the deploy asks of the world around the host.
pub trait Checks {
    /// `deploy --pull`: the checkout fast-forwarded to its upstream branch, or why not.
    fn pull(&self, flake: &FlakeRef) -> Result<Pulled, Refused>;
    /// Pre-flight: the checkout to build, or why it must not be.
    fn tree(&self, flake: &FlakeRef) -> Result<Tree, Refused>;
    /// Whether a CI build is in flight; `None` when no busy check is configured.
    fn ci(&self) -> Option<Busy>;
    /// Rounds of checks until the host is healthy or time is up, judged against the units that
    /// were failing before.
    fn verify(&self, failed_before: &BTreeSet<String>) -> Verdict;
}

/// The real checks, as `[deploy]` configures them.
pub struct Live<'a> {
    pub config: &'a Config,
    pub machine: &'a dyn Machine,
    /// What the rounds of checks wait on.
    pub clock: &'a crate::clock::Clock,
    /// Each recipe's health before anything changed; a recipe failed afterwards that was not
    /// before is a regression.
    pub health_before: Option<BTreeMap<String, crate::health::Verdict>>,
}

impl Checks for Live<'_> {
    fn pull(&self, flake: &FlakeRef) -> Result<Pulled, Refused> {
        preflight::pull(&flake.dir, self.config.deploy.allowed_signers.as_deref())
    }

    fn tree(&self, flake: &FlakeRef) -> Result<Tree, Refused> {
        let d = &self.config.deploy;
        preflight::tree(&flake.dir, d.require_synced, d.allowed_signers.as_deref())
    }

    fn ci(&self) -> Option<Busy> {
        let watched = busy::watched(self.config);
        self.config
            .deploy
            .busy_check
            .as_ref()
            .map(|check| busy::check(check, &watched))
    }

    fn verify(&self, failed_before: &BTreeSet<String>) -> Verdict {
        let d = &self.config.deploy;
        let exp = Expectations {
            config_path: &self.config.path,
            failed_before,
            health_before: self.health_before.as_ref(),
            clock: self.clock,
        };
        verify::until_ok(self.machine, &exp, d.verify_timeout, d.verify_interval)
    }
}
