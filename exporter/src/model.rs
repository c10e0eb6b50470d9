//! The cluster model: what the gathered facts mean, as a pure function of them.
//!
//! [`derive`] turns one cycle's [`Facts`] into a [`ClusterModel`] (leader, quorum, split
//! brain, partitions, divergence, alarms); [`LeaderTracker`] carries the one piece of state
//! that spans cycles, the leader history. Neither does I/O, so every rule here is unit-tested
//! without a cluster.
//!
//! Definitions (also in the README):
//! - a member is *up* when it answered `Status` in this cycle;
//! - the cluster *leader* is the member the up members report as leader, taking the
//!   reports at the highest term; *has leader* when there is one. etcd's `Status` term is
//!   the term of the last *applied* entry, so a member that just learnt of an election
//!   may lag by one term for a moment: terms only order reports, they never decide a
//!   partition on their own;
//! - a member is *partitioned* when it is up and the cluster has a leader, but the member
//!   has none or follows another one (a stale leader included): cut off from the leader,
//!   it is stuck behind its term;
//! - a member is *healthy* when it is up and not partitioned;
//! - *split brain*: two members claim leadership at the same term, or members report
//!   different cluster IDs (raft allows neither);
//! - the cluster is *healthy* when it has a leader, at least a quorum of healthy members,
//!   no split brain and no active alarm.
//!
//! Elections make some of these true for an instant (a follower without a leader yet, a
//! new leader that has not applied an entry of its term), so [`Debouncer`] reports a
//! partition or a split brain only when two cycles in a row show it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::SystemTime;

use serde::Serialize;

/// How many leader changes are kept.
pub const LEADER_HISTORY: usize = 100;

/// A member as the member list describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    #[serde(serialize_with = "hex_id")]
    pub id: u64,
    pub name: String,
    pub client_urls: Vec<String>,
    pub peer_urls: Vec<String>,
    pub is_learner: bool,
}

/// What a member's `Status` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusFacts {
    pub cluster_id: u64,
    pub member_id: u64,
    pub version: String,
    pub leader: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub revision: i64,
    pub db_size: i64,
    pub db_size_in_use: i64,
    pub is_learner: bool,
    pub errors: Vec<String>,
}

/// The alarms etcd raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Alarm {
    Nospace,
    Corrupt,
}

impl Alarm {
    pub const ALL: [Alarm; 2] = [Alarm::Nospace, Alarm::Corrupt];

    pub fn as_str(self) -> &'static str {
        match self {
            Alarm::Nospace => "NOSPACE",
            Alarm::Corrupt => "CORRUPT",
        }
    }
}

/// Everything gathered about one member in one cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberObservation {
    pub info: MemberInfo,
    /// The URL the exporter used for this member.
    pub endpoint: String,
    pub status: Result<StatusFacts, String>,
}

/// One cycle's facts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub members: Vec<MemberObservation>,
    /// Active alarms by member ID; `None` when no member could list them.
    pub alarms: Option<Vec<(u64, Alarm)>>,
}

/// The derived view of one member.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberState {
    #[serde(flatten)]
    pub info: MemberInfo,
    pub endpoint: String,
    pub up: bool,
    pub healthy: bool,
    pub error: Option<String>,
    pub is_leader: bool,
    pub has_leader: bool,
    pub partitioned: bool,
    #[serde(serialize_with = "opt_hex_id")]
    pub leader_id: Option<u64>,
    pub version: Option<String>,
    pub raft_term: Option<u64>,
    pub raft_index: Option<u64>,
    pub raft_applied_index: Option<u64>,
    pub revision: Option<i64>,
    pub db_size_bytes: Option<i64>,
    pub db_size_in_use_bytes: Option<i64>,
    pub status_errors: Vec<String>,
    pub alarms: Vec<Alarm>,
}

/// The leader, by ID and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaderRef {
    #[serde(serialize_with = "hex_id")]
    pub id: u64,
    pub name: String,
    pub term: u64,
}

/// An alarm raised on a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveAlarm {
    pub member: String,
    #[serde(serialize_with = "hex_id")]
    pub member_id: u64,
    pub alarm: Alarm,
}

/// The cluster as one cycle's facts describe it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterModel {
    #[serde(serialize_with = "opt_hex_id")]
    pub cluster_id: Option<u64>,
    pub healthy: bool,
    pub has_leader: bool,
    pub leader: Option<LeaderRef>,
    pub member_count: usize,
    pub voting_members: usize,
    pub quorum_size: usize,
    pub up_members: usize,
    pub healthy_members: usize,
    pub split_brain: bool,
    pub split_brain_reasons: Vec<String>,
    pub partitioned_members: Vec<String>,
    pub revision_divergence: i64,
    pub raft_index_divergence: u64,
    pub alarms_known: bool,
    pub alarms: Vec<ActiveAlarm>,
    pub members: Vec<MemberState>,
}

fn hex_id<S: serde::Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{id:x}"))
}

fn opt_hex_id<S: serde::Serializer>(id: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.serialize_str(&format!("{id:x}")),
        None => s.serialize_none(),
    }
}

/// Derives the cluster model from one cycle's facts.
pub fn derive(facts: &Facts) -> ClusterModel {
    let up: Vec<(&MemberObservation, &StatusFacts)> = facts
        .members
        .iter()
        .filter_map(|m| m.status.as_ref().ok().map(|s| (m, s)))
        .collect();
    let name_of = |id: u64| -> String {
        facts
            .members
            .iter()
            .find(|m| m.info.id == id)
            .map(|m| m.info.name.clone())
            .unwrap_or_else(|| format!("{id:x}"))
    };

    // Leader: the most reported non-zero leader among the up members at the highest term.
    let top_term = up
        .iter()
        .filter(|(_, s)| s.leader != 0)
        .map(|(_, s)| s.raft_term)
        .max();
    let leader = top_term.and_then(|term| {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for (_, s) in up
            .iter()
            .filter(|(_, s)| s.raft_term == term && s.leader != 0)
        {
            *votes.entry(s.leader).or_default() += 1;
        }
        // Ties are broken by the claimant itself saying so, then by the lowest ID.
        let best = votes.values().copied().max()?;
        let mut tied: Vec<u64> = votes
            .iter()
            .filter(|(_, &n)| n == best)
            .map(|(&id, _)| id)
            .collect();
        tied.sort_by_key(|id| {
            let claims = up
                .iter()
                .any(|(_, s)| s.member_id == *id && s.leader == *id && s.raft_term == term);
            (!claims, *id)
        });
        tied.first().map(|&id| LeaderRef {
            id,
            name: name_of(id),
            term,
        })
    });

    // Split brain.
    let mut reasons = Vec::new();
    let cluster_ids: BTreeSet<u64> = up.iter().map(|(_, s)| s.cluster_id).collect();
    if cluster_ids.len() > 1 {
        let ids: Vec<String> = cluster_ids.iter().map(|id| format!("{id:x}")).collect();
        reasons.push(format!(
            "members report different cluster IDs: {}",
            ids.join(", ")
        ));
    }
    let mut claimants_by_term: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for (_, s) in &up {
        if s.leader != 0 && s.leader == s.member_id {
            claimants_by_term
                .entry(s.raft_term)
                .or_default()
                .insert(s.member_id);
        }
    }
    for (term, claimants) in &claimants_by_term {
        if claimants.len() > 1 {
            let names: Vec<String> = claimants.iter().map(|&id| name_of(id)).collect();
            reasons.push(format!(
                "{} all claim leadership at term {term}",
                names.join(", ")
            ));
        }
    }

    // Alarms.
    let mut alarms: Vec<ActiveAlarm> = facts
        .alarms
        .iter()
        .flatten()
        .map(|&(id, alarm)| ActiveAlarm {
            member: name_of(id),
            member_id: id,
            alarm,
        })
        .collect();
    alarms.sort_by(|a, b| (&a.member, a.alarm).cmp(&(&b.member, b.alarm)));
    alarms.dedup();

    // Per member.
    let mut members: Vec<MemberState> = facts
        .members
        .iter()
        .map(|m| {
            let member_alarms: Vec<Alarm> = alarms
                .iter()
                .filter(|a| a.member_id == m.info.id)
                .map(|a| a.alarm)
                .collect();
            match &m.status {
                Ok(s) => {
                    let partitioned = leader
                        .as_ref()
                        .is_some_and(|l| s.member_id != l.id && s.leader != l.id);
                    MemberState {
                        info: m.info.clone(),
                        endpoint: m.endpoint.clone(),
                        up: true,
                        healthy: !partitioned,
                        error: None,
                        is_leader: leader.as_ref().is_some_and(|l| l.id == s.member_id),
                        has_leader: s.leader != 0,
                        partitioned,
                        leader_id: (s.leader != 0).then_some(s.leader),
                        version: Some(s.version.clone()),
                        raft_term: Some(s.raft_term),
                        raft_index: Some(s.raft_index),
                        raft_applied_index: Some(s.raft_applied_index),
                        revision: Some(s.revision),
                        db_size_bytes: Some(s.db_size),
                        db_size_in_use_bytes: Some(s.db_size_in_use),
                        status_errors: s.errors.clone(),
                        alarms: member_alarms,
                    }
                }
                Err(e) => MemberState {
                    info: m.info.clone(),
                    endpoint: m.endpoint.clone(),
                    up: false,
                    healthy: false,
                    error: Some(e.clone()),
                    is_leader: false,
                    has_leader: false,
                    partitioned: false,
                    leader_id: None,
                    version: None,
                    raft_term: None,
                    raft_index: None,
                    raft_applied_index: None,
                    revision: None,
                    db_size_bytes: None,
                    db_size_in_use_bytes: None,
                    status_errors: Vec::new(),
                    alarms: member_alarms,
                },
            }
        })
        .collect();
    members.sort_by(|a, b| a.info.name.cmp(&b.info.name));

    let spread = |values: Vec<i128>| -> i128 {
        match (values.iter().min(), values.iter().max()) {
            (Some(lo), Some(hi)) => hi - lo,
            _ => 0,
        }
    };
    let revision_divergence =
        spread(up.iter().map(|(_, s)| i128::from(s.revision)).collect()) as i64;
    let raft_index_divergence =
        spread(up.iter().map(|(_, s)| i128::from(s.raft_index)).collect()) as u64;

    let member_count = facts.members.len();
    let voting_members = facts.members.iter().filter(|m| !m.info.is_learner).count();
    let quorum_size = if voting_members == 0 {
        0
    } else {
        voting_members / 2 + 1
    };
    let split_brain = !reasons.is_empty();
    let has_leader = leader.is_some();
    let mut model = ClusterModel {
        cluster_id: (cluster_ids.len() == 1)
            .then(|| cluster_ids.first().copied())
            .flatten(),
        healthy: false,
        has_leader,
        leader,
        member_count,
        voting_members,
        quorum_size,
        up_members: up.len(),
        healthy_members: 0,
        split_brain,
        split_brain_reasons: reasons,
        partitioned_members: Vec::new(),
        revision_divergence,
        raft_index_divergence,
        alarms_known: facts.alarms.is_some(),
        alarms,
        members,
    };
    summarize(&mut model);
    model
}

/// Recomputes what follows from the members' `partitioned` flags and the split brain.
fn summarize(m: &mut ClusterModel) {
    for s in &mut m.members {
        s.healthy = s.up && !s.partitioned;
    }
    m.healthy_members = m
        .members
        .iter()
        .filter(|s| s.healthy && !s.info.is_learner)
        .count();
    m.partitioned_members = m
        .members
        .iter()
        .filter(|s| s.partitioned)
        .map(|s| s.info.name.clone())
        .collect();
    m.healthy = m.has_leader
        && m.quorum_size > 0
        && m.healthy_members >= m.quorum_size
        && !m.split_brain
        && m.alarms.is_empty();
}

/// Holds back partitions and split brain until two cycles in a row show them, so that
/// the instants of an election do not raise them.
#[derive(Debug, Clone, Default)]
pub struct Debouncer {
    partitioned: BTreeSet<u64>,
    split_brain: bool,
}

impl Debouncer {
    /// Applies the previous cycle's raw findings to `m` and remembers this cycle's.
    pub fn apply(&mut self, m: &mut ClusterModel) {
        let raw_partitioned: BTreeSet<u64> = m
            .members
            .iter()
            .filter(|s| s.partitioned)
            .map(|s| s.info.id)
            .collect();
        let raw_split = m.split_brain;
        for s in &mut m.members {
            s.partitioned = s.partitioned && self.partitioned.contains(&s.info.id);
        }
        m.split_brain = raw_split && self.split_brain;
        if !m.split_brain {
            m.split_brain_reasons.clear();
        }
        self.partitioned = raw_partitioned;
        self.split_brain = raw_split;
        summarize(m);
    }
}

/// One observed change of leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaderChange {
    /// Unix time in milliseconds when the exporter saw the new leader.
    pub at_unix_ms: u64,
    pub from: Option<String>,
    #[serde(serialize_with = "opt_hex_id")]
    pub from_id: Option<u64>,
    pub to: String,
    #[serde(serialize_with = "hex_id")]
    pub to_id: u64,
    pub term: u64,
    /// The maintenance operation running when it happened: a planned change (a leader
    /// moved away before its defragmentation), not a fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planned: Option<String>,
}

/// The leader seen across cycles and the last [`LEADER_HISTORY`] changes.
#[derive(Debug, Clone, Default)]
pub struct LeaderTracker {
    last: Option<LeaderRef>,
    history: VecDeque<LeaderChange>,
    changes_total: u64,
    planned_total: u64,
}

impl LeaderTracker {
    /// Records the leader of `model`. A change is a leader whose ID differs from the last
    /// leader seen (a period without leader in between does not count as a change by
    /// itself); the first leader ever seen is not a change.
    pub fn observe(&mut self, model: &ClusterModel, at: SystemTime) -> Option<LeaderChange> {
        let now = model.leader.as_ref()?;
        let change = match &self.last {
            Some(prev) if prev.id == now.id => None,
            // A report from an older term (a stale leader seen by a lagging member) is
            // not a change back.
            Some(prev) if now.term < prev.term => return None,
            Some(prev) => Some(LeaderChange {
                at_unix_ms: at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                from: Some(prev.name.clone()),
                from_id: Some(prev.id),
                to: now.name.clone(),
                to_id: now.id,
                term: now.term,
                planned: None,
            }),
            None => None,
        };
        self.last = Some(now.clone());
        if let Some(c) = &change {
            self.changes_total += 1;
            if self.history.len() == LEADER_HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(c.clone());
        }
        change
    }

    pub fn history(&self) -> impl DoubleEndedIterator<Item = &LeaderChange> {
        self.history.iter()
    }

    pub fn changes_total(&self) -> u64 {
        self.changes_total
    }

    /// Marks the last change as planned by `operation` (it was seen while a maintenance
    /// marker was up).
    pub fn mark_planned(&mut self, operation: &str) {
        if let Some(c) = self.history.back_mut().filter(|c| c.planned.is_none()) {
            c.planned = Some(operation.to_owned());
            self.planned_total += 1;
        }
    }

    /// Changes marked planned so far.
    pub fn planned_total(&self) -> u64 {
        self.planned_total
    }
}

#[cfg(test)]
mod tests;
