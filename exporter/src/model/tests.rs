//! Unit tests of the cluster model, one rule at a time.

use super::*;

fn info(id: u64, learner: bool) -> MemberInfo {
    MemberInfo {
        id,
        name: format!("m{id}"),
        client_urls: vec![format!("http://127.0.0.1:{id}")],
        peer_urls: vec![],
        is_learner: learner,
    }
}

fn status(id: u64, leader: u64, term: u64, index: u64, rev: i64) -> StatusFacts {
    StatusFacts {
        cluster_id: 0xc1,
        member_id: id,
        version: "3.4.23".into(),
        leader,
        raft_term: term,
        raft_index: index,
        raft_applied_index: index,
        revision: rev,
        db_size: 4096,
        db_size_in_use: 2048,
        is_learner: false,
        errors: vec![],
    }
}

fn obs(id: u64, s: Result<StatusFacts, String>) -> MemberObservation {
    MemberObservation {
        info: info(id, false),
        endpoint: format!("http://127.0.0.1:{id}"),
        status: s,
    }
}

fn facts(members: Vec<MemberObservation>) -> Facts {
    Facts {
        members,
        alarms: Some(vec![]),
    }
}

#[test]
fn healthy_three_member_cluster() {
    let m = derive(&facts(vec![
        obs(1, Ok(status(1, 1, 5, 100, 50))),
        obs(2, Ok(status(2, 1, 5, 98, 49))),
        obs(3, Ok(status(3, 1, 5, 101, 50))),
    ]));
    assert!(m.healthy);
    assert!(m.has_leader);
    assert_eq!(m.leader.as_ref().map(|l| l.id), Some(1));
    assert_eq!(
        (m.member_count, m.quorum_size, m.healthy_members),
        (3, 2, 3)
    );
    assert_eq!(m.revision_divergence, 1);
    assert_eq!(m.raft_index_divergence, 3);
    assert!(!m.split_brain);
    assert!(m.partitioned_members.is_empty());
    assert_eq!(m.cluster_id, Some(0xc1));
    assert!(m
        .members
        .iter()
        .find(|x| x.info.id == 1)
        .is_some_and(|x| x.is_leader));
}

#[test]
fn two_of_three_down_means_no_quorum_and_no_leader() {
    let m = derive(&facts(vec![
        obs(1, Ok(status(1, 0, 7, 100, 50))),
        obs(2, Err("connection refused".into())),
        obs(3, Err("deadline exceeded".into())),
    ]));
    assert!(!m.healthy);
    assert!(!m.has_leader);
    assert_eq!((m.healthy_members, m.quorum_size, m.up_members), (1, 2, 1));
    assert!(
        m.partitioned_members.is_empty(),
        "nobody has a leader to be cut off from"
    );
    let down = m.members.iter().find(|x| x.info.id == 2).expect("m2");
    assert_eq!(down.error.as_deref(), Some("connection refused"));
    assert!(!down.up);
}

#[test]
fn one_down_keeps_quorum() {
    let m = derive(&facts(vec![
        obs(1, Ok(status(1, 1, 5, 100, 50))),
        obs(2, Ok(status(2, 1, 5, 100, 50))),
        obs(3, Err("timeout".into())),
    ]));
    assert!(m.healthy);
    assert_eq!(m.healthy_members, 2);
}

#[test]
fn member_without_leader_while_others_have_one_is_partitioned() {
    let m = derive(&facts(vec![
        obs(1, Ok(status(1, 1, 5, 100, 50))),
        obs(2, Ok(status(2, 1, 5, 100, 50))),
        obs(3, Ok(status(3, 0, 9, 90, 45))),
    ]));
    assert_eq!(m.partitioned_members, ["m3"]);
    assert_eq!(m.healthy_members, 2);
    assert!(m.healthy, "two of three still make quorum");
    assert_eq!(m.leader.as_ref().map(|l| l.id), Some(1));
}

#[test]
fn a_follower_one_applied_term_behind_is_not_partitioned() {
    // Status reports the term of the last applied entry: right after an election a
    // follower that already follows the new leader may still say the old term.
    let m = derive(&facts(vec![
        obs(1, Ok(status(1, 2, 5, 90, 45))),
        obs(2, Ok(status(2, 2, 6, 100, 50))),
        obs(3, Ok(status(3, 2, 6, 100, 50))),
    ]));
    assert_eq!(m.leader.as_ref().map(|l| (l.id, l.term)), Some((2, 6)));
    assert!(m.partitioned_members.is_empty());
    assert!(m.healthy);
}

#[test]
fn stale_leader_at_lower_term_is_partitioned_not_split_brain_nor_leader() {
    let m = derive(&facts(vec![
        obs(1, Ok(status(1, 1, 4, 90, 45))),
        obs(2, Ok(status(2, 2, 5, 100, 50))),
        obs(3, Ok(status(3, 2, 5, 100, 50))),
    ]));
    assert!(!m.split_brain);
    assert_eq!(m.leader.as_ref().map(|l| l.id), Some(2));
    assert_eq!(m.partitioned_members, ["m1"]);
    let leaders: Vec<&str> = m
        .members
        .iter()
        .filter(|x| x.is_leader)
        .map(|x| x.info.name.as_str())
        .collect();
    assert_eq!(leaders, ["m2"], "only the cluster's leader is flagged");
}

#[test]
fn two_leaders_at_one_term_is_split_brain() {
    let m = derive(&facts(vec![
        obs(1, Ok(status(1, 1, 5, 100, 50))),
        obs(2, Ok(status(2, 2, 5, 100, 50))),
        obs(3, Ok(status(3, 2, 5, 100, 50))),
    ]));
    assert!(m.split_brain);
    assert!(!m.healthy);
    assert_eq!(
        m.split_brain_reasons.len(),
        1,
        "{:?}",
        m.split_brain_reasons
    );
    assert!(m.split_brain_reasons[0].contains("m1, m2"));
}

#[test]
fn the_same_member_seen_twice_is_not_split_brain() {
    // Two observations carrying the leader's own Status (an endpoint behind a balancer).
    let m = derive(&facts(vec![
        obs(1, Ok(status(1, 1, 5, 100, 50))),
        obs(2, Ok(status(1, 1, 5, 100, 50))),
        obs(3, Ok(status(3, 1, 5, 100, 50))),
    ]));
    assert!(!m.split_brain, "{:?}", m.split_brain_reasons);
}

#[test]
fn following_a_leader_the_others_do_not_is_a_partition() {
    let m = derive(&facts(vec![
        obs(1, Ok(status(1, 3, 5, 100, 50))),
        obs(2, Ok(status(2, 2, 5, 100, 50))),
        obs(3, Ok(status(3, 2, 5, 100, 50))),
    ]));
    assert!(!m.split_brain);
    assert_eq!(m.leader.as_ref().map(|l| l.id), Some(2));
    assert_eq!(m.partitioned_members, ["m1"]);
}

#[test]
fn debouncer_needs_two_cycles_for_partitions_and_split_brain() {
    let cut_off = facts(vec![
        obs(1, Ok(status(1, 1, 5, 100, 50))),
        obs(2, Ok(status(2, 1, 5, 100, 50))),
        obs(3, Ok(status(3, 0, 5, 90, 45))),
    ]);
    let split = facts(vec![
        obs(1, Ok(status(1, 1, 5, 100, 50))),
        obs(2, Ok(status(2, 2, 5, 100, 50))),
        obs(3, Ok(status(3, 2, 5, 100, 50))),
    ]);
    let mut d = Debouncer::default();
    let mut first = derive(&cut_off);
    d.apply(&mut first);
    assert!(
        first.partitioned_members.is_empty(),
        "one cycle is an election blip"
    );
    assert_eq!(first.healthy_members, 3);
    let mut second = derive(&cut_off);
    d.apply(&mut second);
    assert_eq!(second.partitioned_members, ["m3"]);
    assert_eq!(second.healthy_members, 2);
    let mut s1 = derive(&split);
    d.apply(&mut s1);
    assert!(!s1.split_brain && s1.split_brain_reasons.is_empty());
    let mut s2 = derive(&split);
    d.apply(&mut s2);
    assert!(s2.split_brain && !s2.healthy);
}

#[test]
fn different_cluster_ids_is_split_brain() {
    let mut other = status(3, 3, 1, 5, 2);
    other.cluster_id = 0xc2;
    let m = derive(&facts(vec![
        obs(1, Ok(status(1, 1, 5, 100, 50))),
        obs(2, Ok(status(2, 1, 5, 100, 50))),
        obs(3, Ok(other)),
    ]));
    assert!(m.split_brain);
    assert_eq!(m.cluster_id, None);
    assert!(m
        .split_brain_reasons
        .iter()
        .any(|r| r.contains("cluster IDs")));
}

#[test]
fn alarms_make_the_cluster_unhealthy_and_land_on_their_member() {
    let mut f = facts(vec![
        obs(1, Ok(status(1, 1, 5, 100, 50))),
        obs(2, Ok(status(2, 1, 5, 100, 50))),
        obs(3, Ok(status(3, 1, 5, 100, 50))),
    ]);
    f.alarms = Some(vec![(2, Alarm::Nospace), (2, Alarm::Nospace)]);
    let m = derive(&f);
    assert!(!m.healthy);
    assert_eq!(m.alarms.len(), 1);
    assert_eq!(m.alarms[0].member, "m2");
    let m2 = m.members.iter().find(|x| x.info.id == 2).expect("m2");
    assert_eq!(m2.alarms, [Alarm::Nospace]);
}

#[test]
fn learners_do_not_count_toward_quorum() {
    let mut learner = obs(4, Ok(status(4, 1, 5, 100, 50)));
    learner.info.is_learner = true;
    let m = derive(&facts(vec![
        obs(1, Ok(status(1, 1, 5, 100, 50))),
        obs(2, Ok(status(2, 1, 5, 100, 50))),
        obs(3, Ok(status(3, 1, 5, 100, 50))),
        learner,
    ]));
    assert_eq!((m.member_count, m.voting_members, m.quorum_size), (4, 3, 2));
    assert_eq!(m.healthy_members, 3);
}

#[test]
fn nothing_reachable_is_unhealthy_not_a_panic() {
    let m = derive(&Facts {
        members: vec![obs(0, Err("refused".into()))],
        alarms: None,
    });
    assert!(!m.healthy && !m.has_leader);
    assert!(!m.alarms_known);
    assert_eq!(m.revision_divergence, 0);
}

#[test]
fn tracker_ignores_reports_from_an_older_term() {
    let at = SystemTime::UNIX_EPOCH;
    let mut t = LeaderTracker::default();
    t.observe(&derive(&facts(vec![obs(2, Ok(status(2, 2, 8, 1, 1)))])), at);
    assert_eq!(
        t.observe(&derive(&facts(vec![obs(1, Ok(status(1, 1, 7, 1, 1)))])), at),
        None
    );
    assert_eq!(t.changes_total(), 0);
}

#[test]
fn tracker_records_changes_but_not_the_first_leader_or_gaps() {
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(10);
    let leader_1 = derive(&facts(vec![obs(1, Ok(status(1, 1, 5, 1, 1)))]));
    let no_leader = derive(&facts(vec![obs(1, Ok(status(1, 0, 6, 1, 1)))]));
    let leader_1_again = derive(&facts(vec![obs(1, Ok(status(1, 1, 7, 1, 1)))]));
    let leader_2 = derive(&facts(vec![
        obs(1, Ok(status(1, 2, 8, 1, 1))),
        obs(2, Ok(status(2, 2, 8, 1, 1))),
    ]));
    let mut t = LeaderTracker::default();
    assert_eq!(t.observe(&leader_1, at), None);
    assert_eq!(t.observe(&no_leader, at), None);
    assert_eq!(t.observe(&leader_1_again, at), None);
    let change = t.observe(&leader_2, at).expect("a change");
    assert_eq!(change.from.as_deref(), Some("m1"));
    assert_eq!(
        (change.to.as_str(), change.term, change.at_unix_ms),
        ("m2", 8, 10_000)
    );
    assert_eq!(t.changes_total(), 1);
    assert_eq!(t.history().count(), 1);
}

#[test]
fn tracker_keeps_the_last_hundred_changes() {
    let at = SystemTime::UNIX_EPOCH;
    let mut t = LeaderTracker::default();
    for i in 0..150u64 {
        let id = i % 2 + 1;
        t.observe(
            &derive(&facts(vec![obs(id, Ok(status(id, id, i, 1, 1)))])),
            at,
        );
    }
    assert_eq!(t.changes_total(), 149);
    assert_eq!(t.history().count(), LEADER_HISTORY);
    assert_eq!(t.history().last().map(|c| c.term), Some(149));
}
