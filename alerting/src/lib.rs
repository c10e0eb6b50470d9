//! etcd-monitor-relay: receives alerts from Prometheus (Alertmanager's ingest API) and
//! Alertmanager webhooks, deduplicates and routes them, and delivers them durably to
//! Slack, PagerDuty, email, webhooks and the console.

pub mod config;
pub mod dedup;
pub mod model;
pub mod routing;
pub mod store;
