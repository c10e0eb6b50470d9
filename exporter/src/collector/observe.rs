//! Observing: what one cycle's answers say, as pure functions of them (and of the little
//! the previous cycle left: the member list and each member's last `/metrics` counters).
//!
//! - A member must answer as itself: an endpoint that answers as another member (one
//!   shared by several) gives an error for that member, never facts about it.
//! - The member list to use next is the leader's, else the first one anybody gave.
//! - Every member of the list is observed once: asked, or marked not queried yet.
//! - The alarm list is cluster-wide: any member's answer will do.
//! - Rates and "recent" quantiles compare a member's `/metrics` with its previous ones;
//!   an idle member (no new observations) keeps its overall quantile.
//!
//! Nothing here does I/O or reads the clock; `observe/tests.rs` covers it without a
//! cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::agents::{AgentReport, AgentTarget, Attribution};
use crate::model::{ClusterModel, Facts, MemberInfo, MemberObservation};
use crate::snapshot::{AgentStatus, MemberExtras};
use crate::textformat::{self, Exposition};

use super::gather::{Answers, Gathered, MemberError};
use super::{Consistency, ErrorSource};

/// What is kept of a member's `/metrics` for the next cycle's rates and recent quantiles.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeMemory {
    pub at: Instant,
    pub unary_started: Option<f64>,
    pub wal: Option<Vec<(f64, f64)>>,
    pub commit: Option<Vec<(f64, f64)>>,
}

/// What the cycle found about one member beside its `Status`.
#[derive(Debug, Clone, Default)]
pub struct MemberFindings {
    pub extras: MemberExtras,
    pub reads: Vec<(Consistency, Result<Duration, String>)>,
    /// Its `/metrics`, and what to remember of them.
    pub native: Option<(Arc<Exposition>, NativeMemory)>,
}

/// One cycle's answers, understood.
#[derive(Debug, Default)]
pub struct Observation {
    pub facts: Facts,
    /// The member list from now on, when any member gave one.
    pub member_list: Option<Vec<MemberInfo>>,
    /// How each attempted connection went, by index into `Gathered::members`.
    pub connections: Vec<(usize, Option<String>)>,
    /// Which member answered at which endpoint.
    pub owners: Vec<(String, u64)>,
    /// By member ID.
    pub members: BTreeMap<u64, MemberFindings>,
    /// Client unary requests per second over all members, when every term is known.
    pub request_rate: Option<f64>,
    /// The maintenance running, from its marker.
    pub maintenance: Option<ctl::marker::Marker>,
    pub errors: Vec<ErrorSource>,
}

fn host_port(url: &str) -> String {
    url.split("://")
        .nth(1)
        .unwrap_or(url)
        .trim_end_matches('/')
        .to_owned()
}

/// A member's outcome once checked to be about the member it was asked as.
fn checked<'a>(
    info: Option<&MemberInfo>,
    url: Option<&str>,
    outcome: &'a Result<Answers, MemberError>,
) -> Result<&'a Answers, MemberError> {
    match (info, outcome) {
        (Some(info), Ok(a)) if a.status.member_id != info.id => Err(MemberError::Impersonated {
            url: url.unwrap_or_default().to_owned(),
            answered: a.status.member_id,
            expected: info.id,
        }),
        (_, Ok(a)) => Ok(a),
        (_, Err(e)) => Err(e.clone()),
    }
}

/// Understands one cycle's answers. `known` is the member list before this cycle,
/// `memory` what the previous cycle kept of each member's `/metrics`, `now` when this
/// cycle started.
pub fn observe(
    gathered: &Gathered,
    known: &[MemberInfo],
    memory: &HashMap<u64, NativeMemory>,
    now: Instant,
) -> Observation {
    let outcomes: Vec<Result<&Answers, MemberError>> = gathered
        .members
        .iter()
        .map(|g| checked(g.target.info.as_ref(), g.target.url.as_deref(), &g.outcome))
        .collect();
    let mut obs = Observation::default();

    for (i, (g, outcome)) in gathered.members.iter().zip(&outcomes).enumerate() {
        let Some(url) = &g.target.url else { continue };
        match outcome {
            Ok(a) => {
                obs.connections.push((i, None));
                obs.owners.push((url.clone(), a.status.member_id));
            }
            Err(e) if e.attempted() => obs.connections.push((i, Some(e.to_string()))),
            Err(_) => {}
        }
    }

    obs.member_list = outcomes
        .iter()
        .filter_map(|o| match o {
            Ok(a) => match &a.members {
                Ok(l) if !l.is_empty() => Some((a.status.leader == a.status.member_id, l)),
                _ => None,
            },
            Err(_) => None,
        })
        .max_by_key(|(is_leader, _)| *is_leader)
        .map(|(_, l)| l.clone());
    let known = obs.member_list.as_deref().unwrap_or(known);

    // One observation per member; which gathered entry it came from.
    let mut source_of: Vec<(u64, usize)> = Vec::new();
    for (i, (g, outcome)) in gathered.members.iter().zip(&outcomes).enumerate() {
        let url = g.target.url.as_deref().unwrap_or_default();
        let synthesized = |id: u64, is_learner: bool| MemberInfo {
            id,
            name: host_port(url),
            client_urls: vec![url.to_owned()],
            peer_urls: vec![],
            is_learner,
        };
        let info = match (&g.target.info, outcome) {
            (Some(info), _) => Some(info.clone()),
            (None, Ok(a)) => known
                .iter()
                .find(|m| m.id == a.status.member_id)
                .cloned()
                .or_else(|| {
                    known
                        .is_empty()
                        .then(|| synthesized(a.status.member_id, a.status.is_learner))
                }),
            (None, Err(_)) => known.is_empty().then(|| synthesized(0, false)),
        };
        let Some(info) = info else { continue };
        if info.id != 0 && source_of.iter().any(|(id, _)| *id == info.id) {
            continue;
        }
        source_of.push((info.id, i));
        obs.facts.members.push(MemberObservation {
            endpoint: url.to_owned(),
            status: outcome
                .as_ref()
                .map(|a| a.status.clone())
                .map_err(ToString::to_string),
            info,
        });
    }
    for m in known {
        if !obs.facts.members.iter().any(|o| o.info.id == m.id) {
            obs.facts.members.push(MemberObservation {
                info: m.clone(),
                endpoint: m.client_urls.first().cloned().unwrap_or_default(),
                status: Err(MemberError::NotQueried.to_string()),
            });
        }
    }
    obs.facts.alarms = outcomes.iter().find_map(|o| match o {
        Ok(Answers {
            alarms: Some(Ok(a)),
            ..
        }) => Some(a.clone()),
        _ => None,
    });

    for (g, outcome) in gathered.members.iter().zip(&outcomes) {
        if g.target.url.is_none() {
            continue;
        }
        match outcome {
            Err(e) => obs.errors.extend(e.source()),
            Ok(a) => {
                let failed = [
                    (ErrorSource::MemberList, a.members.is_err()),
                    (ErrorSource::Alarms, matches!(a.alarms, Some(Err(_)))),
                    (ErrorSource::ProbeRead, a.read_linearizable.is_err()),
                    (ErrorSource::ProbeRead, a.read_serializable.is_err()),
                    (ErrorSource::MemberMetrics, a.metrics.is_err()),
                    (ErrorSource::MemberHealth, a.health.is_err()),
                ];
                obs.errors
                    .extend(failed.iter().filter(|(_, bad)| *bad).map(|(s, _)| *s));
            }
        }
    }
    if matches!(&gathered.write, Some(w) if w.result.is_err()) {
        obs.errors.push(ErrorSource::ProbeWrite);
    }

    let mut rate: Option<f64> = None;
    for &(id, i) in &source_of {
        let Ok(a) = &outcomes[i] else {
            obs.members.insert(id, MemberFindings::default());
            continue;
        };
        let (findings, unary_rate) = member_findings(a, memory.get(&id), now);
        if let Some(r) = unary_rate {
            *rate.get_or_insert(0.0) += r;
        }
        obs.members.insert(id, findings);
    }
    obs.request_rate = rate;
    obs.maintenance = match &gathered.marker {
        Some(Ok(Some(value))) => match ctl::marker::parse(value) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(key = ctl::marker::MARKER_KEY, error = %e, "ignoring an unreadable maintenance marker");
                None
            }
        },
        _ => None,
    };
    obs
}

/// One answering member's extras, read probes and `/metrics`; and its unary request rate
/// since the previous cycle, when both ends are known.
fn member_findings(
    a: &Answers,
    before: Option<&NativeMemory>,
    now: Instant,
) -> (MemberFindings, Option<f64>) {
    let mut f = MemberFindings::default();
    let x = &mut f.extras;
    match &a.health {
        Ok(h) => x.health = Some(*h),
        Err(e) => x.health_error = Some(e.clone()),
    }
    let ms = |r: &Result<Duration, String>| r.as_ref().ok().map(|d| d.as_secs_f64() * 1e3);
    x.read_linearizable_ms = ms(&a.read_linearizable);
    x.read_serializable_ms = ms(&a.read_serializable);
    x.read_error = a
        .read_serializable
        .as_ref()
        .err()
        .or(a.read_linearizable.as_ref().err())
        .cloned();
    f.reads = vec![
        (Consistency::Linearizable, a.read_linearizable.clone()),
        (Consistency::Serializable, a.read_serializable.clone()),
    ];
    let mut rate = None;
    match &a.metrics {
        Err(e) => x.metrics_error = Some(e.clone()),
        Ok(exp) => {
            x.watchers = exp
                .sum("etcd_debugging_mvcc_watcher_total", |_| true)
                .map(|v| v as i64);
            x.quota_bytes = exp
                .sum("etcd_server_quota_backend_bytes", |_| true)
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(|v| v as i64);
            let wal = exp.histogram_buckets("etcd_disk_wal_fsync_duration_seconds");
            let commit = exp.histogram_buckets("etcd_disk_backend_commit_duration_seconds");
            x.wal_fsync_p95_ms =
                recent_quantile(wal.as_deref(), before.and_then(|p| p.wal.as_deref()));
            x.backend_commit_p95_ms =
                recent_quantile(commit.as_deref(), before.and_then(|p| p.commit.as_deref()));
            let unary = exp.sum("grpc_server_started_total", |s| {
                s.label("grpc_type") == Some("unary")
            });
            if let (Some(now_v), Some(Some(then_v)), Some(p)) =
                (unary, before.map(|p| p.unary_started), before)
            {
                let dt = now.saturating_duration_since(p.at).as_secs_f64();
                if now_v >= then_v && dt > 0.0 {
                    rate = Some((now_v - then_v) / dt);
                }
            }
            f.native = Some((
                exp.clone(),
                NativeMemory {
                    at: now,
                    unary_started: unary,
                    wal,
                    commit,
                },
            ));
        }
    }
    (f, rate)
}

/// p95 in milliseconds of the observations since the previous scrape, or of all of them
/// when there were none since (an idle member keeps its last picture).
fn recent_quantile(now: Option<&[(f64, f64)]>, before: Option<&[(f64, f64)]>) -> Option<f64> {
    let now = now?;
    let recent = before.and_then(|b| textformat::bucket_delta(now, b));
    let q = match recent {
        Some(d) if d.last().is_some_and(|(_, c)| *c > 0.0) => {
            textformat::histogram_quantile(0.95, &d)
        }
        _ => textformat::histogram_quantile(0.95, now),
    };
    q.map(|s| s * 1e3)
}

/// What the agents said, matched to the model's members.
#[derive(Debug, Default)]
pub struct AgentsObserved {
    /// By member name.
    pub statuses: BTreeMap<String, AgentStatus>,
    /// Per agent: whether it answered with a valid, fresh snapshot of a known member.
    pub up: Vec<(String, bool)>,
    /// Agents whose member was learnt from their snapshot in this cycle.
    pub learnt: Vec<(AgentTarget, String)>,
    pub failures: usize,
}

/// Matches agent answers to `model`'s members. An agent pinned to a member must report
/// that member; two agents reporting the same member are an error for the second; an
/// agent that fails is attributed to the member it reported last (`attribution`).
pub fn agents(
    results: &[(AgentTarget, Result<AgentReport, String>)],
    model: &ClusterModel,
    attribution: &Attribution,
) -> AgentsObserved {
    let mut out = AgentsObserved::default();
    let known = |member: &str| model.members.iter().any(|m| m.info.name == member);
    for (target, res) in results {
        let res =
            res.as_ref()
                .map_err(Clone::clone)
                .and_then(|r| match out.statuses.get(&r.member) {
                    Some(other) if other.up => Err(format!(
                        "agent at {} reports member {:?}, as does the agent at {}",
                        target.display, r.member, other.url
                    )),
                    _ => Ok(r),
                });
        out.up.push((
            target.display.clone(),
            res.as_ref().is_ok_and(|r| known(&r.member)),
        ));
        let res = res.and_then(|r| match &target.member {
            Some(pinned) if *pinned != r.member => Err(format!(
                "agent at {} reports member {:?}, not {pinned:?}",
                target.display, r.member
            )),
            _ => Ok(r),
        });
        match res {
            Ok(r) => {
                out.learnt.push((target.clone(), r.member.clone()));
                if !known(&r.member) {
                    tracing::debug!(member = %r.member, url = %target.display, "agent for an unknown member");
                    out.failures += 1;
                    continue;
                }
                out.statuses.insert(
                    r.member.clone(),
                    AgentStatus {
                        url: target.display.clone(),
                        up: true,
                        error: None,
                        memory_usage_bytes: r.memory_usage_bytes,
                        disk_usage_bytes: r.disk_usage_bytes,
                        active_connections: r.active_connections,
                        host: Some(r.host.clone()),
                    },
                );
            }
            Err(e) => {
                out.failures += 1;
                let Some(member) = attribution.member_of(target) else {
                    tracing::debug!(url = %target.display, error = %e, "agent not attributable");
                    continue;
                };
                out.statuses.insert(
                    member,
                    AgentStatus {
                        url: target.display.clone(),
                        up: false,
                        error: Some(e),
                        memory_usage_bytes: None,
                        disk_usage_bytes: None,
                        active_connections: None,
                        host: None,
                    },
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
