//! Who may trigger a sync: a bearer token, basic auth, or an HMAC signature
//! ([`crate::wire::signed_http`]). Every secret is compared in constant time; a signature is refused when
//! stale or when it has been accepted before (a replay, [`super::replay`]).

use std::fmt;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::refusals::Refusal;
use super::replay::SeenSignatures;
use crate::vocab::secret::Secret;
use crate::wire::signed_http::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};

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

/// Which configured method `headers` and `body` satisfy at unix time `now`, or why none does.
/// Only a signature that verifies is remembered, so forged ones cannot fill the replay set.
pub fn authenticate(
    credentials: &Credentials,
    headers: &HeaderMap,
    body: &[u8],
    seen: &SeenSignatures,
    now: u64,
) -> Result<Method, Refusal> {
    let authorization = header(headers, AUTHORIZATION.as_str());
    if bearer_matches(credentials, authorization) {
        Ok(Method::Bearer)
    } else if basic_matches(credentials, authorization) {
        Ok(Method::Basic)
    } else if headers.contains_key(TIMESTAMP_HEADER) || headers.contains_key(SIGNATURE_HEADER) {
        check_signature(credentials, headers, body, seen, now).map(|()| Method::Signature)
    } else if headers.contains_key(AUTHORIZATION) {
        Err(Refusal::WrongCredentials)
    } else {
        Err(Refusal::NoCredentials)
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

/// A signature is checked before its age, so that "stale" (a clock off, or an old capture sent
/// again) is only said of signatures made with the key.
fn check_signature(
    credentials: &Credentials,
    headers: &HeaderMap,
    body: &[u8],
    seen: &SeenSignatures,
    now: u64,
) -> Result<(), Refusal> {
    let Some(secret) = &credentials.hmac_secret else { return Err(Refusal::WrongCredentials) };
    let (Some(timestamp), Some(sig)) = (header(headers, TIMESTAMP_HEADER), header(headers, SIGNATURE_HEADER)) else {
        return Err(Refusal::WrongSignature);
    };
    let Ok(t) = timestamp.parse::<u64>() else { return Err(Refusal::WrongSignature) };
    if !signed_http::verify(secret.expose().as_bytes(), timestamp, body, sig) {
        Err(Refusal::WrongSignature)
    } else if !signed_http::is_fresh(timestamp, now) {
        Err(Refusal::StaleSignature)
    } else if !seen.first_use(sig, t, now) {
        Err(Refusal::ReplayedSignature)
    } else {
        Ok(())
    }
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

    fn check(headers: &HeaderMap, body: &[u8]) -> Result<Method, Refusal> {
        authenticate(&all_three(), headers, body, &SeenSignatures::default(), NOW)
    }

    #[test]
    fn bearer_and_basic_need_the_exact_secret() {
        let authorization = |v: &str| with(&[("authorization", v.to_string())]);
        assert_eq!(check(&authorization("Bearer tok"), b""), Ok(Method::Bearer));
        assert_eq!(check(&authorization("bearer tok"), b""), Ok(Method::Bearer));
        assert_eq!(check(&authorization("Bearer tok2"), b""), Err(Refusal::WrongCredentials));
        assert_eq!(check(&authorization("Bearer to"), b""), Err(Refusal::WrongCredentials));
        assert_eq!(check(&authorization(&crate::demo::base64_basic("ubuntu", "pw")), b""), Ok(Method::Basic));
        for (user, pw) in [("ubuntu", "pw2"), ("debian", "pw"), ("ubuntu", "")] {
            let given = authorization(&crate::demo::base64_basic(user, pw));
            assert_eq!(check(&given, b""), Err(Refusal::WrongCredentials), "{user}:{pw}");
        }
        assert_eq!(check(&authorization("Basic !!!"), b""), Err(Refusal::WrongCredentials));
        assert_eq!(check(&HeaderMap::new(), b""), Err(Refusal::NoCredentials));
    }

    #[test]
    fn a_signature_is_accepted_once_and_only_while_fresh() {
        let seen = SeenSignatures::default();
        let signed = |t: u64, key: &[u8]| {
            with(&[
                (TIMESTAMP_HEADER, t.to_string()),
                (SIGNATURE_HEADER, signed_http::sign(key, &t.to_string(), b"{}")),
            ])
        };
        let check = |headers: &HeaderMap, body: &[u8]| authenticate(&all_three(), headers, body, &seen, NOW);
        let fresh = signed(NOW - 10, b"key");
        assert_eq!(check(&fresh, b"{}"), Ok(Method::Signature));
        assert_eq!(check(&fresh, b"{}"), Err(Refusal::ReplayedSignature));
        let shouted =
            fresh.get(SIGNATURE_HEADER).unwrap().to_str().unwrap().to_ascii_uppercase().replace("SHA256=", "sha256=");
        let mut replay = fresh.clone();
        replay.insert(SIGNATURE_HEADER, HeaderValue::from_str(&shouted).unwrap());
        assert_eq!(check(&replay, b"{}"), Err(Refusal::ReplayedSignature), "replay in capitals");
        assert_eq!(check(&signed(NOW - 11, b"key"), b"{ }"), Err(Refusal::WrongSignature), "body changed");
        assert_eq!(check(&signed(NOW - 301, b"key"), b"{}"), Err(Refusal::StaleSignature), "stale");
        assert_eq!(check(&signed(NOW + 301, b"key"), b"{}"), Err(Refusal::StaleSignature), "future");
        assert_eq!(check(&signed(NOW - 12, b"other"), b"{}"), Err(Refusal::WrongSignature), "wrong key");
        assert_eq!(check(&signed(NOW - 400, b"other"), b"{}"), Err(Refusal::WrongSignature), "forged and stale");
        let half = with(&[(TIMESTAMP_HEADER, NOW.to_string())]);
        assert_eq!(check(&half, b"{}"), Err(Refusal::WrongSignature), "timestamp without signature");
        let no_key = Credentials { bearer_token: Some(Secret::new("tok".into())), ..Credentials::default() };
        let unaccepted = authenticate(&no_key, &signed(NOW, b"key"), b"{}", &seen, NOW);
        assert_eq!(unaccepted, Err(Refusal::WrongCredentials), "a signature where none is accepted");
    }
}
