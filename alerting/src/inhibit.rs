//! Inhibition, as Alertmanager's `inhibit_rules`: a firing alert that matches a rule's
//! source matchers mutes the firing alerts that match its target matchers and carry the
//! same values of the `equal` labels (absent on both sides counts as equal). An alert
//! never inhibits itself.

use std::collections::HashMap;

use crate::matchers::{matchers_match, Matcher};
use crate::model::{Alert, Labels};

#[derive(Debug, Clone)]
pub struct InhibitRule {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

impl InhibitRule {
    fn equal_values(&self, labels: &Labels) -> Vec<String> {
        self.equal
            .iter()
            .map(|n| labels.get(n).cloned().unwrap_or_default())
            .collect()
    }
}

/// The firing alerts that can inhibit, indexed per rule by their `equal` values, built
/// once per evaluation so that checking a target costs one look-up per rule.
pub struct Inhibitor<'a> {
    rules: &'a [InhibitRule],
    /// Per rule: equal-label values → fingerprints of the source alerts with them.
    sources: Vec<HashMap<Vec<String>, Vec<&'a str>>>,
}

impl<'a> Inhibitor<'a> {
    pub fn new(rules: &'a [InhibitRule], firing: impl Iterator<Item = &'a Alert> + Clone) -> Self {
        let sources = rules
            .iter()
            .map(|rule| {
                let mut idx: HashMap<Vec<String>, Vec<&'a str>> = HashMap::new();
                for a in firing.clone() {
                    if matchers_match(&rule.source, &a.labels) {
                        idx.entry(rule.equal_values(&a.labels))
                            .or_default()
                            .push(a.fingerprint.as_str());
                    }
                }
                idx
            })
            .collect();
        Inhibitor { rules, sources }
    }

    /// The fingerprint of a firing alert that inhibits `target`, if any.
    pub fn inhibited_by(&self, target: &Alert) -> Option<&'a str> {
        for (rule, idx) in self.rules.iter().zip(&self.sources) {
            if !matchers_match(&rule.target, &target.labels) {
                continue;
            }
            if let Some(fps) = idx.get(&rule.equal_values(&target.labels)) {
                if let Some(fp) = fps.iter().find(|fp| **fp != target.fingerprint) {
                    return Some(fp);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matchers::parse_matcher;
    use crate::model::Status;

    fn alert(pairs: &[(&str, &str)]) -> Alert {
        crate::model::test_alert(pairs, Status::Firing)
    }

    fn rule(source: &str, target: &str, equal: &[&str]) -> InhibitRule {
        InhibitRule {
            source: vec![parse_matcher(source).expect("m")],
            target: vec![parse_matcher(target).expect("m")],
            equal: equal.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn quorum_lost_mutes_member_down_of_the_same_cluster_only() {
        let rules = vec![rule(
            "alertname=\"EtcdQuorumLost\"",
            "alertname=\"EtcdMemberDown\"",
            &["cluster"],
        )];
        let lost = alert(&[("alertname", "EtcdQuorumLost"), ("cluster", "a")]);
        let down_a = alert(&[
            ("alertname", "EtcdMemberDown"),
            ("cluster", "a"),
            ("member", "m1"),
        ]);
        let down_b = alert(&[
            ("alertname", "EtcdMemberDown"),
            ("cluster", "b"),
            ("member", "m1"),
        ]);
        let down_none = alert(&[("alertname", "EtcdMemberDown"), ("member", "m1")]);
        let firing = [lost.clone(), down_a.clone(), down_b.clone()];
        let inh = Inhibitor::new(&rules, firing.iter());
        assert_eq!(inh.inhibited_by(&down_a), Some(lost.fingerprint.as_str()));
        assert_eq!(inh.inhibited_by(&down_b), None, "another cluster");
        assert_eq!(inh.inhibited_by(&lost), None);
        assert_eq!(
            inh.inhibited_by(&down_none),
            None,
            "absent cluster differs from cluster a"
        );
    }

    #[test]
    fn absent_on_both_sides_is_equal_and_an_alert_never_mutes_itself() {
        let rules = vec![rule(
            "severity=\"critical\"",
            "severity=~\".+\"",
            &["member"],
        )];
        let crit = alert(&[("alertname", "X"), ("severity", "critical")]);
        let warn = alert(&[("alertname", "Y"), ("severity", "warning")]);
        let firing = [crit.clone(), warn.clone()];
        let inh = Inhibitor::new(&rules, firing.iter());
        assert_eq!(inh.inhibited_by(&warn), Some(crit.fingerprint.as_str()));
        assert_eq!(inh.inhibited_by(&crit), None, "not by itself");
    }
}
