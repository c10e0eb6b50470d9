//! The command line: parse, run, print, push, judge. Exit codes: 0 ok, 1 a threshold
//! missed, 2 bad flags or etcd unreachable, 3 the push failed (thresholds met).

use std::io::IsTerminal;
use std::time::Duration;

use clap::Parser;
use common::etcd::EtcdConfig;

use crate::params::{Args, Output, Params};
use crate::run::Report;

pub const THRESHOLD_MISSED: u8 = 1;
pub const BAD_INPUT: u8 = 2;
pub const PUSH_FAILED: u8 = 3;

fn parse_labels(raw: &[String]) -> Result<Vec<(String, String)>, String> {
    let labels = raw
        .iter()
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| format!("--label: {l:?} is not k=v"))?;
            let valid = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            // `__` starts the names Prometheus reserves; the Pushgateway refuses them.
            if !valid || k == "job" || k.starts_with("__") {
                return Err(format!("--label: {k:?} is not a usable label name"));
            }
            if k == "workload" {
                return Err(format!(
                    "--label: {k:?} is set by the bench (the workload is part of the group)"
                ));
            }
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    // A label given twice names two groups at once (the Pushgateway keeps the last).
    for (i, (k, _)) in labels.iter().enumerate() {
        if labels[..i].iter().any(|(seen, _)| seen == k) {
            return Err(format!("--label: {k:?} is given twice"));
        }
    }
    Ok(labels)
}

/// Runs the command line `argv` (program name first) with the report on stdout and
/// messages on stderr; returns the exit code.
pub fn main<I, T>(argv: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let tty = std::io::stderr().is_terminal();
    main_with(argv, &mut std::io::stdout(), &mut std::io::stderr(), tty)
}

/// [`main`] writing to `out` and `err`; `tty` says that stderr is a terminal, where a
/// progress bar then shows with the text report (never with JSON).
pub fn main_with<I, T>(
    argv: I,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
    tty: bool,
) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => match common::usage_error_line("etcd-monitor-bench", &e) {
            None => {
                let _ = write!(out, "{e}");
                return 0;
            }
            Some(line) => {
                let _ = writeln!(err, "{line}");
                return BAD_INPUT;
            }
        },
    };
    let params = match Params::from_args(&args) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(err, "etcd-monitor-bench: {e}");
            return BAD_INPUT;
        }
    };
    let labels = match parse_labels(&args.labels) {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(err, "etcd-monitor-bench: {e}");
            return BAD_INPUT;
        }
    };
    if args.job.is_empty() {
        let _ = writeln!(err, "etcd-monitor-bench: --job: must not be empty");
        return BAD_INPUT;
    }
    if let Some(pg) = &args.pushgateway {
        if reqwest::Url::parse(pg).is_err() {
            let _ = writeln!(
                err,
                "etcd-monitor-bench: --pushgateway: {pg:?} is not a URL"
            );
            return BAD_INPUT;
        }
    }
    let etcd = match EtcdConfig::from_args(&args.etcd) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "etcd-monitor-bench: {e}");
            return BAD_INPUT;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(err, "etcd-monitor-bench: cannot start the runtime: {e}");
            return BAD_INPUT;
        }
    };
    let progress = args.output == Output::Text && tty;
    let code = rt.block_on(async {
        let report = match crate::run::run(&params, &etcd, progress).await {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(err, "etcd-monitor-bench: {e}");
                return BAD_INPUT;
            }
        };
        let missed = missed_thresholds(&report, args.max_p99, args.min_throughput);
        match args.output {
            Output::Text => {
                let _ = write!(out, "{}", crate::report::text(&report));
            }
            Output::Json => {
                let _ = writeln!(out, "{}", crate::report::json(&report));
            }
        }
        for m in &missed {
            let _ = writeln!(err, "etcd-monitor-bench: {m}");
        }
        let mut push_failed = false;
        if let Some(pg) = &args.pushgateway {
            if let Err(e) =
                crate::push::push(pg, &args.job, &labels, &report, missed.is_empty()).await
            {
                let _ = writeln!(err, "etcd-monitor-bench: {e}");
                push_failed = true;
            }
        }
        if !missed.is_empty() {
            THRESHOLD_MISSED
        } else if push_failed {
            PUSH_FAILED
        } else {
            0
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    code
}

/// The thresholds `report` missed, one line each. A run without a latency (no request
/// succeeded, or no watch event came) misses `--max-p99`.
fn missed_thresholds(
    report: &Report,
    max_p99: Option<Duration>,
    min_throughput: Option<f64>,
) -> Vec<String> {
    let mut missed = Vec::new();
    if let Some(max) = max_p99 {
        if report.hist.is_empty() {
            missed.push(format!(
                "threshold missed: no latency measured for --max-p99 {}",
                humantime::format_duration(max)
            ));
        } else {
            let p99 = Duration::from_secs_f64(report.p99());
            if p99 > max {
                missed.push(format!(
                    "threshold missed: p99 {} > --max-p99 {}",
                    humantime::format_duration(round_us(p99)),
                    humantime::format_duration(max)
                ));
            }
        }
    }
    if let Some(min) = min_throughput {
        if report.throughput < min {
            missed.push(format!(
                "threshold missed: throughput {:.1} requests/s < --min-throughput {min}",
                report.throughput
            ));
        }
    }
    missed
}

fn round_us(d: Duration) -> Duration {
    Duration::from_micros(d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Stop, Workload};
    use crate::run::{summarize, OpCounts};

    fn report(latencies_ns: &[u64], writes_ok: u64) -> Report {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)
            .expect("bounds");
        for ns in latencies_ns {
            h.record(*ns).expect("record");
        }
        let params = Params {
            workload: Workload::Watch {
                watchers: 2,
                streams: 1,
            },
            conns: 1,
            clients: 1,
            stop: Stop::Total(writes_ok),
            rate: None,
            key_size: 8,
            val_size: 8,
            key_space: 1000,
            prefix: String::new(),
            warmup: Duration::ZERO,
        };
        let writes = OpCounts {
            ok: writes_ok,
            errors: 0,
        };
        summarize(
            params,
            0.0,
            1.0,
            h,
            OpCounts::default(),
            writes,
            Default::default(),
        )
    }

    /// Puts that all succeeded while no watch event came leave no latency: that cannot
    /// meet a --max-p99 (it read as a p99 of 0).
    #[test]
    fn no_latency_misses_max_p99() {
        let max = Some(Duration::from_millis(50));
        let missed = missed_thresholds(&report(&[], 100), max, None);
        assert_eq!(missed.len(), 1, "{missed:?}");
        assert!(missed[0].contains("--max-p99 50ms"), "{missed:?}");
        assert!(missed_thresholds(&report(&[1_000_000; 10], 10), max, None).is_empty());
        let slow = missed_thresholds(&report(&[90_000_000; 10], 10), max, Some(5.0));
        assert_eq!(slow.len(), 1, "{slow:?}");
        assert!(slow[0].contains("p99 90"), "{slow:?}");
    }
}
