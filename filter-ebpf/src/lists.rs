//! The allowlist and blocklist lookups of the first stage: the front bitmap that skips lists
//! holding nothing for a source, the exact-host hash then the prefix trie, entry liveness
//! (TTL) with a retry below an expired prefix, per-entry hit counts, per-source drop counts.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    maps::{HashMap, LpmTrie, lpm_trie::Key},
    programs::XdpContext,
};
use filter_common::{
    FRONT_ALLOW, FRONT_AUTO_V4, FRONT_AUTO_V6, FRONT_BLOCK, FRONT_CTL, FRONT_NONEMPTY,
    FRONT_V6_SHORT, ListEntry, entry_live, front_nonempty_bit, front_pos, front_slot_v4,
    front_slot_v6,
};

use crate::{facts::Clock, maps, stats};

/// How many times a trie lookup steps past an expired prefix to a shorter covering one before
/// giving up (an expired entry only lingers until the CLI or daemon sweeps it).
const EXPIRED_RETRIES: usize = 4;

/// The lists the front says may hold an IPv4 source ([`FRONT_ALLOW`] | [`FRONT_BLOCK`]).
#[inline(always)]
pub fn front_v4(src: [u8; 4]) -> u64 {
    front_bits(front_slot_v4(src), false)
}

/// The lists the front says may hold an IPv6 source.
#[inline(always)]
pub fn front_v6(src: &[u8; 16]) -> u64 {
    front_bits(front_slot_v6(src), true)
}

/// Is the IPv4 source allowlisted (a live entry; its hit counted)?
#[inline(always)]
pub fn allowed_v4(src: [u8; 4], clock: &mut Clock) -> bool {
    listed(&maps::ALLOW_V4_EXACT, &maps::ALLOW_V4, src, 32, clock).is_some()
}

/// The list source of the live blocklist entry covering the IPv4 source (its hit counted).
#[inline(always)]
pub fn blocked_v4(src: [u8; 4], clock: &mut Clock) -> Option<u32> {
    listed(&maps::BLOCK_V4_EXACT, &maps::BLOCK_V4, src, 32, clock)
}

/// Is the IPv6 source allowlisted?
#[inline(always)]
pub fn allowed_v6(src: [u8; 16], clock: &mut Clock) -> bool {
    listed(&maps::ALLOW_V6_EXACT, &maps::ALLOW_V6, src, 128, clock).is_some()
}

/// The list source of the live blocklist entry covering the IPv6 source.
#[inline(always)]
pub fn blocked_v6(src: [u8; 16], clock: &mut Clock) -> Option<u32> {
    listed(&maps::BLOCK_V6_EXACT, &maps::BLOCK_V6, src, 128, clock)
}

/// Which lists may hold an entry for this front slot ([`FRONT_ALLOW`] | [`FRONT_BLOCK`]).
/// A list without entries of the family costs no bitmap read. An auto-ban the front does not
/// show yet (auto control word set) means: check the blocklist. A failed read: check both.
#[inline(always)]
fn front_bits(slot: u32, v6: bool) -> u64 {
    const BOTH: u64 = FRONT_ALLOW | FRONT_BLOCK;
    let ctl = |w: u32| maps::FRONT.get(FRONT_CTL + w).copied();
    let Some(nonempty) = ctl(FRONT_NONEMPTY) else {
        return BOTH;
    };
    let mut out = 0;
    for list in [FRONT_ALLOW, FRONT_BLOCK] {
        if nonempty & front_nonempty_bit(v6, list) != 0 {
            let (word, bit) = front_pos(slot, v6, list);
            match maps::FRONT.get(word) {
                Some(w) if (*w >> bit) & 1 == 0 => {}
                _ => out |= list,
            }
        }
    }
    let auto = ctl(if v6 { FRONT_AUTO_V6 } else { FRONT_AUTO_V4 });
    if auto != Some(0) {
        out |= FRONT_BLOCK;
    }
    if v6 {
        out |= ctl(FRONT_V6_SHORT).unwrap_or(BOTH);
    }
    out
}

/// Is `addr` on a list made of an exact-host hash and a prefix trie? Counts the hit.
#[inline(always)]
fn listed<A: Copy>(
    exact: &HashMap<A, ListEntry>,
    prefixes: &LpmTrie<A, ListEntry>,
    addr: A,
    host_len: u32,
    clock: &mut Clock,
) -> Option<u32> {
    if let Some(entry) = exact.get_ptr_mut(&addr) {
        if live(entry, clock) {
            count_hit(entry);
            return Some(unsafe { (*entry).source });
        }
    }
    let mut len = host_len;
    for _ in 0..EXPIRED_RETRIES {
        let Some(entry) = prefixes.get(Key::new(len, addr)) else {
            return None;
        };
        let entry = entry as *const ListEntry as *mut ListEntry;
        if live(entry, clock) {
            count_hit(entry);
            return Some(unsafe { (*entry).source });
        }
        let matched = unsafe { (*entry).prefix_len };
        if matched == 0 || matched > host_len {
            return None;
        }
        len = matched - 1;
    }
    None
}

/// An enforced blocklist drop also counts against the list source that listed the address.
#[inline(always)]
pub fn count_drop(ctx: &XdpContext, source: u32, dry: bool) {
    if !dry {
        if let Some(counter) = maps::SOURCE_DROPS.get_ptr_mut(source) {
            stats::add(counter, stats::frame_len(ctx));
        }
    }
}

#[inline(always)]
fn live(entry: *const ListEntry, clock: &mut Clock) -> bool {
    let expires = unsafe { (*entry).expires_at_ns };
    // Read the clock only for entries that can expire: most never do.
    expires == 0 || entry_live(expires, clock.now())
}

#[inline(always)]
fn count_hit(entry: *mut ListEntry) {
    // Map values are shared by all CPUs: an atomic add (BPF_ATOMIC_ADD) keeps the count
    // exact. core's AtomicU64 has no fetch_add on the BPF target, hence the intrinsic.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            core::ptr::addr_of_mut!((*entry).hits),
            1,
        );
    }
}
