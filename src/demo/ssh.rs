//! An in-process SSH receiver (a russh server): accepts only the client keys it was given,
//! records every exec request, and answers as scripted — exit at once, exit after a while, or
//! never — with optional stderr text, like a forced command would.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::{Algorithm, PrivateKey, PublicKey};
use russh::server::{self, Auth, Msg, PublicKeyOffer, Server as _, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::sync::Notify;

use super::Script;
use crate::wire::keys::same_key;

/// How the receiver's "forced command" behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Exit with this status at once.
    Exit(u32),
    /// Run for this long (tokio time), then exit with the status.
    ExitAfter(Duration, u32),
    /// Never exit; the session lasts until the client closes it.
    Hang,
}

/// One exec request the receiver saw.
#[derive(Debug, Clone)]
pub struct Exec {
    /// The remote user the client logged in as.
    pub user: String,
    /// The signature algorithm of its public-key login (`ssh-ed25519`, `rsa-sha2-512`, …).
    pub auth_algorithm: String,
    /// The `SHA256:…` fingerprint of the key it logged in with.
    pub key_fingerprint: String,
    /// The address and port it connected from.
    pub peer: Option<SocketAddr>,
    /// The command string, as `$SSH_ORIGINAL_COMMAND` would hold it.
    pub command: String,
    /// When it arrived (tokio time).
    pub at: tokio::time::Instant,
}

/// What receivers saw; may be shared by many receivers to count across them.
#[derive(Debug, Default)]
pub struct ExecLog {
    execs: Mutex<Vec<Exec>>,
    changed: Notify,
}

impl ExecLog {
    /// Every exec request so far.
    pub fn execs(&self) -> Vec<Exec> {
        self.execs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The command strings so far, in order of arrival.
    pub fn commands(&self) -> Vec<String> {
        self.execs().into_iter().map(|e| e.command).collect()
    }

    /// The number of exec requests so far.
    pub fn count(&self) -> usize {
        self.execs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Waits until at least `n` exec requests have arrived.
    pub async fn wait_for(&self, n: usize) {
        loop {
            let changed = self.changed.notified();
            if self.count() >= n {
                return;
            }
            changed.await;
        }
    }

    fn record(&self, exec: Exec) {
        self.execs.lock().unwrap_or_else(|e| e.into_inner()).push(exec);
        self.changed.notify_waiters();
    }
}

struct State {
    log: Arc<ExecLog>,
    authorized: Vec<PublicKey>,
    script: Script<Behaviour>,
    stderr: Option<String>,
}

impl State {
    fn authorizes(&self, key: &PublicKey) -> bool {
        self.authorized.iter().any(|k| same_key(k, key))
    }

    fn next_behaviour(&self) -> Behaviour {
        self.script.next()
    }
}

/// Configures an [`SshReceiver`].
#[derive(Default)]
pub struct SshReceiverBuilder {
    log: Option<Arc<ExecLog>>,
    authorized: Vec<PublicKey>,
    script: Vec<Behaviour>,
    default: Option<Behaviour>,
    stderr: Option<String>,
    host_key: Option<PrivateKey>,
    port: u16,
}

impl SshReceiverBuilder {
    /// Accept logins with this client key (repeatable); no other key gets in.
    pub fn authorize(mut self, key: &PublicKey) -> Self {
        self.authorized.push(key.clone());
        self
    }

    /// Record into a shared log.
    pub fn log(mut self, log: Arc<ExecLog>) -> Self {
        self.log = Some(log);
        self
    }

    /// Answer the first exec requests with these behaviours, in order.
    pub fn script(mut self, behaviours: impl IntoIterator<Item = Behaviour>) -> Self {
        self.script.extend(behaviours);
        self
    }

    /// Answer every other exec request like this (default: exit 0 at once).
    pub fn behaviour(mut self, behaviour: Behaviour) -> Self {
        self.default = Some(behaviour);
        self
    }

    /// Write this to stderr before exiting (or at once, for [`Behaviour::Hang`]).
    pub fn stderr(mut self, text: impl Into<String>) -> Self {
        self.stderr = Some(text.into());
        self
    }

    /// Use this host key instead of a random ed25519 one (to play a host whose key changed).
    pub fn host_key(mut self, key: PrivateKey) -> Self {
        self.host_key = Some(key);
        self
    }

    /// Listen on this port instead of a free one (to play a host that came back with a new key).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Binds 127.0.0.1 (port 0 unless [`SshReceiverBuilder::port`] says otherwise) and serves.
    pub async fn start(self) -> std::io::Result<SshReceiver> {
        let host_key = match self.host_key {
            Some(k) => k,
            None => random_host_key()?,
        };
        let public = host_key.public_key().clone();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            log: self.log.unwrap_or_default(),
            authorized: self.authorized,
            script: Script::new(self.script, self.default.unwrap_or(Behaviour::Exit(0))),
            stderr: self.stderr,
        });
        let config = Arc::new(server::Config {
            keys: vec![host_key],
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            // A hanging command is silent on purpose; the client decides when to leave.
            inactivity_timeout: None,
            // Refusals stay quick so tests of a wrong key do not wait a second each.
            auth_rejection_time: Duration::from_millis(10),
            auth_rejection_time_initial: Some(Duration::ZERO),
            nodelay: true,
            ..server::Config::default()
        });
        let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
        let mut server = Receiver { state: Arc::clone(&state) };
        // The accept loop borrows the listener and the server, so both live in its task.
        let task = tokio::spawn(async move {
            let running = server.run_on_socket(config, &listener);
            let _ = handle_tx.send(running.handle());
            let _ = running.await;
        });
        let shutdown = handle_rx.await.map_err(std::io::Error::other)?;
        Ok(SshReceiver { addr, host_key: public, state, task, shutdown })
    }
}

/// A fresh ed25519 host key.
pub fn random_host_key() -> std::io::Result<PrivateKey> {
    PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(std::io::Error::other)
}

/// An SSH receiver on 127.0.0.1 with a port and host key of its own. Stops when dropped.
pub struct SshReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    host_key: PublicKey,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
    shutdown: server::RunningServerHandle,
}

impl SshReceiver {
    /// A receiver to configure.
    pub fn builder() -> SshReceiverBuilder {
        SshReceiverBuilder::default()
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Its host public key.
    pub fn host_key(&self) -> &PublicKey {
        &self.host_key
    }

    /// Its host key as one OpenSSH public key line (`ssh-ed25519 AAAA…`), as `host_key:` takes it.
    pub fn host_key_line(&self) -> String {
        self.host_key.to_openssh().unwrap_or_default()
    }

    /// Its known_hosts line: `[127.0.0.1]:PORT ssh-ed25519 AAAA…`.
    pub fn known_hosts_line(&self) -> String {
        format!("[{}]:{} {}", self.addr.ip(), self.addr.port(), self.host_key_line())
    }

    /// What this receiver (and any sharing its log) saw.
    pub fn log(&self) -> &Arc<ExecLog> {
        &self.state.log
    }

    /// Stops serving and waits until the port is free again.
    pub async fn stop(mut self) {
        self.shutdown.shutdown("receiver stopped".into());
        self.task.abort();
        // The listener is dropped when the aborted task is; awaiting it makes that certain.
        let _ = (&mut self.task).await;
    }
}

impl Drop for SshReceiver {
    fn drop(&mut self) {
        // Disconnects open sessions too, which aborting the accept loop alone would not.
        self.shutdown.shutdown("receiver stopped".into());
        self.task.abort();
    }
}

struct Receiver {
    state: Arc<State>,
}

impl server::Server for Receiver {
    type Handler = Connection;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> Connection {
        Connection {
            state: Arc::clone(&self.state),
            peer,
            user: String::new(),
            auth_algorithm: String::new(),
            key_fingerprint: String::new(),
        }
    }
}

/// One client connection.
struct Connection {
    state: Arc<State>,
    peer: Option<SocketAddr>,
    user: String,
    auth_algorithm: String,
    key_fingerprint: String,
}

impl server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(&mut self, _user: &str, offer: PublicKeyOffer<'_>) -> Result<Auth, Self::Error> {
        Ok(if self.state.authorizes(offer.public_key) { Auth::Accept } else { Auth::reject() })
    }

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        if !self.state.authorizes(key.public_key) {
            return Ok(Auth::reject());
        }
        self.user = user.to_string();
        self.auth_algorithm = key.algorithm.as_str().to_string();
        self.key_fingerprint = crate::wire::keys::fingerprint(key.public_key);
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let state = &self.state;
        state.log.record(Exec {
            user: self.user.clone(),
            auth_algorithm: self.auth_algorithm.clone(),
            key_fingerprint: self.key_fingerprint.clone(),
            peer: self.peer,
            command: String::from_utf8_lossy(data).into_owned(),
            at: tokio::time::Instant::now(),
        });
        session.channel_success(channel)?;
        let behaviour = state.next_behaviour();
        let stderr = state.stderr.clone();
        let handle = session.handle();
        // The session loop must keep running while the "command" does, so it runs in a task.
        tokio::spawn(async move {
            if let Some(text) = stderr {
                let _ = handle.extended_data(channel, 1, text.into_bytes()).await;
            }
            let status = match behaviour {
                Behaviour::Exit(status) => status,
                Behaviour::ExitAfter(after, status) => {
                    tokio::time::sleep(after).await;
                    status
                }
                Behaviour::Hang => return,
            };
            let _ = handle.exit_status_request(channel, status).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        Ok(())
    }
}
