//! cc-ci-agent: runs a Co-op Cloud recipe CI host. See README.md and docs/.

// No function of the product over `too-many-lines-threshold` (clippy.toml: 80); tests and the
// test kit are held to their own judgement.
#![warn(clippy::too_many_lines)]

pub mod bridge;
pub mod busy;
pub mod cli;
pub mod clock;
pub mod context;
pub mod database;
pub mod deadline;
pub mod deploy;
pub mod drone;
pub mod enrollment;
pub mod error;
pub mod exit;
pub mod forge;
pub mod fsutil;
pub mod gc;
pub mod git;
pub mod health;
pub mod hooks;
pub mod host;
pub mod http;
pub mod ledger;
pub mod mirrors;
pub mod output;
pub mod privilege;
pub mod probe;
pub mod process;
pub mod progress;
pub mod published;
pub mod schemas;
pub mod secrets;
pub mod settings;
pub mod signals;
pub mod status;
pub mod sweep;
