//! What the notifier must not forget across a restart, under `state_dir/notify/`, replaced
//! atomically under `notify.lock`: the messages still to deliver (`queue.json`, at most
//! [`MAX_QUEUED`]: the oldest are dropped, and said so) and, per mirror (or the broker), when a
//! problem of it was last announced and whether it is still open (`sent.json`, for
//! `min_interval`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::event::{Announce, Event};
use crate::sys::fsutil::{limit, lock_exclusive, read_bounded, write_atomic};
use crate::vocab::model::Timestamp;

/// Messages kept for delivery at most; beyond, the oldest go.
pub const MAX_QUEUED: usize = 1000;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "kebab-case")]
pub enum Channel {
    /// `notify.mail` of the archive (or the main file).
    Mail,
    /// `notify.webhooks[index]`.
    Webhook {
        /// Its place in the list.
        index: usize,
    },
    /// The `on_event` hook.
    Hook,
}

impl Channel {
    /// Its name in metrics and logs: `mail`, `webhook`, `hook`.
    pub fn name(&self) -> &'static str {
        match self {
            Channel::Mail => "mail",
            Channel::Webhook { .. } => "webhook",
            Channel::Hook => "hook",
        }
    }
}

/// One message to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// Tells it from the others.
    pub id: u64,
    /// The event.
    pub event: Event,
    /// Where it goes.
    #[serde(flatten)]
    pub channel: Channel,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not before then.
    pub next_at: Timestamp,
    /// The last attempt's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The notifier's files.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Sent(BTreeMap<String, Announced>);

/// One subject's last announced problem.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Announced {
    /// When.
    at: Timestamp,
    /// Not resolved (announced) since.
    open: bool,
}

impl Store {
    /// The notifier's part of `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Store { dir: state_dir.join("notify") }
    }

    /// Under the lock: the queue, changed by `f`, written back. Unreadable or corrupt files are
    /// errors naming them (a corrupt one is kept aside, and an empty queue starts).
    pub fn with_queue<R>(&self, f: impl FnOnce(&mut Vec<Queued>) -> R) -> std::io::Result<R> {
        std::fs::create_dir_all(&self.dir)?;
        let _lock = lock_exclusive(&self.dir.join("notify.lock"))?;
        let path = self.dir.join("queue.json");
        let mut queue: Vec<Queued> = read_or_aside(&path)?.unwrap_or_default();
        let out = f(&mut queue);
        if queue.len() > MAX_QUEUED {
            let dropped = queue.len() - MAX_QUEUED;
            tracing::error!(dropped, "notification queue full ({MAX_QUEUED}): the oldest messages are dropped");
            queue.drain(..dropped);
        }
        write_atomic(&path, &serde_json::to_vec(&queue)?)?;
        Ok(out)
    }

    /// Which of `items` (`archive/mirror/problem` or `broker`, and what it announces) are worth
    /// a message at `now`: a problem unless one of the same subject was announced less than
    /// `min_interval` ago — a flapping mirror is heard at most once per `min_interval` — and a
    /// resolution only of a problem that was announced. What is kept is recorded.
    pub fn screen(
        &self,
        items: &[(String, Announce)],
        min_interval: Duration,
        now: SystemTime,
    ) -> std::io::Result<Vec<bool>> {
        std::fs::create_dir_all(&self.dir)?;
        let _lock = lock_exclusive(&self.dir.join("notify.lock"))?;
        let path = self.dir.join("sent.json");
        let mut sent: Sent = read_or_aside(&path)?.unwrap_or_default();
        let mut keep = Vec::with_capacity(items.len());
        for (subject, announce) in items {
            let last = sent.0.get(subject).cloned();
            let kept = match announce {
                Announce::Problem => {
                    last.is_none_or(|l| now.duration_since(l.at.0).unwrap_or_default() >= min_interval)
                }
                Announce::Resolution => last.as_ref().is_some_and(|l| l.open),
            };
            match (kept, announce) {
                (true, Announce::Problem) => {
                    sent.0.insert(subject.clone(), Announced { at: Timestamp(now), open: true });
                }
                (true, Announce::Resolution) => {
                    if let Some(l) = sent.0.get_mut(subject) {
                        l.open = false;
                    }
                }
                (false, _) => {}
            }
            keep.push(kept);
        }
        // Bounded: a resolved problem older than a week (or min_interval) throttles nothing.
        let week = Duration::from_secs(7 * 24 * 3600);
        sent.0.retain(|_, l| l.open || now.duration_since(l.at.0).unwrap_or_default() < week.max(min_interval));
        write_atomic(&path, &serde_json::to_vec(&sent)?)?;
        Ok(keep)
    }
}

/// The file, parsed; `None` when there is none. One that is not JSON is renamed aside
/// (`NAME.corrupt-MS`) and reported, and `None` is returned: a broken queue must not stop
/// notifications for good.
fn read_or_aside<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Option<T>> {
    let bytes = match read_bounded(path, limit::STATE) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))),
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            let aside = crate::sys::fsutil::keep_aside(path)?;
            tracing::error!(file = %path.display(), kept_as = %aside.display(), error = %e, "corrupt notifier state kept aside");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn a_flapping_mirror_is_heard_once_per_min_interval_and_its_end_only_if_announced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let hour = Duration::from_secs(3600);
        let fail = || vec![("debian/m/failing".to_string(), Announce::Problem)];
        let recover = || vec![("debian/m/failing".to_string(), Announce::Resolution)];
        let screen = |items: Vec<(String, Announce)>, t| store.screen(&items, hour, at(t)).unwrap();
        assert_eq!(screen(fail(), 0), [true], "first failure: told");
        assert_eq!(screen(recover(), 60), [true], "its recovery: told");
        assert_eq!(screen(fail(), 120), [false], "failing again within the hour: quiet");
        assert_eq!(screen(recover(), 180), [false], "the end of a problem nobody heard of: quiet");
        assert_eq!(screen(fail(), 3600), [true], "an hour after the last announcement: told");
        // Subjects are independent, and one call screens each item.
        let mixed = vec![
            ("debian/m/failing".to_string(), Announce::Resolution),
            ("debian/n/failing".to_string(), Announce::Problem),
            ("debian/m/behind".to_string(), Announce::Resolution),
        ];
        assert_eq!(screen(mixed, 3700), [true, true, false]);
        // What was announced survives a restart (another Store on the same directory).
        let again = Store::new(dir.path());
        assert_eq!(again.screen(&fail(), hour, at(3800)).unwrap(), [false]);
    }

    #[test]
    fn a_corrupt_sent_file_is_kept_aside_and_announcing_resumes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("notify")).unwrap();
        std::fs::write(dir.path().join("notify/sent.json"), b"{ not json").unwrap();
        let store = Store::new(dir.path());
        let keep = store.screen(&[("broker".into(), Announce::Problem)], Duration::from_secs(60), at(0)).unwrap();
        assert_eq!(keep, [true]);
        let aside: Vec<_> = std::fs::read_dir(dir.path().join("notify"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("sent.json.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "kept aside");
    }
}
