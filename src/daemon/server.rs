//! The daemon's status server: `GET /status` (JSON, [`DaemonStatus`] with every mirror's view
//! from the ledger), `GET /metrics` (Prometheus text 0.0.4, or OpenMetrics when asked for),
//! `GET /` (one self-contained HTML page), `GET /healthz`.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::watch;

use crate::config::Config;
use crate::daemon::metrics::Metrics;
use crate::daemon::page::{Filters, Overview};
use crate::daemon::status::DaemonStatus;
use crate::observe::lag::LagHistory;
use crate::push::ledger::{Ledger, Picture};
use crate::push::report::History;
use crate::sys::supervise::run_blocking;

/// What the handlers read.
#[derive(Clone)]
pub struct ServerState {
    /// The live status.
    pub status: watch::Receiver<DaemonStatus>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Every mirror's view.
    pub mirrors: Arc<MirrorViews>,
}

/// Every mirror's view as the status server shows it: the ledger in `state_dir` (read again
/// whenever its file changed: a CLI push next to the daemon shows too) and the configuration
/// running now.
pub struct MirrorViews {
    config: watch::Receiver<Arc<Config>>,
    cached: Mutex<Option<(Stamp, Arc<Ledger>)>>,
    grid: crate::daemon::page::grid::GridCache,
    lags: Mutex<Option<(Stamp, Arc<LagHistory>)>>,
}

/// What tells a replaced state file from the one read: its inode, size, modification and change
/// times.
type Stamp = (u64, u64, i64, i64, i64, i64);

/// The stamp of the file at `path`, if there is one.
fn stamp_of(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()))
}

impl MirrorViews {
    /// Views of the ledger under the configuration `config` holds.
    pub fn new(config: watch::Receiver<Arc<Config>>) -> Self {
        MirrorViews { config, cached: Mutex::new(None), grid: Default::default(), lags: Mutex::new(None) }
    }

    /// Every mirror's view and rotation now, or why the ledger cannot be read (naming its file).
    pub async fn current(self: &Arc<Self>) -> Result<Picture, String> {
        let me = Arc::clone(self);
        run_blocking(move || me.read()).await
    }

    /// The running configuration's `state_dir`.
    pub fn state_dir(&self) -> std::path::PathBuf {
        self.config.borrow().state_dir.clone()
    }

    /// The running configuration.
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// The recent pushes of every archive, from the report history (unchanged files are not
    /// parsed again); an unreadable history shows as none, and is logged.
    pub async fn grid(self: &Arc<Self>) -> crate::daemon::page::grid::Grid {
        let me = Arc::clone(self);
        run_blocking(move || {
            let config = me.config();
            let history = History::new(&config.state_dir, config.status.history);
            me.grid.grid(&history).unwrap_or_else(|e| {
                let why = format!("cannot read {}: {e}", config.state_dir.join("reports").display());
                tracing::error!(%why, "the status page shows no push history");
                crate::daemon::page::grid::Grid { error: Some(why), ..Default::default() }
            })
        })
        .await
    }

    /// Every surveyed mirror's lag history, parsed again only when its file changed.
    pub async fn lags(self: &Arc<Self>) -> Result<Arc<LagHistory>, String> {
        let me = Arc::clone(self);
        run_blocking(move || {
            let path = crate::observe::lag::file(&me.state_dir());
            let stamp = stamp_of(&path);
            let mut cached = me.lags.lock().unwrap_or_else(|e| e.into_inner());
            if let (Some((seen, lags)), Some(now)) = (&*cached, stamp)
                && *seen == now
            {
                return Ok(Arc::clone(lags));
            }
            let lags = Arc::new(LagHistory::read(&me.state_dir())?);
            *cached = stamp.map(|s| (s, Arc::clone(&lags)));
            Ok(lags)
        })
        .await
    }

    fn read(&self) -> Result<Picture, String> {
        let config = self.config.borrow().clone();
        let path = config.state_dir.join(crate::push::ledger::FILE);
        let stamp = stamp_of(&path);
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let ledger = match (&*cached, stamp) {
            (Some((seen, ledger)), Some(now)) if *seen == now => Arc::clone(ledger),
            _ => {
                let history = History::new(&config.state_dir, config.status.history);
                let ledger = Arc::new(Ledger::read(&config.state_dir, &history).map_err(|e| e.to_string())?);
                if let Some(stamp) = stamp {
                    *cached = Some((stamp, Arc::clone(&ledger)));
                }
                ledger
            }
        };
        Ok(ledger.picture(&config))
    }
}

/// The status server's routes.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/mirror/{name}", get(mirror_page))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

/// The live status with every mirror's view filled in.
async fn filled(s: &ServerState) -> DaemonStatus {
    let mut status = s.status.borrow().clone();
    match s.mirrors.current().await {
        Ok(picture) => {
            for a in &mut status.archives {
                a.mirrors = picture.views.iter().filter(|v| v.state.archive == a.name).cloned().collect();
                a.rotation = picture.rotations.iter().find(|r| r.archive == a.name).cloned();
            }
        }
        Err(why) => status.mirrors_error = Some(why),
    }
    let state_dir = s.mirrors.state_dir();
    let aside = run_blocking(move || crate::sys::fsutil::kept_aside(&state_dir)).await;
    status.kept_aside = aside.iter().map(|p| p.display().to_string()).collect();
    status
}

async fn status(State(s): State<ServerState>) -> Json<DaemonStatus> {
    Json(filled(&s).await)
}

/// Prometheus text (0.0.4) unless the client asks for OpenMetrics, as Prometheus itself does.
async fn metrics(State(s): State<ServerState>, headers: HeaderMap) -> Response {
    let picture = s.mirrors.current().await.ok();
    let accept = headers.get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let openmetrics = accept.contains("application/openmetrics-text");
    let body = s.metrics.scrape(picture.as_ref(), openmetrics);
    let kind = match openmetrics {
        true => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        false => "text/plain; version=0.0.4; charset=utf-8",
    };
    ([(CONTENT_TYPE, kind)], body).into_response()
}

/// The overview, filtered and sorted as its query says.
async fn page(State(s): State<ServerState>, RawQuery(query): RawQuery) -> Html<String> {
    let filters = Filters::parse(query.as_deref());
    let (status, grid) = (filled(&s).await, s.mirrors.grid().await);
    let config = s.mirrors.config();
    let now = crate::vocab::model::Timestamp(std::time::SystemTime::now());
    let view = Overview { status: &status, grid: &grid, config: Some(&config), filters: &filters, now };
    Html(crate::daemon::page::overview(&view))
}

/// One mirror's page; 404 for a name no archive or configured mirror knows.
async fn mirror_page(State(s): State<ServerState>, Path(name): Path<String>, RawQuery(query): RawQuery) -> Response {
    let filters = Filters::parse(query.as_deref());
    let (status, grid) = (filled(&s).await, s.mirrors.grid().await);
    let config = s.mirrors.config();
    let lags = s.mirrors.lags().await;
    let lags = lags.as_deref().map_err(String::as_str);
    match crate::daemon::page::mirror_page(&name, &status, &grid, Some(&config), lags, &filters) {
        Some(html) => Html(html).into_response(),
        None => (StatusCode::NOT_FOUND, Html(format!("no mirror named {}\n", esc_text(&name)))).into_response(),
    }
}

/// Text safe in HTML.
fn esc_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
