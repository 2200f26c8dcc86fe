//! JUnit results as recipe CI writes them: any bytes are read or refused, never a panic, and
//! what is read adds up (a tier's failures, errors and skipped tests are among its tests).
#![no_main]

use cc_ci_agent::sweep::junit::{read_bytes, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tiers) = read_bytes("fuzz.xml", data, Limits::default()) {
        for c in tiers.values() {
            assert!(c.failures + c.errors + c.skipped <= c.tests, "{c:?}");
        }
    }
});
