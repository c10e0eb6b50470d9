//! The relay's decisions, as Alertmanager makes them: alerts are routed into groups; a
//! group waits `group_wait` before its first notification and `group_interval` between
//! later ones; at each flush, each receiver of the group is told if alerts it has not
//! heard fire are firing, if alerts it heard fire have resolved, or if `repeat_interval`
//! has passed; silenced and inhibited alerts are left out.
//!
//! The state (alerts, notification log, silences) is kept in memory and in the
//! [`Store`]. A step changes the memory in place through a [`Tx`] that records what it
//! changed and how to undo it, writes the changes in one durable transaction, and undoes
//! them if the write fails (a full disk), so memory never holds what the disk does not.
//! The cost of a step is that of the alerts and groups it touches, not of all the relay
//! holds: groups are an index kept up to date as alerts come and go (rebuilt only when the
//! configuration changes). Group timers live in memory only: after a restart every group
//! waits `group_wait` again and the durable notification log keeps receivers from hearing
//! anything twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GroupTimer {
    first_seen_ms: i64,
    last_flush_ms: Option<i64>,
    /// An alert of the group came, changed or went since its last flush.
    dirty: bool,
}

/// A group: its route, its labels and the fingerprints in it.
#[derive(Debug)]
struct Group {
    route: usize,
    labels: Labels,
    members: BTreeSet<String>,
}

/// A route an alert takes: its index, the alert's group labels and group key there.
type RouteGroup = (usize, Labels, String);

#[derive(Default)]
struct State {
    alerts: BTreeMap<String, Arc<StoredAlert>>,
    nflog: BTreeMap<String, NotifyLog>,
    silences: BTreeMap<String, Silence>,
    timers: HashMap<String, GroupTimer>,
    /// Group key → group, derived from `alerts` and the configuration.
    groups: BTreeMap<String, Group>,
    /// Fingerprint → the keys of its groups.
    memberships: HashMap<String, Vec<String>>,
    /// The configuration the index was built with.
    indexed_with: Option<Arc<RelayConfig>>,
    /// Something that concerns every group changed (a silence, or an alert that may
    /// inhibit others): the next step looks at every due group, dirty or not.
    all_dirty: bool,
    /// When the silences' states were last looked at.
    silences_seen_ms: i64,
}

impl State {
    /// Rebuilds the group index if the configuration changed since it was built.
    fn index(&mut self, cfg: &Arc<RelayConfig>) {
        if self
            .indexed_with
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, cfg))
        {
            return;
        }
        self.groups.clear();
        self.memberships.clear();
        self.all_dirty = true;
        let alerts: Vec<Arc<StoredAlert>> = self.alerts.values().cloned().collect();
        for a in alerts {
            self.join(cfg, &a.alert);
        }
        self.indexed_with = Some(cfg.clone());
    }

    fn join(&mut self, cfg: &RelayConfig, a: &Alert) {
        let mut keys = Vec::new();
        for (route, labels, key) in groups_of(cfg, a) {
            self.groups
                .entry(key.clone())
                .or_insert_with(|| Group {
                    route,
                    labels,
                    members: BTreeSet::new(),
                })
                .members
                .insert(a.fingerprint.clone());
            keys.push(key);
        }
        self.memberships.insert(a.fingerprint.clone(), keys);
    }

    fn leave(&mut self, fp: &str) {
        for key in self.memberships.remove(fp).unwrap_or_default() {
            if let Some(g) = self.groups.get_mut(&key) {
                g.members.remove(fp);
                if g.members.is_empty() {
                    self.groups.remove(&key);
                }
            }
        }
    }

    /// Whether a receiver of the group that was told it fires is due a reminder.
    fn repeat_due(&self, cfg: &RelayConfig, key: &str, g: &Group, now_ms: i64) -> bool {
        let route = &cfg.router.routes()[g.route];
        route.receivers.iter().any(|r| {
            self.nflog
                .get(&slot_key(&cfg.receivers[*r].name, key))
                .is_some_and(|e| {
                    !e.firing.is_empty() && now_ms.saturating_sub(e.at_ms) >= ms(route.group.repeat)
                })
        })
    }

    /// When the next step has something to do (a dirty group's timer, or a repeat), if
    /// later than now.
    fn next_due(&self, cfg: &RelayConfig, now_ms: i64) -> Option<i64> {
        let timers = self
            .timers
            .iter()
            .filter(|(_, t)| t.dirty)
            .filter_map(|(k, t)| self.due_at(cfg, k, t));
        let repeats = self.nflog.iter().filter_map(|(k, e)| {
            let key = k.split_once('\0').map(|(_, g)| g)?;
            let g = self.groups.get(key)?;
            let repeat = cfg.router.routes()[g.route].group.repeat;
            (!e.firing.is_empty()).then(|| e.at_ms.saturating_add(ms(repeat)))
        });
        timers.chain(repeats).filter(|t| *t > now_ms).min()
    }

    fn due_at(&self, cfg: &RelayConfig, key: &str, t: &GroupTimer) -> Option<i64> {
        let route = &cfg.router.routes()[self.groups.get(key)?.route];
        Some(match t.last_flush_ms {
            None => t.first_seen_ms.saturating_add(ms(route.group.wait)),
            Some(last) => last.saturating_add(ms(route.group.interval)),
        })
    }
}

/// One change a [`Tx`] made, with what was there before.
enum Undo {
    Alert(String, Option<Arc<StoredAlert>>),
    Nflog(String, Option<NotifyLog>),
    Silence(String, Option<Silence>),
    Timer(String, Option<GroupTimer>),
}

/// Changes to the state in place, recorded for the store and for undoing.
struct Tx<'a> {
    st: &'a mut State,
    cfg: &'a Arc<RelayConfig>,
    changes: Changes,
    undo: Vec<Undo>,
}

impl<'a> Tx<'a> {
    fn new(st: &'a mut State, cfg: &'a Arc<RelayConfig>) -> Self {
        st.index(cfg);
        Tx {
            st,
            cfg,
            changes: Changes::default(),
            undo: Vec::new(),
        }
    }

    fn put_alert(&mut self, a: Arc<StoredAlert>) {
        let fp = a.alert.fingerprint.clone();
        let prev = self.st.alerts.insert(fp.clone(), a.clone());
        if prev.is_none() {
            self.st.join(self.cfg, &a.alert);
        }
        let status_changed = prev
            .as_ref()
            .is_none_or(|p| p.alert.status != a.alert.status);
        self.undo.push(Undo::Alert(fp.clone(), prev));
        self.changes.alerts_put.push(a);
        if status_changed {
            self.touch(&fp);
        }
    }

    fn del_alert(&mut self, fp: &str) {
        self.touch(fp);
        if let Some(prev) = self.st.alerts.remove(fp) {
            self.st.leave(fp);
            self.undo.push(Undo::Alert(fp.to_owned(), Some(prev)));
            self.changes.alerts_del.push(fp.to_owned());
        }
    }

    /// Marks the groups of `fp` dirty, and every group if inhibition may have changed.
    fn touch(&mut self, fp: &str) {
        let keys = self.st.memberships.get(fp).cloned().unwrap_or_default();
        for k in keys {
            if let Some(mut t) = self.st.timers.get(&k).copied() {
                t.dirty = true;
                self.set_timer(&k, Some(t));
            }
        }
        if !self.cfg.inhibit_rules.is_empty() {
            self.st.all_dirty = true;
        }
    }

    fn put_nflog(&mut self, key: String, n: NotifyLog) {
        let prev = self.st.nflog.insert(key.clone(), n.clone());
        self.undo.push(Undo::Nflog(key.clone(), prev));
        self.changes.nflog_put.push((key, n));
    }

    fn del_nflog(&mut self, key: &str) {
        if let Some(prev) = self.st.nflog.remove(key) {
            self.undo.push(Undo::Nflog(key.to_owned(), Some(prev)));
            self.changes.nflog_del.push(key.to_owned());
        }
    }

    fn put_silence(&mut self, s: Silence) {
        self.st.all_dirty = true;
        let prev = self.st.silences.insert(s.id.clone(), s.clone());
        self.undo.push(Undo::Silence(s.id.clone(), prev));
        self.changes.silences_put.push(s);
    }

    fn del_silence(&mut self, id: &str) {
        if let Some(prev) = self.st.silences.remove(id) {
            self.undo.push(Undo::Silence(id.to_owned(), Some(prev)));
            self.changes.silences_del.push(id.to_owned());
        }
    }

    fn set_timer(&mut self, key: &str, t: Option<GroupTimer>) {
        let prev = match t {
            Some(t) => self.st.timers.insert(key.to_owned(), t),
            None => self.st.timers.remove(key),
        };
        if prev != t {
            self.undo.push(Undo::Timer(key.to_owned(), prev));
        }
    }

    /// Forgets what nobody needs any more: resolved alerts once every group holding them
    /// has flushed since, timers and logs of groups that are gone, long-expired silences.
    fn forget(&mut self, now_ms: i64) {
        // Resolved alerts go once every group holding them has flushed since (the
        // resolution made each group dirty; only a flush makes it clean).
        let gone: Vec<String> =
            self.st
                .alerts
                .iter()
                .filter_map(|(fp, a)| {
                    let at = a.resolved_at_ms?;
                    let keys = self.st.memberships.get(fp)?;
                    keys.iter()
                        .all(|key| {
                            self.st.timers.get(key).is_some_and(|t| {
                                !t.dirty && t.last_flush_ms.is_some_and(|f| f >= at)
                            })
                        })
                        .then(|| fp.clone())
                })
                .collect();
        for fp in gone {
            self.del_alert(&fp);
        }
        let stale_timers: Vec<String> = self
            .st
            .timers
            .keys()
            .filter(|k| !self.st.groups.contains_key(*k))
            .cloned()
            .collect();
        for k in stale_timers {
            self.set_timer(&k, None);
        }
        let stale_logs: Vec<String> = self
            .st
            .nflog
            .keys()
            .filter(|k| {
                let group = k.split_once('\0').map_or("", |(_, g)| g);
                !self.st.groups.contains_key(group)
            })
            .cloned()
            .collect();
        for k in stale_logs {
            self.del_nflog(&k);
        }
        let old_silences: Vec<String> = self
            .st
            .silences
            .values()
            .filter(|s| now_ms.saturating_sub(s.ends_at_ms) > SILENCE_RETENTION_MS)
            .map(|s| s.id.clone())
            .collect();
        for id in old_silences {
            self.del_silence(&id);
        }
    }

    /// Writes the changes durably, or undoes them all.
    fn commit(self, store: &Store, now_ms: i64) -> Result<Applied, StoreError> {
        if self.changes.is_empty() {
            return Ok(Applied::default());
        }
        match store.apply(&self.changes, now_ms) {
            Ok(a) => Ok(a),
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    fn rollback(self) {
        let (st, cfg) = (self.st, self.cfg);
        // Whatever this step looked at, the next one looks at again.
        st.all_dirty = true;
        for u in self.undo.into_iter().rev() {
            match u {
                Undo::Alert(fp, prev) => {
                    if st.alerts.remove(&fp).is_some() {
                        st.leave(&fp);
                    }
                    if let Some(p) = prev {
                        st.join(cfg, &p.alert);
                        st.alerts.insert(fp, p);
                    }
                }
                Undo::Nflog(k, prev) => restore(&mut st.nflog, k, prev),
                Undo::Silence(k, prev) => restore(&mut st.silences, k, prev),
                Undo::Timer(k, prev) => match prev {
                    Some(t) => {
                        st.timers.insert(k, t);
                    }
                    None => {
                        st.timers.remove(&k);
                    }
                },
            }
        }
    }
}

fn restore<V>(map: &mut BTreeMap<String, V>, k: String, prev: Option<V>) {
    match prev {
        Some(v) => {
            map.insert(k, v);
        }
        None => {
            map.remove(&k);
        }
    }
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
    /// Readers wait for a step's commit (milliseconds); call from blocking threads.
    state: Mutex<State>,
    alert_count: AtomicUsize,
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
    if firing.is_empty() {
        // Nothing fires for it any more: clear the log (sending what resolved), so that
        // an alert firing again is news. (A group whose firing alerts are all muted
        // keeps its log: see `decide`.)
        return !e.firing.is_empty();
    }
    now_ms.saturating_sub(e.at_ms) >= ms(repeat)
}

/// Whether a firing alert's `endsAt` lease has run out at `now_ms`.
fn lease_expired(a: &Alert, now_ms: i64) -> bool {
    crate::model::parse_time(&a.ends_at)
        .ok()
        .flatten()
        .is_some_and(|end| end <= now_ms)
}

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

/// What flushing one group decided.
struct Flush {
    key: String,
    timer: GroupTimer,
    flushed: bool,
    /// Deliveries with the notification-log entries they set.
    /// A delivery is `None` when the log changes with nothing to send (every alert the
    /// receiver heard fire is now silenced, or resolved where resolutions are not sent).
    deliveries: Vec<(Option<NewDelivery>, String, NotifyLog)>,
}

/// Decides the flushes of the groups `keys` at `now_ms`: due or not, and for each
/// receiver whether and what to notify. Pure: reads the state, changes nothing.
fn decide(st: &State, cfg: &RelayConfig, keys: &[String], now_ms: i64) -> Vec<Flush> {
    let active: Vec<&Silence> = st
        .silences
        .values()
        .filter(|s| s.state(now_ms) == SilenceState::Active)
        .collect();
    let inhibitor = (!cfg.inhibit_rules.is_empty()).then(|| {
        Inhibitor::new(
            &cfg.inhibit_rules,
            st.alerts
                .values()
                .filter(|a| a.alert.status == Status::Firing)
                .map(|a| &a.alert),
        )
    });
    let mut out = Vec::new();
    for key in keys {
        let Some(g) = st.groups.get(key) else {
            continue;
        };
        let route = &cfg.router.routes()[g.route];
        let mut timer = st.timers.get(key).copied().unwrap_or(GroupTimer {
            first_seen_ms: now_ms,
            last_flush_ms: None,
            dirty: true,
        });
        let due_at = st.due_at(cfg, key, &timer).unwrap_or(now_ms);
        let mut flush = Flush {
            key: key.clone(),
            timer,
            flushed: false,
            deliveries: Vec::new(),
        };
        if now_ms < due_at {
            out.push(flush);
            continue;
        }
        timer.last_flush_ms = Some(now_ms);
        timer.dirty = false;
        flush.timer = timer;
        flush.flushed = true;
        let members: Vec<&Alert> = g
            .members
            .iter()
            .filter_map(|fp| st.alerts.get(fp).map(|a| &a.alert))
            .collect();
        let firing: Vec<&Alert> = members
            .iter()
            .copied()
            .filter(|a| a.status == Status::Firing)
            .filter(|a| !active.iter().any(|s| s.matches(&a.labels)))
            .filter(|a| {
                inhibitor
                    .as_ref()
                    .is_none_or(|i| i.inhibited_by(a).is_none())
            })
            .collect();
        let firing_fps: BTreeSet<String> = firing.iter().map(|a| a.fingerprint.clone()).collect();
        for &r in &route.receivers {
            let receiver = &cfg.receivers[r];
            let nkey = slot_key(&receiver.name, key);
            let entry = st.nflog.get(&nkey);
            let heard = entry.map(|e| &e.firing);
            let resolved: Vec<&Alert> = members
                .iter()
                .copied()
                .filter(|a| receiver.send_resolved && a.status == Status::Resolved)
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
            let log = NotifyLog {
                firing: firing_fps.clone(),
                resolved: resolved_fps,
                at_ms: now_ms,
            };
            if firing.is_empty() && resolved.is_empty() {
                // Every alert still firing is muted (silenced or inhibited) and nothing
                // resolved is news: as in Alertmanager, whose mute stage leaves nothing
                // to log, the receiver's log stays as it is, so that an alert it heard
                // fire, muted meanwhile, is still sent as resolved when it resolves.
                if members.iter().any(|a| a.status == Status::Firing) {
                    continue;
                }
                flush.deliveries.push((None, nkey, log));
                continue;
            }
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
            flush.deliveries.push((
                Some(NewDelivery {
                    receiver: receiver.name.clone(),
                    notification: GroupNotification {
                        group_key: key.clone(),
                        group_labels: g.labels.clone(),
                        status,
                        alerts,
                    },
                    priority: prio,
                }),
                nkey,
                log,
            ));
        }
        out.push(flush);
    }
    out
}

/// Applies flush decisions to `tx`; returns the keys of the groups that flushed.
fn apply_flushes(tx: &mut Tx<'_>, flushes: Vec<Flush>) -> BTreeSet<String> {
    let mut flushed = BTreeSet::new();
    for f in flushes {
        tx.set_timer(&f.key, Some(f.timer));
        if f.flushed {
            flushed.insert(f.key);
        }
        for (d, nkey, log) in f.deliveries {
            tx.put_nflog(nkey, log);
            tx.changes.deliveries.extend(d);
        }
    }
    flushed
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
        let mut state = State {
            alerts: loaded.alerts,
            nflog: loaded.nflog,
            silences: loaded.silences,
            ..State::default()
        };
        state.index(&config);
        let engine = Engine {
            store,
            config: RwLock::new(config),
            alert_count: AtomicUsize::new(state.alerts.len()),
            state: Mutex::new(state),
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

    /// Takes a new configuration (SIGHUP); groups are rebuilt at the next step. Taken
    /// under the state lock, so no step runs half with the old configuration.
    pub fn set_config(&self, cfg: Arc<RelayConfig>) {
        let _st = self.lock();
        match self.config.write() {
            Ok(mut c) => *c = cfg,
            Err(p) => *p.into_inner() = cfg,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Reloads the state from the store after it was reopened.
    pub fn reload_state(&self) -> Result<u64, StoreError> {
        let mut st = self.lock();
        let loaded = self.store.load()?;
        *st = State {
            alerts: loaded.alerts,
            nflog: loaded.nflog,
            silences: loaded.silences,
            timers: std::mem::take(&mut st.timers),
            ..State::default()
        };
        self.alert_count.store(st.alerts.len(), Ordering::Relaxed);
        Ok(loaded.quarantined)
    }

    /// Records `alerts`, flushes the groups they belong to that are due, and writes it
    /// all in one durable transaction before returning.
    pub fn ingest(&self, alerts: &[Alert], now_ms: i64) -> Result<IngestOutcome, StoreError> {
        let mut st = self.lock();
        let cfg = self.config();
        let mut tx = Tx::new(&mut st, &cfg);
        let mut out = IngestOutcome {
            received: alerts.len(),
            ..IngestOutcome::default()
        };
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut told: Vec<&Alert> = Vec::new();
        for a in alerts {
            let known = tx.st.alerts.get(&a.fingerprint).cloned();
            let stored = match (a.status, &known) {
                (Status::Firing, None) if tx.st.alerts.len() >= self.max_alerts => {
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
                    out.deduplicated += groups_of(&cfg, a)
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
            tx.put_alert(Arc::new(stored));
            if let Some(keys) = tx.st.memberships.get(&a.fingerprint) {
                touched.extend(keys.iter().cloned());
            }
            told.push(a);
        }
        let keys: Vec<String> = touched.into_iter().collect();
        let flushes = decide(tx.st, &cfg, &keys, now_ms);
        let flushed = apply_flushes(&mut tx, flushes);
        // An alert whose flushed group told a receiver nothing including it was
        // deduplicated for that receiver.
        for a in &told {
            for key in tx.st.memberships.get(&a.fingerprint).into_iter().flatten() {
                let Some(g) = tx.st.groups.get(key).filter(|_| flushed.contains(key)) else {
                    continue;
                };
                for &r in &cfg.router.routes()[g.route].receivers {
                    let name = &cfg.receivers[r].name;
                    let sent = tx.changes.deliveries.iter().any(|d| {
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
        let applied = tx.commit(&self.store, now_ms)?;
        self.alert_count.store(st.alerts.len(), Ordering::Relaxed);
        out.enqueued = applied.enqueued;
        out.superseded = applied.superseded;
        Ok(out)
    }

    /// The periodic step: resolves alerts whose lease ran out, flushes due groups,
    /// forgets resolved alerts once every group holding them has notified, empty groups'
    /// timers and logs, and long-expired silences.
    pub fn tick(&self, now_ms: i64) -> Result<TickOutcome, StoreError> {
        let mut st = self.lock();
        let cfg = self.config();
        let mut tx = Tx::new(&mut st, &cfg);
        let mut out = TickOutcome::default();
        let expired: Vec<Arc<StoredAlert>> = tx
            .st
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
            tx.put_alert(a);
        }
        // A silence starting or ending changes what every group may say.
        let seen = tx.st.silences_seen_ms;
        if tx
            .st
            .silences
            .values()
            .any(|s| s.state(now_ms) != s.state(seen))
        {
            tx.st.all_dirty = true;
        }
        tx.st.silences_seen_ms = now_ms;
        if std::mem::take(&mut tx.st.all_dirty) {
            // Every group, due now or later, must look again at what it says.
            let clean: Vec<(String, GroupTimer)> = tx
                .st
                .timers
                .iter()
                .filter(|(_, t)| !t.dirty)
                .map(|(k, t)| (k.clone(), GroupTimer { dirty: true, ..*t }))
                .collect();
            for (k, t) in clean {
                tx.set_timer(&k, Some(t));
            }
        }
        // A due group is looked at when something in it changed, or its repeat is due.
        let due: Vec<String> = tx
            .st
            .groups
            .iter()
            .filter(|(k, g)| match tx.st.timers.get(*k) {
                None => true,
                Some(t) => {
                    tx.st.due_at(&cfg, k, t).is_some_and(|due| due <= now_ms)
                        && (t.dirty || tx.st.repeat_due(&cfg, k, g, now_ms))
                }
            })
            .map(|(k, _)| k.clone())
            .collect();
        let flushes = decide(tx.st, &cfg, &due, now_ms);
        apply_flushes(&mut tx, flushes);
        tx.forget(now_ms);
        out.next_due_ms = tx.st.next_due(&cfg, now_ms);
        let applied = tx.commit(&self.store, now_ms)?;
        self.alert_count.store(st.alerts.len(), Ordering::Relaxed);
        out.enqueued = applied.enqueued;
        out.superseded = applied.superseded;
        Ok(out)
    }

    /// The firing alerts (lease not run out), with their receivers, silences and
    /// inhibitions.
    pub fn alerts(&self, now_ms: i64) -> Vec<AlertView> {
        let st = self.lock();
        let cfg = self.config();
        let live = |a: &&Arc<StoredAlert>| {
            a.alert.status == Status::Firing && !lease_expired(&a.alert, now_ms)
        };
        let inhibitor = Inhibitor::new(
            &cfg.inhibit_rules,
            st.alerts.values().filter(live).map(|a| &a.alert),
        );
        st.alerts
            .values()
            .filter(live)
            .map(|a| AlertView {
                stored: a.clone(),
                receivers: cfg.receivers_for(&a.alert),
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

    /// Alerts held (firing and resolved-not-yet-notified), without waiting for a step.
    pub fn alert_count(&self) -> usize {
        self.alert_count.load(Ordering::Relaxed)
    }

    pub fn silences(&self) -> Vec<Silence> {
        self.lock().silences.values().cloned().collect()
    }

    pub fn silence(&self, id: &str) -> Option<Silence> {
        self.lock().silences.get(id).cloned()
    }

    /// Creates a silence, or updates the one `p.id` names; returns its id.
    pub fn post_silence(&self, p: &PostableSilence, now_ms: i64) -> Result<String, EngineError> {
        let valid = crate::silence::validate(p, now_ms)?;
        let mut st = self.lock();
        let cfg = self.config();
        let mut tx = Tx::new(&mut st, &cfg);
        let silence = match p.id.as_deref().filter(|s| !s.is_empty()) {
            None => Silence::create(valid, fastrand::u128(..), now_ms),
            Some(id) => {
                let existing = tx
                    .st
                    .silences
                    .get(id)
                    .ok_or_else(|| EngineError::NotFound(format!("silence {id} not found")))?;
                match crate::silence::update(existing, valid, now_ms) {
                    crate::silence::Update::InPlace(s) => s,
                    crate::silence::Update::Replace { expired, new } => {
                        if let Some(old) = expired {
                            tx.put_silence(old);
                        }
                        Silence::create(new, fastrand::u128(..), now_ms)
                    }
                }
            }
        };
        let id = silence.id.clone();
        tx.put_silence(silence);
        tx.commit(&self.store, now_ms)?;
        Ok(id)
    }

    /// Expires silence `id` now.
    pub fn expire_silence(&self, id: &str, now_ms: i64) -> Result<(), EngineError> {
        let mut st = self.lock();
        let cfg = self.config();
        let mut tx = Tx::new(&mut st, &cfg);
        let mut s = tx
            .st
            .silences
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("silence {id} not found")))?;
        s.expire(now_ms)?;
        tx.put_silence(s);
        tx.commit(&self.store, now_ms)?;
        Ok(())
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

#[cfg(test)]
mod tests;
