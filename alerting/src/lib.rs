//! etcd-monitor-relay: receives alerts from Prometheus (Alertmanager's ingest API) and
//! Alertmanager webhooks, deduplicates and routes them, and delivers them durably to
//! Slack, PagerDuty, email, webhooks and the console.
//!
//! [`run`] is the whole relay given a validated [`Config`], a bound listener and a
//! shutdown token; `main.rs` only parses flags.

pub mod api;
pub mod config;
pub mod delivery;
pub mod engine;
pub mod inhibit;
pub mod matchers;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod routing;
pub mod silence;
pub mod store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Args, Config};

/// The wake-up of each receiver's worker, by receiver name.
pub type WakeMap = Arc<RwLock<HashMap<String, Arc<Notify>>>>;

/// The delivery workers of the current configuration.
struct Workers {
    engine: Arc<engine::Engine>,
    http: reqwest::Client,
    metrics: metrics::Metrics,
    wake: WakeMap,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    handle: tokio::runtime::Handle,
    current: Mutex<Option<CancellationToken>>,
    /// One reload at a time (SIGHUP and `POST /-/reload` may come together).
    reloading: Mutex<()>,
}

impl Workers {
    /// Stops the running workers (an attempt in flight is abandoned and retried by the
    /// next worker) and starts one per receiver of `cfg`.
    fn restart(&self, cfg: &config::RelayConfig) -> anyhow::Result<()> {
        let mut notifiers = Vec::new();
        for r in &cfg.receivers {
            let n = notify::build(r, &self.http)
                .map_err(|e| anyhow::anyhow!("receiver {}: {e}", r.name))?;
            notifiers.push((r.clone(), n));
        }
        // The old workers stop before the new ones start: two workers of one receiver
        // could deliver a group's notifications out of order.
        let old = self.current.lock().ok().and_then(|mut c| c.take());
        if let Some(old) = old {
            old.cancel();
        }
        let token = self.shutdown.child_token();
        let mut wake = HashMap::new();
        for (r, notifier) in notifiers {
            let w = Arc::new(Notify::new());
            wake.insert(r.name.clone(), w.clone());
            self.tasks.spawn_on(
                delivery::run_worker(
                    r,
                    notifier,
                    self.engine.store().clone(),
                    w,
                    cfg.retry,
                    cfg.max_delivery_age,
                    self.metrics.clone(),
                    token.clone(),
                ),
                &self.handle,
            );
        }
        if let Ok(mut w) = self.wake.write() {
            *w = wake;
        }
        if let Ok(mut c) = self.current.lock() {
            *c = Some(token);
        }
        Ok(())
    }
}

/// Reads the config file again and applies it: routes and receivers change at once; a
/// bad file changes nothing and says why.
fn reload(path: &Path, workers: &Workers) -> Result<(), String> {
    let _one = workers.reloading.lock();
    let apply = || -> Result<usize, String> {
        let cfg = config::load(path).map_err(|e| e.to_string())?;
        workers.restart(&cfg).map_err(|e| e.to_string())?;
        let names: Vec<String> = cfg.receivers.iter().map(|r| r.name.clone()).collect();
        workers.metrics.add_receivers(&names);
        workers.engine.set_config(Arc::new(cfg));
        workers
            .engine
            .store()
            .drop_receivers_except(&names, delivery::now_ms())
            .map_err(|e| {
                format!(
                    "configuration applied, but queued deliveries of removed receivers remain: {e}"
                )
            })
            .map(|n| n as usize)
    };
    let outcome = apply();
    let label = |o: &str| metrics::OutcomeOnly {
        outcome: o.to_owned(),
    };
    match &outcome {
        Ok(dropped) => {
            workers.metrics.reload_success.set(1);
            workers
                .metrics
                .reloads
                .get_or_create(&label("success"))
                .inc();
            tracing::info!(path = %path.display(), dropped_deliveries = dropped, "configuration reloaded");
        }
        Err(e) => {
            workers.metrics.reload_success.set(0);
            workers
                .metrics
                .reloads
                .get_or_create(&label("failure"))
                .inc();
            tracing::error!(error = %e, "configuration reload failed; the previous configuration stays in force");
        }
    }
    outcome.map(|_| ())
}

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
        .redirect(reqwest::redirect::Policy::none())
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
    let (engine, quarantined) = {
        let (s, cfg, max) = (
            store.clone(),
            Arc::new(config.file.clone()),
            config.max_alerts,
        );
        tokio::task::spawn_blocking(move || engine::Engine::open(s, cfg, max))
            .await?
            .with_context(|| format!("--data-dir {}", config.data_dir.display()))?
    };
    metrics.quarantined.inc_by(quarantined);
    let engine = Arc::new(engine);
    let tasks = TaskTracker::new();
    let wake: WakeMap = Arc::default();
    let workers = Arc::new(Workers {
        engine: engine.clone(),
        http,
        metrics: metrics.clone(),
        wake: wake.clone(),
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
        handle: tokio::runtime::Handle::current(),
        current: Mutex::new(None),
        reloading: Mutex::new(()),
    });
    workers.restart(&config.file)?;
    tasks.spawn(tick_loop(
        engine.clone(),
        wake.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(recovery_loop(
        engine.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let reloader: api::Reloader = {
        let (path, workers) = (config.config_path.clone(), workers.clone());
        Arc::new(move || reload(&path, &workers))
    };
    tasks.spawn(sighup_loop(reloader.clone(), shutdown.clone()));
    let app = api::router(api::AppState {
        engine,
        wake,
        metrics,
        registry: Arc::new(registry),
        max_body_bytes: config.max_body_bytes,
        started_ms: delivery::now_ms(),
        reload: reloader,
    });
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        receivers = names.join(","),
        data_dir = %config.data_dir.display(),
        "etcd-monitor-relay started"
    );
    common::daemon::serve_until_shutdown(
        "etcd-monitor-relay",
        listener,
        app,
        &config.http_security,
        shutdown,
        tasks,
    )
    .await
}

/// The longest between two engine steps: lease expiry, silences that end and group
/// timers are noticed within this.
const TICK: Duration = Duration::from_secs(1);

/// Runs [`engine::Engine::tick`] every [`TICK`], or sooner when a group timer falls due.
async fn tick_loop(
    engine: Arc<engine::Engine>,
    wake: WakeMap,
    metrics: metrics::Metrics,
    shutdown: CancellationToken,
) {
    let mut sleep = TICK;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(sleep) => {}
        }
        let e = engine.clone();
        let stepped = tokio::task::spawn_blocking(move || e.tick(delivery::now_ms())).await;
        sleep = TICK;
        match stepped {
            Ok(Ok(out)) => {
                if out.expired > 0 {
                    tracing::info!(
                        alerts = out.expired,
                        "alert leases ran out without a refresh: resolved"
                    );
                }
                metrics.superseded.inc_by(out.superseded);
                wake_receivers(&wake, &out.enqueued);
                if let Some(due) = out.next_due_ms {
                    let wait = due.saturating_sub(delivery::now_ms()).max(10) as u64;
                    sleep = sleep.min(Duration::from_millis(wait));
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "engine step failed; retrying"),
            Err(e) => tracing::warn!(error = %e, "engine step task failed"),
        }
    }
}

/// How often an unhealthy store is reopened.
const RECOVERY_INTERVAL: Duration = Duration::from_secs(2);

/// Reopens the store after a failed write (redb refuses all work until then), as soon
/// as writes succeed again (space freed on a full disk).
async fn recovery_loop(
    engine: Arc<engine::Engine>,
    metrics: metrics::Metrics,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RECOVERY_INTERVAL) => {}
        }
        metrics
            .store_healthy
            .set(i64::from(engine.store().is_healthy()));
        if engine.store().is_healthy() {
            continue;
        }
        let e = engine.clone();
        let reopened = tokio::task::spawn_blocking(move || {
            e.store().reopen()?;
            e.reload_state()
        })
        .await;
        match reopened {
            Ok(Ok(q)) => {
                metrics.quarantined.inc_by(q);
                metrics.store_healthy.set(1);
                tracing::info!("the store accepts writes again");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "the store still cannot write"),
            Err(e) => tracing::warn!(error = %e, "store recovery task failed"),
        }
    }
}

/// Reloads the configuration on SIGHUP.
async fn sighup_loop(reload: api::Reloader, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with POST /-/reload");
        return;
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            got = hup.recv() => if got.is_none() { return },
        }
        let r = reload.clone();
        let _ = tokio::task::spawn_blocking(move || r()).await;
    }
}

/// Wakes the worker of each receiver that has new deliveries.
pub(crate) fn wake_receivers(wake: &WakeMap, enqueued: &[(String, u64)]) {
    let Ok(w) = wake.read() else { return };
    for (receiver, _) in enqueued {
        if let Some(n) = w.get(receiver) {
            n.notify_one();
        }
    }
}
