//! One exporter watching two real clusters from `--config`: every series carries
//! `cluster`, the API takes `?cluster=`, a fault in one cluster shows only there, and one
//! cluster's frozen members never delay the other's cycles.

use std::time::Duration;

use clap::Parser as _;

use tests::exporter::value;
use tests::{EtcdCluster, RunningExporter};

/// Held by each test that starts two clusters: the harness runs at most two at once
/// ([`tests::MAX_CLUSTERS`]), so two such tests that each got one would wait for each
/// other for ever.
static TWO_CLUSTERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn cycle_of(exp: &RunningExporter, cluster: &str) -> u64 {
    let body = exp.json("/api/v1/clusters").await;
    body["clusters"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == cluster))
        .and_then(|c| c["cycle"].as_u64())
        .unwrap_or(0)
}

/// An exporter on a `--config` file listing `clusters` (name, cluster), at a 1s interval;
/// the file's temp dir lives as long as the caller keeps it.
async fn exporter_on(clusters: &[(&str, &EtcdCluster)]) -> (tempfile::TempDir, RunningExporter) {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("clusters.yml");
    let entries: String = clusters
        .iter()
        .map(|(name, c)| tests::exporter::config_entry(name, c))
        .collect();
    std::fs::write(&config, format!("clusters:\n{entries}")).expect("write config");
    let exp = RunningExporter::start(&[
        "--config".into(),
        config.to_string_lossy().into_owned(),
        "--interval".into(),
        "1s".into(),
    ])
    .await;
    (dir, exp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_are_told_apart_and_a_fault_shows_only_in_its_own() {
    let _two = TWO_CLUSTERS.lock().await;
    let east = EtcdCluster::start(3).await;
    let west = EtcdCluster::start(3).await;
    let (_dir, exp) = exporter_on(&[("east", &east), ("west", &west)]).await;
    exp.wait_cycles(3).await;

    let listed = exp.json("/api/v1/clusters").await;
    let names: Vec<&str> = listed["clusters"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["east", "west"]);
    let metrics = exp.metrics().await;
    for cluster in ["east", "west"] {
        assert_eq!(
            value(&metrics, "etcd_cluster_healthy", &[("cluster", cluster)]),
            Some(1.0),
            "{cluster}"
        );
        assert_eq!(
            value(
                &metrics,
                "etcd_member_up",
                &[("cluster", cluster), ("member", &east.members[0].name)]
            ),
            Some(1.0),
            "the same member name in both clusters is two series"
        );
        assert!(
            value(
                &metrics,
                "etcd_server_has_leader",
                &[("cluster", cluster), ("member", &east.members[0].name)]
            )
            .is_some(),
            "members' own families carry the cluster too"
        );
    }

    // The API: one cluster at a time.
    let (code, body) = exp.get("/api/v1/cluster/status").await;
    assert_eq!(code, 400, "several clusters need ?cluster=: {body}");
    assert!(body.contains("east") && body.contains("west"), "{body}");
    let (code, body) = exp.get("/api/v1/cluster/status?cluster=north").await;
    assert_eq!(code, 404, "{body}");
    let status = exp.json("/api/v1/cluster/status?cluster=west").await;
    assert_eq!(status["cluster"], "west");
    assert_eq!(status["healthy"], true);

    // A member of west stops: west degrades, east does not notice.
    let mut west = west;
    west.stop(2);
    let down = west.members[2].name.clone();
    tests::wait_for("west's member down", Duration::from_secs(30), || async {
        let m = exp.metrics().await;
        (value(
            &m,
            "etcd_member_up",
            &[("cluster", "west"), ("member", &down)],
        ) == Some(0.0))
        .then_some(())
    })
    .await;
    let metrics = exp.metrics().await;
    assert_eq!(
        value(
            &metrics,
            "etcd_member_up",
            &[("cluster", "east"), ("member", &down)]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &metrics,
            "etcd_cluster_healthy_members",
            &[("cluster", "west")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &metrics,
            "etcd_cluster_healthy_members",
            &[("cluster", "east")]
        ),
        Some(3.0)
    );
    let members = exp.json("/api/v1/cluster/members?cluster=west").await;
    let stopped = members["members"]
        .as_array()
        .and_then(|l| l.iter().find(|m| m["name"] == down.as_str()))
        .expect("the stopped member is listed");
    assert_eq!(stopped["up"], false);

    // West's remaining members freeze: every west cycle now waits out its deadline, while
    // east keeps its 1 s pace.
    west.freeze(0);
    west.freeze(1);
    exp.wait_cycles(1).await;
    let (east_before, west_before) = (cycle_of(&exp, "east").await, cycle_of(&exp, "west").await);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let east_cycles = cycle_of(&exp, "east").await - east_before;
    let west_cycles = cycle_of(&exp, "west").await - west_before;
    west.thaw(0);
    west.thaw(1);
    assert!(
        east_cycles >= 6,
        "east ran {east_cycles} cycles in 10 s at a 1 s interval (west ran {west_cycles})"
    );
    let metrics = exp.metrics().await;
    assert_eq!(
        value(&metrics, "etcd_cluster_healthy", &[("cluster", "east")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_bad_config_file_names_the_cluster_and_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("clusters.yml");
    for (yaml, needles) in [
        (
            "clusters:\n  - name: a\n    endpoints: http://127.0.0.1:2379\n    cacert: missing.pem\n",
            &["clusters[0] (a)", "cacert", "missing.pem"][..],
        ),
        (
            "clusters:\n  - name: a\n    endpoints: [http://127.0.0.1:2379]\n  - name: a\n    endpoints: [http://127.0.0.1:2379]\n",
            &["clusters[1] (a)", "name", "twice"][..],
        ),
        (
            "clusters:\n  - name: a\n    endpoints: [http://127.0.0.1:2379]\n    endpoint: x\n",
            &["unknown field `endpoint`"][..],
        ),
        ("clusters: []\n", &["lists no cluster"][..]),
        (
            "clusters:\n  - name: \"a b\"\n    endpoints: [http://127.0.0.1:2379]\n",
            &["clusters[0]", "name", "letters"][..],
        ),
    ] {
        std::fs::write(&config, yaml).expect("write");
        let args = exporter::Args::try_parse_from([
            "etcd-monitor",
            "--config",
            config.to_str().expect("utf8"),
        ])
        .expect("flags");
        let err = exporter::Config::from_args(args)
            .expect_err(yaml)
            .to_string();
        assert!(err.starts_with("--config: "), "{err}");
        for n in needles {
            assert!(err.contains(n), "{yaml}: {err:?} lacks {n:?}");
        }
    }
    let args = exporter::Args::try_parse_from([
        "etcd-monitor",
        "--config",
        config.to_str().expect("utf8"),
        "--endpoints",
        "http://10.0.0.1:2379",
    ])
    .expect("flags");
    let err = exporter::Config::from_args(args)
        .expect_err("both")
        .to_string();
    assert!(err.contains("drop --endpoints"), "{err}");
}

/// Each cluster of `--config` keeps its own connection settings: one serves clients over
/// TLS with client certificates, the other has etcd auth on. Both are collected, healthy,
/// with their members' own families (scraped with the TLS settings) and a write probe
/// (which needs the user's permissions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_and_an_auth_cluster_from_the_config_file() {
    let _two = TWO_CLUSTERS.lock().await;
    let secure = EtcdCluster::start_with(tests::ClusterOptions {
        size: 1,
        tls: true,
        ..tests::ClusterOptions::default()
    })
    .await;
    let authed = EtcdCluster::start_with(tests::ClusterOptions {
        size: 1,
        auth: true,
        ..tests::ClusterOptions::default()
    })
    .await;
    let (dir, exp) = exporter_on(&[("secure", &secure), ("authed", &authed)]).await;
    let yaml = std::fs::read_to_string(dir.path().join("clusters.yml")).expect("config");
    assert!(
        yaml.contains("cert:") && yaml.contains("password_file:"),
        "the entries carry TLS and auth: {yaml}"
    );
    exp.wait_cycles(3).await;
    let metrics = exp.metrics().await;
    for cluster in ["secure", "authed"] {
        let labels = [("cluster", cluster), ("member", "m1")];
        assert_eq!(
            value(&metrics, "etcd_cluster_healthy", &[("cluster", cluster)]),
            Some(1.0),
            "{cluster}"
        );
        assert_eq!(
            value(&metrics, "etcd_server_has_leader", &labels),
            Some(1.0),
            "{cluster}: the member's own /metrics"
        );
        let writes = value(
            &metrics,
            "etcd_probe_write_duration_seconds_count",
            &[("cluster", cluster)],
        );
        assert!(
            writes.is_some_and(|n| n >= 1.0),
            "{cluster}: write probes succeed ({writes:?})"
        );
        let errors = exp
            .json(&format!("/api/v1/cluster/members?cluster={cluster}"))
            .await;
        assert!(
            errors["members"][0]["error"].is_null()
                && errors["members"][0]["metrics_error"].is_null(),
            "{cluster}: {errors}"
        );
    }
}
