//! Reads a results directory as the sweep does and prints its tiers: what tests/bench/junit.py
//! times against `cat` of the same bytes.
//!
//!     cargo run --release --example junit_read -- DIR

use cc_ci_agent::sweep::junit::{read_dir, Limits, TierFrom};

fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: junit_read DIR");
        return std::process::ExitCode::from(2);
    };
    match read_dir(
        std::path::Path::new(&dir),
        Limits::default(),
        TierFrom::Auto,
    ) {
        Ok(tiers) => {
            for (name, c) in tiers {
                println!(
                    "{name}: {} tests, {} failed, {} errors, {} skipped",
                    c.tests, c.failures, c.errors, c.skipped
                );
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            println!("unreadable: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
