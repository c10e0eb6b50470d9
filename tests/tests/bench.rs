//! etcd-monitor-bench against a real 3-member cluster and a real Pushgateway: every
//! workload does what it says (revision deltas for txn, event counts for watch), its JSON
//! validates against bench/report.schema.json, `--rate` latency shows a frozen member's
//! stall, and the pushed series are what the benchmarks dashboard queries.

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

/// Validates `reports` against bench/report.schema.json with python3-jsonschema (the
/// schema checked as a 2020-12 schema first): `None` when all validate, else the errors.
fn schema_errors(reports: &[&serde_json::Value]) -> Option<String> {
    use std::io::Write;
    let schema = tests::prometheus::repo_root().join("bench/report.schema.json");
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, jsonschema\n\
             schema = json.load(open(sys.argv[1]))\n\
             jsonschema.Draft202012Validator.check_schema(schema)\n\
             v = jsonschema.Draft202012Validator(schema)\n\
             bad = [f'report {i}: {e.json_path}: {e.message}' for i, r in enumerate(json.load(sys.stdin)) for e in v.iter_errors(r)]\n\
             print('\\n'.join(bad)); sys.exit(1 if bad else 0)",
        ])
        .arg(&schema)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with python3-jsonschema (./scripts/setup.sh installs it)");
    let body = serde_json::to_vec(reports).expect("JSON");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&body)
        .expect("write");
    let out = child.wait_with_output().expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "the schema check did not run: {text}"
    );
    (!out.status.success()).then_some(text)
}

/// The cluster's current revision.
async fn revision(cluster: &EtcdCluster) -> i64 {
    let mut c = cluster.client(0).await;
    c.get("no-such-key", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision()
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
    let mut reports = vec![r];

    // txn: one revision per transaction, --ops-per-txn keys in each.
    let before = revision(&cluster).await;
    let (code, out, err) = bench(&args(
        &cluster,
        "--clients 6 --total 400 --key-space 300 --prefix t/ --key-size 10 --output json txn --ops-per-txn 5",
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(
        (r["writes"]["ok"].as_u64(), r["writes"]["errors"].as_u64()),
        (Some(400), Some(0))
    );
    assert_eq!(
        revision(&cluster).await - before,
        400,
        "one revision per txn"
    );
    assert_eq!(r["params"]["workload"]["ops_per_txn"], 5);
    // 400 transactions of 5 distinct keys out of 300: a key is left out with a chance of
    // (295/300)^400, about 1e-3, so nearly all are written.
    assert!(cluster.count_keys("t/").await >= 290);
    reports.push(r);

    // watch: every put reaches every watcher, and the latency is put to event.
    let before = revision(&cluster).await;
    let (code, out, err) = bench(&args(
        &cluster,
        "--conns 2 --clients 4 --total 300 --prefix wa/ --key-size 10 --output json watch --watchers 12 --streams 3",
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(r["writes"]["ok"], 300);
    assert_eq!(
        revision(&cluster).await - before,
        300,
        "one revision per put"
    );
    assert_eq!(
        r["watch"],
        serde_json::json!({"watchers": 12, "streams": 3, "expected_events": 3600,
                           "received_events": 3600, "missing_events": 0})
    );
    assert_eq!(r["errors"], serde_json::json!({}));
    let lat = &r["latency"];
    assert!(
        lat["p50"].as_f64().is_some_and(|v| v > 0.0 && v < 1.0),
        "{lat}"
    );
    // The latency histogram holds one sample per event.
    let samples: u64 = r["histogram"]
        .as_array()
        .map(|b| b.iter().filter_map(|b| b["count"].as_u64()).sum())
        .unwrap_or(0);
    assert_eq!(samples, 3600);
    reports.push(r);

    // A rated run carries the service time beside the scheduled-time latency.
    let (code, out, err) = bench(&args(
        &cluster,
        "--clients 4 --total 200 --rate 400 --prefix wr/ --output json write",
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(r["latency_from"], "schedule");
    assert!(r["service_time"]["p99"].as_f64().is_some(), "{r}");
    reports.push(r);

    // Every report validates against the schema, flat percentiles included...
    let refs: Vec<&serde_json::Value> = reports.iter().collect();
    assert_eq!(schema_errors(&refs), None);
    for r in &reports {
        let l = &r["latency"];
        let p: Vec<f64> = ["p50", "p90", "p95", "p99", "p999"]
            .iter()
            .map(|k| l[k].as_f64().unwrap_or(-1.0))
            .collect();
        assert!(p.windows(2).all(|w| w[0] <= w[1]) && p[0] > 0.0, "{l}");
        assert_eq!(l["p99"], l["percentiles"][6][1], "{l}");
    }
    // ... and the schema is strict enough to refuse a report without one.
    let mut broken = reports[0].clone();
    broken["latency"]
        .as_object_mut()
        .map(|l| l.remove("p99"))
        .expect("latency");
    let errors = schema_errors(&[&broken]).expect("a report without latency.p99 is refused");
    assert!(errors.contains("p99"), "{errors}");
}

/// With --rate, latency is timed from each request's scheduled send: a member frozen for
/// a second holds up the requests due meanwhile, and they count as slow, while their
/// service time (from the actual send) stays short. A member frozen past the end of a
/// --duration run leaves requests unsent, counted as errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_latency_shows_a_frozen_member_stall() {
    tests::init_logs();
    let cluster = EtcdCluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    // A follower, so that the freeze stalls the bench's requests and no election.
    let member = (leader + 1) % 3;
    let argv = vec![
        "--endpoints".to_owned(),
        cluster.client_url(member),
        "--clients".into(),
        "4".into(),
        "--rate".into(),
        "200".into(),
        "--total".into(),
        "800".into(),
        "--prefix".into(),
        "stall/".into(),
        "--output".into(),
        "json".into(),
        "write".into(),
    ];
    let run = tokio::spawn(async move { bench(&argv).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.freeze(member);
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.thaw(member);
    let (code, out, err) = run.await.expect("join");
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(r["writes"]["ok"], 800, "{r}");
    assert_eq!(r["latency_from"], "schedule");
    let (lat, svc) = (&r["latency"], &r["service_time"]);
    eprintln!("latency {lat}\nservice time {svc}");
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    // About 200 of 800 requests were due during the freeze, late by up to a second.
    assert!(f(lat, "slowest") >= 0.8, "latency {lat}");
    assert!(f(lat, "p99") >= 0.6, "latency {lat}");
    assert!(f(lat, "p90") >= 0.2, "latency {lat}");
    // Only the four requests in flight waited on the member: timed from the send, the
    // stall nearly disappears, which is the coordinated omission the schedule avoids.
    assert!(
        f(svc, "p90") * 3.0 < f(lat, "p90"),
        "service time {svc} vs latency {lat}"
    );

    // With --duration, requests due before the end are sent late, but none after the end
    // plus --command-timeout: a member frozen past that leaves requests unsent, and they
    // are errors, not dropped. Every request due is in the figures.
    let argv: Vec<String> = format!(
        "--endpoints {} --clients 4 --rate 100 --duration 2s --warmup 0s --command-timeout 1s \
         --prefix late/ --output json write",
        cluster.client_url(member)
    )
    .split_whitespace()
    .map(str::to_owned)
    .collect();
    let started = std::time::Instant::now();
    let run = tokio::spawn(async move { bench(&argv).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.freeze(member);
    let (code, out, err) = run.await.expect("join");
    let took = started.elapsed();
    cluster.thaw(member);
    assert_eq!(code, 0, "{err}");
    assert!(
        took < Duration::from_secs(6),
        "the run ended at the send limit: {took:?}"
    );
    let r = json(&out);
    let unsent = r["errors"]["not sent: behind the --rate schedule at the end of --duration"]
        .as_u64()
        .unwrap_or(0);
    assert!(unsent > 50, "{r}");
    assert_eq!(r["requests"], 200, "every request due is counted: {r}");
    assert_eq!(
        r["writes"]["ok"].as_u64().unwrap_or(0) + r["writes"]["errors"].as_u64().unwrap_or(0),
        200
    );
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
    for k in ["p50", "p90", "p95", "p99", "p999"] {
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

/// A watcher whose member dies misses the events after it: they are counted as missing
/// and reported as errors, beside the broken stream, while the other watcher gets all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_loses_its_member_reports_the_missing_events() {
    tests::init_logs();
    let mut cluster = EtcdCluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let (lost, kept) = ((leader + 1) % 3, (leader + 2) % 3);
    // Connection 0 (to `lost`) carries stream 0 and client 0, connection 1 the others.
    let argv = vec![
        "--endpoints".to_owned(),
        format!("{},{}", cluster.client_url(lost), cluster.client_url(kept)),
        "--conns".into(),
        "2".into(),
        "--clients".into(),
        "2".into(),
        "--rate".into(),
        "200".into(),
        "--total".into(),
        "600".into(),
        "--command-timeout".into(),
        "2s".into(),
        "--prefix".into(),
        "lost/".into(),
        "--output".into(),
        "json".into(),
        "watch".into(),
        "--watchers".into(),
        "2".into(),
        "--streams".into(),
        "2".into(),
    ];
    let run = tokio::spawn(async move { bench(&argv).await });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    cluster.kill(lost);
    let (code, out, err) = run.await.expect("join");
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    let w = &r["watch"];
    let ok = r["writes"]["ok"].as_u64().unwrap_or(0);
    assert!(ok >= 300, "the puts through the other member went on: {r}");
    assert_eq!(w["expected_events"].as_u64(), Some(2 * ok), "{w}");
    let missing = w["missing_events"].as_u64().unwrap_or(0);
    assert!(missing > 0, "{w}");
    assert_eq!(
        w["received_events"].as_u64().map(|n| n + missing),
        Some(2 * ok),
        "{w}"
    );
    assert_eq!(r["errors"]["watch events missing"].as_u64(), Some(missing));
    let errors = r["errors"].as_object().cloned().unwrap_or_default();
    assert!(
        errors
            .keys()
            .any(|k| k.starts_with("watch") && k != "watch events missing"),
        "the broken stream is named: {errors:?}"
    );
}

/// Each workload is its own Pushgateway group (the workload label on every series); a
/// rerun replaces its own workload's group only. The histogram's buckets and count are the
/// run's, the quantiles are a summary (no `quantile` label on a gauge), and a real
/// Prometheus scraping the Pushgateway answers every query of the benchmarks dashboard
/// with a series for each workload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_workload_goes_to_a_real_pushgateway_and_the_dashboard_shows_it() {
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

    // The body as pushed passes promtool's lint: types, units, no quantile on a gauge.
    let mut watch_report = {
        use clap::Parser as _;
        let args = bench::Args::try_parse_from(
            format!(
                "etcd-monitor-bench --endpoints {} --total 200 --rate 1000 --prefix lint/ watch --watchers 2",
                cluster.endpoints()
            )
            .split_whitespace(),
        )
        .expect("flags");
        let params = bench::Params::from_args(&args).expect("params");
        let etcd = common::etcd::EtcdConfig::from_args(&args.etcd).expect("etcd config");
        let report = bench::run(&params, &etcd, false).await.expect("a run");
        let body = bench::push::body(&report, true);
        let (code, lint) = tests::promtool_check_metrics(&body);
        assert_eq!(code, 0, "promtool check metrics: {lint}\n{body}");
        for name in [
            "etcd_bench_latency_seconds",
            "etcd_bench_service_time_seconds",
        ] {
            assert!(body.contains(&format!("# TYPE {name} summary")), "{body}");
        }
        assert!(
            body.contains("# TYPE etcd_bench_request_duration_seconds histogram"),
            "{body}"
        );
        report
    };
    // The same watch run, as if 7 events had not come, to a job of its own: the dashboard's
    // error count must show them though no request failed.
    watch_report.errors.insert("watch events missing".into(), 7);
    bench::push::push(&pg, "ci-missing", &[], &watch_report, true)
        .await
        .expect("push");

    let push = format!("--pushgateway {pg} --job ci --label branch=feat/x --label run=1");
    let runs = [
        (
            "write",
            "--total 300 --rate 1000 --prefix pw/ write",
            300.0,
            300.0,
        ),
        (
            "read",
            "--total 200 --prefix pr/ read --consistency s",
            200.0,
            200.0,
        ),
        ("mixed", "--total 200 --prefix pm/ mixed", 200.0, 200.0),
        (
            "txn",
            "--total 100 --prefix pt/ txn --ops-per-txn 4",
            100.0,
            100.0,
        ),
        // Latency samples are events: 100 puts seen by 3 watchers.
        (
            "watch",
            "--total 100 --prefix pwa/ watch --watchers 3",
            100.0,
            300.0,
        ),
    ];
    let mut reports = std::collections::BTreeMap::new();
    for (workload, rest, _, _) in &runs {
        let (code, out, err) = bench(&args(
            &cluster,
            &format!("--clients 4 --output json {push} {rest}"),
        ))
        .await;
        assert_eq!(code, 0, "{workload}: {err}");
        reports.insert(*workload, json(&out));
    }
    let http = reqwest::Client::new();
    let scrape = || async {
        http.get(format!("{pg}/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text")
    };
    let text = scrape().await;
    let m = exporter::textformat::parse(&text).expect("pushgateway metrics parse");
    assert!(
        text.contains("# TYPE etcd_bench_latency_seconds summary"),
        "{text}"
    );
    for line in text.lines().filter(|l| l.contains("quantile=")) {
        let name = line.split('{').next().unwrap_or("");
        assert!(
            text.contains(&format!("# TYPE {name} summary")),
            "a quantile label outside a summary: {line}"
        );
    }
    for (workload, _, requests, samples) in &runs {
        let r = &reports[workload];
        let group = [
            ("job", "ci"),
            ("workload", *workload),
            ("branch", "feat/x"),
            ("run", "1"),
        ];
        let get = |name: &str, extra: &[(&str, &str)]| {
            let labels: Vec<(&str, &str)> = group.iter().chain(extra).copied().collect();
            value(&m, name, &labels)
        };
        let pushed = get("etcd_bench_throughput_requests_per_second", &[]).expect("throughput");
        assert!((pushed - r["throughput"].as_f64().unwrap_or(0.0)).abs() < 1e-6);
        let ok: f64 = m
            .families
            .iter()
            .flat_map(|f| &f.samples)
            .filter(|s| {
                s.name == "etcd_bench_requests_total"
                    && group.iter().all(|(k, v)| s.label(k) == Some(v))
                    && s.label("result") == Some("ok")
            })
            .map(|s| s.value)
            .sum();
        assert_eq!(ok, *requests, "{workload}");
        let p99 = get("etcd_bench_latency_seconds", &[("quantile", "0.99")]).expect("p99");
        assert!(
            (p99 - r["latency"]["p99"].as_f64().unwrap_or(-1.0)).abs() < 1e-9,
            "{workload}: pushed p99 {p99}, reported {}",
            r["latency"]["p99"]
        );
        // The dashboard asks for quantile="0.999": the label is written as such.
        assert!(
            get("etcd_bench_latency_seconds", &[("quantile", "0.999")]).is_some(),
            "{workload}: no p99.9"
        );
        // The histogram: every sample in it, the +Inf bucket its count, buckets rising.
        let count = get("etcd_bench_request_duration_seconds_count", &[]);
        assert_eq!(count, Some(*samples), "{workload}");
        let inf = get(
            "etcd_bench_request_duration_seconds_bucket",
            &[("le", "+Inf")],
        );
        assert_eq!(inf, Some(*samples), "{workload}");
        let buckets: Vec<f64> = m
            .families
            .iter()
            .flat_map(|f| &f.samples)
            .filter(|s| {
                s.name == "etcd_bench_request_duration_seconds_bucket"
                    && group.iter().all(|(k, v)| s.label(k) == Some(v))
            })
            .map(|s| s.value)
            .collect();
        assert!(buckets.len() >= 10, "{workload}: {buckets:?}");
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
        let mean = get("etcd_bench_request_duration_seconds_sum", &[]).unwrap_or(0.0) / samples;
        let avg = r["latency"]["average"].as_f64().unwrap_or(0.0);
        assert!(
            (mean - avg).abs() <= avg * 0.01 + 1e-6,
            "{workload}: {mean} vs {avg}"
        );
        assert_eq!(get("etcd_bench_thresholds_passed", &[]), Some(1.0));
    }
    // With --rate, the service time too.
    let svc = value(
        &m,
        "etcd_bench_service_time_seconds",
        &[("workload", "write"), ("quantile", "0.99")],
    );
    assert!(svc.is_some_and(|v| v > 0.0), "{svc:?}");
    assert_eq!(
        value(
            &m,
            "etcd_bench_run_info",
            &[("workload", "txn"), ("ops_per_txn", "4")]
        ),
        Some(1.0)
    );

    // A real Prometheus scrapes the Pushgateway; every query of the benchmarks dashboard,
    // with its variables at "all", has a series for each workload.
    let prom = tests::RunningPrometheus::start(
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: pushgateway\n    honor_labels: true\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
        &[],
    )
    .await;
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            tests::prometheus::repo_root().join("grafana/dashboards/etcd-monitor-bench.json"),
        )
        .expect("read the dashboard"),
    )
    .expect("dashboard JSON");
    let vars: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .map(|l| l.iter().filter_map(|v| v["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(vars.contains(&"workload"), "{vars:?}");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                let legend = t["legendFormat"].as_str().unwrap_or("");
                assert!(
                    panel["type"] == "table" || legend.contains("{{workload}}"),
                    "{}: the legend {legend:?} does not name the workload",
                    panel["title"]
                );
                queries.push((
                    panel["title"].as_str().unwrap_or("").to_owned(),
                    e.replace("$job", ".*").replace("$workload", ".*"),
                ));
            }
        }
    }
    assert!(queries.len() >= 10, "{queries:?}");
    for (title, expr) in &queries {
        // The service time is only pushed by rated runs (write here); errors by kind only
        // when there were errors.
        let only: &[&str] = if expr.contains("service_time") {
            &["write"]
        } else if expr.contains("etcd_bench_errors_total")
            && !expr.contains("etcd_bench_requests_total")
        {
            continue;
        } else {
            &["write", "read", "mixed", "txn", "watch"]
        };
        let seen = tests::wait_for(
            &format!("{title}: {expr} for every workload"),
            Duration::from_secs(30),
            || async {
                let got: std::collections::BTreeSet<String> = prom
                    .query(expr)
                    .await
                    .iter()
                    .filter_map(|s| s["metric"]["workload"].as_str().map(str::to_owned))
                    .collect();
                only.iter().all(|w| got.contains(*w)).then_some(got)
            },
        )
        .await;
        assert!(!seen.is_empty());
    }
    // The error count panel counts every error kind: the watch run's missing events too.
    let errors_expr = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["title"] == "Errors")
        .and_then(|p| p["targets"][0]["expr"].as_str())
        .expect("an Errors panel")
        .replace("$job", "ci-missing")
        .replace("$workload", "watch");
    tests::wait_for(
        &format!("{errors_expr} counts 7 missing events"),
        Duration::from_secs(30),
        || async {
            let got = prom.query(&errors_expr).await;
            let v = got.first()?["value"][1].as_str()?.parse::<f64>().ok()?;
            (v == 7.0).then_some(())
        },
    )
    .await;

    // A rerun of one workload with the same job and labels replaces that workload only.
    let (code, _, err) = bench(&args(
        &cluster,
        &format!("--total 50 {push} --prefix pw/ write"),
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    let m = exporter::textformat::parse(&scrape().await).expect("parse");
    let ok = |w: &str| {
        value(
            &m,
            "etcd_bench_requests_total",
            &[("job", "ci"), ("workload", w), ("result", "ok")],
        )
    };
    assert_eq!(
        ok("write"),
        Some(50.0),
        "the rerun replaced the write group"
    );
    assert_eq!(
        value(
            &m,
            "etcd_bench_service_time_seconds",
            &[("workload", "write"), ("quantile", "0.99")]
        ),
        None,
        "the unrated rerun has no service time"
    );
    assert_eq!(ok("txn"), Some(100.0), "the txn group stays");
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
        ("--total 10 --label workload=x write", "--label"),
        ("--total 10 --label a=1 --label a=2 write", "--label"),
        ("--total 10 --label __x=1 write", "--label"),
        ("--total 10 --job= write", "--job"),
        ("--total 10 txn --ops-per-txn 0", "--ops-per-txn"),
        (
            "--total 10 --key-space 3 txn --ops-per-txn 4",
            "--ops-per-txn",
        ),
        ("--total 10 watch --watchers 2 --streams 3", "--streams"),
        ("--total 10 watch --watchers 0", "--watchers"),
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
