//! Whether a receiver hears about an alert again: a firing alert once per dedup window
//! however often Prometheus resends it; its resolution once; firing again after a
//! resolution at once. Pure, so the rules are tested with explicit times.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::Status;

/// What a receiver was last told about an alert. Absent means nothing (or it was told
/// the alert resolved, after which the entry is removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyState {
    /// When the receiver was last notified that the alert fires (Unix ms).
    pub firing_notified_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Notify,
    Deduplicated,
}

pub fn decide(
    prev: Option<NotifyState>,
    status: Status,
    now_ms: i64,
    window: Duration,
) -> Decision {
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    match (status, prev) {
        (Status::Firing, Some(s)) if now_ms.saturating_sub(s.firing_notified_at_ms) < window_ms => {
            Decision::Deduplicated
        }
        (Status::Firing, _) => Decision::Notify,
        (Status::Resolved, Some(_)) => Decision::Notify,
        // Never told it fired (or already told it resolved): nothing to say.
        (Status::Resolved, None) => Decision::Deduplicated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(300);

    #[test]
    fn firing_once_per_window() {
        assert_eq!(decide(None, Status::Firing, 0, W), Decision::Notify);
        let s = Some(NotifyState {
            firing_notified_at_ms: 0,
        });
        assert_eq!(decide(s, Status::Firing, 60_000, W), Decision::Deduplicated);
        assert_eq!(
            decide(s, Status::Firing, 299_999, W),
            Decision::Deduplicated
        );
        assert_eq!(decide(s, Status::Firing, 300_000, W), Decision::Notify);
    }

    #[test]
    fn resolution_once_and_firing_again_after_it() {
        let s = Some(NotifyState {
            firing_notified_at_ms: 0,
        });
        assert_eq!(decide(s, Status::Resolved, 1, W), Decision::Notify);
        // After notifying the resolution the state is gone:
        assert_eq!(decide(None, Status::Resolved, 2, W), Decision::Deduplicated);
        assert_eq!(decide(None, Status::Firing, 3, W), Decision::Notify);
    }
}
