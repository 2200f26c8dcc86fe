//! "Is a CI build in flight?" Deploy and sweep refuse to start while one is, unless forced.

use crate::drone::{Drone, Running};
use crate::http;
use crate::process::Cmd;
use crate::secrets::read_token_file;
use crate::settings::deploy::{BusyCheck, DRONE_TOKEN_CREDENTIAL};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Busy {
    Idle,
    /// A build is in flight; what the check said about it.
    Busy(String),
    /// The check itself did not answer; treated as busy, since a deploy cannot tell.
    Unknown(String),
}

/// Whether CI is busy, by `check`; `watched` are the enrolled recipes' mirror repositories
/// (`org/recipe`, as Drone names them), which a Drone check looks at even where its token's
/// user cannot list them ([`Drone::incomplete`]).
pub fn check(check: &BusyCheck, watched: &[String]) -> Busy {
    check_beside(check, watched, &|_| false)
}

/// As [`check`], with the Drone builds `accounted` says are already accounted for (a probe's
/// own, of a recipe probed before) not counted as busy.
pub fn check_beside(
    check: &BusyCheck,
    watched: &[String],
    accounted: &dyn Fn(&Running) -> bool,
) -> Busy {
    match check {
        BusyCheck::Command { argv, timeout } => {
            let Some((program, args)) = argv.split_first() else {
                return Busy::Unknown("empty busy_check command".into());
            };
            match Cmd::new(program)
                .args(args)
                .clean_env(&[])
                .timeout(*timeout)
                .output()
            {
                Ok(done) => match done.code() {
                    Some(0) => Busy::Idle,
                    Some(1) => Busy::Busy(first_line(&done.stdout, "a CI build is in flight")),
                    _ => Busy::Unknown(format!("{} exited with {}", program, done.status)),
                },
                Err(e) => Busy::Unknown(e.to_string()),
            }
        }
        BusyCheck::Url { url, timeout } => match http::get(url, *timeout) {
            Ok(a) if (200..300).contains(&a.status) => Busy::Idle,
            Ok(a) if a.status == 423 => Busy::Busy(first_line(&a.body, "a CI build is in flight")),
            Ok(a) => Busy::Unknown(format!("{url} answered HTTP {}", a.status)),
            Err(e) => Busy::Unknown(format!("{url}: {e}")),
        },
        BusyCheck::Drone { drone, timeout } => {
            let token =
                read_token_file(drone.token_file.as_deref(), DRONE_TOKEN_CREDENTIAL, "drone");
            let asked = token.and_then(|t| Drone::new(drone, t, *timeout).incomplete(watched));
            match asked {
                Ok(found) => {
                    let running: Vec<String> = found
                        .running
                        .iter()
                        .filter(|r| !accounted(r))
                        .map(ToString::to_string)
                        .collect();
                    let from = found.from.map(|f| format!(" ({f})")).unwrap_or_default();
                    if running.is_empty() {
                        if let Some(f) = found.from {
                            tracing::info!("Drone is idle: {f}");
                        }
                        Busy::Idle
                    } else {
                        Busy::Busy(format!("Drone is running {}{from}", running.join(", ")))
                    }
                }
                Err(e) => Busy::Unknown(format!("{e:#}")),
            }
        }
    }
}

/// Whether `check` can be asked at all: a Drone check whose token file cannot be read (missing,
/// empty, a FIFO) is a configuration error, [`crate::error::Unusable`] (exit 2), never a CI
/// that looks busy for ever. `section` is the check's table, for the message.
pub fn usable(check: &BusyCheck, section: &str) -> anyhow::Result<()> {
    if let BusyCheck::Drone { drone, .. } = check {
        if let Err(e) =
            read_token_file(drone.token_file.as_deref(), DRONE_TOKEN_CREDENTIAL, "drone")
        {
            return Err(crate::error::Unusable(format!(
                "configuration error: {section}.busy_check.drone.token_file: {e:#}; put a Drone \
                 admin's token in that file (or the credential {DRONE_TOKEN_CREDENTIAL}), or \
                 remove the Drone busy check"
            ))
            .into());
        }
    }
    Ok(())
}

/// The enrolled recipes' mirror repositories as Drone names them (`org/recipe`): what a Drone
/// busy check must see. Empty where the mirrors are not on a Gitea (no Drone builds them).
pub fn watched(config: &crate::settings::config::Config) -> Vec<String> {
    use crate::settings::config::Forge;
    let Some(Forge::Gitea { org, .. }) = &config.forge else {
        return Vec::new();
    };
    match crate::settings::enrollment::Enrollment::load(&config.enrollment_file) {
        Ok(e) => e.enrolled().map(|r| format!("{org}/{}", r.name)).collect(),
        Err(_) => Vec::new(),
    }
}

fn first_line(text: &str, default: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(default)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cmd(script: &str) -> BusyCheck {
        BusyCheck::Command {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn command_exit_codes() {
        assert_eq!(check(&cmd("exit 0"), &[]), Busy::Idle);
        assert_eq!(
            check(&cmd("echo 'plausible #41 since 10:02'; exit 1"), &[]),
            Busy::Busy("plausible #41 since 10:02".into())
        );
        assert!(matches!(check(&cmd("exit 2"), &[]), Busy::Unknown(_)));
        let slow = BusyCheck::Command {
            argv: vec!["sleep".into(), "5".into()],
            timeout: Duration::from_millis(100),
        };
        assert!(matches!(check(&slow, &[]), Busy::Unknown(_)));
    }
}
