//! The exporter against real 3-member etcd clusters: the healthy picture, losing the
//! leader, losing quorum, a frozen member.

use std::time::{Duration, Instant};

use tests::exporter::value;
use tests::{wait_for, EtcdCluster, RunningExporter};

const MEMBERS: [&str; 3] = ["m1", "m2", "m3"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_cluster_every_metric_and_the_api_agree() {
    tests::init_logs();
    let cluster = EtcdCluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let leader_name = cluster.members[leader].name.clone();
    let exp = RunningExporter::for_cluster(&cluster, "1s", &[]).await;
    exp.wait_cycles(3).await;
    let m = exp.metrics().await;

    let cluster_values = [
        ("etcd_cluster_healthy", 1.0),
        ("etcd_cluster_has_leader", 1.0),
        ("etcd_cluster_member_count", 3.0),
        ("etcd_cluster_voting_members", 3.0),
        ("etcd_cluster_quorum_size", 2.0),
        ("etcd_cluster_healthy_members", 3.0),
        ("etcd_cluster_leader_changes_total", 0.0),
        ("etcd_cluster_split_brain", 0.0),
        ("etcd_cluster_partitioned_members", 0.0),
        ("etcd_monitor_up", 1.0),
    ];
    for (name, want) in cluster_values {
        assert_eq!(value(&m, name, &[]), Some(want), "{name}");
    }
    for name in [
        "etcd_cluster_revision_divergence",
        "etcd_cluster_raft_index_divergence",
    ] {
        let v = value(&m, name, &[]).unwrap_or_else(|| panic!("{name} missing"));
        assert!((0.0..100.0).contains(&v), "{name} = {v}");
    }
    assert!(value(&m, "etcd_request_rate_per_second", &[]).is_some_and(|v| v > 0.0));
    assert!(value(&m, "etcd_monitor_collect_duration_seconds", &[]).is_some_and(|v| v > 0.0));
    assert_eq!(
        value(
            &m,
            "etcd_monitor_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    for name in [
        "etcd_request_read_latency_p50_milliseconds",
        "etcd_request_read_latency_p95_milliseconds",
        "etcd_request_read_latency_p99_milliseconds",
        "etcd_request_write_latency_p50_milliseconds",
        "etcd_request_write_latency_p95_milliseconds",
        "etcd_request_write_latency_p99_milliseconds",
    ] {
        assert!(value(&m, name, &[]).is_some_and(|v| v > 0.0), "{name}");
    }
    assert!(value(&m, "etcd_probe_write_duration_seconds_count", &[]).is_some_and(|v| v >= 2.0));

    let mut leaders = 0.0;
    for (i, member) in MEMBERS.iter().enumerate() {
        let l = [("member", *member)];
        assert_eq!(value(&m, "etcd_member_up", &l), Some(1.0), "{member} up");
        let is_leader = value(&m, "etcd_member_is_leader", &l).expect("is_leader");
        assert_eq!(
            is_leader == 1.0,
            *member == leader_name,
            "{member} is_leader"
        );
        leaders += is_leader;
        assert_eq!(value(&m, "etcd_member_is_learner", &l), Some(0.0));
        assert_eq!(value(&m, "etcd_member_has_leader", &l), Some(1.0));
        assert_eq!(value(&m, "etcd_member_partitioned", &l), Some(0.0));
        for name in [
            "etcd_member_raft_term",
            "etcd_member_raft_index",
            "etcd_member_raft_applied_index",
            "etcd_member_revision",
            "etcd_mvcc_db_total_size_bytes",
            "etcd_mvcc_db_total_size_in_use_bytes",
            "etcd_server_quota_backend_bytes",
            "etcd_server_proposals_committed_total",
            "etcd_server_proposals_applied_total",
        ] {
            assert!(
                value(&m, name, &l).is_some_and(|v| v > 0.0),
                "{name}{{member={member}}} = {:?}",
                value(&m, name, &l)
            );
        }
        for name in [
            "etcd_server_watchers",
            "etcd_server_proposals_pending",
            "etcd_server_proposals_failed_total",
        ] {
            assert!(value(&m, name, &l).is_some(), "{name}{{member={member}}}");
        }
        for name in [
            "etcd_disk_wal_fsync_duration_p95_milliseconds",
            "etcd_disk_backend_commit_duration_p95_milliseconds",
        ] {
            assert!(
                value(&m, name, &l).is_some_and(|v| v > 0.0),
                "{name}{{member={member}}}"
            );
        }
        for alarm in ["NOSPACE", "CORRUPT"] {
            assert_eq!(
                value(
                    &m,
                    "etcd_member_alarm",
                    &[("member", member), ("alarm", alarm)]
                ),
                Some(0.0)
            );
        }
        let client_url = cluster.client_url(i);
        assert_eq!(
            value(
                &m,
                "etcd_member_info",
                &[
                    ("member", member),
                    ("version", tests::etcd_version().as_str()),
                    ("client_url", &client_url)
                ]
            ),
            Some(1.0),
            "etcd_member_info of {member}"
        );
        for consistency in ["linearizable", "serializable"] {
            assert!(
                value(
                    &m,
                    "etcd_probe_read_duration_seconds_count",
                    &[("member", member), ("consistency", consistency)]
                )
                .is_some_and(|v| v >= 2.0),
                "{consistency} read probes of {member}"
            );
        }
        // A native family, passed through with the member label.
        assert_eq!(value(&m, "etcd_server_has_leader", &l), Some(1.0));
    }
    assert_eq!(leaders, 1.0);
    // The same raft term everywhere, equal to what the leader says of itself.
    let term = value(&m, "etcd_member_raft_term", &[("member", &leader_name)]);
    for member in MEMBERS {
        assert_eq!(
            value(&m, "etcd_member_raft_term", &[("member", member)]),
            term
        );
    }

    // The API tells the same story.
    let status = exp.json("/api/v1/cluster/status").await;
    assert_eq!(status["healthy"], true);
    assert_eq!(status["has_leader"], true);
    assert_eq!(status["leader"]["name"], leader_name.as_str());
    assert_eq!(status["member_count"], 3);
    assert_eq!(status["quorum_size"], 2);
    assert_eq!(status["healthy_members"], 3);
    assert_eq!(status["split_brain"], false);
    let members = exp.json("/api/v1/cluster/members").await;
    let list = members["members"].as_array().expect("members array");
    assert_eq!(list.len(), 3);
    for (i, member) in list.iter().enumerate() {
        assert_eq!(member["name"], MEMBERS[i]);
        assert_eq!(member["up"], true);
        assert_eq!(member["health"], true);
        assert_eq!(member["version"], tests::etcd_version().as_str());
        assert_eq!(member["is_leader"], MEMBERS[i] == leader_name);
        assert!(member["db_size_bytes"].as_i64().is_some_and(|v| v > 0));
        assert!(member["read_linearizable_ms"]
            .as_f64()
            .is_some_and(|v| v > 0.0));
    }
    let leader_api = exp.json("/api/v1/cluster/leader").await;
    assert_eq!(leader_api["leader"]["name"], leader_name.as_str());
    assert_eq!(
        leader_api["member"]["endpoint"],
        cluster.client_url(leader).as_str()
    );
    let history = exp.json("/api/v1/cluster/leader/history").await;
    assert_eq!(history["changes_total"], 0);
    let current = exp.json("/api/v1/metrics/current").await;
    assert_eq!(current["healthy"], true);
    assert_eq!(current["members"].as_array().map(Vec::len), Some(3));
    let points = exp.json("/api/v1/metrics/history").await;
    assert!(points["points"].as_array().is_some_and(|p| p.len() >= 3));
    let latency = exp.json("/api/v1/metrics/latency").await;
    assert!(latency["read"]["count"].as_u64().is_some_and(|n| n >= 6));
    assert!(latency["reads"].as_array().is_some_and(|r| r.len() >= 6));
    assert!(latency["write"]["p99"].as_f64().is_some_and(|v| v > 0.0));

    // The status page names the leader and every member.
    let (code, page) = exp.get("/").await;
    assert_eq!(code, 200);
    assert!(page.contains("healthy"), "{page}");
    assert!(page.contains(&format!(">{leader_name}<")), "{page}");
    for member in MEMBERS {
        assert!(page.contains(&format!(">{member}<")), "{member}: {page}");
    }

    // promtool accepts the exposition: lint remarks only (names fixed by etcd and the
    // contract), never a parse error.
    let (_, text) = exp.get("/metrics").await;
    let out = tests::promtool_check_metrics(&text);
    exp.stop().await.expect("clean stop");
    assert!(
        out.0 == 0 || out.0 == 3,
        "promtool exit {}: {}",
        out.0,
        out.1
    );
    for line in out.1.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.contains("should not have")
                || line.contains("should have \"_total\" suffix")
                || line.contains("use base unit"),
            "promtool reported more than lint: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_is_reported_as_a_leader_change() {
    tests::init_logs();
    let mut cluster = EtcdCluster::start(3).await;
    let old = cluster.wait_leader(Duration::from_secs(30)).await;
    let old_name = cluster.members[old].name.clone();
    let exp = RunningExporter::for_cluster(&cluster, "1s", &[]).await;
    exp.wait_cycles(2).await;
    assert_eq!(
        value(
            &exp.metrics().await,
            "etcd_member_is_leader",
            &[("member", &old_name)]
        ),
        Some(1.0)
    );

    cluster.kill(old);
    let killed = Instant::now();
    let new_name = wait_for(
        "a new leader in the exporter",
        Duration::from_secs(30),
        || async {
            let status = exp.json("/api/v1/cluster/leader").await;
            let name = status["leader"]["name"].as_str()?.to_owned();
            (name != old_name).then_some(name)
        },
    )
    .await;
    eprintln!(
        "new leader {new_name} reported {:?} after the kill",
        killed.elapsed()
    );

    let m = exp.metrics().await;
    assert_eq!(
        value(&m, "etcd_cluster_leader_changes_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "etcd_member_up", &[("member", &old_name)]),
        Some(0.0)
    );
    assert_eq!(
        value(&m, "etcd_member_is_leader", &[("member", &new_name)]),
        Some(1.0)
    );
    assert_eq!(value(&m, "etcd_cluster_has_leader", &[]), Some(1.0));
    assert_eq!(value(&m, "etcd_cluster_healthy_members", &[]), Some(2.0));
    let history = exp.json("/api/v1/cluster/leader/history").await;
    assert_eq!(history["changes_total"], 1);
    let change = &history["changes"][0];
    assert_eq!(change["from"], old_name.as_str());
    assert_eq!(change["to"], new_name.as_str());
    assert!(change["term"].as_u64().is_some_and(|t| t >= 3));
    assert!(change["at_unix_ms"].as_u64().is_some_and(|t| t > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_two_of_three_loses_quorum_and_restarting_them_heals() {
    tests::init_logs();
    let mut cluster = EtcdCluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let exp = RunningExporter::for_cluster(&cluster, "1s", &[]).await;
    exp.wait_cycles(2).await;
    let victims: Vec<usize> = (0..3).filter(|&i| i != (leader + 1) % 3).collect();
    let survivor = MEMBERS[(leader + 1) % 3];
    for &i in &victims {
        cluster.kill(i);
    }
    wait_for(
        "no leader and no quorum",
        Duration::from_secs(30),
        || async {
            let m = exp.metrics().await;
            (value(&m, "etcd_cluster_has_leader", &[]) == Some(0.0)
                && value(&m, "etcd_cluster_healthy_members", &[]) == Some(1.0))
            .then_some(())
        },
    )
    .await;
    let m = exp.metrics().await;
    assert_eq!(value(&m, "etcd_cluster_healthy", &[]), Some(0.0));
    assert_eq!(value(&m, "etcd_cluster_quorum_size", &[]), Some(2.0));
    assert_eq!(value(&m, "etcd_cluster_member_count", &[]), Some(3.0));
    assert_eq!(
        value(&m, "etcd_member_up", &[("member", survivor)]),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "etcd_member_has_leader", &[("member", survivor)]),
        Some(0.0)
    );
    let status = exp.json("/api/v1/cluster/status").await;
    assert_eq!(status["healthy"], false);
    assert_eq!(status["has_leader"], false);
    assert_eq!(status["healthy_members"], 1);
    assert_eq!(status["up_members"], 1);

    for &i in &victims {
        cluster.restart(i);
    }
    wait_for("the cluster to heal", Duration::from_secs(60), || async {
        let m = exp.metrics().await;
        (value(&m, "etcd_cluster_healthy", &[]) == Some(1.0)
            && value(&m, "etcd_cluster_healthy_members", &[]) == Some(3.0))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_is_down_within_two_intervals_and_the_server_stays_prompt() {
    tests::init_logs();
    let cluster = EtcdCluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let frozen = (leader + 1) % 3;
    let name = MEMBERS[frozen];
    let exp = RunningExporter::for_cluster(&cluster, "1s", &[]).await;
    exp.wait_cycles(2).await;

    let cycle_of = |v: &serde_json::Value| v["cycle"].as_u64().unwrap_or(0);
    let frozen_cycle = cycle_of(&exp.json("/api/v1/metrics/current").await);
    cluster.freeze(frozen);
    let frozen_at = Instant::now();
    let mut slowest = Duration::ZERO;
    let detected_cycle = loop {
        let t = Instant::now();
        let current = exp.json("/api/v1/metrics/current").await;
        let _ = exp.metrics().await;
        slowest = slowest.max(t.elapsed());
        let up = current["members"]
            .as_array()
            .and_then(|l| l.iter().find(|m| m["member"] == name))
            .map(|m| m["up"] == true);
        if up == Some(false) {
            break cycle_of(&current);
        }
        assert!(
            frozen_at.elapsed() < Duration::from_secs(30),
            "frozen member still reported up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "frozen member reported down {} cycles after the freeze ({:?}); slowest scrape {slowest:?}",
        detected_cycle - frozen_cycle,
        frozen_at.elapsed()
    );
    // The cycle running at the freeze may still see it; the next one must not.
    assert!(
        detected_cycle - frozen_cycle <= 2,
        "reported down only {} cycles after the freeze",
        detected_cycle - frozen_cycle
    );
    // Requests are answered from the snapshot: they never wait for the frozen member
    // (whose every request takes the whole member deadline).
    assert!(
        slowest < Duration::from_secs(2),
        "a scrape took {slowest:?}"
    );
    let members = exp.json("/api/v1/cluster/members").await;
    let m = members["members"]
        .as_array()
        .and_then(|l| l.iter().find(|m| m["name"] == name))
        .expect("frozen member listed");
    assert_eq!(m["up"], false);
    assert!(
        m["error"].as_str().is_some_and(|e| e.contains("timed out")),
        "{m}"
    );
    let status = exp.json("/api/v1/cluster/status").await;
    assert_eq!(status["has_leader"], true, "two of three keep the leader");

    cluster.thaw(frozen);
    wait_for(
        "the thawed member back up",
        Duration::from_secs(30),
        || async {
            let m = exp.metrics().await;
            (value(&m, "etcd_member_up", &[("member", name)]) == Some(1.0)).then_some(())
        },
    )
    .await;
}

/// A member that dies breaks its connection, and the exporter collects at once instead
/// of at its next tick: with a 30s interval, the killed member is down within seconds.
/// (A frozen member breaks nothing; the next cycle's deadline finds it, as tested above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_is_seen_at_once_not_at_the_next_tick() {
    tests::init_logs();
    let mut cluster = EtcdCluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let exp = RunningExporter::for_cluster(&cluster, "30s", &[]).await;
    wait_for(
        "the first cycle to see 3 healthy members",
        Duration::from_secs(20),
        || async {
            let m = exp.metrics().await;
            (value(&m, "etcd_cluster_healthy_members", &[]) == Some(3.0)).then_some(())
        },
    )
    .await;
    // The watches that notice a broken connection start after the first answers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = (leader + 1) % 3;
    let name = MEMBERS[victim];
    cluster.kill(victim);
    let killed = Instant::now();
    wait_for(
        "the killed member to be down well before the next tick (30s)",
        Duration::from_secs(10),
        || async {
            let m = exp.metrics().await;
            (value(&m, "etcd_member_up", &[("member", name)]) == Some(0.0)
                && value(&m, "etcd_cluster_healthy_members", &[]) == Some(2.0))
            .then_some(())
        },
    )
    .await;
    eprintln!(
        "killed member seen down {:.1?} after the kill",
        killed.elapsed()
    );
    // Restarted, it is watched again: killing it a second time is also seen at once.
    cluster.restart(victim);
    exp.wait_cycles(1).await;
    wait_for(
        "the restarted member to be up",
        Duration::from_secs(70),
        || async {
            let m = exp.metrics().await;
            (value(&m, "etcd_member_up", &[("member", name)]) == Some(1.0)).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill(victim);
    wait_for(
        "the member killed again to be down before the next tick",
        Duration::from_secs(10),
        || async {
            let m = exp.metrics().await;
            (value(&m, "etcd_member_up", &[("member", name)]) == Some(0.0)).then_some(())
        },
    )
    .await;
}

/// A maintenance shorter than a cycle (a rolling defrag of small databases takes under a
/// second) writes and revokes its marker between two cycles, so no cycle reads it; the
/// leader move it made is still counted as planned, because the exporter's watches saw
/// the marker written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_move_by_a_maintenance_between_two_cycles_is_planned() {
    use ctl::marker::{Marker, Operation};
    tests::init_logs();
    let cluster = EtcdCluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let exp = RunningExporter::for_cluster(&cluster, "10s", &[]).await;
    exp.wait_cycles(1).await;
    // The watches start after a member's first answer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cycle = exp.cycle().await;

    let mut c = cluster.client(leader).await;
    let to = (leader + 1) % 3;
    let to_id = c
        .member_list()
        .await
        .expect("member list")
        .members()
        .iter()
        .find(|m| m.name() == MEMBERS[to])
        .map(|m| m.id())
        .expect("the target is listed");
    let marker = ctl::marker::hold(&c, Marker::new(Operation::Defrag, "test"))
        .await
        .expect("marker written");
    c.move_leader(to_id).await.expect("leadership moved");
    marker.release().await.expect("marker revoked");
    assert_eq!(
        exp.cycle().await,
        cycle,
        "the maintenance must fit between two cycles for this test to mean anything"
    );

    wait_for(
        "the exporter to see the new leader",
        Duration::from_secs(30),
        || async {
            let m = exp.metrics().await;
            (value(&m, "etcd_member_is_leader", &[("member", MEMBERS[to])]) == Some(1.0))
                .then_some(())
        },
    )
    .await;
    let m = exp.metrics().await;
    assert_eq!(
        value(&m, "etcd_cluster_leader_changes_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "etcd_cluster_leader_changes_planned_total", &[]),
        Some(1.0),
        "the move was made under a maintenance marker"
    );
    let history = exp.json("/api/v1/cluster/leader/history").await;
    assert_eq!(history["changes"][0]["planned"], "defrag", "{history}");
}
