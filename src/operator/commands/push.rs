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
    let oneshot = if args.dry_run { None } else { Some(crate::notify::oneshot::begin(&config, &mut plan).await) };
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
    if let Some(oneshot) = oneshot.filter(|_| !report.dry_run) {
        oneshot.end(&config, &report).await;
    }
    let not_live = report.propagation.iter().any(|p| p.live_after_ms.is_none());
    Ok(if not_live { Verdict::Failed } else { report.verdict() })
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
