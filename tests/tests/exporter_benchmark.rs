//! The exporter's `POST /api/v1/performance/benchmark` against a real 3-member cluster:
//! it keeps within a share of the space quota and refuses during an alarm, a client that
//! leaves does not stop the clean-up nor free the slot early, and the collection stays on
//! time while the load runs.

use std::time::{Duration, Instant};

use tests::{wait_for, ClusterOptions, EtcdCluster, RunningExporter};

const TOKEN: &str = "s3cret-bench-token-0123456789";
/// Where the exporter's benchmark keys live (the probe prefix plus `bench/`).
const PREFIX: &str = "/etcd-monitor/probe/bench/";

async fn exporter(cluster: &EtcdCluster, interval: &str) -> RunningExporter {
    let token_file = cluster.dir.path().join("bench-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write");
    RunningExporter::for_cluster(
        cluster,
        interval,
        &["--benchmark-token-file", token_file.to_str().expect("utf8")],
    )
    .await
}

/// POSTs `body` to the endpoint with the token: status and JSON body.
async fn post(
    http: &reqwest::Client,
    exp: &RunningExporter,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = http
        .post(exp.url("/api/v1/performance/benchmark"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let code = resp.status().as_u16();
    (
        code,
        resp.json::<serde_json::Value>().await.unwrap_or_default(),
    )
}

/// Threads of this process (the exporter runs in it) named `name` (at most 15 bytes,
/// as Linux keeps them).
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

async fn cycle(exp: &RunningExporter) -> u64 {
    let (_, body) = exp.get("/health").await;
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["cycle"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_benchmark_over_the_space_budget_or_during_an_alarm_is_refused_and_writes_nothing() {
    tests::init_logs();
    const QUOTA: u64 = 4 * 1024 * 1024;
    let cluster = EtcdCluster::start_with(ClusterOptions {
        quota_backend_bytes: Some(QUOTA),
        ..ClusterOptions::default()
    })
    .await;
    let exp = exporter(&cluster, "5s").await;
    let http = reqwest::Client::new();

    // A read run fills its key space first: 10,000 keys of 1 KiB do not fit in a share
    // of 4 MiB.
    let (code, body) = post(
        &http,
        &exp,
        serde_json::json!({"workload": "read", "key_space": 10000, "val_size": 1024, "total": 100}),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    let estimate = body["estimate"]["bytes"].as_u64().expect("the estimate");
    let budget = body["budget"]["budget_bytes"].as_u64().expect("the budget");
    assert!(estimate > budget, "{body}");
    assert!(budget < QUOTA / 4, "{body}");
    assert_eq!(
        body["budget"]["quota"]["bytes"].as_u64(),
        Some(QUOTA),
        "{body}"
    );
    for figure in [estimate, budget, QUOTA] {
        assert!(
            error.contains(&format!("{figure} bytes")),
            "{figure} bytes not named in {error}"
        );
    }
    assert_eq!(cluster.count_keys(PREFIX).await, 0, "nothing was written");

    // Writes count too.
    let (code, body) = post(
        &http,
        &exp,
        serde_json::json!({"workload": "write", "total": 100000, "val_size": 4096}),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(cluster.count_keys(PREFIX).await, 0, "nothing was written");

    // A small run fits, and leaves nothing behind.
    let (code, report) = post(
        &http,
        &exp,
        serde_json::json!({"workload": "write", "clients": 4, "total": 200}),
    )
    .await;
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["writes"]["ok"], 200);
    assert_eq!(cluster.count_keys(PREFIX).await, 0);

    // Fill the cluster to its quota: NOSPACE. Then even a tiny run is refused.
    let mut client = cluster.client(0).await;
    let value = vec![b'x'; 128 * 1024];
    let mut raised = false;
    for i in 0..200 {
        match client.put(format!("/fill/{i}"), value.clone(), None).await {
            Ok(_) => {}
            Err(e) if e.to_string().contains("database space exceeded") => {
                raised = true;
                break;
            }
            Err(e) => panic!("unexpected error while filling: {e}"),
        }
    }
    assert!(raised, "the quota was never hit");
    let body = wait_for("the alarm to refuse a run", Duration::from_secs(20), || {
        let (http, exp) = (&http, &exp);
        async move {
            let (code, body) = post(
                http,
                exp,
                serde_json::json!({"workload": "write", "total": 1}),
            )
            .await;
            (code == 409).then_some(body)
        }
    })
    .await;
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("NOSPACE") && body["alarm"]["alarm"] == "NOSPACE",
        "{body}"
    );
    assert_eq!(cluster.count_keys(PREFIX).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_run_leaves_no_keys_and_the_next_run_starts() {
    tests::init_logs();
    let cluster = EtcdCluster::start(3).await;
    let exp = exporter(&cluster, "5s").await;
    let http = reqwest::Client::new();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("client");
    let sent = impatient
        .post(exp.url("/api/v1/performance/benchmark"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"workload": "write", "clients": 4, "duration": 5.0, "rate": 200}))
        .send()
        .await;
    assert!(
        sent.as_ref().is_err_and(reqwest::Error::is_timeout),
        "{sent:?}"
    );

    // The run outlives its request: it keeps writing and keeps its slot.
    wait_for("the run's keys", Duration::from_secs(3), || async {
        (cluster.count_keys(PREFIX).await > 0).then_some(())
    })
    .await;
    let (code, body) = post(
        &http,
        &exp,
        serde_json::json!({"workload": "write", "total": 10}),
    )
    .await;
    assert_eq!(code, 409, "{body}");

    // When it ends, its keys go, then its slot.
    wait_for(
        "the run's keys to be deleted",
        Duration::from_secs(30),
        || async { (cluster.count_keys(PREFIX).await == 0).then_some(()) },
    )
    .await;
    let (code, report) = wait_for("the slot to be free", Duration::from_secs(30), || {
        let (http, exp) = (&http, &exp);
        async move {
            let (code, body) = post(
                http,
                exp,
                serde_json::json!({"workload": "write", "clients": 2, "total": 50}),
            )
            .await;
            (code != 409).then_some((code, body))
        }
    })
    .await;
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["writes"]["ok"], 50);
    assert_eq!(cluster.count_keys(PREFIX).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_stays_on_time_during_a_benchmark() {
    tests::init_logs();
    let cluster = EtcdCluster::start(3).await;
    let exp = exporter(&cluster, "1s").await;
    exp.wait_cycles(2).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let before = cycle(&exp).await;
    let started = Instant::now();
    let run = {
        let url = exp.url("/api/v1/performance/benchmark");
        tokio::spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({
                    "workload": "write", "conns": 10, "clients": 200, "duration": 8.0
                }))
                .send()
                .await
                .expect("POST");
            let code = resp.status().as_u16();
            (
                code,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        })
    };
    // The load runs on threads of its own, not on the runtime the collector uses.
    wait_for("the load's threads", Duration::from_secs(5), || async {
        (threads_named("etcd-bench-load") > 0).then_some(())
    })
    .await;
    // Every two seconds of the run, at least one cycle (the interval is one second).
    let mut last = before;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = cycle(&exp).await;
        assert!(
            now > last,
            "no cycle in 2 s during the benchmark ({last} → {now})"
        );
        last = now;
    }
    let (code, report) = run.await.expect("join");
    let elapsed = started.elapsed().as_secs_f64();
    let after = cycle(&exp).await;
    assert_eq!(code, 200, "{report}");
    assert!(
        report["writes"]["ok"].as_u64().is_some_and(|n| n > 0),
        "{report}"
    );
    eprintln!(
        "{} cycles in {elapsed:.1} s of benchmark at {:.0} requests/s",
        after - before,
        report["throughput"].as_f64().unwrap_or(0.0)
    );
    // At the 1 s interval, at least half the cycles the run's time allows.
    let expected = (elapsed / 2.0).floor() as u64;
    assert!(
        after - before >= expected,
        "{} cycles in {elapsed:.1} s of benchmark, expected at least {expected}",
        after - before
    );
    assert_eq!(cluster.count_keys(PREFIX).await, 0);
    // And they end with the run (other tests in this process may run one too: wait).
    wait_for(
        "the benchmark's threads to end",
        Duration::from_secs(30),
        || async {
            (threads_named("etcd-bench-load") + threads_named("etcd-bench") == 0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_clusters_a_run_names_its_cluster_and_each_has_its_own_slot() {
    tests::init_logs();
    let east = EtcdCluster::start(3).await;
    let west = EtcdCluster::start(3).await;
    let config = east.dir.path().join("clusters.yml");
    std::fs::write(
        &config,
        format!(
            "clusters:\n{}{}",
            tests::exporter::config_entry("east", &east),
            tests::exporter::config_entry("west", &west)
        ),
    )
    .expect("write config");
    let token_file = east.dir.path().join("bench-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write");
    let exp = RunningExporter::start(&[
        "--config".into(),
        config.to_string_lossy().into_owned(),
        "--interval".into(),
        "5s".into(),
        "--benchmark-token-file".into(),
        token_file.to_string_lossy().into_owned(),
    ])
    .await;
    let http = reqwest::Client::new();
    let post_to = |cluster: Option<&str>, body: serde_json::Value| {
        let url = match cluster {
            Some(c) => exp.url(&format!("/api/v1/performance/benchmark?cluster={c}")),
            None => exp.url("/api/v1/performance/benchmark"),
        };
        let req = http.post(url).bearer_auth(TOKEN).json(&body);
        async move {
            let resp = req.send().await.expect("POST");
            let code = resp.status().as_u16();
            (
                code,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let small = serde_json::json!({"workload": "write", "clients": 2, "total": 50});

    let (code, body) = post_to(None, small.clone()).await;
    assert_eq!(code, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("east") && error.contains("west"), "{body}");
    let (code, body) = post_to(Some("north"), small.clone()).await;
    assert_eq!(code, 404, "{body}");

    // A run on east holds east's slot only.
    let long = tokio::spawn(post_to(
        Some("east"),
        serde_json::json!({"workload": "write", "duration": 3.0, "rate": 50}),
    ));
    wait_for("east's run to write", Duration::from_secs(3), || async {
        (east.count_keys(PREFIX).await > 0).then_some(())
    })
    .await;
    let (code, body) = post_to(Some("east"), small.clone()).await;
    assert_eq!(code, 409, "{body}");
    let (code, report) = post_to(Some("west"), small.clone()).await;
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["writes"]["ok"], 50);
    assert_eq!(west.count_keys(PREFIX).await, 0);
    let (code, report) = long.await.expect("join");
    assert_eq!(code, 200, "{report}");
    assert_eq!(east.count_keys(PREFIX).await, 0);
}
