//! Loading and validating configuration: the main YAML file plus one file per mirror.
//!
//! [`load`] reads everything, checks everything, and returns either a complete [`Config`] or every
//! error found ([`ConfigErrors`]); a config is never half-applied.

pub mod broker;
pub mod defaults;
mod error;
pub(crate) mod fields;
mod mirror;
pub mod notify;
mod sender;
mod yaml;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use broker::Broker;
pub use error::{ConfigError, ConfigErrors};
pub use fields::resolve;
pub use mirror::{
    Backoff, HttpMethod, HttpTarget, Mirror, MirrorKind, MqttTarget, SshTarget, Transport, Watched, mirror_fields,
    redact_url, split_host_port,
};
pub use sender::{Sender, parse_source_address};

pub(crate) use fields::secret_field;
pub(crate) use mirror::basic_auth;

use crate::sys::fsutil::{limit, read_bounded_text};
use crate::vocab::units::max;
use fields::{Fields, Sink};
use mirror::MirrorSettings;
use sender::{Level, LocalAddresses};

/// Where `push` and friends look when `-c` and `$PUSHMIRROR_CONFIG` are absent.
pub const DEFAULT_CONFIG: &str = "/etc/pushmirror/pushmirror.yaml";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main file it was loaded from.
    pub path: PathBuf,
    /// The sender's private key: the default of archives and mirrors that name none.
    pub identity: Option<PathBuf>,
    /// The key replacing it during a rotation (`next_identity:`), with it.
    pub next_identity: Option<PathBuf>,
    /// The local address triggers are sent from: the default of archives and mirrors that name
    /// none. Without one the routing table picks.
    pub source_address: Option<IpAddr>,
    /// pushmirror's own known_hosts file.
    pub known_hosts: PathBuf,
    /// What to do with a host key not yet known.
    pub host_key_policy: HostKeyPolicy,
    /// The directory of mirror files.
    pub mirrors_dir: PathBuf,
    /// Reports, rate-limit state and pending pushes live here.
    pub state_dir: PathBuf,
    /// Triggers in flight at once, all mirrors together.
    pub concurrency: usize,
    /// Triggers in flight at once to one host and port (`max_per_host`).
    pub max_per_host: usize,
    /// Archives by name.
    pub archives: BTreeMap<String, Archive>,
    /// Status server and report history.
    pub status: StatusConfig,
    /// How often the daemon surveys every mirror with a `check:` URL (`freshness.interval`).
    pub freshness_interval: Duration,
    /// Every mirror that is triggered, sorted by name.
    pub mirrors: Vec<Arc<Mirror>>,
    /// Check-only mirrors (`check:` without `ssh:`/`http:`), sorted by name: watched, never
    /// triggered.
    pub watched: Vec<Watched>,
    /// The broadcast tier's broker (`mqtt:`), when MQTT mirrors are registered.
    pub mqtt: Option<MqttSettings>,
    /// Where notifications go (`notify:`); an archive's own replaces it for its events.
    pub notify: Option<notify::Notify>,
    /// Commands around a push (`hooks:`); an archive's own replace them for its pushes.
    pub hooks: notify::Hooks,
    /// Where fields that [`verify_files`] checks were written (`state_dir`, `known_hosts`,
    /// `archives.NAME.trace`), for its errors.
    positions: BTreeMap<String, (usize, usize)>,
}

/// Host keys that are not yet in known_hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Refuse them.
    Strict,
    /// Record them on first use; a changed key is still refused.
    AcceptNew,
}

impl std::str::FromStr for HostKeyPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" => Ok(HostKeyPolicy::Strict),
            "accept-new" => Ok(HostKeyPolicy::AcceptNew),
            other => Err(format!("unknown policy `{other}`, expected strict or accept-new")),
        }
    }
}

/// One archive on this host.
#[derive(Debug, Clone)]
pub struct Archive {
    /// Its name, as sent in `sync:archive:NAME`.
    pub name: String,
    /// Its root directory.
    pub root: PathBuf,
    /// The trace file, relative to `root`, whose serial is the archive's version.
    pub trace: PathBuf,
    /// Globs under `root`; any match means an update is in progress.
    pub locks: Vec<String>,
    /// How long a new version must be stable and unlocked before it is pushed.
    pub settle: Duration,
    /// Fallback poll interval for file systems without inotify.
    pub poll: Duration,
    /// How old the version a mirror serves may be before `freshness` counts it as behind.
    pub max_lag: Duration,
    /// How long `push --follow` watches a mirror for the pushed version.
    pub propagation_timeout: Duration,
    /// The key its triggers are sent with: its own `identity:`, else the main file's. A mirror
    /// file's own `identity:` overrides it for that mirror.
    pub identity: Option<PathBuf>,
    /// The key replacing `identity` during a rotation, resolved with it.
    pub next_identity: Option<PathBuf>,
    /// The address its triggers leave from: its own `source_address:`, else the main file's. A
    /// mirror file's own overrides it for that mirror.
    pub source_address: Option<IpAddr>,
    /// The forced command downstreams bind its key to in `authorized_keys`, as `keys` and
    /// `keygen --archive` print it; `None` means ftpsync's ([`crate::wire::keys::FTPSYNC_FORCED_COMMAND`]).
    pub forced_command: Option<String>,
    /// Its own `notify:`, replacing the main file's for this archive's events.
    pub notify: Option<notify::Notify>,
    /// Its own `hooks:`, replacing the main file's for its pushes.
    pub hooks: Option<notify::Hooks>,
}

/// The sender's side of the MQTT broadcast tier (the main file's `mqtt:`).
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Where the broker is and how we log in.
    pub broker: Broker,
    /// MQTT 5 message expiry of a trigger: the broker drops it (also the retained copy) after this.
    pub expiry: Duration,
    /// How long a push waits for a mirror's final ack, unless its file says otherwise (applied to
    /// each MQTT mirror's `ack_timeout` at load).
    pub ack_timeout: Duration,
    /// Every MQTT mirror must name its subscriber's `ack_key` (checked at load), so that only acks
    /// signed with that key count.
    pub require_signed_acks: bool,
}

/// The daemon's status server and report history.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// Listen address of `/status`, `/metrics` and `/`.
    pub listen: SocketAddr,
    /// Reports kept in `state_dir/reports`.
    pub history: usize,
    /// The page's address as people reach it (a proxy in front): notifications link to it.
    pub public_url: Option<reqwest::Url>,
}

impl Config {
    /// Where notifications about `archive` go: its own `notify:`, else the main file's.
    pub fn notify_for(&self, archive: &str) -> Option<&notify::Notify> {
        self.archives.get(archive).and_then(|a| a.notify.as_ref()).or(self.notify.as_ref())
    }

    /// The hooks of `archive`'s pushes: its own `hooks:`, else the main file's.
    pub fn hooks_for(&self, archive: &str) -> &notify::Hooks {
        self.archives.get(archive).and_then(|a| a.hooks.as_ref()).unwrap_or(&self.hooks)
    }

    /// The mirrors that serve `archive`.
    pub fn mirrors_of<'a>(&'a self, archive: &'a str) -> impl Iterator<Item = &'a Arc<Mirror>> + 'a {
        self.mirrors.iter().filter(move |m| m.serves(archive))
    }

    /// Archives no mirror carries (triggered or check-only): pushing them does nothing, which is
    /// worth a warning (a mirror file's `archives:` typo, an empty `mirrors.d`).
    pub fn archives_without_mirrors(&self) -> Vec<&str> {
        let carried = |a: &str| self.mirrors_of(a).next().is_some() || self.watched.iter().any(|w| w.serves(a));
        self.archives.keys().map(String::as_str).filter(|a| !carried(a)).collect()
    }

    /// Hooks whose program is not there (or not executable) for this process: `hooks.FIELD` or
    /// `archives.NAME.hooks.FIELD`, and why. A missing `before_push` skips every push.
    pub fn hooks_not_runnable(&self) -> Vec<(String, String)> {
        let sets = std::iter::once((String::new(), &self.hooks))
            .chain(self.archives.iter().filter_map(|(n, a)| a.hooks.as_ref().map(|h| (format!("archives.{n}."), h))));
        let mut out = Vec::new();
        for (prefix, hooks) in sets {
            for (field, argv) in hooks.named() {
                if let Err(why) = notify::runnable(&argv[0]) {
                    out.push((format!("{prefix}hooks.{field}"), why));
                }
            }
        }
        out
    }
}

/// Loads and validates the configuration rooted at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let sink = Sink::default();
    let text = match read_bounded_text(path, limit::CONFIG_FILE) {
        Ok(t) => t,
        Err(e) => {
            return Err(ConfigErrors(vec![ConfigError::at(path, (1, 1), "", unreadable_config(path, &e))]));
        }
    };
    let config = Fields::parse_file(path, &text, &sink).and_then(|f| read_main(f, &sink));
    let errors = sink.into_inner();
    match config {
        Some(c) if errors.is_empty() => Ok(c),
        _ => Err(ConfigErrors::sorted(errors)),
    }
}

/// Why the main file cannot be read; when it is the default one and missing, how to name another.
fn unreadable_config(path: &Path, e: &std::io::Error) -> String {
    let why = crate::sys::owner::unreadable_reason(path, e);
    if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(DEFAULT_CONFIG) {
        format!(
            "cannot read config file: {} {why}. Name one with `-c FILE` or `PUSHMIRROR_CONFIG=FILE`, \
             or try `pushmirror demo`, which needs none",
            path.display()
        )
    } else {
        format!("cannot read config file: {why}")
    }
}

/// The fields of the main file.
pub const MAIN_FIELDS: &[&str] = &[
    "identity",
    "next_identity",
    "source_address",
    "known_hosts",
    "host_key_policy",
    "mirrors_dir",
    "state_dir",
    "concurrency",
    "max_per_host",
    "defaults",
    "archives",
    "status",
    "freshness",
    "mqtt",
    "notify",
    "hooks",
];

fn read_main(mut f: Fields<'_>, sink: &Sink) -> Option<Config> {
    let path = f.file().to_path_buf();
    let local = LocalAddresses::default();
    let main_level = Level::read(&mut f, &local);
    let known_hosts = f.path("known_hosts").unwrap_or_else(|| resolve(&path, defaults::KNOWN_HOSTS));
    let host_key_policy = f
        .take_parsed("host_key_policy", str::parse::<HostKeyPolicy>)
        .unwrap_or_else(|| defaults::HOST_KEY_POLICY.parse().expect("the default parses (tested)"));
    let mut positions = BTreeMap::new();
    for key in ["state_dir", "known_hosts", "identity", "next_identity"] {
        positions.insert(key.to_string(), f.position(key));
    }
    let mirrors_dir = f.path("mirrors_dir").unwrap_or_else(|| resolve(&path, defaults::MIRRORS_DIR));
    let state_dir = f.path("state_dir").unwrap_or_else(|| PathBuf::from(defaults::STATE_DIR));
    let concurrency = match f.take::<usize>("concurrency") {
        Some(0) => {
            f.error("concurrency", "must be at least 1");
            1
        }
        Some(n) => n,
        None => defaults::CONCURRENCY,
    };
    let max_per_host = match f.take::<usize>("max_per_host") {
        Some(0) => {
            f.error("max_per_host", "must be at least 1");
            1
        }
        Some(n) => n,
        None => defaults::MAX_PER_HOST,
    };
    let defaults = match f.nested("defaults") {
        Some(mut d) => {
            let s = MirrorSettings::read(&mut d, None);
            for key in mirror::OWN_FIELDS {
                if d.has(key) {
                    d.error(key, "is per mirror and cannot be set in defaults");
                    d.discard(key);
                }
            }
            for key in mirror::SENDER_FIELDS {
                if d.has(key) {
                    d.error(
                        key,
                        format!("the main file's own `{key}:` is the default: set it there, per archive or per mirror"),
                    );
                    d.discard(key);
                }
            }
            d.finish(mirror::DEFAULTS_FIELDS);
            s
        }
        None => MirrorSettings::default(),
    };
    let (archives, archive_levels) = read_archives(&mut f, &mut positions, &main_level, &local);
    let status = read_status(&mut f);
    let freshness_interval = match f.nested("freshness") {
        Some(mut fr) => {
            let interval = fr.duration("interval", max::POLL);
            if interval.is_some_and(|i| i < Duration::from_secs(60)) {
                // Three GETs per mirror per sweep, to the whole network: not more than once a minute.
                fr.error("interval", "must be at least 1m");
            }
            fr.finish(&["interval"]);
            interval
        }
        None => None,
    }
    .unwrap_or(defaults::FRESHNESS_INTERVAL);
    // A broken `mqtt:` is reported where it is, not again at every MQTT mirror.
    let mqtt_written = f.has("mqtt");
    let mqtt = f.nested("mqtt").and_then(read_mqtt);
    let mqtt_defaults = mqtt_written.then(|| {
        mqtt.as_ref().map_or(
            mirror::MqttDefaults {
                ack_timeout: defaults::MQTT_ACK_TIMEOUT,
                require_signed_acks: defaults::MQTT_REQUIRE_SIGNED_ACKS,
            },
            |m| mirror::MqttDefaults { ack_timeout: m.ack_timeout, require_signed_acks: m.require_signed_acks },
        )
    });
    let notify = f.nested("notify").and_then(notify::read_notify);
    let hooks = f.nested("hooks").map(notify::read_hooks).unwrap_or_default();
    f.finish(MAIN_FIELDS);

    let (mut mirrors, watched) =
        mirror::read_dir(&mirrors_dir, &path, &defaults, &archives, &local, mqtt_defaults, sink);
    // Only SSH and MQTT need keys, so an HTTP-only setup may name one that does not exist yet.
    mirror::resolve_senders(&main_level, &archive_levels, &mut mirrors, &path, sink);
    if let Some(m) = &mqtt {
        mirror::check_shared_topics(&mirrors, &m.broker.topic_prefix, sink);
    }
    Some(Config {
        path,
        identity: main_level.identity.map(|s| s.value),
        next_identity: main_level.next_identity.map(|s| s.value),
        source_address: main_level.source_address.map(|s| s.value),
        known_hosts,
        host_key_policy,
        mirrors_dir,
        state_dir,
        concurrency,
        max_per_host,
        archives,
        status,
        freshness_interval,
        mirrors: mirrors.into_iter().map(|(m, _)| Arc::new(m)).collect(),
        watched,
        mqtt,
        notify,
        hooks,
        positions,
    })
}

/// The main file's `mqtt:`: the broker, then `expiry`, `ack_timeout` and `require_signed_acks`.
fn read_mqtt(mut m: Fields<'_>) -> Option<MqttSettings> {
    let broker = broker::read(&mut m, || broker::default_client_id("pushmirror"));
    let expiry = m.duration("expiry", max::SYNC_TIMEOUT).unwrap_or(defaults::MQTT_EXPIRY);
    let ack_timeout = m.duration("ack_timeout", max::SYNC_TIMEOUT).unwrap_or(defaults::MQTT_ACK_TIMEOUT);
    let require_signed_acks = m.take("require_signed_acks").unwrap_or(defaults::MQTT_REQUIRE_SIGNED_ACKS);
    m.finish(&[broker::BROKER_FIELDS, &["expiry", "ack_timeout", "require_signed_acks"]].concat());
    Some(MqttSettings { broker: broker?, expiry, ack_timeout, require_signed_acks })
}

/// [`load`], then the ownership rule ([`crate::sys::owner`]: this process must run as the owner of
/// `state_dir`), then [`verify_files`]: the configuration of a command that writes state.
pub fn load_for_writing(path: &Path) -> Result<Config, ConfigErrors> {
    let config = load(path)?;
    if let Err(refused) = crate::sys::owner::require_owner(&config.state_dir, path) {
        return Err(ConfigErrors(vec![config.error_at("state_dir", refused.to_string())]));
    }
    verify_files(&config)?;
    Ok(config)
}

/// [`load_for_writing`] for the daemon's start and reloads, warning about every archive root that
/// is not an existing directory: a typo would leave it watching nothing, so it is said in the log,
/// but not refused — a root on a file system mounted after the daemon starts (NFS) appears later
/// and is then watched. `check` refuses it.
pub fn load_for_daemon(path: &Path) -> Result<Config, ConfigErrors> {
    let config = load_for_writing(path)?;
    for error in archive_roots(&config) {
        tracing::warn!("{error}; watching for it to appear");
    }
    Ok(config)
}

/// What `check` verifies: [`verify_files`], archive roots that are existing directories, and that
/// the files the service user must read or write belong to it ([`audit_ownership`]) — whoever
/// runs `check`. Errors in file, line, column order.
pub fn load_for_check(path: &Path) -> Result<Config, ConfigErrors> {
    let config = load(path)?;
    let mut errors = verify_files(&config).err().map(|e| e.0).unwrap_or_default();
    errors.extend(archive_roots(&config));
    errors.extend(audit_ownership(&config));
    if errors.is_empty() { Ok(config) } else { Err(ConfigErrors::sorted(errors)) }
}

impl Config {
    /// An error about one of the main file's fields that [`verify_files`] checks.
    fn error_at(&self, field: &str, message: String) -> ConfigError {
        let at = self.positions.get(field).copied().unwrap_or((1, 1));
        ConfigError::at(&self.path, at, field, message)
    }
}

/// The ownership rule, checked: every key the configuration names, pushmirror's `known_hosts` and
/// everything in `state_dir` (two levels deep) must belong to the owner of `state_dir`, the user
/// the daemon runs as. Files root left behind are named with the `chown` that fixes them.
fn audit_ownership(config: &Config) -> Vec<ConfigError> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(state) = config.state_dir.metadata() else { return Vec::new() };
    let (uid, gid) = (state.uid(), state.gid());
    if uid == 0 {
        return Vec::new();
    }
    let owner = crate::sys::owner::user_name(uid);
    let chown = format!("{}:{}", crate::sys::owner::chown_user(uid), crate::sys::owner::group_name(gid));
    let mut errors = Vec::new();
    // (file, position, field, path): where each file the service user must read is named.
    let main = |field: &str, path: &PathBuf| {
        let at = config.positions.get(field).copied().unwrap_or((1, 1));
        (config.path.clone(), at, field.to_string(), path.clone())
    };
    let mut named = Vec::new();
    named.extend(config.identity.iter().map(|p| main("identity", p)));
    named.extend(config.next_identity.iter().map(|p| main("next_identity", p)));
    for archive in config.archives.values() {
        named.extend(archive.identity.iter().map(|p| main(&format!("archives.{}.identity", archive.name), p)));
        named
            .extend(archive.next_identity.iter().map(|p| main(&format!("archives.{}.next_identity", archive.name), p)));
    }
    for mirror in &config.mirrors {
        for sender in mirror.senders.values() {
            let keys = [("identity", &sender.identity), ("next_identity", &sender.next_identity)];
            for (field, path) in keys.into_iter().filter_map(|(f, p)| p.as_ref().map(|p| (f, p))) {
                named.push((mirror.file.clone(), (1, 1), field.to_string(), path.clone()));
            }
        }
    }
    named.push(main("known_hosts", &config.known_hosts));
    // Secrets too: they are private (0600), so the service user must own them to read them; a
    // root-owned one passes `check` as root and stops the daemon at its start.
    for mirror in &config.mirrors {
        if let Transport::Http(http) = &mirror.transport {
            named.extend(
                http.secret_files
                    .iter()
                    .map(|(field, path)| (mirror.file.clone(), (1, 1), field.clone(), path.clone())),
            );
        }
    }
    let notifies = config
        .notify
        .iter()
        .map(|n| ("notify", n))
        .chain(config.archives.values().filter_map(|a| a.notify.as_ref().map(|n| ("archives.NAME.notify", n))));
    for (at, notify) in notifies {
        for hook in &notify.webhooks {
            named.push(main(&format!("{at}.webhooks.url_file"), &hook.url_file));
        }
    }
    if let Some(file) = config.mqtt.as_ref().and_then(|m| m.broker.password_file.as_ref()) {
        named.push(main("mqtt.password_file", file));
    }
    if let Some(file) = config.mqtt.as_ref().and_then(|m| m.broker.client_key.as_ref()) {
        named.push(main("mqtt.client_key", file));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (file, at, field, path) in named {
        if !seen.insert(path.clone()) {
            continue;
        }
        if let Ok(meta) = path.metadata()
            && meta.uid() != uid
        {
            let message = format!(
                "{} is owned by {}, but the service user {owner} (the owner of state_dir) must read it: \
                 chown {chown} {}",
                path.display(),
                crate::sys::owner::user_name(meta.uid()),
                path.display()
            );
            errors.push(ConfigError::at(&file, at, &field, message));
        }
    }
    let foreign = foreign_entries(&config.state_dir, uid);
    if let Some(first) = foreign.first() {
        errors.push(config.error_at(
            "state_dir",
            format!(
                "{} entr{} in {} not owned by {owner}, who must update them (first: {}, owned by {}): \
                 chown -R {chown} {}",
                foreign.len(),
                if foreign.len() == 1 { "y is" } else { "ies are" },
                config.state_dir.display(),
                first.0.display(),
                crate::sys::owner::user_name(first.1),
                config.state_dir.display()
            ),
        ));
    }
    errors
}

/// Entries of `dir` and of its subdirectories (two levels, at most 100,000 looked at) whose owner
/// is not `uid`.
fn foreign_entries(dir: &Path, uid: u32) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = Vec::new();
    let mut budget = 100_000usize;
    let mut level = vec![dir.to_path_buf()];
    for _depth in 0..2 {
        let mut next = Vec::new();
        for d in level {
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            for entry in entries.flatten() {
                budget = match budget.checked_sub(1) {
                    Some(b) => b,
                    None => return out,
                };
                let Ok(meta) = entry.path().symlink_metadata() else { continue };
                if meta.uid() != uid {
                    out.push((entry.path(), meta.uid()));
                }
                if meta.is_dir() {
                    next.push(entry.path());
                }
            }
        }
        level = next;
    }
    out.sort();
    out
}

/// What the commands that write state need on disk, beyond a valid file: `state_dir` a writable
/// directory (created if missing), pushmirror's `known_hosts` a regular file within its bound when
/// SSH mirrors use it, and each archive's trace file, where present, a regular file within its
/// bound. `check`, `push`, `runmirrors` and `daemon` call it; readers (`status`, `list`) do not,
/// so a monitoring user that cannot write `state_dir` can still read it.
pub fn verify_files(config: &Config) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    let mut error = |field: &str, message: String| errors.push(config.error_at(field, message));
    if let Err(why) = writable_dir(&config.state_dir) {
        error("state_dir", format!("{}: {why}", config.state_dir.display()));
    }
    let uses_ssh = config.mirrors.iter().any(|m| matches!(m.transport, Transport::Ssh(_)));
    if uses_ssh
        && config.known_hosts.exists()
        && let Err(e) = read_bounded_text(&config.known_hosts, limit::KNOWN_HOSTS)
    {
        let why = crate::sys::owner::unreadable_reason(&config.known_hosts, &e);
        error("known_hosts", format!("cannot read {}: {why}", config.known_hosts.display()));
    }
    for archive in config.archives.values() {
        let trace = archive.root.join(&archive.trace);
        if trace.symlink_metadata().is_ok()
            && let Err(e) = crate::sys::fsutil::read_bounded(&trace, limit::TRACE)
        {
            let why = crate::sys::owner::unreadable_reason(&trace, &e);
            error(&format!("archives.{}.trace", archive.name), format!("cannot read {}: {why}", trace.display()));
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
}

/// An error for each archive whose root is not an existing directory.
fn archive_roots(config: &Config) -> Vec<ConfigError> {
    let roots = config.archives.values();
    roots
        .filter_map(|a| not_a_directory(&a.root).map(|why| config.error_at(&format!("archives.{}.root", a.name), why)))
        .collect()
}

/// Why an archive's root is unusable: it must be an existing directory (the daemon would
/// otherwise watch nothing and log `version="none"` forever).
fn not_a_directory(root: &Path) -> Option<String> {
    match root.metadata() {
        Ok(meta) if meta.is_dir() => None,
        Ok(_) => Some(format!("{} exists but is not a directory", root.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some(format!("{} does not exist: the archive's root directory (a typo in `root:`?)", root.display()))
        }
        Err(e) => Some(format!("cannot read {}: {}", root.display(), crate::sys::owner::unreadable_reason(root, &e))),
    }
}

/// Whether `dir` is a directory this process can create files in, or, when missing, can be
/// created: the honest test is to create (and remove) a file in it, or in its nearest existing
/// ancestor. Nothing is left behind.
fn writable_dir(dir: &Path) -> Result<(), String> {
    let existing = dir.ancestors().find(|a| a.symlink_metadata().is_ok()).unwrap_or(Path::new("/"));
    if !existing.is_dir() {
        return match existing == dir {
            true => Err("exists but is not a directory".into()),
            false => Err(format!("cannot be created: {} is not a directory", existing.display())),
        };
    }
    let probe = tempfile::Builder::new().prefix(".pushmirror-check").tempfile_in(existing);
    match (probe, existing == dir) {
        (Ok(_), _) => Ok(()),
        (Err(e), true) => Err(format!("is not writable by this user: {e}")),
        (Err(e), false) => Err(format!("cannot be created in {}: {e}", existing.display())),
    }
}

/// The `identity:` path of the main file at `path`, read without validating anything else, so
/// that `keygen` can create the key a configuration names before that configuration is valid.
pub fn identity_path(path: &Path) -> Option<PathBuf> {
    key_path(path, "identity")
}

/// The main file's `field` (`identity` or `next_identity`), read like [`identity_path`].
pub fn key_path(path: &Path, field: &str) -> Option<PathBuf> {
    let top = raw_mapping(path).ok()?;
    string_values(&top).remove(field).map(|raw| resolve(path, &raw))
}

/// The `state_dir:` of the main file at `path` (its default when unset), read like
/// [`identity_path`]; `None` when the file cannot be read.
pub fn state_dir_path(path: &Path) -> Option<PathBuf> {
    let top = raw_mapping(path).ok()?;
    let raw = string_values(&top).remove("state_dir");
    Some(raw.map(|raw| resolve(path, &raw)).unwrap_or_else(|| PathBuf::from(defaults::STATE_DIR)))
}

/// What `keygen --archive NAME` needs of the main file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveKeySettings {
    /// The archive's `identity:`, else the main file's.
    pub identity: Option<PathBuf>,
    /// The `next_identity:` that goes with that `identity:`.
    pub next_identity: Option<PathBuf>,
    /// The archive's `source_address:`, else the main file's.
    pub source_address: Option<IpAddr>,
    /// The archive's `forced_command:`.
    pub forced_command: Option<String>,
}

/// The key settings of `archive` in the main file at `path`, read like [`identity_path`] without
/// validating anything else (only a source address that is not an IP literal is refused: it
/// would make a `from=` sshd cannot match).
pub fn archive_key_settings(path: &Path, archive: &str) -> Result<ArchiveKeySettings, String> {
    let top = raw_mapping(path)?;
    let mut main = string_values(&top);
    let archives = top.into_iter().find_map(|(key, value)| match key.value {
        yaml::Value::Str(key) if key == "archives" => Some(mapping(value)),
        _ => None,
    });
    let own = archives.unwrap_or_default().into_iter().find_map(|(key, value)| match key.value {
        yaml::Value::Str(key) if key == archive => Some(mapping(value)),
        _ => None,
    });
    let mut own = string_values(&own.ok_or_else(|| format!("archive `{archive}` is not in {}", path.display()))?);
    // A key and its successor come from the same place.
    let keys = if own.contains_key("identity") { &mut own } else { &mut main };
    let identity = keys.remove("identity").map(|raw| resolve(path, &raw));
    let next_identity = keys.remove("next_identity").map(|raw| resolve(path, &raw));
    let source_address = own
        .remove("source_address")
        .or_else(|| main.remove("source_address"))
        .map(|raw| parse_source_address(&raw))
        .transpose()?;
    Ok(ArchiveKeySettings { identity, next_identity, source_address, forced_command: own.remove("forced_command") })
}

/// The top-level mapping of the file at `path`, parsed but not validated.
fn raw_mapping(path: &Path) -> Result<Vec<(yaml::Node, yaml::Node)>, String> {
    let text =
        read_bounded_text(path, limit::CONFIG_FILE).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let node = yaml::parse(&text)
        .map_err(|_| format!("{} is not a YAML document: `pushmirror check` says where", path.display()))?;
    Ok(mapping(node))
}

/// A node's entries when it is a mapping, else none.
fn mapping(node: yaml::Node) -> Vec<(yaml::Node, yaml::Node)> {
    match node.value {
        yaml::Value::Map(entries) => entries,
        _ => Vec::new(),
    }
}

/// The entries of a mapping whose key and value are both strings.
fn string_values(entries: &[(yaml::Node, yaml::Node)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .filter_map(|(key, value)| match (&key.value, &value.value) {
            (yaml::Value::Str(k), yaml::Value::Str(v)) => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect()
}

/// The fields of `archives.NAME`.
pub const ARCHIVE_FIELDS: &[&str] = &[
    "root",
    "trace",
    "locks",
    "settle",
    "poll",
    "identity",
    "next_identity",
    "source_address",
    "forced_command",
    "max_lag",
    "propagation_timeout",
    "notify",
    "hooks",
];

/// The archives, and the `identity:`/`source_address:` each resolves to (its own, else `main`'s).
fn read_archives(
    f: &mut Fields<'_>,
    positions: &mut BTreeMap<String, (usize, usize)>,
    main: &Level,
    local: &LocalAddresses,
) -> (BTreeMap<String, Archive>, BTreeMap<String, Level>) {
    let mut out = BTreeMap::new();
    let mut levels = BTreeMap::new();
    let Some(mut all) = f.nested("archives") else {
        return (out, levels);
    };
    for (name, fields) in all.drain_nested() {
        if !valid_name(&name) {
            all.error(&name, "archive names may hold only letters, digits, `.`, `_` and `-`");
        }
        let Some(mut a) = fields else {
            all.error(&name, "expected a mapping with at least `root:`");
            continue;
        };
        let root = a.path("root");
        if root.is_none() {
            a.error("root", "missing: the archive's root directory");
        }
        for key in ["trace", "root", "identity", "next_identity"] {
            positions.insert(format!("archives.{name}.{key}"), a.position(key));
        }
        let trace = a.take::<String>("trace").unwrap_or_else(|| defaults::TRACE.into());
        let locks =
            a.take::<Vec<String>>("locks").unwrap_or_else(|| defaults::LOCKS.iter().map(|l| l.to_string()).collect());
        let settle = a.duration("settle", max::SETTLE).unwrap_or(defaults::SETTLE);
        let poll = a.duration("poll", max::POLL).unwrap_or(defaults::POLL);
        let max_lag = a.duration("max_lag", max::SYNC_TIMEOUT).unwrap_or(defaults::MAX_LAG);
        let propagation_timeout =
            a.duration("propagation_timeout", max::SYNC_TIMEOUT).unwrap_or(defaults::PROPAGATION_TIMEOUT);
        let level = Level::read(&mut a, local).or(main);
        let forced_command =
            a.take_parsed("forced_command", |c| crate::wire::keys::quote_option(c).map(|_| c.to_string()));
        let notify = a.nested("notify").and_then(notify::read_notify);
        let hooks = a.nested("hooks").map(notify::read_hooks);
        a.finish(ARCHIVE_FIELDS);
        if let Some(root) = root {
            let archive = Archive {
                name: name.clone(),
                root,
                trace: PathBuf::from(trace),
                locks,
                settle,
                poll,
                max_lag,
                propagation_timeout,
                identity: level.identity.as_ref().map(|s| s.value.clone()),
                next_identity: level.next_identity.as_ref().map(|s| s.value.clone()),
                source_address: level.source_address.as_ref().map(|s| s.value),
                forced_command,
                notify,
                hooks,
            };
            out.insert(name.clone(), archive);
            levels.insert(name, level);
        }
    }
    (out, levels)
}

fn read_status(f: &mut Fields<'_>) -> StatusConfig {
    let mut status = StatusConfig {
        listen: defaults::STATUS_LISTEN.parse().expect("the default parses (tested)"),
        history: defaults::STATUS_HISTORY,
        public_url: None,
    };
    if let Some(mut s) = f.nested("status") {
        if let Some(listen) = s.take_from_str::<SocketAddr>("listen") {
            status.listen = listen;
        }
        match s.take::<usize>("history") {
            Some(0) => s.error("history", "must be at least 1"),
            Some(n) => status.history = n,
            None => {}
        }
        status.public_url = s.take_parsed("public_url", |u| match reqwest::Url::parse(u) {
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && url.username().is_empty()
                    && url.password().is_none() =>
            {
                Ok(url)
            }
            Ok(_) => Err("an http:// or https:// URL without credentials".to_string()),
            Err(e) => Err(format!("invalid URL: {e}")),
        });
        s.finish(&["listen", "history", "public_url"]);
    }
    status
}

/// Names of mirrors and archives end up in file names and protocol words.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_default_config_says_how_to_name_one() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let said = unreadable_config(Path::new(DEFAULT_CONFIG), &missing);
        for want in ["does not exist", "`-c FILE`", "PUSHMIRROR_CONFIG", "`pushmirror demo`"] {
            assert!(said.contains(want), "no `{want}` in {said}");
        }
        assert!(!unreadable_config(Path::new("/elsewhere.yaml"), &missing).contains("demo"));
    }
}
