//! Pushing a run's results to a Pushgateway: `PUT /metrics/job/<job>{/<label>/<value>}`
//! replaces the whole group, so a later run with the same job and labels replaces this
//! one. Label values are base64url-encoded in the path (the Pushgateway's `@base64`
//! form), so any value is safe. The workload is part of the group (`workload/<name>`
//! after the job), so the workloads of one job sit side by side and each run replaces
//! the previous one of its workload.
//!
//! The latency histogram is built from the HDR histogram's buckets (one pass over its
//! recorded buckets, never over the samples). The latency quantiles are a summary, the
//! type whose series carry a `quantile` label; prometheus-client has no summary, so those
//! lines are written here.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::params::Workload;
use crate::run::{Report, PERCENTS};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    conns: String,
    clients: String,
    key_size: String,
    val_size: String,
    key_space: String,
    rate: String,
    consistency: String,
    read_ratio: String,
    ops_per_txn: String,
    watchers: String,
    streams: String,
}

type FGauge = Gauge<f64, AtomicU64>;

/// Histogram buckets: finer below 1 ms, then etcd's 1 ms doubling to about 8 s.
fn buckets() -> Vec<f64> {
    let mut b = vec![0.0001, 0.00025, 0.0005];
    b.extend((0..14).map(|i| 0.001 * f64::from(1u32 << i)));
    b
}

/// A histogram whose buckets are given, not observed: `(upper bound, count in the bucket)`
/// with `+Inf` last.
#[derive(Debug)]
struct GivenHistogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for GivenHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// `hist` (nanoseconds) in the buckets `bounds` (seconds, ascending): each of its recorded
/// buckets, at its median value, goes to the first bound at or above it.
fn given_histogram(hist: &hdrhistogram::Histogram<u64>, bounds: &[f64]) -> GivenHistogram {
    let mut buckets: Vec<(f64, u64)> = bounds.iter().map(|b| (*b, 0)).collect();
    buckets.push((f64::INFINITY, 0));
    let mut sum = 0.0;
    for v in hist.iter_recorded() {
        let secs = hist.median_equivalent(v.value_iterated_to()) as f64 / 1e9;
        let n = v.count_at_value();
        sum += secs * n as f64;
        let i = bounds.partition_point(|b| *b < secs);
        buckets[i].1 += n;
    }
    GivenHistogram {
        sum,
        count: hist.len(),
        buckets,
    }
}

/// The `quantile` label of each of [`PERCENTS`], written out: `99.9 / 100.0` prints as
/// `0.9990000000000001`, which a query for `quantile="0.999"` does not match.
const QUANTILE_LABELS: [&str; PERCENTS.len()] =
    ["0.1", "0.25", "0.5", "0.75", "0.9", "0.95", "0.99", "0.999"];

/// A summary of `hist` (nanoseconds) in the text format: quantiles, sum and count.
fn summary(out: &mut String, name: &str, help: &str, hist: &hdrhistogram::Histogram<u64>) {
    let _ = writeln!(out, "# HELP {name} {help}.");
    let _ = writeln!(out, "# TYPE {name} summary");
    let empty = hist.is_empty();
    for (p, label) in PERCENTS.iter().zip(QUANTILE_LABELS) {
        let v = if empty {
            f64::NAN
        } else {
            hist.value_at_percentile(*p) as f64 / 1e9
        };
        let _ = writeln!(out, "{name}{{quantile=\"{label}\"}} {v}");
    }
    let sum = if empty {
        0.0
    } else {
        hist.mean() * hist.len() as f64 / 1e9
    };
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {}", hist.len());
}

/// The text body pushed for `r`.
pub fn body(r: &Report, thresholds_passed: bool) -> String {
    let mut reg = Registry::default();
    let ops: Family<OpLabels, Counter> = Family::default();
    for (op, c) in [("read", r.reads), ("write", r.writes)] {
        for (result, n) in [("ok", c.ok), ("error", c.errors)] {
            if c.ok + c.errors > 0 {
                ops.get_or_create(&OpLabels {
                    op: op.into(),
                    result: result.into(),
                })
                .inc_by(n);
            }
        }
    }
    reg.register(
        "etcd_bench_requests",
        "Requests by operation and result",
        ops,
    );
    let g = |v: f64| {
        let g = FGauge::default();
        g.set(v);
        g
    };
    reg.register(
        "etcd_bench_throughput_requests_per_second",
        "Successful requests per second",
        g(r.throughput),
    );
    reg.register(
        "etcd_bench_duration_seconds",
        "Measured duration of the run",
        g(r.total_seconds),
    );
    reg.register(
        "etcd_bench_thresholds_passed",
        "1 when every threshold given was met",
        g(f64::from(u8::from(thresholds_passed))),
    );
    reg.register(
        "etcd_bench_last_run_timestamp_seconds",
        "Unix time the run started",
        g(r.started_at),
    );
    reg.register(
        "etcd_bench_request_duration_seconds",
        "Request latency (from the scheduled send with --rate; watch: put to event)",
        given_histogram(&r.hist, &buckets()),
    );
    let errs: Family<KindLabel, Counter> = Family::default();
    for (kind, n) in &r.errors {
        errs.get_or_create(&KindLabel { kind: kind.clone() })
            .inc_by(*n);
    }
    reg.register("etcd_bench_errors", "Failed requests by kind", errs);
    let p = &r.params;
    let (consistency, read_ratio) = match &p.workload {
        Workload::Read { consistency, .. } => (consistency_str(*consistency), String::new()),
        Workload::Mixed {
            read_ratio,
            consistency,
        } => (consistency_str(*consistency), read_ratio.to_string()),
        _ => ("", String::new()),
    };
    let (ops_per_txn, watchers, streams) = match &p.workload {
        Workload::Txn { ops_per_txn } => (ops_per_txn.to_string(), String::new(), String::new()),
        Workload::Watch { watchers, streams } => {
            (String::new(), watchers.to_string(), streams.to_string())
        }
        _ => Default::default(),
    };
    let info: Family<InfoLabels, Gauge> = Family::default();
    info.get_or_create(&InfoLabels {
        conns: p.conns.to_string(),
        clients: p.clients.to_string(),
        key_size: p.key_size.to_string(),
        val_size: p.val_size.to_string(),
        key_space: p.key_space.to_string(),
        rate: p.rate.map(|r| r.to_string()).unwrap_or_else(|| "0".into()),
        consistency: consistency.into(),
        read_ratio,
        ops_per_txn,
        watchers,
        streams,
    })
    .set(1);
    reg.register(
        "etcd_bench_run_info",
        "Parameters of the run, always 1",
        info,
    );
    let mut out = String::new();
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &reg);
    summary(
        &mut out,
        "etcd_bench_latency_seconds",
        "Request latency at quantiles (from the scheduled send with --rate; watch: put to event)",
        &r.hist,
    );
    if let Some(h) = &r.service_hist {
        summary(
            &mut out,
            "etcd_bench_service_time_seconds",
            "Request latency from the actual send at quantiles (with --rate)",
            h,
        );
    }
    out
}

fn consistency_str(c: crate::params::Consistency) -> &'static str {
    match c {
        crate::params::Consistency::Linearizable => "l",
        crate::params::Consistency::Serializable => "s",
    }
}

fn b64url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE.encode(s)
}

/// The group URL for `job`, `workload` and `labels`.
pub fn group_url(base: &str, job: &str, workload: &str, labels: &[(String, String)]) -> String {
    let mut url = format!(
        "{}/metrics/job@base64/{}/workload/{workload}",
        base.trim_end_matches('/'),
        b64url(job)
    );
    for (k, v) in labels {
        if v.is_empty() {
            // The Pushgateway's way to say "empty value".
            url.push_str(&format!("/{k}@base64/="));
        } else {
            url.push_str(&format!("/{k}@base64/{}", b64url(v)));
        }
    }
    url
}

/// PUTs the results. The error is one line for the user.
pub async fn push(
    base: &str,
    job: &str,
    labels: &[(String, String)],
    r: &Report,
    thresholds_passed: bool,
) -> Result<(), String> {
    let url = group_url(base, job, r.params.workload.name(), labels);
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = http
        .put(&url)
        .header(
            "content-type",
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
        .body(body(r, thresholds_passed))
        .send()
        .await
        .map_err(|e| {
            format!(
                "push to {base} failed: {}",
                common::etcd::error_chain(&e.without_url())
            )
        })?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        return Err(format!(
            "push to {base} failed: HTTP {status}: {}",
            text.trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_like_the_pushgateway_wants() {
        assert_eq!(b64url("a/b"), "YS9i");
        assert_eq!(b64url("ci"), "Y2k=");
        assert_eq!(
            group_url(
                "http://pg:9091/",
                "ci",
                "txn",
                &[("branch".into(), "feat/x".into())]
            ),
            "http://pg:9091/metrics/job@base64/Y2k=/workload/txn/branch@base64/ZmVhdC94"
        );
    }

    #[test]
    fn summary_quantiles_are_the_labels_queries_use() {
        for (p, label) in PERCENTS.iter().zip(QUANTILE_LABELS) {
            let q: f64 = label.parse().expect("a number");
            assert!((q - p / 100.0).abs() < 1e-12, "{label} for {p}%");
        }
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)
            .expect("bounds");
        h.record_n(2_000_000, 1000).expect("record");
        let mut out = String::new();
        summary(&mut out, "x_seconds", "X", &h);
        let labels: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split("quantile=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(labels, QUANTILE_LABELS, "{out}");
    }

    #[test]
    fn the_histogram_comes_from_the_hdr_buckets() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)
            .expect("bounds");
        h.record_n(50_000, 1000).expect("record"); // 50 µs
        h.record_n(3_000_000, 10).expect("record"); // 3 ms
        h.record(20_000_000_000).expect("record"); // 20 s, past the last bound
        let g = given_histogram(&h, &buckets());
        assert_eq!(g.count, 1011);
        assert_eq!(g.buckets.len(), buckets().len() + 1);
        let at = |le: f64| g.buckets.iter().find(|(b, _)| *b == le).map(|(_, n)| *n);
        assert_eq!(at(0.0001), Some(1000));
        assert_eq!(at(0.004), Some(10));
        assert_eq!(at(f64::INFINITY), Some(1));
        assert_eq!(g.buckets.iter().map(|(_, n)| n).sum::<u64>(), 1011);
        assert!((g.sum - (0.05 + 0.03 + 20.0)).abs() < 0.05, "{}", g.sum);
    }
}
