//! PagerDuty Events API v2: one incident per group. `trigger` while any alert of the group
//! fires (a later trigger with the same key updates the open incident, it does not page
//! again) and `resolve` when all have resolved, with a hash of the group key as
//! `dedup_key` so the resolve closes what the trigger opened.

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

/// Most alerts listed in `custom_details` (PagerDuty takes 512 KB per event).
const MAX_DETAILED: usize = 50;

/// The event for `n` (`routing_key` is filled in by the caller).
pub fn event(cfg: &PagerDutyConfig, n: Notification<'_>) -> Result<Value, DeliveryError> {
    let key = n.n.group_hash();
    if n.status() == Status::Resolved {
        return Ok(json!({
            "event_action": "resolve",
            "dedup_key": key,
        }));
    }
    let summary: String = render(cfg.summary_template.as_deref().unwrap_or(DEFAULT_TITLE), n)?
        .chars()
        .take(1024)
        .collect();
    let lead = n.lead();
    let common = n.n.common_labels();
    let source = common
        .get("member")
        .or_else(|| common.get("instance"))
        .or_else(|| common.get("cluster"))
        .cloned()
        .unwrap_or_else(|| "etcd-monitor".into());
    let firing: Vec<Value> = n
        .n
        .firing()
        .take(MAX_DETAILED)
        .map(|a| json!({ "labels": a.labels, "annotations": a.annotations, "starts_at": a.starts_at }))
        .collect();
    let resolved: Vec<Value> =
        n.n.resolved()
            .take(MAX_DETAILED)
            .map(|a| json!({ "labels": a.labels }))
            .collect();
    let severity =
        n.n.firing()
            .map(|a| (crate::engine::priority(&a.labels), severity(&a.labels)))
            .min()
            .map_or("error", |(_, s)| s);
    let mut e = json!({
        "event_action": "trigger",
        "dedup_key": key,
        "payload": {
            "summary": summary,
            "source": source,
            "severity": severity,
            "component": "etcd",
            "class": n.n.alertnames().join(", "),
            "custom_details": {
                "group_key": n.n.group_key,
                "group_labels": n.n.group_labels,
                "firing": firing,
                "resolved": resolved,
            },
        },
    });
    if let Some(a) = lead {
        if !a.starts_at.is_empty() {
            e["payload"]["timestamp"] = json!(a.starts_at);
        }
        if !a.generator_url.is_empty() {
            e["links"] = json!([{ "href": a.generator_url, "text": "Source" }]);
        }
    }
    if let Some(c) = common.get("cluster") {
        e["payload"]["group"] = json!(c);
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
    use crate::notify::fixtures::{group, pair};
    use common::secret::Secret;

    #[test]
    fn trigger_and_resolve_share_the_dedup_key() {
        let cfg = PagerDutyConfig {
            routing_key: Secret::new("key"),
            url: "http://127.0.0.1:1/v2/enqueue".into(),
            summary_template: None,
        };
        let firing = group(Status::Firing);
        let resolved = group(Status::Resolved);
        let t = event(
            &cfg,
            Notification {
                receiver: "oncall",
                n: &firing,
            },
        )
        .expect("trigger");
        let r = event(
            &cfg,
            Notification {
                receiver: "oncall",
                n: &resolved,
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

    #[test]
    fn a_group_is_one_incident() {
        let cfg = PagerDutyConfig {
            routing_key: Secret::new("key"),
            url: "http://127.0.0.1:1/v2/enqueue".into(),
            summary_template: None,
        };
        let g = pair();
        let t = event(
            &cfg,
            Notification {
                receiver: "oncall",
                n: &g,
            },
        )
        .expect("trigger");
        assert_eq!(t["event_action"], "trigger");
        assert_eq!(
            t["payload"]["source"], "prod",
            "the member differs: the cluster"
        );
        assert_eq!(t["payload"]["class"], "EtcdMemberDown, EtcdNoLeader");
        assert_eq!(
            t["payload"]["custom_details"]["firing"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        assert_eq!(
            t["payload"]["custom_details"]["resolved"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        let summary = t["payload"]["summary"].as_str().unwrap_or_default();
        assert!(summary.contains("[1 firing, 1 resolved]"), "{summary}");
    }
}
