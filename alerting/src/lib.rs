//! etcd-monitor-relay: receives alerts from Prometheus (Alertmanager's ingest API) and
//! Alertmanager webhooks, deduplicates and routes them, and delivers them durably to
//! Slack, PagerDuty, email, webhooks and the console.
//!
//! [`run`] is the whole relay given a validated [`Config`], a bound listener and a
//! shutdown token; `main.rs` only parses flags.

pub mod api;
pub mod config;
pub mod dedup;
pub mod delivery;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod routing;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Args, Config};

/// Runs the relay until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || store::Store::open(&dir))
        .await?
        .with_context(|| format!("--data-dir {}", config.data_dir.display()))?;
    let store = Arc::new(store);
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .build()
        .context("HTTP client")?;
    let mut registry = prometheus_client::registry::Registry::default();
    let names: Vec<String> = config
        .file
        .receivers
        .iter()
        .map(|r| r.name.clone())
        .collect();
    let metrics = metrics::Metrics::new(&mut registry, &names);
    let tasks = TaskTracker::new();
    let mut wake = HashMap::new();
    for r in &config.file.receivers {
        let notifier =
            notify::build(r, &http).map_err(|e| anyhow::anyhow!("receiver {}: {e}", r.name))?;
        let w = Arc::new(Notify::new());
        wake.insert(r.name.clone(), w.clone());
        tasks.spawn(delivery::run_worker(
            r.clone(),
            notifier,
            store.clone(),
            w,
            config.file.retry,
            config.file.max_delivery_age,
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    let file = Arc::new(config.file.clone());
    let wake = Arc::new(wake);
    tasks.spawn(expire_leases(
        store.clone(),
        file.clone(),
        wake.clone(),
        shutdown.clone(),
    ));
    let app = api::router(api::AppState {
        config: file,
        store,
        wake,
        metrics,
        registry: Arc::new(registry),
        max_body_bytes: config.max_body_bytes,
    });
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        receivers = names.join(","),
        data_dir = %config.data_dir.display(),
        "etcd-monitor-relay started"
    );
    let served =
        common::http::serve_secured(listener, app, &config.http_security, shutdown.clone()).await;
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("delivery workers did not stop within 5s");
    }
    served?;
    tracing::info!("etcd-monitor-relay stopped");
    Ok(())
}

/// How often firing alerts are checked for a lease that ran out.
const LEASE_SWEEP: Duration = Duration::from_secs(5);

/// Resolves, every [`LEASE_SWEEP`], the firing alerts that Prometheus stopped refreshing
/// (it died, or the rule is gone) once their `endsAt` passes, as Alertmanager does, so a
/// page does not stay open for ever.
async fn expire_leases(
    store: Arc<store::Store>,
    config: Arc<config::RelayConfig>,
    wake: Arc<HashMap<String, Arc<Notify>>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(LEASE_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (store, cfg) = (store.clone(), config.clone());
        let swept = tokio::task::spawn_blocking(move || {
            store.expire(
                |a: &model::Alert| cfg.receivers_for(a),
                delivery::now_ms(),
                cfg.dedup_window,
            )
        })
        .await;
        match swept {
            Ok(Ok(out)) => {
                if out.received > 0 {
                    tracing::info!(
                        alerts = out.received,
                        notifications = out.enqueued.len(),
                        "alert leases ran out without a refresh: resolved"
                    );
                }
                wake_receivers(&wake, &out.enqueued);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot resolve expired alerts"),
            Err(e) => tracing::warn!(error = %e, "lease sweep task failed"),
        }
    }
}

/// Wakes the worker of each receiver that has new deliveries.
pub(crate) fn wake_receivers(wake: &HashMap<String, Arc<Notify>>, enqueued: &[(String, u64)]) {
    for (receiver, _) in enqueued {
        if let Some(w) = wake.get(receiver) {
            w.notify_one();
        }
    }
}
