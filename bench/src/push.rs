//! Pushing a run's results to a Pushgateway: `PUT /metrics/job/<job>{/<label>/<value>}`
//! replaces the whole group, so a later run with the same job and labels replaces this
//! one. Label values are base64url-encoded in the path (the Pushgateway's `@base64`
//! form), so any value is safe.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::params::Workload;
use crate::run::Report;

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
struct QuantileLabel {
    quantile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    workload: String,
    conns: String,
    clients: String,
    key_size: String,
    val_size: String,
    key_space: String,
    rate: String,
    consistency: String,
    read_ratio: String,
}

type FGauge = Gauge<f64, AtomicU64>;

/// Histogram buckets: finer below 1 ms, then etcd's 1 ms doubling to about 8 s.
fn buckets() -> Vec<f64> {
    let mut b = vec![0.0001, 0.00025, 0.0005];
    b.extend((0..14).map(|i| 0.001 * f64::from(1u32 << i)));
    b
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
    let q: Family<QuantileLabel, FGauge> = Family::default();
    for (p, v) in &r.latency.percentiles {
        q.get_or_create(&QuantileLabel {
            quantile: format!("{}", p / 100.0),
        })
        .set(*v);
    }
    reg.register(
        "etcd_bench_latency_seconds",
        "Request latency at quantiles",
        q,
    );
    let h = Histogram::new(buckets());
    for v in r.hist.iter_recorded() {
        let secs = v.value_iterated_to() as f64 / 1e9;
        for _ in 0..v.count_at_value() {
            h.observe(secs);
        }
    }
    reg.register("etcd_bench_request_duration_seconds", "Request latency", h);
    let errs: Family<KindLabel, Counter> = Family::default();
    for (kind, n) in &r.errors {
        errs.get_or_create(&KindLabel { kind: kind.clone() })
            .inc_by(*n);
    }
    reg.register("etcd_bench_errors", "Failed requests by kind", errs);
    let p = &r.params;
    let (consistency, read_ratio) = match &p.workload {
        Workload::Write { .. } => ("", String::new()),
        Workload::Read { consistency, .. } => (consistency_str(*consistency), String::new()),
        Workload::Mixed {
            read_ratio,
            consistency,
        } => (consistency_str(*consistency), read_ratio.to_string()),
    };
    let info: Family<InfoLabels, Gauge> = Family::default();
    info.get_or_create(&InfoLabels {
        workload: p.workload.name().into(),
        conns: p.conns.to_string(),
        clients: p.clients.to_string(),
        key_size: p.key_size.to_string(),
        val_size: p.val_size.to_string(),
        key_space: p.key_space.to_string(),
        rate: p.rate.map(|r| r.to_string()).unwrap_or_else(|| "0".into()),
        consistency: consistency.into(),
        read_ratio,
    })
    .set(1);
    reg.register(
        "etcd_bench_run_info",
        "Parameters of the run, always 1",
        info,
    );
    let mut out = String::new();
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &reg);
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

/// The group URL for `job` and `labels`.
pub fn group_url(base: &str, job: &str, labels: &[(String, String)]) -> String {
    let mut url = format!(
        "{}/metrics/job@base64/{}",
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
    let url = group_url(base, job, labels);
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
                &[("branch".into(), "feat/x".into())]
            ),
            "http://pg:9091/metrics/job@base64/Y2k=/branch@base64/ZmVhdC94"
        );
    }
}
