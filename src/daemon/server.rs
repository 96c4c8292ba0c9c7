//! The daemon's status server: `GET /status` (JSON, the report model), `GET /metrics`
//! (Prometheus text), `GET /` (one self-contained HTML page), `GET /healthz`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::watch;

use crate::daemon::metrics::Metrics;
use crate::daemon::status::DaemonStatus;

/// What the handlers read.
#[derive(Clone)]
pub struct ServerState {
    /// The live status.
    pub status: watch::Receiver<DaemonStatus>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
}

/// The status server's routes.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

async fn status(State(s): State<ServerState>) -> Json<DaemonStatus> {
    Json(s.status.borrow().clone())
}

async fn metrics(State(s): State<ServerState>) -> Response {
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.encode()).into_response()
}

async fn page(State(s): State<ServerState>) -> Html<String> {
    Html(crate::daemon::page::render(&s.status.borrow()))
}
