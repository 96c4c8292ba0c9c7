//! The report of a push: one serde model written to `state_dir/reports/`, printed as JSON or as a
//! table, and read back by `status`, `list` and the daemon's status server.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::vocab::model::{ErrorClass, Outcome, SkipReason, Stage, Timestamp};
use crate::vocab::output::{Tabular, Verdict, exit_code};
use crate::vocab::units::{format_ms, millis};

/// One trigger to one mirror (staged mirrors have one per stage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerReport {
    /// Mirror name.
    pub mirror: String,
    /// `ssh` or `http`.
    pub transport: String,
    /// Redacted target (`user@host`, `https://host/…`).
    pub target: String,
    /// Stage sent.
    pub stage: Stage,
    /// How it ended.
    pub outcome: Outcome,
    /// Attempts made (0 if never sent).
    pub attempts: u32,
    /// When the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// From first attempt to outcome, milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// Class of the last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// The last error, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Extra facts: "still running", "downstream busy, re-run queued", why skipped (in words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Why it was not sent, for `skipped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<SkipReason>,
    /// For `deferred` (and planned): when the rate limit allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_until: Option<Timestamp>,
    /// Exit status of the remote command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// HTTP status of the last answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// How long the downstream's sync took, when waited for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_duration_ms: Option<u64>,
    /// The `SHA256:…` fingerprint of the key an SSH trigger authenticated with (or would, in a
    /// dry run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The local address the trigger left from, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<IpAddr>,
}

impl TriggerReport {
    /// A row for `mirror` with nothing known yet but its outcome.
    pub fn new(mirror: &str, transport: &str, target: String, stage: Stage, outcome: Outcome) -> Self {
        TriggerReport {
            mirror: mirror.to_string(),
            transport: transport.to_string(),
            target,
            stage,
            outcome,
            attempts: 0,
            started_at: None,
            duration_ms: 0,
            error_class: None,
            error: None,
            note: None,
            skip_reason: None,
            deferred_until: None,
            exit_code: None,
            http_status: None,
            sync_duration_ms: None,
            key: None,
            source_address: None,
        }
    }

    /// A row that was not sent, for `reason`.
    pub fn skipped(mirror: &str, transport: &str, target: String, stage: Stage, reason: SkipReason) -> Self {
        TriggerReport {
            note: Some(reason.to_string()),
            skip_reason: Some(reason),
            ..TriggerReport::new(mirror, transport, target, stage, Outcome::Skipped)
        }
    }

    /// Whether tables and status list this row (a filter's left-outs are only counted).
    pub fn is_listed(&self) -> bool {
        self.skip_reason.is_none_or(SkipReason::is_listed)
    }

    /// Whether shutdown cut this trigger short (a daemon resends it).
    pub fn is_interrupted(&self) -> bool {
        self.error_class == Some(ErrorClass::Interrupted)
    }
}

/// Counts by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Delivered.
    pub ok: usize,
    /// Not delivered.
    pub failed: usize,
    /// Rate-limited.
    pub deferred: usize,
    /// Skipped.
    pub skipped: usize,
    /// Dry-run plans.
    pub planned: usize,
    /// Published to MQTT, not acknowledged in time.
    #[serde(default)]
    pub pending: usize,
}

impl Summary {
    /// Counts one more trigger that ended in `outcome`.
    pub fn count(&mut self, outcome: Outcome) {
        *match outcome {
            Outcome::Ok => &mut self.ok,
            Outcome::Failed => &mut self.failed,
            Outcome::Deferred => &mut self.deferred,
            Outcome::Skipped => &mut self.skipped,
            Outcome::Planned => &mut self.planned,
            Outcome::Pending => &mut self.pending,
        } += 1;
    }
}

/// How a mirror stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    /// It serves this archive's version.
    UpToDate,
    /// It serves an older version, not older than `max_lag`.
    Syncing,
    /// Its version is older than `max_lag`, or its age cannot be told.
    Behind,
    /// Its `master` trace could not be read.
    Unreachable,
}

impl std::fmt::Display for Standing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Standing::UpToDate => "up to date",
            Standing::Syncing => "syncing",
            Standing::Behind => "behind",
            Standing::Unreachable => "unreachable",
        })
    }
}

/// One mirror of one archive, surveyed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreshnessRow {
    /// Archive.
    pub archive: String,
    /// Mirror name.
    pub mirror: String,
    /// `triggered` (it has `ssh:`/`http:`) or `check-only`.
    pub kind: String,
    /// How it stands.
    pub standing: Standing,
    /// The version it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Since when it has served that version, as this host's sweeps saw it change (the daemon's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// How many versions this archive has pushed after the one it serves, as far as the report
    /// history goes back (absent when its version is not in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind_versions: Option<u32>,
    /// The `Date:` of that version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_date: Option<Timestamp>,
    /// How old the version it serves is, milliseconds (0 when up to date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
    /// Its last sync's duration, from its own trace, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_ms: Option<u64>,
    /// The host it syncs from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Its chain from the primary, `_hierarchy`'s mirror names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// When it was read.
    pub checked_at: Timestamp,
    /// What went wrong reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The result of one push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Archive pushed.
    pub archive: String,
    /// Its serial, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Who started it: `cli`, `daemon`, `runmirrors`, `receive`, `demo`.
    pub origin: String,
    /// A plan, nothing sent.
    #[serde(default)]
    pub dry_run: bool,
    /// Start of the push.
    pub started_at: Timestamp,
    /// End of the push.
    pub finished_at: Timestamp,
    /// Wall time of the push, milliseconds.
    pub duration_ms: u64,
    /// Counts by outcome.
    pub summary: Summary,
    /// Every trigger, in mirror order.
    pub triggers: Vec<TriggerReport>,
    /// When each delivered mirror with a `check:` URL was seen serving the pushed version
    /// (`push --follow`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub propagation: Vec<Propagated>,
}

/// How the pushed version reached one mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Propagated {
    /// Mirror name.
    pub mirror: String,
    /// From the start of the push until its `master` trace showed the pushed version,
    /// milliseconds; absent when it did not within the archive's `propagation_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_after_ms: Option<u64>,
    /// Its sync's own duration, from its trace, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_ms: Option<u64>,
    /// GETs of its `master` trace.
    pub checks: u32,
    /// The last error reading it, or why it is not live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    /// Assembles a report and its summary.
    pub fn new(
        archive: &str,
        serial: Option<String>,
        origin: &str,
        dry_run: bool,
        started: SystemTime,
        triggers: Vec<TriggerReport>,
    ) -> Self {
        let finished = SystemTime::now().max(started);
        let mut summary = Summary::default();
        for t in &triggers {
            summary.count(t.outcome);
        }
        Report {
            archive: archive.to_string(),
            serial,
            origin: origin.to_string(),
            dry_run,
            started_at: Timestamp(started),
            finished_at: Timestamp(finished),
            duration_ms: millis(finished.duration_since(started).unwrap_or_default()),
            summary,
            triggers,
            propagation: Vec::new(),
        }
    }

    /// A late acknowledgement of an MQTT mirror: its last row (of `stage`, when the ack names it)
    /// still waiting for one (`pending`, or failed because the broker could not be reached) is
    /// changed by `apply` and the summary recounted. Whether a row changed.
    pub fn settle(&mut self, mirror: &str, stage: Option<Stage>, apply: impl FnOnce(&mut TriggerReport)) -> bool {
        let waiting = |t: &TriggerReport| {
            t.mirror == mirror
                && stage.is_none_or(|s| s == t.stage)
                && t.transport == "mqtt"
                && (t.outcome == Outcome::Pending
                    || (t.outcome == Outcome::Failed
                        && matches!(t.error_class, Some(ErrorClass::Connect | ErrorClass::Timeout))))
        };
        let Some(row) = self.triggers.iter_mut().rev().find(|t| waiting(t)) else { return false };
        apply(row);
        self.summary = Summary::default();
        for t in &self.triggers {
            self.summary.count(t.outcome);
        }
        true
    }

    /// Failed if any trigger failed (deferred by a rate limit is not a failure).
    pub fn verdict(&self) -> Verdict {
        if self.summary.failed > 0 { Verdict::Failed } else { Verdict::Clean }
    }

    /// The process exit status this report means (see [`crate::vocab::output::exit_code`]).
    pub fn exit_code(&self) -> u8 {
        exit_code(&Ok(self.verdict()))
    }

    /// The report as a human-readable table.
    pub fn to_table(&self) -> String {
        let mut rows = vec![["MIRROR", "STAGE", "OUTCOME", "ATTEMPTS", "TIME", "DETAIL"].map(String::from)];
        // Mirrors a filter left out are counted in the summary, not listed.
        for t in self.triggers.iter().filter(|t| t.is_listed()) {
            rows.push([
                t.mirror.clone(),
                t.stage.to_string(),
                outcome_text(t),
                t.attempts.to_string(),
                format_ms(t.duration_ms),
                detail_text(t),
            ]);
        }
        let mut out = align(&rows);
        let s = &self.summary;
        let serial = self.serial.as_deref().map(|s| format!(" serial {s}")).unwrap_or_default();
        let plan = if self.dry_run { " (dry run: nothing sent)" } else { "" };
        let _ = writeln!(
            out,
            "{}{serial}: {} ok, {} failed, {} deferred, {} skipped{} in {}{plan}",
            self.archive,
            s.ok,
            s.failed,
            s.deferred,
            s.skipped,
            if s.planned > 0 { format!(", {} planned", s.planned) } else { String::new() },
            format_ms(self.duration_ms),
        );
        if !self.propagation.is_empty() {
            let mut rows = vec![["MIRROR", "LIVE AFTER", "ITS SYNC", "CHECKS", "DETAIL"].map(String::from)];
            for p in &self.propagation {
                rows.push([
                    p.mirror.clone(),
                    p.live_after_ms.map(format_ms).unwrap_or_else(|| "not live".into()),
                    p.sync_ms.map(format_ms).unwrap_or_else(|| "-".into()),
                    p.checks.to_string(),
                    p.error.clone().unwrap_or_default(),
                ]);
            }
            out.push_str(&align(&rows));
            let live = self.propagation.iter().filter(|p| p.live_after_ms.is_some()).count();
            let _ = writeln!(out, "propagation: {live} of {} followed mirror(s) live", self.propagation.len());
        }
        out
    }
}

impl Tabular for Report {
    fn to_table(&self) -> String {
        Report::to_table(self)
    }
}

fn outcome_text(t: &TriggerReport) -> String {
    match (t.outcome, &t.error_class, &t.deferred_until, &t.exit_code) {
        (Outcome::Failed, Some(ErrorClass::RemoteExit), _, Some(code)) => format!("failed (remote-exit {code})"),
        (Outcome::Failed, Some(class), _, _) => format!("failed ({class})"),
        (Outcome::Deferred, _, Some(until), _) => format!("deferred until {until}"),
        (Outcome::Planned, _, Some(until), _) => format!("planned at {until}"),
        (Outcome::Pending, ..) => "pending (no ack)".to_string(),
        (Outcome::Ok, _, _, _) if t.note.is_some() => format!("ok ({})", t.note.as_deref().unwrap_or_default()),
        (outcome, ..) => outcome.to_string(),
    }
}

fn detail_text(t: &TriggerReport) -> String {
    let mut parts = Vec::new();
    if t.outcome != Outcome::Ok {
        parts.extend(t.note.clone());
    }
    parts.extend(t.error.clone());
    if let Some(ms) = t.sync_duration_ms {
        parts.push(format!("sync took {}", format_ms(ms)));
    }
    if t.attempts > 0 || t.outcome == Outcome::Failed {
        parts.push(t.target.clone());
    }
    if let Some(from) = t.source_address {
        parts.push(format!("from {from}"));
    }
    if let Some(key) = &t.key {
        parts.push(format!("key {key}"));
    }
    parts.join("; ")
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

/// The daemon's live status: what `GET /status` serves and the HTML page shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// When the daemon started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// One entry per configured archive.
    pub archives: Vec<ArchiveStatus>,
    /// Triggers waiting for their mirror's rate limit.
    pub deferred: Vec<DeferredTrigger>,
    /// The last freshness sweep: every mirror with a `check:` URL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freshness: Vec<FreshnessRow>,
    /// The latest acknowledgement of every registered MQTT mirror, per archive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acks: Vec<crate::wire::mqtt::AckRecord>,
}

/// One archive as the daemon sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveStatus {
    /// Archive name.
    pub name: String,
    /// Version in the trace file now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_version: Option<String>,
    /// Whether an update lock is held now.
    #[serde(default)]
    pub locked: bool,
    /// The last version pushed (or recorded at first start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_version: Option<String>,
    /// The push in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushProgress>,
    /// The last finished push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report: Option<Report>,
    /// Each mirror's latest outcome across pushes.
    #[serde(default)]
    pub mirrors: Vec<MirrorStatus>,
}

/// One mirror's latest state across pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorStatus {
    /// Mirror name.
    pub mirror: String,
    /// Outcome of its latest trigger.
    pub outcome: Outcome,
    /// When its latest trigger started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    /// When it last got a trigger delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ok: Option<Timestamp>,
    /// The latest error (or note).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl MirrorStatus {
    /// Folds a report's rows into per-mirror status, keeping each mirror's last success.
    pub fn fold(mirrors: &mut Vec<MirrorStatus>, rows: &[TriggerReport]) {
        for row in rows.iter().filter(|r| r.is_listed()) {
            let ok_at = (row.outcome == Outcome::Ok).then_some(row.started_at).flatten();
            let fresh = MirrorStatus {
                mirror: row.mirror.clone(),
                outcome: row.outcome,
                at: row.started_at,
                last_ok: ok_at,
                error: row.error.clone().or_else(|| row.note.clone()),
            };
            match mirrors.iter_mut().find(|m| m.mirror == row.mirror) {
                Some(m) => *m = MirrorStatus { last_ok: ok_at.or(m.last_ok), ..fresh },
                None => mirrors.push(fresh),
            }
        }
        mirrors.sort_by(|a, b| a.mirror.cmp(&b.mirror));
    }
}

/// A push in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushProgress {
    /// Version being pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When it started.
    pub started_at: Timestamp,
    /// Triggers it will send.
    pub total: usize,
    /// Triggers that have ended so far.
    pub done: Vec<TriggerReport>,
}

/// A trigger the daemon will send once the mirror's rate limit allows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeferredTrigger {
    /// Archive.
    pub archive: String,
    /// Mirror.
    pub mirror: String,
    /// When it is allowed.
    pub until: Timestamp,
}

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

    /// Every stored report, oldest first; unreadable files are skipped.
    pub fn all(&self) -> std::io::Result<Vec<Report>> {
        Ok(self.files()?.iter().filter_map(|p| read_report(p)).collect())
    }

    /// Stored reports, newest first, read one at a time (a report of 10,000 mirrors is
    /// megabytes: readers that need only the latest should not parse the whole history).
    pub fn newest_first(&self) -> std::io::Result<impl Iterator<Item = Report>> {
        Ok(self.files()?.into_iter().rev().filter_map(|p| read_report(&p)))
    }

    /// The newest report of each archive; only those files are parsed.
    pub fn latest_per_archive(&self) -> std::io::Result<BTreeMap<String, Report>> {
        let mut newest: BTreeMap<String, PathBuf> = BTreeMap::new();
        for path in self.files()? {
            if let Some(archive) = archive_of(&path) {
                newest.insert(archive, path);
            }
        }
        Ok(newest.into_iter().filter_map(|(archive, path)| Some((archive, read_report(&path)?))).collect())
    }
}

/// A stored report; `None` when unreadable (a half-written file of a crashed writer cannot
/// exist, writes are atomic, but a hand-edited one can).
fn read_report(path: &Path) -> Option<Report> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The archive a report file belongs to, from its name `MS-PID-SEQ-ARCHIVE.json`.
fn archive_of(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    stem.splitn(4, '-').nth(3).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(mirror: &str, outcome: Outcome) -> TriggerReport {
        let target = "https://example.org/…".to_string();
        TriggerReport {
            attempts: 1,
            duration_ms: 12,
            ..TriggerReport::new(mirror, "http", target, Stage::All, outcome)
        }
    }

    #[test]
    fn json_round_trips_and_summary_counts() {
        let r = Report::new(
            "debian",
            Some("2026112501".into()),
            "cli",
            false,
            SystemTime::now(),
            vec![trigger("a", Outcome::Ok), trigger("b", Outcome::Failed), trigger("c", Outcome::Deferred)],
        );
        assert_eq!(r.summary, Summary { ok: 1, failed: 1, deferred: 1, skipped: 0, planned: 0, pending: 0 });
        assert_eq!(r.exit_code(), 1);
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        // Millisecond precision survives the round trip.
        assert_eq!(back.triggers, r.triggers);
        assert_eq!(back.summary, r.summary);
        assert!(r.to_table().contains("debian serial 2026112501: 1 ok, 1 failed, 1 deferred, 0 skipped"));
    }

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
}
