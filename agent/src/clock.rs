//! The wall clock as the agent writes it: RFC 3339 UTC seconds, the form every record and report
//! holds. One place, so the ledger, the reports and the hooks agree on it (and a test clock has
//! one place to go).

use std::time::SystemTime;

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
