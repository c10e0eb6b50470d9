//! `POST /api/v1/performance/benchmark[?cluster=NAME]`: runs the bench library against a
//! cluster the exporter watches. Off unless `--benchmark-token-file` is given; needs that
//! bearer token; bounded in size and time; one run at a time per cluster.
//!
//! Design note. The endpoint puts load on a production cluster, so it must leave it as
//! found, whatever the client does:
//! - Space: before the run, `preflight` reads every member's database size, the quota
//!   and the alarms, and `budget` refuses a run that could write more than a share of the
//!   space left (or any run while an alarm is active): a `NOSPACE` alarm would make the
//!   whole cluster read-only.
//! - Ownership: the run belongs to a thread of its own (`runner`), which holds the
//!   cluster's slot, deletes every key under the run's prefix and only then frees the
//!   slot, on success, failure, deadline or panic. The request only waits for the
//!   outcome; a client that goes away stops waiting and nothing else.
//! - Isolation: the load runs on its own runtime on that thread, so collection cycles on
//!   the exporter's runtime stay on time.
//! - Time: one deadline covers connecting, the fill and the load (`budget::deadline`).

mod budget;
mod preflight;
mod runner;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bench::params::{Consistency, Params, Stop, Workload};
use common::http::ApiError;
use serde::Deserialize;
use tokio::sync::Mutex;

pub use budget::{Quota, BUDGET_PERCENT, DEFAULT_QUOTA_BYTES};

/// Limits on what one request may ask for.
pub const MAX_TOTAL: u64 = 200_000;
pub const MAX_DURATION: Duration = Duration::from_secs(120);
pub const MAX_CLIENTS: usize = 500;
pub const MAX_CONNS: usize = 50;
pub const MAX_VAL_SIZE: usize = 64 * 1024;
pub const MAX_KEY_SPACE: u64 = 1_000_000;
pub const MAX_BODY: usize = 16 * 1024;

/// Time allowed to read the cluster's space before a run.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);

/// One cluster the endpoint may load.
#[derive(Debug, Clone)]
pub struct BenchTarget {
    /// Its name, as `?cluster=` gives it; `None` for the only cluster of a plain setup.
    pub cluster: Option<String>,
    pub etcd: common::etcd::EtcdConfig,
    /// Every key of a run is under it, and all of it is deleted after the run.
    pub prefix: String,
}

/// A target with its one-run slot.
#[derive(Clone)]
struct Target {
    spec: BenchTarget,
    slot: Arc<Mutex<()>>,
}

/// What the endpoint needs: the token and the clusters it may load, each with its slot.
#[derive(Clone)]
pub struct BenchState {
    token: common::secret::Secret,
    targets: Arc<[Target]>,
}

impl BenchState {
    /// The endpoint for `targets` (names unique; one target may be unnamed).
    pub fn new(token: common::secret::Secret, targets: Vec<BenchTarget>) -> BenchState {
        BenchState {
            token,
            targets: targets
                .into_iter()
                .map(|spec| Target {
                    spec,
                    slot: Arc::new(Mutex::new(())),
                })
                .collect(),
        }
    }
}

/// The query string.
#[derive(Debug, Default, Deserialize)]
pub struct BenchQuery {
    pub cluster: Option<String>,
}

/// The target `name` picks ([`crate::api::pick_cluster`]).
fn select<'a>(targets: &'a [Target], name: Option<&str>) -> Result<&'a Target, ApiError> {
    crate::api::pick_cluster(targets, name, |t| t.spec.cluster.as_deref())
}

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchRequest {
    pub workload: String,
    #[serde(default = "one")]
    pub conns: usize,
    #[serde(default = "one")]
    pub clients: usize,
    pub total: Option<u64>,
    /// Seconds.
    pub duration: Option<f64>,
    pub rate: Option<f64>,
    #[serde(default = "eight")]
    pub key_size: usize,
    #[serde(default = "eight")]
    pub val_size: usize,
    #[serde(default = "thousand")]
    pub key_space: u64,
    pub read_ratio: Option<f64>,
    /// `l` or `s`.
    pub consistency: Option<String>,
}

fn one() -> usize {
    1
}
fn eight() -> usize {
    8
}
fn thousand() -> u64 {
    1000
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

/// Validates a request into bench parameters.
pub fn params(req: &BenchRequest, prefix: &str) -> Result<Params, ApiError> {
    let consistency = match req.consistency.as_deref() {
        None | Some("l") => Consistency::Linearizable,
        Some("s") => Consistency::Serializable,
        Some(other) => {
            return Err(bad(format!(
                "consistency: {other:?} is neither \"l\" nor \"s\""
            )))
        }
    };
    let workload = match req.workload.as_str() {
        "write" | "put" => Workload::Write {
            sequential_keys: false,
        },
        "read" | "range" => Workload::Read {
            consistency,
            fill: true,
        },
        "mixed" => {
            let r = req.read_ratio.unwrap_or(0.7);
            if !(0.0..=1.0).contains(&r) {
                return Err(bad(format!("read_ratio: {r} is not between 0 and 1")));
            }
            Workload::Mixed {
                read_ratio: r,
                consistency,
            }
        }
        other => {
            return Err(bad(format!(
                "workload: {other:?} is not write, read or mixed"
            )))
        }
    };
    let stop = match (req.total, req.duration) {
        (Some(_), Some(_)) => return Err(bad("give total or duration, not both")),
        (Some(n), None) if n == 0 || n > MAX_TOTAL => {
            return Err(bad(format!("total: must be between 1 and {MAX_TOTAL}")))
        }
        (Some(n), None) => Stop::Total(n),
        (None, Some(d)) if !(d > 0.0 && d <= MAX_DURATION.as_secs_f64()) => {
            return Err(bad(format!(
                "duration: must be between 0 and {} seconds",
                MAX_DURATION.as_secs()
            )))
        }
        (None, Some(d)) => Stop::Duration(Duration::from_secs_f64(d)),
        (None, None) => Stop::Total(1000),
    };
    for (name, v, max) in [
        ("conns", req.conns, MAX_CONNS),
        ("clients", req.clients, MAX_CLIENTS),
    ] {
        if v == 0 || v > max {
            return Err(bad(format!("{name}: must be between 1 and {max}")));
        }
    }
    if req.val_size > MAX_VAL_SIZE {
        return Err(bad(format!("val_size: at most {MAX_VAL_SIZE}")));
    }
    if req.key_space == 0 || req.key_space > MAX_KEY_SPACE {
        return Err(bad(format!(
            "key_space: must be between 1 and {MAX_KEY_SPACE}"
        )));
    }
    if req.key_size == 0 || req.key_size > 1024 {
        return Err(bad("key_size: must be between 1 and 1024"));
    }
    let rate = match req.rate {
        None => None,
        Some(r) if r.is_finite() && r >= 0.0 => (r > 0.0).then_some(r),
        Some(r) => return Err(bad(format!("rate: {r} is not a rate"))),
    };
    if let (Stop::Total(n), Some(r)) = (stop, rate) {
        let secs = n as f64 / r;
        if secs > MAX_DURATION.as_secs_f64() {
            return Err(bad(format!(
                "total and rate: {n} requests at {r}/s take {secs:.0} s, over the {} s limit",
                MAX_DURATION.as_secs()
            )));
        }
    }
    Ok(Params {
        workload,
        conns: req.conns,
        clients: req.clients,
        stop,
        rate,
        key_size: req.key_size.max(prefix.len() + 1),
        val_size: req.val_size,
        key_space: req.key_space,
        prefix: prefix.to_owned(),
        warmup: Duration::ZERO,
    })
}

fn authorised(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Compare in constant time (for equal lengths).
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The handler: checks, then hands the run to its own thread and waits for the outcome.
pub async fn handle(
    State(app): State<crate::api::AppState>,
    query: Result<Query<BenchQuery>, QueryRejection>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let Some(s) = app.bench else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "the benchmark endpoint is off (start the exporter with --benchmark-token-file)",
        ));
    };
    if !authorised(&headers, s.token.expose()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required",
        ));
    }
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over {MAX_BODY} bytes"),
        ));
    }
    let Query(query) = query.map_err(|e| bad(format!("invalid query: {}", e.body_text())))?;
    let target = select(&s.targets, query.cluster.as_deref())?;
    let req: BenchRequest =
        serde_json::from_slice(&body).map_err(|e| bad(format!("invalid request: {e}")))?;
    let params = params(&req, &target.spec.prefix)?;
    let Ok(slot) = target.slot.clone().try_lock_owned() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "a benchmark is already running on this cluster",
        ));
    };
    // Nothing is written before this check passes; a client that leaves during it only
    // frees the slot again.
    let deadline = tokio::time::Instant::now() + PREFLIGHT_TIMEOUT;
    let space = preflight::gather(&target.spec.etcd, deadline)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot check the cluster's space before the run: {e}"),
            )
        })?;
    if let Err(refusal) = budget::decide(&params, &space) {
        return Ok(refused(&refusal));
    }
    let job = runner::Job {
        deadline: budget::deadline(&params, MAX_DURATION),
        params,
        etcd: target.spec.etcd.clone(),
        prefix: target.spec.prefix.clone(),
        cluster: target.spec.cluster.clone(),
        slot,
    };
    let outcome = runner::start(job).map_err(|e| {
        tracing::error!(error = %e, "cannot start the benchmark thread");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot start the benchmark",
        )
    })?;
    // Dropping this future (the client left) drops only the receiver: the run goes on,
    // cleans up and frees the slot by itself.
    match outcome.await {
        Ok(runner::Outcome::Done(report)) => Ok(Json(report).into_response()),
        Ok(runner::Outcome::Failed(e)) => Err(ApiError::new(StatusCode::BAD_GATEWAY, e)),
        Ok(runner::Outcome::TimedOut(d)) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the benchmark did not finish within {} s: it was stopped and its keys deleted",
                d.as_secs()
            ),
        )),
        Ok(runner::Outcome::Broken) | Err(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the benchmark failed (see the exporter's log); its keys were deleted",
        )),
    }
}

/// The answer to a refused run: the message and the figures it rests on.
fn refused(refusal: &budget::Refusal) -> Response {
    let (status, figures) = match refusal {
        budget::Refusal::Alarm { member, alarm } => (
            StatusCode::CONFLICT,
            serde_json::json!({"alarm": {"member": member, "alarm": alarm.as_str()}}),
        ),
        budget::Refusal::OverBudget { estimate, budget } => (
            StatusCode::BAD_REQUEST,
            serde_json::json!({
                "estimate": estimate,
                "budget": budget,
                "budget_percent": BUDGET_PERCENT,
            }),
        ),
    };
    let mut body = serde_json::json!({ "error": refusal.to_string() });
    if let (Some(b), Some(f)) = (body.as_object_mut(), figures.as_object()) {
        b.extend(f.clone());
    }
    (status, Json(body)).into_response()
}
