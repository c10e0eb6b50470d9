//! The relay's own metrics (prefix `etcd_monitor_relay_`). The registry is built once;
//! the metrics are atomics updated by the ingest handlers and the workers.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverLabel {
    pub receiver: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub receiver: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 9 hours: deliveries can wait for retries.
    Histogram::new(exponential_buckets(0.001, 4.0, 13))
}

#[derive(Clone)]
pub struct Metrics {
    pub received: Family<EndpointLabel, Counter>,
    pub rejected: Family<EndpointLabel, Counter>,
    pub deduplicated: Counter,
    pub notifications: Family<OutcomeLabels, Counter>,
    pub queue_depth: Family<ReceiverLabel, Gauge>,
    pub delivery_latency: Family<ReceiverLabel, Histogram, fn() -> Histogram>,
    pub superseded: Counter,
    pub quarantined: Counter,
    pub store_healthy: Gauge,
    pub alerts: Gauge,
    pub reload_success: Gauge,
    pub reloads: Family<OutcomeOnly, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeOnly {
    pub outcome: String,
}

impl Metrics {
    pub fn new(registry: &mut Registry, receivers: &[String]) -> Self {
        let m = Metrics {
            received: Family::default(),
            rejected: Family::default(),
            deduplicated: Counter::default(),
            notifications: Family::default(),
            queue_depth: Family::default(),
            delivery_latency: Family::new_with_constructor(latency_histogram),
            superseded: Counter::default(),
            quarantined: Counter::default(),
            store_healthy: Gauge::default(),
            alerts: Gauge::default(),
            reload_success: Gauge::default(),
            reloads: Family::default(),
        };
        m.store_healthy.set(1);
        m.reload_success.set(1);
        for outcome in ["success", "failure"] {
            let _ = m.reloads.get_or_create(&OutcomeOnly {
                outcome: outcome.into(),
            });
        }
        registry.register(
            "etcd_monitor_relay_notifications_superseded",
            "Queued notifications replaced by a newer one of the same group before they went out",
            m.superseded.clone(),
        );
        registry.register(
            "etcd_monitor_relay_records_quarantined",
            "Unreadable records moved out of the way (corrupt, or from a newer relay)",
            m.quarantined.clone(),
        );
        registry.register(
            "etcd_monitor_relay_store_healthy",
            "1 while the data directory accepts writes, 0 after a failed write until it recovers",
            m.store_healthy.clone(),
        );
        registry.register(
            "etcd_monitor_relay_alerts",
            "Alerts held: firing, and resolved ones not yet notified",
            m.alerts.clone(),
        );
        registry.register(
            "etcd_monitor_relay_config_last_reload_successful",
            "1 if the last configuration reload succeeded",
            m.reload_success.clone(),
        );
        registry.register(
            "etcd_monitor_relay_config_reloads",
            "Configuration reloads (SIGHUP or POST /-/reload) by outcome",
            m.reloads.clone(),
        );
        registry.register(
            "etcd_monitor_relay_alerts_received",
            "Alerts accepted, by ingest endpoint",
            m.received.clone(),
        );
        registry.register(
            "etcd_monitor_relay_requests_rejected",
            "Ingest requests refused as invalid, by endpoint",
            m.rejected.clone(),
        );
        registry.register(
            "etcd_monitor_relay_notifications_deduplicated",
            "Notifications not sent because the receiver was already told",
            m.deduplicated.clone(),
        );
        registry.register(
            "etcd_monitor_relay_notifications",
            "Delivery attempts by receiver and outcome (delivered, retried, failed)",
            m.notifications.clone(),
        );
        registry.register(
            "etcd_monitor_relay_queue_depth",
            "Notifications waiting in the outbox, by receiver",
            m.queue_depth.clone(),
        );
        registry.register(
            "etcd_monitor_relay_delivery_latency_seconds",
            "Time from accepting an alert to delivering its notification",
            m.delivery_latency.clone(),
        );
        // Known label values from the start, at 0, so that rates see the first event.
        for endpoint in crate::api::ENDPOINTS {
            let l = EndpointLabel {
                endpoint: (*endpoint).to_owned(),
            };
            let _ = m.received.get_or_create(&l);
            let _ = m.rejected.get_or_create(&l);
        }
        m.add_receivers(receivers);
        m
    }

    /// Creates the per-receiver series at 0, so that rates see the first event.
    pub fn add_receivers(&self, receivers: &[String]) {
        for r in receivers {
            let l = ReceiverLabel {
                receiver: r.clone(),
            };
            self.queue_depth.get_or_create(&l).set(0);
            let _ = self.delivery_latency.get_or_create(&l);
            for outcome in ["delivered", "retried", "failed"] {
                let _ = self.notifications.get_or_create(&OutcomeLabels {
                    receiver: r.clone(),
                    outcome: outcome.into(),
                });
            }
        }
    }

    fn outcome(&self, receiver: &str, outcome: &str) {
        self.notifications
            .get_or_create(&OutcomeLabels {
                receiver: receiver.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn delivered(&self, receiver: &str, latency: Duration) {
        self.outcome(receiver, "delivered");
        self.delivery_latency
            .get_or_create(&ReceiverLabel {
                receiver: receiver.to_owned(),
            })
            .observe(latency.as_secs_f64());
    }

    pub fn retried(&self, receiver: &str) {
        self.outcome(receiver, "retried");
    }

    pub fn failed(&self, receiver: &str) {
        self.outcome(receiver, "failed");
    }

    pub fn set_queue_depth(&self, receiver: &str, n: i64) {
        self.queue_depth
            .get_or_create(&ReceiverLabel {
                receiver: receiver.to_owned(),
            })
            .set(n);
    }
}
