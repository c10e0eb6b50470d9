//! The guards: pure decisions over a [`ClusterView`] on whether an operation may put the
//! cluster at risk. ctl and the exporter's maintenance API both ask these before acting;
//! `--force` (or its API equivalent) is the caller's business, not the guards'.

use crate::cluster::{AlarmKind, ClusterView, MemberView};

/// DB size over quota above which disarming NOSPACE would trip it again.
pub const DISARM_MAX_QUOTA_USAGE: f64 = 0.9;

/// Why an operation was refused; the message says what an operator needs to know.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("the cluster has no leader (members answering: {})", list(.up))]
    NoLeader { up: Vec<String> },
    #[error(
        "members down: {}; {healthy} of {voters} voting members healthy, quorum needs {quorum}",
        list(.down)
    )]
    MembersDown {
        down: Vec<String>,
        healthy: usize,
        voters: usize,
        quorum: usize,
    },
    #[error(
        "removing {member} would leave {healthy_left} healthy voting member(s) of {voters_left}, fewer than the quorum of {quorum} they need (down: {})",
        list(.down)
    )]
    WouldLoseQuorum {
        member: String,
        healthy_left: usize,
        voters_left: usize,
        quorum: usize,
        down: Vec<String>,
    },
    #[error("{member} is the only voting member")]
    LastVoter { member: String },
    #[error(
        "NOSPACE would trip again: DB above {:.0}% of the quota on {}; free space first, in this order: compact, defrag, then disarm",
        DISARM_MAX_QUOTA_USAGE * 100.0,
        list(.full)
    )]
    StillFull { full: Vec<String> },
    #[error(
        "NOSPACE: the quota of {} is unknown (no etcd_server_quota_backend_bytes), so freed space cannot be checked; compact, defrag, then disarm with --force",
        list(.members)
    )]
    QuotaUnknown { members: Vec<String> },
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

/// A cluster fit for maintenance: a leader every answering member agrees on, and every
/// member answering. Alarms are not part of it: clearing them is maintenance.
pub fn healthy(view: &ClusterView) -> Result<(), Refusal> {
    let down = view.down();
    if view.leader().is_none() {
        return Err(Refusal::NoLeader {
            up: view
                .members
                .iter()
                .filter(|m| m.is_up())
                .map(MemberView::label)
                .collect(),
        });
    }
    if !down.is_empty() {
        let voters = view.voters().count();
        return Err(Refusal::MembersDown {
            down: down.iter().map(|m| m.label()).collect(),
            healthy: view.voters().filter(|m| m.is_up()).count(),
            voters,
            quorum: ClusterView::quorum_of(voters),
        });
    }
    Ok(())
}

/// Removing member `id`: refused when the voting members left would not hold a quorum of
/// healthy ones, or when the cluster is already in trouble apart from that member (a
/// member that is itself down may be removed: that is how a dead member is replaced).
pub fn remove(view: &ClusterView, id: u64) -> Result<(), Refusal> {
    let Some(target) = view.member(id) else {
        // Nothing to protect: etcd answers "member not found" itself.
        return Ok(());
    };
    let others: Vec<&MemberView> = view.members.iter().filter(|m| m.info.id != id).collect();
    let down: Vec<String> = view.down().iter().map(|m| m.label()).collect();
    if !target.info.is_learner {
        let voters_left = others.iter().filter(|m| !m.info.is_learner).count();
        if voters_left == 0 {
            return Err(Refusal::LastVoter {
                member: target.label(),
            });
        }
        let healthy_left = others
            .iter()
            .filter(|m| !m.info.is_learner && m.is_up())
            .count();
        let quorum = ClusterView::quorum_of(voters_left);
        if healthy_left < quorum {
            return Err(Refusal::WouldLoseQuorum {
                member: target.label(),
                healthy_left,
                voters_left,
                quorum,
                down,
            });
        }
    }
    if view.leader().is_none() {
        return Err(Refusal::NoLeader {
            up: view
                .members
                .iter()
                .filter(|m| m.is_up())
                .map(MemberView::label)
                .collect(),
        });
    }
    let others_down: Vec<String> = others
        .iter()
        .filter(|m| !m.is_up())
        .map(|m| m.label())
        .collect();
    if !others_down.is_empty() {
        let voters = view.voters().count();
        return Err(Refusal::MembersDown {
            down: others_down,
            healthy: view.voters().filter(|m| m.is_up()).count(),
            voters,
            quorum: ClusterView::quorum_of(voters),
        });
    }
    Ok(())
}

/// Disarming alarms: with NOSPACE raised, refused while any answering member's DB is above
/// [`DISARM_MAX_QUOTA_USAGE`] of its quota, or its quota is unknown.
pub fn disarm(view: &ClusterView) -> Result<(), Refusal> {
    if !view.alarms.iter().any(|a| a.kind == AlarmKind::Nospace) {
        return Ok(());
    }
    let mut full = Vec::new();
    let mut unknown = Vec::new();
    for m in view.members.iter().filter(|m| m.is_up()) {
        match (m.status(), m.quota_bytes, m.quota_usage()) {
            (Some(s), Some(q), Some(u)) if u > DISARM_MAX_QUOTA_USAGE => full.push(format!(
                "{} ({} of {}, {:.0}%)",
                m.label(),
                mib(s.db_size_bytes as f64),
                mib(q as f64),
                u * 100.0
            )),
            (_, _, None) => unknown.push(m.label()),
            _ => {}
        }
    }
    if !full.is_empty() {
        return Err(Refusal::StillFull { full });
    }
    if !unknown.is_empty() {
        return Err(Refusal::QuotaUnknown { members: unknown });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::view;
    use crate::cluster::{Alarm, Probe};

    #[test]
    fn healthy_needs_a_leader_and_every_member() {
        assert_eq!(healthy(&view(3, &[])), Ok(()));
        let err = healthy(&view(3, &[3])).expect_err("m3 down");
        assert_eq!(
            err.to_string(),
            "members down: m3; 2 of 3 voting members healthy, quorum needs 2"
        );
        assert!(matches!(
            healthy(&view(3, &[1])),
            Err(Refusal::NoLeader { .. })
        ));
    }

    #[test]
    fn removing_a_healthy_member_while_another_is_down_loses_quorum() {
        let err = remove(&view(3, &[3]), 2).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "removing m2 would leave 1 healthy voting member(s) of 2, fewer than the quorum of 2 they need (down: m3)"
        );
    }

    #[test]
    fn removing_the_dead_member_is_allowed() {
        assert_eq!(remove(&view(3, &[3]), 3), Ok(()));
        assert_eq!(remove(&view(3, &[]), 2), Ok(()));
    }

    #[test]
    fn removing_from_a_troubled_five_is_refused_even_with_quorum_left() {
        // 5 members, m5 down: removing m4 leaves 3 of 4 healthy (quorum 3) but the
        // cluster is already missing a member.
        let err = remove(&view(5, &[5]), 4).expect_err("refused");
        assert!(matches!(err, Refusal::MembersDown { .. }), "{err}");
        assert_eq!(
            remove(&view(1, &[]), 1),
            Err(Refusal::LastVoter {
                member: "m1".into()
            })
        );
    }

    #[test]
    fn learners_do_not_count_for_quorum() {
        let mut v = view(3, &[]);
        v.members[2].info.is_learner = true;
        // Voters m1, m2; m2 down: removing the learner does not touch quorum, but the
        // cluster is in trouble.
        if let Some(m) = v.members.get_mut(1) {
            m.probe = Probe::Down { error: "x".into() };
        }
        assert!(matches!(remove(&v, 3), Err(Refusal::MembersDown { .. })));
        assert!(matches!(
            remove(&v, 1),
            Err(Refusal::WouldLoseQuorum { .. })
        ));
    }

    #[test]
    fn disarm_waits_for_space() {
        let mut v = view(3, &[]);
        assert_eq!(disarm(&v), Ok(()));
        v.alarms.push(Alarm {
            member_id: 2,
            kind: AlarmKind::Nospace,
        });
        // 1000 of 10000 bytes: fine.
        assert_eq!(disarm(&v), Ok(()));
        if let Probe::Up(s) = &mut v.members[1].probe {
            s.db_size_bytes = 9_500;
        }
        let err = disarm(&v).expect_err("full");
        let msg = err.to_string();
        assert!(msg.contains("m2 (0.0 MiB of 0.0 MiB, 95%)"), "{msg}");
        assert!(msg.contains("compact, defrag, then disarm"), "{msg}");
        v.members[1].quota_bytes = None;
        assert!(matches!(disarm(&v), Err(Refusal::QuotaUnknown { .. })));
    }
}
