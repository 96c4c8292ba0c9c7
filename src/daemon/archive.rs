//! One archive as the daemon keeps it, across reloads: its last pushed version (in memory, and in
//! `state_dir/daemon/ARCHIVE.pushed`), the journal of its due push (`ARCHIVE.due`), its row in the
//! live status, and the lock that lets one pusher at a time push it.
//!
//! A push of an archive is three calls on its object: [`ArchiveState::begin`] (journal the push
//! as due, show it running), [`ArchiveState::trigger_ended`] per trigger (journalled and shown as
//! it ends), [`ArchiveState::finish`] (store the report, record the version as pushed, clear the
//! journal — explicitly, whatever else still holds the object).
//!
//! The journal's first line names the version, each further line a mirror whose trigger has
//! ended; found at start, the push is resumed for the mirrors not yet listed. Its lines are
//! appended without fsync: they survive `kill -9` (the page cache is the kernel's), which is the
//! crash this guards against.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::blocking;
use super::status::{ArchiveStatus, PropagationProgress, PushProgress, StatusBoard};
use crate::archive::watch::Observation;
use crate::config::Archive;
use crate::push::report::{History, Propagated, Report, TriggerReport};
use crate::sys::fsutil::write_atomic;
use crate::vocab::model::{Outcome, Stage, Timestamp};

/// One archive's lasting state in the daemon.
#[derive(Debug)]
pub(super) struct ArchiveState {
    name: String,
    state_dir: PathBuf,
    /// `state_dir/daemon`.
    dir: PathBuf,
    /// The last version pushed (or recorded at first start); `None`: the archive had no trace.
    pushed: Mutex<Option<String>>,
    /// The journal of the push running now, if it could be written.
    journal: Mutex<Option<Journal>>,
    /// Held by the pusher: a reloaded configuration's pusher waits for the previous one's push.
    pusher: tokio::sync::Mutex<()>,
    /// Held by a push from its plan to its recorded version, and by a send of deferred triggers:
    /// a deferred trigger sends the pushed version, so it must not read it while a push is
    /// between delivering and recording (it sent the old version and took the entry the new
    /// push had deferred: the soak's "nothing lost" caught it).
    sending: tokio::sync::Mutex<()>,
    status: StatusBoard,
    history: Mutex<History>,
}

/// A push that was due when the daemon last stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Due {
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

impl ArchiveState {
    /// Reads the archive's last pushed version from `state_dir`. At the first start (no file) the
    /// version there now counts as pushed and is recorded: only later updates are pushed. A file
    /// that exists but cannot be read is an error, never a first start.
    pub(super) fn open(
        archive: &Archive,
        state_dir: &Path,
        history: History,
        status: StatusBoard,
    ) -> std::io::Result<ArchiveState> {
        let dir = state_dir.join("daemon");
        let name = archive.name.clone();
        let pushed = match read_pushed(state_dir, &dir, &name)? {
            Some(version) => version,
            None => {
                let version = crate::archive::watch::read_version(archive);
                tracing::info!(archive = %name, version = version.as_deref().unwrap_or("none"), "first start: recording the current version without pushing");
                write_pushed(&dir, &name, version.as_deref())?;
                version
            }
        };
        Ok(ArchiveState {
            name,
            state_dir: state_dir.to_path_buf(),
            dir,
            pushed: Mutex::new(pushed),
            journal: Mutex::new(None),
            pusher: tokio::sync::Mutex::new(()),
            sending: tokio::sync::Mutex::new(()),
            status,
            history: Mutex::new(history),
        })
    }

    /// The archive's name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The last pushed version.
    pub(super) fn pushed(&self) -> Option<String> {
        lock(&self.pushed).clone()
    }

    /// Keeps `history` for later writes (a reload may change `status.history`).
    pub(super) fn use_history(&self, history: History) {
        *lock(&self.history) = history;
    }

    /// The row this archive shows in `/status` before its first push: its pushed version and
    /// its last report in `latest`.
    pub(super) fn first_row(&self, latest: &std::collections::BTreeMap<String, Report>) -> ArchiveStatus {
        let last_report = latest.get(&self.name).cloned();
        ArchiveStatus { name: self.name.clone(), pushed_version: self.pushed(), last_report, ..Default::default() }
    }

    /// Waits until no push or deferred send of this archive is under way; held while sending.
    pub(super) async fn lock_sending(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.sending.lock().await
    }

    /// Waits until no other pusher pushes this archive; held while pushing.
    pub(super) async fn lock_pusher(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.pusher.lock().await
    }

    /// The push that was due when the daemon stopped, if any.
    pub(super) async fn due(self: &Arc<Self>) -> Option<Due> {
        let me = Arc::clone(self);
        blocking(move || read_due(&me.dir.join(format!("{}.due", me.name)))).await
    }

    /// What the watcher sees now, into the status row.
    pub(super) fn observed(&self, observed: &Observation) {
        self.status.archive(&self.name, |a| {
            a.observed_version = observed.version.clone();
            a.locked = observed.locked;
        });
    }

    /// Persists "push of `version` due" before anything is sent (a resumed push continues its
    /// journal) and shows the push running with `total` triggers. Without a journal the push
    /// still goes out; it just cannot resume after a crash.
    pub(super) async fn begin(self: &Arc<Self>, version: &str, resumed: bool, total: usize) {
        let (me, v) = (Arc::clone(self), version.to_string());
        let path = self.dir.join(format!("{}.due", self.name));
        let journal = blocking(move || if resumed { Journal::open(path) } else { Journal::begin(path, &v) }).await;
        *lock(&self.journal) = journal
            .map_err(|e| tracing::error!(archive = %me.name, error = %e, "cannot persist the due push; pushing anyway"))
            .ok();
        let progress = PushProgress {
            version: Some(version.to_string()),
            started_at: Timestamp(SystemTime::now()),
            total,
            done: vec![],
        };
        self.status.archive(&self.name, |a| a.push = Some(progress));
    }

    /// A trigger of the running push ended: journalled when final, shown in the progress.
    pub(super) fn trigger_ended(&self, row: &TriggerReport) {
        if is_final(row)
            && let Some(journal) = lock(&self.journal).as_ref()
        {
            journal.record_done(&row.mirror);
        }
        self.status.archive(&self.name, |a| {
            if let Some(p) = a.push.as_mut() {
                p.done.push(row.clone());
            }
        });
    }

    /// The push ended: its report is stored; unless it was interrupted (then it stays due and
    /// resumes at the next start), its version is recorded as pushed and the journal cleared.
    /// Returns the version pushed before, and what storing the report left behind.
    pub(super) async fn finish(self: &Arc<Self>, report: &Report) -> (Option<String>, crate::push::Stored) {
        let interrupted = report.triggers.iter().any(TriggerReport::is_interrupted);
        let journal = lock(&self.journal).take();
        let previous = self.pushed();
        if !interrupted {
            *lock(&self.pushed) = report.serial.clone();
        }
        let (me, stored) = (Arc::clone(self), report.clone());
        let kept = blocking(move || {
            let history = lock(&me.history).clone();
            let kept = crate::push::store(&me.state_dir, &history, &stored);
            if interrupted {
                return kept;
            }
            // In memory the version is pushed whatever the disk says: it is not pushed again
            // and again while the disk is full; after a restart it is, once.
            if let Err(e) = write_pushed(&me.dir, &me.name, stored.serial.as_deref()) {
                tracing::error!(archive = %me.name, error = %e, "cannot record the pushed version");
            }
            if let Some(Err(e)) = journal.map(Journal::finish) {
                tracing::error!(archive = %me.name, error = %e, "cannot clear the due push");
            }
            kept
        })
        .await;
        let pushed = self.pushed();
        self.status.archive(&self.name, |a| {
            a.push = None;
            a.pushed_version = pushed;
            a.last_report = Some(report.clone());
        });
        (previous, kept)
    }

    /// A push its `before_push` hook vetoed: its report (every trigger skipped) is stored and
    /// shown; nothing is recorded as pushed, nothing journalled.
    pub(super) async fn vetoed(self: &Arc<Self>, report: &Report) {
        let (me, stored) = (Arc::clone(self), report.clone());
        blocking(move || {
            let history = lock(&me.history).clone();
            crate::push::store(&me.state_dir, &history, &stored);
        })
        .await;
        self.status.archive(&self.name, |a| a.last_report = Some(report.clone()));
    }

    /// Shows the propagation being followed (or none).
    pub(super) fn show_propagation(&self, progress: Option<PropagationProgress>) {
        self.status.archive(&self.name, |a| a.propagation = progress);
    }

    /// New rows of the propagation of the push started at `started_at`, if it is still the one
    /// shown.
    pub(super) fn show_propagation_rows(&self, started_at: Timestamp, rows: Vec<Propagated>) {
        self.status.archive(&self.name, |a| {
            if let Some(p) = a.propagation.as_mut().filter(|p| p.started_at == started_at) {
                p.rows = rows;
            }
        });
    }

    /// The propagation of `report` has ended: into the last report shown when it is that push,
    /// no longer shown as running.
    pub(super) fn propagation_ended(&self, report: &Report) {
        self.status.archive(&self.name, |a| {
            if let Some(shown) = a.last_report.as_mut().filter(|r| r.started_at == report.started_at) {
                shown.propagation = report.propagation.clone();
            }
            if a.propagation.as_ref().is_some_and(|p| Some(&p.version) == report.serial.as_ref()) {
                a.propagation = None;
            }
        });
    }

    /// Applies `change` to the last report shown when it is the push that started at
    /// `started_at`; the changed report, if it changed, is shown and returned.
    pub(super) fn change_last_report(&self, change: impl FnOnce(&mut Report) -> bool) -> Option<Report> {
        let mut changed = None;
        self.status.archive(&self.name, |a| {
            let Some(report) = a.last_report.as_mut() else { return };
            if change(report) {
                changed = Some(report.clone());
            }
        });
        changed
    }

    /// Writes what was learned after a push (its propagation, a late ack) into the stored copy
    /// of `report`; a failure is logged, naming `what`.
    pub(super) async fn store_again(self: &Arc<Self>, report: Report, what: &'static str) {
        let me = Arc::clone(self);
        blocking(move || {
            if let Err(e) = lock(&me.history).update(&report) {
                tracing::error!(archive = %me.name, error = %e, "cannot add {what} to the stored report");
            }
        })
        .await;
    }
}

/// A row is final for the journal when the mirror will get nothing more in this push and it was
/// not cut short by shutdown (cut-short triggers are resent on resume). A deferred one is not:
/// until the push ends it is kept nowhere else, so a resumed push defers it again (its rate
/// limit is persisted) rather than lose it.
fn is_final(row: &TriggerReport) -> bool {
    // A pending MQTT stage 1 is followed by stage 2 too (the engine publishes it).
    let more_to_come = row.stage == Stage::Stage1 && matches!(row.outcome, Outcome::Ok | Outcome::Pending);
    !more_to_come && !row.is_interrupted() && row.outcome != Outcome::Deferred
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `None` if the daemon never ran for this archive, `Some(None)` if it ran while the archive had
/// no trace file.
fn read_pushed(state_dir: &Path, dir: &Path, archive: &str) -> std::io::Result<Option<Option<String>>> {
    let path = dir.join(format!("{archive}.pushed"));
    let bytes = match crate::sys::fsutil::read_bounded(&path, crate::sys::fsutil::limit::SECRET) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(std::io::Error::new(e.kind(), crate::sys::owner::unreadable_state(&path, state_dir, &e)));
        }
    };
    let pushed: Pushed = serde_json::from_slice(&bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not a pushed-version file: {e}", path.display()),
        )
    })?;
    Ok(Some(pushed.version))
}

fn write_pushed(dir: &Path, archive: &str, version: Option<&str>) -> std::io::Result<()> {
    let body = serde_json::to_vec(&Pushed { version: version.map(str::to_string) })?;
    write_atomic(&dir.join(format!("{archive}.pushed")), &body)
}

fn read_due(path: &Path) -> Option<Due> {
    let text = std::fs::read_to_string(path).ok()?;
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

/// The journal of one due push.
#[derive(Debug)]
struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    /// Persists "push of `version` due" (before anything is sent).
    fn begin(path: PathBuf, version: &str) -> std::io::Result<Self> {
        let line = serde_json::to_string(&Line::Version(version.to_string()))?;
        write_atomic(&path, format!("{line}\n").as_bytes())?;
        Journal::open(path)
    }

    /// Reopens the journal of a due push to resume it.
    fn open(path: PathBuf) -> std::io::Result<Self> {
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(Journal { path, file: Mutex::new(file) })
    }

    /// Records that `mirror`'s trigger has ended and must not be sent again on resume.
    fn record_done(&self, mirror: &str) {
        let Ok(line) = serde_json::to_string(&Line::Done(mirror.to_string())) else { return };
        if let Err(e) = writeln!(lock(&self.file), "{line}") {
            tracing::error!(path = %self.path.display(), error = %e, "cannot record a delivered trigger");
        }
    }

    /// The push is complete: nothing is due any more.
    fn finish(self) -> std::io::Result<()> {
        std::fs::remove_file(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_push_survives_and_lists_what_was_done() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = dir.path().join("daemon");
        assert_eq!(read_pushed(dir.path(), &daemon, "debian").unwrap(), None);
        write_pushed(&daemon, "debian", Some("1")).unwrap();
        assert_eq!(read_pushed(dir.path(), &daemon, "debian").unwrap(), Some(Some("1".into())));
        let path = daemon.join("debian.due");
        let journal = Journal::begin(path.clone(), "2").unwrap();
        journal.record_done("a");
        journal.record_done("b");
        drop(journal);
        let due = read_due(&path).unwrap();
        assert_eq!(due, Due { version: "2".into(), done: ["a".to_string(), "b".to_string()].into() });
        let journal = Journal::open(path.clone()).unwrap();
        journal.record_done("c");
        assert_eq!(read_due(&path).unwrap().done.len(), 3);
        journal.finish().unwrap();
        assert_eq!(read_due(&path), None);
    }

    #[test]
    fn an_unreadable_pushed_file_is_an_error_not_a_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = dir.path().join("daemon");
        std::fs::create_dir_all(&daemon).unwrap();
        std::fs::write(daemon.join("debian.pushed"), b"not json").unwrap();
        let e = read_pushed(dir.path(), &daemon, "debian").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("debian.pushed"), "{e}");
    }
}
