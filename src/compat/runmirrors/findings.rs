//! What an import reports about the lines of its source files: things not carried over (exit 1)
//! and notes on things carried over differently, each as `FILE:LINE: what: why`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Something the import reports about one line of a source file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The source file.
    pub path: PathBuf,
    /// Its 1-based line.
    pub line: usize,
    /// What and why.
    pub message: String,
    /// Not carried over (exit 1), as opposed to a note on something carried over differently.
    pub lost: bool,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let note = if self.lost { "" } else { "note: " };
        write!(f, "{}:{}: {note}{}", self.path.display(), self.line, self.message)
    }
}

/// The findings of one import, in the order they were made.
#[derive(Debug, Clone, Default)]
pub struct Findings(pub Vec<Finding>);

impl Findings {
    /// Records something that was not carried over.
    pub fn lost(&mut self, path: &Path, line: usize, message: impl Into<String>) {
        self.0.push(Finding { path: path.to_path_buf(), line, message: message.into(), lost: true });
    }

    /// Records something carried over with a difference worth knowing.
    pub fn note(&mut self, path: &Path, line: usize, message: impl Into<String>) {
        self.0.push(Finding { path: path.to_path_buf(), line, message: message.into(), lost: false });
    }

    /// How many things were not carried over.
    pub fn lost_count(&self) -> usize {
        self.0.iter().filter(|f| f.lost).count()
    }
}
