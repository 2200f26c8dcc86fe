//! agent.toml: any text gives a config or located errors, never a panic.
#![no_main]

use std::path::Path;

use cc_ci_agent::settings::config::Config;
use cc_ci_agent::settings::source::TomlSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/fuzz/agent.toml");
    let Ok(source) = TomlSource::parse(path, text.to_string()) else {
        return;
    };
    if let Err(invalid) = Config::from_source(&source) {
        assert!(!invalid.0.is_empty(), "refused without a reason");
        for e in &invalid.0 {
            assert_eq!(e.file, path);
        }
    }
});
