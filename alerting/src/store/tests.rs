//! Store tests on a real database file.

use super::*;

fn notification(name: &str) -> GroupNotification {
    let a = crate::model::test_alert(&[("alertname", name)], Status::Firing);
    GroupNotification {
        group_key: format!("{{}}:{{alertname={name:?}}}"),
        group_labels: a.labels.clone(),
        status: Status::Firing,
        alerts: vec![a],
    }
}

fn enqueue(s: &Store, receiver: &str, name: &str) -> u64 {
    let c = Changes {
        deliveries: vec![NewDelivery {
            receiver: receiver.into(),
            notification: notification(name),
            priority: 0,
        }],
        ..Changes::default()
    };
    s.apply(&c, 1_000).expect("apply").enqueued[0].1
}

/// One unreadable record (garbage, or a newer format) is quarantined and counted; the
/// others are delivered as usual.
#[test]
fn unreadable_records_are_quarantined_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Store::open(dir.path()).expect("open");
    let good = enqueue(&s, "r", "A");
    s.write(|txn| {
        let mut t = txn.open_table(OUTBOX)?;
        t.insert(("r", 900), b"{not json".as_slice())?;
        t.insert(("r", 901), br#"{"v":99,"id":901}"#.as_slice())?;
        Ok(())
    })
    .expect("garbage");
    let (pending, bad) = s.pending("r").expect("pending");
    assert_eq!(bad, 2);
    assert_eq!(pending.iter().map(|d| d.id).collect::<Vec<_>>(), [good]);
    assert_eq!(s.quarantined().expect("count"), 2);
    let (_, bad) = s.pending("r").expect("again");
    assert_eq!(bad, 0, "moved out of the way, counted once");
}

#[test]
fn receivers_have_their_own_queues_and_removed_ones_are_failed() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Store::open(dir.path()).expect("open");
    enqueue(&s, "a", "X");
    enqueue(&s, "b", "X");
    enqueue(&s, "b", "Y");
    let depth = s.queue_depth().expect("depth");
    assert_eq!((depth.get("a"), depth.get("b")), (Some(&1), Some(&2)));
    assert_eq!(
        s.drop_receivers_except(&["a".into()], 2_000).expect("drop"),
        2
    );
    assert!(s.pending("b").expect("b").0.is_empty());
    let h = s.history(10).expect("history");
    assert_eq!(h.iter().filter(|e| e.outcome == Outcome::Failed).count(), 2);
}

#[test]
fn history_keeps_the_last_entries() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Store::open(dir.path()).expect("open");
    for i in 0..(HISTORY_LEN + 20) {
        let id = enqueue(&s, "r", &format!("A{i}"));
        s.settle("r", id, &AttemptResult::Delivered, 2_000)
            .expect("settle");
    }
    let h = s.history(HISTORY_LEN as usize + 100).expect("history");
    assert!(h.len() as u64 <= HISTORY_LEN + 1, "{}", h.len());
    assert!(h[0].alertname.starts_with('A'));
}

#[test]
fn reopen_brings_a_store_back() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Store::open(dir.path()).expect("open");
    enqueue(&s, "r", "A");
    s.failed(&StoreError::Closed);
    assert!(!s.is_healthy());
    s.reopen().expect("reopen");
    assert!(s.is_healthy());
    assert_eq!(s.pending("r").expect("pending").0.len(), 1);
}
