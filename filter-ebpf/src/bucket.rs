//! Shared token buckets without a lock: GCRA (see filter_common::rate) where the reservation
//! is an atomic fetch-add (BPF CPU v3, see .cargo/config.toml): each CPU learns exactly where
//! its own reservation starts, whatever other CPUs reserve at the same time. A refused
//! reservation is handed back with another add.

use core::{
    intrinsics::{AtomicOrdering, atomic_xadd},
    ptr::{read_volatile, write_volatile},
};

use filter_common::{Bucket, Rate, rate};

/// Take one packet of `bytes` from both buckets of `rate`; false (and nothing taken) if either
/// is empty.
#[inline(always)]
pub fn take(bucket: *mut Bucket, rate: &Rate, bytes: u64, now: u64) -> bool {
    let packets = unsafe { core::ptr::addr_of_mut!((*bucket).tat_packets) };
    let octets = unsafe { core::ptr::addr_of_mut!((*bucket).tat_bytes) };
    let packet_cost = if rate.pps != 0 {
        rate::packet_cost_ns(rate.pps)
    } else {
        0
    };
    if packet_cost != 0 && !reserve(packets, packet_cost, now) {
        return false;
    }
    if rate.bps != 0 {
        let byte_cost = rate::byte_cost_ns(bytes, rate.bps);
        if !reserve(octets, byte_cost, now) {
            if packet_cost != 0 {
                give_back(packets, packet_cost);
            }
            return false;
        }
    }
    true
}

#[inline(always)]
fn reserve(tat: *mut u64, cost: u64, now: u64) -> bool {
    // Catch an idle bucket up to now. Two CPUs racing here both store about `now`; at worst
    // one reservation made in between is forgotten (one extra packet admitted).
    if unsafe { read_volatile(tat) } < now {
        unsafe { write_volatile(tat, now) };
    }
    let prev = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(tat, cost) };
    let prev = if prev < now { now } else { prev };
    if rate::conforms(prev, cost, now) {
        true
    } else {
        give_back(tat, cost);
        false
    }
}

#[inline(always)]
fn give_back(tat: *mut u64, cost: u64) {
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(tat, cost.wrapping_neg());
    }
}
