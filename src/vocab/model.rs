//! The shared vocabulary of a push: which stage a trigger asks for, how it ended, why it failed
//! or was skipped, and when. A leaf: it uses nothing of the crate, and every other module may use
//! it. Each value's wire and display form lives next to it, in one `Display`/`FromStr`/serde pair.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which part of a sync a trigger asks for (ftpsync's `sync:` words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// A complete sync in one run: `sync:all`.
    All,
    /// Pool only, no indices: `sync:stage1`.
    Stage1,
    /// Indices and cleanup: `sync:stage2`.
    Stage2,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::All => "all",
            Stage::Stage1 => "stage1",
            Stage::Stage2 => "stage2",
        })
    }
}

impl std::str::FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Stage::All),
            "stage1" => Ok(Stage::Stage1),
            "stage2" => Ok(Stage::Stage2),
            other => Err(format!("unknown stage `{other}`, expected all, stage1 or stage2")),
        }
    }
}

/// How long after a trigger failed for [`ErrorClass::State`] the daemon tries it again.
pub const STATE_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// TCP connection failed.
    Connect,
    /// Name resolution failed.
    Dns,
    /// No answer within the timeout.
    Timeout,
    /// The downstream refused our credentials.
    Auth,
    /// The SSH host key did not match.
    HostKey,
    /// The remote command exited non-zero.
    RemoteExit,
    /// The HTTP answer was not 2xx.
    HttpStatus,
    /// TLS handshake or certificate failed.
    Tls,
    /// Cut short because pushmirror is shutting down; a daemon resends it at its next start.
    Interrupted,
    /// pushmirror's own state could not be read or written (`state_dir`: a full disk, a file it
    /// cannot read), so the trigger was not sent: a mirror's rate limit cannot be kept without
    /// it. The daemon keeps the trigger due and tries again ([`STATE_RETRY`]).
    State,
    /// The MQTT subscriber checked the trigger's signature and refused it for what it says (dated
    /// ahead of its clock, older than its window, another archive's): never retried, the same
    /// trigger would be refused again.
    Refused,
    /// Anything else (protocol errors, local I/O).
    Other,
    /// A bug in pushmirror: the trigger's task died (a panic). Logged as an error, never a mirror's doing.
    Internal,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Connect => "connect",
            ErrorClass::Dns => "dns",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Auth => "auth",
            ErrorClass::HostKey => "host-key",
            ErrorClass::RemoteExit => "remote-exit",
            ErrorClass::HttpStatus => "http-status",
            ErrorClass::Tls => "tls",
            ErrorClass::Interrupted => "interrupted",
            ErrorClass::State => "state",
            ErrorClass::Refused => "refused",
            ErrorClass::Other => "other",
            ErrorClass::Internal => "internal",
        })
    }
}

/// How one trigger ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Delivered.
    Ok,
    /// Not delivered; see `error_class` and `error`.
    Failed,
    /// The mirror's rate limit forbids it until `deferred_until`.
    Deferred,
    /// Not sent, for a [`SkipReason`].
    Skipped,
    /// Dry run: would be sent (at `deferred_until`, if set).
    Planned,
    /// Published to the MQTT broker, not yet acknowledged by the mirror within its `ack_timeout`
    /// (a later ack updates the daemon's status).
    Pending,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Deferred => "deferred",
            Outcome::Skipped => "skipped",
            Outcome::Planned => "planned",
            Outcome::Pending => "pending",
        })
    }
}

/// Which of an archive's keys: the one in use (`identity:`) or the one replacing it during a
/// rotation (`next_identity:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KeyRole {
    /// `identity:`.
    Current,
    /// `next_identity:`.
    Next,
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyRole::Current => "current",
            KeyRole::Next => "next",
        })
    }
}

/// What a downstream said of one of our keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KeyVerdict {
    /// Which key.
    pub role: KeyRole,
    /// Its `SHA256:…` fingerprint.
    pub fingerprint: String,
    /// Whether the downstream accepts it.
    pub accepted: bool,
}

/// Why a trigger was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// `--only`/`--tag` left the mirror out; reports count it but do not list it.
    NotSelected,
    /// The mirror file says `enabled: false`.
    Disabled,
    /// An `all` mirror in the stage 1 of a multi-hop push (it gets `sync:all` with stage 2).
    NotInMhopStage1,
    /// Stage 2 of a staged mirror whose stage 1 was not delivered.
    Stage1NotDelivered,
    /// A resumed push: this mirror had its trigger before the daemon restarted.
    DeliveredBeforeRestart,
    /// The archive's `before_push` hook vetoed the push.
    Hook,
}

impl SkipReason {
    /// Whether reports list the row (rows a filter left out are only counted).
    pub fn is_listed(self) -> bool {
        self != SkipReason::NotSelected
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::NotSelected => "not selected",
            SkipReason::Disabled => "disabled",
            SkipReason::NotInMhopStage1 => "not in a multi-hop stage 1 (gets sync:all with stage 2)",
            SkipReason::Stage1NotDelivered => "not sent: stage 1 was not delivered",
            SkipReason::DeliveredBeforeRestart => "delivered before the restart",
            SkipReason::Hook => "vetoed by the before_push hook",
        })
    }
}

/// A point in time, serialised as RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub SystemTime);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_seconds(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339(&s).map(Timestamp).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A point in time: RFC 3339, UTC, with milliseconds (`2026-12-07T06:40:20.123Z`).",
            "type": "string",
            "format": "date-time"
        })
    }
}

/// How a mirror stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    /// It serves this archive's version.
    UpToDate,
    /// It serves an older version, not older than `max_lag`.
    Syncing,
    /// Its version is older than `max_lag`, or its age cannot be told.
    Behind,
    /// Its `master` trace could not be read.
    Unreachable,
}

impl std::fmt::Display for Standing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Standing::UpToDate => "up to date",
            Standing::Syncing => "syncing",
            Standing::Behind => "behind",
            Standing::Unreachable => "unreachable",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_wire_form_round_trips_and_rejects_other_words() {
        for stage in [Stage::All, Stage::Stage1, Stage::Stage2] {
            assert_eq!(stage.to_string().parse::<Stage>(), Ok(stage));
        }
        assert!("mhop".parse::<Stage>().unwrap_err().contains("expected all, stage1 or stage2"));
    }

    #[test]
    fn classes_and_skip_reasons_serialise_as_their_kebab_names() {
        assert_eq!(serde_json::to_string(&ErrorClass::Interrupted).unwrap(), "\"interrupted\"");
        assert_eq!(serde_json::to_string(&ErrorClass::HostKey).unwrap(), format!("\"{}\"", ErrorClass::HostKey));
        assert_eq!(serde_json::to_string(&SkipReason::NotSelected).unwrap(), "\"not-selected\"");
        assert!(!SkipReason::NotSelected.is_listed() && SkipReason::Disabled.is_listed());
    }
}
