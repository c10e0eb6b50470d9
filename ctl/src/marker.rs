//! The maintenance marker: a leased key that says "maintenance is running on this cluster",
//! written by ctl (or the exporter's maintenance API) and read by the exporter, which
//! exports `etcd_cluster_maintenance{operation}` so that the rules can tell a planned leader
//! transfer or a member briefly busy from a fault.
//!
//! Constraints, in order:
//! - The marker must disappear by itself when its holder dies: it is attached to a lease of
//!   [`TTL_SECS`] kept alive every [`KEEPALIVE_EVERY`] by a task. A guard dropped without
//!   [`MarkerGuard::release`] stops the keep-alive, and the lease expires within the TTL.
//!   [`MarkerGuard::release`] revokes the lease, which deletes the key at once.
//! - One task owns the lease: it keeps it alive, rewrites the value on
//!   [`MarkerGuard::update`], and if the lease was lost (the holder was cut off longer than
//!   the TTL) grants a new one and writes the marker again.
//! - The exporter must not trust the value: [`parse`] bounds its size and fields and ignores
//!   fields it does not know, so that a newer writer does not break an older reader.
//!
//! Format: key [`MARKER_KEY`], value JSON
//! `{"operation": "defrag", "member": "m2", "by": "host/1234", "started_unix_ms": 1700000000000}`
//! (`member` absent when the operation is about the whole cluster).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, PutOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// Every key etcd-monitor writes lives under this prefix.
pub const PREFIX: &str = "/etcd-monitor/";
/// The marker's key.
pub const MARKER_KEY: &str = "/etcd-monitor/maintenance";
/// The lease's TTL: how long a marker outlives a holder that died.
pub const TTL_SECS: i64 = 15;
/// How often the holder renews the lease.
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(5);
/// The largest marker value [`parse`] accepts.
pub const MAX_VALUE_BYTES: usize = 4096;
const MAX_FIELD_CHARS: usize = 256;

/// What maintenance is running. Serialized as its name; names this build does not know
/// are kept as [`Operation::Other`], so an older exporter still shows a newer ctl's marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Operation {
    Defrag,
    Compact,
    RecoverNospace,
    Snapshot,
    AlarmDisarm,
    MemberChange,
    Other(String),
}

impl Operation {
    pub fn as_str(&self) -> &str {
        match self {
            Operation::Defrag => "defrag",
            Operation::Compact => "compact",
            Operation::RecoverNospace => "recover-nospace",
            Operation::Snapshot => "snapshot",
            Operation::AlarmDisarm => "alarm-disarm",
            Operation::MemberChange => "member-change",
            Operation::Other(s) => s,
        }
    }
}

impl From<String> for Operation {
    fn from(s: String) -> Self {
        match s.as_str() {
            "defrag" => Operation::Defrag,
            "compact" => Operation::Compact,
            "recover-nospace" => Operation::RecoverNospace,
            "snapshot" => Operation::Snapshot,
            "alarm-disarm" => Operation::AlarmDisarm,
            "member-change" => Operation::MemberChange,
            _ => Operation::Other(s),
        }
    }
}

impl From<Operation> for String {
    fn from(o: Operation) -> Self {
        o.as_str().to_owned()
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The marker's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub operation: Operation,
    /// The member being worked on, when the operation goes member by member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Who runs it: `host/pid` for ctl, the caller for the HTTP API.
    pub by: String,
    pub started_unix_ms: u64,
}

impl Marker {
    /// A marker for `operation` started now by `by`.
    pub fn new(operation: Operation, by: impl Into<String>) -> Self {
        Marker {
            operation,
            member: None,
            by: by.into(),
            started_unix_ms: now_unix_ms(),
        }
    }

    /// `host/pid` of this process, for [`Marker::by`].
    pub fn this_process() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".to_owned());
        format!("{host}/{}", std::process::id())
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Reads a marker value (for the exporter): at most [`MAX_VALUE_BYTES`], unknown fields
/// ignored, fields bounded and free of control characters.
pub fn parse(value: &[u8]) -> Result<Marker, String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "marker value of {} bytes is over the {MAX_VALUE_BYTES}-byte limit",
            value.len()
        ));
    }
    let m: Marker =
        serde_json::from_slice(value).map_err(|e| format!("marker value is not valid: {e}"))?;
    let check = |field: &str, v: &str, may_be_empty: bool| {
        if !may_be_empty && v.is_empty() {
            return Err(format!("marker field {field} is empty"));
        }
        if v.chars().count() > MAX_FIELD_CHARS {
            return Err(format!(
                "marker field {field} is longer than {MAX_FIELD_CHARS} characters"
            ));
        }
        if v.chars().any(char::is_control) {
            return Err(format!("marker field {field} holds control characters"));
        }
        Ok(())
    };
    check("operation", m.operation.as_str(), false)?;
    check("by", &m.by, true)?;
    if let Some(member) = &m.member {
        check("member", member, false)?;
    }
    Ok(m)
}

/// A marker could not be written or kept.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    #[error("cannot grant the marker's lease")]
    Grant(#[source] etcd_client::Error),
    #[error("cannot write the marker")]
    Put(#[source] etcd_client::Error),
    #[error("cannot revoke the marker's lease")]
    Revoke(#[source] etcd_client::Error),
    #[error("the marker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the marker's keep-alive task has stopped")]
    TaskGone,
}

enum Cmd {
    Update(Option<String>, oneshot::Sender<Result<(), MarkerError>>),
    Release(oneshot::Sender<Result<(), MarkerError>>),
}

/// A held marker. See the module notes for what dropping it does.
#[derive(Debug)]
pub struct MarkerGuard {
    tx: mpsc::Sender<Cmd>,
    marker: Marker,
    warnings: Warnings,
}

/// What went wrong in the keep-alive task (it has nobody to return errors to), for the
/// holder's report. At most [`MAX_WARNINGS`] are kept.
type Warnings = Arc<Mutex<Vec<String>>>;
const MAX_WARNINGS: usize = 10;

fn warn(w: &Warnings, msg: String) {
    if let Ok(mut v) = w.lock() {
        if v.len() < MAX_WARNINGS {
            v.push(msg);
        }
    }
}

/// Time allowed for one marker request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

async fn timed<T>(
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    wrap: fn(etcd_client::Error) -> MarkerError,
) -> Result<T, MarkerError> {
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| MarkerError::Timeout(REQUEST_TIMEOUT))?
        .map_err(wrap)
}

/// Grants a lease and writes `marker` under it; returns the lease.
async fn write(client: &mut Client, marker: &Marker) -> Result<i64, MarkerError> {
    let lease = timed(client.lease_grant(TTL_SECS, None), MarkerError::Grant)
        .await?
        .id();
    put(client, marker, lease).await?;
    Ok(lease)
}

async fn put(client: &mut Client, marker: &Marker, lease: i64) -> Result<(), MarkerError> {
    // Serializing a struct of strings and integers cannot fail.
    let value = serde_json::to_vec(marker).unwrap_or_default();
    timed(
        client.put(MARKER_KEY, value, Some(PutOptions::new().with_lease(lease))),
        MarkerError::Put,
    )
    .await
    .map(|_| ())
}

/// Writes `marker` under a fresh lease and keeps it alive until the guard is released or
/// dropped. `client` is cloned for the keep-alive task (clones share the connection).
pub async fn hold(client: &Client, marker: Marker) -> Result<MarkerGuard, MarkerError> {
    let mut client = client.clone();
    let lease = write(&mut client, &marker).await?;
    let (tx, rx) = mpsc::channel(4);
    let warnings = Warnings::default();
    tokio::spawn(keep(client, marker.clone(), lease, rx, warnings.clone()));
    Ok(MarkerGuard {
        tx,
        marker,
        warnings,
    })
}

impl MarkerGuard {
    /// Says which member is being worked on now (`None`: the cluster as a whole).
    pub async fn update(&mut self, member: Option<String>) -> Result<(), MarkerError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Cmd::Update(member.clone(), reply))
            .await
            .map_err(|_| MarkerError::TaskGone)?;
        answer.await.map_err(|_| MarkerError::TaskGone)??;
        self.marker.member = member;
        Ok(())
    }

    /// The marker as last written.
    pub fn marker(&self) -> &Marker {
        &self.marker
    }

    /// Problems the keep-alive task met and recovered from (or not), oldest first.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Revokes the lease: the marker is gone when this returns `Ok`.
    pub async fn release(self) -> Result<(), MarkerError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Cmd::Release(reply))
            .await
            .map_err(|_| MarkerError::TaskGone)?;
        answer.await.map_err(|_| MarkerError::TaskGone)?
    }
}

/// The keep-alive task: renews the lease every [`KEEPALIVE_EVERY`], applies updates, and
/// ends on release (revoking) or when the guard is dropped (leaving the lease to expire).
async fn keep(
    mut client: Client,
    mut marker: Marker,
    mut lease: i64,
    mut rx: mpsc::Receiver<Cmd>,
    warnings: Warnings,
) {
    let mut tick = tokio::time::interval(KEEPALIVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut keeper = None;
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return,
                Some(Cmd::Release(reply)) => {
                    let res = timed(client.lease_revoke(lease), MarkerError::Revoke).await.map(|_| ());
                    let _ = reply.send(res);
                    return;
                }
                Some(Cmd::Update(member, reply)) => {
                    marker.member = member;
                    let res = put(&mut client, &marker, lease).await;
                    let _ = reply.send(res);
                }
            },
            _ = tick.tick() => {
                match renew(&mut client, &mut keeper, lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        // The lease expired (we were cut off for longer than the TTL):
                        // the marker is gone, so write it again under a new lease.
                        keeper = None;
                        match write(&mut client, &marker).await {
                            Ok(l) => {
                                lease = l;
                                warn(&warnings, "the marker's lease expired; the marker was written again".into());
                            }
                            Err(e) => warn(&warnings, format!("the marker's lease expired and it could not be written again: {}", common::etcd::error_chain(&e))),
                        }
                    }
                    Err(e) => {
                        keeper = None;
                        warn(&warnings, format!("the marker's keep-alive failed (retrying): {}", common::etcd::error_chain(&e)));
                    }
                }
            }
        }
    }
}

type Keeper = (etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream);

/// One keep-alive round trip; `Ok(false)` when etcd says the lease no longer exists.
async fn renew(
    client: &mut Client,
    keeper: &mut Option<Keeper>,
    lease: i64,
) -> Result<bool, etcd_client::Error> {
    let round = async {
        if keeper.is_none() {
            *keeper = Some(client.lease_keep_alive(lease).await?);
        }
        let Some((k, stream)) = keeper.as_mut() else {
            return Ok(true);
        };
        k.keep_alive().await?;
        match stream.message().await? {
            Some(resp) => Ok(resp.ttl() > 0),
            None => Err(etcd_client::Error::WatchError(
                "keep-alive stream ended".into(),
            )),
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, round).await {
        Ok(r) => r,
        Err(_) => Err(etcd_client::Error::WatchError(
            "keep-alive timed out".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_round_trips() {
        let mut m = Marker::new(Operation::Defrag, "host/42");
        m.member = Some("m2".into());
        let json = serde_json::to_vec(&m).expect("json");
        assert_eq!(parse(&json), Ok(m));
        let whole = Marker::new(Operation::RecoverNospace, "10.0.0.1:5555");
        let text = serde_json::to_string(&whole).expect("json");
        assert!(text.contains(r#""operation":"recover-nospace""#), "{text}");
        assert!(!text.contains("member"), "{text}");
    }

    #[test]
    fn unknown_fields_and_operations_are_tolerated() {
        let m = parse(
            br#"{"operation":"rebalance","by":"x/1","started_unix_ms":5,"progress":{"done":2},"member":"m1"}"#,
        )
        .expect("parses");
        assert_eq!(m.operation, Operation::Other("rebalance".into()));
        assert_eq!(m.operation.as_str(), "rebalance");
        assert_eq!(m.member.as_deref(), Some("m1"));
        assert_eq!(m.started_unix_ms, 5);
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        let too_big = format!(
            r#"{{"operation":"defrag","by":"{}","started_unix_ms":1}}"#,
            "x".repeat(MAX_VALUE_BYTES)
        );
        for (value, want) in [
            (too_big.as_str(), "over the 4096-byte limit"),
            ("not json", "not valid"),
            (
                r#"{"by":"x","started_unix_ms":1}"#,
                "missing field `operation`",
            ),
            (
                r#"{"operation":"defrag","by":"x","started_unix_ms":-1}"#,
                "not valid",
            ),
            (
                r#"{"operation":"","by":"x","started_unix_ms":1}"#,
                "operation is empty",
            ),
            (
                r#"{"operation":"a\nb","by":"x","started_unix_ms":1}"#,
                "control characters",
            ),
            (
                r#"{"operation":"defrag","by":"x","member":"","started_unix_ms":1}"#,
                "member is empty",
            ),
        ] {
            let err = parse(value.as_bytes()).expect_err(value);
            assert!(err.contains(want), "{value}: {err}");
        }
        let long = format!(
            r#"{{"operation":"defrag","by":"{}","started_unix_ms":1}}"#,
            "y".repeat(300)
        );
        assert!(parse(long.as_bytes())
            .expect_err("long")
            .contains("longer than 256"));
    }

    #[test]
    fn this_process_names_host_and_pid() {
        let by = Marker::this_process();
        assert!(by.ends_with(&format!("/{}", std::process::id())), "{by}");
    }
}
