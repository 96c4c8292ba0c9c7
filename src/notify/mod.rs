//! Telling people when it matters: mail and webhooks on changes of standing, and hooks around a
//! push.
//!
//! An [`event::Event`] is made where the ledger changes (a push, a late ack, a freshness sweep),
//! or where the daemon sees its broker go and come back, or a part of it die. [`Notifier::enqueue`]
//! throttles it (a mirror's problem is announced at most once per `notify.min_interval`, and its
//! end only when the problem was announced) and queues one message per
//! channel in `state_dir/notify/` ([`store`]); [`Notifier::deliver_due`] sends what is due, each
//! attempt bounded in time, failures retried with backoff for a day and counted. Nothing here runs
//! on a push's path: a hung MTA, a webhook answering 500s or a hook that never exits delays no
//! trigger.

pub mod event;
pub mod hooks;
pub mod mail;
pub mod oneshot;
pub mod store;
pub mod webhook;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use event::{Event, EventKind};
use store::{Channel, Queued, Store};

use crate::config::Config;
use crate::push::report::Report;
use crate::vocab::model::Timestamp;

/// Counts deliveries: `(channel, result)` with results `sent`, `failed` (will be retried),
/// `dropped` (given up) and `suppressed` (throttled).
pub type Counter = Arc<dyn Fn(&'static str, &'static str) + Send + Sync>;

/// The first retry waits this long; each later one twice as long, to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_secs(30);
/// The longest wait between two attempts of one message.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);
/// A message not delivered this long after its event is dropped (and said so).
pub const GIVE_UP: Duration = Duration::from_secs(24 * 3600);

/// Queues and delivers notifications.
pub struct Notifier {
    store: Store,
    client: reqwest::Client,
    counter: Option<Counter>,
    wake: tokio::sync::Notify,
}

impl Notifier {
    /// The notifier of `state_dir`.
    pub fn new(state_dir: &std::path::Path) -> anyhow::Result<Self> {
        let client = webhook::client().map_err(anyhow::Error::msg)?;
        Ok(Notifier { store: Store::new(state_dir), client, counter: None, wake: tokio::sync::Notify::new() })
    }

    /// The same, counting deliveries with `counter`.
    pub fn counting(self, counter: Counter) -> Self {
        Notifier { counter: Some(counter), ..self }
    }

    fn count(&self, channel: &'static str, result: &'static str) {
        if let Some(c) = &self.counter {
            c(channel, result);
        }
    }

    /// Queues `event` for every channel configured for its archive, after throttling: a problem
    /// (failing, behind, broker down) announced for the same subject less than `min_interval` ago
    /// is left out, and so is the end of a problem that was never announced (an event left with
    /// nothing to say is not sent). Blocking file work. Returns how many messages it queued.
    pub fn enqueue(&self, config: &Config, mut event: Event) -> std::io::Result<usize> {
        let archive = event.archive.clone().unwrap_or_default();
        let notify = config.notify_for(&archive);
        let on_event = config.hooks_for(&archive).on_event.is_some();
        let mut channels = Vec::new();
        if let Some(n) = notify {
            if n.mail.is_some() {
                channels.push(Channel::Mail);
            }
            channels.extend((0..n.webhooks.len()).map(|index| Channel::Webhook { index }));
        }
        if on_event {
            channels.push(Channel::Hook);
        }
        if channels.is_empty() {
            return Ok(0);
        }
        let min_interval = notify.map_or(crate::config::defaults::NOTIFY_MIN_INTERVAL, |n| n.min_interval);
        if let Some(items) = event.announces() {
            let keep = self.store.screen(&items, min_interval, SystemTime::now())?;
            let suppressed = keep.iter().filter(|k| !**k).count();
            if suppressed > 0 {
                tracing::info!(kind = %event.kind, suppressed, "notification throttled by notify.min_interval");
                for channel in &channels {
                    (0..suppressed).for_each(|_| self.count(channel.name(), "suppressed"));
                }
            }
            match event.kind {
                EventKind::BrokerDown | EventKind::BrokerUp if suppressed > 0 => return Ok(0),
                EventKind::Push | EventKind::Freshness => {
                    let mut keep = keep.into_iter();
                    event.changes.retain(|_| keep.next().unwrap_or(false));
                    if event.changes.is_empty() {
                        return Ok(0);
                    }
                }
                _ => {}
            }
        }
        let now = Timestamp(SystemTime::now());
        let queued: Vec<Queued> = channels
            .into_iter()
            .map(|channel| Queued {
                id: rand::random(),
                event: event.clone(),
                channel,
                attempts: 0,
                next_at: now,
                error: None,
            })
            .collect();
        let n = queued.len();
        self.store.with_queue(|queue| queue.extend(queued))?;
        tracing::info!(kind = %event.kind, messages = n, "notification queued");
        self.wake.notify_one();
        Ok(n)
    }

    /// Resolves when something was queued.
    pub async fn queued(&self) {
        self.wake.notified().await
    }

    /// Delivers every message that is due, until `deadline` (what is left stays queued); returns
    /// when the next one is due, if any.
    pub async fn deliver_due(self: &Arc<Self>, config: &Config, deadline: tokio::time::Instant) -> Option<SystemTime> {
        loop {
            if tokio::time::Instant::now() >= deadline {
                return self.next_due().await;
            }
            // Claimed under the lock (its next attempt moved out of the way), so that another
            // process delivering the queue does not take it too.
            let now = SystemTime::now();
            let claimed = self
                .queue(move |queue| {
                    let due = queue.iter_mut().find(|q| q.next_at.0 <= now)?;
                    due.next_at = Timestamp(now + Duration::from_secs(300));
                    Some(due.clone())
                })
                .await
                .map_err(|e| tracing::error!(error = %e, "cannot read the notification queue"))
                .ok()
                .flatten();
            let Some(message) = claimed else { return self.next_due().await };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let result = tokio::time::timeout(left.max(Duration::from_secs(1)), self.deliver(config, &message))
                .await
                .unwrap_or_else(|_| Err("not delivered before the deadline".into()));
            self.settle(message, result).await;
        }
    }

    /// The queue, changed by `f`, off the async threads (it is read and written, with fsync).
    async fn queue<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<Queued>) -> R + Send + 'static,
    ) -> std::io::Result<R> {
        let store = self.store.clone();
        crate::sys::supervise::run_blocking(move || store.with_queue(f)).await
    }

    /// When the next queued message is due.
    async fn next_due(&self) -> Option<SystemTime> {
        self.queue(|queue| queue.iter().map(|q| q.next_at.0).min()).await.ok().flatten()
    }

    /// Records how an attempt ended: delivered messages leave the queue, failed ones wait with
    /// backoff, or are dropped after [`GIVE_UP`].
    async fn settle(&self, message: Queued, result: Result<(), String>) {
        let channel = message.channel.name();
        let kind = message.event.kind;
        let (id, attempts, at, outcome) = (message.id, message.attempts, message.event.at, result.clone());
        let done = self
            .queue(move |queue| {
                let index = queue.iter().position(|q| q.id == id)?;
                match &outcome {
                    Ok(()) => {
                        queue.remove(index);
                        Some("sent")
                    }
                    Err(e) => {
                        let attempts = attempts + 1;
                        let age = SystemTime::now().duration_since(at.0).unwrap_or_default();
                        if age > GIVE_UP {
                            queue.remove(index);
                            return Some("dropped");
                        }
                        let wait = FIRST_RETRY
                            .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(16)))
                            .min(MAX_RETRY);
                        let q = &mut queue[index];
                        (q.attempts, q.next_at, q.error) =
                            (attempts, Timestamp(SystemTime::now() + wait), Some(e.clone()));
                        Some("failed")
                    }
                }
            })
            .await;
        match (done, &result) {
            (Ok(Some(outcome)), Ok(())) => {
                tracing::info!(%channel, %kind, "notification sent");
                self.count(channel, outcome);
            }
            (Ok(Some(outcome)), Err(e)) => {
                tracing::warn!(%channel, %kind, error = %e, attempts = message.attempts + 1, outcome, "notification not delivered");
                self.count(channel, outcome);
            }
            (Ok(None), _) => {}
            (Err(e), _) => tracing::error!(error = %e, "cannot update the notification queue"),
        }
    }

    /// One attempt at one message.
    async fn deliver(&self, config: &Config, message: &Queued) -> Result<(), String> {
        let archive = message.event.archive.as_deref().unwrap_or("");
        let notify = config.notify_for(archive);
        let timeout = notify.map_or(crate::config::defaults::NOTIFY_TIMEOUT, |n| n.timeout);
        match &message.channel {
            Channel::Mail => match notify.and_then(|n| n.mail.as_ref()) {
                Some(m) => mail::send(m, &message.event, timeout).await,
                None => Ok(()), // no longer configured: nothing to do
            },
            Channel::Webhook { index } => match notify.and_then(|n| n.webhooks.get(*index)) {
                Some(w) => webhook::send(&self.client, w, &message.event, timeout).await,
                None => Ok(()),
            },
            Channel::Hook => {
                let hooks = config.hooks_for(archive);
                let Some(argv) = &hooks.on_event else { return Ok(()) };
                let stdin = serde_json::to_vec(&message.event).unwrap_or_default();
                let env = event_env(&message.event);
                let end = hooks::run("on_event", argv, stdin, &env, hooks.timeout).await;
                if end.succeeded() { Ok(()) } else { Err(format!("on_event hook: {end}")) }
            }
        }
    }

    /// Sends `event` through every configured channel now (`pushmirror notify test`): per
    /// channel, its name and how it went.
    pub async fn send_now(&self, config: &Config, event: &Event) -> Vec<(String, Result<(), String>)> {
        let mut out = Vec::new();
        let archive = event.archive.as_deref().unwrap_or("");
        if let Some(n) = config.notify_for(archive) {
            if let Some(m) = &n.mail {
                out.push((format!("mail to {}", m.to.join(", ")), mail::send(m, event, n.timeout).await));
            }
            for w in &n.webhooks {
                let name = format!("webhook {}", crate::config::redact_url(w.url.expose()));
                out.push((name, webhook::send(&self.client, w, event, n.timeout).await));
            }
        }
        let hooks = config.hooks_for(archive);
        if let Some(argv) = &hooks.on_event {
            let end = hooks::run(
                "on_event",
                argv,
                serde_json::to_vec(event).unwrap_or_default(),
                &event_env(event),
                hooks.timeout,
            )
            .await;
            out.push((
                format!("on_event hook {}", argv[0]),
                if end.succeeded() { Ok(()) } else { Err(end.to_string()) },
            ));
        }
        out
    }
}

/// The environment of an `on_event` hook.
fn event_env(event: &Event) -> Vec<(&'static str, String)> {
    let mut env = vec![("PUSHMIRROR_EVENT", event.kind.to_string())];
    env.extend(event.archive.clone().map(|a| ("PUSHMIRROR_ARCHIVE", a)));
    env.extend(event.serial.clone().map(|s| ("PUSHMIRROR_SERIAL", s)));
    env
}

/// Runs the `before_push` hook of `archive`, if any: whether the push may go ahead (a non-zero
/// exit, a timeout or a hook that cannot start vetoes it), and why not.
pub async fn before_push(config: &Config, archive: &str, serial: Option<&str>) -> Result<(), String> {
    let hooks = config.hooks_for(archive);
    let Some(argv) = &hooks.before_push else { return Ok(()) };
    let mut env = vec![("PUSHMIRROR_ARCHIVE", archive.to_string())];
    env.extend(serial.map(|s| ("PUSHMIRROR_SERIAL", s.to_string())));
    match hooks::run("before_push", argv, Vec::new(), &env, hooks.timeout).await {
        end if end.succeeded() => Ok(()),
        end => Err(format!("before_push hook {}: {end}", argv[0])),
    }
}

/// Runs the `after_push` hook of the report's archive, if any, with the report as JSON on stdin
/// and `PUSHMIRROR_ARCHIVE`, `PUSHMIRROR_SERIAL` and `PUSHMIRROR_REPORT` (the stored report's
/// file) in its environment.
pub async fn after_push(config: &Config, report: &Report, stored: Option<&std::path::Path>) {
    let hooks = config.hooks_for(&report.archive);
    let Some(argv) = &hooks.after_push else { return };
    let mut env = vec![("PUSHMIRROR_ARCHIVE", report.archive.clone())];
    env.extend(report.serial.clone().map(|s| ("PUSHMIRROR_SERIAL", s)));
    env.extend(stored.map(|p| ("PUSHMIRROR_REPORT", p.display().to_string())));
    hooks::run("after_push", argv, serde_json::to_vec(report).unwrap_or_default(), &env, hooks.timeout).await;
}
