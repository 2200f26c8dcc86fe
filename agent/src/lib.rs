//! cc-ci-agent: runs a Co-op Cloud recipe CI host. See README.md and docs/.

pub mod busy;
pub mod cli;
pub mod context;
pub mod database;
pub mod deadline;
pub mod deploy;
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
pub mod process;
pub mod published;
pub mod secrets;
pub mod settings;
pub mod signals;
pub mod sweep;
