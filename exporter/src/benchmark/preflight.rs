//! Before a run: the facts the budget rests on, gathered from every member. The member
//! list and the alarms come from any configured endpoint; each member's database size
//! from its own `Status`, and its quota from `etcd_server_quota_backend_bytes` on its own
//! `/metrics` (the quota is not in `Status`). A member that does not answer `Status` makes
//! the check fail: its database could be the fullest.

use common::etcd::EtcdConfig;
use tokio::time::Instant;

use super::budget::{ClusterSpace, MemberSpace, Quota};
use crate::etcd as rpc;

/// The name of the quota gauge on a member's `/metrics`.
const QUOTA_METRIC: &str = "etcd_server_quota_backend_bytes";

/// The cluster's quota, database sizes and alarms, before `deadline`.
pub async fn gather(etcd: &EtcdConfig, deadline: Instant) -> Result<ClusterSpace, String> {
    let mut client = None;
    let mut errors = Vec::new();
    for url in etcd.endpoints.iter().map(common::etcd::endpoint_str) {
        match rpc::connect(etcd, &url, deadline).await {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(e) => errors.push(e),
        }
    }
    let Some(mut client) = client else {
        return Err(errors.join("; "));
    };
    let members = rpc::member_list(&mut client, deadline).await?;
    let alarms = rpc::alarms(&mut client, deadline).await?;
    let http = etcd
        .http_client()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let per_member = members.iter().map(|m| {
        let http = &http;
        async move {
            let Some(url) = m.client_urls.first() else {
                return Err(format!("member {} has not started (no client URL)", m.name));
            };
            let mut c = rpc::connect(etcd, url, deadline).await?;
            let status = rpc::status(&mut c, deadline)
                .await
                .map_err(|e| format!("member {}: {e}", m.name))?;
            // The quota is best effort: a member whose /metrics is out of reach still
            // has its database size counted.
            let quota = match crate::scrape::metrics(http, url, deadline).await {
                Ok(exp) => exp
                    .sum(QUOTA_METRIC, |_| true)
                    .filter(|q| q.is_finite() && *q > 0.0)
                    .map(|q| q as u64),
                Err(e) => {
                    tracing::debug!(member = %m.name, error = %e, "no quota from /metrics");
                    None
                }
            };
            Ok((
                MemberSpace {
                    name: m.name.clone(),
                    db_size: u64::try_from(status.db_size).unwrap_or(0),
                },
                quota,
            ))
        }
    });
    let answers = futures::future::join_all(per_member).await;
    let mut spaces = Vec::with_capacity(answers.len());
    let mut quotas = Vec::new();
    for a in answers {
        let (space, quota) = a?;
        spaces.push(space);
        quotas.extend(quota);
    }
    let name_of = |id: u64| {
        members
            .iter()
            .find(|m| m.id == id)
            .map_or_else(|| format!("{id:x}"), |m| m.name.clone())
    };
    Ok(ClusterSpace {
        quota: quotas
            .into_iter()
            .min()
            .map_or(Quota::AssumedDefault, Quota::Reported),
        members: spaces,
        alarms: alarms
            .into_iter()
            .map(|(id, alarm)| (name_of(id), alarm))
            .collect(),
    })
}
