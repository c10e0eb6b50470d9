//! Routing alerts to receivers by their labels: routes are tried in order, the first
//! that matches wins unless it says `continue`; a route without matchers matches all.

use crate::model::Labels;

#[derive(Debug, Clone)]
pub enum Matcher {
    Equal(String, String),
    /// Anchored: the whole value must match.
    Regex(String, regex::Regex),
}

impl Matcher {
    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Matcher::Equal(k, v) => labels.get(k).is_some_and(|x| x == v),
            Matcher::Regex(k, re) => re.is_match(labels.get(k).map_or("", String::as_str)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub matchers: Vec<Matcher>,
    /// Indexes into the receiver list.
    pub receivers: Vec<usize>,
    pub continue_: bool,
}

#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(routes: Vec<Route>) -> Self {
        Router { routes }
    }

    /// The receivers for `labels`, each once, in route order.
    pub fn route(&self, labels: &Labels) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for r in &self.routes {
            if r.matchers.iter().all(|m| m.matches(labels)) {
                for &i in &r.receivers {
                    if !out.contains(&i) {
                        out.push(i);
                    }
                }
                if !r.continue_ {
                    break;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn router() -> Router {
        Router::new(vec![
            Route {
                matchers: vec![Matcher::Equal("severity".into(), "critical".into())],
                receivers: vec![0, 1],
                continue_: false,
            },
            Route {
                matchers: vec![Matcher::Regex(
                    "alertname".into(),
                    regex::Regex::new("^(?:Etcd.*Disk.*)$").expect("re"),
                )],
                receivers: vec![2],
                continue_: true,
            },
            Route {
                matchers: vec![],
                receivers: vec![3],
                continue_: false,
            },
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
}
