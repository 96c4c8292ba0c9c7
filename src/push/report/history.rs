//! Reports kept in `state_dir/reports/`: one file per push, written atomically, the newest
//! `status.history` of them kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use super::Report;
use crate::vocab::model::Timestamp;
use crate::vocab::units::millis;

/// Reports kept in `state_dir/reports`, newest `keep` of them.
#[derive(Debug, Clone)]
pub struct History {
    dir: PathBuf,
    keep: usize,
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Milliseconds since the Unix epoch: the precision reports are stored and named with.
fn unix_ms(t: Timestamp) -> u64 {
    t.0.duration_since(UNIX_EPOCH).map(millis).unwrap_or(0)
}

impl History {
    /// The history under `state_dir`.
    pub fn new(state_dir: &Path, keep: usize) -> Self {
        History { dir: state_dir.join("reports"), keep: keep.max(1) }
    }

    /// Replaces the stored copy of `report` (the same archive, start and end) with `report` as it
    /// is now — the daemon adds the propagation it followed after the push. Nothing is written
    /// when the copy has been pruned meanwhile.
    pub fn update(&self, report: &Report) -> std::io::Result<()> {
        let ms = unix_ms(report.finished_at);
        let (prefix, suffix) = (format!("{ms:013}-"), format!("-{}.json", report.archive));
        for path in self.files()? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if !(name.starts_with(&prefix) && name.ends_with(&suffix)) {
                continue;
            }
            let stored: Option<Report> = crate::sys::fsutil::read_bounded(&path, crate::sys::fsutil::limit::STATE)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            // Stored times have milliseconds: compare at that precision.
            if stored.is_some_and(|r| unix_ms(r.started_at) == unix_ms(report.started_at)) {
                return crate::sys::fsutil::write_atomic(&path, &serde_json::to_vec(report)?);
            }
        }
        Ok(())
    }

    /// The stored copy of `report` (the same archive, start and end), if it is still there.
    pub fn file_of(&self, report: &Report) -> Option<PathBuf> {
        let ms = unix_ms(report.finished_at);
        let (prefix, suffix) = (format!("{ms:013}-"), format!("-{}.json", report.archive));
        self.files().ok()?.into_iter().rev().find(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with(&prefix)
                && name.ends_with(&suffix)
                && read_report(path).is_some_and(|r| unix_ms(r.started_at) == unix_ms(report.started_at))
        })
    }

    /// Writes `report` atomically (temp file + rename), then drops the oldest beyond `keep`.
    pub fn save(&self, report: &Report) -> std::io::Result<PathBuf> {
        let ms = unix_ms(report.finished_at);
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let name = format!("{ms:013}-{:07}-{seq:04}-{}.json", std::process::id(), report.archive);
        let path = self.dir.join(&name);
        crate::sys::fsutil::write_atomic(&path, &serde_json::to_vec(report)?)?;
        self.prune()?;
        Ok(path)
    }

    fn files(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|e| e == "json")
                        && !p.file_name().and_then(|n| n.to_str()).unwrap_or(".").starts_with('.')
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        files.sort();
        Ok(files)
    }

    fn prune(&self) -> std::io::Result<()> {
        let files = self.files()?;
        let excess = files.len().saturating_sub(self.keep);
        for old in &files[..excess] {
            // Another process may have pruned it first.
            let _ = std::fs::remove_file(old);
        }
        Ok(())
    }

    /// The newest `n` report files of each archive, oldest first: a reader of recent history
    /// (the status page's grid) parses no more than it shows.
    pub fn recent_files(&self, n: usize) -> std::io::Result<BTreeMap<String, Vec<PathBuf>>> {
        let mut recent: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for path in self.files()?.into_iter().rev() {
            let Some(archive) = archive_of(&path) else { continue };
            let files = recent.entry(archive).or_default();
            if files.len() < n {
                files.push(path);
            }
        }
        for files in recent.values_mut() {
            files.reverse();
        }
        Ok(recent)
    }

    /// Every stored report, oldest first; unreadable files are skipped.
    pub fn all(&self) -> std::io::Result<Vec<Report>> {
        Ok(self.files()?.iter().filter_map(|p| read_report(p)).collect())
    }

    /// Stored reports, newest first, read one at a time (a report of 10,000 mirrors is
    /// megabytes: readers that need only the latest should not parse the whole history).
    pub fn newest_first(&self) -> std::io::Result<impl Iterator<Item = Report>> {
        Ok(self.files()?.into_iter().rev().filter_map(|p| read_report(&p)))
    }

    /// The newest readable report of each archive: files are parsed newest first, and an
    /// archive's older report stands in for a newer one that cannot be read.
    pub fn latest_per_archive(&self) -> std::io::Result<BTreeMap<String, Report>> {
        let mut latest: BTreeMap<String, Report> = BTreeMap::new();
        for path in self.files()?.into_iter().rev() {
            let Some(archive) = archive_of(&path) else { continue };
            if latest.contains_key(&archive) {
                continue;
            }
            match read_report(&path) {
                Some(report) => {
                    latest.insert(archive, report);
                }
                None => tracing::warn!(file = %path.display(), "unreadable report skipped"),
            }
        }
        Ok(latest)
    }
}

/// A stored report; `None` when unreadable (a half-written file of a crashed writer cannot
/// exist, writes are atomic, but a hand-edited one can).
pub fn read_report(path: &Path) -> Option<Report> {
    let bytes = crate::sys::fsutil::read_bounded(path, crate::sys::fsutil::limit::STATE).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The archive a report file belongs to, from its name `MS-PID-SEQ-ARCHIVE.json`.
fn archive_of(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    stem.splitn(4, '-').nth(3).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn history_is_bounded_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(dir.path(), 3);
        for i in 0..5 {
            let r = Report::new("debian", Some(format!("{i}")), "cli", false, SystemTime::now(), vec![]);
            h.save(&r).unwrap();
        }
        let all = h.all().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(h.latest_per_archive().unwrap()["debian"].serial.as_deref(), Some("4"));
        let newest: Vec<_> = h.newest_first().unwrap().map(|r| r.serial.unwrap()).collect();
        assert_eq!(newest, ["4", "3", "2"]);
    }

    #[test]
    fn latest_per_archive_tells_archives_apart_by_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(dir.path(), 10);
        for (archive, serial) in [("debian-security", "1"), ("debian", "2"), ("debian-security", "3")] {
            h.save(&Report::new(archive, Some(serial.into()), "cli", false, SystemTime::now(), vec![])).unwrap();
        }
        let latest = h.latest_per_archive().unwrap();
        assert_eq!(latest.len(), 2);
        assert_eq!(latest["debian"].serial.as_deref(), Some("2"));
        assert_eq!(latest["debian-security"].serial.as_deref(), Some("3"));
    }

    /// A corrupt newest report is skipped: the one before it is the archive's latest.
    #[test]
    fn a_corrupt_newest_report_leaves_the_one_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(dir.path(), 10);
        h.save(&Report::new("debian", Some("1".into()), "cli", false, SystemTime::now(), vec![])).unwrap();
        let newest = h.save(&Report::new("debian", Some("2".into()), "cli", false, SystemTime::now(), vec![])).unwrap();
        std::fs::write(&newest, b"{half a report").unwrap();
        assert_eq!(h.latest_per_archive().unwrap()["debian"].serial.as_deref(), Some("1"));
    }
}
