//! The HTTP surface: Prometheus `/metrics`, `/health` and the REST API, all read from the
//! latest snapshot. Errors are JSON `{"error": "..."}` with a fitting status code.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use crate::model::MemberState;
use crate::snapshot::{MemberExtras, Snapshot};

/// What handlers share: the receiving end of the snapshot channel.
#[derive(Clone)]
pub struct AppState {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// The relay to answer `/api/v1/alerts*` from, with the client to ask it.
    pub relay: Option<(url::Url, reqwest::Client)>,
    /// The benchmark endpoint, when enabled.
    pub bench: Option<crate::benchmark::BenchState>,
}

impl AppState {
    fn latest(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }
}

pub use common::http::ApiError;
use common::http::{method_not_allowed, not_found};

/// The exporter's router.
pub fn router(state: AppState, cors_origins: &[axum::http::HeaderValue]) -> Router {
    let mut r = Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/api/v1/cluster/status", get(cluster_status))
        .route("/api/v1/cluster/members", get(cluster_members))
        .route("/api/v1/cluster/leader", get(cluster_leader))
        .route("/api/v1/cluster/leader/history", get(leader_history))
        .route("/api/v1/metrics/current", get(metrics_current))
        .route("/api/v1/metrics/history", get(metrics_history))
        .route("/api/v1/metrics/latency", get(metrics_latency))
        .route("/api/v1/alerts", get(alerts))
        .route(
            "/api/v1/performance/benchmark",
            axum::routing::post(crate::benchmark::handle),
        )
        .route("/api/v1/alerts/history", get(alerts_history))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    if !cors_origins.is_empty() {
        r = r.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(cors_origins.to_vec())
                .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    r
}

async fn metrics(State(s): State<AppState>) -> Response {
    let snap = s.latest();
    (
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        snap.metrics_text.clone(),
    )
        .into_response()
}

async fn status_page(State(s): State<AppState>) -> Response {
    axum::response::Html(crate::status_page::render(&s.latest())).into_response()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The exporter's own health: 200 while cycles complete, 503 before the first one or
/// when the last one is older than three intervals (plus slack).
async fn health(State(s): State<AppState>) -> Response {
    let snap = s.latest();
    let age_ms = now_ms().saturating_sub(snap.at_unix_ms);
    let (status, word) = if snap.cycle == 0 {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    } else if age_ms > 3 * snap.interval_ms + 10_000 {
        (StatusCode::SERVICE_UNAVAILABLE, "stale")
    } else {
        (StatusCode::OK, "ok")
    };
    (
        status,
        Json(json!({
            "status": word,
            "cycle": snap.cycle,
            "last_collect_unix_ms": snap.at_unix_ms,
            "cluster_healthy": snap.model.healthy,
        })),
    )
        .into_response()
}

#[derive(Serialize)]
struct ClusterStatus<'a> {
    at_unix_ms: u64,
    #[serde(flatten)]
    model: &'a crate::model::ClusterModel,
    leader_changes_total: u64,
    request_rate_per_second: Option<f64>,
}

async fn cluster_status(State(s): State<AppState>) -> Response {
    let snap = s.latest();
    Json(ClusterStatus {
        at_unix_ms: snap.at_unix_ms,
        model: &snap.model,
        leader_changes_total: snap.leader_changes_total,
        request_rate_per_second: snap.request_rate_per_second,
    })
    .into_response()
}

#[derive(Serialize)]
struct MemberView<'a> {
    #[serde(flatten)]
    state: &'a MemberState,
    #[serde(flatten)]
    extras: Option<&'a MemberExtras>,
    agent: Option<&'a crate::snapshot::AgentStatus>,
}

async fn cluster_members(State(s): State<AppState>) -> Response {
    let snap = s.latest();
    let members: Vec<MemberView<'_>> = snap
        .model
        .members
        .iter()
        .map(|m| MemberView {
            state: m,
            extras: snap.extras.get(&m.info.id),
            agent: snap.agents.get(&m.info.name),
        })
        .collect();
    Json(json!({ "at_unix_ms": snap.at_unix_ms, "members": members })).into_response()
}

async fn cluster_leader(State(s): State<AppState>) -> Response {
    let snap = s.latest();
    let member = snap
        .model
        .leader
        .as_ref()
        .and_then(|l| snap.model.members.iter().find(|m| m.info.id == l.id));
    Json(json!({
        "at_unix_ms": snap.at_unix_ms,
        "has_leader": snap.model.has_leader,
        "leader": snap.model.leader,
        "member": member,
    }))
    .into_response()
}

async fn leader_history(State(s): State<AppState>) -> Response {
    let snap = s.latest();
    Json(json!({
        "changes_total": snap.leader_changes_total,
        "changes": snap.leader_history,
    }))
    .into_response()
}

async fn metrics_current(State(s): State<AppState>) -> Response {
    let snap = s.latest();
    let members: Vec<_> = snap
        .model
        .members
        .iter()
        .map(|m| {
            let x = snap.extras.get(&m.info.id);
            json!({
                "member": m.info.name,
                "up": m.up,
                "is_leader": m.is_leader,
                "raft_term": m.raft_term,
                "raft_index": m.raft_index,
                "raft_applied_index": m.raft_applied_index,
                "revision": m.revision,
                "db_size_bytes": m.db_size_bytes,
                "db_size_in_use_bytes": m.db_size_in_use_bytes,
                "watchers": x.and_then(|x| x.watchers),
                "wal_fsync_p95_ms": x.and_then(|x| x.wal_fsync_p95_ms),
                "backend_commit_p95_ms": x.and_then(|x| x.backend_commit_p95_ms),
                "read_linearizable_ms": x.and_then(|x| x.read_linearizable_ms),
                "read_serializable_ms": x.and_then(|x| x.read_serializable_ms),
            })
        })
        .collect();
    Json(json!({
        "at_unix_ms": snap.at_unix_ms,
        "cycle": snap.cycle,
        "collect_duration_ms": snap.collect_duration_ms,
        "collect_errors": snap.collect_errors,
        "healthy": snap.model.healthy,
        "has_leader": snap.model.has_leader,
        "member_count": snap.model.member_count,
        "quorum_size": snap.model.quorum_size,
        "healthy_members": snap.model.healthy_members,
        "leader_changes_total": snap.leader_changes_total,
        "revision_divergence": snap.model.revision_divergence,
        "raft_index_divergence": snap.model.raft_index_divergence,
        "request_rate_per_second": snap.request_rate_per_second,
        "read_latency_ms": snap.latency.read,
        "write_latency_ms": snap.latency.write,
        "members": members,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    /// Only points at or after this Unix time in milliseconds.
    since: Option<u64>,
}

async fn metrics_history(
    State(s): State<AppState>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let snap = s.latest();
    let since = q.since.unwrap_or(0);
    let points: Vec<_> = snap
        .history
        .iter()
        .filter(|p| p.at_unix_ms >= since)
        .collect();
    Ok(Json(json!({
        "interval_ms": snap.interval_ms,
        "points": points,
    }))
    .into_response())
}

async fn from_relay(s: &AppState, path: &str, query: Option<&str>) -> Result<Response, ApiError> {
    let Some((base, http)) = &s.relay else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no relay configured (start the exporter with --relay-url)",
        ));
    };
    let mut url = base
        .join(path)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    url.set_query(query);
    let unreachable =
        |e: String| ApiError::new(StatusCode::BAD_GATEWAY, format!("relay at {base}: {e}"));
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| unreachable(common::etcd::error_chain(&e.without_url())))?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| unreachable(format!("not JSON: {}", common::etcd::error_chain(&e))))?;
    if !status.is_success() {
        return Err(unreachable(format!("status {status}: {body}")));
    }
    Ok(Json(body).into_response())
}

async fn alerts(State(s): State<AppState>) -> Result<Response, ApiError> {
    from_relay(&s, "api/v1/alerts", None).await
}

async fn alerts_history(State(s): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    from_relay(&s, "api/v1/alerts/history", uri.query()).await
}

async fn metrics_latency(State(s): State<AppState>) -> Response {
    let snap = s.latest();
    Json(&*snap.latency).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn app() -> Router {
        let (_tx, rx) = watch::channel(Arc::new(Snapshot::empty(5000)));
        router(
            AppState {
                snapshots: rx,
                relay: None,
                bench: None,
            },
            &[],
        )
    }

    async fn call(app: Router, method: &str, uri: &str) -> (StatusCode, serde_json::Value) {
        let resp = app
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_get_json_errors() {
        let (status, body) = call(app(), "GET", "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "no such endpoint: /nope");
        let (status, body) = call(app(), "DELETE", "/api/v1/cluster/status").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not allowed")));
    }

    #[tokio::test]
    async fn bad_query_is_a_400_naming_it() {
        let (status, body) = call(app(), "GET", "/api/v1/metrics/history?since=yesterday").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("since")),
            "{body}"
        );
    }

    #[tokio::test]
    async fn health_is_503_before_the_first_cycle() {
        let (status, body) = call(app(), "GET", "/health").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "starting");
    }
}
