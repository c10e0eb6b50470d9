//! Config: any text as the relay's YAML file. Errors are fine; a panic or a hang is not
//! (a bad file at a SIGHUP reload must leave the running relay alone). A valid config is
//! then used as the relay uses it: its status summary, routing, grouping and inhibition.

#![no_main]

use std::path::Path;

use alerting::config;
use alerting::inhibit::Inhibitor;
use alerting::model::{fingerprint, Alert, Labels, Status};
use libfuzzer_sys::fuzz_target;

fn alert(pairs: &[(&str, &str)]) -> Alert {
    let labels: Labels = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Alert {
        fingerprint: fingerprint(&labels),
        labels,
        annotations: Labels::new(),
        starts_at: String::new(),
        ends_at: String::new(),
        generator_url: String::new(),
        status: Status::Firing,
    }
}

fuzz_target!(
    init: {
        // What alerting/relay.yml (a seed) reads from the environment, so that it and its
        // mutations get past secret loading into routes and inhibit rules.
        for (k, v) in [
            ("HEARTBEAT_URL", "https://hc-ping.example/0000"),
            ("PAGERDUTY_ROUTING_KEY", "fuzz-routing-key"),
            ("SLACK_WEBHOOK_URL", "https://hooks.slack.example/services/T/B/X"),
        ] {
            std::env::set_var(k, v);
        }
    },
    |data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Ok(cfg) = config::parse(Path::new("relay.yml"), text) else {
            return;
        };
        let _ = cfg.summary();
        let alerts = [
            alert(&[("alertname", "EtcdQuorumLost"), ("severity", "critical"), ("cluster", "prod"), ("instance", "x:9")]),
            alert(&[("alertname", "EtcdMemberDown"), ("severity", "critical"), ("cluster", "prod"), ("instance", "x:9"), ("member", "m1")]),
            alert(&[("alertname", "EtcdSlowWalFsync"), ("severity", "warning"), ("member", "m2")]),
            alert(&[("alertname", "EtcdMonitorHeartbeat"), ("severity", "none")]),
            alert(&[("a", "")]),
        ];
        for a in &alerts {
            for name in cfg.receivers_for(a) {
                assert!(cfg.receivers.iter().any(|r| r.name == name));
            }
            for i in cfg.router.matching(&a.labels) {
                let route = &cfg.router.routes()[i];
                let _ = route.group_key(&route.group_labels(&a.labels));
            }
        }
        let inhibitor = Inhibitor::new(&cfg.inhibit_rules, alerts.iter());
        for a in &alerts {
            let _ = inhibitor.inhibited_by(a);
        }
    }
);
