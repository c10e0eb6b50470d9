//! Reading a member's Prometheus text exposition (format 0.0.4, what etcd serves on
//! `/metrics`) and writing it back out with labels (`member`, and whatever else the caller
//! adds) in front of each sample.
//!
//! The parser is strict: a line that is neither a comment nor a well-formed sample is an
//! error naming the line, so a member (or anything else on that port) that answers garbage
//! is reported instead of being half-passed-through. Families are kept in the order they
//! appear; merging several members' expositions emits each family once, with one `# HELP`
//! and one `# TYPE`, and all members' samples under it.
//!
//! The input comes from outside the process, so the parser is built not to be made slow or
//! large by it: it does a bounded amount of work per byte (no step looks back over earlier
//! samples or labels: duplicate labels are found with a set, families by a hash index), and
//! it stops at the first of the caps below, with an error naming the line. The caps are
//! far above what etcd serves (a 3.4/3.5 member: about 150-250 KB, 150 families, 1,300 to
//! 2,000 samples, 3 labels a sample on average, the longest line about 200 bytes) and
//! low enough that the parsed form of any input stays in the tens of megabytes: a sample
//! costs about 100 bytes in memory and a label pair about as much, whatever the text
//! spent on it. `merge` is linear in what it writes.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Instant;

/// Longest line accepted, in bytes (etcd's longest is about 200).
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Most labels on one sample (etcd uses at most 4; Prometheus' own per-target limit is
/// unset by default, and no exporter we read comes near 64).
pub const MAX_LABELS: usize = 64;
/// Longest label value, in bytes after unescaping (etcd's are names, versions and gRPC
/// methods, under 100 bytes).
pub const MAX_LABEL_VALUE_BYTES: usize = 8 * 1024;
/// Most samples in one exposition: 100 times a real member's ~2,000, which leaves room
/// for many gRPC methods and codes, and keeps the parsed samples under about 20 MB.
pub const MAX_SAMPLES: usize = 200_000;
/// Most label pairs in one exposition, all samples together: about 100 times a real
/// member's ~5,000 (so about 50 MB at most in memory; 64 on each of the 200,000 samples
/// would be over a gigabyte).
pub const MAX_LABEL_PAIRS: usize = 500_000;
/// Most metric families (and `# HELP` lines waiting for their family) in one exposition:
/// 100 times a real member's ~150-200.
pub const MAX_FAMILIES: usize = 20_000;

/// One parsed exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    pub families: Vec<Family>,
}

/// A metric family: its name, help, type and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: Option<String>,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" => Self::Histogram,
            "summary" => Self::Summary,
            "untyped" => Self::Untyped,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
            Self::Untyped => "untyped",
        }
    }
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp: Option<i64>,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why an exposition was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    b.first()
        .is_some_and(|&c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.iter().all(|&c| is_name_byte(c))
}

fn valid_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    b.first()
        .is_some_and(|&c| c.is_ascii_alphabetic() || c == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Parses `name{a="b",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let bytes = line.as_bytes();
    let name_end = bytes
        .iter()
        .position(|&b| !is_name_byte(b))
        .unwrap_or(bytes.len());
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("invalid metric name in {:?}", clip(line)));
    }
    let mut labels = Vec::new();
    let mut end = name_end;
    if bytes.get(end) == Some(&b'{') {
        end = parse_labels(line, end + 1, &mut labels)?;
    }
    let rest = &line[end..];
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return Err(format!(
            "expected a space before the value of {}",
            clip(name)
        ));
    }
    let mut fields = rest.split_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| format!("no value for {}", clip(name)))?;
    let value = parse_value(value)
        .ok_or_else(|| format!("invalid value {:?} for {}", clip(value), clip(name)))?;
    let timestamp = match fields.next() {
        Some(ts) => Some(
            ts.parse::<i64>()
                .map_err(|_| format!("invalid timestamp {:?} for {}", clip(ts), clip(name)))?,
        ),
        None => None,
    };
    if fields.next().is_some() {
        return Err(format!("trailing text after the sample of {}", clip(name)));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
        timestamp,
    })
}

/// Parses the label set that starts at byte `i` of `line` (just after the `{`) into
/// `labels`; returns the index just after the closing `}`.
fn parse_labels(
    line: &str,
    mut i: usize,
    labels: &mut Vec<(String, String)>,
) -> Result<usize, String> {
    let b = line.as_bytes();
    let skip_spaces = |mut i: usize| {
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        i
    };
    loop {
        i = skip_spaces(i);
        match b.get(i) {
            Some(b'}') => break,
            Some(_) => {}
            None => return Err("unterminated label set".into()),
        }
        // Every delimiter is ASCII, so each index below is on a char boundary.
        let start = i;
        while b.get(i).is_some_and(|&c| c != b'=' && c != b' ') {
            i += 1;
        }
        let lname = &line[start..i];
        if !valid_label_name(lname) {
            return Err(format!("invalid label name {:?}", clip(lname)));
        }
        let lname_shown = clip(lname);
        i = skip_spaces(i);
        if b.get(i) != Some(&b'=') {
            return Err(format!("expected '=' after label {lname_shown:?}"));
        }
        i = skip_spaces(i + 1);
        if b.get(i) != Some(&b'"') {
            return Err(format!(
                "expected '\"' to open the value of label {lname_shown:?}"
            ));
        }
        let (value, next) = parse_label_value(line, i + 1, lname_shown)?;
        i = next;
        if labels.len() == MAX_LABELS {
            return Err(format!("more than {MAX_LABELS} labels on one sample"));
        }
        labels.push((lname.to_owned(), value));
        i = skip_spaces(i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            _ => return Err("expected ',' or '}' after a label value".into()),
        }
    }
    if let Some(dup) = duplicate_label(labels) {
        return Err(format!("duplicate label {:?}", clip(dup)));
    }
    Ok(i + 1)
}

/// Reads a label value starting at byte `i` (just after the opening quote); the value
/// unescaped and the index just after the closing quote.
fn parse_label_value(line: &str, mut i: usize, lname: &str) -> Result<(String, usize), String> {
    let b = line.as_bytes();
    let mut value = String::new();
    loop {
        // Copy the run up to the next quote or backslash in one go.
        let Some(j) = b[i..]
            .iter()
            .position(|&c| c == b'"' || c == b'\\')
            .map(|off| i + off)
        else {
            return Err("unterminated label value".into());
        };
        value.push_str(&line[i..j]);
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(format!(
                "the value of label {lname:?} is longer than {MAX_LABEL_VALUE_BYTES} bytes"
            ));
        }
        if b[j] == b'"' {
            return Ok((value, j + 1));
        }
        match line[j + 1..].chars().next() {
            Some('\\') => value.push('\\'),
            Some('"') => value.push('"'),
            Some('n') => value.push('\n'),
            Some(c) => return Err(format!("invalid escape \\{c} in label value")),
            None => return Err("unterminated label value".into()),
        }
        i = j + 2;
    }
}

/// The first label name that appears twice. Pairwise for a handful of labels (cheaper
/// than hashing), with a set beyond, so a sample costs time linear in its labels.
fn duplicate_label(labels: &[(String, String)]) -> Option<&str> {
    if labels.len() <= 8 {
        labels
            .iter()
            .enumerate()
            .find(|(i, (k, _))| labels[..*i].iter().any(|(k2, _)| k2 == k))
            .map(|(_, (k, _))| k.as_str())
    } else {
        let mut seen = HashSet::with_capacity(labels.len());
        labels
            .iter()
            .map(|(k, _)| k.as_str())
            .find(|k| !seen.insert(*k))
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.' | b'e' | b'E')) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

/// At most the first 80 characters of `s`, for quoting input in an error.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn belongs_to(family: &Family, sample: &str) -> bool {
    if sample == family.name {
        return true;
    }
    let Some(suffix) = sample.strip_prefix(family.name.as_str()) else {
        return false;
    };
    match family.kind {
        Kind::Histogram => matches!(suffix, "_bucket" | "_sum" | "_count"),
        Kind::Summary => matches!(suffix, "_sum" | "_count"),
        _ => false,
    }
}

/// Parses a whole exposition.
pub fn parse(text: &str) -> Result<Exposition, ParseError> {
    parse_inner(text, None)
}

/// Like [`parse`], but gives up with an error naming the line it reached once `deadline`
/// has passed, so that a parse its caller has stopped waiting for does not run on.
pub fn parse_before(text: &str, deadline: Instant) -> Result<Exposition, ParseError> {
    parse_inner(text, Some(deadline))
}

/// How many lines are read between two looks at the clock: at most 16 MiB of text.
const LINES_PER_CLOCK_CHECK: usize = 256;

fn parse_inner(text: &str, deadline: Option<Instant>) -> Result<Exposition, ParseError> {
    let mut families: Vec<Family> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut helps: HashMap<String, String> = HashMap::new();
    let mut current: Option<usize> = None;
    let mut samples = 0usize;
    let mut label_pairs = 0usize;
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let err = |message: String| ParseError {
            line: line_no,
            message,
        };
        if raw.len() > MAX_LINE_BYTES {
            return Err(err(format!("longer than {MAX_LINE_BYTES} bytes")));
        }
        if n.is_multiple_of(LINES_PER_CLOCK_CHECK) && deadline.is_some_and(|d| Instant::now() >= d)
        {
            return Err(err("gave up here: out of time".into()));
        }
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let too_many_families = || err(format!("more than {MAX_FAMILIES} metric families"));
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            let mut parts = comment.splitn(3, ' ');
            match parts.next() {
                Some("HELP") => {
                    let name = parts.next().unwrap_or_default();
                    if !valid_name(name) {
                        return Err(err(format!(
                            "invalid metric name in HELP: {:?}",
                            clip(name)
                        )));
                    }
                    let help = unescape_help(parts.next().unwrap_or_default());
                    if let Some(&i) = index.get(name) {
                        families[i].help = Some(help);
                    } else {
                        if !helps.contains_key(name) && families.len() + helps.len() >= MAX_FAMILIES
                        {
                            return Err(too_many_families());
                        }
                        helps.insert(name.to_owned(), help);
                    }
                }
                Some("TYPE") => {
                    let name = parts.next().unwrap_or_default();
                    if !valid_name(name) {
                        return Err(err(format!(
                            "invalid metric name in TYPE: {:?}",
                            clip(name)
                        )));
                    }
                    let kind_str = parts.next().unwrap_or_default().trim();
                    let kind = Kind::parse(kind_str).ok_or_else(|| {
                        err(format!(
                            "unknown type {:?} for {}",
                            clip(kind_str),
                            clip(name)
                        ))
                    })?;
                    if index.contains_key(name) {
                        return Err(err(format!("second TYPE line for {}", clip(name))));
                    }
                    if families.len() + helps.len() >= MAX_FAMILIES {
                        return Err(too_many_families());
                    }
                    index.insert(name.to_owned(), families.len());
                    current = Some(families.len());
                    families.push(Family {
                        name: name.to_owned(),
                        help: helps.remove(name),
                        kind,
                        samples: Vec::new(),
                    });
                }
                // Any other comment is allowed and ignored.
                _ => {}
            }
            continue;
        }
        if samples == MAX_SAMPLES {
            return Err(err(format!("more than {MAX_SAMPLES} samples")));
        }
        let sample = parse_sample(line).map_err(err)?;
        samples += 1;
        label_pairs += sample.labels.len();
        if label_pairs > MAX_LABEL_PAIRS {
            return Err(err(format!(
                "more than {MAX_LABEL_PAIRS} label pairs in all samples"
            )));
        }
        let target = match current {
            Some(i) if belongs_to(&families[i], &sample.name) => i,
            _ => match index.get(&sample.name) {
                Some(&i) if families[i].kind == Kind::Untyped => i,
                Some(_) => {
                    return Err(err(format!(
                        "samples of {} are not contiguous",
                        clip(&sample.name)
                    )))
                }
                None => {
                    if families.len() + helps.len() >= MAX_FAMILIES {
                        return Err(too_many_families());
                    }
                    index.insert(sample.name.clone(), families.len());
                    families.push(Family {
                        name: sample.name.clone(),
                        help: helps.remove(&sample.name),
                        kind: Kind::Untyped,
                        samples: Vec::new(),
                    });
                    families.len() - 1
                }
            },
        };
        current = Some(target);
        families[target].samples.push(sample);
    }
    Ok(Exposition { families })
}

fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn push_escaped_help(out: &mut String, s: &str) {
    if !s.contains(['\\', '\n']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_escaped_label_value(out: &mut String, s: &str) {
    if !s.contains(['\\', '"', '\n']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes `v` so that it reads back as the same `f64`: integers as integers (`10`, as
/// etcd writes them), anything else in Rust's shortest round-trip form, with an exponent
/// for very large or small magnitudes (`1e300`, not 301 digits).
fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v.fract() == 0.0 && v.abs() < 1e16 {
        let _ = write!(out, "{v}");
    } else {
        let _ = write!(out, "{v:?}");
    }
}

impl Exposition {
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// Sum of the values of the samples named `name` that pass `filter`, or `None` when
    /// there are none.
    pub fn sum(&self, name: &str, filter: impl Fn(&Sample) -> bool) -> Option<f64> {
        let mut total = None;
        for f in &self.families {
            for s in f.samples.iter().filter(|s| s.name == name && filter(s)) {
                *total.get_or_insert(0.0) += s.value;
            }
        }
        total
    }

    /// The cumulative buckets `(le, count)` of a histogram family without other labels
    /// than `le` (or summed over them), sorted by `le`.
    pub fn histogram_buckets(&self, name: &str) -> Option<Vec<(f64, f64)>> {
        let f = self.family(name)?;
        if f.kind != Kind::Histogram {
            return None;
        }
        let bucket_name = format!("{name}_bucket");
        let mut by_le: Vec<(f64, f64)> = Vec::new();
        for s in f.samples.iter().filter(|s| s.name == bucket_name) {
            by_le.push((parse_value(s.label("le")?)?, s.value));
        }
        // Sorted, then equal bounds (from other label values) summed: n log n, where
        // looking each bound up in the list so far would be quadratic.
        by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
        by_le.dedup_by(|next, kept| {
            let same = next.0 == kept.0;
            if same {
                kept.1 += next.1;
            }
            same
        });
        (!by_le.is_empty()).then_some(by_le)
    }
}

/// The `q` quantile of cumulative buckets, interpolated linearly inside the bucket as
/// Prometheus's `histogram_quantile` does. `None` when there are no observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let mut prev_le = 0.0;
    let mut prev_count = 0.0;
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                // Like Prometheus: the answer is the highest finite bound.
                return Some(prev_le);
            }
            let in_bucket = count - prev_count;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(prev_le + (le - prev_le) * (rank - prev_count) / in_bucket);
        }
        prev_le = le;
        prev_count = count;
    }
    Some(prev_le)
}

/// Bucket-wise difference `now - before` (for the observations made between two scrapes).
/// `None` when the buckets changed shape or a counter went backwards (a restart).
pub fn bucket_delta(now: &[(f64, f64)], before: &[(f64, f64)]) -> Option<Vec<(f64, f64)>> {
    if now.len() != before.len() {
        return None;
    }
    now.iter()
        .zip(before)
        .map(|(&(le, a), &(le2, b))| (le == le2 && a >= b).then_some((le, a - b)))
        .collect()
}

/// Merges several expositions into one, each family once, every sample with its
/// exposition's label pairs first, in the order given: for a member, e.g.
/// `[("cluster", "a"), ("member", "m1")]`.
///
/// A sample's own label with the name of an added one is kept as `exported_<name>`, as
/// Prometheus does with a target's labels under `honor_labels: false`; when that name is
/// taken too (by another label of the sample or an added one), `exported_` is prepended
/// again until the name is free, as Prometheus does. The added names must be distinct
/// valid label names other than `le` and `quantile`. Families named in `skip`, or that
/// `keep` rejects, are left out. A family whose type differs between expositions keeps
/// the first one's samples; the others are dropped and counted in the returned number of
/// conflicts.
///
/// The output is for Prometheus, which has no caps by default: a sample near
/// [`MAX_LABELS`] or [`MAX_LINE_BYTES`] can come out over them, with the added labels.
///
/// The cost is linear in the text written: the added labels are escaped once per
/// exposition, and a sample's labels are compared with the added names only.
pub fn merge_labelled(
    out: &mut String,
    native: &[(&[(&str, &str)], &Exposition)],
    skip: &HashSet<String>,
    keep: impl Fn(&str) -> bool,
) -> usize {
    // The added labels of each exposition, written once: `cluster="a",member="m1"`.
    let prefixes: Vec<String> = native
        .iter()
        .map(|(added, _)| {
            let mut p = String::new();
            for (i, (k, v)) in added.iter().enumerate() {
                if i > 0 {
                    p.push(',');
                }
                push_label(&mut p, k, v);
            }
            p
        })
        .collect();
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<(usize, &Family)>> = HashMap::new();
    for (i, (_, exp)) in native.iter().enumerate() {
        for f in &exp.families {
            if skip.contains(&f.name) || !keep(&f.name) {
                continue;
            }
            let entry = groups.entry(f.name.as_str()).or_insert_with(|| {
                order.push(f.name.as_str());
                Vec::new()
            });
            entry.push((i, f));
        }
    }
    let mut conflicts = 0;
    for name in order {
        let Some(group) = groups.get(name) else {
            continue;
        };
        let Some((_, first)) = group.first() else {
            continue;
        };
        if let Some(help) = group.iter().find_map(|(_, f)| f.help.as_deref()) {
            let _ = write!(out, "# HELP {name} ");
            push_escaped_help(out, help);
            out.push('\n');
        }
        let _ = writeln!(out, "# TYPE {name} {}", first.kind.as_str());
        for &(i, f) in group {
            if f.kind != first.kind {
                conflicts += 1;
                continue;
            }
            let added = native[i].0;
            for s in &f.samples {
                out.push_str(&s.name);
                out.push('{');
                out.push_str(&prefixes[i]);
                let mut renamed: Vec<String> = Vec::new();
                for (j, (k, v)) in s.labels.iter().enumerate() {
                    if j > 0 || !added.is_empty() {
                        out.push(',');
                    }
                    if added.iter().any(|(a, _)| a == k) {
                        let name = exported_name(k, added, &s.labels, &renamed);
                        push_label(out, &name, v);
                        renamed.push(name);
                    } else {
                        push_label(out, k, v);
                    }
                }
                out.push_str("} ");
                push_value(out, s.value);
                if let Some(ts) = s.timestamp {
                    let _ = write!(out, " {ts}");
                }
                out.push('\n');
            }
        }
    }
    conflicts
}

/// Merges several members' expositions, every sample with a `member` label first: what
/// [`merge_labelled`] does with `[("member", name)]` for each.
pub fn merge(
    out: &mut String,
    members: &[(&str, &Exposition)],
    skip: &HashSet<String>,
    keep: impl Fn(&str) -> bool,
) -> usize {
    let labels: Vec<[(&str, &str); 1]> = members.iter().map(|(m, _)| [("member", *m)]).collect();
    let native: Vec<(&[(&str, &str)], &Exposition)> = labels
        .iter()
        .zip(members)
        .map(|(l, (_, exp))| (&l[..], *exp))
        .collect();
    merge_labelled(out, &native, skip, keep)
}

fn push_label(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    push_escaped_label_value(out, value);
    out.push('"');
}

/// The name a sample's own label `name` is kept under when an added label has its name:
/// `exported_<name>`, with `exported_` prepended again while that is taken by an added
/// label, another label of the sample or an earlier renamed one. Only reached on a clash,
/// so the set is built only then.
fn exported_name(
    name: &str,
    added: &[(&str, &str)],
    own: &[(String, String)],
    renamed: &[String],
) -> String {
    let taken: HashSet<&str> = added
        .iter()
        .map(|(k, _)| *k)
        .chain(own.iter().map(|(k, _)| k.as_str()))
        .chain(renamed.iter().map(String::as_str))
        .collect();
    let mut candidate = format!("exported_{name}");
    while taken.contains(candidate.as_str()) {
        candidate.insert_str(0, "exported_");
    }
    candidate
}

#[cfg(test)]
mod tests;
