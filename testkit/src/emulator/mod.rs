//! An emulated NixOS host under a directory: stand-ins for `nixos-rebuild`, `switch-to-configuration`
//! (with `dry-activate`), `nix-env`, `nix store diff-closures`, `systemctl` and `systemd-run` that
//! follow the real programs' contract (store paths, `system-N-link` generations, exit 4 for failed
//! units, transient timers that fire unless stopped, the reports' line formats).
//! Used by the tests and by the demo (`cc-ci-demo`), where there is no NixOS to deploy to; the NixOS VM
//! tests cover the real programs.
//!
//! A system is described by a text file, `host/<name>.conf` in the flake directory:
//! `unit NAME STATE [KEY=VALUE]` per unit, and optionally `build-fail REASON` or `activate-exit N`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use cc_ci_agent::host::generation;
use cc_ci_agent::process::Cmd;

const COMMON: &str = include_str!("common.sh");
const PROGRAMS: [(&str, &str); 6] = [
    ("nixos-rebuild", include_str!("nixos-rebuild.sh")),
    (
        "switch-to-configuration",
        include_str!("switch-to-configuration.sh"),
    ),
    ("nix-env", include_str!("nix-env.sh")),
    ("nix", include_str!("nix.sh")),
    ("systemctl", include_str!("systemctl.sh")),
    ("systemd-run", include_str!("systemd-run.sh")),
];

#[derive(Debug, Clone)]
pub struct EmulatedHost {
    pub root: PathBuf,
}

impl EmulatedHost {
    /// Lays out a host under `root` and boots generation 1 from `initial` (a system description).
    pub fn create(root: &Path, initial: &str) -> Result<Self> {
        let root = root.to_path_buf();
        if root.to_string_lossy().contains(['\'', '\n']) {
            bail!(
                "the emulated host's directory must not contain quotes or newlines: {}",
                root.display()
            );
        }
        let bin = root.join("bin");
        for dir in [
            &bin,
            &root.join("nix/store"),
            &root.join("nix/var/nix/profiles"),
            &root.join("run"),
        ] {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        for (name, body) in PROGRAMS {
            let path = bin.join(name);
            let script = format!(
                "#!/usr/bin/env bash\nHOST='{}'\n{COMMON}{body}",
                root.display()
            );
            fs::write(&path, script)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        }
        let host = Self { root };
        let seed = host.root.join("seed");
        fs::create_dir_all(seed.join("host"))?;
        // Built under the name deploys use, so the same description is the same store path.
        fs::write(seed.join("host/cc-ci.conf"), initial)?;
        Cmd::new(bin.join("nixos-rebuild"))
            .args(["build", "--flake", &format!("{}#cc-ci", seed.display())])
            .current_dir(&seed)
            .run()?;
        let system = generation::resolve_store_path(&seed.join("result"))?;
        Cmd::new(bin.join("nix-env"))
            .arg("--profile")
            .arg(host.profile())
            .arg("--set")
            .arg(&system)
            .run()?;
        let booted = Cmd::new(system.join("bin/switch-to-configuration"))
            .arg("switch")
            .output()?;
        if !matches!(booted.code(), Some(0) | Some(4)) {
            bail!("the emulated host did not boot: {}", booted.stderr);
        }
        Ok(host)
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.root.join("bin").join(name)
    }

    pub fn profile(&self) -> PathBuf {
        self.root.join("nix/var/nix/profiles/system")
    }

    /// The `[deploy]` keys that point the agent at this host.
    pub fn deploy_settings(&self) -> String {
        format!(
            "profile = {:?}\ncurrent_system = {:?}\nnixos_rebuild = {:?}\nnix_env = {:?}\nnix = {:?}\nsystemctl = {:?}\nsystemd_run = {:?}\n",
            self.profile(),
            self.root.join("run/current-system"),
            self.bin("nixos-rebuild"),
            self.bin("nix-env"),
            self.bin("nix"),
            self.bin("systemctl"),
            self.bin("systemd-run"),
        )
    }

    pub fn running(&self) -> Result<PathBuf> {
        Ok(generation::resolve_store_path(
            &self.root.join("run/current-system"),
        )?)
    }

    pub fn boot_default(&self) -> Result<PathBuf> {
        Ok(generation::resolve_store_path(
            &self.root.join("run/boot-default"),
        )?)
    }

    pub fn generation(&self) -> Result<generation::Generation> {
        Ok(generation::current(&self.profile())?)
    }

    pub fn unit_state(&self, unit: &str) -> String {
        fs::read_to_string(self.root.join("run/units").join(unit))
            .map_or("inactive".into(), |s| s.trim().to_string())
    }

    /// Every `switch-to-configuration` call so far: (mode, system).
    pub fn activations(&self) -> Vec<(String, PathBuf)> {
        fs::read_to_string(self.root.join("log/activations"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                l.split_once(' ')
                    .map(|(m, p)| (m.to_string(), PathBuf::from(p)))
            })
            .collect()
    }

    /// Lines of the transient-timer log: `armed NAME SECS`, `stopped NAME`, `fired NAME`.
    pub fn timer_log(&self) -> Vec<String> {
        fs::read_to_string(self.root.join("log/timers"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}
