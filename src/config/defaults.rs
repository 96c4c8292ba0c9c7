//! Every configuration default, defined once. The readers of the main file, the mirror files and
//! `receive`'s file take their defaults from the constants here; the man page's CONFIGURATION
//! section is written from [`TABLE`], and a test holds the README's configuration tables to it.

use std::fmt;
use std::time::Duration;

/// `known_hosts` (relative to the main file).
pub const KNOWN_HOSTS: &str = "known_hosts";
/// `host_key_policy`.
pub const HOST_KEY_POLICY: &str = "strict";
/// `mirrors_dir` (relative to the main file).
pub const MIRRORS_DIR: &str = "mirrors.d";
/// `state_dir`.
pub const STATE_DIR: &str = "/var/lib/pushmirror";
/// `concurrency`: measured (README, Performance): past ~256 a 2-core primary gains nothing on a
/// real network and only holds more descriptors.
pub const CONCURRENCY: usize = 256;
/// `max_per_host`: below the 10 unauthenticated connections at which OpenSSH's default
/// `MaxStartups 10:30:100` starts dropping new ones, with room for other clients.
pub const MAX_PER_HOST: usize = 8;
/// `archives.NAME.trace` (relative to its root).
pub const TRACE: &str = "project/trace/master";
/// `archives.NAME.locks`.
pub const LOCKS: &[&str] = &["Archive-Update-in-Progress-*"];
/// `archives.NAME.settle`.
pub const SETTLE: Duration = Duration::from_secs(30);
/// `archives.NAME.poll`.
pub const POLL: Duration = Duration::from_secs(60);
/// `archives.NAME.propagation_timeout`.
pub const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// `archives.NAME.max_lag`.
pub const MAX_LAG: Duration = Duration::from_secs(12 * 3600);
/// `archives.NAME.forced_command`: what a downstream's `authorized_keys` line runs.
pub const FORCED_COMMAND: &str = crate::wire::keys::FTPSYNC_FORCED_COMMAND;
/// `status.listen`.
pub const STATUS_LISTEN: &str = "127.0.0.1:9470";
/// `status.history`: reports kept.
pub const STATUS_HISTORY: usize = 200;
/// `freshness.interval`.
pub const FRESHNESS_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// `mqtt.topic_prefix` (and `receive`'s).
pub const MQTT_TOPIC_PREFIX: &str = "pushmirror";
/// `mqtt.keepalive` (and `receive`'s).
pub const MQTT_KEEPALIVE: Duration = Duration::from_secs(30);
/// `mqtt.expiry`: a trigger's MQTT 5 message expiry.
pub const MQTT_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// `mqtt.ack_timeout`: how long a push waits for an MQTT mirror's ack.
pub const MQTT_ACK_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// `mqtt.require_signed_acks`: off, so that an upgrade keeps every existing MQTT mirror working
/// (its subscriber may not sign yet, and its file names no `ack_key`); turning it on makes each
/// MQTT mirror file need one.
pub const MQTT_REQUIRE_SIGNED_ACKS: bool = false;

/// `notify.after_failures`: consecutive failed triggers before a mirror counts as failing.
pub const NOTIFY_AFTER_FAILURES: u32 = 2;
/// `notify.min_interval`: at most one message about one mirror per this long.
pub const NOTIFY_MIN_INTERVAL: Duration = Duration::from_secs(3600);
/// `notify.timeout`: one delivery attempt (mail, webhook).
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);
/// `notify.mail.via`.
pub const NOTIFY_MAIL_VIA: &str = "sendmail";
/// What `via: sendmail` runs: the Debian convention every MTA provides.
pub const SENDMAIL: &[&str] = &["/usr/sbin/sendmail", "-t", "-oi"];
/// `hooks.timeout`: how long a hook may run.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// A mirror's `ssh.port`.
pub const SSH_PORT: u16 = 22;
/// A mirror's `http.method`.
pub const HTTP_METHOD: &str = "GET";
/// A mirror's `type`.
pub const MIRROR_TYPE: &str = "all";
/// A mirror's `retries`.
pub const RETRIES: u32 = 4;
/// A mirror's `timeout`: one attempt.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// A mirror's `backoff.initial`.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(5);
/// A mirror's `backoff.max`.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
/// A mirror's `enabled`.
pub const ENABLED: bool = true;
/// A mirror's `wait_for_sync`.
pub const WAIT_FOR_SYNC: bool = false;
/// A mirror's `sync_timeout`.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// `receive`'s `listen`.
pub const RECEIVE_LISTEN: &str = "127.0.0.1:8470";
/// `receive`'s `status`: who may read `GET /status`.
pub const RECEIVE_STATUS: &str = "authenticated";
/// `receive`'s `state_dir`.
pub const RECEIVE_STATE_DIR: &str = "/var/lib/pushmirror-receive";
/// `receive`'s `limits.connections`.
pub const RECEIVE_CONNECTIONS: usize = 512;
/// `receive`'s `limits.header_timeout`.
pub const RECEIVE_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `receive`'s `limits.body_timeout`.
pub const RECEIVE_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// `receive`'s `archives.NAME.timeout`: one run of the sync command.
pub const RECEIVE_SYNC_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// `receive`'s `mqtt.max_skew`: how far ahead of this host's clock an MQTT trigger's `sent_at`
/// may be. NTP keeps clocks within milliseconds; two minutes forgive a host that is still
/// settling after boot without letting one fast clock block real triggers for long.
pub const RECEIVE_MQTT_MAX_SKEW: Duration = Duration::from_secs(120);

/// Which file a field is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum File {
    /// The main file, `pushmirror.yaml`.
    Main,
    /// A mirror file, `mirrors_dir/NAME.yaml` (and the main file's `defaults:`).
    Mirror,
    /// `receive`'s file.
    Receive,
}

/// A default as the documentation shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// A duration, in its largest exact unit (`30s`, `5m`, `6h`, `1d`).
    Duration(Duration),
    /// A number.
    Count(u64),
    /// Text as written in YAML.
    Text(&'static str),
    /// A list of strings.
    List(&'static [&'static str]),
    /// A boolean.
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::Duration(d) => {
                let s = d.as_secs();
                match [(86_400, "d"), (3600, "h"), (60, "m")].into_iter().find(|(unit, _)| s > 0 && s % unit == 0) {
                    Some((unit, suffix)) => write!(f, "{}{suffix}", s / unit),
                    None => write!(f, "{s}s"),
                }
            }
            Value::Count(n) => write!(f, "{n}"),
            Value::Text(t) => f.write_str(t),
            Value::List(items) => {
                let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
                write!(f, "[{}]", quoted.join(", "))
            }
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// One field's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Default {
    /// The file it is written in.
    pub file: File,
    /// Its path in that file (`status.listen`, `archives.NAME.settle`, `backoff.max`).
    pub field: &'static str,
    /// Its default.
    pub value: Value,
}

const fn entry(file: File, field: &'static str, value: Value) -> Default {
    Default { file, field, value }
}

/// Every default with the field it belongs to.
pub const TABLE: &[Default] = &[
    entry(File::Main, "known_hosts", Value::Text(KNOWN_HOSTS)),
    entry(File::Main, "host_key_policy", Value::Text(HOST_KEY_POLICY)),
    entry(File::Main, "mirrors_dir", Value::Text(MIRRORS_DIR)),
    entry(File::Main, "state_dir", Value::Text(STATE_DIR)),
    entry(File::Main, "concurrency", Value::Count(CONCURRENCY as u64)),
    entry(File::Main, "max_per_host", Value::Count(MAX_PER_HOST as u64)),
    entry(File::Main, "archives.NAME.trace", Value::Text(TRACE)),
    entry(File::Main, "archives.NAME.locks", Value::List(LOCKS)),
    entry(File::Main, "archives.NAME.settle", Value::Duration(SETTLE)),
    entry(File::Main, "archives.NAME.poll", Value::Duration(POLL)),
    entry(File::Main, "archives.NAME.propagation_timeout", Value::Duration(PROPAGATION_TIMEOUT)),
    entry(File::Main, "archives.NAME.max_lag", Value::Duration(MAX_LAG)),
    entry(File::Main, "archives.NAME.forced_command", Value::Text(FORCED_COMMAND)),
    entry(File::Main, "status.listen", Value::Text(STATUS_LISTEN)),
    entry(File::Main, "status.history", Value::Count(STATUS_HISTORY as u64)),
    entry(File::Main, "freshness.interval", Value::Duration(FRESHNESS_INTERVAL)),
    entry(File::Main, "mqtt.topic_prefix", Value::Text(MQTT_TOPIC_PREFIX)),
    entry(File::Main, "mqtt.keepalive", Value::Duration(MQTT_KEEPALIVE)),
    entry(File::Main, "mqtt.expiry", Value::Duration(MQTT_EXPIRY)),
    entry(File::Main, "mqtt.ack_timeout", Value::Duration(MQTT_ACK_TIMEOUT)),
    entry(File::Main, "mqtt.require_signed_acks", Value::Bool(MQTT_REQUIRE_SIGNED_ACKS)),
    entry(File::Main, "notify.after_failures", Value::Count(NOTIFY_AFTER_FAILURES as u64)),
    entry(File::Main, "notify.min_interval", Value::Duration(NOTIFY_MIN_INTERVAL)),
    entry(File::Main, "notify.timeout", Value::Duration(NOTIFY_TIMEOUT)),
    entry(File::Main, "notify.mail.via", Value::Text(NOTIFY_MAIL_VIA)),
    entry(File::Main, "hooks.timeout", Value::Duration(HOOK_TIMEOUT)),
    entry(File::Mirror, "ssh.port", Value::Count(SSH_PORT as u64)),
    entry(File::Mirror, "http.method", Value::Text(HTTP_METHOD)),
    entry(File::Mirror, "type", Value::Text(MIRROR_TYPE)),
    entry(File::Mirror, "retries", Value::Count(RETRIES as u64)),
    entry(File::Mirror, "timeout", Value::Duration(TIMEOUT)),
    entry(File::Mirror, "backoff.initial", Value::Duration(BACKOFF_INITIAL)),
    entry(File::Mirror, "backoff.max", Value::Duration(BACKOFF_MAX)),
    entry(File::Mirror, "tags", Value::List(&[])),
    entry(File::Mirror, "enabled", Value::Bool(ENABLED)),
    entry(File::Mirror, "wait_for_sync", Value::Bool(WAIT_FOR_SYNC)),
    entry(File::Mirror, "sync_timeout", Value::Duration(SYNC_TIMEOUT)),
    entry(File::Receive, "listen", Value::Text(RECEIVE_LISTEN)),
    entry(File::Receive, "status", Value::Text(RECEIVE_STATUS)),
    entry(File::Receive, "state_dir", Value::Text(RECEIVE_STATE_DIR)),
    entry(File::Receive, "limits.connections", Value::Count(RECEIVE_CONNECTIONS as u64)),
    entry(File::Receive, "limits.header_timeout", Value::Duration(RECEIVE_HEADER_TIMEOUT)),
    entry(File::Receive, "limits.body_timeout", Value::Duration(RECEIVE_BODY_TIMEOUT)),
    entry(File::Receive, "archives.NAME.timeout", Value::Duration(RECEIVE_SYNC_TIMEOUT)),
    entry(File::Receive, "mqtt.max_skew", Value::Duration(RECEIVE_MQTT_MAX_SKEW)),
];

/// The defaults of `file` whose field is `field` or lies under it (`status` → `status.listen`,
/// `status.history`), with the rest of their path (`listen`; empty for `field` itself).
pub fn under(file: File, field: &str) -> impl Iterator<Item = (&'static str, Value)> + '_ {
    TABLE.iter().filter(move |d| d.file == file).filter_map(move |d| {
        if d.field == field {
            Some(("", d.value))
        } else {
            d.field.strip_prefix(field).and_then(|rest| rest.strip_prefix('.')).map(|rest| (rest, d.value))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_in_their_largest_exact_unit() {
        let shown = |s| Value::Duration(Duration::from_secs(s)).to_string();
        assert_eq!(
            [shown(30), shown(60), shown(300), shown(90), shown(21_600), shown(86_400)],
            ["30s", "1m", "5m", "90s", "6h", "1d"]
        );
        assert_eq!(Value::List(LOCKS).to_string(), r#"["Archive-Update-in-Progress-*"]"#);
        assert_eq!(Value::List(&[]).to_string(), "[]");
    }

    /// The text defaults parse as their fields do (the readers parse them).
    #[test]
    fn text_defaults_parse() {
        STATUS_LISTEN.parse::<std::net::SocketAddr>().unwrap();
        RECEIVE_LISTEN.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(under(File::Main, "status").count(), 2);
        assert_eq!(under(File::Main, "archives.NAME.settle").next(), Some(("", Value::Duration(SETTLE))));
    }
}
