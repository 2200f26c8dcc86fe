//! What cc-ci's tests and demo need and a production host must never ship: an emulated NixOS host
//! ([`emulator`]); the neighbours a CI host talks to, over real HTTP on 127.0.0.1, each following
//! its real program's source ([`forge`], Gitea's API and git over HTTP; [`bridge`], polling for
//! `!testme`; [`drone`], builds that set commit statuses); and the demo ([`demo`], the
//! `cc-ci-demo` binary). The agent's integration tests use it as a dev-dependency; the
//! `cc-ci-agent` binary holds none of it.

pub mod bridge;
pub mod contract;
pub mod demo;
pub mod drone;
pub mod emulator;
pub mod forge;
pub mod slow_http;
pub mod tls;
pub mod webhook;
