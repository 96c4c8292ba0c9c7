//! What the notifier must not forget across a restart, under `state_dir/notify/`, replaced
//! atomically under `notify.lock`: the messages still to deliver (`queue.json`, at most
//! [`MAX_QUEUED`]: the oldest are dropped, and said so) and when each mirror was last the subject
//! of a message (`sent.json`, for `min_interval`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::event::Event;
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
struct Sent(BTreeMap<String, Timestamp>);

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

    /// Of `subjects` (`archive/mirror`, `broker`), those that were the subject of a message
    /// less than `min_interval` before `now`; the others are recorded as notified now.
    pub fn throttle(
        &self,
        subjects: &[String],
        min_interval: Duration,
        now: SystemTime,
    ) -> std::io::Result<Vec<String>> {
        std::fs::create_dir_all(&self.dir)?;
        let _lock = lock_exclusive(&self.dir.join("notify.lock"))?;
        let path = self.dir.join("sent.json");
        let mut sent: Sent = read_or_aside(&path)?.unwrap_or_default();
        let mut recent = Vec::new();
        for s in subjects {
            match sent.0.get(s) {
                Some(t) if now.duration_since(t.0).unwrap_or_default() < min_interval => recent.push(s.clone()),
                _ => {
                    sent.0.insert(s.clone(), Timestamp(now));
                }
            }
        }
        // Bounded: what was notified longer ago than a week throttles nothing any more.
        let week = Duration::from_secs(7 * 24 * 3600);
        sent.0.retain(|_, t| now.duration_since(t.0).unwrap_or_default() < week.max(min_interval));
        write_atomic(&path, &serde_json::to_vec(&sent)?)?;
        Ok(recent)
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
            let ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis();
            let aside = path.with_extension(format!("json.corrupt-{ms}"));
            tracing::error!(file = %path.display(), kept_as = %aside.display(), error = %e, "corrupt notifier state kept aside");
            std::fs::rename(path, &aside)?;
            Ok(None)
        }
    }
}
