//! `/metrics`: the exporter's own families (names are the public contract, see
//! design.md) encoded at scrape time from the clusters' latest snapshots, followed by the
//! members' own families with `cluster` (when named) and `member` labels.
//!
//! Nothing is copied into gauges and cleared: a series exists while a snapshot says so,
//! so departed members and clusters disappear by themselves. The text is a pure function
//! of the snapshots, so [`Exposer`] keeps the last one (and its gzip) until a cluster
//! publishes a new snapshot; concurrent scrapers share it.

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::model::Alarm;
use crate::snapshot::{ProbeHistogram, Snapshot};
use crate::textformat::{self, Exposition};

/// Probe histogram buckets in seconds: finer steps below 1 ms, then etcd's 1 ms doubling
/// up to about 8 s.
pub fn probe_buckets() -> Vec<f64> {
    let mut b = vec![0.0001, 0.00025, 0.0005];
    b.extend((0..14).map(|i| 0.001 * f64::from(1u32 << i)));
    b
}

/// Our families as exposed (counters with `_total`): members' families of these names
/// are never passed through.
const OWN_FAMILIES: &[&str] = &[
    "etcd_cluster_healthy",
    "etcd_cluster_has_leader",
    "etcd_cluster_member_count",
    "etcd_cluster_voting_members",
    "etcd_cluster_quorum_size",
    "etcd_cluster_healthy_members",
    "etcd_cluster_leader_changes_total",
    "etcd_cluster_leader_changes_planned_total",
    "etcd_cluster_maintenance",
    "etcd_cluster_split_brain",
    "etcd_cluster_partitioned_members",
    "etcd_cluster_revision_divergence",
    "etcd_cluster_raft_index_divergence",
    "etcd_request_rate_per_second",
    "etcd_member_up",
    "etcd_member_is_leader",
    "etcd_member_is_learner",
    "etcd_member_has_leader",
    "etcd_member_partitioned",
    "etcd_member_raft_term",
    "etcd_member_raft_index",
    "etcd_member_raft_applied_index",
    "etcd_member_revision",
    "etcd_member_alarm",
    "etcd_member_info",
    "etcd_mvcc_db_total_size_bytes",
    "etcd_mvcc_db_total_size_in_use_bytes",
    "etcd_server_watchers",
    "etcd_disk_wal_fsync_duration_p95_milliseconds",
    "etcd_disk_backend_commit_duration_p95_milliseconds",
    "etcd_server_memory_usage_bytes",
    "etcd_server_disk_usage_bytes",
    "etcd_server_active_connections",
    "etcd_member_agent_up",
    "etcd_probe_read_duration_seconds",
    "etcd_probe_write_duration_seconds",
    "etcd_request_read_latency_p50_milliseconds",
    "etcd_request_read_latency_p95_milliseconds",
    "etcd_request_read_latency_p99_milliseconds",
    "etcd_request_write_latency_p50_milliseconds",
    "etcd_request_write_latency_p95_milliseconds",
    "etcd_request_write_latency_p99_milliseconds",
    "etcd_monitor_up",
    "etcd_monitor_collect_duration_seconds",
    "etcd_monitor_collect_errors_total",
    "etcd_monitor_agent_up",
    "etcd_monitor_build_info",
];

/// Whether `name` (as exposed) is one of our families.
pub fn is_own_family(name: &str) -> bool {
    OWN_FAMILIES.contains(&name)
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

type Labels = Vec<(&'static str, String)>;

/// A sample value: integers are written as integers.
#[derive(Clone, Copy)]
enum Value {
    Int(i64),
    Float(f64),
}

fn flag(b: bool) -> Value {
    Value::Int(i64::from(b))
}

fn int<T: TryInto<i64>>(v: T) -> Value {
    Value::Int(v.try_into().unwrap_or(i64::MAX))
}

/// NaN, not absent, when unknown: a rule must not read "no traffic" into "no data".
fn float_or_nan(v: Option<f64>) -> Value {
    Value::Float(v.unwrap_or(f64::NAN))
}

/// Writes families, each once, with every cluster's series under it.
struct Families<'a, 'b> {
    e: &'a mut DescriptorEncoder<'b>,
    snaps: &'a [Arc<Snapshot>],
}

impl Families<'_, '_> {
    fn family(
        &mut self,
        kind: MetricType,
        name: &str,
        help: &str,
        series: &[(Labels, Value)],
    ) -> std::fmt::Result {
        if series.is_empty() {
            return Ok(());
        }
        let mut m = self.e.encode_descriptor(name, help, None, kind)?;
        for (labels, v) in series {
            let m = m.encode_family(labels)?;
            match (kind, *v) {
                (MetricType::Counter, Value::Int(v)) => {
                    ConstCounter::new(u64::try_from(v).unwrap_or(0)).encode(m)?
                }
                (MetricType::Counter, Value::Float(v)) => ConstCounter::new(v).encode(m)?,
                (_, Value::Int(v)) => ConstGauge::new(v).encode(m)?,
                (_, Value::Float(v)) => ConstGauge::new(v).encode(m)?,
            }
        }
        Ok(())
    }

    /// A gauge with one series per (collected) cluster.
    fn cluster(
        &mut self,
        name: &str,
        help: &str,
        value: impl Fn(&Snapshot) -> Value,
    ) -> std::fmt::Result {
        let series: Vec<(Labels, Value)> = collected(self.snaps)
            .map(|s| (cluster_labels(s), value(s)))
            .collect();
        self.family(MetricType::Gauge, name, help, &series)
    }

    /// A gauge with one series per member that `value` knows.
    fn member(
        &mut self,
        name: &str,
        help: &str,
        value: impl Fn(&Snapshot, &crate::model::MemberState) -> Option<Value>,
    ) -> std::fmt::Result {
        let series: Vec<(Labels, Value)> = collected(self.snaps)
            .flat_map(|s| {
                let value = &value;
                s.model
                    .members
                    .iter()
                    .filter_map(move |m| value(s, m).map(|v| (member_labels(s, &m.info.name), v)))
            })
            .collect();
        self.family(MetricType::Gauge, name, help, &series)
    }

    fn histograms(
        &mut self,
        name: &str,
        help: &str,
        series: &[(Labels, &ProbeHistogram)],
    ) -> std::fmt::Result {
        if series.is_empty() {
            return Ok(());
        }
        let bounds = probe_buckets();
        let mut m = self
            .e
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, h) in series {
            let buckets: Vec<(f64, u64)> = bounds
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(h.counts.iter().copied())
                .collect();
            m.encode_family(labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    h.sum, h.count, &buckets, None,
                )?;
        }
        Ok(())
    }
}

/// The snapshots of clusters that have finished a cycle.
fn collected(snaps: &[Arc<Snapshot>]) -> impl Iterator<Item = &Snapshot> {
    snaps.iter().filter(|s| s.cycle > 0).map(|s| &**s)
}

fn cluster_labels(s: &Snapshot) -> Labels {
    s.cluster.iter().map(|c| ("cluster", c.clone())).collect()
}

fn member_labels(s: &Snapshot, member: &str) -> Labels {
    let mut l = cluster_labels(s);
    l.push(("member", member.to_owned()));
    l
}

/// Encodes the snapshots' families; registered per render.
#[derive(Debug)]
struct SnapshotCollector {
    snaps: Vec<Arc<Snapshot>>,
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut f = Families {
            e: &mut encoder,
            snaps: &self.snaps,
        };
        encode_cluster_families(&mut f)?;
        encode_member_families(&mut f)?;
        encode_probe_families(&mut f)?;
        encode_self_families(&mut f)
    }
}

fn encode_cluster_families(f: &mut Families<'_, '_>) -> std::fmt::Result {
    f.cluster(
        "etcd_cluster_healthy",
        "1 when the cluster has a leader, a quorum of healthy members, no split brain and no alarm",
        |s| flag(s.model.healthy),
    )?;
    f.cluster(
        "etcd_cluster_has_leader",
        "1 when the members report a leader",
        |s| flag(s.model.has_leader),
    )?;
    f.cluster(
        "etcd_cluster_member_count",
        "Members in the member list, learners included",
        |s| int(s.model.member_count),
    )?;
    f.cluster(
        "etcd_cluster_voting_members",
        "Members in the member list that vote (learners excluded)",
        |s| int(s.model.voting_members),
    )?;
    f.cluster(
        "etcd_cluster_quorum_size",
        "Voting members needed for quorum",
        |s| int(s.model.quorum_size),
    )?;
    f.cluster(
        "etcd_cluster_healthy_members",
        "Voting members that answer and are connected to the leader",
        |s| int(s.model.healthy_members),
    )?;
    let changes: Vec<(Labels, Value)> = collected(f.snaps)
        .map(|s| (cluster_labels(s), int(s.leader_changes_total)))
        .collect();
    f.family(
        MetricType::Counter,
        "etcd_cluster_leader_changes",
        "Leader changes seen by the exporter",
        &changes,
    )?;
    let planned: Vec<(Labels, Value)> = collected(f.snaps)
        .map(|s| (cluster_labels(s), int(s.leader_changes_planned_total)))
        .collect();
    f.family(
        MetricType::Counter,
        "etcd_cluster_leader_changes_planned",
        "Leader changes seen while a maintenance marker was up (planned, not faults)",
        &planned,
    )?;
    let maintenance: Vec<(Labels, Value)> = collected(f.snaps)
        .map(|s| {
            let mut l = cluster_labels(s);
            match &s.maintenance {
                Some(m) => {
                    l.push(("operation", m.operation.as_str().to_owned()));
                    (l, Value::Int(1))
                }
                None => (l, Value::Int(0)),
            }
        })
        .collect();
    f.family(
        MetricType::Gauge,
        "etcd_cluster_maintenance",
        "1 while maintenance (etcd-monitor-ctl or the maintenance API) runs on the cluster, with its operation",
        &maintenance,
    )?;
    f.cluster("etcd_cluster_split_brain", "1 when members disagree about the leader in a way raft does not allow, or report different cluster IDs", |s| flag(s.model.split_brain))?;
    f.cluster(
        "etcd_cluster_partitioned_members",
        "Members that answer but are cut off from the leader",
        |s| int(s.model.partitioned_members.len()),
    )?;
    f.cluster(
        "etcd_cluster_revision_divergence",
        "Highest minus lowest revision across reachable members",
        |s| int(s.model.revision_divergence),
    )?;
    f.cluster(
        "etcd_cluster_raft_index_divergence",
        "Highest minus lowest raft index across reachable members",
        |s| int(s.model.raft_index_divergence),
    )?;
    f.cluster(
        "etcd_request_rate_per_second",
        "Client unary gRPC requests per second, all members",
        |s| float_or_nan(s.request_rate_per_second),
    )
}

fn encode_member_families(f: &mut Families<'_, '_>) -> std::fmt::Result {
    let some = |v: Value| Some(v);
    f.member(
        "etcd_member_up",
        "1 when the member answered Status in the last cycle",
        |_, m| some(flag(m.up)),
    )?;
    f.member(
        "etcd_member_is_leader",
        "1 when the member is the leader",
        |_, m| some(flag(m.is_leader)),
    )?;
    f.member(
        "etcd_member_is_learner",
        "1 when the member is a learner",
        |_, m| some(flag(m.info.is_learner)),
    )?;
    f.member(
        "etcd_member_has_leader",
        "1 when the member knows a leader",
        |_, m| some(flag(m.has_leader)),
    )?;
    f.member(
        "etcd_member_partitioned",
        "1 when the member answers but has been cut off from the cluster's leader for two cycles",
        |_, m| some(flag(m.partitioned)),
    )?;
    f.member(
        "etcd_member_raft_term",
        "Raft term of the member",
        |_, m| m.raft_term.map(int),
    )?;
    f.member(
        "etcd_member_raft_index",
        "Raft index of the member",
        |_, m| m.raft_index.map(int),
    )?;
    f.member(
        "etcd_member_raft_applied_index",
        "Raft applied index of the member",
        |_, m| m.raft_applied_index.map(int),
    )?;
    f.member(
        "etcd_member_revision",
        "MVCC revision of the member",
        |_, m| m.revision.map(int),
    )?;

    // Unknown alarms (nobody could list them) are left out, not reported cleared.
    let alarms: Vec<(Labels, Value)> = collected(f.snaps)
        .filter(|s| s.model.alarms_known)
        .flat_map(|s| {
            s.model.members.iter().flat_map(move |m| {
                Alarm::ALL.iter().map(move |a| {
                    let mut l = member_labels(s, &m.info.name);
                    l.push(("alarm", a.as_str().to_owned()));
                    (l, flag(m.alarms.contains(a)))
                })
            })
        })
        .collect();
    f.family(
        MetricType::Gauge,
        "etcd_member_alarm",
        "1 when the alarm is raised on the member",
        &alarms,
    )?;
    let info: Vec<(Labels, Value)> = collected(f.snaps)
        .flat_map(|s| {
            s.model.members.iter().map(move |m| {
                let version = m
                    .version
                    .clone()
                    .or_else(|| {
                        s.extras
                            .get(&m.info.id)
                            .and_then(|x| x.last_version.clone())
                    })
                    .unwrap_or_default();
                let mut l = member_labels(s, &m.info.name);
                l.extend([
                    ("id", format!("{:x}", m.info.id)),
                    ("version", version),
                    (
                        "client_url",
                        m.info.client_urls.first().cloned().unwrap_or_default(),
                    ),
                    (
                        "peer_url",
                        m.info.peer_urls.first().cloned().unwrap_or_default(),
                    ),
                ]);
                (l, Value::Int(1))
            })
        })
        .collect();
    f.family(
        MetricType::Gauge,
        "etcd_member_info",
        "Member metadata, always 1",
        &info,
    )?;
    f.member(
        "etcd_mvcc_db_total_size_bytes",
        "Backend database size of the member, in bytes",
        |_, m| m.db_size_bytes.map(int),
    )?;
    f.member(
        "etcd_mvcc_db_total_size_in_use_bytes",
        "Backend database bytes in use (the rest is reclaimable by defragmentation)",
        |_, m| m.db_size_in_use_bytes.map(int),
    )?;

    let extra = |s: &Snapshot, m: &crate::model::MemberState| s.extras.get(&m.info.id).cloned();
    f.member("etcd_server_watchers", "Watchers on the member", |s, m| {
        extra(s, m).and_then(|x| x.watchers).map(int)
    })?;
    f.member("etcd_disk_wal_fsync_duration_p95_milliseconds", "95th percentile of WAL fsync since the previous cycle (or since start when idle), in milliseconds", |s, m| extra(s, m).and_then(|x| x.wal_fsync_p95_ms).map(Value::Float))?;
    f.member("etcd_disk_backend_commit_duration_p95_milliseconds", "95th percentile of backend commit since the previous cycle (or since start when idle), in milliseconds", |s, m| extra(s, m).and_then(|x| x.backend_commit_p95_ms).map(Value::Float))?;

    let agent = |s: &Snapshot, m: &crate::model::MemberState| s.agents.get(&m.info.name).cloned();
    f.member(
        "etcd_server_memory_usage_bytes",
        "Resident memory of the etcd process, from the member's agent",
        |s, m| agent(s, m).and_then(|a| a.memory_usage_bytes).map(int),
    )?;
    f.member(
        "etcd_server_disk_usage_bytes",
        "Bytes used by the member's data dir, from its agent",
        |s, m| agent(s, m).and_then(|a| a.disk_usage_bytes).map(int),
    )?;
    f.member(
        "etcd_server_active_connections",
        "Established client connections to the member, from its agent",
        |s, m| agent(s, m).and_then(|a| a.active_connections).map(int),
    )?;
    f.member(
        "etcd_member_agent_up",
        "1 when the member's agent answered with a valid snapshot in the last cycle",
        |s, m| agent(s, m).map(|a| flag(a.up)),
    )
}

fn encode_probe_families(f: &mut Families<'_, '_>) -> std::fmt::Result {
    let reads: Vec<(Labels, &ProbeHistogram)> = collected(f.snaps)
        .flat_map(|s| {
            s.probes.read.iter().map(move |((member, consistency), h)| {
                let mut l = member_labels(s, member);
                l.push(("consistency", consistency.as_str().to_owned()));
                (l, h)
            })
        })
        .collect();
    f.histograms(
        "etcd_probe_read_duration_seconds",
        "Duration of the exporter's read probes",
        &reads,
    )?;
    let writes: Vec<(Labels, &ProbeHistogram)> = collected(f.snaps)
        .map(|s| (cluster_labels(s), &s.probes.write))
        .collect();
    f.histograms(
        "etcd_probe_write_duration_seconds",
        "Duration of the exporter's write probes",
        &writes,
    )?;
    for (kind, label) in [
        ("read", "Median"),
        ("read", "95th percentile"),
        ("read", "99th percentile"),
        ("write", "Median"),
        ("write", "95th percentile"),
        ("write", "99th percentile"),
    ] {
        let q = match label {
            "Median" => "p50",
            "95th percentile" => "p95",
            _ => "p99",
        };
        let name = format!("etcd_request_{kind}_latency_{q}_milliseconds");
        let help = format!("{label} {kind} probe latency over the last 1000 probes");
        f.cluster(&name, &help, |s| {
            let p = if kind == "read" {
                &s.latency.read
            } else {
                &s.latency.write
            };
            float_or_nan(match q {
                "p50" => p.p50,
                "p95" => p.p95,
                _ => p.p99,
            })
        })?;
    }
    Ok(())
}

fn encode_self_families(f: &mut Families<'_, '_>) -> std::fmt::Result {
    f.family(
        MetricType::Gauge,
        "etcd_monitor_up",
        "1 while the exporter runs",
        &[(Vec::new(), Value::Int(1))],
    )?;
    f.cluster(
        "etcd_monitor_collect_duration_seconds",
        "Duration of the last collection cycle",
        |s| Value::Float(s.collect_duration_ms / 1e3),
    )?;
    // Every source from the start, at 0: a rate over a series that appears only with the
    // first error would miss that error.
    let errors: Vec<(Labels, Value)> = f
        .snaps
        .iter()
        .flat_map(|s| {
            s.collect_errors.iter().map(move |(source, n)| {
                let mut l = cluster_labels(s);
                l.push(("source", source.as_str().to_owned()));
                (l, int(n))
            })
        })
        .collect();
    f.family(
        MetricType::Counter,
        "etcd_monitor_collect_errors",
        "Collection errors by source",
        &errors,
    )?;
    let agents: Vec<(Labels, Value)> = collected(f.snaps)
        .flat_map(|s| {
            s.agents_up.iter().map(move |(url, up)| {
                let mut l = cluster_labels(s);
                l.push(("agent", url.clone()));
                (l, flag(*up))
            })
        })
        .collect();
    f.family(
        MetricType::Gauge,
        "etcd_monitor_agent_up",
        "1 when the agent at this URL answered with a valid, fresh snapshot of a known member",
        &agents,
    )?;
    f.family(
        MetricType::Gauge,
        "etcd_monitor_build_info",
        "Exporter version, always 1",
        &[(
            vec![("version", env!("CARGO_PKG_VERSION").to_owned())],
            Value::Int(1),
        )],
    )
}

/// One cluster's members' own families, rendered once per cycle by its collector with
/// the `cluster` (when named) and `member` labels, each family's header and samples kept
/// apart: at scrape time the families of several clusters are merged by concatenation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NativeFamilies {
    families: Vec<NativeFamily>,
}

#[derive(Debug, Clone, PartialEq)]
struct NativeFamily {
    name: String,
    /// The whole `# HELP` line, if any.
    help: Option<String>,
    /// The whole `# TYPE` line.
    kind: String,
    samples: String,
}

impl NativeFamilies {
    /// Renders `members`' own families (all of them with `passthrough_all`, else only the
    /// contract's pass-through families; never ours). Returns them and the number of
    /// families dropped for a type that differs between members.
    pub fn render(
        cluster: Option<&str>,
        members: &[(String, Arc<Exposition>)],
        passthrough_all: bool,
    ) -> (Self, usize) {
        let labels: Vec<Vec<(&str, &str)>> = members
            .iter()
            .map(|(member, _)| {
                let mut l: Vec<(&str, &str)> = Vec::with_capacity(2);
                if let Some(c) = cluster {
                    l.push(("cluster", c));
                }
                l.push(("member", member));
                l
            })
            .collect();
        let natives: Vec<(&[(&str, &str)], &Exposition)> = labels
            .iter()
            .map(Vec::as_slice)
            .zip(members.iter().map(|(_, e)| &**e))
            .collect();
        let own: std::collections::HashSet<String> =
            OWN_FAMILIES.iter().map(|n| (*n).to_owned()).collect();
        let mut text = String::with_capacity(256 * 1024 * members.len().max(1));
        let conflicts = textformat::merge_labelled(&mut text, &natives, &own, |name| {
            passthrough_all || is_contract_passthrough(name)
        });
        (Self::split(&text), conflicts)
    }

    /// Splits `merge_labelled`'s output into its families.
    fn split(text: &str) -> Self {
        let mut families: Vec<NativeFamily> = Vec::new();
        let name_of = |rest: &str| rest.split(' ').next().unwrap_or_default().to_owned();
        for line in text.split_inclusive('\n') {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                families.push(NativeFamily {
                    name: name_of(rest),
                    help: Some(line.to_owned()),
                    kind: String::new(),
                    samples: String::new(),
                });
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = name_of(rest);
                match families.last_mut() {
                    Some(f) if f.name == name && f.kind.is_empty() => f.kind = line.to_owned(),
                    _ => families.push(NativeFamily {
                        name,
                        help: None,
                        kind: line.to_owned(),
                        samples: String::new(),
                    }),
                }
            } else if let Some(f) = families.last_mut() {
                f.samples.push_str(line);
            }
        }
        NativeFamilies { families }
    }
}

/// Renders `/metrics` for `snaps`: our families, then the members' own families of every
/// cluster, each family once (a family whose type differs between clusters keeps the
/// first cluster's samples).
pub fn render(snaps: &[Arc<Snapshot>]) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector {
        snaps: snaps.to_vec(),
    }));
    let native_bytes: usize = snaps
        .iter()
        .flat_map(|s| &s.native.families)
        .map(|f| f.samples.len() + f.kind.len() + f.help.as_ref().map_or(0, String::len))
        .sum();
    let mut out = String::with_capacity(64 * 1024 + native_bytes);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    let mut order: Vec<&str> = Vec::new();
    let mut groups: std::collections::HashMap<&str, Vec<&NativeFamily>> =
        std::collections::HashMap::new();
    for f in snaps.iter().flat_map(|s| &s.native.families) {
        groups
            .entry(f.name.as_str())
            .or_insert_with(|| {
                order.push(f.name.as_str());
                Vec::new()
            })
            .push(f);
    }
    for name in order {
        let Some(group) = groups.get(name) else {
            continue;
        };
        let Some(first) = group.first() else { continue };
        if let Some(help) = group.iter().find_map(|f| f.help.as_deref()) {
            out.push_str(help);
        }
        out.push_str(&first.kind);
        for f in group.iter().filter(|f| f.kind == first.kind) {
            out.push_str(&f.samples);
        }
    }
    out
}

/// The rendered `/metrics`, kept until a cluster publishes a new snapshot. While one
/// request renders the new text, the others are answered with the previous one (at most
/// one cycle old) instead of waiting.
#[derive(Default)]
pub struct Exposer {
    last: Mutex<Option<Arc<Rendered>>>,
    rendering: Mutex<()>,
}

struct Rendered {
    /// Each cluster's cycle when this was rendered.
    cycles: Vec<u64>,
    text: Bytes,
    gzip: std::sync::OnceLock<Bytes>,
}

impl Rendered {
    fn body(&self, gzip: bool) -> Bytes {
        if !gzip {
            return self.text.clone();
        }
        self.gzip
            .get_or_init(|| {
                let mut z = flate2::write::GzEncoder::new(
                    Vec::with_capacity(self.text.len() / 6),
                    flate2::Compression::fast(),
                );
                // Writing to a Vec cannot fail.
                let _ = z.write_all(&self.text);
                Bytes::from(z.finish().unwrap_or_default())
            })
            .clone()
    }
}

impl Exposer {
    pub fn new() -> Self {
        Self::default()
    }

    fn latest(&self) -> Option<Arc<Rendered>> {
        // A poisoned lock only means a render panicked; what it holds is still whole.
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The exposition of `snaps`, gzip-compressed when `gzip`.
    pub fn get(&self, snaps: &[Arc<Snapshot>], gzip: bool) -> Bytes {
        let cycles: Vec<u64> = snaps.iter().map(|s| s.cycle).collect();
        let current = self.latest();
        if let Some(r) = current.as_ref().filter(|r| r.cycles == cycles) {
            return r.body(gzip);
        }
        let _rendering = match (self.rendering.try_lock(), current) {
            (Ok(guard), _) => guard,
            (Err(std::sync::TryLockError::Poisoned(p)), _) => p.into_inner(),
            (Err(std::sync::TryLockError::WouldBlock), Some(previous)) => {
                return previous.body(gzip)
            }
            (Err(std::sync::TryLockError::WouldBlock), None) => {
                self.rendering.lock().unwrap_or_else(|p| p.into_inner())
            }
        };
        // Someone may have rendered these cycles while this request waited.
        if let Some(r) = self.latest().filter(|r| r.cycles == cycles) {
            return r.body(gzip);
        }
        let rendered = Arc::new(Rendered {
            cycles,
            text: Bytes::from(render(snaps)),
            gzip: std::sync::OnceLock::new(),
        });
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(rendered.clone());
        rendered.body(gzip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::ErrorSource;

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

    fn snapshot(
        cluster: Option<&str>,
        member: &str,
        native: &str,
        passthrough_all: bool,
    ) -> Arc<Snapshot> {
        use crate::model::{derive, Facts, MemberInfo, MemberObservation, StatusFacts};
        let mut s = Snapshot::empty(cluster.map(str::to_owned), 5000);
        s.cycle = 1;
        s.model = derive(&Facts {
            members: vec![MemberObservation {
                info: MemberInfo {
                    id: 1,
                    name: member.into(),
                    client_urls: vec![],
                    peer_urls: vec![],
                    is_learner: false,
                },
                endpoint: String::new(),
                status: Ok(StatusFacts {
                    cluster_id: 9,
                    member_id: 1,
                    version: "3.5.0".into(),
                    leader: 1,
                    raft_term: 2,
                    raft_index: 10,
                    raft_applied_index: 10,
                    revision: 5,
                    db_size: 100,
                    db_size_in_use: 50,
                    is_learner: false,
                    errors: vec![],
                }),
            }],
            alarms: Some(vec![]),
        });
        s.leader_changes_total = 1;
        s.collect_errors.add(ErrorSource::Agent);
        s.probes.write.observe(0.002);
        let members = [(
            member.to_owned(),
            Arc::new(textformat::parse(native).expect("parse")),
        )];
        s.native = Arc::new(NativeFamilies::render(cluster, &members, passthrough_all).0);
        Arc::new(s)
    }

    const NATIVE: &str = "# TYPE etcd_member_up gauge\netcd_member_up 5\n# TYPE etcd_server_proposals_pending gauge\netcd_server_proposals_pending 0\n# TYPE go_goroutines gauge\ngo_goroutines 9\n";

    #[test]
    fn render_is_valid_and_keeps_our_families_over_members() {
        let snaps = [snapshot(None, "a", NATIVE, true)];
        let all = render(&snaps);
        let exp = textformat::parse(&all).expect("our output parses");
        assert_eq!(
            exp.family("etcd_member_up").map(|f| f.samples.len()),
            Some(1),
            "the member's own etcd_member_up must not be merged into ours"
        );
        assert!(
            all.contains("etcd_cluster_leader_changes_total 1\n"),
            "{all}"
        );
        assert!(all.contains("etcd_member_up{member=\"a\"} 1\n"));
        assert!(all.contains("etcd_monitor_collect_errors_total{source=\"agent\"} 1\n"));
        assert!(all.contains("etcd_monitor_collect_errors_total{source=\"connect\"} 0\n"));
        assert!(all.contains("etcd_probe_write_duration_seconds_bucket{le=\"0.002\"} 1\n"));
        assert!(all.contains("etcd_probe_write_duration_seconds_count 1\n"));
        assert!(all.contains("go_goroutines{member=\"a\"} 9\n"));
        let few = render(&[snapshot(None, "a", NATIVE, false)]);
        assert!(few.contains("etcd_server_proposals_pending{member=\"a\"} 0\n"));
        assert!(!few.contains("go_goroutines"));
    }

    #[test]
    fn several_clusters_share_each_family_and_are_told_apart() {
        let snaps = [
            snapshot(Some("east"), "m1", NATIVE, true),
            snapshot(Some("west"), "m1", NATIVE, true),
        ];
        let text = render(&snaps);
        let exp = textformat::parse(&text).expect("parses: each family once");
        let up = exp.family("etcd_member_up").expect("etcd_member_up");
        let clusters: Vec<Option<&str>> = up.samples.iter().map(|s| s.label("cluster")).collect();
        assert_eq!(clusters, [Some("east"), Some("west")]);
        let goroutines = exp.family("go_goroutines").expect("passed through");
        assert_eq!(
            goroutines
                .samples
                .iter()
                .map(|s| (s.label("cluster"), s.label("member")))
                .collect::<Vec<_>>(),
            [(Some("east"), Some("m1")), (Some("west"), Some("m1"))]
        );
        assert!(text.contains("etcd_monitor_up 1\n"), "not per cluster");
    }

    #[test]
    fn a_cluster_before_its_first_cycle_has_only_error_counters() {
        let fresh = Arc::new(Snapshot::empty(Some("new".into()), 5000));
        let text = render(&[fresh]);
        assert!(!text.contains("etcd_cluster_healthy"), "{text}");
        assert!(text
            .contains("etcd_monitor_collect_errors_total{cluster=\"new\",source=\"status\"} 0\n"));
    }

    #[test]
    fn a_family_whose_type_differs_between_members_is_kept_from_the_first() {
        let other =
            "# TYPE etcd_server_proposals_pending counter\netcd_server_proposals_pending 3\n";
        let members = [
            (
                "a".to_owned(),
                Arc::new(textformat::parse(NATIVE).expect("parse")),
            ),
            (
                "b".to_owned(),
                Arc::new(textformat::parse(other).expect("parse")),
            ),
        ];
        let (native, conflicts) = NativeFamilies::render(None, &members, true);
        assert_eq!(
            conflicts, 1,
            "our own etcd_member_up is not a conflict: it is left out"
        );
        let mut s = Snapshot::empty(None, 5000);
        s.native = Arc::new(native);
        let text = render(&[Arc::new(s)]);
        assert!(text.contains("etcd_server_proposals_pending{member=\"a\"} 0\n"));
        assert!(!text.contains("member=\"b\""), "{text}");
        textformat::parse(&text).expect("valid");
    }

    #[test]
    fn the_exposer_renders_once_per_cycle_and_gzips_the_same_text() {
        use std::io::Read as _;
        let exposer = Exposer::new();
        let snaps = [snapshot(None, "a", NATIVE, true)];
        let plain = exposer.get(&snaps, false);
        let zipped = exposer.get(&snaps, true);
        let mut unzipped = String::new();
        flate2::read::GzDecoder::new(&zipped[..])
            .read_to_string(&mut unzipped)
            .expect("gzip");
        assert_eq!(unzipped.as_bytes(), &plain[..]);
        assert_eq!(
            exposer.get(&snaps, false).as_ptr(),
            plain.as_ptr(),
            "cached"
        );
    }
}
