//! `pushmirror daemon`: watch every archive, push when an update completes, keep a live status.
//!
//! The daemon is a few lasting objects and the tasks of the configuration running now:
//! - [`Core`] lives as long as the daemon: the status board ([`status`]), the metrics, the
//!   deferred-trigger queue ([`deferred`]), and one [`archive::ArchiveState`] per archive — its
//!   last pushed version, its due-push journal, its status row, its pusher lock.
//! - [`running::Running`] is one configuration at work: its engine, and per archive a watcher
//!   (which publishes the newest completed version) and a pusher (which pushes it). Updates that
//!   complete during a push only overwrite the watcher's value, so they coalesce into one
//!   follow-up push of the newest version.
//!
//! SIGHUP loads the file again (an invalid one keeps the running configuration), starts a new
//! `Running` on the same archive objects and retires the old one after its pushes: the archive's
//! pusher lock makes the new pusher wait, so a push is never dispatched twice. SIGTERM stops
//! taking work and lets running triggers finish for a grace period. Blocking file work (reads,
//! atomic writes with their fsync) runs off the async threads through [`blocking`].

pub mod metrics;
pub mod page;
pub mod server;
pub mod status;

mod archive;
mod deferred;
mod running;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigErrors};
use crate::daemon::archive::ArchiveState;
use crate::daemon::deferred::DeferredQueue;
use crate::daemon::metrics::Metrics;
use crate::daemon::running::Running;
use crate::daemon::server::{MirrorViews, ServerState};
use crate::daemon::status::{DaemonStatus, StatusBoard};
use crate::push::report::History;
use crate::sys::supervise::{Died, Supervisor};
use crate::vocab::clock::Clock;
use crate::vocab::model::Timestamp;

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

/// What lives as long as the daemon, whatever configuration runs.
struct Core {
    config_path: PathBuf,
    /// The `state_dir` the daemon started with; a reload may not move it.
    state_dir: PathBuf,
    status: StatusBoard,
    /// The configuration running now (the status server's views follow it).
    config: watch::Sender<Arc<Config>>,
    metrics: Arc<Metrics>,
    /// Every configured archive's lasting state, by name.
    archives: Mutex<BTreeMap<String, Arc<ArchiveState>>>,
    deferred: Arc<DeferredQueue>,
    /// Cancelled when the grace period after SIGTERM has run out: running triggers are cut short.
    hard_stop: CancellationToken,
    /// Every long-running part: one that panics stops the daemon (exit 1).
    parts: Arc<Supervisor>,
    /// Reads mirrors' trace files after pushes.
    prober: crate::observe::freshness::Prober,
    /// Queues and delivers notifications.
    notifier: Arc<crate::notify::Notifier>,
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
    let (status, status_rx) =
        StatusBoard::new(DaemonStatus { started_at: Some(Timestamp(SystemTime::now())), ..DaemonStatus::default() });
    let metrics = Arc::new(Metrics::default());
    let state_dir = config.state_dir.clone();
    let deferred = {
        let (dir, status) = (state_dir.clone(), status.clone());
        let history = History::new(&state_dir, config.status.history);
        blocking(move || DeferredQueue::load(&dir, &history, status)).await.map_err(anyhow::Error::msg)?
    };
    let core = Arc::new(Core {
        config_path,
        state_dir,
        status,
        config: watch::channel(Arc::new(config.clone())).0,
        metrics: Arc::clone(&metrics),
        archives: Mutex::default(),
        deferred,
        hard_stop: CancellationToken::new(),
        prober: crate::observe::freshness::Prober::new()?,
        notifier: {
            let metrics = Arc::clone(&metrics);
            let counter: crate::notify::Counter =
                Arc::new(move |channel, result| metrics.notification(channel, result));
            Arc::new(crate::notify::Notifier::new(&config.state_dir)?.counting(counter))
        },
        shutdown: control.shutdown.clone(),
        parts: Supervisor::new(),
        clock: control.clock.clone(),
    });
    let running = Running::start(config, &core).await.context("cannot start")?;
    let server_stop = CancellationToken::new();
    let mirrors = Arc::new(MirrorViews::new(core.config.subscribe()));
    let app = crate::daemon::server::router(ServerState { status: status_rx.clone(), metrics, mirrors });
    let stop = server_stop.clone();
    let server =
        tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await });
    tracing::info!(%addr, "status server listening");
    let task = tokio::spawn(async move {
        let parts = Arc::clone(&core.parts);
        let watch_server = tokio::spawn(async move {
            let died = match server.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => Died { part: "status server".into(), cause: e.to_string() },
                Err(e) => Died::of_join_error("status server", &e),
            };
            parts.die(died);
        });
        let supervised = tokio::spawn(supervise(running, control, grace, Arc::clone(&core))).await;
        server_stop.cancel();
        let _ = watch_server.await;
        if let Err(e) = supervised {
            core.parts.die(Died::of_join_error("supervisor", &e));
        }
        core.parts.died().map_or(Ok(()), Err)
    });
    Ok(Daemon { addr, status: status_rx, task })
}

/// Runs configurations until SIGTERM or a part's death: a reload replaces the running one.
async fn supervise(mut running: Arc<Running>, mut control: Control, grace: Duration, core: Arc<Core>) {
    let core = &core;
    notify_systemd(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("watching")]);
    loop {
        tokio::select! {
            _ = control.shutdown.cancelled() => break,
            _ = core.parts.fatal().cancelled() => break,
            Some(()) = control.reload.recv() => {
                notify_systemd(&[sd_notify::NotifyState::Reloading]);
                // Reading files is blocking work: off the async workers, so /healthz and running
                // pushes never wait for a reload.
                let (load, path) = (Arc::clone(&control.load), core.config_path.clone());
                let loaded = match tokio::task::spawn_blocking(move || load(&path)).await {
                    Ok(loaded) => loaded,
                    Err(e) => {
                        core.parts.die(Died::of_join_error("reload", &e));
                        break;
                    }
                };
                // What systemd's status line says until the next push: what the reload did.
                let said = match loaded {
                    Ok(config) => {
                        let changes = changes(running.config(), &config);
                        match Running::start(config, core).await {
                            Ok(next) => {
                                running.retire();
                                running = next;
                                tracing::info!(config = %core.config_path.display(), %changes, "configuration reloaded");
                                format!("reloaded: {changes}")
                            }
                            Err(e) => {
                                tracing::error!(error = %format!("{e:#}"), "reload failed, keeping the old configuration");
                                "reload refused: it could not start, running the previous configuration".to_string()
                            }
                        }
                    }
                    Err(errors) => {
                        for e in &errors.0 {
                            tracing::error!("{e}");
                        }
                        tracing::error!(errors = errors.0.len(), "invalid configuration, keeping the old one");
                        format!("reload refused: {} error(s), running the previous configuration", errors.0.len())
                    }
                };
                notify_systemd(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&said)]);
            }
        }
    }
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    if let Some(died) = core.parts.died() {
        // Said before the exit where it can be (a few seconds at most); else at the next start,
        // from the queue.
        let mut event = crate::notify::event::Event::new(crate::notify::event::EventKind::PartDied, running.config());
        event.detail = Some(format!("{died}; the daemon stops (exit 1) and systemd restarts it"));
        let (notifier, config) = (Arc::clone(&core.notifier), Arc::new(running.config().clone()));
        let queued = blocking({
            let (notifier, config) = (Arc::clone(&notifier), Arc::clone(&config));
            move || notifier.enqueue(&config, event)
        })
        .await;
        if queued.is_ok_and(|n| n > 0) {
            notifier.deliver_due(&config, tokio::time::Instant::now() + Duration::from_secs(10)).await;
        }
    }
    tracing::info!(grace = %humantime::format_duration(grace), "stopping: letting running triggers finish");
    running.retire();
    let hard_stop = core.hard_stop.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        tracing::warn!("grace period over: interrupting running triggers");
        hard_stop.cancel();
    });
    core.parts.tasks().close();
    core.parts.tasks().wait().await;
    timer.abort();
    tracing::info!("stopped");
}

impl Core {
    /// The archive objects `config` needs: the known ones kept (their history bound updated),
    /// new ones opened. Nothing changes until every one could be opened, so a configuration
    /// that fails here leaves the daemon as it was.
    async fn archives_for(self: &Arc<Self>, config: &Config) -> anyhow::Result<BTreeMap<String, Arc<ArchiveState>>> {
        anyhow::ensure!(
            config.state_dir == self.state_dir,
            "state_dir changed from {} to {}: a reload cannot move the daemon's state; restart the daemon",
            self.state_dir.display(),
            config.state_dir.display()
        );
        let known = self.archives.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let history = History::new(&config.state_dir, config.status.history);
        let (me, wanted, kept) = (Arc::clone(self), config.archives.clone(), known.clone());
        let (archives, reports) = blocking(move || -> anyhow::Result<_> {
            let mut archives = BTreeMap::new();
            let mut new = false;
            for (name, archive) in &wanted {
                let state = match kept.get(name) {
                    Some(known) => Arc::clone(known),
                    None => {
                        new = true;
                        let opened = ArchiveState::open(archive, &me.state_dir, history.clone(), me.status.clone());
                        Arc::new(opened.context("cannot read the daemon's state")?)
                    }
                };
                state.use_history(history.clone());
                archives.insert(name.clone(), state);
            }
            // Archives shown for the first time get their last report from the history; a
            // reload of known archives reads nothing.
            let reports = if new { history.latest_per_archive().unwrap_or_default() } else { Default::default() };
            Ok((archives, reports))
        })
        .await?;
        // The ledger exists (a missing one is rebuilt from the history once, here) and holds
        // only what this configuration has.
        let (dir, kept) = (config.state_dir.clone(), Arc::new(config.clone()));
        let history = History::new(&config.state_dir, config.status.history);
        blocking(move || crate::push::change_ledger(&dir, &history, |l| l.keep_configured(&kept))).await;
        let names: Vec<String> = archives.keys().cloned().collect();
        self.status.show_archives(&names, |name| archives[name].first_row(&reports));
        self.config.send_replace(Arc::new(config.clone()));
        *self.archives.lock().unwrap_or_else(|e| e.into_inner()) = archives.clone();
        Ok(archives)
    }
}

/// What a reload from `old` to `new` changes, in words: `mirrors: 2 added, 1 removed, 3 changed;
/// archives: …` (visible settings; a changed secret file's content is not compared).
fn changes(old: &Config, new: &Config) -> String {
    fn diff<T: std::fmt::Debug>(old: &BTreeMap<String, T>, new: &BTreeMap<String, T>) -> (usize, usize, usize) {
        let added = new.keys().filter(|k| !old.contains_key(*k)).count();
        let removed = old.keys().filter(|k| !new.contains_key(*k)).count();
        let changed =
            new.iter().filter(|(k, v)| old.get(*k).is_some_and(|o| format!("{o:?}") != format!("{v:?}"))).count();
        (added, removed, changed)
    }
    let mirrors = |c: &Config| -> BTreeMap<String, String> {
        let triggered = c.mirrors.iter().map(|m| (m.name.clone(), format!("{m:?}")));
        triggered.chain(c.watched.iter().map(|w| (w.name.clone(), format!("{w:?}")))).collect()
    };
    let archives = |c: &Config| -> BTreeMap<String, String> {
        c.archives.iter().map(|(k, a)| (k.clone(), format!("{a:?}"))).collect()
    };
    let said = |what: &str, (added, removed, changed): (usize, usize, usize)| {
        format!("{what}: {added} added, {removed} removed, {changed} changed")
    };
    format!(
        "{}; {}",
        said("mirrors", diff(&mirrors(old), &mirrors(new))),
        said("archives", diff(&archives(old), &archives(new)))
    )
}

/// Runs blocking file work (reads, atomic writes and their fsync) on the blocking pool: the one
/// way the daemon touches its state on disk. A panic in it is resumed here, in the calling task.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    crate::sys::supervise::run_blocking(work).await
}

fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}
