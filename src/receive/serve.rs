//! The endpoint's connections, bounded so that clients that connect and then send nothing, or
//! send slowly, cannot use up the receiver's descriptors and keep valid triggers out:
//! - at most [`Limits::connections`] open at once (and at most half the open-file limit, see
//!   [`crate::sys::fdlimit::cap`]); at the limit the quietest connection that is not in the middle of a
//!   request is closed to make room, and when every one is mid-request the new one is closed;
//! - a request head must be complete within [`Limits::header_timeout`] of the connection being
//!   ready for it (opened, or the previous answer sent), which also ends idle kept-alive
//!   connections; the handler bounds the body by [`Limits::body_timeout`];
//! - shutdown stops accepting, lets requests in progress finish, then closes the connections.
//!
//! HTTP/1.1 only: triggers come from pushmirror over `http://` or through a TLS-terminating proxy,
//! and with one protocol every phase of a connection is under one of the two timeouts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::config::Limits;
use super::refusals::{Refusal, Refusals};

/// After an accept that failed for want of resources (descriptors, memory), how long to wait
/// before the next, rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The accept loop and what its connections share.
pub(super) struct Server {
    pub listener: TcpListener,
    pub router: Router,
    /// With `connections` already capped by [`crate::sys::fdlimit::cap`].
    pub limits: Limits,
    pub refusals: Arc<Refusals>,
    /// Every connection's task is tracked here, so that stopping waits for them.
    pub tasks: TaskTracker,
    /// Stop accepting, finish requests in progress.
    pub shutdown: CancellationToken,
    /// Close every connection now.
    pub hard_stop: CancellationToken,
}

impl Server {
    /// Accepts connections until shutdown.
    pub async fn run(self) {
        let permits = Arc::new(Semaphore::new(self.limits.connections));
        let open = Arc::new(Open::default());
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(self.limits.header_timeout);
        loop {
            let accepted = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    self.accept_failed(e).await;
                    continue;
                }
            };
            // Dropping a stream without a permit closes that connection at once.
            let Some(permit) = self.make_room(&permits, &open, peer).await else { continue };
            let connection = Arc::new(Connection::new(peer));
            let registered = Registered::new(&open, &connection);
            let served = self.serve(stream, connection, http.clone());
            self.tasks.spawn(async move {
                served.await;
                drop((registered, permit));
            });
        }
    }

    /// A permit for a new connection from `peer`: a free one, or the one of the quietest
    /// connection, closed for it; `None` when every connection is in the middle of a request.
    async fn make_room(&self, permits: &Arc<Semaphore>, open: &Open, peer: SocketAddr) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(permits).try_acquire_owned() {
            return Some(permit);
        }
        let limit = self.limits.connections;
        let Some(quietest) = open.quietest() else {
            if self.refusals.note(Refusal::AllConnectionsBusy) {
                tracing::warn!(
                    "connection from {} closed at once: limits.connections ({limit}) reached and every \
                     connection is in the middle of a request",
                    peer.ip()
                );
            }
            return None;
        };
        if self.refusals.note(Refusal::ClosedToMakeRoom) {
            let quiet = Duration::from_secs(quietest.quiet_since().elapsed().as_secs());
            tracing::warn!(
                "connection from {} closed to make room: limits.connections ({limit}) reached and it was \
                 the quietest (no request for {})",
                quietest.peer.ip(),
                humantime::format_duration(quiet)
            );
        }
        quietest.close.cancel();
        tokio::select! {
            permit = Arc::clone(permits).acquire_owned() => permit.ok(),
            _ = self.shutdown.cancelled() => None,
        }
    }

    /// A failed accept: the client's own trouble is skipped; the receiver's (out of descriptors)
    /// is logged once in a while and waited out, rather than retried in a spin.
    async fn accept_failed(&self, e: std::io::Error) {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
            return;
        }
        if self.refusals.note(Refusal::AcceptFailed) {
            tracing::error!("cannot accept connections: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// Serves HTTP/1.1 on one connection until the client closes it, a timeout or the limit
    /// closes it, or the receiver stops.
    fn serve(
        &self,
        stream: TcpStream,
        connection: Arc<Connection>,
        http: http1::Builder,
    ) -> impl Future<Output = ()> + use<> {
        let service = {
            let (router, connection) = (self.router.clone(), Arc::clone(&connection));
            tower::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(connection.peer));
                let in_request = InRequest::new(Arc::clone(&connection));
                let handled = router.clone().oneshot(request);
                async move {
                    let response = handled.await;
                    drop(in_request);
                    response
                }
            })
        };
        let (shutdown, hard_stop) = (self.shutdown.clone(), self.hard_stop.clone());
        let (refusals, header_timeout) = (Arc::clone(&self.refusals), self.limits.header_timeout);
        async move {
            let served = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::pin!(served);
            let mut draining = false;
            let ended = loop {
                tokio::select! {
                    ended = served.as_mut() => break ended,
                    _ = shutdown.cancelled(), if !draining => {
                        served.as_mut().graceful_shutdown();
                        draining = true;
                    }
                    _ = hard_stop.cancelled() => return,
                    _ = connection.close.cancelled() => return,
                }
            };
            // A header timeout after answered requests is a kept-alive connection ending; before
            // any, it is a client that connected and never sent a request.
            let silent = connection.requests.load(Ordering::Relaxed) == 0;
            if ended.is_err_and(|e| e.is_timeout()) && silent && refusals.note(Refusal::HeaderTimeout) {
                tracing::warn!(
                    "connection from {} closed: no complete request within limits.header_timeout ({})",
                    connection.peer.ip(),
                    humantime::format_duration(header_timeout)
                );
            }
        }
    }
}

/// The open connections, so that the quietest can be found at the limit.
#[derive(Debug, Default)]
struct Open {
    next_id: AtomicU64,
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
}

impl Open {
    /// The connection that has gone longest without a request, among those not in the middle
    /// of one.
    fn quietest(&self) -> Option<Arc<Connection>> {
        let connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.values().filter(|c| !c.is_mid_request()).min_by_key(|c| c.quiet_since()).cloned()
    }
}

/// A connection's entry in [`Open`], removed when its task ends.
struct Registered {
    open: Arc<Open>,
    id: u64,
}

impl Registered {
    fn new(open: &Arc<Open>, connection: &Arc<Connection>) -> Self {
        let id = open.next_id.fetch_add(1, Ordering::Relaxed);
        open.connections.lock().unwrap_or_else(|e| e.into_inner()).insert(id, Arc::clone(connection));
        Registered { open: Arc::clone(open), id }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open.connections.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

/// One open connection.
#[derive(Debug)]
struct Connection {
    peer: SocketAddr,
    opened: Instant,
    /// Requests being handled now.
    in_request: AtomicUsize,
    /// Requests handled so far.
    requests: AtomicU64,
    /// Milliseconds after `opened` when the latest request ended (0: none has yet).
    quiet_since_ms: AtomicU64,
    /// Cancelled to close it to make room.
    close: CancellationToken,
}

impl Connection {
    fn new(peer: SocketAddr) -> Self {
        Connection {
            peer,
            opened: Instant::now(),
            in_request: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            quiet_since_ms: AtomicU64::new(0),
            close: CancellationToken::new(),
        }
    }

    fn is_mid_request(&self) -> bool {
        self.in_request.load(Ordering::Relaxed) > 0
    }

    fn quiet_since(&self) -> Instant {
        self.opened + Duration::from_millis(self.quiet_since_ms.load(Ordering::Relaxed))
    }
}

/// Marks a connection as in the middle of a request while it lives; when it ends, the
/// connection is quiet from then on.
struct InRequest(Arc<Connection>);

impl InRequest {
    fn new(connection: Arc<Connection>) -> Self {
        connection.requests.fetch_add(1, Ordering::Relaxed);
        connection.in_request.fetch_add(1, Ordering::Relaxed);
        InRequest(connection)
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        let c = &self.0;
        let since = u64::try_from(c.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        c.quiet_since_ms.store(since, Ordering::Relaxed);
        c.in_request.fetch_sub(1, Ordering::Relaxed);
    }
}
