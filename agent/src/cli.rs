//! Top-level arguments, logging set-up, dispatch to each command family, and exit codes.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::clock::Clock;
use crate::context::Context;
use crate::error::Invalid;
use crate::exit::{classify, Exit};
use crate::output::{Format, Output};

#[derive(Debug, Parser)]
#[command(
    name = "cc-ci-agent",
    version,
    about = "Runs a Co-op Cloud recipe CI host"
)]
pub struct Cli {
    /// Agent configuration file.
    #[arg(long, global = true, env = "CC_CI_AGENT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Output format on stdout. Logs always go to stderr.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    format: Format,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read, check and edit enrollment.toml: which recipes the host tracks.
    #[command(
        after_help = "Exit: 0 ok, 2 invalid input (nothing written), 3 problems found (check), 4 the file changed underneath. See docs/enrollment.md. Every code: docs/exit-codes.md."
    )]
    Enrollment(crate::enrollment::Args),
    /// Inspect the agent's state database and lock.
    #[command(
        after_help = "Exit: 0 ok, 15 damaged state. See docs/reliability.md. Every code: docs/exit-codes.md."
    )]
    State(crate::database::Args),
    /// Build, activate, verify and commit the host's configuration, or roll back.
    #[command(
        after_help = "Exit: 0 deployed, 2 bad input, 4 busy, 5 CI busy, 6 dirty tree, 7 stale tree, 8 build failed, 9 rolled back, 10 rollback failed. See docs/deploy.md. Every code: docs/exit-codes.md."
    )]
    Deploy(crate::deploy::Args),
    /// Return to an earlier system generation, verified like a deploy.
    #[command(
        after_help = "Exit: 0 rolled back and verified, 2 bad input, 4 busy, 10 rollback failed. See docs/deploy.md. Every code: docs/exit-codes.md."
    )]
    Rollback(crate::deploy::RollbackArgs),
    /// Keep each enrolled recipe's mirror equal to upstream.
    #[command(
        after_help = "Exit: 0 in sync or synced (status: all in sync; check-forge: ready), 2 bad input, 3 problems (status, check-forge), 4 busy, 11 some recipes failed. See docs/mirrors.md. Every code: docs/exit-codes.md."
    )]
    Mirrors(crate::mirrors::Args),
    /// Test each canonical recipe's newest release cold; promote it to canonical when green.
    #[command(
        after_help = "Exit: 0 done, 2 bad input, 4 busy, 5 CI busy, 11 some recipes could not be judged. See docs/sweep.md. Every code: docs/exit-codes.md."
    )]
    Sweep(crate::sweep::Args),
    /// The canonicals: list, show, the upgrade base, import.
    #[command(
        after_help = "Exit: 0 ok, 2 bad input, 12 no base (canonical base). See docs/sweep.md. Every code: docs/exit-codes.md."
    )]
    Canonical(crate::sweep::CanonicalArgs),
    /// A recipe's CI runs, newest first.
    #[command(
        after_help = "Exit: 0 ok, 2 an unknown recipe. See docs/sweep.md. Every code: docs/exit-codes.md."
    )]
    History(crate::sweep::HistoryArgs),
    /// Keep the warm volumes under the disk budget; never a canonical's, an in-use or a pinned one.
    #[command(
        after_help = "Exit: 0 within budget, 2 bad input, 4 busy, 11 some deletions failed. See docs/disk.md. Every code: docs/exit-codes.md."
    )]
    Gc(crate::gc::Args),
    /// Is every enrolled recipe testable? Per recipe and for the host; writes health.json.
    #[command(
        after_help = "Exit: 0 healthy, 13 degraded, 14 unhealthy, 2 bad input. See docs/health.md. Every code: docs/exit-codes.md."
    )]
    Health(crate::health::Args),
    /// Prove that `!testme` on each recipe's mirror starts CI and reports back.
    #[command(
        after_help = "Exit: 0 proven (or deferred while CI is busy, or not due), 2 bad input, 4 busy, 11 some probes could not be made, 18 some recipes not triggerable. See docs/probe.md. Every code: docs/exit-codes.md."
    )]
    Probe(crate::probe::Args),
    /// Write the fleet's status page, a static site, from the ledger.
    #[command(
        after_help = "Exit: 0 written, 2 bad input. See docs/status-page.md. Every code: docs/exit-codes.md."
    )]
    StatusPage(crate::status::Args),
    /// What the agent runs of itself as another user (the CI user's side of a sweep).
    #[command(
        hide = true,
        subcommand,
        after_help = "Exit: 0 done. Not for people. Every code: docs/exit-codes.md."
    )]
    Internal(crate::sweep::Internal),
}

pub fn main() -> std::process::ExitCode {
    main_from(std::env::args_os())
}

/// Parses a command line, or prints clap's message and gives the exit code for it: usage errors
/// are bad input (2, clap's own convention too), `--help` and `--version` success.
pub fn parse<T: clap::Parser>(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<T, std::process::ExitCode> {
    T::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            Exit::BadInput
        } else {
            Exit::Success
        }
        .into()
    })
}

/// [`main`] for an argument list of its own (the first is the program's name).
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    crate::process::note_this_program(&args);
    let cli: Cli = match parse(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_tracing();
    let ctx = Context::new(Output::new(cli.format), Clock::system(), cli.config);
    // Before any thread starts: the switch of user is the whole process's.
    if let Err(err) = as_the_state_directorys_owner(&ctx, &cli.command) {
        let code = classify(&err);
        report(&err, code, ctx.out.is_json());
        return code.into();
    }
    crate::signals::stop_on_signals();
    // The jobs whose last step rewrites the status page, when `[status_page] dir` is set.
    let changes_the_ledger = matches!(
        cli.command,
        Command::Mirrors(_)
            | Command::Sweep(_)
            | Command::Probe(_)
            | Command::Gc(_)
            | Command::Deploy(_)
            | Command::Rollback(_)
    );
    let result = match cli.command {
        Command::Enrollment(args) => crate::enrollment::run(&ctx, args),
        Command::State(args) => crate::database::run(&ctx, args),
        Command::Deploy(args) => crate::deploy::run(&ctx, args),
        Command::Rollback(args) => crate::deploy::rollback(&ctx, args),
        Command::Mirrors(args) => crate::mirrors::run(&ctx, args),
        Command::Sweep(args) => crate::sweep::run(&ctx, args),
        Command::Canonical(args) => crate::sweep::canonical(&ctx, args),
        Command::History(args) => crate::sweep::history(&ctx, args),
        Command::Gc(args) => crate::gc::run(&ctx, args),
        Command::Health(args) => crate::health::run(&ctx, args),
        Command::Probe(args) => crate::probe::run(&ctx, args),
        Command::StatusPage(args) => crate::status::run(&ctx, args),
        Command::Internal(command) => crate::sweep::internal(command),
    };
    if changes_the_ledger {
        if let Ok(config) = ctx.config() {
            refresh_the_page(&ctx, &config);
        }
    }
    match result {
        Ok(code) => code.into(),
        Err(err) => {
            let code = classify(&err);
            report(&err, code, ctx.out.is_json());
            code.into()
        }
    }
}

impl Command {
    /// Whether the command reads or writes the state directory, and so runs as its owner when
    /// root starts it. `deploy` and `rollback` are root's own jobs (they activate systems); what
    /// they write there goes through the directory's descriptor, or a child that has switched.
    fn works_in_the_state_directory(&self) -> bool {
        !matches!(
            self,
            Command::Enrollment(_)
                | Command::Deploy(_)
                | Command::Rollback(_)
                | Command::Internal(_)
        )
    }

    /// Whether it runs recipe CI, as `[sweep] run_as` when that is set.
    fn runs_ci(&self) -> bool {
        matches!(self, Command::Sweep(args) if args.runs_ci())
    }
}

/// Root never acts as root in the state directory (docs/reliability.md): a job root starts
/// there reads its secrets as root, then becomes the directory's owner for good, so that
/// nothing it reads or creates there is root's to give away. A directory root owns (or that is
/// not there yet) leaves root as it is.
fn as_the_state_directorys_owner(ctx: &Context, command: &Command) -> anyhow::Result<()> {
    if command.runs_ci() {
        if let Some(socket) = ctx
            .config()
            .ok()
            .and_then(|c| c.sweep.keeper_socket.clone())
        {
            // A keeper service runs CI as run_as: whoever this is, it needs no root.
            crate::process::keeper::connect(&socket)
                .map_err(|e| crate::error::Unusable(format!("{e:#}")))?;
        }
    }
    if !crate::privilege::is_root() || !command.works_in_the_state_directory() {
        return Ok(());
    }
    // A configuration that does not load is the command's to report, as it would be.
    let Ok(config) = ctx.config() else {
        return Ok(());
    };
    let Some((uid, gid)) = crate::privilege::owner_of(&config.state_dir) else {
        return Ok(());
    };
    let owner = crate::privilege::Account::by_uid(uid, gid).map_err(crate::error::Unusable)?;
    if command.runs_ci() && !crate::process::keeper::present() {
        start_the_keeper(&config, &owner)?;
    }
    if uid == 0 {
        return Ok(());
    }
    crate::secrets::read_ahead(&config);
    crate::privilege::become_account(&owner).map_err(|e| {
        crate::error::Unusable(format!(
            "{} belongs to {} (uid {uid}), and root runs jobs there only as that user: {e:#}",
            config.state_dir.display(),
            owner.name
        ))
    })?;
    // Root's working directory (`/root`, a checkout under a private directory) may be closed to
    // the owner, and every git it runs would fail to stat it: then the state directory is.
    // (Its path, not `.`: git stats it by path, and a directory above may be closed.)
    let usable = std::env::current_dir().and_then(std::fs::metadata);
    if usable.is_err() {
        std::env::set_current_dir(&config.state_dir).map_err(|e| {
            crate::error::Unusable(format!(
                "cannot enter {} as {}: {e}",
                config.state_dir.display(),
                owner.name
            ))
        })?;
    }
    tracing::info!(
        "started as root: running as {} (uid {uid}), the owner of {}",
        owner.name,
        config.state_dir.display()
    );
    Ok(())
}

/// The last step of a job that changed the ledger, when `[status_page] dir` is set: the page
/// again. After root's own jobs (deploy, rollback) it is written by a child that has become the
/// state directory's owner: root writes nothing in that user's directory.
fn refresh_the_page(ctx: &Context, config: &crate::settings::config::Config) {
    if config.status_page.is_none() {
        return;
    }
    let owner = crate::privilege::owner_of(&config.state_dir)
        .filter(|(uid, _)| crate::privilege::is_root() && *uid != 0);
    let Some((uid, gid)) = owner else {
        crate::status::refresh(config, &ctx.clock);
        return;
    };
    let args = [
        std::ffi::OsStr::new("--config"),
        ctx.config_path().as_os_str(),
        std::ffi::OsStr::new("status-page"),
    ];
    let written = crate::privilege::Account::by_uid(uid, gid)
        .map_err(anyhow::Error::msg)
        .and_then(|owner| {
            let cmd = crate::process::this_program(args)
                .ok_or_else(|| anyhow::anyhow!("cannot tell which program this is"))?;
            Ok(cmd.user(owner).timeout(PAGE_TIMEOUT).run()?)
        });
    if let Err(e) = written {
        tracing::warn!(
            "the status page was not rewritten (as the owner of {}): {e:#}",
            config.state_dir.display()
        );
    }
}

/// How long the page's rewrite after a deploy may take.
const PAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// For a sweep with `[sweep] run_as`, started as root: the keeper, which stays root to run CI as
/// that user while the sweep runs as `owner` ([`crate::process::keeper`]).
fn start_the_keeper(
    config: &crate::settings::config::Config,
    owner: &crate::privilege::Account,
) -> anyhow::Result<()> {
    let Some(name) = &config.sweep.run_as else {
        return Ok(());
    };
    let at = |why: String| {
        crate::error::Unusable(format!("{}: sweep.run_as: {why}", config.path.display()))
    };
    let runner = crate::privilege::Account::by_name(name).map_err(at)?;
    if runner.uid == owner.uid {
        return Err(at(format!(
            "{name} owns the state directory: recipe CI needs a user of its own"
        ))
        .into());
    }
    let program = crate::process::this_program(std::iter::empty::<&str>())
        .ok_or_else(|| at("cannot tell which program this is".into()))?;
    crate::process::keeper::start(program, &runner, owner)
}

/// Prints an error chain: located input errors one per line, the rest as "error: a: b: c".
/// The error on stderr for people; in JSON mode also as `{"error": ..., "exit": N}` on stdout, so
/// a script reading stdout gets an answer it can parse whatever happened.
fn report(err: &anyhow::Error, code: Exit, json: bool) {
    let lines: Vec<String> = match err.downcast_ref::<Invalid>() {
        Some(invalid) => invalid.0.iter().map(ToString::to_string).collect(),
        None => vec![err
            .chain()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ")],
    };
    for line in &lines {
        eprintln!("error: {}", crate::output::terminal_safe(line));
    }
    if json {
        let body = crate::output::ErrorAnswer {
            error: lines.join("\n"),
            exit: code as u8,
        };
        if let Ok(text) = crate::output::json_text(&body) {
            crate::output::write_json_stdout(&text);
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    // Under systemd, journald keeps info lines and stamps each line itself. At a terminal, stdout
    // already says what happened, so only warnings go to stderr unless CC_CI_LOG asks for more.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let default = if journald { "info" } else { "warn" };
    let filter = EnvFilter::try_from_env("CC_CI_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(!no_color && std::io::stderr().is_terminal());
    let _ = if journald {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command family's help names its exit codes and its doc page.
    #[test]
    fn every_command_names_its_exit_codes_and_doc_page() {
        for cmd in super::Cli::command().get_subcommands() {
            let after = cmd
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                after.contains("Exit: 0") && after.contains("docs/exit-codes.md"),
                "{}: {after:?}",
                cmd.get_name()
            );
        }
    }

    /// Every argument and flag of every command says what it is for.
    #[test]
    fn every_argument_has_help() {
        let mut missing = Vec::new();
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        walk(&super::Cli::command(), "cc-ci-agent", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }
}
