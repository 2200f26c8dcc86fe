//! The two files a user writes: `agent.toml` (config) and `enrollment.toml` (enrollment).

pub mod config;
pub mod deploy;
pub mod disk;
pub mod edit;
pub mod enrollment;
pub mod mirrors;
pub mod rules;
pub mod source;
pub mod sweep;
pub mod values;

pub use source::InputError;

/// A file that failed its checks: one located error per problem found.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct Invalid(pub Vec<InputError>);
