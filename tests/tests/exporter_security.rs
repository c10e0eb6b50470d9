//! The exporter against TLS (client-certificate) and etcd-auth clusters, and with the
//! wrong CA.

use std::time::Duration;

use tests::exporter::{cluster_flags, value};
use tests::tls::TlsFiles;
use tests::{wait_for, ClusterOptions, EtcdCluster, RunningExporter};

async fn tls_cluster() -> EtcdCluster {
    EtcdCluster::start_with(ClusterOptions {
        tls: true,
        ..ClusterOptions::default()
    })
    .await
}

async fn wait_healthy(exp: &RunningExporter) {
    wait_for(
        "a healthy cluster in the exporter",
        Duration::from_secs(30),
        || async {
            let m = exp.metrics().await;
            (value(&m, "etcd_cluster_healthy", &[]) == Some(1.0)).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_with_client_certificates() {
    tests::init_logs();
    let cluster = tls_cluster().await;
    let exp = RunningExporter::for_cluster(&cluster, "1s", &[]).await;
    wait_healthy(&exp).await;
    exp.wait_cycles(2).await;
    let m = exp.metrics().await;
    for member in ["m1", "m2", "m3"] {
        let l = [("member", member)];
        assert_eq!(value(&m, "etcd_member_up", &l), Some(1.0));
        // /metrics over mTLS too: native families are there.
        assert_eq!(value(&m, "etcd_server_has_leader", &l), Some(1.0));
        assert!(value(&m, "etcd_probe_read_duration_seconds_count", &l).is_some());
    }
    assert!(value(&m, "etcd_probe_write_duration_seconds_count", &[]).is_some_and(|v| v > 0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_is_a_clear_error_and_members_down_not_a_crash() {
    tests::init_logs();
    let cluster = tls_cluster().await;
    let other = TlsFiles::other_ca(cluster.dir.path());
    let mut flags = cluster_flags(&cluster);
    let i = flags
        .iter()
        .position(|f| f == "--cacert")
        .expect("--cacert");
    flags[i + 1] = other.to_string_lossy().into_owned();
    flags.extend(["--interval".to_owned(), "1s".to_owned()]);
    let exp = RunningExporter::start(&flags).await;
    exp.wait_cycles(2).await;
    let m = exp.metrics().await;
    assert_eq!(value(&m, "etcd_cluster_healthy", &[]), Some(0.0));
    let members = exp.json("/api/v1/cluster/members").await;
    let list = members["members"].as_array().expect("members");
    assert!(!list.is_empty());
    for member in list {
        assert_eq!(member["up"], false, "{member}");
        let err = member["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            err.contains("certificate") || err.contains("issuer"),
            "the error should name the certificate problem: {err}"
        );
    }
    for s in m.families.iter().flat_map(|f| &f.samples) {
        if s.name == "etcd_member_up" {
            assert_eq!(s.value, 0.0);
        }
    }
    assert!(
        value(
            &m,
            "etcd_monitor_collect_errors_total",
            &[("source", "status")]
        )
        .is_some()
            || value(
                &m,
                "etcd_monitor_collect_errors_total",
                &[("source", "connect")]
            )
            .is_some()
    );
    exp.stop()
        .await
        .expect("the exporter keeps running and stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_verification_must_be_asked_for() {
    tests::init_logs();
    let cluster = tls_cluster().await;
    let mut flags = cluster_flags(&cluster);
    let i = flags
        .iter()
        .position(|f| f == "--cacert")
        .expect("--cacert");
    flags.drain(i..i + 2);
    flags.extend(["--interval".to_owned(), "1s".to_owned()]);
    // Without a CA the system roots are used, and they do not know the test CA.
    let verifying = RunningExporter::start(&flags).await;
    verifying.wait_cycles(2).await;
    let m = verifying.metrics().await;
    assert_eq!(value(&m, "etcd_cluster_healthy", &[]), Some(0.0));
    // With verification explicitly off, the same flags work (client cert still sent).
    flags.push("--insecure-skip-tls-verify".to_owned());
    let insecure = RunningExporter::start(&flags).await;
    wait_healthy(&insecure).await;
    let m = insecure.metrics().await;
    for member in ["m1", "m2", "m3"] {
        assert_eq!(
            value(&m, "etcd_member_up", &[("member", member)]),
            Some(1.0)
        );
        assert_eq!(
            value(&m, "etcd_server_has_leader", &[("member", member)]),
            Some(1.0)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_cluster_with_a_password_file() {
    tests::init_logs();
    let cluster = EtcdCluster::start_with(ClusterOptions {
        auth: true,
        ..ClusterOptions::default()
    })
    .await;
    let exp = RunningExporter::for_cluster(&cluster, "1s", &[]).await;
    wait_healthy(&exp).await;
    exp.wait_cycles(2).await;
    let m = exp.metrics().await;
    assert_eq!(value(&m, "etcd_cluster_member_count", &[]), Some(3.0));
    assert!(value(&m, "etcd_probe_write_duration_seconds_count", &[]).is_some_and(|v| v > 0.0));
    assert_eq!(
        value(
            &m,
            "etcd_monitor_collect_errors_total",
            &[("source", "probe_write")]
        ),
        None,
        "writes are authorised"
    );
    // A wrong password is reported per member, not a crash.
    // A distinctive wrong password, to look for anywhere the exporter shows text.
    let secret = "Zq7-not-the-root-password-4kX";
    let bad = cluster.dir.path().join("bad-password");
    std::fs::write(&bad, format!("{secret}\n")).expect("write");
    let mut flags = cluster_flags(&cluster);
    let i = flags
        .iter()
        .position(|f| f == "--password-file")
        .expect("flag");
    flags[i + 1] = bad.to_string_lossy().into_owned();
    flags.extend(["--interval".to_owned(), "1s".to_owned()]);
    let wrong = RunningExporter::start(&flags).await;
    wrong.wait_cycles(2).await;
    let members = wrong.json("/api/v1/cluster/members").await;
    for member in members["members"].as_array().expect("members") {
        assert_eq!(member["up"], false);
        let err = member["error"].as_str().unwrap_or_default();
        assert!(err.contains("authentication failed"), "{err}");
    }
    for path in [
        "/metrics",
        "/api/v1/cluster/status",
        "/api/v1/cluster/members",
        "/api/v1/metrics/current",
        "/api/v1/metrics/latency",
        "/",
    ] {
        let (_, body) = wrong.get(path).await;
        assert!(!body.contains(secret), "the password shows in {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nospace_alarm_on_a_real_member() {
    tests::init_logs();
    let cluster = EtcdCluster::start_with(ClusterOptions {
        quota_backend_bytes: Some(1024 * 1024),
        ..ClusterOptions::default()
    })
    .await;
    let exp = RunningExporter::for_cluster(&cluster, "1s", &[]).await;
    exp.wait_cycles(1).await;
    let mut client = cluster.client(0).await;
    let value_bytes = vec![b'x'; 64 * 1024];
    let mut raised = false;
    for i in 0..200 {
        match client
            .put(format!("/fill/{i}"), value_bytes.clone(), None)
            .await
        {
            Ok(_) => {}
            Err(e) if e.to_string().contains("database space exceeded") => {
                raised = true;
                break;
            }
            Err(e) => panic!("unexpected error while filling: {e}"),
        }
    }
    assert!(raised, "the quota was never hit");
    wait_for(
        "NOSPACE in the exporter",
        Duration::from_secs(20),
        || async {
            let m = exp.metrics().await;
            ["m1", "m2", "m3"]
                .iter()
                .any(|member| {
                    value(
                        &m,
                        "etcd_member_alarm",
                        &[("member", member), ("alarm", "NOSPACE")],
                    ) == Some(1.0)
                })
                .then_some(())
        },
    )
    .await;
    let m = exp.metrics().await;
    assert_eq!(value(&m, "etcd_cluster_healthy", &[]), Some(0.0));
    let status = exp.json("/api/v1/cluster/status").await;
    let alarms = status["alarms"].as_array().expect("alarms");
    assert!(!alarms.is_empty());
    assert!(alarms.iter().all(|a| a["alarm"] == "NOSPACE"), "{alarms:?}");
    assert!(alarms[0]["member"]
        .as_str()
        .is_some_and(|m| m.starts_with('m')));
    let members = exp.json("/api/v1/cluster/members").await;
    assert!(members["members"]
        .as_array()
        .expect("members")
        .iter()
        .any(|m| m["alarms"][0] == "NOSPACE"));
}
