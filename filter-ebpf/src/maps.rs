//! Every map of the data plane. All are pinned by name under the pin directory, so the lists,
//! counters and the attached program outlive any floodgate process.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap,
        ProgramArray, RingBuf,
    },
};
use filter_common::{
    AGGREGATE_MAX, ALLOW_EXACT_MAX, ALLOW_PREFIX_MAX, AUTO_DST_MAX, AUTO_GROUPS_MAX, Aggregate,
    AutoCounters, AutoKey, BLOCK_EXACT_MAX, BLOCK_PREFIX_MAX, Config, Counter, EntryMeta,
    FRONT_LEN, LIST_META_MAX, ListEntry, MetaKey, PrefixKey, REFLECT_EXEMPT_MAX, RULES_MAX, Rule,
    SOURCE_STATE_DEFAULT, SOURCES_MAX, STATS_SLOTS, SYNGUARD_DST_MAX, SYNGUARD_RATE_MAX, SourceKey,
    SourceName, SourceState, SynRate, SynguardSecret, synguard_stat,
};

/// Packets and bytes per reason (enforced row, then dry-run row), per CPU; written at the
/// single exit, summed by the CLI.
#[map(name = "STATS")]
pub static STATS: PerCpuArray<Counter> = PerCpuArray::pinned(STATS_SLOTS as u32, 0);

/// The lists' front bitmap (see `filter_common::FRONT_SLOT_BITS`): read first for every
/// source; written by the CLI and the daemon through mmap, its auto-ban words by the data plane.
#[map(name = "FRONT")]
pub static FRONT: Array<u64> = Array::pinned(FRONT_LEN, BPF_F_MMAPABLE);

/// Allowlisted IPv4 source hosts (/32); written by the CLI.
#[map(name = "ALLOW_V4_EXACT")]
pub static ALLOW_V4_EXACT: HashMap<[u8; 4], ListEntry> =
    HashMap::pinned(ALLOW_EXACT_MAX, BPF_F_NO_PREALLOC);
/// Allowlisted IPv4 source prefixes (shorter than /32), keyed by length and prefix; written by
/// the CLI.
#[map(name = "ALLOW_V4")]
pub static ALLOW_V4: HashMap<PrefixKey<[u8; 4]>, ListEntry> =
    HashMap::pinned(ALLOW_PREFIX_MAX, BPF_F_NO_PREALLOC);
/// Allowlisted IPv6 source hosts (/128); written by the CLI.
#[map(name = "ALLOW_V6_EXACT")]
pub static ALLOW_V6_EXACT: HashMap<[u8; 16], ListEntry> =
    HashMap::pinned(ALLOW_EXACT_MAX, BPF_F_NO_PREALLOC);
/// Allowlisted IPv6 source prefixes (shorter than /128), keyed by length and prefix; written
/// by the CLI.
#[map(name = "ALLOW_V6")]
pub static ALLOW_V6: HashMap<PrefixKey<[u8; 16]>, ListEntry> =
    HashMap::pinned(ALLOW_PREFIX_MAX, BPF_F_NO_PREALLOC);

/// Blocklisted IPv4 source hosts (/32); written by the CLI.
#[map(name = "BLOCK_V4_EXACT")]
pub static BLOCK_V4_EXACT: HashMap<[u8; 4], ListEntry> =
    HashMap::pinned(BLOCK_EXACT_MAX, BPF_F_NO_PREALLOC);
/// Blocklisted IPv4 source prefixes (shorter than /32), keyed by length and prefix; written
/// by the CLI and the auto-ban.
#[map(name = "BLOCK_V4")]
pub static BLOCK_V4: HashMap<PrefixKey<[u8; 4]>, ListEntry> =
    HashMap::pinned(BLOCK_PREFIX_MAX, BPF_F_NO_PREALLOC);
/// Blocklisted IPv6 source hosts (/128); written by the CLI.
#[map(name = "BLOCK_V6_EXACT")]
pub static BLOCK_V6_EXACT: HashMap<[u8; 16], ListEntry> =
    HashMap::pinned(BLOCK_EXACT_MAX, BPF_F_NO_PREALLOC);
/// Blocklisted IPv6 source prefixes (shorter than /128), keyed by length and prefix; written
/// by the CLI and the auto-ban.
#[map(name = "BLOCK_V6")]
pub static BLOCK_V6: HashMap<PrefixKey<[u8; 16]>, ListEntry> =
    HashMap::pinned(BLOCK_PREFIX_MAX, BPF_F_NO_PREALLOC);

/// Comments and add times of list entries. Written and read by the CLI only; the program never
/// looks here, it is declared in this object so that one loader creates and pins every map.
#[map(name = "LIST_META")]
pub static LIST_META: HashMap<MetaKey, EntryMeta> =
    HashMap::pinned(LIST_META_MAX, BPF_F_NO_PREALLOC);

/// Names of the list sources entries come from (`ListEntry::source` indexes it). Userspace only.
#[map(name = "SOURCE_NAMES")]
pub static SOURCE_NAMES: Array<SourceName> = Array::pinned(SOURCES_MAX, 0);

/// Blocklist drops (packets, bytes) per list source, per CPU, indexed by `ListEntry::source`;
/// written on every enforced blocklist drop, summed by the CLI and the daemon's metrics.
#[map(name = "SOURCE_DROPS")]
pub static SOURCE_DROPS: PerCpuArray<Counter> = PerCpuArray::pinned(SOURCES_MAX, 0);

/// The live configuration (one [`Config`]): sanity switches, dry-run, rule bank, limits.
/// Written by the CLI/daemon; read on every packet.
#[map(name = "CONFIG")]
pub static CONFIG: Array<Config> = Array::pinned(1, 0);

/// The ordered rule table, two banks of RULES_MAX: the CLI fills the idle bank, then flips
/// `Config::rule_bank`, so a packet never sees a half-written table.
#[map(name = "RULES")]
pub static RULES: Array<Rule> = Array::pinned(2 * RULES_MAX, 0);

/// Packets and bytes each rule matched, per CPU, keyed by rule id; entries created by the CLI.
#[map(name = "RULE_STATS")]
pub static RULE_STATS: PerCpuHashMap<u32, Counter> = PerCpuHashMap::pinned(2 * RULES_MAX, 0);

/// Per UDP port: amplifier source port / exempt destination port bits; written by the CLI.
#[map(name = "PORT_FLAGS")]
pub static PORT_FLAGS: Array<u32> = Array::pinned(65536, 0);

/// Destination prefixes exempt from the reflection preset; written by the CLI.
#[map(name = "REFLECT_EXEMPT_V4")]
pub static REFLECT_EXEMPT_V4: LpmTrie<[u8; 4], u32> = LpmTrie::pinned(REFLECT_EXEMPT_MAX, 0);
#[map(name = "REFLECT_EXEMPT_V6")]
pub static REFLECT_EXEMPT_V6: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(REFLECT_EXEMPT_MAX, 0);

/// Per-source token buckets and ban streaks, written by the data plane. LRU: a random-source
/// flood evicts the oldest sources instead of filling the table. The CLI sets the size.
#[map(name = "SOURCE_STATE")]
pub static SOURCE_STATE: LruHashMap<SourceKey, SourceState> =
    LruHashMap::pinned(SOURCE_STATE_DEFAULT, 0);

/// Aggregate caps per class and protected destination prefix; key = class byte + address.
/// Rates written by the CLI, buckets by the data plane.
#[map(name = "AGGREGATE_V4")]
pub static AGGREGATE_V4: LpmTrie<[u8; 5], Aggregate> = LpmTrie::pinned(AGGREGATE_MAX, 0);
#[map(name = "AGGREGATE_V6")]
pub static AGGREGATE_V6: LpmTrie<[u8; 17], Aggregate> = LpmTrie::pinned(AGGREGATE_MAX, 0);

/// The later stages of the pipeline (`filter_common::STAGES`), filled by the loader: the first
/// stage tail-calls into them. Pinned with the rest, so the attached program keeps its stages.
#[map(name = "STAGES")]
pub static STAGES: ProgramArray = ProgramArray::pinned(filter_common::STAGES.len() as u32, 0);

/// Per-CPU scratch for the packet facts the defences read (see `facts::Facts`), written by
/// the first stage, read by the defences stage after the tail call (same CPU, no preemption
/// in between). Pinned: the first stage and the stage it jumps to may come from two loads.
#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<crate::facts::Facts> = PerCpuArray::pinned(1, 0);

/// Destination prefixes the SYN guard protects when `synguard_bits::DST` is set; written by
/// the CLI and the daemon.
#[map(name = "SYNGUARD_DST_V4")]
pub static SYNGUARD_DST_V4: LpmTrie<[u8; 4], u32> = LpmTrie::pinned(SYNGUARD_DST_MAX, 0);
#[map(name = "SYNGUARD_DST_V6")]
pub static SYNGUARD_DST_V6: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(SYNGUARD_DST_MAX, 0);

/// The SipHash key of the SYN cookies (one entry); random, written by userspace once.
#[map(name = "SYNGUARD_SECRET")]
pub static SYNGUARD_SECRET: Array<SynguardSecret> = Array::pinned(1, 0);

/// SYN guard counters beside the reasons (`synguard_stat`), per CPU; written by the XDP stage
/// and the TC program, summed by the CLI and the daemon.
#[map(name = "SYNGUARD_STATS")]
pub static SYNGUARD_STATS: PerCpuArray<u64> = PerCpuArray::pinned(synguard_stat::COUNT, 0);

/// SYNs per second per destination address for `synguard on --when-over`; written by the data
/// plane. LRU: a flood spread over many destinations evicts the quiet ones.
#[map(name = "SYNGUARD_RATE")]
pub static SYNGUARD_RATE: LruHashMap<[u8; 16], SynRate> = LruHashMap::pinned(SYNGUARD_RATE_MAX, 0);

/// Per-CPU room for the TCP options of the SYN being answered (the SYN guard stage's stack is
/// full with the reply it builds). Data plane only.
#[map(name = "SYNGUARD_OPTIONS")]
pub static SYNGUARD_OPTIONS: PerCpuArray<[u8; 64]> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for the SYN-ACK's IP and TCP headers while they are built. Data plane only.
#[map(name = "SYNGUARD_REPLY")]
pub static SYNGUARD_REPLY: PerCpuArray<[u8; 80]> = PerCpuArray::with_max_entries(1, 0);

/// Flows whose handshake ACK carried a valid cookie, until their expiry (monotonic ns): the
/// segments right behind that ACK pass before the kernel has made the connection. Data plane
/// only; LRU, so an ACK flood cannot fill it (only valid cookies get in).
#[map(name = "SYNGUARD_FLOWS")]
pub static SYNGUARD_FLOWS: LruHashMap<[u64; 5], u64> = LruHashMap::with_max_entries(1 << 16, 0);

/// Packet samples for `floodgate capture` (see `filter_common::sample`); written by the data
/// plane, read by the CLI and the daemon.
#[map(name = "SAMPLES")]
pub static SAMPLES: RingBuf = RingBuf::pinned(filter_common::SAMPLES_RING_BYTES, 0);

/// 1 in how many packets of each `STATS` slot are sampled (0: none); written by userspace.
#[map(name = "SAMPLE_RATES")]
pub static SAMPLE_RATES: Array<u32> = Array::pinned(STATS_SLOTS as u32, 0);

/// Samples lost (ring buffer full) per `STATS` slot, per CPU; written by the data plane.
#[map(name = "SAMPLE_LOST")]
pub static SAMPLE_LOST: PerCpuArray<u64> = PerCpuArray::pinned(STATS_SLOTS as u32, 0);

/// Per CPU and `STATS` slot: packets left to skip before the next sample. Data plane only.
#[map(name = "SAMPLE_SKIP")]
pub static SAMPLE_SKIP: PerCpuArray<u32> = PerCpuArray::with_max_entries(STATS_SLOTS as u32, 0);

/// Per CPU: what decided the packet being handled (see `sample::note`). Data plane only.
#[map(name = "SAMPLE_DETAIL")]
pub static SAMPLE_DETAIL: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Automatic mitigation's host groups: destination prefix -> group index; written by the
/// daemon from `[[auto.groups]]`.
#[map(name = "AUTO_GROUPS_V4")]
pub static AUTO_GROUPS_V4: LpmTrie<[u8; 4], u32> = LpmTrie::pinned(AUTO_GROUPS_MAX, 0);
#[map(name = "AUTO_GROUPS_V6")]
pub static AUTO_GROUPS_V6: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(AUTO_GROUPS_MAX, 0);

/// Per destination of a host group, per class: packets and bytes on arrival (`fg_account`);
/// read by the daemon's detector.
#[map(name = "AUTO_DST")]
pub static AUTO_DST: LruPerCpuHashMap<AutoKey, AutoCounters> =
    LruPerCpuHashMap::pinned(AUTO_DST_MAX, 0);

/// Arrival samples of packets to host groups' destinations, for the detector's fingerprints.
#[map(name = "AUTO_SAMPLES")]
pub static AUTO_SAMPLES: RingBuf = RingBuf::pinned(filter_common::AUTO_SAMPLES_RING_BYTES, 0);

/// `fg_account`'s per-CPU sampling countdown (not pinned: a new load may start afresh).
#[map(name = "AUTO_SKIP")]
pub static AUTO_SKIP: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Arrival samples lost to a full `AUTO_SAMPLES`, per CPU.
#[map(name = "AUTO_LOST")]
pub static AUTO_LOST: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);

/// `fg_account`'s per-CPU key under construction (off the stack: see auto.rs).
#[map(name = "AUTO_KEY")]
pub static AUTO_KEY: PerCpuArray<AutoKey> = PerCpuArray::with_max_entries(1, 0);

/// A zeroed `AUTO_DST` value to insert a new destination with (never written).
#[map(name = "AUTO_ZERO")]
pub static AUTO_ZERO: Array<AutoCounters> = Array::with_max_entries(1, 0);
