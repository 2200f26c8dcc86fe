//! `git ls-remote` output: any text is parsed or refused with the offending line, never a panic;
//! what is accepted holds only object ids.
#![no_main]

use cc_ci_agent::git::RefSet;
use libfuzzer_sys::fuzz_target;

fn is_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(set) = RefSet::parse(text, "main") {
        assert!(set.branch.as_deref().is_none_or(is_oid));
        for (name, tag) in &set.tags {
            assert!(!name.is_empty());
            assert!(is_oid(&tag.oid) && is_oid(tag.commit()), "{name}: {tag:?}");
        }
    }
});
