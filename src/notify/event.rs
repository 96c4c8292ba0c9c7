//! What is worth telling people: the events, on change only. A push (or a freshness sweep) that
//! changes mirrors' standing makes one event, a digest of those changes — never one message per
//! mirror; so do a part of the daemon that died and the MQTT broker going away and coming back.
//! The JSON form of [`Event`] is what webhooks and `on_event` hooks get (documented in the README).

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::push::ledger::{Ledger, MirrorState};
use crate::vocab::model::{ErrorClass, Standing, Timestamp};

/// Whether a change announces a problem or its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// Failing, behind, broker down.
    Problem,
    /// Recovered, caught up, broker back.
    Resolution,
}

/// One notification event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub at: Timestamp,
    /// The host that says it (`/etc/hostname`).
    pub host: String,
    /// The archive, for push and freshness events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// The version pushed, for push events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The mirrors whose standing changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// In words: the part that died and why, the broker, a test's origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The status page (`status.public_url`), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
}

/// Kinds of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A push changed mirrors' standing (some started failing, some recovered).
    Push,
    /// A freshness sweep changed mirrors' standing (behind, caught up).
    Freshness,
    /// A part of the daemon died; it stops (systemd restarts it).
    PartDied,
    /// The MQTT broker cannot be reached.
    BrokerDown,
    /// The MQTT broker is reachable again.
    BrokerUp,
    /// `pushmirror notify test`.
    Test,
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EventKind::Push => "push",
            EventKind::Freshness => "freshness",
            EventKind::PartDied => "part-died",
            EventKind::BrokerDown => "broker-down",
            EventKind::BrokerUp => "broker-up",
            EventKind::Test => "test",
        })
    }
}

/// One mirror's change of standing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The mirror.
    pub mirror: String,
    /// What changed.
    pub change: ChangeKind,
    /// Failed triggers in a row.
    #[serde(default)]
    pub failures: u32,
    /// Since when it stands so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// The class of its last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// Its last failure in words (never a secret: reports carry none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The version it serves (freshness changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Changes of standing worth a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// Its triggers have failed `after_failures` times in a row.
    Failing,
    /// A trigger was delivered again after it was failing.
    Recovered,
    /// It serves a version older than its archive's `max_lag`.
    Behind,
    /// It serves a current version again.
    CaughtUp,
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChangeKind::Failing => "failing",
            ChangeKind::Recovered => "recovered",
            ChangeKind::Behind => "behind",
            ChangeKind::CaughtUp => "caught up",
        })
    }
}

impl Event {
    /// An event of `kind` now, for `config`'s status page.
    pub fn new(kind: EventKind, config: &Config) -> Self {
        Event {
            kind,
            at: Timestamp(std::time::SystemTime::now()),
            host: hostname(),
            archive: None,
            serial: None,
            changes: Vec::new(),
            detail: None,
            status_url: config.status.public_url.as_ref().map(ToString::to_string),
        }
    }

    /// The subject line of its message: `[pushmirror] debian 2026120601: 2 failing, 1 recovered`.
    pub fn subject(&self) -> String {
        let what = match self.kind {
            EventKind::Push | EventKind::Freshness => {
                let mut counts: Vec<String> = Vec::new();
                for kind in [ChangeKind::Failing, ChangeKind::Recovered, ChangeKind::Behind, ChangeKind::CaughtUp] {
                    let n = self.changes.iter().filter(|c| c.change == kind).count();
                    if n > 0 {
                        counts.push(format!("{n} {kind}"));
                    }
                }
                counts.join(", ")
            }
            EventKind::PartDied => "a part of the daemon died".into(),
            EventKind::BrokerDown => "the MQTT broker cannot be reached".into(),
            EventKind::BrokerUp => "the MQTT broker is back".into(),
            EventKind::Test => "a test message".into(),
        };
        let on = [self.archive.as_deref(), self.serial.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
        let on = if on.is_empty() { self.host.clone() } else { format!("{} on {}", on, self.host) };
        format!("[pushmirror] {on}: {what}")
    }

    /// The message's text: what changed, per mirror, and where to look.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n\n", self.subject().trim_start_matches("[pushmirror] "));
        for c in &self.changes {
            let since = c.since.map(|t| format!(" since {t}")).unwrap_or_default();
            let why = match (&c.error_class, &c.error) {
                (Some(class), Some(e)) => format!(": {class}: {e}"),
                (Some(class), None) => format!(": {class}"),
                _ => c.version.as_deref().map(|v| format!(": serves {v}")).unwrap_or_default(),
            };
            let failures = if c.change == ChangeKind::Failing {
                format!(" ({} failures in a row)", c.failures)
            } else {
                String::new()
            };
            out.push_str(&format!("  {} {}{since}{failures}{why}\n", c.mirror, c.change));
        }
        if let Some(detail) = &self.detail {
            out.push_str(&format!("{detail}\n"));
        }
        if let Some(url) = &self.status_url {
            out.push_str(&format!("\nStatus: {url}\n"));
        }
        out.push_str(&format!("\n-- pushmirror on {} at {}\n", self.host, self.at));
        out
    }

    /// What it announces, per subject, for throttling: `archive/mirror/failing` (or `/behind`)
    /// with whether the change opens or closes that problem, or `broker`; `None` for events
    /// that are never throttled (a part that died, a test).
    pub fn announces(&self) -> Option<Vec<(String, Announce)>> {
        match self.kind {
            EventKind::BrokerDown => Some(vec![("broker".into(), Announce::Problem)]),
            EventKind::BrokerUp => Some(vec![("broker".into(), Announce::Resolution)]),
            EventKind::Push | EventKind::Freshness => {
                let archive = self.archive.as_deref().unwrap_or("");
                Some(
                    self.changes
                        .iter()
                        .map(|c| {
                            let (problem, announce) = match c.change {
                                ChangeKind::Failing => ("failing", Announce::Problem),
                                ChangeKind::Recovered => ("failing", Announce::Resolution),
                                ChangeKind::Behind => ("behind", Announce::Problem),
                                ChangeKind::CaughtUp => ("behind", Announce::Resolution),
                            };
                            (format!("{archive}/{}/{problem}", c.mirror), announce)
                        })
                        .collect(),
                )
            }
            EventKind::PartDied | EventKind::Test => None,
        }
    }
}

/// The changes of standing between two ledgers, for the `mirrors` of `archive`.
pub fn changes<'a>(
    before: &Ledger,
    after: &Ledger,
    archive: &str,
    mirrors: impl IntoIterator<Item = &'a str>,
    after_failures: u32,
) -> Vec<Change> {
    let mut out = Vec::new();
    for mirror in mirrors {
        let (Some(now), was) = (after.get(archive, mirror), before.get(archive, mirror)) else { continue };
        let empty = MirrorState::default();
        let was = was.unwrap_or(&empty);
        let change = |kind: ChangeKind, since: Option<Timestamp>| {
            let last = now.last.as_ref();
            Change {
                mirror: mirror.to_string(),
                change: kind,
                failures: now.failures,
                since,
                error_class: last.and_then(|l| l.error_class).filter(|_| kind == ChangeKind::Failing),
                error: last.and_then(|l| l.error.clone()).filter(|_| kind == ChangeKind::Failing),
                version: now
                    .live
                    .as_ref()
                    .and_then(|l| l.version.clone())
                    .filter(|_| matches!(kind, ChangeKind::Behind | ChangeKind::CaughtUp)),
            }
        };
        if was.failures < after_failures && now.failures >= after_failures {
            out.push(change(ChangeKind::Failing, now.failing_since));
        } else if was.failures >= after_failures && now.failures == 0 {
            out.push(change(ChangeKind::Recovered, now.last_ok));
        }
        let behind = |s: &MirrorState| s.live.as_ref().is_some_and(|l| l.standing == Standing::Behind);
        let fresh = |s: &MirrorState| {
            s.live.as_ref().is_some_and(|l| matches!(l.standing, Standing::UpToDate | Standing::Syncing))
        };
        if !behind(was) && behind(now) {
            out.push(change(ChangeKind::Behind, now.live.as_ref().and_then(|l| l.since)));
        } else if behind(was) && fresh(now) {
            out.push(change(ChangeKind::CaughtUp, now.live.as_ref().map(|l| l.checked_at)));
        }
    }
    out
}

/// This host's name, for messages.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
