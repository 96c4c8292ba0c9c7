//! The report of a push: one serde model written to `state_dir/reports/`, printed as JSON or as a
//! table, and read back by `status`, `list` and the daemon's status server.

pub mod history;

pub use history::History;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::vocab::model::{ErrorClass, KeyRole, Outcome, SkipReason, Stage, Timestamp};
use crate::vocab::output::{Tabular, Verdict, align, exit_code};
use crate::vocab::units::{format_ms, millis};

/// One trigger to one mirror (staged mirrors have one per stage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// Which key the downstream accepted (`current`, or `next` during a rotation); none when no
    /// key was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_role: Option<KeyRole>,
    /// The fingerprints of keys the downstream refused before (or instead of) that one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys_refused: Vec<String>,
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
            key_role: None,
            keys_refused: Vec::new(),
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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

/// The result of one push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// When following the propagation ended for every mirror, from the start of the push,
    /// milliseconds (the archive's `propagation_timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation_deadline_ms: Option<u64>,
    /// Mirrors with a `check:` URL the push was to reach, delivered or not: the shares of its
    /// propagation are of these (`propagation` has rows only for those delivered). Absent in
    /// reports written before it was kept: then the rows are all there is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation_followed: Option<usize>,
}

impl Report {
    /// Mirrors whose propagation counts: [`Report::propagation_followed`], else the rows.
    pub fn followed(&self) -> usize {
        self.propagation_followed.unwrap_or(0).max(self.propagation.len())
    }
}

/// How the pushed version reached one mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Propagated {
    /// Mirror name.
    pub mirror: String,
    /// From the start of the push until its `master` trace showed the pushed version,
    /// milliseconds; absent when it did not within the archive's `propagation_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_after_ms: Option<u64>,
    /// It served the pushed version already when the push started.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub live_before_push: bool,
    /// From the start of the push until its trigger was delivered, milliseconds: following it
    /// started then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_after_ms: Option<u64>,
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
            propagation_deadline_ms: None,
            propagation_followed: None,
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

    /// `3 ok, 1 failed, 0 deferred, 0 skipped` — and pending and planned triggers when there
    /// are any.
    pub fn summary_text(&self) -> String {
        let s = &self.summary;
        let mut text = format!("{} ok, {} failed, {} deferred", s.ok, s.failed, s.deferred);
        if s.pending > 0 {
            let _ = write!(text, ", {} pending", s.pending);
        }
        let _ = write!(text, ", {} skipped", s.skipped);
        if s.planned > 0 {
            let _ = write!(text, ", {} planned", s.planned);
        }
        text
    }

    /// The report as a human-readable table; during a key rotation (a row tried a next key) with
    /// a KEY column: which key each downstream accepted.
    pub fn to_table(&self) -> String {
        // Mirrors a filter left out are counted in the summary, not listed.
        let listed = self.triggers.iter().filter(|t| t.is_listed());
        let rotating = self.triggers.iter().any(|t| t.key_role == Some(KeyRole::Next) || !t.keys_refused.is_empty());
        let cells = |t: &TriggerReport| {
            let key = match t.key_role {
                Some(role) => role.to_string(),
                None if !t.keys_refused.is_empty() => "none".to_string(),
                None => "-".to_string(),
            };
            [
                t.mirror.clone(),
                t.stage.to_string(),
                outcome_text(t),
                key,
                t.attempts.to_string(),
                format_ms(t.duration_ms),
                detail_text(t),
            ]
        };
        let mut out = if rotating {
            let mut rows = vec![["MIRROR", "STAGE", "OUTCOME", "KEY", "ATTEMPTS", "TIME", "DETAIL"].map(String::from)];
            rows.extend(listed.map(cells));
            align(&rows)
        } else {
            let mut rows = vec![["MIRROR", "STAGE", "OUTCOME", "ATTEMPTS", "TIME", "DETAIL"].map(String::from)];
            rows.extend(listed.map(|t| {
                let [mirror, stage, outcome, _, attempts, time, detail] = cells(t);
                [mirror, stage, outcome, attempts, time, detail]
            }));
            align(&rows)
        };
        let serial = self.serial.as_deref().map(|s| format!(" serial {s}")).unwrap_or_default();
        let plan = if self.dry_run { " (dry run: nothing sent)" } else { "" };
        let _ =
            writeln!(out, "{}{serial}: {} in {}{plan}", self.archive, self.summary_text(), format_ms(self.duration_ms));
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
    if !t.keys_refused.is_empty() {
        parts.push(format!("refused {}", t.keys_refused.join(", ")));
    }
    parts.join("; ")
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
        // Pending MQTT mirrors are in the summary line too.
        let mut r = r;
        r.triggers.push(trigger("d", Outcome::Pending));
        r.summary.count(Outcome::Pending);
        assert!(r.to_table().contains(": 1 ok, 1 failed, 1 deferred, 1 pending, 0 skipped"), "{}", r.to_table());
    }
}
