//! Around a push from the command line (`pushmirror push`, `runmirrors`), where no daemon is in
//! between: the `before_push` gate, then the event of what the push changed and the
//! `after_push` hook. Messages are delivered for a few seconds; what is left stays queued for the
//! daemon or the next push.

use std::sync::Arc;
use std::time::Duration;

use super::event::{Event, EventKind, changes};
use super::{Notifier, after_push, before_push};
use crate::config::{Config, defaults};
use crate::push::ledger::Ledger;
use crate::push::plan::Plan;
use crate::push::report::{History, Report};
use crate::vocab::model::SkipReason;

/// How long a push from the command line spends delivering its messages.
pub const DELIVERY: Duration = Duration::from_secs(15);

/// What was before the push.
pub struct OneShot {
    before: Option<Ledger>,
    vetoed: bool,
}

/// Runs the `before_push` gate of `plan`'s archive: a veto marks every trigger still to send
/// skipped, reason `hook` (said on stderr). Then notes the ledger as it stands.
pub async fn begin(config: &Config, plan: &mut Plan) -> OneShot {
    let gate = before_push(config, &plan.archive, plan.serial.as_deref()).await;
    if let Err(why) = &gate {
        eprintln!("push vetoed: {why}");
        for entry in plan.entries.iter_mut().filter(|e| e.skip.is_none()) {
            entry.skip = Some(SkipReason::Hook);
        }
    }
    let history = History::new(&config.state_dir, config.status.history);
    OneShot { before: Ledger::read(&config.state_dir, &history).ok(), vetoed: gate.is_err() }
}

impl OneShot {
    /// After the push: queues the event of what it changed, delivers what is due for
    /// [`DELIVERY`] at most, then runs the `after_push` hook with the report — unless the push
    /// was vetoed: nothing happened after which to run it (as in the daemon).
    pub async fn end(self, config: &Config, report: &Report) {
        let vetoed = self.vetoed;
        self.tell(config, report).await;
        if vetoed {
            return;
        }
        let stored = History::new(&config.state_dir, config.status.history).file_of(report);
        after_push(config, report, stored.as_deref()).await;
    }

    async fn tell(self, config: &Config, report: &Report) {
        let archive = &report.archive;
        let configured = config.notify_for(archive);
        if configured.is_none() && config.hooks_for(archive).on_event.is_none() {
            return;
        }
        let history = History::new(&config.state_dir, config.status.history);
        let (Some(before), Ok(after)) = (self.before, Ledger::read(&config.state_dir, &history)) else { return };
        let after_failures = configured.map_or(defaults::NOTIFY_AFTER_FAILURES, |n| n.after_failures);
        let mut seen = std::collections::BTreeSet::new();
        let mirrors = report.triggers.iter().map(|t| t.mirror.as_str()).filter(|m| seen.insert(*m));
        let changes = changes(&before, &after, archive, mirrors, after_failures);
        let notifier = match Notifier::new(&config.state_dir) {
            Ok(n) => Arc::new(n),
            Err(e) => return tracing::error!(error = %e, "cannot open the notification queue"),
        };
        if !changes.is_empty() {
            let mut event = Event::new(EventKind::Push, config);
            (event.archive, event.serial, event.changes) = (Some(archive.clone()), report.serial.clone(), changes);
            if let Err(e) = notifier.enqueue(config, event) {
                tracing::error!(error = %e, "cannot queue a notification");
            }
        }
        notifier.deliver_due(config, tokio::time::Instant::now() + DELIVERY).await;
    }
}
