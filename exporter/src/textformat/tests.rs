//! Tests of the text-format reader and the merge.

use super::*;

const ETCD_SAMPLE: &str = r#"# HELP etcd_server_has_leader Whether or not a leader exists. 1 is existence, 0 is not.
# TYPE etcd_server_has_leader gauge
etcd_server_has_leader 1
# HELP etcd_disk_wal_fsync_duration_seconds The latency distributions of fsync called by WAL.
# TYPE etcd_disk_wal_fsync_duration_seconds histogram
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 2
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.002"} 6
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.004"} 10
etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 10
etcd_disk_wal_fsync_duration_seconds_sum 0.02
etcd_disk_wal_fsync_duration_seconds_count 10
# HELP grpc_server_started_total Total number of RPCs started on the server.
# TYPE grpc_server_started_total counter
grpc_server_started_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 7
grpc_server_started_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 3
grpc_server_started_total{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 5
# HELP go_info Information about the Go environment.
# TYPE go_info gauge
go_info{version="go1.19.8"} 1
"#;

#[test]
fn parses_etcd_families_in_order() {
    let exp = parse(ETCD_SAMPLE).expect("parse");
    let names: Vec<_> = exp.families.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "etcd_server_has_leader",
            "etcd_disk_wal_fsync_duration_seconds",
            "grpc_server_started_total",
            "go_info"
        ]
    );
    let hist = exp
        .family("etcd_disk_wal_fsync_duration_seconds")
        .expect("family");
    assert_eq!(hist.kind, Kind::Histogram);
    assert_eq!(hist.samples.len(), 6);
    let unary = exp.sum("grpc_server_started_total", |s| {
        s.label("grpc_type") == Some("unary")
    });
    assert_eq!(unary, Some(12.0));
}

#[test]
fn quantile_interpolates_like_prometheus() {
    let exp = parse(ETCD_SAMPLE).expect("parse");
    let b = exp
        .histogram_buckets("etcd_disk_wal_fsync_duration_seconds")
        .expect("buckets");
    // Rank 9.5 of 10 falls in (0.002, 0.004] holding 4 observations, 3.5 of the way in.
    let p95 = histogram_quantile(0.95, &b).expect("p95");
    assert!((p95 - (0.002 + 0.002 * 3.5 / 4.0)).abs() < 1e-12, "{p95}");
    assert_eq!(
        histogram_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]),
        None
    );
}

#[test]
fn delta_of_buckets_detects_resets() {
    let before = [(0.001, 1.0), (f64::INFINITY, 2.0)];
    let now = [(0.001, 3.0), (f64::INFINITY, 5.0)];
    assert_eq!(
        bucket_delta(&now, &before),
        Some(vec![(0.001, 2.0), (f64::INFINITY, 3.0)])
    );
    assert_eq!(bucket_delta(&before, &now), None);
}

#[test]
fn garbage_is_rejected_with_the_line() {
    for (text, line, want) in [
        ("<html>oops</html>", 1, "invalid metric name"),
        ("ok 1\nbad{a=\"x} 1", 2, "unterminated"),
        ("m{a=b} 1", 1, "expected '\"'"),
        ("m 1 2 3", 1, "trailing"),
        ("m one", 1, "invalid value"),
        ("# TYPE m wibble", 1, "unknown type"),
        ("# TYPE m gauge\n# TYPE m gauge", 2, "second TYPE"),
        ("m{a=\"1\",a=\"2\"} 1", 1, "duplicate label"),
    ] {
        let err = parse(text).expect_err(text);
        assert_eq!(err.line, line, "{text}: {err}");
        assert!(err.message.contains(want), "{text}: {err}");
    }
}

#[test]
fn label_values_keep_escapes_and_special_values_parse() {
    let exp = parse("m{path=\"a\\\"b\\\\c\\nd\", x=\"\"} +Inf 123\nn NaN\n").expect("parse");
    let s = &exp.families[0].samples[0];
    assert_eq!(s.label("path"), Some("a\"b\\c\nd"));
    assert_eq!(s.value, f64::INFINITY);
    assert_eq!(s.timestamp, Some(123));
    assert!(exp.families[1].samples[0].value.is_nan());
}

#[test]
fn merge_emits_each_family_once_with_member_labels() {
    let a = parse(ETCD_SAMPLE).expect("parse");
    let b = parse("# TYPE etcd_server_has_leader gauge\netcd_server_has_leader{member=\"q\"} 0\n# TYPE go_info counter\ngo_info 1\n")
        .expect("parse");
    let mut out = String::new();
    let skip: HashSet<String> = ["grpc_server_started_total".to_owned()].into();
    let conflicts = merge(&mut out, &[("m1", &a), ("m2", &b)], &skip, |_| true);
    assert_eq!(conflicts, 1, "go_info is a gauge in m1 and a counter in m2");
    assert_eq!(
        out.matches("# TYPE etcd_server_has_leader gauge").count(),
        1
    );
    assert!(
        out.contains("etcd_server_has_leader{member=\"m1\"} 1\n"),
        "{out}"
    );
    assert!(
        out.contains("etcd_server_has_leader{member=\"m2\",exported_member=\"q\"} 0\n"),
        "{out}"
    );
    assert!(
        out.contains("etcd_disk_wal_fsync_duration_seconds_bucket{member=\"m1\",le=\"+Inf\"} 10\n")
    );
    assert!(!out.contains("grpc_server_started_total"));
    assert!(!out.contains("go_info{member=\"m2\""));
    // The merged text parses again, with the same number of families.
    assert_eq!(parse(&out).expect("reparse").families.len(), 3);
}

/// `n` labels `l0="v0",l1="v1",...`.
fn labels(n: usize) -> String {
    (0..n)
        .map(|i| format!("l{i}=\"v{i}\""))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn big_but_legal_input_parses_and_merges() {
    // The work is linear, so this is quick even in a debug build; a quadratic duplicate or
    // bucket check would make the buckets 10^8 steps.
    let mut text = format!("# TYPE m gauge\nm{{{}}} 1\n", labels(MAX_LABELS));
    text.push_str("# TYPE h histogram\n");
    for le in 0..10_000 {
        // Two series per bound (a and b), summed by histogram_buckets.
        text.push_str(&format!("h_bucket{{s=\"a\",le=\"{le}\"}} {le}\n"));
        text.push_str(&format!("h_bucket{{s=\"b\",le=\"{le}\"}} 1\n"));
    }
    let exp = parse(&text).expect("parse");
    assert_eq!(exp.families[0].samples[0].labels.len(), MAX_LABELS);
    let buckets = exp.histogram_buckets("h").expect("buckets");
    assert_eq!(buckets.len(), 10_000);
    assert_eq!(buckets[9_999], (9_999.0, 10_000.0));
    let mut out = String::new();
    let added: &[(&str, &str)] = &[("cluster", "a"), ("member", "m1")];
    // Only the histogram: with the two added labels, `m` would have more labels than
    // the parser takes (which Prometheus, the reader of the merge, does not mind).
    merge_labelled(&mut out, &[(added, &exp)], &HashSet::new(), |n| n == "h");
    assert_eq!(
        parse(&out).expect("reparse").families[0].samples.len(),
        20_000
    );
}

#[test]
fn caps_reject_with_the_line() {
    let too_long = "x".repeat(MAX_LINE_BYTES + 1);
    let long_value = format!("m{{a=\"{}\"}} 1", "v".repeat(MAX_LABEL_VALUE_BYTES + 1));
    let many_samples = "a 1\n".repeat(MAX_SAMPLES + 1);
    let many_families: String = (0..=MAX_FAMILIES)
        .map(|i| format!("# TYPE f{i} gauge\n"))
        .collect();
    let many_helps: String = (0..=MAX_FAMILIES)
        .map(|i| format!("# HELP f{i} x\n"))
        .collect();
    let per_line = MAX_LABELS;
    let line = format!("m{{{}}} 1\n", labels(per_line));
    let many_pairs = line.repeat(MAX_LABEL_PAIRS / per_line + 1);
    for (text, line, want) in [
        (
            format!("ok 1\nm{{{}}} 1", labels(MAX_LABELS + 1)),
            2,
            "more than 64 labels",
        ),
        (format!("ok 1\n# {too_long}"), 2, "longer than 65536 bytes"),
        (format!("ok 1\n\n{long_value}"), 3, "longer than 8192 bytes"),
        (many_samples, MAX_SAMPLES + 1, "more than 200000 samples"),
        (
            many_families,
            MAX_FAMILIES + 1,
            "more than 20000 metric families",
        ),
        (
            many_helps,
            MAX_FAMILIES + 1,
            "more than 20000 metric families",
        ),
        (
            many_pairs,
            MAX_LABEL_PAIRS / per_line + 1,
            "more than 500000 label pairs",
        ),
    ] {
        let err = parse(&text).expect_err(want);
        assert_eq!(err.line, line, "{want}: {err}");
        assert!(err.message.contains(want), "{want}: {err}");
        assert!(err.to_string().len() < 200, "errors quote little: {err}");
    }
}

#[test]
fn a_value_must_follow_a_space() {
    for text in ["m-1 2", "m{a=\"b\"}1", "m{}1"] {
        let err = parse(text).expect_err(text);
        assert!(err.message.contains("expected a space"), "{text}: {err}");
    }
    assert_eq!(parse("m{} 1").expect("parse").families[0].samples.len(), 1);
}

#[test]
fn a_parse_past_its_deadline_gives_up() {
    let past = std::time::Instant::now();
    let err = parse_before(ETCD_SAMPLE, past).expect_err("past the deadline");
    assert_eq!(err.line, 1, "{err}");
    let later = past + std::time::Duration::from_secs(3600);
    assert_eq!(parse_before(ETCD_SAMPLE, later), parse(ETCD_SAMPLE));
}

#[test]
fn merge_labelled_prepends_pairs_and_exports_clashing_labels() {
    let exp = parse(concat!(
        "# HELP m A help with \\\\ and \\n.\n",
        "# TYPE m gauge\n",
        "m{member=\"own\",exported_member=\"x\",cluster=\"c\",k=\"v\\\"\"} 1 17\n",
        "m 1e300\n",
        "m 1e-7\n",
        "m -0\n",
    ))
    .expect("parse");
    let mut out = String::new();
    let added: &[(&str, &str)] = &[("cluster", "a\"b"), ("member", "m1")];
    let conflicts = merge_labelled(&mut out, &[(added, &exp)], &HashSet::new(), |_| true);
    assert_eq!(conflicts, 0);
    assert_eq!(
        out,
        concat!(
            "# HELP m A help with \\\\ and \\n.\n",
            "# TYPE m gauge\n",
            "m{cluster=\"a\\\"b\",member=\"m1\",exported_exported_member=\"own\",exported_member=\"x\",exported_cluster=\"c\",k=\"v\\\"\"} 1 17\n",
            "m{cluster=\"a\\\"b\",member=\"m1\"} 1e300\n",
            "m{cluster=\"a\\\"b\",member=\"m1\"} 1e-7\n",
            "m{cluster=\"a\\\"b\",member=\"m1\"} -0\n",
        )
    );
    let back = parse(&out).expect("reparse");
    let values: Vec<u64> = back.families[0]
        .samples
        .iter()
        .map(|s| s.value.to_bits())
        .collect();
    let want: Vec<u64> = exp.families[0]
        .samples
        .iter()
        .map(|s| s.value.to_bits())
        .collect();
    assert_eq!(values, want);
    assert_eq!(back.families[0].help, exp.families[0].help);

    // No pairs at all: the samples as they were.
    let mut plain = String::new();
    merge_labelled(&mut plain, &[(&[], &exp)], &HashSet::new(), |_| true);
    assert_eq!(parse(&plain).expect("reparse"), exp);
}
