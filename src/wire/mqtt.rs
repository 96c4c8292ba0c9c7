//! The MQTT broadcast tier's wire format, fixed so that third parties can check it with stock
//! tools (the README's "Wire format"):
//!
//! - a trigger is published to `{prefix}/{archive}/trigger`, QoS 1, retained; its payload is the
//!   JSON bytes of [`TriggerMessage`], and its MQTT 5 user property [`SIGNATURE_PROPERTY`] holds an
//!   SSHSIG over exactly those bytes (namespace [`NAMESPACE`], the format of `ssh-keygen -Y sign`)
//!   as the armor's base64 body without line breaks ([`armor`] puts them back);
//! - a subscriber acknowledges on `{prefix}/{archive}/ack/{mirror}` with [`AckMessage`], signed
//!   the same way with its own key in namespace [`ACK_NAMESPACE`] when it has one.
//!
//! Nothing here touches the network: the sender is [`crate::transport::mqtt`], the subscriber
//! [`crate::receive::mqtt`], the connection settings [`connect`].

use std::fmt;
use std::time::Duration;

use russh::keys::ssh_key::{LineEnding, SshSig};
use russh::keys::{HashAlg, PrivateKey, PublicKey};
use serde::{Deserialize, Serialize};

use crate::vocab::model::{ErrorClass, Stage, Timestamp};

/// The SSHSIG namespace of a trigger (`ssh-keygen -Y verify -n pushmirror-trigger`).
pub const NAMESPACE: &str = "pushmirror-trigger";

/// The SSHSIG namespace of an ack (`ssh-keygen -Y verify -n pushmirror-ack`).
pub const ACK_NAMESPACE: &str = "pushmirror-ack";

/// The MQTT 5 user property that carries the signature, of a trigger and of an ack.
pub const SIGNATURE_PROPERTY: &str = "pushmirror-sshsig";

/// What a signature is made for. Each has its own SSHSIG namespace, so that no signed message
/// passes for another kind (an ack's signature for a trigger, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    /// A trigger, by the upstream's key ([`NAMESPACE`]).
    Trigger,
    /// An ack, by the subscriber's key ([`ACK_NAMESPACE`]).
    Ack,
}

impl Signed {
    /// Its SSHSIG namespace.
    pub fn namespace(self) -> &'static str {
        match self {
            Signed::Trigger => NAMESPACE,
            Signed::Ack => ACK_NAMESPACE,
        }
    }
}

/// The largest message either side accepts (a trigger is about 200 bytes, its signature about
/// 400): anything bigger is dropped unread. Also the client's maximum packet size.
pub const MAX_MESSAGE: usize = 16 * 1024;

/// A trigger as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerMessage {
    /// The archive to sync.
    pub archive: String,
    /// Which stage.
    pub stage: Stage,
    /// The archive's serial, when known.
    pub serial: Option<String>,
    /// When the sender made it (its OS clock): a subscriber refuses it when it is dated more than
    /// its `max_skew` ahead of the subscriber's clock, or older than the last trigger it accepted
    /// by more than that.
    pub sent_at: Timestamp,
    /// Who sent it (the sender's MQTT client id).
    pub sender: String,
    /// 128 random bits as 32 lowercase hex digits, new for every publication (a retry re-sends the
    /// same): a subscriber runs a nonce once. Absent from senders before nonces, whose triggers
    /// are then judged by `sent_at` alone (newer than the last accepted one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// A fresh [`TriggerMessage::nonce`].
pub fn new_nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Whether `nonce` has the form of [`TriggerMessage::nonce`].
pub fn valid_nonce(nonce: &str) -> bool {
    nonce.len() == 32 && nonce.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// How far a subscriber got with a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AckState {
    /// Its sync command started.
    Started,
    /// Its sync command exited 0.
    Ok,
    /// Its sync command failed.
    Failed,
    /// A sync was running: this trigger is queued for one more run.
    Busy,
    /// Signed by a trusted key, and refused for what it says ([`AckMessage::reason`]): it will
    /// not run. Triggers that fail the signature check are never acknowledged (anyone could
    /// publish them), nor are repeats of a trigger that was accepted.
    Refused,
}

impl AckState {
    /// Whether nothing more is to come for this trigger (`started` is followed by one of these).
    pub fn is_final(self) -> bool {
        self != AckState::Started
    }
}

impl fmt::Display for AckState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AckState::Started => "started",
            AckState::Ok => "ok",
            AckState::Failed => "failed",
            AckState::Busy => "busy",
            AckState::Refused => "refused",
        })
    }
}

/// Why a subscriber refused a trigger signed by a key it trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RefusalReason {
    /// Its `sent_at` is more than the subscriber's `max_skew` ahead of the subscriber's clock.
    Future,
    /// Its `sent_at` is older than the last trigger the subscriber accepted for the archive by
    /// more than its `max_skew`.
    Stale,
    /// Signed for another archive than the one whose trigger topic it came on.
    Archive,
    /// A reason this version does not know (from a newer subscriber).
    #[serde(other)]
    Other,
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefusalReason::Future => "future",
            RefusalReason::Stale => "stale",
            RefusalReason::Archive => "archive",
            RefusalReason::Other => "other",
        })
    }
}

/// An acknowledgement as published by a subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AckMessage {
    /// The mirror's name (also the last topic level).
    pub mirror: String,
    /// The serial of the trigger it answers.
    pub serial: Option<String>,
    /// How far it got.
    pub state: AckState,
    /// The sync command's exit code, once it exited.
    pub exit_code: Option<i32>,
    /// How long the sync ran, once it ended.
    pub duration_ms: Option<u64>,
    /// The stage of the trigger it answers (absent from other subscribers' acks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// The `sent_at` of the trigger it answers, which tells publications of one serial apart
    /// (stage 1 and stage 2, a repeated push); absent from other subscribers' acks, which are then
    /// matched by serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Timestamp>,
    /// Why a `refused` trigger was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RefusalReason>,
    /// For a `refused` trigger, how far its `sent_at` was off: ahead of the subscriber's clock
    /// (`future`), or behind the last trigger it accepted (`stale`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off_by_ms: Option<u64>,
}

impl AckMessage {
    /// What a final ack that is not a delivery says went wrong: a failed sync, or a refusal with
    /// its reason; `None` for `started`, `ok` and `busy`.
    pub fn failure(&self) -> Option<(ErrorClass, String)> {
        let off = || self.off_by_ms.map_or_else(|| "too far".to_string(), crate::vocab::units::format_ms);
        match self.state {
            AckState::Started | AckState::Ok | AckState::Busy => None,
            AckState::Failed => Some((
                ErrorClass::RemoteExit,
                format!("the mirror's sync failed (exit {})", self.exit_code.map_or("?".into(), |c| c.to_string())),
            )),
            AckState::Refused => Some((
                ErrorClass::Refused,
                match self.reason {
                    Some(RefusalReason::Future) => format!(
                        "refused: sent_at {} ahead of the subscriber's clock (beyond its max_skew: is either clock \
                         wrong?)",
                        off()
                    ),
                    Some(RefusalReason::Stale) => format!(
                        "refused: sent_at {} older than the last trigger the subscriber accepted (beyond its \
                         max_skew)",
                        off()
                    ),
                    Some(RefusalReason::Archive) => {
                        "refused: published on the trigger topic of another archive at the subscriber".to_string()
                    }
                    Some(RefusalReason::Other) | None => "refused by the subscriber".to_string(),
                },
            )),
        }
    }
}

/// The latest ack of one mirror for one archive, as the sender keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AckRecord {
    /// The archive (from the topic).
    pub archive: String,
    /// The ack as received.
    #[serde(flatten)]
    pub ack: AckMessage,
    /// When it arrived (our clock).
    pub received_at: Timestamp,
    /// Arrival order, to tell acks that came after a publication from those before it.
    #[serde(skip)]
    pub(crate) seq: u64,
}

/// `{prefix}/{archive}/trigger`.
pub fn trigger_topic(prefix: &str, archive: &str) -> String {
    format!("{prefix}/{archive}/trigger")
}

/// `{prefix}/{archive}/ack/{mirror}`.
pub fn ack_topic(prefix: &str, archive: &str, mirror: &str) -> String {
    format!("{prefix}/{archive}/ack/{mirror}")
}

/// The filter a sender subscribes to for every ack of every archive.
pub fn ack_filter(prefix: &str) -> String {
    format!("{prefix}/+/ack/+")
}

/// `(archive, mirror)` of an ack topic under `prefix`; `None` for any other topic.
pub fn parse_ack_topic<'t>(prefix: &str, topic: &'t str) -> Option<(&'t str, &'t str)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let mut levels = rest.split('/');
    match (levels.next(), levels.next(), levels.next(), levels.next()) {
        (Some(archive), Some("ack"), Some(mirror), None) if !archive.is_empty() && !mirror.is_empty() => {
            Some((archive, mirror))
        }
        _ => None,
    }
}

/// Why a signed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    /// No [`SIGNATURE_PROPERTY`] (or more than one).
    #[error("not signed (no single `{SIGNATURE_PROPERTY}` user property)")]
    Unsigned,
    /// The property is not an SSHSIG.
    #[error("the signature is not an SSHSIG: {0}")]
    Malformed(String),
    /// Signed in another namespace.
    #[error("signed for namespace `{found}`, not `{expected}`")]
    Namespace {
        /// The namespace of the signature (at most 64 characters of it).
        found: String,
        /// The one expected.
        expected: &'static str,
    },
    /// Made by a key that is not trusted.
    #[error("signed by an untrusted key ({0})")]
    UntrustedKey(String),
    /// The signature does not match the payload.
    #[error("the signature does not match the payload")]
    BadSignature,
}

/// Signs `payload`, a `what`, with `key`: the SSHSIG armor's base64 body, line breaks removed.
pub fn sign(key: &PrivateKey, what: Signed, payload: &[u8]) -> anyhow::Result<String> {
    let sig = key.sign(what.namespace(), HashAlg::Sha512, payload)?;
    let pem = sig.to_pem(LineEnding::LF)?;
    Ok(pem.lines().filter(|l| !l.starts_with("-----")).collect())
}

/// The armor `ssh-keygen -Y verify` reads: `body` folded at 70 columns between the BEGIN and END
/// lines.
pub fn armor(body: &str) -> String {
    let mut out = String::from("-----BEGIN SSH SIGNATURE-----\n");
    for chunk in body.as_bytes().chunks(70) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END SSH SIGNATURE-----\n");
    out
}

/// Checks that `signature` (as [`sign`] writes it) was made over `payload`, a `what`, by one of
/// `trusted`.
pub fn verify(what: Signed, payload: &[u8], signature: Option<&str>, trusted: &[PublicKey]) -> Result<(), Unverified> {
    let body = signature.ok_or(Unverified::Unsigned)?;
    if body.len() > MAX_MESSAGE || !body.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)) {
        return Err(Unverified::Malformed("not base64".into()));
    }
    let sig = SshSig::from_pem(armor(body)).map_err(|e| Unverified::Malformed(e.to_string()))?;
    let expected = what.namespace();
    if sig.namespace() != expected {
        return Err(Unverified::Namespace { found: sig.namespace().chars().take(64).collect(), expected });
    }
    let key = trusted.iter().find(|k| k.key_data() == sig.public_key()).ok_or_else(|| {
        let signer = PublicKey::new(sig.public_key().clone(), "");
        Unverified::UntrustedKey(crate::wire::keys::fingerprint(&signer))
    })?;
    key.verify(expected, payload, &sig).map_err(|_| Unverified::BadSignature)
}

/// The message expiry of a trigger in MQTT's whole seconds (at least 1, at most `u32::MAX`).
pub fn expiry_seconds(expiry: Duration) -> u32 {
    u32::try_from(expiry.as_secs()).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use russh::keys::Algorithm;

    use super::*;

    fn key() -> PrivateKey {
        PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap()
    }

    #[test]
    fn a_signature_verifies_only_over_its_payload_with_a_trusted_key() {
        let (mine, other) = (key(), key());
        let payload = br#"{"archive":"debian"}"#;
        let sig = sign(&mine, Signed::Trigger, payload).unwrap();
        assert!(!sig.contains('\n') && !sig.contains('-'), "one line of base64: {sig}");
        let trusted = [mine.public_key().clone()];
        let verify =
            |payload: &[u8], sig: Option<&str>, trusted: &[PublicKey]| verify(Signed::Trigger, payload, sig, trusted);
        assert_eq!(verify(payload, Some(&sig), &trusted), Ok(()));
        assert_eq!(verify(br#"{"archive":"debiaN"}"#, Some(&sig), &trusted), Err(Unverified::BadSignature));
        assert!(matches!(verify(payload, Some(&sig), &[other.public_key().clone()]), Err(Unverified::UntrustedKey(_))));
        assert_eq!(verify(payload, None, &trusted), Err(Unverified::Unsigned));
        assert!(matches!(verify(payload, Some("AAAA\n"), &trusted), Err(Unverified::Malformed(_))));
        assert!(matches!(verify(payload, Some("AAAA"), &trusted), Err(Unverified::Malformed(_))));
    }

    #[test]
    fn another_namespace_is_refused() {
        let k = key();
        let sig = k.sign("file", HashAlg::Sha512, b"x").unwrap().to_pem(LineEnding::LF).unwrap();
        let body: String = sig.lines().filter(|l| !l.starts_with("-----")).collect();
        let namespace = |found: &str, expected| Err(Unverified::Namespace { found: found.into(), expected });
        assert_eq!(verify(Signed::Trigger, b"x", Some(&body), &[k.public_key().clone()]), namespace("file", NAMESPACE));
        // An ack's signature is no trigger's, nor the other way round.
        let ack = sign(&k, Signed::Ack, b"x").unwrap();
        assert_eq!(verify(Signed::Ack, b"x", Some(&ack), &[k.public_key().clone()]), Ok(()));
        assert_eq!(
            verify(Signed::Trigger, b"x", Some(&ack), &[k.public_key().clone()]),
            namespace(ACK_NAMESPACE, NAMESPACE)
        );
        let trigger = sign(&k, Signed::Trigger, b"x").unwrap();
        assert_eq!(
            verify(Signed::Ack, b"x", Some(&trigger), &[k.public_key().clone()]),
            namespace(NAMESPACE, ACK_NAMESPACE)
        );
    }

    #[test]
    fn nonces_are_128_random_bits_in_lowercase_hex() {
        let (a, b) = (new_nonce(), new_nonce());
        assert!(valid_nonce(&a) && valid_nonce(&b) && a != b, "{a} {b}");
        for bad in
            ["", "0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef", &format!("{a}0"), "g".repeat(32).as_str()]
        {
            assert!(!valid_nonce(bad), "{bad}");
        }
    }

    #[test]
    fn armor_folds_at_70_columns() {
        let armored = armor(&"A".repeat(150));
        let lengths: Vec<usize> = armored.lines().map(str::len).collect();
        assert_eq!(lengths, [29, 70, 70, 10, 27]);
    }

    #[test]
    fn ack_topics_parse_back_and_nothing_else_does() {
        let topic = ack_topic("pm", "debian", "m1");
        assert_eq!(parse_ack_topic("pm", &topic), Some(("debian", "m1")));
        for other in ["pm/debian/trigger", "pm/debian/ack/", "pm/debian/ack/m1/x", "pmx/debian/ack/m1", "pm//ack/m1"] {
            assert_eq!(parse_ack_topic("pm", other), None, "{other}");
        }
    }

    #[test]
    fn messages_have_the_documented_fields() {
        let t = TriggerMessage {
            archive: "debian".into(),
            stage: Stage::Stage1,
            serial: Some("2026112901".into()),
            sent_at: Timestamp(std::time::UNIX_EPOCH + Duration::from_millis(1_790_000_000_123)),
            sender: "up".into(),
            nonce: Some("0123456789abcdef0123456789abcdef".into()),
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            json,
            r#"{"archive":"debian","stage":"stage1","serial":"2026112901","sent_at":"2026-09-21T14:13:20.123Z","sender":"up","nonce":"0123456789abcdef0123456789abcdef"}"#
        );
        assert!(serde_json::from_str::<TriggerMessage>(&json.replace("}", r#","x":1}"#)).is_err());
        // A sender before nonces.
        let old =
            r#"{"archive":"debian","stage":"all","serial":null,"sent_at":"2026-09-21T14:13:20.123Z","sender":"up"}"#;
        assert_eq!(serde_json::from_str::<TriggerMessage>(old).unwrap().nonce, None);
        let ack: AckMessage =
            serde_json::from_str(r#"{"mirror":"m1","serial":"1","state":"busy","exit_code":null,"duration_ms":null}"#)
                .unwrap();
        assert_eq!(ack.state, AckState::Busy);
        let refused: AckMessage = serde_json::from_str(
            r#"{"mirror":"m1","serial":"1","state":"refused","exit_code":null,"duration_ms":null,"reason":"future","off_by_ms":600000}"#,
        )
        .unwrap();
        let (class, said) = refused.failure().unwrap();
        assert_eq!(
            (class, said.as_str()),
            (
                ErrorClass::Refused,
                "refused: sent_at 10m00s ahead of the subscriber's clock (beyond its max_skew: is either clock wrong?)"
            )
        );
        let newer: AckMessage = serde_json::from_str(
            r#"{"mirror":"m1","serial":"1","state":"refused","exit_code":null,"duration_ms":null,"reason":"moon"}"#,
        )
        .unwrap();
        assert_eq!(newer.reason, Some(RefusalReason::Other));
    }
}
