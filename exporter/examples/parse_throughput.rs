//! Throughput of the exporter's text-format parser and merge on a real member's `/metrics`.
//!
//!   cargo run --release --example parse_throughput -p exporter -- FILE [SECONDS]
//!
//! Parses FILE repeatedly for about SECONDS (default 3) and prints MB/s of input; then
//! merges three copies of it (three members, with `cluster` and `member` labels) as the
//! exporter's `/metrics` does, and prints MB/s of the merged input and of the output.
//! `scripts/bench-exporter-parse.sh` runs it on the seed corpus.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use exporter::textformat::{merge_labelled, parse};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        bail!("usage: parse_throughput FILE [SECONDS]");
    };
    let seconds: f64 = match args.next() {
        Some(s) => s.parse().context("SECONDS")?,
        None => 3.0,
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let exp = parse(&text).with_context(|| format!("parsing {path}"))?;
    let samples: usize = exp.families.iter().map(|f| f.samples.len()).sum();
    println!(
        "{path}: {} bytes, {} families, {samples} samples",
        text.len(),
        exp.families.len()
    );

    let budget = Duration::from_secs_f64(seconds);
    let (runs, elapsed) = repeat(budget, || {
        let exp = parse(&text).map(|e| e.families.len());
        std::hint::black_box(exp).ok();
    });
    report("parse", runs, elapsed, text.len());

    let members = [
        [("cluster", "a"), ("member", "m1")],
        [("cluster", "a"), ("member", "m2")],
        [("cluster", "a"), ("member", "m3")],
    ];
    let native: Vec<(&[(&str, &str)], _)> = members.iter().map(|l| (&l[..], &exp)).collect();
    let skip = HashSet::new();
    let mut out_len = 0;
    let (runs, elapsed) = repeat(budget, || {
        let mut out = String::with_capacity(4 * text.len());
        merge_labelled(&mut out, &native, &skip, |_| true);
        out_len = out.len();
        std::hint::black_box(out);
    });
    report("merge (3 members, input)", runs, elapsed, 3 * text.len());
    report("merge (3 members, output)", runs, elapsed, out_len);
    Ok(())
}

/// Runs `f` until `budget` has passed (at least 3 times); the count and the time taken.
fn repeat(budget: Duration, mut f: impl FnMut()) -> (u32, Duration) {
    f(); // warm-up
    let start = Instant::now();
    let mut runs = 0;
    while runs < 3 || start.elapsed() < budget {
        f();
        runs += 1;
    }
    (runs, start.elapsed())
}

fn report(what: &str, runs: u32, elapsed: Duration, bytes: usize) {
    let per_run = elapsed / runs;
    let mb_s = bytes as f64 * f64::from(runs) / elapsed.as_secs_f64() / 1e6;
    println!("{what}: {runs} runs, {per_run:.2?} each, {mb_s:.1} MB/s");
}
