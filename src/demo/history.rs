//! A stored push history to look at: the status page's test and bench, 1,000 mirrors × 50
//! pushes, written as the daemon would have written it (reports in `state_dir/reports`, a lag
//! history), with a known pattern of failures, deferrals and propagation.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::observe::freshness::{FreshnessRow, MirrorKind};
use crate::push::report::{History, Propagated, Report, TriggerReport};
use crate::vocab::model::{ErrorClass, Outcome, Stage, Standing, Timestamp};

/// Mirrors in the history.
pub const MIRRORS: usize = 1000;
/// Pushes in the history.
pub const PUSHES: usize = 50;

/// Mirror `i`'s name: `m0000` …
pub fn name(i: usize) -> String {
    format!("m{i:04}")
}

/// Push `j`'s serial: `2026120100` …
pub fn serial(j: usize) -> String {
    format!("20261201{j:02}")
}

/// Push `j`'s outcome for mirror `i`: m0000–m0002 fail from push 45 on (5 failures: failing);
/// m0003–m0009 and m0500 failed once and recovered; m0010–m0014 were deferred by the last push;
/// m0500 also failed at push 33 with another class; the rest always ok.
pub fn outcome(i: usize, j: usize) -> (Outcome, Option<ErrorClass>) {
    match (i, j) {
        (0..3, 45..) => (Outcome::Failed, Some(ErrorClass::Timeout)),
        (3..10, 20) | (500, 20) => (Outcome::Failed, Some(ErrorClass::Connect)),
        (500, 33) => (Outcome::Failed, Some(ErrorClass::HttpStatus)),
        (10..15, 49) => (Outcome::Deferred, None),
        _ => (Outcome::Ok, None),
    }
}

/// The 50 stored reports (an hour apart, the last an hour ago), each following 20 mirrors'
/// propagation: m0100 + k live after 60 + 30k + 5j s, except m0119 never in every seventh push.
pub fn write_history(state: &Path, target: &str) -> std::io::Result<()> {
    let history = History::new(state, 200);
    let now = SystemTime::now();
    for j in 0..PUSHES {
        let started = now - Duration::from_secs(3600 * (PUSHES - j) as u64);
        let triggers = (0..MIRRORS)
            .map(|i| {
                let (outcome, class) = outcome(i, j);
                let mut t = TriggerReport::new(&name(i), "http", target.into(), Stage::All, outcome);
                t.started_at = Some(Timestamp(started));
                t.attempts = if outcome == Outcome::Deferred { 0 } else { 1 + u32::from(class.is_some()) * 3 };
                t.duration_ms = 40 + (i as u64 * 7 + j as u64) % 300;
                if let Some(class) = class {
                    t.error_class = Some(class);
                    t.error = Some(format!("{class} after 4 attempts"));
                }
                if outcome == Outcome::Deferred {
                    t.deferred_until = Some(Timestamp(now + Duration::from_secs(86_400)));
                }
                t
            })
            .collect();
        let mut report = Report::new("debian", Some(serial(j)), "daemon", false, started, triggers);
        report.finished_at = Timestamp(started + Duration::from_secs(90));
        report.duration_ms = 90_000;
        report.propagation = (0..20)
            .map(|k| Propagated {
                mirror: name(100 + k),
                live_after_ms: (k != 19 || j % 7 != 0).then_some((60 + 30 * k as u64 + 5 * j as u64) * 1000),
                live_before_push: false,
                delivered_after_ms: Some(100),
                sync_ms: None,
                checks: 3,
                error: None,
            })
            .collect();
        history.save(&report)?;
    }
    Ok(())
}

/// m0500's lag over 30 earlier sweeps: rising while behind, two sweeps unreachable.
pub fn write_lag_history(state: &Path) -> std::io::Result<()> {
    let mut lags = crate::observe::lag::LagHistory::default();
    let now = SystemTime::now();
    for s in 0..30u64 {
        let unreachable = s == 12 || s == 13;
        let row = FreshnessRow {
            archive: "debian".into(),
            mirror: name(500),
            kind: MirrorKind::Triggered,
            standing: if unreachable { Standing::Unreachable } else { Standing::UpToDate },
            version: None,
            since: None,
            behind_versions: None,
            version_date: None,
            lag_ms: (!unreachable).then_some(((s % 10) * 40 * 60_000).min(6 * 3_600_000)),
            last_sync_ms: None,
            upstream: None,
            chain: vec![],
            checked_at: Timestamp(now - Duration::from_secs(900 * (30 - s))),
            error: None,
        };
        lags.record(std::slice::from_ref(&row));
    }
    lags.write(state)
}
