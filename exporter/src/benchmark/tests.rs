//! Unit tests of the benchmark endpoint's decisions: the estimate, the budget, the
//! deadline, the choice of cluster and the request limits.

use std::time::Duration;

use super::budget::{
    self, ClusterSpace, MemberSpace, Quota, Refusal, DEFAULT_QUOTA_BYTES, PER_WRITE_OVERHEAD,
};
use super::*;
use crate::model::Alarm;

const PREFIX: &str = "/p/bench/";

fn req(v: serde_json::Value) -> BenchRequest {
    serde_json::from_value(v).expect("a valid request body")
}

fn p(v: serde_json::Value) -> Params {
    params(&req(v), PREFIX).expect("valid parameters")
}

fn space(quota: Quota, dbs: &[u64]) -> ClusterSpace {
    ClusterSpace {
        quota,
        members: dbs
            .iter()
            .enumerate()
            .map(|(i, &db_size)| MemberSpace {
                name: format!("m{}", i + 1),
                db_size,
            })
            .collect(),
        alarms: vec![],
    }
}

#[test]
fn a_read_run_counts_its_fill_and_no_writes() {
    let e = budget::estimate(&p(serde_json::json!({
        "workload": "read", "key_space": 1000, "key_size": 32, "val_size": 1000, "total": 50000
    })));
    assert_eq!((e.fill_keys, e.writes), (1000, 0));
    assert_eq!(e.bytes_per_write, 1032 + 1032 / 4 + PER_WRITE_OVERHEAD);
    assert_eq!(e.bytes, 1000 * e.bytes_per_write);
}

#[test]
fn writes_come_from_the_total_the_rate_or_the_assumed_ceiling() {
    let total = budget::estimate(&p(serde_json::json!({"workload": "write", "total": 700})));
    assert_eq!((total.fill_keys, total.writes), (0, 700));
    // The key grows to hold the prefix and an index.
    assert_eq!(
        total.bytes_per_write,
        (PREFIX.len() as u64 + 1 + 8) * 5 / 4 + PER_WRITE_OVERHEAD
    );
    let rated = budget::estimate(&p(
        serde_json::json!({"workload": "write", "duration": 3.0, "rate": 50}),
    ));
    assert_eq!(rated.writes, 150);
    let open = budget::estimate(&p(
        serde_json::json!({"workload": "write", "duration": 2.0}),
    ));
    assert_eq!(
        open.writes,
        2 * budget::ASSUMED_MAX_WRITES_PER_SECOND as u64
    );
    let mixed = budget::estimate(&p(
        serde_json::json!({"workload": "mixed", "total": 1000, "read_ratio": 0.9}),
    ));
    assert_eq!(mixed.writes, 105 + 10);
    let all_reads = budget::estimate(&p(
        serde_json::json!({"workload": "mixed", "total": 5, "read_ratio": 1.0}),
    ));
    assert_eq!(all_reads.writes, 5, "never more writes than requests");
}

#[test]
fn the_budget_is_a_share_of_the_space_left_by_the_fullest_member() {
    let s = space(Quota::Reported(16 << 20), &[1 << 20, 4 << 20, 2 << 20]);
    let b = budget::budget(&s);
    assert_eq!(b.largest_db_bytes, 4 << 20);
    assert_eq!(b.largest_db_member.as_deref(), Some("m2"));
    assert_eq!(b.headroom_bytes, 12 << 20);
    assert_eq!(b.budget_bytes, (12 << 20) / 100 * 25);
    // Unknown quota: etcd's default.
    let d = budget::budget(&space(Quota::AssumedDefault, &[0]));
    assert_eq!(d.headroom_bytes, DEFAULT_QUOTA_BYTES);
    // A database over the quota leaves nothing.
    assert_eq!(
        budget::budget(&space(Quota::Reported(100), &[200])).budget_bytes,
        0
    );
}

#[test]
fn a_run_over_budget_is_refused_with_its_figures() {
    let big = p(serde_json::json!({
        "workload": "read", "key_space": 100000, "val_size": 1024, "total": 10
    }));
    let s = space(Quota::Reported(16 << 20), &[100_000, 50_000, 70_000]);
    let refusal = budget::decide(&big, &s).expect_err("over budget");
    let Refusal::OverBudget { estimate, budget } = &refusal else {
        panic!("not an over-budget refusal: {refusal:?}");
    };
    let msg = refusal.to_string();
    for figure in [
        estimate.bytes,
        budget.budget_bytes,
        16 << 20,
        100_000,
        budget.headroom_bytes,
    ] {
        assert!(msg.contains(&figure.to_string()), "{figure} not in {msg}");
    }
    let small = p(serde_json::json!({"workload": "write", "total": 200}));
    assert!(budget::decide(&small, &s).is_ok());
    let unknown = budget::decide(&big, &space(Quota::AssumedDefault, &[0]));
    assert!(unknown.is_ok(), "{unknown:?}");
    let tiny_default = p(serde_json::json!({
        "workload": "read", "key_space": 1000000, "val_size": 65536, "total": 10
    }));
    let msg = budget::decide(&tiny_default, &space(Quota::AssumedDefault, &[0]))
        .expect_err("64 GiB against 2 GiB")
        .to_string();
    assert!(msg.contains("etcd's default"), "{msg}");
}

#[test]
fn any_alarm_refuses_even_a_tiny_run() {
    let mut s = space(Quota::Reported(1 << 30), &[0, 0, 0]);
    s.alarms.push(("m3".into(), Alarm::Nospace));
    let refusal = budget::decide(&p(serde_json::json!({"workload": "write", "total": 1})), &s)
        .expect_err("alarm");
    assert_eq!(
        refusal,
        Refusal::Alarm {
            member: "m3".into(),
            alarm: Alarm::Nospace
        }
    );
    assert!(refusal.to_string().contains("NOSPACE"));
}

#[test]
fn one_deadline_covers_setup_fill_and_load() {
    let d = |v| budget::deadline(&p(v), MAX_DURATION);
    let write = d(serde_json::json!({"workload": "write", "duration": 3.0}));
    assert_eq!(
        write,
        budget::SETUP_ALLOWANCE + Duration::from_secs(3) + budget::FINISH_ALLOWANCE
    );
    let read = d(serde_json::json!({"workload": "read", "duration": 3.0}));
    assert_eq!(read, write + budget::FILL_ALLOWANCE);
    let rated = d(serde_json::json!({"workload": "write", "total": 100, "rate": 10}));
    assert_eq!(
        rated,
        budget::SETUP_ALLOWANCE + Duration::from_secs(10) + budget::FINISH_ALLOWANCE
    );
    let capped = d(serde_json::json!({"workload": "read", "total": 100}));
    assert_eq!(capped, budget::MAX_DEADLINE);
}

#[test]
fn a_total_that_the_rate_stretches_past_the_limit_is_refused() {
    let e = params(
        &req(serde_json::json!({"workload": "write", "total": 200000, "rate": 1})),
        PREFIX,
    )
    .expect_err("200000 s");
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert!(e.message.contains("rate"), "{}", e.message);
}

fn target(name: Option<&str>) -> Target {
    Target {
        spec: BenchTarget {
            cluster: name.map(str::to_owned),
            etcd: common::etcd::EtcdConfig {
                endpoints: vec![],
                tls: common::etcd::TlsMaterial {
                    ca_pem: None,
                    identity: None,
                },
                insecure_skip_tls_verify: false,
                user: None,
                dial_timeout: Duration::from_secs(1),
                command_timeout: Duration::from_secs(1),
            },
            prefix: PREFIX.into(),
        },
        slot: Arc::new(Mutex::new(())),
    }
}

#[test]
fn the_cluster_is_required_among_several_and_optional_alone() {
    let e = select(&[], None).err().expect("none");
    assert_eq!(e.status, StatusCode::NOT_FOUND);
    let one = [target(None)];
    assert!(select(&one, None).is_ok());
    let e = select(&one, Some("prod")).err().expect("unknown");
    assert_eq!(e.status, StatusCode::NOT_FOUND);

    let named = [target(Some("prod"))];
    assert!(select(&named, None).is_ok());
    assert!(select(&named, Some("prod")).is_ok());

    let two = [target(Some("prod")), target(Some("staging"))];
    let e = select(&two, None).err().expect("ambiguous");
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert!(
        e.message.contains("prod") && e.message.contains("staging"),
        "{}",
        e.message
    );
    let chosen = select(&two, Some("staging")).expect("known");
    assert_eq!(chosen.spec.cluster.as_deref(), Some("staging"));
    let e = select(&two, Some("qa")).err().expect("unknown");
    assert_eq!(e.status, StatusCode::NOT_FOUND);
    assert!(e.message.contains("qa") && e.message.contains("prod"));
    let long = "x".repeat(1000);
    let e = select(&two, Some(&long)).err().expect("unknown");
    assert!(e.message.len() < 200, "the name is clipped: {}", e.message);
}

#[tokio::test]
async fn past_its_deadline_a_run_is_stopped_and_its_slot_freed() {
    // A listener that never answers: the bench waits on it until the deadline.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", hole.local_addr().expect("address"));
    let mut t = target(None);
    t.spec.etcd.endpoints = vec![url::Url::parse(&url).expect("URL")];
    t.spec.etcd.dial_timeout = Duration::from_millis(500);
    t.spec.etcd.command_timeout = Duration::from_millis(500);
    let job = runner::Job {
        params: p(serde_json::json!({"workload": "write", "duration": 30.0})),
        etcd: t.spec.etcd.clone(),
        prefix: PREFIX.into(),
        cluster: None,
        deadline: Duration::from_millis(200),
        slot: t.slot.clone().try_lock_owned().expect("a free slot"),
    };
    let started = std::time::Instant::now();
    let outcome = runner::start(job)
        .expect("a thread")
        .await
        .expect("an outcome");
    assert!(
        matches!(outcome, runner::Outcome::TimedOut(d) if d == Duration::from_millis(200)),
        "{outcome:?}"
    );
    assert!(
        t.slot.try_lock().is_ok(),
        "the slot is free once the outcome is in"
    );
    // The deadline, then a bounded clean-up against the silent endpoint.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}
