//! Ingest: any request body through both parsers (`POST /api/v2/alerts` and the
//! Alertmanager webhook), then every notifier's rendering of each parsed alert alone in its
//! group and of all of them in one group.
//!
//! Beyond "never panics", it checks:
//! - the default templates always render (an error there fails a delivery for good);
//! - alert data cannot make Slack markup: every `<`/`>` in the message is one of the
//!   relay's own `<url|Runbook>` / `<url|Source>` links;
//! - round trips: a v2 alert's fields serialized back as a v2 body parse to the same alert;
//!   the webhook notifier's payload (Alertmanager v4) parses back to the same alerts.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alerting::config::{EmailConfig, EmailTls, PagerDutyConfig, SlackConfig};
use alerting::model::{self, Alert, GroupNotification, Labels, Status};
use alerting::notify::{self, email::Email, Notification};
use common::secret::Secret;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

/// 2027-01-15T08:00:00Z: fixed, so that a run replays exactly.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn slack_cfg() -> SlackConfig {
    SlackConfig {
        webhook_url: Secret::new("http://127.0.0.1:1/hook"),
        channel: Some("#etcd".into()),
        text_template: None,
    }
}

/// A custom template, as in slack.rs's tests.
fn slack_custom_cfg() -> SlackConfig {
    SlackConfig {
        text_template: Some("{{ labels.member }} is {{ status }}: {{ summary | upper }}".into()),
        ..slack_cfg()
    }
}

fn pagerduty_cfg() -> PagerDutyConfig {
    PagerDutyConfig {
        routing_key: Secret::new("key"),
        url: "http://127.0.0.1:1/v2/enqueue".into(),
        summary_template: None,
    }
}

/// Built once: `Email::new` only parses addresses and builds an SMTP transport that
/// connects when it sends (no TLS, so no certificate store is read).
fn email() -> &'static Email {
    static EMAIL: OnceLock<Email> = OnceLock::new();
    EMAIL.get_or_init(|| {
        Email::new(EmailConfig {
            smarthost: "127.0.0.1:25".into(),
            from: "relay@example.com".into(),
            to: vec!["oncall@example.com".into()],
            tls: EmailTls::None,
            username: None,
            password: None,
            ca_file: None,
            subject_template: None,
            body_template: None,
        })
        .expect("email notifier")
    })
}

/// One alert alone in its group, as a route grouping by `alertname` makes it.
fn alone(a: &Alert) -> GroupNotification {
    let group_labels: Labels = a
        .labels
        .get("alertname")
        .map(|v| [("alertname".to_owned(), v.clone())].into())
        .unwrap_or_default();
    GroupNotification {
        group_key: format!("{{}}:{{alertname={:?}}}", a.name()),
        group_labels,
        status: a.status,
        alerts: vec![a.clone()],
    }
}

/// Every alert in one group (firing first, as the engine orders them).
fn together(alerts: &[Alert]) -> GroupNotification {
    let mut alerts = alerts.to_vec();
    alerts.sort_by_key(|a| a.status != Status::Firing);
    let status = if alerts.iter().any(|a| a.status == Status::Firing) {
        Status::Firing
    } else {
        Status::Resolved
    };
    let mut g = GroupNotification {
        group_key: String::new(),
        group_labels: Labels::new(),
        status,
        alerts,
    };
    g.group_labels = g.common_labels();
    g.group_key = format!("{{}}:{:?}", g.group_labels);
    g
}

/// Removes the links the relay makes itself (`<url|Runbook>`, `<url|Source>`, the URL
/// already escaped) and says whether any `<` or `>` is left.
fn has_markup(text: &str) -> bool {
    let mut rest = text;
    let mut out = String::new();
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let link = ["|Runbook>", "|Source>"].iter().find_map(|tail| {
            let end = after.find(tail)?;
            let url = &after[..end];
            (!url.contains(['<', '>', '|'])).then_some(end + tail.len())
        });
        match link {
            Some(len) => rest = &after[len..],
            None => return true,
        }
    }
    out.push_str(rest);
    out.contains(['<', '>'])
}

fn check_slack_text(v: &Value, path: &str) {
    match v {
        Value::String(s) => assert!(
            !has_markup(s),
            "alert data made Slack markup at {path}: {s:?}"
        ),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, x)| check_slack_text(x, &format!("{path}[{i}]"))),
        Value::Object(m) => m
            .iter()
            .for_each(|(k, x)| check_slack_text(x, &format!("{path}.{k}"))),
        _ => {}
    }
}

fn render_all(g: &GroupNotification) {
    let n = Notification {
        receiver: "fuzz",
        n: g,
    };
    let slack = notify::slack::payload(&slack_cfg(), n)
        .unwrap_or_else(|e| panic!("the default Slack template failed: {e}"));
    check_slack_text(&slack, "slack");
    // A custom template may fail on data at run time; that is a delivery error, not a bug.
    let _ = notify::slack::payload(&slack_custom_cfg(), n);
    notify::pagerduty::event(&pagerduty_cfg(), n)
        .unwrap_or_else(|e| panic!("the default PagerDuty template failed: {e}"));
    email()
        .render(n)
        .unwrap_or_else(|e| panic!("the default email templates failed: {e}"));
    notify::render(notify::DEFAULT_TITLE, n)
        .unwrap_or_else(|e| panic!("the default title failed: {e}"));

    // The webhook notifier sends Alertmanager's v4 payload: the relay reads it back as
    // the same alerts (a firing alert's endsAt goes out as the zero time).
    let hook = notify::webhook::payload(n);
    let body = serde_json::to_vec(&hook).expect("serialize the webhook payload");
    let back = model::parse_webhook(&body, now())
        .unwrap_or_else(|e| panic!("own webhook payload refused: {e}\n{hook}"));
    assert!(
        back.invalid.is_empty(),
        "own webhook payload has invalid alerts: {:?}",
        back.invalid
    );
    assert_eq!(back.alerts.len(), g.alerts.len());
    for (a, b) in g.alerts.iter().zip(&back.alerts) {
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.annotations, b.annotations);
        assert_eq!(a.starts_at, b.starts_at);
        assert_eq!(a.generator_url, b.generator_url);
        assert_eq!(
            a.status, b.status,
            "status of {a:?} after the webhook round trip"
        );
        if a.status == Status::Resolved && !a.ends_at.is_empty() {
            assert_eq!(a.ends_at, b.ends_at);
        }
    }
}

/// The alert's fields as a v2 body again: labels alone give the same identity; all of
/// them give the same alert (for an alert read from v2).
fn round_trip_v2(a: &Alert, from_v2: bool) {
    let body = serde_json::to_vec(&json!([{ "labels": a.labels }])).expect("serialize labels");
    let p = model::parse_v2(&body, now())
        .unwrap_or_else(|e| panic!("labels {:?} refused on the way back: {e}", a.labels));
    assert!(
        p.invalid.is_empty(),
        "labels {:?}: {:?}",
        a.labels,
        p.invalid
    );
    assert_eq!(p.alerts.len(), 1);
    assert_eq!(p.alerts[0].labels, a.labels);
    assert_eq!(p.alerts[0].fingerprint, a.fingerprint);
    assert_eq!(p.alerts[0].fingerprint, model::fingerprint(&a.labels));
    if from_v2 {
        let mut raw = json!({ "labels": a.labels, "annotations": a.annotations });
        for (k, v) in [
            ("startsAt", &a.starts_at),
            ("endsAt", &a.ends_at),
            ("generatorURL", &a.generator_url),
        ] {
            if !v.is_empty() {
                raw[k] = json!(v);
            }
        }
        let body = serde_json::to_vec(&json!([raw])).expect("serialize the alert");
        let p = model::parse_v2(&body, now()).expect("own alert refused");
        assert_eq!(p.alerts.len(), 1, "{:?}", p.invalid);
        assert_eq!(&p.alerts[0], a);
    }
}

fn exercise(parsed: Result<model::Parsed, model::InvalidPayload>, from_v2: bool) {
    let Ok(parsed) = parsed else { return };
    for a in &parsed.alerts {
        round_trip_v2(a, from_v2);
        render_all(&alone(a));
    }
    if parsed.alerts.len() > 1 {
        render_all(&together(&parsed.alerts));
    }
}

fuzz_target!(|data: &[u8]| {
    exercise(model::parse_v2(data, now()), true);
    exercise(model::parse_webhook(data, now()), false);
});
