//! `--format human|json` and colour: colour only when stdout is a terminal and `NO_COLOR` is unset.

use std::io::{IsTerminal, Write};

use serde::Serialize;

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
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    pub fn json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, value)?;
        writeln!(out)?;
        Ok(())
    }
}

/// Left-aligned columns; widths from the plain text so colour codes do not skew them.
pub fn table(out: &Output, header: &[&str], rows: &[Vec<(String, Option<Tone>)>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
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
    for row in rows {
        line(row.clone(), &mut text);
    }
    text
}
