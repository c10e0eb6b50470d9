//! The fault catalog (issue 14): each fault a real cluster can have, from the fault itself
//! through the agents and the exporter, the shipped rules in a real Prometheus running the
//! shipped `prometheus/prometheus.yml` (only addresses substituted, every interval as
//! shipped), and the relay on the shipped `alerting/relay.yml`, to the receiver a person
//! would hear it on, with the severity the rules give it; then the fault is removed and the
//! resolution followed the same way. Each test starts its own stack
//! ([`tests::stack::ShippedStack`]).
//!
//! Each test prints one line per notification it measured (`--nocapture`):
//! `catalog: <fault> | <alert> | <severity> | <receiver> | fired <s>s | resolved <s>s`,
//! seconds from the fault (and from its removal) to the arrival at the stand-in, or
//! `resolved -` when the resolution is not followed. `scripts/fault-catalog.sh` runs them
//! all and makes a table of these lines.
//!
//! The tests take minutes: the rules' `for` (EtcdMemberDown 1m, EtcdMonitorAgentDown 5m,
//! ...), the warnings' group_wait (30s) and, for resolutions, their group_interval (5m:
//! a warning's resolution reaches chat at the group's next flush, up to 5 minutes after
//! its first message). So all but the NOSPACE test (a critical with no `for`, about two
//! minutes) are `#[ignore]`d and run by the script. Waits are time-boxed at the shipped
//! timing plus a margin; a resolution that misses its box fails the test.
//!
//! The partition test runs in network namespaces it creates (`tests::netns`): the whole
//! stack in one of its own, each member in its own inside that, so iptables can drop what
//! goes between members and nothing else. It needs root.

use std::time::{Duration, Instant, SystemTime};

use tests::run_bench as bench;
use tests::stack::{ShippedStack, StackOptions};
use tests::ClusterOptions;

const MIB: u64 = 1024 * 1024;

/// A `for: 1m` warning: exporter cycle (5s) + Status timeout (4s) + scrape (5s) +
/// evaluation (<= 15s) + `for` (1m) + group_wait (30s) is about 2 minutes; twice that.
const WARNING_1M: Duration = Duration::from_secs(240);
/// A warning's resolution: the group's next flush comes up to group_interval (5m) after
/// its first message; plus a scrape, an evaluation and a margin.
const WARNING_RESOLVED: Duration = Duration::from_secs(420);
/// A critical without `for` (quorum group, 4s): cycle + scrape + evaluation + group_wait
/// (2s) is under 20s.
const CRITICAL_NOW: Duration = Duration::from_secs(120);
/// A critical's resolution: at the group's next flush, within group_interval (1m).
const CRITICAL_RESOLVED: Duration = Duration::from_secs(180);

/// Prints one row of the catalog.
fn catalog(
    fault: &str,
    alert: &str,
    severity: &str,
    receiver: &str,
    fired: Duration,
    resolved: Option<Duration>,
) {
    let resolved = resolved.map_or("-".to_owned(), |d| format!("{:.1}s", d.as_secs_f64()));
    eprintln!(
        "catalog: {fault} | {alert} | {severity} | {receiver} | fired {:.1}s | resolved {resolved}",
        fired.as_secs_f64()
    );
}

/// The two warnings a member fault raises in chat: `alert` about `member`, and
/// EtcdQuorumAtRisk; `state` is WARNING (fired) or RESOLVED. Time from `since` to each.
async fn member_warnings(
    stack: &ShippedStack,
    state: &str,
    alert: &str,
    member: &str,
    since: Instant,
) -> [Duration; 2] {
    let limit = if state == "RESOLVED" {
        WARNING_RESOLVED
    } else {
        WARNING_1M
    };
    [
        stack
            .wait_slack(state, alert, Some(member), since, limit)
            .await,
        stack
            .wait_slack(state, "EtcdQuorumAtRisk", None, since, limit)
            .await,
    ]
}

/// The catalog's rows for [`member_warnings`]: when each fired and resolved.
fn catalog_member_warnings(
    fault: &str,
    alert: &str,
    fired: [Duration; 2],
    resolved: [Duration; 2],
) {
    for ((name, fired), resolved) in [alert, "EtcdQuorumAtRisk"]
        .into_iter()
        .zip(fired)
        .zip(resolved)
    {
        catalog(fault, name, "warning", "slack", fired, Some(resolved));
    }
}

async fn healthy_stack(opts: StackOptions) -> ShippedStack {
    tests::init_logs();
    let stack = ShippedStack::start(opts).await;
    stack.wait_healthy().await;
    stack
}

/// Runs etcd-monitor-ctl's command line in-process against `endpoints`; panics unless
/// it exits 0. Its stdout.
async fn ctl(endpoints: &str, args: &[&str]) -> String {
    let mut argv: Vec<String> = vec![
        "etcd-monitor-ctl".into(),
        "--endpoints".into(),
        endpoints.into(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let what = args.join(" ");
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = ctl::cli::main_with(argv, &mut out, &mut err);
            (
                code,
                String::from_utf8_lossy(&out).into_owned(),
                String::from_utf8_lossy(&err).into_owned(),
            )
        })
        .join()
        .expect("ctl thread")
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "ctl {what}\nstdout: {out}\nstderr: {err}");
    out
}

/// The members that have raised `alarm` (`NOSPACE`), as etcd lists them.
async fn alarms(stack: &ShippedStack) -> usize {
    let mut c = stack.cluster.client(0).await;
    match c
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
    {
        Ok(r) => r
            .alarms()
            .iter()
            .filter(|a| a.alarm() == etcd_client::AlarmType::Nospace)
            .count(),
        Err(_) => 0,
    }
}

/// The largest backend size of any member, from the members' own `/metrics`.
async fn largest_db(stack: &ShippedStack) -> u64 {
    let mut largest = 0;
    for i in 0..stack.cluster.members.len() {
        let text = stack.cluster.member_metrics(i).await.unwrap_or_default();
        let size = text
            .lines()
            .find_map(|l| l.strip_prefix("etcd_mvcc_db_total_size_in_bytes "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        largest = largest.max(size as u64);
    }
    largest
}

/// (a) A follower frozen (SIGSTOP): its sockets stay open and nothing answers, the way a
/// hung host or a stalled VM looks. One member of three down is a warning for chat,
/// EtcdMemberDown and EtcdQuorumAtRisk; nobody is paged. Thawed, both resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about 9 minutes; run by scripts/fault-catalog.sh"]
async fn member_frozen() {
    let stack = healthy_stack(StackOptions::default()).await;
    let leader = stack.leader().await;
    let i = (leader + 1) % stack.cluster.members.len();
    let name = stack.cluster.members[i].name.clone();
    stack.cluster.freeze(i);
    let t0 = Instant::now();
    let fired = member_warnings(&stack, "WARNING", "EtcdMemberDown", &name, t0).await;
    stack.assert_nothing_paged().await;

    stack.cluster.thaw(i);
    let t1 = Instant::now();
    let resolved = member_warnings(&stack, "RESOLVED", "EtcdMemberDown", &name, t1).await;
    stack.assert_nothing_paged().await;
    eprintln!("{}", stack.report().await);
    catalog_member_warnings(
        "member frozen (SIGSTOP, follower)",
        "EtcdMemberDown",
        fired,
        resolved,
    );
}

/// (b) The leader killed (SIGKILL): a new leader is elected within seconds, so no page;
/// the dead member is EtcdMemberDown in chat, and the election is EtcdLeaderChanged in
/// the relay's history only (info: never sent to Slack or PagerDuty). Restarted, the
/// member's warnings resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about 9 minutes; run by scripts/fault-catalog.sh"]
async fn leader_killed() {
    let mut stack = healthy_stack(StackOptions::default()).await;
    let leader = stack.leader().await;
    let name = stack.cluster.members[leader].name.clone();
    stack.cluster.kill(leader);
    let t0 = Instant::now();
    let wall0 = SystemTime::now();
    let changed = stack
        .wait_history(
            "EtcdLeaderChanged",
            "log",
            "firing",
            wall0,
            Duration::from_secs(120),
        )
        .await;
    let fired = member_warnings(&stack, "WARNING", "EtcdMemberDown", &name, t0).await;
    stack.assert_nothing_paged().await;

    stack.cluster.restart(leader);
    let t1 = Instant::now();
    let resolved = member_warnings(&stack, "RESOLVED", "EtcdMemberDown", &name, t1).await;
    stack
        .cluster
        .wait_all_have_leader(Duration::from_secs(30))
        .await;
    stack.assert_nothing_paged().await;
    stack.assert_never_sent("EtcdLeaderChanged").await;
    eprintln!("{}", stack.report().await);
    catalog_member_warnings("leader killed (SIGKILL)", "EtcdMemberDown", fired, resolved);
    catalog(
        "leader killed (SIGKILL)",
        "EtcdLeaderChanged",
        "info",
        "relay history only",
        changed,
        None,
    );
}

/// (c) NOSPACE under load: etcd-monitor-bench writes 64 KiB values at 200/s into a
/// cluster with a 16 MiB quota until etcd raises the NOSPACE alarm and refuses writes.
/// That pages at once (PagerDuty, and Slack CRITICAL). `etcd-monitor-ctl
/// recover-nospace` (compact, defragment, disarm) brings writes back and the page
/// resolves. The quickest fault of the catalog (about 2 minutes), so CI runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nospace_under_bench_load() {
    let stack = healthy_stack(StackOptions {
        cluster: ClusterOptions {
            quota_backend_bytes: Some(16 * MIB),
            ..ClusterOptions::default()
        },
        ..StackOptions::default()
    })
    .await;
    let eps = stack.cluster.endpoints();
    // Few keys, so the space is history that compaction frees, not data.
    let argv: Vec<String> = format!(
        "etcd-monitor-bench --endpoints {eps} --conns 2 --clients 4 --duration 20s \
         --warmup 0s --rate 200 --key-space 32 --val-size 65536 --prefix fill/ \
         --output json write"
    )
    .split_whitespace()
    .map(str::to_owned)
    .collect();
    let load = tokio::spawn(bench(argv));
    let t0 = stack
        .wait_until(
            "etcd to raise NOSPACE under the bench's load",
            Duration::from_secs(60),
            || async { (alarms(&stack).await > 0).then(Instant::now) },
        )
        .await;
    let page = stack
        .wait_pagerduty("trigger", "EtcdAlarmNoSpace", t0, CRITICAL_NOW)
        .await;
    let chat = stack
        .wait_slack("CRITICAL", "EtcdAlarmNoSpace", None, t0, CRITICAL_NOW)
        .await;
    let (code, out, err) = load.await.expect("bench task");
    assert_eq!(code, 0, "bench: {err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("bench JSON");
    let refused: u64 = report["errors"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.contains("database space exceeded"))
                .filter_map(|(_, v)| v.as_u64())
                .sum()
        })
        .unwrap_or(0);
    assert!(refused > 0, "the bench saw no NOSPACE refusal: {report}");

    let recovered = ctl(&eps, &["recover-nospace"]).await;
    let t1 = Instant::now();
    assert_eq!(alarms(&stack).await, 0, "recover-nospace: {recovered}");
    let page_resolved = stack
        .wait_pagerduty("resolve", "EtcdAlarmNoSpace", t1, CRITICAL_RESOLVED)
        .await;
    let chat_resolved = stack
        .wait_slack("RESOLVED", "EtcdAlarmNoSpace", None, t1, CRITICAL_RESOLVED)
        .await;
    // Nothing else paged: the one incident is the NOSPACE alarm.
    let others: Vec<_> = stack
        .pagerduty_events()
        .into_iter()
        .filter(|e| e.alertnames.iter().any(|n| n != "EtcdAlarmNoSpace"))
        .collect();
    assert!(others.is_empty(), "other pages: {others:?}");
    eprintln!("{}", stack.report().await);
    catalog(
        "NOSPACE under bench load (16 MiB quota)",
        "EtcdAlarmNoSpace",
        "critical",
        "pagerduty",
        page,
        Some(page_resolved),
    );
    catalog(
        "NOSPACE under bench load (16 MiB quota)",
        "EtcdAlarmNoSpace",
        "critical",
        "slack",
        chat,
        Some(chat_resolved),
    );
}

/// (d) The database over 90% of its quota, NOSPACE not reached: EtcdDatabaseQuotaCritical
/// (`member:etcd_mvcc_db_quota_used:ratio > 0.90` for 2m) pages. Deleting the keys,
/// compacting and defragmenting (etcd-monitor-ctl) brings the file back under the
/// threshold and the page resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about 6 minutes; run by scripts/fault-catalog.sh"]
async fn database_near_quota() {
    let quota = 16 * MIB;
    let stack = healthy_stack(StackOptions {
        cluster: ClusterOptions {
            quota_backend_bytes: Some(quota),
            ..ClusterOptions::default()
        },
        ..StackOptions::default()
    })
    .await;
    let mut c = stack.cluster.client(0).await;
    let value = vec![b'q'; 16 * 1024];
    let mut n = 0u64;
    while largest_db(&stack).await < quota * 92 / 100 {
        for _ in 0..16 {
            n += 1;
            c.put(format!("fill/{}", n % 64), value.clone(), None)
                .await
                .expect("put below the quota");
        }
        assert!(n < 10_000, "the database never reached 92% of its quota");
    }
    let t0 = Instant::now();
    let filled = largest_db(&stack).await;
    assert_eq!(alarms(&stack).await, 0, "NOSPACE raised at {filled} bytes");
    let page = stack
        .wait_pagerduty(
            "trigger",
            "EtcdDatabaseQuotaCritical",
            t0,
            Duration::from_secs(300),
        )
        .await;
    let chat = stack
        .wait_slack(
            "CRITICAL",
            "EtcdDatabaseQuotaCritical",
            None,
            t0,
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(alarms(&stack).await, 0, "NOSPACE raised while waiting");

    let eps = stack.cluster.endpoints();
    ctl(&eps, &["del", "fill/", "--prefix"]).await;
    ctl(&eps, &["compact"]).await;
    ctl(&eps, &["defrag", "--rolling"]).await;
    let t1 = Instant::now();
    let after = largest_db(&stack).await;
    assert!(after < quota * 80 / 100, "still {after} bytes after defrag");
    let page_resolved = stack
        .wait_pagerduty(
            "resolve",
            "EtcdDatabaseQuotaCritical",
            t1,
            CRITICAL_RESOLVED,
        )
        .await;
    let chat_resolved = stack
        .wait_slack(
            "RESOLVED",
            "EtcdDatabaseQuotaCritical",
            None,
            t1,
            CRITICAL_RESOLVED,
        )
        .await;
    eprintln!(
        "catalog-note: database near quota: filled to {:.1}% with {n} puts of 16 KiB, \
         {:.1}% after delete, compact and rolling defrag",
        filled as f64 * 100.0 / quota as f64,
        after as f64 * 100.0 / quota as f64
    );
    eprintln!("{}", stack.report().await);
    catalog(
        "database over 90% of a 16 MiB quota",
        "EtcdDatabaseQuotaCritical",
        "critical",
        "pagerduty",
        page,
        Some(page_resolved),
    );
    catalog(
        "database over 90% of a 16 MiB quota",
        "EtcdDatabaseQuotaCritical",
        "critical",
        "slack",
        chat,
        Some(chat_resolved),
    );
}

/// (e) One agent stopped: Prometheus cannot scrape it, and after 5 minutes
/// EtcdMonitorAgentDown warns in chat. Started again on its address, it resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about 13 minutes; run by scripts/fault-catalog.sh"]
async fn agent_down() {
    let mut stack = healthy_stack(StackOptions::default()).await;
    let addr = stack.agents[1].addr.to_string();
    stack.agents[1].stop().await;
    let t0 = Instant::now();
    let down = stack
        .wait_slack(
            "WARNING",
            "EtcdMonitorAgentDown",
            None,
            t0,
            Duration::from_secs(480),
        )
        .await;
    let about_it = stack
        .slack_messages()
        .iter()
        .any(|m| m.state == "WARNING" && m.title.contains(&addr));
    assert!(about_it, "no warning names the agent at {addr}");
    stack.assert_nothing_paged().await;

    stack.agents[1].start().await;
    let t1 = Instant::now();
    let resolved = stack
        .wait_slack(
            "RESOLVED",
            "EtcdMonitorAgentDown",
            None,
            t1,
            WARNING_RESOLVED,
        )
        .await;
    stack.assert_nothing_paged().await;
    eprintln!("{}", stack.report().await);
    catalog(
        "agent down (one of three stopped)",
        "EtcdMonitorAgentDown",
        "warning",
        "slack",
        down,
        Some(resolved),
    );
}

/// (f) The exporter stopped: every etcd rule is blind, and after 2 minutes
/// EtcdMonitorExporterDown warns in chat. Started again on its address, it resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about 9 minutes; run by scripts/fault-catalog.sh"]
async fn exporter_down() {
    let mut stack = healthy_stack(StackOptions::default()).await;
    stack.exporter.stop().await;
    let t0 = Instant::now();
    let down = stack
        .wait_slack(
            "WARNING",
            "EtcdMonitorExporterDown",
            None,
            t0,
            Duration::from_secs(300),
        )
        .await;
    stack.assert_nothing_paged().await;

    stack.exporter.start().await;
    let t1 = Instant::now();
    let resolved = stack
        .wait_slack(
            "RESOLVED",
            "EtcdMonitorExporterDown",
            None,
            t1,
            WARNING_RESOLVED,
        )
        .await;
    stack.assert_nothing_paged().await;
    eprintln!("{}", stack.report().await);
    catalog(
        "exporter down",
        "EtcdMonitorExporterDown",
        "warning",
        "slack",
        down,
        Some(resolved),
    );
}

/// (g) The relay stopped: nothing can notify anyone, so nothing here can say so; the
/// heartbeat's pings to the outside dead man's switch stop, and that switch is what
/// pages. Measured: the pings' period while the relay runs, the time from the stop to
/// the first ping that does not come (`fired`: when a switch with no grace would notice),
/// the silence, and the time from the relay's restart to the next ping (`resolved`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about 6 minutes; run by scripts/fault-catalog.sh"]
async fn relay_down() {
    let mut stack = healthy_stack(StackOptions::default()).await;
    let pings = |stack: &ShippedStack| -> Vec<Instant> {
        stack.heartbeat.requests().iter().map(|r| r.at).collect()
    };
    // Two pings after the first: the period as the shipped route makes it.
    let beats = stack
        .wait_until(
            "three heartbeat pings",
            Duration::from_secs(240),
            || async {
                let p = pings(&stack);
                (p.len() >= 3).then_some(p)
            },
        )
        .await;
    let period = beats[beats.len() - 1].duration_since(beats[beats.len() - 2]);
    assert!(
        period < Duration::from_secs(90),
        "pings every {period:?}, not every minute"
    );
    // Stop somewhere in the middle of a period.
    tokio::time::sleep(period / 3).await;
    let before = pings(&stack).len();
    let last = *pings(&stack).last().expect("a ping");
    stack.relay.stop().await;
    let t0 = Instant::now();
    let down_for = Duration::from_secs(180);
    tokio::time::sleep(down_for).await;
    assert_eq!(
        pings(&stack).len(),
        before,
        "pings went on while the relay was down"
    );
    stack.relay.start().await;
    let t1 = Instant::now();
    let back = stack
        .wait_until(
            "a heartbeat ping after the relay's restart",
            Duration::from_secs(180),
            || async { pings(&stack).into_iter().find(|at| *at >= t1) },
        )
        .await;
    let missed = (last + period).saturating_duration_since(t0);
    eprintln!(
        "catalog-note: relay down: pings every {:.1}s while up; relay down {:.1}s; silence at \
         the heartbeat URL {:.1}s (last ping before the stop to the first after the restart)",
        period.as_secs_f64(),
        t1.duration_since(t0).as_secs_f64(),
        back.duration_since(last).as_secs_f64()
    );
    stack.assert_nothing_paged().await;
    eprintln!("{}", stack.report().await);
    catalog(
        "relay down (pings stop; the outside switch alerts)",
        "EtcdMonitorHeartbeat",
        "none",
        "heartbeat URL",
        missed,
        Some(back.duration_since(t1)),
    );
}

/// (h) A follower cut off from its peers while its clients still reach it: each member
/// is in a network namespace of its own and iptables drops what is forwarded between the
/// cut member and the others (connections hang, as on a real network), while the
/// exporter's and the clients' connections to it are untouched. It answers the exporter
/// but follows no leader: EtcdMemberPartitioned in chat after a minute (and
/// EtcdQuorumAtRisk: a cut-off member is not a healthy one); the other two keep quorum,
/// so nobody is paged. Healed, it rejoins and the warnings resolve.
#[test]
#[ignore = "about 9 minutes, needs root (network namespaces); run by scripts/fault-catalog.sh"]
fn member_partitioned() {
    tests::netns::isolated(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(member_partitioned_in_namespaces());
    });
}

async fn member_partitioned_in_namespaces() {
    let mut stack = healthy_stack(StackOptions {
        cluster: ClusterOptions {
            member_namespaces: true,
            ..ClusterOptions::default()
        },
        ..StackOptions::default()
    })
    .await;
    let leader = stack.leader().await;
    let i = (leader + 1) % stack.cluster.members.len();
    let name = stack.cluster.members[i].name.clone();
    stack.cluster.cut(i);
    let t0 = Instant::now();
    let fired = member_warnings(&stack, "WARNING", "EtcdMemberPartitioned", &name, t0).await;
    // Its clients still reach it: a serializable read answers.
    let mut c = stack.cluster.client(i).await;
    c.get(
        "anything",
        Some(etcd_client::GetOptions::new().with_serializable()),
    )
    .await
    .expect("a serializable read from the cut-off member");
    stack.assert_nothing_paged().await;

    stack.cluster.heal(i);
    let t1 = Instant::now();
    let resolved = member_warnings(&stack, "RESOLVED", "EtcdMemberPartitioned", &name, t1).await;
    stack
        .cluster
        .wait_all_have_leader(Duration::from_secs(60))
        .await;
    stack.assert_nothing_paged().await;
    eprintln!("{}", stack.report().await);
    catalog_member_warnings(
        "member cut off from its peers (clients still reach it)",
        "EtcdMemberPartitioned",
        fired,
        resolved,
    );
}
