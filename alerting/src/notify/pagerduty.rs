//! PagerDuty Events API v2: `trigger` while firing and `resolve` when resolved, with the
//! alert's fingerprint as `dedup_key` so the resolve closes what the trigger opened.

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::{post_json, render, DeliveryError, Notification, Notifier, DEFAULT_TITLE};
use crate::config::PagerDutyConfig;
use crate::model::Status;

pub struct PagerDuty {
    cfg: PagerDutyConfig,
    http: reqwest::Client,
}

impl PagerDuty {
    pub fn new(cfg: PagerDutyConfig, http: reqwest::Client) -> Self {
        PagerDuty { cfg, http }
    }
}

/// PagerDuty's severities: critical, error, warning, info.
fn severity(labels: &crate::model::Labels) -> &'static str {
    match labels.get("severity").map(String::as_str) {
        Some("critical") | Some("page") => "critical",
        Some("warning") => "warning",
        Some("info") | Some("none") => "info",
        _ => "error",
    }
}

/// The event for `n` (`routing_key` is filled in by the caller).
pub fn event(cfg: &PagerDutyConfig, n: Notification<'_>) -> Result<Value, DeliveryError> {
    let a = n.alert;
    if n.status == Status::Resolved {
        return Ok(json!({
            "event_action": "resolve",
            "dedup_key": a.fingerprint,
        }));
    }
    let summary: String = render(cfg.summary_template.as_deref().unwrap_or(DEFAULT_TITLE), n)?
        .chars()
        .take(1024)
        .collect();
    let source = a
        .labels
        .get("member")
        .or_else(|| a.labels.get("instance"))
        .cloned()
        .unwrap_or_else(|| "etcd-monitor".into());
    let mut e = json!({
        "event_action": "trigger",
        "dedup_key": a.fingerprint,
        "payload": {
            "summary": summary,
            "source": source,
            "severity": severity(&a.labels),
            "component": "etcd",
            "class": a.name(),
            "custom_details": { "labels": a.labels, "annotations": a.annotations },
        },
    });
    if !a.starts_at.is_empty() {
        e["payload"]["timestamp"] = json!(a.starts_at);
    }
    if let Some(c) = a.labels.get("cluster") {
        e["payload"]["group"] = json!(c);
    }
    if !a.generator_url.is_empty() {
        e["links"] = json!([{ "href": a.generator_url, "text": "Source" }]);
    }
    Ok(e)
}

impl Notifier for PagerDuty {
    fn send<'a>(&'a self, n: Notification<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let mut body = event(&self.cfg, n)?;
            body["routing_key"] = json!(self.cfg.routing_key.expose());
            post_json(&self.http, &self.cfg.url, &body, None).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::fixtures::alert;
    use common::secret::Secret;

    #[test]
    fn trigger_and_resolve_share_the_dedup_key() {
        let cfg = PagerDutyConfig {
            routing_key: Secret::new("key"),
            url: "http://127.0.0.1:1/v2/enqueue".into(),
            summary_template: None,
        };
        let firing = alert(Status::Firing);
        let resolved = alert(Status::Resolved);
        let t = event(
            &cfg,
            Notification {
                receiver: "oncall",
                status: Status::Firing,
                alert: &firing,
            },
        )
        .expect("trigger");
        let r = event(
            &cfg,
            Notification {
                receiver: "oncall",
                status: Status::Resolved,
                alert: &resolved,
            },
        )
        .expect("resolve");
        assert_eq!(t["dedup_key"], r["dedup_key"]);
        insta::assert_snapshot!(
            "pagerduty_trigger",
            serde_json::to_string_pretty(&t).unwrap_or_default()
        );
        insta::assert_snapshot!(
            "pagerduty_resolve",
            serde_json::to_string_pretty(&r).unwrap_or_default()
        );
    }
}
