//! The status page at `/`: the cluster at a glance for a person, rendered on the server
//! from the latest snapshot (no JavaScript; the page reloads itself every interval).

use std::fmt::Write as _;

use crate::snapshot::Snapshot;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| v.to_string())
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2} ms"))
}

/// Renders the page.
pub fn render(snap: &Snapshot) -> String {
    let m = &snap.model;
    let refresh = (snap.interval_ms / 1000).max(1);
    let (verdict, class) = if snap.cycle == 0 {
        ("starting", "warn")
    } else if m.healthy {
        ("healthy", "ok")
    } else {
        ("NOT HEALTHY", "bad")
    };
    let mut out = String::with_capacity(8 * 1024);
    let _ = write!(
        out,
        r#"<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh}">
<title>etcd-monitor: {verdict}</title><style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}th{{background:#f4f4f4}}
.ok{{color:#176f2c}}.bad{{color:#b00020;font-weight:bold}}.warn{{color:#a15c00}}
</style></head><body><h1>etcd cluster: <span class="{class}">{verdict}</span></h1>
<p>Leader: <b>{leader}</b> · members {count} · healthy {healthy} of quorum {quorum} · leader changes {changes} · split brain <span class="{sb_class}">{sb}</span> · partitioned {part} · revision divergence {revdiv} · raft index divergence {idxdiv}</p>
<p>Probes (last 1000): read p99 {rp99} · write p99 {wp99} · client requests {rate}/s</p>
"#,
        leader = m
            .leader
            .as_ref()
            .map_or("none".to_owned(), |l| esc(&l.name)),
        count = m.member_count,
        healthy = m.healthy_members,
        quorum = m.quorum_size,
        changes = snap.leader_changes_total,
        sb_class = if m.split_brain { "bad" } else { "ok" },
        sb = if m.split_brain { "YES" } else { "no" },
        part = m.partitioned_members.len(),
        revdiv = m.revision_divergence,
        idxdiv = m.raft_index_divergence,
        rp99 = ms(snap.latency.read.p99),
        wp99 = ms(snap.latency.write.p99),
        rate = snap
            .request_rate_per_second
            .map_or("–".to_owned(), |r| format!("{r:.1}")),
    );
    for reason in &m.split_brain_reasons {
        let _ = writeln!(out, r#"<p class="bad">Split brain: {}</p>"#, esc(reason));
    }
    for a in &m.alarms {
        let _ = writeln!(
            out,
            r#"<p class="bad">Alarm {} on {}</p>"#,
            a.alarm.as_str(),
            esc(&a.member)
        );
    }
    out.push_str("<table><tr><th>member</th><th>state</th><th>role</th><th>term</th><th>raft index</th><th>revision</th><th>db size</th><th>version</th><th>read (l)</th><th>wal fsync p95</th><th>error</th></tr>\n");
    for s in &m.members {
        let x = snap.extras.get(&s.info.id);
        let (state, class) = match (s.up, s.partitioned) {
            (false, _) => ("down", "bad"),
            (true, true) => ("partitioned", "bad"),
            (true, false) => ("up", "ok"),
        };
        let role = if s.is_leader {
            "leader"
        } else if s.info.is_learner {
            "learner"
        } else {
            "follower"
        };
        let _ = writeln!(
            out,
            r#"<tr><td>{name}</td><td class="{class}">{state}</td><td>{role}</td><td>{term}</td><td>{index}</td><td>{rev}</td><td>{db}</td><td>{ver}</td><td>{read}</td><td>{fsync}</td><td>{err}</td></tr>"#,
            name = esc(&s.info.name),
            term = opt(s.raft_term),
            index = opt(s.raft_index),
            rev = opt(s.revision),
            db = s.db_size_bytes.map_or("–".to_owned(), |b| format!(
                "{:.1} MiB",
                b as f64 / 1048576.0
            )),
            ver = esc(s.version.as_deref().unwrap_or("–")),
            read = ms(x.and_then(|x| x.read_linearizable_ms)),
            fsync = ms(x.and_then(|x| x.wal_fsync_p95_ms)),
            err = esc(s.error.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</table>\n<h2>Leader changes</h2><ul>\n");
    for c in snap.leader_history.iter().rev().take(10) {
        let _ = writeln!(
            out,
            "<li>{} → {} (term {}) at {} ms since epoch</li>",
            esc(c.from.as_deref().unwrap_or("?")),
            esc(&c.to),
            c.term,
            c.at_unix_ms
        );
    }
    out.push_str(
        r#"</ul><p><a href="/metrics">/metrics</a> · <a href="/api/v1/cluster/status">cluster status</a> · <a href="/api/v1/cluster/members">members</a> · <a href="/api/v1/metrics/history">history</a> · <a href="/api/v1/metrics/latency">latency</a></p></body></html>"#,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_names_and_says_starting_before_the_first_cycle() {
        let snap = Snapshot::empty(5000);
        let html = render(&snap);
        assert!(html.contains("starting"));
        assert!(html.contains(r#"content="5""#));
        assert_eq!(esc("<m1 & \"x\">"), "&lt;m1 &amp; &quot;x&quot;&gt;");
    }
}
