//! Host collectors, one module each. Every collector reports its own success and duration;
//! one that fails leaves its facts out and never hides the others.

pub mod connections;
pub mod cpu;
pub mod datadir;
pub mod diskstats;
pub mod filesystem;
pub mod memory;
pub mod network;
pub mod process;

use std::time::{Instant, SystemTime};

use crate::config::Config;
use crate::snapshot::{AgentSnapshot, CollectorStatus, FsyncFacts};

/// State kept between collections.
pub struct Collectors {
    cfg: Config,
    disk: diskstats::DiskDevice,
    /// Mount point and filesystem type of the data dir.
    mount: (String, String),
    process: process::Finder,
}

fn timed<T>(
    statuses: &mut Vec<CollectorStatus>,
    name: &str,
    f: impl FnOnce() -> Result<T, String>,
) -> Option<T> {
    let started = Instant::now();
    let res = f();
    let duration_seconds = started.elapsed().as_secs_f64();
    let (ok, error, value) = match res {
        Ok(v) => (true, None, Some(v)),
        Err(e) => (false, Some(e), None),
    };
    statuses.push(CollectorStatus {
        name: name.to_owned(),
        ok,
        error,
        duration_seconds,
    });
    value
}

impl Collectors {
    pub fn new(cfg: Config) -> Self {
        let disk = diskstats::DiskDevice::resolve(&cfg.data_dir);
        match &disk {
            diskstats::DiskDevice::Found { name, .. } => {
                tracing::info!(device = %name, "disk I/O of the data dir's device");
            }
            diskstats::DiskDevice::Unavailable(why) => {
                tracing::warn!(reason = %why, "disk I/O collector unavailable");
            }
        }
        let process = process::Finder::new(cfg.etcd_process.clone(), cfg.data_dir.clone());
        let mount = filesystem::mount(&cfg.data_dir);
        Collectors {
            cfg,
            disk,
            mount,
            process,
        }
    }

    /// One collection (blocking: reads /proc and walks the data dir).
    pub fn collect(&mut self, fsync: FsyncFacts) -> AgentSnapshot {
        let mut st = Vec::new();
        let cfg = &self.cfg;
        let disk = timed(&mut st, "diskstats", || self.disk.collect());
        let filesystem = timed(&mut st, "filesystem", || {
            filesystem::collect(&cfg.data_dir, &self.mount)
        });
        let data_dir_bytes = if cfg.data_dir_usage {
            timed(&mut st, "datadir", || datadir::collect(&cfg.data_dir))
        } else {
            None
        };
        let memory = timed(&mut st, "memory", memory::collect);
        let cpu = timed(&mut st, "cpu", cpu::collect);
        let network = timed(&mut st, "network", network::collect).unwrap_or_default();
        let etcd_process = timed(&mut st, "process", || self.process.collect());
        let etcd_client_connections = timed(&mut st, "connections", || {
            connections::collect(cfg.etcd_client_port)
        });
        AgentSnapshot {
            member: cfg.member.clone(),
            data_dir: cfg.data_dir.to_string_lossy().into_owned(),
            at_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            interval_ms: cfg.interval.as_millis() as u64,
            collectors: st,
            disk,
            filesystem,
            data_dir_bytes,
            memory,
            cpu,
            network,
            etcd_process,
            etcd_client_connections,
            fsync,
        }
    }
}
