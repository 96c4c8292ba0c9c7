//! What a trigger asks for: the stage and serial, from pushmirror's JSON body
//! (`{"archive","stage","serial","sent_at"}`) or from query parameters, validated before they
//! reach the sync command's environment.

use axum::extract::Query;
use axum::http::Uri;
use serde::{Deserialize, Serialize};

use crate::vocab::model::Stage;

/// Longest serial accepted (ftpsync's are ten digits; room for date-and-time forms).
pub const MAX_SERIAL: usize = 64;

/// A validated trigger: what the sync command is told in its environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Which part of a sync (`all` when the trigger does not say).
    pub stage: Stage,
    /// The upstream archive's serial, when the trigger carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// When an MQTT trigger was sent (its acks carry it back, so the sender can tell which
    /// publication they answer); `None` for HTTP triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<crate::vocab::model::Timestamp>,
}

/// Why a trigger's parameters are refused (answered with 400 and this text).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadTrigger {
    /// The body is not the JSON object pushmirror sends.
    #[error("the body must be a JSON object like {{\"stage\": \"all\", \"serial\": \"2026112501\"}}")]
    Body,
    /// The query string could not be read.
    #[error("invalid query string")]
    Query,
    /// Parameters in both places: which one counts would be a guess.
    #[error("give stage and serial in the JSON body or in the query, not both")]
    Both,
    /// The body names another archive than the URL (a signed body sent to the wrong place).
    #[error("the body is for another archive than the URL")]
    OtherArchive,
    /// Not a stage word.
    #[error("stage must be all, stage1 or stage2")]
    Stage,
    /// Too long or with characters that have no business in a serial.
    #[error("serial must be at most 64 characters of A-Z a-z 0-9 . _ : + -")]
    Serial,
}

/// The fields a trigger may carry; others (`sent_at`, future additions) are ignored.
#[derive(Debug, Default, Deserialize)]
struct Wire {
    archive: Option<String>,
    stage: Option<String>,
    serial: Option<String>,
}

/// Reads the parameters of a trigger for `archive`: from the body when it has one, else from
/// the query string.
pub fn parse(archive: &str, uri: &Uri, body: &[u8]) -> Result<SyncRequest, BadTrigger> {
    let query = match uri.query() {
        Some(_) => Query::<Wire>::try_from_uri(uri).map_err(|_| BadTrigger::Query)?.0,
        None => Wire::default(),
    };
    let wire = if body.trim_ascii().is_empty() {
        query
    } else {
        if query.stage.is_some() || query.serial.is_some() {
            return Err(BadTrigger::Both);
        }
        serde_json::from_slice::<Wire>(body).map_err(|_| BadTrigger::Body)?
    };
    if wire.archive.as_deref().is_some_and(|a| a != archive) {
        return Err(BadTrigger::OtherArchive);
    }
    let stage = match wire.stage.as_deref() {
        None | Some("") => Stage::All,
        Some(s) => s.parse().map_err(|_| BadTrigger::Stage)?,
    };
    let serial = match wire.serial {
        None => None,
        Some(s) if s.is_empty() => None,
        Some(s) if valid_serial(&s) => Some(s),
        Some(_) => return Err(BadTrigger::Serial),
    };
    Ok(SyncRequest { stage, serial, sent_at: None })
}

/// At most [`MAX_SERIAL`] characters of `[A-Za-z0-9._:+-]`.
pub fn valid_serial(s: &str) -> bool {
    s.len() <= MAX_SERIAL && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '+' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    fn req(stage: Stage, serial: Option<&str>) -> SyncRequest {
        SyncRequest { stage, serial: serial.map(String::from), sent_at: None }
    }

    #[test]
    fn reads_pushmirrors_body_and_query_parameters() {
        let body = br#"{"archive":"debian","stage":"stage1","serial":"2026112501","sent_at":"2026-11-25T10:00:00Z"}"#;
        assert_eq!(parse("debian", &uri("/trigger/debian"), body), Ok(req(Stage::Stage1, Some("2026112501"))));
        assert_eq!(parse("debian", &uri("/t?stage=stage2&serial=1.2"), b""), Ok(req(Stage::Stage2, Some("1.2"))));
        assert_eq!(parse("debian", &uri("/t"), b""), Ok(req(Stage::All, None)));
        assert_eq!(parse("debian", &uri("/t"), br#"{"serial":null}"#), Ok(req(Stage::All, None)));
        assert_eq!(parse("debian", &uri("/t?token=x"), b"  "), Ok(req(Stage::All, None)));
    }

    #[test]
    fn refuses_what_could_smuggle_anything() {
        let t = uri("/t");
        assert_eq!(parse("debian", &uri("/t?stage=mhop"), b""), Err(BadTrigger::Stage));
        assert_eq!(parse("debian", &uri("/t?serial=%24(reboot)"), b""), Err(BadTrigger::Serial));
        assert_eq!(
            parse("debian", &t, format!(r#"{{"serial":"{}"}}"#, "1".repeat(65)).as_bytes()),
            Err(BadTrigger::Serial)
        );
        assert!(parse("debian", &t, format!(r#"{{"serial":"{}"}}"#, "1".repeat(64)).as_bytes()).is_ok());
        assert_eq!(parse("debian", &t, br#"{"archive":"ubuntu"}"#), Err(BadTrigger::OtherArchive));
        assert_eq!(parse("debian", &t, b"stage=all"), Err(BadTrigger::Body));
        assert_eq!(parse("debian", &uri("/t?serial=1"), br#"{"stage":"all"}"#), Err(BadTrigger::Both));
    }
}
