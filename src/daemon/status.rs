//! The daemon's live status: what `GET /status` serves and the HTML page shows, one serde model
//! for the writer (the daemon) and every reader.

use serde::{Deserialize, Serialize};

use crate::observe::freshness::FreshnessRow;
use crate::push::ledger::MirrorView;
use crate::push::report::{Report, TriggerReport};
use crate::vocab::model::Timestamp;

/// The daemon's live status: what `GET /status` serves and the HTML page shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// Why the mirrors' state cannot be read, when it cannot (each archive's `mirrors` is then
    /// empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrors_error: Option<String>,
    /// State files that could not be parsed and were kept aside (`NAME.corrupt-MS`), read from
    /// `state_dir` when served: what they held was rebuilt or is lost, and someone should look.
    /// Deleting them clears this.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_aside: Vec<String>,
    /// The latest acknowledgement of every registered MQTT mirror, per archive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acks: Vec<crate::wire::mqtt::AckRecord>,
}

/// One archive as the daemon sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// The propagation of the last push while it is followed (then it is in `last_report`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<PropagationProgress>,
    /// The last finished push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report: Option<Report>,
    /// Every mirror of the archive, as the ledger shows it (filled in when served).
    #[serde(default)]
    pub mirrors: Vec<MirrorView>,
    /// Its key rotation's progress, while `next_identity:` is set (from the ledger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<crate::push::ledger::Rotation>,
}

/// A push in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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

/// A push's propagation while it is followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PropagationProgress {
    /// The version pushed.
    pub version: String,
    /// When the push started.
    pub started_at: Timestamp,
    /// When following ends for every mirror (`propagation_timeout` after the start).
    pub deadline: Timestamp,
    /// How many mirrors are followed.
    pub followed: usize,
    /// Their rows so far (a mirror not delivered yet has none).
    pub rows: Vec<crate::push::report::Propagated>,
}

/// A trigger the daemon will send once the mirror's rate limit allows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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

/// The JSON Schema of `/status` — what `docs/status.schema.json` holds: generated from the types
/// serialized (their doc comments are its descriptions), every object closed
/// (`additionalProperties: false`), so a field served but not documented fails validation.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(DaemonStatus).to_value();
    close_objects(&mut schema);
    if let Some(root) = schema.as_object_mut() {
        root.insert("$id".into(), "https://pushmirror.invalid/schemas/status.schema.json".into());
        root.insert("title".into(), "pushmirror daemon status (GET /status)".into());
    }
    schema
}

/// Sets `additionalProperties: false` on every object schema with properties that says nothing
/// of others.
fn close_objects(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), false.into());
            }
            map.values_mut().for_each(close_objects);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}
