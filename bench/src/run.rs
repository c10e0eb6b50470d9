//! The load: `conns` connections, one endpoint each (spread over the endpoints), shared
//! by `clients` tasks that issue requests until `--total` is reached or `--duration` has
//! passed. With `--rate`, request `n` may start no earlier than `start + n / rate`, so the
//! run never goes faster than asked. Each client records its latencies in its own HDR
//! histogram (merged at the end); requests that start during the warm-up are left out.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::etcd::EtcdConfig;
use etcd_client::{Client, GetOptions};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::params::{Consistency, Params, Stop, Workload};

/// Why a run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot reach etcd at {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("filling the key space failed: {0}")]
    Fill(String),
    #[error("{0}")]
    Internal(String),
}

/// Requests of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OpCounts {
    pub ok: u64,
    pub errors: u64,
}

/// Latency summary, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub fastest: f64,
    pub slowest: f64,
    pub average: f64,
    pub stddev: f64,
    /// `(percent, seconds)`: 10, 25, 50, 75, 90, 95, 99, 99.9.
    pub percentiles: Vec<(f64, f64)>,
}

/// One bar of the response-time histogram: requests up to `upto` seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bar {
    pub upto: f64,
    pub count: u64,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub params: Params,
    /// Unix time the run started, in seconds.
    pub started_at: f64,
    /// The measured window (after the warm-up), in seconds.
    pub total_seconds: f64,
    pub requests: u64,
    pub reads: OpCounts,
    pub writes: OpCounts,
    /// Successful requests per second over the measured window.
    pub throughput: f64,
    pub latency: Latency,
    pub histogram: Vec<Bar>,
    pub errors: BTreeMap<String, u64>,
    /// Latencies in nanoseconds (for the Pushgateway histogram).
    #[serde(skip)]
    pub hist: Histogram<u64>,
}

impl Report {
    pub fn ok(&self) -> u64 {
        self.reads.ok + self.writes.ok
    }

    pub fn error_count(&self) -> u64 {
        self.reads.errors + self.writes.errors
    }

    pub fn p99(&self) -> f64 {
        self.hist.value_at_quantile(0.99) as f64 / 1e9
    }
}

const PERCENTS: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];

fn new_hist() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits: constant bounds that are valid.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// A short name for an error, for the error distribution.
pub fn error_kind(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let msg: String = s.message().chars().take(80).collect();
            format!("{:?}: {msg}", s.code())
        }
        other => {
            let s = other.to_string();
            s.split(':').next().unwrap_or("error").trim().to_owned()
        }
    }
}

struct ClientStats {
    hist: Histogram<u64>,
    reads: OpCounts,
    writes: OpCounts,
    errors: BTreeMap<String, u64>,
    last_end: Instant,
}

async fn connect_all(params: &Params, etcd: &EtcdConfig) -> Result<Vec<Client>, RunError> {
    let endpoints: Vec<String> = etcd
        .endpoints
        .iter()
        .map(common::etcd::endpoint_str)
        .collect();
    let mut conns = Vec::with_capacity(params.conns);
    for i in 0..params.conns {
        let ep = &endpoints[i % endpoints.len().max(1)];
        let mut c = etcd
            .connect_direct(ep)
            .await
            .map_err(|e| RunError::Connect {
                endpoint: ep.clone(),
                reason: common::etcd::error_chain(&e),
            })?;
        // A lazily connecting channel says nothing until asked: ask once.
        match tokio::time::timeout(etcd.dial_timeout + etcd.command_timeout, c.status()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(RunError::Connect {
                    endpoint: ep.clone(),
                    reason: error_kind(&e),
                })
            }
            Err(_) => {
                return Err(RunError::Connect {
                    endpoint: ep.clone(),
                    reason: "timed out".into(),
                })
            }
        }
        conns.push(c);
    }
    Ok(conns)
}

async fn fill(params: &Params, conns: &[Client]) -> Result<(), RunError> {
    let next = Arc::new(AtomicU64::new(0));
    let value = vec![b'v'; params.val_size];
    let mut tasks = Vec::new();
    for i in 0..params.clients.min(64) {
        let mut c = conns[i % conns.len()].clone();
        let next = next.clone();
        let value = value.clone();
        let p = params.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= p.key_space {
                    return Ok(());
                }
                c.put(p.key(k), value.clone(), None)
                    .await
                    .map_err(|e| error_kind(&e))?;
            }
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| RunError::Fill(e.to_string()))?
            .map_err(RunError::Fill)?;
    }
    Ok(())
}

/// Runs the benchmark described by `params` against the cluster of `etcd`.
pub async fn run(params: &Params, etcd: &EtcdConfig, progress: bool) -> Result<Report, RunError> {
    let conns = connect_all(params, etcd).await?;
    if let Workload::Read { fill: true, .. } = params.workload {
        fill(params, &conns).await?;
    }
    let started_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let start = Instant::now();
    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let value = Arc::new(vec![b'x'; params.val_size]);
    let progress_task = progress.then(|| {
        let done = done.clone();
        let stop = params.stop;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let n = done.load(Ordering::Relaxed);
                let line = match stop {
                    Stop::Total(t) => format!("\r{n}/{t} requests"),
                    Stop::Duration(d) => format!(
                        "\r{n} requests, {:.0}/{:.0} s",
                        start.elapsed().as_secs_f64().min(d.as_secs_f64()),
                        d.as_secs_f64()
                    ),
                };
                eprint!("{line}");
            }
        })
    });
    let mut tasks = Vec::with_capacity(params.clients);
    for i in 0..params.clients {
        let mut c = conns[i % conns.len()].clone();
        let p = params.clone();
        let issued = issued.clone();
        let done = done.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut st = ClientStats {
                hist: new_hist(),
                reads: OpCounts::default(),
                writes: OpCounts::default(),
                errors: BTreeMap::new(),
                last_end: start,
            };
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if let Stop::Total(t) = p.stop {
                    if n >= t {
                        break;
                    }
                }
                if let Some(rate) = p.rate {
                    let due = start + Duration::from_secs_f64(n as f64 / rate);
                    if let Stop::Duration(d) = p.stop {
                        if due >= start + d {
                            break;
                        }
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
                if let Stop::Duration(d) = p.stop {
                    if start.elapsed() >= d {
                        break;
                    }
                }
                let (read, consistency) = match &p.workload {
                    Workload::Write { .. } => (false, Consistency::Linearizable),
                    Workload::Read { consistency, .. } => (true, *consistency),
                    Workload::Mixed {
                        read_ratio,
                        consistency,
                    } => (fastrand::f64() < *read_ratio, *consistency),
                };
                let key_index = match &p.workload {
                    Workload::Write {
                        sequential_keys: true,
                    } => n % p.key_space,
                    _ => fastrand::u64(0..p.key_space),
                };
                let key = p.key(key_index);
                let t0 = Instant::now();
                let res = if read {
                    let opts = (consistency == Consistency::Serializable)
                        .then(|| GetOptions::new().with_serializable());
                    c.get(key, opts).await.map(|_| ())
                } else {
                    c.put(key, value.as_slice(), None).await.map(|_| ())
                };
                let end = Instant::now();
                done.fetch_add(1, Ordering::Relaxed);
                if t0.duration_since(start) < p.warmup {
                    continue;
                }
                st.last_end = st.last_end.max(end);
                let counts = if read { &mut st.reads } else { &mut st.writes };
                match res {
                    Ok(()) => {
                        counts.ok += 1;
                        let ns = (end - t0).as_nanos().clamp(1_000, 60_000_000_000) as u64;
                        st.hist.saturating_record(ns);
                    }
                    Err(e) => {
                        counts.errors += 1;
                        *st.errors.entry(error_kind(&e)).or_default() += 1;
                    }
                }
            }
            st
        }));
    }
    let mut hist = new_hist();
    let mut reads = OpCounts::default();
    let mut writes = OpCounts::default();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_end = start;
    for t in tasks {
        let st = t
            .await
            .map_err(|e| RunError::Internal(format!("a client failed: {e}")))?;
        hist.add(&st.hist)
            .map_err(|e| RunError::Internal(format!("merging histograms: {e}")))?;
        reads.ok += st.reads.ok;
        reads.errors += st.reads.errors;
        writes.ok += st.writes.ok;
        writes.errors += st.writes.errors;
        for (k, v) in st.errors {
            *errors.entry(k).or_default() += v;
        }
        last_end = last_end.max(st.last_end);
    }
    if let Some(t) = progress_task {
        t.abort();
        eprint!("\r\x1b[K");
    }
    let window = last_end
        .saturating_duration_since(start + params.warmup)
        .as_secs_f64()
        .max(1e-9);
    Ok(summarize(
        params.clone(),
        started_at,
        window,
        hist,
        reads,
        writes,
        errors,
    ))
}

/// Builds the report from the recorded figures.
pub fn summarize(
    params: Params,
    started_at: f64,
    window: f64,
    hist: Histogram<u64>,
    reads: OpCounts,
    writes: OpCounts,
    errors: BTreeMap<String, u64>,
) -> Report {
    let s = |ns: u64| ns as f64 / 1e9;
    let empty = hist.is_empty();
    let latency = Latency {
        fastest: if empty { 0.0 } else { s(hist.min()) },
        slowest: if empty { 0.0 } else { s(hist.max()) },
        average: if empty { 0.0 } else { hist.mean() / 1e9 },
        stddev: if empty { 0.0 } else { hist.stdev() / 1e9 },
        percentiles: PERCENTS
            .iter()
            .map(|p| {
                (
                    *p,
                    if empty {
                        0.0
                    } else {
                        s(hist.value_at_percentile(*p))
                    },
                )
            })
            .collect(),
    };
    // Ten bars evenly spaced between the fastest and the slowest, like etcd's tool.
    let mut histogram = Vec::new();
    if !empty {
        let (lo, hi) = (hist.min() as f64, hist.max() as f64);
        let step = ((hi - lo) / 10.0).max(1.0);
        let mut bars: Vec<Bar> = (0..=10)
            .map(|i| Bar {
                upto: (lo + step * f64::from(i)) / 1e9,
                count: 0,
            })
            .collect();
        for v in hist.iter_recorded() {
            let value = v.value_iterated_to() as f64;
            let i = (((value - lo) / step).ceil().max(0.0) as usize).min(10);
            bars[i].count += v.count_at_value();
        }
        histogram = bars;
    }
    let ok = reads.ok + writes.ok;
    Report {
        params,
        started_at,
        total_seconds: window,
        requests: ok + reads.errors + writes.errors,
        reads,
        writes,
        throughput: ok as f64 / window,
        latency,
        histogram,
        errors,
        hist,
    }
}
