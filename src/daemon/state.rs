//! What the daemon must not forget across a crash, under `state_dir/daemon/`:
//!
//! - `ARCHIVE.pushed`: the last version pushed (or recorded at first start);
//! - `ARCHIVE.due`: a journal, written before a push is dispatched: its first line names the
//!   version, each further line a mirror whose trigger has ended. Removed once the push is
//!   complete; found at start, it is resumed for the mirrors not yet listed;
//! - `deferred.json`: triggers waiting for a rate limit, replaced only under `deferred.lock`.
//!
//! Journal lines are appended without fsync: they survive `kill -9` (the page cache is the
//! kernel's), which is the crash this guards against.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::sys::fsutil::{lock_exclusive, write_atomic};
use crate::vocab::model::Timestamp;

/// The daemon's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

/// A push that was due when the daemon last stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The version being pushed.
    pub version: String,
    /// Mirrors whose trigger had ended.
    pub done: BTreeSet<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Line {
    Version(String),
    Done(String),
}

#[derive(Serialize, Deserialize)]
struct Pushed {
    version: Option<String>,
}

/// Deferred triggers by (archive, mirror).
pub type DeferredMap = BTreeMap<(String, String), SystemTime>;

#[derive(Serialize, Deserialize)]
struct DeferredEntry {
    archive: String,
    mirror: String,
    until: Timestamp,
}

impl StateDir {
    /// The daemon's part of `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        StateDir { dir: state_dir.join("daemon") }
    }

    fn file(&self, archive: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{archive}.{ext}"))
    }

    /// The last pushed version: `None` if the daemon never ran for this archive, `Some(None)` if
    /// it ran while the archive had no trace file. A file that exists but cannot be read is an
    /// error, never a first start (which would record the current version without pushing it).
    pub fn pushed(&self, archive: &str) -> std::io::Result<Option<Option<String>>> {
        let path = self.file(archive, "pushed");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))),
        };
        let pushed: Pushed = serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a pushed-version file: {e}", path.display()),
            )
        })?;
        Ok(Some(pushed.version))
    }

    /// Records the last pushed version.
    pub fn set_pushed(&self, archive: &str, version: Option<&str>) -> std::io::Result<()> {
        let body = serde_json::to_vec(&Pushed { version: version.map(str::to_string) })?;
        write_atomic(&self.file(archive, "pushed"), &body)
    }

    /// The push that was due, if any.
    pub fn due(&self, archive: &str) -> Option<Due> {
        let text = std::fs::read_to_string(self.file(archive, "due")).ok()?;
        let mut lines = text.lines().filter_map(|l| serde_json::from_str::<Line>(l).ok());
        let Some(Line::Version(version)) = lines.next() else { return None };
        let done = lines
            .filter_map(|l| match l {
                Line::Done(m) => Some(m),
                Line::Version(_) => None,
            })
            .collect();
        Some(Due { version, done })
    }

    /// Persists "push of `version` due" (before anything is sent) and returns its journal.
    pub fn begin(&self, archive: &str, version: &str) -> std::io::Result<Journal> {
        let line = serde_json::to_string(&Line::Version(version.to_string()))?;
        let path = self.file(archive, "due");
        write_atomic(&path, format!("{line}\n").as_bytes())?;
        Journal::open(path)
    }

    /// Reopens the journal of a due push to resume it.
    pub fn resume(&self, archive: &str) -> std::io::Result<Journal> {
        Journal::open(self.file(archive, "due"))
    }

    /// Triggers waiting for their rate limit.
    pub fn deferred(&self) -> DeferredMap {
        let Ok(bytes) = std::fs::read(self.dir.join("deferred.json")) else { return DeferredMap::new() };
        serde_json::from_slice::<Vec<DeferredEntry>>(&bytes)
            .unwrap_or_default()
            .into_iter()
            .map(|e| ((e.archive, e.mirror), e.until.0))
            .collect()
    }

    /// Replaces the persisted deferred triggers, under a file lock that every `StateDir` and
    /// every process takes, so that writers never meet in the file.
    pub fn set_deferred(&self, map: &DeferredMap) -> std::io::Result<()> {
        let list: Vec<DeferredEntry> = map
            .iter()
            .map(|((archive, mirror), until)| DeferredEntry {
                archive: archive.clone(),
                mirror: mirror.clone(),
                until: Timestamp(*until),
            })
            .collect();
        let body = serde_json::to_vec_pretty(&list)?;
        std::fs::create_dir_all(&self.dir)?;
        let _lock = lock_exclusive(&self.dir.join("deferred.lock"))?;
        write_atomic(&self.dir.join("deferred.json"), &body)
    }
}

/// The journal of one due push.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    fn open(path: PathBuf) -> std::io::Result<Self> {
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(Journal { path, file: Mutex::new(file) })
    }

    /// Records that `mirror`'s trigger has ended and must not be sent again on resume.
    pub fn record_done(&self, mirror: &str) {
        let Ok(line) = serde_json::to_string(&Line::Done(mirror.to_string())) else { return };
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(file, "{line}") {
            tracing::error!(path = %self.path.display(), error = %e, "cannot record a delivered trigger");
        }
    }

    /// The push is complete: nothing is due any more.
    pub fn finish(self) -> std::io::Result<()> {
        std::fs::remove_file(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_push_survives_and_lists_what_was_done() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert_eq!(state.pushed("debian").unwrap(), None);
        state.set_pushed("debian", Some("1")).unwrap();
        assert_eq!(state.pushed("debian").unwrap(), Some(Some("1".into())));
        let journal = state.begin("debian", "2").unwrap();
        journal.record_done("a");
        journal.record_done("b");
        drop(journal);
        let due = state.due("debian").unwrap();
        assert_eq!(due, Due { version: "2".into(), done: ["a".to_string(), "b".to_string()].into() });
        let journal = state.resume("debian").unwrap();
        journal.record_done("c");
        assert_eq!(state.due("debian").unwrap().done.len(), 3);
        journal.finish().unwrap();
        assert_eq!(state.due("debian"), None);
    }

    #[test]
    fn deferred_triggers_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let mut map = DeferredMap::new();
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_800_000_000_123);
        map.insert(("debian".into(), "m".into()), t);
        state.set_deferred(&map).unwrap();
        assert_eq!(state.deferred(), map);
    }

    #[test]
    fn concurrent_deferred_writers_in_two_state_dirs_never_fail_or_tear_the_file() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        // Two maps of different lengths, so a mix of both is never either of them.
        let maps: Vec<DeferredMap> = [3, 40]
            .iter()
            .map(|&n| (0..n).map(|i| (("debian".to_string(), format!("mirror-{n}-{i}")), t)).collect())
            .collect();
        let start = std::sync::Barrier::new(3);
        let writing = AtomicUsize::new(maps.len());
        let (errors, torn) = std::thread::scope(|s| {
            let writers: Vec<_> = maps
                .iter()
                .map(|map| {
                    let (start, writing) = (&start, &writing);
                    let state = StateDir::new(dir.path());
                    s.spawn(move || {
                        start.wait();
                        let errors: Vec<String> =
                            (0..300).filter_map(|_| state.set_deferred(map).err()).map(|e| e.to_string()).collect();
                        writing.fetch_sub(1, Ordering::SeqCst);
                        errors
                    })
                })
                .collect();
            let path = dir.path().join("daemon/deferred.json");
            let mut torn = Vec::new();
            start.wait();
            while writing.load(Ordering::SeqCst) > 0 {
                let Ok(bytes) = std::fs::read(&path) else { continue };
                match serde_json::from_slice::<Vec<DeferredEntry>>(&bytes) {
                    Ok(read) if maps.iter().any(|m| m.len() == read.len()) => {}
                    _ => torn.push(String::from_utf8_lossy(&bytes).into_owned()),
                }
            }
            let errors: Vec<String> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
            (errors, torn)
        });
        assert!(errors.is_empty(), "{} writes failed, first: {}", errors.len(), errors[0]);
        assert!(torn.is_empty(), "{} torn reads, first: {:?}", torn.len(), torn[0]);
        assert!(maps.contains(&StateDir::new(dir.path()).deferred()));
    }
}
