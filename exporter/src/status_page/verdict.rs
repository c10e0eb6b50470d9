//! The verdict on one cluster, in words: a pure function of its snapshot and the time.
//!
//! The verdict restates the model (`model::derive`), it decides nothing new: the worst of
//! split brain, quorum lost, no leader, alarm, degraded (a member down or cut off), in
//! that order, with every condition that holds listed as a reason. A snapshot older than
//! three intervals (plus 10 s, as `/health` has it) says nothing about now, so its verdict
//! is "no recent data" rather than a stale "healthy".

use crate::model::Alarm;
use crate::snapshot::Snapshot;

/// What the page says about a cluster, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Starting,
    Stale,
    Healthy,
    Degraded,
    Alarm,
    NoLeader,
    QuorumLost,
    SplitBrain,
}

impl Level {
    /// The verdict as a person says it.
    pub fn word(self) -> &'static str {
        match self {
            Level::Starting => "starting",
            Level::Stale => "no recent data",
            Level::Healthy => "healthy",
            Level::Degraded => "degraded",
            Level::Alarm => "alarm",
            Level::NoLeader => "no leader",
            Level::QuorumLost => "quorum lost",
            Level::SplitBrain => "split brain",
        }
    }

    /// The CSS class, which also picks the symbol shown before the word.
    pub fn class(self) -> &'static str {
        match self {
            Level::Starting | Level::Stale => "unknown",
            Level::Healthy => "ok",
            Level::Degraded => "warn",
            Level::Alarm | Level::NoLeader | Level::QuorumLost | Level::SplitBrain => "bad",
        }
    }
}

/// The verdict and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub level: Level,
    /// One sentence per condition found, worst first; unescaped.
    pub reasons: Vec<String>,
}

/// Judges `snap` at `now_ms`.
pub fn judge(snap: &Snapshot, now_ms: u64) -> Verdict {
    if snap.cycle == 0 {
        return Verdict {
            level: Level::Starting,
            reasons: vec!["waiting for the first collection to finish".to_owned()],
        };
    }
    let age = now_ms.saturating_sub(snap.at_unix_ms);
    if age > 3 * snap.interval_ms + 10_000 {
        return Verdict {
            level: Level::Stale,
            reasons: vec![format!(
                "the last collection finished {} ago (every {} expected); the exporter's collector may be stuck",
                super::fmt::span(age),
                super::fmt::span(snap.interval_ms)
            )],
        };
    }
    let m = &snap.model;
    let mut found: Vec<(Level, String)> = Vec::new();
    for r in &m.split_brain_reasons {
        found.push((Level::SplitBrain, format!("split brain: {r}")));
    }
    if m.split_brain && m.split_brain_reasons.is_empty() {
        found.push((
            Level::SplitBrain,
            "split brain: members disagree about the leader".to_owned(),
        ));
    }
    if m.quorum_size > 0 && m.healthy_members < m.quorum_size {
        found.push((
            Level::QuorumLost,
            format!(
                "only {} of {} voting members are healthy; a quorum needs {}, so the cluster cannot commit writes",
                m.healthy_members, m.voting_members, m.quorum_size
            ),
        ));
    }
    if !m.has_leader {
        let why = if m.member_count == 0 {
            "no member is known: the member list could not be read".to_owned()
        } else if m.up_members == 0 {
            format!("none of the {} members answers", m.member_count)
        } else {
            format!(
                "no member reports a leader ({} of {} answer); writes and linearizable reads fail",
                m.up_members, m.member_count
            )
        };
        found.push((Level::NoLeader, why));
    }
    for a in &m.alarms {
        let what = match a.alarm {
            Alarm::Nospace => {
                "the space quota is used up: the cluster refuses writes until space is freed (compact, defrag) and the alarm is disarmed"
            }
            Alarm::Corrupt => "the member's data differs from the others'",
        };
        found.push((
            Level::Alarm,
            format!("{} alarm on {}: {what}", a.alarm.as_str(), a.member),
        ));
    }
    for s in &m.members {
        let kind = if s.info.is_learner {
            "learner"
        } else {
            "member"
        };
        if !s.up {
            let err = s.error.as_deref().unwrap_or("no answer");
            found.push((
                Level::Degraded,
                format!("{kind} {} is down: {err}", s.info.name),
            ));
        } else if s.partitioned {
            let follows = match s.leader_id {
                None => "it has no leader".to_owned(),
                Some(id) => {
                    let name = m
                        .members
                        .iter()
                        .find(|o| o.info.id == id)
                        .map_or_else(|| format!("{id:x}"), |o| o.info.name.clone());
                    format!("it still follows {name}")
                }
            };
            let leader = m.leader.as_ref().map_or("?", |l| l.name.as_str());
            found.push((
                Level::Degraded,
                format!(
                    "{kind} {} is cut off from the leader {leader}: {follows}",
                    s.info.name
                ),
            ));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    let level = found.first().map_or(Level::Healthy, |f| f.0);
    let mut reasons: Vec<String> = found.into_iter().map(|(_, r)| r).collect();
    if level == Level::Healthy {
        let leader = m.leader.as_ref().map_or("?", |l| l.name.as_str());
        reasons.push(format!(
            "leader {leader}; all {} members up and following it",
            m.member_count
        ));
        if !m.alarms_known {
            reasons.push("the alarm list could not be read this cycle".to_owned());
        }
    }
    Verdict { level, reasons }
}
