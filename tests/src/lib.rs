//! The test harness: real etcd clusters started from the `etcd` binary on loopback ports,
//! with TLS and client-certificate auth, etcd auth, or a tiny space quota on demand; and
//! the exporter run in-process against them.
//!
//! Every process is killed when its owner is dropped, also when a test panics. At most
//! [`MAX_CLUSTERS`] clusters run at once (the machines have two cores), whatever the
//! number of test threads.

pub mod etcd;
pub mod exporter;
pub mod tls;

pub use etcd::{ClusterOptions, EtcdCluster};
pub use exporter::RunningExporter;

use std::time::Duration;

/// Clusters that may run at the same time.
pub const MAX_CLUSTERS: usize = 2;

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
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

/// Installs a tracing subscriber once, so exporter logs show with `--nocapture`.
pub fn init_logs() {
    common::telemetry::init(common::telemetry::LogFormat::Text);
}
