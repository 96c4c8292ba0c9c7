//! pushmirror's own known_hosts file, in OpenSSH's format: plain and hashed (`|1|salt|hash`)
//! host entries, `[host]:port` for ports other than 22, comma-separated host lists, `*`/`?`
//! wildcards and `!` negations, `@revoked` lines.
//!
//! Lines that cannot be parsed are skipped, as OpenSSH does, so one odd line (a key type we do
//! not know, a `@cert-authority` entry) never makes the whole file unusable.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::PublicKey;
use sha1::Sha1;

use crate::wire::keys::same_key;

/// The name a host is recorded under, as ssh forms it: the host name in lower case, on port 22
/// as is, else `[host]:port`. A hashed entry is the hash of exactly this text, so a mirror
/// configured as `Mirror.Example.org` must be looked up as `mirror.example.org`.
pub fn host_entry_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 { host } else { format!("[{host}]:{port}") }
}

/// One usable line of a known_hosts file.
#[derive(Debug, Clone)]
pub struct Entry {
    /// 1-based line number.
    pub line: usize,
    /// Whether the line is `@revoked`: the key must never be accepted.
    pub revoked: bool,
    hosts: Hosts,
    /// The recorded key.
    pub key: PublicKey,
}

#[derive(Debug, Clone)]
enum Hosts {
    /// `|1|salt|hash`: HMAC-SHA1 of the entry name, keyed with the salt.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    /// Comma-separated patterns, possibly negated with `!`.
    Patterns(Vec<String>),
}

impl Entry {
    /// Whether this entry applies to the host recorded as `name` (see [`host_entry_name`]).
    pub fn matches(&self, name: &str) -> bool {
        match &self.hosts {
            Hosts::Hashed { salt, hash } => {
                let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else { return false };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            Hosts::Patterns(patterns) => {
                let mut matched = false;
                for p in patterns {
                    if let Some(negated) = p.strip_prefix('!') {
                        if glob(&negated.to_ascii_lowercase(), &name.to_ascii_lowercase()) {
                            return false;
                        }
                    } else if glob(&p.to_ascii_lowercase(), &name.to_ascii_lowercase()) {
                        matched = true;
                    }
                }
                matched
            }
        }
    }
}

/// Parses known_hosts text; unusable lines are skipped.
pub fn parse(text: &str) -> Vec<Entry> {
    text.lines().enumerate().filter_map(|(i, line)| parse_line(i + 1, line)).collect()
}

fn parse_line(line_no: usize, line: &str) -> Option<Entry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let mut revoked = false;
    if first.starts_with('@') {
        // @cert-authority lines trust a CA, which pushmirror does not offer; skip them.
        if first != "@revoked" {
            return None;
        }
        revoked = true;
        first = fields.next()?;
    }
    let hosts = parse_hosts(first)?;
    let key_type = fields.next()?;
    let blob = fields.next()?;
    let key = PublicKey::from_openssh(&format!("{key_type} {blob}")).ok()?;
    Some(Entry { line: line_no, revoked, hosts, key })
}

fn parse_hosts(field: &str) -> Option<Hosts> {
    match field.strip_prefix("|1|") {
        Some(rest) => {
            let (salt, hash) = rest.split_once('|')?;
            Some(Hosts::Hashed { salt: STANDARD.decode(salt).ok()?, hash: STANDARD.decode(hash).ok()? })
        }
        None => Some(Hosts::Patterns(field.split(',').filter(|p| !p.is_empty()).map(str::to_string).collect())),
    }
}

/// OpenSSH's host pattern match: `*` any run of characters, `?` exactly one.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                backtrack = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    pi = star + 1;
                    ti = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// What known_hosts says about a key a host offered.
#[derive(Debug, Clone)]
pub enum KeyStatus {
    /// The key is recorded for this host.
    Known,
    /// Other keys are recorded for this host, not this one: refuse.
    Changed {
        /// The recorded keys.
        expected: Vec<PublicKey>,
    },
    /// The key is marked `@revoked`: refuse.
    Revoked,
    /// Nothing is recorded for this host.
    Unknown,
}

/// Judges `offered` for the host recorded as `name` against `entries`.
pub fn judge(entries: &[Entry], name: &str, offered: &PublicKey) -> KeyStatus {
    let relevant: Vec<&Entry> = entries.iter().filter(|e| e.matches(name)).collect();
    if relevant.iter().any(|e| e.revoked && same_key(&e.key, offered)) {
        return KeyStatus::Revoked;
    }
    let recorded: Vec<&Entry> = relevant.into_iter().filter(|e| !e.revoked).collect();
    if recorded.iter().any(|e| same_key(&e.key, offered)) {
        KeyStatus::Known
    } else if recorded.is_empty() {
        KeyStatus::Unknown
    } else {
        KeyStatus::Changed { expected: recorded.into_iter().map(|e| e.key.clone()).collect() }
    }
}

/// A known_hosts file on disk. Its parsed entries are kept until the file's size or
/// modification time changes, so a push to a thousand mirrors parses it once, while edits (by
/// hand, by `hostkeys scan`, by accept-new) are seen by the next connection. Keys are added only
/// through [`KnownHostsFile::record_if_unknown`], under the file's lock.
#[derive(Debug, Clone)]
pub struct KnownHostsFile {
    path: PathBuf,
    cache: Arc<Mutex<Option<Cached>>>,
}

#[derive(Debug)]
struct Cached {
    stamp: (SystemTime, u64),
    entries: Arc<Vec<Entry>>,
}

impl KnownHostsFile {
    /// The file at `path` (it need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        KnownHostsFile { path: path.into(), cache: Arc::default() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its entries; a missing file has none.
    pub fn entries(&self) -> std::io::Result<Arc<Vec<Entry>>> {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(meta) => (meta.modified()?, meta.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Arc::default()),
            Err(e) => return Err(e),
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.as_ref().filter(|c| c.stamp == stamp) {
            return Ok(Arc::clone(&c.entries));
        }
        let text = crate::sys::fsutil::read_bounded_text(&self.path, crate::sys::fsutil::limit::KNOWN_HOSTS)?;
        let entries = Arc::new(parse(&text));
        *cache = Some(Cached { stamp, entries: Arc::clone(&entries) });
        Ok(entries)
    }

    /// The entries that apply to the host recorded as `name`.
    pub fn entries_for(&self, name: &str) -> std::io::Result<Vec<Entry>> {
        Ok(self.entries()?.iter().filter(|e| e.matches(name)).cloned().collect())
    }

    /// The recorded (not revoked) keys of the host recorded as `name`.
    pub fn keys_for(&self, name: &str) -> std::io::Result<Vec<PublicKey>> {
        Ok(self.entries_for(name)?.into_iter().filter(|e| !e.revoked).map(|e| e.key).collect())
    }

    /// Records `key` for the host recorded as `name`, unless the file already says something
    /// about it, and returns the verdict the file gave: [`KeyStatus::Unknown`] means the key was
    /// unknown and is now recorded (as a plain entry; the file and its directory are created if
    /// needed).
    ///
    /// All of it runs under an exclusive lock on the file itself, which every process and every
    /// handle takes before appending (`hostkeys scan`, accept-new in the daemon or a CLI push):
    /// the file is judged as it is under the lock, so a key recorded meanwhile elsewhere is not
    /// recorded twice, and a different one is refused.
    pub fn record_if_unknown(&self, name: &str, key: &PublicKey) -> Result<KeyStatus, RecordError> {
        let path = || self.path.clone();
        let mut file = self.open_locked().map_err(|source| RecordError::Lock { path: path(), source })?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(|source| RecordError::Read { path: path(), source })?;
        let verdict = judge(&parse(&text), name, key);
        if matches!(verdict, KeyStatus::Unknown) {
            // The comment is dropped: it is the server's business, not part of what we trust.
            let mut bare = key.clone();
            bare.set_comment("");
            let encoded =
                bare.to_openssh().map_err(|e| RecordError::Write { path: path(), source: std::io::Error::other(e) })?;
            let prefix = if text.is_empty() || text.ends_with('\n') { "" } else { "\n" };
            file.write_all(format!("{prefix}{name} {encoded}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|source| RecordError::Write { path: path(), source })?;
        }
        Ok(verdict)
    }

    /// Replaces every plain entry of the host recorded as `name` with `key` (its `@revoked`
    /// lines and every other host's stay), under the same lock as [`Self::record_if_unknown`];
    /// the file is replaced atomically. The operator decides that a host's key changed: only
    /// `hostkeys scan --replace` with the expected fingerprint comes here.
    pub fn replace(&self, name: &str, key: &PublicKey) -> Result<(), RecordError> {
        let path = || self.path.clone();
        let mut file = self.open_locked().map_err(|source| RecordError::Lock { path: path(), source })?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(|source| RecordError::Read { path: path(), source })?;
        let mut kept: String = text
            .lines()
            .filter(|line| !parse(line).iter().any(|e| !e.revoked && e.matches(name)))
            .map(|line| format!("{line}\n"))
            .collect();
        let mut bare = key.clone();
        bare.set_comment("");
        let encoded =
            bare.to_openssh().map_err(|e| RecordError::Write { path: path(), source: std::io::Error::other(e) })?;
        kept.push_str(&format!("{name} {encoded}\n"));
        // Replaced while the old file is locked: a process waiting for it finds the new one.
        crate::sys::fsutil::write_atomic(&self.path, kept.as_bytes())
            .map_err(|source| RecordError::Write { path: path(), source })
    }

    /// The file opened for reading and appending, exclusively locked until it is dropped.
    fn open_locked(&self) -> std::io::Result<File> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        loop {
            let file = OpenOptions::new().read(true).append(true).create(true).open(&self.path)?;
            file.lock()?;
            // Someone may have replaced the file while we waited (`ssh-keygen -R` renames a new
            // one in): the lock is then on the old one, and the new one must be locked instead.
            let held = file.metadata()?;
            match std::fs::metadata(&self.path) {
                Ok(now) if (now.dev(), now.ino()) == (held.dev(), held.ino()) => return Ok(file),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Why a host key could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file could not be opened or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        /// The known_hosts file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file could not be read under the lock.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The known_hosts file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The key could not be appended.
    #[error("cannot append to {}: {source}", path.display())]
    Write {
        /// The known_hosts file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use russh::keys::{Algorithm, PrivateKey};

    use super::*;

    fn key() -> PublicKey {
        PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap().public_key().clone()
    }

    fn line(hosts: &str, key: &PublicKey) -> String {
        format!("{hosts} {}\n", key.to_openssh().unwrap())
    }

    /// `|1|salt|hash` as `ssh-keygen -H` writes it.
    fn hashed(name: &str, salt: &[u8]) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(salt).unwrap();
        mac.update(name.as_bytes());
        format!("|1|{}|{}", STANDARD.encode(salt), STANDARD.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn plain_entries_match_their_host_on_port_22_only() {
        let k = key();
        let entries = parse(&line("mirror.example.net", &k));
        assert!(matches!(judge(&entries, "mirror.example.net", &k), KeyStatus::Known));
        assert!(matches!(judge(&entries, &host_entry_name("mirror.example.net", 2222), &k), KeyStatus::Unknown));
        assert!(matches!(judge(&entries, "other.example.net", &k), KeyStatus::Unknown));
        assert!(matches!(judge(&entries, "MIRROR.example.net", &k), KeyStatus::Known));
    }

    #[test]
    fn bracketed_entries_carry_the_port() {
        let k = key();
        let entries = parse(&line("[127.0.0.1]:2222", &k));
        assert_eq!(host_entry_name("127.0.0.1", 2222), "[127.0.0.1]:2222");
        assert!(matches!(judge(&entries, "[127.0.0.1]:2222", &k), KeyStatus::Known));
        assert!(matches!(judge(&entries, "127.0.0.1", &k), KeyStatus::Unknown));
        assert!(matches!(judge(&entries, "[127.0.0.1]:2223", &k), KeyStatus::Unknown));
    }

    #[test]
    fn host_lists_wildcards_and_negations() {
        let k = key();
        let entries = parse(&line("a.example.net,192.0.2.7,*.mirrors.example.org,!bad.mirrors.example.org", &k));
        for name in ["a.example.net", "192.0.2.7", "eu.mirrors.example.org"] {
            assert!(matches!(judge(&entries, name, &k), KeyStatus::Known), "{name}");
        }
        for name in ["b.example.net", "bad.mirrors.example.org", "192.0.2.70"] {
            assert!(matches!(judge(&entries, name, &k), KeyStatus::Unknown), "{name}");
        }
        assert!(glob("m?rror*", "mirror.example") && !glob("m?rror", "mirrors") && glob("*", ""));
    }

    #[test]
    fn hashed_entries_match_without_revealing_the_name() {
        let k = key();
        let text = line(&hashed("[mirror.example.net]:2222", b"0123456789abcdefghij"), &k)
            + &line(&hashed("plain.example.net", b"salt-two-salt-two-xx"), &k);
        let entries = parse(&text);
        assert_eq!(entries.len(), 2);
        assert!(matches!(judge(&entries, "[mirror.example.net]:2222", &k), KeyStatus::Known));
        assert!(matches!(judge(&entries, "plain.example.net", &k), KeyStatus::Known));
        assert!(matches!(judge(&entries, "mirror.example.net", &k), KeyStatus::Unknown));
    }

    #[test]
    fn hashed_entries_match_the_host_name_in_any_case() {
        // ssh lowercases the name before it hashes it, as it does before it compares patterns.
        let k = key();
        let text = line(&hashed("mirror.example.org", b"0123456789abcdefghij"), &k)
            + &line(&hashed("[mirror.example.org]:2222", b"salt-two-salt-two-xx"), &k);
        let entries = parse(&text);
        for (host, port) in [("Mirror.Example.org", 22), ("MIRROR.EXAMPLE.ORG", 2222), ("mirror.example.org", 22)] {
            let name = host_entry_name(host, port);
            assert!(matches!(judge(&entries, &name, &k), KeyStatus::Known), "{name}");
        }
    }

    #[test]
    fn a_different_key_for_a_known_host_is_a_change_and_revoked_keys_are_refused() {
        let (old, new) = (key(), key());
        let entries = parse(&(line("h", &old) + "@revoked h " + &new.to_openssh().unwrap() + "\n"));
        match judge(&entries, "h", &key()) {
            KeyStatus::Changed { expected } => assert!(expected.len() == 1 && same_key(&expected[0], &old)),
            other => panic!("expected Changed, got {other:?}"),
        }
        assert!(matches!(judge(&entries, "h", &new), KeyStatus::Revoked));
    }

    #[test]
    fn odd_lines_are_skipped_not_fatal() {
        let k = key();
        let text = format!(
            "# comment\n\n   \nh ssh-unknown AAAAB3Nz\n@cert-authority *.example ssh-ed25519 AAAA\nbroken\nh\t{}  comment here\n",
            k.to_openssh().unwrap()
        );
        let entries = parse(&text);
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0].line, 7);
        assert!(matches!(judge(&entries, "h", &k), KeyStatus::Known));
    }

    #[test]
    fn recording_appends_a_line_that_reads_back_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = KnownHostsFile::new(dir.path().join("sub/known_hosts"));
        assert!(file.keys_for("x").unwrap().is_empty());
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(
            file.path(),
            "other ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ",
        )
        .unwrap();
        let k = key();
        assert!(matches!(file.record_if_unknown("[127.0.0.1]:2222", &k).unwrap(), KeyStatus::Unknown));
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(text.ends_with(&format!("\n[127.0.0.1]:2222 {}\n", k.to_openssh().unwrap())), "{text}");
        assert_eq!(file.keys_for("[127.0.0.1]:2222").unwrap().len(), 1);
        assert_eq!(file.keys_for("other").unwrap().len(), 1);
        assert!(matches!(file.record_if_unknown("[127.0.0.1]:2222", &k).unwrap(), KeyStatus::Known));
        assert!(matches!(file.record_if_unknown("[127.0.0.1]:2222", &key()).unwrap(), KeyStatus::Changed { .. }));
        assert_eq!(std::fs::read_to_string(file.path()).unwrap(), text, "nothing recorded twice or over");
    }

    #[test]
    fn independent_handles_recording_at_once_land_every_host_once_in_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let hosts: Vec<(String, PublicKey)> = (0..8).map(|i| (format!("[127.0.0.1]:{}", 2200 + i), key())).collect();
        let start = std::sync::Barrier::new(hosts.len() * 2);
        std::thread::scope(|s| {
            // Two handles per host, none sharing anything in memory, all starting together.
            for (name, k) in hosts.iter().chain(hosts.iter()) {
                let (start, file) = (&start, KnownHostsFile::new(&path));
                s.spawn(move || {
                    start.wait();
                    file.record_if_unknown(name, k).unwrap();
                });
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        let mut expected: Vec<String> =
            hosts.iter().map(|(name, k)| format!("{name} {}", k.to_openssh().unwrap())).collect();
        expected.sort_unstable();
        assert_eq!(lines, expected, "{text}");
    }
}
