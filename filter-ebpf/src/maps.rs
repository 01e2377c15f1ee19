//! Every map of the data plane. All are pinned by name under the pin directory, so the lists,
//! counters and the attached program outlive any floodgate process.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{HashMap, LpmTrie, PerCpuArray},
};
use filter_common::{
    ALLOW_EXACT_MAX, ALLOW_PREFIX_MAX, BLOCK_EXACT_MAX, BLOCK_PREFIX_MAX, Counter, EntryMeta,
    LIST_META_MAX, ListEntry, MetaKey, REASON_COUNT,
};

/// Packets and bytes per reason, per CPU; written here at the single exit, summed by the CLI.
#[map(name = "STATS")]
pub static STATS: PerCpuArray<Counter> = PerCpuArray::pinned(REASON_COUNT as u32, 0);

/// Allowlisted IPv4 source hosts (/32); written by the CLI.
#[map(name = "ALLOW_V4_EXACT")]
pub static ALLOW_V4_EXACT: HashMap<[u8; 4], ListEntry> =
    HashMap::pinned(ALLOW_EXACT_MAX, BPF_F_NO_PREALLOC);
/// Allowlisted IPv4 source prefixes (shorter than /32); written by the CLI.
#[map(name = "ALLOW_V4")]
pub static ALLOW_V4: LpmTrie<[u8; 4], ListEntry> = LpmTrie::pinned(ALLOW_PREFIX_MAX, 0);
/// Allowlisted IPv6 source hosts (/128); written by the CLI.
#[map(name = "ALLOW_V6_EXACT")]
pub static ALLOW_V6_EXACT: HashMap<[u8; 16], ListEntry> =
    HashMap::pinned(ALLOW_EXACT_MAX, BPF_F_NO_PREALLOC);
/// Allowlisted IPv6 source prefixes (shorter than /128); written by the CLI.
#[map(name = "ALLOW_V6")]
pub static ALLOW_V6: LpmTrie<[u8; 16], ListEntry> = LpmTrie::pinned(ALLOW_PREFIX_MAX, 0);

/// Blocklisted IPv4 source hosts (/32); written by the CLI.
#[map(name = "BLOCK_V4_EXACT")]
pub static BLOCK_V4_EXACT: HashMap<[u8; 4], ListEntry> =
    HashMap::pinned(BLOCK_EXACT_MAX, BPF_F_NO_PREALLOC);
/// Blocklisted IPv4 source prefixes (shorter than /32); written by the CLI.
#[map(name = "BLOCK_V4")]
pub static BLOCK_V4: LpmTrie<[u8; 4], ListEntry> = LpmTrie::pinned(BLOCK_PREFIX_MAX, 0);
/// Blocklisted IPv6 source hosts (/128); written by the CLI.
#[map(name = "BLOCK_V6_EXACT")]
pub static BLOCK_V6_EXACT: HashMap<[u8; 16], ListEntry> =
    HashMap::pinned(BLOCK_EXACT_MAX, BPF_F_NO_PREALLOC);
/// Blocklisted IPv6 source prefixes (shorter than /128); written by the CLI.
#[map(name = "BLOCK_V6")]
pub static BLOCK_V6: LpmTrie<[u8; 16], ListEntry> = LpmTrie::pinned(BLOCK_PREFIX_MAX, 0);

/// Comments and add times of list entries. Written and read by the CLI only; the program never
/// looks here, it is declared in this object so that one loader creates and pins every map.
#[map(name = "LIST_META")]
pub static LIST_META: HashMap<MetaKey, EntryMeta> =
    HashMap::pinned(LIST_META_MAX, BPF_F_NO_PREALLOC);
