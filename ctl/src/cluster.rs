//! The cluster view every command and guard decides on: the member list, each member's own
//! `Status` (asked at its own client URL, one connection per member), its space quota
//! (scraped from its `/metrics`) and the alarms, gathered concurrently within one deadline.
//!
//! Gathering is the only I/O here; everything that interprets a view (leader, quorum,
//! verdict) is a pure method so the guards can be tested with hand-built views.

use std::time::Duration;

use common::etcd::{endpoint_str, error_chain, EtcdConfig};
use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client};
use serde::Serialize;

/// A member as the member list describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberInfo {
    pub id: u64,
    /// Empty while an added member has not started.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// What a member said about itself (its `Status` answer).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberStatus {
    pub version: String,
    pub db_size_bytes: i64,
    pub db_size_in_use_bytes: i64,
    /// The member this one believes leads (0: none).
    pub leader: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub is_learner: bool,
    pub revision: i64,
    pub errors: Vec<String>,
}

/// A member's answer, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Probe {
    Up(MemberStatus),
    Down { error: String },
}

/// One member and what it answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberView {
    pub info: MemberInfo,
    /// The client URL it was asked at (its first advertised one).
    pub endpoint: Option<String>,
    pub probe: Probe,
    /// `--quota-backend-bytes`, from `etcd_server_quota_backend_bytes`; `None` when unknown.
    pub quota_bytes: Option<u64>,
}

impl MemberView {
    pub fn status(&self) -> Option<&MemberStatus> {
        match &self.probe {
            Probe::Up(s) => Some(s),
            Probe::Down { .. } => None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.status().is_some()
    }

    /// The member's name, or its hex id while it has none (not started yet).
    pub fn label(&self) -> String {
        if self.info.name.is_empty() {
            format!("{:x}", self.info.id)
        } else {
            self.info.name.clone()
        }
    }

    /// DB size over quota (0..1+), when both are known.
    pub fn quota_usage(&self) -> Option<f64> {
        let s = self.status()?;
        let q = self.quota_bytes.filter(|q| *q > 0)?;
        Some(s.db_size_bytes as f64 / q as f64)
    }
}

/// The kinds of alarm etcd raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlarmKind {
    Nospace,
    Corrupt,
    /// A kind this build does not know (newer etcd).
    Other(i32),
}

impl AlarmKind {
    pub fn from_type(t: AlarmType) -> Self {
        match t {
            AlarmType::Nospace => AlarmKind::Nospace,
            AlarmType::Corrupt => AlarmKind::Corrupt,
            other => AlarmKind::Other(other as i32),
        }
    }

    pub fn to_type(self) -> Option<AlarmType> {
        match self {
            AlarmKind::Nospace => Some(AlarmType::Nospace),
            AlarmKind::Corrupt => Some(AlarmType::Corrupt),
            AlarmKind::Other(_) => None,
        }
    }
}

impl std::fmt::Display for AlarmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AlarmKind::Nospace => f.write_str("NOSPACE"),
            AlarmKind::Corrupt => f.write_str("CORRUPT"),
            AlarmKind::Other(n) => write!(f, "alarm {n}"),
        }
    }
}

/// One raised alarm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alarm {
    pub member_id: u64,
    pub kind: AlarmKind,
}

/// The cluster as gathered at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterView {
    pub cluster_id: u64,
    pub members: Vec<MemberView>,
    pub alarms: Vec<Alarm>,
    /// Why the alarm list could not be read, if it could not.
    pub alarms_error: Option<String>,
}

/// What the cluster's state amounts to, worst first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    NoLeader,
    QuorumAtRisk { down: Vec<String> },
    Alarms { alarms: Vec<String> },
    Healthy,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::NoLeader => f.write_str("no leader"),
            Verdict::QuorumAtRisk { down } => {
                write!(f, "quorum at risk: down {}", down.join(", "))
            }
            Verdict::Alarms { alarms } => write!(f, "alarms: {}", alarms.join(", ")),
            Verdict::Healthy => f.write_str("healthy"),
        }
    }
}

impl ClusterView {
    pub fn member(&self, id: u64) -> Option<&MemberView> {
        self.members.iter().find(|m| m.info.id == id)
    }

    /// The member called `name` (or whose hex id is `name`).
    pub fn by_name(&self, name: &str) -> Option<&MemberView> {
        self.members
            .iter()
            .find(|m| m.info.name == name)
            .or_else(|| {
                let id = u64::from_str_radix(name, 16).ok()?;
                self.member(id)
            })
    }

    pub fn name_of(&self, id: u64) -> String {
        self.member(id)
            .map(MemberView::label)
            .unwrap_or_else(|| format!("{id:x}"))
    }

    /// Voting members (not learners).
    pub fn voters(&self) -> impl Iterator<Item = &MemberView> {
        self.members.iter().filter(|m| !m.info.is_learner)
    }

    /// Majority of `voters` voting members.
    pub fn quorum_of(voters: usize) -> usize {
        voters / 2 + 1
    }

    pub fn quorum(&self) -> usize {
        Self::quorum_of(self.voters().count())
    }

    /// The leader that the members which answered agree on, if a leader is among the
    /// members and answering.
    pub fn leader(&self) -> Option<u64> {
        let mut leaders = self
            .members
            .iter()
            .filter_map(|m| m.status().map(|s| s.leader))
            .filter(|l| *l != 0);
        let first = leaders.next()?;
        if leaders.any(|l| l != first) {
            return None;
        }
        self.member(first).filter(|m| m.is_up()).map(|m| m.info.id)
    }

    /// Members that did not answer.
    pub fn down(&self) -> Vec<&MemberView> {
        self.members.iter().filter(|m| !m.is_up()).collect()
    }

    pub fn verdict(&self) -> Verdict {
        if self.leader().is_none() {
            return Verdict::NoLeader;
        }
        let down = self.down();
        if !down.is_empty() {
            return Verdict::QuorumAtRisk {
                down: down.iter().map(|m| m.label()).collect(),
            };
        }
        if !self.alarms.is_empty() {
            return Verdict::Alarms {
                alarms: self
                    .alarms
                    .iter()
                    .map(|a| format!("{} on {}", a.kind, self.name_of(a.member_id)))
                    .collect(),
            };
        }
        Verdict::Healthy
    }
}

/// Why a view could not be gathered at all.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error("cannot reach any endpoint: {0}")]
    Connect(String),
    #[error("cannot list members: {0}")]
    MemberList(String),
    #[error("gathering the cluster view took longer than {0:?}")]
    Deadline(Duration),
}

/// How long gathering may take: a dial and a request per member, concurrently.
pub fn default_deadline(cfg: &EtcdConfig) -> Duration {
    cfg.dial_timeout + cfg.command_timeout * 2
}

/// Gathers the view: the member list from any endpoint, then every member's status and
/// quota, and the alarms, all at once.
pub async fn gather(cfg: &EtcdConfig, deadline: Duration) -> Result<ClusterView, GatherError> {
    tokio::time::timeout(deadline, gather_inner(cfg))
        .await
        .map_err(|_| GatherError::Deadline(deadline))?
}

async fn gather_inner(cfg: &EtcdConfig) -> Result<ClusterView, GatherError> {
    let mut client = connect_any(cfg).await.map_err(GatherError::Connect)?;
    let list = client
        .member_list()
        .await
        .map_err(|e| GatherError::MemberList(error_chain(&e)))?;
    let cluster_id = list.header().map(|h| h.cluster_id()).unwrap_or_default();
    let infos: Vec<MemberInfo> = list
        .members()
        .iter()
        .map(|m| MemberInfo {
            id: m.id(),
            name: m.name().to_owned(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
            is_learner: m.is_learner(),
        })
        .collect();
    let http = cfg.http_client().ok();
    let probes = futures::future::join_all(
        infos
            .into_iter()
            .map(|info| probe_member(cfg, http.as_ref(), info)),
    );
    let (members, alarms) = tokio::join!(probes, list_alarms(&mut client));
    let (alarms, alarms_error) = match alarms {
        Ok(a) => (a, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    Ok(ClusterView {
        cluster_id,
        members,
        alarms,
        alarms_error,
    })
}

/// A client to the first configured endpoint that answers, tried in order. (A balanced
/// client over all endpoints may send the first request to a dead member and fail it.)
pub async fn connect_any(cfg: &EtcdConfig) -> Result<Client, String> {
    let mut errors = Vec::new();
    for url in &cfg.endpoints {
        let ep = endpoint_str(url);
        let attempt = async {
            let mut c = cfg.connect(&ep).await?;
            c.status().await?;
            Ok::<_, etcd_client::Error>(c)
        };
        match attempt.await {
            Ok(c) => return Ok(c),
            Err(e) => errors.push(format!("{ep}: {}", error_chain(&e))),
        }
    }
    Err(errors.join("; "))
}

async fn probe_member(
    cfg: &EtcdConfig,
    http: Option<&reqwest::Client>,
    info: MemberInfo,
) -> MemberView {
    let endpoint = info.client_urls.first().map(|u| {
        common::etcd::parse_endpoint(u, false)
            .map(|u| endpoint_str(&u))
            .unwrap_or_else(|_| u.clone())
    });
    let Some(ep) = endpoint.clone() else {
        return MemberView {
            info,
            endpoint,
            probe: Probe::Down {
                error: "not started (no client URL)".into(),
            },
            quota_bytes: None,
        };
    };
    let status = async {
        let mut c = cfg.connect(&ep).await.map_err(|e| error_chain(&e))?;
        let s = c.status().await.map_err(|e| error_chain(&e))?;
        Ok::<_, String>(MemberStatus {
            version: s.version().to_owned(),
            db_size_bytes: s.db_size(),
            db_size_in_use_bytes: s.raft_used_db_size(),
            leader: s.leader(),
            raft_term: s.raft_term(),
            raft_index: s.raft_index(),
            raft_applied_index: s.raft_applied_index(),
            is_learner: s.is_learner(),
            revision: s.header().map(|h| h.revision()).unwrap_or_default(),
            errors: s.errors().to_vec(),
        })
    };
    let quota = async {
        let http = http?;
        scrape_quota(http, &ep).await
    };
    let (status, quota_bytes) = tokio::join!(status, quota);
    MemberView {
        info,
        endpoint,
        probe: match status {
            Ok(s) => Probe::Up(s),
            Err(error) => Probe::Down { error },
        },
        quota_bytes,
    }
}

/// The member's `etcd_server_quota_backend_bytes`, if its `/metrics` answers with it.
async fn scrape_quota(http: &reqwest::Client, endpoint: &str) -> Option<u64> {
    let resp = http.get(format!("{endpoint}/metrics")).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    parse_quota(&resp.text().await.ok()?)
}

/// Finds `etcd_server_quota_backend_bytes` in a Prometheus text exposition.
pub fn parse_quota(metrics: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix("etcd_server_quota_backend_bytes")?;
        if !rest.starts_with([' ', '{']) {
            return None;
        }
        let value = match rest.find('}') {
            Some(end) => &rest[end + 1..],
            None => rest,
        };
        let v: f64 = value.split_whitespace().next()?.parse().ok()?;
        (v.is_finite() && v >= 0.0).then_some(v as u64)
    })
}

/// The raised alarms, as any member reports them.
pub async fn list_alarms(client: &mut Client) -> Result<Vec<Alarm>, String> {
    let resp = client
        .alarm(AlarmAction::Get, AlarmType::None, None::<AlarmOptions>)
        .await
        .map_err(|e| error_chain(&e))?;
    Ok(resp
        .alarms()
        .iter()
        .map(|a| Alarm {
            member_id: a.member_id(),
            kind: AlarmKind::from_type(a.alarm()),
        })
        .collect())
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Hand-built views for the guards' tests.
    use super::*;

    pub fn member(id: u64, up: bool, leader: u64) -> MemberView {
        MemberView {
            info: MemberInfo {
                id,
                name: format!("m{id}"),
                peer_urls: vec![format!("http://127.0.0.1:{}", 2380 + id)],
                client_urls: vec![format!("http://127.0.0.1:{}", 2379 + id)],
                is_learner: false,
            },
            endpoint: Some(format!("http://127.0.0.1:{}", 2379 + id)),
            probe: if up {
                Probe::Up(MemberStatus {
                    version: "3.4.23".into(),
                    db_size_bytes: 1000,
                    db_size_in_use_bytes: 900,
                    leader,
                    raft_term: 2,
                    raft_index: 10,
                    raft_applied_index: 10,
                    is_learner: false,
                    revision: 5,
                    errors: vec![],
                })
            } else {
                Probe::Down {
                    error: "connection refused".into(),
                }
            },
            quota_bytes: Some(10_000),
        }
    }

    /// `n` members m1..mn, leader m1, members in `down` not answering.
    pub fn view(n: u64, down: &[u64]) -> ClusterView {
        ClusterView {
            cluster_id: 7,
            members: (1..=n).map(|i| member(i, !down.contains(&i), 1)).collect(),
            alarms: vec![],
            alarms_error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::view;
    use super::*;

    #[test]
    fn verdicts_worst_first() {
        assert_eq!(view(3, &[]).verdict(), Verdict::Healthy);
        assert_eq!(
            view(3, &[2]).verdict(),
            Verdict::QuorumAtRisk {
                down: vec!["m2".into()]
            }
        );
        assert_eq!(view(3, &[1]).verdict(), Verdict::NoLeader);
        let mut v = view(3, &[]);
        v.alarms.push(Alarm {
            member_id: 2,
            kind: AlarmKind::Nospace,
        });
        assert_eq!(v.verdict().to_string(), "alarms: NOSPACE on m2".to_string());
    }

    #[test]
    fn members_disagreeing_on_the_leader_have_none() {
        let mut v = view(3, &[]);
        if let Probe::Up(s) = &mut v.members[2].probe {
            s.leader = 3;
        }
        assert_eq!(v.leader(), None);
    }

    #[test]
    fn quota_is_read_from_metrics() {
        let text = "# HELP etcd_server_quota_backend_bytes x\n# TYPE etcd_server_quota_backend_bytes gauge\netcd_server_quota_backend_bytes 2.147483648e+09\n";
        assert_eq!(parse_quota(text), Some(2_147_483_648));
        assert_eq!(parse_quota("etcd_server_has_leader 1\n"), None);
        assert_eq!(parse_quota("etcd_server_quota_backend_bytes NaN\n"), None);
    }
}
