//! Supervised tasks: a long-running part that panics is never lost silently. The supervisor
//! records the first part that died and cancels its `fatal` token, so the service stops and exits
//! non-zero (systemd's `Restart=on-failure` then restarts it) instead of running without that part.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A part of a service died (a bug).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part} died: {cause}")]
pub struct Died {
    /// What it was doing (`watcher of debian`, `reload`, `trigger endpoint`).
    pub part: String,
    /// The panic message or error.
    pub cause: String,
}

impl Died {
    /// The death of `part`, from its task's join error.
    pub fn of_join_error(part: impl Into<String>, e: &tokio::task::JoinError) -> Self {
        // A JoinError does not lend out its payload; its Display carries the panic message.
        let cause = if e.is_panic() { e.to_string() } else { "cancelled".to_string() };
        Died { part: part.into(), cause }
    }
}

/// Runs blocking work (file reads, atomic writes and their fsync) on the blocking pool. A panic
/// in it is resumed in the calling task; work the runtime cancelled because it is shutting down
/// never returns (the caller is being dropped with the runtime: there is nothing to return to,
/// and that is not a panic to report).
pub async fn run_blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => std::future::pending().await,
    }
}

/// Spawns and watches a service's tasks.
#[derive(Debug, Default)]
pub struct Supervisor {
    tasks: TaskTracker,
    died: Mutex<Option<Died>>,
    fatal: CancellationToken,
}

impl Supervisor {
    /// A supervisor with no tasks yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Supervisor::default())
    }

    /// Runs `work` as `part`; if it panics, the supervisor records it and cancels [`Self::fatal`].
    pub fn spawn(self: &Arc<Self>, part: impl Into<String>, work: impl Future<Output = ()> + Send + 'static) {
        let (part, inner, me) = (part.into(), tokio::spawn(work), Arc::clone(self));
        self.tasks.spawn(async move {
            if let Err(e) = inner.await {
                me.die(Died::of_join_error(part, &e));
            }
        });
    }

    /// Records that a part died (the first death is the one reported) and cancels [`Self::fatal`].
    pub fn die(&self, died: Died) {
        tracing::error!(part = %died.part, cause = %died.cause, "a part died; stopping (exit 1)");
        self.died.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(died);
        self.fatal.cancel();
    }

    /// Cancelled when a part died.
    pub fn fatal(&self) -> &CancellationToken {
        &self.fatal
    }

    /// The supervised tasks (to close and wait for).
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// The first part that died, if any.
    pub fn died(&self) -> Option<Died> {
        self.died.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_part_is_recorded_and_cancels_fatal() {
        let s = Supervisor::new();
        s.spawn("calm", async {});
        s.spawn("watcher of debian", async { panic!("Instant overflow") });
        s.fatal().cancelled().await;
        s.tasks().close();
        s.tasks().wait().await;
        let died = s.died().expect("the death was recorded");
        assert_eq!(died.part, "watcher of debian");
        assert!(died.cause.contains("Instant overflow"), "{died}");
    }
}
