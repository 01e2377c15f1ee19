//! Reading the per-reason counters: the kernel keeps one slot per CPU; these are summed here.

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use filter_common::{Counter, REASON_COUNT, REASONS, Reason, map_names};

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

    /// Totals per reason, summed over CPUs, in [`REASONS`] order.
    pub fn read(&self) -> Result<[(Reason, Counter); REASON_COUNT]> {
        let mut out = REASONS.map(|r| (r, Counter::default()));
        for (reason, total) in out.iter_mut() {
            let per_cpu = self
                .map
                .get(&(*reason as u32), 0)
                .map_context(|| "reading STATS".into())?;
            for c in per_cpu.iter() {
                total.packets += c.packets;
                total.bytes += c.bytes;
            }
        }
        Ok(out)
    }
}
