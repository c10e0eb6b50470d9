//! The bench's command line and its validation into [`Params`].

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use common::etcd::EtcdArgs;
use serde::Serialize;

/// etcd-monitor-bench: puts load on an etcd cluster (write, read, mixed, txn or watch),
/// reports like etcd's benchmark tool (or as JSON), pushes the results to a Pushgateway and
/// fails when a threshold is missed. Every flag also reads `ETCD_MONITOR_BENCH_<FLAG>`
/// (the etcd connection flags read the exporter's `ETCD_MONITOR_<FLAG>`). Exit codes: 0
/// ok, 1 a threshold missed, 2 bad flags or etcd unreachable, 3 the push to the
/// Pushgateway failed.
#[derive(Debug, Clone, Parser)]
#[command(name = "etcd-monitor-bench", version)]
pub struct Args {
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// gRPC connections, spread over the endpoints.
    #[arg(
        long,
        global = true,
        env = "ETCD_MONITOR_BENCH_CONNS",
        default_value_t = 1
    )]
    pub conns: usize,

    /// Concurrent clients sharing the connections.
    #[arg(
        long,
        global = true,
        env = "ETCD_MONITOR_BENCH_CLIENTS",
        default_value_t = 1
    )]
    pub clients: usize,

    /// Requests to make in all (the run stops then); excludes --duration.
    #[arg(
        long,
        global = true,
        env = "ETCD_MONITOR_BENCH_TOTAL",
        conflicts_with = "duration"
    )]
    pub total: Option<u64>,

    /// How long to run; excludes --total.
    #[arg(
        long,
        global = true,
        env = "ETCD_MONITOR_BENCH_DURATION",
        value_parser = common::parse_duration
    )]
    pub duration: Option<Duration>,

    /// Requests per second for the whole run; 0 means as fast as possible. With a rate,
    /// latency is timed from each request's scheduled send, so a cluster that falls
    /// behind shows it; the service time (from the actual send) is reported beside it.
    #[arg(
        long,
        global = true,
        env = "ETCD_MONITOR_BENCH_RATE",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub rate: f64,

    /// Key size in bytes.
    #[arg(
        long,
        global = true,
        env = "ETCD_MONITOR_BENCH_KEY_SIZE",
        default_value_t = 8
    )]
    pub key_size: usize,

    /// Value size in bytes (watch puts carry at least 20: their send times).
    #[arg(
        long,
        global = true,
        env = "ETCD_MONITOR_BENCH_VAL_SIZE",
        default_value_t = 8
    )]
    pub val_size: usize,

    /// Number of distinct keys.
    #[arg(
        long,
        global = true,
        env = "ETCD_MONITOR_BENCH_KEY_SPACE",
        default_value_t = 1000
    )]
    pub key_space: u64,

    /// Prefix of every key the bench writes (it counts toward --key-size).
    #[arg(
        long,
        global = true,
        env = "ETCD_MONITOR_BENCH_PREFIX",
        default_value = ""
    )]
    pub prefix: String,

    /// Time at the start whose requests are left out of the figures (default: 0 with
    /// --total, 1s with --duration).
    #[arg(
        long,
        global = true,
        env = "ETCD_MONITOR_BENCH_WARMUP",
        value_parser = common::parse_duration
    )]
    pub warmup: Option<Duration>,

    /// Report format (a progress bar shows on a terminal with text only).
    #[arg(
        long,
        global = true,
        env = "ETCD_MONITOR_BENCH_OUTPUT",
        value_enum,
        default_value = "text"
    )]
    pub output: Output,

    /// Pushgateway base URL to PUT the results to after the run.
    #[arg(long, global = true, env = "ETCD_MONITOR_BENCH_PUSHGATEWAY")]
    pub pushgateway: Option<String>,

    /// Pushgateway job name.
    #[arg(
        long,
        global = true,
        env = "ETCD_MONITOR_BENCH_JOB",
        default_value = "etcd-monitor-bench"
    )]
    pub job: String,

    /// Grouping label k=v (repeatable; comma-separated in the variable). The workload is
    /// always part of the group.
    #[arg(
        long = "label",
        global = true,
        env = "ETCD_MONITOR_BENCH_LABEL",
        value_delimiter = ',',
        value_name = "K=V"
    )]
    pub labels: Vec<String>,

    /// Fail (exit 1) when p99 latency is above this.
    #[arg(
        long,
        global = true,
        env = "ETCD_MONITOR_BENCH_MAX_P99",
        value_parser = common::parse_duration
    )]
    pub max_p99: Option<Duration>,

    /// Fail (exit 1) when throughput (requests/s) is below this.
    #[arg(long, global = true, env = "ETCD_MONITOR_BENCH_MIN_THROUGHPUT")]
    pub min_throughput: Option<f64>,

    #[command(subcommand)]
    pub workload: WorkloadCmd,
}

#[derive(Debug, Clone, Subcommand)]
pub enum WorkloadCmd {
    /// Puts.
    #[command(alias = "put")]
    Write {
        /// Write keys 0, 1, 2, ... instead of random ones.
        #[arg(long, env = "ETCD_MONITOR_BENCH_SEQUENTIAL_KEYS")]
        sequential_keys: bool,
    },
    /// Ranges (gets) of single keys.
    #[command(alias = "range")]
    Read {
        /// l (linearizable) or s (serializable).
        #[arg(
            long,
            env = "ETCD_MONITOR_BENCH_CONSISTENCY",
            value_enum,
            default_value = "l"
        )]
        consistency: Consistency,
        /// The keys exist already: do not fill the key space first.
        #[arg(long, env = "ETCD_MONITOR_BENCH_KEYS_EXIST")]
        keys_exist: bool,
    },
    /// Reads and writes over one key space.
    Mixed {
        /// Share of reads, 0..1.
        #[arg(
            long,
            env = "ETCD_MONITOR_BENCH_READ_RATIO",
            default_value_t = 0.7,
            allow_negative_numbers = true
        )]
        read_ratio: f64,
        /// l (linearizable) or s (serializable) reads.
        #[arg(
            long,
            env = "ETCD_MONITOR_BENCH_CONSISTENCY",
            value_enum,
            default_value = "l"
        )]
        consistency: Consistency,
    },
    /// Transactions of --ops-per-txn puts on distinct keys (etcd's txn-put).
    #[command(alias = "txn-put")]
    Txn {
        /// Puts per transaction (etcd refuses more than its --max-txn-ops, 128 by default).
        #[arg(long, env = "ETCD_MONITOR_BENCH_OPS_PER_TXN", default_value_t = 1)]
        ops_per_txn: u32,
    },
    /// Puts on watched keys, timed from the put to each watcher's event (etcd's
    /// watch-latency); every event is counted, a missing one is an error.
    #[command(alias = "watch-latency")]
    Watch {
        /// Watchers, each watching every key of the run (the prefix).
        #[arg(long, env = "ETCD_MONITOR_BENCH_WATCHERS", default_value_t = 10)]
        watchers: u32,
        /// gRPC watch streams the watchers share (spread over the connections).
        #[arg(long, env = "ETCD_MONITOR_BENCH_STREAMS", default_value_t = 1)]
        streams: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum Consistency {
    #[value(name = "l")]
    #[serde(rename = "l")]
    Linearizable,
    #[value(name = "s")]
    #[serde(rename = "s")]
    Serializable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Workload {
    Write {
        sequential_keys: bool,
    },
    Read {
        consistency: Consistency,
        fill: bool,
    },
    Mixed {
        read_ratio: f64,
        consistency: Consistency,
    },
    /// Transactions of `ops_per_txn` puts on distinct keys.
    Txn {
        ops_per_txn: u32,
    },
    /// Puts watched by `watchers` watchers over `streams` watch streams.
    Watch {
        watchers: u32,
        streams: u32,
    },
}

impl Workload {
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Write { .. } => "write",
            Workload::Read { .. } => "read",
            Workload::Mixed { .. } => "mixed",
            Workload::Txn { .. } => "txn",
            Workload::Watch { .. } => "watch",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    Total(u64),
    #[serde(serialize_with = "secs")]
    Duration(Duration),
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A validated run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Params {
    pub workload: Workload,
    pub conns: usize,
    pub clients: usize,
    pub stop: Stop,
    /// Requests per second, `None` for unlimited.
    pub rate: Option<f64>,
    pub key_size: usize,
    pub val_size: usize,
    pub key_space: u64,
    pub prefix: String,
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
}

/// A bad flag, named.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {message}")]
pub struct ParamError {
    pub flag: &'static str,
    pub message: String,
}

fn bad(flag: &'static str, message: impl Into<String>) -> ParamError {
    ParamError {
        flag,
        message: message.into(),
    }
}

/// More connections than a client machine has file descriptors for is a typo.
pub const MAX_CONNS: usize = 10_000;
/// Each client is a task with its own histograms (about 150 KiB each).
pub const MAX_CLIENTS: usize = 100_000;
/// Far past any cluster; it keeps the requests due in a `--duration` run countable.
pub const MAX_RATE: f64 = 1e9;
/// The longest run, and the longest a rate may leave between two requests: past it, the
/// schedule's times stop being times the clock can hold.
pub const MAX_RUN: Duration = Duration::from_secs(365 * 24 * 3600);

impl Params {
    pub fn from_args(a: &Args) -> Result<Self, ParamError> {
        if a.conns == 0 || a.conns > MAX_CONNS {
            return Err(bad("--conns", format!("must be between 1 and {MAX_CONNS}")));
        }
        if a.clients == 0 || a.clients > MAX_CLIENTS {
            return Err(bad(
                "--clients",
                format!("must be between 1 and {MAX_CLIENTS}"),
            ));
        }
        let stop = match (a.total, a.duration) {
            (Some(0), _) => return Err(bad("--total", "must be at least 1")),
            (Some(n), _) => Stop::Total(n),
            (None, Some(d)) if d.is_zero() || d > MAX_RUN => {
                return Err(bad(
                    "--duration",
                    "must be greater than zero and at most 365 days",
                ))
            }
            (None, Some(d)) => Stop::Duration(d),
            (None, None) => Stop::Total(10_000),
        };
        if !a.rate.is_finite() || a.rate < 0.0 {
            return Err(bad(
                "--rate",
                format!("{} is not a rate (requests/s, 0 for unlimited)", a.rate),
            ));
        }
        if a.rate > 0.0 && a.rate * MAX_RUN.as_secs_f64() < 1.0 {
            return Err(bad(
                "--rate",
                format!("{} is less than one request in 365 days", a.rate),
            ));
        }
        if a.rate > MAX_RATE {
            return Err(bad(
                "--rate",
                format!(
                    "{} is more than {MAX_RATE} requests/s (0 is as fast as possible)",
                    a.rate
                ),
            ));
        }
        if a.key_space == 0 {
            return Err(bad("--key-space", "must be at least 1"));
        }
        if a.key_size == 0 || a.key_size > 1024 {
            return Err(bad("--key-size", "must be between 1 and 1024 bytes"));
        }
        if a.val_size > 1024 * 1024 {
            return Err(bad(
                "--val-size",
                "must be at most 1 MiB (etcd's request limit is 1.5 MiB)",
            ));
        }
        let workload = match &a.workload {
            WorkloadCmd::Write { sequential_keys } => Workload::Write {
                sequential_keys: *sequential_keys,
            },
            WorkloadCmd::Read {
                consistency,
                keys_exist,
            } => Workload::Read {
                consistency: *consistency,
                fill: !keys_exist,
            },
            WorkloadCmd::Mixed {
                read_ratio,
                consistency,
            } => {
                if !(0.0..=1.0).contains(read_ratio) {
                    return Err(bad(
                        "--read-ratio",
                        format!("{read_ratio} is not between 0 and 1"),
                    ));
                }
                Workload::Mixed {
                    read_ratio: *read_ratio,
                    consistency: *consistency,
                }
            }
            WorkloadCmd::Txn { ops_per_txn } => {
                if *ops_per_txn == 0 {
                    return Err(bad("--ops-per-txn", "must be at least 1"));
                }
                if u64::from(*ops_per_txn) > a.key_space {
                    return Err(bad(
                        "--ops-per-txn",
                        format!(
                            "{ops_per_txn} puts on distinct keys need a --key-space of at least {ops_per_txn}"
                        ),
                    ));
                }
                Workload::Txn {
                    ops_per_txn: *ops_per_txn,
                }
            }
            WorkloadCmd::Watch { watchers, streams } => {
                if *watchers == 0 {
                    return Err(bad("--watchers", "must be at least 1"));
                }
                if *streams == 0 || streams > watchers {
                    return Err(bad(
                        "--streams",
                        format!("{streams} is not between 1 and --watchers ({watchers})"),
                    ));
                }
                Workload::Watch {
                    watchers: *watchers,
                    streams: *streams,
                }
            }
        };
        if let Some(m) = a.min_throughput {
            if !m.is_finite() || m < 0.0 {
                return Err(bad("--min-throughput", format!("{m} is not a throughput")));
            }
        }
        let warmup = a.warmup.unwrap_or(match stop {
            Stop::Total(_) => Duration::ZERO,
            Stop::Duration(_) => Duration::from_secs(1),
        });
        if warmup > MAX_RUN {
            return Err(bad("--warmup", "must be at most 365 days"));
        }
        if let Stop::Duration(d) = stop {
            if warmup >= d {
                return Err(bad("--warmup", "must be shorter than --duration"));
            }
        }
        Ok(Params {
            workload,
            conns: a.conns,
            clients: a.clients,
            stop,
            rate: (a.rate > 0.0).then_some(a.rate),
            key_size: a.key_size,
            val_size: a.val_size,
            key_space: a.key_space,
            prefix: a.prefix.clone(),
            warmup,
        })
    }

    /// The key with index `i`: the prefix, then `i` zero-padded to fill `--key-size`.
    pub fn key(&self, i: u64) -> String {
        let width = self.key_size.saturating_sub(self.prefix.len()).max(1);
        format!("{}{i:0width$}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn params(argv: &str) -> Result<Params, String> {
        let args = Args::try_parse_from(argv.split_whitespace()).map_err(|e| e.to_string())?;
        Params::from_args(&args).map_err(|e| e.to_string())
    }

    /// Values that parse but would overflow the schedule's clock or the memory for the
    /// clients are refused, naming the flag, instead of panicking in the run.
    #[test]
    fn values_past_what_a_run_can_hold_are_refused() {
        for (argv, flag) in [
            ("b --rate 1e-300 write", "--rate"),
            ("b --rate 1e-300 --duration 10s write", "--rate"),
            ("b --rate 1e300 --duration 10s write", "--rate"),
            ("b --duration 300000000000y write", "--duration"),
            ("b --warmup 300000000000y write", "--warmup"),
            ("b --clients 18446744073709551615 write", "--clients"),
            ("b --conns 1000000000 write", "--conns"),
        ] {
            let e = params(argv).expect_err(argv);
            assert!(e.starts_with(flag), "{argv}: {e}");
        }
        for argv in [
            "b --rate 0.0001 --total 3 write",
            "b --duration 365days --rate 1 write",
            "b --clients 100000 --conns 10000 write",
        ] {
            params(argv).unwrap_or_else(|e| panic!("{argv}: {e}"));
        }
    }

    /// Every flag of every workload reads `ETCD_MONITOR_BENCH_<FLAG>`; the etcd connection
    /// flags read the exporter's `ETCD_MONITOR_<FLAG>`.
    #[test]
    fn every_flag_has_its_variable() {
        let root = Args::command();
        let connection: Vec<String> =
            <EtcdArgs as clap::Args>::augment_args(clap::Command::new("x"))
                .get_arguments()
                .filter_map(|a| a.get_long().map(str::to_owned))
                .collect();
        let mut seen = 0;
        for cmd in std::iter::once(&root).chain(root.get_subcommands()) {
            for a in cmd.get_arguments() {
                let Some(long) = a.get_long() else { continue };
                if matches!(long, "help" | "version") {
                    continue;
                }
                let flag = long.to_uppercase().replace('-', "_");
                let want = if connection.iter().any(|c| c == long) {
                    format!("ETCD_MONITOR_{flag}")
                } else {
                    format!("ETCD_MONITOR_BENCH_{flag}")
                };
                let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
                assert_eq!(
                    env.as_deref(),
                    Some(want.as_str()),
                    "--{long} of {}",
                    cmd.get_name()
                );
                seen += 1;
            }
        }
        assert!(seen >= 30, "{seen} flags");
    }
}
