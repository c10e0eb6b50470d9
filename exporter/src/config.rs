//! The exporter's flags and their validation into a [`Config`]; nothing downstream reads
//! flags or the environment.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgAction, Parser};
use common::etcd::{ConfigError, EtcdArgs, EtcdConfig};
use common::telemetry::LogFormat;

/// etcd-monitor: watches every member of an etcd cluster through the v3 API and their own
/// /metrics, derives the cluster's state (leader, quorum, split brain, partitions, alarms,
/// divergence, probe latency) and serves it as Prometheus /metrics, a REST API and JSON.
#[derive(Debug, Clone, Parser)]
#[command(name = "etcd-monitor", version)]
pub struct Args {
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// YAML file listing several clusters to watch (`clusters: [{name, endpoints, cacert,
    /// cert, key, insecure_skip_tls_verify, user, password_file, dial_timeout,
    /// command_timeout, agents}]`, each key as its flag). Every series then carries
    /// `cluster`. Instead of the etcd connection flags and --agent.
    #[arg(long, env = "ETCD_MONITOR_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Name of the one cluster the flags describe: every series then carries
    /// `cluster="NAME"` (as with --config). Without it there is no `cluster` label.
    #[arg(long, env = "ETCD_MONITOR_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,

    /// Address to serve /metrics and the REST API on.
    #[arg(
        long,
        env = "ETCD_MONITOR_LISTEN",
        default_value = "0.0.0.0:8080",
        value_name = "ADDR:PORT"
    )]
    pub listen: String,

    /// Time between collection cycles (1s at least).
    #[arg(long, env = "ETCD_MONITOR_INTERVAL", default_value = "5s", value_parser = common::parse_duration)]
    pub interval: Duration,

    /// Key prefix under which the write probe writes (and the read probes read) one key.
    /// With etcd auth, the user needs read-write permission on it.
    #[arg(
        long,
        env = "ETCD_MONITOR_PROBE_PREFIX",
        default_value = "/etcd-monitor/probe/"
    )]
    pub probe_prefix: String,

    /// Re-expose every metric family of every member's own /metrics with a `member` label.
    /// When false only etcd_server_quota_backend_bytes and etcd_server_proposals_* are.
    #[arg(long, env = "ETCD_MONITOR_NATIVE_METRICS", default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub native_metrics: bool,

    /// How much history /api/v1/metrics/history keeps, in memory.
    #[arg(long, env = "ETCD_MONITOR_HISTORY_RETENTION", default_value = "1h", value_parser = common::parse_duration)]
    pub history_retention: Duration,

    /// Origins allowed to call the REST API from a browser (comma separated or repeated).
    /// CORS is off when none is given.
    #[arg(
        long = "cors-origin",
        env = "ETCD_MONITOR_CORS_ORIGIN",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// An etcd-monitor-agent to read (`URL`, or `MEMBER=URL` to pin it to a member);
    /// repeat or separate with commas. Its snapshot is matched to a member by name.
    #[arg(
        long = "agent",
        env = "ETCD_MONITOR_AGENTS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub agents: Vec<String>,

    /// The etcd-monitor-relay's URL: `/api/v1/alerts` and `/api/v1/alerts/history` are
    /// then answered from it.
    #[arg(long, env = "ETCD_MONITOR_RELAY_URL", value_name = "URL")]
    pub relay_url: Option<String>,

    /// File holding the bearer token that `POST /api/v1/performance/benchmark` requires.
    /// Without it the endpoint is off.
    #[arg(long, env = "ETCD_MONITOR_BENCHMARK_TOKEN_FILE", value_name = "FILE")]
    pub benchmark_token_file: Option<std::path::PathBuf>,

    /// File holding the bearer token of the maintenance API (`POST
    /// /api/v1/maintenance/...`, `GET /api/v1/audit`). Without it the API is off. Needs
    /// --audit-log.
    #[arg(long, env = "ETCD_MONITOR_MAINTENANCE_TOKEN_FILE", value_name = "FILE")]
    pub maintenance_token_file: Option<std::path::PathBuf>,

    /// File the maintenance API appends one JSON line to for every request, allowed or
    /// refused (created 0600).
    #[arg(long, env = "ETCD_MONITOR_AUDIT_LOG", value_name = "FILE")]
    pub audit_log: Option<std::path::PathBuf>,

    /// Directory `POST /api/v1/maintenance/snapshot` writes snapshots to. Without it that
    /// operation is off.
    #[arg(long, env = "ETCD_MONITOR_SNAPSHOT_DIR", value_name = "DIR")]
    pub snapshot_dir: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub server: ServerArgs,

    /// CA bundle (PEM) that the agents' and the relay's HTTPS certificates are checked
    /// against (default: the system's roots).
    #[arg(long, env = "ETCD_MONITOR_MONITOR_CACERT", value_name = "FILE")]
    pub monitor_cacert: Option<std::path::PathBuf>,

    /// File holding the bearer token sent to the agents and the relay (their
    /// --auth-token-file).
    #[arg(long, env = "ETCD_MONITOR_MONITOR_TOKEN_FILE", value_name = "FILE")]
    pub monitor_token_file: Option<std::path::PathBuf>,

    /// Log line format.
    #[arg(
        long,
        env = "ETCD_MONITOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

common::server_security_args!(ServerArgs, "ETCD_MONITOR_");

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// At least one; names unique (all `None` only when there is one).
    pub clusters: Vec<ClusterConfig>,
    pub listen: SocketAddr,
    pub interval: Duration,
    pub probe_prefix: String,
    pub native_metrics: bool,
    pub history_retention: Duration,
    pub cors_origins: Vec<axum::http::HeaderValue>,
    pub relay_url: Option<url::Url>,
    pub benchmark_token: Option<common::secret::Secret>,
    pub maintenance: Option<MaintenanceConfig>,
    /// TLS and bearer tokens of our own HTTP server.
    pub http_security: common::http::ServerSecurity,
    /// How to reach the agents and the relay: their CA and token.
    pub components: Components,
    pub log_format: LogFormat,
}

/// The maintenance API's settings.
#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    pub token: common::secret::Secret,
    pub audit_log: std::path::PathBuf,
    pub snapshot_dir: Option<std::path::PathBuf>,
}

/// One watched cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The `cluster` label; `None` for the one cluster of flags without --cluster-name.
    pub name: Option<String>,
    pub etcd: EtcdConfig,
    pub agents: Vec<crate::agents::AgentTarget>,
    /// Deadline for all the work on one member in a cycle: the command timeout, but at
    /// most 80% of the interval so that a frozen member cannot stretch the cycle.
    pub member_timeout: Duration,
}

/// One entry of `clusters:` in the --config file; each key as its flag.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterEntry {
    name: String,
    endpoints: Endpoints,
    cacert: Option<std::path::PathBuf>,
    cert: Option<std::path::PathBuf>,
    key: Option<std::path::PathBuf>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    user: Option<String>,
    password_file: Option<std::path::PathBuf>,
    dial_timeout: Option<String>,
    command_timeout: Option<String>,
    #[serde(default)]
    agents: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum Endpoints {
    List(Vec<String>),
    Comma(String),
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    clusters: Vec<ClusterEntry>,
}

/// A cluster name as a label value and in `?cluster=`: letters, digits, `-`, `_`, `.`.
fn valid_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_agents(raw: &[String]) -> Result<Vec<crate::agents::AgentTarget>, String> {
    let mut agents: Vec<crate::agents::AgentTarget> = Vec::new();
    for raw in raw.iter().filter(|a| !a.trim().is_empty()) {
        let t = crate::agents::parse_target(raw)?;
        if agents.iter().any(|a| a.url == t.url) {
            return Err(format!("{} given twice", t.display));
        }
        agents.push(t);
    }
    Ok(agents)
}

impl ClusterConfig {
    fn new(
        name: Option<String>,
        etcd: EtcdConfig,
        agents: Vec<crate::agents::AgentTarget>,
        interval: Duration,
    ) -> Self {
        let member_timeout = etcd.command_timeout.min(interval.mul_f64(0.8));
        ClusterConfig {
            name,
            etcd,
            agents,
            member_timeout,
        }
    }
}

/// Reads the --config file into clusters; every error names the file, the cluster and
/// the key. Relative paths are relative to the file's directory.
fn load_clusters(
    path: &std::path::Path,
    interval: Duration,
) -> Result<Vec<ClusterConfig>, ConfigError> {
    let at = |message: String| invalid("--config", format!("{}: {message}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| at(format!("cannot read it: {e}")))?;
    let file: ConfigFile = serde_yaml_ng::from_str(&text).map_err(|e| at(e.to_string()))?;
    if file.clusters.is_empty() {
        return Err(at("clusters: lists no cluster".into()));
    }
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let resolve = |p: Option<std::path::PathBuf>| p.map(|p| dir.join(p));
    let mut clusters: Vec<ClusterConfig> = Vec::new();
    for (i, c) in file.clusters.into_iter().enumerate() {
        let name = c.name.clone();
        let here =
            |key: &str, message: String| at(format!("clusters[{i}] ({name}): {key}: {message}"));
        if !valid_cluster_name(&name) {
            return Err(here(
                "name",
                format!("{name:?} must be 1 to 63 letters, digits, '-', '_' or '.'"),
            ));
        }
        if clusters.iter().any(|k| k.name.as_deref() == Some(&name)) {
            return Err(here("name", "given twice".into()));
        }
        let duration = |key: &str, v: Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(v) => common::parse_duration(&v).map_err(|e| here(key, e)),
        };
        let args = EtcdArgs {
            endpoints: match c.endpoints {
                Endpoints::List(l) => l.join(","),
                Endpoints::Comma(s) => s,
            },
            cacert: resolve(c.cacert),
            cert: resolve(c.cert),
            key: resolve(c.key),
            insecure_skip_tls_verify: c.insecure_skip_tls_verify,
            user: c.user,
            password_file: resolve(c.password_file),
            dial_timeout: duration("dial_timeout", c.dial_timeout, Duration::from_secs(2))?,
            command_timeout: duration(
                "command_timeout",
                c.command_timeout,
                Duration::from_secs(5),
            )?,
        };
        let etcd = EtcdConfig::from_args(&args).map_err(|e| {
            here(
                e.flag().trim_start_matches("--").replace('-', "_").as_str(),
                e.message(),
            )
        })?;
        let agents = parse_agents(&c.agents).map_err(|m| here("agents", m))?;
        clusters.push(ClusterConfig::new(Some(name), etcd, agents, interval));
    }
    Ok(clusters)
}

pub use common::remote::Components;

fn invalid(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        message: message.into(),
    }
}

impl Config {
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let listen: SocketAddr = args.listen.parse().map_err(|e| {
            invalid(
                "--listen",
                format!("invalid address {:?}: {e}", args.listen),
            )
        })?;
        if args.interval < Duration::from_secs(1) {
            return Err(invalid("--interval", "must be at least 1s"));
        }
        if args.interval > Duration::from_secs(3600) {
            return Err(invalid("--interval", "must be at most 1h"));
        }
        if args.history_retention > Duration::from_secs(24 * 3600) {
            return Err(invalid(
                "--history-retention",
                "must be at most 24h (it is kept in memory; Prometheus keeps the long view)",
            ));
        }
        if args.history_retention < args.interval {
            return Err(invalid(
                "--history-retention",
                "must be at least one interval",
            ));
        }
        if args.probe_prefix.is_empty() {
            return Err(invalid("--probe-prefix", "must not be empty"));
        }
        let mut cors_origins = Vec::new();
        for o in args.cors_origins.iter().filter(|o| !o.is_empty()) {
            let url = url::Url::parse(o)
                .map_err(|e| invalid("--cors-origin", format!("invalid origin {o:?}: {e}")))?;
            let origin = url.origin().ascii_serialization();
            let value = axum::http::HeaderValue::from_str(&origin)
                .map_err(|e| invalid("--cors-origin", format!("invalid origin {o:?}: {e}")))?;
            cors_origins.push(value);
        }
        let clusters = match &args.config {
            Some(path) => {
                let e = &args.etcd;
                let flags_too = e.endpoints != "http://127.0.0.1:2379"
                    || e.cacert.is_some()
                    || e.cert.is_some()
                    || e.user.is_some()
                    || e.insecure_skip_tls_verify
                    || !args.agents.is_empty()
                    || args.cluster_name.is_some();
                if flags_too {
                    return Err(invalid(
                        "--config",
                        "the clusters, their connections and agents come from the file: \
                         drop --endpoints, --cacert, --cert, --key, --user, \
                         --insecure-skip-tls-verify, --agent and --cluster-name",
                    ));
                }
                load_clusters(path, args.interval)?
            }
            None => {
                if let Some(name) = args.cluster_name.as_deref() {
                    if !valid_cluster_name(name) {
                        return Err(invalid(
                            "--cluster-name",
                            format!("{name:?} must be 1 to 63 letters, digits, '-', '_' or '.'"),
                        ));
                    }
                }
                let etcd = EtcdConfig::from_args(&args.etcd)?;
                let agents = parse_agents(&args.agents).map_err(|m| invalid("--agent", m))?;
                vec![ClusterConfig::new(
                    args.cluster_name.clone(),
                    etcd,
                    agents,
                    args.interval,
                )]
            }
        };
        let relay_url = match args.relay_url.as_deref().filter(|u| !u.is_empty()) {
            None => None,
            Some(raw) => {
                // Errors show the URL without its credentials.
                let shown = common::remote::redacted(raw);
                let u = url::Url::parse(raw)
                    .map_err(|e| invalid("--relay-url", format!("invalid URL {shown:?}: {e}")))?;
                if u.scheme() != "http" && u.scheme() != "https" {
                    return Err(invalid(
                        "--relay-url",
                        format!("{shown:?}: scheme must be http or https"),
                    ));
                }
                Some(u)
            }
        };
        let benchmark_token = match &args.benchmark_token_file {
            None => None,
            Some(p) => Some(common::etcd::read_token_file(
                "--benchmark-token-file",
                p,
                16,
            )?),
        };
        let maintenance = match &args.maintenance_token_file {
            None => {
                if args.audit_log.is_some() || args.snapshot_dir.is_some() {
                    return Err(invalid(
                        "--maintenance-token-file",
                        "--audit-log and --snapshot-dir are for the maintenance API, which is off without it",
                    ));
                }
                None
            }
            Some(p) => {
                let token = common::etcd::read_token_file("--maintenance-token-file", p, 16)?;
                let Some(audit_log) = args.audit_log.clone() else {
                    return Err(invalid(
                        "--audit-log",
                        "is required with --maintenance-token-file (every maintenance request is audited)",
                    ));
                };
                if let Some(dir) = &args.snapshot_dir {
                    if !dir.is_dir() {
                        return Err(invalid(
                            "--snapshot-dir",
                            format!("{} is not a directory", dir.display()),
                        ));
                    }
                }
                Some(MaintenanceConfig {
                    token,
                    audit_log,
                    snapshot_dir: args.snapshot_dir.clone(),
                })
            }
        };
        let mut http_security = args.server.load()?;
        if let Some(m) = maintenance
            .as_ref()
            .filter(|_| !http_security.tokens.is_empty())
        {
            // As the benchmark token: one Authorization header cannot carry two tokens.
            http_security.tokens.push(m.token.clone());
        }
        if let Some(b) = benchmark_token
            .as_ref()
            .filter(|_| !http_security.tokens.is_empty())
        {
            // The benchmark token grants reading too: one Authorization header cannot carry
            // both tokens.
            http_security.tokens.push(b.clone());
        }
        let components = Components::from_files(
            args.monitor_cacert.as_deref(),
            args.monitor_token_file.as_deref(),
        )?;
        Ok(Config {
            clusters,
            listen,
            interval: args.interval,
            probe_prefix: args.probe_prefix,
            native_metrics: args.native_metrics,
            history_retention: args.history_retention,
            cors_origins,
            relay_url,
            benchmark_token,
            maintenance,
            http_security,
            components,
            log_format: args.log_format,
        })
    }
}
