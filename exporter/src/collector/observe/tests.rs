use super::*;
use crate::collector::gather::{MemberAnswers, Target, WriteProbe};
use crate::model::StatusFacts;

fn info(id: u64) -> MemberInfo {
    MemberInfo {
        id,
        name: format!("m{id}"),
        client_urls: vec![format!("http://m{id}:2379")],
        peer_urls: vec![],
        is_learner: false,
    }
}

fn status(id: u64, leader: u64) -> StatusFacts {
    StatusFacts {
        cluster_id: 7,
        member_id: id,
        version: "3.5.16".into(),
        leader,
        raft_term: 2,
        raft_index: 100,
        raft_applied_index: 100,
        revision: 50,
        db_size: 1 << 20,
        db_size_in_use: 1 << 19,
        is_learner: false,
        errors: vec![],
    }
}

const METRICS: &str = "\
# TYPE grpc_server_started_total counter
grpc_server_started_total{grpc_type=\"unary\",grpc_method=\"Range\"} 150
grpc_server_started_total{grpc_type=\"bidi_stream\",grpc_method=\"Watch\"} 9
# TYPE etcd_server_quota_backend_bytes gauge
etcd_server_quota_backend_bytes 2.147483648e+09
# TYPE etcd_debugging_mvcc_watcher_total gauge
etcd_debugging_mvcc_watcher_total 3
";

fn answers(id: u64, leader: u64, list: &[u64]) -> Answers {
    Answers {
        status: status(id, leader),
        members: Ok(list.iter().map(|i| info(*i)).collect()),
        alarms: None,
        read_linearizable: Ok(Duration::from_millis(2)),
        read_serializable: Ok(Duration::from_millis(1)),
        metrics: Ok(Arc::new(textformat::parse(METRICS).expect("parse"))),
        health: Ok(true),
    }
}

fn asked(id: u64, outcome: Result<Answers, MemberError>) -> MemberAnswers {
    MemberAnswers {
        target: Target {
            info: Some(info(id)),
            url: Some(format!("http://m{id}:2379")),
        },
        client: None,
        outcome,
    }
}

fn gathered(members: Vec<MemberAnswers>) -> Gathered {
    Gathered {
        members,
        write: None,
        marker: None,
        agents: vec![],
    }
}

fn run(g: &Gathered, known: &[MemberInfo], memory: &HashMap<u64, NativeMemory>) -> Observation {
    run_at(g, known, memory, Instant::now())
}

fn run_at(
    g: &Gathered,
    known: &[MemberInfo],
    memory: &HashMap<u64, NativeMemory>,
    now: Instant,
) -> Observation {
    observe(g, known, memory, now)
}

fn count(obs: &Observation, source: ErrorSource) -> usize {
    obs.errors.iter().filter(|e| **e == source).count()
}

#[test]
fn an_endpoint_answering_as_another_member_gives_no_facts_about_it() {
    let g = gathered(vec![asked(1, Ok(answers(2, 2, &[1, 2])))]);
    let obs = run(&g, &[info(1), info(2)], &HashMap::new());
    let m1 = obs
        .facts
        .members
        .iter()
        .find(|m| m.info.id == 1)
        .expect("m1");
    assert_eq!(
        m1.status,
        Err("http://m1:2379 answered as member 2, not 1".into())
    );
    assert_eq!(count(&obs, ErrorSource::Status), 1);
    let error = m1.status.clone().expect_err("impersonated");
    assert_eq!(obs.connections, [(0, Some(error))]);
    assert!(obs.owners.is_empty());
    assert!(obs.member_list.is_none(), "nothing it said counts");
    assert!(obs.members[&1].native.is_none());
}

#[test]
fn the_leaders_member_list_wins_and_unasked_members_are_not_queried_yet() {
    let g = gathered(vec![
        asked(1, Ok(answers(1, 2, &[1, 2]))),
        asked(2, Ok(answers(2, 2, &[1, 2, 3]))),
    ]);
    let obs = run(&g, &[info(1), info(2)], &HashMap::new());
    assert_eq!(
        obs.member_list.as_ref().map(Vec::len),
        Some(3),
        "member 2 is the leader"
    );
    let m3 = obs
        .facts
        .members
        .iter()
        .find(|m| m.info.id == 3)
        .expect("m3");
    assert_eq!(m3.status, Err("new member, not queried yet".into()));
    assert!(obs.errors.is_empty(), "{:?}", obs.errors);
}

#[test]
fn every_failed_request_counts_under_its_source() {
    let mut a = answers(1, 1, &[1, 2, 3]);
    a.read_serializable = Err("read probe timed out".into());
    a.metrics = Err("GET http://m1:2379/metrics: line 1: bad".into());
    a.health = Err("GET http://m1:2379/health: timed out".into());
    a.alarms = Some(Err("alarm list: Unavailable".into()));
    let mut g = gathered(vec![
        asked(1, Ok(a)),
        asked(2, Err(MemberError::Connect("cannot connect".into()))),
        asked(
            3,
            Err(MemberError::BackingOff {
                last: None,
                retry_in: Duration::from_secs(1),
            }),
        ),
        MemberAnswers {
            target: Target {
                info: Some(info(4)),
                url: None,
            },
            client: None,
            outcome: Err(MemberError::NotStarted),
        },
    ]);
    g.write = Some(WriteProbe {
        url: "http://m1:2379".into(),
        result: Err("write probe timed out".into()),
    });
    let obs = run(&g, &[], &HashMap::new());
    let counts: Vec<(ErrorSource, usize)> = ErrorSource::ALL
        .iter()
        .map(|s| (*s, count(&obs, *s)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(
        counts,
        [
            (ErrorSource::Connect, 2),
            (ErrorSource::Alarms, 1),
            (ErrorSource::ProbeRead, 1),
            (ErrorSource::ProbeWrite, 1),
            (ErrorSource::MemberMetrics, 1),
            (ErrorSource::MemberHealth, 1),
        ]
    );
    let x = &obs.members[&1].extras;
    assert_eq!(x.read_error.as_deref(), Some("read probe timed out"));
    assert_eq!(x.read_linearizable_ms, Some(2.0));
    assert!(x
        .metrics_error
        .as_deref()
        .is_some_and(|e| e.contains("line 1")));
    assert_eq!(
        obs.connections.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0, 1],
        "a member backing off or not started settles no connection"
    );
    assert!(obs.facts.alarms.is_none(), "nobody could list the alarms");
}

#[test]
fn the_request_rate_is_the_unary_delta_over_the_time_between_cycles() {
    let g = gathered(vec![asked(1, Ok(answers(1, 1, &[1])))]);
    let first = run(&g, &[info(1)], &HashMap::new());
    assert_eq!(first.request_rate, None, "no earlier counters");
    let f = &first.members[&1];
    assert_eq!(f.extras.quota_bytes, Some(2_147_483_648));
    assert_eq!(f.extras.watchers, Some(3));
    let (_, memory) = f.native.clone().expect("kept");
    let then = memory.at;
    let mut earlier = memory;
    earlier.unary_started = Some(100.0);
    let memory = HashMap::from([(1, earlier)]);
    let obs = run_at(&g, &[info(1)], &memory, then + Duration::from_secs(5));
    assert_eq!(obs.request_rate, Some(10.0), "(150 - 100) / 5 s");
}

#[test]
fn before_any_member_list_a_configured_endpoint_is_named_by_its_address() {
    let g = gathered(vec![MemberAnswers {
        target: Target {
            info: None,
            url: Some("http://10.0.0.1:2379".into()),
        },
        client: None,
        outcome: Err(MemberError::Connect("refused".into())),
    }]);
    let obs = run(&g, &[], &HashMap::new());
    assert_eq!(obs.facts.members.len(), 1);
    assert_eq!(obs.facts.members[0].info.name, "10.0.0.1:2379");
    assert_eq!(obs.facts.members[0].status, Err("refused".into()));
}

fn report(member: &str) -> AgentReport {
    crate::agents::parse(format!(r#"{{"member":"{member}","data_dir_bytes":7}}"#).as_bytes())
        .expect("agent snapshot")
}

fn target(url: &str, member: Option<&str>) -> AgentTarget {
    let raw = match member {
        Some(m) => format!("{m}={url}"),
        None => url.to_owned(),
    };
    crate::agents::parse_target(&raw).expect("target")
}

#[test]
fn agents_are_matched_by_name_pinned_or_learnt() {
    let g = gathered(vec![
        asked(1, Ok(answers(1, 1, &[1, 2, 3]))),
        asked(2, Ok(answers(2, 1, &[1, 2, 3]))),
        asked(3, Ok(answers(3, 1, &[1, 2, 3]))),
    ]);
    let obs = run(&g, &[info(1), info(2), info(3)], &HashMap::new());
    let model = crate::model::derive(&obs.facts);
    let mut attribution = Attribution::default();
    attribution.learn(&target("http://a3:9101", None), "m3");
    let results = vec![
        (target("http://a1:9101", None), Ok(report("m1"))),
        (target("http://a1b:9101", None), Ok(report("m1"))),
        (target("http://a2:9101", Some("m2")), Ok(report("m9"))),
        (target("http://a3:9101", None), Err("refused".into())),
    ];
    let seen = agents(&results, &model, &attribution);
    assert!(seen.statuses["m1"].up);
    assert_eq!(
        seen.statuses["m1"].url, "http://a1:9101",
        "the second agent is refused"
    );
    assert!(seen.statuses["m2"]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("not \"m2\"")));
    assert_eq!(seen.statuses["m3"].error.as_deref(), Some("refused"));
    assert_eq!(
        seen.up.iter().map(|(_, up)| *up).collect::<Vec<_>>(),
        [true, false, false, false]
    );
    assert_eq!(seen.failures, 3);
}

#[test]
fn a_maintenance_marker_is_read_and_garbage_is_not_maintenance() {
    let mut g = gathered(vec![asked(1, Ok(answers(1, 1, &[1])))]);
    g.marker = Some(Ok(Some(
        br#"{"operation":"defrag","member":"m1","by":"ctl@host","started_unix_ms":5}"#.to_vec(),
    )));
    let obs = run(&g, &[info(1)], &HashMap::new());
    let m = obs.maintenance.expect("maintenance");
    assert_eq!(
        (m.operation.as_str(), m.member.as_deref()),
        ("defrag", Some("m1"))
    );
    g.marker = Some(Ok(Some(b"not json".to_vec())));
    assert!(run(&g, &[info(1)], &HashMap::new()).maintenance.is_none());
    g.marker = Some(Ok(None));
    assert!(run(&g, &[info(1)], &HashMap::new()).maintenance.is_none());
}
