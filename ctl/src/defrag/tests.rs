//! The plan from hand-built facts, the health problems from hand-built views, the report.

use super::*;

const MIB: u64 = 1024 * 1024;

fn m(id: u64, leader: bool, size_mib: u64, in_use_mib: u64) -> PlanMember {
    PlanMember {
        id,
        name: format!("m{id}"),
        endpoint: format!("http://127.0.0.1:{}", 2379 + id),
        is_leader: leader,
        is_learner: false,
        db_size: size_mib * MIB,
        db_size_in_use: in_use_mib * MIB,
        quota: Some(1000 * MIB),
        free_disk: None,
    }
}

fn names(p: &Plan) -> Vec<String> {
    p.steps.iter().map(ToString::to_string).collect()
}

#[test]
fn followers_first_then_one_move_then_the_leader() {
    let members = [m(2, true, 10, 5), m(3, false, 10, 5), m(1, false, 10, 5)];
    let p = plan(&members, None, Mode::Rolling).expect("plan");
    assert_eq!(
        names(&p),
        [
            "defragment m1 (http://127.0.0.1:2380)",
            "defragment m3 (http://127.0.0.1:2382)",
            "move leadership from m2 to m1",
            "defragment m2 (http://127.0.0.1:2381)",
        ]
    );
    assert!(
        p.notes.iter().any(|n| n.contains("free disk not checked")),
        "{p:?}"
    );
}

#[test]
fn the_rule_selects_members_and_the_leader_moves_only_when_it_is_selected() {
    let rule = Rule::parse("dbSizeFree > 100MiB").expect("rule");
    let members = [
        m(1, true, 50, 40),
        m(2, false, 500, 100),
        m(3, false, 50, 40),
    ];
    let p = plan(&members, Some(&rule), Mode::Rolling).expect("plan");
    assert_eq!(names(&p), ["defragment m2 (http://127.0.0.1:2381)"]);
    assert_eq!(p.skipped.len(), 2);
    assert!(
        p.skipped[0].reason.contains("the rule does not hold"),
        "{p:?}"
    );

    // Only the leader: leadership goes to a follower the rule left out, with a note.
    let members = [
        m(1, true, 500, 40),
        m(2, false, 50, 40),
        m(3, false, 50, 40),
    ];
    let p = plan(&members, Some(&rule), Mode::Rolling).expect("plan");
    assert_eq!(
        names(&p),
        [
            "move leadership from m1 to m2",
            "defragment m1 (http://127.0.0.1:2380)"
        ]
    );
    assert!(
        p.notes.iter().any(|n| n.contains("rule leaves out")),
        "{p:?}"
    );

    // Nothing selected: nothing to do, no note about disks.
    let members = [m(1, true, 50, 40), m(2, false, 50, 40)];
    let p = plan(&members, Some(&rule), Mode::Rolling).expect("plan");
    assert!(p.steps.is_empty() && p.notes.is_empty(), "{p:?}");
}

#[test]
fn leadership_never_goes_to_a_learner() {
    let mut learner = m(2, false, 10, 5);
    learner.is_learner = true;
    let members = [m(1, true, 10, 5), learner.clone(), m(3, false, 10, 5)];
    let p = plan(&members, None, Mode::Rolling).expect("plan");
    assert_eq!(
        names(&p),
        [
            "defragment m3 (http://127.0.0.1:2382)",
            "defragment m2 (http://127.0.0.1:2381)",
            "move leadership from m1 to m3",
            "defragment m1 (http://127.0.0.1:2380)",
        ]
    );
    // A leader with only a learner beside it: no move, and a warning.
    let p = plan(&[m(1, true, 10, 5), learner], None, Mode::Rolling).expect("plan");
    assert!(!names(&p).iter().any(|s| s.starts_with("move")), "{p:?}");
    assert!(p.notes.iter().any(|n| n.contains("writes stall")), "{p:?}");
}

#[test]
fn free_disk_is_checked_when_known() {
    let mut small = m(2, false, 100, 5);
    small.free_disk = Some(50 * MIB);
    let err = plan(&[m(1, true, 10, 5), small.clone()], None, Mode::Rolling).expect_err("no room");
    assert_eq!(
        err.to_string(),
        "m2 has 50.0 MiB free on its disk, less than a copy of its 100.0 MiB database needs"
    );
    let mut roomy = m(1, true, 10, 5);
    roomy.free_disk = Some(MIB * 1024);
    small.free_disk = Some(MIB * 1024);
    let p = plan(&[roomy, small], None, Mode::Rolling).expect("plan");
    assert!(p.notes.is_empty(), "{p:?}");
}

#[test]
fn plan_errors() {
    assert_eq!(
        plan(&[m(1, false, 10, 5)], None, Mode::Rolling),
        Err(PlanError::NoLeader)
    );
    let rule = Rule::parse("dbQuotaUsage > 0.5").expect("rule");
    let mut unknown = m(1, true, 10, 5);
    unknown.quota = None;
    let err = plan(&[unknown], Some(&rule), Mode::Rolling).expect_err("quota");
    assert_eq!(err.to_string(), "the rule cannot be evaluated for m1");
}

#[test]
fn all_at_once_is_one_step() {
    let members = [m(1, true, 10, 5), m(2, false, 10, 5)];
    let p = plan(&members, None, Mode::AtOnce).expect("plan");
    assert_eq!(names(&p), ["defragment m1, m2 at once"]);
}

#[test]
fn health_problems_and_nospace() {
    use crate::cluster::fixtures::view;
    use crate::cluster::Alarm;
    assert!(problems(&view(3, &[]), false).is_empty());
    let down = problems(&view(3, &[3]), false);
    assert!(down[0].contains("members down: m3"), "{down:?}");
    let mut v = view(3, &[]);
    v.alarms.push(Alarm {
        member_id: 2,
        kind: AlarmKind::Nospace,
    });
    assert_eq!(
        problems(&v, false),
        ["NOSPACE alarm on m2 (recover-nospace handles it)"]
    );
    assert!(problems(&v, true).is_empty());
    v.alarms.push(Alarm {
        member_id: 1,
        kind: AlarmKind::Corrupt,
    });
    assert_eq!(problems(&v, true), ["CORRUPT alarm on m1"]);
}

#[test]
fn plan_input_from_a_view() {
    let input = plan_input(&crate::cluster::fixtures::view(3, &[2]));
    assert_eq!(input.len(), 2);
    assert!(input[0].is_leader && !input[1].is_leader);
    assert_eq!(input[0].db_size, 1000);
    assert_eq!(input[0].quota, Some(10_000));
}

#[test]
fn the_report_reads_as_a_table() {
    let members = [m(1, true, 10, 5), m(2, false, 10, 5)];
    let p = plan(&members, None, Mode::Rolling).expect("plan");
    let mut r = Report::new(Operation::Defrag, p, true, None);
    let dry = r.to_string();
    assert!(
        dry.starts_with("defrag plan (dry run, nothing done):\n 1. defragment m2"),
        "{dry}"
    );
    r.dry_run = false;
    r.members = vec![
        MemberDone {
            name: "m2".into(),
            id: 2,
            was_leader: false,
            db_size_before: 10 * MIB,
            db_size_in_use_before: 5 * MIB,
            db_size_after: Some(5 * MIB),
            duration_ms: 1234,
        },
        MemberDone {
            name: "m1".into(),
            id: 1,
            was_leader: true,
            db_size_before: 10 * MIB,
            db_size_in_use_before: 5 * MIB,
            db_size_after: None,
            duration_ms: 20,
        },
    ];
    r.leader_move = Some(LeaderMove {
        from: "m1".into(),
        to: "m2".into(),
        duration_ms: 500,
    });
    r.duration_ms = 3000;
    let text = r.to_string();
    let want = "\
MEMBER  WAS       DB BEFORE  IN USE BEFORE  DB AFTER  TIME
m2      follower  10.0 MiB   5.0 MiB        5.0 MiB   1.23 s
m1      leader    10.0 MiB   5.0 MiB        ?         0.02 s
leadership moved from m1 to m2 in 0.50 s
";
    assert!(text.starts_with(want), "{text}");
    assert!(text.ends_with("done in 3.00 s\n"), "{text}");
    let json = serde_json::to_value(&r).expect("json");
    assert_eq!(json["plan"]["steps"][1]["step"], "move_leader");
    assert_eq!(json["members"][0]["db_size_after"], 5 * MIB);
}

#[test]
fn errors_say_where() {
    let e = DefragError::Stopped {
        at: Where {
            member: Some("m2".into()),
            phase: Phase::CatchUp,
        },
        cause: StepError::Timeout(Duration::from_secs(3)),
        report: Box::new(Report::new(Operation::Defrag, Plan::default(), false, None)),
    };
    assert_eq!(
        e.to_string(),
        "stopped at m2, waiting for it to answer and catch up with the leader"
    );
    assert!(e.report().is_some());
    assert!(DefragError::NotRolling.to_string().contains("--rolling"));
    assert_eq!(bytes(512), "512 B");
    assert_eq!(bytes(1536), "1.5 KiB");
}
