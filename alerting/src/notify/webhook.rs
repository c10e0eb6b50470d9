//! The generic webhook: POSTs the Alertmanager webhook payload (version 4), one call per
//! group, so consumers written for Alertmanager work unchanged; optional bearer token.

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::{post_json, DeliveryError, Notification, Notifier};
use crate::config::WebhookConfig;
use crate::model::Status;

pub struct Webhook {
    cfg: WebhookConfig,
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(cfg: WebhookConfig, http: reqwest::Client) -> Self {
        Webhook { cfg, http }
    }
}

/// Alertmanager's zero time, for `endsAt` of a firing alert.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The Alertmanager v4 payload for one notification.
pub fn payload(n: Notification<'_>) -> Value {
    let alerts: Vec<Value> =
        n.n.alerts
            .iter()
            .map(|a| {
                let ends_at = if a.ends_at.is_empty() || a.status == Status::Firing {
                    ZERO_TIME
                } else {
                    a.ends_at.as_str()
                };
                json!({
                    "status": a.status.as_str(),
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": a.starts_at,
                    "endsAt": ends_at,
                    "generatorURL": a.generator_url,
                    "fingerprint": a.fingerprint,
                })
            })
            .collect();
    json!({
        "version": "4",
        "groupKey": n.n.group_key,
        "truncatedAlerts": 0,
        "status": n.status().as_str(),
        "receiver": n.receiver,
        "groupLabels": n.n.group_labels,
        "commonLabels": n.n.common_labels(),
        "commonAnnotations": n.n.common_annotations(),
        "externalURL": "",
        "alerts": alerts,
    })
}

impl Notifier for Webhook {
    fn send<'a>(&'a self, n: Notification<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let token = self.cfg.bearer_token.as_ref().map(|t| t.expose());
            post_json(&self.http, self.cfg.url.expose(), &payload(n), token).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::fixtures::{group, pair};

    #[test]
    fn payload_is_alertmanager_v4() {
        let g = group(Status::Firing);
        let p = payload(Notification {
            receiver: "hook",
            n: &g,
        });
        insta::assert_snapshot!(serde_json::to_string_pretty(&p).unwrap_or_default());
    }

    #[test]
    fn a_group_is_one_call_with_common_labels() {
        let g = pair();
        let p = payload(Notification {
            receiver: "hook",
            n: &g,
        });
        assert_eq!(p["groupKey"], g.group_key);
        assert_eq!(p["groupLabels"]["cluster"], "prod");
        assert_eq!(p["commonLabels"]["cluster"], "prod");
        assert!(p["commonLabels"].get("alertname").is_none());
        assert_eq!(p["alerts"].as_array().map(Vec::len), Some(2));
        assert_eq!(p["alerts"][1]["status"], "resolved");
        assert_eq!(p["alerts"][0]["endsAt"], ZERO_TIME);
    }
}
