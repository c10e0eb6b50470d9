//! The `etcd-monitor-relay` binary: bad configuration exits 2 naming the file and the
//! field, and a notification accepted while its channel is down survives `kill -9`.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_etcd-monitor-relay");

fn run_config(yaml: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("relay.yml");
    std::fs::write(&cfg, yaml).expect("write");
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env_clear();
    let f = common::process::run_with_deadline(cmd, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the relay accepted a bad config:\n{yaml}\n{e}"));
    (f.code, f.stderr, cfg.display().to_string())
}

#[test]
fn bad_configs_exit_2_naming_file_and_field() {
    for (yaml, field, what) in [
        (
            "receivers:\n  - name: a\n    console: {}\nroutes:\n  - receivers: [nobody]\n",
            "routes[0].receivers",
            "unknown receiver \"nobody\"",
        ),
        (
            "receivers:\n  - name: a\n    console: {}\nroutes:\n  - match_re: {alertname: \"Etcd(\"}\n    receivers: [a]\n",
            "routes[0].match_re.alertname",
            "invalid regex",
        ),
        (
            "receivers:\n  - name: chat\n    slack:\n      webhook_url_file: /nonexistent/slack-url\n",
            "receivers[0].slack.webhook_url_file",
            "/nonexistent/slack-url",
        ),
        (
            "receivers:\n  - name: chat\n    slack:\n      webhook_url: https://hooks.slack.com/x\n",
            "line",
            "unknown field `webhook_url`",
        ),
        (
            "dedup_window: soon\nreceivers:\n  - name: a\n    console: {}\n",
            "dedup_window",
            "invalid duration",
        ),
    ] {
        let (code, err, file) = run_config(yaml);
        assert_eq!(code, Some(2), "{yaml}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        for n in [file.as_str(), field, what] {
            assert!(lines[0].contains(n), "{:?} lacks {n:?}", lines[0]);
        }
    }
}

/// A webhook endpoint that answers 503 while `down`, and counts what it accepted.
struct Hook {
    port: u16,
    down: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
    delivered: Arc<AtomicUsize>,
}

async fn hook() -> Hook {
    let down = Arc::new(AtomicBool::new(true));
    let attempts = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(AtomicUsize::new(0));
    let (d, a, ok) = (down.clone(), attempts.clone(), delivered.clone());
    let app = axum::Router::new().fallback(move || {
        let (d, a, ok) = (d.clone(), a.clone(), ok.clone());
        async move {
            a.fetch_add(1, Ordering::SeqCst);
            if d.load(Ordering::SeqCst) {
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            } else {
                ok.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::OK
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Hook {
        port,
        down,
        attempts,
        delivered,
    }
}

/// The relay reads its own listen address from the environment, not the exporter's
/// (`ETCD_MONITOR_LISTEN`), so one env file can serve both.
#[test]
fn listen_comes_from_its_own_env_var() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("relay.yml");
    std::fs::write(&cfg, "receivers:\n  - name: log\n    console: {}\n").expect("write");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_clear()
        .env("ETCD_MONITOR_LISTEN", "the-exporters-address")
        .env("ETCD_MONITOR_RELAY_LISTEN", "the-relays-address")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--listen") && err.contains("the-relays-address"),
        "{err}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn start_relay(cfg: &std::path::Path, data: &std::path::Path, port: u16) -> Child {
    Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .arg("--data-dir")
        .arg(data)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn relay")
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_survives_kill_9_and_is_delivered_once() {
    let hook = hook().await;
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("relay.yml");
    std::fs::write(
        &cfg,
        format!(
            "retry:\n  initial_backoff: 200ms\n  max_backoff: 1s\nreceivers:\n  - name: hook\n    webhook:\n      url: http://127.0.0.1:{}/hook\n",
            hook.port
        ),
    )
    .expect("config");
    let data = dir.path().join("data");
    let port = free_port();
    let mut relay = start_relay(&cfg, &data, port);
    let http = reqwest::Client::new();
    let body = serde_json::json!([{
        "labels": {"alertname": "EtcdNoLeader", "severity": "critical"},
        "annotations": {"summary": "no leader"},
    }]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match http
            .post(format!("http://127.0.0.1:{port}/api/v2/alerts"))
            .json(&body)
            .send()
            .await
        {
            Ok(r) => {
                assert_eq!(r.status(), 200, "accepted");
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("relay never listened: {e}"),
        }
    }
    // The channel is down: attempts fail and the relay retries.
    wait_until("two failed attempts", Duration::from_secs(20), || {
        hook.attempts.load(Ordering::SeqCst) >= 2
    })
    .await;
    relay.kill().expect("kill -9");
    relay.wait().expect("reap");
    assert_eq!(hook.delivered.load(Ordering::SeqCst), 0);

    hook.down.store(false, Ordering::SeqCst);
    let mut relay = start_relay(&cfg, &data, port);
    wait_until(
        "the delivery after the restart",
        Duration::from_secs(30),
        || hook.delivered.load(Ordering::SeqCst) >= 1,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hook.delivered.load(Ordering::SeqCst), 1, "delivered once");
    let history: serde_json::Value = http
        .get(format!("http://127.0.0.1:{port}/api/v1/alerts/history"))
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    assert_eq!(history["history"][0]["outcome"], "delivered");
    assert!(history["history"][0]["attempts"]
        .as_u64()
        .is_some_and(|a| a >= 1));
    let _ = relay.kill();
    let _ = relay.wait();
}

/// Anyone who reaches an open relay can page the on-call: a non-loopback address needs a
/// token or the explicit opt-in, and the refusal names the flag.
#[test]
fn a_non_loopback_listen_needs_a_token_or_the_opt_in() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("relay.yml");
    std::fs::write(&cfg, "receivers:\n  - name: log\n    console: {}\n").expect("write");
    let run = |extra: &[&str]| {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "0.0.0.0:0"])
            .args(extra)
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c.spawn().expect("spawn")
    };
    let out = run(&[]).wait_with_output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--allow-unauthenticated"), "{err}");
    assert!(err.contains("--auth-token-file"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // With the opt-in it starts (and keeps running until killed).
    let mut child = run(&["--allow-unauthenticated"]);
    std::thread::sleep(Duration::from_millis(800));
    assert!(child.try_wait().expect("wait").is_none(), "it runs");
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGHUP reads the file again: a bad file keeps the running configuration (and says
/// why); a good one takes effect for the next alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_bad_file_keeps_the_old_config() {
    let hook = hook().await;
    hook.down.store(false, Ordering::SeqCst);
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("relay.yml");
    std::fs::write(&cfg, "receivers:\n  - name: log\n    console: {}\n").expect("config");
    let port = free_port();
    let mut relay = start_relay(&cfg, &dir.path().join("data"), port);
    let http = reqwest::Client::new();
    let post = |name: &'static str| {
        let http = http.clone();
        async move {
            let body = serde_json::json!([{ "labels": {"alertname": name} }]);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match http
                    .post(format!("http://127.0.0.1:{port}/api/v2/alerts"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) => return r.status().as_u16(),
                    Err(e) if Instant::now() > deadline => panic!("relay never listened: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    };
    assert_eq!(post("Before").await, 200);
    let metric = |name: &'static str| {
        let http = http.clone();
        async move {
            let text = http
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            text.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                .unwrap_or_default()
        }
    };
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(relay.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("SIGHUP")
    };
    // The reload gauge once it reads `want` (or what it reads after 5 s).
    let reload_success = |want: &'static str| {
        let metric = &metric;
        async move {
            let mut got = String::new();
            for _ in 0..50 {
                got = metric("etcd_monitor_relay_config_last_reload_successful ").await;
                if got == want {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            got
        }
    };
    std::fs::write(&cfg, "receivers: [this is not a receiver list\n").expect("bad config");
    hup();
    assert_eq!(reload_success("0").await, "0", "the bad reload is reported");
    assert_eq!(post("StillServed").await, 200, "the old config still runs");
    std::fs::write(
        &cfg,
        format!(
            "receivers:\n  - name: hook\n    webhook:\n      url: http://127.0.0.1:{}/hook\n",
            hook.port
        ),
    )
    .expect("good config");
    hup();
    assert_eq!(reload_success("1").await, "1");
    assert_eq!(post("After").await, 200);
    wait_until(
        "the new receiver hears the next alert",
        Duration::from_secs(10),
        || hook.delivered.load(Ordering::SeqCst) >= 1,
    )
    .await;
    let _ = relay.kill();
    let _ = relay.wait();
}

/// A client that sends half a request header is cut off at the header timeout
/// (`common::http::HEADER_READ_TIMEOUT`), and others are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_is_closed_and_others_are_served_meanwhile() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("relay.yml");
    std::fs::write(&cfg, "receivers:\n  - name: log\n    console: {}\n").expect("config");
    let port = free_port();
    let mut relay = start_relay(&cfg, &dir.path().join("data"), port);
    let http = reqwest::Client::new();
    let health = format!("http://127.0.0.1:{port}/health");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(&health).send().await.is_err() {
        assert!(Instant::now() < deadline, "relay never listened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut half = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    half.write_all(b"POST /api/v2/alerts HTTP/1.1\r\nHost: relay\r\nContent-Type: appl")
        .expect("half a header");
    let started = Instant::now();
    let reader = std::thread::spawn(move || {
        half.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut buf = [0u8; 512];
        // EOF (0) or a reset: either way the relay closed it.
        let _ = half.read(&mut buf);
        started.elapsed()
    });
    for _ in 0..5 {
        let r = http.get(&health).send().await.expect("served meanwhile");
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let closed_after = tokio::task::spawn_blocking(move || reader.join().expect("reader"))
        .await
        .expect("join");
    let limit = common::http::HEADER_READ_TIMEOUT + Duration::from_secs(5);
    assert!(closed_after < limit, "closed after {closed_after:?}");
    let _ = relay.kill();
    let _ = relay.wait();
}
