//! Delivery: one worker per receiver takes that receiver's due deliveries from the outbox
//! in order, respects its minimum interval (queueing, never dropping), sends, and records
//! the outcome. Retries back off exponentially with jitter (or wait what `Retry-After`
//! says, if longer); a delivery older than `max_delivery_age` is given up and recorded as
//! failed. The outbox is the only state, so a restarted relay picks up where it stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Receiver, Retry};
use crate::metrics::Metrics;
use crate::notify::{DeliveryError, Notification, Notifier};
use crate::store::{AttemptResult, Delivery, Store};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Backoff before attempt `attempts + 1`: `initial * 2^(attempts-1)`, capped, ±20% jitter.
pub fn backoff(retry: &Retry, attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(20);
    let base = retry
        .initial_backoff
        .saturating_mul(1u32 << exp)
        .min(retry.max_backoff);
    base.mul_f64(0.8 + 0.4 * fastrand::f64())
}

/// What to record after one attempt.
pub fn classify(
    d: &Delivery,
    res: Result<(), DeliveryError>,
    retry: &Retry,
    max_age: Duration,
    now: i64,
) -> AttemptResult {
    match res {
        Ok(()) => AttemptResult::Delivered,
        Err(DeliveryError::Permanent { reason }) => AttemptResult::Failed { error: reason },
        Err(DeliveryError::Retryable {
            reason,
            retry_after,
        }) => {
            let age = Duration::from_millis(now.saturating_sub(d.created_at_ms).max(0) as u64);
            if age >= max_age {
                return AttemptResult::Failed {
                    error: format!(
                        "gave up after {}: {reason}",
                        humantime::format_duration(max_age)
                    ),
                };
            }
            let wait = backoff(retry, d.attempts + 1).max(retry_after.unwrap_or(Duration::ZERO));
            AttemptResult::Retry {
                next_attempt_at_ms: now + wait.as_millis() as i64,
                error: reason,
            }
        }
    }
}

/// The longest a worker sleeps without looking at the outbox: a wake-up lost (a client
/// gone after the commit, a crash of a task) delays a delivery by this much at most.
pub const POLL: Duration = Duration::from_secs(2);

/// Runs the worker of one receiver until `shutdown`.
#[allow(clippy::too_many_arguments)]
pub async fn run_worker(
    receiver: Receiver,
    notifier: Box<dyn Notifier>,
    store: Arc<Store>,
    wake: Arc<Notify>,
    retry: Retry,
    max_age: Duration,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let name = receiver.name.clone();
    let mut last_sent: Option<tokio::time::Instant> = None;
    // Attempts whose outcome could not be recorded (the disk was full): they are not sent
    // again while the relay runs, and their outcome is recorded once the store can.
    let mut unrecorded: HashMap<u64, (AttemptResult, i64)> = HashMap::new();
    loop {
        if !unrecorded.is_empty() {
            let s = store.clone();
            let (n, pending) = (name.clone(), std::mem::take(&mut unrecorded));
            unrecorded = tokio::task::spawn_blocking(move || {
                pending
                    .into_iter()
                    .filter(|(id, (r, at))| s.settle(&n, *id, r, *at).is_err())
                    .collect()
            })
            .await
            .unwrap_or_default();
        }
        let s = store.clone();
        let n = name.clone();
        let pending = match tokio::task::spawn_blocking(move || s.pending(&n)).await {
            Ok(Ok((p, quarantined))) => {
                metrics.quarantined.inc_by(quarantined);
                p
            }
            Ok(Err(e)) => {
                tracing::error!(receiver = %name, error = %e, "cannot read the outbox");
                Vec::new()
            }
            Err(e) => {
                tracing::error!(receiver = %name, error = %e, "outbox read task failed");
                Vec::new()
            }
        };
        metrics.set_queue_depth(&name, pending.len() as i64);
        let now = now_ms();
        // Everything due now goes out in one pass over this read of the outbox (a
        // backlog costs one read, not one per delivery), most urgent first; new arrivals
        // wait for the next pass.
        let mut due: Vec<Delivery> = pending
            .iter()
            .filter(|d| d.next_attempt_at_ms <= now && !unrecorded.contains_key(&d.id))
            .cloned()
            .collect();
        due.sort_by_key(|d| (d.priority, d.id));
        if due.is_empty() {
            let next = pending
                .iter()
                .filter(|d| !unrecorded.contains_key(&d.id))
                .map(|d| d.next_attempt_at_ms)
                .min();
            let sleep = next
                .map_or(POLL, |t| {
                    Duration::from_millis(t.saturating_sub(now).max(0) as u64)
                })
                .min(POLL);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
            }
            continue;
        }
        for d in due {
            // A reload stops this worker: its read of the outbox is stale from then on.
            if shutdown.is_cancelled() {
                return;
            }
            if let (Some(at), false) = (last_sent, receiver.min_interval.is_zero()) {
                let ready = at + receiver.min_interval;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep_until(ready) => {}
                }
            }
            last_sent = Some(tokio::time::Instant::now());
            let res = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                r = notifier.send(Notification { receiver: &name, n: &d.notification }) => r,
            };
            let now = now_ms();
            let outcome = classify(&d, res, &retry, max_age, now);
            match &outcome {
                AttemptResult::Delivered => {
                    metrics.delivered(
                        &name,
                        Duration::from_millis(now.saturating_sub(d.created_at_ms).max(0) as u64),
                    );
                    tracing::debug!(receiver = %name, id = d.id, "delivered");
                }
                AttemptResult::Retry {
                    error,
                    next_attempt_at_ms,
                } => {
                    metrics.retried(&name);
                    tracing::warn!(receiver = %name, id = d.id, error = %error, retry_in_ms = next_attempt_at_ms - now, "delivery failed, will retry");
                }
                AttemptResult::Failed { error } => {
                    metrics.failed(&name);
                    tracing::error!(receiver = %name, id = d.id, error = %error, "delivery failed for good");
                }
            }
            let s = store.clone();
            let (id, n, o) = (d.id, name.clone(), outcome.clone());
            match tokio::task::spawn_blocking(move || s.settle(&n, id, &o, now)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(receiver = %name, id, error = %e, "cannot record a delivery outcome; it will not be sent again");
                    unrecorded.insert(id, (outcome, now));
                }
                Err(e) => {
                    tracing::error!(receiver = %name, id, error = %e, "outbox write task failed");
                    unrecorded.insert(id, (outcome, now));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use crate::notify::fixtures::group;

    const RETRY: Retry = Retry {
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(60),
    };

    fn delivery(attempts: u32, created: i64) -> Delivery {
        Delivery {
            id: 1,
            receiver: "r".into(),
            notification: group(Status::Firing),
            priority: 0,
            created_at_ms: created,
            next_attempt_at_ms: created,
            attempts,
            last_error: None,
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        for _ in 0..100 {
            let b1 = backoff(&RETRY, 1);
            assert!(b1 >= Duration::from_millis(800) && b1 <= Duration::from_millis(1200));
            let b4 = backoff(&RETRY, 4);
            assert!(b4 >= Duration::from_millis(6400) && b4 <= Duration::from_millis(9600));
            assert!(backoff(&RETRY, 30) <= Duration::from_secs(72));
        }
    }

    #[test]
    fn retry_after_is_honoured_and_old_deliveries_given_up() {
        let d = delivery(0, 0);
        let r = classify(
            &d,
            Err(DeliveryError::Retryable {
                reason: "429".into(),
                retry_after: Some(Duration::from_secs(2)),
            }),
            &RETRY,
            Duration::from_secs(3600),
            1000,
        );
        match r {
            AttemptResult::Retry {
                next_attempt_at_ms, ..
            } => assert!(next_attempt_at_ms >= 3000),
            other => panic!("{other:?}"),
        }
        let r = classify(
            &d,
            Err(DeliveryError::retryable("500")),
            &RETRY,
            Duration::from_secs(10),
            10_000,
        );
        assert!(
            matches!(r, AttemptResult::Failed { ref error } if error.contains("gave up")),
            "{r:?}"
        );
        let r = classify(
            &d,
            Err(DeliveryError::permanent("400")),
            &RETRY,
            Duration::from_secs(10),
            1,
        );
        assert_eq!(
            r,
            AttemptResult::Failed {
                error: "400".into()
            }
        );
    }
}
