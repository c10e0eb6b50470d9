//! Everything the exporter asks etcd over the v3 API: per-member connections, `Status`,
//! the member list, alarms and the timed probes. This is the only module that talks gRPC
//! to etcd.
//!
//! Connections are one per member URL (never load-balanced), because `Status` answers for
//! the member it is sent to. A member that cannot be connected to is retried with an
//! exponential backoff; every request runs against a deadline that the caller sets, so a
//! frozen member cannot hold up a cycle.
//!
//! Each live connection also carries a watch (on the maintenance marker's key, which
//! costs etcd nothing): when the member crashes, is killed or restarts, its end of the
//! connection closes, the watch's stream breaks, and the collector is woken to run a
//! cycle at once instead of at its next tick. A frozen or cut-off member breaks nothing
//! and is found by the next cycle's deadline.
//!
//! The same watches see the marker come and go between cycles: a maintenance shorter
//! than a cycle (a rolling defrag of small databases takes under a second) leaves no
//! marker for the next cycle to read, so the last marker a watch saw is kept for it
//! ([`Connections::take_marker_seen`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::etcd::{error_chain, EtcdConfig};
use etcd_client::{AlarmAction, AlarmType, Client, EventType, GetOptions};
use tokio::sync::Notify;
use tokio::time::{timeout_at, Instant};

use crate::model::{Alarm, MemberInfo, StatusFacts};

/// One line describing an etcd client error: the gRPC code and message and the root
/// cause (tonic's own `Display` buries it in debug output).
pub fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let mut msg = format!("{:?}: {}", s.code(), s.message());
            let mut src = std::error::Error::source(s);
            let mut root = None;
            while let Some(x) = src {
                root = Some(x.to_string());
                src = x.source();
            }
            if let Some(root) = root {
                if !msg.contains(&root) {
                    msg.push_str(": ");
                    msg.push_str(&root);
                }
            }
            msg
        }
        other => error_chain(other),
    }
}

/// The longest wait between two connection attempts to an unreachable member.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A cached connection is rebuilt after this many failed cycles in a row.
const REBUILD_AFTER_FAILURES: u32 = 3;

#[derive(Default)]
struct Slot {
    client: Option<Client>,
    last_error: Option<String>,
    failures: u32,
    next_attempt: Option<Instant>,
    sentinel: Option<Sentinel>,
}

/// Per-member connections, keyed by the member URL.
#[derive(Default)]
pub struct Connections {
    slots: HashMap<String, Slot>,
    /// Notified when a connection that was up breaks (see [`Sentinel`]).
    wake: Option<Arc<Notify>>,
    /// The last maintenance marker a [`Sentinel`] saw written since it was last taken.
    marker_seen: Arc<Mutex<Option<ctl::marker::Marker>>>,
}

/// A task watching one member's connection; aborted when dropped (with its connection's
/// slot, or when the connection is rebuilt).
struct Sentinel(tokio::task::AbortHandle);

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Sentinel {
    /// Watches the marker's key through `client`, keeps each marker written in `seen`,
    /// and notifies `wake` when the stream breaks. A watch that cannot be created (no read
    /// permission on the key, a learner) or that etcd cancels wakes nobody: only a stream
    /// that was up can say the connection went down.
    fn start(
        url: &str,
        mut client: Client,
        wake: Arc<Notify>,
        seen: Arc<Mutex<Option<ctl::marker::Marker>>>,
    ) -> Self {
        let url = url.to_owned();
        let task = tokio::spawn(async move {
            let Ok(mut stream) = client.watch(ctl::marker::MARKER_KEY, None).await else {
                return;
            };
            match stream.message().await {
                Ok(Some(r)) if r.created() && !r.canceled() => {}
                _ => return,
            }
            let why = loop {
                match stream.message().await {
                    Ok(Some(r)) if r.canceled() => return,
                    // The marker changed, or a progress notice.
                    Ok(Some(r)) => {
                        let written = r
                            .events()
                            .iter()
                            .rev()
                            .filter(|e| e.event_type() == EventType::Put)
                            .filter_map(|e| e.kv())
                            .find_map(|kv| ctl::marker::parse(kv.value()).ok());
                        if let Some(m) = written {
                            if let Ok(mut slot) = seen.lock() {
                                *slot = Some(m);
                            }
                        }
                    }
                    Ok(None) => break "the stream ended".to_owned(),
                    Err(e) => break describe(&e),
                }
            };
            tracing::debug!(member = %url, why, "connection to the member broke: collecting now");
            wake.notify_one();
        });
        Sentinel(task.abort_handle())
    }

    fn finished(&self) -> bool {
        self.0.is_finished()
    }
}

/// A connection for one cycle, or why there is none.
pub enum Lease {
    Ready(Box<Client>),
    Connect,
    /// Wait this long before the next attempt; the last error seen.
    Backoff(Duration, Option<String>),
}

impl Connections {
    /// Connections whose breaking notifies `wake`.
    pub fn waking(wake: Arc<Notify>) -> Self {
        Connections {
            slots: HashMap::new(),
            wake: Some(wake),
            marker_seen: Arc::default(),
        }
    }

    /// The last maintenance marker the connections' watches saw written since the last
    /// call (a maintenance may begin and end between two cycles).
    pub fn take_marker_seen(&self) -> Option<ctl::marker::Marker> {
        self.marker_seen.lock().ok().and_then(|mut m| m.take())
    }

    /// What to do for `url` in this cycle.
    pub fn lease(&mut self, url: &str, now: Instant) -> Lease {
        let slot = self.slots.entry(url.to_owned()).or_default();
        if let Some(c) = &slot.client {
            return Lease::Ready(Box::new(c.clone()));
        }
        match slot.next_attempt {
            Some(at) if at > now => Lease::Backoff(at - now, slot.last_error.clone()),
            _ => Lease::Connect,
        }
    }

    /// Records the outcome of a cycle for `url`. `client` is the connection used (or newly
    /// made), `ok` whether the member answered. A cycle that skipped the member because
    /// of the backoff is not an outcome and must not be settled.
    pub fn settle(&mut self, url: &str, client: Option<Client>, error: Option<&str>, now: Instant) {
        let slot = self.slots.entry(url.to_owned()).or_default();
        slot.last_error = error.map(str::to_owned);
        if error.is_none() {
            slot.failures = 0;
            slot.next_attempt = None;
            if client.is_some() {
                slot.client = client;
            }
            // A member that answers again (or for the first time) is watched again.
            if let (Some(c), Some(wake)) = (&slot.client, &self.wake) {
                if slot.sentinel.as_ref().is_none_or(Sentinel::finished) {
                    slot.sentinel = Some(Sentinel::start(
                        url,
                        c.clone(),
                        wake.clone(),
                        self.marker_seen.clone(),
                    ));
                }
            }
            return;
        }
        slot.failures = slot.failures.saturating_add(1);
        match client {
            Some(c) if slot.failures < REBUILD_AFTER_FAILURES => slot.client = Some(c),
            _ => {
                slot.client = None;
                slot.sentinel = None;
                let exp = slot.failures.min(5);
                let backoff = Duration::from_millis(500 * (1u64 << exp)).min(MAX_BACKOFF);
                slot.next_attempt = Some(now + backoff);
            }
        }
    }

    /// Any connected client, rotating by `turn`, for cluster-wide requests.
    pub fn any(&self, turn: usize) -> Option<(String, Client)> {
        let mut ready: Vec<(&String, &Client)> = self
            .slots
            .iter()
            .filter_map(|(u, s)| s.client.as_ref().map(|c| (u, c)))
            .collect();
        ready.sort_by(|a, b| a.0.cmp(b.0));
        if ready.is_empty() {
            return None;
        }
        let (u, c) = ready[turn % ready.len()];
        Some((u.clone(), c.clone()))
    }

    /// Forgets URLs no longer in use.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.slots.retain(|u, _| keep(u));
    }
}

fn deadline_error(what: &str) -> String {
    format!("{what} timed out")
}

/// Connects to one member URL before `deadline`.
pub async fn connect(cfg: &EtcdConfig, url: &str, deadline: Instant) -> Result<Client, String> {
    match timeout_at(deadline, cfg.connect(url)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("cannot connect to {url}: {}", describe(&e))),
        Err(_) => Err(format!("cannot connect to {url}: timed out")),
    }
}

/// The member's own `Status`.
pub async fn status(client: &mut Client, deadline: Instant) -> Result<StatusFacts, String> {
    let resp = timeout_at(deadline, client.status())
        .await
        .map_err(|_| deadline_error("status"))?
        .map_err(|e| format!("status: {}", describe(&e)))?;
    let header = resp
        .header()
        .ok_or_else(|| "status: the answer has no header".to_owned())?;
    Ok(StatusFacts {
        cluster_id: header.cluster_id(),
        member_id: header.member_id(),
        version: resp.version().to_owned(),
        leader: resp.leader(),
        raft_term: resp.raft_term(),
        raft_index: resp.raft_index(),
        raft_applied_index: resp.raft_applied_index(),
        revision: header.revision(),
        db_size: resp.db_size(),
        db_size_in_use: resp.raft_used_db_size(),
        is_learner: resp.is_learner(),
        errors: resp.errors().to_vec(),
    })
}

/// The member list as this member knows it.
pub async fn member_list(
    client: &mut Client,
    deadline: Instant,
) -> Result<Vec<MemberInfo>, String> {
    let resp = timeout_at(deadline, client.member_list())
        .await
        .map_err(|_| deadline_error("member list"))?
        .map_err(|e| format!("member list: {}", describe(&e)))?;
    Ok(resp
        .members()
        .iter()
        .map(|m| MemberInfo {
            id: m.id(),
            // A member added but not started yet has no name.
            name: if m.name().is_empty() {
                format!("{:x}", m.id())
            } else {
                m.name().to_owned()
            },
            client_urls: m.client_urls().to_vec(),
            peer_urls: m.peer_urls().to_vec(),
            is_learner: m.is_learner(),
        })
        .collect())
}

/// The cluster's active alarms (member ID, alarm).
pub async fn alarms(client: &mut Client, deadline: Instant) -> Result<Vec<(u64, Alarm)>, String> {
    let resp = timeout_at(
        deadline,
        client.alarm(AlarmAction::Get, AlarmType::None, None),
    )
    .await
    .map_err(|_| deadline_error("alarm list"))?
    .map_err(|e| format!("alarm list: {}", describe(&e)))?;
    Ok(resp
        .alarms()
        .iter()
        .filter_map(|a| match a.alarm() {
            AlarmType::Nospace => Some((a.member_id(), Alarm::Nospace)),
            AlarmType::Corrupt => Some((a.member_id(), Alarm::Corrupt)),
            AlarmType::None => None,
        })
        .collect())
}

/// Deletes every key under `prefix` (through any endpoint).
pub async fn delete_prefix(cfg: &EtcdConfig, prefix: &str) -> Result<(), String> {
    let mut c = cfg.connect_all().await.map_err(|e| describe(&e))?;
    c.delete(
        prefix,
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await
    .map(|_| ())
    .map_err(|e| describe(&e))
}

/// Times one read of `key` (linearizable or serializable).
pub async fn probe_read(
    client: &mut Client,
    key: &str,
    serializable: bool,
    deadline: Instant,
) -> Result<Duration, String> {
    let opts = serializable.then(|| GetOptions::new().with_serializable());
    let started = std::time::Instant::now();
    timeout_at(deadline, client.get(key, opts))
        .await
        .map_err(|_| deadline_error("read probe"))?
        .map_err(|e| format!("read probe: {}", describe(&e)))?;
    Ok(started.elapsed())
}

/// The value of `key`, if it exists (a serializable read: any member's view will do).
pub async fn get_value(
    client: &mut Client,
    key: &str,
    deadline: Instant,
) -> Result<Option<Vec<u8>>, String> {
    let resp = timeout_at(
        deadline,
        client.get(key, Some(GetOptions::new().with_serializable())),
    )
    .await
    .map_err(|_| deadline_error("get"))?
    .map_err(|e| format!("get {key}: {}", describe(&e)))?;
    Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
}

/// Times one write of `value` to `key`.
pub async fn probe_write(
    client: &mut Client,
    key: &str,
    value: String,
    deadline: Instant,
) -> Result<Duration, String> {
    let started = std::time::Instant::now();
    timeout_at(deadline, client.put(key, value, None))
        .await
        .map_err(|_| deadline_error("write probe"))?
        .map_err(|e| format!("write probe: {}", describe(&e)))?;
    Ok(started.elapsed())
}
