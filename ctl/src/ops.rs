//! The operations: each an async function over an etcd client (or the config and a
//! [`ClusterView`]) returning a typed result. Guards are asked by the callers that offer
//! `--force`; nothing here prints.

use common::etcd::{error_chain, EtcdConfig};
use etcd_client::{
    AlarmAction, AlarmOptions, Client, CompactionOptions, Compare, CompareOp, DeleteOptions,
    GetOptions, KeyValue, MemberAddOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use serde::Serialize;

use crate::cluster::{Alarm, AlarmKind, ClusterView, MemberInfo};
use crate::guard::Refusal;

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("refused: {0} (--force to do it anyway)")]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Gather(#[from] crate::cluster::GatherError),
    #[error("{what}: {message}")]
    Etcd { what: &'static str, message: String },
    #[error("no member named {0:?}")]
    NoSuchMember(String),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// The agents could not tell the members' free disk.
    #[error("{0} (without --agent the free disk is not checked)")]
    Agent(String),
}

/// Maps an etcd error for operation `what`.
pub fn etcd(what: &'static str) -> impl Fn(etcd_client::Error) -> OpError {
    move |e| OpError::Etcd {
        what,
        message: error_chain(&e),
    }
}

/// A key and value as printed (bytes shown as UTF-8, invalid sequences replaced).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kv {
    pub key: String,
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    /// Hex lease id, when the key has one.
    pub lease: Option<String>,
}

impl From<&KeyValue> for Kv {
    fn from(kv: &KeyValue) -> Self {
        Kv {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: (kv.lease() != 0).then(|| lease_hex(kv.lease())),
        }
    }
}

/// A lease id as etcdctl prints it.
pub fn lease_hex(id: i64) -> String {
    format!("{:x}", id as u64)
}

/// Parses a lease id as etcdctl prints it (hex).
pub fn parse_lease(raw: &str) -> Result<i64, String> {
    u64::from_str_radix(raw.trim_start_matches("0x"), 16)
        .map(|v| v as i64)
        .map_err(|_| format!("{raw:?} is not a lease ID (hex, as `lease grant` prints it)"))
}

#[derive(Debug, Clone, Serialize)]
pub struct GetResult {
    pub revision: i64,
    pub kvs: Vec<Kv>,
}

fn revision(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map(|h| h.revision()).unwrap_or_default()
}

pub async fn get(c: &mut Client, key: &str, prefix: bool) -> Result<GetResult, OpError> {
    let opts = prefix.then(|| GetOptions::new().with_prefix());
    let r = c.get(key, opts).await.map_err(etcd("get"))?;
    Ok(GetResult {
        revision: revision(r.header()),
        kvs: r.kvs().iter().map(Kv::from).collect(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct PutResult {
    pub revision: i64,
}

pub async fn put(
    c: &mut Client,
    key: &str,
    value: &str,
    lease: Option<i64>,
) -> Result<PutResult, OpError> {
    let opts = lease.map(|l| PutOptions::new().with_lease(l));
    let r = c.put(key, value, opts).await.map_err(etcd("put"))?;
    Ok(PutResult {
        revision: revision(r.header()),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct DelResult {
    pub revision: i64,
    pub deleted: i64,
}

pub async fn del(c: &mut Client, key: &str, prefix: bool) -> Result<DelResult, OpError> {
    let opts = prefix.then(|| DeleteOptions::new().with_prefix());
    let r = c.delete(key, opts).await.map_err(etcd("del"))?;
    Ok(DelResult {
        revision: revision(r.header()),
        deleted: r.deleted(),
    })
}

/// The outcome of a compare-and-swap.
#[derive(Debug, Clone, Serialize)]
pub struct CasResult {
    pub swapped: bool,
    pub revision: i64,
    /// The value found when not swapped (`None`: the key does not exist).
    pub current: Option<String>,
}

/// Sets `key` to `new` if its value is `expected`, in one transaction.
pub async fn cas(
    c: &mut Client,
    key: &str,
    expected: &str,
    new: &str,
) -> Result<CasResult, OpError> {
    let txn = Txn::new()
        .when([Compare::value(key, CompareOp::Equal, expected)])
        .and_then([TxnOp::put(key, new, None)])
        .or_else([TxnOp::get(key, None)]);
    let r = c.txn(txn).await.map_err(etcd("cas"))?;
    let current = if r.succeeded() {
        None
    } else {
        r.op_responses().iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            _ => None,
        })
    };
    Ok(CasResult {
        swapped: r.succeeded(),
        revision: revision(r.header()),
        current,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct LeaseInfo {
    pub id: String,
    /// Seconds left (-1: expired or unknown).
    pub ttl: i64,
    pub granted_ttl: i64,
    pub keys: Vec<String>,
}

pub async fn lease_grant(c: &mut Client, ttl: i64) -> Result<LeaseInfo, OpError> {
    let r = c
        .lease_grant(ttl, None)
        .await
        .map_err(etcd("lease grant"))?;
    if !r.error().is_empty() {
        return Err(OpError::Etcd {
            what: "lease grant",
            message: r.error().to_owned(),
        });
    }
    Ok(LeaseInfo {
        id: lease_hex(r.id()),
        ttl: r.ttl(),
        granted_ttl: r.ttl(),
        keys: vec![],
    })
}

pub async fn lease_revoke(c: &mut Client, id: i64) -> Result<(), OpError> {
    c.lease_revoke(id).await.map_err(etcd("lease revoke"))?;
    Ok(())
}

pub async fn lease_ttl(c: &mut Client, id: i64) -> Result<LeaseInfo, OpError> {
    let r = c
        .lease_time_to_live(
            id,
            Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await
        .map_err(etcd("lease ttl"))?;
    Ok(LeaseInfo {
        id: lease_hex(r.id()),
        ttl: r.ttl(),
        granted_ttl: r.granted_ttl(),
        keys: r
            .keys()
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Compacted {
    /// The revision compacted to (everything older is gone).
    pub revision: i64,
    pub current_revision: i64,
}

/// Physical compaction to the current revision minus `retain`.
pub async fn compact(c: &mut Client, retain: u64) -> Result<Compacted, OpError> {
    let current = revision(
        c.get("compact-probe", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(etcd("compact"))?
            .header(),
    );
    let target = current
        .saturating_sub(i64::try_from(retain).unwrap_or(i64::MAX))
        .max(1);
    c.compact(target, Some(CompactionOptions::new().with_physical()))
        .await
        .map_err(etcd("compact"))?;
    Ok(Compacted {
        revision: target,
        current_revision: current,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct AlarmLine {
    pub member_id: String,
    pub member: String,
    pub alarm: AlarmKind,
}

pub fn alarm_lines(view: &ClusterView, alarms: &[Alarm]) -> Vec<AlarmLine> {
    alarms
        .iter()
        .map(|a| AlarmLine {
            member_id: format!("{:x}", a.member_id),
            member: view.name_of(a.member_id),
            alarm: a.kind,
        })
        .collect()
}

/// Deactivates every raised alarm; returns those disarmed.
pub async fn disarm(c: &mut Client, alarms: &[Alarm]) -> Result<Vec<Alarm>, OpError> {
    let mut done = Vec::new();
    for a in alarms {
        let Some(t) = a.kind.to_type() else {
            continue;
        };
        let mut opts = AlarmOptions::new();
        opts.with_member(a.member_id);
        c.alarm(AlarmAction::Deactivate, t, Some(opts))
            .await
            .map_err(etcd("alarm disarm"))?;
        done.push(a.clone());
    }
    Ok(done)
}

/// The raised alarms right now.
pub async fn alarms(c: &mut Client) -> Result<Vec<Alarm>, OpError> {
    crate::cluster::list_alarms(c)
        .await
        .map_err(|message| OpError::Etcd {
            what: "alarm list",
            message,
        })
}

fn info(m: &etcd_client::Member) -> MemberInfo {
    MemberInfo {
        id: m.id(),
        name: m.name().to_owned(),
        peer_urls: m.peer_urls().to_vec(),
        client_urls: m.client_urls().to_vec(),
        is_learner: m.is_learner(),
    }
}

pub async fn member_list(c: &mut Client) -> Result<Vec<MemberInfo>, OpError> {
    let r = c.member_list().await.map_err(etcd("member list"))?;
    Ok(r.members().iter().map(info).collect())
}

/// Adds a member; returns it and the `ETCD_INITIAL_CLUSTER` it must start with.
#[derive(Debug, Clone, Serialize)]
pub struct Added {
    pub member: MemberInfo,
    pub initial_cluster: String,
}

pub async fn member_add(
    c: &mut Client,
    name: &str,
    peer_urls: &[String],
    learner: bool,
) -> Result<Added, OpError> {
    let mut opts = MemberAddOptions::new();
    if learner {
        opts = opts.with_is_learner();
    }
    let r = c
        .member_add(peer_urls, Some(opts))
        .await
        .map_err(etcd("member add"))?;
    let added = r.member().map(info).ok_or(OpError::Etcd {
        what: "member add",
        message: "the answer names no member".into(),
    })?;
    let mut parts = Vec::new();
    for m in r.member_list() {
        let n = if m.id() == added.id { name } else { m.name() };
        for u in m.peer_urls() {
            if !n.is_empty() {
                parts.push(format!("{n}={u}"));
            }
        }
    }
    Ok(Added {
        member: MemberInfo {
            name: name.to_owned(),
            ..added
        },
        initial_cluster: parts.join(","),
    })
}

/// The member of `view` named `name` (or with hex id `name`).
pub fn resolve(view: &ClusterView, name: &str) -> Result<u64, OpError> {
    view.by_name(name)
        .map(|m| m.info.id)
        .ok_or_else(|| OpError::NoSuchMember(name.to_owned()))
}

pub async fn member_remove(c: &mut Client, id: u64) -> Result<(), OpError> {
    c.member_remove(id).await.map_err(etcd("member remove"))?;
    Ok(())
}

pub async fn member_promote(c: &mut Client, id: u64) -> Result<(), OpError> {
    c.member_promote(id).await.map_err(etcd("member promote"))?;
    Ok(())
}

/// A client to the first configured endpoint that answers.
pub async fn connect(cfg: &EtcdConfig) -> Result<Client, OpError> {
    crate::cluster::connect_any(cfg)
        .await
        .map_err(|message| OpError::Etcd {
            what: "connect",
            message,
        })
}
