//! Maintenance over HTTP: `POST /api/v1/maintenance/{defrag,compact,snapshot,alarms/disarm}`
//! (`?cluster=NAME` with several clusters), `GET /api/v1/maintenance/operations/{id}` and
//! `GET /api/v1/audit`. Off unless `--maintenance-token-file`; every call needs that bearer
//! token.
//!
//! The operations are `ctl`'s (`ctl::maintenance`, `ctl::defrag`): the same guards refuse
//! the same things whether an operator runs `etcd-monitor-ctl` or calls this API. An
//! accepted operation answers 202 with its id and runs on a task of its own (a client that
//! disconnects changes nothing); one operation at a time per cluster (409 otherwise).
//!
//! Every request, allowed or refused, is one JSON line in the audit log (`--audit-log`),
//! written before the answer, and in the last [`AUDIT_KEPT`] kept for `GET /api/v1/audit`:
//! time, caller address, token identity (a fingerprint, never the token), operation,
//! cluster, parameters and outcome; the end of an operation is a line too. An operation
//! whose audit line cannot be written is refused (503): nothing runs unaudited.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::etcd::EtcdConfig;
use common::http::ApiError;
use common::secret::Secret;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::AppState;

/// Audit entries kept in memory for `GET /api/v1/audit`.
pub const AUDIT_KEPT: usize = 1000;
/// Finished operations kept for `GET /api/v1/maintenance/operations/{id}`.
pub const OPERATIONS_KEPT: usize = 100;
/// The largest request body.
pub const MAX_BODY: usize = 4096;

/// One cluster the API may work on.
#[derive(Debug, Clone)]
pub struct Target {
    pub cluster: Option<String>,
    pub etcd: EtcdConfig,
}

/// What the maintenance API shares.
#[derive(Clone)]
pub struct MaintenanceState {
    inner: Arc<Inner>,
}

struct Inner {
    token: Secret,
    targets: Vec<Target>,
    snapshot_dir: Option<PathBuf>,
    audit: Audit,
    ops: Mutex<Operations>,
}

#[derive(Default)]
struct Operations {
    next: u64,
    /// By id, oldest first.
    all: BTreeMap<u64, Operation>,
}

/// One operation as `GET /api/v1/maintenance/operations/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Operation {
    pub id: String,
    pub cluster: Option<String>,
    pub operation: &'static str,
    pub state: OpState,
    pub started_unix_ms: u64,
    pub finished_unix_ms: Option<u64>,
    /// What the operation did (its report), once finished.
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpState {
    Running,
    Succeeded,
    Failed,
}

/// The audit log: a file of JSON lines and the last entries in memory.
struct Audit {
    file: Mutex<std::fs::File>,
    recent: Mutex<VecDeque<serde_json::Value>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

impl Audit {
    fn open(path: &std::path::Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(Audit {
            file: Mutex::new(file),
            recent: Mutex::new(VecDeque::new()),
        })
    }

    /// Appends `entry` (with its time) to the file and the recent entries.
    fn write(&self, mut entry: serde_json::Value) -> std::io::Result<()> {
        entry["time"] = json!(rfc3339(now_ms()));
        let mut line = entry.to_string();
        line.push('\n');
        {
            let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
            f.write_all(line.as_bytes())?;
            f.flush()?;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == AUDIT_KEPT {
            recent.pop_front();
        }
        recent.push_back(entry);
        Ok(())
    }
}

/// A token's identity for the audit log: a SHA-256 fingerprint (8 bytes), never the token.
fn fingerprint(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let hex: String = d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl MaintenanceState {
    /// The API for `targets`, auditing into `audit_log` (created 0600, appended to).
    pub fn new(
        token: Secret,
        targets: Vec<Target>,
        audit_log: &std::path::Path,
        snapshot_dir: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        Ok(MaintenanceState {
            inner: Arc::new(Inner {
                token,
                targets,
                snapshot_dir,
                audit: Audit::open(audit_log)?,
                ops: Mutex::new(Operations::default()),
            }),
        })
    }

    fn ops(&self) -> std::sync::MutexGuard<'_, Operations> {
        self.inner.ops.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Who called: the caller's address and the presented token's identity.
struct Caller {
    addr: SocketAddr,
    /// `None` when no bearer token was presented.
    token: Option<String>,
    authorized: bool,
}

/// The bearer token a request presents.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn authorized(m: &MaintenanceState, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|t| common::http::constant_time_eq(m.inner.token.expose(), t))
}

fn caller(m: &MaintenanceState, addr: SocketAddr, headers: &HeaderMap) -> Caller {
    Caller {
        addr,
        token: bearer(headers).map(fingerprint),
        authorized: authorized(m, headers),
    }
}

/// The parameters of each operation (unknown fields are refused).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// defrag: plan only.
    #[serde(default)]
    dry_run: bool,
    /// defrag: only members for which this rule holds (etcd-defrag's syntax).
    #[serde(rename = "if")]
    rule: Option<String>,
    /// defrag, alarms/disarm: go past the guards (audited as such).
    #[serde(default)]
    force: bool,
    /// compact: revisions to keep.
    retain: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ClusterQuery {
    cluster: Option<String>,
}

const OPERATIONS: [&str; 4] = ["defrag", "compact", "snapshot", "alarms/disarm"];

fn enabled(s: &AppState) -> Result<&MaintenanceState, ApiError> {
    s.maintenance.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "the maintenance API is off (start the exporter with --maintenance-token-file)",
        )
    })
}

/// `POST /api/v1/maintenance/{operation}`.
pub async fn start(
    State(s): State<AppState>,
    Path(operation): Path<String>,
    query: Result<Query<ClusterQuery>, axum::extract::rejection::QueryRejection>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let m = match enabled(&s) {
        Ok(m) => m.clone(),
        Err(e) => return e.into_response(),
    };
    let who = caller(&m, addr, &headers);
    let cluster = query.as_ref().ok().and_then(|q| q.cluster.clone());
    let mut entry = json!({
        "caller": who.addr.to_string(),
        "token": who.token,
        "operation": crate::api::clip(&operation),
        "cluster": cluster.as_deref().map(crate::api::clip),
    });
    let refuse = |entry: &mut serde_json::Value, e: ApiError| -> Response {
        entry["outcome"] = json!("refused");
        entry["status"] = json!(e.status.as_u16());
        entry["reason"] = json!(e.message);
        match m.inner.audit.write(entry.take()) {
            Ok(()) => e.into_response(),
            Err(io) => audit_failed(io),
        }
    };
    if !who.authorized {
        return refuse(&mut entry, unauthorized());
    }
    let Some(&op) = OPERATIONS.iter().find(|o| **o == operation) else {
        return refuse(
            &mut entry,
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no maintenance operation {:?} (one of {})",
                    crate::api::clip(&operation),
                    OPERATIONS.join(", ")
                ),
            ),
        );
    };
    if let Err(e) = &query {
        return refuse(
            &mut entry,
            ApiError::new(StatusCode::BAD_REQUEST, e.body_text()),
        );
    }
    let params: Params = if body.iter().all(u8::is_ascii_whitespace) {
        Params::default()
    } else if body.len() > MAX_BODY {
        return refuse(
            &mut entry,
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {MAX_BODY} bytes"),
            ),
        );
    } else {
        match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => {
                return refuse(
                    &mut entry,
                    ApiError::new(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
                )
            }
        }
    };
    entry["params"] = json!(params);
    let rule = match params.rule.as_deref().map(str::parse::<ctl::rule::Rule>) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            return refuse(
                &mut entry,
                ApiError::new(StatusCode::BAD_REQUEST, format!("if: {e}")),
            )
        }
    };
    let target = match crate::api::pick_cluster(&m.inner.targets, cluster.as_deref(), |t| {
        t.cluster.as_deref()
    }) {
        Ok(t) => t.clone(),
        Err(e) => return refuse(&mut entry, e),
    };
    let snapshot_file = if op == "snapshot" {
        let Some(dir) = &m.inner.snapshot_dir else {
            return refuse(
                &mut entry,
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "snapshots are off (start the exporter with --snapshot-dir)",
                ),
            );
        };
        Some(dir.join(format!(
            "{}-{}.db",
            target.cluster.as_deref().unwrap_or("etcd"),
            rfc3339(now_ms()).replace(':', "")
        )))
    } else {
        None
    };

    // One operation per cluster: the check and the registration under one lock.
    let id = {
        let mut ops = m.ops();
        if let Some(busy) = ops
            .all
            .values()
            .find(|o| o.state == OpState::Running && o.cluster == target.cluster)
        {
            let e = ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "operation {} ({}) is still running on this cluster",
                    busy.id, busy.operation
                ),
            );
            drop(ops);
            return refuse(&mut entry, e);
        }
        ops.next += 1;
        let id = ops.next;
        ops.all.insert(
            id,
            Operation {
                id: id.to_string(),
                cluster: target.cluster.clone(),
                operation: op,
                state: OpState::Running,
                started_unix_ms: now_ms(),
                finished_unix_ms: None,
                result: None,
                error: None,
            },
        );
        while ops.all.len() > OPERATIONS_KEPT {
            let Some(oldest) = ops
                .all
                .iter()
                .find(|(_, o)| o.state != OpState::Running)
                .map(|(k, _)| *k)
            else {
                break;
            };
            ops.all.remove(&oldest);
        }
        id
    };
    entry["outcome"] = json!("accepted");
    entry["status"] = json!(202);
    entry["id"] = json!(id.to_string());
    if let Err(io) = m.inner.audit.write(entry.clone()) {
        m.ops().all.remove(&id);
        return audit_failed(io);
    }
    let running = m.clone();
    let audit_entry = entry;
    let free_disk = s
        .select(target.cluster.as_deref())
        .map(|snap| free_disk(&snap))
        .unwrap_or_default();
    tokio::spawn(async move {
        let outcome = run(op, &target.etcd, &params, rule, snapshot_file, free_disk).await;
        finish(&running, id, audit_entry, outcome);
    });
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "id": id.to_string(),
            "operation": op,
            "cluster": cluster,
            "status_url": format!("/api/v1/maintenance/operations/{id}"),
        })),
    )
        .into_response()
}

fn audit_failed(e: std::io::Error) -> Response {
    tracing::error!(error = %e, "cannot write the audit log: maintenance refused");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the audit log cannot be written ({e}); nothing runs unaudited"),
    )
    .into_response()
}

/// The members' free disk as their agents last reported it (agents up only), for the
/// defragment's guard.
fn free_disk(snap: &crate::snapshot::Snapshot) -> BTreeMap<String, u64> {
    snap.agents
        .iter()
        .filter(|(_, a)| a.up)
        .filter_map(|(member, a)| {
            let avail = a.host.as_ref()?.get("filesystem")?.get("avail_bytes")?;
            Some((member.clone(), avail.as_u64()?))
        })
        .collect()
}

/// Runs one operation: its report as JSON, or why it failed or was refused.
async fn run(
    op: &str,
    etcd: &EtcdConfig,
    params: &Params,
    rule: Option<ctl::rule::Rule>,
    snapshot_file: Option<PathBuf>,
    free_disk: BTreeMap<String, u64>,
) -> Result<serde_json::Value, String> {
    let json = |v: Result<serde_json::Value, serde_json::Error>| v.map_err(|e| e.to_string());
    match op {
        "defrag" => {
            let opts = ctl::defrag::Options {
                rolling: true,
                dry_run: params.dry_run,
                rule,
                force: params.force,
                free_disk,
                ..ctl::defrag::Options::default()
            };
            match ctl::defrag::run(etcd, &opts).await {
                Ok(report) => json(serde_json::to_value(&report)),
                Err(e) => Err(match e.report() {
                    Some(done) => format!(
                        "{}; done before: {}",
                        common::etcd::error_chain(&e),
                        serde_json::to_string(done).unwrap_or_default()
                    ),
                    None => common::etcd::error_chain(&e),
                }),
            }
        }
        "compact" => ctl::maintenance::compact(etcd, params.retain.unwrap_or(0))
            .await
            .map_err(|e| common::etcd::error_chain(&e))
            .and_then(|r| json(serde_json::to_value(&r))),
        "alarms/disarm" => ctl::maintenance::disarm(etcd, params.force)
            .await
            .map_err(|e| common::etcd::error_chain(&e))
            .and_then(|r| json(serde_json::to_value(&r))),
        "snapshot" => {
            let Some(file) = snapshot_file else {
                return Err("no snapshot file".into());
            };
            ctl::maintenance::snapshot(etcd, &file)
                .await
                .map_err(|e| common::etcd::error_chain(&e))
                .and_then(|r| json(serde_json::to_value(&r)))
        }
        other => Err(format!("unknown operation {other}")),
    }
}

fn finish(
    m: &MaintenanceState,
    id: u64,
    mut entry: serde_json::Value,
    outcome: Result<serde_json::Value, String>,
) {
    // The audit line first: whoever sees the operation finished finds it audited.
    entry["outcome"] = json!(if outcome.is_ok() {
        "succeeded"
    } else {
        "failed"
    });
    entry.as_object_mut().map(|o| o.remove("status"));
    if let Err(e) = &outcome {
        entry["reason"] = json!(e);
    }
    if let Err(io) = m.inner.audit.write(entry) {
        tracing::error!(id, error = %io, "cannot write the end of a maintenance operation to the audit log");
    }
    match &outcome {
        Ok(_) => tracing::info!(id, "maintenance operation succeeded"),
        Err(e) => tracing::warn!(id, error = %e, "maintenance operation failed"),
    }
    let mut ops = m.ops();
    if let Some(o) = ops.all.get_mut(&id) {
        o.finished_unix_ms = Some(now_ms());
        match outcome {
            Ok(r) => {
                o.state = OpState::Succeeded;
                o.result = Some(r);
            }
            Err(e) => {
                o.state = OpState::Failed;
                o.error = Some(e);
            }
        }
    }
}

fn check_token(m: &MaintenanceState, headers: &HeaderMap) -> Result<(), ApiError> {
    if authorized(m, headers) {
        Ok(())
    } else {
        Err(unauthorized())
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "the maintenance token is required (Authorization: Bearer <token>)",
    )
}

/// `GET /api/v1/maintenance/operations/{id}`.
pub async fn operation(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let m = enabled(&s)?;
    check_token(m, &headers)?;
    let found = id
        .parse::<u64>()
        .ok()
        .and_then(|n| m.ops().all.get(&n).cloned());
    match found {
        Some(o) => Ok(Json(o).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no operation {:?}", crate::api::clip(&id)),
        )),
    }
}

/// `GET /api/v1/audit`: the last entries, oldest first.
pub async fn audit(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let m = enabled(&s)?;
    check_token(m, &headers)?;
    let entries: Vec<serde_json::Value> = m
        .inner
        .audit
        .recent
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect();
    Ok(Json(json!({ "entries": entries })).into_response())
}

/// The running operations, for the status page.
pub fn running(m: &MaintenanceState) -> Vec<Operation> {
    m.ops()
        .all
        .values()
        .filter(|o| o.state == OpState::Running)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_names_a_token_by_its_fingerprint_only() {
        let f = fingerprint("s3cret-maintenance-token");
        assert!(f.starts_with("sha256:") && f.len() == 7 + 16, "{f}");
        assert!(!f.contains("s3cret"));
        assert_ne!(f, fingerprint("another-token"));
    }

    #[test]
    fn unknown_parameters_are_refused() {
        assert!(serde_json::from_str::<Params>(r#"{"retain": 5}"#).is_ok());
        let e = serde_json::from_str::<Params>(r#"{"retian": 5}"#).expect_err("typo");
        assert!(e.to_string().contains("retian"), "{e}");
    }
}
