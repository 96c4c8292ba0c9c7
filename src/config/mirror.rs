//! One mirror file (`mirrors.d/NAME.yaml`) and the `defaults:` section share these fields.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use reqwest::Url;
use russh::keys::PublicKey;

use super::fields::{Fields, Sink, secret_file};
use super::sender::{Level, LocalAddresses, Sender, UNSET};
use super::{Archive, ConfigError, valid_name};
use crate::vocab::secret::Secret;
use crate::vocab::units::{RateLimit, max};

/// A registered downstream mirror, with defaults applied.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// Its name (file stem unless `name:` says otherwise).
    pub name: String,
    /// The file that defines it.
    pub file: PathBuf,
    /// How it is triggered.
    pub transport: Transport,
    /// Archives it serves; `None` means all.
    pub archives: Option<Vec<String>>,
    /// runmirrors type: all, staged or mhop.
    pub kind: MirrorKind,
    /// At most N triggers per period.
    pub rate_limit: Option<RateLimit>,
    /// Retries after the first attempt, for transient failures.
    pub retries: u32,
    /// Bound of one attempt.
    pub timeout: Duration,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// Free-form labels for `--tag`.
    pub tags: Vec<String>,
    /// Disabled mirrors are kept but reported as skipped.
    pub enabled: bool,
    /// Hold the SSH session until the downstream's command exits.
    pub wait_for_sync: bool,
    /// Upper bound of a waited-for sync.
    pub sync_timeout: Duration,
    /// An exit code meaning "already syncing, re-run queued" (ftpsync: 1).
    pub busy_exit: Option<i32>,
    /// Replaces the ftpsync command string; `{archive}`, `{stage}`, `{serial}` are substituted.
    pub command: Option<String>,
    /// Who its triggers are sent as, per configured archive it carries (its own `identity:` and
    /// `source_address:`, else the archive's, else the main file's).
    pub senders: BTreeMap<String, Sender>,
    /// Its public base URL of the archive (`check:`), where its trace files are read.
    pub check: Option<Url>,
}

/// A check-only mirror: a file with `check:` and neither `ssh:` nor `http:`. Never triggered (it is
/// not a [`Mirror`], so no plan can hold it); its trace files are read like any mirror's.
#[derive(Debug, Clone)]
pub struct Watched {
    /// Its name.
    pub name: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// Its public base URL of the archive.
    pub check: Url,
    /// Archives it carries; `None` means all.
    pub archives: Option<Vec<String>>,
    /// Free-form labels.
    pub tags: Vec<String>,
    /// Disabled ones are not checked.
    pub enabled: bool,
}

impl Watched {
    /// Whether this mirror carries `archive`.
    pub fn serves(&self, archive: &str) -> bool {
        self.archives.as_ref().is_none_or(|a| a.iter().any(|x| x == archive))
    }
}

/// What one mirror file describes.
enum Described {
    Triggered(Box<Mirror>),
    CheckOnly(Watched),
}

impl Mirror {
    /// Whether this mirror carries `archive`.
    pub fn serves(&self, archive: &str) -> bool {
        self.archives.as_ref().is_none_or(|a| a.iter().any(|x| x == archive))
    }

    /// Who a trigger of `archive` to this mirror is sent as (nothing set for an archive it does
    /// not carry).
    pub fn sender(&self, archive: &str) -> &Sender {
        self.senders.get(archive).unwrap_or(&UNSET)
    }

    /// The host and port its triggers connect to, which `max_per_host` bounds: the SSH server,
    /// or the HTTP URL's host and port. `None` for MQTT (its triggers go through the one broker
    /// connection).
    pub fn endpoint(&self) -> Option<(String, u16)> {
        match &self.transport {
            Transport::Ssh(t) => Some((t.host.to_ascii_lowercase(), t.port)),
            Transport::Http(t) => {
                let url = t.url.expose();
                Some((url.host_str()?.to_ascii_lowercase(), url.port_or_known_default()?))
            }
            Transport::Mqtt(_) => None,
        }
    }

    /// `ssh`, `http` or `mqtt`.
    pub fn transport_name(&self) -> &'static str {
        match self.transport {
            Transport::Ssh(_) => "ssh",
            Transport::Http(_) => "http",
            Transport::Mqtt(_) => "mqtt",
        }
    }
}

/// How a mirror is triggered.
#[derive(Debug, Clone)]
pub enum Transport {
    /// One SSH exec with pushmirror's key.
    Ssh(SshTarget),
    /// One HTTP request.
    Http(HttpTarget),
    /// A subscriber of the broadcast tier: the archive's signed trigger is published once to the
    /// broker (`mqtt:` of the main file) and this mirror acknowledges it.
    Mqtt(MqttTarget),
}

/// A registered subscriber of the MQTT broadcast tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttTarget {
    /// The trigger topic it subscribes to, when not `{prefix}/{archive}/trigger`.
    pub topic: Option<String>,
    /// How long a push waits for its final ack: its own, else the main file's `mqtt.ack_timeout`.
    pub ack_timeout: Duration,
    /// Its subscriber's public key: only acks signed with it (SSHSIG, `pushmirror-ack`) count,
    /// others are ignored. Required of every MQTT mirror by `mqtt.require_signed_acks`.
    pub ack_key: Option<PublicKey>,
}

/// What an MQTT mirror takes from the main file's `mqtt:`.
#[derive(Debug, Clone, Copy)]
pub(super) struct MqttDefaults {
    /// `mqtt.ack_timeout`.
    pub ack_timeout: Duration,
    /// `mqtt.require_signed_acks`.
    pub require_signed_acks: bool,
}

impl fmt::Display for MqttTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.topic {
            Some(topic) => write!(f, "mqtt {topic}"),
            None => f.write_str("mqtt broadcast"),
        }
    }
}

impl Transport {
    /// A display form that is safe to print: never a secret.
    pub fn display_target(&self) -> String {
        match self {
            Transport::Ssh(s) => s.to_string(),
            Transport::Http(h) => h.redacted(),
            Transport::Mqtt(m) => m.to_string(),
        }
    }
}

/// An SSH downstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Remote user whose authorized_keys holds our key.
    pub user: String,
    /// Pinned host key (`ssh-ed25519 AAAA…`); else known_hosts decides.
    pub host_key: Option<String>,
}

impl fmt::Display for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An IPv6 address with a port is bracketed, as OpenSSH writes it: `user@[::1]:2222`.
        match (self.port, self.host.contains(':')) {
            (super::defaults::SSH_PORT, _) => write!(f, "{}@{}", self.user, self.host),
            (port, true) => write!(f, "{}@[{}]:{port}", self.user, self.host),
            (port, false) => write!(f, "{}@{}:{port}", self.user, self.host),
        }
    }
}

/// `HOST`, `HOST:PORT`, `[V6]:PORT`, or a bare IPv6 address.
pub fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = match s.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']').ok_or("unclosed `[`")?;
            (host, after.strip_prefix(':'))
        }
        None if s.matches(':').count() == 1 => s.split_once(':').map(|(h, p)| (h, Some(p))).unwrap_or((s, None)),
        None => (s, None),
    };
    if host.is_empty() {
        return Err("no host".to_string());
    }
    match port.map(str::parse::<u16>) {
        None => Ok((host, None)),
        Some(Ok(p)) if p > 0 => Ok((host, Some(p))),
        Some(_) => Err(format!("`{}` is not a port number", port.unwrap_or_default())),
    }
}

/// An HTTP downstream. The URL and credentials are secrets.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// The full URL, possibly with a token in its path or query.
    pub url: Secret<Url>,
    /// GET or POST.
    pub method: HttpMethod,
    /// Basic-auth user and password.
    pub basic_auth: Option<(String, Secret<String>)>,
    /// Sent as `Authorization: Bearer …`.
    pub bearer_token: Option<Secret<String>>,
    /// Extra headers; values are templates.
    pub headers: Vec<(String, String)>,
    /// Signs each trigger (HMAC-SHA256 over timestamp and JSON body); implies POST.
    pub hmac_secret: Option<Secret<String>>,
    /// The secret files it was read from, by field (`http.token_file`): the service user must
    /// own them.
    pub secret_files: Vec<(String, PathBuf)>,
}

impl HttpTarget {
    /// `https://host[:port]/…`: enough to recognise, nothing to misuse.
    pub fn redacted(&self) -> String {
        redact_url(self.url.expose())
    }
}

/// The display form of a secret URL: scheme, host and port only.
pub fn redact_url(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(p) => format!("{}://{}:{}/…", url.scheme(), host, p),
        None => format!("{}://{}/…", url.scheme(), host),
    }
}

/// HTTP method of a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// GET.
    Get,
    /// POST.
    Post,
}

impl FromStr for HttpMethod {
    type Err = String;
    fn from_str(m: &str) -> Result<Self, String> {
        match m.to_ascii_uppercase().as_str() {
            "GET" => Ok(HttpMethod::Get),
            "POST" => Ok(HttpMethod::Post),
            _ => Err(format!("unsupported method `{m}`, expected GET or POST")),
        }
    }
}

/// The runmirrors mirror type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorKind {
    /// `sync:all` in one run.
    All,
    /// stage 1, then stage 2 once every staged mirror finished stage 1.
    Staged,
    /// Staged, and the downstream is itself a hub (`sync:mhop`).
    Mhop,
}

impl FromStr for MirrorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(MirrorKind::All),
            "staged" => Ok(MirrorKind::Staged),
            "mhop" => Ok(MirrorKind::Mhop),
            other => Err(format!("unknown type `{other}`, expected all, staged or mhop")),
        }
    }
}

impl fmt::Display for MirrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MirrorKind::All => "all",
            MirrorKind::Staged => "staged",
            MirrorKind::Mhop => "mhop",
        })
    }
}

/// Exponential backoff between attempts, with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Upper bound of the first delay.
    pub initial: Duration,
    /// Upper bound of any delay (also caps `Retry-After`).
    pub max: Duration,
}

/// Fields `defaults:` may hold (everything but identity and transport).
pub const DEFAULTS_FIELDS: &[&str] = &[
    "archives",
    "type",
    "rate_limit",
    "retries",
    "timeout",
    "backoff",
    "tags",
    "enabled",
    "wait_for_sync",
    "sync_timeout",
    "busy_exit",
    "command",
];

/// Fields only a mirror file may hold.
pub const OWN_FIELDS: &[&str] = &["name", "ssh", "http", "mqtt", "host_key", "check"];

/// Fields a mirror file shares with the main file and its archives, not with `defaults:` (the
/// main file's own value is the default).
pub const SENDER_FIELDS: &[&str] = &["identity", "next_identity", "source_address"];

/// Fields a mirror file may hold.
pub fn mirror_fields() -> Vec<&'static str> {
    OWN_FIELDS.iter().chain(SENDER_FIELDS).chain(DEFAULTS_FIELDS).copied().collect()
}

/// Mirror fields as read, before defaults are applied.
#[derive(Debug, Clone, Default)]
pub struct MirrorSettings {
    name: Option<String>,
    archives: Option<Vec<String>>,
    kind: Option<MirrorKind>,
    rate_limit: Option<RateLimit>,
    retries: Option<u32>,
    timeout: Option<Duration>,
    backoff_initial: Option<Duration>,
    backoff_max: Option<Duration>,
    tags: Option<Vec<String>>,
    enabled: Option<bool>,
    wait_for_sync: Option<bool>,
    sync_timeout: Option<Duration>,
    busy_exit: Option<i32>,
    command: Option<String>,
}

impl MirrorSettings {
    /// Reads the shared fields; with `archives` given, also checks archive names against it.
    pub fn read(f: &mut Fields<'_>, archives: Option<&BTreeMap<String, Archive>>) -> Self {
        let mut s = MirrorSettings {
            name: f.take("name"),
            archives: f.take("archives"),
            kind: f.take_from_str("type"),
            rate_limit: f.take_from_str("rate_limit"),
            retries: f.take("retries"),
            timeout: f.duration("timeout", max::TIMEOUT),
            tags: f.take("tags"),
            enabled: f.take("enabled"),
            wait_for_sync: f.take("wait_for_sync"),
            sync_timeout: f.duration("sync_timeout", max::SYNC_TIMEOUT),
            busy_exit: f.take("busy_exit"),
            command: f.take("command"),
            ..Default::default()
        };
        if let Some(mut b) = f.nested("backoff") {
            s.backoff_initial = b.duration("initial", max::BACKOFF);
            s.backoff_max = b.duration("max", max::BACKOFF);
            b.finish(&["initial", "max"]);
        }
        if let (Some(list), Some(known)) = (&s.archives, archives) {
            for a in list.iter().filter(|a| !known.contains_key(*a)) {
                let names: Vec<&str> = known.keys().map(String::as_str).collect();
                f.error("archives", format!("unknown archive `{a}` (configured: {})", names.join(", ")));
            }
        }
        s
    }
}

/// Reads every `*.yaml`/`*.yml` file in `dir` as a mirror, each with its own `identity:` and
/// `source_address:` (resolved later, with the archives' and the main file's).
pub(super) fn read_dir(
    dir: &Path,
    main: &Path,
    defaults: &MirrorSettings,
    archives: &BTreeMap<String, Archive>,
    local: &LocalAddresses,
    mqtt: Option<MqttDefaults>,
    sink: &Sink,
) -> (Vec<(Mirror, Level)>, Vec<Watched>) {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect(),
        Err(e) => {
            sink.borrow_mut().push(ConfigError::at(
                main,
                (1, 1),
                "mirrors_dir",
                format!("cannot read mirrors directory {}: {e}", dir.display()),
            ));
            return (Vec::new(), Vec::new());
        }
    };
    files.sort();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    let mut mirrors = Vec::new();
    let mut watched = Vec::new();
    for file in files {
        let text = match crate::sys::fsutil::read_bounded_text(&file, crate::sys::fsutil::limit::CONFIG_FILE) {
            Ok(t) => t,
            Err(e) => {
                sink.borrow_mut().push(ConfigError::at(&file, (1, 1), "", format!("cannot read: {e}")));
                continue;
            }
        };
        let Some(mut f) = Fields::parse_file(&file, &text, sink) else { continue };
        let level = Level::read(&mut f, local);
        let mqtt_defaults = mqtt.unwrap_or(MqttDefaults {
            ack_timeout: super::defaults::MQTT_ACK_TIMEOUT,
            require_signed_acks: super::defaults::MQTT_REQUIRE_SIGNED_ACKS,
        });
        let Some(described) = read_mirror(&mut f, defaults, archives, mqtt_defaults) else {
            f.finish(&mirror_fields());
            continue;
        };
        let (name, carries, check) = match &described {
            Described::Triggered(m) => (&m.name, &m.archives, m.check.is_some()),
            Described::CheckOnly(w) => (&w.name, &w.archives, true),
        };
        let carried: Vec<&str> = match carries {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => archives.keys().map(String::as_str).collect(),
        };
        if check && carried.len() > 1 {
            f.error(
                "check",
                format!(
                    "`check:` is the URL of one archive, and this mirror carries {}: name the one it checks in \
                     `archives: [NAME]` (a mirror file per archive for the others)",
                    carried.join(", ")
                ),
            );
        }
        if let Some(first) = seen.get(name) {
            f.error("name", format!("duplicate mirror name `{name}`, also defined in {}", first.display()));
        } else {
            seen.insert(name.clone(), file.clone());
        }
        match described {
            Described::Triggered(m) => {
                if level.identity.is_some() && matches!(m.transport, Transport::Http(_)) {
                    f.error("identity", "an HTTP mirror is triggered without an SSH key; remove `identity:`");
                }
                if level.next_identity.is_some() && !matches!(m.transport, Transport::Ssh(_)) {
                    f.error(
                        "next_identity",
                        "a key rotation is for SSH mirrors (MQTT triggers are signed with `identity:` alone)",
                    );
                }
                if matches!(m.transport, Transport::Mqtt(_)) && m.kind == MirrorKind::Mhop {
                    f.error("type", "`sync:mhop` has no place in an MQTT trigger: use `staged`");
                }
                if mqtt.is_none() && matches!(m.transport, Transport::Mqtt(_)) {
                    let main = main.display();
                    f.error(
                        "mqtt",
                        format!("an MQTT mirror needs the broadcast tier's broker: `mqtt: {{ broker: … }}` in {main}"),
                    );
                }
                mirrors.push((*m, level));
            }
            Described::CheckOnly(w) => {
                for key in SENDER_FIELDS {
                    if level_has(&level, key) {
                        f.error(
                            key,
                            "a check-only mirror (`check:` without `ssh:`, `http:` or `mqtt:`) is never triggered",
                        );
                    }
                }
                watched.push(w);
            }
        }
        f.finish(&mirror_fields());
    }
    mirrors.sort_by(|(a, _), (b, _)| a.name.cmp(&b.name));
    watched.sort_by(|a: &Watched, b: &Watched| a.name.cmp(&b.name));
    (mirrors, watched)
}

fn level_has(level: &Level, key: &str) -> bool {
    match key {
        "identity" => level.identity.is_some(),
        "next_identity" => level.next_identity.is_some(),
        _ => level.source_address.is_some(),
    }
}

/// `mqtt`: what an MQTT mirror takes from the main file.
fn read_mirror(
    f: &mut Fields<'_>,
    defaults: &MirrorSettings,
    archives: &BTreeMap<String, Archive>,
    mqtt: MqttDefaults,
) -> Option<Described> {
    let file = f.file().to_path_buf();
    let has_ssh = f.has("ssh");
    let has_http = f.has("http");
    let has_mqtt = f.has("mqtt");
    let check = f.take_parsed("check", parse_check_url);
    let host_key: Option<String> = f.take("host_key");
    let pinned = host_key.is_some();
    if let Some(Err(msg)) = host_key.as_deref().map(crate::wire::keys::parse_public_key) {
        f.error("host_key", msg);
    }
    let transport = match (has_ssh, has_http, has_mqtt) {
        (false, false, false) if check.is_some() => None,
        (false, false, false) => {
            f.error("", "a mirror needs `ssh:`, `http:` or `mqtt:` (or `check:` alone, for a mirror only watched)");
            None
        }
        (true, false, false) => f.nested("ssh").and_then(|s| read_ssh(s, host_key)).map(Transport::Ssh),
        (false, true, false) => f.nested("http").and_then(read_http).map(Transport::Http),
        (false, false, true) => read_mqtt(f, mqtt).map(Transport::Mqtt),
        (_, _, mqtt) => {
            f.error(if mqtt { "mqtt" } else { "http" }, "a mirror has one of `ssh:`, `http:` or `mqtt:`, not two");
            for key in ["ssh", "http", "mqtt"] {
                f.discard(key);
            }
            None
        }
    };
    let mine = MirrorSettings::read(f, Some(archives));
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
    let name = mine.name.clone().unwrap_or(stem);
    if !valid_name(&name) {
        f.error("name", format!("invalid mirror name `{name}`: use letters, digits, `.`, `_`, `-`"));
    }
    let d = defaults;
    let backoff = Backoff {
        initial: mine.backoff_initial.or(d.backoff_initial).unwrap_or(super::defaults::BACKOFF_INITIAL),
        max: mine.backoff_max.or(d.backoff_max).unwrap_or(super::defaults::BACKOFF_MAX),
    };
    if !has_ssh && !has_http && !has_mqtt {
        let triggering = [
            ("type", mine.kind.is_some()),
            ("rate_limit", mine.rate_limit.is_some()),
            ("retries", mine.retries.is_some()),
            ("timeout", mine.timeout.is_some()),
            ("backoff", mine.backoff_initial.is_some() || mine.backoff_max.is_some()),
            ("wait_for_sync", mine.wait_for_sync.is_some()),
            ("sync_timeout", mine.sync_timeout.is_some()),
            ("busy_exit", mine.busy_exit.is_some()),
            ("command", mine.command.is_some()),
            ("host_key", pinned),
        ];
        for (key, _) in triggering.iter().filter(|(_, set)| *set) {
            f.error(key, "a check-only mirror (`check:` without `ssh:`, `http:` or `mqtt:`) is never triggered");
        }
        return Some(Described::CheckOnly(Watched {
            name,
            file,
            check: check?,
            archives: mine.archives.or_else(|| d.archives.clone()),
            tags: mine.tags.or_else(|| d.tags.clone()).unwrap_or_default(),
            enabled: mine.enabled.or(d.enabled).unwrap_or(super::defaults::ENABLED),
        }));
    }
    Some(Described::Triggered(Box::new(Mirror {
        name,
        file,
        transport: transport?,
        archives: mine.archives.or_else(|| d.archives.clone()),
        kind: mine
            .kind
            .or(d.kind)
            .unwrap_or_else(|| super::defaults::MIRROR_TYPE.parse().expect("the default parses (tested)")),
        rate_limit: mine.rate_limit.or(d.rate_limit),
        retries: mine.retries.or(d.retries).unwrap_or(super::defaults::RETRIES),
        timeout: mine.timeout.or(d.timeout).unwrap_or(super::defaults::TIMEOUT),
        backoff,
        tags: mine.tags.or_else(|| d.tags.clone()).unwrap_or_default(),
        enabled: mine.enabled.or(d.enabled).unwrap_or(super::defaults::ENABLED),
        wait_for_sync: mine.wait_for_sync.or(d.wait_for_sync).unwrap_or(super::defaults::WAIT_FOR_SYNC),
        sync_timeout: mine.sync_timeout.or(d.sync_timeout).unwrap_or(super::defaults::SYNC_TIMEOUT),
        busy_exit: mine.busy_exit.or(d.busy_exit),
        command: mine.command.or_else(|| d.command.clone()),
        senders: BTreeMap::new(),
        check,
    })))
}

/// `check:`: the mirror's public base URL of the archive, http(s) with a host; a trailing `/` is
/// added so that trace paths join below it.
fn parse_check_url(raw: &str) -> Result<Url, String> {
    let mut url = Url::parse(raw.trim()).map_err(|e| format!("invalid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("the URL must be http:// or https:// with a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the base URL of the archive has no query or fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Trace files are public; a `check:` URL is shown and logged as it is, so it holds no secret.
        return Err("the public base URL of the archive holds no user or password".into());
    }
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

/// `mqtt: {}` (or `mqtt:` alone), or `mqtt: { topic: …, ack_timeout: …, ack_key: … }`; the main
/// file's `mqtt:` gives the default `ack_timeout` and may require `ack_key`.
fn read_mqtt(f: &mut Fields<'_>, main: MqttDefaults) -> Option<MqttTarget> {
    const NEEDS_ACK_KEY: &str = "missing `ack_key`: the main file sets `mqtt.require_signed_acks`, so this mirror \
                                 needs its subscriber's public key (`ssh-ed25519 AAAA…`, the .pub of the `identity:` \
                                 in its receive.yaml)";
    let before = f.errors_so_far();
    let Some(mut m) = f.nested("mqtt") else {
        if main.require_signed_acks {
            f.error("mqtt", NEEDS_ACK_KEY);
        }
        let target = MqttTarget { topic: None, ack_timeout: main.ack_timeout, ack_key: None };
        return (f.errors_so_far() == before).then_some(target);
    };
    let topic = m.take_parsed("topic", |s| match s.split('/').all(super::broker::valid_level) {
        true => Ok(s.to_string()),
        false => {
            Err(format!("invalid topic `{s}`: levels of letters, digits, `.`, `_`, `-` separated by `/`, no wildcards"))
        }
    });
    let ack_timeout = m.duration("ack_timeout", max::SYNC_TIMEOUT).unwrap_or(main.ack_timeout);
    let ack_key_written = m.has("ack_key");
    let ack_key = m.take_parsed("ack_key", crate::wire::keys::parse_public_key);
    if main.require_signed_acks && !ack_key_written {
        m.error("ack_key", NEEDS_ACK_KEY);
    }
    m.finish(&["topic", "ack_timeout", "ack_key"]);
    Some(MqttTarget { topic, ack_timeout, ack_key })
}

fn read_ssh(mut s: Fields<'_>, host_key: Option<String>) -> Option<SshTarget> {
    let host: Option<String> = s.take("host");
    let port: u16 = s.take("port").unwrap_or(super::defaults::SSH_PORT);
    let user: Option<String> = s.take("user");
    if host.is_none() {
        s.error("host", "missing: the downstream's host name");
    }
    if user.is_none() {
        s.error("user", "missing: the remote user whose authorized_keys holds our key");
    }
    s.finish(&["host", "port", "user"]);
    Some(SshTarget { host: host?, port, user: user?, host_key })
}

fn read_http(mut h: Fields<'_>) -> Option<HttpTarget> {
    let mut secret_files = Vec::new();
    let url = read_url(&mut h, &mut secret_files);
    let method = h.take_parsed("method", HttpMethod::from_str);
    let basic_auth = h.nested("basic_auth").and_then(|b| basic_auth(b, &mut secret_files));
    let mut secret = |h: &mut Fields<'_>, key: &str| {
        let (value, path) = secret_file(h, key)?;
        secret_files.push((format!("http.{key}"), path));
        Some(value)
    };
    let bearer_token = secret(&mut h, "token_file");
    let hmac_secret = secret(&mut h, "hmac_secret_file");
    let method = match (hmac_secret.is_some(), method) {
        (true, Some(HttpMethod::Get)) => {
            h.error("method", "signed triggers (hmac_secret_file) carry a JSON body: use POST");
            HttpMethod::Post
        }
        (true, _) => HttpMethod::Post,
        (false, m) => m.unwrap_or_else(|| super::defaults::HTTP_METHOD.parse().expect("the default parses (tested)")),
    };
    let headers: Vec<(String, String)> = h
        .take::<BTreeMap<String, String>>("headers")
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| {
            let ok = reqwest::header::HeaderName::from_str(k).is_ok();
            if !ok {
                h.error("headers", format!("invalid header name `{k}`"));
            }
            ok
        })
        .collect();
    h.finish(&["url", "url_file", "method", "basic_auth", "token_file", "hmac_secret_file", "headers"]);
    Some(HttpTarget { url: url?, method, basic_auth, bearer_token, headers, hmac_secret, secret_files })
}

fn read_url(h: &mut Fields<'_>, files: &mut Vec<(String, PathBuf)>) -> Option<Secret<Url>> {
    let (key, raw) = match (h.has("url"), h.has("url_file")) {
        (true, true) => {
            h.error("url", "set `url:` or `url_file:`, not both");
            return None;
        }
        (false, false) => {
            h.error("url_file", "missing: `url_file:` (or `url:`) naming the trigger URL");
            return None;
        }
        (true, false) => ("url", Secret::new(h.take::<String>("url")?)),
        (false, true) => {
            let (value, path) = secret_file(h, "url_file")?;
            files.push(("http.url_file".into(), path));
            ("url_file", value)
        }
    };
    match Url::parse(raw.expose().trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(Secret::new(u)),
        Ok(_) => {
            h.error(key, "the URL must be http:// or https:// with a host");
            None
        }
        // The parse error names the kind of mistake, never the URL itself.
        Err(e) => {
            h.error(key, format!("invalid URL: {e}"));
            None
        }
    }
}

/// Reads `basic_auth: { user: …, password_file: … }`, recording what is missing, and the
/// password's file in `files`.
pub(crate) fn basic_auth(mut b: Fields<'_>, files: &mut Vec<(String, PathBuf)>) -> Option<(String, Secret<String>)> {
    let user: Option<String> = b.take("user");
    if user.is_none() {
        b.error("user", "missing: the basic-auth user");
    }
    let errors_before = b.errors_so_far();
    let password = secret_file(&mut b, "password_file").map(|(value, path)| {
        files.push(("http.basic_auth.password_file".into(), path));
        value
    });
    // An unreadable file has been reported already; only an absent (or null) field is "missing".
    if password.is_none() && b.errors_so_far() == errors_before {
        b.error("password_file", "missing: a file holding the basic-auth password");
    }
    b.finish(&["user", "password_file"]);
    Some((user?, password?))
}

/// Resolves each mirror's sender for every configured archive it carries (mirror file, else
/// archive, else main file), and checks what SSH mirrors use: that some `identity:` applies to
/// each archive they carry, and that each key file loads — once per distinct file, the error at
/// the first place that names it.
pub(super) fn resolve_senders(
    main: &Level,
    archives: &BTreeMap<String, Level>,
    mirrors: &mut [(Mirror, Level)],
    main_file: &Path,
    sink: &Sink,
) {
    let mut keys: BTreeMap<PathBuf, Option<String>> = BTreeMap::new();
    for (mirror, own) in mirrors.iter_mut() {
        // SSH triggers authenticate with the key, MQTT triggers are signed with it.
        let needs_key = matches!(mirror.transport, Transport::Ssh(_) | Transport::Mqtt(_));
        let mut without_identity = Vec::new();
        let carried: Vec<(&String, &Level)> = archives.iter().filter(|(name, _)| mirror.serves(name)).collect();
        for (archive, level) in carried {
            let resolved = own.or(level).or(main);
            let mut sender = Sender { source_address: resolved.source_address.map(|s| s.value), ..Sender::default() };
            match (needs_key, resolved.identity) {
                (false, _) => {}
                (true, None) => without_identity.push(archive.as_str()),
                (true, Some(identity)) => {
                    let fingerprint = keys
                        .entry(identity.value.clone())
                        .or_insert_with(|| match key_fingerprint(&identity.value) {
                            Ok(fingerprint) => Some(fingerprint),
                            Err(msg) => {
                                sink.borrow_mut().push(identity.at.error(msg));
                                None
                            }
                        })
                        .clone();
                    sender.identity = Some(identity.value);
                    sender.fingerprint = fingerprint;
                }
            }
            // Only SSH triggers authenticate, so only they rotate.
            if let (Transport::Ssh(_), Some(next)) = (&mirror.transport, resolved.next_identity) {
                let fingerprint = keys
                    .entry(next.value.clone())
                    .or_insert_with(|| match key_fingerprint(&next.value) {
                        Ok(fingerprint) => Some(fingerprint),
                        Err(msg) => {
                            sink.borrow_mut().push(next.at.error(msg));
                            None
                        }
                    })
                    .clone();
                if fingerprint.is_some() && fingerprint == sender.fingerprint {
                    sink.borrow_mut().push(next.at.error(format!(
                        "is the same key as `identity:` ({}): the next key is a new one, made with \
                         `pushmirror keygen --next`",
                        fingerprint.clone().unwrap_or_default()
                    )));
                } else {
                    sender.next_identity = Some(next.value);
                    sender.next_fingerprint = fingerprint;
                }
            }
            mirror.senders.insert(archive.clone(), sender);
        }
        if !without_identity.is_empty() {
            sink.borrow_mut().push(ConfigError::at(
                &mirror.file,
                (1, 1),
                mirror.transport_name(),
                format!(
                    "mirror {} uses {} but no `identity:` key applies to archive {}: set one in {}, under \
                     `archives.NAME.identity` there, or in this file",
                    mirror.name,
                    match mirror.transport {
                        Transport::Mqtt(_) => "MQTT (its triggers are signed with the key)",
                        _ => "SSH",
                    },
                    without_identity.join(", "),
                    main_file.display()
                ),
            ));
        }
    }
}

/// MQTT mirrors that share a trigger topic get every trigger published on it: they must share
/// their `type:` (else an `all` mirror would also run the staged ones' stage 1 and 2), the key
/// the triggers are signed with (one retained trigger per topic) and their `rate_limit:` (a
/// trigger one mirror's limit deferred is published later for it, and every other subscriber
/// would run it again; with one limit they are deferred and sent together, one publication).
/// Reported at each mirror that differs from the first on its topic.
pub(super) fn check_shared_topics(mirrors: &[(Mirror, Level)], prefix: &str, sink: &Sink) {
    let mut first: HashMap<String, &Mirror> = HashMap::new();
    for (m, _) in mirrors {
        let Transport::Mqtt(target) = &m.transport else { continue };
        for (archive, sender) in &m.senders {
            let topic = target.topic.clone().unwrap_or_else(|| format!("{prefix}/{archive}/trigger"));
            let Some(other) = first.get(&topic) else {
                first.insert(topic, m);
                continue;
            };
            let (field, what) = match () {
                _ if other.kind != m.kind => ("type", format!("`type: {}`", other.kind)),
                _ if other.sender(archive).identity != sender.identity => ("identity", "the key".to_string()),
                _ if other.rate_limit != m.rate_limit => (
                    "rate_limit",
                    other.rate_limit.map_or("no `rate_limit`".to_string(), |r| format!("`rate_limit: {r}`")),
                ),
                _ => continue,
            };
            sink.borrow_mut().push(ConfigError::at(
                &m.file,
                (1, 1),
                field,
                format!(
                    "MQTT mirrors on one trigger topic ({topic}) get every trigger on it: this one needs {what} of {}, \
                     or `mqtt: {{ topic: … }}` of its own",
                    other.name
                ),
            ));
        }
    }
}

/// The `SHA256:…` fingerprint of the sender's key at `path`, or how to fix the file.
fn key_fingerprint(path: &Path) -> Result<String, String> {
    match crate::wire::keys::load_identity(path) {
        Ok(key) => Ok(crate::wire::keys::fingerprint(key.public_key())),
        Err(e @ crate::wire::keys::KeyError::Unreadable { missing: true, .. }) => {
            Err(format!("{e}; create one with `pushmirror keygen`"))
        }
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
impl Mirror {
    /// An enabled HTTP mirror of every archive with 3 retries and a 60 s timeout, for tests.
    pub(crate) fn example(name: &str) -> Mirror {
        Mirror {
            name: name.into(),
            file: format!("{name}.yaml").into(),
            transport: Transport::Http(HttpTarget {
                secret_files: Vec::new(),
                url: Secret::new("http://127.0.0.1:9/".parse().unwrap()),
                method: HttpMethod::Get,
                basic_auth: None,
                bearer_token: None,
                headers: vec![],
                hmac_secret: None,
            }),
            archives: None,
            kind: MirrorKind::All,
            rate_limit: None,
            retries: 3,
            timeout: Duration::from_secs(60),
            backoff: Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(4) },
            tags: vec![],
            enabled: true,
            wait_for_sync: false,
            sync_timeout: Duration::from_secs(3600),
            busy_exit: None,
            command: None,
            senders: BTreeMap::new(),
            check: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_ssh_target_with_a_port_is_bracketed() {
        let target = |host: &str, port| SshTarget { host: host.into(), port, user: "pmtest".into(), host_key: None };
        assert_eq!(target("::1", 42217).to_string(), "pmtest@[::1]:42217");
        assert_eq!(target("::1", 22).to_string(), "pmtest@::1");
        assert_eq!(target("mirror.example.net", 2222).to_string(), "pmtest@mirror.example.net:2222");
    }
}
