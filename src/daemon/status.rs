//! The daemon's live status: what `GET /status` serves and the HTML page shows, one serde model
//! for the writer (the daemon) and every reader.

use serde::{Deserialize, Serialize};

use crate::observe::freshness::FreshnessRow;
use crate::push::report::{Report, TriggerReport};
use crate::vocab::model::{Outcome, Timestamp};

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

/// The live status, written by the daemon's parts and read by the status server: every change
/// goes through one of these methods.
#[derive(Debug, Clone)]
pub struct StatusBoard(tokio::sync::watch::Sender<DaemonStatus>);

impl StatusBoard {
    /// A board showing `status`, and its first reader.
    pub fn new(status: DaemonStatus) -> (Self, tokio::sync::watch::Receiver<DaemonStatus>) {
        let (tx, rx) = tokio::sync::watch::channel(status);
        (StatusBoard(tx), rx)
    }

    /// Changes the row of archive `name`, if shown.
    pub fn archive(&self, name: &str, f: impl FnOnce(&mut ArchiveStatus)) {
        self.0.send_modify(|s| {
            if let Some(a) = s.archives.iter_mut().find(|a| a.name == name) {
                f(a);
            }
        });
    }

    /// The archives shown: those of `names` already shown stay as they are, the others get the
    /// row `new` makes; archives not in `names` are gone.
    pub fn show_archives(&self, names: &[String], new: impl Fn(&str) -> ArchiveStatus) {
        self.0.send_modify(|s| {
            s.archives.retain(|a| names.contains(&a.name));
            for name in names {
                if !s.archives.iter().any(|a| &a.name == name) {
                    s.archives.push(new(name));
                }
            }
            s.archives.sort_by(|a, b| a.name.cmp(&b.name));
        });
    }

    /// The names of the archives shown.
    pub fn archive_names(&self) -> Vec<String> {
        self.0.borrow().archives.iter().map(|a| a.name.clone()).collect()
    }

    /// The deferred triggers.
    pub fn set_deferred(&self, deferred: Vec<DeferredTrigger>) {
        self.0.send_modify(|s| s.deferred = deferred);
    }

    /// The last freshness sweep.
    pub fn set_freshness(&self, rows: Vec<FreshnessRow>) {
        self.0.send_modify(|s| s.freshness = rows);
    }

    /// Every MQTT mirror's latest ack.
    pub fn set_acks(&self, acks: Vec<crate::wire::mqtt::AckRecord>) {
        self.0.send_modify(|s| s.acks = acks);
    }

    /// One MQTT mirror's latest ack, replacing its previous one.
    pub fn ack(&self, record: &crate::wire::mqtt::AckRecord) {
        self.0.send_modify(|s| {
            let same =
                |a: &crate::wire::mqtt::AckRecord| a.archive == record.archive && a.ack.mirror == record.ack.mirror;
            match s.acks.iter_mut().find(|a| same(a)) {
                Some(shown) => *shown = record.clone(),
                None => {
                    s.acks.push(record.clone());
                    s.acks.sort_by(|a, b| (&a.archive, &a.ack.mirror).cmp(&(&b.archive, &b.ack.mirror)));
                }
            }
        });
    }
}
