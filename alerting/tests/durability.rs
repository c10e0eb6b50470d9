//! Durability of the real `etcd-monitor-relay` binary, run as a child process on
//! 127.0.0.1 with a temp config and a local stand-in webhook receiver:
//! - a data directory that fills up (a 3 MB tmpfs): nothing acknowledged is lost, `/health`
//!   answers 503 while the relay cannot write, and it recovers by itself once there is
//!   space again, delivering everything it acknowledged; the same with the relay killed
//!   (`kill -9`) while the disk is full and started again once there is space;
//! - a corrupt outbox record is quarantined and does not hold up the other deliveries;
//! - `kill -9` right after the 200, many times: every notification is still delivered
//!   (at least once; the duplicates are counted and printed).
//!
//! The full-disk tests mount a tmpfs, so they need root; `ETCD_MONITOR_TEST_NO_TMPFS=1`
//! skips them (and says so). `ETCD_MONITOR_KILL9_TRIALS` sets the rounds of the `kill -9`
//! test (default 10); scripts/bench-relay-kill9.sh runs it with 100.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use redb::{ReadableDatabase, ReadableTableMetadata};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_etcd-monitor-relay");

// ------------------------------------------------------------------ the stand-in receiver

/// One request the stand-in received: what it answered and, per alert of the Alertmanager
/// webhook payload, its `alertname` and `status`.
#[derive(Debug, Clone)]
struct Received {
    answered: u16,
    alerts: Vec<(String, String)>,
}

struct HookState {
    answer: AtomicU16,
    requests: Mutex<Vec<Received>>,
}

/// A webhook endpoint on 127.0.0.1 that answers with a settable status and records every
/// request.
#[derive(Clone)]
struct StandIn {
    url: String,
    state: Arc<HookState>,
}

async fn hook_handler(State(s): State<Arc<HookState>>, body: Bytes) -> StatusCode {
    let answered = s.answer.load(Ordering::SeqCst);
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let alerts = payload["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                        x["status"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if let Ok(mut r) = s.requests.lock() {
        r.push(Received { answered, alerts });
    }
    StatusCode::from_u16(answered).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl StandIn {
    async fn start(answer: u16) -> Self {
        let state = Arc::new(HookState {
            answer: AtomicU16::new(answer),
            requests: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(hook_handler)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in");
        let addr = listener.local_addr().expect("stand-in address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        StandIn {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    fn answer(&self, status: u16) {
        self.state.answer.store(status, Ordering::SeqCst);
    }

    fn requests(&self) -> Vec<Received> {
        self.state
            .requests
            .lock()
            .expect("stand-in lock poisoned")
            .clone()
    }

    /// Per alert name: how many times it arrived firing in a request answered 2xx.
    fn delivered_firing(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in self.requests() {
            if !(200..300).contains(&r.answered) {
                continue;
            }
            for (name, status) in r.alerts {
                if status == "firing" {
                    *out.entry(name).or_insert(0) += 1;
                }
            }
        }
        out
    }

    /// The alert names of every request, whatever it was answered.
    fn attempted(&self) -> BTreeSet<String> {
        self.requests()
            .into_iter()
            .flat_map(|r| r.alerts.into_iter().map(|(n, _)| n))
            .collect()
    }
}

// ------------------------------------------------------------------ the relay process

/// The relay binary as a child process, its stderr appended to a log file; killed
/// (SIGKILL) and reaped on drop.
struct Relay {
    child: Child,
    addr: String,
    log: PathBuf,
    http: reqwest::Client,
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut out = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let mut raw = Vec::new();
            let _ = f.read_to_end(&mut raw);
            out = String::from_utf8_lossy(&raw).into_owned();
        }
    }
    out
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Relay {
    /// Starts the relay on 127.0.0.1 (a port of its choosing) and waits until it logs that
    /// it started, reading its address from that line.
    async fn start(cfg: &Path, data: &Path, log: &Path) -> Relay {
        let offset = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the relay log");
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(cfg)
            .arg("--data-dir")
            .arg(data)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env_clear()
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn the relay");
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let text = read_from(log, offset);
            let listen = text
                .lines()
                .filter(|l| l.contains("etcd-monitor-relay started"))
                .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("listen=")));
            if let Some(a) = listen {
                break a.trim_matches('"').to_owned();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the relay exited at start ({status}):\n{}", tail(&text, 30));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the relay did not start within 20s:\n{}", tail(&text, 30));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        Relay {
            child,
            addr,
            log: log.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .no_proxy()
                .build()
                .expect("HTTP client"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log_tail(&self, n: usize) -> String {
        tail(&read_from(&self.log, 0), n)
    }

    /// POSTs `alerts` to `/api/v2/alerts`: the status and the body.
    async fn post_alerts(&self, alerts: &Value) -> (u16, String) {
        let resp = self
            .http
            .post(self.url("/api/v2/alerts"))
            .json(alerts)
            .send()
            .await
            .expect("POST /api/v2/alerts");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// The alert names of `GET /api/v1/alerts`.
    async fn alert_names(&self) -> BTreeSet<String> {
        let (status, body) = self.get("/api/v1/alerts").await;
        assert_eq!(status, 200, "GET /api/v1/alerts: {body}");
        let v: Value = serde_json::from_str(&body).expect("/api/v1/alerts is JSON");
        v["alerts"]
            .as_array()
            .expect("an alerts array")
            .iter()
            .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
            .collect()
    }

    fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to 15 s for the exit.
    async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait for the relay") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the relay did not stop within 15s of SIGTERM:\n{}",
                self.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ helpers

/// A tmpfs mounted on a directory, unmounted on drop (also when the test panics). Drop it
/// after the relay that uses it, or the unmount finds the file busy (and retries).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs -o size={size} on {} failed (this test needs root; \
             ETCD_MONITOR_TEST_NO_TMPFS=1 skips it): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_owned(),
        }
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .output()
            .expect("run mount -o remount");
        assert!(
            out.status.success(),
            "remount size={size}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = Command::new("umount")
                .arg(&self.dir)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Still busy after 5 s: detach it so that nothing stays mounted.
        let lazy = Command::new("umount").arg("-l").arg(&self.dir).status();
        eprintln!(
            "umount {} failed for 5 s; umount -l: {lazy:?}",
            self.dir.display()
        );
    }
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format a time")
}

/// A firing alert named `name` with a `description` of `annotation_bytes` bytes, its lease
/// an hour ahead, as Prometheus sends it.
fn alert(name: &str, annotation_bytes: usize) -> Value {
    let now = SystemTime::now();
    json!({
        "labels": { "alertname": name, "severity": "warning", "member": "etcd-1" },
        "annotations": {
            "summary": format!("{name} on etcd-1"),
            "description": "d".repeat(annotation_bytes),
        },
        "startsAt": rfc3339(now),
        "endsAt": rfc3339(now + Duration::from_secs(3600)),
        "generatorURL": "http://prometheus/graph",
    })
}

/// A config with one webhook receiver, `hook`, and quick retries; the defaults make every
/// alert its own group, notified at once.
fn write_config(dir: &Path, hook_url: &str) -> PathBuf {
    let cfg = dir.join("relay.yml");
    std::fs::write(
        &cfg,
        format!(
            "retry:\n  initial_backoff: 200ms\n  max_backoff: 1s\nreceivers:\n  - name: hook\n    webhook:\n      url: {hook_url}\n"
        ),
    )
    .expect("write the config");
    cfg
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            eprintln!("timed out after {timeout:?} waiting for {what}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The lines of a relay log at WARN or ERROR, and those about the store or start and
/// stop, in order of first appearance: the time of the first, how many, the line (less its
/// timestamp and numbers that differ between repeats).
fn log_summary(text: &str) -> String {
    let mut seen: Vec<(String, String, usize)> = Vec::new();
    for line in text.lines() {
        let interesting = line.contains(" WARN ")
            || line.contains(" ERROR ")
            || line.contains("store")
            || line.contains("started")
            || line.contains("stopped");
        if !interesting {
            continue;
        }
        let (at, rest) = line.split_once(' ').unwrap_or(("", line));
        let msg: String = rest
            .split_whitespace()
            .map(|w| match w.split_once('=') {
                // Numbers that differ between repeats (ids, retry delays).
                Some((k, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                    format!("{k}=…")
                }
                _ => w.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        match seen.iter_mut().find(|(_, m, _)| *m == msg) {
            Some((_, _, n)) => *n += 1,
            None => seen.push((at.to_owned(), msg, 1)),
        }
    }
    seen.iter()
        .map(|(at, m, n)| format!("  {at} [{n}x] {m}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn skip_tmpfs() -> bool {
    let skip = std::env::var_os("ETCD_MONITOR_TEST_NO_TMPFS").is_some_and(|v| v == "1");
    if skip {
        eprintln!("SKIPPED: ETCD_MONITOR_TEST_NO_TMPFS=1 (this test mounts a tmpfs)");
    }
    skip
}

// ------------------------------------------------------------------ 1. full disk

/// Alerts per POST while filling the disk, and the size of each one's description.
const FILL_BATCH: usize = 10;
const FILL_ANNOTATION: usize = 2048;
/// How long the test keeps posting to the full data dir.
const FULL_FOR: Duration = Duration::from_millis(4500);

/// How many times the relay logged that its store accepts writes again.
fn recoveries(log: &Path) -> usize {
    read_from(log, 0)
        .matches("the store accepts writes again")
        .count()
}

/// POSTs batch `k` of FILL_BATCH distinct alerts: the status, body and alert names.
async fn post_batch(relay: &Relay, k: usize) -> (u16, String, Vec<String>) {
    let names: Vec<String> = (0..FILL_BATCH)
        .map(|i| format!("DiskFill{k:04}n{i}"))
        .collect();
    let body = Value::Array(names.iter().map(|n| alert(n, FILL_ANNOTATION)).collect());
    let (status, text) = relay.post_alerts(&body).await;
    (status, text, names)
}

/// POSTs batches (numbered from `*batch`) until one is refused with 503; the alerts of
/// the accepted ones go to `acked`. Returns the refusal.
async fn fill_until_refused(relay: &Relay, acked: &mut Vec<String>, batch: &mut usize) -> String {
    loop {
        assert!(*batch < 2000, "the 3 MB data dir never filled up");
        let (status, text, names) = post_batch(relay, *batch).await;
        *batch += 1;
        match status {
            200 => acked.extend(names),
            503 => return text,
            other => panic!(
                "batch {batch}: HTTP {other} {text}\nrelay log:\n{}",
                relay.log_tail(30)
            ),
        }
    }
}

/// The entries of a (ms, POST status, /health status) timeline where a status changed.
fn transitions(timeline: &[(u128, u16, u16)]) -> Vec<(u128, u16, u16)> {
    let mut out: Vec<(u128, u16, u16)> = Vec::new();
    for &e in timeline {
        if out.last().is_none_or(|l| (l.1, l.2) != (e.1, e.2)) {
            out.push(e);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_then_recovery_loses_nothing_acknowledged() {
    if skip_tmpfs() {
        return;
    }
    let started = Instant::now();
    let stand_in = StandIn::start(200).await;
    // Dropped in reverse order: the relay, then the tmpfs, then the directory.
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("create the data dir");
    let fs = Tmpfs::mount(&data, "3m");
    let cfg = write_config(dir.path(), &stand_in.url);
    let log = dir.path().join("relay.log");
    let mut relay = Relay::start(&cfg, &data, &log).await;

    // Fill it: batches of distinct alerts until the relay refuses one with 503.
    let mut acked: Vec<String> = Vec::new();
    let mut batch = 0;
    let refusal = fill_until_refused(&relay, &mut acked, &mut batch).await;
    let (health, health_body) = relay.get("/health").await;
    println!(
        "full disk: {} alerts acknowledged in {batch} batches, then 503 after {:.1?}: {refusal}\n\
         full disk: then /health {health} {health_body}",
        acked.len(),
        started.elapsed(),
    );
    // The recovery loop may have reopened the store in the millisecond between the two.
    assert!(
        health == 503 || read_from(&log, 0).contains("the store accepts writes again"),
        "/health right after a refused write: {health} {health_body}\nrelay log:\n{}",
        relay.log_tail(30)
    );
    assert!(relay.alive(), "the relay died on a full disk");

    // Keep posting for FULL_FOR (over two of its 2 s recovery attempts). A refused POST
    // is followed by /health 503, unless the store was reopened in between (it can be
    // on a full disk: redb reuses the pages of the failed write). Alerts that
    // still fit count as acknowledged.
    let full_since = Instant::now();
    let mut timeline: Vec<(u128, u16, u16)> = Vec::new();
    while full_since.elapsed() < FULL_FOR {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let reopened_before = recoveries(&log);
        let (status, text, names) = post_batch(&relay, batch).await;
        batch += 1;
        let (h, hb) = relay.get("/health").await;
        timeline.push((full_since.elapsed().as_millis(), status, h));
        match status {
            200 => acked.extend(names),
            503 => assert!(
                h == 503 || recoveries(&log) > reopened_before,
                "/health {h} {hb} right after a refused POST, and no recovery logged in between"
            ),
            other => panic!("POST while full: HTTP {other} {text}"),
        }
    }
    let self_recovered = recoveries(&log);
    println!(
        "full disk: (ms, POST, /health) where either changed, over {FULL_FOR:?}: {:?}; \
         recoveries logged before any space was added: {self_recovered}",
        transitions(&timeline),
    );
    assert!(relay.alive(), "the relay died on a full disk");
    let listed = relay.alert_names().await;
    let missing: Vec<&String> = acked.iter().filter(|n| !listed.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged alerts missing from /api/v1/alerts while the disk is full: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );

    // Space again: it recovers by itself.
    fs.resize("64m");
    let resized = Instant::now();
    let mut healthy = false;
    while resized.elapsed() < Duration::from_secs(15) {
        if relay.get("/health").await.0 == 200 {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (h, hb) = relay.get("/health").await;
    assert!(
        healthy,
        "/health is still {h} {hb} 15s after the tmpfs grew to 64 MB\nrelay log:\n{}",
        log_summary(&read_from(&log, 0))
    );
    println!(
        "full disk: /health 200 again {:.1?} after the resize",
        resized.elapsed()
    );
    let (status, text) = relay
        .post_alerts(&json!([alert("AfterRecovery", 64)]))
        .await;
    assert_eq!(status, 200, "a new alert after the recovery: {text}");
    acked.push("AfterRecovery".into());
    let all_delivered = wait_for(
        "every acknowledged alert at the stand-in",
        Duration::from_secs(15),
        || {
            let d = stand_in.delivered_firing();
            acked.iter().all(|n| d.contains_key(n))
        },
    )
    .await;
    let delivered = stand_in.delivered_firing();
    let undelivered: Vec<&String> = acked
        .iter()
        .filter(|n| !delivered.contains_key(*n))
        .collect();
    assert!(
        all_delivered,
        "{} of {} acknowledged alerts never reached the stand-in, e.g. {:?}\nrelay log:\n{}",
        undelivered.len(),
        acked.len(),
        &undelivered[..undelivered.len().min(10)],
        log_summary(&read_from(&log, 0))
    );
    println!(
        "full disk: all {} acknowledged alerts delivered {:.1?} after the resize",
        acked.len(),
        resized.elapsed()
    );

    // Nothing is sent again, then or after a restart: at most twice each.
    let mut relay_stopped = relay.terminate().await;
    assert!(relay_stopped.success(), "SIGTERM exit: {relay_stopped}");
    relay = Relay::start(&cfg, &data, &log).await;
    let listed = relay.alert_names().await;
    let missing: Vec<&String> = acked.iter().filter(|n| !listed.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged alerts missing from /api/v1/alerts after a restart: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    relay_stopped = relay.terminate().await;
    assert!(relay_stopped.success(), "SIGTERM exit: {relay_stopped}");
    let delivered = stand_in.delivered_firing();
    let mut by_count: BTreeMap<usize, usize> = BTreeMap::new();
    for n in &acked {
        *by_count
            .entry(delivered.get(n).copied().unwrap_or(0))
            .or_insert(0) += 1;
    }
    let most = delivered.values().copied().max().unwrap_or(0);
    println!(
        "full disk: firing notifications per alert (times received: alerts): {by_count:?}; \
         {} requests in all",
        stand_in.requests().len()
    );
    println!(
        "full disk: relay log (WARN/ERROR/store lines, repeats counted):\n{}",
        log_summary(&read_from(&log, 0))
    );
    println!("full disk: took {:.1?}", started.elapsed());
    assert!(
        most <= 2,
        "an alert's firing notification arrived {most} times: {by_count:?}"
    );
    drop(relay);
    drop(fs);
}

/// The same full disk with the receiver down, so that every notification is still queued,
/// and the relay killed (`kill -9`) while it cannot write: once there is space, the
/// restarted relay has every acknowledged alert and delivers them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_then_kill_9_loses_nothing_acknowledged() {
    if skip_tmpfs() {
        return;
    }
    let started = Instant::now();
    let stand_in = StandIn::start(503).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("create the data dir");
    let fs = Tmpfs::mount(&data, "3m");
    let cfg = write_config(dir.path(), &stand_in.url);
    let log = dir.path().join("relay.log");
    let mut relay = Relay::start(&cfg, &data, &log).await;
    let mut acked: Vec<String> = Vec::new();
    let mut batch = 0;
    let refusal = fill_until_refused(&relay, &mut acked, &mut batch).await;
    let (health, body) = relay.get("/health").await;
    println!(
        "full disk, kill -9: {} alerts acknowledged, then {refusal}; /health {health} {body}",
        acked.len()
    );
    assert!(relay.alive(), "the relay died on a full disk");
    relay.kill_9();

    fs.resize("64m");
    stand_in.answer(200);
    relay = Relay::start(&cfg, &data, &log).await;
    let listed = relay.alert_names().await;
    let missing: Vec<&String> = acked.iter().filter(|n| !listed.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged alerts missing from /api/v1/alerts after kill -9 on a full disk: {:?}\nrelay log:\n{}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)],
        log_summary(&read_from(&log, 0))
    );
    let all = wait_for("every acknowledged alert", Duration::from_secs(20), || {
        let d = stand_in.delivered_firing();
        acked.iter().all(|n| d.contains_key(n))
    })
    .await;
    let delivered = stand_in.delivered_firing();
    let undelivered: Vec<&String> = acked
        .iter()
        .filter(|n| !delivered.contains_key(*n))
        .collect();
    assert!(
        all,
        "{} of {} acknowledged alerts never reached the stand-in after kill -9 on a full disk, e.g. {:?}\nrelay log:\n{}",
        undelivered.len(),
        acked.len(),
        &undelivered[..undelivered.len().min(10)],
        log_summary(&read_from(&log, 0))
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stopped = relay.terminate().await;
    assert!(stopped.success(), "SIGTERM exit: {stopped}");
    let delivered = stand_in.delivered_firing();
    let mut by_count: BTreeMap<usize, usize> = BTreeMap::new();
    for n in &acked {
        *by_count
            .entry(delivered.get(n).copied().unwrap_or(0))
            .or_insert(0) += 1;
    }
    println!(
        "full disk, kill -9: firing notifications per alert (times received: alerts): {by_count:?}\n\
         full disk, kill -9: relay log:\n{}\nfull disk, kill -9: took {:.1?}",
        log_summary(&read_from(&log, 0)),
        started.elapsed()
    );
    let most = delivered.values().copied().max().unwrap_or(0);
    assert!(
        most <= 2,
        "an alert's firing notification arrived {most} times: {by_count:?}"
    );
    drop(relay);
    drop(fs);
}

// ------------------------------------------------------------------ 2. corrupt record

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_outbox_record_is_quarantined_and_the_rest_delivered() {
    let started = Instant::now();
    let stand_in = StandIn::start(500).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let cfg = write_config(dir.path(), &stand_in.url);
    let log = dir.path().join("relay.log");
    let mut relay = Relay::start(&cfg, &data, &log).await;
    let names = ["CorruptNeighbourA", "CorruptNeighbourB"];
    let (status, text) = relay
        .post_alerts(&json!([alert(names[0], 64), alert(names[1], 64)]))
        .await;
    assert_eq!(status, 200, "{text}");
    // Both were tried and refused: they stay queued.
    assert!(
        wait_for("an attempt of each", Duration::from_secs(10), || {
            let a = stand_in.attempted();
            names.iter().all(|n| a.contains(*n))
        })
        .await,
        "the relay never tried both:\n{}",
        relay.log_tail(20)
    );
    let stopped = relay.terminate().await;
    assert!(stopped.success(), "SIGTERM exit: {stopped}");
    assert!(stand_in.delivered_firing().is_empty());

    let db_path = data.join("outbox.redb");
    {
        let db = redb::Database::open(&db_path).expect("open outbox.redb");
        let txn = db.begin_write().expect("write transaction");
        {
            let mut t = txn
                .open_table(alerting::store::OUTBOX)
                .expect("the outbox table");
            let queued = t.len().expect("outbox length");
            assert_eq!(queued, 2, "the two deliveries are queued");
            t.insert(("hook", 999_999), &b"\x00\xffnot a record{"[..])
                .expect("insert garbage");
        }
        txn.commit().expect("commit");
    }

    stand_in.answer(200);
    let mut relay = Relay::start(&cfg, &data, &log).await;
    let delivered = wait_for("both deliveries", Duration::from_secs(15), || {
        let d = stand_in.delivered_firing();
        names.iter().all(|n| d.contains_key(*n))
    })
    .await;
    assert!(
        delivered,
        "not both delivered after the corrupt record: {:?}\nrelay log:\n{}",
        stand_in.delivered_firing(),
        relay.log_tail(20)
    );
    let mut quarantined = None;
    for _ in 0..50 {
        let (_, metrics) = relay.get("/metrics").await;
        quarantined = metrics
            .lines()
            .find_map(|l| l.strip_prefix("etcd_monitor_relay_records_quarantined_total "))
            .map(|v| v.trim().to_owned());
        if quarantined.as_deref() == Some("1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        quarantined.as_deref(),
        Some("1"),
        "etcd_monitor_relay_records_quarantined_total\nrelay log:\n{}",
        relay.log_tail(20)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = relay.terminate().await;
    assert!(stopped.success(), "SIGTERM exit: {stopped}");
    let counts = stand_in.delivered_firing();
    assert_eq!(
        counts,
        names.iter().map(|n| (n.to_string(), 1)).collect(),
        "each delivered once"
    );
    let logged = read_from(&log, 0);
    let line = logged
        .lines()
        .find(|l| l.contains("quarantine"))
        .unwrap_or("(no line mentions quarantine)");
    println!("corrupt record: relay log: {line}");

    // The record moved: out of the outbox, into the quarantine table.
    let db = redb::Database::open(&db_path).expect("open outbox.redb again");
    let txn = db.begin_read().expect("read transaction");
    let outbox = txn
        .open_table(alerting::store::OUTBOX)
        .expect("the outbox table");
    assert!(outbox.get(("hook", 999_999)).expect("get").is_none());
    let q = txn
        .open_table(alerting::store::QUARANTINE)
        .expect("the quarantine table");
    let kept = q.get("outbox/hook/999999").expect("get");
    assert_eq!(
        kept.map(|v| v.value().to_vec()),
        Some(b"\x00\xffnot a record{".to_vec())
    );
    println!("corrupt record: took {:.1?}", started.elapsed());
}

// ------------------------------------------------------------------ 3. kill -9

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_the_200_loses_nothing() {
    let trials: usize = std::env::var("ETCD_MONITOR_KILL9_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let started = Instant::now();
    let stand_in = StandIn::start(200).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let cfg = write_config(dir.path(), &stand_in.url);
    let log = dir.path().join("relay.log");
    let mut relay = Relay::start(&cfg, &data, &log).await;
    let mut names = Vec::new();
    let mut lost = Vec::new();
    let mut before_kill = 0;
    for i in 0..trials {
        let name = format!("Kill9Round{i:04}");
        let resp = relay
            .http
            .post(relay.url("/api/v2/alerts"))
            .json(&json!([alert(&name, 64)]))
            .send()
            .await
            .expect("POST");
        if resp.status() != 200 {
            let status = resp.status();
            panic!(
                "round {i}: HTTP {status} {}",
                resp.text().await.unwrap_or_default()
            );
        }
        relay.kill_9();
        if stand_in.delivered_firing().contains_key(&name) {
            before_kill += 1;
        }
        names.push(name.clone());
        relay = Relay::start(&cfg, &data, &log).await;
        let arrived = wait_for(&name, Duration::from_secs(15), || {
            stand_in.delivered_firing().contains_key(&name)
        })
        .await;
        if !arrived {
            lost.push(name);
        }
    }
    // Longer than a worker's poll (2 s): a late copy would have come by now.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let delivered = stand_in.delivered_firing();
    let lost: Vec<String> = lost
        .into_iter()
        .filter(|n| !delivered.contains_key(n))
        .collect();
    let dup_alerts = names
        .iter()
        .filter(|n| delivered.get(*n).is_some_and(|c| *c > 1))
        .count();
    let extra: usize = names
        .iter()
        .map(|n| delivered.get(n).map_or(0, |c| c.saturating_sub(1)))
        .sum();
    println!(
        "kill9: trials={trials} lost={} duplicates={dup_alerts} extra_copies={extra} \
         delivered_before_the_kill={before_kill} elapsed={:.1}s",
        lost.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        lost.is_empty(),
        "acknowledged but never delivered: {lost:?}\nrelay log:\n{}",
        relay.log_tail(40)
    );
}
