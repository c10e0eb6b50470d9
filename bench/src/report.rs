//! The report, as etcd's benchmark tool prints it (summary, response-time histogram with
//! bars, latency distribution, error distribution), or as JSON with the same numbers, flat
//! percentiles for `jq` and the parameters of the run. `bench/report.schema.json`
//! describes the JSON.

use std::fmt::Write as _;

use crate::run::{Report, TimedFrom};

/// The text report.
pub fn text(r: &Report) -> String {
    let mut o = String::new();
    let l = &r.latency;
    let _ = writeln!(o, "\nSummary:");
    let _ = writeln!(o, "  Total:\t{:.4} secs.", r.total_seconds);
    let _ = writeln!(o, "  Slowest:\t{:.4} secs.", l.slowest);
    let _ = writeln!(o, "  Fastest:\t{:.4} secs.", l.fastest);
    let _ = writeln!(o, "  Average:\t{:.4} secs.", l.average);
    let _ = writeln!(o, "  Stddev:\t{:.4} secs.", l.stddev);
    let _ = writeln!(o, "  Requests/sec:\t{:.4}", r.throughput);
    let _ = writeln!(
        o,
        "  Requests:\t{} ({} reads, {} writes, {} errors)",
        r.requests,
        r.reads.ok + r.reads.errors,
        r.writes.ok + r.writes.errors,
        r.error_count()
    );
    if let Some(w) = &r.watch {
        let _ = writeln!(
            o,
            "  Watch events:\t{} received of {} expected ({} watchers on {} streams, {} missing)",
            w.received_events, w.expected_events, w.watchers, w.streams, w.missing_events
        );
    }
    if r.latency_from == TimedFrom::Schedule {
        let _ = writeln!(
            o,
            "  Latency is timed from each request's scheduled send (--rate); service time below."
        );
    }
    if !r.histogram.is_empty() {
        let _ = writeln!(o, "\nResponse time histogram:");
        let max = r
            .histogram
            .iter()
            .map(|b| b.count)
            .max()
            .unwrap_or(1)
            .max(1);
        for b in &r.histogram {
            let bar = "∎".repeat((b.count * 40 / max) as usize);
            let _ = writeln!(o, "  {:.4} [{}]\t|{bar}", b.upto, b.count);
        }
        let _ = writeln!(o, "\nLatency distribution:");
        for (p, v) in &l.percentiles {
            let _ = writeln!(o, "  {p}% in {v:.4} secs.");
        }
    }
    if let Some(s) = &r.service_time {
        let _ = writeln!(o, "\nService time distribution (from the actual send):");
        for (p, v) in &s.percentiles {
            let _ = writeln!(o, "  {p}% in {v:.4} secs.");
        }
    }
    if !r.errors.is_empty() {
        let _ = writeln!(o, "\nError distribution:");
        for (kind, n) in &r.errors {
            let _ = writeln!(o, "  [{n}]\t{kind}");
        }
    }
    o
}

/// The JSON report.
pub fn json(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
