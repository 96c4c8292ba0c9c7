//! The daemon's metrics (prometheus-client): triggers by outcome, attempt and propagation
//! durations, pushes, versions and freshness per archive and mirror, and every mirror's state
//! from the ledger (the same views `/status` and `status --check` show). Encoded by `/metrics`
//! as OpenMetrics, or as Prometheus text 0.0.4 ([`Metrics::scrape`]).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::UNIX_EPOCH;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::observe::freshness::FreshnessRow;
use crate::push::engine::{OnAttempt, OnDone};
use crate::push::ledger::Picture;
use crate::push::report::{Report, TriggerReport};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    mirror: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ArchiveLabels {
    archive: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    archive: String,
    version: String,
}

/// Labels of a notification's delivery.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    channel: String,
    result: String,
}

/// Labels of a count of mirrors in one state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    archive: String,
    state: String,
}

/// Labels of a key rotation's count of mirrors that accept the next key, only the current one,
/// neither, or were not tried yet.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RotationLabels {
    archive: String,
    accepts: String,
}

/// Labels of one mirror's state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MirrorHealthLabels {
    archive: String,
    mirror: String,
    state: String,
}

/// The daemon's Prometheus metrics.
pub struct Metrics {
    registry: Registry,
    /// Mirrors per archive and state, and each mirror's state (1), from the ledger at each scrape.
    mirrors: Family<HealthLabels, Gauge>,
    mirror_state: Family<MirrorHealthLabels, Gauge>,
    /// Per rotating archive, its SSH mirrors by which key they accept, from the ledger.
    rotation: Family<RotationLabels, Gauge>,
    /// One scrape at a time: the mirror series are cleared and set again for each.
    scraping: std::sync::Mutex<()>,
    notifications: Family<NotificationLabels, Counter>,
    triggers: Family<TriggerLabels, Counter>,
    duration: Histogram,
    last_push: Family<ArchiveLabels, Gauge<f64, AtomicU64>>,
    version: Family<VersionLabels, Gauge>,
    in_flight: Gauge,
    /// Tasks alive in the runtime, set at each scrape.
    tasks: Gauge,
    propagation: Histogram,
    lag: Family<MirrorLabels, Gauge<f64, AtomicU64>>,
    behind: Family<MirrorLabels, Gauge>,
    /// The label sets of the last sweep's lag and behind series, to remove those that go away.
    freshness_labels: std::sync::Mutex<FreshnessLabels>,
}

type FreshnessLabels = (std::collections::HashSet<MirrorLabels>, std::collections::HashSet<MirrorLabels>);

/// Labels of a mirror of an archive.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MirrorLabels {
    archive: String,
    mirror: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("pushmirror");
        let triggers = Family::<TriggerLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        let last_push = Family::<ArchiveLabels, Gauge<f64, AtomicU64>>::default();
        let version = Family::<VersionLabels, Gauge>::default();
        let in_flight = Gauge::default();
        registry.register("triggers", "Triggers by mirror and outcome", triggers.clone());
        registry.register(
            "attempt_duration_seconds",
            "Duration of each attempt to deliver a trigger",
            duration.clone(),
        );
        registry.register(
            "last_push_timestamp_seconds",
            "End of the last push per archive (unix time)",
            last_push.clone(),
        );
        registry.register("archive_version", "The last pushed version per archive (value 1)", version.clone());
        registry.register("triggers_in_flight", "Triggers of running pushes that have not ended", in_flight.clone());
        let tasks = Gauge::default();
        registry.register(
            "runtime_tasks",
            "Tasks alive in the daemon's async runtime (one per trigger in flight, a few per archive; a count that only grows is a leak)",
            tasks.clone(),
        );
        // 5 s to about 11 h: a push's start until a mirror serves its version.
        let propagation = Histogram::new(exponential_buckets(5.0, 2.0, 14));
        registry.register(
            "propagation_seconds",
            "From the start of a push until a followed mirror served the pushed version",
            propagation.clone(),
        );
        let lag = Family::<MirrorLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "mirror_lag_seconds",
            "How old the version each mirror serves is (0: up to date)",
            lag.clone(),
        );
        let behind = Family::<MirrorLabels, Gauge>::default();
        registry.register(
            "mirror_behind_versions",
            "How many pushed versions each mirror is behind, as far as the report history goes back",
            behind.clone(),
        );
        let mirrors = Family::<HealthLabels, Gauge>::default();
        registry.register(
            "mirrors",
            "Mirrors per archive and state (ok, failing, pending, deferred, behind, unreachable, unknown, disabled)",
            mirrors.clone(),
        );
        let mirror_state = Family::<MirrorHealthLabels, Gauge>::default();
        registry.register(
            "mirror_state",
            "Each mirror's state per archive (value 1), as status --check judges it",
            mirror_state.clone(),
        );
        let rotation = Family::<RotationLabels, Gauge>::default();
        registry.register(
            "key_rotation_mirrors",
            "During a key rotation (next_identity), an archive's SSH mirrors by the key they were last seen to accept (next, current-only, neither, unknown: not tried yet)",
            rotation.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notification deliveries by channel (mail, webhook, hook) and result (sent, failed: retried later, dropped, suppressed)",
            notifications.clone(),
        );
        Metrics {
            registry,
            notifications,
            mirrors,
            mirror_state,
            rotation,
            scraping: std::sync::Mutex::new(()),
            triggers,
            duration,
            last_push,
            version,
            in_flight,
            tasks,
            propagation,
            lag,
            behind,
            freshness_labels: Default::default(),
        }
    }
}

impl Metrics {
    /// A push of `n` triggers started.
    pub fn push_started(&self, n: usize) {
        self.in_flight.inc_by(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A notification's delivery ended so (see [`crate::notify::Counter`]).
    pub fn notification(&self, channel: &str, result: &str) {
        self.notifications.get_or_create(&NotificationLabels { channel: channel.into(), result: result.into() }).inc();
    }

    /// One trigger ended.
    pub fn trigger_ended(&self, row: &TriggerReport) {
        self.triggers
            .get_or_create(&TriggerLabels { mirror: row.mirror.clone(), outcome: row.outcome.to_string() })
            .inc();
        self.in_flight.dec();
    }

    /// A freshness sweep ended: each mirror's lag and versions behind, where known (a mirror whose
    /// lag cannot be told has no series, rather than a made-up one). Series are set in place and
    /// only those no longer known are removed, so a scrape during the update misses none.
    pub fn freshness(&self, rows: &[FreshnessRow]) {
        let mut lagging = std::collections::HashSet::new();
        let mut behind = std::collections::HashSet::new();
        for row in rows {
            let labels = MirrorLabels { archive: row.archive.clone(), mirror: row.mirror.clone() };
            if let Some(ms) = row.lag_ms {
                self.lag.get_or_create(&labels).set(ms as f64 / 1000.0);
                lagging.insert(labels.clone());
            }
            if let Some(n) = row.behind_versions {
                self.behind.get_or_create(&labels).set(i64::from(n));
                behind.insert(labels);
            }
        }
        let mut known = self.freshness_labels.lock().unwrap_or_else(|e| e.into_inner());
        for gone in known.0.difference(&lagging) {
            self.lag.remove(gone);
        }
        for gone in known.1.difference(&behind) {
            self.behind.remove(gone);
        }
        *known = (lagging, behind);
    }

    /// A followed mirror served the pushed version `after` the push started.
    pub fn mirror_live(&self, after: std::time::Duration) {
        self.propagation.observe(after.as_secs_f64());
    }

    /// One attempt ended after `took`.
    pub fn attempt_ended(&self, took: std::time::Duration) {
        self.duration.observe(took.as_secs_f64());
    }

    /// The engine callbacks that feed these metrics (and `also`, for each ended trigger).
    pub fn callbacks(self: &Arc<Self>, also: impl Fn(&TriggerReport) + Send + Sync + 'static) -> (OnDone, OnAttempt) {
        let (done, attempt) = (Arc::clone(self), Arc::clone(self));
        (
            Arc::new(move |row: &TriggerReport| {
                done.trigger_ended(row);
                also(row);
            }),
            Arc::new(move |took| attempt.attempt_ended(took)),
        )
    }

    /// A push ended; `unfinished` of its triggers never reported an end (cancelled).
    pub fn push_ended(&self, report: &Report, unfinished: usize, previous_version: Option<&str>) {
        self.in_flight.dec_by(i64::try_from(unfinished).unwrap_or(0));
        let at = report.finished_at.0.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        self.last_push.get_or_create(&ArchiveLabels { archive: report.archive.clone() }).set(at);
        if let Some(old) = previous_version {
            self.version.remove(&VersionLabels { archive: report.archive.clone(), version: old.to_string() });
        }
        if let Some(v) = &report.serial {
            self.version.get_or_create(&VersionLabels { archive: report.archive.clone(), version: v.clone() }).set(1);
        }
    }

    /// A scrape: the mirrors' states set from `views`, then every metric encoded — as
    /// OpenMetrics, or as Prometheus text 0.0.4.
    pub fn scrape(&self, picture: Option<&Picture>, openmetrics: bool) -> String {
        let _one = self.scraping.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(picture) = picture {
            self.mirrors.clear();
            self.mirror_state.clear();
            self.rotation.clear();
            for r in &picture.rotations {
                for (accepts, n) in [
                    ("next", r.accept_next.len()),
                    ("current-only", r.only_current.len()),
                    ("neither", r.neither.len()),
                    ("unknown", r.unknown.len()),
                ] {
                    let labels = RotationLabels { archive: r.archive.clone(), accepts: accepts.into() };
                    self.rotation.get_or_create(&labels).set(n as i64);
                }
            }
            for v in &picture.views {
                let (archive, state) = (v.state.archive.clone(), v.health.to_string());
                self.mirrors.get_or_create(&HealthLabels { archive: archive.clone(), state: state.clone() }).inc();
                let mirror = v.state.mirror.clone();
                self.mirror_state.get_or_create(&MirrorHealthLabels { archive, mirror, state }).set(1);
            }
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.tasks.set(i64::try_from(runtime.metrics().num_alive_tasks()).unwrap_or(i64::MAX));
        }
        let open = self.encode();
        if openmetrics { open } else { prometheus_text(&open) }
    }

    /// The OpenMetrics text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// OpenMetrics text as Prometheus text 0.0.4: a counter's `# HELP`/`# TYPE` name its samples
/// (`…_total`, as that format wants), and the lines it does not know (`# UNIT`, `# EOF`) go.
fn prometheus_text(open: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        open.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::freshness::{FreshnessRow, MirrorKind};
    use crate::vocab::model::Standing;
    use crate::vocab::model::Timestamp;

    fn row(mirror: &str, lag_ms: Option<u64>) -> FreshnessRow {
        FreshnessRow {
            archive: "debian".into(),
            mirror: mirror.into(),
            kind: MirrorKind::CheckOnly,
            standing: Standing::Syncing,
            version: Some("1".into()),
            since: None,
            behind_versions: lag_ms.map(|_| 1),
            version_date: None,
            lag_ms,
            last_sync_ms: None,
            upstream: None,
            chain: vec![],
            checked_at: Timestamp(std::time::SystemTime::now()),
            error: None,
        }
    }

    /// Prometheus text 0.0.4 names a counter's family as its samples (`…_total`) and has no
    /// `# EOF`: promtool refused the OpenMetrics form ("no help text" for the `_total` samples).
    #[test]
    fn prometheus_text_names_counters_as_their_samples() {
        let metrics = Metrics::default();
        let row = TriggerReport::new(
            "m",
            "http",
            "h".into(),
            crate::vocab::model::Stage::All,
            crate::vocab::model::Outcome::Ok,
        );
        metrics.trigger_ended(&row);
        let open = metrics.scrape(None, true);
        assert!(open.contains("# TYPE pushmirror_triggers counter") && open.ends_with("# EOF\n"), "{open}");
        let text = metrics.scrape(None, false);
        assert!(text.contains("# HELP pushmirror_triggers_total Triggers by mirror and outcome"), "{text}");
        assert!(text.contains("# TYPE pushmirror_triggers_total counter"), "{text}");
        assert!(text.contains(r#"pushmirror_triggers_total{mirror="m",outcome="ok"} 1"#), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn a_sweep_updates_lag_series_in_place_and_removes_only_those_gone() {
        let metrics = Metrics::default();
        metrics.freshness(&[row("a", Some(1000)), row("b", Some(2000))]);
        let text = metrics.encode();
        assert!(text.contains(r#"pushmirror_mirror_lag_seconds{archive="debian",mirror="b"} 2.0"#), "{text}");
        metrics.freshness(&[row("a", Some(3000)), row("b", None)]);
        let text = metrics.encode();
        assert!(text.contains(r#"pushmirror_mirror_lag_seconds{archive="debian",mirror="a"} 3.0"#), "{text}");
        assert!(!text.contains(r#"mirror="b""#), "b's lag is no longer known:\n{text}");
    }
}
