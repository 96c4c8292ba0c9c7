//! Archive versions and update completion.
//!
//! An update is *complete* when the archive's version (from its trace file) differs from the last
//! completed one, no lock glob matches under its root, and both have held for `settle`. The
//! [`Watcher`] is woken by inotify on the few directories that matter (never recursively: archives
//! hold millions of files) and by a slow poll for file systems without inotify (NFS).

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::vocab::clock::later;
use tokio_util::sync::CancellationToken;

use crate::config::Archive;

/// The archive's version: the `Archive serial:` line of its trace file, else the trace's first
/// line, else a hash of its content. `None` when there is no trace file.
pub fn read_version(archive: &Archive) -> Option<String> {
    let text =
        crate::sys::fsutil::read_bounded(&archive.root.join(&archive.trace), crate::sys::fsutil::limit::TRACE).ok()?;
    Some(version_of(&text))
}

/// The version of a trace file's content.
pub fn version_of(content: &[u8]) -> String {
    let text = String::from_utf8_lossy(content);
    if let Some(serial) = text.lines().find_map(|l| l.strip_prefix("Archive serial:")) {
        return serial.trim().to_string();
    }
    match text.lines().next().map(str::trim) {
        Some(first) if !first.is_empty() => first.to_string(),
        _ => {
            let digest = Sha256::digest(content);
            format!("sha256:{}", digest.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>())
        }
    }
}

/// What the archive looks like right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// Its version, if the trace file exists.
    pub version: Option<String>,
    /// Whether any lock glob matches.
    pub locked: bool,
}

/// Reads the version and checks the lock globs.
pub fn observe(archive: &Archive) -> Observation {
    Observation { version: read_version(archive), locked: is_locked(archive) }
}

fn is_locked(archive: &Archive) -> bool {
    let root = glob::Pattern::escape(&archive.root.to_string_lossy());
    archive
        .locks
        .iter()
        .any(|pattern| glob::glob(&format!("{root}/{pattern}")).is_ok_and(|mut matches| matches.any(|m| m.is_ok())))
}

/// Completion detection for one archive, fed with observations and the time they were made.
#[derive(Debug, Clone)]
pub struct Settle {
    settle: Duration,
    completed: Option<String>,
    candidate: Option<(String, Instant)>,
}

/// What an observation means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settling {
    /// Nothing new, or an update is in progress.
    Idle,
    /// A new version, unlocked: complete at this instant if nothing changes.
    SettlesAt(Instant),
    /// A new version has been stable and unlocked for `settle`.
    Complete(String),
}

impl Settle {
    /// Detection starting from `completed`, the version already dealt with.
    pub fn new(settle: Duration, completed: Option<String>) -> Self {
        Settle { settle, completed, candidate: None }
    }

    /// Feeds one observation made at `now`.
    pub fn update(&mut self, obs: &Observation, now: Instant) -> Settling {
        let fresh = match &obs.version {
            Some(v) if !obs.locked && self.completed.as_ref() != Some(v) => v,
            _ => {
                self.candidate = None;
                return Settling::Idle;
            }
        };
        match &self.candidate {
            Some((v, since)) if v == fresh => {
                let settles_at = later(*since, self.settle);
                if now >= settles_at {
                    self.completed = Some(fresh.clone());
                    self.candidate = None;
                    Settling::Complete(fresh.clone())
                } else {
                    Settling::SettlesAt(settles_at)
                }
            }
            _ => {
                self.candidate = Some((fresh.clone(), now));
                Settling::SettlesAt(later(now, self.settle))
            }
        }
    }
}

/// What a watcher publishes: the latest observation and the newest completed version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchState {
    /// The latest observation.
    pub observed: Observation,
    /// The newest version whose update completed (or the starting version).
    pub completed: Option<String>,
}

/// Watches one archive until cancelled, publishing into `tx`.
pub struct Watcher {
    archive: Archive,
    settle: Settle,
}

impl Watcher {
    /// A watcher that considers `completed` already dealt with.
    pub fn new(archive: Archive, completed: Option<String>) -> Self {
        let settle = Settle::new(archive.settle, completed);
        Watcher { archive, settle }
    }

    /// Runs until `stop`: inotify wakes it, the poll interval backs inotify up, and a timer fires
    /// when a candidate version would have settled.
    pub async fn run(mut self, tx: watch::Sender<WatchState>, stop: CancellationToken) {
        let (wake_tx, mut wake_rx) = mpsc::unbounded_channel();
        // Kept alive for the watcher's lifetime; None when inotify is unavailable (poll only).
        let _fs = fs_watcher(&self.archive, wake_tx);
        let mut poll = tokio::time::interval(self.archive.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let observed = observe(&self.archive);
            let deadline = match self.settle.update(&observed, Instant::now()) {
                Settling::Complete(version) => {
                    tracing::info!(archive = %self.archive.name, %version, "update complete");
                    tx.send_modify(|s| s.completed = Some(version));
                    None
                }
                Settling::SettlesAt(at) => Some(at),
                Settling::Idle => None,
            };
            tx.send_if_modified(|s| {
                let changed = s.observed != observed;
                s.observed = observed;
                changed
            });
            let settle_timer = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = poll.tick() => {}
                Some(()) = wake_rx.recv() => {
                    // Coalesce a burst of events into one look.
                    while wake_rx.try_recv().is_ok() {}
                }
                _ = settle_timer => {}
            }
        }
    }
}

/// inotify on the archive root, the trace file's directory and each lock glob's directory.
fn fs_watcher(archive: &Archive, wake: mpsc::UnboundedSender<()>) -> Option<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| changes_content(&e.kind)) {
            let _ = wake.send(());
        }
    })
    .map_err(|e| tracing::warn!(archive = %archive.name, error = %e, "inotify unavailable, polling only"))
    .ok()?;
    for dir in watched_dirs(archive) {
        // A directory that does not exist yet is covered by the poll.
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::debug!(dir = %dir.display(), error = %e, "not watched");
        }
    }
    Some(watcher)
}

/// Whether an event can change an observation. Opening and reading files are events too
/// (`Access`), and the watcher itself reads the trace file: waking on those would spin.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    match kind {
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        // A writer closing the file: its content is final now.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        _ => false,
    }
}

/// The directories whose changes can change an observation.
pub fn watched_dirs(archive: &Archive) -> Vec<PathBuf> {
    let mut dirs = vec![archive.root.clone()];
    let mut add = |rel: &Path| {
        let parent = rel.parent().unwrap_or(Path::new(""));
        // Only the literal part of a glob's directory can be watched.
        let literal: PathBuf =
            parent.components().take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '['])).collect();
        let dir = archive.root.join(literal);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    };
    add(&archive.trace);
    for lock in &archive.locks {
        add(Path::new(lock));
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(version: &str, locked: bool) -> Observation {
        Observation { version: Some(version.into()), locked }
    }

    #[test]
    fn serial_line_then_first_line_then_hash() {
        let trace = b"Wed Nov 25 12:00:03 UTC 2026\nDate: x\nArchive serial: 2026112501\nCreator: ftpsync\n";
        assert_eq!(version_of(trace), "2026112501");
        assert_eq!(version_of(b"Wed Nov 25 12:00:03 UTC 2026\n"), "Wed Nov 25 12:00:03 UTC 2026");
        assert!(version_of(b"\n\n").starts_with("sha256:"));
        assert_ne!(version_of(b"\n\n"), version_of(b"\n\n\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_version_completes_only_after_settle_unlocked() {
        let settle = Duration::from_secs(30);
        let mut s = Settle::new(settle, Some("1".into()));
        let t0 = Instant::now();
        assert_eq!(s.update(&obs("1", false), t0), Settling::Idle);
        // New serial while the lock is held: not complete, however long.
        assert_eq!(s.update(&obs("2", true), t0), Settling::Idle);
        assert_eq!(s.update(&obs("2", true), t0 + settle * 10), Settling::Idle);
        // Lock gone: the settle period starts now.
        let t1 = t0 + settle * 10;
        assert_eq!(s.update(&obs("2", false), t1), Settling::SettlesAt(t1 + settle));
        assert_eq!(s.update(&obs("2", false), t1 + settle / 2), Settling::SettlesAt(t1 + settle));
        assert_eq!(s.update(&obs("2", false), t1 + settle), Settling::Complete("2".into()));
        // Completed once; the same version is old news.
        assert_eq!(s.update(&obs("2", false), t1 + settle * 2), Settling::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_or_a_lock_during_settle_restarts_it() {
        let settle = Duration::from_secs(30);
        let mut s = Settle::new(settle, None);
        let t0 = Instant::now();
        assert_eq!(s.update(&obs("2", false), t0), Settling::SettlesAt(t0 + settle));
        let t1 = t0 + Duration::from_secs(20);
        assert_eq!(s.update(&obs("3", false), t1), Settling::SettlesAt(t1 + settle));
        let t2 = t1 + Duration::from_secs(20);
        assert_eq!(s.update(&obs("3", true), t2), Settling::Idle);
        let t3 = t2 + Duration::from_secs(1);
        assert_eq!(s.update(&obs("3", false), t3), Settling::SettlesAt(t3 + settle));
        assert_eq!(s.update(&obs("3", false), t3 + settle), Settling::Complete("3".into()));
    }

    #[test]
    fn watches_root_trace_dir_and_literal_lock_dirs_only() {
        let archive = Archive {
            name: "debian".into(),
            root: "/srv/debian".into(),
            trace: "project/trace/master".into(),
            locks: vec!["Archive-Update-in-Progress-*".into(), "project/trace/.lock".into(), "a/*/b/x".into()],
            settle: Duration::from_secs(1),
            poll: Duration::from_secs(60),
            max_lag: crate::config::defaults::MAX_LAG,
            propagation_timeout: Duration::from_secs(6 * 3600),
            identity: None,
            next_identity: None,
            source_address: None,
            forced_command: None,
            notify: None,
            hooks: None,
        };
        let dirs: Vec<String> = watched_dirs(&archive).iter().map(|d| d.display().to_string()).collect();
        assert_eq!(dirs, ["/srv/debian", "/srv/debian/project/trace", "/srv/debian/a"]);
    }

    #[test]
    fn reading_does_not_wake_the_watcher_but_writing_does() {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind};
        assert!(!changes_content(&EventKind::Access(AccessKind::Open(AccessMode::Read))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Close(AccessMode::Read))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Read)));
        assert!(changes_content(&EventKind::Access(AccessKind::Close(AccessMode::Write))));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Data(DataChange::Any))));
        assert!(changes_content(&EventKind::Create(CreateKind::File)));
    }

    #[test]
    fn lock_globs_match_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive {
            name: "d".into(),
            root: dir.path().to_path_buf(),
            trace: "trace".into(),
            locks: vec!["Archive-Update-in-Progress-*".into()],
            settle: Duration::from_secs(1),
            poll: Duration::from_secs(60),
            max_lag: crate::config::defaults::MAX_LAG,
            propagation_timeout: Duration::from_secs(6 * 3600),
            identity: None,
            next_identity: None,
            source_address: None,
            forced_command: None,
            notify: None,
            hooks: None,
        };
        assert_eq!(observe(&archive), Observation { version: None, locked: false });
        std::fs::write(dir.path().join("trace"), "Archive serial: 7\n").unwrap();
        std::fs::write(dir.path().join("Archive-Update-in-Progress-mirror"), "").unwrap();
        assert_eq!(observe(&archive), Observation { version: Some("7".into()), locked: true });
    }
}
