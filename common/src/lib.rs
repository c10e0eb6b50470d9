//! Shared plumbing for the etcd-monitor binaries: etcd connection options and client
//! construction, HTTP serving with graceful shutdown, the shutdown signal and tracing setup.
//! Nothing product-specific lives here.

pub mod etcd;
pub mod http;
pub mod insecure;
pub mod secret;
pub mod shutdown;
pub mod telemetry;

/// Parses a human duration flag such as `5s`, `250ms` or `1m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}
