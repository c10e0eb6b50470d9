//! The durable outbox, in one redb database.
//!
//! Constraints: an alert is acknowledged (2xx) only after the transaction that records it,
//! its dedup decision and its pending deliveries has committed with full durability, so
//! a crash (even `kill -9`) after the answer loses nothing; deliveries are at least once
//! (a crash between sending and recording the outcome sends again).
//!
//! Tables (values are JSON, so the format can grow):
//! - `alerts`: fingerprint → the latest [`StoredAlert`] (resolved ones are removed, and so
//!   are firing ones whose `endsAt` lease ran out, by [`Store::expire`]);
//! - `notify_state`: `fingerprint/receiver` → [`NotifyState`] (what the receiver was told);
//! - `outbox`: delivery id → [`Delivery`] still to be made, with its next attempt time;
//! - `history`: delivery id → [`HistoryEntry`], the last [`HISTORY_LEN`] outcomes;
//! - `meta`: `next_id`.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::dedup::{decide, Decision, NotifyState};
use crate::model::{Alert, Status};

const ALERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("alerts");
const NOTIFY_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("notify_state");
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Notifications kept in history.
pub const HISTORY_LEN: u64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("outbox database: {0}")]
    Db(#[from] redb::Error),
    #[error("outbox record: {0}")]
    Codec(#[from] serde_json::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAlert {
    #[serde(flatten)]
    pub alert: Alert,
    pub received_at_ms: i64,
}

/// A notification still to be delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: u64,
    pub receiver: String,
    pub status: Status,
    pub alert: Alert,
    pub created_at_ms: i64,
    pub next_attempt_at_ms: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pending,
    Retrying,
    Delivered,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub id: u64,
    pub receiver: String,
    pub fingerprint: String,
    pub alertname: String,
    pub status: Status,
    pub outcome: Outcome,
    pub attempts: u32,
    pub reason: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What the delivery worker reports for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    Delivered,
    Retry {
        next_attempt_at_ms: i64,
        error: String,
    },
    Failed {
        error: String,
    },
}

/// What one ingest did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub received: usize,
    pub enqueued: Vec<(String, u64)>,
    pub deduplicated: usize,
}

pub struct Store {
    db: Database,
}

/// Whether a firing alert's `endsAt` lease has run out at `now_ms`.
fn lease_expired(a: &Alert, now_ms: i64) -> bool {
    crate::model::parse_time(&a.ends_at)
        .ok()
        .flatten()
        .is_some_and(|end| end <= now_ms)
}

fn state_key(fingerprint: &str, receiver: &str) -> String {
    format!("{fingerprint}/{receiver}")
}

impl Store {
    /// Opens (or creates) `dir/outbox.redb`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Db(redb::Error::Io(e)))?;
        let db = Database::create(dir.join("outbox.redb"))?;
        let txn = db.begin_write()?;
        {
            txn.open_table(ALERTS)?;
            txn.open_table(NOTIFY_STATE)?;
            txn.open_table(OUTBOX)?;
            txn.open_table(HISTORY)?;
            txn.open_table(META)?;
        }
        txn.commit()?;
        Ok(Store { db })
    }

    /// Records `alerts`, decides per receiver (from `route`) whether to notify, enqueues
    /// the notifications, all in one durable transaction.
    pub fn ingest(
        &self,
        alerts: &[Alert],
        route: impl Fn(&Alert) -> Vec<String>,
        now_ms: i64,
        window: std::time::Duration,
    ) -> Result<IngestOutcome> {
        let txn = self.db.begin_write()?;
        let out = Self::record(&txn, alerts, &route, now_ms, window)?;
        txn.commit()?;
        Ok(out)
    }

    /// Resolves the firing alerts whose `endsAt` lease ran out at `now_ms` without a
    /// refresh or a resolution (Prometheus stopped sending them, as Alertmanager treats
    /// them): each receiver told it fired is told it resolved. The lease is read in the
    /// same transaction that resolves it, so a refresh is never lost to a race.
    pub fn expire(
        &self,
        route: impl Fn(&Alert) -> Vec<String>,
        now_ms: i64,
        window: std::time::Duration,
    ) -> Result<IngestOutcome> {
        let txn = self.db.begin_write()?;
        let expired: Vec<Alert> = {
            let alerts_t = txn.open_table(ALERTS)?;
            let mut expired = Vec::new();
            for item in alerts_t.iter()? {
                let (_, v) = item?;
                let a: StoredAlert = serde_json::from_slice(v.value())?;
                if lease_expired(&a.alert, now_ms) {
                    expired.push(Alert {
                        status: Status::Resolved,
                        ..a.alert
                    });
                }
            }
            expired
        };
        if expired.is_empty() {
            // Nothing to write: drop the transaction without a durable commit.
            txn.abort()?;
            return Ok(IngestOutcome::default());
        }
        let out = Self::record(&txn, &expired, &route, now_ms, window)?;
        txn.commit()?;
        Ok(out)
    }

    /// Records `alerts` in `txn`: stores or removes them, decides per receiver, enqueues
    /// deliveries and their history entries, trims the history.
    fn record(
        txn: &redb::WriteTransaction,
        alerts: &[Alert],
        route: &impl Fn(&Alert) -> Vec<String>,
        now_ms: i64,
        window: std::time::Duration,
    ) -> Result<IngestOutcome> {
        let mut out = IngestOutcome {
            received: alerts.len(),
            ..IngestOutcome::default()
        };
        {
            let mut alerts_t = txn.open_table(ALERTS)?;
            let mut state_t = txn.open_table(NOTIFY_STATE)?;
            let mut outbox_t = txn.open_table(OUTBOX)?;
            let mut history_t = txn.open_table(HISTORY)?;
            let mut meta_t = txn.open_table(META)?;
            let mut next_id = meta_t.get("next_id")?.map_or(1, |v| v.value());
            for a in alerts {
                match a.status {
                    Status::Firing => {
                        let rec = StoredAlert {
                            alert: a.clone(),
                            received_at_ms: now_ms,
                        };
                        alerts_t
                            .insert(a.fingerprint.as_str(), serde_json::to_vec(&rec)?.as_slice())?;
                    }
                    Status::Resolved => {
                        alerts_t.remove(a.fingerprint.as_str())?;
                    }
                }
                for receiver in route(a) {
                    let key = state_key(&a.fingerprint, &receiver);
                    let prev: Option<NotifyState> = match state_t.get(key.as_str())? {
                        Some(v) => Some(serde_json::from_slice(v.value())?),
                        None => None,
                    };
                    if decide(prev, a.status, now_ms, window) == Decision::Deduplicated {
                        out.deduplicated += 1;
                        continue;
                    }
                    match a.status {
                        Status::Firing => {
                            let s = NotifyState {
                                firing_notified_at_ms: now_ms,
                            };
                            state_t.insert(key.as_str(), serde_json::to_vec(&s)?.as_slice())?;
                        }
                        Status::Resolved => {
                            state_t.remove(key.as_str())?;
                        }
                    }
                    let id = next_id;
                    next_id += 1;
                    let d = Delivery {
                        id,
                        receiver: receiver.clone(),
                        status: a.status,
                        alert: a.clone(),
                        created_at_ms: now_ms,
                        next_attempt_at_ms: now_ms,
                        attempts: 0,
                        last_error: None,
                    };
                    outbox_t.insert(id, serde_json::to_vec(&d)?.as_slice())?;
                    let h = HistoryEntry {
                        id,
                        receiver: receiver.clone(),
                        fingerprint: a.fingerprint.clone(),
                        alertname: a.name().to_owned(),
                        status: a.status,
                        outcome: Outcome::Pending,
                        attempts: 0,
                        reason: None,
                        created_at_ms: now_ms,
                        updated_at_ms: now_ms,
                    };
                    history_t.insert(id, serde_json::to_vec(&h)?.as_slice())?;
                    out.enqueued.push((receiver, id));
                }
            }
            meta_t.insert("next_id", next_id)?;
            // Keep the last HISTORY_LEN entries that are settled; pending ones stay.
            let len = history_t.len()?;
            if len > HISTORY_LEN {
                let mut excess = len - HISTORY_LEN;
                let mut drop_ids = Vec::new();
                for item in history_t.iter()? {
                    if excess == 0 {
                        break;
                    }
                    let (k, _) = item?;
                    let id = k.value();
                    if outbox_t.get(id)?.is_none() {
                        drop_ids.push(id);
                        excess -= 1;
                    }
                }
                for id in drop_ids {
                    history_t.remove(id)?;
                }
            }
        }
        Ok(out)
    }

    /// The deliveries waiting for `receiver`, oldest first.
    pub fn pending(&self, receiver: &str) -> Result<Vec<Delivery>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(OUTBOX)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (_, v) = item?;
            let d: Delivery = serde_json::from_slice(v.value())?;
            if d.receiver == receiver {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Pending deliveries per receiver.
    pub fn queue_depth(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(OUTBOX)?;
        let mut out = std::collections::BTreeMap::new();
        for item in t.iter()? {
            let (_, v) = item?;
            let d: Delivery = serde_json::from_slice(v.value())?;
            *out.entry(d.receiver).or_insert(0) += 1;
        }
        Ok(out)
    }

    /// Records the outcome of one attempt on delivery `id`.
    pub fn settle(&self, id: u64, result: &AttemptResult, now_ms: i64) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut outbox_t = txn.open_table(OUTBOX)?;
            let mut history_t = txn.open_table(HISTORY)?;
            let Some(raw) = outbox_t.get(id)?.map(|v| v.value().to_vec()) else {
                return Ok(());
            };
            let mut d: Delivery = serde_json::from_slice(&raw)?;
            d.attempts += 1;
            let (outcome, reason) = match result {
                AttemptResult::Delivered => {
                    outbox_t.remove(id)?;
                    (Outcome::Delivered, None)
                }
                AttemptResult::Retry {
                    next_attempt_at_ms,
                    error,
                } => {
                    d.next_attempt_at_ms = *next_attempt_at_ms;
                    d.last_error = Some(error.clone());
                    outbox_t.insert(id, serde_json::to_vec(&d)?.as_slice())?;
                    (Outcome::Retrying, Some(error.clone()))
                }
                AttemptResult::Failed { error } => {
                    outbox_t.remove(id)?;
                    (Outcome::Failed, Some(error.clone()))
                }
            };
            let mut h: HistoryEntry = match history_t.get(id)? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => HistoryEntry {
                    id,
                    receiver: d.receiver.clone(),
                    fingerprint: d.alert.fingerprint.clone(),
                    alertname: d.alert.name().to_owned(),
                    status: d.status,
                    outcome,
                    attempts: 0,
                    reason: None,
                    created_at_ms: d.created_at_ms,
                    updated_at_ms: now_ms,
                },
            };
            h.outcome = outcome;
            h.attempts = d.attempts;
            h.reason = reason;
            h.updated_at_ms = now_ms;
            history_t.insert(id, serde_json::to_vec(&h)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Firing alerts whose `endsAt` lease has not run out.
    pub fn active_alerts(&self, now_ms: i64) -> Result<Vec<StoredAlert>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ALERTS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (_, v) = item?;
            let a: StoredAlert = serde_json::from_slice(v.value())?;
            if !lease_expired(&a.alert, now_ms) {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// The last `limit` notifications, newest first.
    pub fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(HISTORY)?;
        let mut out = Vec::new();
        for item in t.iter()?.rev() {
            if out.len() >= limit {
                break;
            }
            let (_, v) = item?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
