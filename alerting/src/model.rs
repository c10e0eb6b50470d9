//! Alerts as the relay receives them: Prometheus's Alertmanager v2 array and the
//! Alertmanager webhook payload (version 4), validated into one [`Alert`] shape. An
//! alert's identity is the fingerprint of its label set.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Label names and values.
pub type Labels = BTreeMap<String, String>;

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One alert, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub fingerprint: String,
    pub labels: Labels,
    pub annotations: Labels,
    /// RFC 3339, as received (empty when absent).
    pub starts_at: String,
    pub ends_at: String,
    pub generator_url: String,
    pub status: Status,
}

impl Alert {
    /// An alert from validated parts; absent times and URL become empty strings.
    fn new(
        labels: Labels,
        annotations: Labels,
        starts_at: Option<String>,
        ends_at: Option<String>,
        generator_url: Option<String>,
        status: Status,
    ) -> Self {
        Alert {
            fingerprint: fingerprint(&labels),
            labels,
            annotations,
            starts_at: starts_at.unwrap_or_default(),
            ends_at: ends_at.unwrap_or_default(),
            generator_url: generator_url.unwrap_or_default(),
            status,
        }
    }

    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// One notification of a group to one receiver: every alert of the group the receiver
/// should hear about, firing first. The group is firing while any alert in it fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupNotification {
    pub group_key: String,
    pub group_labels: Labels,
    pub status: Status,
    pub alerts: Vec<Alert>,
}

impl GroupNotification {
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.iter().filter(|a| a.status == Status::Firing)
    }

    pub fn resolved(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.iter().filter(|a| a.status == Status::Resolved)
    }

    /// The labels every alert shares (Alertmanager's `commonLabels`).
    pub fn common_labels(&self) -> Labels {
        common(self.alerts.iter().map(|a| &a.labels))
    }

    /// The annotations every alert shares.
    pub fn common_annotations(&self) -> Labels {
        common(self.alerts.iter().map(|a| &a.annotations))
    }

    /// The distinct alert names, in order of appearance.
    pub fn alertnames(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for a in &self.alerts {
            if !out.contains(&a.name()) {
                out.push(a.name());
            }
        }
        out
    }

    /// A stable key for the group, for receivers that want a short one (PagerDuty's
    /// `dedup_key`).
    pub fn group_hash(&self) -> String {
        let key: Labels = [("group".to_owned(), self.group_key.clone())].into();
        fingerprint(&key)
    }
}

fn common<'a>(mut sets: impl Iterator<Item = &'a Labels>) -> Labels {
    let Some(first) = sets.next() else {
        return Labels::new();
    };
    let mut out = first.clone();
    for s in sets {
        out.retain(|k, v| s.get(k) == Some(v));
    }
    out
}

/// FNV-1a 64 over the sorted label pairs, each name and value followed by 0xff: the
/// same identity Alertmanager gives a label set.
pub fn fingerprint(labels: &Labels) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (k, v) in labels {
        eat(k.as_bytes());
        eat(&[0xff]);
        eat(v.as_bytes());
        eat(&[0xff]);
    }
    format!("{h:016x}")
}

/// Why a payload was refused (the message names the place).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPayload(pub String);

/// Fields beyond these are ignored, as Alertmanager ignores them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert {
    labels: Option<Labels>,
    #[serde(default)]
    annotations: Labels,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAlert {
    #[serde(default)]
    status: Option<String>,
    labels: Option<Labels>,
    #[serde(default)]
    annotations: Labels,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
}

#[derive(Deserialize)]
struct WebhookPayload {
    version: Option<String>,
    alerts: Option<Vec<WebhookAlert>>,
}

/// Most alerts accepted in one request (Prometheus sends up to 256).
pub const MAX_ALERTS: usize = 1000;

/// Parses an RFC 3339 timestamp into Unix milliseconds (`None` for the zero time).
pub fn parse_time(s: &str) -> Result<Option<i64>, String> {
    // Alertmanager's zero time means "not set".
    if s.starts_with("0001-01-01") {
        return Ok(None);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("invalid time {s:?}: {e}"))?;
    Ok(Some((t.unix_timestamp_nanos() / 1_000_000) as i64))
}

/// Most label pairs an alert may carry.
pub const MAX_LABELS: usize = 64;
/// Longest label name, in bytes.
pub const MAX_LABEL_NAME: usize = 256;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE: usize = 4096;
/// Most bytes of annotations (names and values) one alert may carry.
pub const MAX_ANNOTATIONS_BYTES: usize = 32 * 1024;

/// Checks an alert's labels as Alertmanager does (at least one pair, names non-empty
/// UTF-8, as Prometheus 3 allows), within the size caps above. An empty value means the
/// label is absent, as in Prometheus, and is dropped.
fn validate_labels(labels: Option<Labels>, at: &str) -> Result<Labels, InvalidPayload> {
    let mut labels = labels.ok_or_else(|| InvalidPayload(format!("{at}: missing \"labels\"")))?;
    labels.retain(|_, v| !v.is_empty());
    if labels.is_empty() {
        return Err(InvalidPayload(format!("{at}: \"labels\" is empty")));
    }
    if labels.len() > MAX_LABELS {
        return Err(InvalidPayload(format!(
            "{at}: {} labels; at most {MAX_LABELS}",
            labels.len()
        )));
    }
    for (k, v) in &labels {
        if k.is_empty() {
            return Err(InvalidPayload(format!("{at}: invalid label name \"\"")));
        }
        if k.len() > MAX_LABEL_NAME {
            return Err(InvalidPayload(format!(
                "{at}: label name of {} bytes; at most {MAX_LABEL_NAME}",
                k.len()
            )));
        }
        if v.len() > MAX_LABEL_VALUE {
            return Err(InvalidPayload(format!(
                "{at}: label {k:?} has a value of {} bytes; at most {MAX_LABEL_VALUE}",
                v.len()
            )));
        }
    }
    Ok(labels)
}

fn validate_annotations(annotations: &Labels, at: &str) -> Result<(), InvalidPayload> {
    let size: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_ANNOTATIONS_BYTES {
        return Err(InvalidPayload(format!(
            "{at}: annotations of {size} bytes; at most {MAX_ANNOTATIONS_BYTES}"
        )));
    }
    Ok(())
}

fn status_at(ends_at: Option<&str>, now: SystemTime, at: &str) -> Result<Status, InvalidPayload> {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64;
    match ends_at.filter(|s| !s.is_empty()) {
        None => Ok(Status::Firing),
        Some(s) => match parse_time(s).map_err(|e| InvalidPayload(format!("{at}: endsAt: {e}")))? {
            Some(end) if end <= now_ms => Ok(Status::Resolved),
            _ => Ok(Status::Firing),
        },
    }
}

fn check_time(s: &Option<String>, at: &str, field: &str) -> Result<(), InvalidPayload> {
    if let Some(s) = s.as_deref().filter(|s| !s.is_empty()) {
        parse_time(s).map_err(|e| InvalidPayload(format!("{at}: {field}: {e}")))?;
    }
    Ok(())
}

/// A parsed request: the valid alerts, and one message per invalid one. As Alertmanager
/// does, the valid alerts of a request are kept even when others in it are refused.
#[derive(Debug, Default)]
pub struct Parsed {
    pub alerts: Vec<Alert>,
    pub invalid: Vec<InvalidPayload>,
}

impl Parsed {
    fn push(&mut self, r: Result<Alert, InvalidPayload>) {
        match r {
            Ok(a) => self.alerts.push(a),
            Err(e) => self.invalid.push(e),
        }
    }
}

fn check_count(n: usize) -> Result<(), InvalidPayload> {
    if n > MAX_ALERTS {
        return Err(InvalidPayload(format!(
            "{n} alerts in one request; at most {MAX_ALERTS}"
        )));
    }
    Ok(())
}

/// How long an alert posted without `endsAt` fires unless refreshed (Alertmanager's
/// default `resolve_timeout`). Prometheus always sends `endsAt`; `amtool alert add` and
/// hand-made requests do not.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(300);

/// `t` as RFC 3339 (UTC, milliseconds).
fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Whether a time field is absent (missing, empty, or Go's zero time).
fn unset(t: &Option<String>) -> bool {
    t.as_deref()
        .is_none_or(|s| s.is_empty() || s.starts_with("0001-01-01"))
}

/// Parses `POST /api/v2/alerts` (a JSON array of postable alerts). `Err` when the body as
/// a whole is unusable; otherwise each alert is valid or named in [`Parsed::invalid`]. As
/// in Alertmanager, a missing `startsAt` is now and a missing `endsAt` is now plus
/// [`RESOLVE_TIMEOUT`].
pub fn parse_v2(body: &[u8], now: SystemTime) -> Result<Parsed, InvalidPayload> {
    let raw: Vec<PostableAlert> = serde_json::from_slice(body)
        .map_err(|e| InvalidPayload(format!("invalid alerts array: {e}")))?;
    check_count(raw.len())?;
    let mut out = Parsed::default();
    for (i, a) in raw.into_iter().enumerate() {
        let at = format!("alert {i}");
        out.push((|| {
            let labels = validate_labels(a.labels, &at)?;
            validate_annotations(&a.annotations, &at)?;
            check_time(&a.starts_at, &at, "startsAt")?;
            let starts_at = if unset(&a.starts_at) {
                Some(rfc3339(now))
            } else {
                a.starts_at
            };
            let ends_at = if unset(&a.ends_at) {
                Some(rfc3339(now + RESOLVE_TIMEOUT))
            } else {
                a.ends_at
            };
            let status = status_at(ends_at.as_deref(), now, &at)?;
            Ok(Alert::new(
                labels,
                a.annotations,
                starts_at,
                ends_at,
                a.generator_url,
                status,
            ))
        })());
    }
    Ok(out)
}

/// Parses `POST /api/v1/alertmanager` (an Alertmanager webhook payload, version 4), as
/// [`parse_v2`] does.
pub fn parse_webhook(body: &[u8], now: SystemTime) -> Result<Parsed, InvalidPayload> {
    let p: WebhookPayload = serde_json::from_slice(body)
        .map_err(|e| InvalidPayload(format!("invalid webhook payload: {e}")))?;
    match p.version.as_deref() {
        Some("4") => {}
        Some(v) => {
            return Err(InvalidPayload(format!(
                "unsupported webhook payload version {v:?}; expected \"4\""
            )))
        }
        None => return Err(InvalidPayload("missing \"version\"".into())),
    }
    let alerts = p
        .alerts
        .ok_or_else(|| InvalidPayload("missing \"alerts\"".into()))?;
    check_count(alerts.len())?;
    let mut out = Parsed::default();
    for (i, a) in alerts.into_iter().enumerate() {
        let at = format!("alerts[{i}]");
        out.push((|| {
            let labels = validate_labels(a.labels, &at)?;
            validate_annotations(&a.annotations, &at)?;
            check_time(&a.starts_at, &at, "startsAt")?;
            let status = match a.status.as_deref() {
                Some("resolved") => Status::Resolved,
                Some("firing") | None => status_at(a.ends_at.as_deref(), now, &at)?,
                Some(other) => {
                    return Err(InvalidPayload(format!(
                        "{at}: status {other:?} is neither \"firing\" nor \"resolved\""
                    )))
                }
            };
            Ok(Alert::new(
                labels,
                a.annotations,
                a.starts_at,
                a.ends_at,
                a.generator_url,
                status,
            ))
        })());
    }
    Ok(out)
}

/// An alert with these labels and nothing else, for tests.
#[cfg(test)]
pub(crate) fn test_alert(pairs: &[(&str, &str)], status: Status) -> Alert {
    let labels: Labels = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Alert::new(labels, Labels::new(), None, None, None, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn fingerprint_ignores_order_and_matches_alertmanager_style() {
        let a: Labels = [("b".into(), "2".into()), ("a".into(), "1".into())].into();
        let b: Labels = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a).len(), 16);
        let c: Labels = [("a".into(), "12".into())].into();
        let d: Labels = [("a1".into(), "2".into())].into();
        assert_ne!(
            fingerprint(&c),
            fingerprint(&d),
            "the separator keeps pairs apart"
        );
        // FNV-1a 64 of nothing is the offset basis.
        assert_eq!(fingerprint(&Labels::new()), "cbf29ce484222325");
    }

    #[test]
    fn v2_alerts_firing_and_resolved_by_ends_at() {
        let body = br#"[
          {"labels":{"alertname":"EtcdNoLeader","severity":"critical"},"annotations":{"summary":"no leader"},
           "startsAt":"2027-01-15T08:00:00Z","endsAt":"2027-01-15T08:30:00Z","generatorURL":"http://p/graph"},
          {"labels":{"alertname":"EtcdNoLeader","severity":"critical","member":"m2"},
           "startsAt":"2027-01-15T07:00:00Z","endsAt":"2027-01-15T08:10:00.123+01:00"}
        ]"#;
        let alerts = parse_v2(body, now()).expect("parse").alerts;
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].status, Status::Firing);
        assert_eq!(alerts[0].name(), "EtcdNoLeader");
        assert_eq!(alerts[1].status, Status::Resolved);
        assert_ne!(alerts[0].fingerprint, alerts[1].fingerprint);
    }

    #[test]
    fn webhook_payload_v4() {
        let body = br#"{"version":"4","groupKey":"{}:{}","status":"firing","receiver":"r",
          "alerts":[{"status":"firing","labels":{"alertname":"X"},"annotations":{},
          "startsAt":"2027-01-15T08:00:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"abc"},
          {"status":"resolved","labels":{"alertname":"Y"},"startsAt":"2027-01-15T08:00:00Z","endsAt":"2027-01-15T08:05:00Z"}]}"#;
        let alerts = parse_webhook(body, now()).expect("parse").alerts;
        assert_eq!(alerts[0].status, Status::Firing);
        assert_eq!(alerts[1].status, Status::Resolved);
    }

    #[test]
    fn bad_payloads_name_the_problem() {
        for (body, want) in [
            (&b"{not json"[..], "invalid alerts array"),
            (br#"{"labels":{}}"#, "invalid alerts array"),
            (br#"[{"labels":{"a":1}}]"#, "invalid alerts array"),
        ] {
            let err = parse_v2(body, now()).expect_err(std::str::from_utf8(body).unwrap_or("?"));
            assert!(err.0.contains(want), "{err} lacks {want}");
        }
        let long = "v".repeat(MAX_LABEL_VALUE + 1);
        for (body, want) in [
            (
                r#"[{"annotations":{}}]"#.to_owned(),
                "alert 0: missing \"labels\"",
            ),
            (
                r#"[{"labels":{}}]"#.to_owned(),
                "alert 0: \"labels\" is empty",
            ),
            (
                r#"[{"labels":{"a":""}}]"#.to_owned(),
                "alert 0: \"labels\" is empty",
            ),
            (r#"[{"labels":{"":"v"}}]"#.to_owned(), "invalid label name"),
            (
                format!(r#"[{{"labels":{{"a":"{long}"}}}}]"#),
                "at most 4096",
            ),
            (
                r#"[{"labels":{"a":"v"},"endsAt":"yesterday"}]"#.to_owned(),
                "alert 0: endsAt",
            ),
        ] {
            let p = parse_v2(body.as_bytes(), now()).expect("the array parses");
            assert!(p.alerts.is_empty(), "{body}");
            assert!(
                p.invalid[0].0.contains(want),
                "{} lacks {want}",
                p.invalid[0]
            );
        }
        let err = parse_webhook(br#"{"version":"3","alerts":[]}"#, now()).expect_err("v3");
        assert!(err.0.contains("version"), "{err}");
        let err = parse_webhook(br#"{"version":"4"}"#, now()).expect_err("no alerts");
        assert!(err.0.contains("alerts"), "{err}");
    }

    /// What Alertmanager accepts: unknown fields, UTF-8 label names (Prometheus 3), and
    /// a batch whose valid alerts are kept when one is refused.
    #[test]
    fn accepts_what_alertmanager_accepts() {
        let body = r#"[
          {"labels":{"alertname":"A","service.name":"ünïcode","empty":""},"colour":"red"},
          {"labels":{}},
          {"labels":{"alertname":"B"},"annotations":{"x":"y"},"futureField":{"n":1}}
        ]"#;
        let p = parse_v2(body.as_bytes(), now()).expect("parse");
        assert_eq!(p.alerts.len(), 2);
        assert_eq!(p.invalid.len(), 1);
        assert!(p.invalid[0].0.starts_with("alert 1:"), "{}", p.invalid[0]);
        assert_eq!(
            p.alerts[0].labels.get("service.name").map(String::as_str),
            Some("ünïcode")
        );
        assert!(
            !p.alerts[0].labels.contains_key("empty"),
            "an empty value is no label"
        );
    }
}
