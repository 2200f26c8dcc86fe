//! enrollment.toml: any text gives an enrollment or located errors, never a panic; an accepted
//! enrollment renders a POLL_REPOS of valid, sorted, distinct names.
#![no_main]

use std::path::Path;

use cc_ci_agent::settings::enrollment::Enrollment;
use cc_ci_agent::settings::rules::check_recipe_name;
use cc_ci_agent::settings::source::TomlSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/fuzz/enrollment.toml");
    let source = match TomlSource::parse(path, text.to_string()) {
        Ok(s) => s,
        Err(e) => {
            assert_eq!(e.file, path);
            return;
        }
    };
    match Enrollment::from_source(&source) {
        Ok(e) => {
            let repos = e.poll_repos();
            let names: Vec<&str> = repos.split(',').filter(|n| !n.is_empty()).collect();
            for n in &names {
                assert!(check_recipe_name(n).is_ok(), "{n:?} in POLL_REPOS");
            }
            assert!(
                names.windows(2).all(|w| w[0] < w[1]),
                "POLL_REPOS not sorted and distinct: {repos}"
            );
        }
        Err(invalid) => {
            assert!(!invalid.0.is_empty(), "refused without a reason");
            for e in &invalid.0 {
                assert_eq!(e.file, path);
            }
        }
    }
});
