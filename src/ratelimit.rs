//! Per-mirror rate limits: a governor GCRA limiter per mirror, with the sends it has admitted
//! persisted in `state_dir/ratelimit/<mirror>.json`, so that neither a restart nor a second
//! process (a CLI push next to the daemon) resets a limit.
//!
//! Each admission locks the mirror's state file, replays the recorded sends into a fresh limiter,
//! asks it, and records the send if it was allowed. The GCRA math stays governor's; the file is
//! the single source of truth shared by every process.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::Clock as GovernorClock;
use governor::nanos::Nanos;
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::units::RateLimit;

/// governor's quota for `limit`: one send per `per / count`, bursts of `count`.
fn quota(limit: RateLimit) -> Quota {
    let interval = limit.per / limit.count.get();
    Quota::with_period(interval.max(Duration::from_nanos(1))).expect("interval is non-zero").allow_burst(limit.count)
}

/// The answer to "may this mirror be triggered now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes; the send has been recorded.
    Allowed,
    /// Not before this time.
    DeferredUntil(SystemTime),
}

/// Rate-limit state of all mirrors, kept under one directory.
#[derive(Clone)]
pub struct RateLimits {
    dir: PathBuf,
    record: bool,
    clock: Clock,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SendLog {
    /// Unix times (ms) of admitted sends still inside the limit's period.
    sent_ms: Vec<u64>,
}

impl RateLimits {
    /// State persisted under `state_dir/ratelimit`.
    pub fn persistent(state_dir: &Path, clock: Clock) -> Self {
        RateLimits { dir: state_dir.join("ratelimit"), record: true, clock }
    }

    /// The same state, read but never recorded to: for `--dry-run`.
    pub fn probe(&self) -> Self {
        RateLimits { record: false, ..self.clone() }
    }

    /// Asks whether `mirror` may be triggered now, and records the send if so.
    pub async fn admit(&self, mirror: &str, limit: RateLimit) -> std::io::Result<Admission> {
        let now = self.clock.now();
        let (dir, record, mirror) = (self.dir.clone(), self.record, mirror.to_string());
        tokio::task::spawn_blocking(move || admit_locked(&dir, &mirror, limit, now, record))
            .await
            .map_err(std::io::Error::other)?
    }
}

fn admit_locked(
    dir: &Path,
    mirror: &str,
    limit: RateLimit,
    now: SystemTime,
    record: bool,
) -> std::io::Result<Admission> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{mirror}.json"));
    let mut file = match OpenOptions::new().read(true).write(record).create(record).truncate(false).open(&path) {
        Err(e) if !record && e.kind() == std::io::ErrorKind::NotFound => return Ok(decide(&[], limit, unix_ms(now))),
        other => other?,
    };
    file.lock()?;
    let mut log = read_log(&mut file);
    let now_ms = unix_ms(now);
    let window_ms = u64::try_from(limit.per.as_millis()).unwrap_or(u64::MAX);
    log.sent_ms.retain(|&t| t.saturating_add(window_ms) > now_ms && t <= now_ms);
    log.sent_ms.sort_unstable();
    let admission = decide(&log.sent_ms, limit, now_ms);
    if record && admission == Admission::Allowed {
        log.sent_ms.push(now_ms);
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(&serde_json::to_vec(&log)?)?;
        file.sync_data()?;
    }
    file.unlock()?;
    Ok(admission)
}

fn read_log(file: &mut File) -> SendLog {
    let mut buf = Vec::new();
    // A corrupt or empty file means no recorded sends; the limit then starts afresh.
    match file.read_to_end(&mut buf) {
        Ok(_) => serde_json::from_slice(&buf).unwrap_or_default(),
        Err(_) => SendLog::default(),
    }
}

/// Replays `sent_ms` into a governor limiter and asks it about `now_ms`.
fn decide(sent_ms: &[u64], limit: RateLimit, now_ms: u64) -> Admission {
    let clock = ReplayClock::default();
    let start = sent_ms.first().copied().unwrap_or(now_ms);
    clock.set(start);
    let limiter = RateLimiter::direct_with_clock(quota(limit), clock.clone());
    for &t in sent_ms {
        clock.set(t);
        let _ = limiter.check();
    }
    clock.set(now_ms);
    match limiter.check() {
        Ok(()) => Admission::Allowed,
        Err(not_until) => {
            let at: u64 = not_until.earliest_possible().into();
            Admission::DeferredUntil(UNIX_EPOCH + Duration::from_nanos(at))
        }
    }
}

/// A governor clock that reads whatever time the replay sets (unix nanoseconds).
#[derive(Clone, Default)]
struct ReplayClock(Arc<AtomicU64>);

impl ReplayClock {
    fn set(&self, unix_ms: u64) {
        self.0.store(unix_ms.saturating_mul(1_000_000), Ordering::SeqCst);
    }
}

impl GovernorClock for ReplayClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        Nanos::from(self.0.load(Ordering::SeqCst))
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(s: &str) -> RateLimit {
        s.parse().unwrap()
    }

    #[test]
    fn bursts_up_to_n_then_defers_until_a_slot_frees() {
        let l = limit("2/1h");
        let t0 = 1_000_000_000;
        assert_eq!(decide(&[], l, t0), Admission::Allowed);
        assert_eq!(decide(&[t0], l, t0 + 1), Admission::Allowed);
        // Two sends at t0: the next slot frees half an hour (3600 s / 2) later.
        let until = UNIX_EPOCH + Duration::from_millis(t0 + 1_800_000);
        assert_eq!(decide(&[t0, t0], l, t0 + 1), Admission::DeferredUntil(until));
        assert_eq!(decide(&[t0, t0], l, t0 + 1_800_000), Admission::Allowed);
    }

    #[tokio::test]
    async fn state_survives_a_new_instance_and_probes_do_not_record() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::system();
        let l = limit("1/1h");
        let probe = RateLimits::persistent(dir.path(), clock.clone()).probe();
        assert_eq!(probe.admit("m", l).await.unwrap(), Admission::Allowed);
        assert_eq!(probe.admit("m", l).await.unwrap(), Admission::Allowed);
        let first = RateLimits::persistent(dir.path(), clock.clone());
        assert_eq!(first.admit("m", l).await.unwrap(), Admission::Allowed);
        let second = RateLimits::persistent(dir.path(), clock.clone());
        assert!(matches!(second.admit("m", l).await.unwrap(), Admission::DeferredUntil(_)));
        assert!(matches!(probe.admit("m", l).await.unwrap(), Admission::DeferredUntil(_)));
        assert_eq!(second.admit("other", l).await.unwrap(), Admission::Allowed);
    }
}
