//! Reading a member's Prometheus text exposition (format 0.0.4, what etcd serves on
//! `/metrics`) and writing it back out with a `member` label added.
//!
//! The parser is strict: a line that is neither a comment nor a well-formed sample is an
//! error naming the line, so a member (or anything else on that port) that answers garbage
//! is reported instead of being half-passed-through. Families are kept in the order they
//! appear; merging several members' expositions emits each family once, with one `# HELP`
//! and one `# TYPE`, and all members' samples under it.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

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

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_name_start) && chars.all(is_name_char)
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `name{a="b",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(|c: char| !is_name_char(c)).unwrap_or(line.len());
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("invalid metric name in {:?}", truncate(line)));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            // Skip spaces, then either `}` or a label name.
            while chars.next_if(|(_, c)| *c == ' ').is_some() {}
            match chars.peek() {
                Some((i, '}')) => {
                    rest = &after[i + 1..];
                    break;
                }
                Some(_) => {}
                None => return Err("unterminated label set".into()),
            }
            let (start, _) = *chars.peek().ok_or("unterminated label set")?;
            let mut end = start;
            while let Some((i, c)) = chars.peek().copied() {
                if c == '=' || c == ' ' {
                    break;
                }
                end = i + c.len_utf8();
                chars.next();
            }
            let lname = &after[start..end];
            if !valid_label_name(lname) {
                return Err(format!("invalid label name {lname:?}"));
            }
            while chars.next_if(|(_, c)| *c == ' ').is_some() {}
            if chars.next().map(|(_, c)| c) != Some('=') {
                return Err(format!("expected '=' after label {lname:?}"));
            }
            while chars.next_if(|(_, c)| *c == ' ').is_some() {}
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!(
                    "expected '\"' to open the value of label {lname:?}"
                ));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => return Err(format!("invalid escape \\{c} in label value")),
                        None => return Err("unterminated label value".into()),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            }
            if labels.iter().any(|(k, _): &(String, String)| k == lname) {
                return Err(format!("duplicate label {lname:?}"));
            }
            labels.push((lname.to_owned(), value));
            while chars.next_if(|(_, c)| *c == ' ').is_some() {}
            match chars.peek() {
                Some((_, ',')) => {
                    chars.next();
                }
                Some((_, '}')) => {}
                _ => return Err("expected ',' or '}' after a label value".into()),
            }
        }
    }
    let mut fields = rest.split_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| format!("no value for {name}"))?;
    let value = parse_value(value).ok_or_else(|| format!("invalid value {value:?} for {name}"))?;
    let timestamp = match fields.next() {
        Some(ts) => Some(
            ts.parse::<i64>()
                .map_err(|_| format!("invalid timestamp {ts:?} for {name}"))?,
        ),
        None => None,
    };
    if fields.next().is_some() {
        return Err(format!("trailing text after the sample of {name}"));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
        timestamp,
    })
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) => s.parse().ok(),
        _ => None,
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
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
    let mut families: Vec<Family> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut helps: HashMap<String, String> = HashMap::new();
    let mut current: Option<usize> = None;
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let err = |message: String| ParseError {
            line: line_no,
            message,
        };
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            let mut parts = comment.splitn(3, ' ');
            match parts.next() {
                Some("HELP") => {
                    let name = parts.next().unwrap_or_default();
                    if !valid_name(name) {
                        return Err(err(format!("invalid metric name in HELP: {name:?}")));
                    }
                    let help = unescape_help(parts.next().unwrap_or_default());
                    if let Some(&i) = index.get(name) {
                        families[i].help = Some(help);
                    } else {
                        helps.insert(name.to_owned(), help);
                    }
                }
                Some("TYPE") => {
                    let name = parts.next().unwrap_or_default();
                    if !valid_name(name) {
                        return Err(err(format!("invalid metric name in TYPE: {name:?}")));
                    }
                    let kind_str = parts.next().unwrap_or_default().trim();
                    let kind = Kind::parse(kind_str)
                        .ok_or_else(|| err(format!("unknown type {kind_str:?} for {name}")))?;
                    if index.contains_key(name) {
                        return Err(err(format!("second TYPE line for {name}")));
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
        let sample = parse_sample(line).map_err(err)?;
        let target = match current {
            Some(i) if belongs_to(&families[i], &sample.name) => i,
            _ => match index.get(&sample.name) {
                Some(&i) if families[i].kind == Kind::Untyped => i,
                Some(_) => {
                    return Err(err(format!(
                        "samples of {} are not contiguous",
                        sample.name
                    )))
                }
                None => {
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

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
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
            let le = parse_value(s.label("le")?)?;
            match by_le.iter_mut().find(|(l, _)| *l == le) {
                Some(entry) => entry.1 += s.value,
                None => by_le.push((le, s.value)),
            }
        }
        by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
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

/// Merges several members' expositions into one, each family once, every sample with a
/// `member` label first (a `member` label the member had itself becomes
/// `exported_member`). Families named in `skip`, or that `keep` rejects, are left out. A
/// family whose type differs between members keeps the first member's samples; the others
/// are dropped and counted in the returned number of conflicts.
pub fn merge(
    out: &mut String,
    members: &[(&str, &Exposition)],
    skip: &HashSet<String>,
    keep: impl Fn(&str) -> bool,
) -> usize {
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<(&str, &Family)>> = HashMap::new();
    for (member, exp) in members {
        for f in &exp.families {
            if skip.contains(&f.name) || !keep(&f.name) {
                continue;
            }
            let entry = groups.entry(f.name.as_str()).or_insert_with(|| {
                order.push(f.name.as_str());
                Vec::new()
            });
            entry.push((member, f));
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
            let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        }
        let _ = writeln!(out, "# TYPE {name} {}", first.kind.as_str());
        for (member, f) in group {
            if f.kind != first.kind {
                conflicts += 1;
                continue;
            }
            for s in &f.samples {
                out.push_str(&s.name);
                let _ = write!(out, "{{member=\"{}\"", escape_label_value(member));
                for (k, v) in &s.labels {
                    let k = if k == "member" { "exported_member" } else { k };
                    let _ = write!(out, ",{k}=\"{}\"", escape_label_value(v));
                }
                let _ = write!(out, "}} {}", format_value(s.value));
                if let Some(ts) = s.timestamp {
                    let _ = write!(out, " {ts}");
                }
                out.push('\n');
            }
        }
    }
    conflicts
}

#[cfg(test)]
mod tests;
