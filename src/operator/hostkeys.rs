//! `hostkeys scan`: fetch the host key of each SSH mirror and record it in pushmirror's own
//! known_hosts. Nothing is asked: new keys are recorded, known ones reported, and a key that
//! differs from the recorded one (or from the mirror's `host_key:` pin) is reported, never
//! written over.

use std::fmt;
use std::sync::Arc;

use futures::StreamExt as _;
use russh::keys::{Algorithm, PublicKey};
use serde::Serialize;

use crate::config::{Config, Mirror, SshTarget, Transport};
use crate::transport::known_hosts::{KeyStatus, KnownHostsFile, host_entry_name};
use crate::transport::ssh::scan_host_key;
use crate::wire::keys::{fingerprint, parse_public_key, same_key};

/// What a scan found for one mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScanStatus {
    /// First seen, now recorded.
    New,
    /// Already recorded, unchanged.
    Known,
    /// Changed as the operator said it would (`--replace` with its fingerprint): the new key
    /// replaced the recorded ones.
    Replaced,
    /// Differs from the recorded key; not recorded.
    Changed,
    /// Marked `@revoked` in known_hosts.
    Revoked,
    /// Matches the mirror's `host_key:` pin (known_hosts is not used for it).
    Pinned,
    /// Differs from the mirror's `host_key:` pin.
    PinMismatch,
    /// `--replace`: the host offers a key without the expected fingerprint; nothing replaced.
    Unexpected,
    /// The key could not be fetched.
    Failed,
}

impl ScanStatus {
    /// Whether the operator has to act (exit code 1).
    pub fn is_problem(self) -> bool {
        matches!(
            self,
            ScanStatus::Changed
                | ScanStatus::Revoked
                | ScanStatus::PinMismatch
                | ScanStatus::Unexpected
                | ScanStatus::Failed
        )
    }
}

impl fmt::Display for ScanStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScanStatus::New => "new, recorded",
            ScanStatus::Known => "known",
            ScanStatus::Replaced => "replaced, recorded",
            ScanStatus::Changed => "CHANGED, not recorded",
            ScanStatus::Revoked => "REVOKED",
            ScanStatus::Pinned => "pinned, matches",
            ScanStatus::PinMismatch => "PIN MISMATCH",
            ScanStatus::Unexpected => "NOT THE EXPECTED KEY",
            ScanStatus::Failed => "failed",
        })
    }
}

/// One mirror's line of the scan.
#[derive(Debug, Clone, Serialize)]
pub struct ScanRow {
    /// Mirror name.
    pub mirror: String,
    /// `[host]:port`.
    pub host: String,
    /// The offered key's `SHA256:…` fingerprint, when one was seen.
    pub fingerprint: Option<String>,
    /// The offered key's type (`ssh-ed25519`, …).
    pub key_type: Option<String>,
    /// What it means.
    pub status: ScanStatus,
    /// The expected fingerprint(s) or the error.
    pub detail: Option<String>,
}

impl fmt::Display for ScanRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fp = self.fingerprint.as_deref().unwrap_or("-");
        write!(f, "{} {} {} {}", self.mirror, self.host, fp, self.status)?;
        match &self.detail {
            Some(d) => write!(f, " ({d})"),
            None => Ok(()),
        }
    }
}

/// Why a scan cannot start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScanError {
    /// `--only` named a mirror that is not an SSH mirror of this configuration.
    #[error("--only {0}: no such SSH mirror")]
    UnknownMirror(String),
    /// `--replace` named a mirror that is not an SSH mirror of this configuration.
    #[error("--replace {0}: no such SSH mirror")]
    UnknownReplaced(String),
    /// `--replace` of a mirror whose key is pinned in its file: known_hosts is not used for it.
    #[error("--replace {0}: its key is pinned by `host_key:` in its mirror file; change it there")]
    Pinned(String),
}

/// A changed host key the operator expects: `hostkeys scan --replace NAME --fingerprint FP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replace {
    /// The mirror.
    pub mirror: String,
    /// The `SHA256:…` fingerprint its host's new key must have.
    pub fingerprint: String,
}

/// Replaces the recorded host key of one mirror with the key its host offers now, only when
/// that key has the expected fingerprint (as the downstream's admin said it, out of band);
/// otherwise nothing changes and the row says what was offered.
pub async fn replace(config: &Config, replace: &Replace) -> Result<ScanRow, ScanError> {
    let (mirror, target) = config
        .mirrors
        .iter()
        .find_map(|m| match &m.transport {
            Transport::Ssh(t) if m.name == replace.mirror => Some((Arc::clone(m), t.clone())),
            _ => None,
        })
        .ok_or_else(|| ScanError::UnknownReplaced(replace.mirror.clone()))?;
    if target.host_key.is_some() {
        return Err(ScanError::Pinned(replace.mirror.clone()));
    }
    let file = KnownHostsFile::new(&config.known_hosts);
    let mut row = ScanRow {
        mirror: mirror.name.clone(),
        host: bracketed(&target),
        fingerprint: None,
        key_type: None,
        status: ScanStatus::Failed,
        detail: None,
    };
    let key = match scan_host_key(&target.host, target.port, &known_algorithms(&file, &target), mirror.timeout).await {
        Ok(key) => key,
        Err(e) => return Ok(failed(row, format!("{}: {}", e.class, e.message))),
    };
    let offered = fingerprint(&key);
    (row.fingerprint, row.key_type) = (Some(offered.clone()), Some(key.algorithm().as_str().to_string()));
    if offered != replace.fingerprint {
        let why = format!("expected {}; nothing replaced", replace.fingerprint);
        return Ok(ScanRow { status: ScanStatus::Unexpected, detail: Some(why), ..row });
    }
    match file.replace(&host_entry_name(&target.host, target.port), &key) {
        Ok(()) => Ok(ScanRow { status: ScanStatus::Replaced, ..row }),
        Err(e) => Ok(failed(row, e.to_string())),
    }
}

/// Scans the SSH mirrors of `config` (only those named in `only`, if any), concurrently up to
/// the configured concurrency, and records new keys. Rows come back in mirror-name order.
pub async fn scan(config: &Config, only: &[String]) -> Result<Vec<ScanRow>, ScanError> {
    let ssh: Vec<(Arc<Mirror>, SshTarget)> = config
        .mirrors
        .iter()
        .filter_map(|m| match &m.transport {
            Transport::Ssh(t) => Some((Arc::clone(m), t.clone())),
            Transport::Http(_) | Transport::Mqtt(_) => None,
        })
        .collect();
    if let Some(missing) = only.iter().find(|n| !ssh.iter().any(|(m, _)| m.name == **n)) {
        return Err(ScanError::UnknownMirror(missing.clone()));
    }
    let file = KnownHostsFile::new(&config.known_hosts);
    let selected = ssh.into_iter().filter(|(m, _)| only.is_empty() || only.contains(&m.name));
    let fetched: Vec<_> = futures::stream::iter(selected)
        .map(|(mirror, target)| {
            let file = &file;
            async move {
                let known = known_algorithms(file, &target);
                let key = scan_host_key(&target.host, target.port, &known, mirror.timeout).await;
                (mirror, target, key)
            }
        })
        .buffer_unordered(config.concurrency.max(1))
        .collect()
        .await;
    // Judging and recording run one at a time, each under known_hosts' lock, so two mirrors on one
    // host (or a scan next to another process) record its key once.
    let mut rows: Vec<ScanRow> = fetched
        .into_iter()
        .map(|(mirror, target, key)| match key {
            Ok(key) => judge(&file, &mirror.name, &target, &key),
            Err(e) => ScanRow {
                mirror: mirror.name.clone(),
                host: bracketed(&target),
                fingerprint: None,
                key_type: None,
                status: ScanStatus::Failed,
                detail: Some(format!("{}: {}", e.class, e.message)),
            },
        })
        .collect();
    rows.sort_by(|a, b| a.mirror.cmp(&b.mirror));
    Ok(rows)
}

/// Key types to ask the host for first: those already pinned or recorded for it.
fn known_algorithms(file: &KnownHostsFile, target: &SshTarget) -> Vec<Algorithm> {
    if let Some(pin) = target.host_key.as_deref().and_then(|p| parse_public_key(p).ok()) {
        return vec![pin.algorithm()];
    }
    let name = host_entry_name(&target.host, target.port);
    file.keys_for(&name).unwrap_or_default().iter().map(PublicKey::algorithm).collect()
}

fn judge(file: &KnownHostsFile, mirror: &str, target: &SshTarget, key: &PublicKey) -> ScanRow {
    let mut row = ScanRow {
        mirror: mirror.to_string(),
        host: bracketed(target),
        fingerprint: Some(fingerprint(key)),
        key_type: Some(key.algorithm().as_str().to_string()),
        status: ScanStatus::Known,
        detail: None,
    };
    if let Some(pin) = target.host_key.as_deref() {
        match parse_public_key(pin) {
            Ok(pin) if same_key(&pin, key) => row.status = ScanStatus::Pinned,
            Ok(pin) => {
                row.status = ScanStatus::PinMismatch;
                row.detail = Some(format!("host_key: pins {}", fingerprint(&pin)));
            }
            Err(e) => {
                row.status = ScanStatus::Failed;
                row.detail = Some(format!("host_key: {e}"));
            }
        }
        return row;
    }
    let name = host_entry_name(&target.host, target.port);
    match file.record_if_unknown(&name, key) {
        Err(e) => return failed(row, e.to_string()),
        Ok(KeyStatus::Known) => row.status = ScanStatus::Known,
        Ok(KeyStatus::Unknown) => row.status = ScanStatus::New,
        Ok(KeyStatus::Changed { expected }) => {
            row.status = ScanStatus::Changed;
            let fps: Vec<String> = expected.iter().map(fingerprint).collect();
            row.detail = Some(format!("recorded: {}", fps.join(", ")));
        }
        Ok(KeyStatus::Revoked) => row.status = ScanStatus::Revoked,
    }
    row
}

fn failed(mut row: ScanRow, detail: String) -> ScanRow {
    row.status = ScanStatus::Failed;
    row.detail = Some(detail);
    row
}

/// `[host]:port`, always with the port, so a line says exactly where the key came from.
fn bracketed(target: &SshTarget) -> String {
    format!("[{}]:{}", target.host, target.port)
}
