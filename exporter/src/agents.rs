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

/// Largest snapshot accepted from an agent.
pub const MAX_BODY: usize = 1024 * 1024;

/// One `--agent` flag: a URL, optionally pinned to a member (`NAME=URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTarget {
    pub member: Option<String>,
    pub url: String,
}

/// Parses `URL` or `NAME=URL`.
pub fn parse_target(raw: &str) -> Result<AgentTarget, String> {
    let raw = raw.trim();
    let (member, url) = match raw.split_once('=') {
        Some((m, u)) if !m.contains("://") => (Some(m.trim().to_owned()), u.trim()),
        _ => (None, raw),
    };
    if member.as_deref() == Some("") {
        return Err(format!(
            "invalid agent {raw:?}: empty member name before '='"
        ));
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid agent URL {url:?}: {e}"))?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(format!(
            "invalid agent URL {url:?}: scheme must be http or https"
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("invalid agent URL {url:?}: no host"));
    }
    Ok(AgentTarget {
        member,
        url: url.trim_end_matches('/').to_owned(),
    })
}

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
    let url = format!("{}/api/v1/snapshot", target.url);
    let (status, body) = crate::scrape::get_body(http, &url, MAX_BODY, deadline).await?;
    if !status.is_success() {
        return Err(format!("GET {url}: status {status}"));
    }
    let report = parse(&body).map_err(|e| format!("GET {url}: not an agent snapshot: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    if let Some(age) = report.stale_ms(now) {
        return Err(format!(
            "GET {url}: the snapshot is {}s old; the agent's collections are stuck",
            age / 1000
        ));
    }
    Ok(report)
}

/// Parses a snapshot body.
pub fn parse(body: &[u8]) -> Result<AgentReport, String> {
    let host: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let view: SnapshotView = serde_json::from_value(host.clone()).map_err(|e| e.to_string())?;
    if view.member.is_empty() {
        return Err("empty member name".into());
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
    /// The snapshot's age when it is older than three agent intervals plus 10 s.
    pub fn stale_ms(&self, now_ms: u64) -> Option<u64> {
        let at = self.at_unix_ms?;
        let interval = self.interval_ms.unwrap_or(5_000);
        let age = now_ms.saturating_sub(at);
        (age > 3 * interval + 10_000).then_some(age)
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
                url: "http://h:9101".into()
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
