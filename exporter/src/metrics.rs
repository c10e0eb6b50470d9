//! The exporter's own metric families (names are the public contract, see design.md) and
//! the rendering of one cycle into the text served on `/metrics`.
//!
//! The registry is owned by the collector task alone: it is updated and encoded once per
//! cycle, and the encoded text (our families followed by the members' own families with a
//! `member` label) is published in the snapshot, so a scrape never touches the registry.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::textformat::{self, Exposition};

/// The `source` values of `etcd_monitor_collect_errors_total`.
pub const ERROR_SOURCES: &[&str] = &[
    "connect",
    "status",
    "member_list",
    "alarms",
    "probe_read",
    "probe_write",
    "member_metrics",
    "member_metrics_conflict",
    "member_health",
    "agent",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabel {
    pub member: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlarmLabels {
    pub member: String,
    pub alarm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub member: String,
    pub id: String,
    pub version: String,
    pub client_url: String,
    pub peer_url: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadProbeLabels {
    pub member: String,
    pub consistency: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabel {
    pub agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

pub type FGauge = Gauge<f64, AtomicU64>;
pub type MemberGauge = Family<MemberLabel, Gauge>;
pub type MemberFGauge = Family<MemberLabel, FGauge>;

/// Probe histogram buckets in seconds: finer steps below 1 ms, then etcd's 1 ms doubling
/// up to about 8 s.
pub fn probe_buckets() -> Vec<f64> {
    let mut b = vec![0.0001, 0.00025, 0.0005];
    b.extend((0..14).map(|i| 0.001 * f64::from(1u32 << i)));
    b
}

fn probe_histogram() -> Histogram {
    Histogram::new(probe_buckets())
}

/// Every metric handle the collector sets.
pub struct Metrics {
    registry: Registry,
    /// The names of our families as exposed (all registered up front), which members'
    /// families must not repeat.
    own_names: HashSet<String>,
    pub cluster_healthy: Gauge,
    pub cluster_has_leader: Gauge,
    pub cluster_member_count: Gauge,
    pub cluster_voting_members: Gauge,
    pub cluster_quorum_size: Gauge,
    pub cluster_healthy_members: Gauge,
    pub cluster_leader_changes: Counter,
    pub cluster_split_brain: Gauge,
    pub cluster_partitioned_members: Gauge,
    pub cluster_revision_divergence: Gauge,
    pub cluster_raft_index_divergence: Gauge,
    pub request_rate: FGauge,
    pub member_up: MemberGauge,
    pub member_is_leader: MemberGauge,
    pub member_is_learner: MemberGauge,
    pub member_has_leader: MemberGauge,
    pub member_partitioned: MemberGauge,
    pub member_raft_term: MemberGauge,
    pub member_raft_index: MemberGauge,
    pub member_raft_applied_index: MemberGauge,
    pub member_revision: MemberGauge,
    pub member_alarm: Family<AlarmLabels, Gauge>,
    pub member_info: Family<InfoLabels, Gauge>,
    pub db_total_size: MemberGauge,
    pub db_total_size_in_use: MemberGauge,
    pub watchers: MemberGauge,
    pub wal_fsync_p95_ms: MemberFGauge,
    pub memory_usage: MemberGauge,
    pub disk_usage: MemberGauge,
    pub active_connections: MemberGauge,
    pub agent_up: MemberGauge,
    pub backend_commit_p95_ms: MemberFGauge,
    pub probe_read: Family<ReadProbeLabels, Histogram, fn() -> Histogram>,
    pub probe_write: Histogram,
    pub read_p50: FGauge,
    pub read_p95: FGauge,
    pub read_p99: FGauge,
    pub write_p50: FGauge,
    pub write_p95: FGauge,
    pub write_p99: FGauge,
    pub monitor_up: Gauge,
    pub collect_duration: FGauge,
    pub collect_errors: Family<SourceLabel, Counter>,
    pub agent_scrape_up: Family<AgentLabel, Gauge>,
    build_info: Family<VersionLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        // The names as exposed: the text encoder adds `_total` to counters.
        let mut own_names = HashSet::new();
        macro_rules! reg {
            ($name:literal, $help:literal, $metric:expr) => {{
                let m = $metric;
                let counter = matches!(
                    prometheus_client::encoding::EncodeMetric::metric_type(&m),
                    prometheus_client::metrics::MetricType::Counter
                );
                own_names.insert(if counter {
                    format!("{}_total", $name)
                } else {
                    $name.to_owned()
                });
                r.register($name, $help, m.clone());
                m
            }};
        }
        let m = Metrics {
            cluster_healthy: reg!("etcd_cluster_healthy", "1 when the cluster has a leader, a quorum of healthy members, no split brain and no alarm", Gauge::default()),
            cluster_has_leader: reg!("etcd_cluster_has_leader", "1 when the members report a leader", Gauge::default()),
            cluster_member_count: reg!("etcd_cluster_member_count", "Members in the member list, learners included", Gauge::default()),
            cluster_voting_members: reg!("etcd_cluster_voting_members", "Members in the member list that vote (learners excluded)", Gauge::default()),
            cluster_quorum_size: reg!("etcd_cluster_quorum_size", "Voting members needed for quorum", Gauge::default()),
            cluster_healthy_members: reg!("etcd_cluster_healthy_members", "Voting members that answer and are connected to the leader", Gauge::default()),
            cluster_leader_changes: reg!("etcd_cluster_leader_changes", "Leader changes seen by the exporter", Counter::default()),
            cluster_split_brain: reg!("etcd_cluster_split_brain", "1 when members disagree about the leader in a way raft does not allow, or report different cluster IDs", Gauge::default()),
            cluster_partitioned_members: reg!("etcd_cluster_partitioned_members", "Members that answer but are cut off from the leader", Gauge::default()),
            cluster_revision_divergence: reg!("etcd_cluster_revision_divergence", "Highest minus lowest revision across reachable members", Gauge::default()),
            cluster_raft_index_divergence: reg!("etcd_cluster_raft_index_divergence", "Highest minus lowest raft index across reachable members", Gauge::default()),
            request_rate: reg!("etcd_request_rate_per_second", "Client unary gRPC requests per second, all members", FGauge::default()),
            member_up: reg!("etcd_member_up", "1 when the member answered Status in the last cycle", MemberGauge::default()),
            member_is_leader: reg!("etcd_member_is_leader", "1 when the member is the leader", MemberGauge::default()),
            member_is_learner: reg!("etcd_member_is_learner", "1 when the member is a learner", MemberGauge::default()),
            member_has_leader: reg!("etcd_member_has_leader", "1 when the member knows a leader", MemberGauge::default()),
            member_partitioned: reg!("etcd_member_partitioned", "1 when the member answers but has been cut off from the cluster's leader for two cycles", MemberGauge::default()),
            member_raft_term: reg!("etcd_member_raft_term", "Raft term of the member", MemberGauge::default()),
            member_raft_index: reg!("etcd_member_raft_index", "Raft index of the member", MemberGauge::default()),
            member_raft_applied_index: reg!("etcd_member_raft_applied_index", "Raft applied index of the member", MemberGauge::default()),
            member_revision: reg!("etcd_member_revision", "MVCC revision of the member", MemberGauge::default()),
            member_alarm: reg!("etcd_member_alarm", "1 when the alarm is raised on the member", Family::<AlarmLabels, Gauge>::default()),
            member_info: reg!("etcd_member_info", "Member metadata, always 1", Family::<InfoLabels, Gauge>::default()),
            db_total_size: reg!("etcd_mvcc_db_total_size_bytes", "Backend database size of the member, in bytes", MemberGauge::default()),
            db_total_size_in_use: reg!("etcd_mvcc_db_total_size_in_use_bytes", "Backend database bytes in use (the rest is reclaimable by defragmentation)", MemberGauge::default()),
            watchers: reg!("etcd_server_watchers", "Watchers on the member", MemberGauge::default()),
            wal_fsync_p95_ms: reg!("etcd_disk_wal_fsync_duration_p95_milliseconds", "95th percentile of WAL fsync since the previous cycle (or since start when idle), in milliseconds", MemberFGauge::default()),
            memory_usage: reg!("etcd_server_memory_usage_bytes", "Resident memory of the etcd process, from the member's agent", MemberGauge::default()),
            disk_usage: reg!("etcd_server_disk_usage_bytes", "Bytes used by the member's data dir, from its agent", MemberGauge::default()),
            active_connections: reg!("etcd_server_active_connections", "Established client connections to the member, from its agent", MemberGauge::default()),
            agent_up: reg!("etcd_member_agent_up", "1 when the member's agent answered with a valid snapshot in the last cycle", MemberGauge::default()),
            backend_commit_p95_ms: reg!("etcd_disk_backend_commit_duration_p95_milliseconds", "95th percentile of backend commit since the previous cycle (or since start when idle), in milliseconds", MemberFGauge::default()),
            probe_read: reg!("etcd_probe_read_duration_seconds", "Duration of the exporter's read probes", Family::<ReadProbeLabels, Histogram, fn() -> Histogram>::new_with_constructor(probe_histogram)),
            probe_write: reg!("etcd_probe_write_duration_seconds", "Duration of the exporter's write probes", probe_histogram()),
            read_p50: reg!("etcd_request_read_latency_p50_milliseconds", "Median read probe latency over the last 1000 probes", FGauge::default()),
            read_p95: reg!("etcd_request_read_latency_p95_milliseconds", "95th percentile read probe latency over the last 1000 probes", FGauge::default()),
            read_p99: reg!("etcd_request_read_latency_p99_milliseconds", "99th percentile read probe latency over the last 1000 probes", FGauge::default()),
            write_p50: reg!("etcd_request_write_latency_p50_milliseconds", "Median write probe latency over the last 1000 probes", FGauge::default()),
            write_p95: reg!("etcd_request_write_latency_p95_milliseconds", "95th percentile write probe latency over the last 1000 probes", FGauge::default()),
            write_p99: reg!("etcd_request_write_latency_p99_milliseconds", "99th percentile write probe latency over the last 1000 probes", FGauge::default()),
            monitor_up: reg!("etcd_monitor_up", "1 while the exporter runs", Gauge::default()),
            collect_duration: reg!("etcd_monitor_collect_duration_seconds", "Duration of the last collection cycle", FGauge::default()),
            collect_errors: reg!("etcd_monitor_collect_errors", "Collection errors by source", Family::<SourceLabel, Counter>::default()),
            agent_scrape_up: reg!("etcd_monitor_agent_up", "1 when the agent at this URL answered with a valid, fresh snapshot of a known member", Family::<AgentLabel, Gauge>::default()),
            build_info: reg!("etcd_monitor_build_info", "Exporter version, always 1", Family::<VersionLabel, Gauge>::default()),
            registry: r,
            own_names,
        };
        m.monitor_up.set(1);
        // Every error source from the start, at 0: a rate over a series that appears only
        // with the first error would miss that error.
        for source in ERROR_SOURCES {
            let _ = m.collect_errors.get_or_create(&SourceLabel {
                source: (*source).to_owned(),
            });
        }
        m.build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        m
    }

    /// Clears the per-member gauge families so that members that left disappear.
    pub fn clear_member_gauges(&self) {
        for f in [
            &self.member_up,
            &self.member_is_leader,
            &self.member_is_learner,
            &self.member_has_leader,
            &self.member_partitioned,
            &self.member_raft_term,
            &self.member_raft_index,
            &self.member_raft_applied_index,
            &self.member_revision,
            &self.db_total_size,
            &self.db_total_size_in_use,
            &self.watchers,
            &self.memory_usage,
            &self.disk_usage,
            &self.active_connections,
            &self.agent_up,
        ] {
            f.clear();
        }
        self.wal_fsync_p95_ms.clear();
        self.backend_commit_p95_ms.clear();
        self.member_alarm.clear();
        self.member_info.clear();
    }

    pub fn count_error(&self, source: &'static str) {
        debug_assert!(ERROR_SOURCES.contains(&source), "unlisted source {source}");
        self.collect_errors
            .get_or_create(&SourceLabel {
                source: source.to_owned(),
            })
            .inc();
    }

    /// Encodes our families, then the members' own families with a `member` label. With
    /// `passthrough_all` off only the contract's pass-through families are kept. Returns
    /// the text and the number of member families dropped for a type conflict.
    pub fn render(&self, native: &[(&str, &Exposition)], passthrough_all: bool) -> (String, usize) {
        let mut out = String::with_capacity(64 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        let conflicts = textformat::merge(&mut out, native, &self.own_names, |name| {
            passthrough_all || is_contract_passthrough(name)
        });
        (out, conflicts)
    }
}

/// Families of etcd's own that the contract names and that are passed through even with
/// the full pass-through switched off.
pub fn is_contract_passthrough(name: &str) -> bool {
    name == "etcd_server_quota_backend_bytes" || name.starts_with("etcd_server_proposals_")
}

/// The `q` quantile (0..=1) of `values` by nearest rank; `None` when empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_etcd_layout() {
        let b = probe_buckets();
        assert_eq!(b.len(), 17);
        assert_eq!(b[3], 0.001);
        assert!((b[16] - 8.192).abs() < 1e-9);
        assert!(b.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7.0], 0.01), Some(7.0));
    }

    #[test]
    fn render_is_valid_and_keeps_our_families_over_members() {
        let m = Metrics::new();
        m.member_up
            .get_or_create(&MemberLabel { member: "a".into() })
            .set(1);
        m.cluster_leader_changes.inc();
        let member = textformat::parse(
            "# TYPE etcd_member_up gauge\netcd_member_up 5\n# TYPE etcd_server_proposals_pending gauge\netcd_server_proposals_pending 0\n# TYPE go_goroutines gauge\ngo_goroutines 9\n",
        )
        .expect("parse");
        let (all, _) = m.render(&[("a", &member)], true);
        let exp = textformat::parse(&all).expect("our output parses");
        assert_eq!(
            exp.family("etcd_member_up").map(|f| f.samples.len()),
            Some(1),
            "the member's own etcd_member_up must not be merged into ours"
        );
        assert!(all.contains("etcd_cluster_leader_changes_total 1\n"));
        assert!(all.contains("go_goroutines{member=\"a\"} 9\n"));
        let (few, _) = m.render(&[("a", &member)], false);
        assert!(few.contains("etcd_server_proposals_pending{member=\"a\"} 0\n"));
        assert!(!few.contains("go_goroutines"));
    }
}
