//! Writes every command's JSON answer schema (cc_ci_agent::schemas) into a directory, one
//! `<command>.schema.json` each, and those of the files the agent publishes
//! (`health-report.schema.json`, `status.schema.json`): docs/schemas/ holds them.
//!
//!     cargo run --example answer_schemas -- docs/schemas

use cc_ci_agent::schemas::{commands, file_name, published};

fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: answer_schemas DIR");
        return std::process::ExitCode::from(2);
    };
    let dir = std::path::PathBuf::from(dir);
    for (command, schema) in commands().into_iter().chain(published()) {
        let path = dir.join(file_name(command));
        let written = serde_json::to_string_pretty(&schema)
            .map_err(std::io::Error::other)
            .and_then(|text| std::fs::write(&path, text + "\n"));
        if let Err(e) = written {
            eprintln!("cannot write {}: {e}", path.display());
            return std::process::ExitCode::from(1);
        }
    }
    std::process::ExitCode::SUCCESS
}
