//! From a configured [`Broker`] to a client's connection options (credentials, TLS with our own
//! rustls config, bounds), and from a failed connection to an [`ErrorClass`] — by its type.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, DisconnectReasonCode};
use rumqttc::v5::{ConnectionError, MqttOptions, StateError};
use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Broker;
use crate::sys::fsutil::{limit, read_bounded};
use crate::vocab::model::ErrorClass;
use crate::wire::mqtt::MAX_MESSAGE;

/// How long the broker keeps a persistent session (and its queued messages) after we left.
pub const SESSION_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// QoS 1 publishes of ours the broker has not acknowledged yet, at most.
pub const OUTGOING_INFLIGHT: u16 = 64;

/// Whether the broker keeps our session between connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerSession {
    /// Clean start off, kept for [`SESSION_EXPIRY`]: what is published for us while we are away
    /// (triggers for a subscriber, acks for the daemon) is delivered when we come back.
    Persistent,
    /// A fresh session that ends with the connection (a one-shot CLI push).
    Once,
}

/// The options of one client: `client_id`, credentials, keepalive, TLS, the session kind, and
/// incoming packets bounded by [`MAX_MESSAGE`].
pub fn options(broker: &Broker, client_id: &str, session: BrokerSession) -> anyhow::Result<MqttOptions> {
    let mut options = MqttOptions::new(client_id, &broker.host, broker.port);
    options.set_keep_alive(broker.keepalive);
    options.set_connection_timeout(10);
    // Topic and user property, a trigger's JSON and its signature, with room to spare.
    options.set_max_packet_size(Some(MAX_MESSAGE as u32 * 2));
    // rumqttc sizes its table of unacknowledged publishes by this, up front: the default
    // (65,535) costs about 10 MB per client. A sender has one trigger in flight at a time, a
    // subscriber an ack or two.
    options.set_outgoing_inflight_upper_limit(OUTGOING_INFLIGHT);
    match session {
        BrokerSession::Persistent => {
            options.set_clean_start(false);
            options.set_session_expiry_interval(Some(SESSION_EXPIRY.as_secs() as u32));
        }
        BrokerSession::Once => {
            options.set_clean_start(true);
        }
    }
    if let (Some(user), Some(password)) = (&broker.username, &broker.password) {
        options.set_credentials(user, password.expose());
    } else if let Some(user) = &broker.username {
        options.set_credentials(user, "");
    }
    if broker.tls {
        options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(tls_config(broker)?))));
    }
    Ok(options)
}

/// The TLS client config: the broker's certificate checked against `ca_file` (else the system's
/// roots), our certificate when one is configured; aws-lc-rs like every other TLS in pushmirror.
fn tls_config(broker: &Broker) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match &broker.ca_file {
        Some(path) => {
            for cert in certificates(path)? {
                roots.add(cert).with_context(|| format!("{}: not a usable CA certificate", path.display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match (&broker.client_cert, &broker.client_key) {
        (Some(cert), Some(key)) => {
            let bytes = read_bounded(key, limit::KEY).with_context(|| format!("cannot read {}", key.display()))?;
            let key_der = PrivateKeyDer::from_pem_slice(&bytes)
                .with_context(|| format!("{}: no PEM private key", key.display()))?;
            builder.with_client_auth_cert(certificates(cert)?, key_der).context("the client certificate and key")?
        }
        _ => builder.with_no_client_auth(),
    })
}

/// Every certificate of a PEM file (at least one).
fn certificates(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes = read_bounded(path, limit::KEY).with_context(|| format!("cannot read {}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{}: no certificate in it", path.display());
    Ok(certs)
}

/// Whether the broker ended the connection because another client logged in with our client id.
pub fn taken_over(error: &ConnectionError) -> bool {
    matches!(
        error,
        ConnectionError::MqttState(StateError::ServerDisconnect {
            reason_code: DisconnectReasonCode::SessionTakenOver,
            ..
        })
    )
}

/// Reconnection delays: 200 ms doubling to 30 s, back to the start only once a connection has
/// lasted (a broker that accepts and then drops us is not hammered five times a second).
#[derive(Debug)]
pub struct Reconnect {
    delay: Duration,
    connected: Option<tokio::time::Instant>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect { delay: Self::FIRST, connected: None }
    }
}

impl Reconnect {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(30);
    /// How long a connection must last for the next failure to start from [`Self::FIRST`].
    const STABLE: Duration = Duration::from_secs(10);

    /// A connection was made.
    pub fn connected(&mut self) {
        self.connected = Some(tokio::time::Instant::now());
    }

    /// The delay before the next attempt, after a failure.
    pub fn after_failure(&mut self) -> Duration {
        if self.connected.take().is_some_and(|at| at.elapsed() >= Self::STABLE) {
            self.delay = Self::FIRST;
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(Self::MAX);
        delay
    }
}

/// The class of a failed connection, from the error's type: refused credentials are `auth`, a
/// failed handshake `tls`, a name that does not resolve `dns`, the rest `connect`. Whether a retry
/// can help: not for refused credentials.
pub fn classify(error: &ConnectionError) -> (ErrorClass, bool) {
    match error {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized | ConnectReturnCode::Banned,
        ) => (ErrorClass::Auth, false),
        ConnectionError::Tls(_) => (ErrorClass::Tls, true),
        ConnectionError::Io(e) if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) => {
            (ErrorClass::Tls, true)
        }
        ConnectionError::Timeout(_) => (ErrorClass::Timeout, true),
        _ => (ErrorClass::Connect, true),
    }
}

/// Whether the broker lets us in with our credentials: one fresh session (its own client id, so
/// the daemon's session is not taken over), CONNECT and CONNACK, then DISCONNECT; nothing is
/// published or subscribed. The round trip of the handshake, or the class and words of its failure.
pub async fn probe_broker(broker: &Broker, timeout: Duration) -> Result<Duration, (ErrorClass, String)> {
    let client_id = format!("{}-probe-{}", broker.client_id, std::process::id());
    let options =
        options(broker, &client_id, BrokerSession::Once).map_err(|e| (ErrorClass::Other, format!("{e:#}")))?;
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 4);
    let started = tokio::time::Instant::now();
    let handshake = async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_))) => {
                    return Ok(started.elapsed());
                }
                Ok(_) => {}
                Err(e) => return Err((classify(&e).0, format!("broker {broker}: {e}"))),
            }
        }
    };
    let result = match tokio::time::timeout(timeout, handshake).await {
        Ok(result) => result,
        Err(_) => Err((
            ErrorClass::Timeout,
            format!("no answer from broker {broker} within {}", humantime::format_duration(timeout)),
        )),
    };
    if result.is_ok() {
        let _ = client.disconnect().await;
        // Sends the DISCONNECT; bounded, the answer does not matter.
        let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_to_its_cap_and_starts_over_only_after_a_lasting_connection() {
        let mut b = Reconnect::default();
        let first: Vec<u64> = (0..10).map(|_| b.after_failure().as_millis() as u64).collect();
        assert_eq!(first, [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
        b.connected();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.after_failure(), Duration::from_secs(30), "dropped at once: no reset");
        b.connected();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.after_failure(), Duration::from_millis(200));
    }
}
