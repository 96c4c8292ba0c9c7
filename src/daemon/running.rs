//! One configuration at work: its engine, and per archive a watcher and a pusher; the deferred
//! triggers' sender, the MQTT acks' reader and the freshness sweep. Everything here ends when the
//! configuration is retired (a reload, or SIGTERM); following a push's propagation outlives a
//! reload.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::archive::ArchiveState;
use super::{Core, blocking, notify_systemd};
use crate::archive::watch::{WatchState, Watcher};
use crate::config::Config;
use crate::daemon::status::PropagationProgress;
use crate::observe::propagation::Follower;
use crate::push::engine::{Engine, Options};
use crate::push::ledger::{Ledger, Live};
use crate::push::plan::{Plan, PushRequest, plan};
use crate::push::report::{History, Report, TriggerReport};
use crate::transport::Transports;
use crate::transport::mqtt::MqttTransport;
use crate::transport::mqtt::connect::BrokerSession;
use crate::vocab::model::{Outcome, SkipReason, Timestamp};
use crate::wire::mqtt::AckRecord;

/// One configuration's tasks and what they share.
pub(super) struct Running {
    config: Config,
    engine: Engine<Transports>,
    archives: BTreeMap<String, Arc<ArchiveState>>,
    core: Arc<Core>,
    /// Cancelled when this configuration is retired.
    stop: CancellationToken,
}

impl Running {
    /// Sets up `config` (transports, then the archives' state) and starts its tasks. An error
    /// leaves the daemon as it was.
    pub(super) async fn start(config: Config, core: &Arc<Core>) -> anyhow::Result<Arc<Running>> {
        let transports =
            Arc::new(Transports::new(&config, BrokerSession::Persistent).context("cannot set up transports")?);
        let mqtt = transports.mqtt().cloned();
        let engine = crate::push::engine(&config, transports, core.clock.clone());
        let archives = core.archives_for(&config).await?;
        for archive in config.archives_without_mirrors() {
            tracing::warn!(%archive, "no mirror carries this archive: pushing it triggers nobody");
        }
        let running =
            Arc::new(Running { config, engine, archives, core: Arc::clone(core), stop: CancellationToken::new() });
        let parts = &core.parts;
        for (name, state) in &running.archives {
            // `completed` starts empty: only versions the watcher sees complete from now on are
            // news (a resumed push may move `pushed` past the version read here).
            let (tx, rx) = watch::channel(WatchState::default());
            let watcher = Watcher::new(running.config.archives[name].clone(), state.pushed());
            parts.spawn(format!("watcher of {name}"), watcher.run(tx, running.stop.clone()));
            parts.spawn(format!("status of {name}"), Arc::clone(&running).observe(Arc::clone(state), rx.clone()));
            parts.spawn(format!("pusher of {name}"), Arc::clone(&running).pusher(Arc::clone(state), rx));
        }
        parts.spawn("deferred triggers", Arc::clone(&running).send_deferred_when_allowed());
        parts.spawn("freshness sweep", Arc::clone(&running).sweep_freshness());
        parts.spawn("notifications", Arc::clone(&running).deliver_notifications());
        if let Some(mqtt) = mqtt {
            parts.spawn("MQTT broker watch", Arc::clone(&running).watch_broker(mqtt.clone()));
            parts.spawn("MQTT acks", Arc::clone(&running).record_acks(mqtt));
        }
        Ok(running)
    }

    /// The configuration.
    pub(super) fn config(&self) -> &Config {
        &self.config
    }

    /// Ends this configuration's tasks; a push running now finishes first.
    pub(super) fn retire(&self) {
        self.stop.cancel();
    }

    /// Copies what the watcher sees into the archive's status row.
    async fn observe(self: Arc<Self>, archive: Arc<ArchiveState>, mut rx: watch::Receiver<WatchState>) {
        loop {
            archive.observed(&rx.borrow_and_update().observed);
            tokio::select! {
                _ = self.stop.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Pushes each newly completed version; resumes a due push first.
    async fn pusher(self: Arc<Self>, archive: Arc<ArchiveState>, mut rx: watch::Receiver<WatchState>) {
        // The previous configuration's pusher of this archive finishes its push first.
        let _held = archive.lock_pusher().await;
        if let Some(due) = archive.due().await
            && !self.stop.is_cancelled()
        {
            tracing::info!(archive = %archive.name(), version = %due.version, done = due.done.len(), "resuming a push that was due");
            self.push(&archive, due.version, Some(due.done)).await;
        }
        // The version this pusher last tried: one that could not even be planned is not tried
        // again and again.
        let mut attempted: Option<String> = None;
        loop {
            let completed = rx.borrow_and_update().completed.clone();
            let news = |v: &String| Some(v) != archive.pushed().as_ref() && Some(v) != attempted.as_ref();
            if let Some(version) = completed.filter(news) {
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

    /// One push of `version`, journalled so that a crash loses nothing: plan, journal and show
    /// it, dispatch (each ended trigger journalled and shown), store the report and record the
    /// version, keep what was deferred, follow the propagation.
    async fn push(&self, archive: &Arc<ArchiveState>, version: String, resumed: Option<BTreeSet<String>>) {
        let started = tokio::time::Instant::now();
        let name = archive.name();
        let _sending = archive.lock_sending().await;
        let Some(mut plan) = self.plan_version(name, &version, resumed.as_ref()) else { return };
        // The operator's gate: a veto sends nothing (every trigger skipped, reason `hook`).
        if let Err(why) = crate::notify::before_push(&self.config, name, Some(&version)).await {
            tracing::warn!(archive = %name, %version, %why, "push vetoed by the before_push hook: nothing sent");
            for entry in plan.entries.iter_mut().filter(|e| e.skip.is_none()) {
                entry.skip = Some(SkipReason::Hook);
            }
            let report = crate::push::dispatch(&self.engine, &plan, &Options::default(), "daemon").await;
            archive.vetoed(&report).await;
            return;
        }
        let total: usize = plan.entries.iter().filter(|e| e.skip.is_none()).map(|e| e.stages.len()).sum();
        tracing::info!(archive = %name, %version, triggers = total, "pushing");
        notify_systemd(&[sd_notify::NotifyState::Status(&format!("pushing {name} {version}"))]);
        self.core.metrics.push_started(total);
        archive.begin(&version, resumed.is_some(), total).await;
        let follower = self.follower(archive, &plan, &version, started);
        let ended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let options = {
            let (archive, ended) = (Arc::clone(archive), Arc::clone(&ended));
            let delivered = follower.as_ref().map(Follower::on_delivered);
            self.options(move |row| {
                archive.trigger_ended(row);
                if let Some(delivered) = &delivered {
                    delivered(row);
                }
                ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        };
        let report = crate::push::dispatch(&self.engine, &plan, &options, "daemon").await;
        // Deferred before the push shows as ended: whoever sees it ended sees what it deferred.
        self.core.deferred.keep(&report).await;
        let (previous, stored) = archive.finish(&report).await;
        let unfinished = total.saturating_sub(ended.load(std::sync::atomic::Ordering::SeqCst));
        self.core.metrics.push_ended(&report, unfinished, previous.as_deref());
        if report.triggers.iter().any(TriggerReport::is_interrupted) {
            tracing::warn!(archive = %name, %version, "push interrupted; it stays due and resumes at the next start");
        }
        log_summary(&report);
        self.tell(Some(&report), stored.ledger.as_ref(), crate::notify::event::EventKind::Push, &report.archive).await;
        self.after_push(&report, stored.file);
        if let Some(follower) = follower {
            self.follow_to_the_end(archive, follower, report);
        }
        notify_systemd(&[sd_notify::NotifyState::Status("watching")]);
    }

    /// Queues the event of a ledger change for `archive` (`report`'s mirrors, else every mirror
    /// of the archive), if it changed any mirror's standing.
    async fn tell(
        &self,
        report: Option<&Report>,
        change: Option<&crate::push::ledger::Change>,
        kind: crate::notify::event::EventKind,
        archive: &str,
    ) {
        use crate::notify::event::{Event, changes};
        let configured = self.config.notify_for(archive);
        // An `on_event` hook alone hears events too.
        let heard = configured.is_some() || self.config.hooks_for(archive).on_event.is_some();
        let Some(change) = change.filter(|_| heard) else { return };
        let after_failures = configured.map_or(crate::config::defaults::NOTIFY_AFTER_FAILURES, |n| n.after_failures);
        let mirrors: Vec<String> = match report {
            Some(r) => r.triggers.iter().map(|t| t.mirror.clone()).collect(),
            None => self
                .config
                .mirrors_of(archive)
                .map(|m| m.name.clone())
                .chain(self.config.watched.iter().filter(|w| w.serves(archive)).map(|w| w.name.clone()))
                .collect(),
        };
        let mut seen = std::collections::BTreeSet::new();
        let mirrors = mirrors.iter().filter(|m| seen.insert(m.as_str())).map(String::as_str);
        let found = changes(&change.before, &change.after, archive, mirrors, after_failures);
        if found.is_empty() {
            return;
        }
        let mut event = Event::new(kind, &self.config);
        (event.archive, event.serial, event.changes) =
            (Some(archive.to_string()), report.and_then(|r| r.serial.clone()), found);
        self.queue_event(event).await;
    }

    /// Queues `event` (off the async threads) and wakes the delivery.
    async fn queue_event(&self, event: crate::notify::event::Event) {
        let (notifier, config) = (Arc::clone(&self.core.notifier), Arc::new(self.config.clone()));
        if let Err(e) = blocking(move || notifier.enqueue(&config, event)).await {
            tracing::error!(error = %e, "cannot queue a notification");
        }
    }

    /// Runs the `after_push` hook, if any, as a part of its own: the push does not wait for it.
    fn after_push(&self, report: &Report, stored: Option<std::path::PathBuf>) {
        if self.config.hooks_for(&report.archive).after_push.is_none() {
            return;
        }
        let (config, report) = (self.config.clone(), report.clone());
        let part = format!("after_push hook of {} {}", report.archive, report.serial.as_deref().unwrap_or("?"));
        self.core
            .parts
            .spawn(part, async move { crate::notify::after_push(&config, &report, stored.as_deref()).await });
    }

    /// Delivers queued notifications as they fall due; ends with this configuration.
    async fn deliver_notifications(self: Arc<Self>) {
        let notifier = Arc::clone(&self.core.notifier);
        loop {
            let batch = tokio::time::Instant::now() + Duration::from_secs(600);
            let next = notifier.deliver_due(&self.config, batch).await;
            let wait = async {
                match next {
                    Some(t) => {
                        tokio::time::sleep(t.duration_since(std::time::SystemTime::now()).unwrap_or_default()).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = notifier.queued() => {}
                _ = wait => {}
            }
        }
    }

    /// The MQTT broker going away and coming back, as events (throttled like mirrors).
    async fn watch_broker(self: Arc<Self>, mqtt: MqttTransport) {
        use crate::notify::event::{Event, EventKind};
        let mut link = mqtt.link();
        let mut up: Option<bool> = None;
        loop {
            let (now_up, error) = {
                let l = link.borrow_and_update();
                (l.up, l.error.as_ref().map(|(_, _, why)| why.clone()))
            };
            let went = match (up, now_up, &error) {
                (Some(true) | None, false, Some(_)) => Some(EventKind::BrokerDown),
                (Some(false), true, _) => Some(EventKind::BrokerUp),
                _ => None,
            };
            if now_up || error.is_some() {
                up = Some(now_up);
            }
            if let Some(kind) = went {
                let mut event = Event::new(kind, &self.config);
                let broker = self.config.mqtt.as_ref().map(|m| m.broker.to_string()).unwrap_or_default();
                event.detail = Some(match &error {
                    Some(why) if kind == EventKind::BrokerDown => format!("broker {broker}: {why}"),
                    _ => format!("broker {broker}"),
                });
                self.queue_event(event).await;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                changed = link.changed() => if changed.is_err() { return },
            }
        }
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

    /// Engine options of a daemon push: metrics, `also` per ended trigger, and the hard stop.
    fn options(&self, also: impl Fn(&TriggerReport) + Send + Sync + 'static) -> Options {
        let (on_done, on_attempt) = self.core.metrics.callbacks(also);
        Options {
            on_done: Some(on_done),
            on_attempt: Some(on_attempt),
            cancel: Some(self.core.hard_stop.clone()),
            stop: Some(self.core.shutdown.clone()),
            ..Options::default()
        }
    }

    /// Follows the propagation of the push of `version` that starts now ([`Follower`]): each
    /// mirror with a `check:` URL from the delivery of its trigger; shown live in the archive's
    /// status (`propagation`, with its deadline) while it runs.
    fn follower(
        &self,
        archive: &Arc<ArchiveState>,
        plan: &Plan,
        version: &str,
        started: tokio::time::Instant,
    ) -> Option<Follower> {
        let config = self.config.archives.get(archive.name())?;
        let mirrors = crate::observe::propagation::with_check(&self.config, plan);
        if mirrors.is_empty() {
            return None;
        }
        let now = std::time::SystemTime::now();
        let progress = PropagationProgress {
            version: version.to_string(),
            started_at: Timestamp(now),
            deadline: Timestamp(now + config.propagation_timeout),
            followed: mirrors.len(),
            rows: Vec::new(),
        };
        archive.show_propagation(Some(progress.clone()));
        let shown = Arc::clone(archive);
        let follower =
            Follower::start(&self.core.prober, mirrors, version, started, config.propagation_timeout, move |rows| {
                shown.show_propagation_rows(progress.started_at, rows)
            });
        Some(follower)
    }

    /// Waits for `follower` to end (a supervised part that ends at shutdown, not at a reload);
    /// its rows go into the archive's last report in `/status` and the stored one, the ledger
    /// (each live mirror's version) and the `propagation_seconds` histogram.
    fn follow_to_the_end(&self, archive: &Arc<ArchiveState>, follower: Follower, mut report: Report) {
        let (core, archive) = (Arc::clone(&self.core), Arc::clone(archive));
        let (state_dir, history) = self.history();
        let part = format!("propagation of {} {}", report.archive, report.serial.as_deref().unwrap_or("?"));
        report.propagation_deadline_ms = Some(follower.deadline_ms());
        report.propagation_followed = Some(follower.followed());
        self.core.parts.spawn(part, async move {
            let rows = tokio::select! {
                rows = follower.finish() => rows,
                _ = core.shutdown.cancelled() => return,
            };
            for after in rows.iter().filter(|r| !r.live_before_push).filter_map(|r| r.live_after_ms) {
                core.metrics.mirror_live(Duration::from_millis(after));
            }
            report.propagation = rows;
            archive.propagation_ended(&report);
            let (live, at) = (report.clone(), Timestamp(std::time::SystemTime::now()));
            blocking(move || {
                crate::push::change_ledger(&state_dir, &history, |ledger| {
                    for p in live.propagation.iter().filter(|p| p.live_after_ms.is_some()) {
                        ledger.record_live(
                            &live.archive,
                            &p.mirror,
                            crate::push::ledger::Live {
                                standing: crate::vocab::model::Standing::UpToDate,
                                version: live.serial.clone(),
                                lag_ms: Some(0),
                                since: None,
                                checked_at: at,
                                error: None,
                            },
                        );
                    }
                })
            })
            .await;
            // Into the stored report too, so that the page still shows it after a restart.
            archive.store_again(report, "the propagation").await;
        });
    }

    /// Sends deferred triggers when their rate limits allow, with the archive's current version.
    async fn send_deferred_when_allowed(self: Arc<Self>) {
        let deferred = &self.core.deferred;
        loop {
            let wait = async {
                match deferred.next_at() {
                    Some(t) => tokio::time::sleep(self.core.clock.until(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = deferred.changed() => continue,
                _ = wait => {}
            }
            for (archive, mirrors) in deferred.allowed(self.core.clock.now()) {
                self.send_deferred(&archive, mirrors).await;
            }
        }
    }

    async fn send_deferred(&self, archive: &str, mirrors: Vec<String>) {
        // After a push under way has recorded its version: that is the version to send.
        let state = self.archives.get(archive).cloned();
        let _sending = match &state {
            Some(state) => Some(state.lock_sending().await),
            None => None, // an archive no longer configured: its entries are dropped below
        };
        let mirrors = self.settle_delivered(archive, mirrors).await;
        if mirrors.is_empty() {
            return;
        }
        let report = self.push_only(archive, &mirrors).await;
        if report.as_ref().is_some_and(|r| r.triggers.iter().any(TriggerReport::is_interrupted)) {
            // Still pending; persisted, so the next start sends it.
            return;
        }
        self.core.deferred.sent(archive, &mirrors).await;
        if let Some(report) = report {
            self.core.deferred.keep(&report).await;
        }
    }

    /// `mirrors` less those that have the version their deferred trigger would send: a push
    /// reached them meanwhile (one that landed the instant the slot came free, or an operator's
    /// `push --only`). Those are owed nothing: their deferral is settled — out of the queue and
    /// the ledger — and they are not triggered again.
    async fn settle_delivered(&self, archive: &str, mirrors: Vec<String>) -> Vec<String> {
        let Some(version) = self.archives.get(archive).and_then(|a| a.pushed()) else { return mirrors };
        let (state_dir, history) = self.history();
        let (a, v, candidates) = (archive.to_string(), version.clone(), mirrors.clone());
        let settled = blocking(move || -> Result<Vec<String>, crate::push::ledger::LedgerError> {
            let has_it = |l: &Ledger, m: &String| l.get(&a, m).is_some_and(|s| s.delivered.as_deref() == Some(&v));
            let ledger = Ledger::read(&state_dir, &history)?;
            if !candidates.iter().any(|m| has_it(&ledger, m)) {
                return Ok(Vec::new()); // the usual case: nothing written
            }
            let mut settled = Vec::new();
            Ledger::update(&state_dir, &history, |l| {
                settled = candidates.into_iter().filter(|m| l.settle_deferred(&a, m, &v)).collect();
            })?;
            Ok(settled)
        })
        .await;
        let settled = match settled {
            Ok(settled) => settled,
            Err(e) => {
                // Sent as before: a repeat costs a mirror one idle sync, a lost trigger more.
                tracing::error!(%archive, error = %e, "cannot read the mirrors' state: deferred triggers sent as they are");
                Vec::new()
            }
        };
        if settled.is_empty() {
            return mirrors;
        }
        for mirror in &settled {
            tracing::info!(%archive, %mirror, %version, "deferred trigger settled: the mirror has this version already");
        }
        self.core.deferred.sent(archive, &settled).await;
        mirrors.into_iter().filter(|m| !settled.contains(m)).collect()
    }

    /// Pushes the archive's last pushed version to `mirrors` only (those still configured); the
    /// report is stored.
    async fn push_only(&self, archive: &str, mirrors: &[String]) -> Option<Report> {
        let state = self.archives.get(archive)?;
        let known: Vec<String> =
            mirrors.iter().filter(|m| self.config.mirrors_of(archive).any(|c| &c.name == *m)).cloned().collect();
        if known.is_empty() {
            return None;
        }
        let request = PushRequest {
            archive: Some(archive.to_string()),
            only: known,
            serial: state.pushed(),
            ..PushRequest::default()
        };
        let mut plan = plan(&self.config, &request).ok()?;
        plan.entries.retain(|e| e.skip.is_none());
        self.core.metrics.push_started(plan.entries.iter().map(|e| e.stages.len()).sum());
        let options = self.options(|_| {});
        let report = crate::push::dispatch(&self.engine, &plan, &options, "daemon-deferred").await;
        let (state_dir, history) = self.history();
        let stored = report.clone();
        let kept = blocking(move || crate::push::store(&state_dir, &history, &stored)).await;
        log_summary(&report);
        self.tell(Some(&report), kept.ledger.as_ref(), crate::notify::event::EventKind::Push, archive).await;
        Some(report)
    }

    /// `state_dir` and its report history.
    fn history(&self) -> (std::path::PathBuf, History) {
        (self.config.state_dir.clone(), History::new(&self.config.state_dir, self.config.status.history))
    }

    /// Every ack of an MQTT mirror, also after its push ended: into `/status` (`acks`), and into
    /// the last report of the archive when it answers that push's serial — a mirror that was
    /// `pending` (or unreachable through the broker) becomes `ok` or `failed`, in the stored report
    /// too. Ends with this configuration; if the connection task dies (a bug), so does the daemon.
    async fn record_acks(self: Arc<Self>, mqtt: MqttTransport) {
        let mut acks = mqtt.subscribe_acks();
        let mut link = mqtt.link();
        self.core.status.set_acks(mqtt.acks());
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
                    Ok(record) => {
                        // With every other ack already there: one ledger write for a burst.
                        let mut records = vec![record];
                        while let Ok(more) = acks.try_recv() {
                            records.push(more);
                        }
                        records
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        // Missed some: every mirror's latest ack stands for them.
                        tracing::warn!("{n} MQTT acks arrived faster than they were recorded: taking the latest of each");
                        mqtt.acks()
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            self.late_acks(records).await;
        }
    }

    /// Acks that arrived: shown, recorded in the ledger (final ones), and settled in the last
    /// report they answer, shown and stored.
    async fn late_acks(&self, records: Vec<AckRecord>) {
        for record in &records {
            self.core.status.ack(record);
        }
        let finals: Vec<AckRecord> = records.into_iter().filter(|r| r.ack.state.is_final()).collect();
        if finals.is_empty() {
            return;
        }
        let (state_dir, history) = self.history();
        let acked = finals.clone();
        let change = blocking(move || {
            crate::push::change_ledger(&state_dir, &history, |ledger| {
                for r in &acked {
                    ledger.record_ack(
                        &r.archive,
                        &r.ack.mirror,
                        r.ack.serial.as_deref(),
                        r.ack.failure(),
                        r.received_at,
                    );
                }
            })
        })
        .await;
        let archives: std::collections::BTreeSet<&str> = finals.iter().map(|r| r.archive.as_str()).collect();
        for archive in archives {
            self.tell(None, change.as_ref(), crate::notify::event::EventKind::Push, archive).await;
        }
        for record in &finals {
            let Some(archive) = self.archives.get(&record.archive) else { continue };
            let settled = archive.change_last_report(|report| {
                report.serial == record.ack.serial
                    && report.settle(&record.ack.mirror, record.ack.stage, |row| settle(row, record))
            });
            let Some(report) = settled else { continue };
            tracing::info!(archive = %record.archive, mirror = %record.ack.mirror, state = %record.ack.state, "late MQTT ack recorded in the last report");
            archive.store_again(report, "the late ack").await;
        }
    }

    /// Every `freshness.interval`, surveys every mirror with a `check:` URL
    /// ([`crate::observe::freshness`]): the rows go to `/status`, `/metrics` and
    /// `state_dir/freshness.json` (which carries each mirror's `since` over restarts). Ends with
    /// this configuration.
    async fn sweep_freshness(self: Arc<Self>) {
        let surveyed = |c: &Config| c.mirrors.iter().any(|m| m.check.is_some()) || !c.watched.is_empty();
        let state_dir = self.config.state_dir.clone();
        if !surveyed(&self.config) {
            // Nothing to survey (any more): no stale rows linger in /status, /metrics or on disk.
            // The files go first: once the views show nothing, nothing on disk says otherwise.
            let dir = state_dir.clone();
            let forgotten =
                blocking(move || crate::observe::freshness::forget(&dir).and(crate::observe::lag::forget(&dir)));
            if let Err(e) = forgotten.await {
                tracing::error!(dir = %state_dir.display(), error = %e, "cannot remove the freshness memory");
            }
            self.core.metrics.freshness(&[]);
            self.core.status.set_freshness(Vec::new());
            return;
        }
        let (dir, keep) = (state_dir.clone(), self.config.status.history);
        let mut previous = blocking(move || {
            crate::observe::freshness::recall(&dir).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "freshness memory unusable; starting afresh");
                Vec::new()
            })
        })
        .await;
        loop {
            let dir = state_dir.clone();
            let history = blocking(move || {
                History::new(&dir, keep).all().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot read the report history: versions behind are not counted");
                    Vec::new()
                })
            })
            .await;
            let survey = crate::observe::freshness::survey(&self.config, None, &self.core.prober, &history);
            let mut rows = tokio::select! {
                rows = survey => rows,
                _ = self.stop.cancelled() => return,
            };
            crate::observe::freshness::annotate(&mut rows, &previous, &history);
            let (dir, kept) = (state_dir.clone(), rows.clone());
            if let Err(e) = blocking(move || crate::observe::freshness::remember(&dir, &kept)).await {
                tracing::error!(dir = %state_dir.display(), error = %e, "cannot write the freshness memory");
            }
            let (dir, kept) = (state_dir.clone(), rows.clone());
            if let Err(e) = blocking(move || crate::observe::lag::record_sweep(&dir, &kept)).await {
                tracing::error!(dir = %state_dir.display(), error = %e, "cannot write the freshness history");
            }
            let stale = rows.iter().filter(|r| !crate::observe::freshness::all_fresh(std::slice::from_ref(r))).count();
            tracing::info!(mirrors = rows.len(), behind_or_unreachable = stale, "freshness sweep");
            let (state_dir, history) = self.history();
            let lives: Vec<(String, String, Live)> =
                rows.iter().map(|r| (r.archive.clone(), r.mirror.clone(), r.live())).collect();
            let change = blocking(move || {
                crate::push::change_ledger(&state_dir, &history, |ledger| {
                    for (archive, mirror, live) in lives {
                        ledger.record_live(&archive, &mirror, live);
                    }
                })
            })
            .await;
            for archive in self.config.archives.keys() {
                self.tell(None, change.as_ref(), crate::notify::event::EventKind::Freshness, archive).await;
            }
            self.core.metrics.freshness(&rows);
            self.core.status.set_freshness(rows.clone());
            previous = rows;
            tokio::select! {
                _ = tokio::time::sleep(self.config.freshness_interval) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }
}

/// A late final ack applied to the row it answers.
fn settle(row: &mut TriggerReport, record: &AckRecord) {
    row.exit_code = record.ack.exit_code;
    row.sync_duration_ms = record.ack.duration_ms;
    row.error_class = None;
    row.error = None;
    row.note = Some(format!("acknowledged {} after the push", record.ack.state));
    row.outcome = Outcome::Ok;
    if let Some((class, why)) = record.ack.failure() {
        row.outcome = Outcome::Failed;
        row.error_class = Some(class);
        row.error = Some(why);
    }
}

fn log_summary(report: &Report) {
    let s = &report.summary;
    tracing::info!(
        archive = %report.archive,
        version = report.serial.as_deref().unwrap_or(""),
        ok = s.ok, failed = s.failed, deferred = s.deferred, pending = s.pending, skipped = s.skipped,
        ms = report.duration_ms,
        "push finished"
    );
}
