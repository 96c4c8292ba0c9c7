//! Each mirror's lag over time, for its page's chart: one sample per freshness sweep, the newest
//! [`SAMPLES`] per mirror (a day at the default 15-minute `freshness.interval`; fewer each beyond
//! [`TOTAL`] samples in all, so that 20,000 surveyed mirrors keep 96 and more keep fewer rather
//! than outgrow the file's bound), kept by the daemon in `state_dir/freshness-history.json`
//! (written atomically after each sweep; the daemon is its one writer; about 25 bytes a sample).
//! Mirrors no longer surveyed are dropped at the next sweep.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::observe::freshness::FreshnessRow;
use crate::vocab::model::Timestamp;

/// Samples kept per mirror.
pub const SAMPLES: usize = 96;

/// Samples kept in all, every mirror together.
pub const TOTAL: usize = 2_000_000;

/// The most of the file that is read (at [`TOTAL`] samples it is about 50 MB).
const LIMIT: u64 = 64 * 1024 * 1024;

/// One sweep's reading of one mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When it was read.
    pub at: Timestamp,
    /// Its lag, milliseconds; `None` when it could not be told (unreachable, no `Date:`).
    pub lag_ms: Option<u64>,
}

/// One mirror of one archive, over time: samples as `[unix ms, lag ms or null]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Series {
    archive: String,
    mirror: String,
    samples: Vec<(u64, Option<u64>)>,
}

fn unix_ms(t: Timestamp) -> u64 {
    t.0.duration_since(UNIX_EPOCH).map(crate::vocab::units::millis).unwrap_or(0)
}

/// Every surveyed mirror's recent samples, by (archive, mirror).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LagHistory {
    series: BTreeMap<(String, String), Vec<Sample>>,
}

/// The file, under `state_dir`.
pub fn file(state_dir: &Path) -> PathBuf {
    state_dir.join("freshness-history.json")
}

impl LagHistory {
    /// The history in `state_dir`: empty when there is none yet, or why it cannot be used.
    pub fn read(state_dir: &Path) -> Result<LagHistory, String> {
        let path = file(state_dir);
        let bytes = match crate::sys::fsutil::read_bounded(&path, LIMIT) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LagHistory::default()),
            Err(e) => {
                let why = crate::sys::owner::unreadable_reason(&path, &e);
                return Err(format!("cannot read {}: {why}", path.display()));
            }
        };
        let series: Vec<Series> = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not a freshness history: {e}", path.display()))?;
        let sample =
            |(ms, lag_ms): (u64, Option<u64>)| Sample { at: Timestamp(UNIX_EPOCH + Duration::from_millis(ms)), lag_ms };
        let series = series.into_iter().map(|s| ((s.archive, s.mirror), s.samples.into_iter().map(sample).collect()));
        Ok(LagHistory { series: series.collect() })
    }

    /// Adds one sweep: a sample per row; mirrors it did not survey are dropped, each mirror's
    /// oldest samples beyond [`SAMPLES`] (or its share of [`TOTAL`]) too.
    pub fn record(&mut self, rows: &[FreshnessRow]) {
        let keep = kept_per_mirror(rows.len());
        let mut old = std::mem::take(&mut self.series);
        for r in rows {
            let key = (r.archive.clone(), r.mirror.clone());
            let mut samples = old.remove(&key).unwrap_or_default();
            samples.push(Sample { at: r.checked_at, lag_ms: r.lag_ms });
            let excess = samples.len().saturating_sub(keep);
            samples.drain(..excess);
            self.series.insert(key, samples);
        }
    }

    /// Writes it atomically to `state_dir`.
    pub fn write(&self, state_dir: &Path) -> std::io::Result<()> {
        let series: Vec<Series> = self
            .series
            .iter()
            .map(|((archive, mirror), samples)| Series {
                archive: archive.clone(),
                mirror: mirror.clone(),
                samples: samples.iter().map(|s| (unix_ms(s.at), s.lag_ms)).collect(),
            })
            .collect();
        crate::sys::fsutil::write_atomic(&file(state_dir), &serde_json::to_vec(&series)?)
    }

    /// `mirror`'s samples for `archive`, oldest first.
    pub fn of(&self, archive: &str, mirror: &str) -> &[Sample] {
        self.series.get(&(archive.to_string(), mirror.to_string())).map(Vec::as_slice).unwrap_or_default()
    }
}

/// Samples kept per mirror when `mirrors` are surveyed: [`SAMPLES`], or their share of [`TOTAL`].
fn kept_per_mirror(mirrors: usize) -> usize {
    SAMPLES.min(TOTAL / mirrors.max(1)).max(1)
}

/// Removes the lag history: nothing is surveyed any more.
pub fn forget(state_dir: &Path) -> std::io::Result<()> {
    crate::sys::fsutil::remove_if_present(&file(state_dir))
}

/// Adds the sweep `rows` to the history in `state_dir`. A history that cannot be parsed is
/// replaced (it only draws charts): said in the log, not silently.
pub fn record_sweep(state_dir: &Path, rows: &[FreshnessRow]) -> std::io::Result<()> {
    let mut history = LagHistory::read(state_dir).unwrap_or_else(|why| {
        tracing::warn!(%why, "freshness history unusable: starting it afresh");
        LagHistory::default()
    });
    history.record(rows);
    history.write(state_dir)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::observe::freshness::MirrorKind;
    use crate::vocab::model::Standing;

    fn row(mirror: &str, lag_s: Option<u64>, at: SystemTime) -> FreshnessRow {
        FreshnessRow {
            archive: "debian".into(),
            mirror: mirror.into(),
            kind: MirrorKind::Triggered,
            standing: if lag_s.is_some() { Standing::UpToDate } else { Standing::Unreachable },
            version: None,
            since: None,
            behind_versions: None,
            version_date: None,
            lag_ms: lag_s.map(|s| s * 1000),
            last_sync_ms: None,
            upstream: None,
            chain: vec![],
            checked_at: Timestamp(at),
            error: None,
        }
    }

    /// Bounded per mirror, dropped when no longer surveyed, and the same after a restart.
    #[test]
    fn the_history_is_bounded_forgets_unsurveyed_mirrors_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        for i in 0..(SAMPLES as u64 + 10) {
            let at = t0 + Duration::from_secs(900 * i);
            let mut rows = vec![row("a", Some(i), at)];
            if i < 5 {
                rows.push(row("gone", None, at));
            }
            record_sweep(dir.path(), &rows).unwrap();
        }
        let h = LagHistory::read(dir.path()).unwrap();
        let a = h.of("debian", "a");
        assert_eq!(a.len(), SAMPLES);
        assert_eq!(a.first().and_then(|s| s.lag_ms), Some(10_000), "the oldest ten dropped");
        assert_eq!(a.last().and_then(|s| s.lag_ms), Some((SAMPLES as u64 + 9) * 1000));
        assert!(h.of("debian", "gone").is_empty());
        assert_eq!(h.of("debian", "a")[0].at.0, t0 + Duration::from_secs(900 * 10), "times to the millisecond");
    }

    /// Past [`TOTAL`] samples in all, each mirror keeps its share: the file stays bounded.
    #[test]
    fn many_mirrors_keep_fewer_samples_each() {
        assert_eq!((kept_per_mirror(1), kept_per_mirror(20_000), kept_per_mirror(50_000)), (96, 96, 40));
        assert_eq!(kept_per_mirror(10_000_000), 1);
    }

    /// A corrupt file is replaced at the next sweep, and reading it says which file it is.
    #[test]
    fn a_corrupt_history_is_named_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(file(dir.path()), b"[{\"archive\": ").unwrap();
        let why = LagHistory::read(dir.path()).unwrap_err();
        assert!(why.contains("freshness-history.json is not a freshness history"), "{why}");
        record_sweep(dir.path(), &[row("a", Some(1), SystemTime::now())]).unwrap();
        assert_eq!(LagHistory::read(dir.path()).unwrap().of("debian", "a").len(), 1);
    }
}
