//! One definition of everything the XDP program and the `floodgate` controller share: map
//! names, keys and values, reason codes and their names. Both sides compile this crate, so a
//! layout change can never leave one side behind.
//!
//! Layout rules (hash keys compare raw bytes, so no implicit padding anywhere): `#[repr(C)]`,
//! fixed-width fields, explicit `_pad`, sizes guarded by `const` asserts. Addresses are stored in
//! network byte order exactly as they appear on the wire.
#![no_std]

use core::mem::size_of;

pub mod auto;
pub mod defence;
pub mod rate;
pub mod sample;
pub mod sanity;
pub mod synguard;

pub use auto::*;
pub use defence::*;
pub use sample::*;
pub use synguard::*;

/// Why a packet got its verdict. The numeric value indexes the per-CPU `STATS` array; the
/// name (see [`Reason::name`]) is part of the user interface (`floodgate stats`, metrics).
/// The values are slot numbers, given in the order the reasons were added, not the pipeline's
/// order: that is README's reason table (malformed headers, lists, sanity, rules, reflection,
/// limits, pass) and `filter-ebpf/src/decide.rs`. A new reason takes the next free value.
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
    /// Sanity: an invalid TCP flag combination (see [`sanity::tcp_flags_valid`]).
    TcpFlags = 4,
    /// Sanity: source address equals destination address.
    Land = 5,
    /// Sanity: a source that can never be valid on the wire (see [`sanity::martian_v4`]).
    Martian = 6,
    /// Sanity: IPv4 fragment policy (non-first fragments, tiny first fragments).
    Fragment = 7,
    /// Sanity: a length field claims more bytes than the frame or header holds.
    Length = 8,
    /// The reflection preset: UDP from a well-known amplification source port.
    Reflection = 9,
    /// A rule with action `drop` matched.
    Rule = 10,
    /// A rule with action `limit` matched and its aggregate bucket was empty.
    RuleLimit = 11,
    /// Over a per-source rate limit.
    Ratelimit = 12,
    /// Over an aggregate cap for a protected destination prefix.
    Aggregate = 13,
    /// SYN guard: a SYN to a protected port answered with a SYN-ACK cookie (XDP_TX); it never
    /// reaches the listener. Counted apart from drops (action `tx`).
    SynCookie = 14,
    /// SYN guard: an ACK to a protected port with no connection and no valid cookie (an ACK
    /// flood, or a handshake older than the cookie's lifetime).
    BadCookie = 15,
}

/// Number of reasons. `STATS` holds two rows of this many slots: enforced verdicts, then
/// packets a drop reason matched but dry-run let through (see [`stats_slot`]).
pub const REASON_COUNT: usize = 16;

/// Every reason, in numeric order.
pub const REASONS: [Reason; REASON_COUNT] = [
    Reason::Pass,
    Reason::Allowlist,
    Reason::Blocklist,
    Reason::Malformed,
    Reason::TcpFlags,
    Reason::Land,
    Reason::Martian,
    Reason::Fragment,
    Reason::Length,
    Reason::Reflection,
    Reason::Rule,
    Reason::RuleLimit,
    Reason::Ratelimit,
    Reason::Aggregate,
    Reason::SynCookie,
    Reason::BadCookie,
];

/// Length of the `STATS` array: one enforced and one dry-run slot per reason.
pub const STATS_SLOTS: usize = 2 * REASON_COUNT;

/// The `STATS` slot of a packet: `reason` enforced, or (`dry_run`) a drop reason that matched
/// while dry-run let the packet pass. Every packet is counted in exactly one slot.
#[inline(always)]
pub const fn stats_slot(reason: Reason, dry_run: bool) -> u32 {
    reason as u32 + if dry_run { REASON_COUNT as u32 } else { 0 }
}

/// What the data plane did with the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pass,
    Drop,
    /// Answered from the data plane (XDP_TX): the packet is turned into the reply.
    Tx,
}

impl Action {
    /// The user-visible name (`floodgate stats`, the `action` label of metrics).
    pub const fn name(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Drop => "drop",
            Action::Tx => "tx",
        }
    }
}

impl Reason {
    /// The stable, user-visible name.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Pass => "pass",
            Reason::Allowlist => "allowlist",
            Reason::Blocklist => "blocklist",
            Reason::Malformed => "malformed",
            Reason::TcpFlags => "tcp_flags",
            Reason::Land => "land",
            Reason::Martian => "martian",
            Reason::Fragment => "fragment",
            Reason::Length => "length",
            Reason::Reflection => "reflection",
            Reason::Rule => "rule",
            Reason::RuleLimit => "rule_limit",
            Reason::Ratelimit => "ratelimit",
            Reason::Aggregate => "aggregate",
            Reason::SynCookie => "syn_cookie",
            Reason::BadCookie => "bad_cookie",
        }
    }

    /// The XDP verdict this reason stands for when enforced (dry-run always passes).
    pub const fn action(self) -> Action {
        match self {
            Reason::Pass | Reason::Allowlist => Action::Pass,
            Reason::SynCookie => Action::Tx,
            _ => Action::Drop,
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

/// Value of every allowlist and blocklist entry, exact-address or prefix map alike.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListEntry {
    /// Expiry on the kernel's CLOCK_MONOTONIC (`bpf_ktime_get_ns`), in ns; 0 = never. The data
    /// plane ignores an entry once this time has passed, so a TTL holds with no process running.
    pub expires_at_ns: u64,
    /// Packets that matched this entry (updated atomically by the data plane).
    pub hits: u64,
    /// The entry's own prefix length (also in its key: kept here so a value read alone, as
    /// in a snapshot or a batch lookup, says what it lists).
    pub prefix_len: u32,
    /// The list source that added the entry (who listed it, not a packet's source address),
    /// an index into `SOURCE_NAMES`: [`SOURCE_CLI`], [`SOURCE_AUTO`] (an auto-ban written by the
    /// data plane itself), [`SOURCE_CONFIG`], or a named source. The data plane counts
    /// blocklist drops per list source in `SOURCE_DROPS`.
    pub source: u32,
}
const _: () = assert!(size_of::<ListEntry>() == 24);

/// [`ListEntry::source`]: added with the CLI (no `--source`).
pub const SOURCE_CLI: u32 = 0;
/// [`ListEntry::source`]: added by the data plane's auto-ban (a source over its rate limit).
pub const SOURCE_AUTO: u32 = 1;
/// [`ListEntry::source`]: the `[lists]` section of the configuration file.
pub const SOURCE_CONFIG: u32 = 2;
/// Source id that holds no entries: the blocklist drops of named sources that were freed (no
/// entries left) are added here, so no count is lost when their ids are reused.
pub const SOURCE_RETIRED: u32 = 3;
/// List sources with fixed ids; named sources get ids from here up to [`SOURCES_MAX`].
pub const SOURCES_FIXED: u32 = 4;
/// Size of `SOURCE_NAMES` and `SOURCE_DROPS`: at most this many list sources, fixed ones
/// included.
pub const SOURCES_MAX: u32 = 256;
/// Longest list source name, bytes.
pub const SOURCE_NAME_MAX: usize = 32;

/// A value of the userspace-only `SOURCE_NAMES` array: the name of list source id N (len 0:
/// free). Not to be confused with [`SourceKey`], a packet's source address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceName {
    pub len: u32,
    pub name: [u8; SOURCE_NAME_MAX],
}
const _: () = assert!(size_of::<SourceName>() == 36);

/// Which list a [`MetaKey`] belongs to.
pub const LIST_ALLOW: u32 = 0;
pub const LIST_BLOCK: u32 = 1;
/// A rule's comment: `MetaKey { list: LIST_RULE, prefix_len: rule id, .. }`.
pub const LIST_RULE: u32 = 2;

/// Key of the userspace-only `LIST_META` map: one list entry, either family.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MetaKey {
    /// [`LIST_ALLOW`], [`LIST_BLOCK`] or [`LIST_RULE`].
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
    pub const STAGES: &str = "STAGES";
    pub const ALLOW_V4: &str = "ALLOW_V4";
    pub const ALLOW_V6: &str = "ALLOW_V6";
    pub const ALLOW_V4_EXACT: &str = "ALLOW_V4_EXACT";
    pub const ALLOW_V6_EXACT: &str = "ALLOW_V6_EXACT";
    pub const BLOCK_V4: &str = "BLOCK_V4";
    pub const BLOCK_V6: &str = "BLOCK_V6";
    pub const BLOCK_V4_EXACT: &str = "BLOCK_V4_EXACT";
    pub const BLOCK_V6_EXACT: &str = "BLOCK_V6_EXACT";
    pub const LIST_META: &str = "LIST_META";
    pub const SOURCE_NAMES: &str = "SOURCE_NAMES";
    pub const SOURCE_DROPS: &str = "SOURCE_DROPS";
    pub const CONFIG: &str = "CONFIG";
    pub const RULES: &str = "RULES";
    pub const RULE_STATS: &str = "RULE_STATS";
    pub const PORT_FLAGS: &str = "PORT_FLAGS";
    pub const REFLECT_EXEMPT_V4: &str = "REFLECT_EXEMPT_V4";
    pub const REFLECT_EXEMPT_V6: &str = "REFLECT_EXEMPT_V6";
    pub const SOURCE_STATE: &str = "SOURCE_STATE";
    pub const AGGREGATE_V4: &str = "AGGREGATE_V4";
    pub const AGGREGATE_V6: &str = "AGGREGATE_V6";
    pub const FRONT: &str = "FRONT";
    pub const SYNGUARD_DST_V4: &str = "SYNGUARD_DST_V4";
    pub const SYNGUARD_DST_V6: &str = "SYNGUARD_DST_V6";
    pub const SYNGUARD_SECRET: &str = "SYNGUARD_SECRET";
    pub const SYNGUARD_STATS: &str = "SYNGUARD_STATS";
    pub const SYNGUARD_RATE: &str = "SYNGUARD_RATE";
    pub const SAMPLES: &str = "SAMPLES";
    pub const AUTO_GROUPS_V4: &str = "AUTO_GROUPS_V4";
    pub const AUTO_GROUPS_V6: &str = "AUTO_GROUPS_V6";
    pub const AUTO_DST: &str = "AUTO_DST";
    pub const AUTO_SAMPLES: &str = "AUTO_SAMPLES";
    pub const AUTO_SKIP: &str = "AUTO_SKIP";
    pub const AUTO_LOST: &str = "AUTO_LOST";
    pub const SAMPLE_RATES: &str = "SAMPLE_RATES";
    pub const SAMPLE_LOST: &str = "SAMPLE_LOST";
}

/// Key of the prefix maps (`ALLOW_V4`/`BLOCK_V4` with `[u8; 4]`, `ALLOW_V6`/`BLOCK_V6` with
/// `[u8; 16]`): hash maps holding every prefix length, probed once per length the list holds
/// (the front's LENS words), longest first: a bounded number of hash lookups instead of an
/// LPM trie walk. Host entries (/32, /128) live in the exact-address maps instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrefixKey<A> {
    /// Prefix length (0-31 for IPv4, 0-127 for IPv6).
    pub len: u32,
    /// The prefix's address, network byte order, bits past `len` zero.
    pub addr: A,
}
const _: () = assert!(size_of::<PrefixKey<[u8; 4]>>() == 8);
const _: () = assert!(size_of::<PrefixKey<[u8; 16]>>() == 20);

/// Capacities. Hash maps are created with BPF_F_NO_PREALLOC, so an unused slot costs only its
/// bucket (16 bytes of max_entries).
pub const BLOCK_EXACT_MAX: u32 = 1 << 20;
pub const BLOCK_PREFIX_MAX: u32 = 1 << 20;
pub const ALLOW_EXACT_MAX: u32 = 1 << 16;
pub const ALLOW_PREFIX_MAX: u32 = 1 << 16;
pub const LIST_META_MAX: u32 = 1 << 20;

/// The lists' front: bitmaps the data plane reads before any list map, so a source that no
/// entry can match (most of a random-source flood) costs a bitmap read instead of hash lookups
/// in maps of a million entries, and a source that one can match is looked up only at the
/// lengths that can. Bits are set as entries are added and cleared only by a rebuild from the
/// lists (userspace), so a set bit may be stale, never missing.
///
/// Per list and family, a NEAR bitmap of one bit per slot: an IPv4 /24 ([`front_slot_v4`]),
/// set when an entry of /17 to /32 lies in or covers it, or a hashed IPv6 /48
/// ([`front_slot_v6`]), set when an entry of /48 or longer lies in it. NEAR sends the source
/// to the exact-host map, then to the lengths from /31 (/127) down to /17 (/48) the list holds.
/// Per list, an IPv4 WIDE map of two bits per /16 (16 KiB: it stays in cache): WIDE, set when
/// an entry of /16 or shorter covers the /16, sends the source to the lengths /16 and shorter;
/// ANY NEAR, set when a NEAR bit of the /16 may be set, says whether the NEAR bitmap is worth
/// reading at all (for lists up to some 100k entries most /16s hold none: the 2 MiB bitmap
/// then stays out of the way of a random flood).
/// IPv6 has no WIDE bitmap: the lengths under /48 a list holds are probed for every source.
/// Its counterpart of ANY NEAR is a bit per hashed /32 ([`front_any_v6`], 8 KiB per list):
/// set when a NEAR bit of an entry in that /32 is, read before the NEAR bitmap.
/// A NEAR bitmap of 2 MiB per list is what a random source touches (one 4-bit-per-/24 bitmap
/// for both lists, 8 MiB, measured 3x slower under a random flood: TLB and cache misses).
///
/// Layout of the `FRONT` array (u64 words): four NEAR regions of [`FRONT_WORDS`] (see
/// [`front_pos`]), the two WIDE regions at [`FRONT_WIDE`] ([`front_wide_pos`]), the entry
/// counts at [`FRONT_COUNTS`], then the control words at [`FRONT_CTL`]. A list with no entries of a family has its
/// [`FRONT_NONEMPTY`] bit clear and its bitmaps are not read at all.
pub const FRONT_SLOT_BITS: u32 = 24;
/// Words per NEAR region: 64 slots per word.
pub const FRONT_WORDS: u32 = 1 << (FRONT_SLOT_BITS - 6);
/// Words per WIDE region: 65536 IPv4 /16s, two bits each, 32 per word.
pub const FRONT_WIDE_WORDS: u32 = 1 << (16 - 5);
/// First word of the WIDE regions (allowlist, then blocklist).
pub const FRONT_WIDE: u32 = 4 * FRONT_WORDS;
/// A slot's front as the data plane uses it (IPv4 and IPv6 alike): the lists that may hold an
/// entry for the source, and where: bit 0 allow NEAR, 1 allow WIDE, 2 block NEAR, 3 block WIDE.
pub const FRONT_ALLOW: u64 = 0b0011;
pub const FRONT_BLOCK: u64 = 0b1100;
pub const FRONT_NEAR: u64 = 0b0101;
pub const FRONT_WIDE_BITS: u64 = 0b1010;
/// First word of the IPv6 ANY NEAR maps (allowlist, then blocklist): [`FRONT_V6_ANY_WORDS`]
/// each.
pub const FRONT_V6_ANY: u32 = FRONT_WIDE + 2 * FRONT_WIDE_WORDS;
/// Words per IPv6 ANY NEAR map: 65536 hashed /32s, 64 per word.
pub const FRONT_V6_ANY_WORDS: u32 = 1 << (16 - 6);
/// First of the entry counts: per list, list source and map ([`front_count_word`]), kept as
/// entries are written (by userspace, and by the data plane's auto-ban) so that status,
/// metrics and the API never walk a million-entry map to count it.
pub const FRONT_COUNTS: u32 = FRONT_V6_ANY + 2 * FRONT_V6_ANY_WORDS;
/// Maps per list: IPv4 hosts, IPv4 prefixes, IPv6 hosts, IPv6 prefixes.
pub const FRONT_COUNT_MAPS: u32 = 4;
/// First control word.
pub const FRONT_CTL: u32 = FRONT_COUNTS + 2 * SOURCES_MAX * FRONT_COUNT_MAPS;
/// `FRONT_CTL + FRONT_NONEMPTY`: bit pairs (allow, block) for IPv4 (bits 0-1) and IPv6
/// (bits 2-3): the list may hold entries of that family.
pub const FRONT_NONEMPTY: u32 = 0;
/// `FRONT_CTL + FRONT_LENS_V4`: the IPv4 prefix lengths (0-31) each list may hold, one bit
/// per length: the allowlist's in bits 0-31, the blocklist's in bits 32-63.
pub const FRONT_LENS_V4: u32 = 1;
/// `FRONT_CTL + FRONT_AUTO_V4`: non-zero once the data plane has auto-banned an IPv4 prefix
/// its own bit cannot show (other than a /24 or longer, or a /16) and no rebuild has marked it
/// yet: every IPv4 source is then looked up in the blocklist at every length it holds. (IPv6
/// needs no such word: a ban shorter than /48 sets its LENS bit, which every source reads.)
pub const FRONT_AUTO_V4: u32 = 2;
/// `FRONT_CTL + FRONT_PENDING_ALLOW/BLOCK`: entries removed since the last rebuild.
pub const FRONT_PENDING_ALLOW: u32 = 4;
pub const FRONT_PENDING_BLOCK: u32 = 5;
/// `FRONT_CTL + FRONT_AUTO_MARKED`: non-zero once the data plane has set a bit for an
/// auto-ban (a slot or a length, an atomic OR, BPF CPU v3). A rebuild clears it before it
/// reads the lists; found set again afterwards, a ban raced the read, so that rebuild clears
/// no bits and the next one is due.
pub const FRONT_AUTO_MARKED: u32 = 6;
/// `FRONT_CTL + FRONT_LENS_V6 + 2 * list + half` ([`front_lens_v6`]): the IPv6 prefix lengths
/// (0-127) a list may hold: half 0 has lengths 0-63, half 1 lengths 64-127.
pub const FRONT_LENS_V6: u32 = 8;
pub const FRONT_CTL_WORDS: u32 = 16;
/// Entries of the `FRONT` array.
pub const FRONT_LEN: u32 = FRONT_CTL + FRONT_CTL_WORDS;
/// IPv6 prefixes this long or longer fall in one slot.
pub const FRONT_V6_PREFIX: u8 = 48;
/// IPv4 prefixes this long or longer set NEAR bits (of at most 128 /24s); shorter ones WIDE.
pub const FRONT_V4_NEAR: u8 = 17;

/// The front slot of an IPv4 address (network byte order): its /24.
#[inline(always)]
pub fn front_slot_v4(addr: [u8; 4]) -> u32 {
    u32::from_be_bytes(addr) >> 8
}

/// The front slot of an IPv6 address: a multiplicative hash of its /48, 24 bits.
#[inline(always)]
pub fn front_slot_v6(addr: &[u8; 16]) -> u32 {
    let top = u64::from_be_bytes([0, 0, addr[0], addr[1], addr[2], addr[3], addr[4], addr[5]]);
    (top.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - FRONT_SLOT_BITS)) as u32
}

/// Index 0 (allowlist) or 1 (blocklist) of a list given as [`FRONT_ALLOW`] or [`FRONT_BLOCK`].
#[inline(always)]
pub const fn front_list(list: u64) -> u32 {
    (list == FRONT_BLOCK) as u32
}

/// (word index, bit) of a slot in the NEAR bitmap of `list` ([`FRONT_ALLOW`] or
/// [`FRONT_BLOCK`]) and family.
#[inline(always)]
pub fn front_pos(slot: u32, v6: bool, list: u64) -> (u32, u32) {
    let region = (v6 as u32) * 2 + front_list(list);
    (region * FRONT_WORDS + (slot >> 6), slot & 63)
}

/// (word index, bit) of an IPv6 address's ANY NEAR bit in `list`: a multiplicative hash of
/// its /32, 16 bits.
#[inline(always)]
pub fn front_any_v6(addr: &[u8; 16], list: u64) -> (u32, u32) {
    let top = u32::from_be_bytes([addr[0], addr[1], addr[2], addr[3]]) as u64;
    let h = (top.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48) as u32;
    (
        FRONT_V6_ANY + front_list(list) * FRONT_V6_ANY_WORDS + (h >> 6),
        h & 63,
    )
}

/// (word index, bit) of an IPv4 /16's (the address's top 16 bits) WIDE bit in the WIDE map
/// of `list`; its ANY NEAR bit is the next one.
#[inline(always)]
pub fn front_wide_pos(slash16: u32, list: u64) -> (u32, u32) {
    (
        FRONT_WIDE + front_list(list) * FRONT_WIDE_WORDS + (slash16 >> 5),
        (slash16 & 31) * 2,
    )
}

/// The [`FRONT_NONEMPTY`] bit of a list and family.
#[inline(always)]
pub const fn front_nonempty_bit(v6: bool, list: u64) -> u64 {
    (1 << front_list(list)) << if v6 { 2 } else { 0 }
}

/// The count word of list `list` (index 0 allow, 1 block, see [`front_list`]), list source
/// `source` and map `map` (0 IPv4 hosts, 1 IPv4 prefixes, 2 IPv6 hosts, 3 IPv6 prefixes).
#[inline(always)]
pub const fn front_count_word(list: u32, source: u32, map: u32) -> u32 {
    FRONT_COUNTS + (list * SOURCES_MAX + source) * FRONT_COUNT_MAPS + map
}

/// (control word, bit) of an IPv4 prefix length (0-31) in a list's [`FRONT_LENS_V4`].
#[inline(always)]
pub const fn front_lens_v4(list: u64, len: u32) -> (u32, u32) {
    (FRONT_CTL + FRONT_LENS_V4, front_list(list) * 32 + len)
}

/// (control word, bit) of an IPv6 prefix length (0-127) in a list's [`FRONT_LENS_V6`] words.
#[inline(always)]
pub const fn front_lens_v6(list: u64, len: u32) -> (u32, u32) {
    (
        FRONT_CTL + FRONT_LENS_V6 + front_list(list) * 2 + len / 64,
        len % 64,
    )
}

/// Most VLAN tags parsed (802.1Q and 802.1ad). A frame with more cannot be inspected and is
/// dropped as malformed, so extra tags cannot smuggle a blocked source past the filter.
pub const VLAN_MAX_DEPTH: usize = 2;
/// Most IPv6 extension headers walked before the chain counts as malformed.
pub const IPV6_EXT_MAX: usize = 6;

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "floodgate";

/// IP protocol numbers (IANA), and the names the CLI, the TOML file and `rule list` use.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const GRE: u8 = 47;
    pub const ESP: u8 = 50;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
    /// (number, name) of the protocols known by name; others are written as numbers.
    pub const NAMES: [(u8, &str); 7] = [
        (TCP, "tcp"),
        (UDP, "udp"),
        (ICMP, "icmp"),
        (ICMPV6, "icmpv6"),
        (GRE, "gre"),
        (ESP, "esp"),
        (SCTP, "sctp"),
    ];
    /// Do packets of this protocol carry ports where rules can match them?
    pub const fn has_ports(p: u8) -> bool {
        matches!(p, TCP | UDP | SCTP)
    }
}

/// An address as two native-endian words over its network-order bytes (IPv4 in the first 4,
/// the rest zero): how the rule table stores addresses and masks, so a prefix match is two
/// AND-and-compare steps.
#[inline(always)]
pub fn addr_words(a: [u8; 16]) -> [u64; 2] {
    [
        u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    ]
}

/// The bytes of [`addr_words`] back.
#[inline(always)]
pub fn words_addr(w: [u64; 2]) -> [u8; 16] {
    let (a, b) = (w[0].to_ne_bytes(), w[1].to_ne_bytes());
    [
        a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1], b[2], b[3], b[4], b[5], b[6],
        b[7],
    ]
}

/// Key data of `AGGREGATE_V4`: the class byte, then the destination address; its trie prefix
/// length is [`AGGREGATE_CLASS_BITS`] + the destination prefix length.
#[inline(always)]
pub fn aggregate_key_v4(class: u8, dst: [u8; 4]) -> [u8; 5] {
    [class, dst[0], dst[1], dst[2], dst[3]]
}

/// Key data of `AGGREGATE_V6`: the class byte, then the destination address.
#[inline(always)]
pub fn aggregate_key_v6(class: u8, dst: [u8; 16]) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = class;
    k[1..].copy_from_slice(&dst);
    k
}

/// Bits of an aggregate key before the address: the class must match exactly.
pub const AGGREGATE_CLASS_BITS: u32 = 8;

/// The data plane's later stages, each its own XDP program verified on its own, reached by a
/// tail call through the `STAGES` program array (see filter-ebpf/src/main.rs). The first stage
/// is [`PROGRAM_NAME`] (parse, lists, L4, sanity); index = position in this table.
pub const STAGES: [(u32, &str); 2] = [
    (STAGE_DEFENCES, DEFENCES_PROGRAM_NAME),
    (STAGE_SYNGUARD, SYNGUARD_PROGRAM_NAME),
];
/// `STAGES` index of the defences stage: rules, reflection preset, rate limits.
pub const STAGE_DEFENCES: u32 = 0;
/// The defences stage's program name (the kernel keeps 15 bytes of a name).
pub const DEFENCES_PROGRAM_NAME: &str = "fg_defences";
/// `STAGES` index of the SYN guard stage (see [`synguard`]): last, for TCP to protected ports.
pub const STAGE_SYNGUARD: u32 = 1;
pub const SYNGUARD_PROGRAM_NAME: &str = "fg_synguard";
/// The TC ingress program that hands a handshake with a valid cookie to its listener
/// (kfunc `bpf_sk_assign_tcp_reqsk`, kernel 6.9+).
pub const SYNGUARD_TC_PROGRAM_NAME: &str = "fg_synguard_tc";

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
    unsafe impl aya::Pod for super::PrefixKey<[u8; 4]> {}
    unsafe impl aya::Pod for super::PrefixKey<[u8; 16]> {}
    unsafe impl aya::Pod for super::MetaKey {}
    unsafe impl aya::Pod for super::SourceName {}
    unsafe impl aya::Pod for super::EntryMeta {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::AutoKey {}
    unsafe impl aya::Pod for super::AutoCounters {}
    unsafe impl aya::Pod for super::Rule {}
    unsafe impl aya::Pod for super::SourceKey {}
    unsafe impl aya::Pod for super::SourceState {}
    unsafe impl aya::Pod for super::Bucket {}
    unsafe impl aya::Pod for super::Aggregate {}
    unsafe impl aya::Pod for super::SynguardSecret {}
    unsafe impl aya::Pod for super::SynRate {}
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
