//! The immutable result of one collection cycle. The collector publishes a new
//! `Arc<Snapshot>` each cycle; `/metrics` and the REST API only ever read the latest one.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::model::{ClusterModel, LeaderChange};

/// Where a collection error came from: the `source` label of
/// `etcd_monitor_collect_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorSource {
    Connect,
    Status,
    MemberList,
    Alarms,
    ProbeRead,
    ProbeWrite,
    MemberMetrics,
    MemberMetricsConflict,
    MemberHealth,
    Agent,
}

impl ErrorSource {
    pub const ALL: [ErrorSource; 10] = [
        ErrorSource::Connect,
        ErrorSource::Status,
        ErrorSource::MemberList,
        ErrorSource::Alarms,
        ErrorSource::ProbeRead,
        ErrorSource::ProbeWrite,
        ErrorSource::MemberMetrics,
        ErrorSource::MemberMetricsConflict,
        ErrorSource::MemberHealth,
        ErrorSource::Agent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorSource::Connect => "connect",
            ErrorSource::Status => "status",
            ErrorSource::MemberList => "member_list",
            ErrorSource::Alarms => "alarms",
            ErrorSource::ProbeRead => "probe_read",
            ErrorSource::ProbeWrite => "probe_write",
            ErrorSource::MemberMetrics => "member_metrics",
            ErrorSource::MemberMetricsConflict => "member_metrics_conflict",
            ErrorSource::MemberHealth => "member_health",
            ErrorSource::Agent => "agent",
        }
    }
}

impl std::fmt::Display for ErrorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Collection errors so far, by source; every source is present (at 0 until it fails).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorCounts([u64; ErrorSource::ALL.len()]);

impl ErrorCounts {
    pub fn add(&mut self, source: ErrorSource) {
        self.0[source as usize] += 1;
    }

    /// Whether no source has failed yet.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|n| *n == 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = (ErrorSource, u64)> + '_ {
        ErrorSource::ALL.iter().map(|s| (*s, self.0[*s as usize]))
    }
}

impl Serialize for ErrorCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter().map(|(k, v)| (k.as_str(), v)))
    }
}

/// The read consistency a probe used: the `consistency` label of
/// `etcd_probe_read_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Consistency {
    Linearizable,
    Serializable,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Serializable => "serializable",
        }
    }

    /// The short form in probe records (`l`, `s`).
    pub fn short(self) -> &'static str {
        match self {
            Consistency::Linearizable => "l",
            Consistency::Serializable => "s",
        }
    }
}

/// A cumulative histogram of probe durations in seconds, with
/// [`crate::metrics::probe_buckets`] as upper bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeHistogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Default for ProbeHistogram {
    fn default() -> Self {
        ProbeHistogram {
            counts: vec![0; crate::metrics::probe_buckets().len() + 1],
            sum: 0.0,
            count: 0,
        }
    }
}

impl ProbeHistogram {
    pub fn observe(&mut self, seconds: f64) {
        let i = crate::metrics::probe_buckets()
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(self.counts.len() - 1);
        self.counts[i] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

/// The probe histograms of a cluster since the exporter started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeHistograms {
    /// By member name and consistency, for the members in the cluster now.
    pub read: BTreeMap<(String, Consistency), ProbeHistogram>,
    pub write: ProbeHistogram,
}

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
    /// The version the member reported last (kept while it is down).
    pub last_version: Option<String>,
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
    /// Leader changes seen while a maintenance marker was up.
    pub leader_changes_planned_total: u64,
    /// The maintenance running on the cluster (its marker key), if any.
    pub maintenance: Option<ctl::marker::Marker>,
    pub request_rate_per_second: Option<f64>,
    pub latency: Arc<Latency>,
    pub history: Arc<Vec<HistoryPoint>>,
    pub collect_duration_ms: f64,
    pub collect_errors: ErrorCounts,
    pub probes: ProbeHistograms,
    /// The answering members' own families, rendered for `/metrics`.
    pub native: Arc<crate::metrics::NativeFamilies>,
    /// Per agent URL: whether it answered with a valid, fresh snapshot of a known member.
    pub agents_up: Vec<(String, bool)>,
}

impl Snapshot {
    /// What is served before the first cycle finishes.
    pub fn empty(cluster: Option<String>, interval_ms: u64) -> Self {
        Snapshot {
            cluster,
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
            leader_changes_planned_total: 0,
            maintenance: None,
            request_rate_per_second: None,
            latency: Arc::default(),
            history: Arc::default(),
            collect_duration_ms: 0.0,
            collect_errors: ErrorCounts::default(),
            probes: ProbeHistograms::default(),
            native: Arc::default(),
            agents_up: Vec::new(),
        }
    }
}
