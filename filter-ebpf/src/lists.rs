//! The allowlist and blocklist lookups of the first stage: the front bitmaps that say which
//! list may hold a source and at which lengths (near its /24, or a /16 or wider), then
//! bounded hash probes: the exact-host map, and the prefix map once per prefix length the list
//! holds, longest first. An expired entry is stepped over to the next shorter length, so a
//! lapsed ban never hides a live broader one. Per-entry hit counts, per-source drop counts.
//!
//! The probes run in global BPF functions (`fg_allow_v4` .. `fg_block_v6`), verified once on
//! their own: their loops of up to 32 (IPv4) or 128 (IPv6) lengths cost the first stage's
//! verification one call each, not the loops' states.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::HashMap, programs::XdpContext};
use filter_common::{
    FRONT_ALLOW, FRONT_AUTO_V4, FRONT_BLOCK, FRONT_CTL, FRONT_LENS_V4, FRONT_LENS_V6,
    FRONT_NONEMPTY, FRONT_V4_NEAR, FRONT_V6_PREFIX, ListEntry, PrefixKey, entry_live, front_any_v6,
    front_pos, front_slot_v4, front_slot_v6, front_wide_pos,
};

use crate::{maps, stats};

/// A probe's answer: 0 when no live entry matched, else `FOUND | list source`.
const FOUND: u64 = 1 << 32;
/// The NEAR and WIDE bits of one list, shifted down to bits 0 (NEAR) and 1 (WIDE).
const NEAR: u64 = 1;
const WIDE: u64 = 2;

#[inline(always)]
fn ctl(w: u32) -> Option<u64> {
    maps::FRONT.get(FRONT_CTL + w).copied()
}

/// The front of an IPv4 source: which lists may hold it, and where ([`FRONT_ALLOW`],
/// [`FRONT_BLOCK`], each split in NEAR and WIDE, see `filter_common::FRONT_NEAR`). A list
/// without IPv4 entries costs no bitmap read. An auto-ban the front does not show yet (auto
/// control word set) means: look everywhere in the blocklist. A failed read: look there.
#[inline(always)]
pub fn front_v4(src: [u8; 4]) -> u64 {
    let Some(nonempty) = ctl(FRONT_NONEMPTY) else {
        return FRONT_ALLOW | FRONT_BLOCK;
    };
    let slot = front_slot_v4(src);
    let mut out = 0;
    for (i, list) in [(0, FRONT_ALLOW), (1, FRONT_BLOCK)] {
        if nonempty & (1 << i) != 0 {
            // The /16's bits first (a small, cached map); the NEAR bitmap only if the /16
            // has anything near.
            let (word, bit) = front_wide_pos(slot >> 8, list);
            let pair = maps::FRONT.get(word).map_or(3, |w| (*w >> bit) & 3);
            let wide = pair & 1 != 0;
            let mut near = false;
            if pair & 2 != 0 {
                let (word, bit) = front_pos(slot, false, list);
                near = maps::FRONT.get(word).is_none_or(|w| (*w >> bit) & 1 != 0);
            }
            out |= ((near as u64) | (wide as u64) << 1) << (2 * i);
        }
    }
    if ctl(FRONT_AUTO_V4) != Some(0) {
        out |= FRONT_BLOCK;
    }
    out
}

/// The front of an IPv6 source: its /48 slot's NEAR bits, and WIDE for a list that holds
/// prefixes shorter than /48 (looked up for every source).
#[inline(always)]
pub fn front_v6(src: &[u8; 16]) -> u64 {
    let Some(nonempty) = ctl(FRONT_NONEMPTY) else {
        return FRONT_ALLOW | FRONT_BLOCK;
    };
    let slot = front_slot_v6(src);
    const SHORT: u64 = (1 << FRONT_V6_PREFIX) - 1;
    let mut out = 0;
    for (i, list) in [(0, FRONT_ALLOW), (1, FRONT_BLOCK)] {
        if nonempty & (4 << i) != 0 {
            // The /32's ANY NEAR bit first (a small, cached map), then the NEAR bitmap.
            let (word, bit) = front_any_v6(src, list);
            let mut near = maps::FRONT.get(word).is_none_or(|w| (*w >> bit) & 1 != 0);
            if near {
                let (word, bit) = front_pos(slot, true, list);
                near = maps::FRONT.get(word).is_none_or(|w| (*w >> bit) & 1 != 0);
            }
            let wide = ctl(FRONT_LENS_V6 + 2 * i).is_none_or(|l| l & SHORT != 0);
            out |= ((near as u64) | (wide as u64) << 1) << (2 * i);
        }
    }
    out
}

/// Is the IPv4 source allowlisted (a live entry; its hit counted)? `front` from [`front_v4`].
#[inline(always)]
pub fn allowed_v4(src: [u8; 4], front: u64) -> bool {
    fg_allow_v4(u32::from_be_bytes(src), front & FRONT_ALLOW) != 0
}

/// The list source of the live blocklist entry covering the IPv4 source (its hit counted).
#[inline(always)]
pub fn blocked_v4(src: [u8; 4], front: u64) -> Option<u32> {
    found(fg_block_v4(
        u32::from_be_bytes(src),
        (front & FRONT_BLOCK) >> 2,
    ))
}

/// Is the IPv6 source allowlisted?
#[inline(always)]
pub fn allowed_v6(src: [u8; 16], front: u64) -> bool {
    let (hi, lo) = halves(&src);
    fg_allow_v6(hi, lo, front & FRONT_ALLOW) != 0
}

/// The list source of the live blocklist entry covering the IPv6 source.
#[inline(always)]
pub fn blocked_v6(src: [u8; 16], front: u64) -> Option<u32> {
    let (hi, lo) = halves(&src);
    found(fg_block_v6(hi, lo, (front & FRONT_BLOCK) >> 2))
}

#[inline(always)]
fn found(r: u64) -> Option<u32> {
    (r & FOUND != 0).then_some(r as u32)
}

#[inline(always)]
fn halves(a: &[u8; 16]) -> (u64, u64) {
    (
        u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_be_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    )
}

// The global functions: scalar arguments only (the verifier checks them once, alone). `bits`
// is the list's NEAR (1) and WIDE (2) bits from the front.

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fg_allow_v4(addr: u32, bits: u64) -> u64 {
    probe_v4(&maps::ALLOW_V4_EXACT, &maps::ALLOW_V4, 0, addr, bits)
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fg_block_v4(addr: u32, bits: u64) -> u64 {
    probe_v4(&maps::BLOCK_V4_EXACT, &maps::BLOCK_V4, 32, addr, bits)
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fg_allow_v6(hi: u64, lo: u64, bits: u64) -> u64 {
    probe_v6(&maps::ALLOW_V6_EXACT, &maps::ALLOW_V6, 0, hi, lo, bits)
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fg_block_v6(hi: u64, lo: u64, bits: u64) -> u64 {
    probe_v6(&maps::BLOCK_V6_EXACT, &maps::BLOCK_V6, 2, hi, lo, bits)
}

/// IPv4: with NEAR, the exact host, then the lengths /31 down to /17 the list holds; with
/// WIDE, the lengths /16 and shorter it holds. Longest first; the first live entry answers.
/// `lens_shift` is the list's place in the LENS word (0 allow, 32 block).
#[inline(always)]
fn probe_v4(
    exact: &HashMap<[u8; 4], ListEntry>,
    prefixes: &HashMap<PrefixKey<[u8; 4]>, ListEntry>,
    lens_shift: u32,
    addr: u32,
    bits: u64,
) -> u64 {
    if bits & NEAR != 0 {
        if let Some(e) = exact.get_ptr_mut(&addr.to_be_bytes()) {
            if live(e) {
                return hit(e);
            }
        }
    }
    // A failed read of the LENS word: probe every length.
    let held = ctl(FRONT_LENS_V4).map_or(u64::MAX, |w| w >> lens_shift) & 0xffff_ffff;
    const WIDE_LENS: u64 = (1 << FRONT_V4_NEAR) - 1;
    let mut lens = 0;
    if bits & NEAR != 0 {
        lens |= held & 0xffff_ffff & !WIDE_LENS;
    }
    if bits & WIDE != 0 {
        lens |= held & WIDE_LENS;
    }
    for _ in 0..32 {
        if lens == 0 {
            break;
        }
        let len = 63 - lens.leading_zeros();
        lens &= !(1u64 << len);
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        let key = PrefixKey {
            len,
            addr: (addr & mask).to_be_bytes(),
        };
        if let Some(e) = prefixes.get_ptr_mut(&key) {
            if live(e) {
                return hit(e);
            }
        }
    }
    0
}

/// IPv6: with NEAR, the exact host and the lengths /127 down to /48 the list holds; with WIDE,
/// the lengths shorter than /48 it holds. `lens_word` is the list's first LENS_V6 word.
#[inline(always)]
fn probe_v6(
    exact: &HashMap<[u8; 16], ListEntry>,
    prefixes: &HashMap<PrefixKey<[u8; 16]>, ListEntry>,
    lens_word: u32,
    hi: u64,
    lo: u64,
    bits: u64,
) -> u64 {
    let addr = join(hi, lo);
    if bits & NEAR != 0 {
        if let Some(e) = exact.get_ptr_mut(&addr) {
            if live(e) {
                return hit(e);
            }
        }
        // Lengths 64-127: the high half kept whole, the low half masked.
        let mut lens = ctl(FRONT_LENS_V6 + lens_word + 1).unwrap_or(u64::MAX);
        for _ in 0..64 {
            if lens == 0 {
                break;
            }
            let bit = 63 - lens.leading_zeros();
            lens &= !(1u64 << bit);
            let mask = if bit == 0 { 0 } else { u64::MAX << (64 - bit) };
            let key = PrefixKey {
                len: 64 + bit,
                addr: join(hi, lo & mask),
            };
            if let Some(e) = prefixes.get_ptr_mut(&key) {
                if live(e) {
                    return hit(e);
                }
            }
        }
    }
    // Lengths 0-63: /48-/63 with NEAR, shorter with WIDE.
    let held = ctl(FRONT_LENS_V6 + lens_word).unwrap_or(u64::MAX);
    const SHORT: u64 = (1 << FRONT_V6_PREFIX) - 1;
    let mut lens = 0;
    if bits & NEAR != 0 {
        lens |= held & !SHORT;
    }
    if bits & WIDE != 0 {
        lens |= held & SHORT;
    }
    for _ in 0..64 {
        if lens == 0 {
            break;
        }
        let len = 63 - lens.leading_zeros();
        lens &= !(1u64 << len);
        let mask = if len == 0 { 0 } else { u64::MAX << (64 - len) };
        let key = PrefixKey {
            len,
            addr: join(hi & mask, 0),
        };
        if let Some(e) = prefixes.get_ptr_mut(&key) {
            if live(e) {
                return hit(e);
            }
        }
    }
    0
}

/// The address bytes (network order) of two big-endian halves.
#[inline(always)]
fn join(hi: u64, lo: u64) -> [u8; 16] {
    unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([hi.to_be(), lo.to_be()]) }
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
fn live(entry: *const ListEntry) -> bool {
    let expires = unsafe { (*entry).expires_at_ns };
    // Read the clock only for entries that can expire: most never do.
    expires == 0 || entry_live(expires, unsafe { bpf_ktime_get_ns() })
}

/// Count the hit on the entry; the probe's answer for it.
#[inline(always)]
fn hit(entry: *mut ListEntry) -> u64 {
    // Map values are shared by all CPUs: an atomic add (BPF_ATOMIC_ADD) keeps the count
    // exact. core's AtomicU64 has no fetch_add on the BPF target, hence the intrinsic.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            core::ptr::addr_of_mut!((*entry).hits),
            1,
        );
        FOUND | (*entry).source as u64
    }
}
