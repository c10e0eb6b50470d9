//! Slack incoming webhooks: a fallback `text` and blocks inside an attachment coloured by
//! severity (green when resolved). Slack answers 200 `ok`; 429 carries Retry-After.

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::{post_json, render, DeliveryError, Notification, Notifier, DEFAULT_TITLE};
use crate::config::SlackConfig;
use crate::model::Status;

pub struct Slack {
    cfg: SlackConfig,
    http: reqwest::Client,
}

impl Slack {
    pub fn new(cfg: SlackConfig, http: reqwest::Client) -> Self {
        Slack { cfg, http }
    }
}

fn colour(n: Notification<'_>) -> &'static str {
    if n.status == Status::Resolved {
        return "#2eb886";
    }
    match n.alert.labels.get("severity").map(String::as_str) {
        Some("critical") => "#d00000",
        Some("warning") => "#f2c744",
        Some("info") => "#439fe0",
        _ => "#a0a0a0",
    }
}

/// The Slack message for `n`.
pub fn payload(cfg: &SlackConfig, n: Notification<'_>) -> Result<Value, DeliveryError> {
    let title = render(cfg.text_template.as_deref().unwrap_or(DEFAULT_TITLE), n)?;
    let a = n.alert;
    let mut details = String::new();
    if let Some(d) = a.annotations.get("description") {
        details.push_str(d);
        details.push('\n');
    }
    let labels: Vec<String> = a
        .labels
        .iter()
        .filter(|(k, _)| k.as_str() != "alertname")
        .map(|(k, v)| format!("`{k}={v}`"))
        .collect();
    let mut links = Vec::new();
    if let Some(r) = a.annotations.get("runbook_url") {
        links.push(format!("<{r}|Runbook>"));
    }
    if !a.generator_url.is_empty() {
        links.push(format!("<{}|Source>", a.generator_url));
    }
    let mut blocks = vec![json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": format!("*{title}*\n{details}").trim_end() },
    })];
    blocks.push(json!({
        "type": "context",
        "elements": [{ "type": "mrkdwn", "text": labels.join(" ") }],
    }));
    if !links.is_empty() {
        blocks.push(json!({
            "type": "context",
            "elements": [{ "type": "mrkdwn", "text": links.join(" · ") }],
        }));
    }
    let mut p = json!({
        "text": title,
        "attachments": [{ "color": colour(n), "blocks": blocks }],
    });
    if let Some(ch) = &cfg.channel {
        p["channel"] = json!(ch);
    }
    Ok(p)
}

impl Notifier for Slack {
    fn send<'a>(&'a self, n: Notification<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let body = payload(&self.cfg, n)?;
            post_json(&self.http, self.cfg.webhook_url.expose(), &body, None).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::fixtures::alert;
    use common::secret::Secret;

    fn cfg() -> SlackConfig {
        SlackConfig {
            webhook_url: Secret::new("http://127.0.0.1:1/hook"),
            channel: Some("#etcd".into()),
            text_template: None,
        }
    }

    #[test]
    fn firing_and_resolved_messages() {
        for status in [Status::Firing, Status::Resolved] {
            let a = alert(status);
            let p = payload(
                &cfg(),
                Notification {
                    receiver: "chat",
                    status,
                    alert: &a,
                },
            )
            .expect("payload");
            insta::assert_snapshot!(
                format!("slack_{}", status.as_str()),
                serde_json::to_string_pretty(&p).unwrap_or_default()
            );
        }
    }

    #[test]
    fn a_custom_template_is_used() {
        let mut c = cfg();
        c.text_template = Some("{{ labels.member }} is {{ status }}".into());
        let a = alert(Status::Firing);
        let p = payload(
            &c,
            Notification {
                receiver: "chat",
                status: Status::Firing,
                alert: &a,
            },
        )
        .expect("payload");
        assert_eq!(p["text"], "m2 is firing");
    }
}
