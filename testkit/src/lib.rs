//! What cc-ci's tests and demo need and a production host must never ship: an emulated NixOS host
//! ([`emulator`]) and the demo ([`demo`], the `cc-ci-demo` binary). The agent's integration tests
//! use it as a dev-dependency; the `cc-ci-agent` binary holds none of it.

pub mod demo;
pub mod emulator;
pub mod forge;
