//! Garbage from outside the process: a member whose `/metrics` answers garbage, and no
//! member reachable at all.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tests::exporter::value;
use tests::{wait_for, ClusterOptions, EtcdCluster, RunningExporter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A front for a member: gRPC (HTTP/2 prior knowledge) is passed to the member (known
/// once the cluster runs), any HTTP/1 request (`/metrics`, `/health`) gets `garbage`.
async fn garbage_front(upstream: Arc<OnceLock<SocketAddr>>, garbage: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 3];
                if conn.peek(&mut head).await.is_err() {
                    return;
                }
                if &head == b"PRI" {
                    let Some(member) = upstream.get().copied() else {
                        return;
                    };
                    if let Ok(mut up) = TcpStream::connect(member).await {
                        let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                    }
                } else {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{garbage}",
                        garbage.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                    let _ = conn.shutdown().await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_metrics_garbage_is_counted_not_fatal() {
    tests::init_logs();
    // m1 advertises the front as its client URL, so the exporter talks to it there.
    let upstream = Arc::new(OnceLock::new());
    let front = garbage_front(
        upstream.clone(),
        "<html><body>502 Bad Gateway</body></html>\n{\"not\": metrics}",
    )
    .await;
    let cluster = EtcdCluster::start_with(ClusterOptions {
        advertise_client_url: Some((0, format!("http://{front}"))),
        ..ClusterOptions::default()
    })
    .await;
    let m1: SocketAddr = format!("127.0.0.1:{}", cluster.members[0].client_port)
        .parse()
        .expect("addr");
    upstream.set(m1).expect("set once");
    let exp = RunningExporter::start(&[
        "--endpoints".into(),
        cluster.endpoints(),
        "--interval".into(),
        "1s".into(),
    ])
    .await;
    let first = wait_for(
        "metrics errors counted",
        Duration::from_secs(30),
        || async {
            let m = exp.metrics().await;
            value(
                &m,
                "etcd_monitor_collect_errors_total",
                &[("source", "member_metrics")],
            )
            .filter(|v| *v > 0.0)
        },
    )
    .await;
    exp.wait_cycles(2).await;
    let m = exp.metrics().await;
    let later = value(
        &m,
        "etcd_monitor_collect_errors_total",
        &[("source", "member_metrics")],
    )
    .expect("counter");
    assert!(later > first, "the counter grows with every bad scrape");
    // The member itself is still up (its gRPC works); only its native families are absent.
    assert_eq!(value(&m, "etcd_member_up", &[("member", "m1")]), Some(1.0));
    assert_eq!(
        value(&m, "etcd_server_has_leader", &[("member", "m1")]),
        None
    );
    assert_eq!(
        value(&m, "etcd_server_has_leader", &[("member", "m2")]),
        Some(1.0)
    );
    assert_eq!(value(&m, "etcd_cluster_healthy", &[]), Some(1.0));
    let members = exp.json("/api/v1/cluster/members").await;
    let m1 = members["members"]
        .as_array()
        .and_then(|l| l.iter().find(|m| m["name"] == "m1"))
        .expect("m1");
    assert!(
        m1["metrics_error"]
            .as_str()
            .is_some_and(|e| e.contains("line 1") && e.contains("not Prometheus text")),
        "{m1}"
    );
    assert!(m1["health_error"].as_str().is_some(), "{m1}");
    assert_eq!(m1["endpoint"], format!("http://{front}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_nothing_reachable_and_says_so() {
    tests::init_logs();
    let dead = tests::free_port();
    let exp = RunningExporter::start(&[
        "--endpoints".into(),
        format!("127.0.0.1:{dead}"),
        "--interval".into(),
        "1s".into(),
    ])
    .await;
    exp.wait_cycles(2).await;
    let m = exp.metrics().await;
    assert_eq!(value(&m, "etcd_monitor_up", &[]), Some(1.0));
    assert_eq!(value(&m, "etcd_cluster_healthy", &[]), Some(0.0));
    assert_eq!(value(&m, "etcd_cluster_has_leader", &[]), Some(0.0));
    let name = format!("127.0.0.1:{dead}");
    assert_eq!(value(&m, "etcd_member_up", &[("member", &name)]), Some(0.0));
    let (status, body) = exp.get("/health").await;
    assert_eq!(status, 200, "the exporter itself is fine: {body}");
    let members = exp.json("/api/v1/cluster/members").await;
    let err = members["members"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(err.to_lowercase().contains("refused"), "{err}");
}
