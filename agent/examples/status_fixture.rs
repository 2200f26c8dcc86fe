//! Makes a CI host's state for tests/bench/status_page.py: N enrolled recipes with M judged runs
//! each (one in three partly broken, tiers recorded), through the ledger's own API.
//!
//!     cargo run --release --example status_fixture -- DIR 1000 50

use std::path::PathBuf;

use cc_ci_agent::ledger::{Ledger, RunEnd, TierRow};

fn tier(name: &str, green: bool) -> TierRow {
    TierRow {
        tier: name.into(),
        expected: true,
        reported: true,
        tests: 12,
        failures: u64::from(!green),
        errors: 0,
        skipped: 1,
        seconds: 3.5,
        green,
        first_failure: (!green).then(|| format!("{name}.test_{name}::test_restore_keeps_posts")),
        first_message: (!green).then(|| "AssertionError: posts lost after restore".to_string()),
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(&args[1]);
    let recipes: usize = args[2].parse()?;
    let runs: usize = args[3].parse()?;
    std::fs::create_dir_all(&dir)?;
    let mut enrollment =
        String::from("[defaults]\nupstream = \"file:///nonexistent/{recipe}.git\"\n");
    let mut ledger = Ledger::open(&dir.join("state"), &cc_ci_agent::clock::Clock::system())?;
    for r in 0..recipes {
        let name = format!("recipe-{r:04}");
        enrollment.push_str(&format!("\n[recipe.{name}]\ncanonical = true\n"));
        let queue = ledger.queue(&name, "main")?;
        for n in 0..runs {
            let tag = format!("1.{n}.0+2.{n}");
            let commit = format!("{:040x}", r * 1000 + n);
            let run = ledger.run_start(queue, &commit, &tag, &tag, None, "sweep")?;
            let broken = (r + n) % 3 == 0;
            let tiers = ["install", "upgrade", "backup", "functional"]
                .iter()
                .map(|t| tier(t, !(broken && *t == "backup")))
                .collect();
            let end = RunEnd {
                result: if broken {
                    cc_ci_agent::ledger::RunResult::Red
                } else {
                    cc_ci_agent::ledger::RunResult::Green
                },
                greenness: if broken { 0.25 } else { 0.0 },
                exit_code: Some(i32::from(broken)),
                detail: if broken {
                    "degree 0.25: backup ✗".into()
                } else {
                    "every tier green".into()
                },
                tiers,
                log_tail: Some("$ ci\nall tiers ran\n".into()),
            };
            ledger.run_finish(run, &end)?;
        }
    }
    std::fs::write(dir.join("enrollment.toml"), enrollment)?;
    std::fs::write(
        dir.join("agent.toml"),
        "enrollment_file = \"enrollment.toml\"\nstate_dir = \"state\"\n\n[forge]\nkind = \"local\"\npath = \"mirrors\"\n",
    )?;
    Ok(())
}
