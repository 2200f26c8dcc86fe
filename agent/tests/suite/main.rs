//! The agent's integration tests, one binary (one link, and the test threads shared by all):
//! each module drives the built `cc-ci-agent` in temporary directories against real git, real
//! HTTP on 127.0.0.1 and a real database. `support/` holds the servers they use, `common/` the
//! helpers that run the agent.

// Test crate: a panic is how a failure is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

mod bad_input;
mod corpus;
mod deploy;
mod enrollment_cli;
mod faults;
mod gc;
mod greenness;
mod health;
mod hostile;
mod json_answers;
mod layout;
mod mirrors;
mod nix_parity;
mod probe;
mod probe_drone;
mod producers;
mod schemas;
mod screens;
mod secrets;
mod state_cli;
mod status_page;
mod sweep;
