//! The immutable result of one collection cycle. The collector publishes a new
//! `Arc<Snapshot>` each cycle; `/metrics` and the REST API only ever read the latest one.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::model::{ClusterModel, LeaderChange};

/// Facts about a member that come from its own `/metrics` and `/health` and from the
/// read probes, beside the model's view.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemberExtras {
    /// `true`/`false` from the member's `/health`; `None` when it could not be asked.
    pub health: Option<bool>,
    pub health_error: Option<String>,
    pub metrics_error: Option<String>,
    pub watchers: Option<i64>,
    pub wal_fsync_p95_ms: Option<f64>,
    pub backend_commit_p95_ms: Option<f64>,
    /// `etcd_server_quota_backend_bytes` from the member's `/metrics`.
    pub quota_bytes: Option<i64>,
    pub read_linearizable_ms: Option<f64>,
    pub read_serializable_ms: Option<f64>,
    pub read_error: Option<String>,
}

/// A member's agent as the last cycle found it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentStatus {
    pub url: String,
    pub up: bool,
    pub error: Option<String>,
    pub memory_usage_bytes: Option<u64>,
    pub disk_usage_bytes: Option<u64>,
    pub active_connections: Option<u64>,
    /// The agent's whole snapshot (host facts).
    pub host: Option<serde_json::Value>,
}

/// One timed probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeRecord {
    pub at_unix_ms: u64,
    /// `read` or `write`.
    pub kind: &'static str,
    /// `l` (linearizable) or `s` (serializable) for reads.
    pub consistency: Option<&'static str>,
    pub member: String,
    pub duration_ms: Option<f64>,
    pub error: Option<String>,
}

/// p50/p95/p99 over a probe window, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub errors: usize,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// The probe windows (last 1000 of each kind).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    pub read: Percentiles,
    pub write: Percentiles,
    pub reads: Vec<ProbeRecord>,
    pub writes: Vec<ProbeRecord>,
}

/// The key figures at one collection, kept for `/api/v1/metrics/history`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPoint {
    pub at_unix_ms: u64,
    pub healthy: bool,
    pub has_leader: bool,
    pub leader: Option<String>,
    pub member_count: usize,
    pub healthy_members: usize,
    pub split_brain: bool,
    pub partitioned_members: usize,
    pub revision_divergence: i64,
    pub raft_index_divergence: u64,
    pub max_revision: Option<i64>,
    pub max_db_size_bytes: Option<i64>,
    pub request_rate_per_second: Option<f64>,
    pub read_p99_ms: Option<f64>,
    pub write_p99_ms: Option<f64>,
    pub collect_duration_ms: f64,
}

/// Everything `/metrics` and the API serve.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The cluster's name: from `--config`, or `--cluster-name`; `None` when neither names
    /// it (one cluster, no `cluster` label).
    pub cluster: Option<String>,
    /// 0 before the first cycle has finished.
    pub cycle: u64,
    pub at_unix_ms: u64,
    pub interval_ms: u64,
    pub model: ClusterModel,
    pub extras: BTreeMap<u64, MemberExtras>,
    /// Agents by member name.
    pub agents: BTreeMap<String, AgentStatus>,
    pub leader_history: Vec<LeaderChange>,
    pub leader_changes_total: u64,
    pub request_rate_per_second: Option<f64>,
    pub latency: Arc<Latency>,
    pub history: Arc<Vec<HistoryPoint>>,
    pub collect_duration_ms: f64,
    pub collect_errors: BTreeMap<String, u64>,
    pub metrics_text: bytes::Bytes,
}

impl Snapshot {
    /// What is served before the first cycle finishes.
    pub fn empty(interval_ms: u64) -> Self {
        Snapshot {
            cluster: None,
            cycle: 0,
            at_unix_ms: 0,
            interval_ms,
            model: crate::model::derive(&crate::model::Facts {
                members: Vec::new(),
                alarms: None,
            }),
            extras: BTreeMap::new(),
            agents: BTreeMap::new(),
            leader_history: Vec::new(),
            leader_changes_total: 0,
            request_rate_per_second: None,
            latency: Arc::default(),
            history: Arc::default(),
            collect_duration_ms: 0.0,
            collect_errors: BTreeMap::new(),
            metrics_text: bytes::Bytes::from_static(
                b"# HELP etcd_monitor_up 1 while the exporter runs.\n# TYPE etcd_monitor_up gauge\netcd_monitor_up 1\n",
            ),
        }
    }
}
