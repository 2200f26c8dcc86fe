//! Forge answers: Gitea's pull request pages and the docker CLI's volume listings. Anything is
//! decoded or refused, never a panic; a decoded pull request's head is a git object id.
#![no_main]

use cc_ci_agent::forge::decode_pulls;
use cc_ci_agent::host::docker::{parse_inspect, parse_size, parse_system_df};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(page) = decode_pulls(text) {
        for p in page.pulls {
            assert!(p.head_sha.len() == 40 || p.head_sha.len() == 64);
            assert!(p.head_sha.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
    let _ = parse_inspect(text);
    let _ = parse_system_df(text);
    let _ = parse_size(text);
});
