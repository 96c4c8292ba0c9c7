//! The report row of each trigger, whichever path ended it, and the one place each is logged
//! and handed to the caller's callback.

use super::{Options, TriggerOutcome};
use crate::config::Mirror;
use crate::push::plan::PlanEntry;
use crate::push::report::TriggerReport;
use crate::vocab::model::{ErrorClass, Outcome, SkipReason, Stage, Timestamp};
use crate::vocab::units::millis;

/// Every trigger that ends, whichever path ended it, comes through here: it is logged once (a
/// failure with mirror, stage, class and reason; a deferral with when it may be sent), then passed
/// to the caller's callback.
pub(super) fn notify(options: &Options, row: &TriggerReport) {
    log_outcome(row);
    if let Some(f) = &options.on_done {
        f(row);
    }
}

fn log_outcome(row: &TriggerReport) {
    let (mirror, stage, attempts) = (&row.mirror, row.stage, row.attempts);
    match row.outcome {
        Outcome::Failed => {
            let class = row.error_class.map(|c| c.to_string()).unwrap_or_default();
            let error = row.error.as_deref().unwrap_or("");
            if row.error_class == Some(ErrorClass::Internal) {
                tracing::error!(%mirror, %stage, attempts, %class, %error, "trigger failed: a bug in pushmirror");
            } else {
                tracing::warn!(%mirror, %stage, attempts, %class, %error, "trigger failed");
            }
        }
        Outcome::Deferred => {
            let until = row.deferred_until.map(|t| t.to_string()).unwrap_or_default();
            tracing::info!(%mirror, %stage, %until, "trigger deferred by the rate limit");
        }
        outcome => {
            let note = row.note.as_deref().unwrap_or("");
            tracing::info!(%mirror, %stage, attempts, %outcome, %note, "trigger finished");
        }
    }
}

/// The row of a trigger whose task died (a bug, never a mirror's doing): still one outcome.
pub(super) fn lost(
    entry: &PlanEntry,
    stage: Stage,
    error: &tokio::task::JoinError,
    options: &Options,
) -> TriggerReport {
    let mut row = blank_row(&entry.mirror, stage, Outcome::Failed);
    row.error_class = Some(ErrorClass::Internal);
    row.error = Some(format!("internal error: the trigger task failed ({error})"));
    notify(options, &row);
    row
}

pub(super) fn skipped(entry: &PlanEntry, stage: Stage, reason: SkipReason) -> TriggerReport {
    let m = &entry.mirror;
    TriggerReport::skipped(&m.name, m.transport_name(), m.transport.display_target(), stage, reason)
}

pub(super) fn blank_row(mirror: &Mirror, stage: Stage, outcome: Outcome) -> TriggerReport {
    TriggerReport::new(&mirror.name, mirror.transport_name(), mirror.transport.display_target(), stage, outcome)
}

/// The row of a trigger that was (or, planned, would be) sent: it names the key and the source
/// address it was sent with.
pub(super) fn sent_row(mirror: &Mirror, archive: &str, stage: Stage, outcome: Outcome) -> TriggerReport {
    let sender = mirror.sender(archive);
    TriggerReport {
        key: sender.fingerprint.clone(),
        source_address: sender.source_address,
        ..blank_row(mirror, stage, outcome)
    }
}

/// The row of a trigger that was sent: how many attempts, when, how long, and how it ended.
pub(super) fn attempted_row(mirror: &Mirror, archive: &str, stage: Stage, tried: TriggerOutcome) -> TriggerReport {
    let mut row = sent_row(mirror, archive, stage, Outcome::Ok);
    row.attempts = tried.attempts;
    row.started_at = Some(Timestamp(tried.started));
    row.duration_ms = millis(tried.took);
    let keys = match &tried.result {
        Ok(d) => &d.keys,
        Err(e) => &e.keys,
    };
    if !keys.is_empty() {
        let accepted = keys.iter().find(|k| k.accepted);
        row.key = accepted.map(|k| k.fingerprint.clone()).or(row.key);
        row.key_role = accepted.map(|k| k.role);
        row.keys_refused = keys.iter().filter(|k| !k.accepted).map(|k| k.fingerprint.clone()).collect();
    }
    match tried.result {
        Ok(d) => {
            if d.pending {
                row.outcome = Outcome::Pending;
            }
            row.note = d.note;
            row.http_status = d.http_status;
            row.exit_code = d.exit_code;
            row.sync_duration_ms = d.sync_duration.map(millis);
        }
        Err(e) => {
            row.outcome = Outcome::Failed;
            row.error_class = Some(e.class);
            row.error = Some(e.message);
            row.http_status = e.http_status;
            row.exit_code = e.exit_code;
        }
    }
    row
}

/// The row of a trigger cut short before it was attempted.
pub(super) fn interrupted_row(mirror: &Mirror, stage: Stage) -> TriggerReport {
    let mut row = blank_row(mirror, stage, Outcome::Failed);
    row.error_class = Some(ErrorClass::Interrupted);
    row.error = Some(super::INTERRUPTED.to_string());
    row
}
