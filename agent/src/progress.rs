//! A line on the terminal saying what a long command is doing now (`sweep 2 of 5: plausible
//! 3.0.1+v2.0.0, CI 1:42: pulling image`), redrawn each second in the style of cargo's and
//! nix's progress lines. Only for a person: shown when stderr is a terminal, the format is
//! human and the journal is not listening; under a pipe, `--format json` or systemd, nothing,
//! and the records alone are printed.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The widest line drawn: a longer one would wrap, and `\r` would not take it back.
const WIDTH: usize = 100;

/// What is drawn: a text, since when, and a log whose last line says more (CI's output).
#[derive(Default)]
struct Now {
    text: String,
    since: Option<Instant>,
    log: Option<PathBuf>,
    done: bool,
}

/// The progress line of one command; dropping it clears the line.
pub struct Progress {
    shared: Option<Arc<(Mutex<Now>, Condvar)>>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// A progress line where a person watches (`out` is for people, stderr a terminal, not
    /// under the journal); elsewhere one that draws nothing.
    pub fn start(out: &crate::output::Output) -> Self {
        let watched = out.format == crate::output::Format::Human
            && std::io::stderr().is_terminal()
            && std::env::var_os("JOURNAL_STREAM").is_none();
        if !watched {
            return Self {
                shared: None,
                ticker: None,
            };
        }
        let shared = Arc::new((Mutex::new(Now::default()), Condvar::new()));
        let ticking = Arc::clone(&shared);
        let ticker = std::thread::spawn(move || tick(&ticking));
        Self {
            shared: Some(shared),
            ticker: Some(ticker),
        }
    }

    /// Says what is happening now; `log` is a file whose last line is shown after it, and the
    /// time counts from now.
    pub fn set(&self, text: impl Into<String>, log: Option<PathBuf>) {
        let Some(shared) = &self.shared else {
            return;
        };
        let (now, wake) = &**shared;
        let mut now = now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        now.text = text.into();
        now.since = Some(Instant::now());
        now.log = log;
        wake.notify_all();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            let (now, wake) = &**shared;
            now.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .done = true;
            wake.notify_all();
        }
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        crate::output::clear_progress_line();
    }
}

/// Draws the line now and then each second, until the command is done.
fn tick(shared: &(Mutex<Now>, Condvar)) {
    let (now, wake) = shared;
    let mut guard = now
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    while !guard.done {
        if let Some(since) = guard.since {
            draw(&line(&guard.text, since.elapsed(), guard.log.as_deref()));
        }
        guard = wake
            .wait_timeout(guard, Duration::from_secs(1))
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
    }
}

/// `text, 1:42: <the log's last line>`, one line, at most [`WIDTH`] characters, escaped.
fn line(text: &str, elapsed: Duration, log: Option<&std::path::Path>) -> String {
    let secs = elapsed.as_secs();
    let mut line = format!("{text}, {}:{:02}", secs / 60, secs % 60);
    if let Some(last) = log.and_then(last_line) {
        line.push_str(": ");
        line.push_str(&last);
    }
    let line = crate::output::one_line(&line);
    match line.char_indices().nth(WIDTH) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

/// The last line a log holds, read from its last 4 KiB.
fn last_line(path: &std::path::Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut tail = Vec::new();
    f.take(4096).read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

fn draw(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[K{line}");
    let _ = err.flush();
    crate::output::progress_line_shown();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_line_of_bounded_width_with_the_logs_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("1.log");
        std::fs::write(&log, "$ ci plausible\npulling image\n\x1b[2Jpulled\n\n").unwrap();
        let got = line(
            "sweep 1 of 2: plausible 1.0.0+1",
            Duration::from_secs(102),
            Some(&log),
        );
        assert_eq!(
            got,
            "sweep 1 of 2: plausible 1.0.0+1, 1:42: \\u{1b}[2Jpulled"
        );
        let long = line(&"x".repeat(300), Duration::ZERO, None);
        assert_eq!(long.chars().count(), WIDTH + 1);
        assert!(!long.contains('\n'));
    }
}
