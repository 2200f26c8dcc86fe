//! JUnit results as recipe CI writes them: any bytes are read or refused, never a panic, and
//! what is read adds up (a tier's failures, errors and skipped tests are among its tests), by
//! each tier rule (the first byte picks it).
#![no_main]

use cc_ci_agent::sweep::junit::{read_bytes, Limits, TierFrom};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((pick, xml)) = data.split_first() else {
        return;
    };
    let rule = [TierFrom::Auto, TierFrom::Suite, TierFrom::Classname, TierFrom::File]
        [usize::from(*pick) % 4];
    if let Ok(tiers) = read_bytes("fuzz.xml", xml, Limits::default(), rule) {
        for c in tiers.values() {
            assert!(c.failures + c.errors + c.skipped <= c.tests, "{c:?}");
        }
    }
});
