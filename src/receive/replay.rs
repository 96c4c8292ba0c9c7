//! Signatures already accepted, so that a captured signed trigger cannot be sent again. Anything
//! older than the freshness window is refused as stale anyway, so the set holds at most
//! [`MAX_AGE_SECS`] worth of accepted triggers; it is kept in the state directory, one file per
//! archive, so that a restart within the window does not forget it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::sys::fsutil::write_atomic;
use crate::wire::signed_http::MAX_AGE_SECS;

/// Largest replay file read at start: tens of thousands of entries, far more than five minutes of
/// triggers bring. Anything bigger was not written by `receive`.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Why the replay file of an archive cannot be used; `receive` does not start without it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The state directory cannot be created or the file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file (or its directory).
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A directory, FIFO or device where the file should be, or a file over [`MAX_FILE_BYTES`].
    #[error("{} is not a replay file written by pushmirror receive ({what})", path.display())]
    NotReplayFile {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        what: &'static str,
    },
    /// Not the JSON `receive` writes.
    #[error("{} is not a replay file written by pushmirror receive: {source}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Where the JSON went wrong.
        source: serde_json::Error,
    },
}

/// The accepted signatures of one archive, with the timestamps they were made at.
#[derive(Debug, Default)]
pub struct SeenSignatures {
    /// Where they are kept; `None` keeps them in memory only.
    file: Option<PathBuf>,
    seen: Mutex<HashMap<String, u64>>,
}

/// The file's form.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    signatures: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    signature: String,
    timestamp: u64,
}

impl SeenSignatures {
    /// The set kept in `file`, with what it holds from earlier runs that is still fresh at unix
    /// time `now`. A missing file is an empty set; its directory is created now, so that a
    /// state directory receive cannot write is reported at start, not at the first trigger.
    pub fn load(file: PathBuf, now: u64) -> Result<Self, LoadError> {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|source| LoadError::Read { path: dir.to_path_buf(), source })?;
        }
        let stored = match read_bounded(&file)? {
            Some(bytes) => serde_json::from_slice::<Stored>(&bytes)
                .map_err(|source| LoadError::Malformed { path: file.clone(), source })?,
            None => Stored::default(),
        };
        let seen = stored
            .signatures
            .into_iter()
            .filter(|e| is_fresh(e.timestamp, now))
            .map(|e| (e.signature.to_ascii_lowercase(), e.timestamp))
            .collect();
        Ok(SeenSignatures { file: Some(file), seen: Mutex::new(seen) })
    }

    /// Records `signature` made at `timestamp`; false when it was recorded before. The file is
    /// rewritten before this returns, under the lock, so that writes cannot land out of order
    /// (signed triggers come a few an hour; the fsync is worth its milliseconds). A file that
    /// cannot be written is logged: this process still refuses the replay, a restart would not.
    pub fn first_use(&self, signature: &str, timestamp: u64, now: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, t| is_fresh(*t, now));
        // Hex digits verify in either case: the same signature in capitals is still a replay.
        if seen.insert(signature.to_ascii_lowercase(), timestamp).is_some() {
            return false;
        }
        if let Some(file) = &self.file
            && let Err(e) = write_atomic(file, &serialize(&seen))
        {
            tracing::error!(
                "cannot record an accepted signature in {}: {e}; after a restart within {} minutes \
                 this trigger could be replayed",
                file.display(),
                MAX_AGE_SECS / 60
            );
        }
        true
    }
}

fn is_fresh(timestamp: u64, now: u64) -> bool {
    timestamp.abs_diff(now) <= MAX_AGE_SECS
}

fn serialize(seen: &HashMap<String, u64>) -> Vec<u8> {
    let mut signatures: Vec<Entry> =
        seen.iter().map(|(signature, &timestamp)| Entry { signature: signature.clone(), timestamp }).collect();
    signatures.sort_by(|a, b| (a.timestamp, &a.signature).cmp(&(b.timestamp, &b.signature)));
    serde_json::to_vec(&Stored { signatures }).expect("strings and numbers serialize")
}

/// The bytes of `file`, `None` when it does not exist; only a regular file, at most
/// [`MAX_FILE_BYTES`] of it ([`crate::sys::fsutil::read_bounded`]).
fn read_bounded(file: &Path) -> Result<Option<Vec<u8>>, LoadError> {
    let not_replay_file = |what| LoadError::NotReplayFile { path: file.to_path_buf(), what };
    match crate::sys::fsutil::read_bounded(file, MAX_FILE_BYTES) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(not_replay_file("not a regular file")),
        Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => Err(not_replay_file("larger than 4 MiB")),
        Err(source) => Err(LoadError::Read { path: file.to_path_buf(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn the_replay_set_forgets_what_staleness_refuses_anyway() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("seen/debian.json");
        let seen = SeenSignatures::load(file.clone(), NOW).unwrap();
        assert!(seen.first_use("a", NOW, NOW));
        assert!(seen.first_use("b", NOW + 400, NOW + 400));
        assert!(!seen.first_use("B", NOW + 400, NOW + 400), "a replay in capitals was accepted");
        let stored: Stored = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let kept: Vec<&str> = stored.signatures.iter().map(|e| e.signature.as_str()).collect();
        assert_eq!(kept, ["b"], "the stale entry was kept");
    }

    #[test]
    fn a_restart_loads_the_fresh_entries_and_refuses_files_it_did_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("debian.json");
        let first = SeenSignatures::load(file.clone(), NOW).unwrap();
        assert!(first.first_use("old", NOW - 200, NOW));
        assert!(first.first_use("new", NOW, NOW));
        let later = SeenSignatures::load(file.clone(), NOW + 200).unwrap();
        assert!(!later.first_use("new", NOW, NOW + 200), "forgotten across the restart");
        assert!(later.first_use("old", NOW - 200, NOW + 200), "a stale entry was loaded");

        std::fs::write(&file, "{").unwrap();
        assert!(matches!(SeenSignatures::load(file.clone(), NOW), Err(LoadError::Malformed { .. })));
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        assert!(matches!(SeenSignatures::load(file, NOW), Err(LoadError::NotReplayFile { .. })));
    }
}
