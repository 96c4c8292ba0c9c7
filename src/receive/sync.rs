//! One worker per archive: takes the queued trigger, runs the sync command (argv, no shell, stdin
//! null, output logged, killed at its timeout), and after a successful run pushes the next tier.
//! One run at a time; triggers arriving meanwhile coalesce into the one queued in the status.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::SyncArchive;
use super::replay::SeenSignatures;
use super::request::SyncRequest;
use super::status::{ChainedPush, ReceiveStatus};
use crate::push::engine::Options;
use crate::push::plan::PushRequest;
use crate::push::report::Report;
use crate::vocab::model::{Stage, Timestamp};

/// Environment variable naming the archive, for the sync command.
pub const ENV_ARCHIVE: &str = "PUSHMIRROR_ARCHIVE";
/// Environment variable holding the trigger's stage (`all`, `stage1`, `stage2`).
pub const ENV_STAGE: &str = "PUSHMIRROR_STAGE";
/// Environment variable holding the trigger's serial; unset when the trigger had none.
pub const ENV_SERIAL: &str = "PUSHMIRROR_SERIAL";
/// The origin written into reports of pushes made after a sync.
pub const ORIGIN: &str = "receive";

/// Lines of output logged per stream and run; the rest is counted, not logged.
const MAX_LOGGED_LINES: usize = 200;
/// Longer lines are logged in pieces of this many bytes.
const MAX_LINE_BYTES: u64 = 1024;
/// After the command exits, how long its output may still take to arrive (a background child
/// may hold the pipes open for much longer; its output is then not logged).
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// One archive's worker inputs: its settings, the wake-up for new triggers, its replay set.
pub(super) struct Lane {
    pub archive: Arc<SyncArchive>,
    pub wake: Notify,
    pub seen: SeenSignatures,
}

impl Lane {
    pub fn new(archive: Arc<SyncArchive>, seen: SeenSignatures) -> Self {
        Lane { archive, wake: Notify::new(), seen }
    }
}

/// What every worker shares.
pub(super) struct Workers {
    pub status: watch::Sender<ReceiveStatus>,
    /// No new run starts once this is cancelled.
    pub shutdown: CancellationToken,
    /// Running commands are killed and pushes interrupted once this is cancelled.
    pub hard_stop: CancellationToken,
    /// Every run's start and end, for the MQTT subscriber's acks.
    pub runs: broadcast::Sender<RunEvent>,
}

/// A run of an archive's sync command started or ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RunEvent {
    /// The archive.
    pub archive: String,
    /// The trigger it runs for.
    pub request: SyncRequest,
    /// `None` when it started; how it ended and after how long.
    pub ended: Option<(Option<i32>, Duration)>,
}

impl Workers {
    /// Workers with nothing running yet.
    pub fn new(status: watch::Sender<ReceiveStatus>, shutdown: CancellationToken) -> Self {
        Workers { status, shutdown, hard_stop: CancellationToken::new(), runs: broadcast::channel(64).0 }
    }
}

/// How a run of the sync command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RunEnd {
    /// It exited with this code.
    Exited(i32),
    /// It has no exit code: the reason.
    Abnormal(String),
}

impl Workers {
    /// Runs queued triggers of `lane` one after another until shutdown.
    pub async fn run_lane(self: Arc<Self>, lane: Arc<Lane>) {
        let name = lane.archive.name.clone();
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            if let Some(request) = self.start_next(&name) {
                self.run_once(&lane.archive, request).await;
                continue;
            }
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                _ = lane.wake.notified() => {}
            }
        }
        let mut dropped = None;
        self.status.send_if_modified(|s| {
            dropped = s.archive_mut(&name).and_then(|a| a.queued.take());
            dropped.is_some()
        });
        if dropped.is_some() {
            tracing::warn!(archive = %name, "shutting down: the queued sync will not run");
        }
    }

    /// Queues `request` for `archive` (replacing a queued one) and tells whether a run is in
    /// progress, so that it waits.
    pub fn enqueue(&self, lane: &Lane, request: SyncRequest) -> bool {
        let mut waits = false;
        self.status.send_modify(|s| {
            if let Some(a) = s.archive_mut(&lane.archive.name) {
                a.triggers += 1;
                waits = a.running.is_some();
                a.queued = Some(request);
            }
        });
        lane.wake.notify_one();
        waits
    }

    /// Moves the queued trigger of `name` to running, in one step, so no trigger is lost between.
    fn start_next(&self, name: &str) -> Option<SyncRequest> {
        let mut started = None;
        self.status.send_if_modified(|s| {
            let Some(a) = s.archive_mut(name) else { return false };
            let Some(request) = a.queued.take() else { return false };
            a.running = Some(request.clone());
            a.runs_started += 1;
            a.last_started_at = Some(Timestamp(SystemTime::now()));
            started = Some(request);
            true
        });
        started
    }

    async fn run_once(&self, archive: &SyncArchive, request: SyncRequest) {
        let serial = request.serial.as_deref().unwrap_or("");
        tracing::info!(archive = %archive.name, stage = %request.stage, serial, "sync started");
        let event = |ended| RunEvent { archive: archive.name.clone(), request: request.clone(), ended };
        let _ = self.runs.send(event(None));
        let started = tokio::time::Instant::now();
        let end = run_command(archive, &request, &self.hard_stop).await;
        let code = match &end {
            RunEnd::Exited(code) => Some(*code),
            RunEnd::Abnormal(_) => None,
        };
        let _ = self.runs.send(event(Some((code, started.elapsed()))));
        let push_to = archive.push.as_deref().filter(|_| should_push(&end, request.stage));
        log_end(archive, &end, push_to.is_some());
        self.update(&archive.name, |a| {
            a.running = None;
            a.last_finished_at = Some(Timestamp(SystemTime::now()));
            (a.last_exit_code, a.last_error) = match &end {
                RunEnd::Exited(code) => (Some(*code), None),
                RunEnd::Abnormal(why) => (None, Some(why.clone())),
            };
            a.pushing = push_to.is_some();
        });
        if let Some(config) = push_to {
            let pushed = push_next_tier(config, &archive.name, request.serial.clone(), &self.hard_stop).await;
            self.update(&archive.name, |a| {
                a.pushing = false;
                a.chained_pushes += 1;
                a.last_push = Some(pushed);
            });
        }
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut super::status::ArchiveSync)) {
        self.status.send_modify(|s| {
            if let Some(a) = s.archive_mut(name) {
                f(a);
            }
        });
    }
}

/// The next tier is pushed once this copy is complete: after a successful `all` or `stage2`
/// sync, not after stage 1 (the indices are not updated yet, and the push would spend the next
/// tier's rate limits on a half-synced archive).
fn should_push(end: &RunEnd, stage: Stage) -> bool {
    *end == RunEnd::Exited(0) && stage != Stage::Stage1
}

/// Says how a run ended and, when a next tier is configured, whether it is pushed now.
fn log_end(archive: &SyncArchive, end: &RunEnd, pushing: bool) {
    let name = &archive.name;
    let not_pushed = if archive.push.is_some() { "; the next tier is not pushed" } else { "" };
    match end {
        RunEnd::Exited(0) if pushing => tracing::info!(archive = %name, "sync finished; pushing the next tier"),
        RunEnd::Exited(0) if archive.push.is_some() => {
            tracing::info!(archive = %name, "stage 1 finished; the next tier is pushed after stage 2")
        }
        RunEnd::Exited(0) => tracing::info!(archive = %name, "sync finished"),
        RunEnd::Exited(code) => tracing::warn!(archive = %name, code, "sync failed{not_pushed}"),
        RunEnd::Abnormal(why) => tracing::warn!(archive = %name, "sync {why}{not_pushed}"),
    }
}

/// Runs the sync command once, bounded by the archive's timeout and by `hard_stop`.
async fn run_command(archive: &SyncArchive, request: &SyncRequest, hard_stop: &CancellationToken) -> RunEnd {
    let Some((program, args)) = archive.command.split_first() else {
        return RunEnd::Abnormal("no command configured".to_string());
    };
    let mut child = match command(program, args, archive, request).spawn() {
        Ok(c) => c,
        Err(e) => return RunEnd::Abnormal(format!("cannot start {program}: {e}")),
    };
    let mut output = JoinSet::new();
    if let Some(out) = child.stdout.take() {
        output.spawn(log_output(out, archive.name.clone(), "stdout"));
    }
    if let Some(err) = child.stderr.take() {
        output.spawn(log_output(err, archive.name.clone(), "stderr"));
    }
    let end = tokio::select! {
        status = child.wait() => match status {
            Ok(status) => exit_end(status),
            Err(e) => RunEnd::Abnormal(format!("cannot wait for the command: {e}")),
        },
        _ = tokio::time::sleep(archive.timeout) => {
            let _ = child.kill().await;
            RunEnd::Abnormal(format!("killed after its timeout of {}", humantime::format_duration(archive.timeout)))
        }
        _ = hard_stop.cancelled() => {
            let _ = child.kill().await;
            RunEnd::Abnormal("killed: pushmirror receive is shutting down".to_string())
        }
    };
    let _ = tokio::time::timeout(OUTPUT_DRAIN, async { while output.join_next().await.is_some() {} }).await;
    end
}

/// The command of one run. Trigger values only ever reach it through the environment.
fn command(program: &str, args: &[String], archive: &SyncArchive, request: &SyncRequest) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .env(ENV_ARCHIVE, &archive.name)
        .env(ENV_STAGE, request.stage.to_string());
    match &request.serial {
        Some(serial) => command.env(ENV_SERIAL, serial),
        // Never inherited from receive's own environment: unset means "the trigger had none".
        None => command.env_remove(ENV_SERIAL),
    };
    command
}

fn exit_end(status: ExitStatus) -> RunEnd {
    match (status.code(), status.signal()) {
        (Some(code), _) => RunEnd::Exited(code),
        (None, Some(signal)) => RunEnd::Abnormal(format!("killed by signal {signal}")),
        (None, None) => RunEnd::Abnormal(format!("ended without an exit code ({status})")),
    }
}

/// Logs the first [`MAX_LOGGED_LINES`] lines of one output stream and counts the rest.
async fn log_output(stream: impl AsyncRead + Unpin, archive: String, name: &'static str) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut lines = 0usize;
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE_BYTES).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => lines += 1,
        }
        if lines <= MAX_LOGGED_LINES {
            let text = String::from_utf8_lossy(&line);
            tracing::info!(%archive, stream = name, "{}", text.trim_end_matches(['\n', '\r']));
        }
    }
    if lines > MAX_LOGGED_LINES {
        tracing::info!(%archive, stream = name, "{} more line(s) of output not logged", lines - MAX_LOGGED_LINES);
    }
}

/// Pushes `archive` with the pushmirror configuration at `config_path`, loaded afresh so that
/// edits apply without a restart. Every failure is logged and returned, never raised.
async fn push_next_tier(
    config_path: &Path,
    archive: &str,
    serial: Option<String>,
    hard_stop: &CancellationToken,
) -> ChainedPush {
    let result = push(config_path, archive, serial.clone(), hard_stop).await;
    let finished_at = Timestamp(SystemTime::now());
    match result {
        Ok(report) => {
            let s = report.summary;
            tracing::info!(
                %archive, ok = s.ok, failed = s.failed, deferred = s.deferred, skipped = s.skipped,
                "next tier pushed"
            );
            ChainedPush { serial: report.serial, finished_at, summary: Some(s), error: None }
        }
        Err(error) => {
            tracing::error!(%archive, config = %config_path.display(), "cannot push the next tier: {error}");
            ChainedPush { serial, finished_at, summary: None, error: Some(error) }
        }
    }
}

async fn push(
    config_path: &Path,
    archive: &str,
    serial: Option<String>,
    hard_stop: &CancellationToken,
) -> Result<Report, String> {
    // The ownership rule holds here too: a push writes the config's state_dir.
    let config = crate::config::load_for_writing(config_path).map_err(|errors| {
        for e in &errors.0 {
            tracing::error!("{e}");
        }
        format!("{} configuration error(s) in {}", errors.0.len(), config_path.display())
    })?;
    let request = PushRequest { archive: Some(archive.to_string()), serial, ..PushRequest::default() };
    let plan = crate::push::plan_push(&config, &request).map_err(|e| e.to_string())?;
    let options = Options { cancel: Some(hard_stop.clone()), ..Options::default() };
    crate::push::once(&config, &plan, &options, ORIGIN).await.map_err(|e| format!("{e:#}"))
}
