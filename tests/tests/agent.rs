//! The agent next to real etcd members, and the exporter joining three agents.

use std::time::Duration;

use tests::exporter::value;
use tests::{wait_for, EtcdCluster, RunningAgent, RunningExporter};

fn vmrss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

fn agent_value(exp: &exporter::textformat::Exposition, name: &str) -> Option<f64> {
    value(exp, name, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reports_a_real_member() {
    tests::init_logs();
    let cluster = EtcdCluster::start(1).await;
    let pid = cluster.members[0].pid().expect("running");
    let agent = RunningAgent::for_member(&cluster, 0, "200ms", "200ms", &[]).await;

    // The process RSS equals /proc/<pid>/status at that moment, within two pages.
    let page = 4096.0;
    let mut matched = false;
    for _ in 0..5 {
        let before = vmrss_bytes(pid) as f64;
        let t0 = agent.snapshot().await["at_unix_ms"].as_u64().unwrap_or(0);
        let snap = wait_for("a fresh collection", Duration::from_secs(10), || async {
            let s = agent.snapshot().await;
            (s["at_unix_ms"].as_u64().unwrap_or(0) > t0).then_some(s)
        })
        .await;
        let after = vmrss_bytes(pid) as f64;
        let reported = snap["etcd_process"]["resident_memory_bytes"]
            .as_f64()
            .expect("etcd process found");
        assert_eq!(snap["etcd_process"]["pid"].as_u64(), Some(u64::from(pid)));
        let (lo, hi) = (
            before.min(after) - 2.0 * page,
            before.max(after) + 2.0 * page,
        );
        if (lo..=hi).contains(&reported) {
            matched = true;
            break;
        }
        // etcd's RSS moved while we looked; only a steady moment proves anything.
        if (before - after).abs() <= page {
            panic!("agent says {reported} bytes, /proc says {before}..{after}");
        }
    }
    assert!(matched, "never a steady moment to compare RSS");
    let m = agent.metrics().await;
    assert_eq!(agent_value(&m, "etcd_agent_etcd_process_up"), Some(1.0));
    assert!(agent_value(&m, "etcd_agent_etcd_process_open_fds").is_some_and(|v| v > 5.0));
    assert!(agent_value(&m, "etcd_agent_etcd_process_threads").is_some_and(|v| v >= 1.0));

    // The fsync histogram count grows with each probe.
    let c1 = agent_value(&m, "etcd_agent_fsync_duration_seconds_count").expect("count");
    let c2 = wait_for("more probes", Duration::from_secs(10), || async {
        let v = agent_value(
            &agent.metrics().await,
            "etcd_agent_fsync_duration_seconds_count",
        )?;
        (v >= c1 + 3.0).then_some(v)
    })
    .await;
    assert!(c2 > c1);
    assert_eq!(
        agent_value(&agent.metrics().await, "etcd_agent_fsync_errors_total"),
        Some(0.0)
    );
    // The probe lives beside the data dir, never inside it.
    let data_dir = &cluster.members[0].data_dir;
    let probe_dir =
        agent::config::default_probe_dir(&std::fs::canonicalize(data_dir).expect("canon"));
    assert!(probe_dir.join(agent::fsync_probe::PROBE_FILE).is_file());
    assert!(!probe_dir.starts_with(data_dir));

    // Client connections rise when we open more.
    let base = agent_value(&agent.metrics().await, "etcd_agent_etcd_client_connections")
        .expect("connections");
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut c = cluster.client(0).await;
        c.get("x", None).await.expect("get");
        clients.push(c);
    }
    wait_for(
        "five more client connections",
        Duration::from_secs(10),
        || async {
            let v = agent_value(&agent.metrics().await, "etcd_agent_etcd_client_connections")?;
            (v >= base + 5.0).then_some(())
        },
    )
    .await;
    drop(clients);

    // Data dir bytes grow after writes.
    let before = agent_value(&agent.metrics().await, "etcd_agent_data_dir_bytes").expect("bytes");
    let mut c = cluster.client(0).await;
    let big = vec![b'v'; 100 * 1024];
    for i in 0..80 {
        c.put(format!("/grow/{i}"), big.clone(), None)
            .await
            .expect("put");
    }
    wait_for("the data dir to grow", Duration::from_secs(20), || async {
        let v = agent_value(&agent.metrics().await, "etcd_agent_data_dir_bytes")?;
        (v > before).then_some(())
    })
    .await;

    // The host collectors all worked here, and promtool accepts the output.
    let m = agent.metrics().await;
    for c in [
        "diskstats",
        "filesystem",
        "datadir",
        "memory",
        "cpu",
        "network",
        "process",
        "connections",
    ] {
        assert_eq!(
            value(&m, "etcd_agent_collector_success", &[("collector", c)]),
            Some(1.0),
            "collector {c}"
        );
    }
    for name in [
        "etcd_agent_disk_writes_completed_total",
        "etcd_agent_disk_written_bytes_total",
        "etcd_agent_filesystem_size_bytes",
        "etcd_agent_filesystem_avail_bytes",
        "etcd_agent_memory_total_bytes",
        "etcd_agent_memory_available_bytes",
        "etcd_agent_load1",
        "etcd_agent_etcd_process_cpu_seconds_total",
        "etcd_agent_etcd_process_max_fds",
    ] {
        assert!(agent_value(&m, name).is_some(), "{name}");
    }
    assert!(value(&m, "etcd_agent_cpu_seconds_total", &[("mode", "user")]).is_some());
    assert!(value(
        &m,
        "etcd_agent_network_receive_bytes_total",
        &[("device", "lo")]
    )
    .is_some());
    for f in m.families.iter().flat_map(|f| &f.samples) {
        assert_eq!(f.label("member"), Some("m1"), "{} lacks member", f.name);
    }
    let (_, text) = agent.get("/metrics").await;
    let (code, out) = tests::promtool_check_metrics(&text);
    assert_eq!(code, 0, "promtool: {out}");
    agent.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_etcd_process_and_an_unwritable_probe_file_are_reported_not_fatal() {
    tests::init_logs();
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().join("nobody.etcd");
    std::fs::create_dir(&data_dir).expect("mkdir");
    let probe_dir = dir.path().join("probe");
    // A directory where the probe file goes: not writable, even for root.
    std::fs::create_dir_all(probe_dir.join(agent::fsync_probe::PROBE_FILE)).expect("mkdir");
    let agent = RunningAgent::start(&[
        "--member".into(),
        "lonely".into(),
        "--data-dir".into(),
        data_dir.to_string_lossy().into_owned(),
        "--fsync-probe-dir".into(),
        probe_dir.to_string_lossy().into_owned(),
        "--fsync-probe-interval".into(),
        "100ms".into(),
        "--interval".into(),
        "200ms".into(),
    ])
    .await;
    let errors = wait_for("fsync errors", Duration::from_secs(10), || async {
        let v = agent_value(&agent.metrics().await, "etcd_agent_fsync_errors_total")?;
        (v >= 3.0).then_some(v)
    })
    .await;
    assert!(errors >= 3.0);
    let m = agent.metrics().await;
    assert_eq!(agent_value(&m, "etcd_agent_etcd_process_up"), Some(0.0));
    assert_eq!(
        value(
            &m,
            "etcd_agent_collector_success",
            &[("collector", "process")]
        ),
        Some(0.0)
    );
    assert_eq!(
        agent_value(&m, "etcd_agent_fsync_duration_seconds_count"),
        Some(0.0)
    );
    // The other collectors are unaffected.
    assert_eq!(
        value(
            &m,
            "etcd_agent_collector_success",
            &[("collector", "memory")]
        ),
        Some(1.0)
    );
    // The snapshot copies the probe's state at each collection: wait for one that has it.
    let snap = wait_for(
        "the probe error in the snapshot",
        Duration::from_secs(10),
        || async {
            let s = agent.snapshot().await;
            s["fsync"]["last_error"].is_string().then_some(s)
        },
    )
    .await;
    assert!(snap["fsync"]["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("fsync-probe.dat")));
    let process_error = snap["collectors"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "process"))
        .and_then(|c| c["error"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(process_error.contains("no etcd process"), "{process_error}");
    let (status, _) = agent.get("/health").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_joins_three_agents_and_notices_one_going_away() {
    tests::init_logs();
    let cluster = EtcdCluster::start(3).await;
    // Agents collecting rarely keep one snapshot, so both sides see the same numbers.
    let mut agents = Vec::new();
    for i in 0..3 {
        agents.push(RunningAgent::for_member(&cluster, i, "1h", "0", &[]).await);
    }
    let mut flags = vec![];
    for (i, a) in agents.iter().enumerate() {
        flags.push("--agent".to_owned());
        // One pinned to its member, the others matched by the name they report.
        flags.push(if i == 0 {
            format!("m1={}", a.url())
        } else {
            a.url()
        });
    }
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let exp = RunningExporter::for_cluster(&cluster, "1s", &flag_refs).await;
    exp.wait_cycles(2).await;
    let m = exp.metrics().await;
    for (i, a) in agents.iter().enumerate() {
        let name = format!("m{}", i + 1);
        let l = [("member", name.as_str())];
        let snap = a.snapshot().await;
        assert_eq!(value(&m, "etcd_member_agent_up", &l), Some(1.0), "{name}");
        assert_eq!(
            value(&m, "etcd_server_memory_usage_bytes", &l),
            snap["etcd_process"]["resident_memory_bytes"].as_f64(),
            "{name} memory"
        );
        assert_eq!(
            value(&m, "etcd_server_disk_usage_bytes", &l),
            snap["data_dir_bytes"].as_f64(),
            "{name} disk"
        );
        assert_eq!(
            value(&m, "etcd_server_active_connections", &l),
            snap["etcd_client_connections"].as_f64(),
            "{name} connections"
        );
        assert!(value(&m, "etcd_server_memory_usage_bytes", &l).is_some_and(|v| v > 1e6));
    }
    let members = exp.json("/api/v1/cluster/members").await;
    for member in members["members"].as_array().expect("members") {
        assert_eq!(member["agent"]["up"], true);
        assert_eq!(member["agent"]["host"]["member"], member["name"]);
        assert!(member["agent"]["host"]["memory"]["total_bytes"]
            .as_u64()
            .is_some());
    }

    // Kill one agent: only that member's agent_up drops, and nothing else about it.
    let gone = agents.remove(1);
    let gone_url = gone.url();
    gone.stop().await.expect("stop");
    wait_for("m2's agent down", Duration::from_secs(20), || async {
        let m = exp.metrics().await;
        (value(&m, "etcd_member_agent_up", &[("member", "m2")]) == Some(0.0)).then_some(())
    })
    .await;
    let m = exp.metrics().await;
    assert_eq!(
        value(&m, "etcd_member_agent_up", &[("member", "m1")]),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "etcd_member_agent_up", &[("member", "m3")]),
        Some(1.0)
    );
    assert_eq!(value(&m, "etcd_member_up", &[("member", "m2")]), Some(1.0));
    // The per-URL view says the same, also for an agent no member could be matched to.
    assert_eq!(
        value(&m, "etcd_monitor_agent_up", &[("agent", gone_url.as_str())]),
        Some(0.0)
    );
    for a in &agents {
        assert_eq!(
            value(&m, "etcd_monitor_agent_up", &[("agent", a.url().as_str())]),
            Some(1.0)
        );
    }
    assert_eq!(
        value(&m, "etcd_server_memory_usage_bytes", &[("member", "m2")]),
        None
    );
    assert_eq!(value(&m, "etcd_cluster_healthy", &[]), Some(1.0));
    assert!(value(
        &m,
        "etcd_monitor_collect_errors_total",
        &[("source", "agent")]
    )
    .is_some_and(|v| v > 0.0));
}
