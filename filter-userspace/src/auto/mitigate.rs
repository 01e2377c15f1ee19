//! The detector and its mitigations, as pure logic: fed each tick with the data plane's
//! per-destination counters and the automatic rules' hit counters, and with arrival samples as
//! they come, it decides when a destination is attacked, what to install, and when to lift it.
//! What it decides is done through [`Effects`] (the daemon's maps, or a fake in the tests), and
//! said as [`Event`]s (the audit log).
//!
//! How it decides:
//! - A destination is attacked while one of its group's classes is over its threshold (packets
//!   or bits per second over the last second of counters).
//! - From then on it fingerprints the samples of the attack window (from 300 ms before the
//!   detection) against the destination's baseline (samples from before the attack, at most
//!   [`BASELINE_MAX`]), and installs one rule per vector found: a drop rule for the destination
//!   (dry-run in shadow mode). No fingerprint (too few samples after [`SETTLE`], or none that
//!   covers the attack and spares the baseline): the class's defence: the SYN guard for the
//!   destination's attacked ports on a SYN flood, else a `limit` rule capping the class to the
//!   threshold (an aggregate cap for the destination).
//! - A mitigation is lifted when what it matches (the rule's hits; for the SYN guard, the SYN
//!   rate to the destination) stayed under the threshold for `lift_after`, or when its rule
//!   reached `rule_ttl`. The attack ends when nothing is left and its classes are under their
//!   thresholds.
//! - Traffic the mitigations miss (the destination still over its threshold by more than the
//!   rules match, [`SETTLE`] after the last install) is fingerprinted again, without the
//!   samples the installed fingerprints match.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use filter_common::{AUTO_CLASS_COUNT, AUTO_CLASSES, AutoClass, Counter, auto_mode, proto};
use ipnet::IpNet;
use serde::Serialize;

use super::{
    fingerprint::{self, Features, Fingerprint, Outcome, Params},
    settings::{AutoConfig, Group},
};
use crate::settings::{
    Family, RateSpec, RuleAction, RuleSpec, Synguard, SynguardCompletion, TcpFlags,
};

/// How long after detection the detector waits for enough samples before it falls back.
pub const SETTLE: Duration = Duration::from_secs(2);
/// Baseline samples kept per destination.
pub const BASELINE_MAX: usize = 4096;
/// Recent samples kept per destination (the attack window comes from these).
const RECENT_MAX: usize = 16384;
/// Samples kept in all (recent and baseline, every destination; ~80 bytes each): with many
/// destinations busy at once (a carpet-bombed /16) each keeps its share, at least
/// [`SHARE_MIN`]; destinations under attack share the budget again among themselves (at
/// least 256 recent samples each, for their fingerprints).
const SAMPLES_BUDGET: usize = 1 << 20;
const SHARE_MIN: usize = 16;
/// Samples younger than this are not baseline yet: an attack's first packets arrive before it
/// is detected.
const BASELINE_AGE: Duration = Duration::from_secs(2);
/// A destination with no packet for this long and no attack is forgotten.
const IDLE_FORGET: Duration = Duration::from_secs(300);
/// Most mitigations per attack.
const MITIGATIONS_MAX: usize = 4;
/// Events kept for `GET /v1/attacks`.
const EVENTS_KEPT: usize = 200;

/// A rate measured over the last second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rate {
    pub pps: f64,
    pub bps: f64,
}

impl Rate {
    fn over(&self, limit: &RateSpec) -> bool {
        (limit.pps > 0 && self.pps > limit.pps as f64)
            || (limit.bps > 0 && self.bps > limit.bps as f64)
    }
}

/// What the detector has done through the data plane's maps.
pub trait Effects {
    /// Add these rules after every other rule; returns their ids (from
    /// [`super::settings::AUTO_RULE_ID_MIN`]).
    fn install_rules(&mut self, rules: Vec<RuleSpec>) -> crate::error::Result<Vec<u32>>;
    /// Remove these rules (ids no longer present are skipped).
    fn remove_rules(&mut self, ids: &[u32]) -> crate::error::Result<()>;
    /// Turn these dry-run rules into enforcing ones (shadow mode was left for enforce).
    fn enforce_rules(&mut self, ids: &[u32]) -> crate::error::Result<()>;
    /// The running SYN guard settings.
    fn synguard(&mut self) -> crate::error::Result<Synguard>;
    /// Make the SYN guard `to`.
    fn set_synguard(&mut self, to: &Synguard) -> crate::error::Result<()>;
    /// The monotonic clock now (ticks are stamped when they start; this says when an install
    /// finished, for the detection-to-rule figure).
    fn now(&self) -> Duration;
}

/// An audit event.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Wall clock, milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// attack_detected, rule_installed, defence_applied, no_mitigation, rule_lifted,
    /// defence_lifted, attack_ended.
    pub event: &'static str,
    pub attack: u64,
    pub dst: IpAddr,
    pub group: String,
    pub mode: &'static str,
    /// The event's figures (rates, fingerprint, coverage, latency...).
    #[serde(flatten)]
    pub figures: BTreeMap<&'static str, serde_json::Value>,
}

/// One mitigation of an attack.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mitigation {
    /// A drop rule from a fingerprint.
    Rule {
        id: u32,
        fingerprint: String,
        coverage: f64,
        collateral: f64,
        dry_run: bool,
        #[serde(skip)]
        matcher: Box<Fingerprint>,
        #[serde(skip)]
        state: Watch,
    },
    /// A `limit` rule capping a class to its threshold for the destination.
    Limit {
        id: u32,
        class: &'static str,
        rate: String,
        dry_run: bool,
        #[serde(skip)]
        state: Watch,
    },
    /// The SYN guard for the destination's attacked ports.
    Synguard {
        ports: Vec<u16>,
        /// Shadow mode: what would have been switched on.
        shadow: bool,
        #[serde(skip)]
        before: Box<Synguard>,
        #[serde(skip)]
        after: Box<Synguard>,
        #[serde(skip)]
        state: Watch,
    },
}

/// What lifting a mitigation watches.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    pub installed: Duration,
    /// Since when what it matches stayed under the threshold.
    pub calm_since: Option<Duration>,
    /// Hits at the last tick and when, for the rate.
    pub last_hits: Option<(Duration, Counter)>,
    /// What it matched in all.
    pub hits: Counter,
    pub rate: Rate,
}

/// An attack on one destination.
#[derive(Clone, Debug, Serialize)]
pub struct Attack {
    pub id: u64,
    pub dst: IpAddr,
    pub group: String,
    /// Wall clock at detection, ms since the Unix epoch.
    pub detected_unix_ms: u64,
    #[serde(skip)]
    pub detected: Duration,
    /// The classes over their thresholds at detection.
    pub classes: Vec<&'static str>,
    /// Rates now, by class.
    pub rates: BTreeMap<&'static str, Rate>,
    pub peak_pps: f64,
    pub peak_bps: f64,
    pub mitigations: Vec<Mitigation>,
    /// Seconds from detection to the first mitigation.
    pub time_to_mitigate_s: Option<f64>,
    /// Why nothing is installed yet (waiting for samples, the rule cap...).
    pub pending: Option<String>,
    #[serde(skip)]
    calm_since: Option<Duration>,
    #[serde(skip)]
    last_try: Option<Duration>,
}

struct Dest {
    group: usize,
    history: VecDeque<(Duration, [Counter; AUTO_CLASS_COUNT])>,
    rates: [Rate; AUTO_CLASS_COUNT],
    /// Total packets per second while not attacked, smoothed.
    baseline_pps: f64,
    recent: VecDeque<(Duration, Features)>,
    baseline: VecDeque<Features>,
    attack: Option<Attack>,
    last_seen: Duration,
}

impl Dest {
    fn new(group: usize, now: Duration) -> Dest {
        Dest {
            group,
            history: VecDeque::new(),
            rates: [Rate::default(); AUTO_CLASS_COUNT],
            baseline_pps: 0.0,
            recent: VecDeque::new(),
            baseline: VecDeque::new(),
            attack: None,
            last_seen: now,
        }
    }
}

/// The detector's state across ticks.
pub struct Manager {
    dests: HashMap<IpAddr, Dest>,
    next_attack: u64,
    events: VecDeque<Event>,
    /// Events not yet taken by [`Manager::take_events`].
    fresh: Vec<Event>,
    /// Counters: attacks seen, rules installed, rules lifted, fallbacks applied.
    pub totals: Totals,
    /// Automatic rules in the table that no attack of this manager owns (left by a daemon
    /// that stopped): watched, and lifted the same way.
    orphans: HashMap<u32, Watch>,
    /// Destinations under attack at the last tick.
    attacked: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub attacks: u64,
    pub rules_installed: u64,
    pub rules_lifted: u64,
    pub defences_applied: u64,
    pub samples: u64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn sub(a: Counter, b: Counter) -> Counter {
    Counter {
        packets: a.packets.saturating_sub(b.packets),
        bytes: a.bytes.saturating_sub(b.bytes),
    }
}

fn rate_of(delta: Counter, over: Duration) -> Rate {
    let s = over.as_secs_f64().max(1e-3);
    Rate {
        pps: delta.packets as f64 / s,
        bps: delta.bytes as f64 * 8.0 / s,
    }
}

fn json(v: impl Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The host prefix of an address.
fn host(dst: IpAddr) -> IpNet {
    IpNet::from(dst)
}

/// Cut `s` to `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Default for Manager {
    fn default() -> Self {
        Manager {
            dests: HashMap::new(),
            next_attack: 1,
            events: VecDeque::new(),
            fresh: Vec::new(),
            totals: Totals::default(),
            orphans: HashMap::new(),
            attacked: 0,
        }
    }
}

/// A mitigation's threshold: the first class over at detection decides what "calm" means.
fn class_threshold(g: &Group, class: AutoClass) -> RateSpec {
    g.threshold(class)
        .or_else(|| g.threshold(AutoClass::Total))
        .or_else(|| g.thresholds.iter().flatten().next().copied())
        .unwrap_or(RateSpec { pps: 1, bps: 0 })
}

impl Manager {
    /// A sample of a packet to a protected destination, taken at monotonic time `at`.
    pub fn add_sample(&mut self, cfg: &AutoConfig, at: Duration, f: Features) {
        self.totals.samples += 1;
        let (recent_max, _) = self.shares();
        let attacked = self.attacked;
        let dst = f.dst;
        let d = match self.dests.get_mut(&dst) {
            Some(d) => d,
            None => {
                let Some((group, _)) = cfg.group_of(dst) else {
                    return;
                };
                self.dests
                    .entry(dst)
                    .or_insert_with(|| Dest::new(group, at))
            }
        };
        let recent_max = if d.attack.is_some() {
            (SAMPLES_BUDGET / attacked.max(1)).clamp(256, RECENT_MAX)
        } else {
            recent_max
        };
        d.recent.push_back((at, f));
        while d.recent.len() > recent_max {
            d.recent.pop_front();
        }
    }

    /// Samples each destination may keep now: (recent, baseline).
    fn shares(&self) -> (usize, usize) {
        let each = SAMPLES_BUDGET / (2 * self.dests.len().max(1));
        (
            each.clamp(SHARE_MIN, RECENT_MAX),
            each.clamp(SHARE_MIN, BASELINE_MAX),
        )
    }

    /// Samples kept now, in all.
    pub fn samples_kept(&self) -> usize {
        self.dests
            .values()
            .map(|d| d.recent.len() + d.baseline.len())
            .sum()
    }

    /// The attacks going on, for status and the API.
    pub fn attacks(&self) -> Vec<Attack> {
        let mut v: Vec<Attack> = self
            .dests
            .values()
            .filter_map(|d| d.attack.clone())
            .collect();
        v.sort_by_key(|a| a.id);
        v
    }

    /// The last events (oldest first).
    pub fn recent_events(&self) -> Vec<Event> {
        self.events.iter().cloned().collect()
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.fresh)
    }

    /// Automatic rules installed now.
    pub fn rule_count(&self) -> usize {
        self.dests
            .values()
            .filter_map(|d| d.attack.as_ref())
            .flat_map(|a| &a.mitigations)
            .filter(|m| matches!(m, Mitigation::Rule { .. } | Mitigation::Limit { .. }))
            .count()
    }

    /// Packets per second to every protected destination (for the sampling rate).
    pub fn total_pps(&self) -> f64 {
        self.dests
            .values()
            .map(|d| d.rates[AutoClass::Total as usize].pps)
            .sum()
    }

    fn event(
        &mut self,
        name: &'static str,
        a: &Attack,
        mode: u32,
        figures: Vec<(&'static str, serde_json::Value)>,
    ) {
        let e = Event {
            time_unix_ms: unix_ms(),
            event: name,
            attack: a.id,
            dst: a.dst,
            group: a.group.clone(),
            mode: auto_mode::name(mode),
            figures: figures.into_iter().collect(),
        };
        self.events.push_back(e.clone());
        if self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
        self.fresh.push(e);
    }

    /// One tick: `counters` are every destination's cumulative counters, `rule_hits` the
    /// cumulative hits of the automatic rules present now (a rule missing from it was deleted
    /// by someone else).
    pub fn tick(
        &mut self,
        cfg: &AutoConfig,
        now: Duration,
        counters: &[(IpAddr, [Counter; AUTO_CLASS_COUNT])],
        rule_hits: &HashMap<u32, Counter>,
        fx: &mut dyn Effects,
    ) {
        for (dst, c) in counters {
            let d = match self.dests.get_mut(dst) {
                Some(d) => d,
                None => {
                    let Some((group, _)) = cfg.group_of(*dst) else {
                        continue;
                    };
                    self.dests
                        .entry(*dst)
                        .or_insert_with(|| Dest::new(group, now))
                }
            };
            let changed = d.history.back().is_none_or(|(_, last)| last != c);
            d.history.push_back((now, *c));
            while d.history.len() > 2 && d.history[1].0 + Duration::from_secs(1) <= now {
                d.history.pop_front();
            }
            if let (Some((t0, c0)), Some((t1, c1))) = (d.history.front(), d.history.back()) {
                if *t1 > *t0 {
                    for i in 0..AUTO_CLASS_COUNT {
                        d.rates[i] = rate_of(sub(c1[i], c0[i]), *t1 - *t0);
                    }
                }
            }
            if changed {
                d.last_seen = now;
            }
        }
        let dsts: Vec<IpAddr> = self.dests.keys().copied().collect();
        for dst in dsts {
            self.tick_dest(cfg, now, dst, rule_hits, fx);
        }
        self.watch_orphans(cfg, now, rule_hits, fx);
        self.attacked = self.dests.values().filter(|d| d.attack.is_some()).count();
        self.dests
            .retain(|_, d| d.attack.is_some() || now.saturating_sub(d.last_seen) < IDLE_FORGET);
    }

    /// Automatic rules nobody here installed (a restart): lifted once their hits stayed under
    /// the lowest threshold of any group for `lift_after`, or `rule_ttl` after they were found.
    fn watch_orphans(
        &mut self,
        cfg: &AutoConfig,
        now: Duration,
        rule_hits: &HashMap<u32, Counter>,
        fx: &mut dyn Effects,
    ) {
        let owned: Vec<u32> = self
            .dests
            .values()
            .filter_map(|d| d.attack.as_ref())
            .flat_map(|a| &a.mitigations)
            .filter_map(|m| match m {
                Mitigation::Rule { id, .. } | Mitigation::Limit { id, .. } => Some(*id),
                Mitigation::Synguard { .. } => None,
            })
            .collect();
        self.orphans.retain(|id, _| rule_hits.contains_key(id));
        let lowest = cfg
            .groups
            .iter()
            .flat_map(|g| g.thresholds.iter().flatten())
            .map(|t| t.pps)
            .filter(|&p| p > 0)
            .min()
            .unwrap_or(1);
        let mut lift = Vec::new();
        for (id, hits) in rule_hits.iter().filter(|(id, _)| !owned.contains(id)) {
            let w = self.orphans.entry(*id).or_insert_with(|| Watch {
                installed: now,
                ..Watch::default()
            });
            if let Some((t, last)) = w.last_hits {
                if now > t {
                    w.rate = rate_of(sub(*hits, last), now - t);
                }
            }
            w.last_hits = Some((now, *hits));
            w.hits = *hits;
            if w.rate.pps >= lowest as f64 {
                w.calm_since = None;
            } else if w.calm_since.is_none() {
                w.calm_since = Some(now);
            }
            let calm = w
                .calm_since
                .is_some_and(|c| now.saturating_sub(c) >= cfg.lift_after);
            if calm || now.saturating_sub(w.installed) >= cfg.rule_ttl {
                lift.push((*id, w.hits));
            }
        }
        for (id, hits) in lift {
            if fx.remove_rules(&[id]).is_ok() {
                self.orphans.remove(&id);
                self.totals.rules_lifted += 1;
                let e = Event {
                    time_unix_ms: unix_ms(),
                    event: "rule_lifted",
                    attack: 0,
                    dst: IpAddr::from([0u8, 0, 0, 0]),
                    group: String::new(),
                    mode: auto_mode::name(cfg.mode),
                    figures: [
                        ("rule", json(id)),
                        ("packets", json(hits.packets)),
                        (
                            "why",
                            json("left by an earlier daemon; calm for lift_after"),
                        ),
                    ]
                    .into_iter()
                    .collect(),
                };
                self.events.push_back(e.clone());
                self.fresh.push(e);
            }
        }
    }

    fn tick_dest(
        &mut self,
        cfg: &AutoConfig,
        now: Duration,
        dst: IpAddr,
        rule_hits: &HashMap<u32, Counter>,
        fx: &mut dyn Effects,
    ) {
        let (_, baseline_max) = self.shares();
        let Some(d) = self.dests.get_mut(&dst) else {
            return;
        };
        let Some(g) = cfg.groups.get(d.group) else {
            return;
        };
        let g = g.clone();
        let over: Vec<AutoClass> = AUTO_CLASSES
            .iter()
            .copied()
            .filter(|c| {
                g.threshold(*c)
                    .is_some_and(|t| d.rates[*c as usize].over(&t))
            })
            .collect();
        // Samples old enough, of a destination not attacked, become its baseline.
        if d.attack.is_none() {
            while d
                .recent
                .front()
                .is_some_and(|(t, _)| *t + BASELINE_AGE <= now)
            {
                let (_, f) = d.recent.pop_front().expect("checked");
                d.baseline.push_back(f);
                while d.baseline.len() > baseline_max {
                    d.baseline.pop_front();
                }
            }
            let total = d.rates[AutoClass::Total as usize].pps;
            if over.is_empty() {
                d.baseline_pps = if d.baseline_pps == 0.0 {
                    total
                } else {
                    0.9 * d.baseline_pps + 0.1 * total
                };
            }
        } else {
            // Keep the attack window bounded: ten seconds.
            while d
                .recent
                .front()
                .is_some_and(|(t, _)| *t + Duration::from_secs(10) < now)
            {
                d.recent.pop_front();
            }
        }
        let rates: BTreeMap<&'static str, Rate> = AUTO_CLASSES
            .iter()
            .filter(|c| g.threshold(**c).is_some() || **c == AutoClass::Total)
            .map(|c| (c.name(), d.rates[*c as usize]))
            .collect();
        let total = d.rates[AutoClass::Total as usize];
        if d.attack.is_none() {
            if over.is_empty() {
                return;
            }
            let id = self.next_attack;
            self.next_attack += 1;
            let a = Attack {
                id,
                dst,
                group: g.name.clone(),
                detected_unix_ms: unix_ms(),
                detected: now,
                classes: over.iter().map(|c| c.name()).collect(),
                rates: rates.clone(),
                peak_pps: total.pps,
                peak_bps: total.bps,
                mitigations: Vec::new(),
                time_to_mitigate_s: None,
                pending: Some("fingerprinting".into()),
                calm_since: None,
                last_try: None,
            };
            self.totals.attacks += 1;
            let thresholds: BTreeMap<&str, String> = over
                .iter()
                .filter_map(|c| g.threshold(*c).map(|t| (c.name(), t.to_string())))
                .collect();
            let figures = vec![
                ("classes", json(&a.classes)),
                ("rates", json(&rates)),
                ("thresholds", json(thresholds)),
                ("baseline_pps", json(round2(d.baseline_pps))),
            ];
            d.attack = Some(a.clone());
            self.event("attack_detected", &a, cfg.mode, figures);
        }
        let mut a = self
            .dests
            .get_mut(&dst)
            .and_then(|d| d.attack.take())
            .expect("an attack");
        a.rates = rates;
        a.peak_pps = a.peak_pps.max(total.pps);
        a.peak_bps = a.peak_bps.max(total.bps);
        self.watch(cfg, &g, now, &mut a, rule_hits, fx);
        self.mitigate(cfg, &g, now, &mut a, &over, fx);
        // Over: nothing left installed and every class under its threshold for lift_after.
        let done = if a.mitigations.is_empty() && over.is_empty() {
            let since = *a.calm_since.get_or_insert(now);
            now.saturating_sub(since) >= cfg.lift_after || a.time_to_mitigate_s.is_some()
        } else {
            a.calm_since = None;
            false
        };
        if done {
            let figures = vec![
                ("peak_pps", json(round2(a.peak_pps))),
                ("peak_bps", json(round2(a.peak_bps))),
                (
                    "duration_s",
                    json(round2(now.saturating_sub(a.detected).as_secs_f64())),
                ),
            ];
            self.event("attack_ended", &a, cfg.mode, figures);
            if let Some(d) = self.dests.get_mut(&dst) {
                // What came during the attack is not baseline.
                d.recent.clear();
            }
        } else if let Some(d) = self.dests.get_mut(&dst) {
            d.attack = Some(a);
        }
    }

    /// Lift what stayed calm for `lift_after` (or outlived `rule_ttl`, or was deleted).
    fn watch(
        &mut self,
        cfg: &AutoConfig,
        g: &Group,
        now: Duration,
        a: &mut Attack,
        rule_hits: &HashMap<u32, Counter>,
        fx: &mut dyn Effects,
    ) {
        let syn_rate = a.rates.get("syn").copied().or_else(|| {
            self.dests
                .get(&a.dst)
                .map(|d| d.rates[AutoClass::Syn as usize])
        });
        let first = a
            .classes
            .first()
            .and_then(|n| AutoClass::from_name(n))
            .unwrap_or(AutoClass::Total);
        let limit = class_threshold(g, first);
        if cfg.mode == auto_mode::ENFORCE {
            self.enforce(cfg, a, fx);
        }
        let mut keep = Vec::new();
        for mut m in std::mem::take(&mut a.mitigations) {
            let (rate, gone, ttl_over) = match &mut m {
                Mitigation::Rule { id, state, .. } | Mitigation::Limit { id, state, .. } => {
                    match rule_hits.get(id) {
                        None => (Rate::default(), true, false),
                        Some(h) => {
                            if let Some((t, last)) = state.last_hits {
                                if now > t {
                                    state.rate = rate_of(sub(*h, last), now - t);
                                }
                            }
                            state.last_hits = Some((now, *h));
                            state.hits = *h;
                            let age = now.saturating_sub(state.installed);
                            (state.rate, false, age >= cfg.rule_ttl)
                        }
                    }
                }
                Mitigation::Synguard { .. } => {
                    let syn = self
                        .dests
                        .get(&a.dst)
                        .map(|d| d.rates[AutoClass::Syn as usize])
                        .or(syn_rate)
                        .unwrap_or_default();
                    (syn, false, false)
                }
            };
            let syn_limit = class_threshold(g, AutoClass::Syn);
            let calm_limit = match &m {
                Mitigation::Synguard { .. } => syn_limit,
                _ => limit,
            };
            let state = match &mut m {
                Mitigation::Rule { state, .. }
                | Mitigation::Limit { state, .. }
                | Mitigation::Synguard { state, .. } => state,
            };
            if rate.over(&calm_limit) {
                state.calm_since = None;
            } else if state.calm_since.is_none() {
                state.calm_since = Some(now);
            }
            let calm_for = state
                .calm_since
                .map_or(Duration::ZERO, |s| now.saturating_sub(s));
            let why = if gone {
                Some("deleted by someone else")
            } else if ttl_over {
                Some("rule_ttl reached")
            } else if calm_for >= cfg.lift_after {
                Some("under the threshold for lift_after")
            } else {
                None
            };
            match why {
                None => keep.push(m),
                Some(why) => self.lift(cfg, now, a, m, why, gone, fx, &mut keep),
            }
        }
        a.mitigations = keep;
    }

    /// Shadow mode was left for enforce: the attack's dry-run rules start dropping, and a SYN
    /// guard that was only named is switched on.
    fn enforce(&mut self, cfg: &AutoConfig, a: &mut Attack, fx: &mut dyn Effects) {
        let ids: Vec<u32> = a
            .mitigations
            .iter()
            .filter_map(|m| match m {
                Mitigation::Rule {
                    id, dry_run: true, ..
                }
                | Mitigation::Limit {
                    id, dry_run: true, ..
                } => Some(*id),
                _ => None,
            })
            .collect();
        if !ids.is_empty() {
            match fx.enforce_rules(&ids) {
                Ok(()) => {
                    for m in &mut a.mitigations {
                        if let Mitigation::Rule { dry_run, .. }
                        | Mitigation::Limit { dry_run, .. } = m
                        {
                            *dry_run = false;
                        }
                    }
                    self.event("rule_enforced", a, cfg.mode, vec![("rules", json(&ids))]);
                }
                Err(e) => self.event(
                    "enforce_failed",
                    a,
                    cfg.mode,
                    vec![("error", json(crate::error::one_line(&e)))],
                ),
            }
        }
        for m in &mut a.mitigations {
            if let Mitigation::Synguard {
                shadow,
                before,
                after,
                ports,
                ..
            } = m
            {
                if !*shadow {
                    continue;
                }
                let r = fx.synguard().and_then(|now| {
                    let to = guarded(&now, a.dst, ports);
                    if to != now {
                        fx.set_synguard(&to)?;
                    }
                    Ok((now, to))
                });
                if let Ok((now, to)) = r {
                    **before = now;
                    **after = to;
                    *shadow = false;
                }
            }
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, each argument distinct"
    )]
    fn lift(
        &mut self,
        cfg: &AutoConfig,
        now: Duration,
        a: &Attack,
        m: Mitigation,
        why: &str,
        gone: bool,
        fx: &mut dyn Effects,
        keep: &mut Vec<Mitigation>,
    ) {
        let (name, result, figures) = match &m {
            Mitigation::Rule {
                id,
                fingerprint,
                state,
                ..
            }
            | Mitigation::Limit {
                id,
                rate: fingerprint,
                state,
                ..
            } => {
                let r = if gone {
                    Ok(())
                } else {
                    fx.remove_rules(&[*id])
                };
                (
                    "rule_lifted",
                    r,
                    vec![
                        ("rule", json(id)),
                        ("match", json(fingerprint)),
                        ("packets", json(state.hits.packets)),
                        ("bytes", json(state.hits.bytes)),
                        (
                            "installed_s",
                            json(round2(now.saturating_sub(state.installed).as_secs_f64())),
                        ),
                    ],
                )
            }
            Mitigation::Synguard {
                ports,
                shadow,
                before,
                after,
                state,
            } => {
                let r = if *shadow {
                    Ok(())
                } else {
                    release_synguard(fx, a.dst, before, after)
                };
                (
                    "defence_lifted",
                    r,
                    vec![
                        ("defence", json("synguard")),
                        ("ports", json(ports)),
                        (
                            "installed_s",
                            json(round2(now.saturating_sub(state.installed).as_secs_f64())),
                        ),
                    ],
                )
            }
        };
        match result {
            Ok(()) => {
                if name == "rule_lifted" {
                    self.totals.rules_lifted += 1;
                }
                let mut figures = figures;
                figures.push(("why", json(why)));
                self.event(name, a, cfg.mode, figures);
            }
            Err(e) => {
                // Kept, and tried again next tick.
                self.event(
                    "lift_failed",
                    a,
                    cfg.mode,
                    vec![("error", json(crate::error::one_line(&e)))],
                );
                keep.push(m);
            }
        }
    }

    /// Install what the attack needs: on detection, and again for what the mitigations miss.
    fn mitigate(
        &mut self,
        cfg: &AutoConfig,
        g: &Group,
        now: Duration,
        a: &mut Attack,
        over: &[AutoClass],
        fx: &mut dyn Effects,
    ) {
        if over.is_empty() || a.mitigations.len() >= MITIGATIONS_MAX {
            return;
        }
        let Some(d) = self.dests.get(&a.dst) else {
            return;
        };
        if !a.mitigations.is_empty() {
            // Something is installed: try again only when it has had time to act and the
            // traffic it does not match is still over the threshold.
            let last = a
                .mitigations
                .iter()
                .map(|m| match m {
                    Mitigation::Rule { state, .. }
                    | Mitigation::Limit { state, .. }
                    | Mitigation::Synguard { state, .. } => state.installed,
                })
                .max()
                .unwrap_or(now);
            if now.saturating_sub(last) < SETTLE {
                return;
            }
            let matched: f64 = a
                .mitigations
                .iter()
                .map(|m| match m {
                    Mitigation::Rule { state, .. } | Mitigation::Limit { state, .. } => {
                        state.rate.pps
                    }
                    // The guard answers every SYN to its ports.
                    Mitigation::Synguard { .. } => d.rates[AutoClass::Syn as usize].pps,
                })
                .sum();
            let first = over[0];
            let t = class_threshold(g, first);
            let rest = (d.rates[first as usize].pps - matched).max(0.0);
            if t.pps == 0 || rest <= t.pps as f64 {
                return;
            }
        }
        if a.last_try
            .is_some_and(|t| now.saturating_sub(t) < Duration::from_millis(500))
            && a.time_to_mitigate_s.is_some()
        {
            return;
        }
        a.last_try = Some(now);
        // The attack window: from just before the detecting tick (a longer look back would
        // weigh the calm before the attack, sampled at a higher rate, too much).
        let from = a.detected.saturating_sub(Duration::from_millis(300));
        let installed: Vec<&Fingerprint> = a
            .mitigations
            .iter()
            .filter_map(|m| match m {
                Mitigation::Rule { matcher, .. } => Some(&**matcher),
                _ => None,
            })
            .collect();
        let attack: Vec<Features> = d
            .recent
            .iter()
            .filter(|(t, _)| *t >= from)
            .map(|(_, f)| f)
            .filter(|f| !installed.iter().any(|fp| fp.matches(f)))
            .cloned()
            .collect();
        let baseline: Vec<Features> = d.baseline.iter().cloned().collect();
        let now_pps = d.rates[AutoClass::Total as usize].pps.max(1.0);
        let share = (d.baseline_pps / now_pps).clamp(0.0, 0.9);
        let params = Params {
            coverage: cfg.coverage,
            collateral: cfg.max_collateral,
            ..Params::default()
        };
        let outcome = fingerprint::search(&attack, &baseline, share, &params);
        let waited = now.saturating_sub(a.detected);
        let shadow = cfg.mode == auto_mode::SHADOW;
        match outcome {
            Outcome::Found {
                fingerprints,
                coverage,
                collateral,
            } => {
                let room = (cfg.max_rules as usize).saturating_sub(self.rule_count());
                if room < fingerprints.len() {
                    a.pending = Some(format!(
                        "auto.max_rules ({}) reached: {} rule(s) found, room for {room}",
                        cfg.max_rules,
                        fingerprints.len()
                    ));
                    if room == 0 {
                        return;
                    }
                }
                let fps: Vec<Fingerprint> = fingerprints.into_iter().take(room).collect();
                let specs: Vec<RuleSpec> = fps
                    .iter()
                    .map(|fp| rule_of(fp, a.dst, a.id, shadow))
                    .collect();
                match fx.install_rules(specs.clone()) {
                    Ok(ids) => {
                        for ((fp, id), spec) in fps.into_iter().zip(ids).zip(specs) {
                            let desc = fp.describe(a.dst);
                            self.totals.rules_installed += 1;
                            let latency = round3(fx.now().saturating_sub(a.detected).as_secs_f64());
                            a.time_to_mitigate_s.get_or_insert(round2(latency));
                            self.event(
                                "rule_installed",
                                a,
                                cfg.mode,
                                vec![
                                    ("rule", json(id)),
                                    ("match", json(&desc)),
                                    ("dry_run", json(spec.dry_run)),
                                    ("coverage", json(round2(fp.coverage * 100.0))),
                                    ("collateral", json(round2(fp.collateral * 100.0))),
                                    ("total_coverage", json(round2(coverage * 100.0))),
                                    ("total_collateral", json(round2(collateral * 100.0))),
                                    ("attack_samples", json(attack.len())),
                                    ("baseline_samples", json(baseline.len())),
                                    ("detect_to_rule_s", json(latency)),
                                ],
                            );
                            a.mitigations.push(Mitigation::Rule {
                                id,
                                fingerprint: desc,
                                coverage: fp.coverage,
                                collateral: fp.collateral,
                                dry_run: shadow,
                                matcher: Box::new(fp),
                                state: Watch {
                                    installed: now,
                                    ..Watch::default()
                                },
                            });
                        }
                        a.pending = None;
                    }
                    Err(e) => {
                        a.pending = Some(format!(
                            "installing the rule failed: {}",
                            crate::error::one_line(&e)
                        ));
                    }
                }
            }
            Outcome::TooFewSamples { have, need } if waited < SETTLE => {
                a.pending = Some(format!("waiting for samples ({have} of {need})"));
            }
            other => {
                if !a.mitigations.is_empty() {
                    // Already mitigated: what is left has no fingerprint; leave it.
                    a.pending = Some(match other {
                        Outcome::NotFound { why, .. } => format!("the rest: {why}"),
                        _ => "the rest: too few samples".into(),
                    });
                    return;
                }
                let why = match other {
                    Outcome::NotFound { why, .. } => why,
                    Outcome::TooFewSamples { have, need } => {
                        format!("{have} samples in {SETTLE:?}, {need} needed")
                    }
                    Outcome::Found { .. } => unreachable!("handled above"),
                };
                self.fallback(cfg, g, now, a, over, &attack, &why, fx);
            }
        }
    }

    /// No fingerprint: the SYN guard on a SYN flood, else a cap of the class.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, each argument distinct"
    )]
    fn fallback(
        &mut self,
        cfg: &AutoConfig,
        g: &Group,
        now: Duration,
        a: &mut Attack,
        over: &[AutoClass],
        attack: &[Features],
        why: &str,
        fx: &mut dyn Effects,
    ) {
        let shadow = cfg.mode == auto_mode::SHADOW;
        let detected = a.detected;
        let latency = |fx: &dyn Effects| round3(fx.now().saturating_sub(detected).as_secs_f64());
        if over.contains(&AutoClass::Syn) {
            let ports = syn_ports(attack);
            if !ports.is_empty() {
                let r = (|| {
                    let before = fx.synguard()?;
                    let after = guarded(&before, a.dst, &ports);
                    if !shadow && after != before {
                        fx.set_synguard(&after)?;
                    }
                    Ok::<_, crate::Error>((before, after))
                })();
                match r {
                    Ok((before, after)) => {
                        let latency = latency(fx);
                        self.totals.defences_applied += 1;
                        a.time_to_mitigate_s.get_or_insert(latency);
                        a.pending = None;
                        self.event(
                            "defence_applied",
                            a,
                            cfg.mode,
                            vec![
                                ("defence", json("synguard")),
                                ("ports", json(&ports)),
                                ("shadow", json(shadow)),
                                ("why", json(why)),
                                ("detect_to_rule_s", json(latency)),
                            ],
                        );
                        a.mitigations.push(Mitigation::Synguard {
                            ports,
                            shadow,
                            before: Box::new(before),
                            after: Box::new(after),
                            state: Watch {
                                installed: now,
                                ..Watch::default()
                            },
                        });
                        return;
                    }
                    Err(e) => {
                        self.event(
                            "defence_failed",
                            a,
                            cfg.mode,
                            vec![
                                ("defence", json("synguard")),
                                ("error", json(crate::error::one_line(&e))),
                            ],
                        );
                    }
                }
            }
        }
        if self.rule_count() >= cfg.max_rules as usize {
            a.pending = Some(format!("auto.max_rules ({}) reached", cfg.max_rules));
            return;
        }
        let class = over[0];
        let rate = class_threshold(g, class);
        let spec = limit_rule_of(class, rate, a.dst, a.id, shadow);
        match fx.install_rules(vec![spec]) {
            Ok(ids) => {
                let latency = latency(fx);
                let id = ids.first().copied().unwrap_or(0);
                self.totals.defences_applied += 1;
                a.time_to_mitigate_s.get_or_insert(latency);
                a.pending = None;
                self.event(
                    "defence_applied",
                    a,
                    cfg.mode,
                    vec![
                        ("defence", json("limit")),
                        ("rule", json(id)),
                        ("class", json(class.name())),
                        ("rate", json(rate.to_string())),
                        ("dry_run", json(shadow)),
                        ("why", json(why)),
                        ("detect_to_rule_s", json(latency)),
                    ],
                );
                a.mitigations.push(Mitigation::Limit {
                    id,
                    class: class.name(),
                    rate: rate.to_string(),
                    dry_run: shadow,
                    state: Watch {
                        installed: now,
                        ..Watch::default()
                    },
                });
            }
            Err(e) => {
                a.pending = Some(format!(
                    "installing the cap failed: {}",
                    crate::error::one_line(&e)
                ));
            }
        }
    }
}

/// The destination ports a SYN flood aims at, when a few take almost all of it (at most 8).
fn syn_ports(attack: &[Features]) -> Vec<u16> {
    let mut counts: HashMap<u16, usize> = HashMap::new();
    let mut n = 0;
    for f in attack {
        if f.proto == proto::TCP && f.tcp_flags.is_some_and(|fl| fl & 0x12 == 0x02) {
            n += 1;
            if let Some(p) = f.dport {
                *counts.entry(p).or_default() += 1;
            }
        }
    }
    let mut v: Vec<(u16, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut out = Vec::new();
    let mut got = 0;
    for (p, c) in v.into_iter().take(8) {
        out.push(p);
        got += c;
        if got * 10 >= n * 9 {
            out.sort_unstable();
            return out;
        }
    }
    Vec::new()
}

/// The SYN guard `g` extended to guard `ports` of `dst`.
fn guarded(g: &Synguard, dst: IpAddr, ports: &[u16]) -> Synguard {
    let mut to = g.clone();
    if !to.enabled {
        to.enabled = true;
        to.dst = vec![host(dst)];
        to.when_over = None;
        to.completion = SynguardCompletion::Auto;
    } else if !to.dst.is_empty() && !to.dst.iter().any(|n| n.contains(&dst)) {
        to.dst.push(host(dst));
        to.dst.sort();
    }
    for p in ports {
        if !to.ports.contains(p) {
            to.ports.push(*p);
        }
    }
    to.ports.sort_unstable();
    to
}

/// Undo [`guarded`]: the whole change when nobody touched the guard since; else only the
/// destination it added.
fn release_synguard(
    fx: &mut dyn Effects,
    dst: IpAddr,
    before: &Synguard,
    after: &Synguard,
) -> crate::error::Result<()> {
    let now = fx.synguard()?;
    if &now == after {
        return fx.set_synguard(before);
    }
    if before.dst.contains(&host(dst)) || !now.dst.contains(&host(dst)) {
        return Ok(());
    }
    let mut to = now.clone();
    to.dst.retain(|n| *n != host(dst));
    if to.dst.is_empty() {
        // Ours was the last destination: the guard would now guard everything.
        to.enabled = false;
    }
    fx.set_synguard(&to)
}

fn family_of(dst: IpAddr) -> Family {
    if dst.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

/// The drop rule for a fingerprint (dry-run in shadow mode).
pub fn rule_of(fp: &Fingerprint, dst: IpAddr, attack: u64, dry_run: bool) -> RuleSpec {
    let comment = format!(
        "auto a{attack} {:.1}%/{:.2}%: {}",
        fp.coverage * 100.0,
        fp.collateral * 100.0,
        fp.describe(dst)
    );
    RuleSpec {
        id: 0,
        family: Some(family_of(dst)),
        proto: fp.proto,
        src: fp.src,
        dst: Some(host(dst)),
        src_port: fp.sport,
        dst_port: fp.dport,
        tcp_flags: fp.tcp_flags.map(|(value, mask)| TcpFlags { value, mask }),
        length: fp.length,
        ttl: fp.ttl,
        icmp_type: fp.icmp_type,
        icmp_code: None,
        fragment: fp.fragment,
        action: RuleAction::Drop,
        dry_run,
        comment: Some(cut(&comment, filter_common::COMMENT_MAX)),
    }
}

/// A `limit` rule capping `class` to `rate` for the destination.
pub fn limit_rule_of(
    class: AutoClass,
    rate: RateSpec,
    dst: IpAddr,
    attack: u64,
    dry_run: bool,
) -> RuleSpec {
    let v6 = dst.is_ipv6();
    let mut r = RuleSpec {
        id: 0,
        family: Some(family_of(dst)),
        proto: None,
        src: None,
        dst: Some(host(dst)),
        src_port: None,
        dst_port: None,
        tcp_flags: None,
        length: None,
        ttl: None,
        icmp_type: None,
        icmp_code: None,
        fragment: None,
        action: RuleAction::Limit(rate),
        dry_run,
        comment: Some(cut(
            &format!("auto a{attack}: cap {} to {rate}", class.name()),
            filter_common::COMMENT_MAX,
        )),
    };
    match class {
        AutoClass::Total => {}
        AutoClass::Syn => {
            r.proto = Some(proto::TCP);
            r.tcp_flags = Some(TcpFlags {
                value: 0x02,
                mask: 0x12,
            });
        }
        AutoClass::Udp => r.proto = Some(proto::UDP),
        AutoClass::Icmp => r.proto = Some(if v6 { proto::ICMPV6 } else { proto::ICMP }),
        AutoClass::Fragments => r.fragment = Some(true),
    }
    r
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::auto::settings::AutoFile;

    /// The maps, as far as the detector sees them.
    #[derive(Default)]
    struct Fake {
        rules: Vec<RuleSpec>,
        synguard: Synguard,
        now: Duration,
    }

    impl Effects for Fake {
        fn install_rules(&mut self, rules: Vec<RuleSpec>) -> crate::error::Result<Vec<u32>> {
            let mut ids = Vec::new();
            for mut r in rules {
                r.id = 1_000_000 + self.rules.len() as u32;
                ids.push(r.id);
                self.rules.push(r);
            }
            Ok(ids)
        }
        fn remove_rules(&mut self, ids: &[u32]) -> crate::error::Result<()> {
            self.rules.retain(|r| !ids.contains(&r.id));
            Ok(())
        }
        fn enforce_rules(&mut self, ids: &[u32]) -> crate::error::Result<()> {
            for r in self.rules.iter_mut().filter(|r| ids.contains(&r.id)) {
                r.dry_run = false;
            }
            Ok(())
        }
        fn synguard(&mut self) -> crate::error::Result<Synguard> {
            Ok(self.synguard.clone())
        }
        fn set_synguard(&mut self, to: &Synguard) -> crate::error::Result<()> {
            self.synguard = to.clone();
            Ok(())
        }
        fn now(&self) -> Duration {
            self.now
        }
    }

    const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

    fn config(mode: &str) -> AutoConfig {
        #[derive(serde::Deserialize)]
        struct F {
            auto: AutoFile,
        }
        let text = format!(
            "[auto]\nmode = \"{mode}\"\nlift_after = \"3s\"\n[[auto.groups]]\nname = \"web\"\n\
             prefixes = [\"198.18.0.0/24\"]\nthresholds = {{ udp = \"1k\" }}\n"
        );
        let f: F = toml::from_str(&text).expect("toml");
        f.auto.check().expect("valid")
    }

    fn sample(src: u32, sport: u16, dport: u16, len: u16) -> Features {
        Features {
            src: IpAddr::V4(Ipv4Addr::from(src)),
            dst: IpAddr::V4(DST),
            proto: 17,
            sport: Some(sport),
            dport: Some(dport),
            ip_len: len,
            ttl: 50,
            tcp_flags: None,
            fragment: false,
            icmp_type: None,
        }
    }

    /// Counters after `udp` UDP packets in all.
    fn counters(udp: u64) -> Vec<(IpAddr, [Counter; AUTO_CLASS_COUNT])> {
        let c = Counter {
            packets: udp,
            bytes: udp * 500,
        };
        let mut all = [Counter::default(); AUTO_CLASS_COUNT];
        all[AutoClass::Total as usize] = c;
        all[AutoClass::Udp as usize] = c;
        vec![(IpAddr::V4(DST), all)]
    }

    fn names(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(|e| e.event).collect()
    }

    #[test]
    fn an_attack_gets_a_rule_that_is_lifted_once_calm() {
        let cfg = config("enforce");
        let mut m = Manager::default();
        let mut fx = Fake::default();
        let ms = Duration::from_millis;
        let mut udp = 0u64;
        let mut t = Duration::ZERO;
        let mut hits: HashMap<u32, Counter> = HashMap::new();
        // Five seconds of a client: 100 pps to udp/53; baseline samples.
        for i in 0..25u32 {
            // Sampled 1 in 10, as the attack will be.
            for j in 0..2u32 {
                m.add_sample(
                    &cfg,
                    t,
                    sample(0xc633_6400 + i * 2 + j, 40000 + i as u16, 53, 80),
                );
            }
            udp += 20;
            t += ms(200);
            fx.now = t;
            m.tick(&cfg, t, &counters(udp), &hits, &mut fx);
            assert!(m.take_events().is_empty(), "calm at tick {i}");
        }
        // The attack: 20k pps of NTP replies.
        let mut installed = None;
        for i in 0..5u32 {
            for j in 0..400u32 {
                m.add_sample(
                    &cfg,
                    t,
                    sample(0x0a00_0000 + i * 400 + j * 7919, 123, 40000, 468),
                );
            }
            udp += 4000;
            t += ms(200);
            fx.now = t + ms(3);
            m.tick(&cfg, t, &counters(udp), &hits, &mut fx);
            let ev = m.take_events();
            if !ev.is_empty() {
                assert_eq!(names(&ev), ["attack_detected", "rule_installed"]);
                installed = Some(ev[1].clone());
                break;
            }
        }
        let e = installed.expect("a rule within a second");
        assert_eq!(e.figures["detect_to_rule_s"], json(0.003), "{e:?}");
        assert_eq!(fx.rules.len(), 1);
        let r = &fx.rules[0];
        assert_eq!(r.src_port, Some((123, 123)));
        assert_eq!(r.dst, Some("198.18.0.10/32".parse().unwrap()));
        assert!(!r.dry_run);
        assert!(
            r.comment.as_deref().unwrap_or("").starts_with("auto a1 "),
            "{r:?}"
        );
        let id = r.id;
        // Still matching 20k pps: kept however long.
        let mut h = 0u64;
        for _ in 0..30 {
            h += 4000;
            hits.insert(
                id,
                Counter {
                    packets: h,
                    bytes: h * 500,
                },
            );
            t += ms(200);
            m.tick(&cfg, t, &counters(udp + h), &hits, &mut fx);
        }
        assert_eq!(fx.rules.len(), 1, "kept while it matches");
        assert!(m.take_events().is_empty());
        // The flood stops: lifted after lift_after (3 s) of calm, then the attack ends.
        udp += h;
        let mut lifted_at = None;
        for i in 0..30 {
            udp += 20;
            t += ms(200);
            m.tick(&cfg, t, &counters(udp), &hits, &mut fx);
            let ev = m.take_events();
            if names(&ev).contains(&"rule_lifted") {
                lifted_at = Some(i);
                assert_eq!(names(&ev), ["rule_lifted", "attack_ended"], "{ev:?}");
                break;
            }
        }
        let i = lifted_at.expect("lifted");
        assert!(
            (14..=17).contains(&i),
            "lifted after about 3 s of calm: tick {i}"
        );
        assert!(fx.rules.is_empty());
        assert!(m.attacks().is_empty());
    }

    #[test]
    fn a_rule_deleted_by_hand_is_forgotten_and_shadow_rules_are_dry_run() {
        let cfg = config("shadow");
        let mut m = Manager::default();
        let mut fx = Fake::default();
        let ms = Duration::from_millis;
        let mut t = ms(200);
        let hits = HashMap::new();
        m.tick(&cfg, t, &counters(0), &hits, &mut fx);
        for j in 0..400u32 {
            m.add_sample(&cfg, t, sample(0x0a00_0000 + j * 7919, 123, 40000, 468));
        }
        t += ms(200);
        m.tick(&cfg, t, &counters(4000), &hits, &mut fx);
        assert_eq!(fx.rules.len(), 1);
        assert!(fx.rules[0].dry_run, "shadow: dry-run");
        // Gone from the table (the operator deleted it): lifted, said why.
        let hits = HashMap::new();
        t += ms(200);
        m.tick(&cfg, t, &counters(8000), &hits, &mut fx);
        let ev = m.take_events();
        let lifted = ev
            .iter()
            .find(|e| e.event == "rule_lifted")
            .expect("lifted");
        assert_eq!(lifted.figures["why"], json("deleted by someone else"));
    }

    #[test]
    fn a_rule_left_by_an_earlier_daemon_is_lifted_once_calm() {
        let cfg = config("enforce");
        let mut m = Manager::default();
        let mut fx = Fake::default();
        fx.install_rules(vec![limit_rule_of(
            AutoClass::Udp,
            RateSpec { pps: 1000, bps: 0 },
            IpAddr::V4(DST),
            9,
            false,
        )])
        .expect("install");
        let id = fx.rules[0].id;
        let mut t = Duration::ZERO;
        let mut lifted_at = None;
        for i in 0..40 {
            t += Duration::from_millis(200);
            // Busy for two seconds, then nothing.
            let h = 4000 * (i.min(10) as u64);
            let hits = HashMap::from([(
                id,
                Counter {
                    packets: h,
                    bytes: h,
                },
            )]);
            if fx.rules.is_empty() {
                break;
            }
            m.tick(&cfg, t, &counters(0), &hits, &mut fx);
            if m.take_events().iter().any(|e| e.event == "rule_lifted") {
                lifted_at = Some(i);
            }
        }
        let i = lifted_at.expect("lifted");
        assert!(
            (24..=27).contains(&i),
            "3 s after its hits stopped: tick {i}"
        );
        assert!(fx.rules.is_empty());
    }

    #[test]
    fn memory_stays_bounded_when_a_whole_prefix_is_busy() {
        let mut cfg = config("enforce");
        cfg.groups[0].prefixes = vec!["198.18.0.0/16".parse().unwrap()];
        let mut m = Manager::default();
        let mut fx = Fake::default();
        let hits = HashMap::new();
        let mut t = Duration::ZERO;
        // 65,536 destinations, each sent samples for a while (carpet bombing of a /16).
        for round in 0..40u32 {
            for i in 0..65_536u32 {
                let mut f = sample(0x0a00_0000 + i, 1000, 53, 80);
                f.dst = IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i));
                m.add_sample(&cfg, t, f);
            }
            t += Duration::from_secs(1);
            if round % 10 == 9 {
                m.tick(&cfg, t, &[], &hits, &mut fx);
            }
        }
        let kept = m.samples_kept();
        assert!(
            kept <= 65_536 * 2 * SHARE_MIN + SAMPLES_BUDGET,
            "{kept} samples kept for 65,536 destinations"
        );
    }
}
