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
        .is_some_and(|v| v > 0.0)
            || value(
                &m,
                "etcd_monitor_collect_errors_total",
                &[("source", "connect")]
            )
            .is_some_and(|v| v > 0.0)
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
        Some(0.0),
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

/// The exporter, an agent and the relay serve HTTPS and require a bearer token (but on
/// `/health`); the exporter reaches the agent and the relay with the CA and token it is
/// given; and a real Prometheus scrapes the exporter and sends alerts to the relay with the
/// same settings in its config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_servers_speak_tls_and_require_the_token() {
    tests::init_logs();
    let dir = tempfile::tempdir().expect("dir");
    let tls = tests::tls::TlsFiles::generate(dir.path());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token-for-etcd-monitor\n").expect("write");
    let path = |p: &std::path::Path| p.to_str().expect("utf8").to_owned();
    let server_flags = [
        "--tls-cert-file".to_owned(),
        path(&tls.server_cert),
        "--tls-key-file".to_owned(),
        path(&tls.server_key),
        "--auth-token-file".to_owned(),
        path(&token_file),
    ];
    let server_refs: Vec<&str> = server_flags.iter().map(String::as_str).collect();

    let cluster = EtcdCluster::start(1).await;
    let agent = tests::RunningAgent::for_member(&cluster, 0, "1s", "0", &server_refs).await;
    let relay = tests::relay::RunningRelay::start_with_flags(
        "receivers:\n  - name: log\n    console: {}\n",
        &server_refs,
    )
    .await;
    let mut flags = tests::exporter::cluster_flags(&cluster);
    flags.extend(server_flags.iter().cloned());
    flags.extend([
        "--interval".to_owned(),
        "1s".to_owned(),
        "--agent".to_owned(),
        format!("https://localhost:{}", agent.addr.port()),
        "--relay-url".to_owned(),
        format!("https://localhost:{}", relay.addr.port()),
        "--monitor-cacert".to_owned(),
        path(&tls.ca),
        "--monitor-token-file".to_owned(),
        path(&token_file),
    ]);
    let exp = RunningExporter::start(&flags).await;

    let ca = reqwest::Certificate::from_pem(&std::fs::read(&tls.ca).expect("ca")).expect("ca");
    let https = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = |p: &str| format!("https://localhost:{}{p}", exp.addr.port());
    let get = |p: String, token: Option<&'static str>| {
        let mut r = https.get(p);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let resp = r.send().await.expect("an HTTPS answer");
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }
    };
    const TOKEN: &str = "s3cret-token-for-etcd-monitor";

    // No token, a wrong one: 401 with a JSON error; /health stays open.
    let (status, body) = get(url("/metrics"), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("bearer token"), "{body}");
    assert!(!body.contains(TOKEN));
    assert_eq!(
        get(url("/api/v1/cluster/status"), Some("wrong")).await.0,
        401
    );
    // (503 "starting" before the first cycle, but answered.)
    let (status, body) = get(url("/health"), None).await;
    assert!(status == 200 || status == 503, "{status} {body}");
    assert!(body.contains("\"status\""), "{body}");
    // Plain HTTP to a TLS port gets no HTTP answer.
    let plain = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    assert!(
        plain
            .get(format!("http://127.0.0.1:{}/health", exp.addr.port()))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .is_none(),
        "plain HTTP answered"
    );
    // With the token: the exporter joined the HTTPS agent and reaches the HTTPS relay.
    wait_for(
        "the exporter to join the HTTPS agent",
        Duration::from_secs(30),
        || async {
            let (status, body) = get(url("/metrics"), Some(TOKEN)).await;
            (status == 200 && body.contains("etcd_member_agent_up{member=\"m1\"} 1")).then_some(())
        },
    )
    .await;
    let (status, body) = get(url("/api/v1/alerts"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    // The agent and the relay refuse requests without the token too.
    let (status, _) = get(
        format!("https://localhost:{}/metrics", agent.addr.port()),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = get(
        format!("https://localhost:{}/api/v1/alerts", relay.addr.port()),
        None,
    )
    .await;
    assert_eq!(status, 401);

    // A real Prometheus, configured the way the README says, scrapes and alerts.
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: t\n    interval: 1s\n    rules:\n      - alert: AlwaysFiring\n        expr: vector(1)\n",
    )
    .expect("rules");
    let security = format!(
        "scheme: https\n    tls_config: {{ca_file: '{ca}'}}\n    authorization: {{credentials_file: '{token}'}}",
        ca = tls.ca.display(),
        token = token_file.display()
    );
    let prom = tests::RunningPrometheus::start(
        &format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: ['{rules}']\nalerting:\n  alertmanagers:\n  - static_configs: [{{targets: ['localhost:{relay}']}}]\n    {security}\nscrape_configs:\n  - job_name: etcd-monitor\n    static_configs: [{{targets: ['localhost:{exp}']}}]\n    {security}\n",
            rules = rules.display(),
            relay = relay.addr.port(),
            exp = exp.addr.port(),
        ),
        // Its first evaluation may come before the relay is discovered; resend soon.
        &["--rules.alert.resend-delay=1s"],
    )
    .await;
    wait_for(
        "Prometheus to scrape the exporter over TLS with the token",
        Duration::from_secs(60),
        || async { (prom.query(r#"up{job="etcd-monitor"} == 1"#).await.len() == 1).then_some(()) },
    )
    .await;
    wait_for(
        "Prometheus to deliver an alert to the relay over TLS with the token",
        Duration::from_secs(60),
        || async {
            let (status, body) = get(
                format!("https://localhost:{}/api/v1/alerts", relay.addr.port()),
                Some(TOKEN),
            )
            .await;
            (status == 200 && body.contains("AlwaysFiring")).then_some(())
        },
    )
    .await;
    drop(prom);
    exp.stop().await.expect("exporter stops");
    relay.stop().await.expect("relay stops");
    agent.stop().await.expect("agent stops");
}
