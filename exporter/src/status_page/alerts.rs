//! The firing alerts the page shows, read from the relay's `GET /api/v1/alerts`.
//!
//! That answer is `{"alerts": [...]}`, one object per firing alert: the alert as the relay
//! stores it (`fingerprint`, `labels`, `annotations`, `starts_at`, `ends_at`,
//! `generator_url`, `status`, `received_at_ms`) plus `receivers`, `silenced_by` and
//! `inhibited_by`. Silenced and inhibited alerts are left out: someone muted them on
//! purpose, and the page should show what still needs a person.

use serde_json::Value;

use super::FiringAlert;

/// Reads the relay's answer into the alerts to show, most severe first, then oldest
/// first. An answer without an `alerts` list is an error; an entry that is not an alert
/// object is skipped.
pub fn parse_relay_alerts(body: &Value) -> Result<Vec<FiringAlert>, String> {
    let list = body
        .get("alerts")
        .and_then(Value::as_array)
        .ok_or_else(|| "the relay's answer has no \"alerts\" list".to_owned())?;
    let mut out: Vec<FiringAlert> = list
        .iter()
        .filter(|a| a.get("status").and_then(Value::as_str).unwrap_or("firing") == "firing")
        .filter(|a| !non_empty(a.get("silenced_by")) && !non_empty(a.get("inhibited_by")))
        .filter_map(|a| {
            let labels = a.get("labels")?.as_object()?;
            let label = |k: &str| labels.get(k).and_then(Value::as_str).map(str::to_owned);
            let annotation = |k: &str| {
                a.get("annotations")
                    .and_then(|x| x.get(k))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            };
            Some(FiringAlert {
                name: label("alertname").unwrap_or_else(|| "(unnamed alert)".to_owned()),
                severity: label("severity").unwrap_or_else(|| "none".to_owned()),
                cluster: label("cluster").filter(|s| !s.is_empty()),
                member: label("member").filter(|s| !s.is_empty()),
                summary: annotation("summary"),
                starts_at: a
                    .get("starts_at")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (severity_rank(&a.severity), &a.starts_at, &a.name).cmp(&(
            severity_rank(&b.severity),
            &b.starts_at,
            &b.name,
        ))
    });
    Ok(out)
}

fn non_empty(v: Option<&Value>) -> bool {
    v.and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}

/// Lower is more severe, as the relay orders deliveries.
pub fn severity_rank(severity: &str) -> u8 {
    match severity {
        "critical" | "page" => 0,
        "error" => 1,
        "warning" => 2,
        "info" => 3,
        "none" => 5,
        _ => 4,
    }
}
