//! The relay end to end: stand-ins for Slack, PagerDuty and a webhook, a real SMTP server
//! and a real Prometheus.

use std::time::Duration;

use serde_json::json;
use tests::relay::{firing, resolved, RunningRelay, StandIn};
use tests::wait_for;

fn secret_file(dir: &std::path::Path, name: &str, value: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("{value}\n")).expect("write secret");
    p.to_string_lossy().into_owned()
}

async fn history(relay: &RunningRelay) -> Vec<serde_json::Value> {
    relay.get("/api/v1/alerts/history").await["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_one_notification_per_window_and_one_resolution() {
    tests::init_logs();
    let hook = StandIn::start().await;
    let relay = RunningRelay::start(&format!(
        "receivers:\n  - name: hook\n    webhook:\n      url: {}\n",
        hook.url("/hook")
    ))
    .await;
    for _ in 0..3 {
        let (code, body) = relay
            .post(
                "/api/v2/alerts",
                json!([firing("EtcdNoLeader", "critical", "m1")]).to_string(),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
    let reqs = hook.wait_requests(1, Duration::from_secs(10)).await;
    let b = &reqs[0].body;
    assert_eq!(b["version"], "4");
    assert_eq!(b["status"], "firing");
    assert_eq!(b["receiver"], "hook");
    assert_eq!(b["alerts"][0]["labels"]["alertname"], "EtcdNoLeader");
    assert_eq!(
        b["alerts"][0]["annotations"]["summary"],
        "EtcdNoLeader on m1"
    );
    let active = relay.get("/api/v1/alerts").await;
    assert_eq!(active["alerts"].as_array().map(Vec::len), Some(1));

    for _ in 0..2 {
        let (code, _) = relay
            .post(
                "/api/v2/alerts",
                json!([resolved("EtcdNoLeader", "critical", "m1")]).to_string(),
            )
            .await;
        assert_eq!(code, 200);
    }
    let reqs = hook.wait_requests(2, Duration::from_secs(10)).await;
    assert_eq!(reqs[1].body["status"], "resolved");
    // Nothing more arrives: three firings and two resolutions made two notifications.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hook.requests().len(), 2);
    let h = wait_for(
        "both deliveries in history",
        Duration::from_secs(10),
        || async {
            let h = history(&relay).await;
            (h.len() == 2 && h.iter().all(|e| e["outcome"] == "delivered")).then_some(h)
        },
    )
    .await;
    assert_eq!(h.len(), 2);
    assert!(h.iter().all(|e| e["outcome"] == "delivered"), "{h:?}");
    assert_eq!(
        relay.get("/api/v1/alerts").await["alerts"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let metrics = relay.metrics().await;
    assert!(
        metrics.contains("etcd_monitor_relay_notifications_deduplicated_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "etcd_monitor_relay_notifications_total{receiver=\"hook\",outcome=\"delivered\"} 2"
    ));
    relay.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_429_then_500_then_200_is_delivered_once_after_the_wait() {
    tests::init_logs();
    let slack = StandIn::start().await;
    slack.script(&[(429, Some(2)), (500, None)]);
    let dir = tempfile::tempdir().expect("dir");
    let url_file = secret_file(
        dir.path(),
        "slack-url",
        &slack.url("/services/T0/B0/secret"),
    );
    let relay = RunningRelay::start(&format!(
        "retry:\n  initial_backoff: 100ms\nreceivers:\n  - name: chat\n    slack:\n      webhook_url_file: {url_file}\n      channel: \"#etcd\"\n"
    ))
    .await;
    let (code, _) = relay
        .post(
            "/api/v2/alerts",
            json!([firing("EtcdMemberDown", "warning", "m2")]).to_string(),
        )
        .await;
    assert_eq!(code, 200);
    let reqs = slack.wait_requests(3, Duration::from_secs(20)).await;
    let waited = reqs[1].at.duration_since(reqs[0].at);
    assert!(
        waited >= Duration::from_secs(2),
        "Retry-After 2 honoured, waited {waited:?}"
    );
    assert_eq!(
        reqs.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [429, 500, 200]
    );
    assert_eq!(reqs[2].path, "/services/T0/B0/secret");
    let p = &reqs[2].body;
    assert_eq!(p["channel"], "#etcd");
    assert!(
        p["text"]
            .as_str()
            .is_some_and(|t| t.contains("EtcdMemberDown on m2")),
        "{p}"
    );
    assert_eq!(p["attachments"][0]["color"], "#f2c744");
    let h = wait_for(
        "the delivery in history",
        Duration::from_secs(10),
        || async {
            let h = history(&relay).await;
            (h.first().is_some_and(|e| e["outcome"] == "delivered")).then_some(h)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(slack.requests().len(), 3, "delivered once");
    assert_eq!(
        (h[0]["outcome"].as_str(), h[0]["attempts"].as_u64()),
        (Some("delivered"), Some(3))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_400_is_a_permanent_failure_in_history() {
    tests::init_logs();
    let slack = StandIn::start().await;
    slack.script(&[(400, None)]);
    let dir = tempfile::tempdir().expect("dir");
    let url_file = secret_file(dir.path(), "slack-url", &slack.url("/services/secret-path"));
    let relay = RunningRelay::start(&format!(
        "retry:\n  initial_backoff: 100ms\nreceivers:\n  - name: chat\n    slack:\n      webhook_url_file: {url_file}\n"
    ))
    .await;
    relay
        .post(
            "/api/v2/alerts",
            json!([firing("EtcdMemberDown", "warning", "m2")]).to_string(),
        )
        .await;
    let h = wait_for("a failure in history", Duration::from_secs(10), || async {
        let h = history(&relay).await;
        (h.first().is_some_and(|e| e["outcome"] == "failed")).then_some(h)
    })
    .await;
    let reason = h[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("400"), "{reason}");
    assert!(
        !reason.contains("secret-path"),
        "the webhook URL is a secret: {reason}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(slack.requests().len(), 1, "not retried");
}

/// A relay whose one receiver is PagerDuty at the stand-in `pd`, routing key `R0UTINGKEY`.
async fn pagerduty_relay(pd: &StandIn, dir: &std::path::Path) -> RunningRelay {
    let key_file = secret_file(dir, "pd-key", "R0UTINGKEY");
    RunningRelay::start(&format!(
        "receivers:\n  - name: oncall\n    pagerduty:\n      routing_key_file: {key_file}\n      url: {}\n",
        pd.url("/v2/enqueue")
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_trigger_then_resolve_with_the_same_dedup_key() {
    tests::init_logs();
    let pd = StandIn::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let relay = pagerduty_relay(&pd, dir.path()).await;
    relay
        .post(
            "/api/v2/alerts",
            json!([firing("EtcdNoLeader", "critical", "m3")]).to_string(),
        )
        .await;
    pd.wait_requests(1, Duration::from_secs(10)).await;
    relay
        .post(
            "/api/v2/alerts",
            json!([resolved("EtcdNoLeader", "critical", "m3")]).to_string(),
        )
        .await;
    let reqs = pd.wait_requests(2, Duration::from_secs(10)).await;
    let (t, r) = (&reqs[0].body, &reqs[1].body);
    assert_eq!(t["event_action"], "trigger");
    assert_eq!(r["event_action"], "resolve");
    assert_eq!(t["dedup_key"], r["dedup_key"]);
    assert_eq!(t["routing_key"], "R0UTINGKEY");
    assert_eq!(t["payload"]["severity"], "critical");
    assert_eq!(t["payload"]["source"], "m3");
    assert!(t["payload"]["summary"]
        .as_str()
        .is_some_and(|s| s.contains("EtcdNoLeader on m3")));
}

/// Prometheus stops refreshing a firing alert (it died, or the rule went away): when the
/// alert's `endsAt` lease runs out, the page is resolved, as Alertmanager would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_alert_whose_lease_runs_out_is_resolved() {
    tests::init_logs();
    let pd = StandIn::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let relay = pagerduty_relay(&pd, dir.path()).await;
    let mut alert = firing("EtcdNoLeader", "critical", "m1");
    let ends = std::time::SystemTime::now() + Duration::from_secs(3);
    alert["endsAt"] = json!(time::OffsetDateTime::from(ends)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format"));
    let (status, _) = relay
        .post("/api/v2/alerts", json!([alert]).to_string())
        .await;
    assert_eq!(status, 200);
    let reqs = pd.wait_requests(2, Duration::from_secs(30)).await;
    assert_eq!(reqs[0].body["event_action"], "trigger");
    assert_eq!(reqs[1].body["event_action"], "resolve");
    assert_eq!(reqs[0].body["dedup_key"], reqs[1].body["dedup_key"]);
    assert!(
        reqs[1].at.duration_since(reqs[0].at) >= Duration::from_secs(2),
        "resolved before the lease ran out"
    );
    let active = relay.get("/api/v1/alerts").await;
    assert_eq!(
        active["alerts"].as_array().map(Vec::len),
        Some(0),
        "{active}"
    );
    // Nothing more: the resolution is sent once.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(pd.requests().len(), 2, "{:?}", pd.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_problem_and_nothing_is_stored() {
    tests::init_logs();
    let hook = StandIn::start().await;
    let relay = RunningRelay::start(&format!(
        "receivers:\n  - name: hook\n    webhook:\n      url: {}\n",
        hook.url("/hook")
    ))
    .await;
    let big = format!(
        "[{}]",
        vec![firing("X", "info", "m").to_string(); 400].join(",")
    );
    for (path, body, code, want) in [
        (
            "/api/v2/alerts",
            "{not json".to_owned(),
            400,
            "invalid alerts array",
        ),
        (
            "/api/v2/alerts",
            r#"[{"labels":{"alertname":7}}]"#.to_owned(),
            400,
            "invalid type",
        ),
        (
            "/api/v2/alerts",
            r#"[{"annotations":{"summary":"x"}}]"#.to_owned(),
            400,
            "missing \"labels\"",
        ),
        ("/api/v2/alerts", big, 413, "limit"),
        (
            "/api/v1/alertmanager",
            r#"{"version":"4","alerts":[{"labels":{}}]}"#.to_owned(),
            400,
            "empty",
        ),
    ] {
        let (status, answer) = relay.post(path, body).await;
        assert_eq!(status, code, "{path}: {answer}");
        let msg = answer["error"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{path}: {msg:?} lacks {want:?}");
    }
    // A body refused unread closes the connection, so a client's next request does not
    // meet a connection the server is closing.
    let resp = reqwest::Client::new()
        .post(relay.url("/api/v2/alerts"))
        .body(vec![b' '; 70_000])
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.headers()
            .get("connection")
            .and_then(|v| v.to_str().ok()),
        Some("close")
    );
    assert_eq!(
        relay.get("/api/v1/alerts").await["alerts"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    assert!(history(&relay).await.is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hook.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_starttls_reaches_a_real_smtp_server() {
    tests::init_logs();
    let dir = tempfile::tempdir().expect("dir");
    let tls = tests::tls::TlsFiles::generate(dir.path());
    let maildir = dir.path().join("maildir");
    let port = tests::free_port();
    let _smtp = tests::ChildGuard(
        std::process::Command::new("/usr/bin/python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .arg("--tlscert")
            .arg(&tls.server_cert)
            .arg("--tlskey")
            .arg(&tls.server_key)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("aiosmtpd (Debian python3-aiosmtpd) must be installed"),
    );
    tests::wait_port(port, Duration::from_secs(20)).await;
    let relay = RunningRelay::start(&format!(
        "receivers:\n  - name: mail\n    email:\n      smarthost: 127.0.0.1:{port}\n      from: etcd-monitor@example.com\n      to: [oncall@example.com]\n      tls: starttls\n      ca_file: {}\n",
        tls.ca.display()
    ))
    .await;
    relay
        .post(
            "/api/v2/alerts",
            json!([firing("EtcdDatabaseSpaceExceeded", "critical", "m1")]).to_string(),
        )
        .await;
    let new = maildir.join("new");
    let mail = wait_for(
        "the email in the maildir",
        Duration::from_secs(20),
        || async {
            let entry = std::fs::read_dir(&new).ok()?.flatten().next()?;
            std::fs::read_to_string(entry.path()).ok()
        },
    )
    .await;
    let subject = mail
        .lines()
        .find(|l| l.starts_with("Subject:"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        subject.contains("EtcdDatabaseSpaceExceeded on m1"),
        "{subject}"
    );
    let body = mail.split("\n\n").skip(1).collect::<Vec<_>>().join("\n\n");
    assert!(
        body.contains("summary: EtcdDatabaseSpaceExceeded on m1"),
        "{body}"
    );
    assert!(mail.contains("To: oncall@example.com"), "{mail}");
    // The outcome is recorded right after the SMTP transaction ends.
    wait_for(
        "the delivery in history",
        Duration::from_secs(10),
        || async {
            let h = history(&relay).await;
            (h.first().is_some_and(|e| e["outcome"] == "delivered")).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_resending_an_alert_notifies_once() {
    tests::init_logs();
    let hook = StandIn::start().await;
    let relay = RunningRelay::start(&format!(
        "dedup_window: 5m\nreceivers:\n  - name: hook\n    webhook:\n      url: {}\n",
        hook.url("/hook")
    ))
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: test\n    interval: 1s\n    rules:\n      - alert: AlwaysFiring\n        expr: vector(1)\n        labels: {severity: warning}\n        annotations: {summary: always firing}\n",
    )
    .expect("rules");
    let _prom = tests::RunningPrometheus::start(
        &format!(
            "global:\n  evaluation_interval: 1s\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{}']\nrule_files: ['{}']\n",
            relay.addr,
            rules.display()
        ),
        &["--rules.alert.resend-delay=1s"],
    )
    .await;
    // Prometheus resends every second: wait for several sends.
    let received = wait_for(
        "five sends from Prometheus",
        Duration::from_secs(60),
        || async {
            let m = relay.metrics().await;
            let n: f64 = m
                .lines()
                .find_map(|l| {
                    l.strip_prefix(
                        "etcd_monitor_relay_alerts_received_total{endpoint=\"v2_alerts\"} ",
                    )
                })?
                .trim()
                .parse()
                .ok()?;
            (n >= 5.0).then_some(n)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reqs = hook.requests();
    assert_eq!(
        reqs.len(),
        1,
        "{received} sends, one notification: {reqs:?}"
    );
    assert_eq!(
        reqs[0].body["alerts"][0]["labels"]["alertname"],
        "AlwaysFiring"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_answers_alerts_from_the_relay() {
    tests::init_logs();
    let hook = StandIn::start().await;
    let relay = RunningRelay::start(&format!(
        "receivers:\n  - name: hook\n    webhook:\n      url: {}\n",
        hook.url("/hook")
    ))
    .await;
    relay
        .post(
            "/api/v2/alerts",
            json!([firing("EtcdMemberDown", "critical", "m2")]).to_string(),
        )
        .await;
    hook.wait_requests(1, Duration::from_secs(10)).await;
    let dead = format!("127.0.0.1:{}", tests::free_port());
    let exp = tests::RunningExporter::start(&[
        "--endpoints".into(),
        dead.clone(),
        "--relay-url".into(),
        format!("http://{}", relay.addr),
    ])
    .await;
    let alerts = exp.json("/api/v1/alerts").await;
    assert_eq!(alerts["alerts"][0]["labels"]["alertname"], "EtcdMemberDown");
    let h = wait_for("a delivered entry", Duration::from_secs(10), || async {
        let h = exp.json("/api/v1/alerts/history?limit=5").await;
        (h["history"][0]["outcome"] == "delivered").then_some(h)
    })
    .await;
    assert_eq!(h["history"][0]["receiver"], "hook");

    // Without --relay-url: 404 naming the flag; with the relay gone: 502.
    let plain = tests::RunningExporter::start(&["--endpoints".into(), dead]).await;
    let (code, body) = plain.get("/api/v1/alerts").await;
    assert_eq!(code, 404);
    assert!(body.contains("--relay-url"), "{body}");
    relay.stop().await.expect("stop");
    let (code, body) = exp.get("/api/v1/alerts/history").await;
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("relay at"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_receiver_queues_rather_than_drops() {
    tests::init_logs();
    let hook = StandIn::start().await;
    let relay = RunningRelay::start(&format!(
        "receivers:\n  - name: hook\n    min_interval: 300ms\n    webhook:\n      url: {}\n",
        hook.url("/hook")
    ))
    .await;
    let alerts: Vec<_> = (0..4)
        .map(|i| firing("EtcdHighFsync", "warning", &format!("m{i}")))
        .collect();
    let (code, answer) = relay
        .post("/api/v2/alerts", json!(alerts).to_string())
        .await;
    assert_eq!(code, 200);
    assert_eq!(answer["notifications"], 4);
    let reqs = hook.wait_requests(4, Duration::from_secs(20)).await;
    for pair in reqs.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(290), "sent {gap:?} apart");
    }
    let members: std::collections::BTreeSet<_> = reqs
        .iter()
        .filter_map(|r| {
            r.body["alerts"][0]["labels"]["member"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(members.len(), 4, "all four delivered");
}

/// PagerDuty fails, an alert fires and resolves 4 s later, PagerDuty recovers: the queued
/// trigger is superseded by the resolve, so no trigger ever reaches PagerDuty after the
/// resolve that follows it, and the incident ends resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolve_is_never_overtaken_by_its_trigger() {
    tests::init_logs();
    let pd = StandIn::start().await;
    pd.script(&[(500, None); 200]);
    let dir = tempfile::tempdir().expect("dir");
    let key_file = secret_file(dir.path(), "pd-key", "R0UTINGKEY");
    let relay = RunningRelay::start(&format!(
        "retry:\n  initial_backoff: 300ms\n  max_backoff: 1s\nreceivers:\n  - name: oncall\n    pagerduty:\n      routing_key_file: {key_file}\n      url: {}\n",
        pd.url("/v2/enqueue")
    ))
    .await;
    let (code, _) = relay
        .post(
            "/api/v2/alerts",
            json!([firing("EtcdNoLeader", "critical", "m1")]).to_string(),
        )
        .await;
    assert_eq!(code, 200);
    pd.wait_requests(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (code, _) = relay
        .post(
            "/api/v2/alerts",
            json!([resolved("EtcdNoLeader", "critical", "m1")]).to_string(),
        )
        .await;
    assert_eq!(code, 200);
    pd.script(&[]);
    let delivered = wait_for("a delivered resolve", Duration::from_secs(15), || async {
        let ok: Vec<_> = pd
            .requests()
            .into_iter()
            .filter(|r| r.answered == 200)
            .collect();
        ok.iter()
            .any(|r| r.body["event_action"] == "resolve")
            .then_some(ok)
    })
    .await;
    // Give a retried trigger every chance to arrive late.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ok: Vec<String> = pd
        .requests()
        .into_iter()
        .filter(|r| r.answered == 200)
        .map(|r| {
            r.body["event_action"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        ok.last().map(String::as_str),
        Some("resolve"),
        "PagerDuty ends resolved: {ok:?}"
    );
    let first_resolve = ok.iter().position(|a| a == "resolve").unwrap_or(0);
    assert!(
        ok[first_resolve..].iter().all(|a| a == "resolve"),
        "no trigger after the resolve: {ok:?}"
    );
    assert!(!delivered.is_empty());
    let h = history(&relay).await;
    assert!(
        h.iter().any(|e| e["outcome"] == "superseded"),
        "the queued trigger was superseded: {h:?}"
    );
}

/// The shipped `alerting/relay.yml` and the shipped rules in a real Prometheus: a lost
/// quorum (EtcdQuorumLost and EtcdNoLeader of one cluster) is one PagerDuty incident and
/// one chat message about the lost quorum; that cluster's EtcdNoLeader and EtcdMemberDown
/// are inhibited, another cluster's EtcdMemberDown is delivered; the heartbeat reaches
/// its URL and nobody else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_config_makes_one_incident_one_page() {
    tests::init_logs();
    let (pd, slack, beat) = (
        StandIn::start().await,
        StandIn::start().await,
        StandIn::start().await,
    );
    std::env::set_var("PAGERDUTY_ROUTING_KEY", "R0UTINGKEY");
    std::env::set_var("PAGERDUTY_URL", pd.url("/v2/enqueue"));
    std::env::set_var("SLACK_WEBHOOK_URL", slack.url("/services/T/B/x"));
    std::env::set_var("HEARTBEAT_URL", beat.url("/ping/uuid"));
    let shipped = tests::prometheus::repo_root().join("alerting/relay.yml");
    let relay = RunningRelay::start(&std::fs::read_to_string(&shipped).expect("relay.yml")).await;
    let dir = tempfile::tempdir().expect("dir");
    let faults = dir.path().join("faults.yml");
    std::fs::write(
        &faults,
        "groups:\n  - name: faults\n    interval: 1s\n    rules:\n\
         \x20     - {alert: EtcdQuorumLost, expr: vector(1), labels: {severity: critical, cluster: a, instance: 'exp:8080'}, annotations: {summary: quorum lost}}\n\
         \x20     - {alert: EtcdNoLeader, expr: vector(1), labels: {severity: critical, cluster: a, instance: 'exp:8080'}, annotations: {summary: no leader}}\n\
         \x20     - {alert: EtcdMemberDown, expr: vector(1), labels: {severity: warning, cluster: a, instance: 'exp:8080', member: m1}, annotations: {summary: m1 down}}\n\
         \x20     - {alert: EtcdMemberDown, expr: vector(1), labels: {severity: warning, cluster: b, instance: 'exp:8080', member: m9}, annotations: {summary: m9 down}}\n",
    )
    .expect("rules");
    let shipped_rules = tests::prometheus::repo_root().join("rules/etcd-alerts.yml");
    let _prom = tests::RunningPrometheus::start(
        &format!(
            "global:\n  evaluation_interval: 1s\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{}']\nrule_files: ['{}', '{}']\n",
            relay.addr,
            shipped_rules.display(),
            faults.display()
        ),
        &["--rules.alert.resend-delay=1s"],
    )
    .await;
    let page = pd.wait_requests(1, Duration::from_secs(60)).await;
    let t = &page[0].body;
    assert_eq!(t["event_action"], "trigger");
    let names: Vec<&str> = t["payload"]["custom_details"]["firing"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["labels"]["alertname"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        names,
        ["EtcdQuorumLost"],
        "the page is the lost quorum; the missing leader it explains is inhibited"
    );
    // The warnings' group_wait is 30 s: wait it out, then count.
    let chat = wait_for(
        "cluster b's EtcdMemberDown in chat",
        Duration::from_secs(60),
        || async {
            let r = slack.requests();
            r.iter()
                .any(|x| x.body["text"].as_str().is_some_and(|t| t.contains("m9")))
                .then_some(r)
        },
    )
    .await;
    assert_eq!(pd.requests().len(), 1, "one incident, one page");
    let texts: Vec<String> = chat
        .iter()
        .map(|x| x.body["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        texts.iter().filter(|t| t.contains("[CRITICAL]")).count(),
        1,
        "one chat message for the incident: {texts:?}"
    );
    assert!(
        !texts.iter().any(|t| t.contains("m1")),
        "cluster a's EtcdMemberDown is inhibited: {texts:?}"
    );
    assert!(
        texts.iter().all(|t| !t.contains("Heartbeat")),
        "the heartbeat goes to its URL only: {texts:?}"
    );
    let beats = beat.wait_requests(1, Duration::from_secs(30)).await;
    assert_eq!(
        beats[0].body["alerts"][0]["labels"]["alertname"],
        "EtcdMonitorHeartbeat"
    );
    let v2: Vec<serde_json::Value> =
        serde_json::from_value(relay.get("/api/v2/alerts").await).expect("array");
    let down_a = v2
        .iter()
        .find(|a| a["labels"]["alertname"] == "EtcdMemberDown" && a["labels"]["cluster"] == "a")
        .expect("cluster a's EtcdMemberDown is listed");
    assert_eq!(down_a["status"]["state"], "suppressed");
    let no_leader = v2
        .iter()
        .find(|a| a["labels"]["alertname"] == "EtcdNoLeader")
        .expect("EtcdNoLeader is listed");
    assert_eq!(no_leader["status"]["state"], "suppressed");
    assert_eq!(
        down_a["status"]["inhibitedBy"].as_array().map(Vec::len),
        Some(1)
    );
}

/// A rate-limited receiver with a backlog sends the most severe first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_goes_out_critical_first() {
    tests::init_logs();
    let hook = StandIn::start().await;
    let relay = RunningRelay::start(&format!(
        "receivers:\n  - name: hook\n    min_interval: 200ms\n    webhook:\n      url: {}\n",
        hook.url("/hook")
    ))
    .await;
    let mut alerts: Vec<_> = (0..3)
        .map(|i| firing("EtcdSlowWalFsync", "warning", &format!("m{i}")))
        .collect();
    alerts.push(firing("EtcdQuorumLost", "critical", "all"));
    let (code, _) = relay
        .post("/api/v2/alerts", json!(alerts).to_string())
        .await;
    assert_eq!(code, 200);
    let reqs = hook.wait_requests(4, Duration::from_secs(20)).await;
    let order: Vec<&str> = reqs
        .iter()
        .filter_map(|r| r.body["alerts"][0]["labels"]["severity"].as_str())
        .collect();
    assert_eq!(order[0], "critical", "{order:?}");
}
