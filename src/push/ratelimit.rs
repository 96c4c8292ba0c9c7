//! Per-mirror rate limits: a governor GCRA limiter per mirror, with the sends it has admitted
//! persisted in `state_dir/ratelimit/<mirror>.json`, so that neither a restart nor a second
//! process (a CLI push next to the daemon) resets a limit.
//!
//! Each admission takes the mirror's lock (`<mirror>.lock`, a file that is never replaced), reads
//! the recorded sends, replays them into a fresh limiter, asks it, and if the send is allowed
//! replaces the state file atomically before letting go of the lock. The GCRA math stays
//! governor's; the file is the single source of truth shared by every process.
//!
//! A state file that cannot be read or does not parse is an error, never "no sends": reading it
//! as empty would silently lift the limit.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::Clock as GovernorClock;
use governor::nanos::Nanos;
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::sys::fsutil::{lock_exclusive, write_atomic};
use crate::vocab::clock::Clock;
use crate::vocab::units::RateLimit;

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

/// Why a mirror's rate limit could not be checked or its send recorded. The trigger is then not
/// sent: without the state, the limit cannot be kept.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The mirror's lock file could not be created or locked.
    #[error("cannot lock the rate-limit state with {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The recorded sends could not be read, or are not a send log.
    #[error("cannot read the rate-limit state {}: {}", path.display(), crate::sys::owner::unreadable_reason(path, source))]
    Read {
        /// The state file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The send was allowed, but could not be recorded (a full disk, say).
    #[error("cannot record the send in {}: {source}", path.display())]
    Write {
        /// The state file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Rate-limit state of all mirrors, kept under one directory.
#[derive(Clone)]
pub struct RateLimits {
    dir: PathBuf,
    /// How an allowed send is recorded; `None` for a probe, which records nothing.
    record: Option<WriteFn>,
    clock: Clock,
}

/// Replaces a file's content atomically: [`write_atomic`], or a failing stand-in in tests.
type WriteFn = fn(&Path, &[u8]) -> std::io::Result<()>;

#[derive(Debug, Default, Serialize, Deserialize)]
struct SendLog {
    /// Unix times (ms) of admitted sends still inside the limit's period.
    sent_ms: Vec<u64>,
}

impl RateLimits {
    /// State persisted under `state_dir/ratelimit`.
    pub fn persistent(state_dir: &Path, clock: Clock) -> Self {
        RateLimits { dir: state_dir.join("ratelimit"), record: Some(write_atomic), clock }
    }

    /// The same state, read but never recorded to: for `--dry-run`.
    pub fn probe(&self) -> Self {
        RateLimits { record: None, ..self.clone() }
    }

    /// The same state, with sends recorded by `write` (a disk that fails, in tests).
    #[cfg(test)]
    pub(crate) fn recording_with(&self, write: WriteFn) -> Self {
        RateLimits { record: Some(write), ..self.clone() }
    }

    /// Asks whether `mirror` may be triggered now, and records the send if so.
    pub async fn admit(&self, mirror: &str, limit: RateLimit) -> Result<Admission, StateError> {
        // Each check holds a lock file and a state file open: a few at a time, not one per
        // rate-limited mirror of a push (they would take descriptors meant for triggers).
        static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);
        let _one_of_few = CHECKS.acquire().await.expect("never closed");
        let now = self.clock.now();
        let (dir, record, mirror) = (self.dir.clone(), self.record, mirror.to_string());
        match tokio::task::spawn_blocking(move || admit_locked(&dir, &mirror, limit, now, record)).await {
            Ok(admission) => admission,
            // A panic in the check is the trigger task's own: the engine reports it as such.
            Err(e) => std::panic::resume_unwind(e.try_into_panic().unwrap_or_else(|e| Box::new(e.to_string()))),
        }
    }
}

fn admit_locked(
    dir: &Path,
    mirror: &str,
    limit: RateLimit,
    now: SystemTime,
    record: Option<WriteFn>,
) -> Result<Admission, StateError> {
    let path = dir.join(format!("{mirror}.json"));
    let now_ms = unix_ms(now);
    let Some(write) = record else {
        // The file is only ever replaced whole, so a probe needs no lock.
        return Ok(decide(&recent_sends(&path, limit, now_ms)?, limit, now_ms));
    };
    let lock = dir.join(format!("{mirror}.lock"));
    let _held = std::fs::create_dir_all(dir)
        .and_then(|()| lock_exclusive(&lock))
        .map_err(|source| StateError::Lock { path: lock, source })?;
    let mut sent_ms = recent_sends(&path, limit, now_ms)?;
    let admission = decide(&sent_ms, limit, now_ms);
    if admission == Admission::Allowed {
        sent_ms.push(now_ms);
        let body = serde_json::to_vec(&SendLog { sent_ms }).expect("a list of numbers serialises");
        write(&path, &body).map_err(|source| StateError::Write { path, source })?;
    }
    Ok(admission)
}

/// The sends recorded in `path` that still count against `limit` at `now_ms`, oldest first; none
/// if the file does not exist.
fn recent_sends(path: &Path, limit: RateLimit, now_ms: u64) -> Result<Vec<u64>, StateError> {
    let unreadable = |source| StateError::Read { path: path.to_path_buf(), source };
    let mut log = match crate::sys::fsutil::read_bounded(path, crate::sys::fsutil::limit::RATE_STATE) {
        Ok(bytes) => serde_json::from_slice::<SendLog>(&bytes).map_err(|e| {
            let why = format!("not a valid send log ({e}); remove the file to reset the limit");
            unreadable(std::io::Error::new(ErrorKind::InvalidData, why))
        })?,
        Err(e) if e.kind() == ErrorKind::NotFound => SendLog::default(),
        Err(e) => return Err(unreadable(e)),
    };
    let window_ms = u64::try_from(limit.per.as_millis()).unwrap_or(u64::MAX);
    // A send stamped after `now` (recorded while the OS clock ran fast, before it was stepped
    // back) still counts — dropping it would lift the limit — but as sent now: taken at its
    // word, it would hold the mirror back by the clock's error on top of the limit.
    for t in &mut log.sent_ms {
        *t = (*t).min(now_ms);
    }
    log.sent_ms.retain(|&t| t.saturating_add(window_ms) > now_ms);
    log.sent_ms.sort_unstable();
    Ok(log.sent_ms)
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

    /// The clock stepped back two hours after a send under `1/1h`: the send still counts (the
    /// limit holds) but as made now, so the mirror waits one hour, not three.
    #[test]
    fn a_send_from_before_the_clock_stepped_back_counts_as_made_now() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        let sent = 1_800_000_000_000u64;
        std::fs::write(&path, format!("{{\"sent_ms\":[{sent}]}}")).unwrap();
        let limit: RateLimit = "1/1h".parse().unwrap();
        let now = sent - 2 * 3_600_000;
        let sends = recent_sends(&path, limit, now).unwrap();
        assert_eq!(sends, [now]);
        assert_eq!(
            decide(&sends, limit, now),
            Admission::DeferredUntil(UNIX_EPOCH + Duration::from_millis(now + 3_600_000))
        );
    }

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

    #[tokio::test]
    async fn a_state_file_emptied_or_cut_short_by_a_crash_does_not_reset_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let l = limit("2/1h");
        let limits = RateLimits::persistent(dir.path(), Clock::system());
        assert_eq!(limits.admit("m", l).await.unwrap(), Admission::Allowed);
        assert_eq!(limits.admit("m", l).await.unwrap(), Admission::Allowed);
        let state = dir.path().join("ratelimit/m.json");
        let whole = std::fs::read(&state).unwrap();
        // What a crash between truncating and rewriting the file leaves, and a write cut short.
        for left in [&whole[..0], &whole[..whole.len() / 2]] {
            std::fs::write(&state, left).unwrap();
            for probing in [false, true] {
                let limits = if probing { limits.probe() } else { limits.clone() };
                match limits.admit("m", l).await {
                    Err(StateError::Read { path, .. }) => assert_eq!(path, state),
                    other => panic!("{} bytes of state read as {other:?}", left.len()),
                }
            }
        }
    }
}
