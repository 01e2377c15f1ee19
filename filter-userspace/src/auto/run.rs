//! The daemon's half of automatic mitigation: a thread that drains the arrival samples into
//! the [`Manager`], a tick every [`TICK`] that feeds it the counters and carries out what it
//! decides under the state lock, the audit log, the metrics and the sampling rate.

use std::{
    collections::HashMap,
    io::Write as _,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use filter_common::{Counter, auto_mode};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, core::Collector};
use tracing::{info, warn};

use super::{
    fingerprint,
    kernel::{AutoMaps, AutoReader},
    mitigate::{Effects, Event, Manager},
    settings::{AUTO_RULE_ID_MIN, AutoConfig, is_auto_rule},
};
use crate::{
    daemon::Shared,
    error::{Error, Result, one_line},
    settings::{RuleSpec, Synguard},
    state::State,
};

/// How often the detector looks at the counters.
pub const TICK: Duration = Duration::from_millis(200);

/// The monotonic clock the data plane stamps samples with (`bpf_ktime_get_ns`).
pub fn monotonic() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The detector as the daemon holds it.
#[derive(Default)]
pub struct Auto {
    manager: Mutex<Manager>,
    pub metrics: AutoMetrics,
}

impl Auto {
    pub fn manager(&self) -> MutexGuard<'_, Manager> {
        self.manager.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `floodgate_auto_*`.
#[derive(Clone)]
pub struct AutoMetrics {
    pub mode: IntGauge,
    pub attacks_active: IntGauge,
    pub attacks: IntCounter,
    pub rules: IntGauge,
    pub rules_installed: IntCounter,
    pub rules_lifted: IntCounter,
    pub defences_applied: IntCounter,
    pub samples: IntCounter,
    pub samples_lost: IntGauge,
    pub detect_to_mitigation: Histogram,
}

impl Default for AutoMetrics {
    fn default() -> Self {
        let g = |n: &str, h: &str| IntGauge::new(n, h).expect("valid metric");
        let c = |n: &str, h: &str| IntCounter::new(n, h).expect("valid metric");
        AutoMetrics {
            mode: g(
                "floodgate_auto_mode",
                "Automatic mitigation: 0 off, 1 shadow (dry-run rules), 2 enforce.",
            ),
            attacks_active: g(
                "floodgate_auto_attacks_active",
                "Destinations under attack now (over a host group threshold or still mitigated).",
            ),
            attacks: c(
                "floodgate_auto_attacks_total",
                "Attacks detected on protected destinations.",
            ),
            rules: g(
                "floodgate_auto_rules",
                "Automatic rules installed now (fingerprint drop rules and class caps).",
            ),
            rules_installed: c(
                "floodgate_auto_rules_installed_total",
                "Fingerprint rules installed by automatic mitigation.",
            ),
            rules_lifted: c(
                "floodgate_auto_rules_lifted_total",
                "Automatic rules lifted (calm for lift_after, rule_ttl, or deleted).",
            ),
            defences_applied: c(
                "floodgate_auto_defences_applied_total",
                "Fallback defences applied (SYN guard, class cap) when no fingerprint was found.",
            ),
            samples: c(
                "floodgate_auto_samples_total",
                "Arrival samples of protected destinations read by the detector.",
            ),
            samples_lost: g(
                "floodgate_auto_samples_lost",
                "Arrival samples lost to a full ring (since the maps were made).",
            ),
            detect_to_mitigation: Histogram::with_opts(
                HistogramOpts::new(
                    "floodgate_auto_detect_to_mitigation_seconds",
                    "From an attack's detection to its first rule or defence.",
                )
                .buckets(vec![0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0]),
            )
            .expect("valid metric"),
        }
    }
}

impl AutoMetrics {
    pub fn families(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.mode.clone()),
            Box::new(self.attacks_active.clone()),
            Box::new(self.attacks.clone()),
            Box::new(self.rules.clone()),
            Box::new(self.rules_installed.clone()),
            Box::new(self.rules_lifted.clone()),
            Box::new(self.defences_applied.clone()),
            Box::new(self.samples.clone()),
            Box::new(self.samples_lost.clone()),
            Box::new(self.detect_to_mitigation.clone()),
        ]
    }
}

/// Put the file's `[auto]` into the maps: the group tries and the mode. The caller holds the
/// state lock.
pub fn apply(state: &State, pin: &crate::loader::PinDir, cfg: &AutoConfig) -> Result<()> {
    let _ = state;
    let mut maps = AutoMaps::open(pin)?;
    maps.set_groups(&cfg.prefixes())?;
    maps.set_mode(if cfg.groups.is_empty() {
        auto_mode::OFF
    } else {
        cfg.mode
    })?;
    if cfg.mode == auto_mode::OFF || cfg.groups.is_empty() {
        maps.set_sample(0)?;
    }
    Ok(())
}

/// What the detector does, done through the daemon's state under the lock the CLI takes.
struct DaemonEffects<'a> {
    sh: &'a Shared,
}

impl Effects for DaemonEffects<'_> {
    fn install_rules(&mut self, rules: Vec<RuleSpec>) -> Result<Vec<u32>> {
        self.sh.write(|state| {
            state.update_settings(|s| {
                let first = s
                    .rules
                    .iter()
                    .map(|r| r.id)
                    .filter(|&id| is_auto_rule(id))
                    .max()
                    .map_or(AUTO_RULE_ID_MIN, |m| m + 1);
                if s.rules.len() + rules.len() > filter_common::RULES_MAX as usize {
                    return Err(Error::TooManyRules {
                        count: s.rules.len() + rules.len(),
                        max: filter_common::RULES_MAX,
                    });
                }
                let mut ids = Vec::new();
                for (id, mut r) in (first..).zip(rules) {
                    r.id = id;
                    ids.push(id);
                    s.rules.push(r);
                }
                Ok(ids)
            })
        })
    }

    fn remove_rules(&mut self, ids: &[u32]) -> Result<()> {
        self.sh.write(|state| {
            state.update_settings(|s| {
                s.rules.retain(|r| !ids.contains(&r.id));
                Ok::<_, Error>(())
            })
        })
    }

    fn enforce_rules(&mut self, ids: &[u32]) -> Result<()> {
        self.sh.write(|state| {
            state.update_settings(|s| {
                for r in s.rules.iter_mut().filter(|r| ids.contains(&r.id)) {
                    r.dry_run = false;
                }
                Ok::<_, Error>(())
            })
        })
    }

    fn synguard(&mut self) -> Result<Synguard> {
        Ok(self.sh.state().settings()?.synguard)
    }

    fn now(&self) -> Duration {
        monotonic()
    }

    fn set_synguard(&mut self, to: &Synguard) -> Result<()> {
        self.sh.write(|state| {
            state.update_settings(|s| {
                s.synguard = to.clone();
                Ok::<_, Error>(())
            })
        })
    }
}

/// Append events to the audit log, one JSON object per line.
fn audit(path: &std::path::Path, events: &[Event]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut buf = Vec::new();
    for e in events {
        serde_json::to_writer(&mut buf, e).map_err(std::io::Error::other)?;
        buf.push(b'\n');
    }
    f.write_all(&buf)
}

fn log_event(e: &Event) {
    let figures = serde_json::to_string(&e.figures).unwrap_or_default();
    match e.event {
        "attack_detected" | "rule_installed" | "defence_applied" => {
            warn!(event = e.event, attack = e.attack, dst = %e.dst, group = %e.group,
                  mode = e.mode, figures = %figures)
        }
        _ => info!(event = e.event, attack = e.attack, dst = %e.dst, group = %e.group,
                   mode = e.mode, figures = %figures),
    }
}

/// Drain the arrival samples into the manager (a thread of its own: it blocks).
fn read_samples(sh: Arc<Shared>) {
    let mut reader: Option<AutoReader> = None;
    loop {
        let cfg = sh.runtime().auto.clone();
        if cfg.groups.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let r = match reader.as_mut() {
            Some(r) => r,
            None => match AutoReader::open(&sh.pin) {
                Ok(r) => reader.insert(r),
                Err(e) => {
                    warn!(event = "auto_samples_failed", error = %one_line(&e));
                    std::thread::sleep(Duration::from_secs(5));
                    continue;
                }
            },
        };
        let records = r.read(Duration::from_millis(50));
        if records.is_empty() {
            continue;
        }
        let parsed: Vec<(Duration, fingerprint::Features)> = records
            .iter()
            .filter_map(|rec| {
                fingerprint::features(&rec.data)
                    .map(|f| (Duration::from_nanos(rec.head.time_ns), f))
            })
            .collect();
        sh.auto.metrics.samples.inc_by(records.len() as u64);
        let mut m = sh.auto.manager();
        for (t, f) in parsed {
            m.add_sample(&cfg, t, f);
        }
    }
}

/// The 1-in-N sampling rate that gives about `per_second` samples at `pps`.
pub fn sample_rate(pps: f64, per_second: u32) -> u32 {
    (pps / per_second.max(1) as f64)
        .ceil()
        .clamp(1.0, 1_000_000.0) as u32
}

/// One tick: read, decide, act, report.
fn tick(sh: &Shared, maps: &mut AutoMaps, sampling: &mut u32) -> Result<()> {
    let mut cfg = sh.runtime().auto.clone();
    if cfg.groups.is_empty() {
        return Ok(());
    }
    // The CLI may have changed the mode (`floodgate auto on|shadow|off`): the kernel's word.
    cfg.mode = maps.mode()?;
    sh.auto.metrics.mode.set(cfg.mode as i64);
    let counters = maps.counters()?;
    let rule_hits: HashMap<u32, Counter> = {
        let state = sh.state();
        state
            .defences
            .rule_rows(&|_| None)?
            .into_iter()
            .filter(|r| is_auto_rule(r.spec.id))
            .map(|r| (r.spec.id, r.hits))
            .collect()
    };
    let now = monotonic();
    let mut fx = DaemonEffects { sh };
    let (events, rules, attacks, pps) = {
        let mut m = sh.auto.manager();
        m.tick(&cfg, now, &counters, &rule_hits, &mut fx);
        (
            m.take_events(),
            m.rule_count(),
            m.attacks().len(),
            m.total_pps(),
        )
    };
    let want = if cfg.mode == auto_mode::OFF {
        0
    } else {
        sample_rate(pps, cfg.samples_per_second)
    };
    // Follow the traffic, but not every wobble: a change of 2x or more.
    let wobble = want != 0
        && *sampling != 0
        && want < sampling.saturating_mul(2)
        && want.saturating_mul(2) > *sampling;
    if want != *sampling && !wobble {
        sh.write(|_| maps.set_sample(want))?;
        *sampling = want;
    }
    let am = &sh.auto.metrics;
    am.rules.set(rules as i64);
    am.attacks_active.set(attacks as i64);
    am.samples_lost.set(maps.lost()? as i64);
    for e in &events {
        log_event(e);
        match e.event {
            "attack_detected" => am.attacks.inc(),
            "rule_installed" => am.rules_installed.inc(),
            "rule_lifted" => am.rules_lifted.inc(),
            "defence_applied" => am.defences_applied.inc(),
            _ => {}
        }
        if let Some(s) = e.figures.get("detect_to_rule_s").and_then(|v| v.as_f64()) {
            am.detect_to_mitigation.observe(s);
        }
    }
    if let (Some(path), false) = (&cfg.audit_log, events.is_empty()) {
        if let Err(e) = audit(path, &events) {
            warn!(event = "audit_log_failed", path = %path.display(), error = %e);
        }
    }
    Ok(())
}

/// The detector's loop (started by the daemon).
pub async fn task(sh: Arc<Shared>) {
    let s = sh.clone();
    std::thread::Builder::new()
        .name("auto-samples".into())
        .spawn(move || read_samples(s))
        .expect("spawning the sample reader");
    let mut maps: Option<AutoMaps> = None;
    let mut sampling = u32::MAX;
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        every.tick().await;
        let s = sh.clone();
        let m = maps.take();
        let r = tokio::task::spawn_blocking(move || {
            let mut m = match m {
                Some(m) => m,
                None => AutoMaps::open(&s.pin)?,
            };
            let r = tick(&s, &mut m, &mut sampling);
            r.map(|()| (m, sampling))
        })
        .await;
        match r {
            Ok(Ok((m, rate))) => {
                maps = Some(m);
                sampling = rate;
                failing = false;
            }
            Ok(Err(e)) => {
                if !failing {
                    warn!(event = "auto_tick_failed", error = %one_line(&e));
                }
                failing = true;
            }
            Err(_) => {}
        }
    }
}
