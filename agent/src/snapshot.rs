//! The agent's facts at one collection: what `/metrics` shows and `/api/v1/snapshot`
//! serves as JSON (the exporter reads that).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Outcome of one collector in one collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectorStatus {
    pub name: String,
    pub ok: bool,
    pub error: Option<String>,
    pub duration_seconds: f64,
}

/// I/O counters of the block device behind the data dir.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskFacts {
    pub device: String,
    pub reads_completed: u64,
    pub writes_completed: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
    pub io_time_seconds: f64,
    pub io_time_weighted_seconds: f64,
    pub io_now: u64,
}

/// The data dir's filesystem.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FilesystemFacts {
    pub mount_point: String,
    pub fs_type: String,
    pub size_bytes: u64,
    pub avail_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryFacts {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuFacts {
    pub seconds_by_mode: BTreeMap<String, f64>,
    pub load1: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkFacts {
    pub device: String,
    pub receive_bytes: u64,
    pub transmit_bytes: u64,
    pub receive_errors: u64,
    pub transmit_errors: u64,
    pub receive_drops: u64,
    pub transmit_drops: u64,
}

/// The etcd process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessFacts {
    pub pid: i32,
    pub resident_memory_bytes: u64,
    pub cpu_seconds: f64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub threads: u64,
}

/// The fsync probe's totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FsyncFacts {
    pub enabled: bool,
    pub probes: u64,
    pub errors: u64,
    pub sum_seconds: f64,
    pub last_seconds: Option<f64>,
    pub last_error: Option<String>,
}

/// Everything one collection found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentSnapshot {
    pub member: String,
    pub data_dir: String,
    pub at_unix_ms: u64,
    /// The collection interval, so readers can tell a stuck agent from a slow one.
    pub interval_ms: u64,
    pub collectors: Vec<CollectorStatus>,
    pub disk: Option<DiskFacts>,
    pub filesystem: Option<FilesystemFacts>,
    pub data_dir_bytes: Option<u64>,
    pub memory: Option<MemoryFacts>,
    pub cpu: Option<CpuFacts>,
    pub network: Vec<NetworkFacts>,
    pub etcd_process: Option<ProcessFacts>,
    pub etcd_client_connections: Option<u64>,
    pub fsync: FsyncFacts,
}
