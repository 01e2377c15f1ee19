//! Reading the per-reason counters, and the SYN guard's counters beside them: the kernel keeps
//! one slot per CPU; these are summed here.

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use std::collections::BTreeMap;

use filter_common::{
    Action, Counter, REASON_COUNT, REASONS, Reason, map_names, stats_slot, synguard_stat,
};

use crate::error::{MapContext, Result};

pub struct Stats {
    map: PerCpuArray<MapData, Counter>,
    synguard: PerCpuArray<MapData, u64>,
}

/// The SYN guard's counters, summed over CPUs: (name, value) in `synguard_stat` slot order,
/// named by `synguard_stat::NAMES`.
pub type SynguardCounters = [(&'static str, u64); synguard_stat::COUNT as usize];

impl Stats {
    pub fn take(ebpf: &mut Ebpf) -> Result<Stats> {
        Ok(Stats {
            map: crate::maps::take_map(ebpf, map_names::STATS)?,
            synguard: crate::maps::take_map(ebpf, map_names::SYNGUARD_STATS)?,
        })
    }

    /// The SYN guard's counters (`SYNGUARD_STATS`), summed over CPUs.
    pub fn synguard(&self) -> Result<SynguardCounters> {
        let mut out = synguard_stat::NAMES.map(|n| (n, 0));
        for (slot, (_, total)) in out.iter_mut().enumerate() {
            let per_cpu = self
                .synguard
                .get(&(slot as u32), 0)
                .map_context(|| "reading SYNGUARD_STATS".into())?;
            *total = per_cpu.iter().sum();
        }
        Ok(out)
    }

    /// Enforced row then dry-run row, as one array.
    pub fn snapshot(&self) -> Result<StatsSnapshot> {
        let mut all: StatsSnapshot = self.read()?.to_vec();
        all.extend(self.read_dry_run()?);
        Ok(all)
    }

    /// Enforced totals per reason, summed over CPUs, in [`REASONS`] order.
    pub fn read(&self) -> Result<[(Reason, Counter); REASON_COUNT]> {
        self.row(false)
    }

    /// Packets a drop reason matched but dry-run (global or per rule) let through.
    pub fn read_dry_run(&self) -> Result<[(Reason, Counter); REASON_COUNT]> {
        self.row(true)
    }

    fn row(&self, dry_run: bool) -> Result<[(Reason, Counter); REASON_COUNT]> {
        let mut out = REASONS.map(|r| (r, Counter::default()));
        for (reason, total) in out.iter_mut() {
            let per_cpu = self
                .map
                .get(&stats_slot(*reason, dry_run), 0)
                .map_context(|| "reading STATS".into())?;
            *total = crate::maps::sum_cpus(&per_cpu);
        }
        Ok(out)
    }
}

/// Enforced row then dry-run row ([`Stats::snapshot`]).
pub type StatsSnapshot = Vec<(Reason, Counter)>;

/// One reason's counters in `floodgate stats --json` and the API's `GET /v1/stats`.
#[derive(Debug, serde::Serialize)]
pub struct JsonCounter {
    pub packets: u64,
    pub bytes: u64,
    /// Rates, when there is an earlier snapshot to compare with (`stats --watch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bps: Option<f64>,
}

/// `floodgate stats --json`: enforced counters per reason, and what dry-run let through that
/// a drop (or tx) reason matched.
#[derive(Debug, serde::Serialize)]
pub struct JsonStats {
    pub reasons: BTreeMap<&'static str, JsonCounter>,
    pub dry_run: BTreeMap<&'static str, JsonCounter>,
}

/// Packets and bits per second of slot `i` since `prev`, taken `secs` earlier.
pub fn rate(
    now: &StatsSnapshot,
    prev: Option<(&StatsSnapshot, f64)>,
    i: usize,
) -> Option<(f64, f64)> {
    prev.map(|(p, secs)| {
        let dp = now[i].1.packets.saturating_sub(p[i].1.packets) as f64 / secs;
        let db = now[i].1.bytes.saturating_sub(p[i].1.bytes) as f64 * 8.0 / secs;
        (dp, db)
    })
}

/// The JSON shape of a snapshot (with rates when `prev` is given).
pub fn json(now: &StatsSnapshot, prev: Option<(&StatsSnapshot, f64)>) -> JsonStats {
    let row = |from: usize| {
        now.iter()
            .enumerate()
            .skip(from)
            .take(REASON_COUNT)
            // The dry-run row has every reason that does not pass (drop and tx).
            .filter(|(_, (r, _))| from == 0 || r.action() != Action::Pass)
            .map(|(i, (r, c))| {
                let rt = rate(now, prev, i);
                (
                    r.name(),
                    JsonCounter {
                        packets: c.packets,
                        bytes: c.bytes,
                        pps: rt.map(|x| x.0),
                        bps: rt.map(|x| x.1),
                    },
                )
            })
            .collect()
    };
    JsonStats {
        reasons: row(0),
        dry_run: row(REASON_COUNT),
    }
}
