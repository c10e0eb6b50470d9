//! The benchmark's byte budget and deadline, decided without I/O: what a run may write at
//! most (from its parameters alone), what the cluster can spare (from facts that
//! `preflight.rs` gathers) and the verdict.
//!
//! Why a budget: once one member's database reaches the space quota, etcd raises the
//! `NOSPACE` alarm and the whole cluster refuses writes until an operator compacts,
//! defragments and disarms. A benchmark run by the monitoring must never get near that,
//! so it may use only [`BUDGET_PERCENT`] of the space left under the quota by the fullest
//! member, and none at all while any alarm is active.
//!
//! The estimate is a worst case, not a forecast. Every put adds a revision to etcd's
//! database, also when it overwrites a key (old revisions stay until a compaction, and
//! the space is given back to the file only by a defragmentation), so a run costs
//! `(keys filled + writes) × bytes per write`, where one write is
//! `key + value + (key + value) / 4 + PER_WRITE_OVERHEAD`: the key and value as stored,
//! a quarter more for bbolt's page fill and copy-on-write slack, and a fixed part for the
//! revision key, the other fields of the stored `KeyValue`, the leaf element and the
//! tombstone the clean-up adds. The number of writes is the request's total (all of it
//! for `write`, the write share plus 5 % and 10 requests for `mixed`, none for `read`),
//! or for a run bounded by time its rate times its duration, and without a rate
//! [`ASSUMED_MAX_WRITES_PER_SECOND`] (etcd's published figure for a fast cluster) times
//! its duration.

use std::time::Duration;

use bench::params::{Params, Stop, Workload};
use serde::Serialize;

use crate::model::Alarm;

/// The share, in percent, of the space left under the quota that one run may use.
pub const BUDGET_PERCENT: u64 = 25;
/// etcd's default `--quota-backend-bytes`, assumed when no member reports its quota.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Bytes a stored revision costs beyond its key and value (see the module note).
pub const PER_WRITE_OVERHEAD: u64 = 256;
/// Writes per second assumed for a run bounded by time without a rate.
pub const ASSUMED_MAX_WRITES_PER_SECOND: f64 = 50_000.0;

/// Time allowed to connect before the load starts.
pub const SETUP_ALLOWANCE: Duration = Duration::from_secs(10);
/// Time allowed to fill the key space of a read run.
pub const FILL_ALLOWANCE: Duration = Duration::from_secs(60);
/// Time allowed past the run's own length (the last requests, a loaded cluster).
pub const FINISH_ALLOWANCE: Duration = Duration::from_secs(10);
/// No run lasts longer than this, fill included.
pub const MAX_DEADLINE: Duration = Duration::from_secs(200);

/// Where the quota figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "source", content = "bytes", rename_all = "snake_case")]
pub enum Quota {
    /// The smallest `etcd_server_quota_backend_bytes` the members report.
    Reported(u64),
    /// No member reported one: etcd's default is assumed.
    AssumedDefault,
}

impl Quota {
    pub fn bytes(self) -> u64 {
        match self {
            Quota::Reported(b) => b,
            Quota::AssumedDefault => DEFAULT_QUOTA_BYTES,
        }
    }
}

/// One member's database, as its `Status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpace {
    pub name: String,
    pub db_size: u64,
}

/// What the cluster looks like before a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpace {
    pub quota: Quota,
    pub members: Vec<MemberSpace>,
    /// Active alarms: the member's name and the alarm.
    pub alarms: Vec<(String, Alarm)>,
}

/// The most a run may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Estimate {
    /// Keys written before the load (a read run fills its key space).
    pub fill_keys: u64,
    /// Writes during the load, at most.
    pub writes: u64,
    pub bytes_per_write: u64,
    /// `(fill_keys + writes) × bytes_per_write`.
    pub bytes: u64,
}

/// How many requests a run makes at most, given its stop and rate.
fn requests(p: &Params) -> u64 {
    match p.stop {
        Stop::Total(n) => n,
        Stop::Duration(d) => {
            let rate = p.rate.unwrap_or(ASSUMED_MAX_WRITES_PER_SECOND);
            // Saturates on overflow; a duration is at most a few minutes here.
            (d.as_secs_f64() * rate).ceil() as u64
        }
    }
}

/// The worst-case bytes `p` writes (see the module note).
pub fn estimate(p: &Params) -> Estimate {
    let requests = requests(p);
    let (fill_keys, writes) = match &p.workload {
        Workload::Write { .. } => (0, requests),
        Workload::Read { fill, .. } => (if *fill { p.key_space } else { 0 }, 0),
        Workload::Mixed { read_ratio, .. } => {
            let share = (1.0 - read_ratio).clamp(0.0, 1.0);
            let expected = (requests as f64 * share * 1.05).ceil() as u64;
            (0, expected.saturating_add(10).min(requests))
        }
        // Not offered by the endpoint; priced for completeness.
        Workload::Txn { ops_per_txn } => (0, requests.saturating_mul(u64::from(*ops_per_txn))),
        Workload::Watch { .. } => (0, requests),
    };
    let stored = (p.key_size as u64).saturating_add(p.val_size as u64);
    let bytes_per_write = stored
        .saturating_add(stored / 4)
        .saturating_add(PER_WRITE_OVERHEAD);
    Estimate {
        fill_keys,
        writes,
        bytes_per_write,
        bytes: fill_keys
            .saturating_add(writes)
            .saturating_mul(bytes_per_write),
    }
}

/// The figures a verdict rests on, as the answer shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Budget {
    pub quota: Quota,
    pub largest_db_bytes: u64,
    pub largest_db_member: Option<String>,
    /// The quota minus the largest database.
    pub headroom_bytes: u64,
    /// [`BUDGET_PERCENT`] of the headroom.
    pub budget_bytes: u64,
}

/// What the cluster can spare for one run.
pub fn budget(space: &ClusterSpace) -> Budget {
    let largest = space.members.iter().max_by_key(|m| m.db_size);
    let largest_db_bytes = largest.map_or(0, |m| m.db_size);
    let headroom_bytes = space.quota.bytes().saturating_sub(largest_db_bytes);
    Budget {
        quota: space.quota,
        largest_db_bytes,
        largest_db_member: largest.map(|m| m.name.clone()),
        headroom_bytes,
        budget_bytes: headroom_bytes / 100 * BUDGET_PERCENT,
    }
}

/// Why a run may not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A member has an active alarm (the cluster may already refuse writes).
    Alarm { member: String, alarm: Alarm },
    /// The run could write more than the budget.
    OverBudget { estimate: Estimate, budget: Budget },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Alarm { member, alarm } => write!(
                f,
                "member {member} has an active {} alarm: no benchmark until it is resolved",
                alarm.as_str()
            ),
            Refusal::OverBudget { estimate, budget } => {
                let quota = match budget.quota {
                    Quota::Reported(b) => format!("quota {b} bytes"),
                    Quota::AssumedDefault => format!(
                        "quota {} bytes (etcd's default; no member reported its quota)",
                        DEFAULT_QUOTA_BYTES
                    ),
                };
                write!(
                    f,
                    "the run could write up to {} bytes ({} keys filled and {} writes of at \
                     most {} bytes each), over its budget of {} bytes: {BUDGET_PERCENT}% of \
                     the {} bytes left under the {quota} by the largest database ({} bytes); \
                     ask for fewer requests or keys, smaller values, or a rate",
                    estimate.bytes,
                    estimate.fill_keys,
                    estimate.writes,
                    estimate.bytes_per_write,
                    budget.budget_bytes,
                    budget.headroom_bytes,
                    budget.largest_db_bytes,
                )
            }
        }
    }
}

/// May `p` run on a cluster that looks like `space`?
pub fn decide(p: &Params, space: &ClusterSpace) -> Result<(Estimate, Budget), Refusal> {
    if let Some((member, alarm)) = space.alarms.first() {
        return Err(Refusal::Alarm {
            member: member.clone(),
            alarm: *alarm,
        });
    }
    let estimate = estimate(p);
    let budget = budget(space);
    if estimate.bytes > budget.budget_bytes {
        return Err(Refusal::OverBudget { estimate, budget });
    }
    Ok((estimate, budget))
}

/// How long a run may take in all, fill and clean-up of stragglers included: past it the
/// run is stopped. A run bounded by a total without a rate gets the longest run allowed.
pub fn deadline(p: &Params, max_run: Duration) -> Duration {
    let run = match (p.stop, p.rate) {
        (Stop::Duration(d), _) => d,
        (Stop::Total(n), Some(rate)) => Duration::try_from_secs_f64(n as f64 / rate)
            .unwrap_or(max_run)
            .min(max_run),
        (Stop::Total(_), None) => max_run,
    };
    let fill = match p.workload {
        Workload::Read { fill: true, .. } => FILL_ALLOWANCE,
        _ => Duration::ZERO,
    };
    (SETUP_ALLOWANCE + fill + run + FINISH_ALLOWANCE).min(MAX_DEADLINE)
}
