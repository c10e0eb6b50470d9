//! The whole path from a failing member to a page: a real 3-member etcd cluster with
//! agents, the exporter, a real Prometheus running the shipped `prometheus/prometheus.yml`
//! (with short scrape intervals) and the shipped `rules/` unchanged, the relay, and local
//! stand-ins for Slack and PagerDuty. Plus the promtool checks of the assets.
//!
//! The timings printed (`chain: ...`, visible with `--nocapture`) are the fault-to-
//! notification latencies that the issue asks to report; the test asserts what arrives,
//! and where, never how fast.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tests::exporter::value;
use tests::prometheus::{promtool, repo_root, rule_files};
use tests::relay::{Recorded, RunningRelay, StandIn};
use tests::{wait_for, EtcdCluster, RunningAgent, RunningExporter, RunningPrometheus};

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let files: Vec<String> = rule_files()
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("etcd-alerts.yml"))
            && files.iter().any(|f| f.ends_with("etcd-recording.yml")),
        "{files:?}"
    );
    let mut args = vec!["check", "rules"];
    args.extend(files.iter().map(String::as_str));
    let (code, out) = promtool(&args);
    assert_eq!(code, 0, "promtool check rules:\n{out}");

    let mut tests: Vec<String> = std::fs::read_dir(repo_root().join("rules/tests"))
        .expect("rules/tests/")
        .filter_map(|e| e.ok().map(|e| e.path().to_string_lossy().into_owned()))
        .filter(|p| p.ends_with(".yml"))
        .collect();
    tests.sort();
    assert!(!tests.is_empty(), "no promtool unit tests in rules/tests/");
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let (code, out) = promtool(&args);
    assert_eq!(code, 0, "promtool test rules:\n{out}");
}

#[test]
fn promtool_accepts_the_shipped_prometheus_config() {
    let (code, out) = promtool(&["check", "config", "prometheus/prometheus.yml"]);
    assert_eq!(code, 0, "promtool check config:\n{out}");
    assert!(out.contains("2 rule files found"), "{out}");
}

/// Every alert has the labels and annotations the relay and the runbooks rely on, and its
/// runbook link points at a section of `docs/runbooks.md`.
#[test]
fn every_alert_has_a_severity_and_a_runbook_section() {
    let rules = std::fs::read_to_string(repo_root().join("rules/etcd-alerts.yml"))
        .expect("rules/etcd-alerts.yml");
    let runbooks =
        std::fs::read_to_string(repo_root().join("docs/runbooks.md")).expect("docs/runbooks.md");
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    // Split the file at each rule; YAML stays plain enough here to read it as text.
    let blocks: Vec<&str> = rules.split("      - alert: ").skip(1).collect();
    assert!(blocks.len() >= 25, "only {} alerts", blocks.len());
    let runbook_base =
        std::fs::read_to_string(tests::prometheus::repo_root().join("rules/RUNBOOK_BASE"))
            .expect("rules/RUNBOOK_BASE")
            .trim()
            .to_owned();
    for block in blocks {
        let name = block.lines().next().unwrap_or_default().trim();
        let severity = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("severity: "))
            .unwrap_or_else(|| panic!("{name}: no severity"));
        assert!(
            ["critical", "warning", "info", "none"].contains(&severity),
            "{name}: severity {severity}"
        );
        for key in ["summary:", "description:", "runbook_url:"] {
            assert!(
                block.lines().any(|l| l.trim().starts_with(key)),
                "{name}: no {key}"
            );
        }
        let url = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("runbook_url: "))
            .unwrap_or_default();
        let anchor = url.rsplit_once('#').map(|(_, a)| a).unwrap_or_default();
        assert_eq!(anchor, name.to_lowercase(), "{name}: runbook anchor");
        // The base is one setting (scripts/set-runbook-base.sh changes it everywhere).
        assert_eq!(
            url.rsplit_once('#').map(|(base, _)| base),
            Some(runbook_base.as_str()),
            "{name}: runbook url {url} does not start with rules/RUNBOOK_BASE"
        );
        assert!(
            anchors.contains(anchor),
            "{name}: docs/runbooks.md has no section `## {name}`"
        );
    }
}

/// `prometheus/prometheus.yml` with the test's addresses and, unless `shipped_intervals`,
/// 1-second scrapes. Every replacement must apply, so a change to the shipped file shows
/// here.
fn shipped_config(
    exporter: &str,
    agents: &[String],
    relay: &str,
    shipped_intervals: bool,
) -> String {
    let mut config = std::fs::read_to_string(repo_root().join("prometheus/prometheus.yml"))
        .expect("prometheus/prometheus.yml");
    let rules_dir = format!("{}/", repo_root().join("rules").display());
    let mut replacements: Vec<(String, String)> = vec![
        ("'127.0.0.1:8080'".into(), format!("'{exporter}'")),
        ("'127.0.0.1:9095'".into(), format!("'{relay}'")),
        ("../rules/".into(), rules_dir),
    ];
    if !shipped_intervals {
        replacements.extend([
            ("scrape_interval: 15s".into(), "scrape_interval: 1s".into()),
            ("scrape_interval: 5s".into(), "scrape_interval: 1s".into()),
            ("scrape_timeout: 10s".into(), "scrape_timeout: 1s".into()),
            ("scrape_timeout: 5s".into(), "scrape_timeout: 1s".into()),
            (
                "evaluation_interval: 15s".into(),
                "evaluation_interval: 1s".into(),
            ),
        ]);
    }
    for (i, a) in agents.iter().enumerate() {
        replacements.push((format!("'127.0.0.1:{}'", 9101 + i), format!("'{a}'")));
    }
    for (from, to) in replacements {
        assert!(
            config.contains(&from),
            "prometheus/prometheus.yml no longer contains {from}"
        );
        config = config.replace(&from, &to);
    }
    config
}

/// Every query of the Grafana dashboards, with its variables at "all", is valid PromQL
/// for this Prometheus, and every etcd-monitor series it names exists in it (scraped from
/// the real exporter, agents and relay, or recorded by the rules). The bench's series come
/// from the Pushgateway, which this test does not feed, so they are only parsed.
async fn dashboards_query_what_prometheus_has(prom: &RunningPrometheus) {
    fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v.as_str()) {
                        ("expr", Some(e)) => out.push(e.to_owned()),
                        _ => exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let dir = repo_root().join("grafana/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("grafana/dashboards/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let mut checked = 0;
    let mut wanted = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read dashboard");
        let dashboard: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", file.display()));
        let mut all = Vec::new();
        exprs(&dashboard["panels"], &mut all);
        assert!(!all.is_empty(), "{}: no queries", file.display());
        for raw in all {
            let expr = raw
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "1m")
                .replace("$__range", "1h")
                .replace("${instance}", ".*")
                .replace("$instance", ".*")
                .replace("${member}", ".*")
                .replace("$member", ".*")
                .replace("${job}", ".*")
                .replace("$job", ".*")
                .replace("${cluster}", ".*")
                .replace("$cluster", ".*");
            let answer = prom.query_response(&expr).await;
            assert_eq!(
                answer["status"],
                "success",
                "{}: {raw}\n{answer}",
                file.display()
            );
            for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            {
                let ours = ["etcd_", "member:", "cluster:", "grpc_"]
                    .iter()
                    .any(|p| token.starts_with(p));
                // Label names share the prefixes; they are not series.
                let label = token.starts_with("grpc_")
                    && ["grpc_code", "grpc_method", "grpc_service", "grpc_type"].contains(&token);
                if ours && !label && !token.starts_with("etcd_bench_") {
                    wanted.insert(token.to_owned());
                }
            }
            checked += 1;
        }
    }
    // Recorded series appear once their rules have two samples in their windows.
    let mut missing = BTreeSet::new();
    for _ in 0..60 {
        let names = prom.metric_names().await;
        missing = wanted.difference(&names).cloned().collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        missing.is_empty(),
        "the dashboards query series Prometheus does not have: {missing:?}"
    );
    eprintln!(
        "chain: {checked} dashboard queries valid, the {} series they name all present",
        wanted.len()
    );
}

/// Sleeps 0 to 10 s (the quorum rules' evaluation interval), from the clock's nanoseconds.
async fn random_pause() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(u64::from(nanos % 10_000))).await;
}

/// What a Slack message is about: `[STATE] Name on member: summary` -> (state, "Name on
/// member").
fn slack_subject(r: &Recorded) -> Option<(String, String)> {
    let text = r.body["text"].as_str()?;
    let (state, rest) = text.strip_prefix('[')?.split_once("] ")?;
    let what = rest.split(": ").next()?;
    Some((state.to_owned(), what.to_owned()))
}

/// What each PagerDuty event is about: (event_action, dedup_key, alertname, arrival). A
/// resolve carries only its dedup key: its alertname is the one of the trigger with it.
fn pagerduty_events(pd: &StandIn) -> Vec<(String, String, String, Instant)> {
    let raw: Vec<(String, String, Option<String>, Instant)> = pd
        .requests()
        .iter()
        .filter_map(|r| {
            Some((
                r.body["event_action"].as_str()?.to_owned(),
                r.body["dedup_key"].as_str()?.to_owned(),
                r.body["payload"]["class"].as_str().map(str::to_owned),
                r.at,
            ))
        })
        .collect();
    raw.iter()
        .map(|(action, key, class, at)| {
            let name = class.clone().or_else(|| {
                raw.iter()
                    .find(|(a, k, _, _)| a == "trigger" && k == key)
                    .and_then(|(_, _, c, _)| c.clone())
            });
            (action.clone(), key.clone(), name.unwrap_or_default(), *at)
        })
        .collect()
}

async fn wait_slack(slack: &StandIn, state: &str, what: &str, since: Instant) -> Duration {
    wait_for(
        &format!("Slack: [{state}] {what}"),
        Duration::from_secs(180),
        || async {
            slack.requests().iter().find_map(|r| {
                let (s, w) = slack_subject(r)?;
                (s == state && w == what).then(|| r.at.duration_since(since))
            })
        },
    )
    .await
}

async fn wait_pagerduty(pd: &StandIn, action: &str, alertname: &str, since: Instant) -> Duration {
    wait_for(
        &format!("PagerDuty: {action} {alertname}"),
        Duration::from_secs(180),
        || async {
            pagerduty_events(pd).iter().find_map(|(a, _, name, at)| {
                (a == action && name == alertname).then(|| at.duration_since(since))
            })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_member_reaches_chat_and_a_lost_quorum_pages_then_resolves() {
    tests::init_logs();
    // Set by scripts/bench-alerts.sh to measure with the production defaults: the
    // exporter's 5s cycle and the shipped config's scrape and evaluation intervals.
    let shipped_intervals = std::env::var_os("ETCD_MONITOR_CHAIN_SHIPPED_INTERVALS").is_some();
    let exporter_interval = if shipped_intervals { "5s" } else { "1s" };
    eprintln!(
        "chain: exporter interval {exporter_interval}, {}",
        if shipped_intervals {
            "shipped scrape and evaluation intervals (exporter 5s, rest 15s, quorum rules 10s)"
        } else {
            "every scrape and the global evaluation 1s (quorum rules 10s, as shipped)"
        }
    );
    let mut cluster = EtcdCluster::start(3).await;
    cluster.wait_leader(Duration::from_secs(30)).await;
    let mut agents = Vec::new();
    let mut agent_flags = Vec::new();
    for i in 0..3 {
        let a = RunningAgent::for_member(&cluster, i, "1s", "1s", &[]).await;
        agent_flags.push("--agent".to_owned());
        agent_flags.push(format!("{}={}", cluster.members[i].name, a.url()));
        agents.push(a);
    }
    let mut flags = tests::exporter::cluster_flags(&cluster);
    flags.extend(["--interval".to_owned(), exporter_interval.to_owned()]);
    flags.extend(agent_flags);
    let exporter = RunningExporter::start(&flags).await;

    let slack = StandIn::start().await;
    let pagerduty = StandIn::start().await;
    let secrets = tempfile::tempdir().expect("dir");
    let slack_url = secrets.path().join("slack-url");
    std::fs::write(&slack_url, slack.url("/services/T000/B000/XXXX")).expect("write");
    let pd_key = secrets.path().join("pagerduty-key");
    std::fs::write(&pd_key, "R0UTINGKEY0123456789012345678901").expect("write");
    // The routing the design's example shows: critical pages and goes to chat, warning
    // goes to chat, the rest (info) is only recorded.
    let relay = RunningRelay::start(&format!(
        r##"dedup_window: 5m
receivers:
  - name: oncall
    pagerduty:
      routing_key_file: {pd_key}
      url: {pd_url}
  - name: chat
    slack:
      webhook_url_file: {slack_url}
      channel: "#etcd"
  - name: log
    console: {{}}
routes:
  - match: {{severity: critical}}
    receivers: [oncall, chat]
  - match: {{severity: warning}}
    receivers: [chat]
  - receivers: [log]
"##,
        pd_key = pd_key.display(),
        pd_url = pagerduty.url("/v2/enqueue"),
        slack_url = slack_url.display(),
    ))
    .await;
    let agent_addrs: Vec<String> = agents.iter().map(|a| a.addr.to_string()).collect();
    let prom = RunningPrometheus::start(
        &shipped_config(
            &exporter.addr.to_string(),
            &agent_addrs,
            &relay.addr.to_string(),
            shipped_intervals,
        ),
        &[],
    )
    .await;

    // Prometheus sees the healthy cluster and its agents through the shipped config, and
    // the recording rules run.
    wait_for(
        "Prometheus to see a healthy cluster, 3 agents and recorded lags",
        Duration::from_secs(90),
        || async {
            let healthy = prom.query("etcd_cluster_healthy == 1").await.len() == 1;
            let agents = prom
                .query(r#"up{job="etcd-monitor-agent"} == 1"#)
                .await
                .len()
                == 3;
            let lags = prom.query("member:etcd_member_revision:lag").await.len() == 3;
            (healthy && agents && lags).then_some(())
        },
    )
    .await;
    let firing_at_start: Vec<_> = prom
        .alerts()
        .await
        .into_iter()
        // Info alerts are only recorded; the heartbeat (severity none) always fires.
        .filter(|a| {
            a["state"] == "firing"
                && a["labels"]["severity"] != "info"
                && a["labels"]["severity"] != "none"
        })
        .collect();
    assert!(
        firing_at_start.is_empty(),
        "alerts on a healthy cluster: {firing_at_start:#?}"
    );

    dashboards_query_what_prometheus_has(&prom).await;

    // 0. A rolling restart, one member at a time, each down for 10 s (an upgrade): nobody
    // is paged and chat hears nothing. Then long enough for any 20 s rule to have fired.
    for i in 0..3 {
        cluster.stop(i);
        tokio::time::sleep(Duration::from_secs(10)).await;
        cluster.restart(i);
        wait_for(
            "the exporter to see the restarted member and a healthy cluster",
            Duration::from_secs(60),
            || async {
                let m = exporter.metrics().await;
                let name = cluster.members[i].name.as_str();
                let up = value(&m, "etcd_member_up", &[("member", name)]) == Some(1.0);
                let healthy = value(&m, "etcd_cluster_healthy", &[]) == Some(1.0);
                (up && healthy).then_some(())
            },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(40)).await;
    // Chat may hear of frequent leader changes, and only of them: SIGTERM hands leadership
    // over, three moves at most, but a restarted member that campaigns makes a fourth.
    let chat: Vec<_> = slack
        .requests()
        .iter()
        .filter_map(slack_subject)
        .filter(|(_, w)| w != "EtcdFrequentLeaderChanges")
        .collect();
    assert!(
        pagerduty.requests().is_empty() && chat.is_empty(),
        "a rolling restart notified: PagerDuty {:?}, Slack {chat:?}",
        pagerduty.requests(),
    );
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;

    // 1. One member fails: chat hears of it, nobody is paged.
    let first = (leader + 1) % 3;
    let second = leader;
    let first_name = cluster.members[first].name.clone();
    let second_name = cluster.members[second].name.clone();
    // Each fault at a random moment: the test otherwise acts right after a notification,
    // that is right after an evaluation, and would always measure the same phase.
    random_pause().await;
    cluster.kill(first);
    let t1 = Instant::now();
    let member_down_1 = wait_slack(
        &slack,
        "WARNING",
        &format!("EtcdMemberDown on {first_name}"),
        t1,
    )
    .await;
    eprintln!(
        "chain: EtcdMemberDown ({first_name}) reached Slack {member_down_1:.1?} after the kill"
    );
    let at_risk = wait_slack(&slack, "WARNING", "EtcdQuorumAtRisk", t1).await;
    eprintln!("chain: EtcdQuorumAtRisk reached Slack {at_risk:.1?} after the kill");
    assert!(
        pagerduty.requests().is_empty(),
        "one member down paged: {:?}",
        pagerduty.requests()
    );
    let critical: Vec<_> = slack
        .requests()
        .iter()
        .filter_map(slack_subject)
        .filter(|(s, _)| s == "CRITICAL")
        .collect();
    assert!(critical.is_empty(), "one member down: {critical:?}");

    // 2. A second one fails: quorum is lost, and that pages.
    random_pause().await;
    cluster.kill(second);
    let t2 = Instant::now();
    let quorum_lost = wait_pagerduty(&pagerduty, "trigger", "EtcdQuorumLost", t2).await;
    eprintln!("chain: EtcdQuorumLost reached PagerDuty {quorum_lost:.1?} after the second kill");
    let no_leader = wait_pagerduty(&pagerduty, "trigger", "EtcdNoLeader", t2).await;
    eprintln!("chain: EtcdNoLeader reached PagerDuty {no_leader:.1?} after the second kill");
    let member_down_2 = wait_slack(
        &slack,
        "WARNING",
        &format!("EtcdMemberDown on {second_name}"),
        t2,
    )
    .await;
    eprintln!(
        "chain: EtcdMemberDown ({second_name}) reached Slack {member_down_2:.1?} after the kill"
    );
    // Chat hears of the criticals too.
    wait_slack(&slack, "CRITICAL", "EtcdQuorumLost", t2).await;

    // 3. Both come back: every notification that fired is resolved, where it went.
    cluster.restart(first);
    cluster.restart(second);
    let t3 = Instant::now();
    for name in ["EtcdQuorumLost", "EtcdNoLeader"] {
        let d = wait_pagerduty(&pagerduty, "resolve", name, t3).await;
        eprintln!("chain: {name} resolved at PagerDuty {d:.1?} after the restart");
    }
    for what in [
        format!("EtcdMemberDown on {first_name}"),
        format!("EtcdMemberDown on {second_name}"),
        "EtcdQuorumAtRisk".to_owned(),
        "EtcdQuorumLost".to_owned(),
    ] {
        let d = wait_slack(&slack, "RESOLVED", &what, t3).await;
        eprintln!("chain: {what} resolved at Slack {d:.1?} after the restart");
    }
    // Whatever else fired on the way is resolved too, at the same receiver, and each
    // PagerDuty resolve carries the dedup key of its trigger. Except the one alert that
    // must outlive the members' return: SIGTERM hands leadership over, so the rolling
    // restart may move the leader three times, and the election after the restart makes a
    // fourth in 15 minutes, which EtcdFrequentLeaderChanges rightly reports until those
    // 15 minutes have passed.
    wait_for(
        "a resolve for every trigger",
        Duration::from_secs(120),
        || async {
            let fired: BTreeSet<String> = slack
                .requests()
                .iter()
                .filter_map(slack_subject)
                .filter(|(s, w)| s != "RESOLVED" && w != "EtcdFrequentLeaderChanges")
                .map(|(_, w)| w)
                .collect();
            let resolved: BTreeSet<String> = slack
                .requests()
                .iter()
                .filter_map(slack_subject)
                .filter(|(s, _)| s == "RESOLVED")
                .map(|(_, w)| w)
                .collect();
            let events = pagerduty_events(&pagerduty);
            let triggers: BTreeSet<&String> = events
                .iter()
                .filter(|e| e.0 == "trigger")
                .map(|e| &e.1)
                .collect();
            let resolves: BTreeSet<&String> = events
                .iter()
                .filter(|e| e.0 == "resolve")
                .map(|e| &e.1)
                .collect();
            (fired.is_subset(&resolved) && triggers == resolves).then_some(())
        },
    )
    .await;
    cluster.wait_all_have_leader(Duration::from_secs(30)).await;
    drop(prom);
    relay.stop().await.expect("relay stops");
    exporter.stop().await.expect("exporter stops");
}
