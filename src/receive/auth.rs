//! Who may trigger a sync: a bearer token, basic auth, or an HMAC signature
//! ([`crate::signature`]). Every secret is compared in constant time; a signature is refused when
//! stale or when it has been accepted before (a replay, [`super::replay`]).

use std::fmt;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::replay::SeenSignatures;
use crate::secret::Secret;
use crate::signature::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// The secrets one archive accepts; any one of them authorises a trigger.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// `Authorization: Bearer …`.
    pub bearer_token: Option<Secret<String>>,
    /// `Authorization: Basic …` with this user and password.
    pub basic_auth: Option<(String, Secret<String>)>,
    /// Key of `X-Pushmirror-Signature`.
    pub hmac_secret: Option<Secret<String>>,
}

impl Credentials {
    /// Whether no way to authenticate is configured.
    pub fn is_empty(&self) -> bool {
        self.bearer_token.is_none() && self.basic_auth.is_none() && self.hmac_secret.is_none()
    }
}

/// How a trigger proved who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The bearer token.
    Bearer,
    /// Basic auth.
    Basic,
    /// A fresh, first-seen HMAC signature.
    Signature,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Bearer => "bearer token",
            Method::Basic => "basic auth",
            Method::Signature => "signature",
        })
    }
}

/// Which configured method, if any, `headers` and `body` satisfy at unix time `now`.
/// Only a signature that verifies is remembered, so forged ones cannot fill the replay set.
pub fn authenticate(
    credentials: &Credentials,
    headers: &HeaderMap,
    body: &[u8],
    seen: &SeenSignatures,
    now: u64,
) -> Option<Method> {
    let authorization = header(headers, AUTHORIZATION.as_str());
    if bearer_matches(credentials, authorization) {
        Some(Method::Bearer)
    } else if basic_matches(credentials, authorization) {
        Some(Method::Basic)
    } else if signature_matches(credentials, headers, body, seen, now) {
        Some(Method::Signature)
    } else {
        None
    }
}

fn bearer_matches(credentials: &Credentials, authorization: Option<&str>) -> bool {
    match (&credentials.bearer_token, authorization.and_then(|a| scheme(a, "Bearer"))) {
        (Some(token), Some(given)) => same(token.expose(), given).into(),
        _ => false,
    }
}

fn basic_matches(credentials: &Credentials, authorization: Option<&str>) -> bool {
    match (&credentials.basic_auth, authorization.and_then(|a| scheme(a, "Basic")).and_then(decode_basic)) {
        // `&`, not `&&`: both comparisons always run, so the timing does not tell which one failed.
        (Some((user, password)), Some((given_user, given_password))) => {
            (same(user, &given_user) & same(password.expose(), &given_password)).into()
        }
        _ => false,
    }
}

fn signature_matches(
    credentials: &Credentials,
    headers: &HeaderMap,
    body: &[u8],
    seen: &SeenSignatures,
    now: u64,
) -> bool {
    let (Some(secret), Some(timestamp), Some(sig)) =
        (&credentials.hmac_secret, header(headers, TIMESTAMP_HEADER), header(headers, SIGNATURE_HEADER))
    else {
        return false;
    };
    signature::is_fresh(timestamp, now)
        && signature::verify(secret.expose().as_bytes(), timestamp, body, sig)
        && timestamp.parse().is_ok_and(|t| seen.first_use(sig, t, now))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The credentials of an `Authorization` value using `wanted` (scheme names ignore case).
fn scheme<'a>(authorization: &'a str, wanted: &str) -> Option<&'a str> {
    let (name, rest) = authorization.trim().split_once(' ')?;
    name.eq_ignore_ascii_case(wanted).then(|| rest.trim())
}

fn decode_basic(encoded: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Constant-time equality. Comparing digests keeps the lengths from showing in the timing too.
fn same(expected: &str, given: &str) -> Choice {
    Sha256::digest(expected.as_bytes()).as_slice().ct_eq(Sha256::digest(given.as_bytes()).as_slice())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn all_three() -> Credentials {
        Credentials {
            bearer_token: Some(Secret::new("tok".into())),
            basic_auth: Some(("ubuntu".into(), Secret::new("pw".into()))),
            hmac_secret: Some(Secret::new("key".into())),
        }
    }

    fn with(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn check(headers: &HeaderMap, body: &[u8]) -> Option<Method> {
        authenticate(&all_three(), headers, body, &SeenSignatures::default(), NOW)
    }

    #[test]
    fn bearer_and_basic_need_the_exact_secret() {
        assert_eq!(check(&with(&[("authorization", "Bearer tok".into())]), b""), Some(Method::Bearer));
        assert_eq!(check(&with(&[("authorization", "bearer tok".into())]), b""), Some(Method::Bearer));
        assert_eq!(check(&with(&[("authorization", "Bearer tok2".into())]), b""), None);
        assert_eq!(check(&with(&[("authorization", "Bearer to".into())]), b""), None);
        let basic = crate::demo::base64_basic("ubuntu", "pw");
        assert_eq!(check(&with(&[("authorization", basic)]), b""), Some(Method::Basic));
        for (user, pw) in [("ubuntu", "pw2"), ("debian", "pw"), ("ubuntu", "")] {
            assert_eq!(check(&with(&[("authorization", crate::demo::base64_basic(user, pw))]), b""), None);
        }
        assert_eq!(check(&with(&[("authorization", "Basic !!!".into())]), b""), None);
        assert_eq!(check(&HeaderMap::new(), b""), None);
    }

    #[test]
    fn a_signature_is_accepted_once_and_only_while_fresh() {
        let seen = SeenSignatures::default();
        let signed = |t: u64, key: &[u8]| {
            with(&[(TIMESTAMP_HEADER, t.to_string()), (SIGNATURE_HEADER, signature::sign(key, &t.to_string(), b"{}"))])
        };
        let fresh = signed(NOW - 10, b"key");
        assert_eq!(authenticate(&all_three(), &fresh, b"{}", &seen, NOW), Some(Method::Signature));
        assert_eq!(authenticate(&all_three(), &fresh, b"{}", &seen, NOW), None, "replay accepted");
        let shouted =
            fresh.get(SIGNATURE_HEADER).unwrap().to_str().unwrap().to_ascii_uppercase().replace("SHA256=", "sha256=");
        let mut replay = fresh.clone();
        replay.insert(SIGNATURE_HEADER, HeaderValue::from_str(&shouted).unwrap());
        assert_eq!(authenticate(&all_three(), &replay, b"{}", &seen, NOW), None, "replay in capitals accepted");
        assert_eq!(authenticate(&all_three(), &signed(NOW - 11, b"key"), b"{ }", &seen, NOW), None, "body changed");
        assert_eq!(authenticate(&all_three(), &signed(NOW - 301, b"key"), b"{}", &seen, NOW), None, "stale");
        assert_eq!(authenticate(&all_three(), &signed(NOW + 301, b"key"), b"{}", &seen, NOW), None, "future");
        assert_eq!(authenticate(&all_three(), &signed(NOW - 12, b"other"), b"{}", &seen, NOW), None, "wrong key");
    }
}
