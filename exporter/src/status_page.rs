//! The status page at `/`: what an operator opens first, rendered on the server from the
//! latest snapshots.
//!
//! Constraints: the page is one self-contained HTML document. No JavaScript, no external
//! fonts, images or style sheets (it works under `Content-Security-Policy: default-src
//! 'none'; style-src 'unsafe-inline'; img-src data:`); plots are inline SVG drawn here
//! ([`svg`]); it reloads itself with a meta refresh at the collection interval (at least
//! 5 s). Everything that comes from outside the process (member names, URLs, errors,
//! alert labels, cluster names) goes through [`fmt::esc`] on its way into the page.
//! Verdicts carry words and a symbol, never color alone.
//!
//! Shape: with several clusters and none selected, an overview with one card per
//! cluster; otherwise the detail of one cluster: the verdict and its reasons, key
//! figures, firing alerts, the members, plots of the last hour, and the leader timeline.
//! [`render`] is a pure function of a [`Page`], so all of it is unit-tested.

mod alerts;
mod fmt;
mod svg;
mod verdict;

use std::fmt::Write as _;
use std::sync::Arc;

use crate::model::MemberState;
use crate::snapshot::{AgentStatus, MemberExtras, Snapshot};

pub use alerts::parse_relay_alerts;
pub use verdict::{judge, Level, Verdict};

use fmt::esc;

/// What the page shows.
pub struct Page<'a> {
    /// One snapshot per cluster, in configuration order; `Snapshot::cluster` is the name
    /// (`None` for a single unnamed cluster).
    pub clusters: &'a [Arc<Snapshot>],
    /// `?cluster=NAME`; `None` shows the overview when there are several clusters, and
    /// the one cluster otherwise.
    pub selected: Option<&'a str>,
    /// Firing alerts from the relay.
    pub alerts: Alerts,
    pub now_unix_ms: u64,
}

/// The relay's firing alerts, as far as the caller could learn them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alerts {
    /// No relay configured (`--relay-url`).
    NotConfigured,
    /// The relay could not be asked; the reason, shown escaped.
    Unavailable(String),
    Firing(Vec<FiringAlert>),
}

/// One firing alert, from its labels and annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiringAlert {
    /// `alertname`.
    pub name: String,
    pub severity: String,
    pub cluster: Option<String>,
    pub member: Option<String>,
    /// The `summary` annotation.
    pub summary: Option<String>,
    /// RFC 3339, as the relay has it.
    pub starts_at: String,
}

/// Colors of members in the leader timeline, in member order.
const PALETTE: [&str; 7] = [
    "#2563eb", "#0d9488", "#7c3aed", "#ca8a04", "#db2777", "#0891b2", "#65a30d",
];

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","DejaVu Sans",sans-serif;color:#1d2433;background:#f3f5f8}
a{color:#1d4ed8;text-decoration:none}a:hover{text-decoration:underline}
.wrap{max-width:1240px;margin:0 auto;padding:0 20px}
header{background:#101828;color:#e4e7ec}
header .wrap{display:flex;flex-wrap:wrap;align-items:center;gap:6px 18px;min-height:52px;padding-top:8px;padding-bottom:8px}
header .brand{color:#fff;font-weight:700;font-size:17px;letter-spacing:.2px}
header nav{display:flex;flex-wrap:wrap;gap:6px}
header nav a{color:#e4e7ec;padding:3px 10px;border-radius:999px;background:#1f2a3d;font-size:13px}
header nav a.cur{background:#344054;color:#fff;font-weight:600}
header .fresh{margin-left:auto;font-size:13px;color:#98a2b3}
main{padding:20px 0 32px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:17px;margin:0 0 12px}
.muted{color:#667085}.small{font-size:13px}
.card{background:#fff;border:1px solid #e4e7ec;border-radius:10px;padding:16px 18px;margin:0 0 16px;box-shadow:0 1px 2px rgba(16,24,40,.04)}
.verdict{border-left:8px solid #98a2b3}
.verdict.ok{border-left-color:#12b76a}.verdict.warn{border-left-color:#f79009}.verdict.bad{border-left-color:#f04438}
.vhead{display:flex;flex-wrap:wrap;align-items:baseline;gap:8px 16px}
.vword{font-size:28px;font-weight:750;margin:0}
.ok .vword{color:#067647}.warn .vword{color:#b54708}.bad .vword{color:#b42318}.unknown .vword{color:#475467}
ul.reasons{margin:8px 0 0;padding-left:20px}ul.reasons li{margin:2px 0}
.badge{display:inline-block;padding:1px 10px;border-radius:999px;font-weight:650;font-size:13px;white-space:nowrap;border:1px solid transparent}
.badge.ok{background:#ecfdf3;color:#067647;border-color:#abefc6}
.badge.warn{background:#fffaeb;color:#b54708;border-color:#fedf89}
.badge.bad{background:#fef3f2;color:#b42318;border-color:#fecdca}
.badge.unknown{background:#f2f4f7;color:#475467;border-color:#d0d5dd}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(145px,1fr));gap:12px;margin:0 0 16px}
.tile{background:#fff;border:1px solid #e4e7ec;border-radius:10px;padding:10px 14px}
.tile .k{font-size:12px;text-transform:uppercase;letter-spacing:.5px;color:#667085}
.tile .v{font-size:22px;font-weight:700;margin-top:2px;overflow-wrap:anywhere}
.tile .s{font-size:13px;color:#667085}
.tablewrap{overflow-x:auto}
table.members{border-collapse:collapse;width:100%;font-size:14px}
table.members th{font-size:12px;text-transform:uppercase;letter-spacing:.4px;color:#667085;text-align:left;font-weight:600;padding:6px 10px;border-bottom:2px solid #e4e7ec;white-space:nowrap}
table.members td{padding:9px 10px;border-top:1px solid #eef0f3;vertical-align:top}
table.members tr.problems td{border-top:none;padding-top:0;color:#b42318;font-size:13px}
table.members .name{font-weight:700}
.num{font-variant-numeric:tabular-nums}
.bar{height:7px;background:#eef0f3;border-radius:4px;margin:4px 0 2px;min-width:90px;overflow:hidden}
.bar i{display:block;height:100%;background:#12b76a;border-radius:4px}
.bar i.warn{background:#f79009}.bar i.bad{background:#f04438}
.w{color:#b54708}.b{color:#b42318;font-weight:600}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:16px;margin:0 0 16px}
.charts .card{margin:0}
figure.chart{margin:0}
figure.chart figcaption{display:flex;flex-wrap:wrap;gap:2px 12px;align-items:baseline;margin-bottom:6px;font-size:13px;color:#475467}
.ctitle{font-weight:700;font-size:15px;color:#1d2433;width:100%}
.key i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
svg.plot{width:100%;height:auto;display:block}
.cnote{margin:4px 0 0;font-size:12px;color:#667085}
svg.strip{width:100%;height:26px;display:block;border-radius:4px}
.stripaxis{display:flex;justify-content:space-between;font-size:12px;color:#667085;margin-top:2px}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:13px;margin:8px 0}
ul.changes{margin:8px 0 0;padding-left:20px}ul.changes li{margin:2px 0}
ul.alerts{list-style:none;margin:0;padding:0}
ul.alerts li{padding:8px 0;border-top:1px solid #eef0f3}ul.alerts li:first-child{border-top:none}
.overview{display:grid;grid-template-columns:repeat(auto-fill,minmax(290px,1fr));gap:16px}
a.ccard{display:block;color:inherit;border-left:8px solid #98a2b3}
a.ccard:hover{text-decoration:none;box-shadow:0 4px 12px rgba(16,24,40,.12)}
a.ccard.ok{border-left-color:#12b76a}a.ccard.warn{border-left-color:#f79009}a.ccard.bad{border-left-color:#f04438}
.cname{font-size:18px;font-weight:700;margin-bottom:6px;overflow-wrap:anywhere}
.notice{background:#fffaeb;border:1px solid #fedf89;color:#b54708;padding:10px 14px;border-radius:8px;margin-bottom:16px}
footer{font-size:13px;color:#667085;padding-bottom:24px}
footer a{margin-right:12px}
@media (max-width:760px){
 .wrap{padding:0 12px}
 .vword{font-size:23px}
 header .fresh{margin-left:0;width:100%}
 .charts{grid-template-columns:1fr}
 table.members thead{display:none}
 table.members,table.members tbody,table.members tr,table.members td{display:block;width:100%}
 table.members tr.member{border-top:2px solid #e4e7ec;padding-top:6px}
 table.members td{border:none;padding:3px 0;display:flex;gap:12px;justify-content:space-between}
 table.members td::before{content:attr(data-label);color:#667085;font-size:12px;text-transform:uppercase;letter-spacing:.4px;flex:none}
 table.members td>div{text-align:right}
 table.members tr.problems td::before{content:none}
}
"#;

/// The symbol shown with a verdict of this class, so it reads without color too.
fn symbol(class: &str) -> &'static str {
    match class {
        "ok" => "✓",
        "warn" => "▲",
        "bad" => "✕",
        _ => "…",
    }
}

fn badge(class: &str, text: &str) -> String {
    format!(
        r#"<span class="badge {class}"><span aria-hidden="true">{}</span> {}</span>"#,
        symbol(class),
        esc(text)
    )
}

fn cluster_name(snap: &Snapshot) -> &str {
    snap.cluster.as_deref().unwrap_or("etcd cluster")
}

/// Renders the page.
pub fn render(page: &Page<'_>) -> String {
    let several = page.clusters.len() > 1;
    let selected: Option<&Arc<Snapshot>> = match page.selected {
        Some(name) => page
            .clusters
            .iter()
            .find(|s| s.cluster.as_deref() == Some(name)),
        None if !several => page.clusters.first(),
        None => None,
    };
    let verdicts: Vec<Verdict> = page
        .clusters
        .iter()
        .map(|s| judge(s, page.now_unix_ms))
        .collect();
    // The refresh follows the fastest collection shown, at least every 5 s.
    let interval_ms = match selected {
        Some(s) => s.interval_ms,
        None => page
            .clusters
            .iter()
            .map(|s| s.interval_ms)
            .min()
            .unwrap_or(5000),
    };
    let refresh = interval_ms.div_ceil(1000).max(5);
    let title = match selected {
        Some(s) => format!(
            "{} · {} · etcd-monitor",
            judge(s, page.now_unix_ms).level.word(),
            cluster_name(s)
        ),
        None => {
            let worst = verdicts.iter().map(|v| v.level).max();
            format!(
                "{} clusters · {} · etcd-monitor",
                page.clusters.len(),
                worst.map_or("none", Level::word)
            )
        }
    };
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta http-equiv="refresh" content="{refresh}"><link rel="icon" href="data:,"><title>{}</title><style>{STYLE}</style></head><body>"#,
        esc(&title)
    );
    // Header: the clusters, and how fresh the page is.
    out.push_str(r#"<header><div class="wrap"><a class="brand" href="/">etcd-monitor</a>"#);
    if several {
        out.push_str(r#"<nav aria-label="clusters">"#);
        let _ = write!(
            out,
            r#"<a href="/"{}>Overview</a>"#,
            if selected.is_none() {
                r#" class="cur""#
            } else {
                ""
            }
        );
        for (s, v) in page.clusters.iter().zip(&verdicts) {
            let name = cluster_name(s);
            let cur = selected.is_some_and(|x| Arc::ptr_eq(x, s));
            let _ = write!(
                out,
                r#"<a href="{}"{} title="{}"><span aria-hidden="true">{}</span> {}</a>"#,
                fmt::cluster_href(name),
                if cur { r#" class="cur""# } else { "" },
                esc(v.level.word()),
                symbol(v.level.class()),
                esc(name)
            );
        }
        out.push_str("</nav>");
    }
    let newest = selected
        .map(|s| s.at_unix_ms)
        .or_else(|| page.clusters.iter().map(|s| s.at_unix_ms).max())
        .unwrap_or(0);
    let _ = write!(
        out,
        r#"<span class="fresh">{} · refreshes every {refresh} s</span></div></header><main><div class="wrap">"#,
        if newest == 0 {
            "no collection yet".to_owned()
        } else {
            format!(
                "collected {} ({})",
                fmt::ago(page.now_unix_ms, newest),
                fmt::clock(newest) + " UTC"
            )
        }
    );
    match selected {
        Some(snap) => detail(&mut out, page, snap),
        None => {
            if let Some(name) = page.selected {
                let _ = write!(
                    out,
                    r#"<div class="notice">There is no cluster named “{}”. These are the clusters this exporter watches.</div>"#,
                    esc(name)
                );
            }
            overview(&mut out, page, &verdicts);
        }
    }
    out.push_str(r#"<footer>API: <a href="/api/v1/cluster/status">cluster status</a><a href="/api/v1/cluster/members">members</a><a href="/api/v1/cluster/leader/history">leader history</a><a href="/api/v1/metrics/history">history</a><a href="/api/v1/metrics/latency">latency</a><a href="/metrics">/metrics</a></footer>"#);
    out.push_str("</div></main></body></html>\n");
    out
}

/// The alerts that belong to `cluster`: with one cluster, all of them; with several,
/// those labelled with its name and those without a cluster label.
fn alerts_for<'a>(
    alerts: &'a Alerts,
    cluster: Option<&str>,
    several: bool,
) -> Vec<&'a FiringAlert> {
    match alerts {
        Alerts::Firing(list) => list
            .iter()
            .filter(|a| !several || a.cluster.is_none() || a.cluster.as_deref() == cluster)
            .collect(),
        _ => Vec::new(),
    }
}

fn overview(out: &mut String, page: &Page<'_>, verdicts: &[Verdict]) {
    let _ = write!(
        out,
        r#"<h1>{} clusters</h1><p class="muted">Open a cluster for its members, plots and leader timeline.</p><div class="overview">"#,
        page.clusters.len()
    );
    for (snap, v) in page.clusters.iter().zip(verdicts) {
        let name = cluster_name(snap);
        let m = &snap.model;
        let class = v.level.class();
        let firing = match &page.alerts {
            Alerts::Firing(list) => {
                let n = list
                    .iter()
                    .filter(|a| a.cluster.as_deref() == snap.cluster.as_deref())
                    .count();
                if n == 0 {
                    "none firing".to_owned()
                } else {
                    format!(r#"<span class="b">{n} firing</span>"#)
                }
            }
            Alerts::Unavailable(_) => "relay unreachable".to_owned(),
            Alerts::NotConfigured => "no relay".to_owned(),
        };
        let _ = write!(
            out,
            r#"<a class="card ccard {class}" href="{}"><div class="cname">{}</div>{}<p class="small">{}</p><p class="small muted">Leader <b>{}</b> · {} of {} members healthy · alerts: {firing}</p></a>"#,
            fmt::cluster_href(name),
            esc(name),
            badge(class, v.level.word()),
            esc(v.reasons.first().map_or("", String::as_str)),
            esc(m.leader.as_ref().map_or("none", |l| l.name.as_str())),
            m.healthy_members,
            m.member_count,
        );
    }
    out.push_str("</div>");
    let unlabelled = alerts_for(&page.alerts, None, true)
        .into_iter()
        .filter(|a| a.cluster.is_none())
        .collect::<Vec<_>>();
    if !unlabelled.is_empty() {
        out.push_str(r#"<section class="card" style="margin-top:16px"><h2>Alerts without a cluster label</h2>"#);
        alert_list(out, &unlabelled);
        out.push_str("</section>");
    }
}

/// Host facts from an agent's snapshot JSON (`agent::snapshot::AgentSnapshot`).
struct Host {
    fsync: Option<Fsync>,
    /// Available and total bytes of the data dir's filesystem, and its mount point.
    fs: Option<(u64, u64, String)>,
}

struct Fsync {
    enabled: bool,
    probes: u64,
    errors: u64,
    sum_seconds: f64,
    last_seconds: Option<f64>,
    last_error: Option<String>,
}

fn host_facts(v: &serde_json::Value) -> Host {
    use serde_json::Value;
    let fsync = v.get("fsync").filter(|f| f.is_object()).map(|f| Fsync {
        enabled: f.get("enabled").and_then(Value::as_bool).unwrap_or(true),
        probes: f.get("probes").and_then(Value::as_u64).unwrap_or(0),
        errors: f.get("errors").and_then(Value::as_u64).unwrap_or(0),
        sum_seconds: f.get("sum_seconds").and_then(Value::as_f64).unwrap_or(0.0),
        last_seconds: f.get("last_seconds").and_then(Value::as_f64),
        last_error: f
            .get("last_error")
            .and_then(Value::as_str)
            .map(str::to_owned),
    });
    let fs = v.get("filesystem").and_then(|f| {
        Some((
            f.get("avail_bytes")?.as_u64()?,
            f.get("size_bytes")?.as_u64()?,
            f.get("mount_point")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        ))
    });
    Host { fsync, fs }
}

fn detail(out: &mut String, page: &Page<'_>, snap: &Snapshot) {
    let several = page.clusters.len() > 1;
    let m = &snap.model;
    let v = judge(snap, page.now_unix_ms);
    let class = v.level.class();

    // The verdict.
    let _ = write!(
        out,
        r#"<section class="card verdict {class}"><div class="vhead"><h1 class="vword"><span aria-hidden="true">{}</span> {}</h1><span class="muted">{}</span></div><ul class="reasons">"#,
        symbol(class),
        esc(&capitalized(v.level.word())),
        esc(&cluster_line(snap))
    );
    for r in &v.reasons {
        let _ = write!(out, "<li>{}</li>", esc(r));
    }
    out.push_str("</ul>");
    if let Some(mt) = &snap.maintenance {
        let _ = write!(
            out,
            r#"<p class="small" style="margin:10px 0 0"><b>Maintenance running:</b> {}{} by {}, since {} ({}). Leader changes it causes are marked planned.</p>"#,
            esc(mt.operation.as_str()),
            mt.member
                .as_deref()
                .map(|m| format!(" on {}", esc(m)))
                .unwrap_or_default(),
            esc(&mt.by),
            fmt::utc(mt.started_unix_ms),
            fmt::ago(page.now_unix_ms, mt.started_unix_ms),
        );
    }
    let notes = notes(snap);
    if !notes.is_empty() {
        out.push_str(r#"<p class="small" style="margin:10px 0 0"><b>Worth a look:</b></p><ul class="reasons small">"#);
        for n in &notes {
            let _ = write!(out, r#"<li class="w">{}</li>"#, esc(n));
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>");

    // Key figures.
    let t1 = page.now_unix_ms.max(snap.at_unix_ms);
    let hour_ago = t1.saturating_sub(3_600_000);
    let changes_last_hour = snap
        .leader_history
        .iter()
        .filter(|c| c.at_unix_ms >= hour_ago)
        .count();
    out.push_str(r#"<div class="tiles">"#);
    let tile = |out: &mut String, k: &str, v: String, s: String| {
        let _ = write!(
            out,
            r#"<div class="tile"><div class="k">{}</div><div class="v">{v}</div><div class="s">{s}</div></div>"#,
            esc(k)
        );
    };
    match &m.leader {
        Some(l) => tile(out, "Leader", esc(&l.name), format!("term {}", l.term)),
        None => tile(
            out,
            "Leader",
            r#"<span class="b">none</span>"#.to_owned(),
            "no member reports one".to_owned(),
        ),
    }
    tile(
        out,
        "Healthy members",
        format!(
            r#"<span class="{}">{}</span> <span class="muted small">of {}</span>"#,
            if m.healthy_members < m.quorum_size {
                "b"
            } else if m.healthy_members < m.voting_members {
                "w"
            } else {
                ""
            },
            m.healthy_members,
            m.voting_members
        ),
        format!(
            "quorum {} · {} member{} in all",
            m.quorum_size,
            m.member_count,
            if m.member_count == 1 { "" } else { "s" }
        ),
    );
    tile(
        out,
        "Leader changes",
        format!(
            r#"<span class="{}">{changes_last_hour}</span> <span class="muted small">last hour</span>"#,
            if changes_last_hour > 3 { "w" } else { "" }
        ),
        format!("{} since the exporter started", snap.leader_changes_total),
    );
    tile(
        out,
        "Client requests",
        snap.request_rate_per_second
            .map_or("–".to_owned(), |r| esc(&fmt::rate(r))),
        "all members".to_owned(),
    );
    let p99 =
        |p: &crate::snapshot::Percentiles| p.p99.map_or("–".to_owned(), |v| esc(&fmt::ms(v)));
    let probe_sub = |p: &crate::snapshot::Percentiles| {
        let mut s = format!("p99 of the last {} probes", p.count);
        if p.errors > 0 {
            let _ = write!(s, r#" · <span class="b">{} failed</span>"#, p.errors);
        }
        s
    };
    tile(
        out,
        "Read latency",
        p99(&snap.latency.read),
        probe_sub(&snap.latency.read),
    );
    tile(
        out,
        "Write latency",
        p99(&snap.latency.write),
        probe_sub(&snap.latency.write),
    );
    tile(
        out,
        "Divergence",
        format!("{}", m.raft_index_divergence),
        format!(
            "raft index spread · revision spread {}",
            m.revision_divergence
        ),
    );
    out.push_str("</div>");

    // Alerts.
    let shown = alerts_for(&page.alerts, snap.cluster.as_deref(), several);
    match &page.alerts {
        Alerts::NotConfigured => out.push_str(r#"<section class="card"><h2>Firing alerts</h2><p class="muted small">No relay configured: start the exporter with <code>--relay-url</code> to list the relay's firing alerts here.</p></section>"#),
        Alerts::Unavailable(e) => {
            let _ = write!(
                out,
                r#"<section class="card"><h2>Firing alerts</h2><p class="w">{} Could not ask the relay: {}</p></section>"#,
                symbol("warn"),
                esc(e)
            );
        }
        Alerts::Firing(_) if shown.is_empty() => out.push_str(&format!(
            r#"<section class="card"><h2>Firing alerts</h2><p>{}</p></section>"#,
            badge("ok", "none firing")
        )),
        Alerts::Firing(_) => {
            let _ = write!(
                out,
                r#"<section class="card"><h2>Firing alerts <span class="badge bad">{}</span></h2>"#,
                shown.len()
            );
            alert_list(out, &shown);
            out.push_str("</section>");
        }
    }

    members_table(out, snap);
    charts(out, snap, t1);
    leader_timeline(out, snap, page.now_unix_ms, t1);

    let _ = write!(
        out,
        r#"<p class="small muted">Collection {} took {:.0} ms; one every {}.{}</p>"#,
        snap.cycle,
        snap.collect_duration_ms,
        fmt::span(snap.interval_ms),
        if snap.collect_errors.is_empty() {
            String::new()
        } else {
            format!(
                " Errors since start: {}.",
                esc(&snap
                    .collect_errors
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "))
            )
        }
    );
}

fn capitalized(word: &str) -> String {
    let mut c = word.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// The cluster's name, ID and etcd versions, under the verdict.
fn cluster_line(snap: &Snapshot) -> String {
    let mut parts = vec![cluster_name(snap).to_owned()];
    if let Some(id) = snap.model.cluster_id {
        parts.push(format!("cluster ID {id:x}"));
    }
    let mut versions: Vec<&str> = snap
        .model
        .members
        .iter()
        .filter_map(|s| s.version.as_deref())
        .collect();
    versions.sort_unstable();
    versions.dedup();
    if !versions.is_empty() {
        parts.push(format!("etcd {}", versions.join(", ")));
    }
    parts.join(" · ")
}

/// Facts that do not change the verdict but deserve attention: a DB near its quota, a
/// filesystem nearly full, a failing fsync probe, an agent that does not answer.
fn notes(snap: &Snapshot) -> Vec<String> {
    let mut notes = Vec::new();
    for s in &snap.model.members {
        let name = &s.info.name;
        let x = snap.extras.get(&s.info.id);
        if let (Some(db), Some(q)) = (s.db_size_bytes, x.and_then(|x| x.quota_bytes)) {
            if q > 0 && db as f64 >= 0.8 * q as f64 {
                notes.push(format!(
                    "{name}: the database uses {:.0}% of its space quota ({} of {})",
                    db as f64 / q as f64 * 100.0,
                    fmt::bytes(db as f64),
                    fmt::bytes(q as f64)
                ));
            }
        }
        if let Some(a) = snap.agents.get(name) {
            if !a.up {
                notes.push(format!(
                    "{name}: its agent does not answer ({})",
                    a.error.as_deref().unwrap_or("no reason given")
                ));
            }
            if let Some(h) = a.host.as_ref().map(host_facts) {
                if let Some((avail, size, _)) = h.fs {
                    if size > 0 && (avail as f64) < 0.1 * size as f64 {
                        notes.push(format!(
                            "{name}: the data dir's filesystem has only {} free of {}",
                            fmt::bytes(avail as f64),
                            fmt::bytes(size as f64)
                        ));
                    }
                }
                if let Some(f) = h.fsync.filter(|f| f.errors > 0) {
                    notes.push(format!(
                        "{name}: {} fsync probe{} failed{}",
                        f.errors,
                        if f.errors == 1 { "" } else { "s" },
                        f.last_error
                            .map(|e| format!(", last: {e}"))
                            .unwrap_or_default()
                    ));
                }
            }
        }
    }
    notes
}

fn alert_list(out: &mut String, alerts: &[&FiringAlert]) {
    out.push_str(r#"<ul class="alerts">"#);
    for a in alerts {
        let class = match alerts::severity_rank(&a.severity) {
            0 | 1 => "bad",
            2 => "warn",
            _ => "unknown",
        };
        let _ = write!(
            out,
            r#"<li>{} <b>{}</b>{}{}<div class="small">{}</div><div class="small muted">since {}</div></li>"#,
            badge(class, &a.severity),
            esc(&a.name),
            a.cluster
                .as_deref()
                .map(|c| format!(r#" <span class="muted">· cluster {}</span>"#, esc(c)))
                .unwrap_or_default(),
            a.member
                .as_deref()
                .map(|m| format!(r#" <span class="muted">· member {}</span>"#, esc(m)))
                .unwrap_or_default(),
            esc(a.summary.as_deref().unwrap_or("")),
            esc(&a.starts_at)
        );
    }
    out.push_str("</ul>");
}

fn pct_class(used_fraction: f64) -> &'static str {
    if used_fraction >= 0.8 {
        "bad"
    } else if used_fraction >= 0.6 {
        "warn"
    } else {
        ""
    }
}

/// A bar filled to `used_fraction`, colored by `class` ("", "warn" or "bad").
fn bar(used_fraction: f64, class: &str) -> String {
    format!(
        r#"<div class="bar" role="presentation"><i class="{class}" style="width:{:.1}%"></i></div>"#,
        (used_fraction * 100.0)
            .clamp(0.0, 100.0)
            .max(if used_fraction > 0.0 { 0.8 } else { 0.0 })
    )
}

fn percent(f: f64) -> String {
    let p = f * 100.0;
    if p > 0.0 && p < 0.1 {
        "<0.1%".to_owned()
    } else if p < 10.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

fn members_table(out: &mut String, snap: &Snapshot) {
    let m = &snap.model;
    let top_index = m
        .members
        .iter()
        .filter(|s| s.up)
        .filter_map(|s| s.raft_index)
        .max();
    let _ = write!(
        out,
        r#"<section class="card"><h2>Members <span class="muted small">{} · quorum {}</span></h2><div class="tablewrap"><table class="members"><thead><tr><th>Member</th><th>State</th><th>Role</th><th>Raft index</th><th>DB size / quota</th><th>fsync probe</th><th>Data dir free</th><th>Version</th></tr></thead><tbody>"#,
        m.member_count, m.quorum_size
    );
    for s in &m.members {
        let x = snap.extras.get(&s.info.id);
        let agent = snap.agents.get(&s.info.name);
        member_row(out, s, x, agent, top_index);
    }
    if m.members.is_empty() {
        out.push_str(r#"<tr><td colspan="8" class="muted">No members known yet.</td></tr>"#);
    }
    out.push_str("</tbody></table></div></section>");
}

fn member_row(
    out: &mut String,
    s: &MemberState,
    x: Option<&MemberExtras>,
    agent: Option<&AgentStatus>,
    top_index: Option<u64>,
) {
    let state = if !s.up {
        badge("bad", "down")
    } else if s.partitioned {
        badge("bad", "partitioned")
    } else if x.and_then(|x| x.health) == Some(false) {
        badge("warn", "up, /health false")
    } else {
        badge("ok", "up")
    };
    let alarms: String = s
        .alarms
        .iter()
        .map(|a| format!(" {}", badge("bad", &format!("{} alarm", a.as_str()))))
        .collect();
    let role = if s.is_leader {
        "<b>leader</b>".to_owned()
    } else if s.info.is_learner {
        "learner".to_owned()
    } else if s.up {
        "follower".to_owned()
    } else {
        r#"<span class="muted">–</span>"#.to_owned()
    };
    let term = s
        .raft_term
        .map(|t| format!(r#"<div class="small muted">term {t}</div>"#))
        .unwrap_or_default();
    let index = match (s.raft_index, top_index) {
        (Some(i), Some(top)) => {
            let lag = top.saturating_sub(i);
            let lag_text = if lag == 0 {
                r#"<span class="muted">in step</span>"#.to_owned()
            } else {
                format!(
                    r#"<span class="{}">{lag} behind</span>"#,
                    if lag >= 1000 { "w" } else { "muted" }
                )
            };
            format!(r#"<div><span class="num">{i}</span><div class="small">{lag_text}</div></div>"#)
        }
        (Some(i), None) => format!(r#"<div class="num">{i}</div>"#),
        _ => r#"<span class="muted">–</span>"#.to_owned(),
    };
    let quota = x.and_then(|x| x.quota_bytes).filter(|q| *q > 0);
    let db = match (s.db_size_bytes, quota) {
        (Some(db), Some(q)) => {
            let f = db as f64 / q as f64;
            format!(
                r#"<div><span class="num">{}</span> <span class="muted small">of {}</span>{}<div class="small {}">{} used{}</div></div>"#,
                fmt::bytes(db as f64),
                fmt::bytes(q as f64),
                bar(f, pct_class(f)),
                match pct_class(f) {
                    "bad" => "b",
                    "warn" => "w",
                    _ => "muted",
                },
                percent(f),
                s.db_size_in_use_bytes
                    .map(|u| format!(" · {} in use", fmt::bytes(u as f64)))
                    .unwrap_or_default()
            )
        }
        (Some(db), None) => format!(
            r#"<div><span class="num">{}</span><div class="small muted">quota unknown{}</div></div>"#,
            fmt::bytes(db as f64),
            s.db_size_in_use_bytes
                .map(|u| format!(" · {} in use", fmt::bytes(u as f64)))
                .unwrap_or_default()
        ),
        _ => r#"<span class="muted">–</span>"#.to_owned(),
    };
    let host = agent.and_then(|a| a.host.as_ref()).map(host_facts);
    let agent_missing = match agent {
        None => Some(r#"<span class="muted">no agent</span>"#.to_owned()),
        Some(a) if !a.up => Some(r#"<span class="w">agent down</span>"#.to_owned()),
        _ => None,
    };
    let fsync = match (&agent_missing, host.as_ref().and_then(|h| h.fsync.as_ref())) {
        (Some(missing), _) => missing.clone(),
        (None, None) => r#"<span class="muted">–</span>"#.to_owned(),
        (None, Some(f)) if !f.enabled => r#"<span class="muted">probe off</span>"#.to_owned(),
        (None, Some(f)) if f.probes == 0 => r#"<span class="muted">no probe yet</span>"#.to_owned(),
        (None, Some(f)) => {
            let ok = f.probes.saturating_sub(f.errors);
            let mean = (ok > 0).then(|| f.sum_seconds / ok as f64 * 1000.0);
            format!(
                r#"<div>last <b class="num">{}</b><div class="small muted">mean {} · {} probes</div>{}</div>"#,
                f.last_seconds
                    .map_or("–".to_owned(), |v| esc(&fmt::ms(v * 1000.0))),
                mean.map_or("–".to_owned(), |v| esc(&fmt::ms(v))),
                f.probes,
                if f.errors > 0 {
                    format!(r#"<div class="small b">{} failed</div>"#, f.errors)
                } else {
                    String::new()
                }
            )
        }
    };
    let fs = match (&agent_missing, host.as_ref().and_then(|h| h.fs.as_ref())) {
        (Some(missing), _) => missing.clone(),
        (None, Some((avail, size, mount))) if *size > 0 => {
            let used = 1.0 - *avail as f64 / *size as f64;
            // A filesystem is fuller than a DB before it matters: etcd's own files are
            // only part of it.
            let class = if used >= 0.9 {
                "bad"
            } else if used >= 0.8 {
                "warn"
            } else {
                ""
            };
            format!(
                r#"<div><span class="num">{}</span> <span class="muted small">of {}</span>{}<div class="small muted">{} used{}</div></div>"#,
                fmt::bytes(*avail as f64),
                fmt::bytes(*size as f64),
                bar(used, class),
                percent(used),
                if mount.is_empty() {
                    String::new()
                } else {
                    format!(" · mount {}", esc(mount))
                }
            )
        }
        _ => r#"<span class="muted">–</span>"#.to_owned(),
    };
    let _ = write!(
        out,
        r#"<tr class="member"><td data-label="Member"><div><div class="name">{}</div><div class="small muted">{}</div></div></td><td data-label="State"><div>{state}{alarms}</div></td><td data-label="Role"><div>{role}{term}</div></td><td data-label="Raft index">{index}</td><td data-label="DB size / quota">{db}</td><td data-label="fsync probe">{fsync}</td><td data-label="Data dir free">{fs}</td><td data-label="Version"><span class="num">{}</span></td></tr>"#,
        esc(&s.info.name),
        esc(s
            .info
            .client_urls
            .first()
            .map_or(s.endpoint.as_str(), String::as_str)),
        esc(s.version.as_deref().unwrap_or("–")),
    );
    // What went wrong with this member, in its own words.
    let mut problems: Vec<String> = Vec::new();
    if let Some(e) = &s.error {
        problems.push(format!("status: {e}"));
    }
    problems.extend(
        s.status_errors
            .iter()
            .map(|e| format!("member reports: {e}")),
    );
    if let Some(x) = x {
        for (what, e) in [
            ("/health", &x.health_error),
            ("/metrics", &x.metrics_error),
            ("read probe", &x.read_error),
        ] {
            if let Some(e) = e {
                problems.push(format!("{what}: {e}"));
            }
        }
    }
    if let Some(a) = agent {
        if let Some(e) = &a.error {
            problems.push(format!("agent {}: {e}", a.url));
        }
    }
    if !problems.is_empty() {
        let _ = write!(
            out,
            r#"<tr class="problems"><td colspan="8">{}</td></tr>"#,
            problems
                .iter()
                .map(|p| esc(p))
                .collect::<Vec<_>>()
                .join("<br>")
        );
    }
}

/// Where the plots start: an hour before `t1`, or at the first point kept if that is
/// later (so a young exporter's plots are not a sliver at the right edge), but at least a
/// minute before `t1`.
fn window_start(snap: &Snapshot, t1: u64) -> u64 {
    let first = snap.history.first().map_or(t1, |p| p.at_unix_ms);
    t1.saturating_sub(3_600_000)
        .max(first.min(t1.saturating_sub(60_000)))
}

fn charts(out: &mut String, snap: &Snapshot, t1: u64) {
    let hist = &snap.history;
    let t0 = window_start(snap, t1);
    let max_gap = 3 * snap.interval_ms + 1000;
    let series =
        |f: &dyn Fn(&crate::snapshot::HistoryPoint) -> Option<f64>| -> Vec<(u64, Option<f64>)> {
            hist.iter().map(|p| (p.at_unix_ms, f(p))).collect()
        };
    let probes = |records: &[crate::snapshot::ProbeRecord]| -> Vec<(u64, Option<f64>)> {
        records
            .iter()
            .filter(|r| r.duration_ms.is_some())
            .map(|r| (r.at_unix_ms, r.duration_ms))
            .collect()
    };
    let window = format!("last {}", fmt::span(t1 - t0));
    let lat = &snap.latency;
    let latency_title = format!("Probe latency, {window}");
    let rate_title = format!("Client requests per second, {window}");
    let db_title = format!("Largest member's DB size, {window}");
    let latency = svg::chart(&svg::Chart {
        title: &latency_title,
        unit: fmt::ms,
        binary: false,
        series: vec![
            svg::Series {
                label: "single reads",
                color: "#93c5fd",
                style: svg::Style::Dots,
                points: probes(&lat.reads),
                now: None,
            },
            svg::Series {
                label: "single writes",
                color: "#fdba74",
                style: svg::Style::Dots,
                points: probes(&lat.writes),
                now: None,
            },
            svg::Series {
                label: "read p99",
                color: "#2563eb",
                style: svg::Style::Line,
                points: series(&|p| p.read_p99_ms),
                now: lat.read.p99.map(fmt::ms),
            },
            svg::Series {
                label: "write p99",
                color: "#ea580c",
                style: svg::Style::Line,
                points: series(&|p| p.write_p99_ms),
                now: lat.write.p99.map(fmt::ms),
            },
        ],
        t0,
        t1,
        max_gap_ms: max_gap,
        limit: None,
        note: Some(
            "p99 over the last 1000 probes at each collection; dots are single probes".to_owned(),
        ),
    });
    let rate = svg::chart(&svg::Chart {
        title: &rate_title,
        unit: |v| fmt::rate(v),
        binary: false,
        series: vec![svg::Series {
            label: "all members",
            color: "#059669",
            style: svg::Style::Area,
            points: series(&|p| p.request_rate_per_second),
            now: snap.request_rate_per_second.map(fmt::rate),
        }],
        t0,
        t1,
        max_gap_ms: max_gap,
        limit: None,
        note: None,
    });
    let quota = snap
        .extras
        .values()
        .filter_map(|x| x.quota_bytes)
        .filter(|q| *q > 0)
        .min();
    let db_now = snap
        .model
        .members
        .iter()
        .filter_map(|s| s.db_size_bytes)
        .max();
    let db = svg::chart(&svg::Chart {
        title: &db_title,
        unit: fmt::bytes,
        binary: true,
        series: vec![svg::Series {
            label: "DB size",
            color: "#7c3aed",
            style: svg::Style::Area,
            points: series(&|p| p.max_db_size_bytes.map(|b| b as f64)),
            now: db_now.map(|b| fmt::bytes(b as f64)),
        }],
        t0,
        t1,
        max_gap_ms: max_gap,
        limit: quota.map(|q| (q as f64, format!("quota {}", fmt::bytes(q as f64)))),
        note: Some(match (quota, db_now) {
            (Some(q), Some(db)) => format!(
                "space quota {}: {} used",
                fmt::bytes(q as f64),
                percent(db as f64 / q as f64)
            ),
            _ => "space quota unknown".to_owned(),
        }),
    });
    let _ = write!(
        out,
        r#"<div class="charts"><section class="card">{latency}</section><section class="card">{rate}</section><section class="card">{db}</section></div>"#
    );
}

fn leader_timeline(out: &mut String, snap: &Snapshot, now_ms: u64, t1: u64) {
    let members = &snap.model.members;
    let color_of = |name: &str| -> &'static str {
        members
            .iter()
            .position(|s| s.info.name == name)
            .map_or("#98a2b3", |i| PALETTE[i % PALETTE.len()])
    };
    let hist = &snap.history;
    let t0 = window_start(snap, t1);
    let points: Vec<(u64, Option<&str>)> = hist
        .iter()
        .map(|p| (p.at_unix_ms, p.leader.as_deref()))
        .collect();
    let _ = write!(
        out,
        r#"<section class="card"><h2>Leader timeline <span class="muted small">last {}</span></h2>{}<div class="stripaxis"><span>−{}</span><span>now</span></div><div class="legend">"#,
        fmt::span(t1 - t0),
        svg::leader_strip(&points, t0, t1, 3 * snap.interval_ms + 1000, &color_of),
        fmt::span(t1 - t0)
    );
    for s in members {
        let _ = write!(
            out,
            r#"<span class="key"><i style="background:{}"></i>{}</span>"#,
            color_of(&s.info.name),
            esc(&s.info.name)
        );
    }
    out.push_str(r##"<span class="key"><i style="background:#d92d20"></i>no leader</span><span class="key"><i style="background:#eef0f3;border:1px solid #d0d5dd"></i>not collected</span></div>"##);
    if snap.leader_history.is_empty() {
        let _ = write!(
            out,
            r#"<p class="small muted">No leader change seen since the exporter started{}.</p>"#,
            snap.model
                .leader
                .as_ref()
                .map(|l| format!("; {} leads at term {}", esc(&l.name), l.term))
                .unwrap_or_default()
        );
    } else {
        out.push_str(r#"<ul class="changes">"#);
        for c in snap.leader_history.iter().rev().take(12) {
            let _ = write!(
                out,
                r#"<li><span class="num">{}</span> <span class="muted">({})</span> · {} → <b>{}</b> · term {}{}</li>"#,
                fmt::utc(c.at_unix_ms),
                fmt::ago(now_ms, c.at_unix_ms),
                esc(c.from.as_deref().unwrap_or("?")),
                esc(&c.to),
                c.term,
                c.planned
                    .as_deref()
                    .map(|op| format!(r#" · <span class="muted">planned ({})</span>"#, esc(op)))
                    .unwrap_or_default()
            );
        }
        out.push_str("</ul>");
        if snap.leader_history.len() > 12 {
            let _ = write!(
                out,
                r#"<p class="small muted">{} older changes: <a href="/api/v1/cluster/leader/history">leader history</a></p>"#,
                snap.leader_history.len() - 12
            );
        }
    }
    out.push_str("</section>");
}

#[cfg(test)]
mod tests;
