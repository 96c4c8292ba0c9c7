//! The recent pushes the status page shows: the newest [`PUSHES`] stored reports of each archive,
//! each kept as a compact [`Column`] (one [`Row`] per trigger, the propagation's [`Trend`]).
//!
//! The reports in `state_dir/reports/` stay the one record of what happened (the CLI's pushes
//! show too); this is a cache of what the page needs from them, parsed once per file version
//! (a report rewritten with its followed propagation is parsed again), so that a page at 1,000
//! mirrors × 50 pushes renders without parsing 50 reports.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::push::report::{History, Report, TriggerReport};
use crate::vocab::model::{ErrorClass, KeyRole, Outcome, SkipReason, Stage, Timestamp};

/// Pushes shown per archive: the grid's columns, and each mirror's recent triggers.
pub const PUSHES: usize = 50;

/// The longest error kept per trigger (the report keeps it whole).
const ERROR_CHARS: usize = 300;

/// One stored push of one archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its archive.
    pub archive: String,
    /// The version pushed.
    pub serial: Option<String>,
    /// Who pushed it (`daemon`, `cli`, …).
    pub origin: String,
    /// When it started.
    pub started_at: Timestamp,
    /// How long it took, milliseconds.
    pub duration_ms: u64,
    /// Its triggers by mirror (staged mirrors have two); mirrors it left out have none.
    pub rows: BTreeMap<String, Vec<Row>>,
    /// Its propagation, when it was followed.
    pub trend: Option<Trend>,
}

/// One trigger of a push, as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Stage sent.
    pub stage: Stage,
    /// How it ended.
    pub outcome: Outcome,
    /// Attempts made.
    pub attempts: u32,
    /// From first attempt to outcome, milliseconds.
    pub duration_ms: u64,
    /// Class of the last error.
    pub error_class: Option<ErrorClass>,
    /// The last error (or note), shortened.
    pub error: Option<String>,
    /// Why it was not sent.
    pub skip_reason: Option<SkipReason>,
    /// Which key the downstream accepted.
    pub key_role: Option<KeyRole>,
}

/// How long a push took to reach its followed mirrors: times from its start until 50 %, 90 % and
/// all of them served it; `None` where that share was never reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trend {
    /// Mirrors followed.
    pub followed: usize,
    /// Until half were live, milliseconds.
    pub p50: Option<u64>,
    /// Until nine in ten were live.
    pub p90: Option<u64>,
    /// Until every one was live.
    pub p100: Option<u64>,
}

impl Column {
    /// The page's view of `report`.
    pub fn of(report: &Report) -> Column {
        let mut rows: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        for t in report.triggers.iter().filter(|t| t.is_listed()) {
            rows.entry(t.mirror.clone()).or_default().push(Row::of(t));
        }
        Column {
            archive: report.archive.clone(),
            serial: report.serial.clone(),
            origin: report.origin.clone(),
            started_at: report.started_at,
            duration_ms: report.duration_ms,
            rows,
            trend: Trend::of(report),
        }
    }

    /// The outcome shown for `mirror` in this push: its worst trigger's (failed, then pending,
    /// deferred, skipped, ok); `None` when the push left it out.
    pub fn outcome(&self, mirror: &str) -> Option<&Row> {
        self.rows.get(mirror)?.iter().max_by_key(|r| severity(r.outcome))
    }
}

/// How bad an outcome is, for the one a cell shows.
fn severity(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Ok | Outcome::Planned => 0,
        Outcome::Skipped => 1,
        Outcome::Deferred => 2,
        Outcome::Pending => 3,
        Outcome::Failed => 4,
    }
}

impl Row {
    fn of(t: &TriggerReport) -> Row {
        let error = t.error.as_deref().or(t.note.as_deref().filter(|_| t.outcome != Outcome::Ok));
        Row {
            stage: t.stage,
            outcome: t.outcome,
            attempts: t.attempts,
            duration_ms: t.duration_ms,
            error_class: t.error_class,
            error: error.map(|e| shorten(e, ERROR_CHARS)),
            skip_reason: t.skip_reason,
            key_role: t.key_role,
        }
    }
}

/// `s` cut to `max` characters, with `…` where it was cut.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

impl Trend {
    /// The trend point of `report`, if its propagation was followed.
    pub fn of(report: &Report) -> Option<Trend> {
        // Of every mirror the push was to reach: one whose trigger failed was never live.
        let followed = report.followed();
        if followed == 0 {
            return None;
        }
        let mut live: Vec<u64> = report
            .propagation
            .iter()
            .filter_map(|p| if p.live_before_push { Some(0) } else { p.live_after_ms })
            .collect();
        live.sort_unstable();
        // The time the `share` (in percent) of the followed mirrors was live: the k-th arrival.
        let at = |share: usize| live.get((followed * share).div_ceil(100).max(1) - 1).copied();
        Some(Trend { followed, p50: at(50), p90: at(90), p100: at(100) })
    }
}

/// Every archive's recent pushes, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Grid {
    /// Per archive, at most [`PUSHES`] columns, oldest first.
    pub columns: BTreeMap<String, Vec<Arc<Column>>>,
    /// Why the report history could not be read, when it could not (the page says so).
    pub error: Option<String>,
    /// Stored reports among the newest that could not be read (the page says so).
    pub unreadable: usize,
}

impl Grid {
    /// `archive`'s columns, oldest first (none when it has no stored push).
    pub fn of(&self, archive: &str) -> &[Arc<Column>] {
        self.columns.get(archive).map(Vec::as_slice).unwrap_or_default()
    }
}

/// What tells a rewritten report file from the one parsed: inode, size, modification and change
/// times.
type Stamp = (u64, u64, i64, i64, i64, i64);

/// A report file's column as parsed (none: a dry run), and the file's stamp then. Files that
/// could not be read are not kept: read again next time (the cause may pass), and counted.
type Parsed = HashMap<PathBuf, (Stamp, Option<Arc<Column>>)>;

/// The parsed columns by report file, kept between page loads.
#[derive(Debug, Default)]
pub struct GridCache {
    parsed: Mutex<Parsed>,
}

impl GridCache {
    /// The grid of `history` now: files parsed before and unchanged are not parsed again; files
    /// that fell out of the window are forgotten. Unreadable reports and dry runs are left out.
    pub fn grid(&self, history: &History) -> std::io::Result<Grid> {
        use std::os::unix::fs::MetadataExt as _;
        let recent = history.recent_files(PUSHES)?;
        let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        let mut kept = Parsed::new();
        let mut grid = Grid::default();
        for (archive, files) in recent {
            let mut columns = Vec::with_capacity(files.len());
            for path in files {
                // Pruned since it was listed: left out.
                let Ok(meta) = std::fs::metadata(&path) else { continue };
                let stamp = (meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec(), meta.ctime(), meta.ctime_nsec());
                let column = match parsed.remove(&path) {
                    Some((seen, column)) if seen == stamp => column,
                    _ => match crate::push::report::history::read_report(&path) {
                        Some(r) if r.dry_run => None,
                        Some(r) => Some(Arc::new(Column::of(&r))),
                        None => {
                            grid.unreadable += 1;
                            continue;
                        }
                    },
                };
                columns.extend(column.clone());
                kept.insert(path, (stamp, column));
            }
            grid.columns.insert(archive, columns);
        }
        *parsed = kept;
        Ok(grid)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::push::report::Propagated;

    fn propagated(mirror: &str, live_after_s: Option<u64>) -> Propagated {
        Propagated {
            mirror: mirror.into(),
            live_after_ms: live_after_s.map(|s| s * 1000),
            live_before_push: false,
            delivered_after_ms: Some(10),
            sync_ms: None,
            checks: 1,
            error: None,
        }
    }

    /// Ten followed mirrors live after 1..=9 s and one never: half at the 5th arrival, nine in
    /// ten at the 9th, all never.
    #[test]
    fn the_trend_takes_the_kth_arrival_and_names_a_share_never_reached() {
        let mut report = Report::new("debian", Some("1".into()), "daemon", false, SystemTime::now(), vec![]);
        report.propagation = (1..=9).map(|s| propagated(&format!("m{s}"), Some(s))).collect();
        report.propagation.push(propagated("never", None));
        let t = Trend::of(&report).unwrap();
        assert_eq!((t.followed, t.p50, t.p90, t.p100), (10, Some(5_000), Some(9_000), None));
        report.propagation.pop();
        let t = Trend::of(&report).unwrap();
        assert_eq!((t.followed, t.p50, t.p90, t.p100), (9, Some(5_000), Some(9_000), Some(9_000)));
        // Nine of ten triggers failed, the one delivered went live: not a perfect push.
        report.propagation.truncate(1);
        report.propagation_followed = Some(10);
        let t = Trend::of(&report).unwrap();
        assert_eq!((t.followed, t.p50, t.p90, t.p100), (10, None, None, None));
        report.propagation.clear();
        report.propagation_followed = None;
        assert_eq!(Trend::of(&report), None);
    }

    /// A staged mirror's cell is its worst stage; a mirror the push left out has none.
    #[test]
    fn a_cell_shows_the_worst_stage_and_a_left_out_mirror_none() {
        let t = |stage, outcome| TriggerReport::new("staged", "ssh", "u@h".into(), stage, outcome);
        let mut left_out = TriggerReport::skipped("other", "http", "x".into(), Stage::All, SkipReason::NotSelected);
        left_out.attempts = 0;
        let report = Report::new(
            "debian",
            Some("1".into()),
            "cli",
            false,
            SystemTime::now(),
            vec![t(Stage::Stage1, Outcome::Ok), t(Stage::Stage2, Outcome::Failed), left_out],
        );
        let c = Column::of(&report);
        assert_eq!(c.outcome("staged").map(|r| (r.stage, r.outcome)), Some((Stage::Stage2, Outcome::Failed)));
        assert!(c.outcome("other").is_none());
    }

    /// The cache parses a file once, again when it is rewritten, and forgets pruned ones.
    #[test]
    fn the_cache_follows_rewritten_and_pruned_reports() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::new(dir.path(), 3);
        let cache = GridCache::default();
        let mut last = None;
        for i in 0..4 {
            let at = SystemTime::now() + Duration::from_secs(i);
            let r = Report::new("debian", Some(format!("{i}")), "daemon", false, at, vec![]);
            history.save(&r).unwrap();
            last = Some(r);
        }
        let grid = cache.grid(&history).unwrap();
        let serials: Vec<_> = grid.of("debian").iter().map(|c| c.serial.clone().unwrap()).collect();
        assert_eq!(serials, ["1", "2", "3"]);
        let mut last = last.unwrap();
        last.propagation.push(propagated("m", Some(4)));
        history.update(&last).unwrap();
        let grid = cache.grid(&history).unwrap();
        assert_eq!(grid.of("debian")[2].trend.map(|t| t.p100), Some(Some(4_000)), "the rewritten report is read again");
        assert_eq!(cache.parsed.lock().unwrap().len(), 3);

        // A report that cannot be read is counted, not cached: mended, it shows again.
        let path = history.file_of(&last).unwrap();
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, b"{half a report").unwrap();
        let grid = cache.grid(&history).unwrap();
        assert_eq!((grid.of("debian").len(), grid.unreadable), (2, 1));
        std::fs::write(&path, good).unwrap();
        let grid = cache.grid(&history).unwrap();
        assert_eq!((grid.of("debian").len(), grid.unreadable), (3, 0));
    }
}
