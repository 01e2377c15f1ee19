//! Per-CPU packet and byte counters: one slot per reason, recorded once at the single exit of
//! each stage, and the one way every per-CPU counter is added to (per-source drops, rules).

use aya_ebpf::programs::XdpContext;
use filter_common::{Counter, stats_slot};

use crate::{facts::Verdict, maps::STATS};

/// The frame's length as XDP sees it (Ethernet header included): what every counter adds.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> u64 {
    (ctx.data_end() - ctx.data()) as u64
}

/// Count one packet of `bytes` in a per-CPU counter. Only this CPU writes its slot, so plain
/// adds are exact (no atomics).
#[inline(always)]
pub fn add(counter: *mut Counter, bytes: u64) {
    unsafe {
        (*counter).packets += 1;
        (*counter).bytes += bytes;
    }
}

/// Count the packet (`bytes` long as it came in) under the reason that decided it; its slot.
#[inline(always)]
pub fn record(verdict: &Verdict, bytes: u64) -> u32 {
    let slot = stats_slot(verdict.reason, verdict.dry_run);
    if let Some(counter) = STATS.get_ptr_mut(slot) {
        add(counter, bytes);
    }
    slot
}
