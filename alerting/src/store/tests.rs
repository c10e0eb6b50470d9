//! Outbox tests on a real database file.

use std::time::Duration;

use super::*;
use crate::model::{fingerprint, Labels};

fn alert(name: &str, status: Status) -> Alert {
    let labels: Labels = [("alertname".to_owned(), name.to_owned())].into();
    Alert {
        fingerprint: fingerprint(&labels),
        labels,
        annotations: Labels::new(),
        starts_at: String::new(),
        ends_at: String::new(),
        generator_url: String::new(),
        status,
    }
}

const W: Duration = Duration::from_secs(300);

fn both(_: &Alert) -> Vec<String> {
    vec!["a".into(), "b".into()]
}

#[test]
fn ingest_dedups_per_receiver_and_survives_reopening() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let s = Store::open(dir.path()).expect("open");
        let out = s
            .ingest(&[alert("X", Status::Firing)], both, 1_000, W)
            .expect("ingest");
        assert_eq!(out.enqueued.len(), 2);
        let again = s
            .ingest(&[alert("X", Status::Firing)], both, 60_000, W)
            .expect("ingest");
        assert_eq!((again.enqueued.len(), again.deduplicated), (0, 2));
        assert_eq!(s.active_alerts(60_000).expect("active").len(), 1);
    }
    // Reopened (as after a restart): the same pending deliveries.
    let s = Store::open(dir.path()).expect("reopen");
    assert_eq!(s.pending("a").expect("pending").len(), 1);
    assert_eq!(s.pending("b").expect("pending").len(), 1);
    let resolved = s
        .ingest(&[alert("X", Status::Resolved)], both, 70_000, W)
        .expect("ingest");
    assert_eq!(resolved.enqueued.len(), 2);
    assert!(s.active_alerts(70_000).expect("active").is_empty());
    let repeat = s
        .ingest(&[alert("X", Status::Resolved)], both, 80_000, W)
        .expect("ingest");
    assert_eq!(repeat.deduplicated, 2, "a resolution is notified once");
}

#[test]
fn settle_moves_deliveries_through_history() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Store::open(dir.path()).expect("open");
    let out = s
        .ingest(&[alert("Y", Status::Firing)], |_| vec!["a".into()], 5, W)
        .expect("ingest");
    let id = out.enqueued[0].1;
    s.settle(
        id,
        &AttemptResult::Retry {
            next_attempt_at_ms: 99,
            error: "500".into(),
        },
        10,
    )
    .expect("settle");
    let p = s.pending("a").expect("pending");
    assert_eq!((p[0].attempts, p[0].next_attempt_at_ms), (1, 99));
    assert_eq!(s.history(10).expect("h")[0].outcome, Outcome::Retrying);
    s.settle(id, &AttemptResult::Delivered, 100)
        .expect("settle");
    assert!(s.pending("a").expect("pending").is_empty());
    let h = &s.history(10).expect("h")[0];
    assert_eq!((h.outcome, h.attempts), (Outcome::Delivered, 2));
    assert_eq!(s.queue_depth().expect("depth").get("a"), None);
}

#[test]
fn history_keeps_the_last_thousand_settled() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Store::open(dir.path()).expect("open");
    let mut last = 0;
    for i in 0..1100 {
        let out = s
            .ingest(
                &[alert(&format!("A{i}"), Status::Firing)],
                |_| vec!["a".into()],
                i,
                W,
            )
            .expect("ingest");
        last = out.enqueued[0].1;
        s.settle(last, &AttemptResult::Delivered, i)
            .expect("settle");
    }
    s.ingest(&[alert("Z", Status::Firing)], |_| vec!["a".into()], 2000, W)
        .expect("ingest");
    let h = s.history(5000).expect("history");
    assert!(h.len() <= HISTORY_LEN as usize + 1, "{}", h.len());
    assert!(h.iter().any(|e| e.id == last));
}

#[test]
fn an_alert_whose_lease_runs_out_is_resolved_once() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Store::open(dir.path()).expect("open");
    let leased = |ends_at: &str| Alert {
        ends_at: ends_at.to_owned(),
        ..alert("X", Status::Firing)
    };
    // Fires with a lease to t = 100 s, then a refresh extends it to t = 200 s.
    s.ingest(&[leased("1970-01-01T00:01:40Z")], both, 1_000, W)
        .expect("ingest");
    s.ingest(&[leased("1970-01-01T00:03:20Z")], both, 90_000, W)
        .expect("refresh");
    let early = s.expire(both, 150_000, W).expect("expire");
    assert_eq!(early, IngestOutcome::default(), "a refreshed lease holds");
    assert_eq!(s.active_alerts(150_000).expect("active").len(), 1);

    let out = s.expire(both, 200_000, W).expect("expire");
    assert_eq!((out.received, out.enqueued.len()), (1, 2));
    for receiver in ["a", "b"] {
        let pending = s.pending(receiver).expect("pending");
        let last = pending.last().expect("a delivery");
        assert_eq!(last.status, Status::Resolved, "{receiver}");
        assert_eq!(last.alert.fingerprint, leased("").fingerprint);
    }
    assert!(s.active_alerts(200_000).expect("active").is_empty());
    assert_eq!(
        s.expire(both, 300_000, W).expect("expire"),
        IngestOutcome::default(),
        "resolved once"
    );
    // A late resolution from Prometheus says nothing new.
    let late = s
        .ingest(&[alert("X", Status::Resolved)], both, 310_000, W)
        .expect("ingest");
    assert_eq!(late.deduplicated, 2);
}
