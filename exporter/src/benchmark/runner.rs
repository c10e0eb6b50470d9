//! A benchmark run owned by its own OS thread, not by the request that asked for it.
//!
//! Constraints, in order:
//! - The run's keys are deleted and the cluster's slot released whatever happens: the
//!   run succeeds, fails, passes its deadline, panics, or the client goes away. So the
//!   thread owns the slot's guard and the clean-up; the request only waits on a channel,
//!   and a client that disconnects just stops the waiting.
//! - The load must not slow the collector. It runs on a runtime of its own, built for the
//!   run on the run's thread, so the collector's runtime never polls a benchmark task.
//! - Past the deadline the load stops: the load runtime is shut down, which drops the
//!   bench's client tasks (the bench spawns them, so dropping its future alone would
//!   leave them running) and closes their connections, before the clean-up starts.
//!
//! Sequence on the thread: load (bounded by the deadline) → shut the load runtime down →
//! delete the prefix (on a small runtime of its own, twice, the second time after a pause
//! for a put still in flight when the load stopped) → release the slot → send the outcome.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use bench::{Params, Report};
use common::etcd::EtcdConfig;
use tokio::sync::{oneshot, OwnedMutexGuard};

/// Worker threads of the load runtime: enough for hundreds of clients, and no more than
/// the exporter's own runtime has.
const LOAD_WORKERS: usize = 2;
/// Time for the load runtime to let go of its threads when shut down.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);
/// Attempts, and the time for each, to delete the run's keys.
const CLEANUP_ATTEMPTS: u32 = 3;
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause before the second delete.
const CLEANUP_SETTLE: Duration = Duration::from_millis(500);

/// One run to do.
pub struct Job {
    pub params: Params,
    pub etcd: EtcdConfig,
    /// Every key of the run is under it; all of it is deleted afterwards.
    pub prefix: String,
    /// For the logs.
    pub cluster: Option<String>,
    /// Load and fill together must end by then.
    pub deadline: Duration,
    /// The cluster's one-run slot, released when the thread is done.
    pub slot: OwnedMutexGuard<()>,
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    Done(Box<Report>),
    /// The bench refused or failed (connection, fill); its message.
    Failed(String),
    /// The deadline passed; the load was stopped.
    TimedOut(Duration),
    /// The bench panicked or its runtime could not be built; logged.
    Broken,
}

/// Starts `job` on a thread of its own; the outcome arrives on the receiver once the
/// keys are deleted and the slot is free.
pub fn start(job: Job) -> std::io::Result<oneshot::Receiver<Outcome>> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("etcd-bench".into())
        .spawn(move || {
            let Job {
                params,
                etcd,
                prefix,
                cluster,
                deadline,
                slot,
            } = job;
            let cluster = cluster.as_deref().unwrap_or("-");
            tracing::info!(
                cluster,
                workload = params.workload.name(),
                ?deadline,
                "benchmark started"
            );
            let outcome = load(&params, &etcd, deadline);
            clean_up(&etcd, &prefix, cluster);
            drop(slot);
            match &outcome {
                Outcome::Done(r) => tracing::info!(
                    cluster,
                    requests = r.requests,
                    throughput = r.throughput,
                    "benchmark done"
                ),
                other => {
                    tracing::warn!(cluster, outcome = ?other, "benchmark ended without a report")
                }
            }
            // The requester may be gone: nobody to tell then.
            let _ = tx.send(outcome);
        })?;
    Ok(rx)
}

/// Runs the bench on a fresh runtime until it ends or `deadline` passes.
fn load(params: &Params, etcd: &EtcdConfig, deadline: Duration) -> Outcome {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(LOAD_WORKERS)
        .thread_name("etcd-bench-load")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the benchmark's runtime");
            return Outcome::Broken;
        }
    };
    let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
        // The timer is made inside the runtime (a timeout needs its clock).
        rt.block_on(async { tokio::time::timeout(deadline, bench::run(params, etcd, false)).await })
    }));
    // Drops every task the bench spawned, so no request is sent after this.
    rt.shutdown_timeout(SHUTDOWN_WAIT);
    match ran {
        Ok(Ok(Ok(report))) => Outcome::Done(Box::new(report)),
        Ok(Ok(Err(e))) => Outcome::Failed(e.to_string()),
        Ok(Err(_)) => Outcome::TimedOut(deadline),
        Err(_) => {
            tracing::error!("the benchmark panicked");
            Outcome::Broken
        }
    }
}

/// Deletes every key under `prefix`, trying a few times.
fn clean_up(etcd: &EtcdConfig, prefix: &str, cluster: &str) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(cluster, prefix, error = %e, "cannot build a runtime to delete the benchmark's keys");
            return;
        }
    };
    rt.block_on(async {
        for pass in 0..2 {
            if pass > 0 {
                tokio::time::sleep(CLEANUP_SETTLE).await;
            }
            let mut last = String::new();
            let mut deleted = false;
            for _ in 0..CLEANUP_ATTEMPTS {
                match tokio::time::timeout(
                    CLEANUP_TIMEOUT,
                    crate::etcd::delete_prefix(etcd, prefix),
                )
                .await
                {
                    Ok(Ok(())) => {
                        deleted = true;
                        break;
                    }
                    Ok(Err(e)) => last = e,
                    Err(_) => last = "timed out".into(),
                }
            }
            if !deleted {
                tracing::error!(cluster, prefix, error = %last, "cannot delete the benchmark's keys");
                return;
            }
        }
    });
}
