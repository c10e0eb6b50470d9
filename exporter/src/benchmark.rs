//! `POST /api/v1/performance/benchmark`: runs the bench library against the cluster the
//! exporter watches. Off unless `--benchmark-token-file` is given; needs that bearer
//! token; one run at a time; bounded in size and time; its keys live under the probe
//! prefix and are deleted afterwards.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bench::params::{Consistency, Params, Stop, Workload};
use common::http::ApiError;
use serde::Deserialize;
use tokio::sync::Mutex;

/// Limits on what one request may ask for.
pub const MAX_TOTAL: u64 = 200_000;
pub const MAX_DURATION: Duration = Duration::from_secs(120);
pub const MAX_CLIENTS: usize = 500;
pub const MAX_CONNS: usize = 50;
pub const MAX_VAL_SIZE: usize = 64 * 1024;
pub const MAX_KEY_SPACE: u64 = 1_000_000;
pub const MAX_BODY: usize = 16 * 1024;

/// What the endpoint needs.
#[derive(Clone)]
pub struct BenchState {
    pub token: common::secret::Secret,
    pub etcd: common::etcd::EtcdConfig,
    pub prefix: String,
    /// Held while a run is in progress.
    pub running: Arc<Mutex<()>>,
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

/// The handler.
pub async fn handle(
    State(app): State<crate::api::AppState>,
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
    let req: BenchRequest =
        serde_json::from_slice(&body).map_err(|e| bad(format!("invalid request: {e}")))?;
    let params = params(&req, &s.prefix)?;
    let Ok(_guard) = s.running.try_lock() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "a benchmark is already running",
        ));
    };
    let result = bench::run(&params, &s.etcd, false).await;
    // Leave the cluster as found: the run's keys go.
    if let Err(e) = crate::etcd::delete_prefix(&s.etcd, &s.prefix).await {
        tracing::warn!(error = %e, "cannot delete the benchmark's keys");
    }
    match result {
        Ok(report) => Ok(Json(report).into_response()),
        Err(e) => Err(ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())),
    }
}
