//! One definition of everything the XDP program and the `floodgate` controller share: map
//! names, keys and values, reason codes and their names. Both sides compile this crate, so a
//! layout change can never leave one side behind.
//!
//! Layout rules (hash keys compare raw bytes, so no implicit padding anywhere): `#[repr(C)]`,
//! fixed-width fields, explicit `_pad`, sizes guarded by `const` asserts. Addresses are stored in
//! network byte order exactly as they appear on the wire.
#![no_std]

use core::mem::size_of;

/// Why a packet got its verdict. The numeric value indexes the per-CPU `STATS` array; the
/// name (see [`Reason::name`]) is part of the user interface (`floodgate stats`, metrics).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Passed: no list or check matched (includes non-IP frames such as ARP and LLDP).
    Pass = 0,
    /// Passed because the source is on the allowlist (checked before everything else).
    Allowlist = 1,
    /// Dropped because the source is on the blocklist.
    Blocklist = 2,
    /// Dropped because the IP packet could not be parsed safely (see README "Malformed").
    Malformed = 3,
}

/// Number of reasons; the length of the `STATS` array.
pub const REASON_COUNT: usize = 4;

/// Every reason, in numeric order.
pub const REASONS: [Reason; REASON_COUNT] = [
    Reason::Pass,
    Reason::Allowlist,
    Reason::Blocklist,
    Reason::Malformed,
];

/// What the data plane did with the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pass,
    Drop,
}

impl Reason {
    /// The stable, user-visible name.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Pass => "pass",
            Reason::Allowlist => "allowlist",
            Reason::Blocklist => "blocklist",
            Reason::Malformed => "malformed",
        }
    }

    /// The XDP verdict this reason stands for.
    pub const fn action(self) -> Action {
        match self {
            Reason::Pass | Reason::Allowlist => Action::Pass,
            Reason::Blocklist | Reason::Malformed => Action::Drop,
        }
    }

    pub fn from_name(name: &str) -> Option<Reason> {
        REASONS.iter().copied().find(|r| r.name() == name)
    }
}

/// One per-CPU counter slot of the `STATS` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    /// Whole frame length as XDP sees it (Ethernet header included, no FCS).
    pub bytes: u64,
}
const _: () = assert!(size_of::<Counter>() == 16);

/// Value of every allowlist and blocklist entry, exact-address hash or prefix trie alike.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListEntry {
    /// Expiry on the kernel's CLOCK_MONOTONIC (`bpf_ktime_get_ns`), in ns; 0 = never. The data
    /// plane ignores an entry once this time has passed, so a TTL holds with no process running.
    pub expires_at_ns: u64,
    /// Packets that matched this entry (updated atomically by the data plane).
    pub hits: u64,
    /// The entry's own prefix length. In the trie an expired entry must not hide a shorter,
    /// still-valid covering prefix: the data plane retries the lookup below this length.
    pub prefix_len: u32,
    /// Reserved for later use (origin/feed id); always 0 for now.
    pub flags: u32,
}
const _: () = assert!(size_of::<ListEntry>() == 24);

/// Which list a [`MetaKey`] belongs to.
pub const LIST_ALLOW: u32 = 0;
pub const LIST_BLOCK: u32 = 1;

/// Key of the userspace-only `LIST_META` map: one list entry, either family.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MetaKey {
    /// [`LIST_ALLOW`] or [`LIST_BLOCK`].
    pub list: u32,
    /// 4 or 6.
    pub family: u32,
    pub prefix_len: u32,
    /// Network byte order; an IPv4 address uses the first 4 bytes, the rest are zero.
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<MetaKey>() == 28);

/// Longest comment kept per entry, in bytes (UTF-8; longer input is refused, not cut).
pub const COMMENT_MAX: usize = 64;

/// Value of the userspace-only `LIST_META` map: what the data plane never needs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    /// Wall-clock time the entry was added, seconds since the Unix epoch.
    pub added_unix_s: u64,
    pub comment_len: u32,
    pub _pad: u32,
    pub comment: [u8; COMMENT_MAX],
}
const _: () = assert!(size_of::<EntryMeta>() == 16 + COMMENT_MAX);

impl Default for EntryMeta {
    fn default() -> Self {
        EntryMeta {
            added_unix_s: 0,
            comment_len: 0,
            _pad: 0,
            comment: [0; COMMENT_MAX],
        }
    }
}

/// Map names, as pinned under the pin directory. The eBPF side names its statics the same.
pub mod map_names {
    pub const STATS: &str = "STATS";
    pub const ALLOW_V4: &str = "ALLOW_V4";
    pub const ALLOW_V6: &str = "ALLOW_V6";
    pub const ALLOW_V4_EXACT: &str = "ALLOW_V4_EXACT";
    pub const ALLOW_V6_EXACT: &str = "ALLOW_V6_EXACT";
    pub const BLOCK_V4: &str = "BLOCK_V4";
    pub const BLOCK_V6: &str = "BLOCK_V6";
    pub const BLOCK_V4_EXACT: &str = "BLOCK_V4_EXACT";
    pub const BLOCK_V6_EXACT: &str = "BLOCK_V6_EXACT";
    pub const LIST_META: &str = "LIST_META";
}

/// Capacities. Hash maps are created with BPF_F_NO_PREALLOC, so an unused slot costs only its
/// bucket pointer; tries always allocate per entry.
pub const BLOCK_EXACT_MAX: u32 = 1 << 20;
pub const BLOCK_PREFIX_MAX: u32 = 1 << 20;
pub const ALLOW_EXACT_MAX: u32 = 1 << 16;
pub const ALLOW_PREFIX_MAX: u32 = 1 << 16;
pub const LIST_META_MAX: u32 = 1 << 20;

/// Most VLAN tags parsed (802.1Q and 802.1ad). A frame with more cannot be inspected and is
/// dropped as malformed, so extra tags cannot smuggle a blocked source past the filter.
pub const VLAN_MAX_DEPTH: usize = 2;
/// Most IPv6 extension headers walked before the chain counts as malformed.
pub const IPV6_EXT_MAX: usize = 6;

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "floodgate";

/// Does a list entry still match at monotonic time `now_ns`? Shared so the host tests the same
/// rule the kernel runs.
#[inline(always)]
pub fn entry_live(expires_at_ns: u64, now_ns: u64) -> bool {
    expires_at_ns == 0 || now_ns < expires_at_ns
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), made only of integers, with explicit padding.
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::ListEntry {}
    unsafe impl aya::Pod for super::MetaKey {}
    unsafe impl aya::Pod for super::EntryMeta {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_round_trip_and_are_unique() {
        for (i, r) in REASONS.iter().enumerate() {
            assert_eq!(*r as usize, i, "REASONS must be in numeric order");
            assert_eq!(
                Reason::from_name(r.name()),
                Some(*r),
                "name of {r:?} must round-trip"
            );
        }
    }

    #[test]
    fn expiry_rule() {
        assert!(entry_live(0, u64::MAX), "0 means never expires");
        assert!(entry_live(100, 99), "before expiry matches");
        assert!(!entry_live(100, 100), "at expiry no longer matches");
    }
}
