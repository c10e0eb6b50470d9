//! Reading the agents' snapshots (`GET /api/v1/snapshot` of `etcd-monitor-agent`) and
//! matching them to members by name.
//!
//! The exporter does not depend on the agent crate: it reads the few figures it joins
//! into its own metrics from the JSON and keeps the rest as the member's host facts for
//! the API. An agent that is down or answers anything but such a snapshot is reported as
//! down; it never affects the member's own facts.

use std::collections::HashMap;

use serde::Deserialize;
use tokio::time::Instant;

pub use common::remote::{parse_target, AgentTarget};

/// Largest snapshot accepted from an agent.
pub const MAX_BODY: usize = 1024 * 1024;

/// The longest agent interval accepted from a snapshot: a day. An agent collects every
/// few seconds; a longer one would make its snapshots never stale.
pub const MAX_INTERVAL_MS: u64 = 24 * 60 * 60 * 1000;

#[derive(Debug, Clone, Default, Deserialize)]
struct ProcessView {
    resident_memory_bytes: Option<u64>,
}

/// The fields of an agent snapshot the exporter uses.
#[derive(Debug, Clone, Deserialize)]
struct SnapshotView {
    member: String,
    #[serde(default)]
    at_unix_ms: Option<u64>,
    #[serde(default)]
    interval_ms: Option<u64>,
    #[serde(default)]
    etcd_process: Option<ProcessView>,
    #[serde(default)]
    data_dir_bytes: Option<u64>,
    #[serde(default)]
    etcd_client_connections: Option<u64>,
}

/// What one agent said this cycle.
#[derive(Debug, Clone)]
pub struct AgentReport {
    pub member: String,
    pub at_unix_ms: Option<u64>,
    pub interval_ms: Option<u64>,
    pub memory_usage_bytes: Option<u64>,
    pub disk_usage_bytes: Option<u64>,
    pub active_connections: Option<u64>,
    /// The whole snapshot, shown as the member's host facts.
    pub host: serde_json::Value,
}

/// Reads one agent's snapshot before `deadline`.
pub async fn fetch(
    http: &reqwest::Client,
    target: &AgentTarget,
    deadline: Instant,
) -> Result<AgentReport, String> {
    const PATH: &str = "/api/v1/snapshot";
    let url = format!("{}{PATH}", target.url);
    let shown = format!("{}{PATH}", target.display);
    let (status, body) = crate::scrape::get_body(http, &url, MAX_BODY, deadline).await?;
    if !status.is_success() {
        return Err(format!("GET {shown}: status {status}"));
    }
    let report = parse(&body).map_err(|e| format!("GET {shown}: not an agent snapshot: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    if let Some(age) = report.stale_ms(now) {
        return Err(format!(
            "GET {shown}: the snapshot is {}s old; the agent's collections are stuck",
            age / 1000
        ));
    }
    Ok(report)
}

/// Parses a snapshot body. An interval of 0 or over [`MAX_INTERVAL_MS`] is refused.
pub fn parse(body: &[u8]) -> Result<AgentReport, String> {
    let host: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let view: SnapshotView = serde_json::from_value(host.clone()).map_err(|e| e.to_string())?;
    if view.member.is_empty() {
        return Err("empty member name".into());
    }
    if let Some(ms) = view.interval_ms {
        if ms == 0 || ms > MAX_INTERVAL_MS {
            return Err(format!(
                "interval_ms {ms} is out of range (1 to {MAX_INTERVAL_MS}, a day)"
            ));
        }
    }
    Ok(AgentReport {
        member: view.member,
        at_unix_ms: view.at_unix_ms,
        interval_ms: view.interval_ms,
        memory_usage_bytes: view.etcd_process.and_then(|p| p.resident_memory_bytes),
        disk_usage_bytes: view.data_dir_bytes,
        active_connections: view.etcd_client_connections,
        host,
    })
}

impl AgentReport {
    /// The snapshot's age when it is older than three agent intervals plus 10 s. The
    /// figures come from the agent, so the sum saturates rather than overflows (`parse`
    /// refuses intervals over a day, but a report can be built otherwise).
    pub fn stale_ms(&self, now_ms: u64) -> Option<u64> {
        let at = self.at_unix_ms?;
        let interval = self.interval_ms.unwrap_or(5_000);
        let age = now_ms.saturating_sub(at);
        let limit = interval.saturating_mul(3).saturating_add(10_000);
        (age > limit).then_some(age)
    }
}

/// The member each agent URL belongs to: pinned by the flag, else learnt from its last
/// good snapshot (so that an agent going down is still attributed to its member).
#[derive(Debug, Default)]
pub struct Attribution {
    learnt: HashMap<String, String>,
}

impl Attribution {
    pub fn member_of(&self, target: &AgentTarget) -> Option<String> {
        target
            .member
            .clone()
            .or_else(|| self.learnt.get(&target.url).cloned())
    }

    pub fn learn(&mut self, target: &AgentTarget, member: &str) {
        self.learnt.insert(target.url.clone(), member.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_and_without_member() {
        assert_eq!(
            parse_target("http://h:9101/"),
            Ok(AgentTarget {
                member: None,
                url: "http://h:9101".into(),
                display: "http://h:9101".into(),
            })
        );
        assert_eq!(
            parse_target("m1=http://h:9101").map(|t| t.member),
            Ok(Some("m1".into()))
        );
        assert!(parse_target("=http://h:1").is_err());
        assert!(parse_target("h:9101").is_err());
        assert!(parse_target("ftp://h:1").is_err());
    }

    #[test]
    fn credentials_stay_in_the_request_url() {
        let t = parse_target("m1=https://monitor:s3cret@h:9101/").expect("target");
        assert_eq!(t.url, "https://monitor:s3cret@h:9101");
        assert_eq!(t.display, "https://***:***@h:9101");
        assert_eq!(t.member.as_deref(), Some("m1"));
        let t = parse_target("http://TOKEN@h:9101").expect("target");
        assert_eq!(t.display, "http://***@h:9101");
        for bad in [
            "ftp://u:s3cret@h:1",
            "http://u:s3cret@",
            "m=http://u:s3cret@h:99999",
            "u:s3cret@h:1",
        ] {
            let err = parse_target(bad).expect_err(bad);
            assert!(!err.contains("s3cret"), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn fetch_errors_do_not_show_the_password() {
        // Nothing listens on port 1; the error names the agent without its password.
        let t = parse_target("http://u:s3cret@127.0.0.1:1").expect("target");
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let err = fetch(&reqwest::Client::new(), &t, deadline)
            .await
            .expect_err("nothing there");
        assert!(err.contains("***:***@127.0.0.1:1"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn absurd_intervals_are_refused_and_staleness_cannot_overflow() {
        for interval in [0, MAX_INTERVAL_MS + 1, u64::MAX] {
            let body = format!(r#"{{"member":"m1","at_unix_ms":1,"interval_ms":{interval}}}"#);
            let err = parse(body.as_bytes()).expect_err(&body);
            assert!(err.contains("interval_ms"), "{err}");
        }
        let day = parse(
            format!(r#"{{"member":"m1","at_unix_ms":0,"interval_ms":{MAX_INTERVAL_MS}}}"#)
                .as_bytes(),
        )
        .expect("a day is allowed");
        assert_eq!(day.stale_ms(3 * MAX_INTERVAL_MS + 10_000), None);
        assert_eq!(day.stale_ms(u64::MAX), Some(u64::MAX));
        // Built by hand, past parse's check: saturates instead of overflowing.
        let huge = AgentReport {
            interval_ms: Some(u64::MAX),
            ..day
        };
        assert_eq!(huge.stale_ms(u64::MAX), None);
    }

    #[test]
    fn a_snapshot_older_than_three_intervals_is_stale() {
        let r = parse(br#"{"member":"m1","at_unix_ms":100000,"interval_ms":5000}"#).expect("parse");
        assert_eq!(r.stale_ms(120_000), None);
        assert_eq!(r.stale_ms(125_001), Some(25_001));
        let old_agent = parse(br#"{"member":"m1"}"#).expect("parse");
        assert_eq!(
            old_agent.stale_ms(u64::MAX),
            None,
            "no timestamp, no verdict"
        );
    }

    #[test]
    fn snapshot_fields_are_read_and_garbage_rejected() {
        let r = parse(
            br#"{"member":"m1","etcd_process":{"resident_memory_bytes":42},"data_dir_bytes":7,"etcd_client_connections":3,"extra":[1]}"#,
        )
        .expect("parse");
        assert_eq!(
            (
                r.member.as_str(),
                r.memory_usage_bytes,
                r.disk_usage_bytes,
                r.active_connections
            ),
            ("m1", Some(42), Some(7), Some(3))
        );
        assert_eq!(
            parse(br#"{"member":"m2"}"#).map(|r| r.memory_usage_bytes),
            Ok(None)
        );
        assert!(parse(b"<html>").is_err());
        assert!(parse(br#"{"member":5}"#).is_err());
        assert!(parse(br#"{"member":""}"#).is_err());
        assert!(parse(br#"{"member":"m1","data_dir_bytes":-4}"#).is_err());
    }
}
