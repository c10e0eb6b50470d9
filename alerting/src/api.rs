//! The relay's HTTP surface: ingest (`POST /api/v2/alerts`, `POST /api/v1/alertmanager`),
//! read (`GET /api/v1/alerts`, `GET /api/v1/alerts/history`), `/metrics`, `/health`.
//! An ingest answers 200 only after the outbox transaction has committed; anything
//! invalid gets a 4xx naming the problem and nothing is stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::Notify;

use crate::config::RelayConfig;
use crate::metrics::{EndpointLabel, Metrics};
use crate::model::{self, Alert, InvalidPayload};
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<RelayConfig>,
    pub store: Arc<Store>,
    pub wake: Arc<HashMap<String, Arc<Notify>>>,
    pub metrics: Metrics,
    pub registry: Arc<Registry>,
    pub max_body_bytes: usize,
}

use common::http::{method_not_allowed, not_found, ApiError};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v2/alerts", post(ingest_v2))
        .route("/api/v1/alertmanager", post(ingest_webhook))
        .route("/api/v1/alerts", get(active))
        .route("/api/v1/alerts/history", get(history))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn read_body(req: Request<Body>, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body of {len} bytes is over the limit of {limit} bytes"),
            ));
        }
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body is over the limit of {limit} bytes"),
            )
        })
}

async fn ingest(
    s: AppState,
    endpoint: &'static str,
    req: Request<Body>,
    parse: fn(&[u8], SystemTime) -> Result<Vec<Alert>, InvalidPayload>,
) -> Result<Response, ApiError> {
    let label = EndpointLabel {
        endpoint: endpoint.to_owned(),
    };
    let body = match read_body(req, s.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            s.metrics.rejected.get_or_create(&label).inc();
            return Err(e);
        }
    };
    let alerts = parse(&body, SystemTime::now()).map_err(|e| {
        s.metrics.rejected.get_or_create(&label).inc();
        ApiError::new(StatusCode::BAD_REQUEST, e.0)
    })?;
    let store = s.store.clone();
    let cfg = s.config.clone();
    let n = alerts.len();
    let outcome = tokio::task::spawn_blocking(move || {
        store.ingest(
            &alerts,
            |a: &Alert| cfg.receivers_for(a),
            crate::delivery::now_ms(),
            cfg.dedup_window,
        )
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("ingest task failed: {e}"),
        )
    })?
    .map_err(|e| {
        tracing::error!(error = %e, "cannot store alerts");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the outbox cannot store alerts right now",
        )
    })?;
    s.metrics.received.get_or_create(&label).inc_by(n as u64);
    s.metrics.deduplicated.inc_by(outcome.deduplicated as u64);
    crate::wake_receivers(&s.wake, &outcome.enqueued);
    Ok(Json(json!({
        "received": outcome.received,
        "notifications": outcome.enqueued.len(),
        "deduplicated": outcome.deduplicated,
    }))
    .into_response())
}

/// The `endpoint` label values of the ingest metrics.
pub const ENDPOINTS: &[&str] = &["v2_alerts", "alertmanager_webhook"];

async fn ingest_v2(State(s): State<AppState>, req: Request<Body>) -> Result<Response, ApiError> {
    ingest(s, "v2_alerts", req, model::parse_v2).await
}

async fn ingest_webhook(
    State(s): State<AppState>,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    ingest(s, "alertmanager_webhook", req, model::parse_webhook).await
}

async fn active(State(s): State<AppState>) -> Result<Response, ApiError> {
    let store = s.store.clone();
    let alerts =
        tokio::task::spawn_blocking(move || store.active_alerts(crate::delivery::now_ms()))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(json!({ "alerts": alerts })).into_response())
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn history(
    State(s): State<AppState>,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = q
        .limit
        .unwrap_or(crate::store::HISTORY_LEN as usize)
        .min(crate::store::HISTORY_LEN as usize);
    let store = s.store.clone();
    let h = tokio::task::spawn_blocking(move || store.history(limit))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(json!({ "history": h })).into_response())
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut out = String::new();
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &s.registry);
    (
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        out,
    )
        .into_response()
}

async fn health() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}
