//! `--format human|json` and colour: colour only when stdout is a terminal and `NO_COLOR` is unset.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// A command's answer as one value: serialized for `--format json`, and told to people by
/// [`Answer::human`] from the same fields (it gets nothing else to print from).
pub trait Answer: Serialize {
    /// What people read (colour through `out.paint`), every line ended.
    fn human(&self, out: &Output) -> String;
}

/// Set once stdout is found closed (`cc-ci-agent health | head -1`): from then on output is
/// dropped and the job goes on, records what it does, and exits as it would have. Printing never
/// decides whether work is recorded.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes to stdout, and flushes; a closed or failing stdout is remembered and never an error.
/// Every control character but newline and tab is shown escaped ([`terminal_safe`]).
pub fn write_stdout(bytes: &[u8]) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let text = terminal_safe(&String::from_utf8_lossy(bytes));
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Where [`Output::paint`] puts a colour code: `MARK` + SGR digits + `END`, private-use
/// characters that [`terminal_safe`] turns into the escape sequence. Only a colour can be made
/// this way, whoever wrote the marks.
const MARK: char = '\u{E000}';
const END: char = '\u{E001}';

/// `text` as a terminal may be given it: text from outside (a forge user's name, a planted
/// report, a repository name) reaches stdout through here, so a carriage return, a cursor move
/// or a screen clear in it is shown as `\r`, `\u{1b}`, never obeyed. Newline and tab stay; C1
/// controls are escaped too. The agent's own colours come as marks, see [`MARK`].
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            MARK => {
                let mut code = String::new();
                while let Some(d) = chars.next_if(|d| d.is_ascii_digit() || *d == ';') {
                    code.push(d);
                }
                if chars.next_if_eq(&END).is_some() {
                    out.push_str(&format!("\x1b[{code}m"));
                } else {
                    out.push_str(&code);
                }
            }
            END => {}
            '\r' => out.push_str("\\r"),
            c if c.is_control() || is_bidi_control(c) => {
                out.push_str(&c.escape_unicode().to_string());
            }
            c => out.push(c),
        }
    }
    out
}

/// The characters that reorder the text around them (Unicode's bidirectional formatting
/// characters): in a recipe's test name, `U+202E` makes `gnp.exe` read as `exe.png`, and an
/// operator or maintainer reads what is not there. Shown escaped, like a control character.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` as one line of a line the agent prints: a line break or any other control character
/// in it (a Drone repository's name, a forge's error, a program's stderr) is shown escaped, so
/// what follows cannot start a line of its own that looks like the agent's.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push(' '),
            c if c.is_control() || is_bidi_control(c) => {
                out.push_str(&c.escape_unicode().to_string());
            }
            c => out.push(c),
        }
    }
    out
}

/// Whether stdout was found closed.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// `println!` that survives a closed stdout ([`write_stdout`]).
#[macro_export]
macro_rules! say {
    () => { $crate::output::write_stdout(b"\n") };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}

/// `print!` that survives a closed stdout ([`write_stdout`]).
#[macro_export]
macro_rules! say_raw {
    ($($arg:tt)*) => { $crate::output::write_stdout(format!($($arg)*).as_bytes()) };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy)]
pub enum Tone {
    Good,
    Warn,
    Bad,
    Dim,
    Bold,
}

#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub format: Format,
    colour: bool,
}

impl Output {
    pub fn new(format: Format) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            format,
            colour: !no_color && std::io::stdout().is_terminal(),
        }
    }

    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// Prints a command's answer in the format asked for, the one place `--format` decides what
    /// stdout gets: `value` as JSON for a script, or what `human` prints for a person. Both are
    /// the same answer; a command records what it did before it answers.
    pub fn answer<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce(&Output),
    ) -> anyhow::Result<()> {
        match self.format {
            Format::Json => self.json(value),
            Format::Human => {
                human(self);
                Ok(())
            }
        }
    }

    /// A typed answer ([`Answer`]): its JSON and its lines for people both come from `answer`
    /// itself, so they cannot say different things.
    pub fn give(&self, answer: &impl Answer) -> anyhow::Result<()> {
        self.answer(answer, |out| crate::say_raw!("{}", answer.human(out)))
    }

    /// A line of progress for a person while a command works; nothing in JSON, where the
    /// answer at the end says it all.
    pub fn progress(&self, text: impl AsRef<str>) {
        if self.format == Format::Human {
            crate::say!("{}", text.as_ref());
        }
    }

    /// Something a person must see even when stdout is JSON: `human` on stdout, or `plain` on
    /// stderr in JSON mode (where stdout carries only the answer).
    pub fn aside(&self, human: impl AsRef<str>, plain: impl AsRef<str>) {
        match self.format {
            Format::Human => crate::say!("{}", human.as_ref()),
            Format::Json => eprintln!("{}", terminal_safe(plain.as_ref())),
        }
    }

    pub fn paint(&self, text: &str, tone: Tone) -> String {
        if !self.colour {
            return text.to_string();
        }
        let code = match tone {
            Tone::Good => "32",
            Tone::Warn => "33",
            Tone::Bad => "31",
            Tone::Dim => "2",
            Tone::Bold => "1",
        };
        format!("{MARK}{code}{END}{text}{MARK}0{END}")
    }

    pub fn json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let mut text = serde_json::to_vec_pretty(value)?;
        text.push(b'\n');
        write_stdout(&text);
        Ok(())
    }
}

/// Cells longer than this, or of more than one line, show their first line and a note number.
const CELL_MAX: usize = 100;

/// A cell as a table shows it: one line, at most [`CELL_MAX`] characters, and the note number
/// under which the whole text follows the table when it had to be cut.
fn table_cell(cell: &str, notes: &mut Vec<String>) -> String {
    let first = cell
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    if first.len() == cell.len() && first.chars().count() <= CELL_MAX {
        return cell.to_string();
    }
    notes.push(cell.trim().to_string());
    let cut: String = first.chars().take(CELL_MAX).collect();
    let more = if cut.len() < first.len() { "..." } else { "" };
    format!("{cut}{more} [{}]", notes.len())
}

/// Left-aligned columns, one line per row; widths from the plain text so colour codes do not
/// skew them. A cell too long for a line (a failing git call's whole message) shows its first
/// line, and the whole text follows the table as a numbered note.
pub fn table(out: &Output, header: &[&str], rows: &[Vec<(String, Option<Tone>)>]) -> String {
    let mut notes = Vec::new();
    let rows: Vec<Vec<(String, Option<Tone>)>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|(cell, tone)| (table_cell(cell, &mut notes), *tone))
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, (cell, _)) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let line = |cells: Vec<(String, Option<Tone>)>, text: &mut String| {
        let last = cells.len().saturating_sub(1);
        for (i, (cell, tone)) in cells.into_iter().enumerate() {
            let pad = if i == last {
                0
            } else {
                widths[i] - cell.chars().count() + 2
            };
            let shown = tone.map_or_else(|| cell.clone(), |t| out.paint(&cell, t));
            text.push_str(&shown);
            text.push_str(&" ".repeat(pad));
        }
        text.push('\n');
    };
    line(
        header
            .iter()
            .map(|h| (h.to_string(), Some(Tone::Bold)))
            .collect(),
        &mut text,
    );
    for row in &rows {
        line(row.clone(), &mut text);
    }
    for (i, note) in notes.iter().enumerate() {
        text.push_str(&format!("[{}] {note}\n", i + 1));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_and_only_the_agents_colours_are_obeyed() {
        let painted = format!("{MARK}32{END}ok{MARK}0{END}");
        assert_eq!(terminal_safe(&painted), "\x1b[32mok\x1b[0m");
        assert_eq!(
            terminal_safe("test_\u{202E}gnp.exe \u{2067}x\u{2069}"),
            "test_\\u{202e}gnp.exe \\u{2067}x\\u{2069}"
        );
        assert_eq!(
            terminal_safe("a\r\x1b[2J\u{9b}b\n\tc"),
            "a\\r\\u{1b}[2J\\u{9b}b\n\tc"
        );
        // Marks that outside text forged make a colour at most, or nothing.
        assert_eq!(terminal_safe(&format!("{MARK}2J x{END}")), "2J x");
    }

    #[test]
    fn a_table_keeps_one_line_per_row_and_puts_long_cells_in_notes() {
        let out = Output::new(Format::Human);
        let long = format!(
            "upstream unreachable: {}\nfatal: the remote end hung up",
            "x".repeat(150)
        );
        let rows = vec![
            vec![("a".to_string(), None), ("fine".to_string(), None)],
            vec![("b".to_string(), None), (long.clone(), None)],
        ];
        let text = table(&out, &["NAME", "DETAIL"], &rows);
        let lines: Vec<&str> = text.lines().collect();
        // Header, two rows, then the note: the whole message, its two lines.
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[2].starts_with('b') && lines[2].ends_with("... [1]"),
            "{text}"
        );
        assert!(lines[2].chars().count() < 120, "{text}");
        let note = text.split_once("[1] ").map(|(_, n)| n.to_string());
        assert_eq!(note, Some(format!("{long}\n")));
    }
}
