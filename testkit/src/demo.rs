//! The demo (`cc-ci-demo`): the whole system on one machine, in one directory. It builds a small fleet
//! of upstream recipe repositories with release tags, a local forge, a flake checkout with an
//! enrollment, and an emulated NixOS host, then runs the agent itself, step by step, as an operator
//! would. Only the host (see `emulator`) and CI (a stand-in command) are stand-ins. Its last act
//! probes two recipes through the test kit's HTTP forge, bridge and Drone: one proven, one whose
//! `!testme` the bridge never sees.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Parser;

use crate::emulator::EmulatedHost;
use cc_ci_agent::exit::Exit;
use cc_ci_agent::output::Format;
use cc_ci_agent::process::Cmd;
use cc_ci_agent::say;

/// The whole system on this machine: a fleet, a forge, an emulated host, every step.
#[derive(Debug, Parser)]
#[command(
    name = "cc-ci-demo",
    after_help = "Exit: 0 when every step gave the code it should, 1 when one did not, 2 for bad input. See README.md."
)]
pub struct Args {
    /// Where to build it (default: a new temporary directory, kept afterwards).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// How the agent's steps print on stdout.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
}

/// Parses the arguments, runs the demo, and says what failed.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    let args: Args = match cc_ci_agent::cli::parse(args) {
        Ok(args) => args,
        Err(code) => return code,
    };
    match run(args) {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            cc_ci_agent::exit::classify(&e).into()
        }
    }
}

/// The demo's second act: an HTTP forge, a Drone and a bridge, for the probe.
/// Fields drop in order: the bridge stops before the servers it talks to.
struct ProbeAct {
    bridge: std::cell::RefCell<Option<crate::bridge::TestBridge>>,
    forge: crate::forge::TestForge,
    drone: crate::drone::TestDrone,
    root: PathBuf,
    config: PathBuf,
}

const ORG: &str = "recipe-maintainers";

impl ProbeAct {
    fn start(root: &Path) -> Result<Self> {
        let forge = crate::forge::TestForge::start(&root.join("forge"), ORG, "demo-forge-token");
        forge.add_user("bridge-bot", "demo-bridge-token");
        forge.add_user("drone-bot", "demo-drone-forge-token");
        let drone = crate::drone::TestDrone::start(&forge.url, "demo-drone-forge-token");
        for name in ["custom-html", "plausible", "hedgedoc"] {
            drone.activate(&format!("{ORG}/{name}"));
        }
        // Activation installs Drone's webhook on the forge, as on a real host: Drone hears
        // every push and pull request, and the proof must still be the bridge's.
        forge
            .state
            .lock()
            .map_err(|_| anyhow::anyhow!("forge state"))?
            .hooks
            .push(drone.hook_url());
        let token = root.join("forge-token");
        std::fs::write(&token, "demo-forge-token\n")?;
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let config = root.join("agent-probe.toml");
        std::fs::write(
            &config,
            format!(
                "# The probe act: the same fleet, mirrored on an HTTP forge that has pull requests.\n\
                 enrollment_file = \"flake/enrollment.toml\"\nstate_dir = \"probe-state\"\ntests_dir = \"suites\"\n\n\
                 [forge]\nkind = \"gitea\"\nurl = \"{}\"\norg = \"{ORG}\"\ntoken_file = \"forge-token\"\nallow_insecure = true\n\n\
                 [health]\npoll_repos_file = \"poll-repos\"\n\n\
                 [probe]\ntimeout = \"2s\"\npoll_interval = \"200ms\"\nmin_interval = \"0s\"\n",
                forge.url
            ),
        )?;
        Ok(Self {
            forge,
            drone,
            bridge: std::cell::RefCell::new(None),
            root: root.to_path_buf(),
            config,
        })
    }

    /// Starts the bridge, polling `names` (and says so where health reads POLL_REPOS).
    fn bridge_polls(&self, names: &[&str]) {
        // The mirrors were just made: Gitea's queue has marked them non-empty since.
        self.forge.settle();
        let _ = std::fs::write(self.root.join("poll-repos"), names.join(","));
        *self.bridge.borrow_mut() = Some(crate::bridge::TestBridge::start(
            crate::bridge::BridgeSpec {
                forge_url: self.forge.url.clone(),
                org: ORG.into(),
                forge_token: "demo-bridge-token".into(),
                polls: names.iter().map(|n| n.to_string()).collect(),
                trigger: "!testme".into(),
                answer: crate::bridge::Answer::React,
                drone_url: self.drone.url.clone(),
                drone_token: self.drone.user_token.clone(),
                interval: std::time::Duration::from_millis(100),
            },
        ));
    }
}

const SYSTEM: &str = "unit cc-ci-bridge.service active POLL_REPOS=custom-html,hedgedoc,plausible\nunit cc-ci-enrollment-check.service active\n";

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    Ok(Cmd::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "cc-ci demo")
        .env("GIT_AUTHOR_EMAIL", "demo@cc-ci.invalid")
        .env("GIT_COMMITTER_NAME", "cc-ci demo")
        .env("GIT_COMMITTER_EMAIL", "demo@cc-ci.invalid")
        .run()?)
}

/// A bare repository with `main` as its default branch.
fn init_bare(root: &Path, path: &Path) -> Result<()> {
    git(
        root,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            &path.to_string_lossy(),
        ],
    )
    .map(|_| ())
}

/// An upstream recipe: a bare repository and release tags, one commit each.
fn upstream(root: &Path, name: &str, tags: &[&str]) -> Result<()> {
    let bare = root.join("upstream").join(format!("{name}.git"));
    let work = root.join("work").join(name);
    init_bare(root, &bare)?;
    git(root, &["init", "-q", "-b", "main", &work.to_string_lossy()])?;
    for (i, tag) in tags.iter().enumerate() {
        std::fs::write(
            work.join("compose.yml"),
            format!("# {name} release {i}\nversion: '3.8'\n"),
        )?;
        git(&work, &["add", "compose.yml"])?;
        git(&work, &["commit", "-q", "-m", &format!("release {tag}")])?;
        git(&work, &["tag", "-a", tag, "-m", tag])?;
    }
    git(
        &work,
        &["push", "-q", &bare.to_string_lossy(), "main", "--tags"],
    )?;
    Ok(())
}

/// Commits and pushes `conf` as the system the next deploy builds.
/// A volume directory of `mib` MiB, last used `days` ago.
fn warm_volume(root: &Path, name: &str, mib: usize, days: u64) -> Result<()> {
    let dir = root.join("volumes").join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("db"), vec![0u8; mib << 20])?;
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86400);
    for p in [dir.join("db"), dir] {
        std::fs::File::open(&p)?.set_modified(then)?;
    }
    Ok(())
}

fn commit_system(flake: &Path, conf: &str, message: &str) -> Result<()> {
    std::fs::write(flake.join("host/cc-ci.conf"), conf)?;
    git(flake, &["commit", "-q", "-am", message])?;
    git(flake, &["push", "-q"])?;
    Ok(())
}

/// The demo's stand-in CI: `ci.sh RECIPE VERSION RESULTS`. It leaves a warm volume and writes
/// the JUnit results pytest would (docs/sweep.md, "Greenness"): every tier passes, but for
/// custom-html, whose backup test fails, so it installs and upgrades but is not promoted.
const CI_SCRIPT: &str = r#"echo "testing $1 $2 cold"
mkdir -p "VOLUMES/$1_$2" && head -c 1048576 /dev/zero > "VOLUMES/$1_$2/db"
failure=""
if [ "$1" = custom-html ]; then
  failure='<failure message="AssertionError: the restored site has no index.html">assert restored("index.html")</failure>'
fi
cat > "$3/junit.xml" <<XML
<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest"><testcase classname="install.test_install" name="test_serves_index" time="0.4"/><testcase classname="upgrade.test_upgrade" name="test_upgrade_keeps_content" time="0.9"/><testcase classname="backup.test_backup" name="test_restore_keeps_site" time="0.7">$failure</testcase></testsuite></testsuites>
XML
test -z "$failure"
"#;

fn build(root: &Path) -> Result<PathBuf> {
    for d in [
        "upstream",
        "work",
        "suites/custom-html",
        "suites/plausible",
        "flake/host",
        "volumes",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    upstream(root, "custom-html", &["1.0.0+1.25.3", "1.1.0+1.27.0"])?;
    upstream(root, "plausible", &["2.0.0+v2.0.0", "3.0.1+v2.1.0"])?;
    upstream(root, "hedgedoc", &["1.0.0+1.9.9"])?;

    let flake = root.join("flake");
    std::fs::write(
        flake.join("enrollment.toml"),
        format!(
            "# The demo fleet. Upstreams are local repositories standing in for git.coopcloud.tech.\n\
             [defaults]\nupstream = \"file://{}/upstream/{{recipe}}.git\"\n\n\
             [recipe.custom-html]\ncanonical = true\n\n[recipe.plausible]\ncanonical = true\n\n\
             [recipe.hedgedoc]\ntests = \"exempt\"\nreason = \"suite being written\"\n",
            root.display()
        ),
    )?;
    std::fs::write(flake.join("host/cc-ci.conf"), SYSTEM)?;
    init_bare(root, &root.join("flake.git"))?;
    git(&flake, &["init", "-q", "-b", "main"])?;
    git(&flake, &["add", "-A"])?;
    git(&flake, &["commit", "-q", "-m", "the demo host"])?;
    git(
        &flake,
        &[
            "remote",
            "add",
            "origin",
            &root.join("flake.git").to_string_lossy(),
        ],
    )?;
    git(&flake, &["push", "-q", "-u", "origin", "main"])?;

    // Warm volumes left by earlier runs, days old: what the disk budget is about.
    for (name, mib, days) in [
        ("custom-html_1.0.0+1.25.3", 1, 20),
        ("plausible_2.0.0+v2.0.0", 2, 10),
    ] {
        warm_volume(root, name, mib, days)?;
    }

    let host = EmulatedHost::create(&root.join("host"), SYSTEM)?;
    let ci = root.join("ci.sh");
    std::fs::write(
        &ci,
        CI_SCRIPT.replace("VOLUMES", &root.join("volumes").to_string_lossy()),
    )?;
    let config = root.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "# The demo's agent configuration: a local forge, a stand-in CI, an emulated host.\n\
             enrollment_file = \"flake/enrollment.toml\"\nstate_dir = \"state\"\ntests_dir = \"suites\"\n\n\
             [bridge]\nunit = \"cc-ci-bridge\"\n\n[forge]\nkind = \"local\"\npath = \"mirrors\"\n\n\
             [sweep]\n# Stand-in CI (ci.sh): leaves a 1 MiB warm volume and writes JUnit results; custom-html's backup fails.\n\
             command = [\"sh\", \"{ci}\", \"{{recipe}}\", \"{{version}}\", \"{{results}}\"]\n\
             tiers = [\"install\", \"upgrade\", \"backup\"]\n\
             canonical_export_dir = \"canonical\"\n\n\
             [disk]\nbudget = \"4M\"\ngrace = \"1h\"\n[disk.volumes]\nkind = \"directory\"\nroot = \"volumes\"\n\n\
             [deploy]\nflake = \"{}#cc-ci\"\nconfirm_timeout = \"15s\"\nverify_timeout = \"3s\"\nverify_interval = \"500ms\"\n{}",
            flake.display(),
            host.deploy_settings(),
            ci = ci.display(),
        ),
    )?;
    Ok(config)
}

fn run(args: Args) -> Result<Exit> {
    let root = match args.dir {
        Some(d) => {
            if d.exists()
                && std::fs::read_dir(&d)
                    .map(|mut e| e.next().is_some())
                    .unwrap_or(true)
            {
                return Err(cc_ci_agent::error::Unusable(format!(
                    "{} is not empty: give --dir an empty or new directory",
                    d.display()
                ))
                .into());
            }
            d
        }
        None => std::env::temp_dir().join(format!("cc-ci-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let root = std::path::absolute(&root)?;
    say!("cc-ci demo in {}", root.display());
    say!(
        "Stand-ins: the NixOS host is emulated under host/ (nixos-rebuild, switch-to-configuration,\n\
         systemctl, systemd-run), and CI is a shell script writing JUnit results: every tier\n\
         passes but custom-html's backup. Everything else is the real agent, run as a separate\n\
         process per step.\n"
    );
    let config = build(&root)?;
    // The agent is in this binary too: `cc-ci-demo agent ARGS` (see src/bin/cc-ci-demo.rs).
    let exe = std::env::current_exe().context("cannot find the demo's own executable")?;
    let flake = root.join("flake");
    let format = match args.format {
        Format::Json => "json",
        Format::Human => "human",
    };

    let step_with = |config: &Path, title: &str, args: &[&str], expect: u8| -> Result<()> {
        say!("== {title}\n$ cc-ci-agent {}", args.join(" "));
        let status = std::process::Command::new(&exe)
            .arg("agent")
            .arg("--config")
            .arg(config)
            .args(["--format", format])
            .args(args)
            .current_dir(&root)
            .env("CC_CI_LOG", "warn")
            .status()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        let code = status.code().unwrap_or(-1);
        say!(
            "(exit {code}{})\n",
            if code == i32::from(expect) {
                ", as expected"
            } else {
                ""
            }
        );
        if code != i32::from(expect) {
            bail!("step {title:?} exited {code}, expected {expect}");
        }
        Ok(())
    };
    let step = |title: &str, args: &[&str], expect: u8| step_with(&config, title, args, expect);

    step(
        "check the enrollment and the test suites",
        &["enrollment", "check"],
        0,
    )?;
    step("create and sync the mirrors", &["mirrors", "sync"], 0)?;
    step(
        "sweep: test each canonical recipe's newest release cold",
        &["sweep"],
        0,
    )?;
    step(
        "custom-html's release, tier by tier: installs and upgrades, but its backup fails",
        &["history", "custom-html"],
        0,
    )?;
    step("the canonicals", &["canonical", "list"], 0)?;
    commit_system(
        &flake,
        &format!("{SYSTEM}unit cc-ci-mirrors.timer active\n"),
        "add the mirror timer",
    )?;
    step("deploy a good change", &["deploy"], Exit::Success as u8)?;
    commit_system(
        &flake,
        &format!("{SYSTEM}unit cc-ci-mirrors.timer active\nunit cc-ci-sweep.service failed\n"),
        "a change that breaks a unit",
    )?;
    step(
        "deploy a change that breaks a unit: rolled back",
        &["deploy"],
        Exit::RolledBack as u8,
    )?;
    step("the deploy journal", &["deploy", "history"], 0)?;
    // 5 MiB of warm volumes on a 4 MiB budget: the oldest unprotected go, the canonical stays.
    step(
        "gc: keep the warm volumes under the disk budget",
        &["gc"],
        Exit::Success as u8,
    )?;
    // hedgedoc is exempt from tests and custom-html's newest release is partly broken (its
    // backup tier): degraded.
    step("health", &["health"], Exit::Degraded as u8)?;

    // The proof health can only infer: `!testme` on a mirror starts CI and reports back.
    let probing = ProbeAct::start(&root)?;
    say!(
        "Now the proof. Stand-ins: a forge speaking Gitea's API over HTTP on {}, a bridge that\n\
         polls it for `!testme` on plausible only (its POLL_REPOS), and a Drone whose builds set\n\
         commit statuses on the forge.\n",
        probing.forge.url
    );
    let probe_config = probing.config.clone();
    step_with(
        &probe_config,
        "mirror the fleet on the forge",
        &["mirrors", "sync"],
        0,
    )?;
    probing.bridge_polls(&["plausible"]);
    step_with(
        &probe_config,
        "probe: one recipe proven, one whose `!testme` the bridge never sees",
        &["probe", "plausible", "custom-html"],
        Exit::NotTriggerable as u8,
    )?;
    step_with(
        &probe_config,
        "health, with the proof",
        &["health"],
        Exit::Unhealthy as u8,
    )?;
    drop(probing);
    let site = root.join("status-page");
    step(
        "the status page: the fleet for maintainers, in a browser",
        &["status-page", "--out", &site.to_string_lossy()],
        0,
    )?;
    say!("Open file://{}", site.join("index.html").display());
    // A command that works as printed: this binary by its full path, running the agent.
    say!(
        "Done. Look around: {} agent --config {} state status",
        exe.display(),
        config.display()
    );
    Ok(Exit::Success)
}
