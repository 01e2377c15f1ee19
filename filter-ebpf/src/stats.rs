//! Per-CPU packet and byte counters, one slot per reason, recorded once at the single exit.

use aya_ebpf::programs::XdpContext;
use filter_common::Reason;

use crate::maps::STATS;

#[inline(always)]
pub fn record(ctx: &XdpContext, reason: Reason) {
    if let Some(counter) = STATS.get_ptr_mut(reason as u32) {
        // Per-CPU slot: no other CPU writes it, so plain adds are exact.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += (ctx.data_end() - ctx.data()) as u64;
        }
    }
}
