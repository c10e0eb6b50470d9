//! Notifiers, one module each behind [`Notifier`]: Slack, PagerDuty, email, webhook and
//! console. A notifier turns one notification into one request and classifies the
//! outcome: delivered, worth retrying (transport errors, 5xx, 429 with its Retry-After),
//! or permanently failed (other 4xx). Message texts come from minijinja templates that a
//! receiver's config can override.

pub mod console;
pub mod email;
pub mod pagerduty;
pub mod slack;
pub mod webhook;

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::config::{Receiver, ReceiverKind};
use crate::model::{Alert, GroupNotification, Labels, Status};

/// One notification: a group of alerts, firing or resolved, for one receiver.
#[derive(Debug, Clone, Copy)]
pub struct Notification<'a> {
    pub receiver: &'a str,
    pub n: &'a GroupNotification,
}

impl<'a> Notification<'a> {
    pub fn status(&self) -> Status {
        self.n.status
    }

    /// The alert that speaks for the group: the first firing one, else the first.
    pub fn lead(&self) -> Option<&'a Alert> {
        self.n.firing().next().or_else(|| self.n.alerts.first())
    }
}

/// Why a delivery did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("{reason}")]
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    #[error("{reason}")]
    Permanent { reason: String },
}

impl DeliveryError {
    pub fn retryable(reason: impl Into<String>) -> Self {
        DeliveryError::Retryable {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        DeliveryError::Permanent {
            reason: reason.into(),
        }
    }
}

/// Delivers notifications to one receiver.
pub trait Notifier: Send + Sync {
    fn send<'a>(&'a self, n: Notification<'a>) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// Builds the notifier of `receiver`.
pub fn build(receiver: &Receiver, http: &reqwest::Client) -> Result<Box<dyn Notifier>, String> {
    Ok(match &receiver.kind {
        ReceiverKind::Slack(c) => Box::new(slack::Slack::new(c.clone(), http.clone())),
        ReceiverKind::PagerDuty(c) => Box::new(pagerduty::PagerDuty::new(c.clone(), http.clone())),
        ReceiverKind::Email(c) => Box::new(email::Email::new(c.clone())?),
        ReceiverKind::Webhook(c) => Box::new(webhook::Webhook::new(c.clone(), http.clone())),
        ReceiverKind::Console => Box::new(console::Console),
    })
}

/// One alert as templates see it.
#[derive(Serialize)]
pub struct TemplateAlert<'a> {
    pub status: &'a str,
    pub labels: &'a Labels,
    pub annotations: &'a Labels,
    pub starts_at: &'a str,
    pub ends_at: &'a str,
    pub generator_url: &'a str,
    pub fingerprint: &'a str,
}

impl<'a> From<&'a Alert> for TemplateAlert<'a> {
    fn from(a: &'a Alert) -> Self {
        TemplateAlert {
            status: a.status.as_str(),
            labels: &a.labels,
            annotations: &a.annotations,
            starts_at: &a.starts_at,
            ends_at: &a.ends_at,
            generator_url: &a.generator_url,
            fingerprint: &a.fingerprint,
        }
    }
}

/// What templates see: the group (`alerts`, `group_labels`, counts) and, for templates
/// written for one alert, `labels` and `annotations` shared by every alert of the group
/// (an alert alone in its group shares all of its own), `summary` (shared, or the lead
/// alert's) and the lead alert's times, URL and fingerprint.
#[derive(Serialize)]
pub struct TemplateContext<'a> {
    pub receiver: &'a str,
    pub status: &'a str,
    pub labels: Labels,
    pub annotations: Labels,
    pub group_labels: &'a Labels,
    pub alerts: Vec<TemplateAlert<'a>>,
    pub alertnames: String,
    pub firing_count: usize,
    pub resolved_count: usize,
    pub summary: String,
    pub starts_at: &'a str,
    pub ends_at: &'a str,
    pub generator_url: &'a str,
    pub fingerprint: &'a str,
}

impl<'a> TemplateContext<'a> {
    pub fn new(n: Notification<'a>) -> Self {
        let lead = n.lead();
        let annotations = n.n.common_annotations();
        let summary = annotations
            .get("summary")
            .or_else(|| lead.and_then(|a| a.annotations.get("summary")))
            .or_else(|| lead.and_then(|a| a.annotations.get("description")))
            .cloned()
            .unwrap_or_default();
        TemplateContext {
            receiver: n.receiver,
            status: n.status().as_str(),
            labels: n.n.common_labels(),
            annotations,
            group_labels: &n.n.group_labels,
            alerts: n.n.alerts.iter().map(TemplateAlert::from).collect(),
            alertnames: n.n.alertnames().join(", "),
            firing_count: n.n.firing().count(),
            resolved_count: n.n.resolved().count(),
            summary,
            starts_at: lead.map_or("", |a| a.starts_at.as_str()),
            ends_at: lead.map_or("", |a| a.ends_at.as_str()),
            generator_url: lead.map_or("", |a| a.generator_url.as_str()),
            fingerprint: lead.map_or("", |a| a.fingerprint.as_str()),
        }
    }
}

/// Renders `template` for `n`. Templates were checked at start, so an error here is a
/// runtime one (for example a filter failing on a value) and fails the delivery.
pub fn render(template: &str, n: Notification<'_>) -> Result<String, DeliveryError> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
    env.render_str(template, TemplateContext::new(n))
        .map(|s| s.trim().to_owned())
        .map_err(|e| DeliveryError::permanent(format!("template: {e}")))
}

/// The one-line title every notifier starts from: `[CRITICAL] EtcdNoLeader on m1: ...`,
/// with the count when the group holds several alerts.
pub const DEFAULT_TITLE: &str = "{% if status == 'resolved' %}[RESOLVED]{% else %}[{{ labels.severity | default('firing') | upper }}]{% endif %} {{ labels.alertname | default(alertnames) }}{% if labels.member %} on {{ labels.member }}{% endif %}{% if labels.cluster %} ({{ labels.cluster }}){% endif %}: {{ summary }}{% if alerts | length > 1 %} [{{ firing_count }} firing{% if resolved_count %}, {{ resolved_count }} resolved{% endif %}]{% endif %}";

/// `Retry-After` in seconds (the HTTP-date form is not used by Slack or PagerDuty).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}

/// POSTs JSON and classifies the answer. Errors never contain the URL (a Slack webhook
/// URL is a secret).
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    bearer: Option<&str>,
) -> Result<(), DeliveryError> {
    let mut req = http.post(url).json(body);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.map_err(|e| {
        DeliveryError::retryable(format!(
            "request failed: {}",
            common::etcd::error_chain(&e.without_url())
        ))
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let wait = retry_after(&resp);
    let text: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    let reason = format!("HTTP {status}: {}", text.trim());
    if status.as_u16() == 429 || status.is_server_error() {
        Err(DeliveryError::Retryable {
            reason,
            retry_after: wait,
        })
    } else {
        Err(DeliveryError::permanent(reason))
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::model::{fingerprint, Alert, GroupNotification, Labels, Status};

    /// A typical etcd alert.
    pub fn alert(status: Status) -> Alert {
        let labels: Labels = [
            ("alertname", "EtcdMemberDown"),
            ("severity", "critical"),
            ("member", "m2"),
            ("cluster", "prod"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let annotations: Labels = [
            ("summary", "etcd member m2 is down"),
            ("description", "m2 has not answered for 1m"),
            ("runbook_url", "https://runbooks.example/EtcdMemberDown"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Alert {
            fingerprint: fingerprint(&labels),
            labels,
            annotations,
            starts_at: "2027-01-15T08:00:00Z".into(),
            ends_at: if status == Status::Resolved {
                "2027-01-15T08:20:00Z".into()
            } else {
                "2027-01-15T09:00:00Z".into()
            },
            generator_url: "http://prometheus:9090/graph?g0.expr=up".into(),
            status,
        }
    }

    /// That alert alone in its group.
    pub fn group(status: Status) -> GroupNotification {
        let a = alert(status);
        GroupNotification {
            group_key: format!("{{}}:{{alertname=\"{}\"}}", a.name()),
            group_labels: [("alertname".to_owned(), a.name().to_owned())].into(),
            status,
            alerts: vec![a],
        }
    }

    /// Two alerts of one cluster grouped by `cluster`, the second resolved.
    pub fn pair() -> GroupNotification {
        let first = alert(Status::Firing);
        let mut second = alert(Status::Resolved);
        second
            .labels
            .insert("alertname".into(), "EtcdNoLeader".into());
        second.labels.insert("member".into(), "m3".into());
        second.annotations.insert(
            "summary".into(),
            "no leader <!channel> & <https://evil.example|click>".into(),
        );
        second.fingerprint = fingerprint(&second.labels);
        GroupNotification {
            group_key: "{severity=\"critical\"}:{cluster=\"prod\"}".into(),
            group_labels: [("cluster".to_owned(), "prod".to_owned())].into(),
            status: Status::Firing,
            alerts: vec![first, second],
        }
    }
}
