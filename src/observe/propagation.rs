//! Propagation: how soon after a push each mirror serves the pushed version. A [`Follower`] is
//! started with the push: it checks every mirror with a `check:` URL once at once (a mirror that
//! already serves the version is recorded *live before the push*), then follows each one from
//! the moment its own trigger is delivered — not from the end of the whole push, so one slow
//! mirror does not make every other look slow — until its `project/trace/master` shows the
//! version or the archive's `propagation_timeout` has passed since the push started. Times are
//! counted from the start of the push. One check per mirror at a time, with backoff;
//! conditional GETs (`ETag`, `Last-Modified`), so an unchanged trace costs a 304; the [`Prober`]'s
//! global cap on GETs in flight. Times are tokio's, so the schedule is tested under paused time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Url;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::observe::freshness::{Fetched, Prober, Validators};
use crate::observe::trace::Trace;
use crate::push::report::{Propagated, TriggerReport};
use crate::vocab::model::{Outcome, Stage};

/// The first check after a mirror's trigger was delivered waits this long; each later wait
/// doubles, to [`MAX_INTERVAL`].
pub const FIRST_CHECK: Duration = Duration::from_secs(5);
/// The longest wait between two checks of one mirror.
pub const MAX_INTERVAL: Duration = Duration::from_secs(300);

/// One mirror to follow.
#[derive(Debug, Clone)]
pub struct Follow {
    /// Its name.
    pub mirror: String,
    /// Its public base URL of the archive.
    pub check: Url,
}

/// The mirrors of a plan worth following: sent to, with a `check:` URL.
pub fn with_check(config: &crate::config::Config, plan: &crate::push::plan::Plan) -> Vec<Follow> {
    plan.entries
        .iter()
        .filter(|e| e.skip.is_none())
        .filter_map(|e| e.mirror.check.clone().map(|check| Follow { mirror: e.mirror.name.clone(), check }))
        .filter(|f| config.mirrors_of(&plan.archive).any(|m| m.name == f.mirror))
        .collect()
}

/// Whether `row` completes its mirror's delivery: ok, and its last stage (a staged mirror has
/// been told to finish only by stage 2).
pub fn completes_delivery(row: &TriggerReport) -> bool {
    row.outcome == Outcome::Ok && row.stage != Stage::Stage1
}

/// A push's propagation, followed while the push runs and after it.
pub struct Follower {
    /// Each followed mirror's row so far.
    rows: Arc<Mutex<BTreeMap<String, Propagated>>>,
    /// Each mirror's delivery, by name.
    delivered: BTreeMap<String, watch::Sender<Option<Instant>>>,
    /// Set when the push has ended: mirrors not delivered by then are not followed.
    ended: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
    started: Instant,
    deadline: Instant,
}

impl Follower {
    /// Starts following `mirrors` for `version`, from `started` (the push's start) until
    /// `timeout` after it. `changed` is called whenever a row changes (live progress).
    pub fn start(
        prober: &Prober,
        mirrors: Vec<Follow>,
        version: &str,
        started: Instant,
        timeout: Duration,
        changed: impl Fn(Vec<Propagated>) + Send + Sync + 'static,
    ) -> Self {
        let rows: Arc<Mutex<BTreeMap<String, Propagated>>> = Arc::default();
        let changed = Arc::new(changed);
        let (ended, _) = watch::channel(false);
        let deadline = started + timeout;
        let mut tasks = tokio::task::JoinSet::new();
        let mut delivered = BTreeMap::new();
        for mirror in mirrors {
            let (tx, rx) = watch::channel(None);
            delivered.insert(mirror.mirror.clone(), tx);
            let follow = FollowOne {
                prober: prober.clone(),
                mirror,
                version: version.to_string(),
                started,
                deadline,
                rows: Arc::clone(&rows),
                changed: Arc::clone(&changed) as Arc<dyn Fn(Vec<Propagated>) + Send + Sync>,
            };
            tasks.spawn(follow.run(rx, ended.subscribe()));
        }
        Follower { rows, delivered, ended, tasks, started, deadline }
    }

    /// When the push started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Mirrors followed: every one with a `check:` URL in the plan, delivered or not.
    pub fn followed(&self) -> usize {
        self.delivered.len()
    }

    /// From the start of the push until following ends, milliseconds.
    pub fn deadline_ms(&self) -> u64 {
        crate::vocab::units::millis(self.deadline - self.started)
    }

    /// A callback for the engine's `on_done`: a row that completes a mirror's delivery starts
    /// following that mirror now.
    pub fn on_delivered(&self) -> impl Fn(&TriggerReport) + Send + Sync + 'static {
        let senders: BTreeMap<String, watch::Sender<Option<Instant>>> =
            self.delivered.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        move |row: &TriggerReport| {
            if completes_delivery(row)
                && let Some(tx) = senders.get(&row.mirror)
            {
                tx.send_replace(Some(Instant::now()));
            }
        }
    }

    /// The rows so far.
    pub fn rows(&self) -> Vec<Propagated> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// The push has ended: mirrors whose delivery did not complete are not followed; waits for
    /// the others. The rows, by mirror name.
    pub async fn finish(mut self) -> Vec<Propagated> {
        self.ended.send_replace(true);
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(e) = joined
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        self.rows()
    }
}

/// One mirror's follow.
struct FollowOne {
    prober: Prober,
    mirror: Follow,
    version: String,
    started: Instant,
    deadline: Instant,
    rows: Arc<Mutex<BTreeMap<String, Propagated>>>,
    changed: Arc<dyn Fn(Vec<Propagated>) + Send + Sync>,
}

impl FollowOne {
    async fn run(self, mut delivered: watch::Receiver<Option<Instant>>, mut ended: watch::Receiver<bool>) {
        let mut row = Propagated {
            mirror: self.mirror.mirror.clone(),
            live_after_ms: None,
            live_before_push: false,
            delivered_after_ms: None,
            sync_ms: None,
            checks: 0,
            error: None,
        };
        let mut validators = Validators::default();
        // Once at the start: it may serve the version already.
        if self.check(&mut row, &mut validators, self.started).await {
            row.live_before_push = true;
            row.live_after_ms = Some(0);
            return self.publish(row);
        }
        // Then from its delivery; never, if the push ends without delivering to it.
        let at = loop {
            if let Some(at) = *delivered.borrow_and_update() {
                break at;
            }
            tokio::select! {
                changed = delivered.changed() => if changed.is_err() { return },
                _ = ended.wait_for(|e| *e) => {
                    if let Some(at) = *delivered.borrow() { break at }
                    return;
                }
            }
        };
        row.delivered_after_ms = Some(crate::vocab::units::millis(at.saturating_duration_since(self.started)));
        self.publish(row.clone());
        let mut wait = FIRST_CHECK;
        // The last check is at the deadline itself.
        let mut next = (at + wait).min(self.deadline);
        loop {
            tokio::time::sleep_until(next).await;
            if self.check(&mut row, &mut validators, next).await {
                return self.publish(row);
            }
            if next >= self.deadline {
                let last = row.error.take().map(|e| format!("; last: {e}")).unwrap_or_default();
                let within = humantime::format_duration(self.deadline - self.started);
                row.error = Some(format!("not live within {within}{last}"));
                return self.publish(row);
            }
            self.publish(row.clone());
            wait = (wait * 2).min(MAX_INTERVAL);
            next = (Instant::now() + wait).min(self.deadline);
        }
    }

    /// One check at `at`; whether the mirror serves the version (then `row` says since when).
    async fn check(&self, row: &mut Propagated, validators: &mut Validators, at: Instant) -> bool {
        row.checks += 1;
        match self.prober.get_if_changed(&self.mirror.check, "project/trace/master", validators).await {
            Ok(Fetched::Body(text, fresh)) => {
                row.error = None;
                let seen = crate::archive::watch::version_of(text.as_bytes());
                if serves(&seen, &self.version) {
                    row.live_after_ms = Some(crate::vocab::units::millis(at.saturating_duration_since(self.started)));
                    // Its own trace is the sync's only once it describes this version.
                    let (_, own) = self.prober.own_trace(&self.mirror.check).await;
                    let own = own.filter(|t| t.serial() == Some(seen.as_str()));
                    row.sync_ms = own.as_ref().and_then(Trace::sync_duration).map(crate::vocab::units::millis);
                    tracing::info!(mirror = %row.mirror, version = %self.version, after = %crate::vocab::units::format_ms(crate::vocab::units::millis(self.started.elapsed())), "mirror live");
                    return true;
                }
                *validators = fresh;
            }
            Ok(Fetched::NotModified) => row.error = None,
            Err(e) => row.error = Some(e),
        }
        false
    }

    fn publish(&self, row: Propagated) {
        let rows = {
            let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
            rows.insert(row.mirror.clone(), row);
            rows.values().cloned().collect()
        };
        (self.changed)(rows);
    }
}

/// A one-off push ([`crate::push::once`]) whose propagation is followed: each mirror with a
/// `check:` URL from the delivery of its trigger until it serves the pushed serial; the report,
/// with its propagation, is stored after that. Without a serial there is nothing to recognise,
/// and nothing is followed.
pub async fn push_and_follow(
    config: &crate::config::Config,
    plan: &crate::push::plan::Plan,
    options: &crate::push::engine::Options,
    origin: &str,
) -> anyhow::Result<crate::push::report::Report> {
    let engine = crate::push::production_engine(config)?;
    // Set up before anything is sent: a push that happened is always recorded.
    let prober = Prober::new()?;
    let started = tokio::time::Instant::now();
    let follower = match (plan.serial.as_deref(), config.archives.get(&plan.archive)) {
        (Some(serial), Some(archive)) => Some(Follower::start(
            &prober,
            with_check(config, plan),
            serial,
            started,
            archive.propagation_timeout,
            |_| {},
        )),
        _ => None,
    };
    let mut options = options.clone();
    if let Some(f) = &follower {
        options.on_done = Some(crate::push::engine::also(options.on_done.take(), f.on_delivered()));
    }
    let mut report = crate::push::dispatch(&engine, plan, &options, origin).await;
    if let Some(follower) = follower {
        report.propagation_deadline_ms = Some(follower.deadline_ms());
        report.propagation_followed = Some(follower.followed());
        report.propagation = follower.finish().await;
    }
    crate::push::save(config, &report);
    Ok(report)
}

/// Whether a mirror whose `master` shows `seen` serves `pushed` (or a later version: it moved on
/// before it was checked). Later means numerically greater for serials of digits (Debian's
/// `YYYYMMDDNN`); other versions only compare equal.
pub fn serves(seen: &str, pushed: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
    seen == pushed || (digits(seen) && digits(pushed) && seen.parse::<u64>().ok() > pushed.parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_numeric_serial_serves_an_earlier_one_and_others_only_compare_equal() {
        assert!(serves("2026112902", "2026112902"));
        assert!(serves("2026112903", "2026112902"));
        assert!(!serves("2026112901", "2026112902"));
        assert!(!serves("b-release", "a-release"));
        assert!(serves("sha256:00ff", "sha256:00ff"));
    }
}
