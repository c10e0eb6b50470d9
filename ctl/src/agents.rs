//! The members' free disk, from their etcd-monitor-agents, for the defragment's guard: a
//! defragment writes a copy of the database beside it, and ctl cannot see a member's disk,
//! but its agent can (`GET /api/v1/snapshot`: `filesystem.avail_bytes` of the data dir's
//! filesystem).

use std::collections::BTreeMap;
use std::time::Duration;

use common::remote::{get_body, AgentTarget};
use serde::Deserialize;

/// The largest snapshot accepted from an agent (the exporter's limit too).
const MAX_BODY: usize = 1024 * 1024;

/// The fields of an agent snapshot the guard reads.
#[derive(Deserialize)]
struct Snapshot {
    member: String,
    filesystem: Option<Filesystem>,
}

#[derive(Deserialize)]
struct Filesystem {
    avail_bytes: u64,
}

/// Free bytes on each member's data-dir filesystem, by member name (the name pinned in
/// the target, else the one its agent reports), asked of every agent at once within
/// `timeout`. An agent that does not answer with a snapshot that has its filesystem is an
/// error naming it: the operator asked for the check.
pub async fn free_disk(
    http: &reqwest::Client,
    targets: &[AgentTarget],
    timeout: Duration,
) -> Result<BTreeMap<String, u64>, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let answers = futures::future::join_all(targets.iter().map(|t| async move {
        let url = format!("{}/api/v1/snapshot", t.url);
        (t, get_body(http, &url, MAX_BODY, deadline).await)
    }))
    .await;
    let mut free = BTreeMap::new();
    for (t, answer) in answers {
        let (status, body) = answer.map_err(|e| format!("agent {}: {e}", t.display))?;
        if !status.is_success() {
            return Err(format!("agent {}: status {status}", t.display));
        }
        let s: Snapshot = serde_json::from_slice(&body)
            .map_err(|e| format!("agent {}: not an agent snapshot: {e}", t.display))?;
        let fs = s.filesystem.ok_or_else(|| {
            format!(
                "agent {}: its snapshot has no filesystem (it could not read the data dir's)",
                t.display
            )
        })?;
        free.insert(t.member.clone().unwrap_or(s.member), fs.avail_bytes);
    }
    Ok(free)
}
