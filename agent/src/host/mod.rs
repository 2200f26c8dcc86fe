//! The NixOS host contract: the only place that knows the command lines of `nixos-rebuild`,
//! `switch-to-configuration`, `nix-env`, `systemctl`, `systemd-run` and `docker` ([`docker`]). Every path comes from
//! `[deploy]`, so tests can point them at an emulated host that follows the same contract.

pub mod changes;
pub mod docker;
pub mod generation;
pub mod systemd;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

pub use generation::Generation;

use crate::process::{Cmd, ProcessError};
use crate::settings::deploy::{DeploySettings, FlakeRef};

/// What `switch-to-configuration` reported. It exits 4 when any unit is failed after activation,
/// including units that were failing before: callers judge by the failed-unit difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// Exit 0.
    Clean,
    /// Exit 4: activated, some units failed.
    UnitsFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Activate now, boot default unchanged.
    Test,
    /// Make it the boot default, do not activate.
    Boot,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Test => "test",
            Mode::Boot => "boot",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Host {
    pub profile: PathBuf,
    pub current_system: PathBuf,
    nixos_rebuild: PathBuf,
    nix_env: PathBuf,
    /// Optional: only the closure diff needs it.
    nix: Option<PathBuf>,
    systemctl: PathBuf,
    systemd_run: PathBuf,
    build_timeout: Duration,
}

/// Finds a configured program, or the one on `PATH`.
fn program(configured: &Option<PathBuf>, name: &str) -> Result<PathBuf> {
    match configured {
        Some(p) if p.is_file() => Ok(p.clone()),
        Some(p) => bail!("{name} not found at {} (deploy.{})", p.display(), name.replace('-', "_")),
        None => crate::process::which(name).with_context(|| {
            format!(
                "{name} is not on PATH: this does not look like a NixOS host (set deploy.{} to its path)",
                name.replace('-', "_")
            )
        }),
    }
}

/// The environment `unit` runs with, asked of the configured `systemctl` (else `PATH`'s) without
/// the rest of a NixOS host: what `health` needs on any machine.
pub fn unit_environment(s: &DeploySettings, unit: &str) -> Result<BTreeMap<String, String>> {
    show_environment(&program(&s.systemctl, "systemctl")?, unit)
}

fn show_environment(systemctl: &Path, unit: &str) -> Result<BTreeMap<String, String>> {
    let out = Cmd::new(systemctl)
        .args(["show", "--property=Environment", "--value", "--", unit])
        .timeout(Duration::from_secs(30))
        .run()?;
    Ok(systemd::parse_environment(&out))
}

impl Host {
    pub fn from_settings(s: &DeploySettings) -> Result<Self> {
        Ok(Self {
            profile: s.profile.clone(),
            current_system: s.current_system.clone(),
            nixos_rebuild: program(&s.nixos_rebuild, "nixos-rebuild")?,
            nix_env: program(&s.nix_env, "nix-env")?,
            nix: program(&s.nix, "nix").ok(),
            systemctl: program(&s.systemctl, "systemctl")?,
            systemd_run: program(&s.systemd_run, "systemd-run")?,
            build_timeout: s.build_timeout,
        })
    }

    pub fn current_generation(&self) -> Result<Generation> {
        generation::current(&self.profile).with_context(|| {
            format!(
                "cannot read the system profile {} (is this a NixOS host?)",
                self.profile.display()
            )
        })
    }

    pub fn generations(&self) -> Result<Vec<Generation>> {
        Ok(generation::list(&self.profile)?)
    }

    /// The system running now (`/run/current-system`), which `test` activations change.
    pub fn running_system(&self) -> Result<PathBuf> {
        Ok(generation::resolve_store_path(&self.current_system)?)
    }

    /// `nixos-rebuild build --flake REF` in `workdir`; returns the built system's store path.
    pub fn build(&self, flake: &FlakeRef, workdir: &Path) -> Result<PathBuf, ProcessError> {
        let _ = std::fs::remove_file(workdir.join("result"));
        Cmd::new(&self.nixos_rebuild)
            .args(["build", "--flake", &flake.to_arg()])
            .current_dir(workdir)
            .timeout(self.build_timeout)
            .run()?;
        let result = workdir.join("result");
        generation::resolve_store_path(&result).map_err(|e| ProcessError::Failed {
            program: format!("nixos-rebuild build --flake {}", flake.to_arg()),
            status: "finished".into(),
            code: Some(0),
            stderr: format!("but left no system: {e}"),
        })
    }

    /// `<system>/bin/switch-to-configuration MODE`.
    pub fn activate(&self, system: &Path, mode: Mode) -> Result<Activation> {
        let program = system.join("bin/switch-to-configuration");
        let cmd = Cmd::new(&program)
            .arg(mode.arg())
            .timeout(Duration::from_secs(900));
        let done = cmd.output()?;
        match done.code() {
            Some(0) => Ok(Activation::Clean),
            Some(4) => Ok(Activation::UnitsFailed),
            _ => Err(crate::process::failed(cmd.display(), &done).into()),
        }
    }

    /// `nix store diff-closures FROM TO`: the packages a switch adds, removes and changes.
    pub fn closure_diff(&self, from: &Path, to: &Path) -> Result<changes::ClosureDiff> {
        let nix = self
            .nix
            .as_ref()
            .context("no nix here (set deploy.nix): the closure diff cannot be shown")?;
        let out = Cmd::new(nix)
            .args([
                "--extra-experimental-features",
                "nix-command",
                "store",
                "diff-closures",
            ])
            .arg(from)
            .arg(to)
            .timeout(Duration::from_secs(120))
            .run()?;
        Ok(changes::parse_diff_closures(&out))
    }

    /// `<system>/bin/switch-to-configuration dry-activate`: the units a switch would stop,
    /// restart, reload and start. It reports on stderr.
    pub fn dry_activate(&self, system: &Path) -> Result<changes::UnitChanges> {
        let program = system.join("bin/switch-to-configuration");
        let cmd = Cmd::new(&program)
            .arg("dry-activate")
            .timeout(Duration::from_secs(300));
        let done = cmd.output()?;
        if done.code() != Some(0) {
            return Err(crate::process::failed(cmd.display(), &done).into());
        }
        Ok(changes::parse_dry_activate(&format!(
            "{}\n{}",
            done.stdout, done.stderr
        )))
    }

    /// `nix-env --profile P --set SYSTEM`: a new generation pointing at `system`.
    pub fn set_profile(&self, system: &Path) -> Result<Generation> {
        Cmd::new(&self.nix_env)
            .arg("--profile")
            .arg(&self.profile)
            .arg("--set")
            .arg(system)
            .timeout(Duration::from_secs(300))
            .run()?;
        self.current_generation()
    }

    /// `nix-env --profile P --switch-generation N`.
    pub fn switch_generation(&self, number: u64) -> Result<Generation> {
        Cmd::new(&self.nix_env)
            .arg("--profile")
            .arg(&self.profile)
            .args(["--switch-generation", &number.to_string()])
            .timeout(Duration::from_secs(300))
            .run()?;
        self.current_generation()
    }

    pub fn failed_units(&self) -> Result<BTreeSet<String>> {
        let out = Cmd::new(&self.systemctl)
            .args([
                "list-units",
                "--failed",
                "--plain",
                "--no-legend",
                "--no-pager",
                "--full",
            ])
            .timeout(Duration::from_secs(30))
            .run()?;
        Ok(systemd::parse_unit_list(&out).into_iter().collect())
    }

    /// Forgets the failed state of units, so a later look judges them afresh.
    pub fn reset_failed(&self, units: &[String]) -> Result<()> {
        if units.is_empty() {
            return Ok(());
        }
        Cmd::new(&self.systemctl)
            .args(["reset-failed", "--"])
            .args(units)
            .timeout(Duration::from_secs(30))
            .run()?;
        Ok(())
    }

    /// `systemctl is-active UNIT`: "active", "failed", "inactive", "activating", ...
    pub fn unit_state(&self, unit: &str) -> Result<String> {
        let done = Cmd::new(&self.systemctl)
            .args(["is-active", "--", unit])
            .timeout(Duration::from_secs(30))
            .output()?;
        Ok(done.stdout.trim().to_string())
    }

    /// The environment of a unit as systemd runs it.
    pub fn unit_environment(&self, unit: &str) -> Result<BTreeMap<String, String>> {
        show_environment(&self.systemctl, unit)
    }

    /// A transient timer that runs `argv` after `delay` unless stopped: it lives in systemd, not
    /// in this process, so it fires even if the agent is killed.
    pub fn arm_timer(
        &self,
        unit: &str,
        delay: Duration,
        description: &str,
        argv: &[String],
    ) -> Result<()> {
        Cmd::new(&self.systemd_run)
            .arg(format!("--unit={unit}"))
            .arg(format!("--on-active={}s", delay.as_secs()))
            .arg("--timer-property=AccuracySec=1s")
            .arg(format!("--description={description}"))
            .arg("--property=Type=oneshot")
            .arg("--")
            .args(argv)
            .timeout(Duration::from_secs(30))
            .run()?;
        Ok(())
    }

    /// Stops a transient timer armed by [`Host::arm_timer`]; a timer already gone is fine.
    pub fn cancel_timer(&self, unit: &str) -> Result<()> {
        let done = Cmd::new(&self.systemctl)
            .args(["stop", "--", &format!("{unit}.timer")])
            .timeout(Duration::from_secs(30))
            .output()?;
        // 5: no such unit (already fired and gone, or never armed).
        if !matches!(done.code(), Some(0) | Some(5)) {
            return Err(
                crate::process::failed(format!("systemctl stop {unit}.timer"), &done).into(),
            );
        }
        Ok(())
    }
}
