//! The HTTP surface: Prometheus `/metrics`, `/health` and the REST API, all read from the
//! latest snapshot. Errors are JSON `{"error": "..."}` with a fitting status code.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use crate::model::MemberState;
use crate::snapshot::{MemberExtras, Snapshot};

/// What handlers share: the latest snapshot of every cluster, and the clients for the
/// relay and the benchmark.
#[derive(Clone)]
pub struct AppState {
    /// One per cluster, in the configuration's order.
    pub clusters: Vec<watch::Receiver<Arc<Snapshot>>>,
    pub exposer: Arc<crate::metrics::Exposer>,
    /// The relay to answer `/api/v1/alerts*` from, with the client to ask it.
    pub relay: Option<(url::Url, reqwest::Client)>,
    /// The benchmark endpoint, when enabled.
    pub bench: Option<crate::benchmark::BenchState>,
    /// The maintenance API, when enabled.
    pub maintenance: Option<crate::maintenance::MaintenanceState>,
}

/// `?cluster=NAME`, taken by every endpoint about one cluster.
#[derive(Debug, Default, Deserialize)]
pub struct ClusterQuery {
    pub cluster: Option<String>,
}

impl AppState {
    /// Every cluster's latest snapshot.
    pub fn snapshots(&self) -> Vec<Arc<Snapshot>> {
        self.clusters.iter().map(|rx| rx.borrow().clone()).collect()
    }

    /// The snapshot of the cluster `name` ([`pick_cluster`]).
    pub fn select(&self, name: Option<&str>) -> Result<Arc<Snapshot>, ApiError> {
        let snaps = self.snapshots();
        pick_cluster(&snaps, name, |s| s.cluster.as_deref()).cloned()
    }
}

/// What `?cluster=NAME` picks among `items` (one per watched cluster, in the
/// configuration's order; `cluster_of` names each): the name is optional with one cluster
/// and required with several (400 naming them); an unknown name is a 404 (echoed, at most
/// 64 characters of it). The API, the benchmark and the maintenance endpoints all choose
/// this way.
pub fn pick_cluster<'a, T>(
    items: &'a [T],
    name: Option<&str>,
    cluster_of: impl Fn(&T) -> Option<&str>,
) -> Result<&'a T, ApiError> {
    let known = || {
        items
            .iter()
            .filter_map(&cluster_of)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(name) = name else {
        return match items {
            [] => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no cluster is watched",
            )),
            [only] => Ok(only),
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "this exporter watches several clusters: name one with ?cluster= ({})",
                    known()
                ),
            )),
        };
    };
    if let Some(item) = items.iter().find(|i| cluster_of(i) == Some(name)) {
        return Ok(item);
    }
    let name = clip(name);
    let message = match known() {
        // The only cluster of a plain setup has no name: any name is unknown.
        known if known.is_empty() => {
            format!("no cluster named {name:?}: the exporter watches one unnamed cluster")
        }
        known => format!("no cluster named {name:?} (known: {known})"),
    };
    Err(ApiError::new(StatusCode::NOT_FOUND, message))
}

pub(crate) fn clip(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

type ClusterArg = Result<Query<ClusterQuery>, axum::extract::rejection::QueryRejection>;

/// The snapshot a `?cluster=` query selects.
fn selected(s: &AppState, q: ClusterArg) -> Result<Arc<Snapshot>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    s.select(q.cluster.as_deref())
}

pub use common::http::ApiError;
use common::http::{method_not_allowed, not_found};

/// The exporter's router.
pub fn router(state: AppState, cors_origins: &[axum::http::HeaderValue]) -> Router {
    let mut r = Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/api/v1/clusters", get(clusters))
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
        .route(
            "/api/v1/maintenance/operations/{id}",
            get(crate::maintenance::operation),
        )
        .route(
            "/api/v1/maintenance/{*operation}",
            axum::routing::post(crate::maintenance::start),
        )
        .route("/api/v1/audit", get(crate::maintenance::audit))
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

/// Whether the client takes gzip (`Accept-Encoding: gzip`, not at `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let snaps = s.snapshots();
    let gzip = accepts_gzip(&headers);
    let exposer = s.exposer.clone();
    // Rendering after a new cycle is CPU work in the order of milliseconds: off the
    // runtime, so that it does not hold up other requests.
    let body = match tokio::task::spawn_blocking(move || exposer.get(&snaps, gzip)).await {
        Ok(body) => body,
        Err(e) => {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("render: {e}"))
                .into_response()
        }
    };
    let mut resp = (
        [
            (
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            ),
            (header::VARY, "Accept-Encoding"),
        ],
        body,
    )
        .into_response();
    if gzip {
        resp.headers_mut().insert(
            header::CONTENT_ENCODING,
            axum::http::HeaderValue::from_static("gzip"),
        );
    }
    resp
}

async fn status_page(State(s): State<AppState>, query: ClusterArg) -> Result<Response, ApiError> {
    use crate::status_page::{parse_relay_alerts, render, Alerts, Page};
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let clusters = s.snapshots();
    if let Some(name) = q.cluster.as_deref() {
        s.select(Some(name))?;
    }
    let alerts = match &s.relay {
        None => Alerts::NotConfigured,
        // The page reloads every interval: a slow relay costs it at most 2 s.
        Some(_) => match tokio::time::timeout(
            std::time::Duration::from_secs(2),
            relay_json(&s, "api/v1/alerts", None),
        )
        .await
        {
            Ok(Ok(body)) => {
                parse_relay_alerts(&body).map_or_else(Alerts::Unavailable, Alerts::Firing)
            }
            Ok(Err(e)) => Alerts::Unavailable(e.message),
            Err(_) => Alerts::Unavailable("the relay did not answer within 2 s".into()),
        },
    };
    let html = render(&Page {
        clusters: &clusters,
        selected: q.cluster.as_deref(),
        alerts,
        now_unix_ms: now_ms(),
    });
    Ok((
        [
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        axum::response::Html(html),
    )
        .into_response())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A snapshot's freshness: `starting` before the first cycle, `stale` when the last one
/// is older than three intervals (plus slack), else `ok`.
fn freshness(snap: &Snapshot) -> &'static str {
    let age_ms = now_ms().saturating_sub(snap.at_unix_ms);
    if snap.cycle == 0 {
        "starting"
    } else if age_ms > 3 * snap.interval_ms + 10_000 {
        "stale"
    } else {
        "ok"
    }
}

/// The exporter's own health: 200 while every cluster's cycles complete, 503 before the
/// first one or when one is stale.
async fn health(State(s): State<AppState>) -> Response {
    let snaps = s.snapshots();
    let words: Vec<&str> = snaps.iter().map(|s| freshness(s)).collect();
    let word = ["starting", "stale"]
        .into_iter()
        .find(|w| words.contains(w))
        .unwrap_or("ok");
    let status = if word == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": word,
        "cycle": snaps.iter().map(|s| s.cycle).min().unwrap_or(0),
        "last_collect_unix_ms": snaps.iter().map(|s| s.at_unix_ms).min().unwrap_or(0),
        "cluster_healthy": snaps.iter().all(|s| s.model.healthy),
    });
    if snaps.iter().any(|s| s.cluster.is_some()) {
        body["clusters"] = snaps
            .iter()
            .zip(&words)
            .map(|(s, w)| {
                json!({
                    "cluster": s.cluster,
                    "status": w,
                    "cycle": s.cycle,
                    "last_collect_unix_ms": s.at_unix_ms,
                    "cluster_healthy": s.model.healthy,
                })
            })
            .collect();
    }
    (status, Json(body)).into_response()
}

async fn clusters(State(s): State<AppState>) -> Response {
    let list: Vec<_> = s
        .snapshots()
        .iter()
        .map(|snap| {
            json!({
                "name": snap.cluster,
                "status": freshness(snap),
                "cycle": snap.cycle,
                "at_unix_ms": snap.at_unix_ms,
                "cluster_id": snap.model.cluster_id.map(|id| format!("{id:x}")),
                "healthy": snap.model.healthy,
                "has_leader": snap.model.has_leader,
                "leader": snap.model.leader.as_ref().map(|l| &l.name),
                "member_count": snap.model.member_count,
                "healthy_members": snap.model.healthy_members,
                "quorum_size": snap.model.quorum_size,
                "maintenance": snap.maintenance,
            })
        })
        .collect();
    Json(json!({ "clusters": list })).into_response()
}

#[derive(Serialize)]
struct ClusterStatus<'a> {
    cluster: Option<&'a str>,
    at_unix_ms: u64,
    #[serde(flatten)]
    model: &'a crate::model::ClusterModel,
    leader_changes_total: u64,
    leader_changes_planned_total: u64,
    maintenance: Option<&'a ctl::marker::Marker>,
    request_rate_per_second: Option<f64>,
}

async fn cluster_status(State(s): State<AppState>, q: ClusterArg) -> Result<Response, ApiError> {
    let snap = selected(&s, q)?;
    Ok(Json(ClusterStatus {
        cluster: snap.cluster.as_deref(),
        at_unix_ms: snap.at_unix_ms,
        model: &snap.model,
        leader_changes_total: snap.leader_changes_total,
        leader_changes_planned_total: snap.leader_changes_planned_total,
        maintenance: snap.maintenance.as_ref(),
        request_rate_per_second: snap.request_rate_per_second,
    })
    .into_response())
}

#[derive(Serialize)]
struct MemberView<'a> {
    #[serde(flatten)]
    state: &'a MemberState,
    #[serde(flatten)]
    extras: Option<&'a MemberExtras>,
    agent: Option<&'a crate::snapshot::AgentStatus>,
}

async fn cluster_members(State(s): State<AppState>, q: ClusterArg) -> Result<Response, ApiError> {
    let snap = selected(&s, q)?;
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
    Ok(Json(json!({
        "cluster": snap.cluster,
        "at_unix_ms": snap.at_unix_ms,
        "members": members,
    }))
    .into_response())
}

async fn cluster_leader(State(s): State<AppState>, q: ClusterArg) -> Result<Response, ApiError> {
    let snap = selected(&s, q)?;
    let member = snap
        .model
        .leader
        .as_ref()
        .and_then(|l| snap.model.members.iter().find(|m| m.info.id == l.id));
    Ok(Json(json!({
        "cluster": snap.cluster,
        "at_unix_ms": snap.at_unix_ms,
        "has_leader": snap.model.has_leader,
        "leader": snap.model.leader,
        "member": member,
    }))
    .into_response())
}

async fn leader_history(State(s): State<AppState>, q: ClusterArg) -> Result<Response, ApiError> {
    let snap = selected(&s, q)?;
    Ok(Json(json!({
        "cluster": snap.cluster,
        "changes_total": snap.leader_changes_total,
        "changes": snap.leader_history,
    }))
    .into_response())
}

async fn metrics_current(State(s): State<AppState>, q: ClusterArg) -> Result<Response, ApiError> {
    let snap = selected(&s, q)?;
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
                "quota_bytes": x.and_then(|x| x.quota_bytes),
                "watchers": x.and_then(|x| x.watchers),
                "wal_fsync_p95_ms": x.and_then(|x| x.wal_fsync_p95_ms),
                "backend_commit_p95_ms": x.and_then(|x| x.backend_commit_p95_ms),
                "read_linearizable_ms": x.and_then(|x| x.read_linearizable_ms),
                "read_serializable_ms": x.and_then(|x| x.read_serializable_ms),
            })
        })
        .collect();
    Ok(Json(json!({
        "cluster": snap.cluster,
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
    .into_response())
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    cluster: Option<String>,
    /// Only points at or after this Unix time in milliseconds.
    since: Option<u64>,
}

async fn metrics_history(
    State(s): State<AppState>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let snap = s.select(q.cluster.as_deref())?;
    let since = q.since.unwrap_or(0);
    let points: Vec<_> = snap
        .history
        .iter()
        .filter(|p| p.at_unix_ms >= since)
        .collect();
    Ok(Json(json!({
        "cluster": snap.cluster,
        "interval_ms": snap.interval_ms,
        "points": points,
    }))
    .into_response())
}

async fn metrics_latency(State(s): State<AppState>, q: ClusterArg) -> Result<Response, ApiError> {
    let snap = selected(&s, q)?;
    Ok(Json(&*snap.latency).into_response())
}

/// The relay's URL as it may be shown: without credentials.
fn shown(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// GETs `path` (with `query`) from the relay as JSON.
async fn relay_json(
    s: &AppState,
    path: &str,
    query: Option<&str>,
) -> Result<serde_json::Value, ApiError> {
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
    let unreachable = |e: String| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("relay at {}: {e}", shown(base)),
        )
    };
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| unreachable(common::etcd::error_chain(&e.without_url())))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.map_err(|e| {
        unreachable(format!(
            "not JSON: {}",
            common::etcd::error_chain(&e.without_url())
        ))
    })?;
    if !status.is_success() {
        return Err(unreachable(format!("status {status}: {body}")));
    }
    Ok(body)
}

async fn alerts(State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(relay_json(&s, "api/v1/alerts", None).await?).into_response())
}

async fn alerts_history(State(s): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    Ok(Json(relay_json(&s, "api/v1/alerts/history", uri.query()).await?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;

    #[test]
    fn the_relay_url_is_shown_without_credentials() {
        for raw in [
            "https://monitor:s3cret@relay:9095/",
            "http://s3cret@relay:9095",
        ] {
            let url = url::Url::parse(raw).expect("url");
            let s = shown(&url);
            assert!(!s.contains("s3cret"), "{raw} shown as {s}");
            assert!(s.contains("relay:9095"), "{raw} shown as {s}");
        }
    }
    use tower::ServiceExt;

    fn app() -> Router {
        let (_tx, rx) = watch::channel(Arc::new(Snapshot::empty(None, 5000)));
        router(
            AppState {
                clusters: vec![rx],
                exposer: Arc::new(crate::metrics::Exposer::new()),
                relay: None,
                bench: None,
                maintenance: None,
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
