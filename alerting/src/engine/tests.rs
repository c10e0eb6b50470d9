//! The engine on a real store, with explicit times.

use std::path::Path;

use super::*;
use crate::silence::ApiMatcher;

const T0: i64 = 1_800_000_000_000;

fn engine(yaml: &str) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(Store::open(dir.path()).expect("open"));
    let cfg = crate::config::parse(Path::new("relay.yml"), yaml).expect("config");
    let (e, q) = Engine::open(store, Arc::new(cfg), 100).expect("engine");
    assert_eq!(q, 0);
    (dir, e)
}

fn alert(pairs: &[(&str, &str)], status: Status) -> Alert {
    crate::model::test_alert(pairs, status)
}

/// A silence of `alertname="X"` from `start` to `end`.
fn silence_of_x(start: i64, end: i64) -> PostableSilence {
    PostableSilence {
        id: None,
        matchers: vec![ApiMatcher {
            name: "alertname".into(),
            value: "X".into(),
            is_regex: false,
            is_equal: true,
        }],
        starts_at: crate::silence::format_rfc3339_ms(start),
        ends_at: crate::silence::format_rfc3339_ms(end),
        created_by: "test".into(),
        comment: "maintenance".into(),
    }
}

fn queued(e: &Engine, receiver: &str) -> Vec<crate::store::Delivery> {
    e.store().pending(receiver).expect("pending").0
}

const ONE: &str = "receivers:\n  - name: r\n    console: {}\n";

#[test]
fn an_alert_alone_fires_once_per_repeat_and_resolves_once() {
    let (_d, e) = engine(ONE);
    let a = alert(&[("alertname", "X")], Status::Firing);
    let out = e.ingest(std::slice::from_ref(&a), T0).expect("ingest");
    assert_eq!((out.enqueued.len(), out.deduplicated), (1, 0));
    let out = e
        .ingest(std::slice::from_ref(&a), T0 + 60_000)
        .expect("again");
    assert_eq!((out.enqueued.len(), out.deduplicated), (0, 1));
    let out = e
        .ingest(std::slice::from_ref(&a), T0 + 300_000)
        .expect("after repeat");
    assert_eq!(out.enqueued.len(), 1, "the 5m repeat");
    let r = Alert {
        status: Status::Resolved,
        ..a.clone()
    };
    let out = e
        .ingest(std::slice::from_ref(&r), T0 + 301_000)
        .expect("resolve");
    assert_eq!(out.enqueued.len(), 1);
    let q = queued(&e, "r");
    assert_eq!(
        q.len(),
        1,
        "one slot per group: the resolve replaced the repeat"
    );
    assert_eq!(q[0].notification.status, Status::Resolved);
    let out = e.ingest(&[r], T0 + 302_000).expect("resolve again");
    assert_eq!((out.enqueued.len(), out.deduplicated), (0, 1));
    // The tick forgets the resolved alert once its group has flushed.
    e.tick(T0 + 303_000).expect("tick");
    assert_eq!(e.alert_count(), 0);
    let out = e.ingest(&[a], T0 + 304_000).expect("fires again");
    assert_eq!(out.enqueued.len(), 1, "firing after a resolution is news");
}

/// A trigger still queued (its receiver failing) is superseded by the resolve that
/// follows it: the resolve can never be overtaken.
#[test]
fn a_queued_trigger_is_superseded_by_its_resolve() {
    let (_d, e) = engine(ONE);
    let a = alert(&[("alertname", "X")], Status::Firing);
    let first = e
        .ingest(std::slice::from_ref(&a), T0)
        .expect("ingest")
        .enqueued[0]
        .1;
    e.store()
        .settle(
            "r",
            first,
            &crate::store::AttemptResult::Retry {
                next_attempt_at_ms: T0 + 10_000,
                error: "HTTP 500".into(),
            },
            T0 + 1,
        )
        .expect("settle");
    let r = Alert {
        status: Status::Resolved,
        ..a
    };
    let out = e.ingest(&[r], T0 + 4_000).expect("resolve");
    assert_eq!(out.superseded, 1);
    let q = queued(&e, "r");
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].notification.status, Status::Resolved);
    let h = e.store().history(10).expect("history");
    assert_eq!(h[1].outcome, crate::store::Outcome::Superseded);
    // The in-flight trigger's late outcome does not remove the resolve.
    e.store()
        .settle(
            "r",
            first,
            &crate::store::AttemptResult::Delivered,
            T0 + 5_000,
        )
        .expect("late settle");
    assert_eq!(queued(&e, "r").len(), 1);
}

const GROUPED: &str = "group_by: [cluster]\ngroup_wait: 5s\ngroup_interval: 1m\nreceivers:\n  - name: pd\n    console: {}\n";

#[test]
fn a_group_waits_then_notifies_once_and_changes_wait_for_the_interval() {
    let (_d, e) = engine(GROUPED);
    let lost = alert(
        &[("alertname", "EtcdQuorumLost"), ("cluster", "a")],
        Status::Firing,
    );
    let noleader = alert(
        &[("alertname", "EtcdNoLeader"), ("cluster", "a")],
        Status::Firing,
    );
    assert!(e
        .ingest(std::slice::from_ref(&lost), T0)
        .expect("1")
        .enqueued
        .is_empty());
    assert!(e
        .ingest(std::slice::from_ref(&noleader), T0 + 1_000)
        .expect("2")
        .enqueued
        .is_empty());
    let t = e.tick(T0 + 4_000).expect("tick");
    assert!(t.enqueued.is_empty(), "still waiting");
    assert_eq!(t.next_due_ms, Some(T0 + 5_000));
    let t = e.tick(T0 + 5_000).expect("tick");
    assert_eq!(t.enqueued.len(), 1, "one notification for the group");
    let q = queued(&e, "pd");
    assert_eq!(q[0].notification.alerts.len(), 2);
    assert_eq!(
        q[0].notification
            .group_labels
            .get("cluster")
            .map(String::as_str),
        Some("a")
    );
    let down = alert(
        &[
            ("alertname", "EtcdMemberDown"),
            ("cluster", "a"),
            ("member", "m1"),
        ],
        Status::Firing,
    );
    assert!(e
        .ingest(&[down], T0 + 6_000)
        .expect("3")
        .enqueued
        .is_empty());
    assert!(e.tick(T0 + 64_000).expect("tick").enqueued.is_empty());
    assert_eq!(e.tick(T0 + 65_000).expect("tick").enqueued.len(), 1);
    let other = alert(
        &[("alertname", "EtcdQuorumLost"), ("cluster", "b")],
        Status::Firing,
    );
    e.ingest(&[other], T0 + 66_000).expect("4");
    assert_eq!(
        e.tick(T0 + 71_000).expect("tick").enqueued.len(),
        1,
        "another cluster, another group"
    );
}

#[test]
fn inhibited_alerts_are_not_notified_and_are_once_the_source_resolves() {
    let (_d, e) = engine(
        "receivers:\n  - name: r\n    console: {}\ninhibit_rules:\n  - source_matchers: ['alertname=\"EtcdQuorumLost\"']\n    target_matchers: ['alertname=\"EtcdMemberDown\"']\n    equal: [cluster]\n",
    );
    let lost = alert(
        &[("alertname", "EtcdQuorumLost"), ("cluster", "a")],
        Status::Firing,
    );
    let down_a = alert(
        &[("alertname", "EtcdMemberDown"), ("cluster", "a")],
        Status::Firing,
    );
    let down_b = alert(
        &[("alertname", "EtcdMemberDown"), ("cluster", "b")],
        Status::Firing,
    );
    let out = e
        .ingest(&[lost.clone(), down_a.clone(), down_b.clone()], T0)
        .expect("ingest");
    let q = queued(&e, "r");
    let names: Vec<(String, String)> = q
        .iter()
        .map(|d| {
            let a = &d.notification.alerts[0];
            (a.name().to_owned(), a.labels["cluster"].clone())
        })
        .collect();
    assert_eq!(out.enqueued.len(), 2, "{names:?}");
    assert!(
        !names.contains(&("EtcdMemberDown".into(), "a".into())),
        "{names:?}"
    );
    let views = e.alerts(T0);
    let v = views
        .iter()
        .find(|v| v.stored.alert.fingerprint == down_a.fingerprint)
        .expect("view");
    assert_eq!(v.inhibited_by, vec![lost.fingerprint.clone()]);
    let resolved = Alert {
        status: Status::Resolved,
        ..lost
    };
    e.ingest(&[resolved], T0 + 1_000).expect("resolve");
    e.tick(T0 + 2_000).expect("tick");
    assert!(
        queued(&e, "r")
            .iter()
            .any(|d| d.notification.alerts[0].fingerprint == down_a.fingerprint),
        "no longer inhibited: notified"
    );
}

/// A warning the receiver heard fire, then muted by a lost quorum while it still fires,
/// is sent as resolved when it resolves (Alertmanager's mute stage leaves the receiver's
/// log alone; clearing it would leave chat saying the member is down for good).
#[test]
fn an_alert_heard_then_inhibited_is_still_sent_as_resolved() {
    let (_d, e) = engine(
        "group_wait: 0s\ngroup_interval: 1m\nreceivers:\n  - name: r\n    console: {}\ninhibit_rules:\n  - source_matchers: ['alertname=\"EtcdQuorumLost\"']\n    target_matchers: ['alertname=\"EtcdMemberDown\"']\n    equal: [cluster]\n",
    );
    let down = alert(
        &[("alertname", "EtcdMemberDown"), ("cluster", "a")],
        Status::Firing,
    );
    let lost = alert(
        &[("alertname", "EtcdQuorumLost"), ("cluster", "a")],
        Status::Firing,
    );
    let sent = |e: &Engine, status: Status| {
        queued(e, "r").iter().any(|d| {
            d.notification.status == status
                && d.notification.alerts[0].fingerprint == down.fingerprint
        })
    };
    e.ingest(std::slice::from_ref(&down), T0).expect("down");
    assert!(sent(&e, Status::Firing), "heard fire");
    e.ingest(std::slice::from_ref(&lost), T0 + 1_000)
        .expect("lost");
    // The member-down group flushes while its one alert is inhibited: nothing is sent.
    let before = queued(&e, "r").len();
    e.tick(T0 + 61_000).expect("tick");
    assert_eq!(queued(&e, "r").len(), before, "muted: nothing sent");
    let resolved = |a: &Alert| Alert {
        status: Status::Resolved,
        ..a.clone()
    };
    e.ingest(&[resolved(&lost), resolved(&down)], T0 + 70_000)
        .expect("both resolve");
    e.tick(T0 + 121_001).expect("tick");
    assert!(
        sent(&e, Status::Resolved),
        "the resolution reaches the receiver"
    );
}

#[test]
fn a_silenced_alert_is_notified_once_the_silence_expires() {
    let (_d, e) = engine(ONE);
    let p = silence_of_x(T0, T0 + 60_000);
    let id = e.post_silence(&p, T0).expect("silence");
    let a = alert(&[("alertname", "X")], Status::Firing);
    let out = e
        .ingest(std::slice::from_ref(&a), T0 + 1_000)
        .expect("ingest");
    assert!(out.enqueued.is_empty());
    assert_eq!(e.alerts(T0 + 1_000)[0].silenced_by, vec![id.clone()]);
    assert!(e.tick(T0 + 2_000).expect("tick").enqueued.is_empty());
    e.expire_silence(&id, T0 + 3_000).expect("expire");
    assert!(
        e.expire_silence(&id, T0 + 3_500).is_err(),
        "already expired"
    );
    assert_eq!(e.tick(T0 + 4_000).expect("tick").enqueued.len(), 1);
    assert!(matches!(
        e.expire_silence("nope", T0),
        Err(EngineError::NotFound(_))
    ));
}

#[test]
fn leases_run_out_and_the_store_refuses_alerts_beyond_its_cap() {
    let (_d, e) = engine(ONE);
    let mut a = alert(&[("alertname", "X")], Status::Firing);
    a.ends_at = crate::silence::format_rfc3339_ms(T0 + 3_000);
    e.ingest(&[a], T0).expect("ingest");
    let t = e.tick(T0 + 3_000).expect("tick");
    assert_eq!(t.expired, 1);
    assert_eq!(
        queued(&e, "r").last().map(|d| d.notification.status),
        Some(Status::Resolved)
    );
    let many: Vec<Alert> = (0..120)
        .map(|i| alert(&[("alertname", "Y"), ("i", &i.to_string())], Status::Firing))
        .collect();
    let out = e.ingest(&many, T0 + 5_000).expect("ingest");
    assert_eq!(out.refused_full, 20, "the cap is 100");
    assert_eq!(e.alert_count(), 100);
}

#[test]
fn critical_goes_first() {
    assert!(
        priority(&[("severity".into(), "critical".into())].into())
            < priority(&[("severity".into(), "warning".into())].into())
    );
    assert!(priority(&[("severity".into(), "warning".into())].into()) < priority(&Labels::new()));
}

#[test]
fn state_survives_reopening() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = Arc::new(crate::config::parse(Path::new("relay.yml"), ONE).expect("config"));
    let a = alert(&[("alertname", "X")], Status::Firing);
    {
        let store = Arc::new(Store::open(dir.path()).expect("open"));
        let (e, _) = Engine::open(store, cfg.clone(), 100).expect("engine");
        e.ingest(std::slice::from_ref(&a), T0).expect("ingest");
    }
    let store = Arc::new(Store::open(dir.path()).expect("reopen"));
    let (e, _) = Engine::open(store, cfg, 100).expect("engine");
    assert_eq!(e.alert_count(), 1);
    // The notification log came back too: a resend right after the restart says nothing.
    e.tick(T0 + 1_000).expect("tick");
    let out = e.ingest(&[a], T0 + 2_000).expect("again");
    assert_eq!((out.enqueued.len(), out.deduplicated), (0, 1));
}

/// A step whose write fails changes nothing in memory: the alert is not held, no group
/// timer moved, and after the store is back the same alert is news again.
#[test]
fn a_failed_write_changes_nothing() {
    let (_d, e) = engine(ONE);
    let a = alert(&[("alertname", "X")], Status::Firing);
    e.store().break_for_test();
    assert!(e.ingest(std::slice::from_ref(&a), T0).is_err());
    assert_eq!(e.alert_count(), 0);
    assert!(e.alerts(T0).is_empty());
    assert!(e.tick(T0 + 1).is_ok(), "nothing to write: no error");
    e.store().reopen().expect("reopen");
    let out = e.ingest(&[a], T0 + 2).expect("ingest");
    assert_eq!(
        out.enqueued.len(),
        1,
        "the receiver hears it once the store is back"
    );
}

/// A silence that ends between two flushes of a group with a long `group_interval` is
/// noticed at the group's next flush (every group is marked dirty).
#[test]
fn a_silence_ending_between_flushes_is_noticed_at_the_next_one() {
    let (_d, e) = engine("group_interval: 1m\nreceivers:\n  - name: r\n    console: {}\n");
    let p = silence_of_x(T0, T0 + 20_000);
    e.post_silence(&p, T0).expect("silence");
    let a = alert(&[("alertname", "X")], Status::Firing);
    assert!(e.ingest(&[a], T0 + 1).expect("ingest").enqueued.is_empty());
    for t in [T0 + 10_000, T0 + 21_000, T0 + 40_000] {
        assert!(
            e.tick(t).expect("tick").enqueued.is_empty(),
            "not due at {t}"
        );
    }
    assert_eq!(e.tick(T0 + 60_001).expect("tick").enqueued.len(), 1);
}

/// A queued notification that carried a resolution and is replaced before it went out
/// hands the resolution to its successor.
#[test]
fn a_superseded_notification_hands_on_its_resolutions() {
    let (_d, e) = engine("group_by: [cluster]\nreceivers:\n  - name: r\n    console: {}\n");
    let a = alert(&[("alertname", "A"), ("cluster", "c")], Status::Firing);
    let b = alert(&[("alertname", "B"), ("cluster", "c")], Status::Firing);
    e.ingest(&[a.clone(), b.clone()], T0).expect("both fire");
    let ra = Alert {
        status: Status::Resolved,
        ..a.clone()
    };
    e.ingest(&[ra], T0 + 1_000).expect("A resolves");
    e.tick(T0 + 2_000).expect("tick: A is forgotten");
    let rb = Alert {
        status: Status::Resolved,
        ..b
    };
    e.ingest(&[rb], T0 + 3_000).expect("B resolves");
    let q = queued(&e, "r");
    assert_eq!(q.len(), 1, "one slot");
    let n = &q[0].notification;
    assert_eq!(n.status, Status::Resolved);
    let mut resolved: Vec<&str> = n.resolved().map(|x| x.name()).collect();
    resolved.sort_unstable();
    assert_eq!(resolved, ["A", "B"], "A's resolution was not lost");
}
