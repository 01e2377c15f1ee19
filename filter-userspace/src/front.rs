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
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{AtomicU64, Ordering},
};

use aya::{Ebpf, maps::MapData};
use filter_common::{
    FRONT_ALLOW, FRONT_AUTO_MARKED, FRONT_AUTO_V4, FRONT_AUTO_V6, FRONT_BLOCK, FRONT_CTL,
    FRONT_LEN, FRONT_NONEMPTY, FRONT_PENDING_ALLOW, FRONT_PENDING_BLOCK, FRONT_SLOT_BITS,
    FRONT_V6_PREFIX, FRONT_V6_SHORT, FRONT_WORDS, front_nonempty_bit, front_pos, front_slot_v4,
    front_slot_v6, map_names,
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
/// of a copy being rebuilt). Includes the family's [`FRONT_NONEMPTY`] bit.
fn mark_into(net: &IpNet, list: u64, set: &mut impl FnMut(u32, u64)) {
    let v6 = matches!(net, IpNet::V6(_));
    set(FRONT_CTL + FRONT_NONEMPTY, front_nonempty_bit(v6, list));
    match net {
        IpNet::V4(n) => {
            let first = front_slot_v4(n.network().octets());
            let end = first + (1u32 << 24u8.saturating_sub(n.prefix_len()));
            // A prefix of /24 or shorter covers whole slots: set them a word at a time.
            let mut slot = first;
            while slot < end {
                let (word, bit) = front_pos(slot, false, list);
                let n = (64 - bit).min(end - slot);
                let bits = if n == 64 {
                    u64::MAX
                } else {
                    ((1u64 << n) - 1) << bit
                };
                set(word, bits);
                slot += n;
            }
        }
        IpNet::V6(n) if n.prefix_len() >= FRONT_V6_PREFIX => {
            let (word, bit) = front_pos(front_slot_v6(&n.network().octets()), true, list);
            set(word, 1 << bit);
        }
        IpNet::V6(_) => set(FRONT_CTL + FRONT_V6_SHORT, list),
    }
}

/// The words `kind` owns, each with the mask of its bits there: its two bitmaps whole, and
/// its bits in the control word.
fn owned(kind: ListKind) -> impl Iterator<Item = (u32, u64)> {
    let b = bit(kind);
    let bitmap = |v6| {
        let (first, _) = front_pos(0, v6, b);
        (first..first + FRONT_WORDS).map(|w| (w, u64::MAX))
    };
    bitmap(false).chain(bitmap(true)).chain([
        (
            FRONT_CTL + FRONT_NONEMPTY,
            front_nonempty_bit(false, b) | front_nonempty_bit(true, b),
        ),
        (FRONT_CTL + FRONT_V6_SHORT, b),
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
        [FRONT_AUTO_V4, FRONT_AUTO_V6, FRONT_AUTO_MARKED]
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
            for w in [FRONT_AUTO_V4, FRONT_AUTO_V6, FRONT_AUTO_MARKED] {
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

    /// Slots marked for `kind`, per family (IPv4, IPv6).
    pub fn marked(&self, kind: ListKind) -> [usize; 2] {
        [false, true].map(|v6| {
            let (first, _) = front_pos(0, v6, bit(kind));
            (first..first + FRONT_WORDS)
                .map(|i| self.word(i).load(Ordering::Relaxed).count_ones() as usize)
                .sum()
        })
    }
}

const _: () = assert!(FRONT_SLOT_BITS == 24, "mark_into assumes /24 IPv4 slots");

#[cfg(test)]
mod tests {
    use super::*;

    /// The words `net` sets in the blocklist's bitmaps (control words left out).
    fn marks(net: &str) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        mark_into(&net.parse().unwrap(), FRONT_BLOCK, &mut |w, b| {
            out.push((w, b))
        });
        out.retain(|(w, _)| *w != FRONT_CTL + FRONT_NONEMPTY);
        out
    }

    #[test]
    fn a_host_marks_its_slash_24() {
        // 10.1.2.3 -> slot 0x0a0102: word 0x0a0102 >> 6 of the IPv4 block region, bit 2.
        let (base, _) = front_pos(0, false, FRONT_BLOCK);
        assert_eq!(marks("10.1.2.3/32"), vec![(base + (0x0a0102 >> 6), 1 << 2)]);
        assert_eq!(marks("10.1.2.0/25"), marks("10.1.2.200/32"));
    }

    #[test]
    fn a_short_prefix_marks_every_slash_24_it_covers() {
        let (base, _) = front_pos(0, false, FRONT_BLOCK);
        // A /16 is 256 slots: 4 whole words.
        let m = marks("10.1.0.0/16");
        assert_eq!(m.len(), 4);
        assert!(m.iter().all(|(_, b)| *b == u64::MAX));
        assert_eq!(m[0].0, base + (0x0a0100 >> 6));
        // 10.1.2.0/23 is 2 slots of one word.
        assert_eq!(
            marks("10.1.2.0/23"),
            vec![(base + (0x0a0102 >> 6), 0b11 << 2)]
        );
        // 0.0.0.0/0: every word of the region, whole.
        assert_eq!(marks("0.0.0.0/0").len(), FRONT_WORDS as usize);
    }

    #[test]
    fn ipv6_marks_one_hashed_slot_or_the_short_flag() {
        let a = marks("2001:db8:1:2::/64");
        assert_eq!(a, marks("2001:db8:1:ffff::1/128"), "same /48, same slot");
        let (base, _) = front_pos(0, true, FRONT_BLOCK);
        assert!(a[0].0 >= base && a[0].0 < base + FRONT_WORDS);
        assert_eq!(
            marks("2001:db8::/32"),
            vec![(FRONT_CTL + FRONT_V6_SHORT, FRONT_BLOCK)]
        );
    }

    #[test]
    fn each_list_owns_its_own_bits() {
        let allow: std::collections::HashMap<u32, u64> = owned(ListKind::Allow).collect();
        for (w, mask) in owned(ListKind::Block) {
            let other = allow.get(&w).copied().unwrap_or(0);
            assert_eq!(mask & other, 0, "word {w}: bits owned by both lists");
        }
    }
}
