//! The flood defences' shared layout: the live configuration record, the rule table, rate-limit
//! classes and their state. Userspace writes the configuration; the data plane reads it on every
//! packet, so a change takes effect on the next packet with nothing reloaded.

use core::mem::size_of;

/// Sanity switches, bits of [`Config::sanity`].
pub mod sanity_bits {
    /// Drop invalid TCP flag combinations (reason `tcp_flags`).
    pub const TCP_FLAGS: u32 = 1 << 0;
    /// Drop packets whose source equals their destination (reason `land`).
    pub const LAND: u32 = 1 << 1;
    /// Drop martian sources (reason `martian`).
    pub const MARTIAN: u32 = 1 << 2;
    /// Drop every non-first IPv4 fragment (reason `fragment`). Off by default: large UDP
    /// (DNS over EDNS, some VPNs) is legitimately fragmented.
    pub const FRAGMENT_NON_FIRST: u32 = 1 << 3;
    /// Drop first IPv4 fragments carrying less than [`super::Config::fragment_min_bytes`] of
    /// payload (reason `fragment`): the tiny-fragment attack of RFC 1858.
    pub const FRAGMENT_TINY: u32 = 1 << 4;
    /// Drop packets whose IP or L4 length fields claim more bytes than there are (reason
    /// `length`).
    pub const LENGTH: u32 = 1 << 5;

    /// Every switch, with its user-visible name (CLI, TOML), in bit order.
    pub const ALL: [(u32, &str); 6] = [
        (TCP_FLAGS, "tcp_flags"),
        (LAND, "land"),
        (MARTIAN, "martian"),
        (FRAGMENT_NON_FIRST, "fragment_non_first"),
        (FRAGMENT_TINY, "fragment_tiny"),
        (LENGTH, "length"),
    ];
    /// On when floodgate creates its maps: everything no legitimate traffic trips.
    pub const DEFAULT: u32 = TCP_FLAGS | LAND | MARTIAN | FRAGMENT_TINY | LENGTH;
}

/// Default for [`Config::fragment_min_bytes`]. Every IPv4 link carries 576-byte datagrams, so
/// a real first fragment holds far more than this; attack tools send 8- to 64-byte ones.
pub const FRAGMENT_MIN_BYTES_DEFAULT: u32 = 256;

/// Rate-limit classes. A packet belongs to its protocol's class and to `all`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// TCP with SYN set and ACK clear (connection attempts).
    Syn = 0,
    Udp = 1,
    /// ICMP and ICMPv6.
    Icmp = 2,
    /// Every IP packet that reaches the limits stage.
    All = 3,
}

pub const CLASS_COUNT: usize = 4;
pub const CLASSES: [Class; CLASS_COUNT] = [Class::Syn, Class::Udp, Class::Icmp, Class::All];

impl Class {
    pub const fn name(self) -> &'static str {
        match self {
            Class::Syn => "syn",
            Class::Udp => "udp",
            Class::Icmp => "icmp",
            Class::All => "all",
        }
    }

    pub fn from_name(name: &str) -> Option<Class> {
        CLASSES.iter().copied().find(|c| c.name() == name)
    }
}

/// A rate: packets and bits per second; 0 means no limit on that axis. A packet must fit both.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rate {
    pub pps: u64,
    pub bps: u64,
}

impl Rate {
    pub const fn is_unlimited(&self) -> bool {
        self.pps == 0 && self.bps == 0
    }
}

/// Per-source limit of one class, in [`Config::limits`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassLimit {
    /// Allowed rate for each source (prefix); unlimited when both are 0.
    pub per_source: Rate,
    /// Ban a source that has been over its limit without a break of more than
    /// [`OVER_LIMIT_GAP_NS`] for this long, in ns; 0 = never ban.
    pub ban_after_ns: u64,
    /// How long an auto-ban lasts, in ns.
    pub ban_for_ns: u64,
    /// Sources share one bucket per prefix of this length: IPv4 1..=32, IPv6 1..=128.
    pub v4_prefix: u32,
    pub v6_prefix: u32,
    /// Non-zero when aggregate caps for this class exist in `AGGREGATE_V4/V6`.
    pub has_aggregate: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<ClassLimit>() == 48);

/// A source that goes this long without exceeding its limit starts afresh towards a ban.
pub const OVER_LIMIT_GAP_NS: u64 = 1_000_000_000;

/// Default per-source grouping: one bucket per IPv4 host and per IPv6 /64 (one subscriber).
pub const SOURCE_PREFIX_V4_DEFAULT: u32 = 32;
pub const SOURCE_PREFIX_V6_DEFAULT: u32 = 64;
/// Default size of the per-source state table (LRU: the least recently seen source is evicted).
pub const SOURCE_STATE_DEFAULT: u32 = 1 << 18;

/// [`Config::magic`] once userspace has written a configuration.
pub const CONFIG_MAGIC: u32 = 0x464c_4447; // "FLDG"

/// The live configuration: the one entry of the `CONFIG` array. Zeroed (every defence off)
/// until userspace writes it when it creates the maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// [`CONFIG_MAGIC`] once written.
    pub magic: u32,
    /// Non-zero: global dry-run. The first drop reason is counted in the dry-run row and the
    /// packet passes.
    pub dry_run: u32,
    /// [`sanity_bits`].
    pub sanity: u32,
    /// First IPv4 fragments with less IP payload than this are dropped (`FRAGMENT_TINY`).
    pub fragment_min_bytes: u32,
    /// Non-zero: the reflection preset is on (source ports in `PORT_FLAGS`).
    pub reflection: u32,
    /// Which half of `RULES` is live (0 or 1); userspace fills the other half, then flips this.
    pub rule_bank: u32,
    /// Rules in the live bank, at most [`RULES_MAX`].
    pub rule_count: u32,
    /// Bit per [`Class`] with any limit configured: the packet skips the stage when 0.
    pub limit_classes: u32,
    pub limits: [ClassLimit; CLASS_COUNT],
    /// [`crate::synguard_bits`]: 0 = the SYN guard is off.
    pub synguard: u32,
    /// With [`crate::synguard_bits::WHEN_OVER`]: a destination is guarded while it receives
    /// more SYNs per second than this.
    pub synguard_over_pps: u32,
    /// Non-zero while any `SAMPLE_RATES` slot is (see [`crate::sample`]).
    pub sample: u32,
    /// Bytes of each sampled packet copied (1..=[`crate::SAMPLE_BYTES_MAX`]; 0: the default).
    pub sample_snaplen: u32,
    /// Automatic mitigation, a [`crate::auto_mode`] value: non-zero, packets to the host
    /// groups' destinations are counted (and sampled) on arrival.
    pub auto: u32,
    /// 1 in this many packets to a host group's destination go to `AUTO_SAMPLES`; 0: none.
    pub auto_sample: u32,
}
const _: () = assert!(size_of::<Config>() == 56 + 48 * CLASS_COUNT);

impl Config {
    /// Every defence off (what a zeroed `CONFIG` means to the data plane), with the default
    /// source grouping.
    pub const fn off() -> Config {
        Config {
            magic: 0,
            dry_run: 0,
            sanity: 0,
            fragment_min_bytes: 0,
            reflection: 0,
            rule_bank: 0,
            rule_count: 0,
            limit_classes: 0,
            limits: [ClassLimit {
                per_source: Rate { pps: 0, bps: 0 },
                ban_after_ns: 0,
                ban_for_ns: 0,
                v4_prefix: SOURCE_PREFIX_V4_DEFAULT,
                v6_prefix: SOURCE_PREFIX_V6_DEFAULT,
                has_aggregate: 0,
                _pad: 0,
            }; CLASS_COUNT],
            synguard: 0,
            synguard_over_pps: 0,
            sample: 0,
            sample_snaplen: 0,
            auto: 0,
            auto_sample: 0,
        }
    }

    /// The configuration floodgate starts with: sanity defaults on, nothing else.
    pub const fn initial() -> Config {
        Config {
            magic: CONFIG_MAGIC,
            sanity: sanity_bits::DEFAULT,
            fragment_min_bytes: FRAGMENT_MIN_BYTES_DEFAULT,
            ..Config::off()
        }
    }
}

/// `PORT_FLAGS` bits, indexed by port number.
pub mod port_bits {
    /// UDP from this source port is reflection when the preset is on.
    pub const AMPLIFIER: u32 = 1 << 0;
    /// UDP to this destination port is exempt from the reflection preset.
    pub const EXEMPT_DST: u32 = 1 << 1;
    /// TCP to this destination port is protected by the SYN guard when it is on.
    pub const SYNGUARD: u32 = 1 << 2;
}

/// Well-known UDP amplification services: (port, service). The reflection preset's default
/// source-port set; each is in CISA's UDP amplification table or Cloudflare/Akamai reports.
pub const AMPLIFIERS: [(u16, &str); 20] = [
    (17, "qotd"),
    (19, "chargen"),
    (53, "dns"),
    (69, "tftp"),
    (111, "portmap"),
    (123, "ntp"),
    (137, "netbios"),
    (161, "snmp"),
    (389, "cldap"),
    (427, "slp"),
    (520, "rip"),
    (1900, "ssdp"),
    (3283, "ard"),
    (3702, "ws-discovery"),
    (5353, "mdns"),
    (5683, "coap"),
    (10001, "ubiquiti"),
    (11211, "memcached"),
    (27015, "steam"),
    (37810, "dhdiscover"),
];

/// Most rules in the table.
pub const RULES_MAX: u32 = 64;

/// [`Rule::action`].
pub const RULE_DROP: u32 = 0;
pub const RULE_PASS: u32 = 1;
pub const RULE_LIMIT: u32 = 2;

/// [`Rule::matches`] bits: which fields take part in the match. A rule with none matches every
/// IP packet.
pub mod match_bits {
    pub const V4: u32 = 1 << 0;
    pub const V6: u32 = 1 << 1;
    pub const PROTO: u32 = 1 << 2;
    pub const SRC: u32 = 1 << 3;
    pub const DST: u32 = 1 << 4;
    /// Port ranges need an L4 header: a non-first fragment never matches them.
    pub const SPORT: u32 = 1 << 5;
    pub const DPORT: u32 = 1 << 6;
    pub const TCP_FLAGS: u32 = 1 << 7;
    pub const LENGTH: u32 = 1 << 8;
    pub const TTL: u32 = 1 << 9;
    pub const ICMP_TYPE: u32 = 1 << 10;
    pub const ICMP_CODE: u32 = 1 << 11;
    /// [`super::Rule::fragment`]: fragments only (1) or unfragmented packets only (0).
    pub const FRAGMENT: u32 = 1 << 12;
}

/// One rule of the ordered `RULES` table (two banks of [`RULES_MAX`]). Addresses and masks are
/// network-order bytes read as native `u64` pairs (IPv4 uses the first 4 bytes), so a prefix
/// test is two ANDs and two compares.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// Stable id shown by `rule list`; keys `RULE_STATS`.
    pub id: u32,
    /// [`RULE_DROP`], [`RULE_PASS`] or [`RULE_LIMIT`].
    pub action: u32,
    /// [`match_bits`].
    pub matches: u32,
    /// Non-zero: count what the rule would do, change nothing.
    pub dry_run: u32,
    pub src_addr: [u64; 2],
    pub src_mask: [u64; 2],
    pub dst_addr: [u64; 2],
    pub dst_mask: [u64; 2],
    /// Inclusive ranges, host byte order.
    pub sport_lo: u16,
    pub sport_hi: u16,
    pub dport_lo: u16,
    pub dport_hi: u16,
    /// IP packet length (IPv4 total length; IPv6 40 + payload length), inclusive.
    pub len_lo: u16,
    pub len_hi: u16,
    pub ttl_lo: u8,
    pub ttl_hi: u8,
    pub proto: u8,
    pub tcp_flags_mask: u8,
    pub tcp_flags_value: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// With [`match_bits::FRAGMENT`]: 1 matches fragments (first or later), 0 the rest.
    pub fragment: u8,
    pub _pad: [u8; 4],
    /// For [`RULE_LIMIT`]: the aggregate rate of everything the rule matches.
    pub rate: Rate,
    /// The rule's token buckets (data plane state; see [`crate::rate`]).
    pub bucket: Bucket,
}
const _: () = assert!(size_of::<Rule>() == 16 + 64 + 24 + 16 + 16);

/// Two GCRA buckets (packets and bytes): the theoretical arrival time of each, in ns on
/// CLOCK_MONOTONIC. Updated with atomic adds by every CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub tat_packets: u64,
    pub tat_bytes: u64,
}

/// Value of an `AGGREGATE_V4/V6` trie entry: the cap and its buckets. The trie key is the class
/// byte followed by the destination address, so one trie holds every class's prefixes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Aggregate {
    pub rate: Rate,
    pub bucket: Bucket,
}
const _: () = assert!(size_of::<Aggregate>() == 32);

/// Most aggregate caps (class × destination prefix) per family.
pub const AGGREGATE_MAX: u32 = 1024;
/// Most destination prefixes exempt from the reflection preset, per family.
pub const REFLECT_EXEMPT_MAX: u32 = 1024;

/// Key of the per-source state table (LRU hash).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// [`Class`] as u32.
    pub class: u32,
    /// 4 or 6.
    pub family: u32,
    /// The source masked to the class's prefix, network byte order (IPv4: first 4 bytes).
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<SourceKey>() == 24);

/// Value of the per-source state table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceState {
    pub bucket: Bucket,
    /// Start of the current over-limit streak (ns, CLOCK_MONOTONIC); 0 = none.
    pub over_since_ns: u64,
    /// Last time this source was over its limit.
    pub last_over_ns: u64,
}
const _: () = assert!(size_of::<SourceState>() == 32);
