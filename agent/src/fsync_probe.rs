//! The fsync probe: how long `fdatasync` takes on the data dir's filesystem, measured the
//! way etcd's WAL experiences it.
//!
//! Constraints: it must measure the same filesystem as etcd (checked at start), never
//! touch etcd's own files (its file lives outside the member directory) and stay cheap
//! next to a busy member (one small write and one `fdatasync` per interval). Each probe
//! writes one block (2300 bytes by default, an etcd WAL record's size) in place into a
//! file preallocated to [`PROBE_FILE_BLOCKS`] blocks, rotating through them so the file
//! never grows, then times `fdatasync` alone (the write only fills the page cache), like
//! etcd's `wal_fsync_duration_seconds`.
//!
//! Failures (a probe dir made unwritable, a full disk) are counted and retried at the
//! next interval with the file opened afresh; they never stop the agent.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::metrics::ProbeMetrics;
use crate::snapshot::FsyncFacts;

/// Blocks in the probe file.
pub const PROBE_FILE_BLOCKS: u64 = 16;
/// The probe file's name inside the probe dir.
pub const PROBE_FILE: &str = "fsync-probe.dat";

pub struct Probe {
    path: PathBuf,
    block: Vec<u8>,
    file: Option<File>,
    next: u64,
}

impl Probe {
    pub fn new(dir: PathBuf, block_size: usize) -> Self {
        // Not zeros, so that no filesystem can elide the write.
        let block = (0..block_size).map(|i| (i % 251) as u8 + 1).collect();
        Probe {
            path: dir.join(PROBE_FILE),
            block,
            file: None,
            next: 0,
        }
    }

    fn open(&mut self) -> Result<&File, String> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| format!("create {}: {e}", dir.display()))?;
            }
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)
                .map_err(|e| format!("open {}: {e}", self.path.display()))?;
            let want = self.block.len() as u64 * PROBE_FILE_BLOCKS;
            let have = f
                .metadata()
                .map_err(|e| format!("stat {}: {e}", self.path.display()))?
                .len();
            if have < want {
                for i in 0..PROBE_FILE_BLOCKS {
                    f.write_all_at(&self.block, i * self.block.len() as u64)
                        .map_err(|e| format!("preallocate {}: {e}", self.path.display()))?;
                }
                f.sync_all()
                    .map_err(|e| format!("sync {}: {e}", self.path.display()))?;
            }
            self.file = Some(f);
        }
        self.file
            .as_ref()
            .ok_or_else(|| "probe file not open".to_owned())
    }

    /// One probe: write a block in place, time its `fdatasync`.
    pub fn probe_once(&mut self) -> Result<Duration, String> {
        let offset = (self.next % PROBE_FILE_BLOCKS) * self.block.len() as u64;
        self.next = self.next.wrapping_add(1);
        let res = (|| {
            let block = self.block.clone();
            let path = self.path.clone();
            let f = self.open()?;
            f.write_all_at(&block, offset)
                .map_err(|e| format!("write {}: {e}", path.display()))?;
            let started = Instant::now();
            f.sync_data()
                .map_err(|e| format!("fdatasync {}: {e}", path.display()))?;
            Ok(started.elapsed())
        })();
        if res.is_err() {
            self.file = None;
        }
        res
    }
}

/// Runs the probe every `interval` until `shutdown`.
pub async fn run(
    mut probe: Probe,
    interval: Duration,
    metrics: ProbeMetrics,
    facts: Arc<Mutex<FsyncFacts>>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let joined = tokio::task::spawn_blocking(move || {
            let res = probe.probe_once();
            (probe, res)
        })
        .await;
        let (p, res) = match joined {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "fsync probe task failed; probe stopped");
                break;
            }
        };
        probe = p;
        let mut f = facts.lock().unwrap_or_else(|poison| poison.into_inner());
        match res {
            Ok(d) => {
                metrics.observe(d);
                f.probes += 1;
                f.sum_seconds += d.as_secs_f64();
                f.last_seconds = Some(d.as_secs_f64());
                f.last_error = None;
            }
            Err(e) => {
                if f.last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(error = %e, "fsync probe failed");
                }
                metrics.error();
                f.errors += 1;
                f.last_error = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_in_place_without_growing_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let mut p = Probe::new(dir.path().join("probe"), 2300);
        for _ in 0..40 {
            p.probe_once().expect("probe");
        }
        let len = std::fs::metadata(dir.path().join("probe").join(PROBE_FILE))
            .expect("file")
            .len();
        assert_eq!(len, 2300 * PROBE_FILE_BLOCKS);
    }

    #[test]
    fn an_unwritable_probe_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("dir");
        // A directory where the file should be: even root cannot open it for writing.
        std::fs::create_dir_all(dir.path().join(PROBE_FILE)).expect("mkdir");
        let mut p = Probe::new(dir.path().to_owned(), 2300);
        let err = p.probe_once().expect_err("must fail");
        assert!(err.contains(PROBE_FILE), "{err}");
        assert!(p.probe_once().is_err(), "fails again, still no panic");
    }
}
