//! The load: `conns` connections, one endpoint each (spread over the endpoints), shared
//! by `clients` tasks that issue requests until `--total` is reached or `--duration` has
//! passed. Each client records its latencies in its own HDR histograms (merged at the end);
//! requests scheduled (or, without a rate, sent) during the warm-up are left out.
//!
//! Latency without coordinated omission: with `--rate`, request `n` is due at
//! `start + n / rate` and its latency is timed from then, not from when a client got to
//! send it. A cluster that stalls makes the requests behind the stall late, and they count
//! as slow, as a user sending at that rate would see them; the service time (from the
//! actual send) is kept beside it. With `--duration`, requests due before the end are
//! still sent late, but none after the end plus `--command-timeout`: those left are
//! counted as errors, never silently dropped.
//!
//! The watch workload: `watchers` watches of the key prefix over `streams` gRPC watch
//! streams are created (and confirmed) before the first put; every put carries its due
//! and send times in its value, so a watcher times each event from them without sharing
//! state with the clients. After the last put, the watchers are waited for until every
//! successful put has reached every watcher or `--command-timeout` has passed; events
//! that never came are errors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::etcd::EtcdConfig;
use etcd_client::{Client, EventType, GetOptions, Txn, TxnOp, WatchOptions, WatchResponseStream};
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
    #[error("creating the watchers failed: {0}")]
    Watch(String),
    #[error("{0}")]
    Internal(String),
}

/// Requests of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OpCounts {
    pub ok: u64,
    pub errors: u64,
}

impl OpCounts {
    fn add(&mut self, o: OpCounts) {
        self.ok = self.ok.saturating_add(o.ok);
        self.errors = self.errors.saturating_add(o.errors);
    }
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
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
}

/// What `latency` is timed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimedFrom {
    /// The actual send (no `--rate`).
    Send,
    /// The send the rate schedule asked for.
    Schedule,
}

/// One bar of the response-time histogram: requests up to `upto` seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bar {
    pub upto: f64,
    pub count: u64,
}

/// The watch workload's events (after the warm-up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WatchCounts {
    pub watchers: u32,
    pub streams: u32,
    /// Successful puts times watchers.
    pub expected_events: u64,
    pub received_events: u64,
    pub missing_events: u64,
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
    pub latency_from: TimedFrom,
    pub latency: Latency,
    /// With `--rate`: latency from the actual send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_time: Option<Latency>,
    pub histogram: Vec<Bar>,
    pub errors: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<WatchCounts>,
    /// Latencies in nanoseconds (for the Pushgateway histogram).
    #[serde(skip)]
    pub hist: Histogram<u64>,
    /// Service times in nanoseconds, with `--rate`.
    #[serde(skip)]
    pub service_hist: Option<Histogram<u64>>,
}

impl Report {
    pub fn ok(&self) -> u64 {
        self.reads.ok + self.writes.ok
    }

    pub fn error_count(&self) -> u64 {
        self.reads
            .errors
            .saturating_add(self.writes.errors)
            .saturating_add(self.watch.map_or(0, |w| w.missing_events))
    }

    pub fn p99(&self) -> f64 {
        self.hist.value_at_quantile(0.99) as f64 / 1e9
    }
}

pub const PERCENTS: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];

const LOWEST_NS: u64 = 1_000;
const HIGHEST_NS: u64 = 60_000_000_000;

/// A latency histogram: 1 µs resolution, 3 significant digits, sized for 60 s and growing
/// past it. Timed from the schedule, a client that falls behind sees latencies grow for
/// as long as the run lasts; a fixed top would cap them exactly when they matter.
fn new_hist() -> Histogram<u64> {
    // Constant bounds that are valid.
    let mut h =
        Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, 3).expect("valid histogram bounds");
    h.auto(true);
    h
}

fn record(h: &mut Histogram<u64>, ns: u64) {
    let ns = ns.max(LOWEST_NS);
    // `saturating_record` would clamp before it grows; `record` grows, and fails only
    // where the histogram cannot grow further.
    if h.record(ns).is_err() {
        h.saturating_record(ns);
    }
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

/// Errors of requests due before the end of `--duration` that could not be sent in time.
const UNSENT: &str = "not sent: behind the --rate schedule at the end of --duration";
/// Errors of watch events that never arrived.
const MISSING: &str = "watch events missing";

/// Figures one task gathers.
struct Stats {
    hist: Histogram<u64>,
    service: Option<Histogram<u64>>,
    reads: OpCounts,
    writes: OpCounts,
    errors: BTreeMap<String, u64>,
    last_end: Instant,
}

impl Stats {
    fn new(rate: bool, start: Instant) -> Self {
        Stats {
            hist: new_hist(),
            service: rate.then(new_hist),
            reads: OpCounts::default(),
            writes: OpCounts::default(),
            errors: BTreeMap::new(),
            last_end: start,
        }
    }

    fn merge(&mut self, o: Stats) -> Result<(), RunError> {
        let err =
            |e: hdrhistogram::AdditionError| RunError::Internal(format!("merging histograms: {e}"));
        self.hist.add(&o.hist).map_err(err)?;
        if let (Some(a), Some(b)) = (self.service.as_mut(), o.service.as_ref()) {
            a.add(b).map_err(err)?;
        }
        // Saturating: a rate past any cluster (from a `Params` built without `from_args`)
        // leaves about u64::MAX requests unsent, in one client's count.
        self.reads.add(o.reads);
        self.writes.add(o.writes);
        for (k, v) in o.errors {
            let n = self.errors.entry(k).or_default();
            *n = n.saturating_add(v);
        }
        self.last_end = self.last_end.max(o.last_end);
        Ok(())
    }

    /// A latency: `due` is the scheduled send (with a rate), `sent` the actual one.
    fn record(&mut self, due: Option<Instant>, sent: Instant, end: Instant) {
        let ns = |from: Instant| end.saturating_duration_since(from).as_nanos() as u64;
        record(&mut self.hist, ns(due.unwrap_or(sent)));
        if let Some(s) = self.service.as_mut() {
            record(s, ns(sent));
        }
    }
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
        let wait = etcd.dial_timeout.saturating_add(etcd.command_timeout);
        match tokio::time::timeout(wait, c.status()).await {
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

/// The start of a watch put's value: the rest is its due and send times.
const MAGIC: &[u8; 4] = b"emb1";

/// A watch put's value: `MAGIC`, due and send times (ns since the start, little endian),
/// padded to `val_size`.
fn watch_value(due_ns: u64, sent_ns: u64, val_size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(val_size.max(20));
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&due_ns.to_le_bytes());
    v.extend_from_slice(&sent_ns.to_le_bytes());
    v.resize(val_size.max(20), b'x');
    v
}

/// The due and send times a watch put's value carries, `None` when it is not one.
fn watch_times(v: &[u8]) -> Option<(u64, u64)> {
    let rest = v.strip_prefix(MAGIC.as_slice())?;
    let due = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    let sent = u64::from_le_bytes(rest.get(8..16)?.try_into().ok()?);
    Some((due, sent))
}

/// What a watch stream's task hands back.
struct WatchOut {
    stats: Stats,
    /// Events of post-warm-up puts.
    measured: u64,
}

/// Opens `streams` watch streams with `watchers` watches between them, each created and
/// confirmed by etcd before this returns.
async fn open_watchers(
    params: &Params,
    conns: &[Client],
    watchers: u32,
    streams: u32,
    timeout: Duration,
) -> Result<Vec<(etcd_client::WatchRequestSender, WatchResponseStream)>, RunError> {
    let mut out = Vec::with_capacity(streams as usize);
    for s in 0..streams {
        let n = watchers / streams + u32::from(s < watchers % streams);
        let mut c = conns[s as usize % conns.len()].clone();
        let opts = || Some(WatchOptions::new().with_prefix());
        let create = async {
            let ws = c.watch(params.prefix.as_str(), opts()).await?;
            let (mut tx, mut rx) = ws.split();
            for _ in 1..n {
                tx.watch(params.prefix.as_str(), opts()).await?;
            }
            let mut created = 0;
            while created < n {
                match rx.message().await? {
                    Some(m) if m.canceled() => {
                        return Err(etcd_client::Error::WatchError(format!(
                            "canceled: {}",
                            m.cancel_reason()
                        )))
                    }
                    Some(m) if m.created() => created += 1,
                    Some(_) => {}
                    None => return Err(etcd_client::Error::WatchError("stream closed".into())),
                }
            }
            Ok((tx, rx))
        };
        match tokio::time::timeout(timeout, create).await {
            Ok(Ok(pair)) => out.push(pair),
            Ok(Err(e)) => return Err(RunError::Watch(error_kind(&e))),
            Err(_) => return Err(RunError::Watch("timed out".into())),
        }
    }
    Ok(out)
}

/// Receives a watch stream's events until `stop` turns true, timing each from the due
/// and send times its put carries.
async fn watch_task(
    mut rx: WatchResponseStream,
    tx: etcd_client::WatchRequestSender,
    mut stop: tokio::sync::watch::Receiver<bool>,
    received: Arc<AtomicU64>,
    start: Instant,
    warmup: Duration,
    rate: bool,
) -> WatchOut {
    // Dropping the sender would close the request side of the stream.
    let _tx = tx;
    let mut out = WatchOut {
        stats: Stats::new(rate, start),
        measured: 0,
    };
    let warmup_ns = warmup.as_nanos() as u64;
    loop {
        let msg = tokio::select! {
            m = rx.message() => m,
            _ = stop.wait_for(|s| *s) => break,
        };
        let now = start.elapsed().as_nanos() as u64;
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => {
                *out.stats
                    .errors
                    .entry("watch stream closed".into())
                    .or_default() += 1;
                break;
            }
            Err(e) => {
                *out.stats
                    .errors
                    .entry(format!("watch: {}", error_kind(&e)))
                    .or_default() += 1;
                break;
            }
        };
        if resp.canceled() {
            *out.stats
                .errors
                .entry(format!("watch canceled: {}", resp.cancel_reason()))
                .or_default() += 1;
            break;
        }
        let mut ours = 0;
        for ev in resp.events() {
            if ev.event_type() != EventType::Put {
                continue;
            }
            let Some((due, sent)) = ev.kv().and_then(|kv| watch_times(kv.value())) else {
                continue;
            };
            ours += 1;
            if due < warmup_ns {
                continue;
            }
            out.measured += 1;
            record(&mut out.stats.hist, now.saturating_sub(due));
            if let Some(s) = out.stats.service.as_mut() {
                record(s, now.saturating_sub(sent));
            }
        }
        received.fetch_add(ours, Ordering::Relaxed);
    }
    out
}

/// When request `n` is due at `rate` requests/s from `start`; `None` when that is past
/// what the clock can hold (a rate of one request in a thousand years, say).
fn due_at(start: Instant, n: u64, rate: f64) -> Option<Instant> {
    Duration::try_from_secs_f64(n as f64 / rate)
        .ok()
        .and_then(|d| start.checked_add(d))
}

/// How many requests at `rate` are due before `start + d`, by the same [`due_at`] that
/// schedules them: `ceil(d * rate)` alone is one too many when the product rounds up
/// (10 s at 0.3/s is 3.0000000000000004).
fn due_before(start: Instant, d: Duration, rate: f64) -> u64 {
    let before_end =
        |n: u64| due_at(start, n, rate).is_some_and(|t| t.saturating_duration_since(start) < d);
    let mut n = (d.as_secs_f64() * rate).ceil() as u64;
    while n > 0 && !before_end(n - 1) {
        n -= 1;
    }
    while n < u64::MAX && before_end(n) {
        n += 1;
    }
    n
}

/// The progress bar on stderr: done/total (or elapsed/duration), rate and ETA.
fn progress_line(stop: Stop, done: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = done as f64 / secs;
    let (frac, eta, count) = match stop {
        Stop::Total(t) => {
            let frac = (done as f64 / t.max(1) as f64).min(1.0);
            let eta = if rate > 0.0 {
                t.saturating_sub(done) as f64 / rate
            } else {
                f64::INFINITY
            };
            (frac, eta, format!("{done}/{t}"))
        }
        Stop::Duration(d) => {
            let frac = (secs / d.as_secs_f64()).min(1.0);
            (frac, (d.as_secs_f64() - secs).max(0.0), format!("{done}"))
        }
    };
    const WIDTH: usize = 30;
    let filled = ((frac * WIDTH as f64) as usize).min(WIDTH);
    let eta = if eta.is_finite() {
        format!("{}s", eta.ceil() as u64)
    } else {
        "?".into()
    };
    format!(
        "\r[{}{}] {:>3.0}% {count} requests  {rate:.0} req/s  ETA {eta}\x1b[K",
        "#".repeat(filled),
        " ".repeat(WIDTH - filled),
        frac * 100.0
    )
}

/// What the clients of one run share.
struct Shared {
    params: Params,
    start: Instant,
    /// Requests taken by a client so far: the next one's index.
    issued: AtomicU64,
    /// Requests finished, warm-up included (for the progress bar).
    done: AtomicU64,
    /// Successful puts of the watch workload, warm-up included (every one makes events).
    puts_ok: AtomicU64,
    /// The value of every put but the watch workload's.
    value: Vec<u8>,
    /// With `--duration`: the latest a late request may still be sent.
    send_limit: Option<Instant>,
    /// With `--rate` and `--duration`: the requests due before the end.
    due_total: Option<u64>,
}

/// What a client does next.
enum Next {
    /// Send request `n` (due at `due` with a rate).
    Send { n: u64, due: Option<Instant> },
    /// The run is over.
    Stop,
    /// The send limit has passed: `unsent` requests were due and will not be sent.
    Unsent(u64),
}

impl Shared {
    fn new(params: &Params, start: Instant, command_timeout: Duration) -> Self {
        let due_total = match (params.stop, params.rate) {
            (Stop::Duration(d), Some(r)) => Some(due_before(start, d, r)),
            _ => None,
        };
        let send_limit = match params.stop {
            Stop::Duration(d) => start.checked_add(d.saturating_add(command_timeout)),
            Stop::Total(_) => None,
        };
        Shared {
            params: params.clone(),
            start,
            issued: AtomicU64::new(0),
            done: AtomicU64::new(0),
            puts_ok: AtomicU64::new(0),
            value: vec![b'x'; params.val_size],
            send_limit,
            due_total,
        }
    }

    /// Takes the next request and, with a rate, waits until it is due.
    async fn next(&self) -> Next {
        let p = &self.params;
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        if let Stop::Total(t) = p.stop {
            if n >= t {
                return Next::Stop;
            }
        }
        let due = match p.rate.map(|rate| due_at(self.start, n, rate)) {
            None => None,
            Some(Some(due)) => Some(due),
            // Due past any time the clock can hold: never, for this run.
            Some(None) => return Next::Stop,
        };
        if let (Some(due), Stop::Duration(d)) = (due, p.stop) {
            if due.saturating_duration_since(self.start) >= d {
                return Next::Stop;
            }
        }
        if let Some(due) = due {
            tokio::time::sleep_until(due.into()).await;
        }
        if let Stop::Duration(d) = p.stop {
            if due.is_none() && self.start.elapsed() >= d {
                return Next::Stop;
            }
            if self.send_limit.is_some_and(|l| Instant::now() >= l) {
                // This one and every request due after it that no client took yet.
                let due_total = self.due_total.unwrap_or(0);
                let taken = self.issued.fetch_max(due_total, Ordering::Relaxed);
                return Next::Unsent(1 + due_total.saturating_sub(taken));
            }
        }
        Next::Send { n, due }
    }
}

/// `k` distinct indices below `n` into `out`, in `k` draws (Floyd's sampling).
fn pick_distinct(out: &mut Vec<u64>, k: u64, n: u64) {
    out.clear();
    for j in n.saturating_sub(k)..n {
        let t = fastrand::u64(0..=j);
        out.push(if out.contains(&t) { j } else { t });
    }
}

/// Sends request `n` of the workload (a read when `read`): when it was sent, and how it
/// went. Keys and transactions are made before the clock starts.
async fn send(
    c: &mut Client,
    sh: &Shared,
    n: u64,
    due: Option<Instant>,
    read: bool,
    picked: &mut Vec<u64>,
) -> (Instant, Result<(), etcd_client::Error>) {
    let p = &sh.params;
    let key = || match &p.workload {
        Workload::Write {
            sequential_keys: true,
        } => p.key(n % p.key_space),
        _ => p.key(fastrand::u64(0..p.key_space)),
    };
    match &p.workload {
        Workload::Read { consistency, .. } | Workload::Mixed { consistency, .. } if read => {
            let opts = (*consistency == Consistency::Serializable)
                .then(|| GetOptions::new().with_serializable());
            let key = key();
            let t0 = Instant::now();
            (t0, c.get(key, opts).await.map(|_| ()))
        }
        Workload::Txn { ops_per_txn } => {
            pick_distinct(picked, u64::from(*ops_per_txn), p.key_space);
            let ops: Vec<TxnOp> = picked
                .iter()
                .map(|k| TxnOp::put(p.key(*k), sh.value.as_slice(), None))
                .collect();
            let t0 = Instant::now();
            (t0, c.txn(Txn::new().and_then(ops)).await.map(|_| ()))
        }
        Workload::Watch { .. } => {
            let key = key();
            let t0 = Instant::now();
            let ns = |t: Instant| t.duration_since(sh.start).as_nanos() as u64;
            let v = watch_value(ns(due.unwrap_or(t0)), ns(t0), p.val_size);
            let r = c.put(key, v, None).await.map(|_| ());
            if r.is_ok() {
                sh.puts_ok.fetch_add(1, Ordering::Relaxed);
            }
            (t0, r)
        }
        _ => {
            let key = key();
            let t0 = Instant::now();
            (t0, c.put(key, sh.value.as_slice(), None).await.map(|_| ()))
        }
    }
}

/// One client: sends requests until the run is over and records what it saw.
async fn client(mut c: Client, sh: Arc<Shared>) -> Stats {
    let p = &sh.params;
    let mut st = Stats::new(p.rate.is_some(), sh.start);
    let mut picked = Vec::new();
    loop {
        let (n, due) = match sh.next().await {
            Next::Send { n, due } => (n, due),
            Next::Stop => break,
            Next::Unsent(unsent) => {
                st.errors.insert(UNSENT.into(), unsent);
                let unsent = OpCounts {
                    ok: 0,
                    errors: unsent,
                };
                match p.workload {
                    Workload::Read { .. } => st.reads.add(unsent),
                    _ => st.writes.add(unsent),
                }
                break;
            }
        };
        let read = match &p.workload {
            Workload::Read { .. } => true,
            Workload::Mixed { read_ratio, .. } => fastrand::f64() < *read_ratio,
            _ => false,
        };
        let (t0, res) = send(&mut c, &sh, n, due, read, &mut picked).await;
        let end = Instant::now();
        sh.done.fetch_add(1, Ordering::Relaxed);
        if due.unwrap_or(t0).duration_since(sh.start) < p.warmup {
            continue;
        }
        st.last_end = st.last_end.max(end);
        let counts = if read { &mut st.reads } else { &mut st.writes };
        match res {
            Ok(()) => {
                counts.ok += 1;
                // Watch latencies are the watchers' to record.
                if !matches!(p.workload, Workload::Watch { .. }) {
                    st.record(due, t0, end);
                }
            }
            Err(e) => {
                counts.errors += 1;
                *st.errors.entry(error_kind(&e)).or_default() += 1;
            }
        }
    }
    st
}

/// The watch workload's streams, each drained by a [`watch_task`].
struct Watchers {
    tasks: Vec<tokio::task::JoinHandle<WatchOut>>,
    stop: tokio::sync::watch::Sender<bool>,
    /// Events of the run's puts, warm-up included.
    received: Arc<AtomicU64>,
}

impl Watchers {
    fn spawn(
        streams: Vec<(etcd_client::WatchRequestSender, WatchResponseStream)>,
        start: Instant,
        warmup: Duration,
        rated: bool,
    ) -> Self {
        let received = Arc::new(AtomicU64::new(0));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let tasks = streams
            .into_iter()
            .map(|(tx, rx)| {
                tokio::spawn(watch_task(
                    rx,
                    tx,
                    stop_rx.clone(),
                    received.clone(),
                    start,
                    warmup,
                    rated,
                ))
            })
            .collect();
        Watchers {
            tasks,
            stop,
            received,
        }
    }

    /// Waits until each of the `puts_ok` successful puts (warm-up included) has reached
    /// each of the `watchers`, or `wait` has passed; then stops the watchers and puts their
    /// figures in `all`: the events' latencies replace the clients' (empty) ones, and the
    /// events that never came are errors.
    async fn finish(
        self,
        all: &mut Stats,
        puts_ok: u64,
        (watchers, streams): (u32, u32),
        wait: Duration,
    ) -> Result<WatchCounts, RunError> {
        let want = puts_ok.saturating_mul(u64::from(watchers));
        let waited = Instant::now();
        while self.received.load(Ordering::Relaxed) < want && waited.elapsed() < wait {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = self.stop.send(true);
        let mut measured = 0;
        let mut events = Stats::new(all.service.is_some(), waited);
        for t in self.tasks {
            let out = t
                .await
                .map_err(|e| RunError::Internal(format!("a watcher failed: {e}")))?;
            measured += out.measured;
            events.merge(out.stats)?;
        }
        let expected = all.writes.ok.saturating_mul(u64::from(watchers));
        let missing = expected.saturating_sub(measured);
        all.hist = events.hist;
        all.service = events.service;
        for (k, v) in events.errors {
            *all.errors.entry(k).or_default() += v;
        }
        if missing > 0 {
            *all.errors.entry(MISSING.into()).or_default() += missing;
        }
        Ok(WatchCounts {
            watchers,
            streams,
            expected_events: expected,
            received_events: measured,
            missing_events: missing,
        })
    }
}

/// The progress bar, redrawn on stderr every 200 ms until cleared (or dropped).
struct Progress(Option<tokio::task::JoinHandle<()>>);

impl Progress {
    fn start(sh: Arc<Shared>) -> Self {
        Progress(Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let done = sh.done.load(Ordering::Relaxed);
                draw(&progress_line(sh.params.stop, done, sh.start.elapsed()));
            }
        })))
    }

    async fn clear(mut self) {
        if let Some(t) = self.0.take() {
            // `abort` only asks: awaiting the task makes sure no bar is drawn after the clear.
            t.abort();
            let _ = t.await;
            draw("\r\x1b[K");
        }
    }
}

/// Writes to stderr; a terminal gone is no reason to stop the run (`eprint!` would panic).
fn draw(s: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(s.as_bytes());
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}

/// Runs the benchmark described by `params` against the cluster of `etcd`; with
/// `progress`, a progress bar is drawn on stderr (a terminal) and cleared at the end.
pub async fn run(params: &Params, etcd: &EtcdConfig, progress: bool) -> Result<Report, RunError> {
    let conns = connect_all(params, etcd).await?;
    if let Workload::Read { fill: true, .. } = params.workload {
        fill(params, &conns).await?;
    }
    let watch_streams = match params.workload {
        Workload::Watch { watchers, streams } => {
            let wait = etcd.dial_timeout.saturating_add(etcd.command_timeout);
            Some(open_watchers(params, &conns, watchers, streams, wait).await?)
        }
        _ => None,
    };
    let started_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let start = Instant::now();
    let rated = params.rate.is_some();
    let watchers = watch_streams.map(|s| Watchers::spawn(s, start, params.warmup, rated));
    let sh = Arc::new(Shared::new(params, start, etcd.command_timeout));
    let progress = progress.then(|| Progress::start(sh.clone()));
    let tasks: Vec<_> = (0..params.clients)
        .map(|i| tokio::spawn(client(conns[i % conns.len()].clone(), sh.clone())))
        .collect();
    let mut all = Stats::new(rated, start);
    for t in tasks {
        let st = t
            .await
            .map_err(|e| RunError::Internal(format!("a client failed: {e}")))?;
        all.merge(st)?;
    }
    let watch = match (watchers, &params.workload) {
        (Some(w), Workload::Watch { watchers, streams }) => {
            let puts_ok = sh.puts_ok.load(Ordering::Relaxed);
            let counts = (*watchers, *streams);
            Some(
                w.finish(&mut all, puts_ok, counts, etcd.command_timeout)
                    .await?,
            )
        }
        _ => None,
    };
    if let Some(p) = progress {
        p.clear().await;
    }
    let window = all
        .last_end
        .saturating_duration_since(start)
        .saturating_sub(params.warmup)
        .as_secs_f64()
        .max(1e-9);
    let mut r = summarize(
        params.clone(),
        started_at,
        window,
        all.hist,
        all.reads,
        all.writes,
        all.errors,
    );
    r.service_time = all.service.as_ref().map(latency);
    r.service_hist = all.service;
    r.watch = watch;
    Ok(r)
}

/// The latency summary of `hist` (nanoseconds), zeros when it is empty.
pub fn latency(hist: &Histogram<u64>) -> Latency {
    let empty = hist.is_empty();
    let at = |p: f64| {
        if empty {
            0.0
        } else {
            hist.value_at_percentile(p) as f64 / 1e9
        }
    };
    Latency {
        fastest: if empty { 0.0 } else { hist.min() as f64 / 1e9 },
        slowest: if empty { 0.0 } else { hist.max() as f64 / 1e9 },
        average: if empty { 0.0 } else { hist.mean() / 1e9 },
        stddev: if empty { 0.0 } else { hist.stdev() / 1e9 },
        percentiles: PERCENTS.iter().map(|p| (*p, at(*p))).collect(),
        p50: at(50.0),
        p90: at(90.0),
        p95: at(95.0),
        p99: at(99.0),
        p999: at(99.9),
    }
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
    let empty = hist.is_empty();
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
            // The bucket's lowest value, as `lo` is: the fastest bucket goes to the first bar.
            let value = hist.lowest_equivalent(v.value_iterated_to()) as f64;
            let i = (((value - lo) / step).ceil().max(0.0) as usize).min(10);
            bars[i].count += v.count_at_value();
        }
        histogram = bars;
    }
    let ok = reads.ok + writes.ok;
    Report {
        latency_from: if params.rate.is_some() {
            TimedFrom::Schedule
        } else {
            TimedFrom::Send
        },
        params,
        started_at,
        total_seconds: window,
        requests: ok
            .saturating_add(reads.errors)
            .saturating_add(writes.errors),
        reads,
        writes,
        throughput: ok as f64 / window,
        latency: latency(&hist),
        service_time: None,
        histogram,
        errors,
        watch: None,
        hist,
        service_hist: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client five minutes behind its schedule reports five minutes, not the 60 s the
    /// histogram was sized for, and merging keeps it.
    #[test]
    fn latencies_past_a_minute_are_kept() {
        let start = Instant::now();
        let mut st = Stats::new(true, start);
        let due = start;
        let sent = start + Duration::from_secs(299);
        st.record(Some(due), sent, start + Duration::from_secs(300));
        let mut all = Stats::new(true, start);
        all.merge(st).expect("merge");
        let l = latency(&all.hist);
        assert!((l.slowest - 300.0).abs() < 0.5, "{l:?}");
        assert!((l.p99 - 300.0).abs() < 0.5, "{l:?}");
        let s = all.service.as_ref().map(latency).expect("service time");
        assert!((s.slowest - 1.0).abs() < 0.01, "{s:?}");
    }

    /// Like etcd's tool: the first bar holds the fastest requests, the last the slowest,
    /// each request in the first bar at or above it.
    #[test]
    fn histogram_bars_run_from_the_fastest_to_the_slowest() {
        let mut h = new_hist();
        for (ms, n) in [(1, 10), (5, 20), (11, 1)] {
            for _ in 0..n {
                record(&mut h, ms * 1_000_000);
            }
        }
        let params = Params {
            workload: Workload::Write {
                sequential_keys: false,
            },
            conns: 1,
            clients: 1,
            stop: Stop::Total(31),
            rate: None,
            key_size: 8,
            val_size: 8,
            key_space: 1000,
            prefix: String::new(),
            warmup: Duration::ZERO,
        };
        let r = summarize(
            params,
            0.0,
            1.0,
            h,
            OpCounts::default(),
            OpCounts { ok: 31, errors: 0 },
            BTreeMap::new(),
        );
        let counts: Vec<u64> = r.histogram.iter().map(|b| b.count).collect();
        assert_eq!(
            counts,
            [10, 0, 0, 0, 20, 0, 0, 0, 0, 0, 1],
            "{:?}",
            r.histogram
        );
    }

    #[test]
    fn a_schedule_past_the_clock_is_never_due() {
        let start = Instant::now();
        assert_eq!(
            due_at(start, 3, 2.0),
            Some(start + Duration::from_millis(1500))
        );
        assert_eq!(due_at(start, 1, 1e-300), None);
        assert_eq!(due_at(start, u64::MAX, 1e-9), None);
    }

    #[test]
    fn the_requests_due_before_the_end_are_counted_as_scheduled() {
        let start = Instant::now();
        let secs = Duration::from_secs;
        assert_eq!(due_before(start, secs(2), 100.0), 200);
        assert_eq!(due_before(start, secs(10), 0.3), 4 - 1);
        assert_eq!(due_before(start, Duration::from_millis(2500), 2.0), 5);
        assert_eq!(due_before(start, secs(1), 1e-6), 1);
        assert_eq!(due_before(start, secs(1), 1e300), u64::MAX);
    }

    /// One client left about u64::MAX requests unsent (a rate no cluster reaches), another
    /// a few: the sum saturates instead of overflowing.
    #[test]
    fn counts_saturate_when_merged() {
        let start = Instant::now();
        let mut a = Stats::new(true, start);
        let mut b = Stats::new(true, start);
        for (st, n) in [(&mut a, u64::MAX - 1), (&mut b, 3)] {
            st.writes.errors = n;
            st.errors.insert(UNSENT.into(), n);
        }
        a.merge(b).expect("merge");
        assert_eq!(a.writes.errors, u64::MAX);
        assert_eq!(a.errors[UNSENT], u64::MAX);
    }

    #[test]
    fn txn_keys_are_distinct() {
        let mut picked = Vec::new();
        for (k, n) in [(5, 300), (4, 4), (1, 1), (128, 1000)] {
            for _ in 0..200 {
                pick_distinct(&mut picked, k, n);
                let mut sorted = picked.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted.len() as u64, k, "{picked:?}");
                assert!(picked.iter().all(|i| *i < n), "{picked:?}");
            }
        }
    }

    #[test]
    fn watch_values_carry_their_times() {
        let v = watch_value(7, 1 << 40, 8);
        assert_eq!(v.len(), 20);
        assert_eq!(watch_times(&v), Some((7, 1 << 40)));
        let v = watch_value(1, 2, 100);
        assert_eq!((v.len(), watch_times(&v)), (100, Some((1, 2))));
        assert_eq!(watch_times(b"emb1short"), None);
        assert_eq!(watch_times(b"xxxxxxxxxxxxxxxxxxxxxxxx"), None);
    }

    #[test]
    fn the_progress_line_has_rate_and_eta() {
        let l = progress_line(Stop::Total(1000), 250, Duration::from_secs(1));
        assert!(l.contains("25%") && l.contains("250/1000"), "{l}");
        assert!(l.contains("250 req/s") && l.contains("ETA 3s"), "{l}");
        let l = progress_line(
            Stop::Duration(Duration::from_secs(10)),
            40,
            Duration::from_secs(4),
        );
        assert!(
            l.contains("40%") && l.contains("10 req/s") && l.contains("ETA 6s"),
            "{l}"
        );
    }
}
