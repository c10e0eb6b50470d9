//! The guarded maintenance operations as a whole (the cluster's state, the guard, the
//! operation), so that `etcd-monitor-ctl` and the exporter's maintenance API do the same
//! checks in the same order whoever asks. Defragmentation is [`crate::defrag`].

use std::path::Path;

use common::etcd::EtcdConfig;

use crate::cluster::{self, ClusterView};
use crate::guard;
use crate::ops::{self, AlarmLine, Compacted, OpError};
use crate::snapshot::{self, Saved, SnapshotError};

async fn view(cfg: &EtcdConfig) -> Result<ClusterView, OpError> {
    Ok(cluster::gather(cfg, cluster::default_deadline(cfg)).await?)
}

/// Physical compaction to the current revision minus `retain`.
pub async fn compact(cfg: &EtcdConfig, retain: u64) -> Result<Compacted, OpError> {
    let mut c = ops::connect(cfg).await?;
    ops::compact(&mut c, retain).await
}

/// Disarms every raised alarm; NOSPACE only once space has been freed (the guard), unless
/// `force`. Returns what was disarmed.
pub async fn disarm(cfg: &EtcdConfig, force: bool) -> Result<Vec<AlarmLine>, OpError> {
    let view = view(cfg).await?;
    if !force {
        guard::disarm(&view)?;
    }
    let mut c = ops::connect(cfg).await?;
    let alarms = ops::alarms(&mut c).await?;
    let done = ops::disarm(&mut c, &alarms).await?;
    Ok(ops::alarm_lines(&view, &done))
}

/// A snapshot from one healthy member (a follower when one answers) into `file`.
pub async fn snapshot(cfg: &EtcdConfig, file: &Path) -> Result<Saved, OpError> {
    let view = view(cfg).await?;
    let (member, endpoint) = snapshot::pick_member(&view).ok_or(SnapshotError::NoMember)?;
    Ok(snapshot::save(cfg, &member, &endpoint, file).await?)
}
