//! Loading and validating configuration: the main YAML file plus one file per mirror.
//!
//! [`load`] reads everything, checks everything, and returns either a complete [`Config`] or every
//! error found ([`ConfigErrors`]); a config is never half-applied.

mod error;
pub(crate) mod fields;
mod mirror;
mod sender;
mod yaml;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::{ConfigError, ConfigErrors};
pub use fields::resolve;
pub use mirror::{Backoff, HttpMethod, HttpTarget, Mirror, MirrorKind, SshTarget, Transport};
pub use sender::{Sender, parse_source_address};

pub(crate) use mirror::{basic_auth, secret_field};

use crate::fsutil::{limit, read_bounded_text};
use crate::units::max;
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
    /// Archives by name.
    pub archives: BTreeMap<String, Archive>,
    /// Status server and report history.
    pub status: StatusConfig,
    /// Every mirror, sorted by name.
    pub mirrors: Vec<Arc<Mirror>>,
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
    /// The key its triggers are sent with: its own `identity:`, else the main file's. A mirror
    /// file's own `identity:` overrides it for that mirror.
    pub identity: Option<PathBuf>,
    /// The address its triggers leave from: its own `source_address:`, else the main file's. A
    /// mirror file's own overrides it for that mirror.
    pub source_address: Option<IpAddr>,
    /// The forced command downstreams bind its key to in `authorized_keys`, as `keys` and
    /// `keygen --archive` print it; `None` means ftpsync's ([`crate::keys::FTPSYNC_FORCED_COMMAND`]).
    pub forced_command: Option<String>,
}

/// The daemon's status server and report history.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// Listen address of `/status`, `/metrics` and `/`.
    pub listen: SocketAddr,
    /// Reports kept in `state_dir/reports`.
    pub history: usize,
}

impl Config {
    /// The mirrors that serve `archive`.
    pub fn mirrors_of<'a>(&'a self, archive: &'a str) -> impl Iterator<Item = &'a Arc<Mirror>> + 'a {
        self.mirrors.iter().filter(move |m| m.serves(archive))
    }
}

/// Loads and validates the configuration rooted at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let sink = Sink::default();
    let text = match read_bounded_text(path, limit::CONFIG_FILE) {
        Ok(t) => t,
        Err(e) => {
            return Err(ConfigErrors(vec![ConfigError::at(path, (1, 1), "", format!("cannot read config file: {e}"))]));
        }
    };
    let config = Fields::parse_file(path, &text, &sink).and_then(|f| read_main(f, &sink));
    let errors = sink.into_inner();
    match config {
        Some(c) if errors.is_empty() => Ok(c),
        _ => Err(ConfigErrors(errors)),
    }
}

const MAIN_FIELDS: &[&str] = &[
    "identity",
    "source_address",
    "known_hosts",
    "host_key_policy",
    "mirrors_dir",
    "state_dir",
    "concurrency",
    "defaults",
    "archives",
    "status",
];

fn read_main(mut f: Fields<'_>, sink: &Sink) -> Option<Config> {
    let path = f.file().to_path_buf();
    let local = LocalAddresses::default();
    let main_level = Level::read(&mut f, &local);
    let known_hosts = f.path("known_hosts").unwrap_or_else(|| resolve(&path, "known_hosts"));
    let host_key_policy = f
        .take_parsed("host_key_policy", |s| match s {
            "strict" => Ok(HostKeyPolicy::Strict),
            "accept-new" => Ok(HostKeyPolicy::AcceptNew),
            other => Err(format!("unknown policy `{other}`, expected strict or accept-new")),
        })
        .unwrap_or(HostKeyPolicy::Strict);
    let mut positions = BTreeMap::new();
    for key in ["state_dir", "known_hosts"] {
        positions.insert(key.to_string(), f.position(key));
    }
    let mirrors_dir = f.path("mirrors_dir").unwrap_or_else(|| resolve(&path, "mirrors.d"));
    let state_dir = f.path("state_dir").unwrap_or_else(|| PathBuf::from("/var/lib/pushmirror"));
    let concurrency = match f.take::<usize>("concurrency") {
        Some(0) => {
            f.error("concurrency", "must be at least 1");
            1
        }
        Some(n) => n,
        None => 64,
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
    f.finish(MAIN_FIELDS);

    let mut mirrors = mirror::read_dir(&mirrors_dir, &path, &defaults, &archives, &local, sink);
    // Only SSH needs keys, so an HTTP-only setup may name one that does not exist yet.
    mirror::resolve_senders(&main_level, &archive_levels, &mut mirrors, &path, sink);
    Some(Config {
        path,
        identity: main_level.identity.map(|s| s.value),
        source_address: main_level.source_address.map(|s| s.value),
        known_hosts,
        host_key_policy,
        mirrors_dir,
        state_dir,
        concurrency,
        archives,
        status,
        mirrors: mirrors.into_iter().map(|(m, _)| Arc::new(m)).collect(),
        positions,
    })
}

/// [`load`], then [`verify_files`]: the configuration of a command that writes state.
pub fn load_for_writing(path: &Path) -> Result<Config, ConfigErrors> {
    let config = load(path)?;
    verify_files(&config)?;
    Ok(config)
}

/// What the commands that write state need on disk, beyond a valid file: `state_dir` a writable
/// directory (created if missing), pushmirror's `known_hosts` a regular file within its bound when
/// SSH mirrors use it, and each archive's trace file, where present, a regular file within its
/// bound. `check`, `push`, `runmirrors` and `daemon` call it; readers (`status`, `list`) do not,
/// so a monitoring user that cannot write `state_dir` can still read it.
pub fn verify_files(config: &Config) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    let mut error = |field: &str, message: String| {
        let at = config.positions.get(field).copied().unwrap_or((1, 1));
        errors.push(ConfigError::at(&config.path, at, field, message));
    };
    if let Err(why) = writable_dir(&config.state_dir) {
        error("state_dir", format!("{}: {why}", config.state_dir.display()));
    }
    let uses_ssh = config.mirrors.iter().any(|m| matches!(m.transport, Transport::Ssh(_)));
    if uses_ssh
        && config.known_hosts.exists()
        && let Err(e) = read_bounded_text(&config.known_hosts, limit::KNOWN_HOSTS)
    {
        error("known_hosts", format!("cannot read {}: {e}", config.known_hosts.display()));
    }
    for archive in config.archives.values() {
        let trace = archive.root.join(&archive.trace);
        if trace.symlink_metadata().is_ok()
            && let Err(e) = crate::fsutil::read_bounded(&trace, limit::TRACE)
        {
            error(&format!("archives.{}.trace", archive.name), format!("cannot read {}: {e}", trace.display()));
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
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
    let top = raw_mapping(path).ok()?;
    string_values(&top).remove("identity").map(|raw| resolve(path, &raw))
}

/// What `keygen --archive NAME` needs of the main file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveKeySettings {
    /// The archive's `identity:`, else the main file's.
    pub identity: Option<PathBuf>,
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
    let mut either = |key: &str| own.remove(key).or_else(|| main.remove(key));
    let identity = either("identity").map(|raw| resolve(path, &raw));
    let source_address = either("source_address").map(|raw| parse_source_address(&raw)).transpose()?;
    Ok(ArchiveKeySettings { identity, source_address, forced_command: own.remove("forced_command") })
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
        positions.insert(format!("archives.{name}.trace"), a.position("trace"));
        let trace = a.take::<String>("trace").unwrap_or_else(|| "project/trace/master".into());
        let locks = a.take::<Vec<String>>("locks").unwrap_or_else(|| vec!["Archive-Update-in-Progress-*".into()]);
        let settle = a.duration("settle", max::SETTLE).unwrap_or(Duration::from_secs(30));
        let poll = a.duration("poll", max::POLL).unwrap_or(Duration::from_secs(60));
        let level = Level::read(&mut a, local).or(main);
        let forced_command = a.take_parsed("forced_command", |c| crate::keys::quote_option(c).map(|_| c.to_string()));
        a.finish(&["root", "trace", "locks", "settle", "poll", "identity", "source_address", "forced_command"]);
        if let Some(root) = root {
            let archive = Archive {
                name: name.clone(),
                root,
                trace: PathBuf::from(trace),
                locks,
                settle,
                poll,
                identity: level.identity.as_ref().map(|s| s.value.clone()),
                source_address: level.source_address.as_ref().map(|s| s.value),
                forced_command,
            };
            out.insert(name.clone(), archive);
            levels.insert(name, level);
        }
    }
    (out, levels)
}

fn read_status(f: &mut Fields<'_>) -> StatusConfig {
    let mut status = StatusConfig { listen: "127.0.0.1:9470".parse().expect("literal address"), history: 200 };
    if let Some(mut s) = f.nested("status") {
        if let Some(listen) = s.take_from_str::<SocketAddr>("listen") {
            status.listen = listen;
        }
        match s.take::<usize>("history") {
            Some(0) => s.error("history", "must be at least 1"),
            Some(n) => status.history = n,
            None => {}
        }
        s.finish(&["listen", "history"]);
    }
    status
}

/// Names of mirrors and archives end up in file names and protocol words.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
