//! `push`: one push from the command line, with its progress on a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{alternate, load, load_for_writing};
use crate::operator::cli::{Cli, PushArgs};
use crate::push::engine::{Options, Retry};
use crate::push::plan::PushRequest;
use crate::push::report::TriggerReport;
use crate::vocab::model::Outcome;
use crate::vocab::output::{self, Ended, Format, Stop, Verdict};

pub(super) async fn push(cli: &Cli, args: &PushArgs) -> Ended {
    // A dry run writes nothing: anyone who can read the configuration may run it.
    let config = if args.dry_run { load(cli)? } else { load_for_writing(cli)? };
    let (kind, from_ftpsync) = args.kind();
    let request = PushRequest {
        archive: args.archive.clone(),
        only: args.only.clone(),
        tags: args.tag.clone(),
        serial: args.serial.clone(),
        kind,
        from_ftpsync,
    };
    let mut plan = crate::push::plan_push(&config, &request).map_err(Stop::usage)?;
    // The operator's gate: a veto sends nothing (every trigger skipped, reason `hook`).
    if !args.dry_run
        && let Err(why) = crate::notify::before_push(&config, &plan.archive, plan.serial.as_deref()).await
    {
        eprintln!("push vetoed: {why}");
        for entry in plan.entries.iter_mut().filter(|e| e.skip.is_none()) {
            entry.skip = Some(crate::vocab::model::SkipReason::Hook);
        }
    }
    let history = crate::push::report::History::new(&config.state_dir, config.status.history);
    let before = crate::push::ledger::Ledger::read(&config.state_dir, &history).ok();
    let sending = plan.entries.iter().filter(|e| e.skip.is_none()).map(|e| e.stages.len() as u64).sum();
    let show = !args.no_progress
        && !cli.quiet
        && !args.dry_run
        && cli.format == Format::Table
        && std::io::stderr().is_terminal();
    let progress = show.then(|| TriggerBar::start(sending));
    let options = Options {
        wait: args.wait,
        dry_run: args.dry_run,
        on_done: progress.as_ref().map(TriggerBar::on_done),
        on_retry: progress.as_ref().map(TriggerBar::on_retry),
        ..Options::default()
    };
    let report = if args.follow {
        crate::observe::propagation::push_and_follow(&config, &plan, &options, "cli").await
    } else {
        crate::push::once(&config, &plan, &options, "cli").await
    }
    .map_err(alternate)?;
    drop(progress);
    output::print(&report, cli.format);
    if !report.dry_run {
        tell(&config, &report, before).await;
        let stored = history.file_of(&report);
        crate::notify::after_push(&config, &report, stored.as_deref()).await;
    }
    let not_live = report.propagation.iter().any(|p| p.live_after_ms.is_none());
    Ok(if not_live { Verdict::Failed } else { report.verdict() })
}

/// Queues the event of this push (what changed in the ledger), and delivers what is due for a
/// few seconds: the rest stays queued for the daemon, or the next push.
async fn tell(
    config: &crate::config::Config,
    report: &crate::push::report::Report,
    before: Option<crate::push::ledger::Ledger>,
) {
    let archive = &report.archive;
    let configured = config.notify_for(archive);
    if configured.is_none() && config.hooks_for(archive).on_event.is_none() {
        return;
    }
    let history = crate::push::report::History::new(&config.state_dir, config.status.history);
    let (Some(before), Ok(after)) = (before, crate::push::ledger::Ledger::read(&config.state_dir, &history)) else {
        return;
    };
    let after_failures = configured.map_or(crate::config::defaults::NOTIFY_AFTER_FAILURES, |n| n.after_failures);
    let mut seen = std::collections::BTreeSet::new();
    let mirrors = report.triggers.iter().map(|t| t.mirror.as_str()).filter(|m| seen.insert(*m));
    let changes = crate::notify::event::changes(&before, &after, archive, mirrors, after_failures);
    let Ok(notifier) = crate::notify::Notifier::new(&config.state_dir) else { return };
    if !changes.is_empty() {
        let mut event = crate::notify::event::Event::new(crate::notify::event::EventKind::Push, config);
        (event.archive, event.serial, event.changes) = (Some(archive.clone()), report.serial.clone(), changes);
        if let Err(e) = notifier.enqueue(config, event) {
            tracing::error!(error = %e, "cannot queue a notification");
        }
    }
    let notifier = Arc::new(notifier);
    notifier.deliver_due(config, tokio::time::Instant::now() + Duration::from_secs(15)).await;
}

/// Progress on a terminal (stderr): a bar with the triggers ended so far and how many failed,
/// and a line above it for each trigger that fails, is deferred or is retried — so a mirror that
/// is down is seen at its first failed attempt, not at the end of its retries.
struct TriggerBar {
    bar: ProgressBar,
    failed: Arc<AtomicUsize>,
}

impl TriggerBar {
    fn start(total: u64) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} {pos}/{len} triggers ended{msg} {wide_bar} {elapsed}")
        {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        TriggerBar { bar, failed: Arc::default() }
    }

    fn on_done(&self) -> crate::push::engine::OnDone {
        let (bar, failed) = (self.bar.clone(), Arc::clone(&self.failed));
        Arc::new(move |row: &TriggerReport| {
            bar.inc(1);
            let line = match row.outcome {
                Outcome::Failed => {
                    let n = failed.fetch_add(1, Ordering::SeqCst) + 1;
                    bar.set_message(format!(", {n} failed"));
                    let class = row.error_class.map(|c| c.to_string()).unwrap_or_default();
                    Some(format!("failed    {} ({class}): {}", row.mirror, row.error.as_deref().unwrap_or("")))
                }
                Outcome::Deferred => Some(format!(
                    "deferred  {} until {}",
                    row.mirror,
                    row.deferred_until.map(|t| t.to_string()).unwrap_or_default()
                )),
                _ => None,
            };
            if let Some(line) = line {
                bar.println(line.trim_end());
            }
        })
    }

    fn on_retry(&self) -> crate::push::engine::OnRetry {
        let bar = self.bar.clone();
        Arc::new(move |r: &Retry| {
            bar.println(format!(
                "retrying  {}: attempt {} failed ({}: {}), next in {}",
                r.mirror,
                r.attempt,
                r.class,
                r.error,
                crate::vocab::units::format_ms(crate::vocab::units::millis(r.delay))
            ))
        })
    }
}

impl Drop for TriggerBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
