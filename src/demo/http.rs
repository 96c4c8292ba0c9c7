//! An in-process HTTP receiver: answers triggers as scripted and records what it saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

use super::Script;

/// How an HTTP receiver answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Answer with this status at once.
    Status(u16),
    /// Answer with this status and a `Retry-After: secs` header.
    RetryAfter(u16, u64),
    /// Wait (tokio time), then answer with the status.
    Delay(Duration, u16),
    /// Never answer.
    Hang,
}

/// One request a receiver saw.
#[derive(Debug, Clone)]
pub struct Hit {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Request headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Bytes,
    /// The address and port the request's connection came from.
    pub peer: SocketAddr,
    /// When it arrived (tokio time).
    pub at: tokio::time::Instant,
}

impl Hit {
    /// The value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// What receivers saw; may be shared by many receivers to count across them.
#[derive(Debug, Default)]
pub struct Log {
    hits: Mutex<Vec<Hit>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    changed: Notify,
}

impl Log {
    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The number of requests so far.
    pub fn count(&self) -> usize {
        self.hits.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The most requests that were being answered at the same time.
    pub fn peak_in_flight(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests have arrived.
    pub async fn wait_for(&self, n: usize) {
        loop {
            let changed = self.changed.notified();
            if self.count() >= n {
                return;
            }
            changed.await;
        }
    }

    fn record(&self, hit: Hit) {
        self.hits.lock().unwrap_or_else(|e| e.into_inner()).push(hit);
        self.changed.notify_waiters();
    }
}

struct ReceiverState {
    log: Arc<Log>,
    script: Script<Reply>,
    expect_auth: Option<String>,
    /// Files it publishes, by path: a GET of one answers 200 with its content (a mirror's trace
    /// files, for freshness).
    files: std::sync::Mutex<std::collections::HashMap<String, Published>>,
}

/// A published file and its `ETag` (`"N"`, N counting every publication in the process).
#[derive(Clone)]
struct Published {
    content: String,
    etag: String,
}

/// An HTTP receiver on 127.0.0.1 with a port of its own. Stops when dropped.
pub struct HttpReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

/// Configures an [`HttpReceiver`].
#[derive(Default)]
pub struct HttpReceiverBuilder {
    log: Option<Arc<Log>>,
    script: Vec<Reply>,
    default: Option<Reply>,
    expect_auth: Option<String>,
}

impl HttpReceiverBuilder {
    /// Record into a shared log.
    pub fn log(mut self, log: Arc<Log>) -> Self {
        self.log = Some(log);
        self
    }

    /// Answer the first requests with these replies, in order.
    pub fn script(mut self, replies: impl IntoIterator<Item = Reply>) -> Self {
        self.script.extend(replies);
        self
    }

    /// Answer every other request with this (default `200`).
    pub fn reply(mut self, reply: Reply) -> Self {
        self.default = Some(reply);
        self
    }

    /// Answer 401 unless the `Authorization` header is exactly this.
    pub fn expect_auth(mut self, value: impl Into<String>) -> Self {
        self.expect_auth = Some(value.into());
        self
    }

    /// Binds 127.0.0.1:0 and serves.
    pub async fn start(self) -> std::io::Result<HttpReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ReceiverState {
            log: self.log.unwrap_or_default(),
            script: Script::new(self.script, self.default.unwrap_or(Reply::Status(200))),
            expect_auth: self.expect_auth,
            files: Default::default(),
        });
        let app = axum::Router::new().fallback(answer).with_state(Arc::clone(&state));
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(HttpReceiver { addr, state, task })
    }
}

impl HttpReceiver {
    /// A receiver to configure.
    pub fn builder() -> HttpReceiverBuilder {
        HttpReceiverBuilder::default()
    }

    /// A receiver that answers 200 to everything.
    pub async fn start() -> std::io::Result<HttpReceiver> {
        Self::builder().start().await
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Publishes `content` at `path` (`/debian/project/trace/master`): a GET of it answers 200
    /// with it, replacing what was published there before.
    pub fn publish(&self, path: &str, content: &str) {
        static PUBLISHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let etag = format!("\"{}\"", PUBLISHED.fetch_add(1, Ordering::Relaxed));
        let mut files = self.state.files.lock().unwrap_or_else(|e| e.into_inner());
        files.insert(path.to_string(), Published { content: content.to_string(), etag });
    }

    /// What this receiver (and any sharing its log) saw.
    pub fn log(&self) -> &Arc<Log> {
        &self.state.log
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct InFlight<'a>(&'a Log);

impl<'a> InFlight<'a> {
    fn enter(log: &'a Log) -> Self {
        let now = log.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        log.peak.fetch_max(now, Ordering::SeqCst);
        InFlight(log)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn answer(
    State(state): State<Arc<ReceiverState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = InFlight::enter(&state.log);
    let authorized = state
        .expect_auth
        .as_deref()
        .is_none_or(|want| headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(want));
    state.log.record(Hit {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body,
        peer,
        at: tokio::time::Instant::now(),
    });
    if !authorized {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if method == Method::GET {
        let published = state.files.lock().unwrap_or_else(|e| e.into_inner()).get(uri.path()).cloned();
        if let Some(file) = published {
            let etag = [("etag", file.etag.clone())];
            if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(file.etag.as_str()) {
                return (StatusCode::NOT_MODIFIED, etag).into_response();
            }
            return (etag, file.content).into_response();
        }
    }
    match state.script.next() {
        Reply::Status(code) => status(code).into_response(),
        Reply::RetryAfter(code, secs) => (status(code), [("retry-after", secs.to_string())]).into_response(),
        Reply::Delay(d, code) => {
            tokio::time::sleep(d).await;
            status(code).into_response()
        }
        Reply::Hang => std::future::pending().await,
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
