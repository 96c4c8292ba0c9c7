//! The ledger: where each mirror of each archive stands now — the one per-mirror state every
//! view reads (`status`, `status --check`, `list`, the daemon's `/status`, page and `/metrics`),
//! so that no two of them can disagree.
//!
//! Every push updates it (the CLI's, `runmirrors`', `receive`'s and the daemon's, deferred sends
//! included), and so do what is learned after a push: a late MQTT ack, a followed propagation,
//! a freshness sweep. It is kept in `state_dir/mirrors.json`, replaced atomically under
//! `state_dir/mirrors.lock` (a read-modify-write that every process takes); when the file is
//! missing it is rebuilt from the report history. Reports stay what they are: the history of
//! pushes.
//!
//! A mirror's [`Health`] is one word derived from its state: **failing** from its first failed
//! trigger until one is delivered again (a deferral or a push that left it out changes nothing),
//! **pending** while an MQTT trigger waits for its ack, **deferred** while its rate limit owes it a
//! trigger, **behind**/**unreachable** from freshness, else **ok** — or **unknown** when nothing
//! has been learned of it yet.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Transport};
use crate::push::report::{History, Report, TriggerReport};
use crate::sys::fsutil::{limit, lock_exclusive, read_bounded, write_atomic};
use crate::vocab::model::{ErrorClass, KeyRole, KeyVerdict, Outcome, Stage, Standing, Timestamp};

/// The file, under `state_dir`.
pub const FILE: &str = "mirrors.json";

/// Every mirror's state, by (archive, mirror).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    mirrors: BTreeMap<(String, String), MirrorState>,
}

/// A ledger before and after a change.
#[derive(Debug, Clone)]
pub struct Change {
    /// Before.
    pub before: Ledger,
    /// After.
    pub after: Ledger,
}

/// One mirror of one archive: what its triggers and its freshness have shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MirrorState {
    /// Archive.
    pub archive: String,
    /// Mirror.
    pub mirror: String,
    /// Its last trigger that was sent or tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<LastTrigger>,
    /// When a trigger was last delivered to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ok: Option<Timestamp>,
    /// The version of that trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<String>,
    /// The `SHA256:…` key that trigger was accepted with (SSH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Failed triggers since the last delivered one.
    #[serde(default)]
    pub failures: u32,
    /// When the first of them failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Timestamp>,
    /// A trigger its rate limit deferred: allowed from then, not sent yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<Deferred>,
    /// An MQTT trigger published and not acknowledged yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// What its trace files said last (freshness sweep or propagation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<Live>,
    /// What it said of our keys (SSH), newest first, at most [`MAX_KEYS_SEEN`] keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeySeen>,
}

/// Every mirror's view and every key rotation's progress: what `/status`, the page, `/metrics`
/// and `status` show, derived from one ledger at one moment.
#[derive(Debug, Clone, Default)]
pub struct Picture {
    /// Each mirror's view.
    pub views: Vec<MirrorView>,
    /// Each rotating archive's progress.
    pub rotations: Vec<Rotation>,
}

/// Keys remembered per mirror: the current, the next, and the last two retired ones.
pub const MAX_KEYS_SEEN: usize = 4;

/// What a downstream said of one of our keys, when, and how we learned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KeySeen {
    /// The key's `SHA256:…` fingerprint.
    pub fingerprint: String,
    /// Whether it accepted it.
    pub accepted: bool,
    /// When.
    pub at: Timestamp,
    /// By a push (`cli`, `daemon`, …) or by `probe`.
    pub by: String,
}

/// Where an archive's key rotation stands: its SSH mirrors by what they were last seen to
/// accept. Derived from the ledger; never stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Rotation {
    /// The archive.
    pub archive: String,
    /// The next key(s) (one, unless mirror files name their own).
    pub next: Vec<String>,
    /// Mirrors that accept the next key.
    pub accept_next: Vec<String>,
    /// Mirrors seen accepting the current key but not the next one.
    pub only_current: Vec<String>,
    /// Mirrors that refused both.
    pub neither: Vec<String>,
    /// Mirrors not tried with the next key yet.
    pub unknown: Vec<String>,
}

impl Rotation {
    /// Every SSH mirror in the rotation.
    pub fn total(&self) -> usize {
        self.accept_next.len() + self.only_current.len() + self.neither.len() + self.unknown.len()
    }

    /// "812 of 1,000 mirrors accept the next key; 188 still only the current one: a, b, …".
    pub fn summary(&self, names: usize) -> String {
        let list = |v: &[String]| {
            let shown: Vec<&str> = v.iter().take(names).map(String::as_str).collect();
            let more = if v.len() > names { format!(", and {} more", v.len() - names) } else { String::new() };
            format!("{}{more}", shown.join(", "))
        };
        let mut out = format!(
            "{}: {} of {} SSH mirror(s) accept the next key {}",
            self.archive,
            self.accept_next.len(),
            self.total(),
            self.next.join(", ")
        );
        for (v, what) in [
            (&self.only_current, "still only the current one"),
            (&self.neither, "accept neither"),
            (&self.unknown, "not tried yet (`pushmirror probe`)"),
        ] {
            if !v.is_empty() {
                out.push_str(&format!("; {} {what}: {}", v.len(), list(v)));
            }
        }
        out
    }
}

/// A mirror's last trigger that was sent or tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LastTrigger {
    /// How it ended (`ok`, `failed` or `pending`).
    pub outcome: Outcome,
    /// Its stage.
    pub stage: Stage,
    /// When it started.
    pub at: Timestamp,
    /// The version it carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Who pushed it: `cli`, `daemon`, `runmirrors`, `receive`.
    pub origin: String,
    /// Attempts made.
    pub attempts: u32,
    /// The class of its failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// Its failure in words (never a secret: reports carry none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The local address it left from, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<std::net::IpAddr>,
}

/// A deferred trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Deferred {
    /// When the rate limit deferred it.
    pub since: Timestamp,
    /// When the limit allows it.
    pub until: Timestamp,
}

/// An MQTT trigger waiting for its ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Pending {
    /// Since its publication.
    pub since: Timestamp,
    /// The version it carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// What a mirror's trace files said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Live {
    /// How it stands.
    pub standing: Standing,
    /// The version it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// How old that version is, milliseconds (0: current).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
    /// Since when it has stood so, as far as known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// When it was read.
    pub checked_at: Timestamp,
    /// What went wrong reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a mirror of an archive stands, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Its last trigger was delivered (or, check-only, it serves a current enough version).
    Ok,
    /// A trigger failed and none has been delivered since.
    Failing,
    /// An MQTT trigger waits for its acknowledgement.
    Pending,
    /// Its rate limit owes it a trigger.
    Deferred,
    /// It serves a version older than its archive's `max_lag` (or of unknown age).
    Behind,
    /// Its trace files cannot be read.
    Unreachable,
    /// Nothing is known of it yet: never triggered, never checked.
    Unknown,
    /// `enabled: false`.
    Disabled,
}

impl Health {
    /// Every value, in the order views count them.
    pub const ALL: [Health; 8] = [
        Health::Ok,
        Health::Failing,
        Health::Pending,
        Health::Deferred,
        Health::Behind,
        Health::Unreachable,
        Health::Unknown,
        Health::Disabled,
    ];
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Ok => "ok",
            Health::Failing => "failing",
            Health::Pending => "pending",
            Health::Deferred => "deferred",
            Health::Behind => "behind",
            Health::Unreachable => "unreachable",
            Health::Unknown => "unknown",
            Health::Disabled => "disabled",
        })
    }
}

/// How a mirror is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// SSH (ftpsync).
    Ssh,
    /// HTTP.
    Http,
    /// The MQTT broadcast tier.
    Mqtt,
    /// Never triggered; its freshness is checked.
    CheckOnly,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Ssh => "ssh",
            Kind::Http => "http",
            Kind::Mqtt => "mqtt",
            Kind::CheckOnly => "check-only",
        })
    }
}

/// One mirror of one archive as every view shows it: its state and what it means now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MirrorView {
    /// How it stands, in one word.
    pub health: Health,
    /// Since when it has stood so, as far as known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// How it is reached.
    pub kind: Kind,
    /// Behind by more than twice its archive's `max_lag` (or by an unknown age).
    #[serde(default)]
    pub far_behind: bool,
    /// Its state.
    #[serde(flatten)]
    pub state: MirrorState,
}

impl MirrorView {
    /// `failing since T (3 failures: http-status HTTP 500)` and the like: the view in words.
    pub fn detail(&self) -> String {
        let s = &self.state;
        let class = |t: &LastTrigger| t.error_class.map(|c| c.to_string()).unwrap_or_default();
        match self.health {
            Health::Failing => match &s.last {
                Some(t) => format!("{} failure(s): {} {}", s.failures, class(t), t.error.as_deref().unwrap_or("")),
                None => format!("{} failure(s)", s.failures),
            },
            Health::Deferred => s.deferred.as_ref().map(|d| format!("allowed from {}", d.until)).unwrap_or_default(),
            Health::Pending => {
                format!("no ack for {}", s.pending.as_ref().and_then(|p| p.serial.as_deref()).unwrap_or("?"))
            }
            Health::Behind | Health::Unreachable => match &s.live {
                Some(l) => {
                    let age = l.lag_ms.map(|ms| format!(", {} old", crate::vocab::units::format_ms(ms)));
                    let error = l.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
                    format!("serves {}{}{error}", l.version.as_deref().unwrap_or("?"), age.unwrap_or_default())
                }
                None => String::new(),
            },
            Health::Ok | Health::Unknown | Health::Disabled => String::new(),
        }
        .trim_end()
        .to_string()
    }
}

impl Ledger {
    /// The state of `mirror` of `archive`, if anything is known of it.
    pub fn get(&self, archive: &str, mirror: &str) -> Option<&MirrorState> {
        self.mirrors.get(&(archive.to_string(), mirror.to_string()))
    }

    fn entry(&mut self, archive: &str, mirror: &str) -> &mut MirrorState {
        self.mirrors.entry((archive.to_string(), mirror.to_string())).or_insert_with(|| MirrorState {
            archive: archive.to_string(),
            mirror: mirror.to_string(),
            ..MirrorState::default()
        })
    }

    /// Every row of `report` (a dry run changes nothing). A trigger cut short by shutdown is
    /// not the mirror's doing and changes nothing either; skipped rows neither.
    pub fn record(&mut self, report: &Report) {
        if report.dry_run {
            return;
        }
        for row in &report.triggers {
            self.record_row(report, row);
        }
    }

    fn record_row(&mut self, report: &Report, row: &TriggerReport) {
        let at = row.started_at.unwrap_or(report.started_at);
        let last = || LastTrigger {
            outcome: row.outcome,
            stage: row.stage,
            at,
            serial: report.serial.clone(),
            origin: report.origin.clone(),
            attempts: row.attempts,
            error_class: row.error_class,
            error: row.error.clone(),
            source_address: row.source_address,
        };
        if row.key_role.is_some() || !row.keys_refused.is_empty() {
            let mut verdicts: Vec<KeyVerdict> = row
                .keys_refused
                .iter()
                .map(|fp| KeyVerdict { role: KeyRole::Current, fingerprint: fp.clone(), accepted: false })
                .collect();
            if let (Some(role), Some(fp)) = (row.key_role, &row.key) {
                verdicts.push(KeyVerdict { role, fingerprint: fp.clone(), accepted: true });
            }
            self.record_keys(&report.archive, &row.mirror, &verdicts, at, &report.origin);
        }
        let m = self.entry(&report.archive, &row.mirror);
        match row.outcome {
            Outcome::Ok => {
                m.delivered_at(at, report.serial.clone(), row.key.clone());
                m.last = Some(last());
            }
            Outcome::Failed if row.is_interrupted() => {}
            Outcome::Failed => {
                m.failed_at(at);
                m.last = Some(last());
            }
            Outcome::Pending => {
                m.pending = Some(Pending { since: at, serial: report.serial.clone() });
                m.deferred = None;
                m.last = Some(last());
            }
            Outcome::Deferred => {
                if let Some(until) = row.deferred_until {
                    // The first deferral stands: later updates coalesce into that one trigger.
                    m.deferred.get_or_insert(Deferred { since: report.started_at, until });
                }
            }
            Outcome::Skipped | Outcome::Planned => {}
        }
    }

    /// A final MQTT ack for `serial`, received at `at` — delivered (`failure` is `None`: synced,
    /// or queued behind a running sync) or not (its class and why: a failed sync, a refused
    /// trigger) — settles the mirror's last trigger when that carried `serial`. Whether it
    /// changed anything.
    pub fn record_ack(
        &mut self,
        archive: &str,
        mirror: &str,
        serial: Option<&str>,
        failure: Option<(ErrorClass, String)>,
        at: Timestamp,
    ) -> bool {
        let m = self.entry(archive, mirror);
        let Some(last) = m.last.as_mut().filter(|l| l.serial.as_deref() == serial) else { return false };
        match failure {
            None => {
                last.outcome = Outcome::Ok;
                last.error_class = None;
                last.error = None;
                let (serial, key) = (last.serial.clone(), m.key.clone());
                m.delivered_at(at, serial, key);
            }
            Some((class, why)) => {
                last.outcome = Outcome::Failed;
                last.error_class = Some(class);
                last.error = Some(why);
                m.failed_at(at);
            }
        }
        m.pending = None;
        true
    }

    /// What `mirror` said of our keys at `at`, learned `by` a push or a probe.
    pub fn record_keys(&mut self, archive: &str, mirror: &str, verdicts: &[KeyVerdict], at: Timestamp, by: &str) {
        let m = self.entry(archive, mirror);
        for v in verdicts {
            m.keys.retain(|k| k.fingerprint != v.fingerprint);
            let seen = KeySeen { fingerprint: v.fingerprint.clone(), accepted: v.accepted, at, by: by.to_string() };
            m.keys.insert(0, seen);
        }
        m.keys.truncate(MAX_KEYS_SEEN);
    }

    /// Every mirror's state, by archive then mirror.
    pub fn states(&self) -> impl Iterator<Item = &MirrorState> {
        self.mirrors.values()
    }

    /// What `mirror` of `archive` last said of the key `fingerprint`.
    pub fn key_seen(&self, archive: &str, mirror: &str, fingerprint: &str) -> Option<&KeySeen> {
        self.get(archive, mirror)?.keys.iter().find(|k| k.fingerprint == fingerprint)
    }

    /// Where each archive with a `next_identity:` stands in its rotation.
    pub fn rotations(&self, config: &Config) -> Vec<Rotation> {
        let mut out = Vec::new();
        for archive in config.archives.keys() {
            let mut r = Rotation { archive: archive.clone(), ..Rotation::default() };
            for m in config.mirrors_of(archive).filter(|m| matches!(m.transport, Transport::Ssh(_))) {
                let sender = m.sender(archive);
                let Some(next) = &sender.next_fingerprint else { continue };
                if !r.next.contains(next) {
                    r.next.push(next.clone());
                }
                let seen = |fp: Option<&String>| fp.and_then(|fp| self.key_seen(archive, &m.name, fp));
                let bucket = match (seen(Some(next)), seen(sender.fingerprint.as_ref())) {
                    (Some(n), _) if n.accepted => &mut r.accept_next,
                    (_, Some(c)) if c.accepted => &mut r.only_current,
                    (Some(_), Some(_)) => &mut r.neither,
                    _ => &mut r.unknown,
                };
                bucket.push(m.name.clone());
            }
            if !r.next.is_empty() {
                out.push(r);
            }
        }
        out
    }

    /// SSH mirrors not rotating whose last word on keys is that they accept another key but not
    /// the one configured now (a rotation finished before they installed the new line): per
    /// mirror, archive, the key configured and the one it was seen accepting.
    pub fn stale_keys(&self, config: &Config) -> Vec<(String, String, String, KeySeen)> {
        let mut out = Vec::new();
        for archive in config.archives.keys() {
            for m in config.mirrors_of(archive).filter(|m| matches!(m.transport, Transport::Ssh(_))) {
                let sender = m.sender(archive);
                let (Some(current), None) = (&sender.fingerprint, &sender.next_fingerprint) else { continue };
                let Some(state) = self.get(archive, &m.name) else { continue };
                if state.keys.iter().any(|k| &k.fingerprint == current && k.accepted) {
                    continue;
                }
                if let Some(other) = state.keys.iter().find(|k| k.accepted) {
                    out.push((archive.clone(), m.name.clone(), current.clone(), other.clone()));
                }
            }
        }
        out
    }

    /// Whether `mirror` was delivered `version` of `archive` (by any push), which settles a trigger
    /// deferred for it: that trigger would send `version` again. Its deferral is cleared then.
    pub fn settle_deferred(&mut self, archive: &str, mirror: &str, version: &str) -> bool {
        let Some(m) = self.mirrors.get_mut(&(archive.to_string(), mirror.to_string())) else { return false };
        let has_it = m.delivered.as_deref() == Some(version);
        if has_it {
            m.deferred = None;
        }
        has_it
    }

    /// What a mirror's trace files say now.
    pub fn record_live(&mut self, archive: &str, mirror: &str, live: Live) {
        self.entry(archive, mirror).live = Some(live);
    }

    /// Forgets mirrors and archives that `config` no longer has, so the file stays bounded.
    pub fn keep_configured(&mut self, config: &Config) {
        self.mirrors.retain(|(archive, mirror), _| {
            config.archives.contains_key(archive)
                && (config.mirrors_of(archive).any(|m| &m.name == mirror)
                    || config.watched.iter().any(|w| &w.name == mirror && w.serves(archive)))
        });
    }

    /// What every view shows: each mirror's view and each rotating archive's progress.
    pub fn picture(&self, config: &Config) -> Picture {
        Picture { views: self.views(config, None), rotations: self.rotations(config) }
    }

    /// Every configured mirror of every archive (or of `only`), as the views show it.
    pub fn views(&self, config: &Config, only: Option<&str>) -> Vec<MirrorView> {
        let mut out = Vec::new();
        for (name, archive) in config.archives.iter().filter(|(n, _)| only.is_none_or(|o| o == *n)) {
            let far = archive.max_lag * 2;
            let state = |mirror: &str| {
                self.get(name, mirror).cloned().unwrap_or_else(|| MirrorState {
                    archive: name.clone(),
                    mirror: mirror.to_string(),
                    ..MirrorState::default()
                })
            };
            for m in config.mirrors_of(name) {
                let kind = match m.transport {
                    Transport::Ssh(_) => Kind::Ssh,
                    Transport::Http(_) => Kind::Http,
                    Transport::Mqtt(_) => Kind::Mqtt,
                };
                out.push(view(state(&m.name), kind, m.enabled, far));
            }
            for w in config.watched.iter().filter(|w| w.serves(name)) {
                out.push(view(state(&w.name), Kind::CheckOnly, w.enabled, far));
            }
        }
        out.sort_by(|a, b| (&a.state.archive, &a.state.mirror).cmp(&(&b.state.archive, &b.state.mirror)));
        out
    }

    /// Folds `reports` (oldest first) into a new ledger: what the file would say had it been
    /// kept all along, as far as the history goes back.
    pub fn rebuilt<'a>(reports: impl IntoIterator<Item = &'a Report>) -> Self {
        let mut ledger = Ledger::default();
        for report in reports {
            ledger.record(report);
        }
        ledger
    }

    /// The ledger of `state_dir`, read without taking its lock (it is replaced atomically). When
    /// there is none yet, it is rebuilt from the history in memory (nothing is written: a reader
    /// may not own `state_dir`). A file that exists but cannot be read or parsed is an error
    /// naming it.
    pub fn read(state_dir: &Path, history: &History) -> Result<Self, LedgerError> {
        match read_file(&state_dir.join(FILE))? {
            Some(ledger) => Ok(ledger),
            None => Ok(Ledger::rebuilt(&history.all().unwrap_or_default())),
        }
    }

    /// Applies `change` to the ledger of `state_dir` and writes it back, under its lock (every
    /// process takes it); returns the ledger as written. Missing, it is rebuilt from `history`
    /// first; unparsable, it is kept aside as `mirrors.json.corrupt-MS` (and says so) and
    /// rebuilt; unreadable, nothing is written and the error names the file.
    pub fn update(
        state_dir: &Path,
        history: &History,
        change: impl FnOnce(&mut Ledger),
    ) -> Result<Ledger, LedgerError> {
        let path = state_dir.join(FILE);
        std::fs::create_dir_all(state_dir).map_err(|e| LedgerError::Unreadable { path: path.clone(), source: e })?;
        let _lock = lock_exclusive(&state_dir.join("mirrors.lock"))
            .map_err(|e| LedgerError::Unreadable { path: state_dir.join("mirrors.lock"), source: e })?;
        let mut ledger = match read_file(&path) {
            Ok(Some(ledger)) => ledger,
            Ok(None) => Ledger::rebuilt(&history.all().unwrap_or_default()),
            Err(LedgerError::Corrupt { path, why }) => {
                let aside = crate::sys::fsutil::keep_aside(&path)
                    .map_err(|e| LedgerError::Unreadable { path: path.clone(), source: e })?;
                tracing::error!(file = %path.display(), kept_as = %aside.display(), %why, "the mirrors' state is corrupt: kept aside, rebuilt from the report history");
                Ledger::rebuilt(&history.all().unwrap_or_default())
            }
            Err(e) => return Err(e),
        };
        change(&mut ledger);
        let list: Vec<&MirrorState> = ledger.mirrors.values().collect();
        let body =
            serde_json::to_vec(&list).map_err(|e| LedgerError::Corrupt { path: path.clone(), why: e.to_string() })?;
        write_atomic(&path, &body).map_err(|e| LedgerError::Unwritable { path, source: e })?;
        Ok(ledger)
    }
}

/// The file, if there is one.
fn read_file(path: &Path) -> Result<Option<Ledger>, LedgerError> {
    let bytes = match read_bounded(path, limit::STATE) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LedgerError::Unreadable { path: path.to_path_buf(), source: e }),
    };
    let list: Vec<MirrorState> = serde_json::from_slice(&bytes)
        .map_err(|e| LedgerError::Corrupt { path: path.to_path_buf(), why: e.to_string() })?;
    let mirrors = list.into_iter().map(|m| ((m.archive.clone(), m.mirror.clone()), m)).collect();
    Ok(Some(Ledger { mirrors }))
}

/// Why the ledger cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// It exists and cannot be read (permissions, I/O, too large).
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not what pushmirror writes.
    #[error("{} is not a mirrors' state file: {why}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        why: String,
    },
    /// It cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Unwritable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl MirrorState {
    fn delivered_at(&mut self, at: Timestamp, serial: Option<String>, key: Option<String>) {
        self.last_ok = Some(at);
        self.delivered = serial;
        if key.is_some() {
            self.key = key;
        }
        self.failures = 0;
        self.failing_since = None;
        self.deferred = None;
        self.pending = None;
    }

    fn failed_at(&mut self, at: Timestamp) {
        self.failures += 1;
        self.failing_since.get_or_insert(at);
        self.deferred = None;
        self.pending = None;
    }
}

/// The one word for `state`, and since when.
fn view(state: MirrorState, kind: Kind, enabled: bool, far: Duration) -> MirrorView {
    let far_behind = state
        .live
        .as_ref()
        .is_some_and(|l| l.standing == Standing::Behind && l.lag_ms.is_none_or(|ms| Duration::from_millis(ms) > far));
    let freshness = state.live.as_ref().and_then(|l| match l.standing {
        Standing::Behind => Some((Health::Behind, l.since)),
        Standing::Unreachable => Some((Health::Unreachable, l.since)),
        Standing::UpToDate | Standing::Syncing => None,
    });
    let (health, since) = if !enabled {
        (Health::Disabled, None)
    } else if state.failures > 0 {
        (Health::Failing, state.failing_since)
    } else if let Some(p) = &state.pending {
        (Health::Pending, Some(p.since))
    } else if let Some(d) = &state.deferred {
        (Health::Deferred, Some(d.since))
    } else if let Some(f) = freshness {
        f
    } else if state.last_ok.is_some() {
        (Health::Ok, state.last_ok)
    } else if let Some(l) = state.live.as_ref() {
        (Health::Ok, l.since)
    } else {
        (Health::Unknown, None)
    };
    MirrorView { health, since, kind, far_behind, state }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn at(s: u64) -> Timestamp {
        Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s))
    }

    fn report(serial: &str, start: u64, rows: Vec<(&str, Outcome)>) -> Report {
        let triggers = rows
            .into_iter()
            .map(|(m, o)| {
                let mut r = TriggerReport::new(m, "http", "https://h/…".into(), Stage::All, o);
                r.started_at = Some(at(start));
                r.attempts = 1;
                if o == Outcome::Failed {
                    r.error_class = Some(ErrorClass::HttpStatus);
                    r.error = Some("HTTP 500".into());
                }
                if o == Outcome::Deferred {
                    r.deferred_until = Some(at(start + 3600));
                }
                r
            })
            .collect();
        Report::new("debian", Some(serial.into()), "daemon", false, at(start).0, triggers)
    }

    fn health(l: &Ledger, mirror: &str) -> Health {
        let state = l.get("debian", mirror).cloned().unwrap_or_default();
        view(state, Kind::Http, true, Duration::from_secs(86_400)).health
    }

    /// The bug this ledger exists for: a later push that leaves a failing mirror out (a deferred
    /// send, `push --only`) must not make it look fine.
    #[test]
    fn a_failing_mirror_stays_failing_until_a_trigger_is_delivered() {
        let mut l = Ledger::default();
        l.record(&report("1", 0, vec![("a", Outcome::Ok), ("b", Outcome::Failed), ("c", Outcome::Deferred)]));
        assert_eq!(
            [health(&l, "a"), health(&l, "b"), health(&l, "c")],
            [Health::Ok, Health::Failing, Health::Deferred]
        );
        // The daemon sends c's deferred trigger alone: b is still failing, c is ok.
        l.record(&report("1", 3600, vec![("c", Outcome::Ok)]));
        assert_eq!([health(&l, "b"), health(&l, "c")], [Health::Failing, Health::Ok]);
        l.record(&report("2", 4000, vec![("b", Outcome::Failed)]));
        let b = l.get("debian", "b").unwrap();
        assert_eq!((b.failures, b.failing_since), (2, Some(at(0))));
        l.record(&report("3", 5000, vec![("b", Outcome::Ok)]));
        let b = l.get("debian", "b").unwrap();
        assert_eq!((health(&l, "b"), b.failures, b.delivered.as_deref()), (Health::Ok, 0, Some("3")));
    }

    #[test]
    fn a_late_ack_settles_the_pending_trigger_it_answers() {
        let mut l = Ledger::default();
        l.record(&report("7", 0, vec![("m", Outcome::Pending)]));
        assert_eq!(health(&l, "m"), Health::Pending);
        assert!(!l.record_ack("debian", "m", Some("6"), None, at(10)), "an ack for another serial");
        assert!(l.record_ack("debian", "m", Some("7"), None, at(20)));
        let m = l.get("debian", "m").unwrap();
        assert_eq!((health(&l, "m"), m.delivered.as_deref(), m.last_ok), (Health::Ok, Some("7"), Some(at(20))));
        l.record(&report("8", 30, vec![("m", Outcome::Pending)]));
        let refused = (ErrorClass::Refused, "refused: sent_at 10m00s ahead of the subscriber's clock".to_string());
        assert!(l.record_ack("debian", "m", Some("8"), Some(refused.clone()), at(40)));
        let last = l.get("debian", "m").unwrap().last.clone().unwrap();
        assert_eq!((last.outcome, last.error_class, last.error), (Outcome::Failed, Some(refused.0), Some(refused.1)));
    }

    #[test]
    fn interrupted_and_skipped_rows_change_nothing() {
        let mut l = Ledger::default();
        l.record(&report("1", 0, vec![("m", Outcome::Ok)]));
        let mut r = report("2", 10, vec![("m", Outcome::Failed)]);
        r.triggers[0].error_class = Some(ErrorClass::Interrupted);
        l.record(&r);
        l.record(&report("3", 20, vec![("m", Outcome::Skipped)]));
        assert_eq!(l.get("debian", "m").unwrap().delivered.as_deref(), Some("1"));
        assert_eq!(health(&l, "m"), Health::Ok);
    }

    #[test]
    fn a_missing_file_is_rebuilt_from_history_and_a_corrupt_one_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::new(dir.path(), 10);
        history.save(&report("1", 0, vec![("b", Outcome::Failed)])).unwrap();
        let read = Ledger::read(dir.path(), &history).unwrap();
        assert_eq!(read.get("debian", "b").unwrap().failures, 1);
        assert!(!dir.path().join(FILE).exists(), "a reader writes nothing");
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let e = Ledger::read(dir.path(), &history).unwrap_err();
        assert!(e.to_string().contains("mirrors.json"), "{e}");
        let written = Ledger::update(dir.path(), &history, |_| {}).unwrap();
        assert_eq!(written, read);
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("mirrors.json.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(Ledger::read(dir.path(), &history).unwrap(), read);
    }

    /// What a mirror said of our keys is bounded (a key rotated every week for years keeps four
    /// entries), newest first, and a key seen again replaces its old entry.
    #[test]
    fn the_keys_a_mirror_was_seen_with_are_bounded_and_newest_first() {
        let mut l = Ledger::default();
        let verdict =
            |n: usize, accepted| KeyVerdict { role: KeyRole::Current, fingerprint: format!("SHA256:k{n}"), accepted };
        for n in 0..10 {
            l.record_keys("debian", "m", &[verdict(n, n % 2 == 0)], at(n as u64), "probe");
        }
        l.record_keys("debian", "m", &[verdict(8, false)], at(100), "daemon");
        let seen: Vec<_> = l.get("debian", "m").unwrap().keys.iter().map(|k| k.fingerprint.as_str()).collect();
        assert_eq!(seen, ["SHA256:k8", "SHA256:k9", "SHA256:k7", "SHA256:k6"]);
        let k8 = l.key_seen("debian", "m", "SHA256:k8").unwrap();
        assert_eq!((k8.accepted, k8.at, k8.by.as_str()), (false, at(100), "daemon"));
        assert!(l.key_seen("debian", "m", "SHA256:k5").is_none());
    }
}
