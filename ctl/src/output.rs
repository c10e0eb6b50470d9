//! Rendering results: aligned tables for people, JSON for machines. Pure: every function
//! turns a typed result into text.

use serde::Serialize;

use crate::cluster::{ClusterView, MemberView, Probe};

/// `-o table|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Left-aligned columns separated by two spaces, header first.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let pad = widths[i].saturating_sub(c.chars().count());
                s.push_str(c);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Bytes for people: `12.3 MiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// One member's line of `status`, for both outputs.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    pub name: String,
    pub id: String,
    pub endpoint: Option<String>,
    pub up: bool,
    pub is_leader: bool,
    pub is_learner: bool,
    pub raft_term: Option<u64>,
    pub raft_index: Option<u64>,
    pub raft_applied_index: Option<u64>,
    pub revision: Option<i64>,
    pub db_size_bytes: Option<i64>,
    pub db_size_in_use_bytes: Option<i64>,
    /// `None`: unknown.
    pub quota_bytes: Option<u64>,
    pub quota_usage: Option<f64>,
    pub version: Option<String>,
    pub errors: Vec<String>,
}

/// What `status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub cluster_id: String,
    pub members: Vec<StatusRow>,
    pub alarms: Vec<crate::ops::AlarmLine>,
    pub alarms_error: Option<String>,
    pub quorum: usize,
    pub verdict: String,
    pub healthy: bool,
}

fn row(view: &ClusterView, m: &MemberView) -> StatusRow {
    let s = m.status();
    let mut errors = s.map(|s| s.errors.clone()).unwrap_or_default();
    if let Probe::Down { error } = &m.probe {
        errors.push(error.clone());
    }
    StatusRow {
        name: m.label(),
        id: format!("{:x}", m.info.id),
        endpoint: m.endpoint.clone(),
        up: m.is_up(),
        is_leader: view.leader() == Some(m.info.id),
        is_learner: m.info.is_learner,
        raft_term: s.map(|s| s.raft_term),
        raft_index: s.map(|s| s.raft_index),
        raft_applied_index: s.map(|s| s.raft_applied_index),
        revision: s.map(|s| s.revision),
        db_size_bytes: s.map(|s| s.db_size_bytes),
        db_size_in_use_bytes: s.map(|s| s.db_size_in_use_bytes),
        quota_bytes: m.quota_bytes,
        quota_usage: m.quota_usage(),
        version: s.map(|s| s.version.clone()),
        errors,
    }
}

pub fn status_report(view: &ClusterView) -> StatusReport {
    let verdict = view.verdict();
    StatusReport {
        cluster_id: format!("{:x}", view.cluster_id),
        members: view.members.iter().map(|m| row(view, m)).collect(),
        alarms: crate::ops::alarm_lines(view, &view.alarms),
        alarms_error: view.alarms_error.clone(),
        quorum: view.quorum(),
        healthy: verdict == crate::cluster::Verdict::Healthy,
        verdict: verdict.to_string(),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

pub fn status_table(r: &StatusReport) -> String {
    let rows: Vec<Vec<String>> = r
        .members
        .iter()
        .map(|m| {
            let size = |b: Option<i64>| opt(b.map(|b| human_bytes(b.max(0) as u64)));
            vec![
                m.name.clone(),
                m.id.clone(),
                opt(m.endpoint.clone()),
                if m.is_leader { "yes" } else { "no" }.into(),
                if m.is_learner { "yes" } else { "no" }.into(),
                opt(m.raft_term),
                opt(m.raft_index),
                opt(m.raft_applied_index),
                opt(m.revision),
                size(m.db_size_bytes),
                size(m.db_size_in_use_bytes),
                match (m.quota_bytes, m.quota_usage) {
                    (Some(q), Some(u)) => format!("{} ({:.0}%)", human_bytes(q), u * 100.0),
                    (Some(q), None) => human_bytes(q),
                    _ => "unknown".into(),
                },
                opt(m.version.clone()),
                m.errors.join("; "),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "NAME",
            "ID",
            "ENDPOINT",
            "LEADER",
            "LEARNER",
            "TERM",
            "RAFT INDEX",
            "APPLIED",
            "REVISION",
            "DB SIZE",
            "IN USE",
            "QUOTA (USED)",
            "VERSION",
            "ERRORS",
        ],
        &rows,
    );
    out.push('\n');
    if let Some(e) = &r.alarms_error {
        out.push_str(&format!("alarms: cannot list ({e})\n"));
    } else if r.alarms.is_empty() {
        out.push_str("alarms: none\n");
    } else {
        let list: Vec<String> = r
            .alarms
            .iter()
            .map(|a| format!("{} on {}", a.alarm, a.member))
            .collect();
        out.push_str(&format!("alarms: {}\n", list.join(", ")));
    }
    out.push_str(&format!("cluster {}: {}\n", r.cluster_id, r.verdict));
    out
}

/// Pretty JSON of any result, newline-terminated.
pub fn json<T: Serialize>(v: &T) -> String {
    match serde_json::to_string_pretty(v) {
        Ok(s) => s + "\n",
        Err(e) => format!("{{\"error\": \"cannot encode: {e}\"}}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::view;

    #[test]
    fn status_table_shows_members_alarms_and_verdict() {
        let mut v = view(3, &[3]);
        v.members[1].quota_bytes = None;
        let text = status_table(&status_report(&v));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME  ID  ENDPOINT"), "{text}");
        assert!(
            lines[1].starts_with("m1    1   http://127.0.0.1:2380  yes"),
            "{text}"
        );
        assert!(lines[2].contains("unknown"), "{text}");
        assert!(lines[3].contains("connection refused"), "{text}");
        assert!(
            text.ends_with("alarms: none\ncluster 7: quorum at risk: down m3\n"),
            "{text}"
        );
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
