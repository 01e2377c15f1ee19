//! Reading the per-reason counters: the kernel keeps one slot per CPU; these are summed here.

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use filter_common::{Counter, REASON_COUNT, REASONS, Reason, map_names, stats_slot};

use crate::error::{Error, MapContext, Result};

pub struct Stats {
    map: PerCpuArray<MapData, Counter>,
}

impl Stats {
    pub fn take(ebpf: &mut Ebpf) -> Result<Stats> {
        let map = ebpf
            .take_map(map_names::STATS)
            .ok_or_else(|| Error::MissingInObject {
                what: "map",
                name: map_names::STATS.into(),
            })?;
        Ok(Stats {
            map: PerCpuArray::try_from(map).map_context(|| "opening STATS".into())?,
        })
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
            for c in per_cpu.iter() {
                total.packets += c.packets;
                total.bytes += c.bytes;
            }
        }
        Ok(out)
    }
}
