//! etcd-monitor-bench against a real 3-member cluster and a real Pushgateway.

use std::time::Duration;

use tests::exporter::value;
use tests::{ChildGuard, EtcdCluster};

/// Runs the bench command line on a plain thread (it starts its own runtime): exit code,
/// stdout, stderr.
async fn bench(args: &[String]) -> (u8, String, String) {
    let mut argv = vec!["etcd-monitor-bench".to_owned()];
    argv.extend(args.iter().cloned());
    tests::run_bench(argv).await
}

fn args(cluster: &EtcdCluster, rest: &str) -> Vec<String> {
    let mut v = vec!["--endpoints".to_owned(), cluster.endpoints()];
    v.extend(rest.split_whitespace().map(str::to_owned));
    v
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_do_what_they_say() {
    tests::init_logs();
    let cluster = EtcdCluster::start(3).await;

    // write --total N with sequential keys leaves exactly N keys.
    let (code, out, err) = bench(&args(
        &cluster,
        "--conns 3 --clients 12 --total 700 --key-space 5000 --prefix w/ --key-size 10 --output json write --sequential-keys",
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(r["requests"], 700);
    assert_eq!(r["writes"]["ok"], 700);
    assert_eq!(cluster.count_keys("w/").await, 700);

    // read at both consistencies: no errors.
    for c in ["l", "s"] {
        let (code, out, err) = bench(&args(
            &cluster,
            &format!("--clients 8 --total 600 --key-space 100 --prefix r/ --key-size 10 --output json read --consistency {c}"),
        ))
        .await;
        assert_eq!(code, 0, "{err}");
        let r = json(&out);
        assert_eq!(
            (r["reads"]["ok"].as_u64(), r["reads"]["errors"].as_u64()),
            (Some(600), Some(0))
        );
        assert_eq!(r["params"]["workload"]["consistency"], c);
    }
    // The read run filled its key space first.
    assert_eq!(cluster.count_keys("r/").await, 100);

    // mixed: the read share is close to the asked ratio.
    let (code, out, err) = bench(&args(
        &cluster,
        "--clients 8 --total 3000 --key-space 200 --prefix m/ --key-size 10 --output json mixed --read-ratio 0.7",
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    let reads = r["reads"]["ok"].as_f64().unwrap_or(0.0);
    let writes = r["writes"]["ok"].as_f64().unwrap_or(0.0);
    assert_eq!(
        r["reads"]["errors"].as_u64().unwrap_or(1) + r["writes"]["errors"].as_u64().unwrap_or(1),
        0
    );
    let share = reads / (reads + writes);
    assert!((share - 0.7).abs() < 0.04, "read share {share}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_thresholds_and_the_text_report() {
    tests::init_logs();
    let cluster = EtcdCluster::start(3).await;
    let (code, out, err) = bench(&args(
        &cluster,
        "--clients 16 --duration 3s --warmup 0s --rate 100 --output json write",
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    let rate = r["requests"].as_f64().unwrap_or(0.0) / r["total_seconds"].as_f64().unwrap_or(1.0);
    assert!(rate <= 110.0, "asked for 100/s, got {rate:.1}/s");
    assert!(rate >= 70.0, "far below the asked rate: {rate:.1}/s");

    let (code, _, err) = bench(&args(&cluster, "--total 200 --max-p99 1us write")).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("threshold missed: p99") && err.contains("--max-p99 1us"),
        "{err}"
    );
    let (code, out, err) = bench(&args(
        &cluster,
        "--total 200 --max-p99 10s --min-throughput 1 write",
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    for part in [
        "Summary:",
        "Requests/sec:",
        "Response time histogram:",
        "Latency distribution:",
        "99.9% in",
        "∎",
    ] {
        assert!(out.contains(part), "text report lacks {part:?}:\n{out}");
    }
    let (code, _, err) = bench(&args(
        &cluster,
        "--total 100 --min-throughput 1000000000 write",
    ))
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("--min-throughput"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_report_matches_its_snapshot() {
    tests::init_logs();
    let cluster = EtcdCluster::start(3).await;
    let (code, out, err) = bench(&args(
        &cluster,
        "--conns 2 --clients 4 --total 100 --key-space 50 --prefix snap/ --key-size 12 --val-size 16 --output json write --sequential-keys",
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    let mut r = json(&out);
    // Timings vary from run to run; their shape does not.
    for k in ["started_at", "total_seconds", "throughput"] {
        assert!(r[k].as_f64().is_some_and(|v| v > 0.0), "{k}");
        r[k] = serde_json::json!("[timing]");
    }
    for k in ["fastest", "slowest", "average", "stddev"] {
        assert!(r["latency"][k].as_f64().is_some(), "{k}");
        r["latency"][k] = serde_json::json!("[timing]");
    }
    let pct = r["latency"]["percentiles"].as_array().map(Vec::len);
    assert_eq!(pct, Some(8));
    r["latency"]["percentiles"] = serde_json::json!("[8 timings]");
    let bars = r["histogram"].as_array().map(Vec::len);
    assert_eq!(bars, Some(11));
    r["histogram"] = serde_json::json!("[11 bars]");
    insta::assert_snapshot!(serde_json::to_string_pretty(&r).unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_go_to_a_real_pushgateway_and_a_rerun_replaces_them() {
    tests::init_logs();
    let cluster = EtcdCluster::start(3).await;
    let port = tests::free_port();
    let _pg = ChildGuard(
        std::process::Command::new("prometheus-pushgateway")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus-pushgateway (Debian package) must be installed"),
    );
    tests::wait_port(port, Duration::from_secs(20)).await;
    let pg = format!("http://127.0.0.1:{port}");
    let (code, out, err) = bench(&args(
        &cluster,
        &format!("--total 300 --pushgateway {pg} --job ci --label branch=feat/x --label run=1 --output json write"),
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    let http = reqwest::Client::new();
    let scrape = || async {
        let text = http
            .get(format!("{pg}/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text");
        exporter::textformat::parse(&text).expect("pushgateway metrics parse")
    };
    let m = scrape().await;
    let group = [("job", "ci"), ("branch", "feat/x"), ("run", "1")];
    let pushed =
        value(&m, "etcd_bench_throughput_requests_per_second", &group).expect("throughput");
    assert!((pushed - r["throughput"].as_f64().unwrap_or(0.0)).abs() < 1e-6);
    let p99 = value(
        &m,
        "etcd_bench_latency_seconds",
        &[("job", "ci"), ("quantile", "0.99")],
    )
    .expect("p99");
    assert!(p99 > 0.0);
    assert_eq!(
        value(
            &m,
            "etcd_bench_requests_total",
            &[("job", "ci"), ("op", "write"), ("result", "ok")]
        ),
        Some(300.0)
    );
    assert_eq!(value(&m, "etcd_bench_thresholds_passed", &group), Some(1.0));
    assert!(
        value(&m, "etcd_bench_request_duration_seconds_count", &group).is_some_and(|c| c == 300.0)
    );

    // A second run with the same job and labels replaces the group.
    let (code, _, err) = bench(&args(
        &cluster,
        &format!("--total 200 --pushgateway {pg} --job ci --label branch=feat/x --label run=1 read --consistency s"),
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    let m = scrape().await;
    assert_eq!(
        value(
            &m,
            "etcd_bench_requests_total",
            &[("job", "ci"), ("op", "write"), ("result", "ok")]
        ),
        None,
        "the first run's series are gone"
    );
    assert_eq!(
        value(
            &m,
            "etcd_bench_requests_total",
            &[("job", "ci"), ("op", "read"), ("result", "ok")]
        ),
        Some(200.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_down_pushgateway_and_unreachable_etcd() {
    tests::init_logs();
    for (argv, flag) in [
        ("--total 10 frobnicate", "frobnicate"),
        ("--total 10 mixed --read-ratio 1.5", "--read-ratio"),
        ("--rate -1 --total 10 write", "--rate"),
        ("--total 0 write", "--total"),
        ("--total 10 --label nolabel write", "--label"),
    ] {
        let (code, _, err) = bench(
            &argv
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )
        .await;
        assert_eq!(code, 2, "{argv}: {err}");
        assert_eq!(err.lines().count(), 1, "{argv}: one line: {err}");
        assert!(err.contains(flag), "{argv}: {err}");
    }
    // etcd unreachable: exit 2 with one line.
    let dead = format!("127.0.0.1:{}", tests::free_port());
    let (code, _, err) = bench(&[
        "--endpoints".into(),
        dead.clone(),
        "--dial-timeout".into(),
        "1s".into(),
        "--total".into(),
        "10".into(),
        "write".into(),
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot reach etcd") && err.contains(&dead),
        "{err}"
    );

    // Pushgateway down: the report is printed, one line says so, exit 3.
    let cluster = EtcdCluster::start(1).await;
    let gone = format!("http://127.0.0.1:{}", tests::free_port());
    let (code, out, err) = bench(&args(
        &cluster,
        &format!("--total 50 --pushgateway {gone} write"),
    ))
    .await;
    assert_eq!(code, 3, "{err}");
    assert!(out.contains("Summary:"), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("push to") && err.contains("failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_runs_a_benchmark_on_request() {
    tests::init_logs();
    let cluster = EtcdCluster::start(3).await;
    let token = "s3cret-bench-token-0123456789";
    let token_file = cluster.dir.path().join("bench-token");
    std::fs::write(&token_file, format!("{token}\n")).expect("write");
    let exp = tests::RunningExporter::for_cluster(
        &cluster,
        "5s",
        &["--benchmark-token-file", token_file.to_str().expect("utf8")],
    )
    .await;
    let http = reqwest::Client::new();
    let url = exp.url("/api/v1/performance/benchmark");
    let post = |auth: Option<&str>, body: serde_json::Value| {
        let mut r = http.post(&url).json(&body);
        if let Some(a) = auth {
            r = r.bearer_auth(a);
        }
        async move {
            let resp = r.send().await.expect("POST");
            let code = resp.status().as_u16();
            (
                code,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let small = serde_json::json!({"workload": "write", "clients": 4, "total": 200});
    assert_eq!(post(None, small.clone()).await.0, 401);
    assert_eq!(
        post(Some("wrong-token-wrong-token-xx"), small.clone())
            .await
            .0,
        401
    );
    let (code, body) = post(
        Some(token),
        serde_json::json!({"workload": "write", "total": 0}),
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("total")),
        "{body}"
    );
    let (code, body) = post(
        Some(token),
        serde_json::json!({"workload": "write", "clients": 100000}),
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("clients")),
        "{body}"
    );

    let (code, report) = post(Some(token), small).await;
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["writes"]["ok"], 200);
    assert!(report["throughput"].as_f64().is_some_and(|t| t > 0.0));
    // Its keys are gone afterwards.
    let mut c = cluster.client(0).await;
    let left = c
        .get(
            "/etcd-monitor/probe/bench/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .expect("count")
        .count();
    assert_eq!(left, 0);

    // One cluster, unnamed: no name to give.
    let resp = http
        .post(format!("{url}?cluster=elsewhere"))
        .bearer_auth(token)
        .json(&serde_json::json!({"workload": "write", "total": 10}))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 404);

    // One at a time.
    let long = post(
        Some(token),
        serde_json::json!({"workload": "write", "duration": 3.0, "rate": 50}),
    );
    let long = tokio::spawn(long);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, body) = post(
        Some(token),
        serde_json::json!({"workload": "read", "total": 10}),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(long.await.expect("join").0, 200);

    // Off without a token file.
    let plain = tests::RunningExporter::for_cluster(&cluster, "5s", &[]).await;
    let resp = http
        .post(plain.url("/api/v1/performance/benchmark"))
        .bearer_auth(token)
        .json(&serde_json::json!({"workload": "write"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 404);
}
