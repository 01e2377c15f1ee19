//! Per-CPU packet and byte counters, one slot per reason, recorded once at the single exit.

use aya_ebpf::programs::XdpContext;
use filter_common::stats_slot;

use crate::{decide::Verdict, maps::STATS};

#[inline(always)]
pub fn record(ctx: &XdpContext, verdict: &Verdict) {
    if let Some(counter) = STATS.get_ptr_mut(stats_slot(verdict.reason, verdict.dry_run)) {
        // Per-CPU slot: no other CPU writes it, so plain adds are exact.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += (ctx.data_end() - ctx.data()) as u64;
        }
    }
}
