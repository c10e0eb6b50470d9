//! The agent's `/metrics`: every series carries `member`. The fsync histogram and error
//! counter are live metrics updated by the probe; everything else is encoded at scrape
//! time from the latest snapshot by [`SnapshotCollector`], so the registry is built once
//! and never locked.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::snapshot::AgentSnapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabel {
    pub member: String,
}

/// etcd's WAL fsync buckets: 1 ms doubling 14 times (to about 8 s).
pub fn wal_buckets() -> Vec<f64> {
    (0..14).map(|i| 0.001 * f64::from(1u32 << i)).collect()
}

fn wal_histogram() -> Histogram {
    Histogram::new(wal_buckets())
}

/// The probe's live metrics.
#[derive(Clone)]
pub struct ProbeMetrics {
    label: MemberLabel,
    duration: Family<MemberLabel, Histogram, fn() -> Histogram>,
    errors: Family<MemberLabel, Counter>,
}

impl ProbeMetrics {
    pub fn observe(&self, d: Duration) {
        self.duration
            .get_or_create(&self.label)
            .observe(d.as_secs_f64());
    }

    pub fn error(&self) {
        self.errors.get_or_create(&self.label).inc();
    }
}

/// Builds the registry: the probe's live metrics and the snapshot collector.
pub fn registry(
    member: &str,
    snapshots: watch::Receiver<Arc<AgentSnapshot>>,
) -> (Registry, ProbeMetrics) {
    let mut r = Registry::default();
    let probe = ProbeMetrics {
        label: MemberLabel {
            member: member.to_owned(),
        },
        duration: Family::new_with_constructor(wal_histogram),
        errors: Family::default(),
    };
    // Present from the start, so a rate() sees the first probe and the first error.
    let _ = probe.duration.get_or_create(&probe.label);
    let _ = probe.errors.get_or_create(&probe.label);
    r.register(
        "etcd_agent_fsync_duration_seconds",
        "fdatasync latency of the probe file on the data dir's filesystem",
        probe.duration.clone(),
    );
    r.register(
        "etcd_agent_fsync_errors",
        "Failed fsync probes",
        probe.errors.clone(),
    );
    r.register_collector(Box::new(SnapshotCollector { snapshots }));
    (r, probe)
}

/// Encodes the latest snapshot.
#[derive(Debug)]
pub struct SnapshotCollector {
    snapshots: watch::Receiver<Arc<AgentSnapshot>>,
}

type Labels = Vec<(&'static str, String)>;

struct Enc<'a, 'b> {
    e: &'a mut DescriptorEncoder<'b>,
    member: String,
}

impl Enc<'_, '_> {
    fn labels(&self, extra: &[(&'static str, &str)]) -> Labels {
        let mut l: Labels = vec![("member", self.member.clone())];
        l.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        l
    }

    /// One family of constant values; nothing when `series` is empty.
    fn family(
        &mut self,
        kind: MetricType,
        name: &str,
        help: &str,
        series: &[(Labels, f64)],
    ) -> Result<(), std::fmt::Error> {
        if series.is_empty() {
            return Ok(());
        }
        let mut m = self.e.encode_descriptor(name, help, None, kind)?;
        for (labels, v) in series {
            let m = m.encode_family(labels)?;
            match kind {
                MetricType::Counter => ConstCounter::new(*v).encode(m)?,
                _ => ConstGauge::new(*v).encode(m)?,
            }
        }
        Ok(())
    }

    fn gauge(
        &mut self,
        name: &str,
        help: &str,
        series: &[(Labels, f64)],
    ) -> Result<(), std::fmt::Error> {
        self.family(MetricType::Gauge, name, help, series)
    }

    /// `name` without `_total`: the text encoder adds it to counters.
    fn counter(
        &mut self,
        name: &str,
        help: &str,
        series: &[(Labels, f64)],
    ) -> Result<(), std::fmt::Error> {
        self.family(MetricType::Counter, name, help, series)
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.snapshots.borrow().clone();
        let mut e = Enc {
            e: &mut encoder,
            member: s.member.clone(),
        };
        let base = e.labels(&[]);
        e.gauge(
            "etcd_agent_up",
            "1 while the agent runs",
            &[(base.clone(), 1.0)],
        )?;

        let statuses: Vec<(Labels, f64)> = s
            .collectors
            .iter()
            .map(|c| {
                (
                    e.labels(&[("collector", &c.name)]),
                    f64::from(u8::from(c.ok)),
                )
            })
            .collect();
        e.gauge(
            "etcd_agent_collector_success",
            "1 when the collector succeeded in the last collection",
            &statuses,
        )?;
        let durations: Vec<(Labels, f64)> = s
            .collectors
            .iter()
            .map(|c| (e.labels(&[("collector", &c.name)]), c.duration_seconds))
            .collect();
        e.gauge(
            "etcd_agent_collector_duration_seconds",
            "Duration of the collector in the last collection",
            &durations,
        )?;

        if let Some(d) = &s.disk {
            let l = e.labels(&[("device", &d.device)]);
            let one = |v: f64| vec![(l.clone(), v)];
            e.counter(
                "etcd_agent_disk_reads_completed",
                "Reads completed on the data dir's device",
                &one(d.reads_completed as f64),
            )?;
            e.counter(
                "etcd_agent_disk_writes_completed",
                "Writes completed on the data dir's device",
                &one(d.writes_completed as f64),
            )?;
            e.counter(
                "etcd_agent_disk_read_bytes",
                "Bytes read from the data dir's device",
                &one(d.read_bytes as f64),
            )?;
            e.counter(
                "etcd_agent_disk_written_bytes",
                "Bytes written to the data dir's device",
                &one(d.written_bytes as f64),
            )?;
            e.counter(
                "etcd_agent_disk_io_time_seconds",
                "Seconds the data dir's device spent doing I/O",
                &one(d.io_time_seconds),
            )?;
            e.counter(
                "etcd_agent_disk_io_time_weighted_seconds",
                "Weighted seconds spent doing I/O (queue depth times time)",
                &one(d.io_time_weighted_seconds),
            )?;
            e.gauge(
                "etcd_agent_disk_io_now",
                "I/Os in progress on the data dir's device",
                &one(d.io_now as f64),
            )?;
        }
        if let Some(f) = &s.filesystem {
            let l = e.labels(&[("mountpoint", &f.mount_point), ("fstype", &f.fs_type)]);
            e.gauge(
                "etcd_agent_filesystem_size_bytes",
                "Size of the data dir's filesystem",
                &[(l.clone(), f.size_bytes as f64)],
            )?;
            e.gauge(
                "etcd_agent_filesystem_avail_bytes",
                "Bytes available to etcd on the data dir's filesystem",
                &[(l.clone(), f.avail_bytes as f64)],
            )?;
            e.gauge(
                "etcd_agent_filesystem_free_bytes",
                "Free bytes on the data dir's filesystem (root's reserve included)",
                &[(l, f.free_bytes as f64)],
            )?;
        }
        if let Some(b) = s.data_dir_bytes {
            e.gauge(
                "etcd_agent_data_dir_bytes",
                "Bytes allocated to the files of the data dir",
                &[(base.clone(), b as f64)],
            )?;
        }
        if let Some(m) = &s.memory {
            e.gauge(
                "etcd_agent_memory_total_bytes",
                "Host memory",
                &[(base.clone(), m.total_bytes as f64)],
            )?;
            e.gauge(
                "etcd_agent_memory_available_bytes",
                "Host memory available without swapping",
                &[(base.clone(), m.available_bytes as f64)],
            )?;
        }
        if let Some(c) = &s.cpu {
            let series: Vec<(Labels, f64)> = c
                .seconds_by_mode
                .iter()
                .map(|(mode, v)| (e.labels(&[("mode", mode)]), *v))
                .collect();
            e.counter(
                "etcd_agent_cpu_seconds",
                "Host CPU seconds by mode, all CPUs",
                &series,
            )?;
            e.gauge(
                "etcd_agent_load1",
                "1-minute load average",
                &[(base.clone(), c.load1)],
            )?;
        }
        if !s.network.is_empty() {
            type Pick = fn(&crate::snapshot::NetworkFacts) -> u64;
            let families: [(&str, &str, Pick); 6] = [
                ("etcd_agent_network_receive_bytes", "Bytes received", |n| {
                    n.receive_bytes
                }),
                ("etcd_agent_network_transmit_bytes", "Bytes sent", |n| {
                    n.transmit_bytes
                }),
                ("etcd_agent_network_receive_errors", "Receive errors", |n| {
                    n.receive_errors
                }),
                (
                    "etcd_agent_network_transmit_errors",
                    "Transmit errors",
                    |n| n.transmit_errors,
                ),
                (
                    "etcd_agent_network_receive_drops",
                    "Received packets dropped",
                    |n| n.receive_drops,
                ),
                (
                    "etcd_agent_network_transmit_drops",
                    "Packets dropped on sending",
                    |n| n.transmit_drops,
                ),
            ];
            for (name, help, pick) in families {
                let series: Vec<(Labels, f64)> = s
                    .network
                    .iter()
                    .map(|n| (e.labels(&[("device", &n.device)]), pick(n) as f64))
                    .collect();
                e.counter(name, help, &series)?;
            }
        }
        e.gauge(
            "etcd_agent_etcd_process_up",
            "1 when the etcd process was found and read",
            &[(base.clone(), f64::from(u8::from(s.etcd_process.is_some())))],
        )?;
        if let Some(p) = &s.etcd_process {
            e.gauge(
                "etcd_agent_etcd_process_resident_memory_bytes",
                "Resident memory of the etcd process",
                &[(base.clone(), p.resident_memory_bytes as f64)],
            )?;
            e.counter(
                "etcd_agent_etcd_process_cpu_seconds",
                "CPU seconds used by the etcd process",
                &[(base.clone(), p.cpu_seconds)],
            )?;
            if let Some(fds) = p.open_fds {
                e.gauge(
                    "etcd_agent_etcd_process_open_fds",
                    "Open file descriptors of the etcd process",
                    &[(base.clone(), fds as f64)],
                )?;
            }
            if let Some(max) = p.max_fds {
                e.gauge(
                    "etcd_agent_etcd_process_max_fds",
                    "File descriptor limit of the etcd process",
                    &[(base.clone(), max as f64)],
                )?;
            }
            e.gauge(
                "etcd_agent_etcd_process_threads",
                "Threads of the etcd process",
                &[(base.clone(), p.threads as f64)],
            )?;
        }
        if let Some(n) = s.etcd_client_connections {
            e.gauge(
                "etcd_agent_etcd_client_connections",
                "Established TCP connections to the etcd client port",
                &[(base, n as f64)],
            )?;
        }
        Ok(())
    }
}

/// Renders the registry in the Prometheus text format.
pub fn render(r: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, r);
    out
}
