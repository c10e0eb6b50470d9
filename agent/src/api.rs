//! The agent's HTTP surface: `/metrics`, `/api/v1/snapshot` (JSON, for the exporter) and
//! `/health`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use common::http::{method_not_allowed, not_found};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::watch;

use crate::snapshot::AgentSnapshot;

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub snapshots: watch::Receiver<Arc<AgentSnapshot>>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/snapshot", get(snapshot))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        crate::metrics::render(&s.registry),
    )
        .into_response()
}

async fn snapshot(State(s): State<AppState>) -> Response {
    let snap = s.snapshots.borrow().clone();
    Json(&*snap).into_response()
}

/// 200 while collections keep coming; 503 when the last one is older than three
/// intervals plus 10 s (a hung disk can block the collectors).
async fn health(State(s): State<AppState>) -> Response {
    let snap = s.snapshots.borrow().clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let stale = now.saturating_sub(snap.at_unix_ms) > 3 * snap.interval_ms + 10_000;
    let code = if stale {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        code,
        Json(json!({
            "status": if stale { "stale" } else { "ok" },
            "member": snap.member,
            "last_collect_unix_ms": snap.at_unix_ms,
            "etcd_process_up": snap.etcd_process.is_some(),
        })),
    )
        .into_response()
}
