//! Slack incoming webhooks: one message per group, a fallback `text` and blocks inside an
//! attachment coloured by severity (green when resolved). Slack answers 200 `ok`; 429
//! carries Retry-After.
//!
//! Everything that comes from alert data is escaped (`&`, `<`, `>`), so an annotation
//! cannot mention `<!channel>` or hide a link behind other text; only the links the relay
//! itself makes are markup.

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
    if n.status() == Status::Resolved {
        return "#2eb886";
    }
    let worst =
        n.n.firing()
            .map(|a| crate::engine::priority(&a.labels))
            .min();
    match worst {
        Some(0) => "#d00000",
        Some(1) | Some(2) => "#f2c744",
        Some(3) => "#439fe0",
        _ => "#a0a0a0",
    }
}

/// Escapes text for Slack's mrkdwn: the three characters it gives meaning to.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A link the relay makes: `<url|text>`, with `|` in the URL percent-encoded so the URL
/// cannot end early and the rest escaped.
fn link(url: &str, text: &str) -> String {
    format!("<{}|{}>", escape(&url.replace('|', "%7C")), escape(text))
}

/// Most alerts listed one per line in a message.
const MAX_LISTED: usize = 20;

/// The Slack message for `n`.
pub fn payload(cfg: &SlackConfig, n: Notification<'_>) -> Result<Value, DeliveryError> {
    let title = escape(&render(
        cfg.text_template.as_deref().unwrap_or(DEFAULT_TITLE),
        n,
    )?);
    let mut details = String::new();
    if n.n.alerts.len() == 1 {
        if let Some(d) = n.n.alerts[0].annotations.get("description") {
            details.push_str(&escape(d));
            details.push('\n');
        }
    } else {
        for a in n.n.alerts.iter().take(MAX_LISTED) {
            let what = a
                .annotations
                .get("summary")
                .or_else(|| a.annotations.get("description"))
                .map(String::as_str)
                .unwrap_or_else(|| a.name());
            let mark = if a.status == Status::Resolved {
                "resolved"
            } else {
                "firing"
            };
            details.push_str(&format!(
                "• _{mark}_ {}: {}\n",
                escape(a.name()),
                escape(what)
            ));
        }
        if n.n.alerts.len() > MAX_LISTED {
            details.push_str(&format!("… and {} more\n", n.n.alerts.len() - MAX_LISTED));
        }
    }
    let labels: Vec<String> =
        n.n.common_labels()
            .iter()
            .filter(|(k, _)| k.as_str() != "alertname")
            .map(|(k, v)| format!("`{}={}`", escape(k), escape(&v.replace('`', "'"))))
            .collect();
    let mut links = Vec::new();
    if let Some(r) = n.lead().and_then(|a| a.annotations.get("runbook_url")) {
        links.push(link(r, "Runbook"));
    }
    if let Some(a) = n.lead().filter(|a| !a.generator_url.is_empty()) {
        links.push(link(&a.generator_url, "Source"));
    }
    let mut blocks = vec![json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": format!("*{title}*\n{details}").trim_end() },
    })];
    if !labels.is_empty() {
        blocks.push(json!({
            "type": "context",
            "elements": [{ "type": "mrkdwn", "text": labels.join(" ") }],
        }));
    }
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
    use crate::notify::fixtures::{group, pair};
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
            let g = group(status);
            let p = payload(
                &cfg(),
                Notification {
                    receiver: "chat",
                    n: &g,
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
        let g = group(Status::Firing);
        let p = payload(
            &c,
            Notification {
                receiver: "chat",
                n: &g,
            },
        )
        .expect("payload");
        assert_eq!(p["text"], "m2 is firing");
    }

    /// `<!channel>` and a disguised link in alert data go out as text, not markup.
    #[test]
    fn alert_data_cannot_make_markup() {
        let mut g = pair();
        g.alerts[0].annotations.insert(
            "description".into(),
            "<!channel> see <https://evil.example|the docs> & more".into(),
        );
        g.alerts[0]
            .annotations
            .insert("runbook_url".into(), "https://r.example/a|fake>".into());
        let p = payload(
            &cfg(),
            Notification {
                receiver: "chat",
                n: &g,
            },
        )
        .expect("payload");
        let all = p.to_string();
        assert!(!all.contains("<!channel>"), "{all}");
        assert!(!all.contains("<https://evil.example"), "{all}");
        assert!(all.contains("&lt;!channel&gt;"), "{all}");
        assert!(all.contains("&amp;"), "{all}");
        assert!(
            all.contains("<https://r.example/a%7Cfake&gt;|Runbook>"),
            "{all}"
        );
        let text = p["attachments"][0]["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(text.contains("• _resolved_ EtcdNoLeader"), "{text}");
    }
}
