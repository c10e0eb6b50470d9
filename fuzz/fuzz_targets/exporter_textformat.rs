//! The exporter's text-format reader: any bytes as a member's `/metrics`. What parses is
//! merged back out with two added label pairs (`merge_labelled`, as the exporter's own
//! `/metrics` does) and must parse again to the same families, kinds, help texts and
//! samples: names, values (bit for bit), timestamps, the added labels first and the
//! sample's own after them (a clashing one under an `exported_` name). The histogram
//! helpers must not panic on what parsed.

#![no_main]

use std::collections::HashSet;

use exporter::textformat::{
    bucket_delta, histogram_quantile, merge_labelled, parse, Kind, Sample, MAX_LABELS,
    MAX_LABEL_PAIRS, MAX_LINE_BYTES,
};
use libfuzzer_sys::fuzz_target;

/// The added pairs, with a value that needs every escape, and `member`, which many
/// inputs carry themselves.
const ADDED: &[(&str, &str)] = &[("cluster", "a\"b\\c\nd"), ("member", "m1")];

fn same_value(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn check_sample(text: &str, before: &Sample, after: &Sample) {
    assert_eq!(before.name, after.name, "{text:?}");
    assert!(
        same_value(before.value, after.value),
        "{text:?}: {} came back as {}",
        before.value,
        after.value
    );
    assert_eq!(before.timestamp, after.timestamp, "{text:?}");
    assert_eq!(
        after.labels.len(),
        ADDED.len() + before.labels.len(),
        "{text:?}"
    );
    for ((k, v), (ak, av)) in ADDED.iter().zip(&after.labels) {
        assert_eq!((*k, *v), (ak.as_str(), av.as_str()), "{text:?}");
    }
    for ((k, v), (ak, av)) in before.labels.iter().zip(&after.labels[ADDED.len()..]) {
        assert_eq!(v, av, "{text:?}");
        if ADDED.iter().any(|(a, _)| a == k) {
            assert!(
                ak.starts_with("exported_") && ak.ends_with(&format!("_{k}")),
                "{text:?}: {k} exported as {ak}"
            );
        } else {
            assert_eq!(k, ak, "{text:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(exp) = parse(text) else {
        return;
    };
    for f in exp.families.iter().filter(|f| f.kind == Kind::Histogram) {
        if let Some(b) = exp.histogram_buckets(&f.name) {
            let _ = histogram_quantile(0.99, &b);
            let _ = bucket_delta(&b, &b);
        }
    }

    let mut out = String::new();
    let conflicts = merge_labelled(&mut out, &[(ADDED, &exp)], &HashSet::new(), |_| true);
    assert_eq!(conflicts, 0, "one exposition cannot conflict with itself");
    // The added labels, `exported_` names and escapes can take a sample over the parser's
    // caps; the merge is for Prometheus, which has none, so only what fits must read back.
    let samples = exp.families.iter().flat_map(|f| &f.samples);
    let pairs: usize = samples.clone().map(|s| s.labels.len() + ADDED.len()).sum();
    if pairs > MAX_LABEL_PAIRS
        || samples
            .clone()
            .any(|s| s.labels.len() + ADDED.len() > MAX_LABELS)
        || out.lines().any(|l| l.len() > MAX_LINE_BYTES)
    {
        return;
    }
    let back = match parse(&out) {
        Ok(back) => back,
        Err(e) => panic!("{text:?} merges to {out:?}, which does not parse: {e}"),
    };
    assert_eq!(
        back.families.len(),
        exp.families.len(),
        "{text:?} -> {out:?}"
    );
    for (before, after) in exp.families.iter().zip(&back.families) {
        assert_eq!(before.name, after.name, "{text:?} -> {out:?}");
        assert_eq!(before.kind, after.kind, "{text:?} -> {out:?}");
        assert_eq!(before.help, after.help, "{text:?} -> {out:?}");
        assert_eq!(
            before.samples.len(),
            after.samples.len(),
            "{text:?} -> {out:?}"
        );
        for (b, a) in before.samples.iter().zip(&after.samples) {
            check_sample(text, b, a);
        }
    }
});
