//! The MQTT broker connection settings shared by the sender's main file (`mqtt:`) and
//! `receive`'s file (`mqtt:`): where the broker is, who we are, how we prove it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use super::fields::{Fields, secret_file};
use crate::vocab::secret::Secret;

/// The fields of a broker connection, in both files.
pub const BROKER_FIELDS: &[&str] = &[
    "broker",
    "client_id",
    "username",
    "password_file",
    "ca_file",
    "client_cert",
    "client_key",
    "topic_prefix",
    "keepalive",
];

/// How to reach an MQTT broker.
#[derive(Debug, Clone)]
pub struct Broker {
    /// Host name or address.
    pub host: String,
    /// TCP port (1883 for `mqtt://`, 8883 for `mqtts://` unless the URL says).
    pub port: u16,
    /// `mqtts://`: TLS, the broker's certificate checked against `ca_file` (else the system's roots).
    pub tls: bool,
    /// Our client id; the session the broker keeps for us is under it.
    pub client_id: String,
    /// Username, with the password read from `password_file`.
    pub username: Option<String>,
    /// The password (a secret: never printed).
    pub password: Option<Secret<String>>,
    /// The file the password was read from (the service user must own it).
    pub password_file: Option<PathBuf>,
    /// The CA certificates (PEM) the broker's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// Our client certificate (PEM), for brokers that require one (mTLS).
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub client_key: Option<PathBuf>,
    /// The first topic level of every topic (default `pushmirror`).
    pub topic_prefix: String,
    /// MQTT keepalive: a silent connection is pinged this often and dropped when dead.
    pub keepalive: Duration,
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// Reads the broker fields of `f` (the caller finishes `f` with its own fields added);
/// `default_client_id` when `client_id:` is absent.
pub(crate) fn read(f: &mut Fields<'_>, default_client_id: impl FnOnce() -> String) -> Option<Broker> {
    let url = f.take_parsed("broker", parse_broker_url);
    if url.is_none() && f.errors_so_far() == 0 && !f.has("broker") {
        f.error("broker", "missing: the broker's URL, e.g. mqtts://broker.example.org");
    }
    let client_id = f.take_parsed("client_id", |s| match valid_level(s) {
        true => Ok(s.to_string()),
        false => Err(format!("invalid client id `{s}`: use letters, digits, `.`, `_`, `-`")),
    });
    let username: Option<String> = f.take("username");
    let (password, password_file) = secret_file(f, "password_file").unzip();
    if password.is_some() && username.is_none() {
        f.error("password_file", "a password needs a `username:`");
    }
    let paired = f.has("client_cert") == f.has("client_key");
    // Read now, so that `check` and a reload name a missing or unusable file at its field (the
    // connection reads them again when it is set up).
    let mut pem = |key: &str, private: bool| {
        let path = f.path(key)?;
        let read = match private {
            true => crate::sys::fsutil::read_private_text(&path).map(drop),
            false => crate::sys::fsutil::read_bounded(&path, crate::sys::fsutil::limit::KEY).map(drop).map_err(|e| {
                format!("cannot read {}: {}", path.display(), crate::sys::owner::unreadable_reason(&path, &e))
            }),
        };
        match read {
            Ok(()) => Some(path),
            Err(msg) => {
                f.error(key, msg);
                None
            }
        }
    };
    let ca_file = pem("ca_file", false);
    let client_cert = pem("client_cert", false);
    let client_key = pem("client_key", true);
    if !paired {
        f.error("client_cert", "`client_cert:` and `client_key:` go together");
    }
    let topic_prefix = f
        .take_parsed("topic_prefix", |s| match !s.is_empty() && s.split('/').all(valid_level) {
            true => Ok(s.to_string()),
            false => Err(format!(
                "invalid topic prefix `{s}`: topic levels of letters, digits, `.`, `_`, `-`, separated by `/`"
            )),
        })
        .unwrap_or_else(|| super::defaults::MQTT_TOPIC_PREFIX.to_string());
    let keepalive = f.duration("keepalive", Duration::from_secs(3600)).unwrap_or(super::defaults::MQTT_KEEPALIVE);
    if keepalive < Duration::from_secs(5) {
        f.error("keepalive", "must be at least 5s");
    }
    let (host, port, tls) = url?;
    let tls_files = [("ca_file", &ca_file), ("client_cert", &client_cert), ("client_key", &client_key)];
    if let Some((key, _)) = tls_files.iter().find(|(_, v)| v.is_some()).filter(|_| !tls) {
        f.error(key, "TLS files need an `mqtts://` broker");
    }
    Some(Broker {
        host,
        port,
        tls,
        client_id: client_id.unwrap_or_else(default_client_id),
        username,
        password,
        password_file,
        ca_file,
        client_cert,
        client_key,
        topic_prefix,
        keepalive,
    })
}

/// `mqtt://host[:port]` or `mqtts://host[:port]`, nothing else: credentials go in `username:`
/// and `password_file:`, where they are not printed.
fn parse_broker_url(s: &str) -> Result<(String, u16, bool), String> {
    let url = Url::parse(s).map_err(|e| format!("invalid URL: {e} (expected mqtt://HOST[:PORT] or mqtts://…)"))?;
    let tls = match url.scheme() {
        "mqtt" => false,
        "mqtts" => true,
        other => return Err(format!("unknown scheme `{other}`, expected mqtt:// or mqtts://")),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err("no credentials in the URL: use `username:` and `password_file:`".into());
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err("a broker URL has no path or query: mqtt://HOST[:PORT]".into());
    }
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or("missing host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok((host, url.port().unwrap_or(if tls { 8883 } else { 1883 }), tls))
}

/// One topic level or client id we accept: letters, digits, `.`, `_`, `-` (no wildcards, no
/// separators, nothing a broker or a shell could read otherwise).
pub fn valid_level(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `pushmirror-HOSTNAME`, the default client id of a sender, or `pushmirror-receive-HOSTNAME`.
pub fn default_client_id(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).collect();
    match host.is_empty() {
        true => role.to_string(),
        false => format!("{role}-{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(parse_broker_url("mqtt://b.example"), Ok(("b.example".into(), 1883, false)));
        assert_eq!(parse_broker_url("mqtts://b.example"), Ok(("b.example".into(), 8883, true)));
        assert_eq!(parse_broker_url("mqtts://127.0.0.1:9000/"), Ok(("127.0.0.1".into(), 9000, true)));
        assert_eq!(parse_broker_url("mqtt://[::1]:1"), Ok(("::1".into(), 1, false)));
        assert!(parse_broker_url("mqtt://u:secret@b.example").unwrap_err().contains("no credentials"));
        assert!(parse_broker_url("http://b.example").unwrap_err().contains("unknown scheme"));
        assert!(parse_broker_url("mqtt://b.example/topic").is_err());
    }

    #[test]
    fn levels() {
        assert!(valid_level("pushmirror-up.example_1"));
        for bad in ["", "a/b", "+", "#", "a b", "é"] {
            assert!(!valid_level(bad), "{bad}");
        }
    }
}
