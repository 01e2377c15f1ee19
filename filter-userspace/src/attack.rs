//! The attack-event log: per drop reason, one "attack started" event when its drop rate
//! crosses the threshold and one "attack ended" event, with totals, once it stayed below for
//! `end_after`. Fed with counter samples by the daemon; pure logic, so it is unit-tested here.

use std::{collections::BTreeMap, time::Duration};

use filter_common::{Action, REASONS, Reason};

use crate::config::AttackFile;

/// An event to log.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Started {
        reason: &'static str,
        pps: f64,
    },
    Ended {
        reason: &'static str,
        peak_pps: f64,
        packets: u64,
        bytes: u64,
        duration: Duration,
    },
}

#[derive(Debug, Clone)]
struct Active {
    since: Duration,
    peak_pps: f64,
    start_packets: u64,
    start_bytes: u64,
    /// When the rate went below the threshold (None: it is above).
    quiet_since: Option<Duration>,
}

/// (packets, bytes) per reason.
type Totals = BTreeMap<&'static str, (u64, u64)>;

/// Per-reason attack state.
#[derive(Debug, Default)]
pub struct Monitor {
    active: BTreeMap<&'static str, Active>,
    /// The previous sample: time, and (packets, bytes) per reason.
    last: Option<(Duration, Totals)>,
}

impl Monitor {
    /// Reasons under attack right now.
    pub fn active(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.active.keys().copied()
    }

    /// Feed one sample of the enforced counters, taken at `now` (any monotonic clock).
    pub fn sample(
        &mut self,
        cfg: &AttackFile,
        now: Duration,
        counters: &[(Reason, u64, u64)],
    ) -> Vec<Event> {
        let current: Totals = counters
            .iter()
            .filter(|(r, _, _)| r.action() == Action::Drop)
            .map(|(r, p, b)| (r.name(), (*p, *b)))
            .collect();
        let Some((then, prev)) = self.last.replace((now, current.clone())) else {
            return Vec::new();
        };
        let secs = (now - then).as_secs_f64();
        if secs <= 0.0 {
            return Vec::new();
        }
        let mut events = Vec::new();
        for (&reason, &(packets, bytes)) in &current {
            let threshold = cfg
                .thresholds
                .get(reason)
                .copied()
                .unwrap_or(cfg.threshold_pps);
            let (p0, b0) = prev.get(reason).copied().unwrap_or((packets, bytes));
            let pps = packets.saturating_sub(p0) as f64 / secs;
            let over = threshold > 0 && pps >= threshold as f64;
            match self.active.get_mut(reason) {
                None if over => {
                    self.active.insert(
                        reason,
                        Active {
                            since: then,
                            peak_pps: pps,
                            start_packets: p0,
                            start_bytes: b0,
                            quiet_since: None,
                        },
                    );
                    events.push(Event::Started { reason, pps });
                }
                None => {}
                Some(a) => {
                    a.peak_pps = a.peak_pps.max(pps);
                    if over {
                        a.quiet_since = None;
                        continue;
                    }
                    let quiet = *a.quiet_since.get_or_insert(then);
                    if now - quiet >= cfg.end_after {
                        events.push(Event::Ended {
                            reason,
                            peak_pps: a.peak_pps,
                            packets: packets - a.start_packets,
                            bytes: bytes - a.start_bytes,
                            duration: quiet - a.since,
                        });
                        self.active.remove(reason);
                    }
                }
            }
        }
        events
    }
}

/// Every drop reason's name (the keys `thresholds` accepts).
pub fn drop_reasons() -> impl Iterator<Item = &'static str> {
    REASONS
        .iter()
        .filter(|r| r.action() == Action::Drop)
        .map(|r| r.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AttackFile {
        AttackFile {
            threshold_pps: 100,
            thresholds: [("reflection".to_string(), 1000)].into(),
            end_after: Duration::from_secs(3),
        }
    }

    fn s(block: u64, refl: u64) -> Vec<(Reason, u64, u64)> {
        vec![
            (Reason::Pass, 999_999, 0),
            (Reason::Blocklist, block, block * 100),
            (Reason::Reflection, refl, refl * 60),
        ]
    }

    #[test]
    fn one_start_one_end_with_totals() {
        let c = cfg();
        let mut m = Monitor::default();
        let t = Duration::from_secs;
        assert!(
            m.sample(&c, t(0), &s(0, 0)).is_empty(),
            "first sample is a baseline"
        );
        assert!(
            m.sample(&c, t(1), &s(50, 0)).is_empty(),
            "50 pps is under 100"
        );
        let ev = m.sample(&c, t(2), &s(250, 500));
        assert_eq!(
            ev,
            vec![Event::Started {
                reason: "blocklist",
                pps: 200.0
            }],
            "reflection's own threshold is 1000: 500 pps is not an attack"
        );
        assert!(
            m.sample(&c, t(3), &s(750, 500)).is_empty(),
            "still on: no repeat"
        );
        assert_eq!(m.active().collect::<Vec<_>>(), vec!["blocklist"]);
        // Quiet from t=3 on; ends once quiet for 3 s, a blip above in between resets it.
        assert!(m.sample(&c, t(4), &s(760, 500)).is_empty());
        assert!(
            m.sample(&c, t(5), &s(1000, 500)).is_empty(),
            "240 pps: back on"
        );
        assert!(m.sample(&c, t(6), &s(1010, 500)).is_empty());
        assert!(m.sample(&c, t(7), &s(1010, 500)).is_empty());
        let ev = m.sample(&c, t(8), &s(1010, 500));
        assert_eq!(
            ev,
            vec![Event::Ended {
                reason: "blocklist",
                peak_pps: 500.0,
                packets: 1010 - 50,
                bytes: (1010 - 50) * 100,
                duration: t(4),
            }]
        );
        assert_eq!(m.active().count(), 0);
    }

    #[test]
    fn zero_threshold_means_never() {
        let c = AttackFile {
            threshold_pps: 0,
            ..cfg()
        };
        let mut m = Monitor::default();
        m.sample(&c, Duration::from_secs(0), &s(0, 0));
        assert!(
            m.sample(&c, Duration::from_secs(1), &s(1_000_000, 0))
                .is_empty()
        );
    }
}
