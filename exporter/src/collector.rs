//! One cluster's collection loop. Every interval a cycle runs four stages with types
//! between them:
//!
//! 1. [`gather`]: the I/O, each member under the cycle's deadline → [`gather::Gathered`];
//! 2. [`observe`]: pure, the answers understood → [`observe::Observation`] (facts, the
//!    member list, per-member findings, typed errors);
//! 3. [`model::derive`]: pure, facts → [`ClusterModel`];
//! 4. publish: the state that spans cycles (connections, probe windows and histograms,
//!    history, leader changes, error counts) is brought up to date and one immutable
//!    [`Snapshot`] goes out. `/metrics` and the API read only snapshots.
//!
//! A cycle also runs at once when a member's connection breaks (a crash, a kill, a
//! restart), so a lost quorum is seen in well under a second rather than at the next tick.
//!
//! Invariants: a cycle never takes longer than the member deadline (a frozen member costs
//! at most that); the collector task owns all its state, so nothing here is locked; each
//! cluster has its own task, so one cluster's hung members never delay another's cycle.

pub mod gather;
pub mod observe;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agents::Attribution;
use crate::config::{ClusterConfig, Config};
use crate::etcd::{self as rpc, Connections, Lease};
use crate::metrics::{percentile, NativeFamilies};
use crate::model::{self, ClusterModel, LeaderTracker, MemberInfo};
pub use crate::snapshot::{Consistency, ErrorSource};
use crate::snapshot::{
    ErrorCounts, HistoryPoint, Latency, Percentiles, ProbeHistograms, ProbeRecord, Snapshot,
};

use gather::{Gathered, Reach};
use observe::{NativeMemory, Observation};

/// Probes kept for the latency window, per kind.
pub const PROBE_WINDOW: usize = 1000;

/// The shortest time from one cycle's start to a cycle woken by a broken connection:
/// longer than an election (1-2 s), so that two cycles in a row, which the quorum alerts
/// need before they page (rules/etcd-alerts.yml), never both fall within one.
pub const MIN_WAKE_GAP: std::time::Duration = std::time::Duration::from_secs(2);

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The collector task's state: everything that spans cycles.
pub struct Collector {
    cfg: Arc<Config>,
    cluster: ClusterConfig,
    /// For members' `/metrics` and `/health` (the etcd TLS settings).
    http: reqwest::Client,
    /// For the agents: no etcd client certificate or CA.
    agent_http: reqwest::Client,
    conns: Connections,
    /// Notified by [`Connections`] when a member's connection breaks.
    wake: Arc<tokio::sync::Notify>,
    known: Vec<MemberInfo>,
    /// Which member last answered at each endpoint (for the write probe's record).
    owners: HashMap<String, u64>,
    natives: HashMap<u64, NativeMemory>,
    tracker: LeaderTracker,
    debouncer: model::Debouncer,
    attribution: Attribution,
    last_leader: Option<u64>,
    was_up: HashMap<u64, bool>,
    /// Last version seen per member, so `etcd_member_info` keeps its labels while down.
    versions: HashMap<u64, String>,
    probes: ProbeHistograms,
    reads: VecDeque<ProbeRecord>,
    writes: VecDeque<ProbeRecord>,
    history: VecDeque<HistoryPoint>,
    errors: ErrorCounts,
    /// The maintenance marker the last cycle saw.
    maintenance: Option<ctl::marker::Marker>,
    cycle: u64,
}

impl Collector {
    pub fn new(cfg: Arc<Config>, cluster: ClusterConfig) -> Result<Self, reqwest::Error> {
        let http = cluster.etcd.http_client()?;
        let agent_http = cfg.components.client(cluster.member_timeout)?;
        let wake = Arc::new(tokio::sync::Notify::new());
        Ok(Collector {
            cfg,
            cluster,
            http,
            agent_http,
            conns: Connections::waking(wake.clone()),
            wake,
            known: Vec::new(),
            owners: HashMap::new(),
            natives: HashMap::new(),
            tracker: LeaderTracker::default(),
            debouncer: model::Debouncer::default(),
            attribution: Attribution::default(),
            last_leader: None,
            was_up: HashMap::new(),
            versions: HashMap::new(),
            probes: ProbeHistograms::default(),
            reads: VecDeque::new(),
            writes: VecDeque::new(),
            history: VecDeque::new(),
            errors: ErrorCounts::default(),
            maintenance: None,
            cycle: 0,
        })
    }

    /// Runs cycles every interval until `shutdown`, publishing each snapshot on `tx`.
    ///
    /// A member whose connection breaks wakes a cycle at once (see [`crate::etcd`]); the
    /// next tick then comes a full interval later. Woken cycles are at least
    /// [`MIN_WAKE_GAP`] apart from the previous cycle's start, so a member that flaps
    /// cannot make the collector spin.
    pub async fn run(mut self, tx: watch::Sender<Arc<Snapshot>>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.cfg.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_start: Option<Instant> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
                () = self.wake.notified() => {
                    if let Some(at) = last_start.map(|t| t + MIN_WAKE_GAP) {
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep_until(at) => {}
                        }
                    }
                    ticker.reset();
                }
            }
            last_start = Some(Instant::now());
            let snap = tokio::select! {
                () = shutdown.cancelled() => break,
                snap = self.cycle() => snap,
            };
            tx.send_replace(Arc::new(snap));
        }
        tracing::debug!(
            cluster = self.cluster.name.as_deref().unwrap_or(""),
            "collector stopped"
        );
    }

    fn configured(&self) -> Vec<String> {
        self.cluster
            .etcd
            .endpoints
            .iter()
            .map(common::etcd::endpoint_str)
            .collect()
    }

    /// One collection cycle.
    pub async fn cycle(&mut self) -> Snapshot {
        let started = Instant::now();
        let wall = SystemTime::now();
        let deadline = started + self.cluster.member_timeout;
        self.cycle += 1;

        if self.known.is_empty() {
            self.bootstrap(deadline).await;
        }
        let gathered = self.gather(started, deadline).await;
        let observation = observe::observe(&gathered, &self.known, &self.natives, started);
        self.settle(&gathered, &observation);
        let mut model = model::derive(&observation.facts);
        self.debouncer.apply(&mut model);
        self.publish(wall, started, gathered, observation, model)
    }

    /// One member list from any configured endpoint, for the very first cycles.
    async fn bootstrap(&mut self, deadline: Instant) {
        for url in self.configured() {
            let mut client = match self.conns.lease(&url, Instant::now()) {
                Lease::Ready(c) => *c,
                Lease::Connect => match rpc::connect(&self.cluster.etcd, &url, deadline).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(endpoint = %url, error = %e, "bootstrap connect failed");
                        self.conns.settle(&url, None, Some(&e), Instant::now());
                        continue;
                    }
                },
                Lease::Backoff(..) => continue,
            };
            let error = match rpc::member_list(&mut client, deadline).await {
                Ok(list) if !list.is_empty() => {
                    self.conns.settle(&url, Some(client), None, Instant::now());
                    self.known = list;
                    return;
                }
                Ok(_) => "empty member list".to_owned(),
                Err(e) => e,
            };
            self.conns
                .settle(&url, Some(client), Some(&error), Instant::now());
        }
    }

    async fn gather(&mut self, started: Instant, deadline: Instant) -> Gathered {
        let targets: Vec<_> = gather::plan(&self.known, &self.configured())
            .into_iter()
            .map(|t| {
                let lease = match &t.url {
                    Some(url) => self.conns.lease(url, started),
                    None => Lease::Backoff(std::time::Duration::ZERO, None),
                };
                (t, lease)
            })
            .collect();
        // The alarm list goes through raft: ask one member per cycle (the last leader,
        // else the first), not every member.
        let alarm_target = targets
            .iter()
            .position(|(t, _)| {
                self.last_leader.is_some() && t.info.as_ref().map(|i| i.id) == self.last_leader
            })
            .unwrap_or(0);
        let writer = self.conns.any(self.cycle as usize);
        let probe_key = format!("{}probe", self.cfg.probe_prefix);
        let reach = Reach {
            etcd: &self.cluster.etcd,
            http: &self.http,
            agent_http: &self.agent_http,
            agents: &self.cluster.agents,
            probe_key: &probe_key,
        };
        gather::gather(&reach, targets, alarm_target, writer, deadline).await
    }

    /// Connections and what is remembered of members for the next cycle.
    fn settle(&mut self, gathered: &Gathered, obs: &Observation) {
        let now = Instant::now();
        for (i, error) in &obs.connections {
            let g = &gathered.members[*i];
            if let Some(url) = &g.target.url {
                self.conns
                    .settle(url, g.client.clone(), error.as_deref(), now);
            }
        }
        self.owners.extend(obs.owners.iter().cloned());
        if let Some(list) = &obs.member_list {
            self.known.clone_from(list);
        }
        let asked: Vec<&str> = gathered
            .members
            .iter()
            .filter_map(|g| g.target.url.as_deref())
            .collect();
        self.conns.retain(|u| asked.contains(&u));
        self.owners.retain(|u, _| asked.contains(&u.as_str()));
        for (id, f) in &obs.members {
            if let Some((_, memory)) = &f.native {
                self.natives.insert(*id, memory.clone());
            }
        }
    }

    /// Brings the cross-cycle state up to date with this cycle and builds its snapshot.
    fn publish(
        &mut self,
        wall: SystemTime,
        started: Instant,
        gathered: Gathered,
        mut obs: Observation,
        model: ClusterModel,
    ) -> Snapshot {
        let at_ms = unix_ms(wall);
        // A maintenance that began and ended since the last cycle left no marker to read,
        // but the watches saw it written: it counts for this cycle.
        let between = self.conns.take_marker_seen();
        obs.maintenance = obs.maintenance.take().or(between);
        self.track_leader(wall, &model, obs.maintenance.as_ref());
        self.track_maintenance(obs.maintenance.as_ref());
        self.log_up_down(&model);
        self.forget_departed(&model);

        let agents = observe::agents(&gathered.agents, &model, &self.attribution);
        for (target, member) in &agents.learnt {
            self.attribution.learn(target, member);
        }
        let mut errors = obs.errors;
        errors.extend(std::iter::repeat_n(ErrorSource::Agent, agents.failures));
        for e in errors {
            self.errors.add(e);
        }

        let name_of = |id: u64| {
            model
                .members
                .iter()
                .find(|m| m.info.id == id)
                .map(|m| m.info.name.clone())
        };
        let mut extras = std::collections::BTreeMap::new();
        let mut natives = Vec::new();
        for (id, f) in obs.members {
            let Some(name) = name_of(id) else { continue };
            self.record_reads(at_ms, &name, &f.reads);
            if let Some((exp, _)) = f.native {
                natives.push((name, exp));
            }
            let mut x = f.extras;
            x.last_version = self.versions.get(&id).cloned();
            extras.insert(id, x);
        }
        let (native, conflicts) = NativeFamilies::render(
            self.cluster.name.as_deref(),
            &natives,
            self.cfg.native_metrics,
        );
        for _ in 0..conflicts {
            self.errors.add(ErrorSource::MemberMetricsConflict);
        }
        if let Some(w) = &gathered.write {
            let member = self
                .owners
                .get(&w.url)
                .and_then(|id| name_of(*id))
                .unwrap_or_else(|| w.url.clone());
            self.record_write(at_ms, member, &w.result);
        }
        let latency = Latency {
            read: window_percentiles(&self.reads),
            write: window_percentiles(&self.writes),
            reads: self.reads.iter().cloned().collect(),
            writes: self.writes.iter().cloned().collect(),
        };
        let collect_duration_ms = started.elapsed().as_secs_f64() * 1e3;
        self.push_history(history_point(
            at_ms,
            &model,
            obs.request_rate,
            &latency,
            collect_duration_ms,
        ));
        Snapshot {
            cluster: self.cluster.name.clone(),
            cycle: self.cycle,
            at_unix_ms: at_ms,
            interval_ms: self.cfg.interval.as_millis() as u64,
            leader_history: self.tracker.history().cloned().collect(),
            leader_changes_total: self.tracker.changes_total(),
            leader_changes_planned_total: self.tracker.planned_total(),
            maintenance: obs.maintenance,
            model,
            extras,
            agents: agents.statuses,
            request_rate_per_second: obs.request_rate,
            latency: Arc::new(latency),
            history: Arc::new(self.history.iter().cloned().collect()),
            collect_duration_ms,
            collect_errors: self.errors.clone(),
            probes: self.probes.clone(),
            native: Arc::new(native),
            agents_up: agents.up,
        }
    }

    /// Counts a leader change; planned when a maintenance marker was up now, since the
    /// last cycle or in it (a leader moved away before its defragmentation).
    fn track_leader(
        &mut self,
        wall: SystemTime,
        model: &ClusterModel,
        maintenance: Option<&ctl::marker::Marker>,
    ) {
        self.last_leader = model.leader.as_ref().map(|l| l.id);
        let Some(change) = self.tracker.observe(model, wall) else {
            return;
        };
        let during = maintenance.or(self.maintenance.as_ref());
        if let Some(m) = during {
            self.tracker.mark_planned(m.operation.as_str());
        }
        tracing::warn!(
            cluster = self.cluster.name.as_deref().unwrap_or(""),
            from = change.from.as_deref().unwrap_or("-"),
            to = %change.to,
            term = change.term,
            planned = during.map(|m| m.operation.as_str()).unwrap_or(""),
            "leader changed"
        );
    }

    /// Remembers the maintenance running (for the next cycle's leader change), and logs
    /// its start and end.
    fn track_maintenance(&mut self, now: Option<&ctl::marker::Marker>) {
        if now != self.maintenance.as_ref() {
            let cluster = self.cluster.name.as_deref().unwrap_or("");
            match now {
                Some(m) => {
                    tracing::info!(cluster, operation = %m.operation, by = %m.by, "maintenance started");
                }
                None => tracing::info!(cluster, "maintenance ended"),
            }
        }
        self.maintenance = now.cloned();
    }

    /// A member's read probes into the histograms (the ones that answered) and the window.
    fn record_reads(
        &mut self,
        at_ms: u64,
        member: &str,
        reads: &[(Consistency, Result<Duration, String>)],
    ) {
        for (consistency, result) in reads {
            if let Ok(d) = result {
                self.probes
                    .read
                    .entry((member.to_owned(), *consistency))
                    .or_default()
                    .observe(d.as_secs_f64());
            }
            push_window(
                &mut self.reads,
                probe_record(at_ms, "read", Some(consistency.short()), member, result),
            );
        }
    }

    /// The write probe into its histogram (when it answered) and the window.
    fn record_write(&mut self, at_ms: u64, member: String, result: &Result<Duration, String>) {
        if let Ok(d) = result {
            self.probes.write.observe(d.as_secs_f64());
        }
        push_window(
            &mut self.writes,
            probe_record(at_ms, "write", None, &member, result),
        );
    }

    fn log_up_down(&mut self, model: &ClusterModel) {
        for m in &model.members {
            let was = self.was_up.insert(m.info.id, m.up);
            if was == Some(m.up) || (was.is_none() && m.up) {
                continue;
            }
            let cluster = self.cluster.name.as_deref().unwrap_or("");
            if m.up {
                tracing::info!(cluster, member = %m.info.name, "member is up");
            } else {
                tracing::warn!(cluster, member = %m.info.name, error = m.error.as_deref().unwrap_or(""), "member is down");
            }
        }
    }

    /// Drops per-member state of members that left the cluster, so that nothing grows
    /// with member churn.
    fn forget_departed(&mut self, model: &ClusterModel) {
        let ids: std::collections::BTreeSet<u64> =
            model.members.iter().map(|m| m.info.id).collect();
        self.natives.retain(|id, _| ids.contains(id));
        self.was_up.retain(|id, _| ids.contains(id));
        for m in &model.members {
            if let Some(v) = &m.version {
                self.versions.insert(m.info.id, v.clone());
            }
        }
        self.versions.retain(|id, _| ids.contains(id));
        self.probes
            .read
            .retain(|(name, _), _| model.members.iter().any(|m| m.info.name == *name));
    }

    fn push_history(&mut self, p: HistoryPoint) {
        let keep = (self.cfg.history_retention.as_millis() / self.cfg.interval.as_millis().max(1))
            .max(1) as usize;
        while self.history.len() >= keep {
            self.history.pop_front();
        }
        self.history.push_back(p);
    }
}

/// One probe for the window.
fn probe_record(
    at_ms: u64,
    kind: &'static str,
    consistency: Option<&'static str>,
    member: &str,
    result: &Result<Duration, String>,
) -> ProbeRecord {
    ProbeRecord {
        at_unix_ms: at_ms,
        kind,
        consistency,
        member: member.to_owned(),
        duration_ms: result.as_ref().ok().map(|d| d.as_secs_f64() * 1e3),
        error: result.as_ref().err().cloned(),
    }
}

/// The cycle's point in the history.
fn history_point(
    at_ms: u64,
    model: &ClusterModel,
    request_rate: Option<f64>,
    latency: &Latency,
    collect_duration_ms: f64,
) -> HistoryPoint {
    HistoryPoint {
        at_unix_ms: at_ms,
        healthy: model.healthy,
        has_leader: model.has_leader,
        leader: model.leader.as_ref().map(|l| l.name.clone()),
        member_count: model.member_count,
        healthy_members: model.healthy_members,
        split_brain: model.split_brain,
        partitioned_members: model.partitioned_members.len(),
        revision_divergence: model.revision_divergence,
        raft_index_divergence: model.raft_index_divergence,
        max_revision: model.members.iter().filter_map(|m| m.revision).max(),
        max_db_size_bytes: model.members.iter().filter_map(|m| m.db_size_bytes).max(),
        request_rate_per_second: request_rate,
        read_p99_ms: latency.read.p99,
        write_p99_ms: latency.write.p99,
        collect_duration_ms,
    }
}

fn push_window(w: &mut VecDeque<ProbeRecord>, r: ProbeRecord) {
    if w.len() == PROBE_WINDOW {
        w.pop_front();
    }
    w.push_back(r);
}

fn window_percentiles(w: &VecDeque<ProbeRecord>) -> Percentiles {
    let mut ok: Vec<f64> = w.iter().filter_map(|r| r.duration_ms).collect();
    ok.sort_by(f64::total_cmp);
    Percentiles {
        count: ok.len(),
        errors: w.len() - ok.len(),
        p50: percentile(&ok, 0.50),
        p95: percentile(&ok, 0.95),
        p99: percentile(&ok, 0.99),
    }
}

/// Starts one collector task per cluster; returns the channels their snapshots arrive on,
/// in the configuration's order.
pub fn spawn(
    cfg: Arc<Config>,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> Result<Vec<watch::Receiver<Arc<Snapshot>>>, reqwest::Error> {
    let mut receivers = Vec::new();
    for cluster in &cfg.clusters {
        let name = cluster.name.clone();
        let collector = Collector::new(cfg.clone(), cluster.clone())?;
        let (tx, rx) = watch::channel(Arc::new(Snapshot::empty(
            name,
            cfg.interval.as_millis() as u64,
        )));
        tracker.spawn(collector.run(tx, shutdown.clone()));
        receivers.push(rx);
    }
    Ok(receivers)
}
