//! The etcd-monitor-bench binary as CI runs it, against a real cluster: settings from
//! `ETCD_MONITOR_BENCH_*` variables take effect (flags win over them), and the progress
//! bar shows on a terminal (a pseudo-terminal from util-linux's `script`) and nowhere
//! else.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::process::run_with_deadline;
use tests::EtcdCluster;

const LIMIT: Duration = Duration::from_secs(60);

/// The debug binary, built from the current sources once per test process (a no-op when
/// it is up to date).
fn binary() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = tests::clean_command(env!("CARGO"))
            .args([
                "build",
                "--locked",
                "-p",
                "bench",
                "--bins",
                "--message-format=json",
            ])
            .output()
            .expect("cargo build");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "cargo build -p bench failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact")
            .find_map(|m| {
                (m["target"]["name"] == "etcd-monitor-bench")
                    .then(|| m["executable"].as_str().map(PathBuf::from))
                    .flatten()
            })
            .expect("cargo build names the etcd-monitor-bench executable")
    })
}

/// Runs the binary with only `env` in its environment (and PATH): exit code, stdout,
/// stderr.
async fn run(args: &[&str], env: &[(&'static str, String)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)));
    let f = tokio::task::spawn_blocking(move || run_with_deadline(cmd, LIMIT))
        .await
        .expect("join")
        .expect("etcd-monitor-bench ran");
    (f.code, f.stdout, f.stderr)
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_variables_set_every_flag() {
    tests::init_logs();
    let cluster = EtcdCluster::start(1).await;
    let endpoints = ("ETCD_MONITOR_ENDPOINTS", cluster.endpoints());
    let dead = format!("http://127.0.0.1:{}", tests::free_port());
    fn e(k: &'static str, v: &str) -> (&'static str, String) {
        (k, v.to_owned())
    }
    // Global flags and a workload's flag, all from the environment; the push goes to a
    // Pushgateway that is not there, so exit 3 says the variable was read.
    let (code, out, err) = run(
        &["txn"],
        &[
            endpoints.clone(),
            e("ETCD_MONITOR_BENCH_CONNS", "2"),
            e("ETCD_MONITOR_BENCH_CLIENTS", "3"),
            e("ETCD_MONITOR_BENCH_TOTAL", "120"),
            e("ETCD_MONITOR_BENCH_RATE", "2000"),
            e("ETCD_MONITOR_BENCH_KEY_SIZE", "12"),
            e("ETCD_MONITOR_BENCH_VAL_SIZE", "20"),
            e("ETCD_MONITOR_BENCH_KEY_SPACE", "40"),
            e("ETCD_MONITOR_BENCH_PREFIX", "env/"),
            e("ETCD_MONITOR_BENCH_WARMUP", "0s"),
            e("ETCD_MONITOR_BENCH_OUTPUT", "json"),
            e("ETCD_MONITOR_BENCH_PUSHGATEWAY", &dead),
            e("ETCD_MONITOR_BENCH_JOB", "from-env"),
            e("ETCD_MONITOR_BENCH_LABEL", "a=1,b=2"),
            e("ETCD_MONITOR_BENCH_MAX_P99", "30s"),
            e("ETCD_MONITOR_BENCH_MIN_THROUGHPUT", "1"),
            e("ETCD_MONITOR_BENCH_OPS_PER_TXN", "3"),
        ],
    )
    .await;
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains(&format!("push to {dead}")), "{err}");
    let r = json(&out);
    assert_eq!(
        r["params"],
        serde_json::json!({
            "workload": {"kind": "txn", "ops_per_txn": 3},
            "conns": 2, "clients": 3, "stop": {"total": 120}, "rate": 2000.0,
            "key_size": 12, "val_size": 20, "key_space": 40, "prefix": "env/", "warmup": 0.0
        })
    );
    assert_eq!(r["writes"]["ok"], 120);
    let keys = cluster.count_keys("env/").await;
    assert!((3..=40).contains(&keys), "{keys} keys under env/");

    // Thresholds from the environment; a flag wins over its variable.
    let (code, _, err) = run(
        &["--total", "50", "write"],
        &[
            endpoints.clone(),
            e("ETCD_MONITOR_BENCH_TOTAL", "100000000"),
            e("ETCD_MONITOR_BENCH_MAX_P99", "1us"),
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--max-p99 1us"), "{err}");

    // The other workloads' flags, booleans included.
    let watch = run(
        &["--output", "json", "watch"],
        &[
            endpoints.clone(),
            e("ETCD_MONITOR_BENCH_DURATION", "1s"),
            e("ETCD_MONITOR_BENCH_WARMUP", "100ms"),
            e("ETCD_MONITOR_BENCH_RATE", "100"),
            e("ETCD_MONITOR_BENCH_WATCHERS", "4"),
            e("ETCD_MONITOR_BENCH_STREAMS", "2"),
        ],
    )
    .await;
    let mixed = run(
        &["--output", "json", "--total", "20", "mixed"],
        &[
            endpoints.clone(),
            e("ETCD_MONITOR_BENCH_READ_RATIO", "0.25"),
            e("ETCD_MONITOR_BENCH_CONSISTENCY", "s"),
        ],
    )
    .await;
    let read = run(
        &["--output", "json", "--total", "20", "read"],
        &[
            endpoints.clone(),
            e("ETCD_MONITOR_BENCH_KEYS_EXIST", "true"),
        ],
    )
    .await;
    let write = run(
        &["--output", "json", "--total", "20", "write"],
        &[endpoints, e("ETCD_MONITOR_BENCH_SEQUENTIAL_KEYS", "true")],
    )
    .await;
    for (name, (code, out, err), want) in [
        (
            "watch",
            watch,
            serde_json::json!({"kind": "watch", "watchers": 4, "streams": 2}),
        ),
        (
            "mixed",
            mixed,
            serde_json::json!({"kind": "mixed", "read_ratio": 0.25, "consistency": "s"}),
        ),
        (
            "read",
            read,
            serde_json::json!({"kind": "read", "consistency": "l", "fill": false}),
        ),
        (
            "write",
            write,
            serde_json::json!({"kind": "write", "sequential_keys": true}),
        ),
    ] {
        assert_eq!(code, Some(0), "{name}: {err}");
        let r = json(&out);
        assert_eq!(r["params"]["workload"], want, "{name}");
        if name == "watch" {
            assert_eq!(r["params"]["stop"], serde_json::json!({"duration": 1.0}));
            assert_eq!(r["params"]["warmup"], 0.1);
            assert_eq!(r["watch"]["missing_events"], 0, "{r}");
        }
    }

    // A bad value in a variable is a bad flag: one line, exit 2.
    let (code, _, err) = run(&["write"], &[e("ETCD_MONITOR_BENCH_CLIENTS", "many")]).await;
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--clients") && err.contains("many"), "{err}");
}

/// Runs `command` under a pseudo-terminal (`script`): everything the terminal showed.
async fn on_a_terminal(command: String) -> (Option<i32>, String) {
    let mut cmd = Command::new("script");
    cmd.args(["-qefc", &command, "/dev/null"])
        .env("TERM", "dumb")
        .stdin(Stdio::null());
    let f = tokio::task::spawn_blocking(move || run_with_deadline(cmd, LIMIT))
        .await
        .expect("join")
        .expect("script (util-linux) ran");
    (f.code, f.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_bar_on_a_terminal_only() {
    tests::init_logs();
    let cluster = EtcdCluster::start(1).await;
    let bin = binary().display().to_string();
    let base = format!(
        "{bin} --endpoints {} --total 1500 --rate 1000 --clients 4",
        cluster.endpoints()
    );
    // Text on a terminal: a bar with the count, the rate and the ETA, cleared at the end.
    let (code, screen) = on_a_terminal(format!("{base} write")).await;
    assert_eq!(code, Some(0), "{screen}");
    let bars: Vec<&str> = screen.split('\r').filter(|l| l.contains("req/s")).collect();
    assert!(bars.len() >= 3, "a bar redrawn over 1.5 s:\n{screen:?}");
    for b in &bars {
        assert!(
            b.starts_with('[') && b.contains("/1500 requests") && b.contains("ETA "),
            "{b:?}"
        );
    }
    assert!(screen.contains("Summary:"), "{screen:?}");
    assert!(
        screen.contains("\r\x1b[K\r\nSummary:") || screen.contains("\r\x1b[K\nSummary:"),
        "the bar is cleared before the report:\n{screen:?}"
    );

    // JSON on a terminal: nothing but the JSON.
    let (code, screen) = on_a_terminal(format!("{base} --output json write")).await;
    assert_eq!(code, Some(0), "{screen}");
    assert!(!screen.contains("req/s"), "{screen:?}");
    json(&screen.replace("\r\n", "\n"));

    // Text into a pipe: no bar, nothing on stderr.
    let (code, out, err) = run(
        &[
            "--endpoints",
            &cluster.endpoints(),
            "--total",
            "300",
            "write",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err, "");
    assert!(out.contains("Summary:") && !out.contains("req/s"), "{out}");
}
