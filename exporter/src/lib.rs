//! etcd-monitor, the cluster exporter: collects facts from every etcd member, derives the
//! cluster model and serves it as Prometheus `/metrics` and a REST API.
//!
//! [`run`] is the whole program given a validated [`Config`], a bound listener and a
//! shutdown token; `main.rs` only parses flags and maps errors to exit codes, so tests run
//! the exporter in-process.

pub mod agents;
pub mod api;
pub mod benchmark;
pub mod collector;
pub mod config;
pub mod etcd;
pub mod maintenance;
pub mod metrics;
pub mod model;
pub mod scrape;
pub mod snapshot;
pub mod status_page;
pub mod textformat;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Args, Config};

/// Runs the exporter until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let cfg = Arc::new(config);
    let tasks = TaskTracker::new();
    let clusters = collector::spawn(cfg.clone(), shutdown.clone(), &tasks)
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client for members: {e}"))?;
    let relay = match &cfg.relay_url {
        None => None,
        Some(u) => Some((
            u.clone(),
            cfg.components
                .client(Duration::from_secs(5))
                .map_err(|e| anyhow::anyhow!("cannot build the HTTP client for the relay: {e}"))?,
        )),
    };
    let bench = cfg.benchmark_token.as_ref().map(|token| {
        benchmark::BenchState::new(
            token.clone(),
            cfg.clusters
                .iter()
                .map(|c| benchmark::BenchTarget {
                    cluster: c.name.clone(),
                    etcd: c.etcd.clone(),
                    prefix: format!("{}bench/", cfg.probe_prefix),
                })
                .collect(),
        )
    });
    let maintenance = match &cfg.maintenance {
        None => None,
        Some(m) => Some(
            maintenance::MaintenanceState::new(
                m.token.clone(),
                cfg.clusters
                    .iter()
                    .map(|c| maintenance::Target {
                        cluster: c.name.clone(),
                        etcd: c.etcd.clone(),
                    })
                    .collect(),
                &m.audit_log,
                m.snapshot_dir.clone(),
            )
            .map_err(|e| {
                anyhow::anyhow!("--audit-log: cannot open {}: {e}", m.audit_log.display())
            })?,
        ),
    };
    let app = api::router(
        api::AppState {
            clusters,
            exposer: Arc::new(metrics::Exposer::new()),
            relay,
            bench,
            maintenance,
        },
        &cfg.cors_origins,
    );
    for c in &cfg.clusters {
        tracing::info!(
            cluster = c.name.as_deref().unwrap_or(""),
            endpoints = %c.etcd.endpoints.iter().map(common::etcd::endpoint_str).collect::<Vec<_>>().join(","),
            agents = c.agents.len(),
            "watching"
        );
    }
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        clusters = cfg.clusters.len(),
        interval = ?cfg.interval,
        "etcd-monitor started"
    );
    common::daemon::serve_until_shutdown(
        "etcd-monitor",
        listener,
        app,
        &cfg.http_security,
        shutdown,
        tasks,
    )
    .await
}
