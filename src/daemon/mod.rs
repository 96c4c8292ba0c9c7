//! `pushmirror daemon`: watch every archive, push when an update completes, keep a live status.
//!
//! Per archive, a [`Watcher`] publishes the newest completed version into a watch channel and a
//! pusher pushes it. Updates that complete during a push only overwrite the channel's value, so
//! they coalesce into one follow-up push of the newest version. Before a push is dispatched its
//! journal is persisted ([`state`]); a restart resumes it for the mirrors not yet done.
//! Rate-limited mirrors are kept as deferred triggers (one per mirror) and sent when allowed.
//!
//! A configuration lives in a *generation*: SIGHUP starts a new one from the reloaded file (an
//! invalid file keeps the old one) and retires the old one after its running pushes. A per-archive
//! lock makes the new pusher wait for the old one, so a push is never dispatched twice.

pub mod metrics;
pub mod page;
pub mod server;
pub mod state;
pub mod status;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::archive::watch::{WatchState, Watcher};
use crate::config::{Config, ConfigErrors};
use crate::daemon::metrics::Metrics;
use crate::daemon::server::ServerState;
use crate::daemon::status::{ArchiveStatus, DaemonStatus, DeferredTrigger, MirrorStatus, PushProgress};
use crate::push::engine::{Engine, Options};
use crate::push::plan::{Plan, PushRequest, plan};
use crate::push::report::{History, Report, TriggerReport};
use crate::sys::supervise::{Died, Supervisor};
use crate::transport::Transports;
use crate::transport::mqtt::MqttTransport;
use crate::transport::mqtt::connect::Session;
use crate::vocab::clock::Clock;
use crate::vocab::model::{ErrorClass, Outcome, SkipReason, Stage, Timestamp};
use crate::wire::mqtt::{AckRecord, AckState};
use state::{DeferredMap, Journal, StateDir};

/// Reads and validates the configuration file (on the blocking pool: it reads files).
pub type Loader = Arc<dyn Fn(&Path) -> Result<Config, ConfigErrors> + Send + Sync>;

/// How the daemon is told to reload or stop, and what it reads time and configuration with.
pub struct Control {
    /// Cancelled on SIGTERM/SIGINT: stop accepting work, drain, exit.
    pub shutdown: CancellationToken,
    /// One message per SIGHUP.
    pub reload: mpsc::UnboundedReceiver<()>,
    /// Wall time: [`Clock::system`] in production; tests of waiting logic under paused time pass
    /// [`Clock::following_tokio`].
    pub clock: Clock,
    /// How a reload reads the configuration: [`crate::config::load_for_daemon`] in production.
    pub load: Loader,
}

impl Control {
    /// Production control: the OS clock and [`crate::config::load_for_daemon`].
    pub fn new(shutdown: CancellationToken, reload: mpsc::UnboundedReceiver<()>) -> Self {
        Control { shutdown, reload, clock: Clock::system(), load: Arc::new(crate::config::load_for_daemon) }
    }
}

/// A running daemon.
pub struct Daemon {
    /// Where the status server listens.
    pub addr: SocketAddr,
    /// The live status (what `/status` serves).
    pub status: watch::Receiver<DaemonStatus>,
    task: tokio::task::JoinHandle<Result<(), Died>>,
}

impl Daemon {
    /// Waits until the daemon has drained and stopped; an error when a part of it died.
    pub async fn wait(self) -> Result<(), Died> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(Died::of_join_error("supervisor", &e)),
        }
    }
}

/// State shared by every generation.
struct Shared {
    config_path: PathBuf,
    status: watch::Sender<DaemonStatus>,
    metrics: Arc<Metrics>,
    archive_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    deferred: Mutex<DeferredMap>,
    deferred_changed: Notify,
    /// Cancelled when the grace period after SIGTERM has run out: running triggers are cut short.
    hard_stop: CancellationToken,
    /// Every long-running part: one that panics stops the daemon (exit 1).
    parts: Arc<Supervisor>,
    /// Reads mirrors' trace files after pushes.
    prober: crate::observe::freshness::Prober,
    /// Cancelled by SIGTERM: what outlives a reload (following a push's propagation) ends here.
    shutdown: CancellationToken,
    clock: Clock,
}

/// Starts the daemon: binds the status server, starts watching, returns at once.
pub async fn start(config_path: PathBuf, config: Config, control: Control, grace: Duration) -> anyhow::Result<Daemon> {
    let listener = tokio::net::TcpListener::bind(config.status.listen)
        .await
        .with_context(|| format!("cannot listen on {} (status.listen)", config.status.listen))?;
    let addr = listener.local_addr()?;
    let (status_tx, status_rx) =
        watch::channel(DaemonStatus { started_at: Some(Timestamp(SystemTime::now())), ..DaemonStatus::default() });
    let metrics = Arc::new(Metrics::default());
    let shared = Arc::new(Shared {
        config_path,
        status: status_tx,
        metrics: Arc::clone(&metrics),
        archive_locks: Mutex::default(),
        deferred: Mutex::new(StateDir::new(&config.state_dir).deferred()),
        deferred_changed: Notify::new(),
        hard_stop: CancellationToken::new(),
        prober: crate::observe::freshness::Prober::new()?,
        shutdown: control.shutdown.clone(),
        parts: Supervisor::new(),
        clock: control.clock.clone(),
    });
    let generation = Generation::start(config, &shared).context("cannot start")?;
    let server_stop = CancellationToken::new();
    let app = crate::daemon::server::router(ServerState { status: status_rx.clone(), metrics });
    let stop = server_stop.clone();
    let server =
        tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await });
    tracing::info!(%addr, "status server listening");
    let task = tokio::spawn(async move {
        let parts = Arc::clone(&shared.parts);
        let watch_server = tokio::spawn(async move {
            let died = match server.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => Died { part: "status server".into(), cause: e.to_string() },
                Err(e) => Died::of_join_error("status server", &e),
            };
            parts.die(died);
        });
        let supervised = tokio::spawn(supervise(generation, control, grace, Arc::clone(&shared))).await;
        server_stop.cancel();
        let _ = watch_server.await;
        if let Err(e) = supervised {
            shared.parts.die(Died::of_join_error("supervisor", &e));
        }
        shared.parts.died().map_or(Ok(()), Err)
    });
    Ok(Daemon { addr, status: status_rx, task })
}

async fn supervise(mut generation: Generation, mut control: Control, grace: Duration, shared: Arc<Shared>) {
    let shared = &shared;
    notify_systemd(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("watching")]);
    loop {
        tokio::select! {
            _ = control.shutdown.cancelled() => break,
            _ = shared.parts.fatal().cancelled() => break,
            Some(()) = control.reload.recv() => {
                notify_systemd(&[sd_notify::NotifyState::Reloading]);
                // Reading files is blocking work: off the async workers, so /healthz and running
                // pushes never wait for a reload.
                let (load, path) = (Arc::clone(&control.load), shared.config_path.clone());
                let loaded = match tokio::task::spawn_blocking(move || load(&path)).await {
                    Ok(loaded) => loaded,
                    Err(e) => {
                        shared.parts.die(Died::of_join_error("reload", &e));
                        break;
                    }
                };
                match loaded {
                    Ok(config) => match Generation::start(config, shared) {
                        Ok(next) => {
                            generation.stop.cancel();
                            generation = next;
                            tracing::info!(config = %shared.config_path.display(), "configuration reloaded");
                        }
                        Err(e) => tracing::error!(error = %format!("{e:#}"), "reload failed, keeping the old configuration"),
                    },
                    Err(errors) => {
                        for e in &errors.0 {
                            tracing::error!("{e}");
                        }
                        tracing::error!(errors = errors.0.len(), "invalid configuration, keeping the old one");
                    }
                }
                notify_systemd(&[sd_notify::NotifyState::Ready]);
            }
        }
    }
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    tracing::info!(grace = %humantime::format_duration(grace), "stopping: letting running triggers finish");
    generation.stop.cancel();
    let hard_stop = shared.hard_stop.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        tracing::warn!("grace period over: interrupting running triggers");
        hard_stop.cancel();
    });
    shared.parts.tasks().close();
    shared.parts.tasks().wait().await;
    timer.abort();
    tracing::info!("stopped");
}

fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// One configuration's tasks.
struct Generation {
    stop: CancellationToken,
}

/// What a generation's tasks share.
struct GenCtx {
    config: Config,
    engine: Engine<Transports>,
    state: StateDir,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Generation {
    fn start(config: Config, shared: &Arc<Shared>) -> anyhow::Result<Generation> {
        let transports = Arc::new(Transports::new(&config, Session::Persistent).context("cannot set up transports")?);
        let mqtt = transports.mqtt().cloned();
        let engine = crate::push::engine(&config, transports, shared.clock.clone());
        let state = StateDir::new(&config.state_dir);
        let stop = CancellationToken::new();
        let names: Vec<String> = config.archives.keys().cloned().collect();
        // Archives not shown yet (first start, or new in this configuration) get their mirrors'
        // last outcomes from the history; a reload of known archives reads nothing.
        let shown: Vec<String> = shared.status.borrow().archives.iter().map(|a| a.name.clone()).collect();
        let history = if names.iter().all(|n| shown.contains(n)) {
            Vec::new()
        } else {
            History::new(&config.state_dir, config.status.history).all().unwrap_or_default()
        };
        shared.status.send_modify(|s| {
            s.archives.retain(|a| names.contains(&a.name));
            for name in &names {
                if !s.archives.iter().any(|a| &a.name == name) {
                    let mut a = ArchiveStatus { name: name.clone(), ..ArchiveStatus::default() };
                    for r in history.iter().filter(|r| &r.archive == name && !r.dry_run) {
                        MirrorStatus::fold(&mut a.mirrors, &r.triggers);
                        a.last_report = Some(r.clone());
                    }
                    s.archives.push(a);
                }
            }
            s.archives.sort_by(|a, b| a.name.cmp(&b.name));
        });
        let ctx = Arc::new(GenCtx { config, engine, state, shared: Arc::clone(shared), stop: stop.clone() });
        for archive in ctx.config.archives.values() {
            let pushed = match ctx.state.pushed(&archive.name).context("cannot read the daemon's state")? {
                Some(v) => v,
                None => {
                    // First start: what is there now counts as pushed; only later updates are pushed.
                    let v = crate::archive::watch::read_version(archive);
                    tracing::info!(archive = %archive.name, version = v.as_deref().unwrap_or("none"), "first start: recording the current version without pushing");
                    ctx.state.set_pushed(&archive.name, v.as_deref()).context("cannot write state")?;
                    v
                }
            };
            ctx.update_archive(&archive.name, |a| a.pushed_version = pushed.clone());
            // `completed` starts empty: only versions the watcher sees complete from now on are news
            // (a resumed push may move `pushed` past the version read here).
            let (tx, rx) = watch::channel(WatchState::default());
            let watcher = Watcher::new(archive.clone(), pushed);
            let name = &archive.name;
            shared.parts.spawn(format!("watcher of {name}"), watcher.run(tx, stop.clone()));
            let observe = Arc::clone(&ctx).mirror_observations(name.clone(), rx.clone());
            shared.parts.spawn(format!("status of {name}"), observe);
            shared.parts.spawn(format!("pusher of {name}"), Arc::clone(&ctx).pusher(name.clone(), rx));
        }
        shared.parts.spawn("deferred triggers", Arc::clone(&ctx).deferred_loop());
        shared.parts.spawn("freshness sweep", Arc::clone(&ctx).freshness_loop());
        if let Some(mqtt) = mqtt {
            shared.parts.spawn("MQTT acks", Arc::clone(&ctx).ack_loop(mqtt));
        }
        Ok(Generation { stop })
    }
}

impl GenCtx {
    /// Every ack of an MQTT mirror, also after its push ended: into `/status` (`acks`), and into
    /// the last report of the archive when it answers that push's serial — a mirror that was
    /// `pending` (or unreachable through the broker) becomes `ok` or `failed`, in the stored report
    /// too. Ends with this generation; if the connection task dies (a bug), so does the daemon.
    async fn ack_loop(self: Arc<Self>, mqtt: MqttTransport) {
        let mut acks = mqtt.subscribe_acks();
        let mut link = mqtt.link();
        self.shared.status.send_modify(|s| s.acks = mqtt.acks());
        loop {
            let records = tokio::select! {
                // First: at a reload the successor's connection takes this one's session over.
                biased;
                _ = self.stop.cancelled() => {
                    // The next configuration (if any) connects with the same client id.
                    mqtt.close();
                    return;
                }
                dead = link.wait_for(|l| l.dead) => {
                    let why = dead.ok().and_then(|l| l.error.clone()).map(|(_, _, why)| why).unwrap_or_default();
                    panic!("the MQTT connection ended: {why}");
                }
                record = acks.recv() => match record {
                    Ok(record) => vec![record],
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        // Missed some: every mirror's latest ack stands for them.
                        tracing::warn!("{n} MQTT acks arrived faster than they were recorded: taking the latest of each");
                        mqtt.acks()
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            for record in &records {
                self.late_ack(record).await;
            }
        }
    }

    async fn late_ack(&self, record: &AckRecord) {
        let mut settled = None;
        self.shared.status.send_modify(|s| {
            let same = |a: &AckRecord| a.archive == record.archive && a.ack.mirror == record.ack.mirror;
            match s.acks.iter_mut().find(|a| same(a)) {
                Some(shown) => *shown = record.clone(),
                None => {
                    s.acks.push(record.clone());
                    s.acks.sort_by(|a, b| (&a.archive, &a.ack.mirror).cmp(&(&b.archive, &b.ack.mirror)));
                }
            }
            let Some(a) = s.archives.iter_mut().find(|a| a.name == record.archive) else { return };
            let Some(report) = a.last_report.as_mut().filter(|r| r.serial == record.ack.serial) else { return };
            if !record.ack.state.is_final() {
                return;
            }
            let changed = report.settle(&record.ack.mirror, record.ack.stage, |row| {
                row.exit_code = record.ack.exit_code;
                row.sync_duration_ms = record.ack.duration_ms;
                row.error_class = None;
                row.error = None;
                row.note = Some(format!("acknowledged {} after the push", record.ack.state));
                row.outcome = Outcome::Ok;
                if record.ack.state == AckState::Failed {
                    row.outcome = Outcome::Failed;
                    row.error_class = Some(ErrorClass::RemoteExit);
                    row.error = Some("the mirror's sync failed".into());
                }
            });
            if changed {
                let row: Vec<_> = report.triggers.iter().filter(|t| t.mirror == record.ack.mirror).cloned().collect();
                MirrorStatus::fold(&mut a.mirrors, &row);
                settled = Some(report.clone());
            }
        });
        let Some(report) = settled else { return };
        tracing::info!(archive = %record.archive, mirror = %record.ack.mirror, state = %record.ack.state, "late MQTT ack recorded in the last report");
        let history = History::new(&self.config.state_dir, self.config.status.history);
        store_again(history, report, "the late ack").await;
    }
    /// Every `freshness.interval`, surveys every mirror with a `check:` URL
    /// ([`crate::observe::freshness`]): the rows go to `/status`, `/metrics` and `state_dir/freshness.json`
    /// (which carries each mirror's `since` over restarts). Ends with this generation.
    async fn freshness_loop(self: Arc<Self>) {
        let surveyed = |c: &Config| c.mirrors.iter().any(|m| m.check.is_some()) || !c.watched.is_empty();
        let state_dir = self.config.state_dir.clone();
        if !surveyed(&self.config) {
            // Nothing to survey (any more): no stale rows linger in /status, /metrics or on disk.
            self.shared.metrics.freshness(&[]);
            self.shared.status.send_modify(|s| s.freshness.clear());
            if let Err(e) = crate::observe::freshness::forget(&state_dir) {
                tracing::error!(dir = %state_dir.display(), error = %e, "cannot remove the freshness memory");
            }
            return;
        }
        let (dir, keep) = (state_dir.clone(), self.config.status.history);
        let mut previous = tokio::task::spawn_blocking(move || {
            crate::observe::freshness::recall(&dir).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "freshness memory unusable; starting afresh");
                Vec::new()
            })
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        loop {
            let dir = state_dir.clone();
            let history = tokio::task::spawn_blocking(move || {
                History::new(&dir, keep).all().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot read the report history: versions behind are not counted");
                    Vec::new()
                })
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            let survey = crate::observe::freshness::survey(&self.config, None, &self.shared.prober, &history);
            let mut rows = tokio::select! {
                rows = survey => rows,
                _ = self.stop.cancelled() => return,
            };
            crate::observe::freshness::annotate(&mut rows, &previous, &history);
            let (dir, kept) = (state_dir.clone(), rows.clone());
            let written = tokio::task::spawn_blocking(move || crate::observe::freshness::remember(&dir, &kept))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            if let Err(e) = written {
                tracing::error!(dir = %state_dir.display(), error = %e, "cannot write the freshness memory");
            }
            let stale = rows.iter().filter(|r| !crate::observe::freshness::all_fresh(std::slice::from_ref(r))).count();
            tracing::info!(mirrors = rows.len(), behind_or_unreachable = stale, "freshness sweep");
            self.shared.metrics.freshness(&rows);
            self.shared.status.send_modify(|s| s.freshness = rows.clone());
            previous = rows;
            tokio::select! {
                _ = tokio::time::sleep(self.config.freshness_interval) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    /// The last pushed version; one that cannot be read now counts as none (so the current
    /// version is pushed again rather than skipped), and says so.
    fn last_pushed(&self, archive: &str) -> Option<String> {
        self.state
            .pushed(archive)
            .unwrap_or_else(|e| {
                tracing::error!(%archive, error = %e, "cannot read the last pushed version");
                None
            })
            .flatten()
    }

    fn update_archive(&self, name: &str, f: impl FnOnce(&mut ArchiveStatus)) {
        self.shared.status.send_modify(|s| {
            if let Some(a) = s.archives.iter_mut().find(|a| a.name == name) {
                f(a);
            }
        });
    }

    /// Copies what the watcher sees into the live status.
    async fn mirror_observations(self: Arc<Self>, archive: String, mut rx: watch::Receiver<WatchState>) {
        loop {
            let observed = rx.borrow_and_update().observed.clone();
            self.update_archive(&archive, |a| {
                a.observed_version = observed.version;
                a.locked = observed.locked;
            });
            tokio::select! {
                _ = self.stop.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Pushes each newly completed version; resumes a due push first.
    async fn pusher(self: Arc<Self>, archive: String, mut rx: watch::Receiver<WatchState>) {
        let lock = {
            let mut locks = self.shared.archive_locks.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(locks.entry(archive.clone()).or_default())
        };
        // The previous generation's pusher for this archive finishes its push first.
        let _held = lock.lock().await;
        if let Some(due) = self.state.due(&archive)
            && !self.stop.is_cancelled()
        {
            tracing::info!(%archive, version = %due.version, done = due.done.len(), "resuming a push that was due");
            self.push(&archive, due.version, Some(due.done)).await;
        }
        // The version this pusher last pushed: if recording it failed (disk full), the state file
        // still names the older one, and the same version must not be pushed again and again.
        let mut attempted: Option<String> = None;
        loop {
            let completed = rx.borrow_and_update().completed.clone();
            let pushed = self.last_pushed(&archive);
            if let Some(version) = completed.filter(|v| Some(v) != pushed.as_ref() && Some(v) != attempted.as_ref()) {
                if self.stop.is_cancelled() {
                    return;
                }
                self.push(&archive, version.clone(), None).await;
                attempted = Some(version);
                continue;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
        }
    }

    /// One push of `version`, journalled so that a crash loses nothing: journal, plan, dispatch,
    /// record the outcome, keep what was deferred.
    async fn push(&self, archive: &str, version: String, resumed: Option<BTreeSet<String>>) {
        let started = tokio::time::Instant::now();
        let journal = Arc::new(self.open_journal(archive, &version, resumed.is_some()));
        let Some(plan) = self.plan_version(archive, &version, resumed.as_ref()) else { return };
        let total = self.announce(archive, &version, &plan);
        let (report, ended) = self.dispatch(archive, &plan, &journal).await;
        let interrupted = report.triggers.iter().any(TriggerReport::is_interrupted);
        let previous = self.last_pushed(archive);
        self.shared.metrics.push_ended(&report, total.saturating_sub(ended), previous.as_deref());
        if interrupted {
            tracing::warn!(%archive, %version, "push interrupted; it stays due and resumes at the next start");
        } else {
            self.record_pushed(archive, &version, journal);
        }
        self.defer(&report);
        log_summary(&report);
        self.follow(archive, &report, started);
        self.finish_status(archive, report, !interrupted);
        notify_systemd(&[sd_notify::NotifyState::Status("watching")]);
    }

    /// Persists the push as due before anything is sent (a resumed push continues its journal);
    /// without a journal the push still goes out, it just cannot resume after a crash.
    fn open_journal(&self, archive: &str, version: &str, resumed: bool) -> Option<Journal> {
        let journal = if resumed { self.state.resume(archive) } else { self.state.begin(archive, version) };
        journal.map_err(|e| tracing::error!(%archive, error = %e, "cannot persist the due push; pushing anyway")).ok()
    }

    /// The plan for `version`; mirrors that had their trigger before a restart are skipped.
    fn plan_version(&self, archive: &str, version: &str, done: Option<&BTreeSet<String>>) -> Option<Plan> {
        let request = PushRequest {
            archive: Some(archive.to_string()),
            serial: Some(version.to_string()),
            ..PushRequest::default()
        };
        let mut plan = plan(&self.config, &request)
            .map_err(|e| tracing::error!(%archive, error = %e, "cannot plan the push"))
            .ok()?;
        if let Some(done) = done {
            for entry in plan.entries.iter_mut().filter(|e| e.skip.is_none() && done.contains(&e.mirror.name)) {
                entry.skip = Some(SkipReason::DeliveredBeforeRestart);
            }
        }
        Some(plan)
    }

    /// Logs, counts and shows the push as started; returns how many triggers it sends.
    fn announce(&self, archive: &str, version: &str, plan: &Plan) -> usize {
        let total: usize = plan.entries.iter().filter(|e| e.skip.is_none()).map(|e| e.stages.len()).sum();
        tracing::info!(%archive, %version, triggers = total, "pushing");
        notify_systemd(&[sd_notify::NotifyState::Status(&format!("pushing {archive} {version}"))]);
        self.shared.metrics.push_started(total);
        let progress = PushProgress {
            version: Some(version.to_string()),
            started_at: Timestamp(SystemTime::now()),
            total,
            done: vec![],
        };
        self.update_archive(archive, |a| a.push = Some(progress));
        total
    }

    /// Sends the plan; each final trigger is journalled and shown as it ends. Returns the report
    /// and how many triggers ended (the rest never started: shutdown).
    async fn dispatch(&self, archive: &str, plan: &Plan, journal: &Arc<Option<Journal>>) -> (Report, usize) {
        let ended = Arc::new(AtomicUsize::new(0));
        let options = {
            let (journal, ended, shared, archive) =
                (Arc::clone(journal), Arc::clone(&ended), Arc::clone(&self.shared), archive.to_string());
            self.options(move |row: &TriggerReport| {
                if let Some(j) = journal.as_ref()
                    && is_final(row)
                {
                    j.record_done(&row.mirror);
                }
                ended.fetch_add(1, Ordering::SeqCst);
                shared.status.send_modify(|s| {
                    if let Some(p) = s.archives.iter_mut().find(|a| a.name == archive).and_then(|a| a.push.as_mut()) {
                        p.done.push(row.clone());
                    }
                });
            })
        };
        let report = crate::push::execute(&self.config, &self.engine, plan, &options, "daemon").await;
        // The callback holds the journal too; it must be gone before the journal can be finished.
        drop(options);
        (report, ended.load(Ordering::SeqCst))
    }

    /// Records `version` as pushed and clears the due push.
    fn record_pushed(&self, archive: &str, version: &str, journal: Arc<Option<Journal>>) {
        if let Err(e) = self.state.set_pushed(archive, Some(version)) {
            tracing::error!(%archive, error = %e, "cannot record the pushed version");
        }
        match Arc::into_inner(journal) {
            Some(Some(j)) => {
                if let Err(e) = j.finish() {
                    tracing::error!(%archive, error = %e, "cannot clear the due push");
                }
            }
            Some(None) => {}
            None => tracing::error!(%archive, "the due push journal is still in use; it stays due"),
        }
    }

    /// Engine options of a daemon push: metrics, `also` per ended trigger, and the hard stop.
    fn options(&self, also: impl Fn(&TriggerReport) + Send + Sync + 'static) -> Options {
        let (on_done, on_attempt) = self.shared.metrics.callbacks(also);
        Options {
            on_done: Some(on_done),
            on_attempt: Some(on_attempt),
            cancel: Some(self.shared.hard_stop.clone()),
            ..Options::default()
        }
    }

    /// Watches each delivered mirror with a `check:` URL until it serves the pushed version
    /// ([`crate::observe::propagation`]), as a supervised part that ends at shutdown (not at a reload); the result
    /// goes into the archive's last report in `/status` and the `propagation_seconds` histogram.
    fn follow(&self, archive: &str, report: &Report, started: tokio::time::Instant) {
        let (Some(version), Some(config)) = (report.serial.clone(), self.config.archives.get(archive)) else { return };
        let mirrors = crate::observe::propagation::delivered_with_check(&self.config, report);
        if mirrors.is_empty() {
            return;
        }
        // Following outlives a reload (it needs no configuration), not a shutdown.
        let (shared, stop, timeout) =
            (Arc::clone(&self.shared), self.shared.shutdown.clone(), config.propagation_timeout);
        let archive = archive.to_string();
        let part = format!("propagation of {archive} {version}");
        let mut report = report.clone();
        let history = History::new(&self.config.state_dir, self.config.status.history);
        self.shared.parts.spawn(part, async move {
            let followed = crate::observe::propagation::follow(&shared.prober, mirrors, &version, started, timeout);
            let rows = tokio::select! {
                rows = followed => rows,
                _ = stop.cancelled() => return,
            };
            for after in rows.iter().filter_map(|r| r.live_after_ms) {
                shared.metrics.mirror_live(Duration::from_millis(after));
            }
            report.propagation = rows;
            shared.status.send_modify(|s| {
                let last = s.archives.iter_mut().find(|a| a.name == archive).and_then(|a| a.last_report.as_mut());
                if let Some(shown) = last.filter(|r| r.started_at == report.started_at) {
                    shown.propagation = report.propagation.clone();
                }
            });
            // Into the stored report too, so that the page still shows it after a restart.
            store_again(history, report, "the propagation").await;
        });
    }

    fn finish_status(&self, archive: &str, report: Report, pushed: bool) {
        self.update_archive(archive, |a| {
            a.push = None;
            if pushed {
                a.pushed_version = report.serial.clone();
            }
            MirrorStatus::fold(&mut a.mirrors, &report.triggers);
            a.last_report = Some(report);
        });
    }

    /// Keeps every deferred trigger of `report` (one per mirror) to send when allowed.
    fn defer(&self, report: &Report) {
        let fresh: Vec<_> = report
            .triggers
            .iter()
            .filter(|t| t.outcome == Outcome::Deferred)
            .filter_map(|t| Some(((report.archive.clone(), t.mirror.clone()), t.deferred_until?.0)))
            .collect();
        if fresh.is_empty() {
            return;
        }
        self.change_deferred(|map| {
            for (key, until) in fresh {
                // An older pending trigger for the same mirror already stands for this one.
                map.entry(key).or_insert(until);
            }
        });
    }

    fn change_deferred(&self, f: impl FnOnce(&mut DeferredMap)) {
        let snapshot = {
            let mut map = self.shared.deferred.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut map);
            // Written while the map is held: two generations changing it at once would otherwise
            // race to the disk, and the older snapshot could land last.
            if let Err(e) = self.state.set_deferred(&map) {
                tracing::error!(error = %e, "cannot persist deferred triggers");
            }
            map.clone()
        };
        self.shared.status.send_modify(|s| {
            s.deferred = snapshot
                .iter()
                .map(|((archive, mirror), until)| DeferredTrigger {
                    archive: archive.clone(),
                    mirror: mirror.clone(),
                    until: Timestamp(*until),
                })
                .collect();
        });
        self.shared.deferred_changed.notify_one();
    }

    /// Sends deferred triggers when their rate limits allow, with the archive's current version.
    async fn deferred_loop(self: Arc<Self>) {
        loop {
            let next = self.shared.deferred.lock().unwrap_or_else(|e| e.into_inner()).values().min().copied();
            let wait = async {
                match next {
                    Some(t) => tokio::time::sleep(self.shared.clock.until(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = self.shared.deferred_changed.notified() => continue,
                _ = wait => {}
            }
            let now = self.shared.clock.now();
            let due: Vec<(String, String)> = {
                let map = self.shared.deferred.lock().unwrap_or_else(|e| e.into_inner());
                map.iter().filter(|(_, until)| **until <= now).map(|(k, _)| k.clone()).collect()
            };
            let mut by_archive: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (archive, mirror) in due {
                by_archive.entry(archive).or_default().push(mirror);
            }
            for (archive, mirrors) in by_archive {
                self.send_deferred(&archive, mirrors).await;
            }
        }
    }

    async fn send_deferred(&self, archive: &str, mirrors: Vec<String>) {
        let report = self.push_only(archive, &mirrors).await;
        if report.as_ref().is_some_and(|r| r.triggers.iter().any(TriggerReport::is_interrupted)) {
            // Still pending; persisted, so the next start sends it.
            return;
        }
        self.change_deferred(|map| {
            for m in &mirrors {
                map.remove(&(archive.to_string(), m.clone()));
            }
        });
        if let Some(report) = report {
            self.defer(&report);
            self.update_archive(archive, |a| MirrorStatus::fold(&mut a.mirrors, &report.triggers));
        }
    }

    /// Pushes the archive's last pushed version to `mirrors` only (those still configured).
    async fn push_only(&self, archive: &str, mirrors: &[String]) -> Option<Report> {
        let known: Vec<String> =
            mirrors.iter().filter(|m| self.config.mirrors_of(archive).any(|c| &c.name == *m)).cloned().collect();
        if known.is_empty() {
            return None;
        }
        let request = PushRequest {
            archive: Some(archive.to_string()),
            only: known,
            serial: self.last_pushed(archive),
            ..PushRequest::default()
        };
        let mut plan = plan(&self.config, &request).ok()?;
        plan.entries.retain(|e| e.skip.is_none());
        self.shared.metrics.push_started(plan.entries.iter().map(|e| e.stages.len()).sum());
        let options = self.options(|_| {});
        let report = crate::push::execute(&self.config, &self.engine, &plan, &options, "daemon-deferred").await;
        log_summary(&report);
        Some(report)
    }
}

/// A row is final for the journal when the mirror will get nothing more in this push and it was
/// not cut short by shutdown (cut-short triggers are resent on resume).
fn is_final(row: &TriggerReport) -> bool {
    // A pending MQTT stage 1 is followed by stage 2 too (dispatch publishes it).
    let more_to_come = row.stage == Stage::Stage1 && matches!(row.outcome, Outcome::Ok | Outcome::Pending);
    !more_to_come && !row.is_interrupted()
}

fn log_summary(report: &Report) {
    let s = &report.summary;
    tracing::info!(
        archive = %report.archive,
        version = report.serial.as_deref().unwrap_or(""),
        ok = s.ok, failed = s.failed, deferred = s.deferred, skipped = s.skipped,
        ms = report.duration_ms,
        "push finished"
    );
}

/// Writes what was learned after a push (its propagation, a late ack) into the stored copy of
/// `report`, off the runtime's threads; a failure is logged, naming `what`.
async fn store_again(history: History, report: Report, what: &str) {
    let archive = report.archive.clone();
    let written = tokio::task::spawn_blocking(move || history.update(&report))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    if let Err(e) = written {
        tracing::error!(%archive, error = %e, "cannot add {what} to the stored report");
    }
}
