//! Release tags: a tag is accepted only with build metadata, and precedence over accepted tags
//! is a total order that agrees with itself.
#![no_main]

use std::cmp::Ordering;

use cc_ci_agent::settings::rules::check_release_tag;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = text.split_once('\n').unwrap_or((text, "1.0.0+1"));
    let (Ok(va), vb) = (check_release_tag(a), check_release_tag(b)) else {
        return;
    };
    assert!(
        !va.build.is_empty(),
        "{a:?} accepted without build metadata"
    );
    assert_eq!(va.cmp_precedence(&va), Ordering::Equal);
    if let Ok(vb) = vb {
        assert_eq!(va.cmp_precedence(&vb), vb.cmp_precedence(&va).reverse());
    }
});
