//! The collection cycle: every interval, ask every member (each over its own connection
//! and against its own deadline) for status, member list, alarms, read probes, `/health`
//! and `/metrics`, time one write probe, derive the cluster model, update the metric
//! families and publish one immutable [`Snapshot`].
//!
//! Invariants: a cycle never takes longer than the member deadline (a frozen member
//! costs at most that); the collector task owns all its state, so nothing here is locked;
//! readers only see whole snapshots.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcd_client::Client;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agents::{self, AgentReport, Attribution};
use crate::config::Config;
use crate::etcd::{self as rpc, Connections, Lease};
use crate::metrics::{percentile, AlarmLabels, InfoLabels, MemberLabel, Metrics, ReadProbeLabels};
use crate::model::{
    self, Alarm, ClusterModel, Facts, LeaderTracker, MemberInfo, MemberObservation, StatusFacts,
};
use crate::scrape;
use crate::snapshot::{
    AgentStatus, HistoryPoint, Latency, MemberExtras, Percentiles, ProbeRecord, Snapshot,
};
use crate::textformat::{self, Exposition};

/// Probes kept for the latency window, per kind.
pub const PROBE_WINDOW: usize = 1000;

struct Target {
    info: Option<MemberInfo>,
    url: String,
}

struct Gathered {
    target: Target,
    client: Option<Client>,
    status: Result<StatusFacts, String>,
    members: Option<Result<Vec<MemberInfo>, String>>,
    alarms: Option<Result<Vec<(u64, Alarm)>, String>>,
    read_l: Option<Result<Duration, String>>,
    read_s: Option<Result<Duration, String>>,
    native: Option<Result<Exposition, String>>,
    health: Option<Result<bool, String>>,
    connect_error: bool,
    /// No attempt was made (the connection is backing off).
    skipped: bool,
}

impl Gathered {
    fn failed(target: Target, client: Option<Client>, error: String, connect_error: bool) -> Self {
        Gathered {
            target,
            client,
            status: Err(error),
            members: None,
            alarms: None,
            read_l: None,
            read_s: None,
            native: None,
            health: None,
            connect_error,
            skipped: false,
        }
    }
}

/// What is kept of a member's `/metrics` between cycles, for rates and recent quantiles.
struct NativePrev {
    at: Instant,
    unary_started: Option<f64>,
    wal: Option<Vec<(f64, f64)>>,
    commit: Option<Vec<(f64, f64)>>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether two endpoint URLs name the same place (ignoring a trailing slash and case).
fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

fn host_port(url: &str) -> String {
    url.split("://")
        .nth(1)
        .unwrap_or(url)
        .trim_end_matches('/')
        .to_owned()
}

/// The collector task's state.
pub struct Collector {
    cfg: Arc<Config>,
    http: reqwest::Client,
    conns: Connections,
    known: Vec<MemberInfo>,
    endpoint_owner: HashMap<String, u64>,
    tracker: LeaderTracker,
    metrics: Metrics,
    prev_native: HashMap<u64, NativePrev>,
    prev_up: HashMap<u64, bool>,
    reads: VecDeque<ProbeRecord>,
    writes: VecDeque<ProbeRecord>,
    history: VecDeque<HistoryPoint>,
    errors: BTreeMap<String, u64>,
    cycle: u64,
    turn: usize,
    attribution: Attribution,
    last_leader: Option<u64>,
    debouncer: model::Debouncer,
    agent_http: reqwest::Client,
    /// Last version seen per member, so `etcd_member_info` keeps its labels while down.
    versions: HashMap<u64, String>,
    /// Members that have probe histograms, to drop them when they leave.
    probed: std::collections::BTreeSet<String>,
}

impl Collector {
    pub fn new(cfg: Arc<Config>) -> Result<Self, reqwest::Error> {
        let http = cfg.etcd.http_client()?;
        // Agents are not etcd: no etcd client certificate or CA for them.
        let agent_http = cfg.components.client(cfg.member_timeout)?;
        Ok(Collector {
            cfg,
            http,
            conns: Connections::default(),
            known: Vec::new(),
            endpoint_owner: HashMap::new(),
            tracker: LeaderTracker::default(),
            metrics: Metrics::new(),
            prev_native: HashMap::new(),
            prev_up: HashMap::new(),
            reads: VecDeque::new(),
            writes: VecDeque::new(),
            history: VecDeque::new(),
            errors: BTreeMap::new(),
            cycle: 0,
            turn: 0,
            attribution: Attribution::default(),
            last_leader: None,
            versions: HashMap::new(),
            probed: std::collections::BTreeSet::new(),
            debouncer: model::Debouncer::default(),
            agent_http,
        })
    }

    /// Runs cycles every interval until `shutdown`, publishing each snapshot on `tx`.
    pub async fn run(mut self, tx: watch::Sender<Arc<Snapshot>>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.cfg.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let snap = tokio::select! {
                () = shutdown.cancelled() => break,
                snap = self.cycle() => snap,
            };
            tx.send_replace(Arc::new(snap));
        }
        tracing::debug!("collector stopped");
    }

    fn error(&mut self, source: &'static str) {
        self.metrics.count_error(source);
        *self.errors.entry(source.to_owned()).or_default() += 1;
    }

    /// One member list from any configured endpoint, for the very first cycles.
    async fn bootstrap(&mut self, deadline: Instant) {
        for url in self.cfg.etcd.endpoints.clone() {
            let url = common::etcd::endpoint_str(&url);
            let now = Instant::now();
            let mut client = match self.conns.lease(&url, now) {
                Lease::Ready(c) => *c,
                Lease::Connect => match rpc::connect(&self.cfg.etcd, &url, deadline).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(endpoint = %url, error = %e, "bootstrap connect failed");
                        self.conns.settle(&url, None, Some(&e), Instant::now());
                        continue;
                    }
                },
                Lease::Backoff(..) => continue,
            };
            match rpc::member_list(&mut client, deadline).await {
                Ok(list) if !list.is_empty() => {
                    self.conns.settle(&url, Some(client), None, Instant::now());
                    self.known = list;
                    return;
                }
                Ok(_) => self.conns.settle(
                    &url,
                    Some(client),
                    Some("empty member list"),
                    Instant::now(),
                ),
                Err(e) => self
                    .conns
                    .settle(&url, Some(client), Some(&e), Instant::now()),
            }
        }
    }

    fn targets(&self) -> Vec<Target> {
        let configured: Vec<String> = self
            .cfg
            .etcd
            .endpoints
            .iter()
            .map(common::etcd::endpoint_str)
            .collect();
        let mut targets = Vec::new();
        for m in &self.known {
            // A configured endpoint is used for a member only when the member advertises
            // it: an endpoint behind a load balancer answers as any member.
            let url = configured
                .iter()
                .find(|u| m.client_urls.iter().any(|c| same_url(c, u)))
                .cloned()
                .or_else(|| m.client_urls.first().cloned());
            if let Some(url) = url {
                targets.push(Target {
                    info: Some(m.clone()),
                    url,
                });
            } else {
                // Added to the list but not started: nothing to ask.
                targets.push(Target {
                    info: Some(m.clone()),
                    url: String::new(),
                });
            }
        }
        if self.known.is_empty() {
            for url in configured {
                if !targets.iter().any(|t| t.url == url) {
                    targets.push(Target { info: None, url });
                }
            }
        }
        targets
    }

    /// One collection cycle.
    pub async fn cycle(&mut self) -> Snapshot {
        let started = Instant::now();
        let wall = SystemTime::now();
        let deadline = started + self.cfg.member_timeout;
        self.cycle += 1;
        self.turn = self.turn.wrapping_add(1);

        if self.known.is_empty() {
            self.bootstrap(deadline).await;
        }
        let targets = self.targets();
        let mut leased = Vec::with_capacity(targets.len());
        for t in targets {
            let lease = if t.url.is_empty() {
                Lease::Backoff(Duration::ZERO, None)
            } else {
                self.conns.lease(&t.url, started)
            };
            leased.push((t, lease));
        }
        let probe_key = format!("{}probe", self.cfg.probe_prefix);
        let writer = self.conns.any(self.turn);
        let cfg_arc = self.cfg.clone();
        let (gathered, write, agent_results) = {
            let cfg = &*cfg_arc;
            let http = &self.http;
            let agent_http = &self.agent_http;
            // The alarm list goes through raft: ask one member per cycle (the last
            // leader, else the first), not every member.
            let last_leader = self.last_leader;
            let alarm_target = leased
                .iter()
                .position(|(t, _)| {
                    last_leader.is_some() && t.info.as_ref().map(|i| i.id) == last_leader
                })
                .unwrap_or(0);
            let gathers = leased.into_iter().enumerate().map(|(i, (t, lease))| {
                gather_member(cfg, http, t, lease, &probe_key, i == alarm_target, deadline)
            });
            let write = async {
                let (url, mut client) = writer?;
                let value = unix_ms(SystemTime::now()).to_string();
                Some((
                    url,
                    rpc::probe_write(&mut client, &probe_key, value, deadline).await,
                ))
            };
            let agent_fetches = cfg
                .agents
                .iter()
                .map(|t| async move { (t, agents::fetch(agent_http, t, deadline).await) });
            tokio::join!(
                futures::future::join_all(gathers),
                write,
                futures::future::join_all(agent_fetches)
            )
        };

        // A member must answer as itself; anything else (an endpoint shared by several
        // members) is an error for that member, never facts about it.
        let mut gathered = gathered;
        for g in &mut gathered {
            if let (Some(info), Ok(st)) = (&g.target.info, &g.status) {
                if st.member_id != info.id {
                    g.status = Err(format!(
                        "{} answered as member {:x}, not {:x}",
                        g.target.url, st.member_id, info.id
                    ));
                    g.members = None;
                    g.alarms = None;
                    g.read_l = None;
                    g.read_s = None;
                    g.native = None;
                    g.health = None;
                }
            }
        }

        // Connections and endpoint ownership.
        let now = Instant::now();
        for g in &gathered {
            if g.target.url.is_empty() || g.skipped {
                continue;
            }
            self.conns.settle(
                &g.target.url,
                g.client.clone(),
                g.status.as_ref().err().map(String::as_str),
                now,
            );
            if let Ok(s) = &g.status {
                self.endpoint_owner
                    .insert(g.target.url.clone(), s.member_id);
            }
        }

        // The member list: the leader's, else the first one anybody gave.
        let list = gathered
            .iter()
            .filter_map(|g| match (&g.status, &g.members) {
                (Ok(s), Some(Ok(l))) if !l.is_empty() => Some((s.leader == s.member_id, l)),
                _ => None,
            })
            .max_by_key(|(is_leader, _)| *is_leader)
            .map(|(_, l)| l.clone());
        if let Some(list) = list {
            self.known = list;
        }
        let keep: Vec<String> = gathered.iter().map(|g| g.target.url.clone()).collect();
        self.conns.retain(|u| keep.iter().any(|k| k == u));

        // Observations, one per member.
        let mut observations: Vec<MemberObservation> = Vec::new();
        let mut by_id: HashMap<u64, usize> = HashMap::new();
        for (i, g) in gathered.iter().enumerate() {
            let info = match (&g.target.info, &g.status) {
                (Some(info), _) => Some(info.clone()),
                (None, Ok(s)) => self
                    .known
                    .iter()
                    .find(|m| m.id == s.member_id)
                    .cloned()
                    .or_else(|| {
                        self.known.is_empty().then(|| MemberInfo {
                            id: s.member_id,
                            name: host_port(&g.target.url),
                            client_urls: vec![g.target.url.clone()],
                            peer_urls: vec![],
                            is_learner: s.is_learner,
                        })
                    }),
                (None, Err(_)) => self.known.is_empty().then(|| MemberInfo {
                    id: 0,
                    name: host_port(&g.target.url),
                    client_urls: vec![g.target.url.clone()],
                    peer_urls: vec![],
                    is_learner: false,
                }),
            };
            let Some(info) = info else { continue };
            if info.id != 0 && by_id.contains_key(&info.id) {
                continue;
            }
            let status = if g.target.url.is_empty() {
                Err("member has not started (no client URL)".to_owned())
            } else {
                g.status.clone()
            };
            by_id.insert(info.id, i);
            observations.push(MemberObservation {
                info,
                endpoint: g.target.url.clone(),
                status,
            });
        }
        for m in &self.known {
            if !observations.iter().any(|o| o.info.id == m.id) {
                observations.push(MemberObservation {
                    info: m.clone(),
                    endpoint: m.client_urls.first().cloned().unwrap_or_default(),
                    status: Err("new member, not queried yet".to_owned()),
                });
            }
        }

        // Alarms: any member's answer will do (the list is cluster-wide).
        let alarms = gathered
            .iter()
            .find_map(|g| g.alarms.as_ref().and_then(|a| a.as_ref().ok()))
            .cloned();
        let facts = Facts {
            members: observations,
            alarms,
        };
        let mut model = model::derive(&facts);
        self.debouncer.apply(&mut model);
        self.last_leader = model.leader.as_ref().map(|l| l.id);
        if let Some(change) = self.tracker.observe(&model, wall) {
            tracing::warn!(
                from = change.from.as_deref().unwrap_or("-"),
                to = %change.to,
                term = change.term,
                "leader changed"
            );
        }
        for m in &model.members {
            let was = self.prev_up.insert(m.info.id, m.up);
            if was != Some(m.up) && (was.is_some() || !m.up) {
                if m.up {
                    tracing::info!(member = %m.info.name, "member is up");
                } else {
                    tracing::warn!(member = %m.info.name, error = m.error.as_deref().unwrap_or(""), "member is down");
                }
            }
        }

        // Errors by source.
        let mut error_sources: Vec<&'static str> = Vec::new();
        for g in &gathered {
            if g.target.url.is_empty() {
                continue;
            }
            if g.status.is_err() {
                error_sources.push(if g.connect_error { "connect" } else { "status" });
            }
            let checks: [(&'static str, bool); 6] = [
                ("member_list", matches!(g.members, Some(Err(_)))),
                ("alarms", matches!(g.alarms, Some(Err(_)))),
                ("probe_read", matches!(g.read_l, Some(Err(_)))),
                ("probe_read", matches!(g.read_s, Some(Err(_)))),
                ("member_metrics", matches!(g.native, Some(Err(_)))),
                ("member_health", matches!(g.health, Some(Err(_)))),
            ];
            error_sources.extend(checks.iter().filter(|(_, bad)| *bad).map(|(s, _)| *s));
        }
        if matches!(write, Some((_, Err(_)))) {
            error_sources.push("probe_write");
        }
        for s in error_sources {
            self.error(s);
        }

        // Per-member extras, native metrics, probes.
        let at_ms = unix_ms(wall);
        let name_of = |id: u64| {
            model
                .members
                .iter()
                .find(|m| m.info.id == id)
                .map(|m| m.info.name.clone())
        };
        let mut extras: BTreeMap<u64, MemberExtras> = BTreeMap::new();
        let mut natives: Vec<(String, &Exposition)> = Vec::new();
        let mut rate_sum = 0.0;
        let mut rate_known = false;
        for (id, &i) in &by_id {
            let g = &gathered[i];
            let Some(name) = name_of(*id) else { continue };
            let mut x = MemberExtras::default();
            match &g.health {
                Some(Ok(h)) => x.health = Some(*h),
                Some(Err(e)) => x.health_error = Some(e.clone()),
                None => {}
            }
            for (res, consistency) in [(&g.read_l, "linearizable"), (&g.read_s, "serializable")] {
                let Some(res) = res else { continue };
                let (duration_ms, error) = match res {
                    Ok(d) => {
                        self.metrics
                            .probe_read
                            .get_or_create(&ReadProbeLabels {
                                member: name.clone(),
                                consistency: consistency.to_owned(),
                            })
                            .observe(d.as_secs_f64());
                        (Some(d.as_secs_f64() * 1e3), None)
                    }
                    Err(e) => (None, Some(e.clone())),
                };
                if consistency == "linearizable" {
                    x.read_linearizable_ms = duration_ms;
                } else {
                    x.read_serializable_ms = duration_ms;
                }
                if error.is_some() {
                    x.read_error.clone_from(&error);
                }
                push_window(
                    &mut self.reads,
                    ProbeRecord {
                        at_unix_ms: at_ms,
                        kind: "read",
                        consistency: Some(if consistency == "linearizable" {
                            "l"
                        } else {
                            "s"
                        }),
                        member: name.clone(),
                        duration_ms,
                        error,
                    },
                );
            }
            match &g.native {
                Some(Ok(exp)) => {
                    x.watchers = exp
                        .sum("etcd_debugging_mvcc_watcher_total", |_| true)
                        .map(|v| v as i64);
                    let prev = self.prev_native.get(id);
                    let wal = exp.histogram_buckets("etcd_disk_wal_fsync_duration_seconds");
                    let commit = exp.histogram_buckets("etcd_disk_backend_commit_duration_seconds");
                    x.wal_fsync_p95_ms =
                        recent_quantile(wal.as_deref(), prev.and_then(|p| p.wal.as_deref()));
                    x.backend_commit_p95_ms =
                        recent_quantile(commit.as_deref(), prev.and_then(|p| p.commit.as_deref()));
                    let unary = exp.sum("grpc_server_started_total", |s| {
                        s.label("grpc_type") == Some("unary")
                    });
                    if let (Some(now_v), Some(p)) = (unary, prev) {
                        if let Some(before) = p.unary_started {
                            let dt = started.duration_since(p.at).as_secs_f64();
                            if now_v >= before && dt > 0.0 {
                                rate_sum += (now_v - before) / dt;
                                rate_known = true;
                            }
                        }
                    }
                    self.prev_native.insert(
                        *id,
                        NativePrev {
                            at: started,
                            unary_started: unary,
                            wal,
                            commit,
                        },
                    );
                    natives.push((name.clone(), exp));
                }
                Some(Err(e)) => x.metrics_error = Some(e.clone()),
                None => {}
            }
            extras.insert(*id, x);
        }
        if let Some((url, res)) = &write {
            let member = self
                .endpoint_owner
                .get(url)
                .and_then(|id| name_of(*id))
                .unwrap_or_else(|| host_port(url));
            let (duration_ms, error) = match res {
                Ok(d) => {
                    self.metrics.probe_write.observe(d.as_secs_f64());
                    (Some(d.as_secs_f64() * 1e3), None)
                }
                Err(e) => (None, Some(e.clone())),
            };
            push_window(
                &mut self.writes,
                ProbeRecord {
                    at_unix_ms: at_ms,
                    kind: "write",
                    consistency: None,
                    member,
                    duration_ms,
                    error,
                },
            );
        }
        let request_rate = rate_known.then_some(rate_sum);
        self.forget_departed(&model, &keep);
        let agent_statuses = self.settle_agents(agent_results, &model);
        let latency = Latency {
            read: window_percentiles(&self.reads),
            write: window_percentiles(&self.writes),
            reads: self.reads.iter().cloned().collect(),
            writes: self.writes.iter().cloned().collect(),
        };

        let collect_duration = started.elapsed();
        self.update_metrics(
            &model,
            &extras,
            &agent_statuses,
            request_rate,
            &latency,
            collect_duration,
        );
        let native_refs: Vec<(&str, &Exposition)> =
            natives.iter().map(|(n, e)| (n.as_str(), *e)).collect();
        let (text, conflicts) = self.metrics.render(&native_refs, self.cfg.native_metrics);
        for _ in 0..conflicts {
            self.error("member_metrics_conflict");
        }

        self.push_history(HistoryPoint {
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
            collect_duration_ms: collect_duration.as_secs_f64() * 1e3,
        });

        Snapshot {
            cluster: None,
            cycle: self.cycle,
            at_unix_ms: at_ms,
            interval_ms: self.cfg.interval.as_millis() as u64,
            leader_history: self.tracker.history().cloned().collect(),
            leader_changes_total: self.tracker.changes_total(),
            model,
            extras,
            agents: agent_statuses,
            request_rate_per_second: request_rate,
            latency: Arc::new(latency),
            history: Arc::new(self.history.iter().cloned().collect()),
            collect_duration_ms: collect_duration.as_secs_f64() * 1e3,
            collect_errors: self.errors.clone(),
            metrics_text: bytes::Bytes::from(text),
        }
    }

    /// Drops per-member state of members that left the cluster, so that nothing grows
    /// with member churn.
    fn forget_departed(&mut self, model: &ClusterModel, urls: &[String]) {
        let ids: std::collections::BTreeSet<u64> =
            model.members.iter().map(|m| m.info.id).collect();
        let names: std::collections::BTreeSet<String> =
            model.members.iter().map(|m| m.info.name.clone()).collect();
        self.prev_native.retain(|id, _| ids.contains(id));
        self.prev_up.retain(|id, _| ids.contains(id));
        self.endpoint_owner
            .retain(|u, _| urls.iter().any(|k| k == u));
        for m in &model.members {
            if let Some(v) = &m.version {
                self.versions.insert(m.info.id, v.clone());
            }
        }
        self.versions.retain(|id, _| ids.contains(id));
        for gone in self.probed.iter().filter(|n| !names.contains(*n)) {
            for consistency in ["linearizable", "serializable"] {
                self.metrics.probe_read.remove(&ReadProbeLabels {
                    member: gone.clone(),
                    consistency: consistency.into(),
                });
            }
        }
        self.probed = names;
    }

    /// Matches agent answers to members; counts failures.
    fn settle_agents(
        &mut self,
        results: Vec<(&agents::AgentTarget, Result<AgentReport, String>)>,
        model: &ClusterModel,
    ) -> BTreeMap<String, AgentStatus> {
        let mut out: BTreeMap<String, AgentStatus> = BTreeMap::new();
        let mut failures = 0;
        self.metrics.agent_scrape_up.clear();
        for (target, res) in results {
            let res = res.and_then(|r| match out.get(&r.member) {
                Some(other) if other.up => Err(format!(
                    "agent at {} reports member {:?}, as does the agent at {}",
                    target.url, r.member, other.url
                )),
                _ => Ok(r),
            });
            self.metrics
                .agent_scrape_up
                .get_or_create(&crate::metrics::AgentLabel {
                    agent: target.url.clone(),
                })
                .set(i64::from(res.as_ref().is_ok_and(|r| {
                    model.members.iter().any(|m| m.info.name == r.member)
                })));
            let res = res.and_then(|r| match &target.member {
                Some(pinned) if *pinned != r.member => Err(format!(
                    "agent at {} reports member {:?}, not {pinned:?}",
                    target.url, r.member
                )),
                _ => Ok(r),
            });
            let status = match res {
                Ok(r) => {
                    self.attribution.learn(target, &r.member);
                    if !model.members.iter().any(|m| m.info.name == r.member) {
                        tracing::debug!(member = %r.member, url = %target.url, "agent for an unknown member");
                        failures += 1;
                        continue;
                    }
                    (
                        r.member.clone(),
                        AgentStatus {
                            url: target.url.clone(),
                            up: true,
                            error: None,
                            memory_usage_bytes: r.memory_usage_bytes,
                            disk_usage_bytes: r.disk_usage_bytes,
                            active_connections: r.active_connections,
                            host: Some(r.host),
                        },
                    )
                }
                Err(e) => {
                    failures += 1;
                    let Some(member) = self.attribution.member_of(target) else {
                        tracing::debug!(url = %target.url, error = %e, "agent not attributable");
                        continue;
                    };
                    (
                        member,
                        AgentStatus {
                            url: target.url.clone(),
                            up: false,
                            error: Some(e),
                            memory_usage_bytes: None,
                            disk_usage_bytes: None,
                            active_connections: None,
                            host: None,
                        },
                    )
                }
            };
            out.insert(status.0, status.1);
        }
        for _ in 0..failures {
            self.error("agent");
        }
        out
    }

    fn push_history(&mut self, p: HistoryPoint) {
        let keep = (self.cfg.history_retention.as_millis() / self.cfg.interval.as_millis().max(1))
            .max(1) as usize;
        while self.history.len() >= keep {
            self.history.pop_front();
        }
        self.history.push_back(p);
    }

    fn update_metrics(
        &mut self,
        model: &ClusterModel,
        extras: &BTreeMap<u64, MemberExtras>,
        agent_statuses: &BTreeMap<String, AgentStatus>,
        request_rate: Option<f64>,
        latency: &Latency,
        collect_duration: Duration,
    ) {
        let m = &self.metrics;
        let b = |v: bool| i64::from(v);
        m.cluster_healthy.set(b(model.healthy));
        m.cluster_has_leader.set(b(model.has_leader));
        m.cluster_member_count.set(model.member_count as i64);
        m.cluster_voting_members.set(model.voting_members as i64);
        m.cluster_quorum_size.set(model.quorum_size as i64);
        m.cluster_healthy_members.set(model.healthy_members as i64);
        m.cluster_split_brain.set(b(model.split_brain));
        m.cluster_partitioned_members
            .set(model.partitioned_members.len() as i64);
        m.cluster_revision_divergence.set(model.revision_divergence);
        m.cluster_raft_index_divergence
            .set(model.raft_index_divergence as i64);
        let seen = self.tracker.changes_total();
        let counted = m.cluster_leader_changes.get();
        if seen > counted {
            m.cluster_leader_changes.inc_by(seen - counted);
        }
        // NaN, not 0, when unknown: a rule must not read "no traffic" into "no data".
        m.request_rate.set(request_rate.unwrap_or(f64::NAN));
        m.clear_member_gauges();
        for s in &model.members {
            let l = MemberLabel {
                member: s.info.name.clone(),
            };
            m.member_up.get_or_create(&l).set(b(s.up));
            m.member_is_leader.get_or_create(&l).set(b(s.is_leader));
            m.member_is_learner
                .get_or_create(&l)
                .set(b(s.info.is_learner));
            m.member_has_leader.get_or_create(&l).set(b(s.has_leader));
            m.member_partitioned.get_or_create(&l).set(b(s.partitioned));
            // Unknown alarms (nobody could list them) are left out, not reported cleared.
            for alarm in Alarm::ALL.iter().filter(|_| model.alarms_known) {
                let alarm = *alarm;
                m.member_alarm
                    .get_or_create(&AlarmLabels {
                        member: s.info.name.clone(),
                        alarm: alarm.as_str().to_owned(),
                    })
                    .set(b(s.alarms.contains(&alarm)));
            }
            m.member_info
                .get_or_create(&InfoLabels {
                    member: s.info.name.clone(),
                    id: format!("{:x}", s.info.id),
                    version: s
                        .version
                        .clone()
                        .or_else(|| self.versions.get(&s.info.id).cloned())
                        .unwrap_or_default(),
                    client_url: s.info.client_urls.first().cloned().unwrap_or_default(),
                    peer_url: s.info.peer_urls.first().cloned().unwrap_or_default(),
                })
                .set(1);
            let set = |f: &crate::metrics::MemberGauge, v: Option<i64>| {
                if let Some(v) = v {
                    f.get_or_create(&l).set(v);
                }
            };
            set(&m.member_raft_term, s.raft_term.map(|v| v as i64));
            set(&m.member_raft_index, s.raft_index.map(|v| v as i64));
            set(
                &m.member_raft_applied_index,
                s.raft_applied_index.map(|v| v as i64),
            );
            set(&m.member_revision, s.revision);
            set(&m.db_total_size, s.db_size_bytes);
            set(&m.db_total_size_in_use, s.db_size_in_use_bytes);
            if let Some(a) = agent_statuses.get(&s.info.name) {
                m.agent_up.get_or_create(&l).set(b(a.up));
                let as_i64 = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
                set(&m.memory_usage, as_i64(a.memory_usage_bytes));
                set(&m.disk_usage, as_i64(a.disk_usage_bytes));
                set(&m.active_connections, as_i64(a.active_connections));
            }
            if let Some(x) = extras.get(&s.info.id) {
                set(&m.watchers, x.watchers);
                if let Some(v) = x.wal_fsync_p95_ms {
                    m.wal_fsync_p95_ms.get_or_create(&l).set(v);
                }
                if let Some(v) = x.backend_commit_p95_ms {
                    m.backend_commit_p95_ms.get_or_create(&l).set(v);
                }
            }
        }
        let set_opt =
            |g: &prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
             v: Option<f64>| g.set(v.unwrap_or(f64::NAN));
        set_opt(&m.read_p50, latency.read.p50);
        set_opt(&m.read_p95, latency.read.p95);
        set_opt(&m.read_p99, latency.read.p99);
        set_opt(&m.write_p50, latency.write.p50);
        set_opt(&m.write_p95, latency.write.p95);
        set_opt(&m.write_p99, latency.write.p99);
        m.collect_duration.set(collect_duration.as_secs_f64());
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

async fn gather_member(
    cfg: &Config,
    http: &reqwest::Client,
    target: Target,
    lease: Lease,
    probe_key: &str,
    ask_alarms: bool,
    deadline: Instant,
) -> Gathered {
    if target.url.is_empty() {
        return Gathered::failed(target, None, "no client URL".into(), false);
    }
    let mut client = match lease {
        Lease::Ready(c) => *c,
        Lease::Connect => match rpc::connect(&cfg.etcd, &target.url, deadline).await {
            Ok(c) => c,
            Err(e) => return Gathered::failed(target, None, e, true),
        },
        Lease::Backoff(wait, last) => {
            let mut g = Gathered::failed(
                target,
                None,
                format!(
                    "{} (next attempt in {}ms)",
                    last.as_deref().unwrap_or("not connected"),
                    wait.as_millis()
                ),
                true,
            );
            g.skipped = true;
            return g;
        }
    };
    let status = match rpc::status(&mut client, deadline).await {
        Ok(s) => s,
        Err(e) => return Gathered::failed(target, Some(client), e, false),
    };
    let (mut c1, mut c2, mut c3, mut c4) = (
        client.clone(),
        client.clone(),
        client.clone(),
        client.clone(),
    );
    let url = target.url.clone();
    let alarms_once = async {
        if ask_alarms {
            Some(rpc::alarms(&mut c2, deadline).await)
        } else {
            None
        }
    };
    let (members, alarms, read_l, read_s, native, health) = tokio::join!(
        rpc::member_list(&mut c1, deadline),
        alarms_once,
        rpc::probe_read(&mut c3, probe_key, false, deadline),
        rpc::probe_read(&mut c4, probe_key, true, deadline),
        scrape::metrics(http, &url, deadline),
        scrape::health(http, &url, deadline),
    );
    Gathered {
        target,
        client: Some(client),
        status: Ok(status),
        members: Some(members),
        alarms,
        read_l: Some(read_l),
        read_s: Some(read_s),
        native: Some(native),
        health: Some(health),
        connect_error: false,
        skipped: false,
    }
}

/// Starts the collector task and returns the channel its snapshots arrive on.
pub fn spawn(
    cfg: Arc<Config>,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> Result<watch::Receiver<Arc<Snapshot>>, reqwest::Error> {
    let collector = Collector::new(cfg.clone())?;
    let (tx, rx) = watch::channel(Arc::new(Snapshot::empty(cfg.interval.as_millis() as u64)));
    tracker.spawn(collector.run(tx, shutdown));
    Ok(rx)
}
