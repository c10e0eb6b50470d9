//! The generic webhook: POSTs the Alertmanager webhook payload (version 4) with the one
//! alert, so consumers written for Alertmanager work unchanged; optional bearer token.

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::{post_json, DeliveryError, Notification, Notifier};
use crate::config::WebhookConfig;

pub struct Webhook {
    cfg: WebhookConfig,
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(cfg: WebhookConfig, http: reqwest::Client) -> Self {
        Webhook { cfg, http }
    }
}

/// The Alertmanager v4 payload for one notification.
pub fn payload(n: Notification<'_>) -> Value {
    let a = n.alert;
    let ends_at = if a.ends_at.is_empty() || n.status == crate::model::Status::Firing {
        "0001-01-01T00:00:00Z"
    } else {
        a.ends_at.as_str()
    };
    let group_labels = json!({ "alertname": a.name() });
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname={:?}}}", a.name()),
        "truncatedAlerts": 0,
        "status": n.status.as_str(),
        "receiver": n.receiver,
        "groupLabels": group_labels,
        "commonLabels": a.labels,
        "commonAnnotations": a.annotations,
        "externalURL": "",
        "alerts": [{
            "status": n.status.as_str(),
            "labels": a.labels,
            "annotations": a.annotations,
            "startsAt": a.starts_at,
            "endsAt": ends_at,
            "generatorURL": a.generator_url,
            "fingerprint": a.fingerprint,
        }],
    })
}

impl Notifier for Webhook {
    fn send<'a>(&'a self, n: Notification<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let token = self.cfg.bearer_token.as_ref().map(|t| t.expose());
            post_json(&self.http, &self.cfg.url, &payload(n), token).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use crate::notify::fixtures::alert;

    #[test]
    fn payload_is_alertmanager_v4() {
        let a = alert(Status::Firing);
        let p = payload(Notification {
            receiver: "hook",
            status: Status::Firing,
            alert: &a,
        });
        insta::assert_snapshot!(serde_json::to_string_pretty(&p).unwrap_or_default());
    }
}
