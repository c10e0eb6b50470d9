//! Routing alerts to receivers by their labels, and grouping them: routes are tried in
//! order, the first that matches wins unless it says `continue`; a route without matchers
//! matches all. Each route groups the alerts it takes by its `group_by` labels; a group is
//! one notification per receiver, as in Alertmanager.

use std::time::Duration;

use crate::matchers::{matchers_match, Matcher};
use crate::model::Labels;

/// Which labels make an alert's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// `['...']`: every label, so every alert is alone in its group.
    All,
    /// These labels (absent ones count as empty); `[]` puts all of a route's alerts in one
    /// group.
    Labels(Vec<String>),
}

/// Alertmanager's timers of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    pub by: GroupBy,
    /// How long a new group waits for more alerts before its first notification.
    pub wait: Duration,
    /// How long a group that has notified waits before notifying what changed.
    pub interval: Duration,
    /// How long before a group whose alerts still fire is notified again.
    pub repeat: Duration,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub matchers: Vec<Matcher>,
    /// Indexes into the receiver list.
    pub receivers: Vec<usize>,
    pub continue_: bool,
    pub group: GroupSettings,
    /// Stable identity of the route in group keys: its matchers (and its position among
    /// routes with the same matchers), so that a reload that reorders routes keeps keys.
    pub key: String,
}

impl Route {
    /// The labels that name `labels`' group on this route.
    pub fn group_labels(&self, labels: &Labels) -> Labels {
        match &self.group.by {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => names
                .iter()
                .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone())))
                .collect(),
        }
    }

    /// The group key, in Alertmanager's form: `{route matchers}:{group labels}`.
    pub fn group_key(&self, group_labels: &Labels) -> String {
        let labels: Vec<String> = group_labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{}:{{{}}}", self.key, labels.join(", "))
    }
}

#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Builds the router, giving each route its key.
    pub fn new(mut routes: Vec<Route>) -> Self {
        let mut seen: Vec<String> = Vec::new();
        for r in &mut routes {
            let ms: Vec<String> = r.matchers.iter().map(ToString::to_string).collect();
            let base = format!("{{{}}}", ms.join(","));
            let n = seen.iter().filter(|k| **k == base).count();
            seen.push(base.clone());
            r.key = if n == 0 { base } else { format!("{base}#{n}") };
        }
        Router { routes }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The indexes of the routes that take `labels`, in order.
    pub fn matching(&self, labels: &Labels) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            if matchers_match(&r.matchers, labels) {
                out.push(i);
                if !r.continue_ {
                    break;
                }
            }
        }
        out
    }

    /// The receivers for `labels`, each once, in route order.
    pub fn route(&self, labels: &Labels) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for i in self.matching(labels) {
            for &r in &self.routes[i].receivers {
                if !out.contains(&r) {
                    out.push(r);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matchers::parse_matcher;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn settings(by: GroupBy) -> GroupSettings {
        GroupSettings {
            by,
            wait: Duration::ZERO,
            interval: Duration::ZERO,
            repeat: Duration::from_secs(300),
        }
    }

    fn route(ms: &[&str], receivers: Vec<usize>, continue_: bool, by: GroupBy) -> Route {
        Route {
            matchers: ms
                .iter()
                .map(|m| parse_matcher(m).expect("matcher"))
                .collect(),
            receivers,
            continue_,
            group: settings(by),
            key: String::new(),
        }
    }

    fn router() -> Router {
        Router::new(vec![
            route(
                &["severity=\"critical\""],
                vec![0, 1],
                false,
                GroupBy::Labels(vec!["cluster".into()]),
            ),
            route(
                &["alertname=~\"Etcd.*Disk.*\""],
                vec![2],
                true,
                GroupBy::All,
            ),
            route(&[], vec![3], false, GroupBy::All),
        ])
    }

    #[test]
    fn first_match_wins_continue_fans_out_default_catches_the_rest() {
        let r = router();
        assert_eq!(
            r.route(&labels(&[
                ("severity", "critical"),
                ("alertname", "EtcdDiskSlow")
            ])),
            [0, 1]
        );
        assert_eq!(
            r.route(&labels(&[
                ("severity", "warning"),
                ("alertname", "EtcdWalDiskSlow")
            ])),
            [2, 3]
        );
        assert_eq!(r.route(&labels(&[("alertname", "EtcdNoLeader")])), [3]);
        // Regexes are anchored.
        assert_eq!(r.route(&labels(&[("alertname", "XEtcdDisk")])), [3]);
    }

    #[test]
    fn group_keys_follow_group_by() {
        let r = router();
        let a = labels(&[
            ("alertname", "EtcdNoLeader"),
            ("severity", "critical"),
            ("cluster", "prod"),
        ]);
        let b = labels(&[
            ("alertname", "EtcdQuorumLost"),
            ("severity", "critical"),
            ("cluster", "prod"),
        ]);
        let c = labels(&[
            ("alertname", "EtcdQuorumLost"),
            ("severity", "critical"),
            ("cluster", "test"),
        ]);
        let crit = &r.routes()[0];
        let key = |l: &Labels| crit.group_key(&crit.group_labels(l));
        assert_eq!(key(&a), key(&b), "one cluster, one group");
        assert_ne!(key(&a), key(&c));
        assert_eq!(key(&a), "{severity=\"critical\"}:{cluster=\"prod\"}");
        let all = &r.routes()[2];
        assert_ne!(
            all.group_key(&all.group_labels(&a)),
            all.group_key(&all.group_labels(&b)),
            "['...'] keeps every alert alone"
        );
    }

    #[test]
    fn routes_with_the_same_matchers_get_distinct_keys() {
        let r = Router::new(vec![
            route(&["a=\"1\""], vec![0], true, GroupBy::All),
            route(&["a=\"1\""], vec![1], false, GroupBy::All),
        ]);
        assert_ne!(r.routes()[0].key, r.routes()[1].key);
    }
}
