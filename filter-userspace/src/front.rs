//! The lists' front bitmap (`FRONT`, see `filter_common::FRONT_SLOT_BITS`), mapped into this
//! process with mmap: marking an entry is a memory write, not a syscall.
//!
//! Bits are set when entries are added and cleared only by a rebuild from the lists, so a bit
//! may be stale but is never missing: a stale bit costs the data plane a lookup, a missing one
//! would let a listed source through. The front is created with the lists (all pinned maps
//! are made by one load), empty as they are. Rebuilds happen once enough entries were removed
//! ([`REBUILD_AFTER`]), on a flush, and when the daemon sees auto-bans the front does not show
//! yet.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{AtomicU64, Ordering},
};

use aya::{Ebpf, maps::MapData};
use filter_common::{
    FRONT_ALLOW, FRONT_AUTO_MARKED, FRONT_AUTO_V4, FRONT_BLOCK, FRONT_COUNT_MAPS, FRONT_CTL,
    FRONT_LEN, FRONT_NONEMPTY, FRONT_PENDING_ALLOW, FRONT_PENDING_BLOCK, FRONT_SLOT_BITS,
    FRONT_V4_NEAR, FRONT_V6_ANY, FRONT_V6_ANY_WORDS, FRONT_V6_PREFIX, FRONT_WIDE_WORDS,
    FRONT_WORDS, SOURCES_MAX, front_any_v6, front_count_word, front_lens_v4, front_lens_v6,
    front_list, front_nonempty_bit, front_pos, front_slot_v4, front_slot_v6, front_wide_pos,
    map_names,
};
use ipnet::IpNet;

use crate::{
    error::{Error, Result},
    lists::ListKind,
};

/// Removals after which the next change rebuilds the front (each leaves at most one stale
/// slot: a few thousand cost the data plane nothing measurable).
pub const REBUILD_AFTER: u64 = 4096;

/// The `FRONT` map, mapped read-write.
pub struct Front {
    words: *const AtomicU64,
    bytes: usize,
    _map: MapData,
}

// SAFETY: the mapping lives as long as `Front` and is only accessed through atomics.
unsafe impl Send for Front {}
unsafe impl Sync for Front {}

impl Drop for Front {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `take` mapped.
        unsafe { libc::munmap(self.words as *mut libc::c_void, self.bytes) };
    }
}

fn bit(kind: ListKind) -> u64 {
    match kind {
        ListKind::Allow => FRONT_ALLOW,
        ListKind::Block => FRONT_BLOCK,
    }
}

fn pending_word(kind: ListKind) -> u32 {
    FRONT_CTL
        + match kind {
            ListKind::Allow => FRONT_PENDING_ALLOW,
            ListKind::Block => FRONT_PENDING_BLOCK,
        }
}

/// Set `list`'s bits for `net`: `set(word, bits)` ORs bits into a word (of the live front, or
/// of a copy being rebuilt). Includes the family's [`FRONT_NONEMPTY`] bit and, for a prefix,
/// its length's LENS bit.
fn mark_into(net: &IpNet, list: u64, set: &mut impl FnMut(u32, u64)) {
    let v6 = matches!(net, IpNet::V6(_));
    set(FRONT_CTL + FRONT_NONEMPTY, front_nonempty_bit(v6, list));
    let len = net.prefix_len();
    match net {
        IpNet::V4(n) => {
            if len < 32 {
                let (w, b) = front_lens_v4(list, u32::from(len));
                set(w, 1 << b);
            }
            let slot = front_slot_v4(n.network().octets());
            if len >= FRONT_V4_NEAR {
                // NEAR bits of the /24s it lies in or covers (at most 128), and its /16's
                // ANY NEAR bit.
                let n = 1u32 << 24u8.saturating_sub(len);
                set_run(slot, n, &mut |i| front_pos(i, false, list), set);
                let (w, b) = front_wide_pos(slot >> 8, list);
                set(w, 2 << b);
            } else {
                // WIDE bits of the /16s it covers, 32 per word.
                let first = slot >> 8;
                let end = first + (1u32 << (16 - len));
                let mut s16 = first;
                while s16 < end {
                    let (w, b) = front_wide_pos(s16, list);
                    let k = (32 - b / 2).min(end - s16);
                    let ones = if k == 32 {
                        u64::MAX
                    } else {
                        (1u64 << (2 * k)) - 1
                    };
                    set(w, (ones & 0x5555_5555_5555_5555) << b);
                    s16 += k;
                }
            }
        }
        IpNet::V6(n) => {
            if len < 128 {
                let (w, b) = front_lens_v6(list, u32::from(len));
                set(w, 1 << b);
            }
            // Shorter than /48: its LENS bit alone sends every source to it.
            if len >= FRONT_V6_PREFIX {
                let addr = n.network().octets();
                let (w, b) = front_pos(front_slot_v6(&addr), true, list);
                set(w, 1 << b);
                let (w, b) = front_any_v6(&addr, list);
                set(w, 1 << b);
            }
        }
    }
}

/// Set the bits of `n` consecutive slots from `first` (`pos` gives each slot's word and bit,
/// consecutive bits of consecutive words): a word at a time.
fn set_run(
    first: u32,
    n: u32,
    pos: &mut impl FnMut(u32) -> (u32, u32),
    set: &mut impl FnMut(u32, u64),
) {
    let end = first + n;
    let mut slot = first;
    while slot < end {
        let (word, bit) = pos(slot);
        let k = (64 - bit).min(end - slot);
        let bits = if k == 64 {
            u64::MAX
        } else {
            ((1u64 << k) - 1) << bit
        };
        set(word, bits);
        slot += k;
    }
}

/// The words `kind` owns, each with the mask of its bits there: its bitmaps whole, its bits
/// of the non-empty word, and its LENS words.
fn owned(kind: ListKind) -> impl Iterator<Item = (u32, u64)> {
    let b = bit(kind);
    let near = |v6| {
        let (first, _) = front_pos(0, v6, b);
        (first..first + FRONT_WORDS).map(|w| (w, u64::MAX))
    };
    let (wide, _) = front_wide_pos(0, b);
    let any6 = FRONT_V6_ANY + front_list(b) * FRONT_V6_ANY_WORDS;
    let (lens_v4, _) = front_lens_v4(b, 0);
    let (lens_v6, _) = front_lens_v6(b, 0);
    near(false)
        .chain(near(true))
        .chain((wide..wide + FRONT_WIDE_WORDS).map(|w| (w, u64::MAX)))
        .chain((any6..any6 + FRONT_V6_ANY_WORDS).map(|w| (w, u64::MAX)))
        .chain([
            (
                FRONT_CTL + FRONT_NONEMPTY,
                front_nonempty_bit(false, b) | front_nonempty_bit(true, b),
            ),
            (lens_v4, 0xffff_ffff << (32 * front_list(b))),
            (lens_v6, u64::MAX),
            (lens_v6 + 1, u64::MAX),
        ])
}

impl Front {
    pub fn take(ebpf: &mut Ebpf) -> Result<Front> {
        let map = match ebpf.take_map(map_names::FRONT) {
            Some(aya::maps::Map::Array(data)) => data,
            _ => {
                return Err(Error::MissingInObject {
                    what: "map",
                    name: map_names::FRONT.into(),
                });
            }
        };
        let bytes = (FRONT_LEN as usize * 8).next_multiple_of(4096);
        // SAFETY: a shared mapping of an mmapable BPF array of FRONT_LEN u64 values.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::Io {
                context: "mapping the FRONT map into memory (mmap)".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Front {
            words: ptr as *const AtomicU64,
            bytes,
            _map: map,
        })
    }

    fn word(&self, i: u32) -> &AtomicU64 {
        assert!(i < FRONT_LEN, "front word {i} out of range");
        // SAFETY: in bounds of the mapping, which outlives &self.
        unsafe { &*self.words.add(i as usize) }
    }

    /// Show `net` (about to be, or just, added to `kind`) in the front.
    pub fn mark(&self, kind: ListKind, net: &IpNet) {
        mark_into(net, bit(kind), &mut |w, bits| {
            self.word(w).fetch_or(bits, Ordering::Relaxed);
        });
    }

    /// Count `n` removals from `kind`; true once a rebuild is due.
    pub fn removed(&self, kind: ListKind, n: usize) -> bool {
        self.word(pending_word(kind))
            .fetch_add(n as u64, Ordering::Relaxed);
        self.rebuild_due(kind)
    }

    /// Have enough entries left `kind` since its last rebuild ([`REBUILD_AFTER`])?
    pub fn rebuild_due(&self, kind: ListKind) -> bool {
        self.word(pending_word(kind)).load(Ordering::Relaxed) >= REBUILD_AFTER
    }

    /// Has the data plane auto-banned sources since the last rebuild (broad ones the front
    /// does not show yet, or slots it marked itself that a rebuild must read)?
    pub fn auto_pending(&self) -> bool {
        [FRONT_AUTO_V4, FRONT_AUTO_MARKED]
            .iter()
            .any(|w| self.word(FRONT_CTL + w).load(Ordering::Relaxed) != 0)
    }

    /// Make `kind`'s bits exactly those of the entries `read` returns. For the blocklist the
    /// auto-ban words are cleared before `read` runs: a ban the read misses sets them again.
    /// Bits still needed are never cleared on the way (set first, then clear the rest); and if
    /// the data plane marked a ban's bit while `read` ran, nothing is cleared this time (that
    /// bit may be one the read missed) and the next rebuild is due.
    pub fn rebuild(&self, kind: ListKind, read: impl FnOnce() -> Result<Vec<IpNet>>) -> Result<()> {
        if kind == ListKind::Block {
            for w in [FRONT_AUTO_V4, FRONT_AUTO_MARKED] {
                self.word(FRONT_CTL + w).store(0, Ordering::SeqCst);
            }
        }
        let removed_before = self.word(pending_word(kind)).load(Ordering::Relaxed);
        let nets = read()?;
        let mut fresh = vec![0u64; FRONT_LEN as usize];
        for net in &nets {
            mark_into(net, bit(kind), &mut |w, bits| fresh[w as usize] |= bits);
        }
        let raced = kind == ListKind::Block
            && self
                .word(FRONT_CTL + FRONT_AUTO_MARKED)
                .load(Ordering::SeqCst)
                != 0;
        for (i, mask) in owned(kind) {
            let want = fresh[i as usize] & mask;
            let w = self.word(i);
            if want != 0 {
                w.fetch_or(want, Ordering::Relaxed);
            }
            if !raced && w.load(Ordering::Relaxed) & mask & !want != 0 {
                w.fetch_and(!(mask & !want), Ordering::Relaxed);
            }
        }
        if !raced {
            self.word(pending_word(kind))
                .fetch_sub(removed_before, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Add `delta` to the count of `kind`'s entries of list source `source` in map `map`.
    pub fn count(&self, kind: ListKind, source: u32, map: u32, delta: i64) {
        if source < SOURCES_MAX && map < FRONT_COUNT_MAPS {
            self.word(front_count_word(front_list(bit(kind)), source, map))
                .fetch_add(delta as u64, Ordering::Relaxed);
        }
    }

    /// `kind`'s count words as they are now, for [`Front::recount`].
    pub fn count_words(&self, kind: ListKind) -> Vec<u64> {
        let first = front_count_word(front_list(bit(kind)), 0, 0);
        (first..first + SOURCES_MAX * FRONT_COUNT_MAPS)
            .map(|w| self.word(w).load(Ordering::SeqCst))
            .collect()
    }

    /// `kind`'s entries per list source and map (sources with none left out).
    pub fn counts(&self, kind: ListKind) -> BTreeMap<u32, [usize; 4]> {
        let words = self.count_words(kind);
        words
            .chunks(FRONT_COUNT_MAPS as usize)
            .enumerate()
            .filter(|(_, c)| c.iter().any(|n| *n != 0))
            // A count below zero (a writer's bug) shows as none, not as 2^64.
            .map(|(s, c)| {
                (
                    s as u32,
                    [0, 1, 2, 3].map(|m| (c[m] as i64).max(0) as usize),
                )
            })
            .collect()
    }

    /// Set `kind`'s counts to those `walked` from the maps, where a count still holds what it
    /// did before the walk (`before`, from [`Front::count_words`]): one that moved meanwhile
    /// (a write, an auto-ban) is left for the next recount.
    pub fn recount(&self, kind: ListKind, before: &[u64], walked: &BTreeMap<u32, [usize; 4]>) {
        let first = front_count_word(front_list(bit(kind)), 0, 0);
        for (i, old) in before.iter().enumerate() {
            let (source, map) = (i as u32 / FRONT_COUNT_MAPS, i % FRONT_COUNT_MAPS as usize);
            let want = walked.get(&source).map_or(0, |c| c[map]) as u64;
            if want != *old {
                let _ = self.word(first + i as u32).compare_exchange(
                    *old,
                    want,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                );
            }
        }
    }

    /// Slots marked for `kind`: IPv4 /24s (NEAR), IPv4 /16s (WIDE, not counting ANY NEAR),
    /// IPv6 /48 slots (NEAR).
    pub fn marked(&self, kind: ListKind) -> [usize; 3] {
        let b = bit(kind);
        let count = |first: u32, n: u32| -> usize {
            (first..first + n)
                .map(|i| self.word(i).load(Ordering::Relaxed).count_ones() as usize)
                .sum()
        };
        [
            count(front_pos(0, false, b).0, FRONT_WORDS),
            (front_wide_pos(0, b).0..front_wide_pos(0, b).0 + FRONT_WIDE_WORDS)
                .map(|i| {
                    (self.word(i).load(Ordering::Relaxed) & 0x5555_5555_5555_5555).count_ones()
                        as usize
                })
                .sum(),
            count(front_pos(0, true, b).0, FRONT_WORDS),
        ]
    }

    /// The prefix lengths `kind` may hold, per family (hosts, /32 and /128, not included).
    pub fn lengths(&self, kind: ListKind) -> [Vec<u8>; 2] {
        let b = bit(kind);
        let (w4, s4) = front_lens_v4(b, 0);
        let v4 = self.word(w4).load(Ordering::Relaxed) >> s4;
        let (w6, _) = front_lens_v6(b, 0);
        let v6 = [w6, w6 + 1].map(|w| self.word(w).load(Ordering::Relaxed));
        [
            (0..32u8).filter(|l| v4 >> l & 1 != 0).collect(),
            (0..128u8)
                .filter(|l| v6[usize::from(l / 64)] >> (l % 64) & 1 != 0)
                .collect(),
        ]
    }
}

const _: () = assert!(FRONT_SLOT_BITS == 24, "mark_into assumes /24 IPv4 slots");

#[cfg(test)]
mod tests {
    use super::*;

    /// The words `net` sets in the blocklist's bitmaps and LENS words (non-empty word left out).
    fn marks(net: &str) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        mark_into(&net.parse().unwrap(), FRONT_BLOCK, &mut |w, b| {
            out.push((w, b))
        });
        out.retain(|(w, _)| *w != FRONT_CTL + FRONT_NONEMPTY);
        out
    }

    const LENS_V4: u32 = FRONT_CTL + filter_common::FRONT_LENS_V4;

    /// The ANY NEAR bit of 10.1.0.0/16 in the blocklist's WIDE map.
    fn any_near_10_1() -> (u32, u64) {
        let (wide, _) = front_wide_pos(0, FRONT_BLOCK);
        // /16 0x0a01: word 0x0a01 >> 5, pair (0x0a01 & 31) = 1: bits 2 (WIDE) and 3 (ANY NEAR).
        (wide + (0x0a01 >> 5), 1 << 3)
    }

    #[test]
    fn a_host_marks_its_slash_24() {
        // 10.1.2.3 -> slot 0x0a0102: word 0x0a0102 >> 6 of the IPv4 block region, bit 2.
        let (base, _) = front_pos(0, false, FRONT_BLOCK);
        assert_eq!(
            marks("10.1.2.3/32"),
            vec![(base + (0x0a0102 >> 6), 1 << 2), any_near_10_1()]
        );
        // A /25 also marks its /24, and its length.
        assert_eq!(
            marks("10.1.2.0/25"),
            vec![
                (LENS_V4, 1 << (32 + 25)),
                (base + (0x0a0102 >> 6), 1 << 2),
                any_near_10_1()
            ]
        );
    }

    #[test]
    fn prefixes_mark_near_down_to_17_and_wide_from_16() {
        let (base, _) = front_pos(0, false, FRONT_BLOCK);
        // 10.1.2.0/23 is 2 slots of one word.
        assert_eq!(
            marks("10.1.2.0/23")[1..],
            [(base + (0x0a0102 >> 6), 0b11 << 2), any_near_10_1()]
        );
        // A /17 is 128 slots: 2 whole words.
        let m = marks("10.1.0.0/17");
        assert_eq!(m.len(), 4);
        assert!(m[1..3].iter().all(|(_, b)| *b == u64::MAX));
        // A /16 is one WIDE bit, no NEAR bit.
        let (w, _) = any_near_10_1();
        assert_eq!(
            marks("10.1.0.0/16"),
            vec![(LENS_V4, 1 << (32 + 16)), (w, 1 << 2)]
        );
        // A /15: two WIDE bits of one word.
        assert_eq!(marks("10.0.0.0/15")[1..], [(w, 0b0101)]);
        // 0.0.0.0/0: every WIDE bit, a word at a time.
        let all = marks("0.0.0.0/0");
        assert_eq!(all.len(), 1 + FRONT_WIDE_WORDS as usize);
        assert!(all[1..].iter().all(|(_, b)| *b == 0x5555_5555_5555_5555));
    }

    #[test]
    fn ipv6_marks_one_hashed_slot_or_only_its_length() {
        let a = marks("2001:db8:1:2::/64");
        let b = marks("2001:db8:1:ffff::1/128");
        assert_eq!(a[1], b[0], "same /48, same slot");
        let (base, _) = front_pos(0, true, FRONT_BLOCK);
        assert!(a[1].0 >= base && a[1].0 < base + FRONT_WORDS);
        let (w, bit) = front_lens_v6(FRONT_BLOCK, 64);
        assert_eq!(a[0], (w, 1 << bit));
        let (w, bit) = front_lens_v6(FRONT_BLOCK, 32);
        assert_eq!(marks("2001:db8::/32"), vec![(w, 1 << bit)]);
    }

    #[test]
    fn each_list_owns_its_own_bits() {
        let allow: std::collections::HashMap<u32, u64> = owned(ListKind::Allow).collect();
        for (w, mask) in owned(ListKind::Block) {
            let other = allow.get(&w).copied().unwrap_or(0);
            assert_eq!(mask & other, 0, "word {w}: bits owned by both lists");
        }
        // And every bit a mark sets is one its list owns.
        let block: std::collections::HashMap<u32, u64> = owned(ListKind::Block).collect();
        for net in [
            "10.1.2.3/32",
            "10.0.0.0/8",
            "10.0.0.0/20",
            "2001:db8::/32",
            "2001:db8::1/128",
        ] {
            let mut all = Vec::new();
            mark_into(&net.parse().unwrap(), FRONT_BLOCK, &mut |w, b| {
                all.push((w, b))
            });
            for (w, b) in all {
                assert_eq!(
                    b & !block[&w],
                    0,
                    "{net}: word {w} bits {b:x} not the blocklist's"
                );
            }
        }
    }
}
