//! The whole shipped stack on one machine, as a user runs it: a real etcd cluster with one
//! agent per member, the exporter, the relay on the shipped `alerting/relay.yml` (secrets
//! and URLs from its environment variables), a real Prometheus on the shipped
//! `prometheus/prometheus.yml` and `rules/` (only the addresses substituted, every interval
//! as shipped), and local stand-ins for PagerDuty, Slack and the heartbeat's dead man's
//! switch. Every daemon keeps its address across a stop and a start, as a restarted
//! service does, so Prometheus' targets and the alerts' `instance` labels stay the same.
//!
//! The helpers wait for what a person would see: a PagerDuty trigger or resolve, a Slack
//! message, an entry in the relay's history. On a timeout they panic with everything the
//! receivers got and what Prometheus holds, so a failing fault test says why.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::prometheus::repo_root;
use crate::relay::{Recorded, StandIn};
use crate::{ClusterOptions, EtcdCluster, RunningPrometheus};

type RunFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
type RunFn = Arc<dyn Fn(TcpListener, CancellationToken) -> RunFuture + Send + Sync>;

/// A daemon (agent, exporter or relay) run in-process on a fixed loopback address, the
/// way its `main` runs it, that can be stopped and started again on the same address
/// with the same configuration. Stopped when dropped.
pub struct Daemon {
    pub name: String,
    pub addr: SocketAddr,
    run: RunFn,
    running: Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    http: reqwest::Client,
}

impl Daemon {
    /// Picks a free port and starts `run` on it.
    pub async fn start_new(name: &str, run: RunFn) -> Self {
        let mut d = Daemon {
            name: name.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], crate::free_port())),
            run,
            running: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .no_proxy()
                .build()
                .expect("client"),
        };
        d.start().await;
        d
    }

    /// Starts it (again) on its address; returns once `/health` answers.
    pub async fn start(&mut self) {
        assert!(self.running.is_none(), "{} is already running", self.name);
        // The address was ours a moment ago; a connection in TIME_WAIT does not stop a
        // bind (tokio sets SO_REUSEADDR), anything else gets a few seconds to go away.
        let deadline = Instant::now() + Duration::from_secs(20);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("{}: bind {}: {e}; retrying", self.name, self.addr);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("{}: cannot bind {} again: {e}", self.name, self.addr),
            }
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn((self.run)(listener, shutdown.clone()));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if task.is_finished() {
                let outcome = task.await;
                panic!("{} exited at start: {outcome:?}", self.name);
            }
            if let Ok(r) = self.http.get(self.url("/health")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer /health within 60s",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.running = Some((shutdown, task));
    }

    /// Stops it (graceful shutdown, as on SIGTERM) and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some((shutdown, task)) = self.running.take() {
            shutdown.cancel();
            let outcome = task.await.expect("daemon task panicked");
            if let Err(e) = outcome {
                panic!("{} stopped with an error: {e:#}", self.name);
            }
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET `path` as JSON; `Null` when it does not answer or the body is not JSON.
    pub async fn json(&self, path: &str) -> serde_json::Value {
        match self.http.get(self.url(path)).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some((shutdown, _)) = &self.running {
            shutdown.cancel();
        }
    }
}

/// How to start a [`ShippedStack`].
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// The etcd cluster (3 members unless told otherwise; a small quota for space faults).
    pub cluster: ClusterOptions,
    /// Extra flags for every agent (default: none, so the shipped defaults: a collection
    /// every 5s and an fsync probe every 10s).
    pub agent_flags: Vec<String>,
    /// Extra flags for the exporter (default: none, so the shipped 5s cycle).
    pub exporter_flags: Vec<String>,
    /// Further `(from, to)` replacements in `prometheus/prometheus.yml`, after the
    /// addresses (shorter intervals for a quick test, say); each must apply. None: the
    /// shipped intervals, as the fault catalog runs.
    pub prometheus_edits: Vec<(String, String)>,
}

/// The PagerDuty routing key the relay is started with.
pub const ROUTING_KEY: &str = "R0UTINGKEY0123456789012345678901";

/// `prometheus/prometheus.yml` with the test's addresses: the exporter, the agents (in
/// member order, for the shipped `127.0.0.1:9101`..), the relay (as alert receiver and
/// scrape target) and the absolute path of `rules/`. Intervals stay as shipped. Every
/// substitution must apply, so a change to the shipped file shows here.
pub fn shipped_prometheus_config(exporter: &str, agents: &[String], relay: &str) -> String {
    let mut config = std::fs::read_to_string(repo_root().join("prometheus/prometheus.yml"))
        .expect("prometheus/prometheus.yml");
    let rules_dir = format!("{}/", repo_root().join("rules").display());
    let mut replacements: Vec<(String, String)> = vec![
        ("'127.0.0.1:8080'".into(), format!("'{exporter}'")),
        ("'127.0.0.1:9095'".into(), format!("'{relay}'")),
        ("../rules/".into(), rules_dir),
    ];
    for (i, a) in agents.iter().enumerate() {
        replacements.push((format!("'127.0.0.1:{}'", 9101 + i), format!("'{a}'")));
    }
    for (from, to) in replacements {
        assert!(
            config.contains(&from),
            "prometheus/prometheus.yml no longer contains {from}"
        );
        config = config.replace(&from, &to);
    }
    config
}

/// The relay's environment is process-wide: one stack at a time sets it and reads its
/// config (the parsed config is kept for restarts, so it is read once).
static RELAY_ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A PagerDuty event the stand-in got: its action, `dedup_key`, the alert names it is
/// about (a resolve carries only the key: its names are those of the triggers with it)
/// and its arrival.
#[derive(Debug, Clone)]
pub struct PagerDutyEvent {
    pub action: String,
    pub dedup_key: String,
    pub alertnames: Vec<String>,
    pub at: Instant,
}

/// A Slack message the stand-in got: the state in its title (`CRITICAL`, `WARNING`,
/// `RESOLVED`, ...), the title after it (`EtcdMemberDown on m2: etcd member m2 is down`),
/// the whole body and its arrival.
#[derive(Debug, Clone)]
pub struct SlackMessage {
    pub state: String,
    pub title: String,
    pub body: serde_json::Value,
    pub at: Instant,
}

impl SlackMessage {
    /// Whether it is about `alertname` (on `member`, when given): its title starts with
    /// the name (the relay's title: `Name on member (cluster): summary`, or `Name,
    /// Other: ...` for a group of several names), and names the member.
    pub fn is_about(&self, alertname: &str, member: Option<&str>) -> bool {
        let named = [" ", ":", ","]
            .iter()
            .any(|end| self.title.starts_with(&format!("{alertname}{end}")));
        let on = member.is_none_or(|m| {
            self.title.contains(&format!(" on {m} ")) || self.title.contains(&format!(" on {m}:"))
        });
        named && on
    }
}

/// What a Slack message's `text` says: `[STATE] rest` -> (STATE, rest).
pub fn slack_title(r: &Recorded) -> Option<(String, String)> {
    let text = r.body["text"].as_str()?;
    let (state, rest) = text.strip_prefix('[')?.split_once("] ")?;
    Some((state.to_owned(), rest.to_owned()))
}

/// A running shipped stack. Dropping it stops everything.
pub struct ShippedStack {
    pub cluster: EtcdCluster,
    /// One per member, in member order.
    pub agents: Vec<Daemon>,
    pub exporter: Daemon,
    pub relay: Daemon,
    pub pagerduty: StandIn,
    pub slack: StandIn,
    pub heartbeat: StandIn,
    pub prometheus: RunningPrometheus,
    /// When the stack was up (after [`ShippedStack::start`]).
    pub started: Instant,
    _dir: tempfile::TempDir,
}

impl ShippedStack {
    /// Starts everything; returns once every daemon answers and Prometheus is ready
    /// (not yet scraped: see [`ShippedStack::wait_healthy`]).
    pub async fn start(opts: StackOptions) -> Self {
        let cluster = EtcdCluster::start_with(opts.cluster.clone()).await;
        cluster.wait_leader(Duration::from_secs(30)).await;
        let dir = tempfile::Builder::new()
            .prefix("etcd-monitor-stack-")
            .tempdir()
            .expect("temp dir");

        let mut agents = Vec::new();
        for m in &cluster.members {
            let mut argv: Vec<String> = vec![
                "etcd-monitor-agent".into(),
                "--member".into(),
                m.name.clone(),
                "--data-dir".into(),
                m.data_dir.to_string_lossy().into_owned(),
                "--etcd-client-port".into(),
                m.client_port.to_string(),
            ];
            argv.extend(opts.agent_flags.iter().cloned());
            let args = agent::Args::try_parse_from(&argv).expect("valid agent flags");
            let config = agent::Config::from_args(args.daemon).expect("valid agent config");
            let run: RunFn = Arc::new(move |l, s| Box::pin(agent::run(config.clone(), l, s)));
            agents.push(Daemon::start_new(&format!("agent {}", m.name), run).await);
        }

        let mut argv = vec!["etcd-monitor".to_owned()];
        argv.extend(crate::exporter::cluster_flags(&cluster));
        for (m, a) in cluster.members.iter().zip(&agents) {
            argv.push("--agent".into());
            argv.push(format!("{}={}", m.name, a.url("")));
        }
        argv.extend(opts.exporter_flags.iter().cloned());
        let args = exporter::Args::try_parse_from(&argv).expect("valid exporter flags");
        let config = exporter::Config::from_args(args).expect("valid exporter config");
        let run: RunFn = Arc::new(move |l, s| Box::pin(exporter::run(config.clone(), l, s)));
        let exporter = Daemon::start_new("exporter", run).await;

        let (pagerduty, slack, heartbeat) = (
            StandIn::start().await,
            StandIn::start().await,
            StandIn::start().await,
        );
        let relay_config = {
            let _env = RELAY_ENV.lock().unwrap_or_else(|e| e.into_inner());
            std::env::set_var("PAGERDUTY_ROUTING_KEY", ROUTING_KEY);
            std::env::set_var("PAGERDUTY_URL", pagerduty.url("/v2/enqueue"));
            std::env::set_var("SLACK_WEBHOOK_URL", slack.url("/services/T000/B000/XXXX"));
            std::env::set_var("HEARTBEAT_URL", heartbeat.url("/ping/0c3d5a1e"));
            let argv = [
                "etcd-monitor-relay".to_owned(),
                "--config".to_owned(),
                repo_root()
                    .join("alerting/relay.yml")
                    .to_string_lossy()
                    .into_owned(),
                "--data-dir".to_owned(),
                dir.path().join("relay").to_string_lossy().into_owned(),
            ];
            let args = alerting::Args::try_parse_from(argv).expect("valid relay flags");
            alerting::Config::from_args(args).expect("the shipped relay.yml is valid")
        };
        let run: RunFn = Arc::new(move |l, s| Box::pin(alerting::run(relay_config.clone(), l, s)));
        let relay = Daemon::start_new("relay", run).await;

        let agent_addrs: Vec<String> = agents.iter().map(|a| a.addr.to_string()).collect();
        let mut config = shipped_prometheus_config(
            &exporter.addr.to_string(),
            &agent_addrs,
            &relay.addr.to_string(),
        );
        for (from, to) in &opts.prometheus_edits {
            assert!(
                config.contains(from.as_str()),
                "prometheus.yml has no {from}"
            );
            config = config.replace(from.as_str(), to);
        }
        let prometheus = RunningPrometheus::start(&config, &[]).await;
        ShippedStack {
            cluster,
            agents,
            exporter,
            relay,
            pagerduty,
            slack,
            heartbeat,
            prometheus,
            started: Instant::now(),
            _dir: dir,
        }
    }

    /// Waits until Prometheus sees a healthy cluster through the exporter, every agent up
    /// (scraped, and joined by the exporter), the relay up and the recording rules
    /// running; then checks that nothing but info alerts and the heartbeat fires.
    pub async fn wait_healthy(&self) {
        let checks: [(&str, usize); 6] = [
            ("etcd_cluster_healthy == 1", 1),
            (r#"up{job="etcd-monitor"} == 1"#, 1),
            (r#"up{job="etcd-monitor-agent"} == 1"#, self.agents.len()),
            (r#"up{job="etcd-monitor-relay"} == 1"#, 1),
            ("etcd_member_agent_up == 1", self.agents.len()),
            ("member:etcd_mvcc_db_quota_used:ratio", self.agents.len()),
        ];
        self.wait_until(
            "Prometheus to see a healthy cluster, its agents and the relay",
            Duration::from_secs(120),
            || async {
                for (q, n) in checks {
                    if self.prometheus.query(q).await.len() != n {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
        let firing = self.firing_alerts().await;
        assert!(
            firing.is_empty(),
            "alerts on a healthy stack: {firing:#?}\n{}",
            self.report().await
        );
    }

    /// Alerts firing in Prometheus, except info and the heartbeat (severity `none`).
    pub async fn firing_alerts(&self) -> Vec<serde_json::Value> {
        self.prometheus
            .alerts()
            .await
            .into_iter()
            .filter(|a| {
                a["state"] == "firing"
                    && a["labels"]["severity"] != "info"
                    && a["labels"]["severity"] != "none"
            })
            .collect()
    }

    /// Index of the member that leads now.
    pub async fn leader(&self) -> usize {
        self.cluster.wait_leader(Duration::from_secs(30)).await
    }

    /// Every PagerDuty event so far.
    pub fn pagerduty_events(&self) -> Vec<PagerDutyEvent> {
        let raw: Vec<(String, String, Vec<String>, Instant)> = self
            .pagerduty
            .requests()
            .iter()
            .filter_map(|r| {
                let names = r.body["payload"]["custom_details"]["firing"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x["labels"]["alertname"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                Some((
                    r.body["event_action"].as_str()?.to_owned(),
                    r.body["dedup_key"].as_str()?.to_owned(),
                    names,
                    r.at,
                ))
            })
            .collect();
        raw.iter()
            .map(|(action, key, names, at)| {
                let mut alertnames = names.clone();
                if action != "trigger" {
                    for (a, k, n, _) in &raw {
                        if a == "trigger" && k == key {
                            alertnames.extend(n.iter().cloned());
                        }
                    }
                    alertnames.sort();
                    alertnames.dedup();
                }
                PagerDutyEvent {
                    action: action.clone(),
                    dedup_key: key.clone(),
                    alertnames,
                    at: *at,
                }
            })
            .collect()
    }

    /// Every Slack message so far.
    pub fn slack_messages(&self) -> Vec<SlackMessage> {
        self.slack
            .requests()
            .iter()
            .filter_map(|r| {
                let (state, title) = slack_title(r)?;
                Some(SlackMessage {
                    state,
                    title,
                    body: r.body.clone(),
                    at: r.at,
                })
            })
            .collect()
    }

    /// Waits for a PagerDuty event `action` (`trigger` or `resolve`) about `alertname`
    /// that arrived after `since`; returns how long after `since` it arrived.
    pub async fn wait_pagerduty(
        &self,
        action: &str,
        alertname: &str,
        since: Instant,
        timeout: Duration,
    ) -> Duration {
        self.wait_until(
            &format!("PagerDuty: {action} {alertname}"),
            timeout,
            || async {
                self.pagerduty_events().iter().find_map(|e| {
                    (e.at >= since
                        && e.action == action
                        && e.alertnames.iter().any(|n| n == alertname))
                    .then(|| e.at.duration_since(since))
                })
            },
        )
        .await
    }

    /// Waits for a Slack message in `state` (`CRITICAL`, `WARNING`, `RESOLVED`) about
    /// `alertname` (on `member`, when given) that arrived after `since`; returns how long
    /// after `since` it arrived.
    pub async fn wait_slack(
        &self,
        state: &str,
        alertname: &str,
        member: Option<&str>,
        since: Instant,
        timeout: Duration,
    ) -> Duration {
        let what = match member {
            Some(m) => format!("Slack: [{state}] {alertname} on {m}"),
            None => format!("Slack: [{state}] {alertname}"),
        };
        self.wait_until(&what, timeout, || async {
            self.slack_messages().iter().find_map(|m| {
                (m.at >= since && m.state == state && m.is_about(alertname, member))
                    .then(|| m.at.duration_since(since))
            })
        })
        .await
    }

    /// The relay's history (`GET /api/v1/alerts/history`), newest first as it answers;
    /// empty while the relay is down.
    pub async fn relay_history(&self) -> Vec<serde_json::Value> {
        if !self.relay.is_running() {
            return Vec::new();
        }
        self.relay.json("/api/v1/alerts/history").await["history"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits for a `status` (`firing` or `resolved`) notification of `alertname` to
    /// `receiver` in the relay's history, created after `since` (wall clock); returns how
    /// long after `since` the relay created it.
    pub async fn wait_history(
        &self,
        alertname: &str,
        receiver: &str,
        status: &str,
        since: SystemTime,
        timeout: Duration,
    ) -> Duration {
        let since_ms = since
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.wait_until(
            &format!("relay history: {status} {alertname} to {receiver}"),
            timeout,
            || async {
                self.relay_history().await.iter().find_map(|e| {
                    let created = e["created_at_ms"].as_i64()?;
                    let names = e["alertname"].as_str()?;
                    (created >= since_ms
                        && e["receiver"] == receiver
                        && e["status"] == status
                        && names.split(", ").any(|n| n == alertname))
                    .then(|| Duration::from_millis((created - since_ms) as u64))
                })
            },
        )
        .await
    }

    /// Nobody was paged and chat heard of nothing critical (since the start).
    pub async fn assert_nothing_paged(&self) {
        let critical: Vec<String> = self
            .slack_messages()
            .iter()
            .filter(|m| m.state == "CRITICAL")
            .map(|m| m.title.clone())
            .collect();
        assert!(
            self.pagerduty.requests().is_empty() && critical.is_empty(),
            "paged for a fault that only warrants a warning: PagerDuty {:?}, Slack {critical:?}\n{}",
            self.pagerduty_events(),
            self.report().await
        );
    }

    /// No notification about `alertname` reached Slack or PagerDuty.
    pub async fn assert_never_sent(&self, alertname: &str) {
        let slack: Vec<String> = self
            .slack_messages()
            .iter()
            .filter(|m| m.title.contains(alertname))
            .map(|m| m.title.clone())
            .collect();
        let pd: Vec<PagerDutyEvent> = self
            .pagerduty_events()
            .into_iter()
            .filter(|e| e.alertnames.iter().any(|n| n == alertname))
            .collect();
        assert!(
            slack.is_empty() && pd.is_empty(),
            "{alertname} was sent: Slack {slack:?}, PagerDuty {pd:?}"
        );
    }

    /// Polls `check` every 250 ms until it returns `Some`; after `timeout`, panics with
    /// [`ShippedStack::report`].
    pub async fn wait_until<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.report().await
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// What every receiver got (with seconds since the stack started), the relay's
    /// history and Prometheus' alerts: for failure messages.
    pub async fn report(&self) -> String {
        let t = |at: Instant| at.saturating_duration_since(self.started).as_secs_f64();
        let mut out = String::from("--- stack report (seconds since the stack was up)\n");
        for m in self.slack_messages() {
            out.push_str(&format!(
                "slack {:7.1}s [{}] {}\n",
                t(m.at),
                m.state,
                m.title
            ));
        }
        for e in self.pagerduty_events() {
            out.push_str(&format!(
                "pagerduty {:7.1}s {} {} {:?}\n",
                t(e.at),
                e.action,
                e.dedup_key,
                e.alertnames
            ));
        }
        for r in self.heartbeat.requests() {
            out.push_str(&format!("heartbeat {:7.1}s {}\n", t(r.at), r.path));
        }
        for e in self.relay_history().await.iter().take(40) {
            out.push_str(&format!(
                "history {} {} {} {} {}\n",
                e["created_at_ms"], e["receiver"], e["status"], e["outcome"], e["alertname"]
            ));
        }
        for a in self.prometheus.alerts().await {
            out.push_str(&format!(
                "prometheus {} {} {}\n",
                a["state"], a["labels"], a["activeAt"]
            ));
        }
        out
    }
}
