//! Connections of our own (SSH triggers, probes): name resolution and TCP connects told apart
//! by class, bound to a source address when one is configured; and a TLS handshake for probes.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use tokio::net::{TcpSocket, TcpStream};

use super::AttemptError;
use crate::vocab::model::ErrorClass;

/// Resolves and connects, telling name-resolution failures apart from unreachable hosts. With a
/// `source` address the socket is bound to it first, and only the host's addresses of the same
/// family are tried (an IPv4 source cannot reach an IPv6 address).
pub async fn tcp_connect(host: &str, port: u16, source: Option<IpAddr>) -> Result<TcpStream, AttemptError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| AttemptError::transient(ErrorClass::Dns, format!("cannot resolve {host}: {e}")))?
        .collect();
    let mut last = AttemptError::transient(ErrorClass::Dns, format!("{host} has no address"));
    let reachable: Vec<SocketAddr> = match source {
        Some(from) => {
            let same_family: Vec<SocketAddr> =
                addrs.iter().copied().filter(|a| a.is_ipv4() == from.is_ipv4()).collect();
            if same_family.is_empty() && !addrs.is_empty() {
                let family = if from.is_ipv4() { "IPv4" } else { "IPv6" };
                last = AttemptError::transient(
                    ErrorClass::Connect,
                    format!("{host} has no {family} address to reach from source_address {from}"),
                );
            }
            same_family
        }
        None => addrs,
    };
    for addr in reachable {
        match connect_from(addr, source).await {
            Ok(stream) => {
                // The handshake is many small packets; Nagle would delay each.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// One TCP connection to `addr`, leaving from `source` when given.
async fn connect_from(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, AttemptError> {
    let failed = |what: String| AttemptError::transient(ErrorClass::Connect, what);
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
        .map_err(|e| failed(format!("cannot open a socket for {addr}: {e}")))?;
    if let Some(from) = source {
        // The check verified the address is local; one that has gone since (a failover moved
        // it) may come back, so this is worth another attempt too.
        socket
            .bind(SocketAddr::new(from, 0))
            .map_err(|e| failed(format!("cannot bind source_address {from} to connect to {addr}: {e}")))?;
    }
    socket.connect(addr).await.map_err(|e| failed(format!("cannot connect to {addr}: {e}")))
}

/// The system's CA roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured); empty where there are none
/// (no `ca-certificates`).
pub fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}

/// What a refused certificate adds to its message when the system has no CA roots at all
/// (`no_roots`) and the refusal, among `causes`, is rustls not knowing the issuer — the one
/// failure a missing CA bundle causes (by type); else nothing.
pub fn no_roots_hint<'a>(
    mut causes: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>,
    no_roots: bool,
) -> &'static str {
    let unknown_issuer = |e: &(dyn std::error::Error + 'static)| {
        matches!(
            e.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))
        )
    };
    if no_roots && causes.any(unknown_issuer) {
        " (no CA certificates were found on this system: install ca-certificates, or set SSL_CERT_FILE)"
    } else {
        ""
    }
}

/// The TLS client configuration of HTTPS triggers and probes: `roots` (the system's: see
/// [`system_roots`]), aws-lc-rs like every other TLS here.
pub fn tls_client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A TLS handshake with `host` over `stream` (certificate checked against the system's roots,
/// aws-lc-rs like every other TLS here); nothing is sent after it.
pub async fn tls_handshake(stream: TcpStream, host: &str) -> Result<(), AttemptError> {
    let tls = |what: String| AttemptError::transient(ErrorClass::Tls, what);
    // The system's roots are read once per process, not once per mirror probed.
    static CONFIG: OnceLock<Result<(Arc<rustls::ClientConfig>, bool), String>> = OnceLock::new();
    let (config, no_roots) = CONFIG
        .get_or_init(|| {
            let roots = system_roots();
            let no_roots = roots.is_empty();
            tls_client_config(roots).map(|config| (Arc::new(config), no_roots)).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| tls(format!("TLS setup: {e}")))?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| tls(format!("{host} is not a TLS server name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = connector.connect(name, stream).await.map_err(|e| {
        // tokio-rustls hands a refused certificate up as an `io::Error` wrapping the rustls one.
        let wrapped = e.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static));
        tls(format!("TLS with {host}: {e}{}", no_roots_hint(wrapped.into_iter(), no_roots)))
    })?;
    drop(stream);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A TLS server on loopback with a self-signed certificate for 127.0.0.1, accepting one
    /// connection: its port, and the outcome of its handshake.
    pub(crate) async fn self_signed_server() -> (u16, tokio::task::JoinHandle<std::io::Result<()>>) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(signing_key.serialize_der());
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.der().clone()], key.into())
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.map(drop)
        });
        (port, server)
    }

    /// A probe's handshake checks the certificate against the system's roots, the first time and
    /// every time after (the configuration is built once): a self-signed one is refused as `tls`.
    #[tokio::test]
    async fn a_probe_refuses_a_self_signed_certificate_every_time() {
        for _ in 0..2 {
            let (port, server) = self_signed_server().await;
            let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let err = tls_handshake(stream, "127.0.0.1").await.unwrap_err();
            assert_eq!(err.class, ErrorClass::Tls, "{}", err.message);
            assert!(server.await.unwrap().is_err(), "the server saw a completed handshake");
        }
    }
}
