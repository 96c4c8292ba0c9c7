//! HTTP triggers: one request per attempt over a shared pooled client (hyper-util's, TLS by
//! hyper-rustls, keep-alive) — one per source address, each with its own pool.
//!
//! Not reqwest, which the rest of pushmirror uses: a trigger is one small request, and reqwest's
//! layers around hyper (a redirect policy that parses the URL twice per request, proxy matching,
//! request conversion) cost more than the trigger itself (README "Performance"). What those layers
//! would have done is decided here instead: redirects are not followed (a 3xx is a permanent
//! failure, as for webhooks: a POST redirected with a 301/302/303 would arrive as a GET without
//! its body and could be reported delivered), and triggers connect directly, as SSH triggers do
//! (no `HTTP(S)_PROXY`).

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT,
};
use hyper::http::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiAddrs, GaiResolver, Name};
use hyper_util::rt::TokioTimer;

use super::{AttemptError, AttemptResult, Delivered, TriggerRequest};
use crate::config::{HttpMethod, HttpTarget};
use crate::vocab::model::ErrorClass;
use crate::wire::signed_http;

/// At most this much of an answer's body is read; the rest is dropped.
pub const MAX_BODY: usize = 64 * 1024;

/// The `User-Agent` of every trigger.
const AGENT: &str = concat!("pushmirror/", env!("CARGO_PKG_VERSION"));

type Client = Pool<hyper_rustls::HttpsConnector<HttpConnector<Resolver>>, Full<Bytes>>;

/// The shared HTTP clients: one that leaves from whatever address the routing table picks, and
/// one per configured source address.
#[derive(Clone)]
pub struct HttpTransport {
    clients: HashMap<Option<IpAddr>, Client>,
    /// The system has no CA roots: a certificate failure says so.
    no_roots: bool,
}

impl HttpTransport {
    /// Clients for unbound triggers and for each of `sources` (each keeps its own connection
    /// pool, so connections are reused per address, never per request), each keeping at most
    /// `idle_per_host` idle connections to a host for reuse (5 s). Fails only if TLS cannot be
    /// initialised.
    pub fn new(sources: impl IntoIterator<Item = IpAddr>, idle_per_host: usize) -> anyhow::Result<Self> {
        Self::with_roots(sources, idle_per_host, super::net::system_roots())
    }

    /// [`HttpTransport::new`] trusting `roots`.
    fn with_roots(
        sources: impl IntoIterator<Item = IpAddr>,
        idle_per_host: usize,
        roots: rustls::RootCertStore,
    ) -> anyhow::Result<Self> {
        let no_roots = roots.is_empty();
        let tls = super::net::tls_client_config(roots)?;
        let mut clients = HashMap::from([(None, client(None, idle_per_host, tls.clone()))]);
        for source in sources {
            if let std::collections::hash_map::Entry::Vacant(slot) = clients.entry(Some(source)) {
                slot.insert(client(Some(source), idle_per_host, tls.clone()));
            }
        }
        Ok(HttpTransport { clients, no_roots })
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
        let body = drain_body(response.into_body(), body_bound(timeout)).await;
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
    async fn send(&self, target: &HttpTarget, req: TriggerRequest<'_>) -> Result<Response<Incoming>, AttemptError> {
        let source = req.mirror.source_address;
        let client = self.clients.get(&source).ok_or_else(|| {
            let from = source.map(|s| s.to_string()).unwrap_or_default();
            AttemptError::permanent(ErrorClass::Other, format!("no HTTP client was set up for source_address {from}"))
        })?;
        client.request(request(target, &req)?).await.map_err(|e| {
            let hint = super::net::no_roots_hint(causes(&e), self.no_roots);
            let mut err = classify(e);
            err.message.push_str(hint);
            err
        })
    }
}

/// A client leaving from `source` (bound only for destinations of the same family, and then
/// connecting only to those).
fn client(source: Option<IpAddr>, idle_per_host: usize, tls: rustls::ClientConfig) -> Client {
    let mut tcp = HttpConnector::new_with_resolver(Resolver(GaiResolver::new()));
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    // As reqwest had it: a peer that vanished is noticed on an idle pooled connection too.
    tcp.set_keepalive(Some(Duration::from_secs(15)));
    tcp.set_local_address(source);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Pool::builder(Spawner)
        // Idle keep-alive connections are descriptors outside `concurrency`: bounded per host
        // (see `Transports::new`), closed after a few seconds.
        .pool_max_idle_per_host(idle_per_host)
        .pool_idle_timeout(Duration::from_secs(5))
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// Runs each connection's task (the pool's, on tokio). A task that panics — a bug in hyper or
/// here — would otherwise vanish with it, its trigger failing as a lost connection with no word
/// of why: the panic is logged as an error with its message.
#[derive(Clone, Copy)]
struct Spawner;

impl<F> hyper::rt::Executor<F> for Spawner
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, task: F) {
        tokio::spawn(async move {
            if let Err(panic) = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(task)).await {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(%message, "an HTTP connection's task panicked: a bug in pushmirror or hyper");
            }
        });
    }
}

/// The request of one attempt: the URL with its placeholders filled in, the method's body (a
/// POST's JSON, signed when the mirror has an `hmac_secret`), the configured headers and
/// credentials. A request that cannot be built is a permanent failure: nothing was sent, and the
/// same request would fail the same way.
fn request(target: &HttpTarget, req: &TriggerRequest<'_>) -> Result<Request<Full<Bytes>>, AttemptError> {
    let mut url = req.substitute_url(target.url.expose()).map_err(|e| AttemptError::permanent(ErrorClass::Other, e))?;
    // A user and password in the URL are Basic authentication (as reqwest made them), never part
    // of what hyper is given: it would send the authority as it is and log it in its pool's keys.
    let url_credentials = (!url.username().is_empty() || url.password().is_some()).then(|| {
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let credentials = (decode(url.username()), url.password().map(decode).unwrap_or_default());
        let _ = url.set_username("");
        let _ = url.set_password(None);
        credentials
    });
    // The URL is never in the message: it may hold a token.
    let uri = Uri::try_from(url.as_str())
        .map_err(|_| AttemptError::permanent(ErrorClass::Other, "the URL cannot be sent as a request target"))?;
    // The configured headers win over these defaults, as they did under reqwest.
    let mut headers = headers(target, req)?;
    headers.entry(USER_AGENT).or_insert(HeaderValue::from_static(AGENT));
    headers.entry(ACCEPT).or_insert(HeaderValue::from_static("*/*"));
    let (method, body) = match target.method {
        HttpMethod::Get => (Method::GET, Bytes::new()),
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
            headers.entry(CONTENT_TYPE).or_insert(HeaderValue::from_static("application/json"));
            if let Some(secret) = &target.hmac_secret {
                let timestamp = sent_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs().to_string();
                let signature = signed_http::sign(secret.expose().as_bytes(), &timestamp, &body);
                let value = |v: String| {
                    HeaderValue::try_from(v)
                        .map_err(|_| AttemptError::permanent(ErrorClass::Other, "the signature is not a header value"))
                };
                headers.insert(signed_http::TIMESTAMP_HEADER, value(timestamp)?);
                headers.insert(signed_http::SIGNATURE_HEADER, value(signature)?);
            }
            (Method::POST, Bytes::from(body))
        }
    };
    // `basic_auth:` wins over credentials in the URL; a token (below) over both.
    let basic = target.basic_auth.as_ref().map(|(user, password)| (user.as_str(), password.expose().as_str()));
    if let Some((user, password)) = basic.or(url_credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut value = HeaderValue::try_from(format!("Basic {encoded}")).map_err(|_| {
            AttemptError::permanent(ErrorClass::Other, "the basic credentials are not a valid header value")
        })?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
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
        headers.insert(AUTHORIZATION, value);
    }
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

/// hyper-util's resolver (getaddrinfo on the blocking pool), with its failures wrapped in a type
/// of ours: the one typed sign in a failed request's causes that the name did not resolve.
#[derive(Clone)]
struct Resolver(GaiResolver);

/// A name lookup that failed; its cause is the resolver's error.
#[derive(Debug)]
struct LookupFailed(io::Error);

impl std::fmt::Display for LookupFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "name lookup failed: {}", self.0)
    }
}

impl StdError for LookupFailed {}

impl tower::Service<Name> for Resolver {
    type Response = GaiAddrs;
    type Error = LookupFailed;
    type Future = Pin<Box<dyn Future<Output = Result<GaiAddrs, LookupFailed>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LookupFailed>> {
        self.0.poll_ready(cx).map_err(LookupFailed)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let lookup = self.0.call(name);
        Box::pin(async move { lookup.await.map_err(LookupFailed) })
    }
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
async fn drain_body(mut body: Incoming, within: Duration) -> Body {
    let read = async {
        let mut read = 0;
        while read < MAX_BODY {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
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
    let mut message = format!("HTTP {status}");
    if status.is_redirection() {
        message.push_str(" (redirects are not followed: set url: to where it points)");
    }
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

/// Maps a failed request to a class and a message that never holds the URL (hyper-util's errors
/// never name it).
///
/// The class comes from the error's types, never from its text, so that a hyper, hyper-util or
/// rustls upgrade that rewords a message cannot silently move a failure to another class.
fn classify(err: hyper_util::client::legacy::Error) -> AttemptError {
    let mut chain = Vec::new();
    let mut source = err.source();
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    // hyper-util's own text ("client error (Connect)") says nothing its causes do not. Display
    // only: the class below never looks at text.
    let detail = if chain.is_empty() { err.to_string() } else { chain.join(": ") };
    let class = class_of(&err);
    // Certificate problems do not fix themselves; everything else on the network may.
    if class == ErrorClass::Tls {
        AttemptError::permanent(class, detail)
    } else {
        AttemptError::transient(class, detail)
    }
}

/// The class of a failed request, from the types in its cause chain.
fn class_of(err: &hyper_util::client::legacy::Error) -> ErrorClass {
    let io_kinds = || causes(err).filter_map(|e| e.downcast_ref::<io::Error>()).map(io::Error::kind);
    // A failed lookup is a connect error as well: first. Its only typed sign is the resolver's
    // error, which is ours ([`LookupFailed`]): hyper-util's `ConnectError` ("dns error") has no
    // public accessor, and the `io::Error` std makes of a getaddrinfo failure has the unstable
    // kind `Uncategorized` (the EAI_* code is only in its text).
    if causes(err).any(|e| e.is::<LookupFailed>()) {
        ErrorClass::Dns
    } else if io_kinds().any(|k| k == io::ErrorKind::TimedOut) {
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
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::Transport;
    use crate::transport::Downstream;
    use crate::vocab::model::Stage;
    use crate::vocab::secret::Secret;

    /// One GET at `url` through the production client and [`HttpTransport::fire`], bounded by
    /// `timeout` (the mirror's `timeout:`); the request must fail.
    async fn fire_at(url: &str, timeout: Duration) -> AttemptError {
        fire(target(url, HttpMethod::Get), timeout).await
    }

    async fn fire(target: HttpTarget, timeout: Duration) -> AttemptError {
        attempt(target, timeout).await.unwrap_err()
    }

    async fn attempt(target: HttpTarget, timeout: Duration) -> AttemptResult {
        attempt_through(&HttpTransport::new([], 1).unwrap(), target, timeout).await
    }

    async fn attempt_through(transport: &HttpTransport, target: HttpTarget, timeout: Duration) -> AttemptResult {
        let mut mirror = crate::config::Mirror::example("m");
        mirror.timeout = timeout;
        mirror.transport = Transport::Http(target.clone());
        let req = TriggerRequest {
            mirror: Downstream::of(&mirror, "debian"),
            archive: "debian",
            stage: Stage::All,
            serial: Some("2026120701"),
            mhop: false,
            push: 0,
        };
        transport.fire(&target, req).await
    }

    /// A server that reads one request (head and `Content-Length` body), answers `answer`, and
    /// hands back the request's bytes.
    async fn one_request(answer: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0; 4096];
            let whole = async {
                loop {
                    let n = tcp.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the request ended early: {}", String::from_utf8_lossy(&got));
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                            .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                        if got.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
            };
            // A guard against a request that never ends (a test that hangs), not a time limit.
            tokio::time::timeout(AMPLE, whole).await.expect("the request did not arrive in full");
            tcp.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(got).unwrap()
        });
        (at, server)
    }

    fn target(url: &str, method: HttpMethod) -> HttpTarget {
        HttpTarget {
            secret_files: Vec::new(),
            url: Secret::new(url.parse().unwrap()),
            method,
            basic_auth: None,
            bearer_token: None,
            headers: vec![],
            hmac_secret: None,
        }
    }

    /// A connection's task that panics is not lost without a word: the log names it as a bug,
    /// with the panic's message.
    #[tokio::test]
    async fn a_connection_task_that_panics_is_logged_as_a_bug() {
        let run = async {
            let (done, finished) = tokio::sync::oneshot::channel::<()>();
            hyper::rt::Executor::execute(&Spawner, async move {
                let _done = done; // dropped as the panic unwinds
                panic!("boom in a connection");
            });
            // On this one-threaded runtime the task's poll runs on to the catch and the log line
            // before this task is polled again.
            let _ = finished.await;
            tokio::task::yield_now().await;
        };
        let ((), log) = crate::sys::logging::capture::logged(run).await;
        assert!(
            log.lines().any(|l| l.contains("ERROR")
                && l.contains("a bug in pushmirror or hyper")
                && l.contains("boom in a connection")),
            "{log}"
        );
    }

    const NO_CONTENT: &str = "HTTP/1.1 204 No Content\r\n\r\n";

    /// What a GET trigger puts on the wire: the URL's placeholders filled in, the host, our
    /// agent, the bearer token and the configured headers (templates filled in).
    #[tokio::test]
    async fn a_get_trigger_sends_its_url_headers_and_token() {
        let (at, server) = one_request(NO_CONTENT).await;
        let mut t = target(&format!("http://{at}/hook/{{archive}}?serial={{serial}}&x=1"), HttpMethod::Get);
        t.bearer_token = Some(Secret::new("tok-123".into()));
        t.headers = vec![("X-Archive".into(), "{archive}".into())];
        let delivered = attempt(t, AMPLE).await.unwrap();
        assert_eq!(delivered.http_status, Some(204));
        let got = server.await.unwrap();
        let head: Vec<String> = got.lines().map(str::to_ascii_lowercase).collect();
        assert_eq!(head[0], "get /hook/debian?serial=2026120701&x=1 http/1.1", "{got}");
        for line in [
            format!("host: {at}"),
            format!("user-agent: pushmirror/{}", env!("CARGO_PKG_VERSION")),
            "authorization: bearer tok-123".into(),
            "x-archive: debian".into(),
        ] {
            assert!(head.contains(&line), "no `{line}` in\n{got}");
        }
        assert!(!head.iter().any(|l| l.starts_with("content-length: ") && l != "content-length: 0"), "{got}");
    }

    /// What a POST trigger puts on the wire: its JSON body with the right length and type, basic
    /// authentication, and a signature that `receive`'s check accepts.
    #[tokio::test]
    async fn a_post_trigger_sends_its_json_body_credentials_and_signature() {
        let (at, server) = one_request("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let mut t = target(&format!("http://{at}/trigger"), HttpMethod::Post);
        t.basic_auth = Some(("ubuntu".into(), Secret::new("pw".into())));
        t.hmac_secret = Some(Secret::new("s3cret".into()));
        assert_eq!(attempt(t, AMPLE).await.unwrap().http_status, Some(200));
        let got = server.await.unwrap();
        let (head, body) = got.split_once("\r\n\r\n").unwrap();
        let head: Vec<String> = head.lines().map(str::to_ascii_lowercase).collect();
        assert_eq!(head[0], "post /trigger http/1.1");
        let field = |name: &str| {
            let prefix = format!("{name}: ");
            got.lines().find(|l| l.to_ascii_lowercase().starts_with(&prefix)).map(|l| l[prefix.len()..].to_string())
        };
        assert_eq!(field("content-type").as_deref(), Some("application/json"));
        assert_eq!(field("content-length"), Some(body.len().to_string()));
        assert_eq!(field("authorization"), Some("Basic dWJ1bnR1OnB3".to_string()), "base64 of ubuntu:pw");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (&json["archive"], &json["stage"], &json["serial"]),
            (&"debian".into(), &"all".into(), &"2026120701".into())
        );
        let (timestamp, signature) =
            (field(signed_http::TIMESTAMP_HEADER).unwrap(), field(signed_http::SIGNATURE_HEADER).unwrap());
        assert_eq!(signature, signed_http::sign(b"s3cret", &timestamp, body.as_bytes()));
    }

    /// A user and password in the URL are sent as Basic authentication, percent-decoded, and
    /// never in the request line or `Host` (nor handed to hyper, whose pool logs its keys);
    /// `basic_auth:` wins over them.
    #[tokio::test]
    async fn credentials_in_the_url_are_basic_authentication_and_never_sent_as_such() {
        let (at, server) = one_request(NO_CONTENT).await;
        attempt(target(&format!("http://al%40ice:p%3Aw@{at}/hook"), HttpMethod::Get), AMPLE).await.unwrap();
        let got = server.await.unwrap();
        let head: Vec<String> = got.lines().map(str::to_ascii_lowercase).collect();
        assert_eq!(head[0], "get /hook http/1.1", "{got}");
        assert!(head.contains(&format!("host: {at}")), "{got}");
        assert!(got.contains("authorization: Basic YWxAaWNlOnA6dw=="), "base64 of al@ice:p:w\n{got}");
        assert!(!got.contains("ice") && !got.contains("p%3Aw"), "{got}");

        let (at, server) = one_request(NO_CONTENT).await;
        let mut t = target(&format!("http://alice:hunter2@{at}/hook"), HttpMethod::Get);
        t.basic_auth = Some(("u".into(), Secret::new("pw".into())));
        attempt(t, AMPLE).await.unwrap();
        let got = server.await.unwrap();
        assert!(got.contains("authorization: Basic dTpwdw=="), "base64 of u:pw\n{got}");
        assert_eq!(got.matches("authorization:").count(), 1, "{got}");
    }

    /// Configured headers win over the defaults (`User-Agent`, `Accept`, a POST's
    /// `Content-Type`), as they did under reqwest: a receiver may filter on them.
    #[tokio::test]
    async fn configured_headers_win_over_the_defaults() {
        let (at, server) = one_request(NO_CONTENT).await;
        let mut t = target(&format!("http://{at}/hook"), HttpMethod::Post);
        t.headers = vec![
            ("User-Agent".into(), "custom-agent".into()),
            ("Accept".into(), "application/json".into()),
            ("Content-Type".into(), "text/plain".into()),
        ];
        attempt(t, AMPLE).await.unwrap();
        let got = server.await.unwrap().to_ascii_lowercase();
        for line in ["user-agent: custom-agent", "accept: application/json", "content-type: text/plain"] {
            assert_eq!(got.matches(line).count(), 1, "no single `{line}` in\n{got}");
        }
        assert!(
            !got.contains("pushmirror/") && !got.contains("*/*") && !got.contains("content-type: application/json"),
            "{got}"
        );
    }

    /// A redirect is not followed: a permanent failure, and nothing reaches where it points (a
    /// POST redirected by a 301 would arrive there as a bodyless GET, and could pass for a
    /// delivered trigger).
    #[tokio::test]
    async fn a_redirect_is_a_permanent_failure_and_is_not_followed() {
        let elsewhere = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let answer = format!(
            "HTTP/1.1 301 Moved Permanently\r\nLocation: http://{}/moved\r\nContent-Length: 0\r\n\r\n",
            elsewhere.local_addr().unwrap()
        );
        let (at, server) = one_request(answer.leak()).await;
        let err = fire(target(&format!("http://{at}/trigger"), HttpMethod::Post), AMPLE).await;
        assert_eq!(
            (err.class, err.transient, err.http_status),
            (ErrorClass::HttpStatus, false, Some(301)),
            "{}",
            err.message
        );
        assert!(err.message.contains("redirects are not followed"), "{}", err.message);
        server.await.unwrap();
        // A followed redirect would have connected before `fire` returned.
        let followed = tokio::time::timeout(Duration::from_millis(1), elsewhere.accept()).await;
        assert!(followed.is_err(), "the redirect was followed");
    }

    const AMPLE: Duration = Duration::from_secs(60);

    /// A token that cannot be a header value (the loader refuses such a file; this is the
    /// transport's own guard): a permanent failure naming the file, nothing sent, never retried
    /// as if the network were at fault.
    #[tokio::test]
    async fn a_request_that_cannot_be_built_is_a_permanent_failure_naming_the_file() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut t = target(&format!("http://{}/", listener.local_addr().unwrap()), HttpMethod::Get);
        t.secret_files = vec![("http.token_file".into(), "/etc/pushmirror/tokens/m".into())];
        t.bearer_token = Some(Secret::new("abc\ndef".into()));
        let err = fire(t, AMPLE).await;
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
        let err = self_signed(HttpTransport::new([], 1).unwrap()).await;
        // The hint is for a system without roots only.
        let bare = crate::transport::net::system_roots().is_empty();
        assert_eq!(err.message.contains("no CA certificates"), bare, "{}", err.message);
    }

    /// On a system without CA roots (no ca-certificates), a certificate failure says so: the
    /// operator's first HTTPS trigger would otherwise fail as "UnknownIssuer" with no hint.
    #[tokio::test]
    async fn a_certificate_failure_without_any_ca_roots_says_so() {
        let empty = HttpTransport::with_roots([], 1, rustls::RootCertStore::empty()).unwrap();
        let err = self_signed(empty).await;
        assert!(err.message.contains("no CA certificates were found on this system"), "{}", err.message);
    }

    /// One GET through `transport` to a TLS server with a self-signed certificate: a permanent
    /// `tls` failure, the handshake broken off by the client.
    async fn self_signed(transport: HttpTransport) -> AttemptError {
        let (port, server) = crate::transport::net::tests::self_signed_server().await;
        let target = target(&format!("https://127.0.0.1:{port}/"), HttpMethod::Get);
        let err = attempt_through(&transport, target, AMPLE).await.unwrap_err();
        assert_eq!((err.class, err.transient), (ErrorClass::Tls, false), "{}", err.message);
        // The client got as far as a handshake, and broke it off.
        assert!(server.await.unwrap().is_err());
        err
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
