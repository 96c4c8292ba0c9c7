//! Triggers a mirror's rate limit deferred: one per (archive, mirror), sent with the archive's
//! then current version once allowed. Kept in `state_dir/daemon/deferred.json`, replaced only
//! under `deferred.lock` (every process takes it), so that a restart sends them too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::blocking;
use super::status::{DeferredTrigger, StatusBoard};
use crate::push::ledger::Ledger;
use crate::push::report::Report;
use crate::push::report::{History, TriggerReport};
use crate::sys::fsutil::{keep_aside, limit, lock_exclusive, read_bounded, write_atomic};
use crate::sys::owner::unreadable_state;
use crate::vocab::model::{ErrorClass, Outcome, Timestamp};

/// The file in `state_dir/daemon`.
const FILE: &str = "deferred.json";

/// Deferred triggers by (archive, mirror): when each is allowed.
pub(super) type DeferredMap = BTreeMap<(String, String), SystemTime>;

#[derive(Serialize, Deserialize)]
struct DeferredEntry {
    archive: String,
    mirror: String,
    until: Timestamp,
}

/// The daemon's deferred triggers, shown in `/status` as they change.
#[derive(Debug)]
pub(super) struct DeferredQueue {
    dir: PathBuf,
    map: Mutex<DeferredMap>,
    changed: Notify,
    status: StatusBoard,
}

impl DeferredQueue {
    /// The queue persisted under `state_dir` (empty if there is none), shown on `status`. A file
    /// that cannot be parsed is kept aside (`deferred.json.corrupt-MS`) and the queue rebuilt from
    /// the mirrors' ledger, which records every deferred trigger too; one that cannot be read is
    /// an error naming it and its fix: starting without it would drop its triggers unseen.
    pub(super) fn load(state_dir: &Path, history: &History, status: StatusBoard) -> Result<Arc<Self>, String> {
        let dir = state_dir.join("daemon");
        let map = read(&dir, state_dir, history)?;
        let queue = Arc::new(DeferredQueue { dir, map: Mutex::new(map), changed: Notify::new(), status });
        queue.show(&queue.snapshot());
        Ok(queue)
    }

    /// Keeps every deferred trigger of `report`; an older one for the same mirror already
    /// stands for it.
    pub(super) async fn keep(self: &Arc<Self>, report: &Report) {
        // And a trigger that failed because our own state could not be written (a full disk):
        // still due, tried again when its row says.
        let due = |t: &&TriggerReport| {
            t.outcome == Outcome::Deferred || (t.outcome == Outcome::Failed && t.error_class == Some(ErrorClass::State))
        };
        let fresh: Vec<_> = report
            .triggers
            .iter()
            .filter(due)
            .filter_map(|t| Some(((report.archive.clone(), t.mirror.clone()), t.deferred_until?.0)))
            .collect();
        for t in report.triggers.iter().filter(|t| t.outcome == Outcome::Failed).filter(due) {
            let until = t.deferred_until.map(|u| u.to_string()).unwrap_or_default();
            tracing::warn!(archive = %report.archive, mirror = %t.mirror, %until, "not sent, our state cannot be recorded: kept due, tried again then");
        }
        if fresh.is_empty() {
            return;
        }
        self.change(move |map| {
            for (key, until) in fresh {
                map.entry(key).or_insert(until);
            }
        })
        .await;
    }

    /// `mirrors` of `archive` got their trigger (or are gone): no longer deferred.
    pub(super) async fn sent(self: &Arc<Self>, archive: &str, mirrors: &[String]) {
        let keys: Vec<_> = mirrors.iter().map(|m| (archive.to_string(), m.clone())).collect();
        self.change(move |map| {
            for key in &keys {
                map.remove(key);
            }
        })
        .await;
    }

    /// When the next deferred trigger is allowed.
    pub(super) fn next_at(&self) -> Option<SystemTime> {
        lock(&self.map).values().min().copied()
    }

    /// Resolves when the queue changes.
    pub(super) async fn changed(&self) {
        self.changed.notified().await
    }

    /// The deferred triggers allowed at `now`, per archive.
    pub(super) fn allowed(&self, now: SystemTime) -> BTreeMap<String, Vec<String>> {
        let mut by_archive: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for ((archive, mirror), _) in lock(&self.map).iter().filter(|(_, until)| **until <= now) {
            by_archive.entry(archive.clone()).or_default().push(mirror.clone());
        }
        by_archive
    }

    /// Changes the map and writes it while holding it, off the async threads: two writers at
    /// once would otherwise race to the disk, and the older snapshot could land last.
    async fn change(self: &Arc<Self>, f: impl FnOnce(&mut DeferredMap) + Send + 'static) {
        let me = Arc::clone(self);
        let snapshot = blocking(move || {
            let mut map = lock(&me.map);
            f(&mut map);
            if let Err(e) = write(&me.dir, &map) {
                tracing::error!(error = %e, "cannot persist deferred triggers");
            }
            map.clone()
        })
        .await;
        self.show(&snapshot);
        self.changed.notify_one();
    }

    fn snapshot(&self) -> DeferredMap {
        lock(&self.map).clone()
    }

    fn show(&self, map: &DeferredMap) {
        let list = map
            .iter()
            .map(|((archive, mirror), until)| DeferredTrigger {
                archive: archive.clone(),
                mirror: mirror.clone(),
                until: Timestamp(*until),
            })
            .collect();
        self.status.set_deferred(list);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The persisted queue (see [`DeferredQueue::load`]).
fn read(dir: &Path, state_dir: &Path, history: &History) -> Result<DeferredMap, String> {
    let path = dir.join(FILE);
    // Under the lock every writer takes: a corrupt file is renamed, and its replacement written.
    let lock = dir.join("deferred.lock");
    let _held = match dir.exists() {
        true => Some(lock_exclusive(&lock).map_err(|e| unreadable_state(&lock, state_dir, &e))?),
        false => None,
    };
    let bytes = match read_bounded(&path, limit::STATE) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DeferredMap::new()),
        Err(e) => return Err(unreadable_state(&path, state_dir, &e)),
    };
    let why = match serde_json::from_slice::<Vec<DeferredEntry>>(&bytes) {
        Ok(list) => return Ok(list.into_iter().map(|e| ((e.archive, e.mirror), e.until.0)).collect()),
        Err(e) => e,
    };
    let aside = keep_aside(&path).map_err(|e| unreadable_state(&path, state_dir, &e))?;
    let ledger = Ledger::read(state_dir, history).map_err(|e| {
        format!(
            "{} was corrupt (kept as {}) and the mirrors' ledger cannot stand in: {e}",
            path.display(),
            aside.display()
        )
    })?;
    let map: DeferredMap = ledger
        .states()
        .filter_map(|m| Some(((m.archive.clone(), m.mirror.clone()), m.deferred.as_ref()?.until.0)))
        .collect();
    tracing::error!(
        file = %path.display(),
        kept_as = %aside.display(),
        error = %why,
        recovered = map.len(),
        "the deferred triggers' file is corrupt: kept aside, its triggers rebuilt from the mirrors' ledger"
    );
    // Written at once: a second restart before any change must find them too.
    if let Err(e) = write_unlocked(dir, &map) {
        tracing::error!(file = %path.display(), error = %e, "cannot persist the rebuilt deferred triggers");
    }
    Ok(map)
}

/// Replaces the persisted queue, under a file lock that every process takes, so that writers
/// never meet in the file.
fn write(dir: &Path, map: &DeferredMap) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let _lock = lock_exclusive(&dir.join("deferred.lock"))?;
    write_unlocked(dir, map)
}

/// [`write`], the lock already held (a second `flock` on it from this process would wait for
/// ever).
fn write_unlocked(dir: &Path, map: &DeferredMap) -> std::io::Result<()> {
    let list: Vec<DeferredEntry> = map
        .iter()
        .map(|((archive, mirror), until)| DeferredEntry {
            archive: archive.clone(),
            mirror: mirror.clone(),
            until: Timestamp(*until),
        })
        .collect();
    write_atomic(&dir.join(FILE), &serde_json::to_vec_pretty(&list)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_triggers_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut map = DeferredMap::new();
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_800_000_000_123);
        map.insert(("debian".into(), "m".into()), t);
        write(dir.path(), &map).unwrap();
        assert_eq!(read(dir.path(), dir.path(), &History::new(dir.path(), 10)).unwrap(), map);
    }

    #[test]
    fn concurrent_deferred_writers_never_fail_or_tear_the_file() {
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
                    let (start, writing, dir) = (&start, &writing, dir.path());
                    s.spawn(move || {
                        start.wait();
                        let errors: Vec<String> =
                            (0..300).filter_map(|_| write(dir, map).err()).map(|e| e.to_string()).collect();
                        writing.fetch_sub(1, Ordering::SeqCst);
                        errors
                    })
                })
                .collect();
            let path = dir.path().join("deferred.json");
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
        assert!(maps.contains(&read(dir.path(), dir.path(), &History::new(dir.path(), 10)).unwrap()));
    }
}
