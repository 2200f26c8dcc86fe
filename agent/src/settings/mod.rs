//! The two files a user writes: `agent.toml` (config) and `enrollment.toml` (enrollment).

pub mod config;
pub mod deploy;
pub mod disk;
pub mod edit;
pub mod enrollment;
pub mod mirrors;
pub mod probe;
pub mod rules;
pub mod source;
pub mod sweep;
pub mod values;
