//! Guarded defragmentation and NOSPACE recovery.
//!
//! Public API (what `cli` and the exporter's maintenance API call; printing is theirs):
//!
//! ```text
//! pub struct Options { pub rolling: bool, pub dry_run: bool, pub rule: Option<rule::Rule>,
//!                      pub force: bool, pub member_timeout: Duration }   // + Default
//! pub async fn run(cfg: &common::etcd::EtcdConfig, opts: &Options) -> Result<Report, DefragError>
//! pub async fn recover_nospace(cfg: &common::etcd::EtcdConfig, force: bool, free_disk: &BTreeMap<String, u64>) -> Result<Report, DefragError>
//! pub fn plan(members: &[PlanMember], rule: Option<&Rule>, mode: Mode) -> Result<Plan, PlanError>  // pure
//! ```
//!
//! `Report` is `Serialize` (for `-o json`) and `Display` (a table for people). A run that
//! stops half-way returns `DefragError::Stopped { at, cause, report }`: `at` says which
//! member and which step, `report` what was done before. Exit codes: `Unhealthy`,
//! `NotRolling`, `NoNospace` and `Stopped` are "refused or failed" (1); `Plan(PlanError::Rule)`
//! comes from the operator's rule and is bad input (2) if the caller wants it so.
//!
//! Why the order: defragmenting rewrites a member's whole database and blocks it meanwhile.
//! On a follower that costs nothing while the others hold a quorum; on the leader it
//! stalls writes for the whole cluster (a 4 GB leader stalls it for tens of seconds). So
//! followers go first, one at a time, each checked healthy and caught up before the next;
//! then leadership moves (once) to a follower already done; then the former leader, now a
//! follower, goes last. The maintenance marker is held throughout so the exporter and the
//! rules know the leader change and the busy members are planned.
//!
//! A member's free disk must hold a copy of its DB to defragment. ctl cannot see members'
//! disks, their agents can: the check runs for the members in [`Options::free_disk`]
//! (ctl's `--agent`, the exporter's agents), and the report names those it skipped.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use common::etcd::EtcdConfig;
use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client, CompactionOptions};
use serde::Serialize;
use tokio::time::Instant;

use crate::cluster::{self, AlarmKind, ClusterView, GatherError};
use crate::guard::{self, Refusal};
use crate::marker::{self, Marker, MarkerError, MarkerGuard, Operation};
use crate::rule::{EvalError, Facts, Rule};

/// How to defragment.
#[derive(Debug, Clone)]
pub struct Options {
    /// One member at a time, the leader last (without it, `force` is required and every
    /// member is defragmented at once).
    pub rolling: bool,
    /// Plan, return the plan, touch nothing.
    pub dry_run: bool,
    /// Only members for which this holds.
    pub rule: Option<Rule>,
    /// Go ahead on an unhealthy cluster, and without `rolling`.
    pub force: bool,
    /// How long one member's defragment, catch-up or the leader transfer may take.
    pub member_timeout: Duration,
    /// Free bytes on each member's data-dir filesystem, by member name (from its agent):
    /// a member with less than its database's size free is refused. Members not in it
    /// are not checked, and the report says so.
    pub free_disk: BTreeMap<String, u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rolling: true,
            dry_run: false,
            rule: None,
            force: false,
            member_timeout: Duration::from_secs(300),
            free_disk: BTreeMap::new(),
        }
    }
}

/// One member as the plan sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanMember {
    pub id: u64,
    pub name: String,
    pub endpoint: String,
    pub is_leader: bool,
    pub is_learner: bool,
    pub db_size: u64,
    pub db_size_in_use: u64,
    pub quota: Option<u64>,
    /// Free bytes on the member's data disk, when known (from the agent; ctl has no way
    /// to know it).
    pub free_disk: Option<u64>,
}

/// A member a step acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub id: u64,
    pub name: String,
    pub endpoint: String,
}

impl From<&PlanMember> for Target {
    fn from(m: &PlanMember) -> Self {
        Target {
            id: m.id,
            name: m.name.clone(),
            endpoint: m.endpoint.clone(),
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    Defragment { member: Target },
    MoveLeader { from: Target, to: Target },
    DefragmentAtOnce { members: Vec<Target> },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Defragment { member } => {
                write!(f, "defragment {} ({})", member.name, member.endpoint)
            }
            Step::MoveLeader { from, to } => {
                write!(f, "move leadership from {} to {}", from.name, to.name)
            }
            Step::DefragmentAtOnce { members } => write!(
                f,
                "defragment {} at once",
                members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// A member the plan leaves alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub member: String,
    pub reason: String,
}

/// What will be done, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub skipped: Vec<Skipped>,
    pub notes: Vec<String>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.steps.is_empty() {
            writeln!(f, "nothing to do")?;
        }
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "{:>2}. {s}", i + 1)?;
        }
        for s in &self.skipped {
            writeln!(f, "    skip {}: {}", s.member, s.reason)?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

/// Rolling (one at a time, leader last) or all members at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Rolling,
    AtOnce,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("no member is the leader")]
    NoLeader,
    #[error("the rule cannot be evaluated for {member}")]
    Rule {
        member: String,
        #[source]
        source: EvalError,
    },
    #[error(
        "{member} has {} free on its disk, less than a copy of its {} database needs",
        bytes(*.free),
        bytes(*.need)
    )]
    NoDiskSpace {
        member: String,
        free: u64,
        need: u64,
    },
}

/// Orders the work: followers the rule selects, one at a time (voters then learners, by
/// name); then, if the leader is selected, one leadership transfer to a voting follower
/// (preferably one defragmented in this plan) and the leader last. Pure.
pub fn plan(members: &[PlanMember], rule: Option<&Rule>, mode: Mode) -> Result<Plan, PlanError> {
    let mut out = Plan::default();
    let mut selected = Vec::new();
    for m in members {
        let yes = match rule {
            None => true,
            Some(r) => r
                .evaluate(&Facts {
                    db_size: m.db_size,
                    db_size_in_use: m.db_size_in_use,
                    db_quota: m.quota,
                })
                .map_err(|source| PlanError::Rule {
                    member: m.name.clone(),
                    source,
                })?,
        };
        if !yes {
            out.skipped.push(Skipped {
                member: m.name.clone(),
                reason: format!(
                    "the rule does not hold (dbSize {}, dbSizeInUse {}{})",
                    bytes(m.db_size),
                    bytes(m.db_size_in_use),
                    m.quota
                        .map(|q| format!(", dbQuota {}", bytes(q)))
                        .unwrap_or_default()
                ),
            });
            continue;
        }
        if let Some(free) = m.free_disk {
            if free < m.db_size {
                return Err(PlanError::NoDiskSpace {
                    member: m.name.clone(),
                    free,
                    need: m.db_size,
                });
            }
        }
        selected.push(m);
    }
    let unchecked: Vec<&str> = selected
        .iter()
        .filter(|m| m.free_disk.is_none())
        .map(|m| m.name.as_str())
        .collect();
    if !unchecked.is_empty() {
        out.notes.push(format!(
            "free disk not checked for {}: no agent's figures (--agent MEMBER=URL); a defragment needs room for a copy of the database",
            unchecked.join(", ")
        ));
    }
    if mode == Mode::AtOnce {
        if !selected.is_empty() {
            out.notes.push(
                "all at once: every member blocks while it rewrites its database, and writes stall while the leader does".into(),
            );
            out.steps.push(Step::DefragmentAtOnce {
                members: selected.iter().map(|m| Target::from(*m)).collect(),
            });
        }
        return Ok(out);
    }
    let leader = members
        .iter()
        .find(|m| m.is_leader)
        .ok_or(PlanError::NoLeader)?;
    let mut followers: Vec<&PlanMember> =
        selected.iter().copied().filter(|m| !m.is_leader).collect();
    followers.sort_by(|a, b| (a.is_learner, &a.name).cmp(&(b.is_learner, &b.name)));
    for f in &followers {
        out.steps.push(Step::Defragment {
            member: Target::from(*f),
        });
    }
    if selected.iter().any(|m| m.is_leader) {
        let done = followers.iter().find(|m| !m.is_learner).copied();
        let mut others: Vec<&PlanMember> = members
            .iter()
            .filter(|m| !m.is_leader && !m.is_learner)
            .collect();
        others.sort_by(|a, b| a.name.cmp(&b.name));
        match done.or(others.first().copied()) {
            Some(to) => {
                if done.is_none() {
                    out.notes.push(format!(
                        "leadership goes to {}, which the rule leaves out (no follower is defragmented first)",
                        to.name
                    ));
                }
                out.steps.push(Step::MoveLeader {
                    from: Target::from(leader),
                    to: Target::from(to),
                });
            }
            None => out.notes.push(format!(
                "{} has no voting follower to hand leadership to: writes stall while it defragments",
                leader.name
            )),
        }
        out.steps.push(Step::Defragment {
            member: Target::from(leader),
        });
    }
    Ok(out)
}

/// `members` with the free disk known for each (by name).
fn with_free_disk(mut members: Vec<PlanMember>, free: &BTreeMap<String, u64>) -> Vec<PlanMember> {
    for m in &mut members {
        m.free_disk = free.get(&m.name).copied();
    }
    members
}

/// The plan's facts from a gathered view. Members that did not answer are left out (the
/// health check refuses such a cluster unless forced).
pub fn plan_input(view: &ClusterView) -> Vec<PlanMember> {
    let leader = view.leader();
    view.members
        .iter()
        .filter_map(|m| {
            let s = m.status()?;
            Some(PlanMember {
                id: m.info.id,
                name: m.label(),
                endpoint: m.endpoint.clone()?,
                is_leader: Some(m.info.id) == leader,
                is_learner: m.info.is_learner,
                db_size: u64::try_from(s.db_size_bytes).unwrap_or(0),
                db_size_in_use: u64::try_from(s.db_size_in_use_bytes).unwrap_or(0),
                quota: m.quota_bytes,
                free_disk: None,
            })
        })
        .collect()
}

/// What was done to one member.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberDone {
    pub name: String,
    pub id: u64,
    /// Whether it led the cluster when the run began.
    pub was_leader: bool,
    pub db_size_before: u64,
    pub db_size_in_use_before: u64,
    /// `None` if it did not answer afterwards within the time allowed.
    pub db_size_after: Option<u64>,
    pub duration_ms: u64,
}

/// The one leadership transfer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaderMove {
    pub from: String,
    pub to: String,
    pub duration_ms: u64,
}

/// What a run did (or, for a dry run, would do).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub operation: String,
    pub dry_run: bool,
    pub rule: Option<String>,
    pub plan: Plan,
    /// The revision compacted to (recover-nospace).
    pub compacted_to: Option<i64>,
    pub members: Vec<MemberDone>,
    pub leader_move: Option<LeaderMove>,
    /// Members whose NOSPACE alarm was disarmed (recover-nospace).
    pub disarmed: Vec<String>,
    pub notes: Vec<String>,
    pub duration_ms: u64,
}

impl Report {
    fn new(operation: Operation, plan: Plan, dry_run: bool, rule: Option<&Rule>) -> Self {
        Report {
            operation: operation.as_str().to_owned(),
            dry_run,
            rule: rule.map(|r| r.to_string()),
            plan,
            compacted_to: None,
            members: Vec::new(),
            leader_move: None,
            disarmed: Vec::new(),
            notes: Vec::new(),
            duration_ms: 0,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            writeln!(f, "{} plan (dry run, nothing done):", self.operation)?;
            if let Some(r) = &self.rule {
                writeln!(f, "rule: {r}")?;
            }
            return write!(f, "{}", self.plan);
        }
        if let Some(rev) = self.compacted_to {
            writeln!(f, "compacted to revision {rev}")?;
        }
        if self.members.is_empty() {
            writeln!(f, "no member defragmented")?;
        } else {
            let rows: Vec<[String; 6]> = self
                .members
                .iter()
                .map(|m| {
                    [
                        m.name.clone(),
                        if m.was_leader { "leader" } else { "follower" }.to_owned(),
                        bytes(m.db_size_before),
                        bytes(m.db_size_in_use_before),
                        m.db_size_after.map_or_else(|| "?".to_owned(), bytes),
                        format!("{:.2} s", m.duration_ms as f64 / 1000.0),
                    ]
                })
                .collect();
            let head = [
                "MEMBER",
                "WAS",
                "DB BEFORE",
                "IN USE BEFORE",
                "DB AFTER",
                "TIME",
            ];
            let mut w = head.map(str::len);
            for r in &rows {
                for (i, c) in r.iter().enumerate() {
                    w[i] = w[i].max(c.len());
                }
            }
            let line = |f: &mut fmt::Formatter<'_>, cells: [&str; 6]| {
                let mut s = String::new();
                for (i, c) in cells.iter().enumerate() {
                    s.push_str(&format!("{c:<width$}  ", width = w[i]));
                }
                writeln!(f, "{}", s.trim_end())
            };
            line(f, head)?;
            for r in &rows {
                line(f, [&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]])?;
            }
        }
        if let Some(m) = &self.leader_move {
            writeln!(
                f,
                "leadership moved from {} to {} in {:.2} s",
                m.from,
                m.to,
                m.duration_ms as f64 / 1000.0
            )?;
        }
        if !self.disarmed.is_empty() {
            writeln!(f, "NOSPACE disarmed on {}", self.disarmed.join(", "))?;
        }
        for s in &self.plan.skipped {
            writeln!(f, "skipped {}: {}", s.member, s.reason)?;
        }
        for n in self.plan.notes.iter().chain(&self.notes) {
            writeln!(f, "note: {n}")?;
        }
        writeln!(f, "done in {:.2} s", self.duration_ms as f64 / 1000.0)
    }
}

/// Where a run stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Where {
    pub member: Option<String>,
    pub phase: Phase,
}

impl fmt::Display for Where {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.member {
            Some(m) => write!(f, "{m}, {}", self.phase),
            None => write!(f, "{}", self.phase),
        }
    }
}

/// The step a run was at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    HealthCheck,
    Defragment,
    CatchUp,
    MoveLeader,
    Compact,
    Disarm,
    TestWrite,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::HealthCheck => "checking the cluster's health before it",
            Phase::Defragment => "defragmenting",
            Phase::CatchUp => "waiting for it to answer and catch up with the leader",
            Phase::MoveLeader => "moving leadership",
            Phase::Compact => "compacting",
            Phase::Disarm => "disarming NOSPACE",
            Phase::TestWrite => "checking that writes work again",
        })
    }
}

/// What went wrong in a step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("etcd refused or failed the request")]
    Etcd(#[source] etcd_client::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the cluster is not healthy: {}", .0.join("; "))]
    Unhealthy(Vec<String>),
    #[error(transparent)]
    Refused(Refusal),
    #[error("cannot gather the cluster's state")]
    Gather(#[source] GatherError),
    #[error("{0}")]
    Other(String),
}

/// Why a run did not happen or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DefragError {
    #[error(
        "refused: defragmenting every member at once blocks them all, and writes stall while the leader rewrites its database; use --rolling (or --force to do it anyway)"
    )]
    NotRolling,
    #[error("cannot gather the cluster's state")]
    Gather(#[source] GatherError),
    #[error("refused: the cluster is not healthy: {}; --force to go ahead anyway", .0.join("; "))]
    Unhealthy(Vec<String>),
    #[error("cannot plan")]
    Plan(#[from] PlanError),
    #[error("refused: no NOSPACE alarm is raised, there is nothing to recover")]
    NoNospace,
    #[error("cannot write the maintenance marker")]
    Marker(#[source] MarkerError),
    #[error("stopped at {at}")]
    Stopped {
        at: Where,
        #[source]
        cause: StepError,
        /// What was done before it stopped.
        report: Box<Report>,
    },
}

impl DefragError {
    /// What was done before the run stopped, if it had started.
    pub fn report(&self) -> Option<&Report> {
        match self {
            DefragError::Stopped { report, .. } => Some(report),
            _ => None,
        }
    }
}

/// What makes a cluster unfit for maintenance: no agreed leader, a member not answering,
/// an alarm (other than NOSPACE when recovering from it), an unreadable alarm list.
pub fn problems(view: &ClusterView, recovering_nospace: bool) -> Vec<String> {
    let mut out = Vec::new();
    if let Err(r) = guard::healthy(view) {
        out.push(r.to_string());
    }
    for a in &view.alarms {
        if !(recovering_nospace && a.kind == AlarmKind::Nospace) {
            let hint = if a.kind == AlarmKind::Nospace {
                " (recover-nospace handles it)"
            } else {
                ""
            };
            out.push(format!(
                "{} alarm on {}{hint}",
                a.kind,
                view.name_of(a.member_id)
            ));
        }
    }
    if let Some(e) = &view.alarms_error {
        out.push(format!("the alarm list cannot be read: {e}"));
    }
    out
}

async fn survey(cfg: &EtcdConfig) -> Result<ClusterView, GatherError> {
    cluster::gather(cfg, cluster::default_deadline(cfg)).await
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Defragments `cfg`'s cluster as `opts` says.
pub async fn run(cfg: &EtcdConfig, opts: &Options) -> Result<Report, DefragError> {
    let started = Instant::now();
    if !opts.rolling && !opts.force {
        return Err(DefragError::NotRolling);
    }
    let view = survey(cfg).await.map_err(DefragError::Gather)?;
    let found = problems(&view, false);
    if !found.is_empty() && !opts.force {
        return Err(DefragError::Unhealthy(found));
    }
    let mode = if opts.rolling {
        Mode::Rolling
    } else {
        Mode::AtOnce
    };
    let plan = plan(
        &with_free_disk(plan_input(&view), &opts.free_disk),
        opts.rule.as_ref(),
        mode,
    )?;
    let mut report = Report::new(Operation::Defrag, plan, opts.dry_run, opts.rule.as_ref());
    for p in found {
        report.notes.push(format!("forced despite: {p}"));
    }
    if opts.dry_run {
        return Ok(report);
    }
    let mut run = Runner {
        cfg,
        force: opts.force,
        timeout: opts.member_timeout,
        recovering: false,
        marker: Some(
            hold_marker(cfg, Operation::Defrag)
                .await
                .map_err(DefragError::Marker)?,
        ),
        report,
        initial_leader: view.leader(),
    };
    let res = run.steps().await;
    run.finish(res, started).await
}

/// Recovers from NOSPACE: compact to the current revision (physically), defragment every
/// member rolling (no rule), disarm NOSPACE where it is raised, then check that a write
/// works. Refused when no NOSPACE alarm is raised, and on an otherwise unhealthy cluster
/// unless `force`. The marker cannot be written while NOSPACE is raised (etcd refuses
/// leases and puts), so it is held only if etcd accepts it; the report says so.
/// `free_disk` as in [`Options::free_disk`].
pub async fn recover_nospace(
    cfg: &EtcdConfig,
    force: bool,
    free_disk: &BTreeMap<String, u64>,
) -> Result<Report, DefragError> {
    let started = Instant::now();
    let view = survey(cfg).await.map_err(DefragError::Gather)?;
    if !view.alarms.iter().any(|a| a.kind == AlarmKind::Nospace) {
        return Err(DefragError::NoNospace);
    }
    let found = problems(&view, true);
    if !found.is_empty() && !force {
        return Err(DefragError::Unhealthy(found));
    }
    let plan = plan(
        &with_free_disk(plan_input(&view), free_disk),
        None,
        Mode::Rolling,
    )?;
    let mut report = Report::new(Operation::RecoverNospace, plan, false, None);
    for p in found {
        report.notes.push(format!("forced despite: {p}"));
    }
    let marker = match hold_marker(cfg, Operation::RecoverNospace).await {
        Ok(g) => Some(g),
        Err(e) => {
            report.notes.push(format!(
                "no maintenance marker: etcd refuses new keys while NOSPACE is raised ({})",
                crate_error_chain(&e)
            ));
            None
        }
    };
    let mut run = Runner {
        cfg,
        force,
        timeout: Duration::from_secs(300),
        recovering: true,
        marker,
        report,
        initial_leader: view.leader(),
    };
    let revision = view
        .members
        .iter()
        .filter_map(|m| m.status().map(|s| s.revision))
        .max()
        .unwrap_or(0);
    let res = async {
        run.compact(revision).await?;
        run.steps().await?;
        run.disarm().await?;
        run.test_write().await
    }
    .await;
    run.finish(res, started).await
}

fn crate_error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    common::etcd::error_chain(e)
}

async fn hold_marker(cfg: &EtcdConfig, op: Operation) -> Result<MarkerGuard, MarkerError> {
    let client = cfg.connect_all().await.map_err(MarkerError::Grant)?;
    marker::hold(&client, Marker::new(op, Marker::this_process())).await
}

/// A run in progress.
struct Runner<'a> {
    cfg: &'a EtcdConfig,
    force: bool,
    timeout: Duration,
    recovering: bool,
    marker: Option<MarkerGuard>,
    report: Report,
    initial_leader: Option<u64>,
}

type StepResult = Result<(), (Where, StepError)>;

fn at(member: Option<&str>, phase: Phase) -> impl FnOnce(StepError) -> (Where, StepError) + '_ {
    move |e| {
        (
            Where {
                member: member.map(str::to_owned),
                phase,
            },
            e,
        )
    }
}

/// How often progress is polled while waiting.
const POLL: Duration = Duration::from_millis(250);

impl Runner<'_> {
    async fn finish(mut self, res: StepResult, started: Instant) -> Result<Report, DefragError> {
        if let Some(g) = self.marker.take() {
            self.report.notes.extend(g.warnings());
            if let Err(e) = g.release().await {
                self.report.notes.push(format!(
                    "the marker could not be removed, it expires within {} s: {}",
                    marker::TTL_SECS,
                    crate_error_chain(&e)
                ));
            }
        }
        self.report.duration_ms = ms(started.elapsed());
        match res {
            Ok(()) => Ok(self.report),
            Err((at, cause)) => Err(DefragError::Stopped {
                at,
                cause,
                report: Box::new(self.report),
            }),
        }
    }

    /// A fresh view, refused (unless forced) if the cluster is not fit.
    async fn healthy_view(
        &mut self,
        member: Option<&str>,
    ) -> Result<ClusterView, (Where, StepError)> {
        let view = survey(self.cfg)
            .await
            .map_err(|e| at(member, Phase::HealthCheck)(StepError::Gather(e)))?;
        let found = problems(&view, self.recovering);
        if !found.is_empty() {
            if !self.force {
                return Err(at(member, Phase::HealthCheck)(StepError::Unhealthy(found)));
            }
            for p in found {
                self.report.notes.push(format!(
                    "forced on before {}: {p}",
                    member.unwrap_or("the next step")
                ));
            }
        }
        Ok(view)
    }

    async fn mark(&mut self, member: Option<String>) {
        if let Some(g) = self.marker.as_mut() {
            if let Err(e) = g.update(member).await {
                self.report.notes.push(format!(
                    "the marker could not be updated: {}",
                    crate_error_chain(&e)
                ));
            }
        }
    }

    async fn steps(&mut self) -> StepResult {
        let steps = self.report.plan.steps.clone();
        for step in steps {
            match step {
                Step::Defragment { member } => self.defragment(&member).await?,
                Step::MoveLeader { from, to } => self.move_leader(&from, &to).await?,
                Step::DefragmentAtOnce { members } => self.at_once(&members).await?,
            }
        }
        self.mark(None).await;
        Ok(())
    }

    async fn defragment(&mut self, t: &Target) -> StepResult {
        let name = Some(t.name.as_str());
        let view = self.healthy_view(name).await?;
        let Some(before) = view.member(t.id).and_then(|m| m.status()).cloned() else {
            return Err(at(name, Phase::HealthCheck)(StepError::Other(
                "the member does not answer or has left the cluster".into(),
            )));
        };
        self.mark(Some(t.name.clone())).await;
        let started = Instant::now();
        defragment_one(self.cfg, t, self.timeout)
            .await
            .map_err(at(name, Phase::Defragment))?;
        let after = wait_caught_up(self.cfg, t, self.timeout)
            .await
            .map_err(at(name, Phase::CatchUp))?;
        self.report.members.push(MemberDone {
            name: t.name.clone(),
            id: t.id,
            was_leader: self.initial_leader == Some(t.id),
            db_size_before: u64::try_from(before.db_size_bytes).unwrap_or(0),
            db_size_in_use_before: u64::try_from(before.db_size_in_use_bytes).unwrap_or(0),
            db_size_after: Some(after),
            duration_ms: ms(started.elapsed()),
        });
        Ok(())
    }

    async fn move_leader(&mut self, from: &Target, to: &Target) -> StepResult {
        let name = Some(from.name.as_str());
        let view = self.healthy_view(name).await?;
        if view.leader() != Some(from.id) {
            self.report.notes.push(format!(
                "no leadership transfer: {} no longer led ({} did)",
                from.name,
                view.leader()
                    .map_or_else(|| "none".to_owned(), |l| view.name_of(l))
            ));
            return Ok(());
        }
        self.mark(Some(from.name.clone())).await;
        let started = Instant::now();
        let fail = at(name, Phase::MoveLeader);
        let deadline = started + self.timeout;
        let res: Result<(), StepError> = async {
            let mut c = connect(self.cfg, &from.endpoint, self.timeout).await?;
            tokio::time::timeout(self.timeout, c.move_leader(to.id))
                .await
                .map_err(|_| StepError::Timeout(self.timeout))?
                .map_err(StepError::Etcd)?;
            // Every answering member must agree on the new leader before going on.
            loop {
                if let Ok(v) = survey(self.cfg).await {
                    if v.leader() == Some(to.id) && v.down().is_empty() {
                        return Ok(());
                    }
                }
                if Instant::now() >= deadline {
                    return Err(StepError::Other(format!(
                        "the members did not all follow {} within {:?}",
                        to.name, self.timeout
                    )));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        .await;
        res.map_err(fail)?;
        self.report.leader_move = Some(LeaderMove {
            from: from.name.clone(),
            to: to.name.clone(),
            duration_ms: ms(started.elapsed()),
        });
        Ok(())
    }

    async fn at_once(&mut self, members: &[Target]) -> StepResult {
        let view = survey(self.cfg)
            .await
            .map_err(|e| at(None, Phase::HealthCheck)(StepError::Gather(e)))?;
        self.mark(None).await;
        let started = Instant::now();
        let (cfg, timeout) = (self.cfg, self.timeout);
        let runs = members.iter().map(|t| async move {
            let r = defragment_one(cfg, t, timeout).await;
            (t, r, started.elapsed())
        });
        let results = futures::future::join_all(runs).await;
        let mut first_error = None;
        for (t, r, took) in results {
            let before = view.member(t.id).and_then(|m| m.status());
            let after = match &r {
                Ok(()) => wait_caught_up(self.cfg, t, self.timeout).await.ok(),
                Err(_) => None,
            };
            self.report.members.push(MemberDone {
                name: t.name.clone(),
                id: t.id,
                was_leader: self.initial_leader == Some(t.id),
                db_size_before: before.map_or(0, |s| u64::try_from(s.db_size_bytes).unwrap_or(0)),
                db_size_in_use_before: before
                    .map_or(0, |s| u64::try_from(s.db_size_in_use_bytes).unwrap_or(0)),
                db_size_after: after,
                duration_ms: ms(took),
            });
            if let (Err(e), None) = (r, &first_error) {
                first_error = Some((t.name.clone(), e));
            }
        }
        match first_error {
            Some((name, e)) => Err(at(Some(&name), Phase::Defragment)(e)),
            None => Ok(()),
        }
    }

    async fn compact(&mut self, revision: i64) -> StepResult {
        let fail = at(None, Phase::Compact);
        if revision <= 0 {
            return Err(fail(StepError::Other(
                "no member reported a revision".into(),
            )));
        }
        let mut c = match self.cfg.connect_all().await {
            Ok(c) => c,
            Err(e) => return Err(fail(StepError::Etcd(e))),
        };
        let res = tokio::time::timeout(
            self.timeout,
            c.compact(revision, Some(CompactionOptions::new().with_physical())),
        )
        .await;
        match res {
            Err(_) => return Err(fail(StepError::Timeout(self.timeout))),
            // Compacted already at or past this revision: nothing is lost by going on.
            Ok(Err(e))
                if e.to_string()
                    .contains("required revision has been compacted") =>
            {
                self.report
                    .notes
                    .push(format!("revision {revision} was already compacted"));
            }
            Ok(Err(e)) => return Err(fail(StepError::Etcd(e))),
            Ok(Ok(_)) => {}
        }
        self.report.compacted_to = Some(revision);
        Ok(())
    }

    async fn disarm(&mut self) -> StepResult {
        let fail = at(None, Phase::Disarm);
        let view = survey(self.cfg)
            .await
            .map_err(|e| at(None, Phase::Disarm)(StepError::Gather(e)))?;
        // Disarming while the database is still nearly full re-trips the alarm at once.
        if let Err(r) = guard::disarm(&view) {
            if !self.force {
                return Err(fail(StepError::Refused(r)));
            }
            self.report.notes.push(format!("disarmed despite: {r}"));
        }
        let mut c = match self.cfg.connect_all().await {
            Ok(c) => c,
            Err(e) => return Err(fail(StepError::Etcd(e))),
        };
        for a in view.alarms.iter().filter(|a| a.kind == AlarmKind::Nospace) {
            let mut opts = AlarmOptions::new();
            opts.with_member(a.member_id);
            let name = view.name_of(a.member_id);
            tokio::time::timeout(
                self.cfg.command_timeout,
                c.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(opts)),
            )
            .await
            .map_err(|_| StepError::Timeout(self.cfg.command_timeout))
            .and_then(|r| r.map_err(StepError::Etcd))
            .map_err(at(Some(&name), Phase::Disarm))?;
            self.report.disarmed.push(name);
        }
        Ok(())
    }

    async fn test_write(&mut self) -> StepResult {
        let key = format!(
            "{}recover-nospace-probe/{}",
            marker::PREFIX,
            std::process::id()
        );
        let res: Result<(), StepError> = async {
            let mut c = self.cfg.connect_all().await.map_err(StepError::Etcd)?;
            c.put(key.as_str(), "ok", None)
                .await
                .map_err(StepError::Etcd)?;
            c.delete(key.as_str(), None)
                .await
                .map_err(StepError::Etcd)?;
            Ok(())
        }
        .await;
        res.map_err(at(None, Phase::TestWrite))
    }
}

/// A connection to one member whose requests may take `timeout` (a defragment takes as
/// long as rewriting the database does, far longer than an ordinary request).
async fn connect(cfg: &EtcdConfig, endpoint: &str, timeout: Duration) -> Result<Client, StepError> {
    let mut long = cfg.clone();
    long.command_timeout = timeout.max(cfg.command_timeout);
    long.connect(endpoint).await.map_err(StepError::Etcd)
}

/// The Defragment RPC, which acts on the member it is sent to.
async fn defragment_one(cfg: &EtcdConfig, t: &Target, timeout: Duration) -> Result<(), StepError> {
    let mut c = connect(cfg, &t.endpoint, timeout).await?;
    tokio::time::timeout(timeout, c.defragment())
        .await
        .map_err(|_| StepError::Timeout(timeout))?
        .map_err(StepError::Etcd)?;
    Ok(())
}

/// Waits until the member answers and has applied everything the leader had committed
/// when the member first answered again; returns its DB size then.
async fn wait_caught_up(cfg: &EtcdConfig, t: &Target, timeout: Duration) -> Result<u64, StepError> {
    let deadline = Instant::now() + timeout;
    let mut goal: Option<u64> = None;
    let mut last;
    loop {
        match survey(cfg).await {
            Ok(view) => {
                let me = view.member(t.id).and_then(|m| m.status());
                let leader = view
                    .leader()
                    .and_then(|l| view.member(l))
                    .and_then(|m| m.status());
                match (me, leader) {
                    (Some(me), Some(leader)) => {
                        let g = *goal.get_or_insert(leader.raft_index);
                        if me.raft_applied_index >= g {
                            return Ok(u64::try_from(me.db_size_bytes).unwrap_or(0));
                        }
                        last = format!(
                            "applied index {} of the leader's {g}",
                            me.raft_applied_index
                        );
                    }
                    (None, _) => last = "the member does not answer".into(),
                    (_, None) => last = "no leader".into(),
                }
            }
            Err(e) => last = crate_error_chain(&e),
        }
        if Instant::now() >= deadline {
            return Err(StepError::Other(format!(
                "not caught up within {timeout:?}: {last}"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Bytes for people: `12.3 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
#[path = "defrag/tests.rs"]
mod tests;
