//! Packet samples (see `filter_common::sample`): at its exit, a stage hands 1 in N packets of
//! a reason to [`fg_sample`], which copies the packet's first bytes and the verdict into the
//! `SAMPLES` ring buffer, or counts the sample as lost when the ring is full.
//!
//! `fg_sample` is a global BPF function: the verifier checks it once, on its own, not once per
//! path into every stage's exit (which would cost the first stage tens of thousands of
//! instructions). Its arguments are the context and plain numbers only, as a global function's
//! must be.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, xdp_md},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_xdp_load_bytes},
    maps::RingBuf,
};
use filter_common::{
    Reason, SAMPLE_BYTES_MAX, SAMPLE_SNAPLEN_DEFAULT, SAMPLES_RING_BYTES, Sample, SampleHead,
    sample_flags,
};

use crate::maps::{CONFIG, SAMPLE_DETAIL, SAMPLE_LOST, SAMPLE_RATES, SAMPLE_SKIP, SAMPLES};

/// Note what decided this packet (a blocklist drop's list source, a rule's id) for its
/// sample. Every path that ends in `blocklist`, `rule` or `rule_limit` notes it, so the value
/// read for a sample of those reasons is always this packet's; other reasons ignore it.
#[inline(always)]
pub fn note(detail: u32) {
    if let Some(d) = SAMPLE_DETAIL.get_ptr_mut(0) {
        unsafe { *d = detail };
    }
}

/// Sample the packet counted in `STATS` slot `slot` (`bytes` long as it came in), if its
/// reason's rate draws it. Returns 1 when a sample was written, 0 otherwise.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fg_sample(ctx: *mut xdp_md, slot: u32, bytes: u32) -> i32 {
    let Some(rate) = SAMPLE_RATES.get(slot) else {
        return 0;
    };
    let rate = *rate;
    if rate == 0 {
        return 0;
    }
    if rate > 1 {
        let Some(skip) = SAMPLE_SKIP.get_ptr_mut(slot) else {
            return 0;
        };
        if !drawn(skip, rate) {
            return 0;
        }
    }
    let reason_count = filter_common::REASON_COUNT as u32;
    let reason = slot % reason_count;
    let detail = if reason == Reason::Blocklist as u32
        || reason == Reason::Rule as u32
        || reason == Reason::RuleLimit as u32
    {
        SAMPLE_DETAIL.get(0).copied().unwrap_or(0)
    } else {
        0
    };
    let flags = if slot >= reason_count {
        sample_flags::DRY_RUN
    } else {
        0
    };
    if record(&SAMPLES, ctx, bytes, reason as u8, flags, rate, detail) {
        1
    } else {
        if let Some(lost) = SAMPLE_LOST.get_ptr_mut(slot) {
            unsafe { *lost += 1 };
        }
        0
    }
}

/// 1 in `rate` on average, without a random draw per packet: a per-CPU countdown at `skip`,
/// reset to a random gap of 1..=2*rate-1 when it runs out (so periodic traffic cannot alias).
#[inline(always)]
pub fn drawn(skip: *mut u32, rate: u32) -> bool {
    unsafe {
        if *skip > 1 {
            *skip -= 1;
            return false;
        }
        *skip = 1 + bpf_get_prandom_u32() % (2 * rate - 1);
    }
    true
}

/// Write one sample record of the packet (`bytes` long as it came in) to `ring`; false when
/// the ring is full. Shared by [`fg_sample`] and `auto::fg_account`.
#[inline(always)]
pub fn record(
    ring: &RingBuf,
    ctx: *mut xdp_md,
    bytes: u32,
    reason: u8,
    flags: u8,
    rate: u32,
    detail: u32,
) -> bool {
    let snaplen = match CONFIG.get(0) {
        Some(cfg) if cfg.sample_snaplen != 0 => cfg.sample_snaplen,
        _ => SAMPLE_SNAPLEN_DEFAULT,
    };
    let Some(mut entry) = ring.reserve::<Sample>(0) else {
        return false;
    };
    let cap = bytes.min(snaplen).min(SAMPLE_BYTES_MAX as u32);
    let s = entry.as_mut_ptr();
    unsafe {
        (*s).head = SampleHead {
            time_ns: bpf_ktime_get_ns(),
            frame_len: bytes,
            cap_len: 0,
            ifindex: (*ctx).ingress_ifindex,
            reason,
            flags,
            _pad: [0; 2],
            rate,
            detail,
        };
        // A length the verifier can bound: 1..=SAMPLE_BYTES_MAX.
        let len = core::hint::black_box(cap) as usize & (SAMPLE_BYTES_MAX - 1);
        if len > 0 && bpf_xdp_load_bytes(ctx, 0, (*s).data.as_mut_ptr().cast(), len as u32) == 0 {
            (*s).head.cap_len = len as u32;
        }
    }
    // No wakeup per record (it costs the sender hundreds of ns): the reader polls with a
    // timeout, and is woken once the ring is a quarter full.
    let flags = if ring.query(BPF_RB_AVAIL_DATA as u64) >= (SAMPLES_RING_BYTES / 4) as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
    true
}
