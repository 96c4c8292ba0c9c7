//! The sender's SSH key: loading it safely, creating a new one (`keygen`), and the
//! `authorized_keys` line a downstream installs for it.
//!
//! Errors name the file and what is wrong with it, never the key material.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PublicKey};

use crate::sys::fsutil::check_private;

/// The forced command of every `authorized_keys` line pushmirror prints when nothing names
/// another (`keygen`, `keys`, the examples): ftpsync, as its own README
/// (`/usr/share/doc/ftpsync/README.md`) tells downstream admins to install it; ftpsync reads the
/// archive from the trigger's words.
pub const FTPSYNC_FORCED_COMMAND: &str = "~/bin/ftpsync";

/// Why the sender's key cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The file cannot be read (missing, unreadable).
    #[error("cannot read private key {}: {reason}", path.display())]
    Unreadable {
        /// The key file.
        path: PathBuf,
        /// It does not exist (else it exists but cannot be read).
        missing: bool,
        /// What is wrong, in words (see [`crate::sys::owner::unreadable_reason`]).
        reason: String,
    },
    /// Group or others may access the file.
    #[error("{0}")]
    TooOpen(String),
    /// The file holds no private key pushmirror can use.
    #[error("{path} is not a usable private key: {reason}")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What the decoder said (never key material).
        reason: String,
    },
    /// A new key would overwrite an existing file.
    #[error("{0} already exists; refusing to overwrite it (`pushmirror keys` prints its authorized_keys line again)")]
    Exists(PathBuf),
    /// Writing a new key failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The I/O or encoding error, in words.
        reason: String,
    },
}

/// Loads the sender's private key from `path`, refusing files that group or others may access
/// (as OpenSSH does) and keys protected by a passphrase (nobody is there to type it).
pub fn load_identity(path: &Path) -> Result<PrivateKey, KeyError> {
    let unreadable = |e: std::io::Error| KeyError::Unreadable {
        path: path.to_path_buf(),
        missing: e.kind() == std::io::ErrorKind::NotFound,
        reason: crate::sys::owner::unreadable_reason(path, &e),
    };
    let (file, meta) = crate::sys::fsutil::open_regular(path).map_err(unreadable)?;
    check_private(path, &meta).map_err(KeyError::TooOpen)?;
    let bytes = crate::sys::fsutil::read_limited(file, crate::sys::fsutil::limit::KEY).map_err(unreadable)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| unreadable(std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")))?;
    let malformed = |reason: String| KeyError::Malformed { path: path.to_path_buf(), reason };
    let key = russh::keys::decode_secret_key(&text, None).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => {
            malformed("it is encrypted with a passphrase; pushmirror needs a key without one".into())
        }
        other => malformed(other.to_string()),
    })?;
    if key.is_encrypted() {
        return Err(malformed("it is encrypted with a passphrase; pushmirror needs a key without one".into()));
    }
    Ok(key)
}

/// Parses one OpenSSH public key line (`ssh-ed25519 AAAA… [comment]`).
pub fn parse_public_key(line: &str) -> Result<PublicKey, String> {
    PublicKey::from_openssh(line.trim()).map_err(|e| format!("not an OpenSSH public key (`ssh-ed25519 AAAA…`): {e}"))
}

/// The `SHA256:…` fingerprint OpenSSH shows for `key`.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The legacy MD5 fingerprint, `c8:ea:0f:…`: what OpenSSH showed before 6.8 and what
/// `ssh-keygen -l -E md5` still prints after its `MD5:`, and the form older published key pages
/// (Ubuntu's among them) use. It is the MD5 of the key's wire encoding, as the SHA256 one is its
/// SHA-256. Only for people comparing it with such a page; pushmirror itself never trusts MD5.
pub fn md5_fingerprint(key: &PublicKey) -> Result<String, String> {
    let blob = key.to_bytes().map_err(|e| format!("cannot encode the public key: {e}"))?;
    Ok(md5::compute(blob).0.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
}

/// Whether two public keys are the same key (comments aside).
pub fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

/// A freshly written key pair.
#[derive(Debug)]
pub struct NewKey {
    /// The private key file (0600).
    pub private: PathBuf,
    /// The public key file, `PRIVATE.pub`.
    pub public_path: PathBuf,
    /// The public key, with its comment.
    pub public: PublicKey,
}

/// Creates a new ed25519 key in OpenSSH format at `path` (0600) and its `path.pub`, with
/// `comment`. Refuses to overwrite either file; creates a missing parent directory as 0700.
pub fn generate(path: &Path, comment: &str) -> Result<NewKey, KeyError> {
    let public_path = pub_path(path);
    for p in [path, public_path.as_path()] {
        if p.symlink_metadata().is_ok() {
            return Err(KeyError::Exists(p.to_path_buf()));
        }
    }
    let write_err = |p: &Path, reason: String| KeyError::Write { path: p.to_path_buf(), reason };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| write_err(dir, e.to_string()))?;
    }
    let mut key =
        PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(|e| write_err(path, e.to_string()))?;
    key.set_comment(comment);
    let pem = key.to_openssh(LineEnding::LF).map_err(|e| write_err(path, e.to_string()))?;
    // create_new: another process may have created the file since the check above.
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists(path.to_path_buf()),
            _ => write_err(path, e.to_string()),
        })?;
    file.write_all(pem.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| write_err(path, e.to_string()))?;
    let public = key.public_key().clone();
    let line = public.to_openssh().map_err(|e| write_err(&public_path, e.to_string()))?;
    std::fs::write(&public_path, format!("{line}\n")).map_err(|e| write_err(&public_path, e.to_string()))?;
    Ok(NewKey { private: path.to_path_buf(), public_path, public })
}

/// `key` + `.pub`, as ssh-keygen names the public half.
pub fn pub_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// The `authorized_keys` line a downstream installs: no forwarding, no pty, the forced
/// `command`, and `from=` when the sender's addresses are given.
pub fn authorized_keys_line(key: &PublicKey, command: &str, from: Option<&str>) -> Result<String, String> {
    let options = authorized_keys_options(command, from)?;
    let key = key.to_openssh().map_err(|e| format!("cannot encode the public key: {e}"))?;
    Ok(format!("{options} {key}"))
}

/// The options part of [`authorized_keys_line`]; fails on values sshd could not read back.
pub fn authorized_keys_options(command: &str, from: Option<&str>) -> Result<String, String> {
    let mut options = String::from("no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty");
    let quoted = |value, flag| quote_option(value).map_err(|why| format!("{flag} {why}"));
    options.push_str(&format!(",command=\"{}\"", quoted(command, "--command")?));
    if let Some(from) = from {
        options.push_str(&format!(",from=\"{}\"", quoted(from, "--from")?));
    }
    Ok(options)
}

/// `value` as sshd reads it back between the quotes of an option: sshd turns `\"` into `"` and
/// leaves every other backslash alone, so only `"` is escaped. What it cannot read back is
/// refused: a line break or NUL ends the line or the string, and a final backslash would turn the
/// closing quote into `\"`. The error says why, to follow the name of the value.
pub fn quote_option(value: &str) -> Result<String, String> {
    for (c, name) in [('\n', "a newline"), ('\r', "a carriage return"), ('\0', "a NUL")] {
        if value.contains(c) {
            return Err(format!("cannot contain {name}: sshd could not read it back"));
        }
    }
    if value.ends_with('\\') {
        return Err("cannot end with a backslash: sshd would read it and the closing quote as `\\\"`".to_string());
    }
    Ok(value.replace('"', "\\\""))
}

/// `pushmirror@HOST`, the comment of a new key, so downstreams can tell whose key it is.
pub fn default_comment() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("pushmirror@{host}")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn generated_keys_load_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/id_ed25519");
        let new = generate(&path, "pushmirror@test").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = load_identity(&path).unwrap();
        assert!(same_key(loaded.public_key(), &new.public));
        let pub_text = std::fs::read_to_string(pub_path(&path)).unwrap();
        assert!(pub_text.starts_with("ssh-ed25519 AAAA") && pub_text.trim_end().ends_with("pushmirror@test"));
        assert_eq!(generate(&path, "x").unwrap_err(), KeyError::Exists(path.clone()));
    }

    #[test]
    fn too_open_and_malformed_keys_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        generate(&path, "c").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_identity(&path).unwrap_err().to_string();
        assert!(err.contains("0644") && err.contains(&path.display().to_string()), "{err}");
        std::fs::write(&path, "not a key\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(load_identity(&path), Err(KeyError::Malformed { .. })));
        let missing = dir.path().join("missing");
        assert!(matches!(load_identity(&missing), Err(KeyError::Unreadable { .. })));
    }

    #[test]
    fn authorized_keys_line_has_the_documented_form() {
        let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let mut public = key.public_key().clone();
        public.set_comment("pushmirror@up");
        let line = authorized_keys_line(&public, "~/archive-sync &", Some("203.0.113.7")).unwrap();
        assert!(line.starts_with(
            "no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty,command=\"~/archive-sync &\",from=\"203.0.113.7\" ssh-ed25519 AAAA"
        ));
        assert!(line.ends_with(" pushmirror@up"));
        let line = authorized_keys_line(&public, "say \"hi\"", None).unwrap();
        assert!(line.contains(",command=\"say \\\"hi\\\"\" ssh-ed25519 ") && !line.contains("from="), "{line}");
        assert!(authorized_keys_line(&public, "a\nb", None).is_err());
    }

    #[test]
    fn a_backslash_in_the_forced_command_is_written_once() {
        // sshd unescapes only `\"` in option values; every other backslash reaches the shell as is.
        let options = authorized_keys_options(r#"printf '%s' 'a\b' > "/tmp/x y""#, None).unwrap();
        assert!(options.ends_with(r#",command="printf '%s' 'a\b' > \"/tmp/x y\"""#), "{options}");
    }

    #[test]
    fn values_sshd_cannot_read_back_are_refused() {
        for (command, why) in
            [("a\nb", "newline"), ("a\rb", "carriage return"), ("a\0b", "NUL"), ("echo a\\", "backslash")]
        {
            let err = authorized_keys_options(command, None).unwrap_err();
            assert!(err.starts_with("--command ") && err.contains(why), "{command:?}: {err}");
        }
        assert!(authorized_keys_options("x", Some("10.0.0.1\0")).unwrap_err().starts_with("--from "));
    }
}
