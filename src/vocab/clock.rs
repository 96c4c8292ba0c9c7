//! Wall-clock time: the OS clock in production, read afresh every time (an NTP step after start is
//! seen, and every process compares the same time); a clock that follows tokio's for tests whose
//! waiting logic runs under paused time; the OS clock running fast, for tests of what receivers
//! do with a sender's wrong clock.

use std::time::{Duration, SystemTime};

/// Where the wall time comes from.
#[derive(Debug, Clone)]
pub struct Clock(Source);

#[derive(Debug, Clone)]
enum Source {
    /// `SystemTime::now()` at every call.
    Os,
    /// Wall time anchored once and advanced by `tokio::time::Instant` (tests under paused time).
    Tokio { anchor_wall: SystemTime, anchor: tokio::time::Instant },
    /// The OS clock plus a fixed offset: a host whose clock runs fast.
    Ahead(Duration),
}

impl Clock {
    /// The OS wall clock: what is stored on disk or compared across processes.
    pub fn system() -> Self {
        Clock(Source::Os)
    }

    /// Wall time that moves with tokio's clock, for tests of waiting logic under
    /// `tokio::time::pause`; never for time that another process reads.
    pub fn following_tokio() -> Self {
        Clock(Source::Tokio { anchor_wall: SystemTime::now(), anchor: tokio::time::Instant::now() })
    }

    /// The OS wall clock running `ahead`: what a host whose clock ran fast stamps on what it
    /// sends (fault tests of the receivers' clock-skew bounds).
    pub fn ahead_of_os(ahead: Duration) -> Self {
        Clock(Source::Ahead(ahead))
    }

    /// The current wall time.
    pub fn now(&self) -> SystemTime {
        match &self.0 {
            Source::Os => SystemTime::now(),
            Source::Ahead(ahead) => SystemTime::now().checked_add(*ahead).unwrap_or_else(SystemTime::now),
            Source::Tokio { anchor_wall, anchor } => anchor_wall.checked_add(anchor.elapsed()).unwrap_or(*anchor_wall),
        }
    }

    /// How long from now until `t` (zero if it has passed).
    pub fn until(&self, t: SystemTime) -> Duration {
        t.duration_since(self.now()).unwrap_or_default()
    }
}

/// `t + d`, or a time so far ahead that it never comes when that does not fit (instead of the
/// panic of `Instant + Duration`).
pub fn later(t: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    t.checked_add(d).or_else(|| t.checked_add(FAR)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_system_clock_is_the_os_clock_not_an_anchor_that_tokio_moves() {
        let system = Clock::system();
        let following = Clock::following_tokio();
        tokio::time::advance(Duration::from_secs(3600)).await;
        // The OS clock did not move by an hour; only the test clock did.
        let drift = system.now().duration_since(SystemTime::now()).unwrap_or_default();
        assert!(drift < Duration::from_secs(1800), "system clock ran ahead of the OS clock by {drift:?}");
        let ahead = following.now().duration_since(SystemTime::now()).unwrap_or_default();
        assert!(ahead >= Duration::from_secs(3500), "the test clock follows tokio: {ahead:?}");
        let fast = Clock::ahead_of_os(Duration::from_secs(3600)).now().duration_since(SystemTime::now()).unwrap();
        assert!(fast >= Duration::from_secs(3500), "the fast clock is the OS clock plus an hour: {fast:?}");
    }

    #[test]
    fn later_never_panics_on_overflow() {
        let now = tokio::time::Instant::now();
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(365 * 24 * 3600));
        assert_eq!(later(now, Duration::from_secs(5)), now + Duration::from_secs(5));
    }
}
