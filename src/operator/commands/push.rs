//! `push`: one push from the command line, with a progress bar on a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{alternate, load_for_writing};
use crate::operator::cli::{Cli, PushArgs};
use crate::push::engine::Options;
use crate::push::plan::PushRequest;
use crate::push::report::TriggerReport;
use crate::vocab::output::{self, Ended, Format, Stop, Verdict};

pub(super) async fn push(cli: &Cli, args: &PushArgs) -> Ended {
    let config = load_for_writing(cli)?;
    let (kind, from_ftpsync) = args.kind();
    let request = PushRequest {
        archive: args.archive.clone(),
        only: args.only.clone(),
        tags: args.tag.clone(),
        serial: args.serial.clone(),
        kind,
        from_ftpsync,
    };
    let plan = crate::push::plan_push(&config, &request).map_err(Stop::usage)?;
    let sending = plan.entries.iter().filter(|e| e.skip.is_none()).map(|e| e.stages.len() as u64).sum();
    let show_bar = !args.no_progress && !args.dry_run && cli.format == Format::Table && std::io::stderr().is_terminal();
    let progress = show_bar.then(|| TriggerBar::start(sending));
    let options = Options {
        wait: args.wait,
        dry_run: args.dry_run,
        on_done: progress.as_ref().map(TriggerBar::callback),
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
    let not_live = report.propagation.iter().any(|p| p.live_after_ms.is_none());
    Ok(if not_live { Verdict::Failed } else { report.verdict() })
}

/// A progress bar on stderr that appears only once a push has taken a second.
struct TriggerBar {
    bar: ProgressBar,
    reveal: tokio::task::JoinHandle<()>,
}

impl TriggerBar {
    fn start(total: u64) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {pos}/{len} triggers {wide_bar} {elapsed}") {
            bar.set_style(style);
        }
        let shown = bar.clone();
        let reveal = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            shown.set_draw_target(ProgressDrawTarget::stderr());
            shown.enable_steady_tick(Duration::from_millis(200));
        });
        TriggerBar { bar, reveal }
    }

    fn callback(&self) -> crate::push::engine::OnDone {
        let bar = self.bar.clone();
        Arc::new(move |_row: &TriggerReport| bar.inc(1))
    }
}

impl Drop for TriggerBar {
    fn drop(&mut self) {
        self.reveal.abort();
        self.bar.finish_and_clear();
    }
}
