//! Who a trigger is sent as: the SSH key it authenticates with and the local address it leaves
//! from. Both may be set in the main file (the default), per archive (`archives.NAME.…`) and per
//! mirror; the most specific wins, so one downstream carrying two archives is reached with each
//! archive's key from each archive's address (Ubuntu's setup: one key per archive, each bound to
//! its own forced command and `from=` list).
//!
//! Values are read with where they were written, because keys are judged only once every file
//! has been read ([`super::mirror::resolve_senders`]): a key is checked once per distinct file,
//! and only when an SSH mirror uses it. An address is checked where it is read, once per distinct
//! value.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use super::error::ConfigError;
use super::fields::Fields;
use super::yaml::Pos;

/// Who a trigger to one mirror for one archive is sent as, resolved from the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sender {
    /// The private key an SSH trigger authenticates with (HTTP mirrors use none).
    pub identity: Option<PathBuf>,
    /// That key's `SHA256:…` fingerprint, as the configuration check loaded it.
    pub fingerprint: Option<String>,
    /// The key replacing it while a rotation is under way (`next_identity:`): SSH triggers try
    /// it first and fall back to `identity`.
    pub next_identity: Option<PathBuf>,
    /// Its fingerprint.
    pub next_fingerprint: Option<String>,
    /// The local address the connection is bound to; without one the routing table picks.
    pub source_address: Option<IpAddr>,
}

/// The sender of a mirror for an archive it does not carry: nothing set.
pub(super) static UNSET: Sender =
    Sender { identity: None, fingerprint: None, next_identity: None, next_fingerprint: None, source_address: None };

/// Where a value was written, for errors found once every file has been read.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    file: PathBuf,
    pos: Pos,
    field: String,
}

impl Origin {
    /// An error about the value written here.
    pub(super) fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.file, self.pos, &self.field, message)
    }
}

/// A value and where it was written.
#[derive(Debug, Clone)]
pub(super) struct Setting<T> {
    pub(super) value: T,
    pub(super) at: Origin,
}

/// `identity:`, `next_identity:` and `source_address:` as written at one level: the main file, an
/// archive, or a mirror file.
#[derive(Debug, Clone, Default)]
pub(super) struct Level {
    pub(super) identity: Option<Setting<PathBuf>>,
    /// Only with `identity` at the same level: the two are one setting (a key and its successor).
    pub(super) next_identity: Option<Setting<PathBuf>>,
    pub(super) source_address: Option<Setting<IpAddr>>,
}

/// Whether each address can be bound on this host, judged once per distinct address.
#[derive(Debug, Default)]
pub(super) struct LocalAddresses(RefCell<HashMap<IpAddr, Result<(), String>>>);

impl LocalAddresses {
    fn check(&self, ip: IpAddr) -> Result<(), String> {
        self.0.borrow_mut().entry(ip).or_insert_with(|| bindable(ip)).clone()
    }
}

impl Level {
    /// Reads `identity` and `source_address` from `f`; an address that is not an IP literal, or
    /// not an address of this host, is an error where it is written.
    pub(super) fn read(f: &mut Fields<'_>, local: &LocalAddresses) -> Level {
        let origin = |f: &Fields<'_>, key: &str| Origin {
            file: f.file().to_path_buf(),
            pos: f.position(key),
            field: f.field_name(key),
        };
        let identity_at = origin(f, "identity");
        let identity_written = f.has("identity");
        let identity = f.path("identity").map(|value| Setting { value, at: identity_at });
        let next_at = origin(f, "next_identity");
        let next_identity = f.path("next_identity").map(|value| Setting { value, at: next_at });
        if next_identity.is_some() && !identity_written {
            f.error(
                "next_identity",
                "replaces the `identity:` written at the same place: write that `identity:` here too",
            );
        }
        let address_at = origin(f, "source_address");
        let source_address = f
            .take_parsed("source_address", |raw| {
                let ip = parse_source_address(raw)?;
                local.check(ip).map(|()| ip)
            })
            .map(|value| Setting { value, at: address_at });
        Level { identity, next_identity, source_address }
    }

    /// This level's values, else those of `fallback` (a less specific level). A key and its
    /// successor go together: a level with its own `identity:` rotates only if it says so.
    pub(super) fn or(&self, fallback: &Level) -> Level {
        let keys = if self.identity.is_some() { self } else { fallback };
        Level {
            identity: keys.identity.clone(),
            next_identity: keys.next_identity.clone(),
            source_address: self.source_address.clone().or_else(|| fallback.source_address.clone()),
        }
    }
}

/// A source address as written: an IP literal (a host name could resolve to an address of some
/// other host, or to several), usable as the local end of a connection.
pub fn parse_source_address(raw: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = raw.trim().parse().map_err(|_| {
        format!("`{raw}` is not an IP address: write the local address itself (192.0.2.7, 2001:db8::7)")
    })?;
    if ip.is_unspecified() {
        return Err(format!("{ip} is the unspecified address: name one address of this host"));
    }
    if ip.is_multicast() {
        return Err(format!("{ip} is a multicast address: connections cannot leave from it"));
    }
    Ok(ip)
}

/// Whether `ip` is an address of this host: binding a socket to it (port 0, nothing sent) is the
/// test the kernel itself applies when a connection is bound to it.
fn bindable(ip: IpAddr) -> Result<(), String> {
    match std::net::UdpSocket::bind((ip, 0)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            Err(format!("{ip} is not an address of this host, so nothing can be sent from it"))
        }
        Err(e) => Err(format!("cannot bind {ip} on this host: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_address_is_one_ip_literal_of_this_host() {
        assert_eq!(parse_source_address("127.0.0.2"), Ok("127.0.0.2".parse().unwrap()));
        assert_eq!(parse_source_address(" ::1 "), Ok("::1".parse().unwrap()));
        for (raw, says) in [
            ("mirror.example.net", "not an IP address"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("127.0.0.2:22", "not an IP address"),
        ] {
            let err = parse_source_address(raw).unwrap_err();
            assert!(err.contains(says), "{raw}: {err}");
        }
        assert_eq!(bindable("127.0.0.3".parse().unwrap()), Ok(()), "all of 127/8 is local on Linux");
        // TEST-NET-3 (RFC 5737) is never assigned to a host.
        let err = bindable("203.0.113.254".parse().unwrap()).unwrap_err();
        assert!(err.contains("not an address of this host"), "{err}");
    }
}
