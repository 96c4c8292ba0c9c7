//! Wall-clock time that follows tokio's clock, so that paused-time tests move it too.

use std::time::{Duration, SystemTime};

/// Wall time anchored once and advanced by `tokio::time::Instant`.
#[derive(Debug, Clone)]
pub struct Clock {
    anchor_wall: SystemTime,
    anchor: tokio::time::Instant,
}

impl Clock {
    /// Anchored at the real current time.
    pub fn system() -> Self {
        Clock { anchor_wall: SystemTime::now(), anchor: tokio::time::Instant::now() }
    }

    /// The current wall time.
    pub fn now(&self) -> SystemTime {
        self.anchor_wall + self.anchor.elapsed()
    }

    /// How long from now until `t` (zero if it has passed).
    pub fn until(&self, t: SystemTime) -> Duration {
        t.duration_since(self.now()).unwrap_or_default()
    }
}
