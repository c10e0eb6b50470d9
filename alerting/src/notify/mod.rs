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
use crate::model::{Alert, Status};

/// One notification: an alert, firing or resolved, for one receiver.
#[derive(Debug, Clone, Copy)]
pub struct Notification<'a> {
    pub receiver: &'a str,
    pub status: Status,
    pub alert: &'a Alert,
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

/// What templates see.
#[derive(Serialize)]
pub struct TemplateContext<'a> {
    pub receiver: &'a str,
    pub status: &'a str,
    pub labels: &'a crate::model::Labels,
    pub annotations: &'a crate::model::Labels,
    pub starts_at: &'a str,
    pub ends_at: &'a str,
    pub generator_url: &'a str,
    pub fingerprint: &'a str,
}

/// Renders `template` for `n`. Templates were checked at start, so an error here is a
/// runtime one (for example a filter failing on a value) and fails the delivery.
pub fn render(template: &str, n: Notification<'_>) -> Result<String, DeliveryError> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
    let ctx = TemplateContext {
        receiver: n.receiver,
        status: n.status.as_str(),
        labels: &n.alert.labels,
        annotations: &n.alert.annotations,
        starts_at: &n.alert.starts_at,
        ends_at: &n.alert.ends_at,
        generator_url: &n.alert.generator_url,
        fingerprint: &n.alert.fingerprint,
    };
    env.render_str(template, ctx)
        .map(|s| s.trim().to_owned())
        .map_err(|e| DeliveryError::permanent(format!("template: {e}")))
}

/// The one-line title every notifier starts from.
pub const DEFAULT_TITLE: &str = "{% if status == 'resolved' %}[RESOLVED]{% else %}[{{ labels.severity | default('firing') | upper }}]{% endif %} {{ labels.alertname }}{% if labels.member %} on {{ labels.member }}{% endif %}: {{ annotations.summary | default(annotations.description) | default('') }}";

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
    use crate::model::{fingerprint, Alert, Labels, Status};

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
}
