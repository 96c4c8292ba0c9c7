//! `pushmirror keys`: the page an upstream publishes for the admins of its downstream mirrors.
//!
//! Per archive: each key its SSH triggers authenticate with, as the restricted `authorized_keys`
//! line a downstream installs (bound to the archive's forced command and, with `from=`, to the
//! addresses the triggers leave from), the key's SHA256 fingerprint and its legacy MD5 form, and
//! the source addresses to allow in firewalls. The text needs no escaping to be signed with
//! `gpg --clearsign` (no line starts with `-`, none ends in a space).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::defaults;
use crate::config::{Archive, Config, Transport};
use crate::vocab::model::KeyRole;
use crate::wire::keys;

/// What downstreams of one archive install and allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveKeys {
    /// The archive.
    pub archive: String,
    /// Every address this archive's triggers (SSH and HTTP) leave from, sorted.
    pub source_addresses: Vec<IpAddr>,
    /// Some of its triggers leave from whatever address the routing table picks (no
    /// `source_address:` applies to them).
    pub unbound: bool,
    /// Its keys: the archive's own first, then any mirror file's own.
    pub keys: Vec<PublishedKey>,
}

/// One key of an archive, as a downstream installs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedKey {
    /// The private key file (the public half is derived from it).
    pub identity: PathBuf,
    /// `ssh-ed25519`, `ssh-rsa`, …
    pub key_type: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint_sha256: String,
    /// `c8:ea:0f:…`, as `ssh-keygen -l -E md5` prints it after `MD5:`.
    pub fingerprint_md5: String,
    /// The forced command of the line: the archive's `forced_command:`, else ftpsync's.
    pub forced_command: String,
    /// The line's `from=` addresses: where every trigger sent with this key leaves from; empty
    /// (no `from=`) when some leave from whatever address the routing table picks.
    pub from: Vec<IpAddr>,
    /// The whole `authorized_keys` line.
    pub authorized_keys: String,
    /// Whether it is the archive's own key (`archives.NAME.identity`, else the main file's),
    /// rather than one a mirror file names for itself.
    pub archive_key: bool,
    /// The archive's SSH mirrors triggered with this key.
    pub mirrors: Vec<String>,
    /// `current`, or `next`: a rotation's new key, which downstreams install beside the current
    /// line (both stay until the rotation is finished).
    pub role: KeyRole,
    /// For a next key: the fingerprints of the keys it replaces.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<String>,
}

/// Why the page cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageError {
    /// `keys ARCHIVE` named an archive that is not configured.
    #[error("unknown archive `{0}` (configured: {1})")]
    UnknownArchive(String, String),
    /// A key file cannot be used.
    #[error("archive {archive}: {reason}")]
    Key {
        /// The archive whose key it is.
        archive: String,
        /// What is wrong, and how to fix it.
        reason: String,
    },
}

/// The page for `archive`, or for every configured archive.
pub fn page(config: &Config, archive: Option<&str>) -> Result<Vec<ArchiveKeys>, PageError> {
    let selected: Vec<&Archive> = match archive {
        None => config.archives.values().collect(),
        Some(name) => vec![config.archives.get(name).ok_or_else(|| {
            let names: Vec<&str> = config.archives.keys().map(String::as_str).collect();
            PageError::UnknownArchive(name.to_string(), names.join(", "))
        })?],
    };
    selected.into_iter().map(|a| archive_keys(config, a)).collect()
}

/// The mirrors of one archive that share a key, and where their triggers leave from.
#[derive(Default)]
struct Users {
    mirrors: Vec<String>,
    addresses: BTreeSet<IpAddr>,
    unbound: bool,
    /// For a next key: the keys it replaces.
    replaces: BTreeSet<PathBuf>,
}

fn archive_keys(config: &Config, archive: &Archive) -> Result<ArchiveKeys, PageError> {
    let name = archive.name.as_str();
    let mut addresses = BTreeSet::new();
    let mut unbound = false;
    let mut by_key: BTreeMap<PathBuf, Users> = BTreeMap::new();
    let mut any_mirror = false;
    for mirror in config.mirrors_of(name) {
        any_mirror = true;
        let sender = mirror.sender(name);
        addresses.extend(sender.source_address);
        unbound |= sender.source_address.is_none();
        if let (Transport::Ssh(_), Some(identity)) = (&mirror.transport, &sender.identity) {
            for key in std::iter::once(identity).chain(sender.next_identity.as_ref()) {
                let users = by_key.entry(key.clone()).or_default();
                users.mirrors.push(mirror.name.clone());
                users.addresses.extend(sender.source_address);
                users.unbound |= sender.source_address.is_none();
            }
            if let Some(next) = &sender.next_identity {
                by_key.entry(next.clone()).or_default().replaces.insert(identity.clone());
            }
        }
    }
    if !any_mirror {
        // No trigger yet: the archive's own address is where they will come from.
        addresses.extend(archive.source_address);
        unbound = archive.source_address.is_none();
    }
    // The archive's own key comes first, then its next key, shown even before a mirror uses them.
    let own: Vec<PathBuf> = archive.identity.iter().chain(&archive.next_identity).cloned().collect();
    if let (Some(current), Some(next)) = (&archive.identity, &archive.next_identity) {
        by_key.entry(next.clone()).or_default().replaces.insert(current.clone());
    }
    let mut order = own.clone();
    order.extend(by_key.keys().filter(|k| !own.contains(k)).cloned());
    let keys = order
        .into_iter()
        .map(|identity| {
            let users = by_key.remove(&identity).unwrap_or_else(|| Users {
                addresses: archive.source_address.into_iter().collect(),
                unbound: archive.source_address.is_none(),
                replaces: archive
                    .identity
                    .iter()
                    .filter(|_| archive.next_identity.as_ref() == Some(&identity))
                    .cloned()
                    .collect(),
                ..Users::default()
            });
            let archive_key = own.contains(&identity);
            published_key(archive, identity, archive_key, users)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ArchiveKeys { archive: name.to_string(), source_addresses: addresses.into_iter().collect(), unbound, keys })
}

fn published_key(
    archive: &Archive,
    identity: PathBuf,
    archive_key: bool,
    users: Users,
) -> Result<PublishedKey, PageError> {
    let failed = |reason: String| PageError::Key { archive: archive.name.clone(), reason };
    let private = keys::load_identity(&identity).map_err(|e| match identity.exists() {
        true => failed(e.to_string()),
        false => failed(format!("{e}; create it with `pushmirror keygen --archive {}`", archive.name)),
    })?;
    let public = private.public_key();
    let forced_command = archive.forced_command.clone().unwrap_or_else(|| defaults::FORCED_COMMAND.to_string());
    let from: Vec<IpAddr> = if users.unbound { Vec::new() } else { users.addresses.into_iter().collect() };
    let from_option = (!from.is_empty()).then(|| from.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(","));
    let authorized_keys =
        keys::authorized_keys_line(public, &forced_command, from_option.as_deref()).map_err(failed)?;
    let replaces = users
        .replaces
        .iter()
        .map(|path| {
            keys::load_identity(path).map(|k| keys::fingerprint(k.public_key())).map_err(|e| failed(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let role = if replaces.is_empty() { KeyRole::Current } else { KeyRole::Next };
    Ok(PublishedKey {
        role,
        replaces,
        key_type: public.algorithm().as_str().to_string(),
        fingerprint_sha256: keys::fingerprint(public),
        fingerprint_md5: keys::md5_fingerprint(public).map_err(failed)?,
        identity,
        forced_command,
        from,
        authorized_keys,
        archive_key,
        mirrors: users.mirrors,
    })
}

/// The page as plain text, one block per archive. A mirror's own key names the mirrors it is for;
/// the archive's key does not list its mirrors (there may be hundreds).
pub fn to_text(page: &[ArchiveKeys]) -> String {
    let mut out = String::new();
    for (i, archive) in page.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "Archive {}", archive.archive);
        let addresses = addresses_text(&archive.source_addresses, archive.unbound);
        let _ = writeln!(out, "  Source addresses (allow them in firewalls): {addresses}");
        if archive.keys.is_empty() {
            let _ = writeln!(out, "  No SSH key: its mirrors are triggered over HTTP.");
        }
        for key in &archive.keys {
            if key.role == KeyRole::Next {
                let _ = writeln!(
                    out,
                    "  Next key, replacing {}: add its line beside the current one and keep both until we \
                     announce the switch",
                    key.replaces.join(", ")
                );
            }
            let _ = writeln!(out, "  Key: {} {}", key.key_type, key.fingerprint_sha256);
            let _ = writeln!(out, "  MD5 fingerprint: {}", key.fingerprint_md5);
            if !key.archive_key {
                let _ = writeln!(out, "  Only for mirrors: {}", key.mirrors.join(", "));
            }
            let _ = writeln!(out, "  Line for ~/.ssh/authorized_keys of the user the sync runs as:");
            let _ = writeln!(out, "{}", key.authorized_keys);
        }
    }
    out
}

/// `192.0.2.7, 2001:db8::7`, with the routing table's choice where some triggers are unbound.
fn addresses_text(addresses: &[IpAddr], unbound: bool) -> String {
    let listed: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
    match (listed.is_empty(), unbound) {
        (true, _) => "whatever this host's routing picks (no source_address is set)".to_string(),
        (false, false) => listed.join(", "),
        (false, true) => {
            format!("{}, and whatever routing picks for mirrors without a source_address", listed.join(", "))
        }
    }
}
