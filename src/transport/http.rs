//! HTTP triggers: one request per attempt over a shared reqwest client (rustls, keep-alive) —
//! one per source address, since reqwest binds its local address per client.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::io;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Client, Response, StatusCode};

use super::{AttemptError, AttemptResult, Delivered, TriggerRequest};
use crate::config::{HttpMethod, HttpTarget};
use crate::vocab::model::ErrorClass;
use crate::wire::signed_http;

/// At most this much of an answer's body is read; the rest is dropped.
pub const MAX_BODY: usize = 64 * 1024;

/// The shared HTTP clients: one that leaves from whatever address the routing table picks, and
/// one per configured source address.
#[derive(Clone)]
pub struct HttpTransport {
    clients: HashMap<Option<IpAddr>, Client>,
}

impl HttpTransport {
    /// Builds a client for unbound triggers and one bound to each of `sources` (each keeps its own
    /// connection pool, so connections are reused per address, never per request). Fails only if
    /// TLS cannot be initialised.
    /// Clients for every source address, each keeping at most `idle_per_host` idle connections
    /// to a host for reuse (5 s).
    pub fn new(sources: impl IntoIterator<Item = IpAddr>, idle_per_host: usize) -> anyhow::Result<Self> {
        let mut clients = HashMap::from([(None, client(None, idle_per_host)?)]);
        for source in sources {
            if let std::collections::hash_map::Entry::Vacant(slot) = clients.entry(Some(source)) {
                slot.insert(client(Some(source), idle_per_host)?);
            }
        }
        Ok(HttpTransport { clients })
    }

    /// Sends one trigger to `target`: the answer's status line and headers are bounded by the
    /// mirror's timeout, its body by [`body_bound`]. A 2xx status is a delivered trigger, however
    /// slowly the body follows.
    pub async fn fire(&self, target: &HttpTarget, req: TriggerRequest<'_>) -> AttemptResult {
        let timeout = req.mirror.timeout;
        let response = match tokio::time::timeout(timeout, self.send(target, req)).await {
            Ok(response) => response?,
            Err(_) => {
                return Err(AttemptError::transient(
                    ErrorClass::Timeout,
                    format!("no answer within {}", humantime::format_duration(timeout)),
                ));
            }
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = drain_body(response, body_bound(timeout)).await;
        judge(status, retry_after)
            .map(|mut delivered| {
                if body == Body::Abandoned {
                    delivered.note = Some(BODY_ABANDONED.to_string());
                }
                delivered
            })
            .map_err(|mut err| {
                // `pushmirror receive` answers a signature more than five minutes from its clock
                // with an empty 401, as it answers a wrong one: say the likely cause.
                if status == StatusCode::UNAUTHORIZED && target.hmac_secret.is_some() {
                    err.message.push_str(
                        " (a signed trigger: a receiver refuses signatures made more than 5 minutes from its own \
                         clock, or with another hmac_secret — is either clock off?)",
                    );
                }
                err
            })
    }

    /// Sends the request; resolves once the answer's status line and headers have arrived.
    async fn send(&self, target: &HttpTarget, req: TriggerRequest<'_>) -> Result<Response, AttemptError> {
        let source = req.mirror.source_address;
        let client = self.clients.get(&source).ok_or_else(|| {
            let from = source.map(|s| s.to_string()).unwrap_or_default();
            AttemptError::permanent(ErrorClass::Other, format!("no HTTP client was set up for source_address {from}"))
        })?;
        let url = req.substitute_url(target.url.expose()).map_err(|e| AttemptError::permanent(ErrorClass::Other, e))?;
        let mut builder = match target.method {
            HttpMethod::Get => client.get(url),
            HttpMethod::Post => {
                let sent_at = SystemTime::now();
                let body = serde_json::to_vec(&serde_json::json!({
                    "archive": req.archive,
                    "stage": req.stage,
                    "serial": req.serial,
                    // Milliseconds make every attempt's body, and so its signature, unique: a
                    // receiver refuses a signature it has already seen as a replay.
                    "sent_at": humantime::format_rfc3339_millis(sent_at).to_string(),
                }))
                .map_err(|e| AttemptError::permanent(ErrorClass::Other, e.to_string()))?;
                let mut b = client.post(url).header(CONTENT_TYPE, "application/json");
                if let Some(secret) = &target.hmac_secret {
                    let timestamp = sent_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs().to_string();
                    let signature = signed_http::sign(secret.expose().as_bytes(), &timestamp, &body);
                    b = b
                        .header(signed_http::TIMESTAMP_HEADER, timestamp)
                        .header(signed_http::SIGNATURE_HEADER, signature);
                }
                b.body(body)
            }
        };
        builder = builder.headers(headers(target, &req)?);
        if let Some((user, password)) = &target.basic_auth {
            builder = builder.basic_auth(user, Some(password.expose()));
        }
        if let Some(token) = &target.bearer_token {
            // Checked when the file was read; should it still not make a header, the file is named
            // and the failure is permanent (a retry sends the same bytes).
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                let file = target.secret_files.iter().find(|(field, _)| field == "http.token_file");
                let file = file.map(|(_, path)| path.display().to_string()).unwrap_or_default();
                AttemptError::permanent(ErrorClass::Other, format!("the token in {file} is not a valid header value"))
            })?;
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
        builder.send().await.map_err(classify)
    }
}

/// A client leaving from `source` (reqwest only binds it for destinations of the same family, and
/// then connects only to those).
fn client(source: Option<IpAddr>, idle_per_host: usize) -> anyhow::Result<Client> {
    Ok(Client::builder()
        .user_agent(concat!("pushmirror/", env!("CARGO_PKG_VERSION")))
        .tls_backend_rustls()
        // Idle keep-alive connections are descriptors outside `concurrency`: bounded per host
        // (see `Transports::new`), closed after a few seconds.
        .pool_max_idle_per_host(idle_per_host)
        .pool_idle_timeout(Duration::from_secs(5))
        .local_address(source)
        .build()?)
}

fn headers(target: &HttpTarget, req: &TriggerRequest<'_>) -> Result<HeaderMap, AttemptError> {
    let mut map = HeaderMap::new();
    for (name, template) in &target.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| AttemptError::permanent(ErrorClass::Other, format!("invalid header name {name}")))?;
        let value = HeaderValue::from_str(&req.substitute(template))
            .map_err(|_| AttemptError::permanent(ErrorClass::Other, format!("invalid value for header {name}")))?;
        map.insert(name, value);
    }
    Ok(map)
}

/// The longest an answer's body is read for, and never longer than the mirror's `timeout`.
pub const MAX_BODY_TIME: Duration = Duration::from_secs(2);

/// The note of a delivered trigger whose answer's body did not arrive within [`body_bound`].
pub const BODY_ABANDONED: &str = "body not read to the end";

/// How long the body of an answer is read for: the status line has already decided the outcome,
/// so a body that dribbles in must neither hold the attempt nor turn a delivered trigger into a
/// timeout (and a retry that triggers the mirror again). An attempt thus ends within `timeout` +
/// [`MAX_BODY_TIME`], well inside the engine's outer budget for it.
pub fn body_bound(timeout: Duration) -> Duration {
    timeout.min(MAX_BODY_TIME)
}

/// How reading an answer's body ended.
#[derive(Debug, PartialEq, Eq)]
enum Body {
    /// It ended, failed, or reached [`MAX_BODY`]: nothing more is worth waiting for.
    Done,
    /// It was still arriving after the bound and was dropped with its connection.
    Abandoned,
}

/// Reads at most [`MAX_BODY`] bytes for at most `within`, so that the connection can be reused,
/// and drops the rest.
async fn drain_body(mut response: Response, within: Duration) -> Body {
    let read = async {
        let mut read = 0;
        while read < MAX_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
    };
    match tokio::time::timeout(within, read).await {
        Ok(()) => Body::Done,
        Err(_) => Body::Abandoned,
    }
}

/// 2xx is delivered; 408, 429 and 5xx are worth another attempt; other answers are final.
fn judge(status: StatusCode, retry_after: Option<Duration>) -> AttemptResult {
    if status.is_success() {
        return Ok(Delivered { http_status: Some(status.as_u16()), ..Delivered::default() });
    }
    let message = format!("HTTP {status}");
    let transient =
        status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT;
    let mut err = if transient {
        AttemptError::transient(ErrorClass::HttpStatus, message)
    } else {
        AttemptError::permanent(ErrorClass::HttpStatus, message)
    };
    err.http_status = Some(status.as_u16());
    if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
        err.retry_after = retry_after;
    }
    Err(err)
}

/// `Retry-After` as delta-seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(raw).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// Maps a reqwest error to a class and a message that never holds the URL.
///
/// The class comes from the error's types, never from its text, so that a reqwest, hyper or
/// rustls upgrade that rewords a message cannot silently move a failure to another class.
fn classify(err: reqwest::Error) -> AttemptError {
    let err = err.without_url();
    let mut chain = Vec::new();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        // hyper's wrapper ("client error (Connect)") says nothing its causes do not. Display
        // only: the class below never looks at text.
        if !text.starts_with("client error (") {
            chain.push(text);
        }
        source = s.source();
    }
    let detail = if chain.is_empty() { err.to_string() } else { chain.join(": ") };
    if err.is_builder() {
        // Nothing was sent, and the same request would fail the same way.
        return AttemptError::permanent(ErrorClass::Other, format!("the request cannot be built: {detail}"));
    }
    let class = class_of(&err);
    // Certificate problems do not fix themselves; everything else on the network may.
    if class == ErrorClass::Tls {
        AttemptError::permanent(class, detail)
    } else {
        AttemptError::transient(class, detail)
    }
}

/// The class of a failed request, from the types in its cause chain.
fn class_of(err: &reqwest::Error) -> ErrorClass {
    let io_kinds = || causes(err).filter_map(|e| e.downcast_ref::<io::Error>()).map(io::Error::kind);
    // A failed lookup: reqwest wraps every error of its resolver (the getaddrinfo one by
    // default) in its own `DnsError` and `is_dns` looks for that type in the chain. The type is
    // private, and is the only typed signal there is: hyper-util's `ConnectError` ("dns error")
    // has no public accessor, and the `io::Error` std makes of a getaddrinfo failure has the
    // unstable kind `Uncategorized` and no raw OS error (the EAI_* code is only in its text;
    // EAI_SYSTEM carries an errno, which says nothing about DNS).
    // First, because a failed lookup is a connect error as well.
    if err.is_dns() {
        ErrorClass::Dns
    } else if err.is_timeout() || io_kinds().any(|k| k == io::ErrorKind::TimedOut) {
        ErrorClass::Timeout
    } else if causes(err).any(|e| e.is::<rustls::Error>()) {
        // A handshake or certificate failure: tokio-rustls hands it up as an `io::Error`
        // wrapping the `rustls::Error` (certificate verdicts included, e.g. `UnknownIssuer`).
        ErrorClass::Tls
    } else if err.is_connect() || io_kinds().any(is_connect_kind) {
        ErrorClass::Connect
    } else {
        ErrorClass::Other
    }
}

/// I/O error kinds that mean the TCP connection could not be made or was lost.
fn is_connect_kind(kind: io::ErrorKind) -> bool {
    use io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | BrokenPipe
            | AddrInUse
            | AddrNotAvailable
            | HostUnreachable
            | NetworkUnreachable
            | NetworkDown
    )
}

/// Every cause of `err`, nearest first. An `io::Error` that wraps another error reports that
/// error's source as its own, skipping the wrapped error itself; that error is where tokio-rustls
/// puts a `rustls::Error`, so it is visited next here.
fn causes<'a>(err: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(err.source(), |&e: &&'a (dyn StdError + 'static)| {
        match e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(wrapped) => Some(wrapped as &(dyn StdError + 'static)),
            None => e.source(),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::net::TcpListener;
    use tokio_rustls::rustls;

    use super::*;
    use crate::config::Transport;
    use crate::transport::Downstream;
    use crate::vocab::model::Stage;
    use crate::vocab::secret::Secret;

    /// One GET at `url` through the production client and [`HttpTransport::fire`], bounded by
    /// `timeout` (the mirror's `timeout:`); the request must fail.
    async fn fire_at(url: &str, timeout: Duration) -> AttemptError {
        let target = HttpTarget {
            secret_files: Vec::new(),
            url: Secret::new(url.parse().unwrap()),
            method: HttpMethod::Get,
            basic_auth: None,
            bearer_token: None,
            headers: vec![],
            hmac_secret: None,
        };
        fire(target, timeout).await
    }

    async fn fire(target: HttpTarget, timeout: Duration) -> AttemptError {
        let mut mirror = crate::config::Mirror::example("m");
        mirror.timeout = timeout;
        mirror.transport = Transport::Http(target.clone());
        let req = TriggerRequest {
            mirror: Downstream::of(&mirror, "debian"),
            archive: "debian",
            stage: Stage::All,
            serial: None,
            mhop: false,
            push: 0,
        };
        HttpTransport::new([], 1).unwrap().fire(&target, req).await.unwrap_err()
    }

    const AMPLE: Duration = Duration::from_secs(60);

    /// A token that cannot be a header value (the loader refuses such a file; this is the
    /// transport's own guard): a permanent failure naming the file, nothing sent, never retried
    /// as if the network were at fault.
    #[tokio::test]
    async fn a_request_that_cannot_be_built_is_a_permanent_failure_naming_the_file() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = HttpTarget {
            secret_files: vec![("http.token_file".into(), "/etc/pushmirror/tokens/m".into())],
            url: Secret::new(format!("http://{}/", listener.local_addr().unwrap()).parse().unwrap()),
            method: HttpMethod::Get,
            basic_auth: None,
            bearer_token: Some(Secret::new("abc\ndef".into())),
            headers: vec![],
            hmac_secret: None,
        };
        let err = fire(target, AMPLE).await;
        assert_eq!((err.class, err.transient), (ErrorClass::Other, false), "{}", err.message);
        assert!(err.message.contains("/etc/pushmirror/tokens/m") && !err.message.contains("abc"), "{}", err.message);
        // Nothing connected.
        let accepted = tokio::time::timeout(Duration::from_millis(1), listener.accept()).await;
        assert!(accepted.is_err(), "a connection was made");
    }

    #[tokio::test]
    async fn refused_port_is_connect() {
        // Bind, learn the port, close: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = fire_at(&format!("http://127.0.0.1:{port}/"), AMPLE).await;
        assert_eq!((err.class, err.transient), (ErrorClass::Connect, true), "{}", err.message);
    }

    #[tokio::test]
    async fn unresolvable_name_is_dns() {
        // `.invalid` never resolves (RFC 2606), with or without a network.
        let err = fire_at("http://nonexistent.invalid/", AMPLE).await;
        assert_eq!((err.class, err.transient), (ErrorClass::Dns, true), "{}", err.message);
    }

    #[tokio::test]
    async fn self_signed_certificate_is_permanent_tls() {
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
        let err = fire_at(&format!("https://127.0.0.1:{port}/"), AMPLE).await;
        assert_eq!((err.class, err.transient), (ErrorClass::Tls, false), "{}", err.message);
        // The client got as far as a handshake, and broke it off.
        assert!(server.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn silent_server_is_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and keeps every connection open without ever answering.
        let server = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                open.push(tcp);
            }
        });
        // The client has no timeout of its own: `fire` bounds the exchange by the mirror's.
        let err = fire_at(&format!("http://127.0.0.1:{port}/"), Duration::from_millis(200)).await;
        server.abort();
        assert_eq!((err.class, err.transient), (ErrorClass::Timeout, true), "{}", err.message);
    }

    #[test]
    fn judges_status_codes() {
        assert!(judge(StatusCode::NO_CONTENT, None).is_ok());
        let e = judge(StatusCode::NOT_FOUND, None).unwrap_err();
        assert!(!e.transient && e.class == ErrorClass::HttpStatus && e.http_status == Some(404));
        for s in [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::BAD_GATEWAY, StatusCode::REQUEST_TIMEOUT] {
            assert!(judge(s, None).unwrap_err().transient, "{s}");
        }
        let e = judge(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(7))).unwrap_err();
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(judge(StatusCode::BAD_GATEWAY, Some(Duration::from_secs(7))).unwrap_err().retry_after, None);
    }

    #[test]
    fn parses_retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
