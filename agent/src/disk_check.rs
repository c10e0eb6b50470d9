//! `etcd-monitor-agent disk-check`: is this disk good enough for etcd?
//!
//! The test etcd's documentation suggests with fio: sequential writes of 2300-byte blocks
//! (a WAL record) to a 22 MiB file with an `fdatasync` after each, judged on the 99th
//! percentile of `fdatasync` (etcd wants it under 10 ms). Only the `fdatasync` is timed,
//! as fio's `sync` latency and etcd's `wal_fsync_duration_seconds` do; throughput covers
//! the whole run. The file is removed afterwards, also on failure.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Flags of `disk-check`; each also reads `ETCD_MONITOR_AGENT_DISK_CHECK_<FLAG>`.
#[derive(Debug, Clone, clap::Args)]
pub struct DiskCheckArgs {
    /// Directory to test (put it on the disk etcd's data dir will use).
    #[arg(long, env = "ETCD_MONITOR_AGENT_DISK_CHECK_DIR", value_name = "DIR")]
    pub dir: PathBuf,

    /// Total bytes to write (suffixes k, m, g, KiB, MiB, GiB are binary; kB, MB, GB decimal).
    #[arg(
        long,
        env = "ETCD_MONITOR_AGENT_DISK_CHECK_SIZE",
        default_value = "22MiB",
        value_parser = parse_size
    )]
    pub size: u64,

    /// Bytes per write.
    #[arg(
        long,
        env = "ETCD_MONITOR_AGENT_DISK_CHECK_BLOCK_SIZE",
        default_value = "2300",
        value_parser = parse_size
    )]
    pub block_size: u64,

    /// The fdatasync p99 that passes (etcd's guidance is 10ms).
    #[arg(
        long,
        env = "ETCD_MONITOR_AGENT_DISK_CHECK_MAX_P99",
        default_value = "10ms",
        value_parser = common::parse_duration
    )]
    pub max_p99: Duration,

    /// Report format.
    #[arg(
        long,
        env = "ETCD_MONITOR_AGENT_DISK_CHECK_OUTPUT",
        value_enum,
        default_value = "text"
    )]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Parses a size such as `22MiB`, `22m`, `4096`, `1GB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number with an optional unit"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => return Err(format!("invalid size {s:?}: unknown unit {other:?}")),
    };
    let v = (n * mult).round();
    if !(1.0..=1e13).contains(&v) {
        return Err(format!("invalid size {s:?}: out of range"));
    }
    Ok(v as u64)
}

/// fdatasync latency percentiles, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub dir: String,
    pub size_bytes: u64,
    pub block_size_bytes: u64,
    pub writes: u64,
    pub total_seconds: f64,
    pub throughput_bytes_per_second: f64,
    pub writes_per_second: f64,
    pub fdatasync: Latency,
    pub max_p99_ms: f64,
    pub pass: bool,
}

/// Why the check could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--dir: {0}")]
    Dir(String),
    #[error("--block-size: must not be larger than --size nor 64 MiB")]
    BlockSize,
    #[error("interrupted by {0}; the test file was removed")]
    Interrupted(&'static str),
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The largest block accepted (each block is held in memory).
pub const MAX_BLOCK: u64 = 64 * 1024 * 1024;

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Runs the check.
pub fn run(args: &DiskCheckArgs) -> Result<Report, Error> {
    run_until(args, &AtomicBool::new(false))
}

/// Runs the check until it is done or `stop` is set (checked before each write); the test
/// file is removed either way.
pub fn run_until(args: &DiskCheckArgs, stop: &AtomicBool) -> Result<Report, Error> {
    let meta = std::fs::metadata(&args.dir)
        .map_err(|e| Error::Dir(format!("{}: {e}", args.dir.display())))?;
    if !meta.is_dir() {
        return Err(Error::Dir(format!(
            "{} is not a directory",
            args.dir.display()
        )));
    }
    if args.block_size > args.size || args.block_size > MAX_BLOCK {
        return Err(Error::BlockSize);
    }
    let path = args.dir.join(format!(
        ".etcd-monitor-disk-check-{}.dat",
        std::process::id()
    ));
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io)?;
    let _cleanup = RemoveOnDrop(path.clone());
    let block: Vec<u8> = (0..args.block_size).map(|i| (i % 251) as u8 + 1).collect();
    let writes = args.size / args.block_size;
    // 1 ns to 60 s at 3 significant digits.
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let started = Instant::now();
    for _ in 0..writes {
        if stop.load(Ordering::Relaxed) {
            return Err(Error::Interrupted("a signal"));
        }
        file.write_all(&block).map_err(io)?;
        let t = Instant::now();
        file.sync_data().map_err(io)?;
        let ns = (t.elapsed().as_nanos() as u64).clamp(1, 60_000_000_000);
        hist.saturating_record(ns);
    }
    let total = started.elapsed().as_secs_f64().max(1e-9);
    let fdatasync = Latency {
        p50_ms: ms(hist.value_at_quantile(0.50)),
        p90_ms: ms(hist.value_at_quantile(0.90)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        p99_9_ms: ms(hist.value_at_quantile(0.999)),
        max_ms: ms(hist.max()),
        mean_ms: hist.mean() / 1e6,
    };
    let max_p99_ms = args.max_p99.as_secs_f64() * 1e3;
    Ok(Report {
        dir: args.dir.display().to_string(),
        size_bytes: writes * args.block_size,
        block_size_bytes: args.block_size,
        writes,
        total_seconds: total,
        throughput_bytes_per_second: (writes * args.block_size) as f64 / total,
        writes_per_second: writes as f64 / total,
        pass: fdatasync.p99_ms <= max_p99_ms,
        fdatasync,
        max_p99_ms,
    })
}

/// The text report.
pub fn render_text(r: &Report) -> String {
    let l = &r.fdatasync;
    let verdict = if r.pass {
        format!(
            "PASS: fdatasync p99 {:.3} ms is within the {} ms limit",
            l.p99_ms, r.max_p99_ms
        )
    } else {
        format!(
            "FAIL: fdatasync p99 {:.3} ms exceeds the {} ms limit; etcd on this disk will see slow WAL fsyncs",
            l.p99_ms, r.max_p99_ms
        )
    };
    format!(
        "disk-check {dir}\n\
         wrote {mib:.1} MiB as {writes} writes of {bs} bytes, fdatasync after each, in {secs:.2} s\n\
         throughput: {tput:.2} MiB/s, {wps:.0} writes/s\n\
         fdatasync latency (ms): p50 {p50:.3}  p90 {p90:.3}  p99 {p99:.3}  p99.9 {p999:.3}  max {max:.3}  mean {mean:.3}\n\
         {verdict}\n",
        dir = r.dir,
        mib = r.size_bytes as f64 / 1048576.0,
        writes = r.writes,
        bs = r.block_size_bytes,
        secs = r.total_seconds,
        tput = r.throughput_bytes_per_second / 1048576.0,
        wps = r.writes_per_second,
        p50 = l.p50_ms,
        p90 = l.p90_ms,
        p99 = l.p99_ms,
        p999 = l.p99_9_ms,
        max = l.max_ms,
        mean = l.mean_ms,
    )
}

/// The subcommand: prints the report; exit 0 on PASS, 1 on FAIL, 2 when it cannot run,
/// 130 when SIGINT or SIGTERM stopped it (the test file is removed then too).
pub fn main(args: &DiskCheckArgs) -> ExitCode {
    let stop = Arc::new(AtomicBool::new(false));
    let signalled = Arc::new(std::sync::OnceLock::new());
    // A small runtime only to hear the signals; the check runs on this thread.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("etcd-monitor-agent disk-check: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = {
        let (stop, signalled) = (stop.clone(), signalled.clone());
        std::thread::spawn(move || {
            runtime.block_on(async {
                let name = common::shutdown::signal().await;
                let _ = signalled.set(name);
                stop.store(true, Ordering::Relaxed);
            });
        })
    };
    drop(listener);
    let result = run_until(args, &stop).map_err(|e| match (e, signalled.get()) {
        (Error::Interrupted(_), Some(name)) => Error::Interrupted(name),
        (e, _) => e,
    });
    match result {
        Ok(report) => {
            match args.output {
                Output::Text => print!("{}", render_text(&report)),
                Output::Json => match serde_json::to_string_pretty(&report) {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("etcd-monitor-agent disk-check: {e}");
                        return ExitCode::from(2);
                    }
                },
            }
            if report.pass {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e @ Error::Interrupted(_)) => {
            eprintln!("etcd-monitor-agent disk-check: {e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("etcd-monitor-agent disk-check: {e}");
            ExitCode::from(2)
        }
    }
}

/// Used by tests: the file name pattern, to check it is gone.
pub fn leftovers(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".etcd-monitor-disk-check-")
                })
                .count()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_fio() {
        assert_eq!(parse_size("22MiB"), Ok(22 * 1024 * 1024));
        assert_eq!(parse_size("22m"), Ok(22 * 1024 * 1024));
        assert_eq!(parse_size("2300"), Ok(2300));
        assert_eq!(parse_size("1kB"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn small_run_reports_and_cleans_up() {
        let dir = tempfile::tempdir().expect("dir");
        let args = DiskCheckArgs {
            dir: dir.path().to_owned(),
            size: 230_000,
            block_size: 2300,
            max_p99: Duration::from_secs(10),
            output: Output::Text,
        };
        let r = run(&args).expect("run");
        assert_eq!(r.writes, 100);
        assert!(r.pass);
        assert!(r.fdatasync.p50_ms > 0.0 && r.fdatasync.p99_ms >= r.fdatasync.p50_ms);
        assert!(r.fdatasync.max_ms >= r.fdatasync.p99_9_ms);
        assert_eq!(leftovers(dir.path()), 0);
        let text = render_text(&r);
        assert!(text.contains("PASS") && text.contains("p99.9"), "{text}");
        // A limit nobody meets fails.
        let strict = DiskCheckArgs {
            max_p99: Duration::from_nanos(1),
            ..args
        };
        assert!(!run(&strict).expect("run").pass);
    }

    #[test]
    fn missing_dir_names_the_flag() {
        let args = DiskCheckArgs {
            dir: PathBuf::from("/nonexistent/dir"),
            size: 4096,
            block_size: 2300,
            max_p99: Duration::from_millis(10),
            output: Output::Text,
        };
        let e = run(&args).expect_err("must fail").to_string();
        assert!(e.starts_with("--dir: /nonexistent/dir"), "{e}");
    }
}
