//! Signed HTTP triggers (the GitHub-webhook pattern): the sender puts a unix timestamp in
//! `X-Pushmirror-Timestamp` and `sha256=<hex HMAC-SHA256 of "timestamp.body">` in
//! `X-Pushmirror-Signature`, so no secret travels in the URL. `pushmirror receive` verifies it in
//! constant time and refuses stale or replayed signatures.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Header carrying the unix timestamp (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-pushmirror-timestamp";
/// Header carrying `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-pushmirror-signature";
/// Signatures older (or further in the future) than this are refused.
pub const MAX_AGE_SECS: u64 = 300;

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Pushmirror-Signature` value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

/// Whether `header` is the right signature (constant-time comparison).
pub fn verify(secret: &[u8], timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else { return false };
    let Ok(sig) = hex::decode(hex_sig) else { return false };
    mac(secret, timestamp, body).verify_slice(&sig).is_ok()
}

/// Whether `timestamp` (unix seconds) is within [`MAX_AGE_SECS`] of `now` (unix seconds).
pub fn is_fresh(timestamp: &str, now: u64) -> bool {
    timestamp.parse::<u64>().is_ok_and(|t| t.abs_diff(now) <= MAX_AGE_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_and_rejects_tampering() {
        let sig = sign(b"k", "1700000000", b"{\"archive\":\"debian\"}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(verify(b"k", "1700000000", b"{\"archive\":\"debian\"}", &sig));
        assert!(!verify(b"k", "1700000001", b"{\"archive\":\"debian\"}", &sig));
        assert!(!verify(b"k", "1700000000", b"{\"archive\":\"ubuntu\"}", &sig));
        assert!(!verify(b"other", "1700000000", b"{\"archive\":\"debian\"}", &sig));
        assert!(!verify(b"k", "1700000000", b"{}", "sha1=00"));
    }

    #[test]
    fn freshness_window_is_five_minutes_either_way() {
        assert!(is_fresh("1000", 1300) && is_fresh("1300", 1000));
        assert!(!is_fresh("1000", 1301) && !is_fresh("x", 1000));
    }
}
