//! The durable state, in one redb database: what the [`crate::engine::Engine`] decides is
//! written here before anyone is told it happened.
//!
//! Constraints: an alert is acknowledged (2xx) only after the transaction that records it,
//! the notifications it causes and the notification log has committed with full
//! durability, so a crash (even `kill -9`) after the answer loses nothing; deliveries are
//! at least once (a crash between sending and recording the outcome sends again).
//!
//! A failed write (a full disk) leaves redb refusing every later transaction until the
//! database is reopened: [`Store`] then reports itself unhealthy and [`Store::reopen`]
//! (called by the relay's recovery loop) brings it back once writes succeed again.
//!
//! Every record is JSON with a format version `v`. A record that cannot be read (corrupt,
//! or written by a newer relay) is moved to the `quarantine` table and counted, never
//! allowed to stop the rest.
//!
//! Tables:
//! - `alerts`: fingerprint → [`StoredAlert`] (firing, and resolved until every group that
//!   holds it has notified);
//! - `nflog`: `receiver\0group key` → [`NotifyLog`], what a receiver was last told;
//! - `silences`: id → [`Silence`];
//! - `outbox`: (receiver, id) → [`Delivery`] still to be made;
//! - `outbox_slots`: `receiver\0group key` → the id of its queued delivery: one per group
//!   and receiver, so a newer notification supersedes a queued older one and a resolve can
//!   never be overtaken by its trigger;
//! - `history`: id → [`HistoryEntry`], the last [`HISTORY_LEN`] outcomes;
//! - `quarantine`: `table/key` → the unreadable bytes;
//! - `meta`: `next_id`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::{Alert, GroupNotification, Status};
use crate::silence::Silence;

pub const ALERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("alerts");
pub const NFLOG: TableDefinition<&str, &[u8]> = TableDefinition::new("nflog");
pub const SILENCES: TableDefinition<&str, &[u8]> = TableDefinition::new("silences");
pub const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox");
pub const SLOTS: TableDefinition<&str, u64> = TableDefinition::new("outbox_slots");
pub const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
pub const QUARANTINE: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantine");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The record format written by this relay.
pub const FORMAT_VERSION: u32 = 1;

/// Notifications kept in history.
pub const HISTORY_LEN: u64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("outbox database: {0}")]
    Db(#[from] redb::Error),
    #[error("outbox record: {0}")]
    Codec(#[from] serde_json::Error),
    #[error("outbox database is closed after a failed write; reopening")]
    Closed,
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

/// A record with its format version.
#[derive(Serialize, Deserialize)]
struct Versioned<T> {
    v: u32,
    #[serde(flatten)]
    body: T,
}

fn encode<T: Serialize>(body: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&Versioned {
        v: FORMAT_VERSION,
        body,
    })?)
}

/// Decodes a record, or says why it is unreadable.
fn decode<T: DeserializeOwned>(raw: &[u8]) -> std::result::Result<T, String> {
    let rec: Versioned<T> = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
    if rec.v != FORMAT_VERSION {
        return Err(format!(
            "format version {} (this relay reads {FORMAT_VERSION})",
            rec.v
        ));
    }
    Ok(rec.body)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAlert {
    #[serde(flatten)]
    pub alert: Alert,
    pub received_at_ms: i64,
    /// When the relay learned it resolved (it stays until its groups have notified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at_ms: Option<i64>,
}

/// What one receiver was last told about one group (Alertmanager's notification log).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyLog {
    pub firing: std::collections::BTreeSet<String>,
    pub resolved: std::collections::BTreeSet<String>,
    pub at_ms: i64,
}

/// A notification still to be delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: u64,
    pub receiver: String,
    pub notification: GroupNotification,
    /// Lower goes first when a receiver has a backlog: critical before warning.
    pub priority: u8,
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
    /// Replaced, before it went out, by a newer notification of the same group.
    Superseded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub id: u64,
    pub receiver: String,
    pub group_key: String,
    /// The distinct alert names of the notification, comma-separated.
    pub alertname: String,
    pub fingerprints: Vec<String>,
    pub status: Status,
    pub outcome: Outcome,
    pub attempts: u32,
    pub reason: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl HistoryEntry {
    fn pending(d: &Delivery) -> Self {
        let n = &d.notification;
        HistoryEntry {
            id: d.id,
            receiver: d.receiver.clone(),
            group_key: n.group_key.clone(),
            alertname: n.alertnames().join(", "),
            fingerprints: n.alerts.iter().map(|a| a.fingerprint.clone()).collect(),
            status: n.status,
            outcome: Outcome::Pending,
            attempts: 0,
            reason: None,
            created_at_ms: d.created_at_ms,
            updated_at_ms: d.created_at_ms,
        }
    }
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

/// A notification to enqueue.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub receiver: String,
    pub notification: GroupNotification,
    pub priority: u8,
}

/// Everything one engine step writes, in one transaction.
#[derive(Debug, Default)]
pub struct Changes {
    pub alerts_put: Vec<Arc<StoredAlert>>,
    pub alerts_del: Vec<String>,
    pub nflog_put: Vec<(String, NotifyLog)>,
    pub nflog_del: Vec<String>,
    pub silences_put: Vec<Silence>,
    pub silences_del: Vec<String>,
    pub deliveries: Vec<NewDelivery>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.alerts_put.is_empty()
            && self.alerts_del.is_empty()
            && self.nflog_put.is_empty()
            && self.nflog_del.is_empty()
            && self.silences_put.is_empty()
            && self.silences_del.is_empty()
            && self.deliveries.is_empty()
    }
}

/// What [`Store::apply`] enqueued and superseded.
#[derive(Debug, Default)]
pub struct Applied {
    pub enqueued: Vec<(String, u64)>,
    pub superseded: u64,
}

/// The state read back at open: what the engine keeps in memory.
#[derive(Debug, Default, Clone)]
pub struct Loaded {
    pub alerts: BTreeMap<String, Arc<StoredAlert>>,
    pub nflog: BTreeMap<String, NotifyLog>,
    pub silences: BTreeMap<String, Silence>,
    /// Records moved to quarantine while loading.
    pub quarantined: u64,
}

/// The key of a receiver's slot, nflog entry, for a group.
pub fn slot_key(receiver: &str, group_key: &str) -> String {
    format!("{receiver}\0{group_key}")
}

pub struct Store {
    path: PathBuf,
    db: RwLock<Option<Database>>,
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
}

fn open_db(path: &Path) -> Result<Database> {
    let db = Database::create(path)?;
    let txn = db.begin_write()?;
    {
        txn.open_table(ALERTS)?;
        txn.open_table(NFLOG)?;
        txn.open_table(SILENCES)?;
        txn.open_table(OUTBOX)?;
        txn.open_table(SLOTS)?;
        txn.open_table(HISTORY)?;
        txn.open_table(QUARANTINE)?;
        txn.open_table(META)?;
    }
    txn.commit()?;
    Ok(db)
}

impl Store {
    /// Opens (or creates) `dir/outbox.redb`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Db(redb::Error::Io(e)))?;
        let path = dir.join("outbox.redb");
        let db = open_db(&path)?;
        Ok(Store {
            path,
            db: RwLock::new(Some(db)),
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
        })
    }

    /// Whether the last write succeeded (or the database was reopened since it failed).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Why the store is unhealthy, if it is.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn failed(&self, e: &StoreError) {
        if matches!(e, StoreError::Db(_) | StoreError::Closed) {
            self.healthy.store(false, Ordering::Release);
            // redb says "previous I/O error" after the first: keep the cause (a full disk).
            let echo = matches!(
                e,
                StoreError::Db(redb::Error::PreviousIo) | StoreError::Closed
            );
            if let Ok(mut l) = self.last_error.lock() {
                if l.is_none() || !echo {
                    *l = Some(e.to_string());
                }
            }
        }
    }

    /// Closes and opens the database again (redb refuses all work after a failed write
    /// until then), and checks that a write commits.
    pub fn reopen(&self) -> Result<()> {
        let mut guard = self.db.write().map_err(|_| StoreError::Closed)?;
        // The file lock is released only when the old handle is gone.
        drop(guard.take());
        let db = open_db(&self.path).inspect_err(|e| self.failed(e))?;
        *guard = Some(db);
        self.healthy.store(true, Ordering::Release);
        if let Ok(mut l) = self.last_error.lock() {
            *l = None;
        }
        Ok(())
    }

    /// Closes the database as a failed write leaves it, for tests of what follows.
    #[cfg(test)]
    pub(crate) fn break_for_test(&self) {
        if let Ok(mut g) = self.db.write() {
            drop(g.take());
        }
        self.failed(&StoreError::Closed);
    }

    fn write<T>(&self, f: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
        let guard = self.db.read().map_err(|_| StoreError::Closed)?;
        let db = guard.as_ref().ok_or(StoreError::Closed)?;
        let run = || -> Result<T> {
            let txn = db.begin_write()?;
            let out = f(&txn)?;
            txn.commit()?;
            Ok(out)
        };
        run().inspect_err(|e| self.failed(e))
    }

    fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        let guard = self.db.read().map_err(|_| StoreError::Closed)?;
        let db = guard.as_ref().ok_or(StoreError::Closed)?;
        let run = || -> Result<T> {
            let txn = db.begin_read()?;
            f(&txn)
        };
        run().inspect_err(|e| self.failed(e))
    }

    /// Reads alerts, notification log and silences; quarantines what cannot be read.
    pub fn load(&self) -> Result<Loaded> {
        let mut bad: Vec<(String, Vec<u8>, String)> = Vec::new();
        let mut loaded = self.read(|txn| {
            let mut out = Loaded::default();
            for item in txn.open_table(ALERTS)?.iter()? {
                let (k, v) = item?;
                match decode::<StoredAlert>(v.value()) {
                    Ok(a) => {
                        out.alerts.insert(k.value().to_owned(), Arc::new(a));
                    }
                    Err(e) => bad.push((format!("alerts/{}", k.value()), v.value().to_vec(), e)),
                }
            }
            for item in txn.open_table(NFLOG)?.iter()? {
                let (k, v) = item?;
                match decode::<NotifyLog>(v.value()) {
                    Ok(n) => {
                        out.nflog.insert(k.value().to_owned(), n);
                    }
                    Err(e) => bad.push((format!("nflog/{}", k.value()), v.value().to_vec(), e)),
                }
            }
            for item in txn.open_table(SILENCES)?.iter()? {
                let (k, v) = item?;
                match serde_json::from_slice::<Silence>(v.value()) {
                    Ok(s) => {
                        out.silences.insert(k.value().to_owned(), s);
                    }
                    Err(e) => bad.push((
                        format!("silences/{}", k.value()),
                        v.value().to_vec(),
                        e.to_string(),
                    )),
                }
            }
            Ok(out)
        })?;
        if !bad.is_empty() {
            loaded.quarantined = bad.len() as u64;
            self.quarantine(bad)?;
        }
        Ok(loaded)
    }

    /// Moves unreadable records (`table/key`) to the quarantine table.
    fn quarantine(&self, bad: Vec<(String, Vec<u8>, String)>) -> Result<()> {
        for (key, _, why) in &bad {
            tracing::error!(record = %key, error = %why, "unreadable record moved to quarantine");
        }
        self.write(|txn| {
            let mut q = txn.open_table(QUARANTINE)?;
            for (key, raw, _) in &bad {
                q.insert(key.as_str(), raw.as_slice())?;
                let (table, k) = key.split_once('/').unwrap_or(("", key));
                match table {
                    "alerts" => {
                        txn.open_table(ALERTS)?.remove(k)?;
                    }
                    "nflog" => {
                        txn.open_table(NFLOG)?.remove(k)?;
                    }
                    "silences" => {
                        txn.open_table(SILENCES)?.remove(k)?;
                    }
                    "outbox" => {
                        if let Some((receiver, id)) = k.rsplit_once('/') {
                            if let Ok(id) = id.parse::<u64>() {
                                txn.open_table(OUTBOX)?.remove((receiver, id))?;
                            }
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        })
    }

    /// Writes `changes` in one durable transaction: alerts, notification log and
    /// silences, then each delivery into its group's slot (superseding the one queued
    /// there), with its history entry; trims the history.
    pub fn apply(&self, changes: &Changes, now_ms: i64) -> Result<Applied> {
        self.write(|txn| {
            let mut out = Applied::default();
            {
                let mut alerts_t = txn.open_table(ALERTS)?;
                for a in &changes.alerts_put {
                    alerts_t
                        .insert(a.alert.fingerprint.as_str(), encode(a.as_ref())?.as_slice())?;
                }
                for fp in &changes.alerts_del {
                    alerts_t.remove(fp.as_str())?;
                }
                let mut nflog_t = txn.open_table(NFLOG)?;
                for (k, n) in &changes.nflog_put {
                    nflog_t.insert(k.as_str(), encode(n)?.as_slice())?;
                }
                for k in &changes.nflog_del {
                    nflog_t.remove(k.as_str())?;
                }
                let mut silences_t = txn.open_table(SILENCES)?;
                for s in &changes.silences_put {
                    silences_t.insert(s.id.as_str(), serde_json::to_vec(s)?.as_slice())?;
                }
                for id in &changes.silences_del {
                    silences_t.remove(id.as_str())?;
                }
            }
            if changes.deliveries.is_empty() {
                return Ok(out);
            }
            let mut outbox_t = txn.open_table(OUTBOX)?;
            let mut slots_t = txn.open_table(SLOTS)?;
            let mut history_t = txn.open_table(HISTORY)?;
            let mut meta_t = txn.open_table(META)?;
            let mut next_id = meta_t.get("next_id")?.map_or(1, |v| v.value());
            for nd in &changes.deliveries {
                let mut notification = nd.notification.clone();
                let slot = slot_key(&nd.receiver, &notification.group_key);
                let old = slots_t.get(slot.as_str())?.map(|v| v.value());
                if let Some(old) = old {
                    let replaced = outbox_t
                        .remove((nd.receiver.as_str(), old))?
                        .map(|v| decode::<Delivery>(v.value()));
                    if let Some(replaced) = replaced {
                        // The receiver has not heard the resolutions the replaced one
                        // carried (the log says it has): they go with the new one.
                        if let Ok(r) = replaced {
                            carry_resolutions(&mut notification, r.notification);
                        }
                        out.superseded += 1;
                        let entry = history_t
                            .get(old)?
                            .and_then(|v| decode::<HistoryEntry>(v.value()).ok());
                        if let Some(mut h) = entry {
                            h.outcome = Outcome::Superseded;
                            h.reason = Some(format!("replaced by notification {next_id}"));
                            h.updated_at_ms = now_ms;
                            history_t.insert(old, encode(&h)?.as_slice())?;
                        }
                    }
                }
                let id = next_id;
                next_id += 1;
                let d = Delivery {
                    id,
                    receiver: nd.receiver.clone(),
                    notification,
                    priority: nd.priority,
                    created_at_ms: now_ms,
                    next_attempt_at_ms: now_ms,
                    attempts: 0,
                    last_error: None,
                };
                outbox_t.insert((nd.receiver.as_str(), id), encode(&d)?.as_slice())?;
                slots_t.insert(slot.as_str(), id)?;
                history_t.insert(id, encode(&HistoryEntry::pending(&d))?.as_slice())?;
                out.enqueued.push((nd.receiver.clone(), id));
            }
            meta_t.insert("next_id", next_id)?;
            trim_history(&mut history_t, &outbox_t)?;
            Ok(out)
        })
    }

    /// The deliveries waiting for `receiver`, by id; unreadable ones are quarantined and
    /// counted in the second value.
    pub fn pending(&self, receiver: &str) -> Result<(Vec<Delivery>, u64)> {
        let mut bad = Vec::new();
        let out = self.read(|txn| {
            let t = txn.open_table(OUTBOX)?;
            let mut out = Vec::new();
            for item in t.range((receiver, 0)..=(receiver, u64::MAX))? {
                let (k, v) = item?;
                let (r, id) = k.value();
                match decode::<Delivery>(v.value()) {
                    Ok(d) => out.push(d),
                    Err(e) => bad.push((format!("outbox/{r}/{id}"), v.value().to_vec(), e)),
                }
            }
            Ok(out)
        })?;
        let n = bad.len() as u64;
        if n > 0 {
            self.quarantine(bad)?;
        }
        Ok((out, n))
    }

    /// Pending deliveries per receiver.
    pub fn queue_depth(&self) -> Result<BTreeMap<String, u64>> {
        self.read(|txn| {
            let t = txn.open_table(OUTBOX)?;
            let mut out = BTreeMap::new();
            for item in t.iter()? {
                let (k, _) = item?;
                *out.entry(k.value().0.to_owned()).or_insert(0) += 1;
            }
            Ok(out)
        })
    }

    /// Records the outcome of one attempt on delivery `id` of `receiver`. A delivery
    /// superseded while it was in flight only gets its history entry updated.
    pub fn settle(
        &self,
        receiver: &str,
        id: u64,
        result: &AttemptResult,
        now_ms: i64,
    ) -> Result<()> {
        self.write(|txn| {
            let mut outbox_t = txn.open_table(OUTBOX)?;
            let mut slots_t = txn.open_table(SLOTS)?;
            let mut history_t = txn.open_table(HISTORY)?;
            let raw = outbox_t.get((receiver, id))?.map(|v| v.value().to_vec());
            let current = raw.as_deref().and_then(|r| decode::<Delivery>(r).ok());
            let (outcome, reason) = match result {
                AttemptResult::Delivered => (Outcome::Delivered, None),
                AttemptResult::Retry { error, .. } => (Outcome::Retrying, Some(error.clone())),
                AttemptResult::Failed { error } => (Outcome::Failed, Some(error.clone())),
            };
            let mut attempts = None;
            if let Some(mut d) = current {
                d.attempts += 1;
                attempts = Some(d.attempts);
                let slot = slot_key(receiver, &d.notification.group_key);
                match result {
                    AttemptResult::Retry {
                        next_attempt_at_ms,
                        error,
                    } => {
                        d.next_attempt_at_ms = *next_attempt_at_ms;
                        d.last_error = Some(error.clone());
                        outbox_t.insert((receiver, id), encode(&d)?.as_slice())?;
                    }
                    AttemptResult::Delivered | AttemptResult::Failed { .. } => {
                        outbox_t.remove((receiver, id))?;
                        if slots_t.get(slot.as_str())?.map(|v| v.value()) == Some(id) {
                            slots_t.remove(slot.as_str())?;
                        }
                    }
                }
            }
            let entry = history_t
                .get(id)?
                .and_then(|v| decode::<HistoryEntry>(v.value()).ok());
            if let Some(mut h) = entry {
                let superseded = h.outcome == Outcome::Superseded;
                // A superseded delivery keeps that outcome unless it did go out.
                if !superseded || outcome == Outcome::Delivered {
                    h.outcome = outcome;
                    h.reason = reason;
                }
                h.attempts = attempts.unwrap_or(h.attempts + 1);
                h.updated_at_ms = now_ms;
                history_t.insert(id, encode(&h)?.as_slice())?;
            }
            Ok(())
        })
    }

    /// Fails every queued delivery of receivers not in `keep` (removed from the config).
    pub fn drop_receivers_except(&self, keep: &[String], now_ms: i64) -> Result<u64> {
        let gone: Vec<(String, u64)> = self.read(|txn| {
            let t = txn.open_table(OUTBOX)?;
            let mut out = Vec::new();
            for item in t.iter()? {
                let (k, _) = item?;
                let (r, id) = k.value();
                if !keep.iter().any(|x| x == r) {
                    out.push((r.to_owned(), id));
                }
            }
            Ok(out)
        })?;
        for (r, id) in &gone {
            self.settle(
                r,
                *id,
                &AttemptResult::Failed {
                    error: "the receiver was removed from the configuration".into(),
                },
                now_ms,
            )?;
        }
        Ok(gone.len() as u64)
    }

    /// The last `limit` notifications, newest first.
    pub fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>> {
        self.read(|txn| {
            let t = txn.open_table(HISTORY)?;
            let mut out = Vec::new();
            for item in t.iter()?.rev() {
                if out.len() >= limit {
                    break;
                }
                let (_, v) = item?;
                if let Ok(h) = decode(v.value()) {
                    out.push(h);
                }
            }
            Ok(out)
        })
    }

    /// Records in quarantine.
    pub fn quarantined(&self) -> Result<u64> {
        self.read(|txn| Ok(txn.open_table(QUARANTINE)?.len()?))
    }
}

/// Adds to `new` the resolved alerts of `replaced` that it does not mention.
fn carry_resolutions(new: &mut GroupNotification, replaced: GroupNotification) {
    for a in replaced.alerts {
        if a.status == Status::Resolved
            && !new.alerts.iter().any(|x| x.fingerprint == a.fingerprint)
        {
            new.alerts.push(a);
        }
    }
    new.status = if new.firing().next().is_some() {
        Status::Firing
    } else {
        Status::Resolved
    };
}

/// Keeps the last [`HISTORY_LEN`] entries that are settled; pending ones stay.
fn trim_history(
    history_t: &mut redb::Table<'_, u64, &[u8]>,
    outbox_t: &redb::Table<'_, (&str, u64), &[u8]>,
) -> Result<()> {
    let len = history_t.len()?;
    if len <= HISTORY_LEN {
        return Ok(());
    }
    let mut excess = len - HISTORY_LEN;
    let mut drop_ids = Vec::new();
    for item in history_t.iter()? {
        if excess == 0 {
            break;
        }
        let (k, v) = item?;
        let id = k.value();
        let still_queued = decode::<HistoryEntry>(v.value())
            .ok()
            .map(|h| outbox_t.get((h.receiver.as_str(), id)))
            .transpose()?
            .flatten()
            .is_some();
        if !still_queued {
            drop_ids.push(id);
            excess -= 1;
        }
    }
    for id in drop_ids {
        history_t.remove(id)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
