//! etcd-monitor-agent: runs next to one etcd member and reports the host and process
//! facts etcd cannot see about itself, with an active fsync probe on the data dir's disk.
//!
//! [`run`] is the daemon given a validated [`Config`], a bound listener and a shutdown
//! token; `disk_check` is the `disk-check` subcommand. `main.rs` only parses flags.

pub mod api;
pub mod collectors;
pub mod config;
pub mod disk_check;
pub mod fsync_probe;
pub mod metrics;
pub mod snapshot;

use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Args, Config};

use crate::snapshot::{AgentSnapshot, FsyncFacts};

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tasks = TaskTracker::new();
    let fsync = Arc::new(Mutex::new(FsyncFacts {
        enabled: !config.fsync_probe_interval.is_zero(),
        ..FsyncFacts::default()
    }));
    let mut collectors = collectors::Collectors::new(config.clone());
    // The first collection happens before serving, so /metrics is complete from the start.
    let first = {
        let f = fsync.lock().map(|f| f.clone()).unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            let s = collectors.collect(f);
            (collectors, s)
        })
        .await?
    };
    let (mut collectors, first) = first;
    log_collectors(&first);
    let (tx, rx) = watch::channel(Arc::new(first));
    let (registry, probe_metrics) = metrics::registry(&config.member, rx.clone());

    if !config.fsync_probe_interval.is_zero() {
        let probe = fsync_probe::Probe::new(
            config.fsync_probe_dir.clone(),
            config.fsync_probe_block_size,
        );
        tasks.spawn(fsync_probe::run(
            probe,
            config.fsync_probe_interval,
            probe_metrics,
            fsync.clone(),
            shutdown.clone(),
        ));
    }

    let interval = config.interval;
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut last: Option<AgentSnapshot> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let f = fsync.lock().map(|f| f.clone()).unwrap_or_default();
            let res = tokio::task::spawn_blocking(move || {
                let s = collectors.collect(f);
                (collectors, s)
            })
            .await;
            let Ok((c, snap)) = res else {
                tracing::error!("collection task failed; collections stopped");
                break;
            };
            collectors = c;
            if let Some(prev) = &last {
                log_changes(prev, &snap);
            }
            last = Some(snap.clone());
            tx.send_replace(Arc::new(snap));
        }
    });

    let app = api::router(api::AppState {
        registry: Arc::new(registry),
        snapshots: rx,
    });
    tracing::info!(
        member = %config.member,
        data_dir = %config.data_dir.display(),
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "etcd-monitor-agent started"
    );
    common::daemon::serve_until_shutdown(
        "etcd-monitor-agent",
        listener,
        app,
        &config.http_security,
        shutdown,
        tasks,
    )
    .await
}

fn log_collectors(s: &AgentSnapshot) {
    for c in s.collectors.iter().filter(|c| !c.ok) {
        tracing::warn!(collector = %c.name, error = c.error.as_deref().unwrap_or(""), "collector failed");
    }
}

fn log_changes(prev: &AgentSnapshot, now: &AgentSnapshot) {
    for c in &now.collectors {
        let was = prev
            .collectors
            .iter()
            .find(|p| p.name == c.name)
            .map(|p| p.ok);
        if was != Some(c.ok) {
            if c.ok {
                tracing::info!(collector = %c.name, "collector recovered");
            } else {
                tracing::warn!(collector = %c.name, error = c.error.as_deref().unwrap_or(""), "collector failed");
            }
        }
    }
}
