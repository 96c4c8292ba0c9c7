//! The receive configuration (`/etc/pushmirror/receive.yaml`): where to listen and, per archive,
//! the sync command, its time bound, who may trigger it and which tier to push afterwards.
//!
//! Read with the same field reader as the main file, so every mistake is reported at once as
//! `path:line:col: field: message` and unknown fields are errors.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{PrivateKey, PublicKey};
use serde_norway::Value;

use super::auth::Credentials;
use crate::config::broker::{self, Broker};
use crate::config::defaults;
use crate::config::fields::{Fields, Sink, resolve};
use crate::config::{ConfigError, ConfigErrors, basic_auth, secret_field, valid_name};
use crate::vocab::secret::Secret;

/// Where `pushmirror receive` looks when no file is given.
pub const DEFAULT_CONFIG: &str = "/etc/pushmirror/receive.yaml";

const TOP_FIELDS: &[&str] = &["listen", "status", "state_dir", "limits", "archives", "mqtt"];
/// `mqtt:` holds the broker fields and these.
const MQTT_FIELDS: &[&str] = &["mirror", "archives", "topics", "trusted_keys", "max_skew", "identity"];
const LIMIT_FIELDS: &[&str] = &["connections", "header_timeout", "body_timeout"];
const ARCHIVE_FIELDS: &[&str] = &["command", "timeout", "bearer_token_file", "basic_auth", "hmac_secret_file", "push"];
const AUTH_FIELDS: &[&str] = &["bearer_token_file", "basic_auth", "hmac_secret_file"];

/// A validated receive configuration.
#[derive(Debug, Clone)]
pub struct ReceiveConfig {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Address of the trigger endpoint, `/status` and `/healthz`.
    pub listen: SocketAddr,
    /// Who may read `GET /status`.
    pub status: StatusAccess,
    /// Where receive keeps what must outlive a restart: the signatures it has accepted.
    pub state_dir: PathBuf,
    /// Bounds on connections and on how long a request may take to arrive.
    pub limits: Limits,
    /// Archives by name (the `{archive}` of `/trigger/{archive}`).
    pub archives: BTreeMap<String, Arc<SyncArchive>>,
    /// Triggers by MQTT too (`mqtt:`).
    pub mqtt: Option<ReceiveMqtt>,
}

/// The subscriber side of the broadcast tier (`mqtt:`).
#[derive(Debug, Clone)]
pub struct ReceiveMqtt {
    /// The broker and how to log in.
    pub broker: Broker,
    /// This mirror's name: its acks go to `{prefix}/{archive}/ack/{mirror}`.
    pub mirror: String,
    /// The archives whose triggers it subscribes to.
    pub archives: Vec<String>,
    /// The upstream keys a trigger must be signed with (SSHSIG, `pushmirror-trigger`).
    pub trusted_keys: Vec<PublicKey>,
    /// Trigger topics other than `{prefix}/{archive}/trigger`, by archive (the upstream's
    /// `mqtt.topic` for this mirror).
    pub topics: BTreeMap<String, String>,
    /// How far ahead of this host's clock a trigger's `sent_at` may be; beyond, it is refused.
    pub max_skew: Duration,
    /// This mirror's own key, which signs its acks (SSHSIG, `pushmirror-ack`) so that the
    /// upstream can tell them from acks anyone else with write access to the ack topic made;
    /// without one its acks are unsigned.
    pub identity: Option<Secret<Arc<PrivateKey>>>,
}

impl ReceiveMqtt {
    /// The bounds of `max_skew:`: below a second, ordinary NTP jitter between hosts would refuse
    /// triggers; above an hour, a fast clock could hold triggers up for longer than a sync takes.
    pub const MAX_SKEW_RANGE: std::ops::RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(3600);

    /// Every trigger topic it subscribes to, with the archive it carries.
    pub fn topics(&self) -> BTreeMap<String, String> {
        let prefix = &self.broker.topic_prefix;
        let topic =
            |a: &String| self.topics.get(a).cloned().unwrap_or_else(|| crate::wire::mqtt::trigger_topic(prefix, a));
        self.archives.iter().map(|a| (topic(a), a.clone())).collect()
    }
}

/// Bounds on the endpoint's connections (`limits:`), so that clients that connect and then send
/// nothing, or send slowly, cannot hold the receiver's descriptors and keep valid triggers out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; at the limit the quietest is closed for a new one (or the new
    /// one, when every connection is in the middle of a request). Also at most half the
    /// open-file limit, checked at start.
    pub connections: usize,
    /// A request head must be complete within this from when the connection is ready for it:
    /// opened, or the previous answer sent (so it also ends idle kept-alive connections).
    pub header_timeout: Duration,
    /// A trigger's body must be complete within this from the end of its head, else `408`.
    pub body_timeout: Duration,
}

impl Limits {
    /// Largest `connections:` accepted.
    pub const MAX_CONNECTIONS: usize = 65_536;
    /// Largest `header_timeout:` and `body_timeout:` accepted: a trigger is a few hundred bytes,
    /// and a longer bound would let idle connections pile up again.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: defaults::RECEIVE_CONNECTIONS,
            header_timeout: defaults::RECEIVE_HEADER_TIMEOUT,
            body_timeout: defaults::RECEIVE_BODY_TIMEOUT,
        }
    }
}

/// Who may read `GET /status` (`status:`). `/healthz` is open to anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAccess {
    /// Only requests with the credentials of one of the archives (the default): the status
    /// tells which archives exist, which serial is syncing and when the last sync ended.
    Authenticated,
    /// Anyone who can reach the endpoint.
    Public,
}

impl fmt::Display for StatusAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StatusAccess::Authenticated => "authenticated",
            StatusAccess::Public => "public",
        })
    }
}

impl FromStr for StatusAccess {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "authenticated" => Ok(StatusAccess::Authenticated),
            "public" => Ok(StatusAccess::Public),
            _ => Err(format!("expected `authenticated` (the default) or `public`, not `{s}`")),
        }
    }
}

/// One archive this host syncs when triggered.
#[derive(Debug, Clone)]
pub struct SyncArchive {
    /// Its name.
    pub name: String,
    /// Program and arguments, `{archive}` already substituted; run without a shell.
    pub command: Vec<String>,
    /// A run still going after this long is killed.
    pub timeout: Duration,
    /// Who may trigger it.
    pub credentials: Credentials,
    /// A pushmirror configuration whose mirrors of this archive are pushed after a successful sync.
    pub push: Option<PathBuf>,
}

/// Loads and validates the receive configuration at `path`, or returns every error found.
pub fn load(path: &Path) -> Result<ReceiveConfig, ConfigErrors> {
    let text = crate::sys::fsutil::read_bounded_text(path, crate::sys::fsutil::limit::CONFIG_FILE).map_err(|e| {
        let why = crate::sys::owner::unreadable_reason(path, &e);
        ConfigErrors(vec![ConfigError::at(path, (1, 1), "", format!("cannot read config file: {why}"))])
    })?;
    let sink = Sink::default();
    let config = Fields::parse_file(path, &text, &sink).map(read_top);
    let errors = sink.into_inner();
    match config {
        Some(c) if errors.is_empty() => Ok(c),
        _ => Err(ConfigErrors::sorted(errors)),
    }
}

fn read_top(mut f: Fields<'_>) -> ReceiveConfig {
    let path = f.file().to_path_buf();
    let listen = f
        .take_from_str::<SocketAddr>("listen")
        .unwrap_or_else(|| defaults::RECEIVE_LISTEN.parse().expect("the default parses (tested)"));
    let status = f
        .take_from_str("status")
        .unwrap_or_else(|| defaults::RECEIVE_STATUS.parse().expect("the default parses (tested)"));
    let state_dir = f.path("state_dir").unwrap_or_else(|| PathBuf::from(defaults::RECEIVE_STATE_DIR));
    let limits = f.nested("limits").map(read_limits).unwrap_or_default();
    let mqtt_fields = f.nested("mqtt");
    let archives = read_archives(&mut f, mqtt_fields.is_some());
    let mqtt = mqtt_fields.and_then(|m| read_mqtt(m, &archives));
    f.finish(TOP_FIELDS);
    ReceiveConfig { path, listen, status, state_dir, limits, archives, mqtt }
}

/// `mqtt:`: the broker, this mirror's name, its archives (default: all), the trusted keys.
fn read_mqtt(mut m: Fields<'_>, configured: &BTreeMap<String, Arc<SyncArchive>>) -> Option<ReceiveMqtt> {
    let broker = broker::read(&mut m, || broker::default_client_id("pushmirror-receive"));
    let mirror = m.take_parsed("mirror", |s| match broker::valid_level(s) {
        true => Ok(s.to_string()),
        false => Err(format!("invalid mirror name `{s}`: letters, digits, `.`, `_`, `-`")),
    });
    let from_username = broker.as_ref().and_then(|b| b.username.clone()).filter(|_| !m.has("mirror"));
    if let Some(name) = from_username.as_ref().filter(|n| !broker::valid_level(n)) {
        m.error("mirror", format!("the username `{name}` cannot name this mirror in its ack topic: set `mirror:`"));
    }
    let mirror = mirror.or(from_username);
    if mirror.is_none() && !m.has("mirror") {
        m.error(
            "mirror",
            "missing: this mirror's name, as the upstream registered it (its acks are published under it)",
        );
    }
    let archives: Vec<String> = m.take("archives").unwrap_or_else(|| configured.keys().cloned().collect());
    for a in archives.iter().filter(|a| !configured.contains_key(*a)) {
        m.error("archives", format!("`{a}` is not one of the archives configured under `archives:`"));
    }
    for (name, _) in configured.iter().filter(|(n, a)| a.credentials.is_empty() && !archives.contains(n)) {
        m.error(
            "archives",
            format!("archive `{name}` has no HTTP credentials and is not listed here: nothing could trigger it"),
        );
    }
    let topics: BTreeMap<String, String> = m.take("topics").unwrap_or_default();
    for (archive, topic) in &topics {
        if !archives.contains(archive) {
            m.error("topics", format!("`{archive}` is not one of the archives subscribed to"));
        }
        if !topic.split('/').all(broker::valid_level) {
            m.error(
                "topics",
                format!("invalid topic `{topic}`: levels of letters, digits, `.`, `_`, `-`, no wildcards"),
            );
        }
    }
    let keys: Vec<String> = m.take("trusted_keys").unwrap_or_default();
    let mut trusted_keys = Vec::new();
    for line in &keys {
        match crate::wire::keys::parse_public_key(line) {
            Ok(key) => trusted_keys.push(key),
            Err(e) => m.error("trusted_keys", e),
        }
    }
    if keys.is_empty() {
        m.error(
            "trusted_keys",
            "missing: the upstream's public keys (`ssh-ed25519 AAAA…` lines, as `pushmirror keys` prints them); \
             unsigned triggers are never run",
        );
    }
    let range = ReceiveMqtt::MAX_SKEW_RANGE;
    let max_skew = m.duration("max_skew", *range.end()).unwrap_or(defaults::RECEIVE_MQTT_MAX_SKEW);
    if max_skew < *range.start() {
        m.error("max_skew", "must be at least 1s: hosts' clocks differ by that much even with NTP");
    }
    // Loaded now, so that a missing, unreadable or group-readable key is named at its field.
    let identity = m.path("identity").and_then(|path| match crate::wire::keys::load_identity(&path) {
        Ok(key) => Some(Secret::new(Arc::new(key))),
        Err(e) => {
            m.error("identity", e.to_string());
            None
        }
    });
    m.finish(&[broker::BROKER_FIELDS, MQTT_FIELDS].concat());
    Some(ReceiveMqtt { broker: broker?, mirror: mirror?, archives, trusted_keys, topics, max_skew, identity })
}

/// Reads `limits:`; a value out of range is reported and the default used in its place.
fn read_limits(mut l: Fields<'_>) -> Limits {
    let default = Limits::default();
    let connections = match l.take::<u64>("connections") {
        Some(n) if (1..=Limits::MAX_CONNECTIONS as u64).contains(&n) => n as usize,
        Some(_) => {
            l.error("connections", format!("must be between 1 and {}", Limits::MAX_CONNECTIONS));
            default.connections
        }
        None => default.connections,
    };
    // Longer would let slow clients hold connections.
    let header_timeout = l.duration("header_timeout", Limits::MAX_TIMEOUT).unwrap_or(default.header_timeout);
    let body_timeout = l.duration("body_timeout", Limits::MAX_TIMEOUT).unwrap_or(default.body_timeout);
    l.finish(LIMIT_FIELDS);
    Limits { connections, header_timeout, body_timeout }
}

/// With `mqtt`, an archive may have no HTTP credentials: it is triggered by MQTT only.
fn read_archives(f: &mut Fields<'_>, mqtt: bool) -> BTreeMap<String, Arc<SyncArchive>> {
    let mut out = BTreeMap::new();
    let Some(mut all) = f.nested("archives") else {
        f.error("archives", "missing: the archives this host syncs, each with `command:` and a way to authenticate");
        return out;
    };
    let entries = all.drain_nested();
    if entries.is_empty() {
        f.error("archives", "no archives configured");
    }
    for (name, fields) in entries {
        if !valid_name(&name) {
            all.error(&name, "archive names may hold only letters, digits, `.`, `_` and `-`");
        }
        let Some(mut a) = fields else {
            all.error(&name, "expected a mapping with `command:` and a way to authenticate");
            continue;
        };
        let archive = read_archive(&name, &mut a, &all, mqtt);
        a.finish(ARCHIVE_FIELDS);
        if let Some(archive) = archive {
            out.insert(name, Arc::new(archive));
        }
    }
    out
}

fn read_archive(name: &str, a: &mut Fields<'_>, parent: &Fields<'_>, mqtt: bool) -> Option<SyncArchive> {
    let command = read_command(a, name);
    let timeout =
        a.duration("timeout", crate::vocab::units::max::SYNC_COMMAND).unwrap_or(defaults::RECEIVE_SYNC_TIMEOUT);
    let credentials = read_credentials(a, name, parent, mqtt);
    let push = a.path("push");
    Some(SyncArchive { name: name.to_string(), command: command?, timeout, credentials: credentials?, push })
}

/// Reads the three ways to authenticate; at least one must be configured and readable.
fn read_credentials(a: &mut Fields<'_>, name: &str, parent: &Fields<'_>, mqtt: bool) -> Option<Credentials> {
    let errors_before = a.errors_so_far();
    let credentials = Credentials {
        bearer_token: secret_field(a, "bearer_token_file"),
        basic_auth: a.nested("basic_auth").and_then(|b| basic_auth(b, &mut Vec::new())),
        hmac_secret: secret_field(a, "hmac_secret_file"),
    };
    if a.errors_so_far() > errors_before {
        // A named but unusable secret: never run with fewer credentials than configured.
        return None;
    }
    if credentials.is_empty() && !mqtt {
        parent.error(name, format!("no way to authenticate triggers: set one of {}", AUTH_FIELDS.join(", ")));
        return None;
    }
    Some(credentials)
}

/// Reads `command:` as an argv list, substitutes `{archive}` and resolves a relative program.
fn read_command(a: &mut Fields<'_>, archive: &str) -> Option<Vec<String>> {
    let example = "[\"/usr/bin/ftpsync\", \"sync:archive:{archive}\"]";
    let argv = match a.take::<Value>("command") {
        None => {
            a.error("command", format!("missing: the sync command as a list of arguments, e.g. {example}"));
            return None;
        }
        Some(Value::String(_)) => {
            a.error("command", format!("expected a list of arguments (no shell is involved), e.g. {example}"));
            return None;
        }
        Some(v) => match serde_norway::from_value::<Vec<String>>(v) {
            Ok(argv) => argv,
            Err(_) => {
                a.error("command", format!("expected a list of strings, e.g. {example}"));
                return None;
            }
        },
    };
    let Some((program, args)) = argv.split_first() else {
        a.error("command", "must name a program to run");
        return None;
    };
    if let Some(word) = argv.iter().find_map(|arg| ["{stage}", "{serial}"].into_iter().find(|w| arg.contains(w))) {
        a.error(
            "command",
            format!(
                "`{word}` is not substituted: only {{archive}} is; the stage and serial of a trigger arrive \
                 in the environment as PUSHMIRROR_STAGE and PUSHMIRROR_SERIAL"
            ),
        );
        return None;
    }
    let program = resolve_program(a.file(), program);
    if let Err(msg) = check_program(&program) {
        a.error("command", msg);
        return None;
    }
    let mut command = vec![program];
    command.extend(args.iter().map(|arg| arg.replace("{archive}", archive)));
    Some(command)
}

/// A program named with a `/` is a path (relative ones to the config file); a bare name is
/// looked up in `PATH` when it runs, as a shell would.
fn resolve_program(file: &Path, program: &str) -> String {
    if program.contains('/') { resolve(file, program).to_string_lossy().into_owned() } else { program.to_string() }
}

fn check_program(program: &str) -> Result<(), String> {
    if !program.contains('/') {
        return Ok(());
    }
    let meta = std::fs::metadata(program).map_err(|e| format!("cannot run {program}: {e}"))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{program} is not an executable file"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn reads_a_complete_file_with_relative_paths_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "secrets/token", "t0ken\n", 0o600);
        write(dir.path(), "secrets/pw", "pw\n", 0o600);
        write(dir.path(), "bin/sync", "#!/bin/sh\n", 0o755);
        let path = write(
            dir.path(),
            "receive.yaml",
            "archives:\n  debian:\n    command: [bin/sync, \"sync:archive:{archive}\", \"{archive}-x\"]\n    \
             bearer_token_file: secrets/token\n    basic_auth: { user: u, password_file: secrets/pw }\n    \
             push: pushmirror.yaml\n",
            0o644,
        );
        let c = load(&path).unwrap();
        assert_eq!(c.listen, defaults::RECEIVE_LISTEN.parse().unwrap());
        assert_eq!(c.status, StatusAccess::Authenticated);
        assert_eq!(c.state_dir, Path::new(defaults::RECEIVE_STATE_DIR));
        assert_eq!(c.limits, Limits::default());
        let a = &c.archives["debian"];
        let program = dir.path().join("bin/sync").to_string_lossy().into_owned();
        assert_eq!(a.command, [program.as_str(), "sync:archive:debian", "debian-x"]);
        assert_eq!(a.timeout, defaults::RECEIVE_SYNC_TIMEOUT);
        assert_eq!(a.credentials.bearer_token.as_ref().unwrap().expose(), "t0ken");
        assert_eq!(a.credentials.basic_auth.as_ref().unwrap().0, "u");
        assert!(a.credentials.hmac_secret.is_none());
        assert_eq!(a.push.as_deref(), Some(dir.path().join("pushmirror.yaml").as_path()));
    }

    #[test]
    fn the_status_is_authenticated_or_public() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "token", "t", 0o600);
        let archives = "archives:\n  a:\n    command: [\"true\"]\n    bearer_token_file: token\n";
        let path = write(dir.path(), "receive.yaml", &format!("status: public\n{archives}"), 0o644);
        assert_eq!(load(&path).unwrap().status, StatusAccess::Public);
        let path = write(dir.path(), "receive.yaml", &format!("status: open\n{archives}"), 0o644);
        let errors = load(&path).unwrap_err().to_string();
        assert!(
            errors.contains(":1:1: status: expected `authenticated` (the default) or `public`, not `open`"),
            "{errors}"
        );
    }

    #[test]
    fn limits_are_read_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "token", "t", 0o600);
        let archives = "archives:\n  a:\n    command: [\"true\"]\n    bearer_token_file: token\n";
        let config = |limits: &str| write(dir.path(), "receive.yaml", &format!("limits: {limits}\n{archives}"), 0o644);
        let path = config("{ connections: 64, header_timeout: 5s, body_timeout: 1m }");
        let expected =
            Limits { connections: 64, header_timeout: Duration::from_secs(5), body_timeout: Duration::from_secs(60) };
        assert_eq!(load(&path).unwrap().limits, expected);
        let path = config("{ connections: 0, header_timeout: 61s, body_timeout: 0s, idle: 1m }");
        let errors = load(&path).unwrap_err().to_string();
        for expected in [
            "limits.connections: must be between 1 and 65536",
            "limits.header_timeout: duration `61s` is longer than the maximum 1m",
            "limits.body_timeout: duration `0s` must be greater than zero",
            "limits.idle: unknown field",
        ] {
            assert!(errors.contains(expected), "missing `{expected}` in:\n{errors}");
        }
    }

    #[test]
    fn max_skew_defaults_to_two_minutes_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIqI4910CfGV/VLbLTy6XXLKZwm/HZQSG/N0iAG0D29c up";
        let config = |extra: &str| {
            let text = format!(
                "mqtt:\n  broker: mqtt://b.example\n  mirror: m1\n  trusted_keys: ['{key}']\n{extra}\
                 archives:\n  a:\n    command: [\"true\"]\n"
            );
            write(dir.path(), "receive.yaml", &text, 0o644)
        };
        let mqtt = |path: &Path| load(path).unwrap().mqtt.unwrap();
        assert_eq!(mqtt(&config("")).max_skew, defaults::RECEIVE_MQTT_MAX_SKEW);
        assert_eq!(mqtt(&config("  max_skew: 30s\n")).max_skew, Duration::from_secs(30));
        for (value, said) in [
            ("500ms", "mqtt.max_skew: must be at least 1s"),
            ("2h", "mqtt.max_skew: duration `2h` is longer than the maximum 1h"),
            ("soon", "mqtt.max_skew:"),
        ] {
            let errors = load(&config(&format!("  max_skew: {value}\n"))).unwrap_err().to_string();
            assert!(errors.contains(&format!("receive.yaml:5:3: {said}")), "{value}: {errors}");
        }
    }

    #[test]
    fn the_ack_identity_is_loaded_and_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIqI4910CfGV/VLbLTy6XXLKZwm/HZQSG/N0iAG0D29c up";
        let config = |identity: &str| {
            let text = format!(
                "mqtt:\n  broker: mqtt://b.example\n  mirror: m1\n  trusted_keys: ['{key}']\n  identity: {identity}\n\
                 archives:\n  a:\n    command: [\"true\"]\n"
            );
            write(dir.path(), "receive.yaml", &text, 0o644)
        };
        let made = crate::wire::keys::generate(&dir.path().join("keys/ack"), "m1").unwrap();
        let mqtt = load(&config("keys/ack")).unwrap().mqtt.unwrap();
        let loaded = mqtt.identity.as_ref().unwrap();
        assert_eq!(loaded.expose().public_key().key_data(), made.public.key_data());
        assert_eq!(format!("{:?}", mqtt.identity), "Some([redacted])");
        std::fs::set_permissions(dir.path().join("keys/ack"), std::fs::Permissions::from_mode(0o640)).unwrap();
        let errors = load(&config("keys/ack")).unwrap_err().to_string();
        assert!(errors.contains("receive.yaml:5:3: mqtt.identity:") && errors.contains("keys/ack"), "{errors}");
        let errors = load(&config("keys/missing")).unwrap_err().to_string();
        assert!(
            errors.contains("receive.yaml:5:3: mqtt.identity: cannot read private key")
                && errors.contains("keys/missing"),
            "{errors}"
        );
    }

    #[test]
    fn a_shell_string_and_interpolated_trigger_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "token", "t", 0o600);
        let path = write(
            dir.path(),
            "receive.yaml",
            "archives:\n  a:\n    command: \"ftpsync sync:all\"\n    bearer_token_file: token\n  \
             b:\n    command: [ftpsync, \"sync:{stage}\"]\n    bearer_token_file: token\n",
            0o644,
        );
        let errors = load(&path).unwrap_err().to_string();
        assert!(errors.contains(":3:5: archives.a.command: expected a list of arguments (no shell"), "{errors}");
        assert!(errors.contains(":6:5: archives.b.command: `{stage}` is not substituted"), "{errors}");
    }
}
