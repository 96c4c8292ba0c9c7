//! `pushmirror receive`: the downstream side of HTTP triggers.
//!
//! `serve` accepts the connections — bounded in number, header and body time — and hands each
//! request to the router. `POST|GET /trigger/{archive}` authenticates the trigger ([`auth`]:
//! bearer token, basic auth or an HMAC signature, constant-time, stale and replayed signatures
//! refused — [`replay`] keeps the accepted ones in the state directory across restarts; refusals
//! are logged by [`refusals`]), validates its stage and serial ([`request`]), queues it and
//! answers `202` at once. Per archive one worker
//! ([`sync`]) runs the configured command, one run at a time with at most one queued: triggers
//! arriving during a run coalesce into that one queued re-run (ftpsync's Update-Required
//! semantics). After a successful run it may push the next tier with [`crate::push`].
//! `GET /status` serves [`ReceiveStatus`], which is also the queue, to requests with the
//! credentials of one of the archives (or to anyone with `status: public`); `GET /healthz` says
//! `ok` to anyone.
//!
//! With `mqtt:` it also subscribes to the broadcast tier ([`mqtt`]): signed triggers, judged
//! against what [`accepted`] remembers, join the same workers, and each run is acknowledged.

pub mod accepted;
pub mod auth;
pub mod config;
pub mod mqtt;
pub mod refusals;
pub mod replay;
pub mod request;
mod serve;
pub mod status;
pub mod sync;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{DEFAULT_CONFIG, Limits, ReceiveConfig, StatusAccess, SyncArchive, load};
pub use status::{ArchiveSync, ChainedPush, ReceiveStatus};

use crate::sys::supervise::{Died, Supervisor};
use crate::vocab::model::Timestamp;
use refusals::{Refusal, Refusals};
use replay::SeenSignatures;
use sync::{Lane, Workers};

/// At most this much of a trigger's body is read (pushmirror's is about 100 bytes).
pub const MAX_BODY: usize = 64 * 1024;

/// A running receiver.
pub struct Receiving {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The live status (what `/status` serves).
    pub status: watch::Receiver<ReceiveStatus>,
    workers: Arc<Workers>,
    /// Connections in progress.
    tasks: TaskTracker,
    /// The long-running parts (sync workers, the endpoint, the refusal log).
    parts: Arc<Supervisor>,
}

impl Receiving {
    /// Waits until the receiver has stopped. Once shutdown is requested no new run starts and
    /// queued ones are dropped; a running sync (and its push) gets `grace` to finish and is
    /// then killed.
    /// An error when a part died (a bug): the receiver then stopped by itself.
    pub async fn wait(self, grace: Duration) -> Result<(), Died> {
        let (tasks, parts) = (self.tasks.clone(), Arc::clone(&self.parts));
        let drained = async move {
            parts.tasks().wait().await;
            tasks.wait().await;
        };
        tokio::pin!(drained);
        let grace_over = async {
            self.workers.shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            _ = &mut drained => {}
            _ = grace_over => {
                tracing::warn!("grace period over: killing running syncs");
                self.workers.hard_stop.cancel();
                drained.await;
            }
        }
        tracing::info!("stopped");
        self.parts.died().map_or(Ok(()), Err)
    }
}

/// What the handlers share.
struct Endpoint {
    lanes: BTreeMap<String, Arc<Lane>>,
    workers: Arc<Workers>,
    status_access: StatusAccess,
    refusals: Arc<Refusals>,
    body_timeout: Duration,
}

/// Binds `config.listen`, starts one worker per archive and serves; returns at once.
/// Cancelling `shutdown` stops accepting triggers; see [`Receiving::wait`].
pub async fn start(config: ReceiveConfig, shutdown: CancellationToken) -> anyhow::Result<Receiving> {
    let lanes = lanes(&config)?;
    let mqtt_options =
        config.mqtt.as_ref().map(mqtt::options).transpose().context("cannot set up the MQTT subscriber")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (listen: in {})", config.listen, config.path.display()))?;
    let addr = listener.local_addr()?;
    warn_about_push_configs(&config);
    let initial = ReceiveStatus {
        started_at: Some(Timestamp(SystemTime::now())),
        archives: config
            .archives
            .keys()
            .map(|name| ArchiveSync { name: name.clone(), ..ArchiveSync::default() })
            .collect(),
    };
    let (status_tx, status_rx) = watch::channel(initial);
    let workers = Arc::new(Workers::new(status_tx, shutdown.clone()));
    let tasks = TaskTracker::new();
    let parts = Supervisor::new();
    // A part that dies stops the receiver like SIGTERM does; `wait` then reports it.
    let (fatal, stop) = (parts.fatal().clone(), shutdown.clone());
    parts.spawn("stop on a dead part", async move {
        tokio::select! {
            _ = fatal.cancelled() => stop.cancel(),
            _ = stop.cancelled() => {}
        }
    });
    for (name, lane) in &lanes {
        parts.spawn(format!("sync worker of {name}"), Arc::clone(&workers).run_lane(Arc::clone(lane)));
    }
    if let (Some(options), Some(settings)) = (mqtt_options, config.mqtt.clone()) {
        let lanes = settings.archives.iter().filter_map(|a| Some((a.clone(), Arc::clone(lanes.get(a)?)))).collect();
        let run = mqtt::run(options, settings, lanes, Arc::clone(&workers), config.state_dir.clone(), shutdown.clone());
        let me = Arc::clone(&parts);
        parts.spawn("MQTT subscriber", async move {
            if let Err(cause) = run.await {
                me.die(Died { part: "MQTT subscriber".into(), cause });
            }
        });
    }
    let refusals = Arc::new(Refusals::default());
    parts.spawn("refusal log", {
        let (refusals, shutdown) = (Arc::clone(&refusals), shutdown.clone());
        async move { refusals.summarise(shutdown, |summary| tracing::warn!("{summary}")).await }
    });
    let endpoint = Arc::new(Endpoint {
        lanes,
        workers: Arc::clone(&workers),
        status_access: config.status,
        refusals: Arc::clone(&refusals),
        body_timeout: config.limits.body_timeout,
    });
    let server = serve::Server {
        listener,
        router: router(endpoint),
        limits: Limits { connections: connection_cap(&config), ..config.limits },
        refusals,
        tasks: tasks.clone(),
        shutdown,
        hard_stop: workers.hard_stop.clone(),
    };
    parts.spawn("trigger endpoint", server.run());
    parts.tasks().close();
    tasks.close();
    let names: Vec<&str> = config.archives.keys().map(String::as_str).collect();
    tracing::info!(%addr, archives = %names.join(","), "receiving triggers");
    Ok(Receiving { addr, status: status_rx, workers, tasks, parts })
}

/// `limits.connections`, lowered (and said so) when the open-file limit is too low for it.
fn connection_cap(config: &ReceiveConfig) -> usize {
    let configured = config.limits.connections;
    let open_files = crate::sys::fdlimit::current();
    let cap = crate::sys::fdlimit::cap(configured, open_files);
    if cap < configured {
        tracing::warn!(
            "limits.connections lowered from {configured} to {cap}: at most half the open-file limit ({}), \
             so that sync commands and pushes have descriptors too; raise the limit (LimitNOFILE= \
             under systemd) to hold more",
            open_files.unwrap_or_default()
        );
    }
    cap
}

/// One lane per archive, each with the signatures it accepted before a restart.
fn lanes(config: &ReceiveConfig) -> anyhow::Result<BTreeMap<String, Arc<Lane>>> {
    let now = unix_now();
    let mut lanes = BTreeMap::new();
    for (name, archive) in &config.archives {
        let seen = SeenSignatures::load(replay_file(&config.state_dir, name), now)
            .with_context(|| format!("cannot use the state directory (state_dir: in {})", config.path.display()))?;
        lanes.insert(name.clone(), Arc::new(Lane::new(Arc::clone(archive), seen)));
    }
    Ok(lanes)
}

/// Where the signatures accepted for `archive` are kept.
fn replay_file(state_dir: &std::path::Path, archive: &str) -> std::path::PathBuf {
    state_dir.join("seen-signatures").join(format!("{archive}.json"))
}

/// A `push:` configuration is loaded afresh after each sync; saying now what is wrong with it
/// spares the operator a failed push hours later.
fn warn_about_push_configs(config: &ReceiveConfig) {
    for archive in config.archives.values() {
        let Some(path) = &archive.push else { continue };
        match crate::config::load_for_writing(path) {
            Ok(c) if !c.archives.contains_key(&archive.name) => tracing::warn!(
                archive = %archive.name,
                "{} configures no archive `{}`: pushes after its syncs will fail",
                path.display(),
                archive.name
            ),
            Ok(_) => {}
            Err(errors) => {
                for e in &errors.0 {
                    tracing::warn!(archive = %archive.name, "push config: {e}");
                }
            }
        }
    }
}

fn router(endpoint: Arc<Endpoint>) -> Router {
    Router::new()
        .route("/trigger/{archive}", get(trigger).post(trigger))
        .route("/status", get(status))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(endpoint)
}

/// 401 (empty) unless the status is public or the request carries the credentials of one of the
/// archives · 200 [`ReceiveStatus`].
async fn status(
    State(endpoint): State<Arc<Endpoint>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if endpoint.status_access == StatusAccess::Authenticated
        && let Err(refusal) = endpoint.any_archive_admits(&headers)
    {
        endpoint.refuse(refusal, || format!("status request from {}", peer.ip()));
        return StatusCode::UNAUTHORIZED.into_response();
    }
    Json(endpoint.workers.status.borrow().clone()).into_response()
}

impl Endpoint {
    /// Whether `headers` carry what would authorise a trigger of one of the archives (a
    /// signature covers the empty body, and is then used up like a trigger's); if not, the most
    /// specific reason an archive gave.
    fn any_archive_admits(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let now = unix_now();
        let mut refusal = Refusal::NoCredentials;
        for lane in self.lanes.values() {
            match auth::authenticate(&lane.archive.credentials, headers, b"", &lane.seen, now) {
                Ok(_) => return Ok(()),
                Err(r) => refusal = refusal.max(r),
            }
        }
        Err(refusal)
    }

    /// Counts a refusal, and logs it when it is the first in a while (`what` is only formatted
    /// then): "trigger for debian from 192.0.2.1 refused: wrong credentials".
    fn refuse(&self, refusal: Refusal, what: impl FnOnce() -> String) {
        if self.refusals.note(refusal) {
            tracing::warn!(
                "{} refused: {refusal} (more refusals are counted and summarised every {})",
                what(),
                humantime::format_duration(refusals::SUMMARY_INTERVAL)
            );
        }
    }
}

/// 404 unknown archive · 413 body over [`MAX_BODY`] · 408 body not complete within
/// `limits.body_timeout` · 401 (empty) unauthorised · 400 bad parameters · 202 queued.
async fn trigger(
    State(endpoint): State<Arc<Endpoint>>,
    Path(archive): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(lane) = endpoint.lanes.get(&archive) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let refused = |refusal| endpoint.refuse(refusal, || format!("trigger for {archive} from {}", peer.ip()));
    // A client that cuts its body off can no longer read any answer; the size limit is the
    // failure worth answering.
    let body = match tokio::time::timeout(endpoint.body_timeout, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            refused(Refusal::BodyTooLarge);
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        }
        Err(_) => {
            refused(Refusal::BodyTimeout);
            return StatusCode::REQUEST_TIMEOUT.into_response();
        }
    };
    let method = match auth::authenticate(&lane.archive.credentials, &headers, &body, &lane.seen, unix_now()) {
        Ok(method) => method,
        Err(refusal) => {
            refused(refusal);
            return StatusCode::UNAUTHORIZED.into_response();
        }
    };
    let request = match request::parse(&archive, &uri, &body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    tracing::info!(
        %archive, stage = %request.stage, serial = request.serial.as_deref().unwrap_or(""),
        "trigger accepted from {} ({method})", peer.ip()
    );
    let waits = endpoint.workers.enqueue(lane, request);
    let sync = if waits { "queued" } else { "starting" };
    (StatusCode::ACCEPTED, Json(serde_json::json!({ "archive": archive, "sync": sync }))).into_response()
}

/// The OS wall clock in unix seconds, read afresh for every request. A sender signs by its own
/// OS clock, so freshness is judged by ours: not by a clock anchored at start and advanced by the
/// monotonic one, which parts from the wall clock when the host is suspended or its clock stepped.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;
    use crate::receive::auth::Credentials;
    use crate::vocab::secret::Secret;
    use crate::wire::signed_http;

    const KEY: &str = "hmac-key";

    /// An endpoint for one archive, `debian`, that accepts signatures made with [`KEY`];
    /// no worker runs, so a trigger is only queued.
    fn endpoint() -> Arc<Endpoint> {
        let archive = Arc::new(SyncArchive {
            name: "debian".into(),
            command: vec!["/bin/true".into()],
            timeout: Duration::from_secs(60),
            credentials: Credentials { hmac_secret: Some(Secret::new(KEY.into())), ..Credentials::default() },
            push: None,
        });
        let status = ReceiveStatus {
            started_at: None,
            archives: vec![ArchiveSync { name: "debian".into(), ..ArchiveSync::default() }],
        };
        let workers = Arc::new(Workers::new(watch::channel(status).0, CancellationToken::new()));
        let lanes = BTreeMap::from([("debian".to_string(), Arc::new(Lane::new(archive, SeenSignatures::default())))]);
        Arc::new(Endpoint {
            lanes,
            workers,
            status_access: StatusAccess::Authenticated,
            refusals: Arc::new(Refusals::default()),
            body_timeout: Limits::default().body_timeout,
        })
    }

    /// A trigger signed now by the OS clock, as a sender on another host would sign it.
    fn signed_now() -> Request<Body> {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs().to_string();
        let body = br#"{"stage":"all"}"#;
        let mut request = Request::post("/trigger/debian")
            .header(signed_http::TIMESTAMP_HEADER, &t)
            .header(signed_http::SIGNATURE_HEADER, signed_http::sign(KEY.as_bytes(), &t, body))
            .body(Body::from(body.as_slice()))
            .unwrap();
        request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 1))));
        request
    }

    /// The sender signs by its OS clock, so freshness must be judged by ours, even when the
    /// process's monotonic clock has gone its own way (here tokio's, paused and moved on an hour;
    /// in production a suspended VM or a stepped clock).
    #[tokio::test(start_paused = true)]
    async fn signature_freshness_is_judged_by_the_os_clock() {
        let endpoint = endpoint();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let response = router(endpoint).oneshot(signed_now()).await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
}
