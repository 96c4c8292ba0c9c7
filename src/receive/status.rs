//! The live state of `pushmirror receive`: what `GET /status` serves and what
//! [`super::Receiving::status`] publishes. It is also the queue: the trigger waiting for the
//! running sync lives in [`ArchiveSync::queued`], so status and behaviour cannot disagree.

use serde::{Deserialize, Serialize};

use super::request::SyncRequest;
use crate::push::report::Summary;
use crate::vocab::model::Timestamp;

/// Every archive's sync state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveStatus {
    /// When `receive` started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// One entry per configured archive, by name.
    pub archives: Vec<ArchiveSync>,
}

impl ReceiveStatus {
    /// The state of `name`, if it is configured.
    pub fn archive(&self, name: &str) -> Option<&ArchiveSync> {
        self.archives.iter().find(|a| a.name == name)
    }

    pub(super) fn archive_mut(&mut self, name: &str) -> Option<&mut ArchiveSync> {
        self.archives.iter_mut().find(|a| a.name == name)
    }
}

/// One archive: its runs, the trigger waiting, and the pushes to the next tier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveSync {
    /// Archive name.
    pub name: String,
    /// Authorised triggers received.
    pub triggers: u64,
    /// Runs of the sync command started.
    pub runs_started: u64,
    /// The run in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<SyncRequest>,
    /// The one run waiting for it; later triggers replace it (they coalesce).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<SyncRequest>,
    /// Start of the latest run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_started_at: Option<Timestamp>,
    /// End of the latest finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_finished_at: Option<Timestamp>,
    /// Exit code of the latest finished run; absent when it was killed or never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<i32>,
    /// Why the latest run has no exit code: killed at its timeout, by a signal, cannot start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// A push to the next tier is running.
    #[serde(default)]
    pub pushing: bool,
    /// Pushes to the next tier finished (after successful syncs).
    pub chained_pushes: u64,
    /// The latest of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push: Option<ChainedPush>,
}

impl ArchiveSync {
    /// No run in progress, none waiting, no push running.
    pub fn idle(&self) -> bool {
        self.running.is_none() && self.queued.is_none() && !self.pushing
    }
}

/// How a push to the next tier ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainedPush {
    /// The serial pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// When it ended.
    pub finished_at: Timestamp,
    /// Counts by outcome, when the push ran (its full report is in that config's history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Why it could not run (invalid config, unknown archive, transports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
