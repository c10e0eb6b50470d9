//! The agent's flags and their validation into a [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};
use common::telemetry::LogFormat;

/// etcd-monitor-agent: runs next to one etcd member and reports what etcd cannot see
/// about itself: fdatasync latency of the data dir's disk (an active probe), disk I/O,
/// filesystem, memory, CPU, network, the etcd process and its client connections.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "etcd-monitor-agent",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub daemon: DaemonArgs,

    /// Log line format.
    #[arg(
        long,
        env = "ETCD_MONITOR_AGENT_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Is this disk good enough for etcd? Sequential writes with an fdatasync after each
    /// (what etcd's WAL does), like the fio test etcd's docs suggest; PASS or FAIL against
    /// the p99 limit (exit code 1 on FAIL).
    DiskCheck(crate::disk_check::DiskCheckArgs),
}

common::server_security_args!(ServerArgs, "ETCD_MONITOR_AGENT_");

/// Flags of the agent daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// The etcd member's name, put on every series as `member` (default: the host name).
    #[arg(long, env = "ETCD_MONITOR_AGENT_MEMBER")]
    pub member: Option<String>,

    /// The member's data dir (required).
    #[arg(long, env = "ETCD_MONITOR_AGENT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address to serve /metrics and /api/v1/snapshot on.
    #[arg(
        long,
        env = "ETCD_MONITOR_AGENT_LISTEN",
        default_value = "0.0.0.0:9101",
        value_name = "ADDR:PORT"
    )]
    pub listen: String,

    /// PID of the etcd process (default: the process whose command line names the data dir).
    #[arg(
        long,
        env = "ETCD_MONITOR_AGENT_ETCD_PID",
        conflicts_with = "etcd_pid_file"
    )]
    pub etcd_pid: Option<i32>,

    /// File holding the PID of the etcd process.
    #[arg(long, env = "ETCD_MONITOR_AGENT_ETCD_PID_FILE", value_name = "FILE")]
    pub etcd_pid_file: Option<PathBuf>,

    /// The member's client port, for counting established client connections.
    #[arg(
        long,
        env = "ETCD_MONITOR_AGENT_ETCD_CLIENT_PORT",
        default_value_t = 2379
    )]
    pub etcd_client_port: u16,

    /// Time between two fsync probes; 0 turns the probe off.
    #[arg(long, env = "ETCD_MONITOR_AGENT_FSYNC_PROBE_INTERVAL", default_value = "10s", value_parser = parse_duration_or_zero)]
    pub fsync_probe_interval: Duration,

    /// Directory for the probe file (default: a hidden directory beside the data dir). It
    /// must be on the data dir's filesystem and outside etcd's member directory.
    #[arg(long, env = "ETCD_MONITOR_AGENT_FSYNC_PROBE_DIR", value_name = "DIR")]
    pub fsync_probe_dir: Option<PathBuf>,

    /// Bytes written by each probe, in place (etcd's WAL records are about this size).
    #[arg(
        long,
        env = "ETCD_MONITOR_AGENT_FSYNC_PROBE_BLOCK_SIZE",
        default_value_t = 2300
    )]
    pub fsync_probe_block_size: usize,

    /// Time between two collections of the host facts.
    #[arg(long, env = "ETCD_MONITOR_AGENT_INTERVAL", default_value = "5s", value_parser = common::parse_duration)]
    pub interval: Duration,

    /// Measure the bytes used by the data dir (walks the directory each collection).
    #[arg(long, env = "ETCD_MONITOR_AGENT_DATA_DIR_USAGE", default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub data_dir_usage: bool,

    #[command(flatten)]
    pub server: ServerArgs,
}

fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    common::parse_duration(s)
}

/// How the etcd process is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdProcess {
    Pid(i32),
    PidFile(PathBuf),
    /// The process whose command line names the data dir.
    ByDataDir,
}

/// Validated settings of the daemon.
#[derive(Debug, Clone)]
pub struct Config {
    pub member: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub etcd_process: EtcdProcess,
    pub etcd_client_port: u16,
    pub fsync_probe_interval: Duration,
    pub fsync_probe_dir: PathBuf,
    pub fsync_probe_block_size: usize,
    pub interval: Duration,
    pub data_dir_usage: bool,
    /// TLS and bearer token of the HTTP server.
    pub http_security: common::http::ServerSecurity,
}

/// A configuration problem, naming the flag.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {message}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub message: String,
}

fn invalid(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        message: message.into(),
    }
}

fn device_of(path: &Path) -> std::io::Result<u64> {
    nix::sys::stat::stat(path)
        .map(|s| s.st_dev)
        .map_err(std::io::Error::from)
}

/// The default probe dir: `.<data dir name>.fsync-probe` beside the data dir; when the
/// data dir is a mount point of its own (its parent is on another filesystem), a hidden
/// directory inside it, `.etcd-monitor-fsync-probe`, outside etcd's `member/` (etcd only
/// logs a warning about unknown entries there).
pub fn default_probe_dir(data_dir: &Path) -> PathBuf {
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "etcd".into());
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    let same_fs = match (device_of(parent), device_of(data_dir)) {
        (Ok(a), Ok(b)) => a == b,
        _ => true,
    };
    if same_fs {
        parent.join(format!(".{name}.fsync-probe"))
    } else {
        data_dir.join(".etcd-monitor-fsync-probe")
    }
}

impl Config {
    pub fn from_args(args: DaemonArgs) -> Result<Self, ConfigError> {
        let raw_dir = args
            .data_dir
            .ok_or_else(|| invalid("--data-dir", "is required (the etcd member's data dir)"))?;
        let data_dir = std::fs::canonicalize(&raw_dir)
            .map_err(|e| invalid("--data-dir", format!("{}: {e}", raw_dir.display())))?;
        if !data_dir.is_dir() {
            return Err(invalid(
                "--data-dir",
                format!("{} is not a directory", data_dir.display()),
            ));
        }
        let member = match args.member {
            Some(m) if !m.trim().is_empty() => m,
            Some(_) => return Err(invalid("--member", "must not be empty")),
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| !h.is_empty())
                .ok_or_else(|| invalid("--member", "no host name to default to; pass --member"))?,
        };
        let listen: SocketAddr = args.listen.parse().map_err(|e| {
            invalid(
                "--listen",
                format!("invalid address {:?}: {e}", args.listen),
            )
        })?;
        let etcd_process = match (args.etcd_pid, args.etcd_pid_file) {
            (Some(pid), _) if pid <= 0 => return Err(invalid("--etcd-pid", "must be positive")),
            (Some(pid), _) => EtcdProcess::Pid(pid),
            (None, Some(f)) => EtcdProcess::PidFile(f),
            (None, None) => EtcdProcess::ByDataDir,
        };
        let probe_dir = match args.fsync_probe_dir {
            Some(d) => d,
            None => default_probe_dir(&data_dir),
        };
        if args.fsync_probe_interval > Duration::ZERO {
            check_probe_dir(&data_dir, &probe_dir)?;
        }
        if args.fsync_probe_block_size == 0 || args.fsync_probe_block_size > 1 << 20 {
            return Err(invalid(
                "--fsync-probe-block-size",
                "must be between 1 byte and 1 MiB",
            ));
        }
        if args.interval < Duration::from_secs(1) / 10 {
            return Err(invalid("--interval", "must be at least 100ms"));
        }
        Ok(Config {
            member,
            data_dir,
            listen,
            etcd_process,
            etcd_client_port: args.etcd_client_port,
            fsync_probe_interval: args.fsync_probe_interval,
            fsync_probe_dir: probe_dir,
            fsync_probe_block_size: args.fsync_probe_block_size,
            interval: args.interval,
            data_dir_usage: args.data_dir_usage,
            http_security: args
                .server
                .load()
                .map_err(|e| invalid(e.flag(), e.message()))?,
        })
    }
}

/// The probe dir must be on the data dir's filesystem (or the probe would time another
/// disk) and outside etcd's own `member` directory.
fn check_probe_dir(data_dir: &Path, probe_dir: &Path) -> Result<(), ConfigError> {
    const FLAG: &str = "--fsync-probe-dir";
    let absolute = if probe_dir.is_absolute() {
        probe_dir.to_owned()
    } else {
        std::env::current_dir()
            .map_err(|e| invalid(FLAG, e.to_string()))?
            .join(probe_dir)
    };
    // The directory may not exist yet: its nearest existing ancestor decides.
    let existing = absolute
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let existing = std::fs::canonicalize(existing)
        .map_err(|e| invalid(FLAG, format!("{}: {e}", existing.display())))?;
    let rest = absolute
        .strip_prefix(
            absolute
                .ancestors()
                .find(|p| p.exists())
                .unwrap_or(Path::new("/")),
        )
        .unwrap_or(Path::new(""));
    let resolved = existing.join(rest);
    if resolved.starts_with(data_dir.join("member")) {
        return Err(invalid(
            FLAG,
            format!(
                "{} is inside etcd's member directory; choose a directory outside it",
                resolved.display()
            ),
        ));
    }
    let probe_dev =
        device_of(&existing).map_err(|e| invalid(FLAG, format!("{}: {e}", existing.display())))?;
    let data_dev = device_of(data_dir)
        .map_err(|e| invalid("--data-dir", format!("{}: {e}", data_dir.display())))?;
    if probe_dev != data_dev {
        return Err(invalid(
            FLAG,
            format!(
                "{} is not on the filesystem of the data dir {}",
                resolved.display(),
                data_dir.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_dir_defaults_beside_the_data_dir_or_inside_a_mounted_one() {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("m1.etcd");
        std::fs::create_dir(&data).expect("mkdir");
        assert_eq!(
            default_probe_dir(&data),
            dir.path().join(".m1.etcd.fsync-probe")
        );
        // /dev/shm is a mount of its own on Linux: its parent is another filesystem.
        let shm = Path::new("/dev/shm");
        if shm.is_dir() && device_of(shm).ok() != device_of(Path::new("/dev")).ok() {
            assert_eq!(
                default_probe_dir(shm),
                shm.join(".etcd-monitor-fsync-probe")
            );
        }
    }
}
