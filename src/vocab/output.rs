//! How a command shows its result and how the process ends: the output [`Format`], printing a
//! value as a table or JSON, and [`exit_code`], the one place that maps how a command ended to the
//! documented exit status. A leaf: it uses nothing of the crate.
//!
//! | exit | meaning |
//! |---|---|
//! | 0 | every selected mirror ok or deferred |
//! | 1 | at least one mirror (or imported line) failed |
//! | 2 | usage or configuration error; nothing was sent |
//!
//! `status --check` answers as a Nagios plugin instead (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

use std::fmt;

use serde::Serialize;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text for a terminal.
    Table,
    /// One JSON document.
    Json,
}

/// A value with a text form for people (its JSON form comes from serde).
pub trait Tabular {
    /// The value as aligned text, ending in a newline.
    fn to_table(&self) -> String;
}

/// Prints `value` on stdout in `format`.
pub fn print<T: Serialize + Tabular>(value: &T, format: Format) {
    match format {
        Format::Json => print_json(value),
        Format::Table => print!("{}", value.to_table()),
    }
}

/// Prints one JSON document on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode JSON: {e}"),
    }
}

/// How a command that did its work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Everything asked for was done (rate-limited triggers deferred count as done).
    Clean,
    /// Some mirror failed (or some part could not be done); the output says which.
    Failed,
    /// A Nagios plugin's answer (`status --check`).
    Nagios(Nagios),
}

/// Nagios plugin states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nagios {
    /// Every mirror ok.
    Ok,
    /// Some mirror deferred.
    Warning,
    /// Some mirror failed.
    Critical,
    /// Nothing to judge by (no report, unreadable configuration).
    Unknown,
}

/// Why a command stopped before doing its work; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Wrong command line, configuration or local setup, in words for `error: …`.
    Usage(String),
    /// Like [`Stop::Usage`], but every problem has already been printed (config errors, each
    /// with its position).
    Shown,
}

impl Stop {
    /// A usage stop from anything printable (`anyhow` errors print their whole chain).
    pub fn usage(message: impl fmt::Display) -> Self {
        Stop::Usage(message.to_string())
    }
}

/// How a command ended.
pub type Ended = Result<Verdict, Stop>;

/// Exit status: every selected mirror ok or deferred.
pub const EXIT_OK: u8 = 0;
/// Exit status: at least one mirror failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: usage or configuration error; nothing was sent.
pub const EXIT_USAGE: u8 = 2;

/// The process exit status of how a command ended.
pub fn exit_code(ended: &Ended) -> u8 {
    match ended {
        Ok(Verdict::Clean) => EXIT_OK,
        Ok(Verdict::Failed) => EXIT_FAILED,
        Ok(Verdict::Nagios(state)) => match state {
            Nagios::Ok => 0,
            Nagios::Warning => 1,
            Nagios::Critical => 2,
            Nagios::Unknown => 3,
        },
        Err(_) => EXIT_USAGE,
    }
}

/// Prints a [`Stop::Usage`] message on stderr and gives the exit status.
pub fn conclude(ended: Ended) -> u8 {
    if let Err(Stop::Usage(message)) = &ended {
        eprintln!("error: {message}");
    }
    exit_code(&ended)
}

/// Left-aligns rows of cells into columns separated by two spaces.
pub fn align<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ending_has_its_documented_exit_status() {
        assert_eq!(exit_code(&Ok(Verdict::Clean)), 0);
        assert_eq!(exit_code(&Ok(Verdict::Failed)), 1);
        assert_eq!(exit_code(&Err(Stop::Shown)), 2);
        assert_eq!(conclude(Err(Stop::usage("no such archive"))), 2);
        let nagios = [Nagios::Ok, Nagios::Warning, Nagios::Critical, Nagios::Unknown];
        let codes: Vec<u8> = nagios.iter().map(|&s| exit_code(&Ok(Verdict::Nagios(s)))).collect();
        assert_eq!(codes, [0, 1, 2, 3]);
    }
}
