//! The relay's HTTP surface.
//!
//! - Ingest: `POST /api/v2/alerts` (what Prometheus sends an Alertmanager) and
//!   `POST /api/v1/alertmanager` (an Alertmanager webhook). 200 only after the outbox
//!   transaction has committed; the valid alerts of a request are kept even when others
//!   in it are refused (400 naming each), as Alertmanager does; 503 when the store cannot
//!   write or is full.
//! - Alertmanager's v2 read side and silences, for `amtool`, Grafana's Alertmanager data
//!   source and karma: `GET /api/v2/alerts`, `GET /api/v2/alerts/groups`,
//!   `GET|POST /api/v2/silences`, `GET|DELETE /api/v2/silence/{id}`, `GET /api/v2/status`,
//!   `GET /api/v2/receivers`.
//! - Our own: `GET /api/v1/alerts`, `GET /api/v1/alerts/history`, `/metrics`, `/health`
//!   (503 while the store cannot write), `POST /-/reload`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::engine::{AlertView, Engine, EngineError};
use crate::matchers::{matchers_match, parse_matchers, Matcher};
use crate::metrics::{EndpointLabel, Metrics};
use crate::model::{self, Labels, Parsed};
use crate::silence::{format_rfc3339_ms, PostableSilence};

/// What `/-/reload` and SIGHUP call: reads the config file again and applies it.
pub type Reloader = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub wake: Arc<std::sync::RwLock<HashMap<String, Arc<Notify>>>>,
    pub metrics: Metrics,
    pub registry: Arc<Registry>,
    pub max_body_bytes: usize,
    pub started_ms: i64,
    pub reload: Reloader,
}

use common::http::{method_not_allowed, not_found, ApiError};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v2/alerts", post(ingest_v2).get(v2_alerts))
        .route("/api/v2/alerts/groups", get(v2_groups))
        .route("/api/v1/alertmanager", post(ingest_webhook))
        .route("/api/v2/silences", get(v2_silences).post(v2_post_silence))
        .route(
            "/api/v2/silence/{id}",
            get(v2_silence).delete(v2_expire_silence),
        )
        .route("/api/v2/status", get(v2_status))
        .route("/api/v2/receivers", get(v2_receivers))
        .route("/api/v1/alerts", get(active))
        .route("/api/v1/alerts/history", get(history))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/-/healthy", get(health))
        .route("/-/ready", get(health))
        .route("/-/reload", post(reload))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

fn now_ms() -> i64 {
    crate::delivery::now_ms()
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

/// Runs `f` on the blocking pool; a panic or a store failure becomes a 5xx.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("task failed: {e}"),
            )
        })?
        .map_err(engine_error)
}

/// An error of Alertmanager's v2 API: the body is a JSON string, which `amtool` prints.
struct V2Error(ApiError);

impl From<ApiError> for V2Error {
    fn from(e: ApiError) -> Self {
        V2Error(e)
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        (self.0.status, Json(self.0.message)).into_response()
    }
}

fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
        EngineError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
        EngineError::Store(e) => {
            tracing::error!(error = %e, "the store cannot write");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the relay cannot store this right now (its data directory may be full); try again",
            )
        }
    }
}

async fn ingest(
    s: AppState,
    endpoint: &'static str,
    req: Request<Body>,
    parse: fn(&[u8], SystemTime) -> Result<Parsed, model::InvalidPayload>,
) -> Result<Response, ApiError> {
    let label = EndpointLabel {
        endpoint: endpoint.to_owned(),
    };
    let rejected = || {
        s.metrics.rejected.get_or_create(&label).inc();
    };
    let body = read_body(req, s.max_body_bytes)
        .await
        .inspect_err(|_| rejected())?;
    let parsed = parse(&body, SystemTime::now()).map_err(|e| {
        rejected();
        ApiError::new(StatusCode::BAD_REQUEST, e.0)
    })?;
    let (engine, wake) = (s.engine.clone(), s.wake.clone());
    let alerts = parsed.alerts;
    let n = alerts.len();
    // The store and the wake-up run to the end even if the client goes away meanwhile.
    let outcome = blocking(move || {
        let out = engine.ingest(&alerts, now_ms())?;
        crate::wake_receivers(&wake, &out.enqueued);
        Ok(out)
    })
    .await?;
    s.metrics
        .received
        .get_or_create(&label)
        .inc_by((n - outcome.refused_full) as u64);
    s.metrics.deduplicated.inc_by(outcome.deduplicated as u64);
    s.metrics.superseded.inc_by(outcome.superseded);
    if !parsed.invalid.is_empty() {
        rejected();
        let errors: Vec<String> = parsed.invalid.iter().map(|e| e.0.clone()).collect();
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{} of {} alerts refused (the other {} are stored): {}",
                errors.len(),
                errors.len() + n,
                n - outcome.refused_full,
                errors.join("; ")
            ),
        ));
    }
    if outcome.refused_full > 0 {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} new alerts refused: the relay holds its maximum of alerts (--max-alerts); the other {} are stored",
                outcome.refused_full,
                n - outcome.refused_full
            ),
        ));
    }
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

/// Our own view of the firing alerts, with their silences and inhibitions.
/// The firing alerts, read on a blocking thread (a read waits for a step's commit).
async fn views(engine: &Arc<Engine>) -> Result<Vec<AlertView>, ApiError> {
    let engine = engine.clone();
    blocking(move || Ok(engine.alerts(now_ms()))).await
}

async fn active(State(s): State<AppState>) -> Result<Response, ApiError> {
    let alerts: Vec<Value> = views(&s.engine)
        .await?
        .into_iter()
        .map(|v| {
            let mut a = serde_json::to_value(v.stored.as_ref()).unwrap_or(Value::Null);
            a["receivers"] = json!(v.receivers);
            a["silenced_by"] = json!(v.silenced_by);
            a["inhibited_by"] = json!(v.inhibited_by);
            a
        })
        .collect();
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
    let engine = s.engine.clone();
    let h = blocking(move || Ok(engine.store().history(limit)?)).await?;
    Ok(Json(json!({ "history": h })).into_response())
}

/// The v2 API's filters on alerts (`filter`, `receiver`, `active`, `silenced`,
/// `inhibited`, `unprocessed`).
struct AlertFilter {
    matchers: Vec<Matcher>,
    receiver: Option<regex::Regex>,
    active: bool,
    silenced: bool,
    inhibited: bool,
}

fn bool_param(v: &str, name: &str) -> Result<bool, ApiError> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{name}: {v:?} is neither true nor false"),
        )),
    }
}

impl AlertFilter {
    fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut f = AlertFilter {
            matchers: Vec::new(),
            receiver: None,
            active: true,
            silenced: true,
            inhibited: true,
        };
        let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "filter" => f
                    .matchers
                    .extend(parse_matchers(&v).map_err(|e| bad(format!("filter: {e}")))?),
                "receiver" => {
                    f.receiver = Some(
                        regex::RegexBuilder::new(&format!("^(?:{v})$"))
                            .size_limit(1 << 20)
                            .build()
                            .map_err(|_| bad(format!("receiver: invalid regex {v:?}")))?,
                    )
                }
                "active" => f.active = bool_param(&v, "active")?,
                "silenced" => f.silenced = bool_param(&v, "silenced")?,
                "inhibited" => f.inhibited = bool_param(&v, "inhibited")?,
                "unprocessed" => {
                    bool_param(&v, "unprocessed")?;
                }
                _ => {}
            }
        }
        Ok(f)
    }

    fn keeps(&self, v: &AlertView) -> bool {
        let silenced = !v.silenced_by.is_empty();
        let inhibited = !v.inhibited_by.is_empty();
        let active = !silenced && !inhibited;
        (self.active || !active)
            && (self.silenced || !silenced)
            && (self.inhibited || !inhibited)
            && matchers_match(&self.matchers, &v.stored.alert.labels)
            && self
                .receiver
                .as_ref()
                .is_none_or(|re| v.receivers.iter().any(|r| re.is_match(r)))
    }
}

/// An alert in the v2 API's `gettableAlert` shape.
fn gettable_alert(v: &AlertView) -> Value {
    let a = &v.stored.alert;
    let suppressed = !v.silenced_by.is_empty() || !v.inhibited_by.is_empty();
    json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "startsAt": a.starts_at,
        "endsAt": a.ends_at,
        "updatedAt": format_rfc3339_ms(v.stored.received_at_ms),
        "generatorURL": a.generator_url,
        "fingerprint": a.fingerprint,
        "receivers": v.receivers.iter().map(|r| json!({ "name": r })).collect::<Vec<_>>(),
        "status": {
            "state": if suppressed { "suppressed" } else { "active" },
            "silencedBy": v.silenced_by,
            "inhibitedBy": v.inhibited_by,
        },
    })
}

/// Parses the filters on a blocking thread: regexes from a request take CPU time.
async fn alert_filter(q: Option<String>) -> Result<AlertFilter, ApiError> {
    tokio::task::spawn_blocking(move || AlertFilter::parse(q.as_deref()))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

async fn v2_alerts(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, V2Error> {
    let f = alert_filter(q).await?;
    let alerts: Vec<Value> = views(&s.engine)
        .await?
        .iter()
        .filter(|v| f.keeps(v))
        .map(gettable_alert)
        .collect();
    Ok(Json(alerts).into_response())
}

/// Alerts by (receiver, group labels).
type GroupedAlerts = std::collections::BTreeMap<(String, Vec<(String, String)>), Vec<Value>>;

/// Alerts grouped by receiver and group labels, as karma and Grafana read them.
async fn v2_groups(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, V2Error> {
    let f = alert_filter(q).await?;
    let cfg = s.engine.config();
    let mut groups = GroupedAlerts::new();
    for v in views(&s.engine).await?.iter().filter(|v| f.keeps(v)) {
        for i in cfg.router.matching(&v.stored.alert.labels) {
            let route = &cfg.router.routes()[i];
            let labels: Vec<(String, String)> = route
                .group_labels(&v.stored.alert.labels)
                .into_iter()
                .collect();
            for &r in &route.receivers {
                groups
                    .entry((cfg.receivers[r].name.clone(), labels.clone()))
                    .or_default()
                    .push(gettable_alert(v));
            }
        }
    }
    let out: Vec<Value> = groups
        .into_iter()
        .map(|((receiver, labels), alerts)| {
            let labels: Labels = labels.into_iter().collect();
            json!({ "labels": labels, "receiver": { "name": receiver }, "alerts": alerts })
        })
        .collect();
    Ok(Json(out).into_response())
}

/// Whether a silence's equality matchers, read as labels, satisfy `filter` (how
/// Alertmanager filters silences).
fn silence_passes(matchers: &[Matcher], filter: &[Matcher]) -> bool {
    let labels: Labels = matchers
        .iter()
        .filter(|m| m.op() == crate::matchers::MatchOp::Equal)
        .map(|m| (m.name().to_owned(), m.value().to_owned()))
        .collect();
    matchers_match(filter, &labels)
}

async fn v2_silences(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, V2Error> {
    let filter =
        tokio::task::spawn_blocking(move || {
            let mut filter = Vec::new();
            for (k, v) in url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
                if k == "filter" {
                    filter.extend(parse_matchers(&v).map_err(|e| {
                        ApiError::new(StatusCode::BAD_REQUEST, format!("filter: {e}"))
                    })?);
                }
            }
            Ok::<_, ApiError>(filter)
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let now = now_ms();
    let engine = s.engine.clone();
    let out: Vec<Value> = blocking(move || Ok(engine.silences()))
        .await?
        .iter()
        .filter(|x| silence_passes(&x.matchers, &filter))
        .map(|x| serde_json::to_value(x.to_gettable(now)).unwrap_or(Value::Null))
        .collect();
    Ok(Json(out).into_response())
}

async fn v2_post_silence(
    State(s): State<AppState>,
    req: Request<Body>,
) -> Result<Response, V2Error> {
    let body = read_body(req, 256 * 1024).await?;
    let p: PostableSilence = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid silence: {e}")))?;
    let engine = s.engine.clone();
    let id = blocking(move || engine.post_silence(&p, now_ms())).await?;
    tracing::info!(silence = %id, "silence stored");
    Ok(Json(json!({ "silenceID": id })).into_response())
}

async fn v2_silence(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, V2Error> {
    let engine = s.engine.clone();
    let wanted = id.clone();
    let x = blocking(move || Ok(engine.silence(&wanted)))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("silence {id} not found")))?;
    Ok(Json(x.to_gettable(now_ms())).into_response())
}

async fn v2_expire_silence(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, V2Error> {
    let engine = s.engine.clone();
    let id2 = id.clone();
    blocking(move || engine.expire_silence(&id2, now_ms())).await?;
    tracing::info!(silence = %id, "silence expired");
    Ok(StatusCode::OK.into_response())
}

async fn v2_receivers(State(s): State<AppState>) -> Response {
    let cfg = s.engine.config();
    let out: Vec<Value> = cfg
        .receivers
        .iter()
        .map(|r| json!({ "name": r.name }))
        .collect();
    Json(out).into_response()
}

async fn v2_status(State(s): State<AppState>) -> Response {
    let cfg = s.engine.config();
    Json(json!({
        "cluster": { "name": "", "peers": [], "status": "disabled" },
        "config": { "original": cfg.summary() },
        "uptime": format_rfc3339_ms(s.started_ms),
        "versionInfo": {
            "branch": "",
            "buildDate": "",
            "buildUser": "",
            "goVersion": "",
            "revision": "",
            "version": env!("CARGO_PKG_VERSION"),
        },
    }))
    .into_response()
}

async fn reload(State(s): State<AppState>) -> Result<Response, ApiError> {
    let r = s.reload.clone();
    tokio::task::spawn_blocking(move || r())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    Ok(Json(json!({ "status": "reloaded" })).into_response())
}

async fn metrics(State(s): State<AppState>) -> Response {
    s.metrics
        .store_healthy
        .set(i64::from(s.engine.store().is_healthy()));
    s.metrics.alerts.set(s.engine.alert_count() as i64);
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

async fn health(State(s): State<AppState>) -> Response {
    let store = s.engine.store();
    if store.is_healthy() {
        return Json(json!({ "status": "ok" })).into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "degraded",
            "error": store.last_error().unwrap_or_else(|| "the store cannot write".into()),
        })),
    )
        .into_response()
}
