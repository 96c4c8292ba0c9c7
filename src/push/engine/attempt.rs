//! One trigger's attempts: each bounded by its time budget and holding its slots, transient
//! failures retried after a full-jitter backoff, until delivered, a permanent failure, or its
//! retries are spent.

use std::time::{Duration, SystemTime};

use tracing::Instrument;

use super::slots::{TriggerSlots, unless_cancelled};
use super::{INTERRUPTED, Options};
use crate::config::{Backoff, Mirror};
use crate::transport::{AttemptError, AttemptResult, Trigger, TriggerRequest};
use crate::vocab::clock::Clock;
use crate::vocab::model::{ErrorClass, Stage};
use crate::vocab::units::{format_ms, millis};

/// How a trigger's attempts ended.
pub(super) struct TriggerOutcome {
    /// How many attempts were made.
    pub attempts: u32,
    /// When the first began (wall clock).
    pub started: SystemTime,
    /// How long all of them took, backoff included.
    pub took: Duration,
    /// The last attempt's result.
    pub result: AttemptResult,
}

/// Attempts `req` to `mirror` through `transport` until delivered, a permanent failure, or retries are spent.
pub(super) async fn attempt_until_done<T: Trigger>(
    transport: &T,
    slots: &TriggerSlots,
    clock: &Clock,
    mirror: &Mirror,
    req: TriggerRequest<'_>,
    options: &Options,
) -> TriggerOutcome {
    let stage = req.stage;
    let started = clock.now();
    let t0 = tokio::time::Instant::now();
    let mut attempts = 0;
    let result = loop {
        attempts += 1;
        let span =
            tracing::info_span!("trigger", mirror = %mirror.name, archive = %req.archive, %stage, attempt = attempts);
        let interrupted = || AttemptError::permanent(ErrorClass::Interrupted, INTERRUPTED);
        let Some(attempt) = slots.acquire(options.waits_end()).await else { break Err(interrupted()) };
        let attempt_started = tokio::time::Instant::now();
        let bounded = tokio::time::timeout(attempt_budget(mirror, stage), transport.fire(req, &attempt));
        let result = match unless_cancelled(&options.cancel, bounded.instrument(span.clone())).await {
            None => Err(interrupted()),
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(AttemptError::transient(ErrorClass::Timeout, "attempt exceeded its time budget")),
        };
        drop(attempt);
        if let Some(f) = &options.on_attempt {
            f(attempt_started.elapsed());
        }
        match result {
            Err(e) if e.transient && attempts <= mirror.retries => {
                let delay = backoff_delay(&mirror.backoff, attempts, e.retry_after);
                span.in_scope(|| {
                    tracing::info!(class = %e.class, error = %e.message, retry_in = %format_ms(millis(delay)), "attempt failed, retrying")
                });
                if let Some(f) = &options.on_retry {
                    let (mirror, class, error) = (mirror.name.clone(), e.class, e.message.clone());
                    f(&super::Retry { mirror, attempt: attempts, class, error, delay });
                }
                if unless_cancelled(options.waits_end(), tokio::time::sleep(delay)).await.is_none() {
                    break Err(interrupted());
                }
            }
            other => break other,
        }
    };
    TriggerOutcome { attempts, started, took: t0.elapsed(), result }
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
    if let crate::config::Transport::Mqtt(target) = &mirror.transport {
        // The publish (bounded by `timeout`), then the ack (by `ack_timeout`).
        return mirror.timeout.saturating_add(target.ack_timeout).saturating_add(Duration::from_secs(30));
    }
    let waiting = mirror.wait_for_sync || stage == Stage::Stage1;
    let base = if waiting { mirror.timeout.saturating_add(mirror.sync_timeout) } else { mirror.timeout };
    base.saturating_add(Duration::from_secs(30))
}
