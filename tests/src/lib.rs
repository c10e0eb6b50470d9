//! The test harness: real etcd clusters started from the `etcd` binary on loopback ports,
//! with TLS and client-certificate auth, etcd auth, or a tiny space quota on demand; and
//! the exporter, the agent and the relay run in-process against them; and a real
//! Prometheus loading the repository's rules.
//!
//! Every process is killed when its owner is dropped, also when a test panics. At most
//! [`MAX_CLUSTERS`] clusters run at once (the machines have two cores), whatever the
//! number of test threads.

pub mod agent;
pub mod daemon;
pub mod etcd;
pub mod exporter;
pub mod netns;
pub mod prometheus;
pub mod relay;
pub mod stack;
pub mod tls;

pub use agent::RunningAgent;
pub use etcd::{ClusterOptions, EtcdCluster};
pub use exporter::RunningExporter;
pub use prometheus::RunningPrometheus;

use std::time::Duration;

/// Clusters that may run at the same time.
pub const MAX_CLUSTERS: usize = 2;

/// Ports handed out by [`free_port`]: below Linux's ephemeral range (32768-60999 by
/// default), so no `connect()` or `bind(:0)` anywhere on the machine takes one between
/// the moment it is picked and the moment the daemon binds it.
const PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A free TCP port on 127.0.0.1 for a daemon a test starts.
///
/// A port from `bind(:0)` is ephemeral: after it is released, any outgoing connection
/// on the machine may take it before etcd or Prometheus binds it (seen in CI: three
/// cluster starts in a row failed with "address already in use"). These come from a
/// range the kernel never assigns, each at most once per test process, starting at an
/// offset of the process id so that test processes run one after another do not step
/// on each other's lingering sockets; the one returned was bindable when picked.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = PORTS.end - PORTS.start;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(2_654_435_761) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (PORTS.start + n % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {PORTS:?}")
}

/// Runs etcd-monitor-bench's command line (`argv`, the program name first) in-process:
/// exit code, stdout, stderr. On a plain thread, because it starts its own runtime.
pub async fn run_bench(argv: Vec<String>) -> (u8, String, String) {
    tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = bench::cli::main_with(argv, &mut out, &mut err, false);
            (
                code,
                String::from_utf8_lossy(&out).into_owned(),
                String::from_utf8_lossy(&err).into_owned(),
            )
        })
        .join()
        .expect("bench thread")
    })
    .await
    .expect("join")
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The version of the installed `etcd` (e.g. `3.4.23`).
pub fn etcd_version() -> String {
    let out = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .expect("etcd --version");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_owned())
        .expect("a version line")
}

/// Installs a tracing subscriber once, so exporter logs show with `--nocapture`.
pub fn init_logs() {
    common::telemetry::init(common::telemetry::LogFormat::Text);
}

/// Runs `promtool check metrics` on `text`: its exit code (0 clean, 3 lint remarks, 1
/// a parse error) and everything it printed.
pub fn promtool_check_metrics(text: &str) -> (i32, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub async fn wait_port(port: u16, timeout: Duration) {
    wait_for(
        &format!("127.0.0.1:{port} to accept"),
        timeout,
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
}

/// A command run in the repository root that does not inherit the test's `CARGO_PKG_*`,
/// `CARGO_MANIFEST_*` and similar variables: a nested `cargo` that kept them would rerun
/// build scripts (ring's) and rebuild half the workspace, and the next ordinary build all
/// of it again.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str() {
            if k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_MANIFEST_")
                || matches!(
                    k,
                    "CARGO_CRATE_NAME"
                        | "CARGO_BIN_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "OUT_DIR"
                )
            {
                cmd.env_remove(k);
            }
        }
    }
    cmd.current_dir(prometheus::repo_root())
        .stdin(std::process::Stdio::null());
    cmd
}
