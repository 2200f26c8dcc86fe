fn main() -> std::process::ExitCode {
    cc_ci_agent::cli::main()
}
