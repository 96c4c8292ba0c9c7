//! What the MQTT subscriber ([`super::mqtt`]) remembers of the triggers it accepted, per archive,
//! so that a trigger runs once: the newest accepted `sent_at`, and the nonces of the triggers
//! accepted within `max_skew` of it. Kept in the state directory (`mqtt-accepted/ARCHIVE.json`,
//! written atomically) so that a restart does not run an old trigger again.
//!
//! The rules, by this host's OS clock `now` and the receiver's `max_skew`:
//! - a trigger dated more than `max_skew` ahead of `now` is refused ([`Judged::Future`]): one
//!   fast clock must not make every correct trigger look older than the last accepted one;
//! - a trigger with a nonce runs unless that nonce was accepted before ([`Judged::Duplicate`]: the
//!   retained copy that comes with a new subscription, a re-delivery, a retry, a replay) or it is
//!   more than `max_skew` older than the newest accepted trigger ([`Judged::Stale`]: its nonce
//!   may have been forgotten). Triggers within the window may arrive out of order;
//! - a trigger without a nonce (from a sender before nonces) runs only when it is newer than the
//!   newest accepted one ([`Judged::NotNewer`]), as before;
//! - a newest accepted `sent_at` stored more than `max_skew` ahead of `now` (accepted by a
//!   version without the bound, or this host's clock was stepped back) is moved back to
//!   `max_skew` before `now`, with a warning: it would otherwise block every correct trigger
//!   until the clock caught up with it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::vocab::model::Timestamp;
use crate::vocab::units::{format_ms, millis};

/// Nonces kept per archive at most: far more than `max_skew` (at most an hour) of triggers bring.
/// When more arrive, the oldest is forgotten and triggers not newer than it are refused as stale.
pub const MAX_NONCES: usize = 256;

/// Largest state file read: [`MAX_NONCES`] entries take about 25 KiB.
const MAX_FILE_BYTES: u64 = 256 * 1024;

/// Why a trigger signed by a trusted key runs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// Dated more than `max_skew` ahead of this host's clock, by `ahead`.
    Future {
        /// How far ahead.
        ahead: Duration,
    },
    /// More than `max_skew` older than the newest accepted trigger, by `behind`.
    Stale {
        /// How much older than the newest accepted one.
        behind: Duration,
    },
    /// Its nonce was accepted before: the same trigger again.
    Duplicate,
    /// No nonce, and not newer than the newest accepted trigger (`last`).
    NotNewer {
        /// The newest accepted trigger's `sent_at`.
        last: Timestamp,
    },
}

/// One archive's memory, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Window {
    /// The newest accepted trigger's `sent_at`.
    last: Option<Timestamp>,
    /// Triggers not newer than this were forgotten for [`MAX_NONCES`]: refused as stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    floor: Option<Timestamp>,
    /// The nonces accepted within `max_skew` of `last`, oldest first.
    #[serde(default)]
    nonces: Vec<Seen>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Seen {
    nonce: String,
    sent_at: Timestamp,
}

/// The state file's forms: the window, or (written before nonces) the bare newest `sent_at`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Window(Window),
    Legacy(Timestamp),
}

/// Every archive's window, and where they are kept.
#[derive(Debug)]
pub struct Accepted {
    dir: PathBuf,
    windows: BTreeMap<String, Window>,
}

impl Accepted {
    /// The windows of `archives` kept in `dir`; a missing file is an empty window, an unreadable
    /// one too, with a warning (its triggers may then run once more).
    pub fn load(dir: PathBuf, archives: &[String]) -> Self {
        let mut windows = BTreeMap::new();
        for archive in archives {
            let file = dir.join(format!("{archive}.json"));
            let read = crate::sys::fsutil::read_bounded(&file, MAX_FILE_BYTES)
                .map_err(|e| e.to_string())
                .and_then(|bytes| serde_json::from_slice::<Stored>(&bytes).map_err(|e| e.to_string()));
            let window = match read {
                Ok(Stored::Window(w)) => w,
                Ok(Stored::Legacy(last)) => Window { last: Some(last), ..Window::default() },
                Err(_) if !file.exists() => Window::default(),
                Err(e) => {
                    tracing::warn!(%archive, "cannot use {}: {e}; starting with no accepted triggers", file.display());
                    Window::default()
                }
            };
            windows.insert(archive.clone(), window);
        }
        Accepted { dir, windows }
    }

    /// Judges a trigger of `archive` sent at `sent` with `nonce` by this host's clock `now`, and
    /// records it when it runs.
    pub fn admit(
        &mut self,
        archive: &str,
        sent: Timestamp,
        nonce: Option<&str>,
        now: SystemTime,
        max_skew: Duration,
    ) -> Result<(), Judged> {
        if let Some(ahead) = ahead_by_more_than(sent, now, max_skew) {
            return Err(Judged::Future { ahead });
        }
        self.forget_a_future_mark(archive, now, max_skew);
        let window = self.windows.entry(archive.to_string()).or_default();
        match nonce {
            Some(nonce) => window.admit_nonce(nonce, sent, max_skew)?,
            None => window.admit_without_nonce(sent)?,
        }
        self.store(archive);
        Ok(())
    }

    /// See the module's last rule.
    fn forget_a_future_mark(&mut self, archive: &str, now: SystemTime, max_skew: Duration) {
        let Some(last) = self.windows.get_mut(archive).and_then(|w| w.last.as_mut()) else { return };
        let Some(ahead) = ahead_by_more_than(*last, now, max_skew) else { return };
        tracing::warn!(
            %archive, last = %last, ahead = %format_ms(millis(ahead)),
            "the last accepted MQTT trigger is dated ahead of this host's clock by more than max_skew: \
             it came from a fast clock; moving it back so that it blocks no correct trigger"
        );
        *last = Timestamp(now.checked_sub(max_skew).unwrap_or(now));
        self.store(archive);
    }

    fn store(&self, archive: &str) {
        let Some(window) = self.windows.get(archive) else { return };
        let file = self.dir.join(format!("{archive}.json"));
        let bytes = serde_json::to_vec(window).unwrap_or_default();
        if let Err(e) = crate::sys::fsutil::write_atomic(&file, &bytes) {
            // Still run it: a trigger is not refused for our disk; a restart may run it once more.
            tracing::error!(%archive, "cannot record the accepted trigger in {}: {e}", file.display());
        }
    }
}

impl Window {
    fn admit_nonce(&mut self, nonce: &str, sent: Timestamp, max_skew: Duration) -> Result<(), Judged> {
        if self.nonces.iter().any(|s| s.nonce == nonce) {
            return Err(Judged::Duplicate);
        }
        if let Some(last) = self.last {
            let behind = last.0.duration_since(sent.0).unwrap_or_default();
            if behind > max_skew || self.floor.is_some_and(|floor| sent <= floor) {
                return Err(Judged::Stale { behind });
            }
        }
        let last = *self.last.insert(self.last.map_or(sent, |l| l.max(sent)));
        self.nonces.push(Seen { nonce: nonce.to_string(), sent_at: sent });
        self.nonces.sort_by_key(|s| s.sent_at);
        // What is older than the window is refused as stale: its nonce need not be kept.
        let horizon = last.0.checked_sub(max_skew).map(Timestamp);
        self.nonces.retain(|s| horizon.is_none_or(|h| s.sent_at >= h));
        while self.nonces.len() > MAX_NONCES {
            let forgotten = self.nonces.remove(0);
            self.floor = Some(self.floor.map_or(forgotten.sent_at, |f| f.max(forgotten.sent_at)));
        }
        Ok(())
    }

    fn admit_without_nonce(&mut self, sent: Timestamp) -> Result<(), Judged> {
        if let Some(last) = self.last.filter(|last| sent <= *last) {
            return Err(Judged::NotNewer { last });
        }
        self.last = Some(sent);
        Ok(())
    }
}

/// How far `t` is ahead of `now`, when that is more than `max_skew`.
fn ahead_by_more_than(t: Timestamp, now: SystemTime, max_skew: Duration) -> Option<Duration> {
    t.0.duration_since(now).ok().filter(|ahead| *ahead > max_skew)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_SKEW: Duration = Duration::from_secs(120);

    /// Now at the wire's precision (what is stored is milliseconds).
    fn now() -> SystemTime {
        let ms = SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        std::time::UNIX_EPOCH + Duration::from_millis(ms as u64)
    }

    fn at(now: SystemTime, offset: i64) -> Timestamp {
        match offset >= 0 {
            true => Timestamp(now + Duration::from_secs(offset as u64)),
            false => Timestamp(now - Duration::from_secs(offset.unsigned_abs())),
        }
    }

    fn accepted(dir: &std::path::Path) -> Accepted {
        Accepted::load(dir.to_path_buf(), &["debian".to_string()])
    }

    #[test]
    fn a_trigger_dated_beyond_max_skew_is_refused_and_moves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = accepted(dir.path());
        let now = now();
        for nonce in [None, Some("n1")] {
            let refused = a.admit("debian", at(now, 600), nonce, now, MAX_SKEW);
            assert_eq!(refused, Err(Judged::Future { ahead: Duration::from_secs(600) }));
        }
        assert_eq!(a.admit("debian", at(now, 0), None, now, MAX_SKEW), Ok(()), "the future one moved the mark");
        assert_eq!(a.admit("debian", at(now, 100), Some("n1"), now, MAX_SKEW), Ok(()), "within max_skew");
    }

    #[test]
    fn a_stored_mark_from_a_fast_clock_is_moved_back_to_max_skew_before_now() {
        let dir = tempfile::tempdir().unwrap();
        let now = now();
        std::fs::write(dir.path().join("debian.json"), serde_json::to_vec(&at(now, 600)).unwrap()).unwrap();
        let mut a = accepted(dir.path());
        assert_eq!(a.admit("debian", at(now, -60), None, now, MAX_SKEW), Ok(()), "sent within max_skew before now");
        let older = a.admit("debian", at(now, -90), None, now, MAX_SKEW);
        assert_eq!(older, Err(Judged::NotNewer { last: at(now, -60) }));
        // What is stored is the accepted trigger's mark: a restart does not find the future one.
        let mut again = accepted(dir.path());
        assert!(matches!(again.admit("debian", at(now, -60), None, now, MAX_SKEW), Err(Judged::NotNewer { .. })));
        assert_eq!(again.admit("debian", at(now, 1), Some("n"), now, MAX_SKEW), Ok(()));
    }

    #[test]
    fn a_nonce_runs_once_and_out_of_order_only_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let now = now();
        let mut a = accepted(dir.path());
        assert_eq!(a.admit("debian", at(now, 90), Some("fast"), now, MAX_SKEW), Ok(()));
        // Sent after the clock was corrected: older than the last, within the window.
        assert_eq!(a.admit("debian", at(now, 0), Some("right"), now, MAX_SKEW), Ok(()));
        assert_eq!(a.admit("debian", at(now, 0), Some("right"), now, MAX_SKEW), Err(Judged::Duplicate));
        assert_eq!(a.admit("debian", at(now, 90), Some("fast"), now, MAX_SKEW), Err(Judged::Duplicate));
        let stale = a.admit("debian", at(now, -60), Some("old"), now, MAX_SKEW);
        assert_eq!(stale, Err(Judged::Stale { behind: Duration::from_secs(150) }));
        // Kept across a restart, and readable by what wrote it.
        let mut again = accepted(dir.path());
        assert_eq!(again.admit("debian", at(now, 0), Some("right"), now, MAX_SKEW), Err(Judged::Duplicate));
        assert_eq!(again.admit("debian", at(now, 1), Some("new"), now, MAX_SKEW), Ok(()));
        // A trigger without a nonce still needs to be the newest.
        assert!(matches!(again.admit("debian", at(now, 2), None, now, MAX_SKEW), Err(Judged::NotNewer { .. })));
    }

    #[test]
    fn the_window_is_bounded_and_what_it_forgets_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let now = now();
        let mut a = accepted(dir.path());
        let first = Timestamp(now - Duration::from_secs(60));
        let nth = |i: usize| Timestamp(first.0 + Duration::from_millis(i as u64));
        for i in 0..=MAX_NONCES {
            assert_eq!(a.admit("debian", nth(i), Some(&format!("n{i}")), now, MAX_SKEW), Ok(()));
        }
        let window = &a.windows["debian"];
        assert_eq!(window.nonces.len(), MAX_NONCES);
        assert_eq!(window.floor, Some(nth(0)));
        // Its nonce is forgotten, yet it does not run again.
        assert_eq!(
            a.admit("debian", nth(0), Some("n0"), now, MAX_SKEW),
            Err(Judged::Stale { behind: nth(MAX_NONCES).0.duration_since(nth(0).0).unwrap() })
        );
        let stored = std::fs::metadata(dir.path().join("debian.json")).unwrap().len();
        assert!(stored < MAX_FILE_BYTES / 4, "{stored} bytes");
    }

    #[test]
    fn an_unreadable_file_is_an_empty_window() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("debian.json"), "{\"last\":1}").unwrap();
        let a = accepted(dir.path());
        assert_eq!(a.windows["debian"], Window::default());
    }
}
