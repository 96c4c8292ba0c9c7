//! SSH triggers: one connection per trigger (russh), bound to the mirror's source address when
//! it has one, the host key checked against the mirror's pin or pushmirror's own known_hosts,
//! public-key auth with the key configured for the mirror and archive (during a rotation its
//! `next_identity` first, then the current one, on the same connection), one `exec` of the ftpsync
//! command string, then the exit status.
//!
//! Time: connecting, key exchange, authentication and opening the channel are bounded by the
//! mirror's `timeout`. The command then has `timeout` (from the exec request) to exit; one still
//! running by then counts as delivered. A waiting trigger (`wait_for_sync`, and every stage 1)
//! gives its concurrency permit back once the command runs and waits up to `sync_timeout` with
//! SSH keepalives, to learn when the downstream finished.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, Preferred};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::known_hosts::{self, Entry, KeyStatus, KnownHostsFile, host_entry_name};
use super::net::tcp_connect;
use super::{Attempt, AttemptError, AttemptResult, Delivered, TriggerRequest};
use crate::config::{HostKeyPolicy, SshTarget};
use crate::vocab::clock::later;
use crate::vocab::model::{ErrorClass, KeyRole, KeyVerdict, Stage};
use crate::wire::keys::{KeyError, fingerprint, load_identity, parse_public_key, same_key};

/// The note of a trigger whose command was still running when its `timeout` ended.
pub const NOTE_STILL_RUNNING: &str = "still running";
/// The note of a trigger answered with the mirror's `busy_exit` code.
pub const NOTE_BUSY: &str = "downstream busy, re-run queued";
/// At most this many characters of a probed host's banner are kept.
const MAX_BANNER: usize = 1024;
/// At most this much of the command's stderr goes into an error message.
pub const MAX_STDERR: usize = 4096;
/// Keepalive interval of waiting sessions (runmirrors used `ServerAliveInterval=45`).
const KEEPALIVE: Duration = Duration::from_secs(45);
/// Unanswered keepalives after which a waiting session counts as lost.
const KEEPALIVE_MAX: usize = 3;
/// After the exit status, how long to wait for the rest of stderr and the channel's close. A
/// command that leaves a background child holding its output open would otherwise keep the
/// channel open long after it told us how it ended.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// The SSH transport: the sender's keys and how host keys are checked.
#[derive(Clone)]
pub struct SshTransport {
    inner: Arc<Inner>,
}

struct Inner {
    /// Every key a mirror may authenticate with, by the path the configuration names it with.
    keys: HashMap<PathBuf, Arc<PrivateKey>>,
    known_hosts: KnownHostsFile,
    policy: HostKeyPolicy,
}

impl SshTransport {
    /// Loads each key in `identities` once (refusing files others may read); a trigger
    /// authenticates with the one its mirror's [`super::Downstream::identity`] names.
    pub fn new<'a>(
        identities: impl IntoIterator<Item = &'a PathBuf>,
        known_hosts: PathBuf,
        policy: HostKeyPolicy,
    ) -> Result<Self, KeyError> {
        let mut keys = HashMap::new();
        for path in identities {
            if let std::collections::hash_map::Entry::Vacant(slot) = keys.entry(path.clone()) {
                slot.insert(Arc::new(load_identity(path)?));
            }
        }
        let known_hosts = KnownHostsFile::new(known_hosts);
        Ok(SshTransport { inner: Arc::new(Inner { keys, known_hosts, policy }) })
    }

    /// Sends one trigger to `target`: connect, verify, authenticate, exec, wait for the exit.
    pub async fn fire(&self, target: &SshTarget, req: TriggerRequest<'_>, attempt: &Attempt) -> AttemptResult {
        let waiting = req.mirror.wait_for_sync || req.stage == Stage::Stage1;
        let timeout = req.mirror.timeout;
        let keys = self.keys_for(req.mirror.identity, req.mirror.next_identity)?;
        let from = req.mirror.source_address;
        let mut session = match tokio::time::timeout(timeout, self.open(target, &keys, from, waiting)).await {
            Ok(Ok(session)) => session,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(AttemptError::transient(
                    ErrorClass::Timeout,
                    format!("no SSH session with {target} within {}", humantime::format_duration(timeout)),
                ));
            }
        };
        let keys = std::mem::take(&mut session.keys);
        let result = session.run(&req, attempt, waiting).await;
        session.close().await;
        match result {
            Ok(delivered) => Ok(Delivered { keys, ..delivered }),
            Err(e) => Err(AttemptError { keys, ..e }),
        }
    }

    /// The loaded keys the configuration named for this trigger, in the order they are offered:
    /// the next key of a rotation first, then the current one.
    pub(crate) fn keys_for(
        &self,
        identity: Option<&Path>,
        next: Option<&Path>,
    ) -> Result<Vec<(KeyRole, Arc<PrivateKey>)>, AttemptError> {
        let missing = |what: String| AttemptError::permanent(ErrorClass::Other, what);
        let path = identity.ok_or_else(|| missing("no `identity:` key applies to this mirror".to_string()))?;
        let load = |path: &Path| {
            self.inner.keys.get(path).cloned().ok_or_else(|| {
                missing(format!("key {} was not loaded when the transports were set up", path.display()))
            })
        };
        let mut keys = Vec::new();
        if let Some(next) = next {
            keys.push((KeyRole::Next, load(next)?));
        }
        keys.push((KeyRole::Current, load(path)?));
        Ok(keys)
    }

    /// Connects (from `source` when given), verifies the host key, authenticates with the first
    /// of `keys` the downstream accepts and opens a session channel.
    async fn open(
        &self,
        target: &SshTarget,
        keys: &[(KeyRole, Arc<PrivateKey>)],
        source: Option<IpAddr>,
        waiting: bool,
    ) -> Result<ExecChannel, AttemptError> {
        let check = self.host_check(target)?;
        let config = client_config(&check.expected_algorithms(), waiting);
        let stream = tcp_connect(&target.host, target.port, source).await?;
        let mut handle = client::connect_stream(config, stream, check).await.map_err(classify)?;
        let keys = authenticate(&mut handle, &target.user, keys).await?;
        let channel = handle.channel_open_session().await.map_err(|e| {
            let error = match e {
                russh::Error::ChannelOpenFailure(reason) => AttemptError::permanent(
                    ErrorClass::Other,
                    format!("the downstream refused to open a session channel ({reason:?})"),
                ),
                other => classify(SshError::Ssh(other)),
            };
            AttemptError { keys: keys.clone(), ..error }
        })?;
        Ok(ExecChannel { handle, channel, keys })
    }

    /// What this connection's host key must be: the mirror's pin, else known_hosts' entries.
    fn host_check(&self, target: &SshTarget) -> Result<HostCheck, AttemptError> {
        let name = host_entry_name(&target.host, target.port);
        let expect = match &target.host_key {
            // The config loader validated the pin; a failure here means the config changed under us.
            Some(pin) => Expect::Pinned(
                parse_public_key(pin)
                    .map_err(|e| AttemptError::permanent(ErrorClass::HostKey, format!("host_key of {target}: {e}")))?,
            ),
            None => Expect::KnownHosts(self.inner.known_hosts.entries_for(&name).map_err(|e| {
                let path = self.inner.known_hosts.path().display();
                AttemptError::permanent(ErrorClass::Other, format!("cannot read {path}: {e}"))
            })?),
        };
        Ok(HostCheck { name, expect, transport: Arc::clone(&self.inner), probe: None })
    }
}

/// What a probed host key was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyState {
    /// The mirror's pin, or recorded in known_hosts.
    Ok,
    /// Nothing is recorded for the host (a probe records nothing).
    Unknown,
    /// Another key is recorded, or pinned: the probe stops there.
    Changed,
    /// Marked `@revoked`.
    Revoked,
}

impl std::fmt::Display for HostKeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostKeyState::Ok => "ok",
            HostKeyState::Unknown => "unknown",
            HostKeyState::Changed => "changed",
            HostKeyState::Revoked => "revoked",
        })
    }
}

/// How logging in with an accepted key ended (a probe logs in and leaves: no channel is opened,
/// so no forced command runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Login {
    /// Logged in: a trigger would be let through.
    Ok,
    /// The key was accepted but the server wants more (`AuthenticationMethods`): these methods,
    /// which a trigger cannot answer.
    AlsoNeeds(Vec<String>),
    /// The key announced as acceptable was refused when signed with.
    Refused,
}

/// What a probe learned of one SSH mirror.
#[derive(Debug, Default)]
pub struct SshProbe {
    /// Its host key, and that key's fingerprint.
    pub host_key: Option<(HostKeyState, String)>,
    /// What it said of each of our keys, in the order asked (the next key first).
    pub keys: Vec<KeyVerdict>,
    /// How logging in with the first accepted key went.
    pub login: Option<Login>,
    /// A banner it showed (shown to nobody by a trigger; never answered).
    pub banner: Option<String>,
    /// The TCP connect's round trip.
    pub connect_rtt: Option<Duration>,
    /// Why the probe stopped short.
    pub error: Option<AttemptError>,
}

impl SshTransport {
    /// Probes `target` without running anything: connects (from `source`), checks the host key
    /// (an unknown one is reported, not recorded), asks whether each key would be accepted
    /// (public-key queries, no signature), logs in with the first accepted one to learn whether
    /// the server wants more, and disconnects — no session channel, so no forced command runs.
    /// Bounded by `timeout`.
    pub async fn probe(
        &self,
        target: &SshTarget,
        identity: Option<&Path>,
        next: Option<&Path>,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> SshProbe {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut out = SshProbe::default();
        let keys = match self.keys_for(identity, next) {
            Ok(keys) => keys,
            Err(e) => return SshProbe { error: Some(e), ..out },
        };
        let verdicts = Arc::new(Mutex::new(Vec::new()));
        let (rtt, login) = (Arc::new(Mutex::new(None)), Arc::new(Mutex::new(None)));
        let run = async {
            let mut check = self.host_check(target)?;
            check.probe = Some(Arc::clone(&seen));
            let config = client_config(&check.expected_algorithms(), false);
            let started = Instant::now();
            let stream = tcp_connect(&target.host, target.port, source).await?;
            *rtt.lock().unwrap_or_else(|e| e.into_inner()) = Some(started.elapsed());
            let mut handle = client::connect_stream(config, stream, check).await.map_err(classify)?;
            // The fewest round trips that tell every key apart: each key after the first is
            // only asked about (a query, no signature); the first is logged in with, which
            // answers for it; when it is refused, the first accepted of the others is.
            let mut accepted = vec![None; keys.len()];
            for (i, (_, key)) in keys.iter().enumerate().skip(1) {
                let hash = self::hash(&mut handle, key).await;
                let asked =
                    handle.authenticate_publickey_with(&target.user, key.public_key().clone(), hash, &mut Query).await;
                accepted[i] = Some(match asked {
                    Err(QueryEnd::Accepted) | Ok(client::AuthResult::Success) => true,
                    Ok(client::AuthResult::Failure { .. }) => false,
                    Err(QueryEnd::Gone) => {
                        return Err(AttemptError::transient(
                            ErrorClass::Connect,
                            "the downstream closed the connection during authentication",
                        ));
                    }
                });
            }
            for i in 0..keys.len() {
                if i > 0 && accepted[i] != Some(true) {
                    continue;
                }
                let key = &keys[i].1;
                let hash = self::hash(&mut handle, key).await;
                let result = handle
                    .authenticate_publickey(&target.user, PrivateKeyWithHashAlg::new(Arc::clone(key), hash))
                    .await
                    .map_err(|e| classify(SshError::Ssh(e)))?;
                let outcome = match result {
                    client::AuthResult::Success => Login::Ok,
                    client::AuthResult::Failure { partial_success: true, remaining_methods } => Login::AlsoNeeds(
                        remaining_methods.iter().map(|m| <&'static str>::from(m).to_string()).collect(),
                    ),
                    client::AuthResult::Failure { .. } if i == 0 => {
                        accepted[0] = Some(false);
                        continue;
                    }
                    client::AuthResult::Failure { .. } => Login::Refused,
                };
                accepted[i] = Some(true);
                *login.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
                break;
            }
            let told = keys.iter().zip(&accepted).filter_map(|((role, key), accepted)| {
                Some(KeyVerdict { role: *role, fingerprint: fingerprint(key.public_key()), accepted: (*accepted)? })
            });
            verdicts.lock().unwrap_or_else(|e| e.into_inner()).extend(told);
            let _ = handle.disconnect(Disconnect::ByApplication, "", "en").await;
            Ok(())
        };
        out.error = match tokio::time::timeout(timeout, run).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(AttemptError::transient(
                ErrorClass::Timeout,
                format!("no answer from {target} within {}", humantime::format_duration(timeout)),
            )),
        };
        let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
        out.host_key = seen.host_key;
        out.banner = seen.banner;
        out.keys = std::mem::take(&mut *verdicts.lock().unwrap_or_else(|e| e.into_inner()));
        out.login = login.lock().unwrap_or_else(|e| e.into_inner()).take();
        out.connect_rtt = rtt.lock().unwrap_or_else(|e| e.into_inner()).take();
        out
    }
}

/// The RSA signature hash `key` signs with (none for other key types).
async fn hash(handle: &mut Handle<HostCheck>, key: &PrivateKey) -> Option<HashAlg> {
    if key.algorithm().is_rsa() { rsa_hash(handle.best_supported_rsa_hash().await) } else { None }
}

/// A signer that never signs: asked to, the server has said the key would be accepted
/// (`SSH_MSG_USERAUTH_PK_OK`), which is all a probe's query wants to know.
struct Query;

/// How a query ended without a signature.
#[derive(Debug)]
enum QueryEnd {
    /// The server would accept the key.
    Accepted,
    /// The connection is gone.
    Gone,
}

impl From<russh::SendError> for QueryEnd {
    fn from(_: russh::SendError) -> Self {
        QueryEnd::Gone
    }
}

impl russh::Signer for Query {
    type Error = QueryEnd;

    async fn auth_sign(
        &mut self,
        _key: &russh::keys::agent::AgentIdentity,
        _hash_alg: Option<HashAlg>,
        _to_sign: Vec<u8>,
    ) -> Result<Vec<u8>, QueryEnd> {
        Err(QueryEnd::Accepted)
    }
}

/// Public-key auth with each of `keys` in turn until one is accepted, on one connection: what
/// the downstream said of each key offered. RSA keys sign with the best hash the server
/// announces, so a modern sshd (which refuses SHA-1 `ssh-rsa`) accepts them.
async fn authenticate(
    handle: &mut Handle<HostCheck>,
    user: &str,
    keys: &[(KeyRole, Arc<PrivateKey>)],
) -> Result<Vec<KeyVerdict>, AttemptError> {
    let mut verdicts = Vec::new();
    for (role, key) in keys {
        let hash = self::hash(handle, key).await;
        let result = handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::clone(key), hash))
            .await
            .map_err(|e| AttemptError { keys: verdicts.clone(), ..classify(SshError::Ssh(e)) })?;
        let accepted = result.success();
        let fp = fingerprint(key.public_key());
        verdicts.push(KeyVerdict { role: *role, fingerprint: fp.clone(), accepted });
        if accepted {
            return Ok(verdicts);
        }
        // Accepted, but the server wants another method too (AuthenticationMethods): no key will
        // do, and a trigger has nothing else to offer.
        if let client::AuthResult::Failure { partial_success: true, remaining_methods } = result {
            let methods: Vec<&str> = remaining_methods.iter().map(<&'static str>::from).collect();
            return Err(AttemptError {
                keys: verdicts,
                ..AttemptError::permanent(
                    ErrorClass::Auth,
                    format!(
                        "the downstream accepted key {fp} for user {user} but also asks for {}, which a trigger \
                         cannot answer",
                        methods.join(", ")
                    ),
                )
            });
        }
    }
    let refused: Vec<&str> = verdicts.iter().map(|v| v.fingerprint.as_str()).collect();
    let which = match refused.as_slice() {
        [one] => format!("key {one}"),
        all => format!("keys {}", all.join(" and ")),
    };
    Err(AttemptError {
        keys: verdicts.clone(),
        ..AttemptError::permanent(ErrorClass::Auth, format!("the downstream refused {which} for user {user}"))
    })
}

/// Connects to `host:port` only to learn the host key it offers (for `hostkeys scan`): no
/// authentication, nothing executed. Key types in `known` are asked for first, so a host with
/// several keys shows the one already recorded. Bounded by `timeout`.
pub async fn scan_host_key(
    host: &str,
    port: u16,
    known: &[Algorithm],
    timeout: Duration,
) -> Result<PublicKey, AttemptError> {
    let seen = Arc::new(Mutex::new(None));
    let grab = KeyGrab { seen: Arc::clone(&seen) };
    let exchange = async {
        let stream = tcp_connect(host, port, None).await?;
        // The grabber refuses every key, so the handshake always ends right after the key is seen.
        match client::connect_stream(client_config(known, false), stream, grab).await {
            Ok(handle) => {
                let _ = handle.disconnect(Disconnect::ByApplication, "", "en").await;
                Ok(())
            }
            Err(_) if seen.lock().unwrap_or_else(|e| e.into_inner()).is_some() => Ok(()),
            Err(e) => Err(classify_russh(e)),
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(AttemptError::transient(
                ErrorClass::Timeout,
                format!("no SSH key exchange within {}", humantime::format_duration(timeout)),
            ));
        }
    }
    let key = seen.lock().unwrap_or_else(|e| e.into_inner()).take();
    key.ok_or_else(|| AttemptError::permanent(ErrorClass::HostKey, "the server offered no plain host key"))
}

/// A handler that only notes the host key and refuses it.
struct KeyGrab {
    seen: Arc<Mutex<Option<PublicKey>>>,
}

impl client::Handler for KeyGrab {
    type Error = russh::Error;

    async fn check_server_key(&mut self, offered: &PublicKeyOrCertificate) -> Result<bool, russh::Error> {
        if let PublicKeyOrCertificate::PublicKey { key, .. } = offered {
            *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(key.clone());
        }
        Ok(false)
    }
}

/// The RSA signature hash to use, from `best_supported_rsa_hash`: what the server announced in
/// `server-sig-algs`, and rsa-sha2-256 when it announced nothing (every OpenSSH since 7.2 takes it).
fn rsa_hash(announced: Result<Option<Option<HashAlg>>, russh::Error>) -> Option<HashAlg> {
    match announced {
        Ok(Some(hash)) => hash,
        Ok(None) | Err(_) => Some(HashAlg::Sha256),
    }
}

impl Inner {
    /// accept-new: records `key` for `name` unless, by now, the file says otherwise.
    fn learn(&self, name: &str, key: &PublicKey) -> Result<(), SshError> {
        let path = self.known_hosts.path().display();
        let verdict = self
            .known_hosts
            .record_if_unknown(name, key)
            .map_err(|e| SshError::Local(format!("cannot record the host key of {name}: {e}")))?;
        match verdict {
            KeyStatus::Known => Ok(()),
            KeyStatus::Unknown => {
                tracing::info!(host = %name, fingerprint = %fingerprint(key), file = %path, "recorded a new host key");
                Ok(())
            }
            KeyStatus::Changed { expected } => Err(mismatch(name, &expected, key, &format!("known_hosts {path}"))),
            KeyStatus::Revoked => Err(SshError::HostKey(format!(
                "host key {} of {name} is revoked in known_hosts {path}",
                fingerprint(key)
            ))),
        }
    }
}

/// The client configuration of one connection: host key algorithms we hold a key for come first
/// (as OpenSSH orders them), so a host with several keys shows the one we can check.
fn client_config(known: &[Algorithm], waiting: bool) -> Arc<client::Config> {
    let mut order: Vec<Algorithm> = Vec::new();
    for algorithm in known {
        let wanted = match algorithm {
            Algorithm::Rsa { .. } => {
                vec![Algorithm::Rsa { hash: Some(HashAlg::Sha512) }, Algorithm::Rsa { hash: Some(HashAlg::Sha256) }]
            }
            other => vec![other.clone()],
        };
        for a in wanted {
            if !order.contains(&a) {
                order.push(a);
            }
        }
    }
    for a in Preferred::DEFAULT.key.iter() {
        if !order.contains(a) {
            order.push(a.clone());
        }
    }
    let preferred = Preferred { key: Cow::Owned(order), ..Preferred::DEFAULT };
    Arc::new(client::Config {
        preferred,
        nodelay: true,
        // Silence from a command that runs for hours is normal; only keepalives detect a dead peer.
        inactivity_timeout: None,
        keepalive_interval: waiting.then_some(KEEPALIVE),
        keepalive_max: KEEPALIVE_MAX,
        ..client::Config::default()
    })
}

/// Errors of a connection: russh's own, and ours from inside the handler.
#[derive(Debug, thiserror::Error)]
enum SshError {
    #[error(transparent)]
    Ssh(#[from] russh::Error),
    /// The host key is wrong, unknown or revoked.
    #[error("{0}")]
    HostKey(String),
    /// A local problem while checking the host key (known_hosts unreadable or unwritable).
    #[error("{0}")]
    Local(String),
}

fn mismatch(name: &str, expected: &[PublicKey], offered: &PublicKey, source: &str) -> SshError {
    let expected: Vec<String> = expected.iter().map(fingerprint).collect();
    SshError::HostKey(format!(
        "host key of {name} does not match: expected {} ({source}), offered {}; \
         if the downstream really changed its key, update {source}",
        expected.join(" or "),
        fingerprint(offered)
    ))
}

fn classify(e: SshError) -> AttemptError {
    match e {
        SshError::HostKey(msg) => AttemptError::permanent(ErrorClass::HostKey, msg),
        SshError::Local(msg) => AttemptError::permanent(ErrorClass::Other, msg),
        SshError::Ssh(e) => classify_russh(e),
    }
}

fn classify_russh(e: russh::Error) -> AttemptError {
    use russh::Error as E;
    let message = format!("SSH: {e}");
    match e {
        E::NoCommonAlgo { .. } | E::Version | E::UnknownAlgo => AttemptError::permanent(ErrorClass::Other, message),
        E::UnknownKey => AttemptError::permanent(ErrorClass::HostKey, message),
        E::NotAuthenticated | E::NoAuthMethod => AttemptError::permanent(ErrorClass::Auth, message),
        E::IO(_)
        | E::HUP
        | E::Disconnect
        | E::ConnectionTimeout
        | E::KeepaliveTimeout
        | E::InactivityTimeout
        | E::SendError
        | E::RecvError => AttemptError::transient(ErrorClass::Connect, message),
        _ => AttemptError::transient(ErrorClass::Other, message),
    }
}

/// What a host's key must be.
enum Expect {
    /// The mirror's `host_key:`.
    Pinned(PublicKey),
    /// The known_hosts entries for this host (possibly none).
    KnownHosts(Vec<Entry>),
}

/// One connection's russh handler: it knows which host it talks to and what key to expect,
/// because russh does not tell `check_server_key` which host it is checking.
struct HostCheck {
    name: String,
    expect: Expect,
    transport: Arc<Inner>,
    /// Set for a probe: what the host showed is noted here, and an unknown host key is reported
    /// (never recorded, whatever `host_key_policy` says).
    probe: Option<Arc<Mutex<Seen>>>,
}

/// What a probed host showed before authentication.
#[derive(Debug, Default)]
struct Seen {
    host_key: Option<(HostKeyState, String)>,
    banner: Option<String>,
}

impl HostCheck {
    /// Algorithms of the keys we could accept, to be negotiated first.
    fn expected_algorithms(&self) -> Vec<Algorithm> {
        match &self.expect {
            Expect::Pinned(pin) => vec![pin.algorithm()],
            Expect::KnownHosts(entries) => entries.iter().filter(|e| !e.revoked).map(|e| e.key.algorithm()).collect(),
        }
    }

    fn verify(&self, offered: &PublicKey) -> Result<bool, SshError> {
        let Some(seen) = &self.probe else { return self.judge(offered) };
        let status = match &self.expect {
            Expect::KnownHosts(entries) => Some(known_hosts::judge(entries, &self.name, offered)),
            Expect::Pinned(_) => None,
        };
        let (state, verdict) = match status {
            Some(KeyStatus::Unknown) => (HostKeyState::Unknown, Ok(true)),
            Some(KeyStatus::Revoked) => (HostKeyState::Revoked, self.judge(offered)),
            _ => match self.judge(offered) {
                Ok(ok) => (HostKeyState::Ok, Ok(ok)),
                Err(e) => (HostKeyState::Changed, Err(e)),
            },
        };
        seen.lock().unwrap_or_else(|e| e.into_inner()).host_key = Some((state, fingerprint(offered)));
        verdict
    }

    fn judge(&self, offered: &PublicKey) -> Result<bool, SshError> {
        let t = &self.transport;
        let file = format!("known_hosts {}", t.known_hosts.path().display());
        match &self.expect {
            Expect::Pinned(pin) if same_key(pin, offered) => Ok(true),
            Expect::Pinned(pin) => {
                Err(mismatch(&self.name, std::slice::from_ref(pin), offered, "the mirror's host_key:"))
            }
            Expect::KnownHosts(entries) => match known_hosts::judge(entries, &self.name, offered) {
                KeyStatus::Known => Ok(true),
                KeyStatus::Changed { expected } => Err(mismatch(&self.name, &expected, offered, &file)),
                KeyStatus::Revoked => Err(SshError::HostKey(format!(
                    "host key {} of {} is revoked in {file}",
                    fingerprint(offered),
                    self.name
                ))),
                KeyStatus::Unknown if t.policy == HostKeyPolicy::AcceptNew => {
                    t.learn(&self.name, offered).map(|()| true)
                }
                KeyStatus::Unknown => Err(SshError::HostKey(format!(
                    "host key {} of {} is not in {file} (host_key_policy: strict); \
                     record it with `pushmirror hostkeys scan` or pin it with host_key:",
                    fingerprint(offered),
                    self.name
                ))),
            },
        }
    }
}

impl client::Handler for HostCheck {
    type Error = SshError;

    /// A banner is shown to people; a trigger has none to show it to. A probe reports it.
    async fn auth_banner(&mut self, banner: &str, _session: &mut client::Session) -> Result<(), SshError> {
        if let Some(seen) = &self.probe {
            let shown: String = banner.trim().chars().take(MAX_BANNER).collect();
            seen.lock().unwrap_or_else(|e| e.into_inner()).banner = Some(shown);
        }
        Ok(())
    }

    async fn check_server_key(&mut self, offered: &PublicKeyOrCertificate) -> Result<bool, SshError> {
        match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.verify(key),
            // Not reachable: no certificate algorithm is advertised (Preferred::host_key_certificates is empty).
            PublicKeyOrCertificate::Certificate(_) => Err(SshError::HostKey(format!(
                "{} offered a host certificate; pushmirror checks plain host keys",
                self.name
            ))),
        }
    }
}

/// An authenticated connection with one session channel.
struct ExecChannel {
    handle: Handle<HostCheck>,
    channel: russh::Channel<client::Msg>,
    /// What the downstream said of the keys offered.
    keys: Vec<KeyVerdict>,
}

/// How the remote command ended.
enum Exit {
    Status(u32),
    Signal(String),
}

/// What one exec has told us so far.
#[derive(Default)]
struct ExecState {
    /// When the downstream confirmed it runs the command.
    accepted: Option<Instant>,
    exit: Option<Exit>,
    /// When the exit status arrived.
    exited: Option<Instant>,
    stderr: Vec<u8>,
}

impl ExecState {
    fn push_stderr(&mut self, data: &[u8]) {
        let room = MAX_STDERR.saturating_sub(self.stderr.len());
        self.stderr.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }

    /// From the command's start to its exit, as the downstream reported them.
    fn ran_for(&self) -> Option<Duration> {
        Some(self.exited?.saturating_duration_since(self.accepted?))
    }
}

impl ExecChannel {
    /// Runs the trigger's command and judges how it ended.
    async fn run(&mut self, req: &TriggerRequest<'_>, attempt: &Attempt, waiting: bool) -> AttemptResult {
        let mirror = req.mirror;
        let exec_at = Instant::now();
        self.channel.exec(true, req.command_string()).await.map_err(|e| classify(SshError::Ssh(e)))?;
        let mut progress = ExecState::default();
        let mut deadline = later(exec_at, mirror.timeout);
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.channel.wait()).await {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(_) if progress.exit.is_some() => break,
                Err(_) => return out_of_time(&progress, req, waiting),
            };
            match msg {
                ChannelMsg::Success if progress.accepted.is_none() => {
                    progress.accepted = Some(Instant::now());
                    if waiting {
                        // The trigger is delivered; only waiting remains, which must not hold a permit.
                        attempt.release_permit();
                        deadline = later(Instant::now(), mirror.sync_timeout);
                    }
                }
                ChannelMsg::Failure if progress.accepted.is_none() => {
                    return Err(AttemptError::permanent(
                        ErrorClass::Other,
                        "the downstream refused to run the command",
                    ));
                }
                ChannelMsg::ExtendedData { data, ext: 1 } => progress.push_stderr(&data),
                ChannelMsg::ExitStatus { exit_status } => {
                    progress.exit = Some(Exit::Status(exit_status));
                    progress.exited = Some(Instant::now());
                    deadline = deadline.min(Instant::now() + EXIT_GRACE);
                }
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    progress.exit = Some(Exit::Signal(format!("{signal_name:?}")));
                    progress.exited = Some(Instant::now());
                    deadline = deadline.min(Instant::now() + EXIT_GRACE);
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        judge_exit(&progress, req, progress.ran_for().filter(|_| waiting))
    }

    /// Ends the connection politely; the remote command, if still running, is not stopped by this
    /// (no pty: sshd closes its pipes, it keeps running).
    async fn close(self) {
        let _ = self.channel.close().await;
        let _ = self.handle.disconnect(Disconnect::ByApplication, "", "en").await;
    }
}

/// The command did not exit in time.
fn out_of_time(progress: &ExecState, req: &TriggerRequest<'_>, waiting: bool) -> AttemptResult {
    let mirror = req.mirror;
    if progress.accepted.is_none() {
        return Err(AttemptError::transient(
            ErrorClass::Timeout,
            format!("the downstream did not confirm the command within {}", humantime::format_duration(mirror.timeout)),
        ));
    }
    let note = if waiting {
        format!("{NOTE_STILL_RUNNING} after sync_timeout {}", humantime::format_duration(mirror.sync_timeout))
    } else {
        NOTE_STILL_RUNNING.to_string()
    };
    Ok(Delivered { note: Some(note), ..Delivered::default() })
}

/// Exit 0 and the mirror's `busy_exit` are delivered; any other end is a permanent failure.
fn judge_exit(progress: &ExecState, req: &TriggerRequest<'_>, sync_duration: Option<Duration>) -> AttemptResult {
    let stderr = progress.stderr_text();
    let with_stderr = |what: String| if stderr.is_empty() { what } else { format!("{what}: {stderr}") };
    match &progress.exit {
        Some(Exit::Status(code)) => {
            let code = i32::try_from(*code).unwrap_or(i32::MAX);
            if code == 0 || Some(code) == req.mirror.busy_exit {
                let note = (code != 0).then(|| NOTE_BUSY.to_string());
                return Ok(Delivered { note, exit_code: Some(code), sync_duration, ..Delivered::default() });
            }
            let mut e =
                AttemptError::permanent(ErrorClass::RemoteExit, with_stderr(format!("remote command exited {code}")));
            e.exit_code = Some(code);
            Err(e)
        }
        Some(Exit::Signal(signal)) => Err(AttemptError::permanent(
            ErrorClass::RemoteExit,
            with_stderr(format!("remote command killed by signal {signal}")),
        )),
        // The connection ended under the command; it may or may not have run.
        None => Err(AttemptError::transient(
            ErrorClass::Connect,
            with_stderr("the session closed before the command reported an exit status".to_string()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_signatures_follow_what_the_server_announces() {
        assert_eq!(rsa_hash(Ok(Some(Some(HashAlg::Sha512)))), Some(HashAlg::Sha512));
        assert_eq!(rsa_hash(Ok(Some(None))), None, "a server that announces only ssh-rsa gets ssh-rsa");
        assert_eq!(rsa_hash(Ok(None)), Some(HashAlg::Sha256), "no announcement: never fall back to SHA-1");
    }

    #[test]
    fn known_key_types_are_negotiated_first() {
        let config = client_config(&[Algorithm::Rsa { hash: None }], false);
        let key = &config.preferred.key;
        assert_eq!(key[0], Algorithm::Rsa { hash: Some(HashAlg::Sha512) });
        assert_eq!(key[1], Algorithm::Rsa { hash: Some(HashAlg::Sha256) });
        assert!(key.contains(&Algorithm::Ed25519));
        assert_eq!(client_config(&[], true).preferred.key[0], Algorithm::Ed25519);
        assert_eq!(client_config(&[], true).keepalive_interval, Some(KEEPALIVE));
    }

    #[tokio::test]
    async fn a_connection_leaves_from_its_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let from: IpAddr = "127.0.0.2".parse().unwrap();
        let (stream, accepted) = tokio::join!(tcp_connect("127.0.0.1", port, Some(from)), listener.accept());
        assert_eq!(stream.unwrap().local_addr().unwrap().ip(), from);
        assert_eq!(accepted.unwrap().1.ip(), from, "the server sees the source address");

        let err = tcp_connect("127.0.0.1", port, Some("::1".parse().unwrap())).await.unwrap_err();
        assert_eq!((err.class, err.transient), (ErrorClass::Connect, true), "{}", err.message);
        assert!(err.message.contains("has no IPv6 address to reach from source_address ::1"), "{}", err.message);
    }

    #[tokio::test]
    async fn an_ipv6_source_address_is_bound_too() {
        // Not every build host has IPv6 loopback; where it has none there is nothing to bind.
        let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else { return };
        let port = listener.local_addr().unwrap().port();
        let from: IpAddr = "::1".parse().unwrap();
        let (stream, accepted) = tokio::join!(tcp_connect("::1", port, Some(from)), listener.accept());
        assert_eq!(stream.unwrap().local_addr().unwrap().ip(), from);
        assert_eq!(accepted.unwrap().1.ip(), from);
    }

    #[test]
    fn stderr_is_capped() {
        let mut p = ExecState::default();
        p.push_stderr(&[b'x'; 3000]);
        p.push_stderr(&[b'y'; 3000]);
        assert_eq!(p.stderr.len(), MAX_STDERR);
    }
}
