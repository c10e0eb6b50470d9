//! The page from hand-built snapshots: verdicts, escaping, the overview, the plots and
//! the relay's alerts.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::model::{
    derive, Alarm, Facts, LeaderChange, MemberInfo, MemberObservation, StatusFacts,
};
use crate::snapshot::{AgentStatus, HistoryPoint, Latency, MemberExtras, Percentiles, Snapshot};

const NOW: u64 = 1_700_000_000_000;

fn status(id: u64, leader: u64, term: u64, index: u64) -> StatusFacts {
    StatusFacts {
        cluster_id: 0xc1,
        member_id: id,
        version: "3.5.17".into(),
        leader,
        raft_term: term,
        raft_index: index,
        raft_applied_index: index,
        revision: 50,
        db_size: 25 * 1024 * 1024,
        db_size_in_use: 20 * 1024 * 1024,
        is_learner: false,
        errors: vec![],
    }
}

fn member(id: u64, name: &str, s: Result<StatusFacts, String>) -> MemberObservation {
    MemberObservation {
        info: MemberInfo {
            id,
            name: name.to_owned(),
            client_urls: vec![format!("http://127.0.0.1:{}", 2378 + id)],
            peer_urls: vec![],
            is_learner: false,
        },
        endpoint: format!("http://127.0.0.1:{}", 2378 + id),
        status: s,
    }
}

fn snapshot(
    cluster: Option<&str>,
    members: Vec<MemberObservation>,
    alarms: Vec<(u64, Alarm)>,
) -> Snapshot {
    let model = derive(&Facts {
        members,
        alarms: Some(alarms),
    });
    let mut snap = Snapshot::empty(None, 1000);
    snap.cluster = cluster.map(str::to_owned);
    snap.cycle = 42;
    snap.at_unix_ms = NOW - 500;
    snap.extras = model
        .members
        .iter()
        .map(|m| {
            (
                m.info.id,
                MemberExtras {
                    quota_bytes: Some(100 * 1024 * 1024),
                    ..MemberExtras::default()
                },
            )
        })
        .collect();
    snap.model = model;
    snap
}

fn healthy(cluster: Option<&str>) -> Snapshot {
    snapshot(
        cluster,
        vec![
            member(1, "m1", Ok(status(1, 1, 5, 1000))),
            member(2, "m2", Ok(status(2, 1, 5, 990))),
            member(3, "m3", Ok(status(3, 1, 5, 1000))),
        ],
        vec![],
    )
}

fn page(clusters: &[Arc<Snapshot>], selected: Option<&str>) -> String {
    render(&Page {
        clusters,
        selected,
        alerts: Alerts::NotConfigured,
        now_unix_ms: NOW,
    })
}

#[test]
fn a_healthy_cluster_says_so_with_its_leader_and_members() {
    let html = page(&[Arc::new(healthy(None))], None);
    assert!(
        html.contains(r#"<h1 class="vword"><span aria-hidden="true">✓</span> Healthy</h1>"#),
        "{html}"
    );
    assert!(html.contains("leader m1; all 3 members up and following it"));
    assert!(html.contains("<title>healthy · etcd cluster · etcd-monitor</title>"));
    assert!(html.contains(r#"content="5""#), "refresh at least 5 s");
    for name in ["m1", "m2", "m3"] {
        assert!(html.contains(&format!(r#"<div class="name">{name}</div>"#)));
    }
    assert!(html.contains("<b>leader</b>"));
    assert_eq!(html.matches("follower").count(), 2);
    assert!(html.contains("10 behind"), "m2's raft index lag");
    assert!(html.contains("25 MiB"));
    assert!(html.contains("of 100 MiB"));
    assert!(html.contains("25% used"));
    assert!(html.contains("no agent"));
    assert!(html.contains("No relay configured"));
    assert!(!html.contains("<script"));
}

#[test]
fn verdicts_name_the_worst_condition_and_every_reason() {
    let now = NOW;
    // One member down: degraded, with its error.
    let s = snapshot(
        None,
        vec![
            member(1, "m1", Ok(status(1, 1, 5, 1000))),
            member(2, "m2", Ok(status(2, 1, 5, 1000))),
            member(3, "m3", Err("status timed out".into())),
        ],
        vec![],
    );
    let v = judge(&s, now);
    assert_eq!(v.level, Level::Degraded);
    assert_eq!(v.reasons, vec!["member m3 is down: status timed out"]);

    // Two down: quorum lost beats no leader; both are said.
    let s = snapshot(
        None,
        vec![
            member(1, "m1", Ok(status(1, 0, 5, 1000))),
            member(2, "m2", Err("connection refused".into())),
            member(3, "m3", Err("connection refused".into())),
        ],
        vec![],
    );
    let v = judge(&s, now);
    assert_eq!(v.level, Level::QuorumLost);
    assert!(v.reasons[0].contains("only 1 of 3 voting members are healthy; a quorum needs 2"));
    assert!(v
        .reasons
        .iter()
        .any(|r| r.contains("no member reports a leader")));
    assert!(v
        .reasons
        .iter()
        .any(|r| r == "member m2 is down: connection refused"));

    // An alarm.
    let s = snapshot(
        None,
        vec![
            member(1, "m1", Ok(status(1, 1, 5, 1000))),
            member(2, "m2", Ok(status(2, 1, 5, 1000))),
            member(3, "m3", Ok(status(3, 1, 5, 1000))),
        ],
        vec![(2, Alarm::Nospace)],
    );
    let v = judge(&s, now);
    assert_eq!(v.level, Level::Alarm);
    assert!(v.reasons[0].starts_with("NOSPACE alarm on m2: the space quota is used up"));

    // Split brain: two claim leadership at the same term.
    let mut s = snapshot(
        None,
        vec![
            member(1, "m1", Ok(status(1, 1, 5, 1000))),
            member(2, "m2", Ok(status(2, 2, 5, 1000))),
            member(3, "m3", Ok(status(3, 1, 5, 1000))),
        ],
        vec![],
    );
    assert!(s.model.split_brain);
    let v = judge(&s, now);
    assert_eq!(v.level, Level::SplitBrain);
    assert!(
        v.reasons[0].contains("m1, m2 all claim leadership at term 5"),
        "{v:?}"
    );

    // Old data is not a verdict on now.
    s.at_unix_ms = now - 60_000;
    assert_eq!(judge(&s, now).level, Level::Stale);
    assert_eq!(
        judge(&Snapshot::empty(None, 5000), now).level,
        Level::Starting
    );
}

#[test]
fn no_leader_and_partition_are_said_in_words() {
    let s = snapshot(
        None,
        vec![
            member(1, "m1", Ok(status(1, 0, 5, 1000))),
            member(2, "m2", Ok(status(2, 0, 5, 1000))),
            member(3, "m3", Ok(status(3, 0, 5, 1000))),
        ],
        vec![],
    );
    let v = judge(&s, NOW);
    assert_eq!(v.level, Level::NoLeader);
    assert_eq!(
        v.reasons,
        vec!["no member reports a leader (3 of 3 answer); writes and linearizable reads fail"]
    );
    let html = page(&[Arc::new(s)], None);
    assert!(html.contains("No leader</h1>"));
    assert!(html.contains(r#"<span class="b">none</span>"#));

    let mut s = healthy(None);
    if let Some(m3) = s.model.members.iter_mut().find(|m| m.info.name == "m3") {
        m3.partitioned = true;
        m3.leader_id = None;
    }
    let v = judge(&s, NOW);
    assert_eq!(v.level, Level::Degraded);
    assert_eq!(
        v.reasons,
        vec!["member m3 is cut off from the leader m1: it has no leader"]
    );
    assert!(page(&[Arc::new(s)], None).contains("partitioned"));
}

#[test]
fn everything_from_outside_is_escaped() {
    let evil = "<script>alert(1)</script>";
    let mut s = snapshot(
        Some("c<1>"),
        vec![
            member(1, evil, Ok(status(1, 1, 5, 1000))),
            member(2, "m2", Ok(status(2, 1, 5, 1000))),
            member(3, "m\"3'", Err(format!("dial {evil} & failed"))),
        ],
        vec![],
    );
    s.agents.insert(
        evil.to_owned(),
        AgentStatus {
            url: "http://a/<b>".into(),
            up: true,
            error: None,
            memory_usage_bytes: None,
            disk_usage_bytes: None,
            active_connections: None,
            host: Some(json!({
                "fsync": {"enabled": true, "probes": 10, "errors": 2, "sum_seconds": 0.008,
                          "last_seconds": 0.001, "last_error": evil},
                "filesystem": {"mount_point": evil, "size_bytes": 1000, "avail_bytes": 50}
            })),
        },
    );
    s.leader_history = vec![LeaderChange {
        at_unix_ms: NOW - 120_000,
        from: Some(evil.into()),
        from_id: Some(9),
        to: evil.into(),
        to_id: 1,
        term: 5,
        planned: Some(evil.into()),
    }];
    let alerts = Alerts::Firing(vec![FiringAlert {
        name: evil.into(),
        severity: "<b>critical</b>".into(),
        cluster: Some("c<1>".into()),
        member: Some(evil.into()),
        summary: Some(evil.into()),
        starts_at: evil.into(),
    }]);
    let clusters = [Arc::new(s)];
    for selected in [None, Some("c<1>")] {
        let html = render(&Page {
            clusters: &clusters,
            selected,
            alerts: alerts.clone(),
            now_unix_ms: NOW,
        });
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>critical"), "{html}");
        assert!(!html.contains("<1>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("m&quot;3&#39;"));
        assert!(html.contains("dial &lt;script&gt;alert(1)&lt;/script&gt; &amp; failed"));
    }
    // A name in a link is percent-encoded, then escaped.
    let two = [clusters[0].clone(), Arc::new(healthy(Some("b&c")))];
    let html = render(&Page {
        clusters: &two,
        selected: None,
        alerts: Alerts::Unavailable(format!("relay said {evil}")),
        now_unix_ms: NOW,
    });
    assert!(html.contains(r#"href="/?cluster=c%3C1%3E""#), "{html}");
    assert!(html.contains(r#"href="/?cluster=b%26c""#));
    assert!(!html.contains("<script"));
    let html = render(&Page {
        clusters: &two,
        selected: Some("<script>"),
        alerts: Alerts::Unavailable(format!("relay said {evil}")),
        now_unix_ms: NOW,
    });
    assert!(!html.contains("<script"));
    assert!(html.contains("There is no cluster named “&lt;script&gt;”"));
}

#[test]
fn several_clusters_get_an_overview_then_a_detail() {
    let down = snapshot(
        Some("east"),
        vec![
            member(1, "e1", Ok(status(1, 0, 5, 1000))),
            member(2, "e2", Err("connection refused".into())),
            member(3, "e3", Err("connection refused".into())),
        ],
        vec![],
    );
    let clusters = [Arc::new(healthy(Some("west"))), Arc::new(down)];
    let alerts = Alerts::Firing(vec![FiringAlert {
        name: "EtcdInsufficientMembers".into(),
        severity: "critical".into(),
        cluster: Some("east".into()),
        member: None,
        summary: Some("etcd cluster has lost quorum".into()),
        starts_at: "2023-11-14T22:10:00Z".into(),
    }]);
    let html = render(&Page {
        clusters: &clusters,
        selected: None,
        alerts: alerts.clone(),
        now_unix_ms: NOW,
    });
    assert!(html.contains("<h1>2 clusters</h1>"));
    assert!(
        html.contains(r#"<a class="card ccard ok" href="/?cluster=west">"#),
        "{html}"
    );
    assert!(html.contains(r#"<a class="card ccard bad" href="/?cluster=east">"#));
    assert!(html.contains("quorum lost"));
    assert!(html.contains(r#"<span class="b">1 firing</span>"#));
    assert!(html.contains("<title>2 clusters · quorum lost · etcd-monitor</title>"));
    assert!(!html.contains("<table"), "no detail on the overview");

    let html = render(&Page {
        clusters: &clusters,
        selected: Some("east"),
        alerts: alerts.clone(),
        now_unix_ms: NOW,
    });
    assert!(html.contains("Quorum lost</h1>"));
    assert!(html.contains("EtcdInsufficientMembers"));
    assert!(html.contains(r#"<div class="name">e2</div>"#));
    assert!(!html.contains(r#"<div class="name">m1</div>"#));
    let html = render(&Page {
        clusters: &clusters,
        selected: Some("west"),
        alerts,
        now_unix_ms: NOW,
    });
    assert!(
        !html.contains("EtcdInsufficientMembers"),
        "east's alert stays on east"
    );
    assert!(html.contains("none firing"));
}

#[test]
fn plots_come_from_the_history_and_the_probes() {
    let mut s = healthy(None);
    let points: Vec<HistoryPoint> = (0..120u64)
        .map(|i| HistoryPoint {
            at_unix_ms: NOW - 600_000 + i * 5000,
            healthy: true,
            has_leader: true,
            leader: Some(if i < 60 { "m2" } else { "m1" }.into()),
            member_count: 3,
            healthy_members: 3,
            split_brain: false,
            partitioned_members: 0,
            revision_divergence: 0,
            raft_index_divergence: 0,
            max_revision: Some(50),
            max_db_size_bytes: Some((20 + i as i64 / 10) * 1024 * 1024),
            request_rate_per_second: Some(10.0 + i as f64),
            read_p99_ms: Some(1.5),
            write_p99_ms: Some(4.0),
            collect_duration_ms: 12.0,
        })
        .collect();
    s.interval_ms = 5000;
    s.history = Arc::new(points);
    s.latency = Arc::new(Latency {
        read: Percentiles {
            count: 2,
            errors: 0,
            p50: Some(1.0),
            p95: Some(1.4),
            p99: Some(1.5),
        },
        write: Percentiles::default(),
        reads: vec![crate::snapshot::ProbeRecord {
            at_unix_ms: NOW - 1000,
            kind: "read",
            consistency: Some("l"),
            member: "m1".into(),
            duration_ms: Some(1.2),
            error: None,
        }],
        writes: vec![],
    });
    let html = page(&[Arc::new(s)], None);
    assert_eq!(html.matches(r#"<svg viewBox="0 0 420 170""#).count(), 3);
    assert!(html.contains("Probe latency, last 10 min"));
    assert!(html.contains("read p99 <b>1.50 ms</b>"));
    assert!(html.contains(r#"<path class="series" d="M"#));
    assert!(html.contains("quota 100 MiB"));
    // The timeline: m2, then m1.
    assert!(html.contains("<title>leader m2</title>"));
    assert!(html.contains("<title>leader m1</title>"));
    assert!(html.contains("No leader change seen"));
}

#[test]
fn agent_facts_show_fsync_and_free_space() {
    let mut s = healthy(None);
    s.agents.insert(
        "m1".into(),
        AgentStatus {
            url: "http://127.0.0.1:9101".into(),
            up: true,
            error: None,
            memory_usage_bytes: Some(1),
            disk_usage_bytes: Some(1),
            active_connections: Some(1),
            host: Some(json!({
                "member": "m1",
                "fsync": {"enabled": true, "probes": 4, "errors": 0, "sum_seconds": 0.01,
                          "last_seconds": 0.002, "last_error": null},
                "filesystem": {"mount_point": "/var/lib/etcd", "fs_type": "ext4",
                               "size_bytes": 100u64 << 30, "avail_bytes": 40u64 << 30,
                               "free_bytes": 45u64 << 30}
            })),
        },
    );
    s.agents.insert(
        "m2".into(),
        AgentStatus {
            url: "http://127.0.0.1:9102".into(),
            up: false,
            error: Some("connection refused".into()),
            memory_usage_bytes: None,
            disk_usage_bytes: None,
            active_connections: None,
            host: None,
        },
    );
    let html = page(&[Arc::new(s.clone())], None);
    assert!(html.contains("last <b class=\"num\">2.00 ms</b>"), "{html}");
    assert!(html.contains("mean 2.50 ms · 4 probes"));
    assert!(html.contains("40 GiB</span> <span class=\"muted small\">of 100 GiB"));
    assert!(html.contains("/var/lib/etcd"));
    assert!(html.contains("agent down"));
    assert!(html.contains("m2: its agent does not answer (connection refused)"));

    // A quota unknown is said, not guessed.
    for x in s.extras.values_mut() {
        x.quota_bytes = None;
    }
    let html = page(&[Arc::new(s)], None);
    assert!(html.contains("quota unknown"));
    assert!(html.contains("space quota unknown"));
}

#[test]
fn relay_alerts_are_read_from_its_answer() {
    // The shape of the relay's GET /api/v1/alerts (alerting/src/api.rs `active`).
    let body = json!({"alerts": [
        {
            "fingerprint": "a1b2", "status": "firing",
            "labels": {"alertname": "EtcdMemberDown", "severity": "warning", "member": "m3",
                       "cluster": "prod", "instance": "exporter:8080"},
            "annotations": {"summary": "etcd member m3 is down", "description": "..."},
            "starts_at": "2024-05-01T10:00:00Z", "ends_at": "", "generator_url": "http://prom/graph",
            "received_at_ms": 1714557600000i64,
            "receivers": ["slack"], "silenced_by": [], "inhibited_by": []
        },
        {
            "fingerprint": "c3d4", "status": "firing",
            "labels": {"alertname": "EtcdNoLeader", "severity": "critical"},
            "annotations": {"summary": "etcd cluster has no leader"},
            "starts_at": "2024-05-01T10:05:00Z", "ends_at": "", "generator_url": "",
            "received_at_ms": 1714557900000i64,
            "receivers": ["pagerduty"], "silenced_by": [], "inhibited_by": []
        },
        {
            "fingerprint": "e5f6", "status": "firing",
            "labels": {"alertname": "EtcdHighFsyncDurations", "severity": "warning"},
            "annotations": {},
            "starts_at": "2024-05-01T09:00:00Z", "ends_at": "", "generator_url": "",
            "received_at_ms": 1714554000000i64,
            "receivers": ["slack"], "silenced_by": ["s-1"], "inhibited_by": []
        },
        "not an alert"
    ]});
    let alerts = parse_relay_alerts(&body).expect("parses");
    assert_eq!(
        alerts,
        vec![
            FiringAlert {
                name: "EtcdNoLeader".into(),
                severity: "critical".into(),
                cluster: None,
                member: None,
                summary: Some("etcd cluster has no leader".into()),
                starts_at: "2024-05-01T10:05:00Z".into(),
            },
            FiringAlert {
                name: "EtcdMemberDown".into(),
                severity: "warning".into(),
                cluster: Some("prod".into()),
                member: Some("m3".into()),
                summary: Some("etcd member m3 is down".into()),
                starts_at: "2024-05-01T10:00:00Z".into(),
            },
        ]
    );
    assert_eq!(parse_relay_alerts(&json!({"alerts": []})), Ok(vec![]));
    assert!(parse_relay_alerts(&json!({"error": "nope"})).is_err());
    assert!(parse_relay_alerts(&json!([1, 2])).is_err());
}

#[test]
fn text_helpers() {
    assert_eq!(fmt::bytes(512.0), "512 B");
    assert_eq!(fmt::bytes(1536.0), "1.5 KiB");
    assert_eq!(fmt::bytes(25.0 * 1048576.0), "25 MiB");
    assert_eq!(fmt::ms(0.4231), "0.42 ms");
    assert_eq!(fmt::ms(1250.0), "1.25 s");
    assert_eq!(fmt::ago(NOW, NOW - 42_000), "42 s ago");
    assert_eq!(fmt::ago(NOW, NOW - 300_000), "5 min ago");
    assert_eq!(fmt::utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(fmt::utc(1_709_251_199_000), "2024-02-29 23:59:59 UTC");
    assert_eq!(fmt::trim_zeros("50.0 ms"), "50 ms");
    assert_eq!(fmt::trim_zeros("0.50 ms"), "0.5 ms");
    assert_eq!(fmt::trim_zeros("1.0 MiB"), "1 MiB");
    assert_eq!(fmt::trim_zeros("200/s"), "200/s");
    assert_eq!(fmt::trim_zeros("100 ms"), "100 ms");
    assert_eq!(fmt::esc("<m1 & \"x\">"), "&lt;m1 &amp; &quot;x&quot;&gt;");
}
