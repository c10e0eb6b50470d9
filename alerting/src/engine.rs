//! The relay's decisions, as Alertmanager makes them: alerts are routed into groups; a
//! group waits `group_wait` before its first notification and `group_interval` between
//! later ones; at each flush, each receiver of the group is told if alerts it has not
//! heard fire are firing, if alerts it heard fire have resolved, or if `repeat_interval`
//! has passed; silenced and inhibited alerts are left out.
//!
//! The state (alerts, notification log, silences) is kept in memory and in the
//! [`Store`]: every step works on a copy, writes what changed in one durable transaction,
//! and only then replaces the state, so a failed write (a full disk) changes nothing.
//! Group timers live in memory only: after a restart every group waits `group_wait` again
//! and the durable notification log keeps receivers from hearing anything twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use crate::config::RelayConfig;
use crate::inhibit::Inhibitor;
use crate::model::{Alert, GroupNotification, Labels, Status};
use crate::silence::{PostableSilence, Silence, SilenceError, SilenceState};
use crate::store::{
    slot_key, Applied, Changes, NewDelivery, NotifyLog, Store, StoreError, StoredAlert,
};

/// Expired silences are kept this long for `GET /api/v2/silences`, as Alertmanager does.
const SILENCE_RETENTION_MS: i64 = 5 * 24 * 3600 * 1000;

/// Why an engine step was refused.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<SilenceError> for EngineError {
    fn from(e: SilenceError) -> Self {
        EngineError::Invalid(e.to_string())
    }
}

#[derive(Debug, Clone, Copy)]
struct GroupTimer {
    first_seen_ms: i64,
    last_flush_ms: Option<i64>,
}

#[derive(Default, Clone)]
struct State {
    alerts: BTreeMap<String, Arc<StoredAlert>>,
    nflog: BTreeMap<String, NotifyLog>,
    silences: BTreeMap<String, Silence>,
}

/// What only writers touch, under the write lock.
struct Writer {
    timers: HashMap<String, GroupTimer>,
}

/// A group as routing makes it: the route, the key and the fingerprints in it.
#[derive(Debug)]
struct Group {
    route: usize,
    labels: Labels,
    members: Vec<String>,
}

/// What an ingest did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub received: usize,
    pub enqueued: Vec<(String, u64)>,
    pub deduplicated: usize,
    pub superseded: u64,
    /// New alerts refused because the relay holds `--max-alerts` already.
    pub refused_full: usize,
}

/// What a tick did.
#[derive(Debug, Clone, Default)]
pub struct TickOutcome {
    pub enqueued: Vec<(String, u64)>,
    pub expired: usize,
    pub superseded: u64,
    /// When the next group timer falls due (Unix ms), if any.
    pub next_due_ms: Option<i64>,
}

/// A firing alert as the API shows it.
#[derive(Debug, Clone)]
pub struct AlertView {
    pub stored: Arc<StoredAlert>,
    pub receivers: Vec<String>,
    pub silenced_by: Vec<String>,
    pub inhibited_by: Vec<String>,
}

pub struct Engine {
    store: Arc<Store>,
    config: RwLock<Arc<RelayConfig>>,
    /// Serialises the steps that change the state (redb has one writer anyway).
    writer: Mutex<Writer>,
    /// The committed state; readers take the `Arc` and never wait for a commit.
    state: RwLock<Arc<State>>,
    max_alerts: usize,
}

/// Lower goes first: critical, then warning, then the rest.
pub fn priority(labels: &Labels) -> u8 {
    match labels.get("severity").map(String::as_str) {
        Some("critical") | Some("page") => 0,
        Some("error") => 1,
        Some("warning") => 2,
        Some("info") => 3,
        Some("none") => 5,
        _ => 4,
    }
}

/// Whether a receiver must hear about a group now (Alertmanager's notification log
/// check): alerts it has not heard fire are firing, alerts it heard fire resolved, or
/// `repeat` has passed while alerts still fire.
pub fn needs_update(
    entry: Option<&NotifyLog>,
    firing: &BTreeSet<String>,
    resolved: &BTreeSet<String>,
    repeat: Duration,
    now_ms: i64,
) -> bool {
    let Some(e) = entry else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&e.firing) || !resolved.is_subset(&e.resolved) {
        return true;
    }
    let repeat_ms = i64::try_from(repeat.as_millis()).unwrap_or(i64::MAX);
    !firing.is_empty() && now_ms.saturating_sub(e.at_ms) >= repeat_ms
}

/// Whether a firing alert's `endsAt` lease has run out at `now_ms`.
fn lease_expired(a: &Alert, now_ms: i64) -> bool {
    crate::model::parse_time(&a.ends_at)
        .ok()
        .flatten()
        .is_some_and(|end| end <= now_ms)
}

/// A route an alert takes: its index, the alert's group labels and group key there.
type RouteGroup = (usize, Labels, String);

fn groups_of(cfg: &RelayConfig, a: &Alert) -> Vec<RouteGroup> {
    cfg.router
        .matching(&a.labels)
        .into_iter()
        .map(|i| {
            let r = &cfg.router.routes()[i];
            let labels = r.group_labels(&a.labels);
            let key = r.group_key(&labels);
            (i, labels, key)
        })
        .collect()
}

fn all_groups(
    cfg: &RelayConfig,
    alerts: &BTreeMap<String, Arc<StoredAlert>>,
) -> BTreeMap<String, Group> {
    let mut out: BTreeMap<String, Group> = BTreeMap::new();
    for (fp, a) in alerts {
        for (route, labels, key) in groups_of(cfg, &a.alert) {
            out.entry(key)
                .or_insert_with(|| Group {
                    route,
                    labels,
                    members: Vec::new(),
                })
                .members
                .push(fp.clone());
        }
    }
    out
}

impl Engine {
    /// An engine over `store`, with the state it holds; the second value counts the
    /// records that could not be read and were quarantined.
    pub fn open(
        store: Arc<Store>,
        config: Arc<RelayConfig>,
        max_alerts: usize,
    ) -> Result<(Self, u64), StoreError> {
        let loaded = store.load()?;
        let q = loaded.quarantined;
        let engine = Engine {
            store,
            config: RwLock::new(config),
            writer: Mutex::new(Writer {
                timers: HashMap::new(),
            }),
            state: RwLock::new(Arc::new(State {
                alerts: loaded.alerts,
                nflog: loaded.nflog,
                silences: loaded.silences,
            })),
            max_alerts,
        };
        Ok((engine, q))
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn config(&self) -> Arc<RelayConfig> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Takes a new configuration (SIGHUP); groups are recomputed at the next step.
    pub fn set_config(&self, cfg: Arc<RelayConfig>) {
        match self.config.write() {
            Ok(mut c) => *c = cfg,
            Err(p) => *p.into_inner() = cfg,
        }
    }

    fn write_lock(&self) -> MutexGuard<'_, Writer> {
        match self.writer.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The committed state.
    fn snapshot(&self) -> Arc<State> {
        match self.state.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Publishes a state that has been committed.
    fn publish(&self, next: State) {
        let next = Arc::new(next);
        match self.state.write() {
            Ok(mut s) => *s = next,
            Err(p) => *p.into_inner() = next,
        }
    }

    /// Reloads the state from the store after it was reopened.
    pub fn reload_state(&self) -> Result<u64, StoreError> {
        let _w = self.write_lock();
        let loaded = self.store.load()?;
        self.publish(State {
            alerts: loaded.alerts,
            nflog: loaded.nflog,
            silences: loaded.silences,
        });
        Ok(loaded.quarantined)
    }

    /// Records `alerts`, flushes the groups they belong to that are due, and writes it
    /// all in one durable transaction before returning.
    pub fn ingest(&self, alerts: &[Alert], now_ms: i64) -> Result<IngestOutcome, StoreError> {
        let cfg = self.config();
        let mut w = self.write_lock();
        let mut next = (*self.snapshot()).clone();
        let mut changes = Changes::default();
        let mut out = IngestOutcome {
            received: alerts.len(),
            ..IngestOutcome::default()
        };
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut told: Vec<(&Alert, Vec<RouteGroup>)> = Vec::new();
        for a in alerts {
            let known = next.alerts.get(&a.fingerprint).cloned();
            let routes = groups_of(&cfg, a);
            let stored = match (a.status, &known) {
                (Status::Firing, None) if next.alerts.len() >= self.max_alerts => {
                    out.refused_full += 1;
                    continue;
                }
                (Status::Firing, _) => StoredAlert {
                    alert: a.clone(),
                    received_at_ms: known.as_ref().map_or(now_ms, |k| k.received_at_ms),
                    resolved_at_ms: None,
                },
                // Never heard firing: nobody to tell.
                (Status::Resolved, None) => {
                    out.deduplicated += routes
                        .iter()
                        .map(|(r, ..)| cfg.router.routes()[*r].receivers.len())
                        .sum::<usize>();
                    continue;
                }
                (Status::Resolved, Some(k)) => StoredAlert {
                    alert: a.clone(),
                    received_at_ms: k.received_at_ms,
                    resolved_at_ms: Some(k.resolved_at_ms.unwrap_or(now_ms)),
                },
            };
            let stored = Arc::new(stored);
            next.alerts.insert(a.fingerprint.clone(), stored.clone());
            changes.alerts_put.push(stored);
            touched.extend(routes.iter().map(|(.., k)| k.clone()));
            told.push((a, routes));
        }
        let groups = all_groups(&cfg, &next.alerts);
        let mut timers = w.timers.clone();
        for key in &touched {
            timers.entry(key.clone()).or_insert(GroupTimer {
                first_seen_ms: now_ms,
                last_flush_ms: None,
            });
        }
        let flushed = self.flush_due(
            &cfg,
            &groups,
            Some(&touched),
            &mut timers,
            &mut next,
            &mut changes,
            now_ms,
        );
        // An alert whose flushed group told a receiver nothing including it was
        // deduplicated for that receiver.
        for (a, routes) in &told {
            for (route, _, key) in routes {
                if !flushed.contains(key) {
                    continue;
                }
                for &r in &cfg.router.routes()[*route].receivers {
                    let name = &cfg.receivers[r].name;
                    let sent = changes.deliveries.iter().any(|d| {
                        &d.receiver == name
                            && d.notification.group_key == *key
                            && d.notification
                                .alerts
                                .iter()
                                .any(|x| x.fingerprint == a.fingerprint)
                    });
                    if !sent {
                        out.deduplicated += 1;
                    }
                }
            }
        }
        let applied = self.commit(&changes, now_ms)?;
        self.publish(next);
        w.timers = timers;
        out.enqueued = applied.enqueued;
        out.superseded = applied.superseded;
        Ok(out)
    }

    fn commit(&self, changes: &Changes, now_ms: i64) -> Result<Applied, StoreError> {
        if changes.is_empty() {
            return Ok(Applied::default());
        }
        self.store.apply(changes, now_ms)
    }

    /// Flushes the groups (of `only`, or all) whose timer is due; returns their keys.
    #[allow(clippy::too_many_arguments)]
    fn flush_due(
        &self,
        cfg: &RelayConfig,
        groups: &BTreeMap<String, Group>,
        only: Option<&BTreeSet<String>>,
        timers: &mut HashMap<String, GroupTimer>,
        next: &mut State,
        changes: &mut Changes,
        now_ms: i64,
    ) -> BTreeSet<String> {
        let firing: Vec<&Alert> = next
            .alerts
            .values()
            .filter(|a| a.alert.status == Status::Firing)
            .map(|a| &a.alert)
            .collect();
        let inhibitor = Inhibitor::new(&cfg.inhibit_rules, firing.iter().copied());
        let active: Vec<&Silence> = next
            .silences
            .values()
            .filter(|s| s.state(now_ms) == SilenceState::Active)
            .collect();
        let mut flushed = BTreeSet::new();
        let mut nflog_updates = Vec::new();
        for (key, g) in groups {
            if only.is_some_and(|o| !o.contains(key)) {
                continue;
            }
            let route = &cfg.router.routes()[g.route];
            let t = timers.entry(key.clone()).or_insert(GroupTimer {
                first_seen_ms: now_ms,
                last_flush_ms: None,
            });
            let due_at = match t.last_flush_ms {
                None => t.first_seen_ms + ms(route.group.wait),
                Some(last) => last + ms(route.group.interval),
            };
            if now_ms < due_at {
                continue;
            }
            t.last_flush_ms = Some(now_ms);
            flushed.insert(key.clone());
            let members: Vec<&Alert> = g
                .members
                .iter()
                .filter_map(|fp| next.alerts.get(fp).map(|a| &a.alert))
                .collect();
            let firing: Vec<&Alert> = members
                .iter()
                .copied()
                .filter(|a| a.status == Status::Firing)
                .filter(|a| !active.iter().any(|s| s.matches(&a.labels)))
                .filter(|a| inhibitor.inhibited_by(a).is_none())
                .collect();
            let firing_fps: BTreeSet<String> =
                firing.iter().map(|a| a.fingerprint.clone()).collect();
            for &r in &route.receivers {
                let receiver = &cfg.receivers[r].name;
                let send_resolved = cfg.receivers[r].send_resolved;
                let nkey = slot_key(receiver, key);
                let entry = next.nflog.get(&nkey);
                let heard = entry.map(|e| &e.firing);
                let resolved: Vec<&Alert> = members
                    .iter()
                    .copied()
                    .filter(|a| send_resolved && a.status == Status::Resolved)
                    .filter(|a| heard.is_some_and(|h| h.contains(&a.fingerprint)))
                    .collect();
                let resolved_fps: BTreeSet<String> =
                    resolved.iter().map(|a| a.fingerprint.clone()).collect();
                if !needs_update(
                    entry,
                    &firing_fps,
                    &resolved_fps,
                    route.group.repeat,
                    now_ms,
                ) {
                    continue;
                }
                let status = if firing.is_empty() {
                    Status::Resolved
                } else {
                    Status::Firing
                };
                let alerts: Vec<Alert> = firing
                    .iter()
                    .chain(resolved.iter())
                    .map(|a| (*a).clone())
                    .collect();
                let prio = alerts
                    .iter()
                    .map(|a| priority(&a.labels))
                    .min()
                    .unwrap_or(u8::MAX);
                changes.deliveries.push(NewDelivery {
                    receiver: receiver.clone(),
                    notification: GroupNotification {
                        group_key: key.clone(),
                        group_labels: g.labels.clone(),
                        status,
                        alerts,
                    },
                    priority: prio,
                });
                nflog_updates.push((
                    nkey,
                    NotifyLog {
                        firing: firing_fps.clone(),
                        resolved: resolved_fps,
                        at_ms: now_ms,
                    },
                ));
            }
        }
        for (k, n) in nflog_updates {
            next.nflog.insert(k.clone(), n.clone());
            changes.nflog_put.push((k, n));
        }
        flushed
    }

    /// The periodic step: resolves alerts whose lease ran out, flushes due groups,
    /// forgets resolved alerts once every group holding them has notified, empty groups'
    /// timers and logs, and long-expired silences.
    pub fn tick(&self, now_ms: i64) -> Result<TickOutcome, StoreError> {
        let cfg = self.config();
        let mut w = self.write_lock();
        let mut next = (*self.snapshot()).clone();
        let mut changes = Changes::default();
        let mut out = TickOutcome::default();
        let expired: Vec<Arc<StoredAlert>> = next
            .alerts
            .values()
            .filter(|a| a.alert.status == Status::Firing && lease_expired(&a.alert, now_ms))
            .map(|a| {
                let mut s = (**a).clone();
                s.alert.status = Status::Resolved;
                s.resolved_at_ms = Some(now_ms);
                Arc::new(s)
            })
            .collect();
        out.expired = expired.len();
        for a in expired {
            next.alerts.insert(a.alert.fingerprint.clone(), a.clone());
            changes.alerts_put.push(a);
        }
        let groups = all_groups(&cfg, &next.alerts);
        let mut timers = w.timers.clone();
        timers.retain(|k, _| groups.contains_key(k));
        self.flush_due(
            &cfg,
            &groups,
            None,
            &mut timers,
            &mut next,
            &mut changes,
            now_ms,
        );
        // Resolved alerts go once every group holding them has flushed since.
        let gone: Vec<String> = next
            .alerts
            .iter()
            .filter_map(|(fp, a)| {
                let at = a.resolved_at_ms?;
                groups_of(&cfg, &a.alert)
                    .iter()
                    .all(|(.., key)| {
                        timers
                            .get(key)
                            .and_then(|t| t.last_flush_ms)
                            .is_some_and(|f| f >= at)
                    })
                    .then(|| fp.clone())
            })
            .collect();
        for fp in gone {
            next.alerts.remove(&fp);
            changes.alerts_del.push(fp);
        }
        let live = all_groups(&cfg, &next.alerts);
        timers.retain(|k, _| live.contains_key(k));
        let stale: Vec<String> = next
            .nflog
            .keys()
            .filter(|k| {
                let group = k.split_once('\0').map_or("", |(_, g)| g);
                !live.contains_key(group)
            })
            .cloned()
            .collect();
        for k in stale {
            next.nflog.remove(&k);
            changes.nflog_del.push(k);
        }
        let old_silences: Vec<String> = next
            .silences
            .values()
            .filter(|s| now_ms.saturating_sub(s.ends_at_ms) > SILENCE_RETENTION_MS)
            .map(|s| s.id.clone())
            .collect();
        for id in old_silences {
            next.silences.remove(&id);
            changes.silences_del.push(id);
        }
        out.next_due_ms = live
            .iter()
            .filter_map(|(k, g)| {
                let t = timers.get(k)?;
                let route = &cfg.router.routes()[g.route];
                Some(match t.last_flush_ms {
                    None => t.first_seen_ms + ms(route.group.wait),
                    Some(last) => last + ms(route.group.interval),
                })
            })
            .min();
        let applied = self.commit(&changes, now_ms)?;
        self.publish(next);
        w.timers = timers;
        out.enqueued = applied.enqueued;
        out.superseded = applied.superseded;
        Ok(out)
    }

    /// The firing alerts (lease not run out), with their receivers, silences and
    /// inhibitions.
    pub fn alerts(&self, now_ms: i64) -> Vec<AlertView> {
        let cfg = self.config();
        let st = self.snapshot();
        let firing: Vec<&Alert> = st
            .alerts
            .values()
            .filter(|a| a.alert.status == Status::Firing && !lease_expired(&a.alert, now_ms))
            .map(|a| &a.alert)
            .collect();
        let inhibitor = Inhibitor::new(&cfg.inhibit_rules, firing.iter().copied());
        st.alerts
            .values()
            .filter(|a| a.alert.status == Status::Firing && !lease_expired(&a.alert, now_ms))
            .map(|a| AlertView {
                stored: a.clone(),
                receivers: cfg.receivers_for(&a.alert).into_iter().collect(),
                silenced_by: st
                    .silences
                    .values()
                    .filter(|s| {
                        s.state(now_ms) == SilenceState::Active && s.matches(&a.alert.labels)
                    })
                    .map(|s| s.id.clone())
                    .collect(),
                inhibited_by: inhibitor
                    .inhibited_by(&a.alert)
                    .map(|fp| vec![fp.to_owned()])
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Alerts held (firing and resolved-not-yet-notified).
    pub fn alert_count(&self) -> usize {
        self.snapshot().alerts.len()
    }

    pub fn silences(&self) -> Vec<Silence> {
        self.snapshot().silences.values().cloned().collect()
    }

    pub fn silence(&self, id: &str) -> Option<Silence> {
        self.snapshot().silences.get(id).cloned()
    }

    /// Creates a silence, or updates the one `p.id` names; returns its id.
    pub fn post_silence(&self, p: &PostableSilence, now_ms: i64) -> Result<String, EngineError> {
        let valid = crate::silence::validate(p, now_ms)?;
        let _w = self.write_lock();
        let mut next = (*self.snapshot()).clone();
        let mut changes = Changes::default();
        let silence = match p.id.as_deref().filter(|s| !s.is_empty()) {
            None => Silence::create(valid, fastrand::u128(..), now_ms),
            Some(id) => {
                let existing = next
                    .silences
                    .get(id)
                    .ok_or_else(|| EngineError::NotFound(format!("silence {id} not found")))?;
                match crate::silence::update(existing, valid, now_ms) {
                    crate::silence::Update::InPlace(s) => s,
                    crate::silence::Update::Replace { expired, new } => {
                        changes.silences_put.extend(expired);
                        Silence::create(new, fastrand::u128(..), now_ms)
                    }
                }
            }
        };
        changes.silences_put.push(silence.clone());
        self.store.apply(&changes, now_ms)?;
        for s in changes.silences_put {
            next.silences.insert(s.id.clone(), s);
        }
        self.publish(next);
        Ok(silence.id)
    }

    /// Expires silence `id` now.
    pub fn expire_silence(&self, id: &str, now_ms: i64) -> Result<(), EngineError> {
        let _w = self.write_lock();
        let mut next = (*self.snapshot()).clone();
        let mut s = next
            .silences
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("silence {id} not found")))?;
        s.expire(now_ms)?;
        let changes = Changes {
            silences_put: vec![s.clone()],
            ..Changes::default()
        };
        self.store.apply(&changes, now_ms)?;
        next.silences.insert(s.id.clone(), s);
        self.publish(next);
        Ok(())
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

#[cfg(test)]
mod tests;
