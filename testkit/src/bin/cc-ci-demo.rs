//! `cc-ci-demo [--dir DIR]`: the whole system on this machine (see the `demo` module).
//!
//! The demo runs the agent as a separate process per step. The agent lives in this binary too
//! (the library, linked in), reached as `cc-ci-demo agent ARGS...`: `cargo run -p cc-ci-demo`
//! then needs nothing built beforehand, and the agent's own binary stays without the demo.

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os();
    let me = args.next();
    let mut rest: Vec<_> = args.collect();
    if rest.first().is_some_and(|a| a == "agent") {
        rest.remove(0);
        let argv = std::iter::once(std::ffi::OsString::from("cc-ci-agent")).chain(rest);
        return cc_ci_agent::cli::main_from(argv);
    }
    cc_ci_testkit::demo::main(me.into_iter().chain(rest))
}
