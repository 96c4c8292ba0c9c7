//! The fan-out engine: every trigger of a plan runs concurrently under one semaphore, each behind
//! its mirror's rate limit, with retries and backoff, and each ends in exactly one outcome.
//!
//! Staged mirrors get stage 1 concurrently; stage 2 starts only when every staged mirror's stage 1
//! has ended, and only for those whose stage 1 was delivered. `all` mirrors run alongside.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::clock::Clock;
use crate::config::{Backoff, Mirror};
use crate::plan::{Plan, PlanEntry};
use crate::ratelimit::{Admission, RateLimits};
use crate::report::{Outcome, Timestamp, TriggerReport, millis};
use crate::transport::{Attempt, AttemptError, ErrorClass, Stage, Trigger, TriggerRequest};

/// Called with each trigger's report as soon as it is known (progress bars, live status).
pub type OnDone = Arc<dyn Fn(&TriggerReport) + Send + Sync>;

/// How to carry out a plan.
#[derive(Clone, Default)]
pub struct Options {
    /// Rate-limited triggers wait for their slot instead of being reported deferred.
    pub wait: bool,
    /// Plan only: nothing is sent, nothing is recorded.
    pub dry_run: bool,
    /// Progress callback.
    pub on_done: Option<OnDone>,
}

/// The engine: a transport, the concurrency bound, the rate limits and the clock.
pub struct Engine<T> {
    transport: Arc<T>,
    permits: Arc<Semaphore>,
    limits: RateLimits,
    clock: Clock,
}

impl<T> Clone for Engine<T> {
    fn clone(&self) -> Self {
        Engine {
            transport: Arc::clone(&self.transport),
            permits: Arc::clone(&self.permits),
            limits: self.limits.clone(),
            clock: self.clock.clone(),
        }
    }
}

struct Job {
    index: usize,
    mirror: Arc<Mirror>,
    archive: Arc<str>,
    serial: Option<Arc<str>>,
}

impl<T: Trigger> Engine<T> {
    /// An engine with `concurrency` triggers in flight at most.
    pub fn new(transport: Arc<T>, concurrency: usize, limits: RateLimits, clock: Clock) -> Self {
        Engine { transport, permits: Arc::new(Semaphore::new(concurrency.max(1))), limits, clock }
    }

    /// Carries out `plan`; returns one report row per trigger, in plan order.
    pub async fn run(&self, plan: &Plan, options: &Options) -> Vec<TriggerReport> {
        let mut rows: Vec<Vec<TriggerReport>> = vec![Vec::new(); plan.entries.len()];
        let archive: Arc<str> = Arc::from(plan.archive.as_str());
        let serial: Option<Arc<str>> = plan.serial.as_deref().map(Arc::from);
        let mut single = JoinSet::new();
        let mut staged = JoinSet::new();
        for (index, entry) in plan.entries.iter().enumerate() {
            if let Some(reason) = &entry.skip {
                rows[index] = vec![skipped(entry, entry.stages[0], reason)];
                continue;
            }
            let job =
                Job { index, mirror: Arc::clone(&entry.mirror), archive: archive.clone(), serial: serial.clone() };
            let engine = self.clone();
            let options = options.clone();
            if options.dry_run {
                rows[index] = self.dry_run(&job, &entry.stages).await;
                continue;
            }
            let first = entry.stages[0];
            let set = if entry.stages.len() > 1 { &mut staged } else { &mut single };
            set.spawn(async move {
                let row = engine.admit_and_deliver(&job, first, &options).await;
                (job, row)
            });
        }
        // Stage 2 waits for every staged mirror's stage 1 to end.
        let mut stage_two = Vec::new();
        while let Some(joined) = staged.join_next().await {
            let Ok((job, row)) = joined else { continue };
            let delivered = row.outcome == Outcome::Ok;
            let index = job.index;
            rows[index].push(row);
            if delivered {
                stage_two.push(job);
            } else {
                let entry = &plan.entries[index];
                let note = "not sent: stage 1 was not delivered";
                let row = skipped(entry, Stage::Stage2, note);
                notify(options, &row);
                rows[index].push(row);
            }
        }
        for job in stage_two {
            let engine = self.clone();
            let options = options.clone();
            single.spawn(async move {
                let row = engine.deliver(&job, Stage::Stage2, &options).await;
                (job, row)
            });
        }
        while let Some(joined) = single.join_next().await {
            if let Ok((job, row)) = joined {
                rows[job.index].push(row);
            }
        }
        rows.into_iter().flatten().collect()
    }

    /// Waits for the mirror's rate limit (or reports it deferred), then delivers `stage`.
    async fn admit_and_deliver(&self, job: &Job, stage: Stage, options: &Options) -> TriggerReport {
        if let Some(limit) = job.mirror.rate_limit {
            loop {
                match self.limits.admit(&job.mirror.name, limit).await {
                    Ok(Admission::Allowed) => break,
                    Ok(Admission::DeferredUntil(until)) if options.wait => {
                        tracing::info!(mirror = %job.mirror.name, until = %Timestamp(until), "rate limit: waiting");
                        tokio::time::sleep(self.clock.until(until)).await;
                    }
                    Ok(Admission::DeferredUntil(until)) => {
                        tracing::info!(mirror = %job.mirror.name, until = %Timestamp(until), "rate limit: deferred");
                        let mut row = blank_row(&job.mirror, stage, Outcome::Deferred);
                        row.deferred_until = Some(Timestamp(until));
                        notify(options, &row);
                        return row;
                    }
                    Err(e) => {
                        let mut row = blank_row(&job.mirror, stage, Outcome::Failed);
                        row.error_class = Some(ErrorClass::Other);
                        row.error = Some(format!("rate-limit state unreadable: {e}"));
                        notify(options, &row);
                        return row;
                    }
                }
            }
        }
        self.deliver(job, stage, options).await
    }

    /// Attempts until delivered, a permanent failure, or retries are spent.
    async fn deliver(&self, job: &Job, stage: Stage, options: &Options) -> TriggerReport {
        let mirror = &*job.mirror;
        let req = TriggerRequest { mirror, archive: &job.archive, stage, serial: job.serial.as_deref() };
        let started = self.clock.now();
        let t0 = tokio::time::Instant::now();
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            let span = tracing::info_span!("trigger", mirror = %mirror.name, archive = %job.archive, %stage, attempt = attempts);
            let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else {
                break Err(AttemptError::permanent(ErrorClass::Other, "engine shut down"));
            };
            let attempt = Attempt::new(permit);
            let result = tokio::time::timeout(attempt_budget(mirror, stage), self.transport.fire(req, &attempt))
                .instrument(span.clone())
                .await
                .unwrap_or_else(|_| {
                    Err(AttemptError::transient(ErrorClass::Timeout, "attempt exceeded its time budget"))
                });
            drop(attempt);
            match result {
                Err(e) if e.transient && attempts <= mirror.retries => {
                    let delay = backoff_delay(&mirror.backoff, attempts, e.retry_after);
                    span.in_scope(|| {
                        tracing::info!(class = %e.class, error = %e.message, retry_in = ?delay, "attempt failed, retrying")
                    });
                    tokio::time::sleep(delay).await;
                }
                other => break other,
            }
        };
        let mut row = blank_row(mirror, stage, Outcome::Ok);
        row.attempts = attempts;
        row.started_at = Some(Timestamp(started));
        row.duration_ms = millis(t0.elapsed());
        match result {
            Ok(d) => {
                tracing::info!(mirror = %mirror.name, %stage, attempts, note = d.note.as_deref().unwrap_or(""), "delivered");
                row.note = d.note;
                row.http_status = d.http_status;
                row.exit_code = d.exit_code;
                row.sync_duration_ms = d.sync_duration.map(millis);
            }
            Err(e) => {
                tracing::warn!(mirror = %mirror.name, %stage, attempts, class = %e.class, error = %e.message, "failed");
                row.outcome = Outcome::Failed;
                row.error_class = Some(e.class);
                row.error = Some(e.message);
                row.http_status = e.http_status;
                row.exit_code = e.exit_code;
            }
        }
        notify(options, &row);
        row
    }

    async fn dry_run(&self, job: &Job, stages: &[Stage]) -> Vec<TriggerReport> {
        let probe = self.limits.probe();
        let until = match job.mirror.rate_limit {
            Some(limit) => match probe.admit(&job.mirror.name, limit).await {
                Ok(Admission::DeferredUntil(t)) => Some(Timestamp(t)),
                _ => None,
            },
            None => None,
        };
        stages
            .iter()
            .map(|&stage| {
                let mut row = blank_row(&job.mirror, stage, Outcome::Planned);
                let req =
                    TriggerRequest { mirror: &job.mirror, archive: &job.archive, stage, serial: job.serial.as_deref() };
                row.note = Some(crate::transport::describe(&req));
                row.deferred_until = until;
                row
            })
            .collect()
    }
}

/// Full-jitter exponential backoff: uniform in `[0, min(max, initial·2^(n-1))]`; a `Retry-After`
/// from the downstream replaces it, capped at `max`.
pub fn backoff_delay(backoff: &Backoff, attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(ra) = retry_after {
        return ra.min(backoff.max);
    }
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
    let cap = backoff.initial.saturating_mul(factor).min(backoff.max);
    let ms = millis(cap);
    Duration::from_millis(rand::random_range(0..=ms))
}

/// An outer bound in case a transport fails to bound itself.
fn attempt_budget(mirror: &Mirror, stage: Stage) -> Duration {
    let waiting = mirror.wait_for_sync || stage == Stage::Stage1;
    let base = if waiting { mirror.timeout + mirror.sync_timeout } else { mirror.timeout };
    base + Duration::from_secs(30)
}

fn notify(options: &Options, row: &TriggerReport) {
    if let Some(f) = &options.on_done {
        f(row);
    }
}

fn skipped(entry: &PlanEntry, stage: Stage, reason: &str) -> TriggerReport {
    let mut row = blank_row(&entry.mirror, stage, Outcome::Skipped);
    row.note = Some(reason.to_string());
    row
}

fn blank_row(mirror: &Mirror, stage: Stage, outcome: Outcome) -> TriggerReport {
    TriggerReport {
        mirror: mirror.name.clone(),
        transport: mirror.transport_name().to_string(),
        target: mirror.transport.display_target(),
        stage,
        outcome,
        attempts: 0,
        started_at: None,
        duration_ms: 0,
        error_class: None,
        error: None,
        note: None,
        deferred_until: None,
        exit_code: None,
        http_status: None,
        sync_duration_ms: None,
    }
}
