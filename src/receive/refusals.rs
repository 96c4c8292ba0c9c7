//! Refusals, logged without flooding the log: the first one is logged at once with its details
//! (what was asked, from where, why); those that follow are only counted by [`Refusal`], and one
//! summary line per [`SUMMARY_INTERVAL`] gives the counts while they keep coming. After a quiet
//! interval the next refusal is logged in detail again.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often counted refusals are summarised.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// Why a request or a connection was refused. The reasons authentication gives come first,
/// from the least to the most specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// Neither an `Authorization` header nor a signature.
    NoCredentials,
    /// An `Authorization` header that matches no secret of the archive, or a signature for an
    /// archive that accepts none.
    WrongCredentials,
    /// A signature that does not verify with the archive's key (or a malformed one).
    WrongSignature,
    /// A verified signature made more than five minutes before or after now.
    StaleSignature,
    /// A verified signature that was accepted before.
    ReplayedSignature,
    /// A body over [`super::MAX_BODY`], or one cut off by the client.
    BodyTooLarge,
    /// A body not complete within `limits.body_timeout`.
    BodyTimeout,
    /// A connection without a complete request head within `limits.header_timeout`.
    HeaderTimeout,
    /// A quiet connection closed at `limits.connections` for a new one.
    ClosedToMakeRoom,
    /// A new connection closed at `limits.connections`: every one was mid-request.
    AllConnectionsBusy,
    /// The receiver could not accept a connection (out of descriptors or memory).
    AcceptFailed,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::NoCredentials => "no credentials",
            Refusal::WrongCredentials => "wrong credentials",
            Refusal::WrongSignature => "wrong signature",
            Refusal::StaleSignature => "stale signature",
            Refusal::ReplayedSignature => "replayed signature",
            Refusal::BodyTooLarge => "body over 64 KiB or cut off",
            Refusal::BodyTimeout => "body too slow",
            Refusal::HeaderTimeout => "request head too slow",
            Refusal::ClosedToMakeRoom => "quiet connection closed to make room",
            Refusal::AllConnectionsBusy => "connection closed, all busy",
            Refusal::AcceptFailed => "accept failed",
        })
    }
}

/// The refusals counted since the last detail or summary line.
#[derive(Debug, Default)]
pub struct Refusals {
    window: Mutex<Window>,
    opened: Notify,
}

#[derive(Debug, Default)]
struct Window {
    /// Since when refusals are counted instead of logged; `None` between floods.
    since: Option<Instant>,
    counts: BTreeMap<Refusal, u64>,
}

/// What one summary line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// How long the counts were collected.
    pub over: Duration,
    /// Refusals by reason.
    pub counts: BTreeMap<Refusal, u64>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: u64 = self.counts.values().sum();
        let over = Duration::from_secs(self.over.as_secs().max(1));
        write!(f, "{total} more refused in the last {}:", humantime::format_duration(over))?;
        let mut by_count: Vec<(&Refusal, &u64)> = self.counts.iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (i, (reason, n)) in by_count.into_iter().enumerate() {
            write!(f, "{} {n} {reason}", if i == 0 { "" } else { "," })?;
        }
        Ok(())
    }
}

impl Refusals {
    /// Counts `refusal`. True when it opens a new window: the caller then logs it in detail.
    pub fn note(&self, refusal: Refusal) -> bool {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if window.since.is_some() {
            *window.counts.entry(refusal).or_default() += 1;
            return false;
        }
        window.since = Some(Instant::now());
        self.opened.notify_one();
        true
    }

    /// The counts since the last summary, which starts a new one; `None` when nothing was counted,
    /// which closes the window.
    fn take_summary(&self) -> Option<Summary> {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let since = window.since?;
        if window.counts.is_empty() {
            window.since = None;
            return None;
        }
        window.since = Some(Instant::now());
        Some(Summary { over: since.elapsed(), counts: std::mem::take(&mut window.counts) })
    }

    /// Hands `log` a summary at the end of every interval in which refusals were counted, until
    /// `shutdown`; then the last counts.
    pub async fn summarise(&self, shutdown: CancellationToken, log: impl Fn(Summary)) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.opened.notified() => {}
            }
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(SUMMARY_INTERVAL) => {}
                }
                match self.take_summary() {
                    Some(summary) => log(summary),
                    None => break,
                }
            }
        }
        if let Some(summary) = self.take_summary() {
            log(summary);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn the_first_refusal_is_logged_and_the_rest_counted_by_reason() {
        let refusals = Refusals::default();
        assert!(refusals.note(Refusal::WrongCredentials), "the first one is to be logged");
        for r in [Refusal::NoCredentials, Refusal::WrongCredentials, Refusal::WrongCredentials, Refusal::StaleSignature]
        {
            assert!(!refusals.note(r), "{r} was to be logged");
        }
        let summary = refusals.take_summary().unwrap();
        assert_eq!(
            summary.to_string(),
            "4 more refused in the last 1s: 2 wrong credentials, 1 no credentials, 1 stale signature"
        );
        assert_eq!(refusals.take_summary(), None, "nothing new: the window closes");
        assert!(refusals.note(Refusal::NoCredentials), "after a quiet interval a refusal is logged again");
    }

    #[tokio::test(start_paused = true)]
    async fn one_summary_per_interval_while_refusals_keep_coming_and_the_rest_at_shutdown() {
        let refusals = Arc::new(Refusals::default());
        let shutdown = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn({
            let (refusals, shutdown) = (Arc::clone(&refusals), shutdown.clone());
            async move { refusals.summarise(shutdown, |s| tx.send(s.to_string()).unwrap()).await }
        });
        let started = Instant::now();
        assert!(refusals.note(Refusal::WrongCredentials));
        assert!(!refusals.note(Refusal::WrongCredentials));
        assert_eq!(rx.recv().await.unwrap(), "1 more refused in the last 1m: 1 wrong credentials");
        assert_eq!(started.elapsed(), SUMMARY_INTERVAL);

        assert!(!refusals.note(Refusal::ReplayedSignature), "within the next interval it is still counted");
        assert_eq!(rx.recv().await.unwrap(), "1 more refused in the last 1m: 1 replayed signature");

        tokio::time::sleep(2 * SUMMARY_INTERVAL).await;
        assert!(rx.try_recv().is_err(), "a summary of nothing");
        assert!(refusals.note(Refusal::NoCredentials), "after a quiet interval a refusal is logged again");
        assert!(!refusals.note(Refusal::NoCredentials));
        tokio::time::sleep(SUMMARY_INTERVAL / 2).await;
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), "1 more refused in the last 30s: 1 no credentials");
    }
}
