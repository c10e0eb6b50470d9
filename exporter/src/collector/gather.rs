//! Gathering, the cycle's only I/O: every member asked over its own connection for
//! `Status`, then (concurrently) the member list, alarms, two read probes, `/metrics` and
//! `/health`; one write probe; every agent's snapshot. Everything runs against the one
//! deadline the cycle passes in, so a frozen member costs at most that.
//!
//! Nothing here interprets an answer beyond decoding it; [`super::observe`] does that.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcd_client::Client;
use tokio::time::Instant;

use crate::agents::{self, AgentReport, AgentTarget};
use crate::etcd::{self as rpc, Lease};
use crate::model::{Alarm, MemberInfo, StatusFacts};
use crate::scrape;
use crate::textformat::Exposition;

use super::ErrorSource;

/// A member to ask in this cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `None` for a configured endpoint before any member list is known: who answers
    /// there is learnt from its `Status`.
    pub info: Option<MemberInfo>,
    /// `None` for a member added to the list but not started (it has no client URL).
    pub url: Option<String>,
}

/// Whether two endpoint URLs name the same place (ignoring a trailing slash and case).
fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// The members to ask: every member of the known list, at a configured endpoint when the
/// member advertises it (an endpoint behind a load balancer answers as any member, so it
/// is used only for the member that names it), else at its first client URL. Before any
/// list is known, the configured endpoints themselves.
pub fn plan(known: &[MemberInfo], configured: &[String]) -> Vec<Target> {
    let mut targets: Vec<Target> = known
        .iter()
        .map(|m| Target {
            info: Some(m.clone()),
            url: configured
                .iter()
                .find(|u| m.client_urls.iter().any(|c| same_url(c, u)))
                .or_else(|| m.client_urls.first())
                .cloned(),
        })
        .collect();
    if known.is_empty() {
        for url in configured {
            if !targets.iter().any(|t| t.url.as_ref() == Some(url)) {
                targets.push(Target {
                    info: None,
                    url: Some(url.clone()),
                });
            }
        }
    }
    targets
}

/// Why a member gave no `Status` in this cycle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// In the member list without a client URL: added, not started.
    #[error("member has not started (no client URL)")]
    NotStarted,
    /// In the member list, but the list arrived after this cycle's targets were chosen.
    #[error("new member, not queried yet")]
    NotQueried,
    /// Connecting failed recently; the next attempt waits for the backoff.
    #[error("{} (next attempt in {}ms)", .last.as_deref().unwrap_or("not connected"), .retry_in.as_millis())]
    BackingOff {
        last: Option<String>,
        retry_in: Duration,
    },
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Status(String),
    /// The endpoint answered as another member (an endpoint shared by several members).
    #[error("{url} answered as member {answered:x}, not {expected:x}")]
    Impersonated {
        url: String,
        answered: u64,
        expected: u64,
    },
}

impl MemberError {
    /// The `source` this error counts under; `None` for what is not a collection error.
    pub fn source(&self) -> Option<ErrorSource> {
        match self {
            MemberError::NotStarted | MemberError::NotQueried => None,
            MemberError::BackingOff { .. } | MemberError::Connect(_) => Some(ErrorSource::Connect),
            MemberError::Status(_) | MemberError::Impersonated { .. } => Some(ErrorSource::Status),
        }
    }

    /// Whether the connection was tried in this cycle (so its outcome settles it).
    pub fn attempted(&self) -> bool {
        !matches!(
            self,
            MemberError::NotStarted | MemberError::NotQueried | MemberError::BackingOff { .. }
        )
    }
}

/// What a member answered after its `Status`.
#[derive(Debug, Clone)]
pub struct Answers {
    pub status: StatusFacts,
    pub members: Result<Vec<MemberInfo>, String>,
    /// Asked of one member per cycle (the alarm list goes through raft).
    pub alarms: Option<Result<Vec<(u64, Alarm)>, String>>,
    pub read_linearizable: Result<Duration, String>,
    pub read_serializable: Result<Duration, String>,
    pub metrics: Result<Arc<Exposition>, String>,
    pub health: Result<bool, String>,
}

/// One member's part of the cycle.
pub struct MemberAnswers {
    pub target: Target,
    /// The connection used or made, to keep for the next cycle.
    pub client: Option<Client>,
    pub outcome: Result<Answers, MemberError>,
}

/// The write probe: where it went and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteProbe {
    pub url: String,
    pub result: Result<Duration, String>,
}

/// Everything one cycle gathered.
pub struct Gathered {
    pub members: Vec<MemberAnswers>,
    pub write: Option<WriteProbe>,
    /// The maintenance marker's value (`None` inside: no marker), read through the
    /// write probe's connection; `None` when there was none.
    pub marker: Option<Result<Option<Vec<u8>>, String>>,
    pub agents: Vec<(AgentTarget, Result<AgentReport, String>)>,
}

/// What gathering needs besides the targets.
pub struct Reach<'a> {
    pub etcd: &'a common::etcd::EtcdConfig,
    /// For members' `/metrics` and `/health`, with the etcd TLS settings.
    pub http: &'a reqwest::Client,
    /// For the agents (no etcd client certificate).
    pub agent_http: &'a reqwest::Client,
    pub agents: &'a [AgentTarget],
    pub probe_key: &'a str,
}

/// Asks every target (each under its lease) and every agent, and times one write through
/// `writer`, all before `deadline`. The alarm list is asked of `targets[alarm_target]`.
pub async fn gather(
    reach: &Reach<'_>,
    targets: Vec<(Target, Lease)>,
    alarm_target: usize,
    writer: Option<(String, Client)>,
    deadline: Instant,
) -> Gathered {
    let members = targets
        .into_iter()
        .enumerate()
        .map(|(i, (target, lease))| member(reach, target, lease, i == alarm_target, deadline));
    let marker_client = writer.as_ref().map(|(_, c)| c.clone());
    let marker = async {
        let mut client = marker_client?;
        Some(rpc::get_value(&mut client, ctl::marker::MARKER_KEY, deadline).await)
    };
    let write = async {
        let (url, mut client) = writer?;
        let value = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
            .to_string();
        let result = rpc::probe_write(&mut client, reach.probe_key, value, deadline).await;
        Some(WriteProbe { url, result })
    };
    let agents = reach.agents.iter().map(|t| async move {
        (
            t.clone(),
            agents::fetch(reach.agent_http, t, deadline).await,
        )
    });
    let (members, write, marker, agents) = tokio::join!(
        futures::future::join_all(members),
        write,
        marker,
        futures::future::join_all(agents)
    );
    Gathered {
        members,
        write,
        marker,
        agents,
    }
}

async fn member(
    reach: &Reach<'_>,
    target: Target,
    lease: Lease,
    ask_alarms: bool,
    deadline: Instant,
) -> MemberAnswers {
    let failed = |target, client, e| MemberAnswers {
        target,
        client,
        outcome: Err(e),
    };
    let Some(url) = target.url.clone() else {
        return failed(target, None, MemberError::NotStarted);
    };
    let mut client = match lease {
        Lease::Ready(c) => *c,
        Lease::Connect => match rpc::connect(reach.etcd, &url, deadline).await {
            Ok(c) => c,
            Err(e) => return failed(target, None, MemberError::Connect(e)),
        },
        Lease::Backoff(retry_in, last) => {
            return failed(target, None, MemberError::BackingOff { last, retry_in })
        }
    };
    let status = match rpc::status(&mut client, deadline).await {
        Ok(s) => s,
        Err(e) => return failed(target, Some(client), MemberError::Status(e)),
    };
    let (mut c1, mut c2, mut c3, mut c4) = (
        client.clone(),
        client.clone(),
        client.clone(),
        client.clone(),
    );
    let alarms = async {
        if ask_alarms {
            Some(rpc::alarms(&mut c2, deadline).await)
        } else {
            None
        }
    };
    let (members, alarms, read_linearizable, read_serializable, metrics, health) = tokio::join!(
        rpc::member_list(&mut c1, deadline),
        alarms,
        rpc::probe_read(&mut c3, reach.probe_key, false, deadline),
        rpc::probe_read(&mut c4, reach.probe_key, true, deadline),
        scrape::metrics(reach.http, &url, deadline),
        scrape::health(reach.http, &url, deadline),
    );
    MemberAnswers {
        target,
        client: Some(client),
        outcome: Ok(Answers {
            status,
            members,
            alarms,
            read_linearizable,
            read_serializable,
            metrics: metrics.map(Arc::new),
            health,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64, urls: &[&str]) -> MemberInfo {
        MemberInfo {
            id,
            name: format!("m{id}"),
            client_urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            peer_urls: vec![],
            is_learner: false,
        }
    }

    #[test]
    fn a_configured_endpoint_is_used_only_by_the_member_advertising_it() {
        let known = [
            info(1, &["http://a:2379", "http://lb:2379"]),
            info(2, &["http://b:2379"]),
            info(3, &[]),
        ];
        let t = plan(&known, &["http://LB:2379/".to_owned()]);
        let urls: Vec<Option<&str>> = t.iter().map(|t| t.url.as_deref()).collect();
        assert_eq!(
            urls,
            [Some("http://LB:2379/"), Some("http://b:2379"), None],
            "member 1 names the configured endpoint; 3 has not started"
        );
    }

    #[test]
    fn without_a_member_list_the_configured_endpoints_are_asked_once_each() {
        let t = plan(&[], &["http://a:1".to_owned(), "http://a:1".to_owned()]);
        assert_eq!(
            t,
            [Target {
                info: None,
                url: Some("http://a:1".into())
            }]
        );
    }

    #[test]
    fn member_errors_know_their_source() {
        let backing_off = MemberError::BackingOff {
            last: Some("refused".into()),
            retry_in: Duration::from_millis(1500),
        };
        assert_eq!(backing_off.to_string(), "refused (next attempt in 1500ms)");
        assert_eq!(backing_off.source(), Some(ErrorSource::Connect));
        assert!(!backing_off.attempted());
        let wrong = MemberError::Impersonated {
            url: "http://lb:2379".into(),
            answered: 0xab,
            expected: 0xcd,
        };
        assert_eq!(
            wrong.to_string(),
            "http://lb:2379 answered as member ab, not cd"
        );
        assert_eq!(wrong.source(), Some(ErrorSource::Status));
        assert_eq!(MemberError::NotStarted.source(), None);
    }
}
