//! The allowlist and the blocklist: typed access to their maps, with expiry, hit counts and
//! comments. Each list is an exact-host hash plus a prefix trie per family; hosts (/32, /128)
//! go to the hash, which the data plane checks first.
//!
//! Every change is all-or-nothing: a batch that fails part-way (a full map) is rolled back.

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, MapData, MapError, lpm_trie::Key},
    sys::SyscallError,
};
use filter_common::{
    ALLOW_EXACT_MAX, ALLOW_PREFIX_MAX, BLOCK_EXACT_MAX, BLOCK_PREFIX_MAX, COMMENT_MAX, EntryMeta,
    LIST_ALLOW, LIST_BLOCK, LIST_RULE, ListEntry, MetaKey, SOURCE_AUTO, SOURCE_CLI, entry_live,
    map_names as names,
};
use ipnet::IpNet;

use crate::{
    error::{Error, IoContext, MapContext, Result},
    front::Front,
    journal::{Journal, Undo},
    loader::PinDir,
    prefix::is_host,
    sources::{SourceNames, Sources},
    sys::monotonic_now,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListKind {
    Allow,
    Block,
}

impl ListKind {
    pub fn name(self) -> &'static str {
        match self {
            ListKind::Allow => "allowlist",
            ListKind::Block => "blocklist",
        }
    }
    fn meta_id(self) -> u32 {
        match self {
            ListKind::Allow => LIST_ALLOW,
            ListKind::Block => LIST_BLOCK,
        }
    }
    fn map_names(self) -> [&'static str; 4] {
        match self {
            ListKind::Allow => [
                names::ALLOW_V4_EXACT,
                names::ALLOW_V4,
                names::ALLOW_V6_EXACT,
                names::ALLOW_V6,
            ],
            ListKind::Block => [
                names::BLOCK_V4_EXACT,
                names::BLOCK_V4,
                names::BLOCK_V6_EXACT,
                names::BLOCK_V6,
            ],
        }
    }
    /// Built-in sizes of [exact, prefix] maps, used when the pins cannot say.
    fn default_capacities(self) -> (u32, u32) {
        match self {
            ListKind::Allow => (ALLOW_EXACT_MAX, ALLOW_PREFIX_MAX),
            ListKind::Block => (BLOCK_EXACT_MAX, BLOCK_PREFIX_MAX),
        }
    }
}

/// The four maps of a list, in the order of [`ListKind::map_names`].
pub const MAP_LABELS: [&str; 4] = ["IPv4 host", "IPv4 prefix", "IPv6 host", "IPv6 prefix"];

/// Which of the four maps holds `net`.
fn slot(net: &IpNet) -> usize {
    match (net, is_host(net)) {
        (IpNet::V4(_), true) => 0,
        (IpNet::V4(_), false) => 1,
        (IpNet::V6(_), true) => 2,
        (IpNet::V6(_), false) => 3,
    }
}

/// Entries per BPF_MAP_UPDATE_BATCH call, and the fewest worth a batch.
const BATCH: usize = 8192;
const BATCH_MIN: usize = 16;

/// A list entry to add: prefix, TTL (None = never expires), comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub net: IpNet,
    pub ttl: Option<Duration>,
    pub comment: Option<String>,
}

/// What an add did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Added {
    /// Entries that were not there.
    pub added: usize,
    /// Entries that were there (their TTL, comment and source are now the new ones).
    pub updated: usize,
}

/// One list entry as users see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub net: IpNet,
    /// Time left; `None` = never expires.
    pub expires_in: Option<Duration>,
    pub hits: u64,
    pub comment: Option<String>,
    /// Added by the data plane's auto-ban, not by an operator.
    pub auto: bool,
    /// The list source that added it.
    pub source: u32,
}

/// The four maps of one list.
pub struct ListMaps {
    kind: ListKind,
    v4_exact: HashMap<MapData, [u8; 4], ListEntry>,
    v4: LpmTrie<MapData, [u8; 4], ListEntry>,
    v6_exact: HashMap<MapData, [u8; 16], ListEntry>,
    v6: LpmTrie<MapData, [u8; 16], ListEntry>,
    /// max_entries of each map, in [`MAP_LABELS`] order.
    capacities: [u32; 4],
}

/// Take a map out of the object as its typed wrapper.
pub fn take_map<T: TryFrom<aya::maps::Map, Error = MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T> {
    let map = ebpf.take_map(name).ok_or_else(|| Error::MissingInObject {
        what: "map",
        name: name.to_string(),
    })?;
    T::try_from(map).map_context(|| format!("opening map {name}"))
}

fn v4(net: &IpNet) -> [u8; 4] {
    match net.addr() {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => unreachable!("caller matched the family"),
    }
}

fn v6(net: &IpNet) -> [u8; 16] {
    match net.addr() {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => unreachable!("caller matched the family"),
    }
}

fn is_full(e: &MapError) -> bool {
    matches!(e, MapError::SyscallError(SyscallError { io_error, .. })
        if matches!(io_error.raw_os_error(), Some(libc::E2BIG) | Some(libc::ENOSPC) | Some(libc::ENOMEM)))
}

fn not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(SyscallError { io_error, .. }) => {
            io_error.raw_os_error() == Some(libc::ENOENT)
        }
        _ => false,
    }
}

impl ListMaps {
    pub fn take(ebpf: &mut Ebpf, pin: &PinDir, kind: ListKind) -> Result<ListMaps> {
        let [e4, p4, e6, p6] = kind.map_names();
        let (exact, prefix) = kind.default_capacities();
        let mut capacities = [exact, prefix, exact, prefix];
        for (cap, name) in capacities.iter_mut().zip(kind.map_names()) {
            if let Ok(info) = aya::maps::MapInfo::from_pin(pin.maps().join(name)) {
                *cap = info.max_entries();
            }
        }
        Ok(ListMaps {
            capacities,
            kind,
            v4_exact: take_map(ebpf, e4)?,
            v4: take_map(ebpf, p4)?,
            v6_exact: take_map(ebpf, e6)?,
            v6: take_map(ebpf, p6)?,
        })
    }

    fn get(&self, net: &IpNet) -> Result<Option<ListEntry>> {
        let r = match (net, is_host(net)) {
            (IpNet::V4(_), true) => self.v4_exact.get(&v4(net), 0),
            (IpNet::V4(_), false) => self.v4.get(&Key::new(net.prefix_len() as u32, v4(net)), 0),
            (IpNet::V6(_), true) => self.v6_exact.get(&v6(net), 0),
            (IpNet::V6(_), false) => self.v6.get(&Key::new(net.prefix_len() as u32, v6(net)), 0),
        };
        match r {
            Ok(v) if v.prefix_len == net.prefix_len() as u32 => Ok(Some(v)),
            // The trie answers a lookup with the longest covering prefix: not this entry.
            Ok(_) => Ok(None),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e).map_context(|| format!("reading {net} from the {}", self.kind.name())),
        }
    }

    /// max_entries of each map, in [`MAP_LABELS`] order.
    pub fn capacities(&self) -> [u32; 4] {
        self.capacities
    }

    fn insert(&mut self, net: &IpNet, value: ListEntry) -> Result<()> {
        let r = match (net, is_host(net)) {
            (IpNet::V4(_), true) => self.v4_exact.insert(v4(net), value, 0),
            (IpNet::V4(_), false) => {
                self.v4
                    .insert(&Key::new(net.prefix_len() as u32, v4(net)), value, 0)
            }
            (IpNet::V6(_), true) => self.v6_exact.insert(v6(net), value, 0),
            (IpNet::V6(_), false) => {
                self.v6
                    .insert(&Key::new(net.prefix_len() as u32, v6(net)), value, 0)
            }
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) if is_full(&e) => Err(Error::ListFull {
                list: self.kind.name(),
                map: MAP_LABELS[slot(net)],
                capacity: self.capacities[slot(net)],
            }),
            Err(e) => Err(e).map_context(|| format!("adding {net} to the {}", self.kind.name())),
        }
    }

    /// Is map `slot` ([`slot`]) empty? One get_next_key.
    fn is_empty(&self, slot: usize) -> bool {
        match slot {
            0 => self.v4_exact.keys().next().is_none(),
            1 => self.v4.keys().next().is_none(),
            2 => self.v6_exact.keys().next().is_none(),
            _ => self.v6.keys().next().is_none(),
        }
    }

    /// Write entries, all of one map ([`slot`]), with one BPF_MAP_UPDATE_BATCH (entries that
    /// exist are overwritten). Returns how many were written and why it stopped early, if it
    /// did (E2BIG: full; EINVAL: no batch support here).
    fn insert_batch(
        &self,
        nets: &[IpNet],
        values: &[ListEntry],
    ) -> (usize, Option<std::io::Error>) {
        use aya::maps::IterableMap;
        use std::os::fd::AsFd;
        // aya's trie key is the kernel's layout (prefix length, then address), packed.
        let trie4 = |n: &IpNet| Key::new(n.prefix_len() as u32, v4(n));
        let trie6 = |n: &IpNet| Key::new(n.prefix_len() as u32, v6(n));
        let flags = 0;
        match slot(&nets[0]) {
            0 => {
                let keys: Vec<[u8; 4]> = nets.iter().map(v4).collect();
                crate::batch::update(self.v4_exact.map().fd().as_fd(), &keys, values, flags)
            }
            1 => {
                let keys: Vec<_> = nets.iter().map(trie4).collect();
                crate::batch::update(self.v4.map().fd().as_fd(), &keys, values, flags)
            }
            2 => {
                let keys: Vec<[u8; 16]> = nets.iter().map(v6).collect();
                crate::batch::update(self.v6_exact.map().fd().as_fd(), &keys, values, flags)
            }
            _ => {
                let keys: Vec<_> = nets.iter().map(trie6).collect();
                crate::batch::update(self.v6.map().fd().as_fd(), &keys, values, flags)
            }
        }
    }

    fn full(&self, net: &IpNet) -> Error {
        Error::ListFull {
            list: self.kind.name(),
            map: MAP_LABELS[slot(net)],
            capacity: self.capacities[slot(net)],
        }
    }

    fn remove(&mut self, net: &IpNet) -> Result<bool> {
        let r = match (net, is_host(net)) {
            (IpNet::V4(_), true) => self.v4_exact.remove(&v4(net)),
            (IpNet::V4(_), false) => self.v4.remove(&Key::new(net.prefix_len() as u32, v4(net))),
            (IpNet::V6(_), true) => self.v6_exact.remove(&v6(net)),
            (IpNet::V6(_), false) => self.v6.remove(&Key::new(net.prefix_len() as u32, v6(net))),
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => {
                Err(e).map_context(|| format!("removing {net} from the {}", self.kind.name()))
            }
        }
    }

    /// Every entry with its value.
    pub fn entries(&self) -> Result<Vec<(IpNet, ListEntry)>> {
        let what = || "listing entries".to_string();
        let mut out = Vec::new();
        for kv in self.v4_exact.iter() {
            let (k, v) = kv.map_context(what)?;
            out.push((IpNet::from(IpAddr::V4(Ipv4Addr::from(k))), v));
        }
        for kv in self.v4.iter() {
            let (k, v) = kv.map_context(what)?;
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from(k.data()), k.prefix_len() as u8)
                .expect("the kernel only stores valid prefix lengths");
            out.push((IpNet::V4(net), v));
        }
        for kv in self.v6_exact.iter() {
            let (k, v) = kv.map_context(what)?;
            out.push((IpNet::from(IpAddr::V6(Ipv6Addr::from(k))), v));
        }
        for kv in self.v6.iter() {
            let (k, v) = kv.map_context(what)?;
            let net = ipnet::Ipv6Net::new(Ipv6Addr::from(k.data()), k.prefix_len() as u8)
                .expect("the kernel only stores valid prefix lengths");
            out.push((IpNet::V6(net), v));
        }
        Ok(out)
    }

    /// Entry counts: (IPv4, IPv6).
    pub fn counts(&self) -> Result<(usize, usize)> {
        let [h4, p4, h6, p6] = self.map_counts();
        Ok((h4 + p4, h6 + p6))
    }

    /// Entries in each map, in [`MAP_LABELS`] order (expired ones not yet swept included).
    pub fn map_counts(&self) -> [usize; 4] {
        [
            self.v4_exact.keys().count(),
            self.v4.keys().count(),
            self.v6_exact.keys().count(),
            self.v6.keys().count(),
        ]
    }
}

fn meta_key(kind: ListKind, net: &IpNet) -> MetaKey {
    let mut addr = [0u8; 16];
    let family = match net.addr() {
        IpAddr::V4(a) => {
            addr[..4].copy_from_slice(&a.octets());
            4
        }
        IpAddr::V6(a) => {
            addr = a.octets();
            6
        }
    };
    MetaKey {
        list: kind.meta_id(),
        family,
        prefix_len: net.prefix_len() as u32,
        addr,
    }
}

/// Both lists, the shared comment map and the source registry.
pub struct Lists {
    pub allow: ListMaps,
    pub block: ListMaps,
    pub sources: Sources,
    meta: HashMap<MapData, MetaKey, EntryMeta>,
    /// The bitmap the data plane reads before the list maps.
    pub front: Front,
    /// Where a batch's write journal goes ([`crate::journal`]).
    journal_path: std::path::PathBuf,
    /// Kernel id of the comment map: a journal names the maps it belongs to.
    map_id: u32,
}

/// Entries whose old state is journaled (and written) at a time, before they change.
const CHUNK: usize = 4096;

/// What undoing an unfinished batch did ([`Lists::recover`]).
#[derive(Debug, Clone)]
pub struct Recovered {
    pub list: &'static str,
    pub source: String,
    pub pid: u32,
    pub started_unix_s: u64,
    /// Entry and comment changes undone.
    pub undone: usize,
    /// The journal was from another boot or other maps: removed, nothing undone.
    pub stale: bool,
}

impl std::fmt::Display for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.stale {
            return write!(
                f,
                "removed a write journal left from earlier maps (nothing to undo)"
            );
        }
        write!(
            f,
            "rolled back an unfinished change to the {} (source {}, by pid {}, started at unix \
             time {}), which its process did not live to finish: {} change(s) undone, the {} is \
             as it was before it",
            self.list, self.source, self.pid, self.started_unix_s, self.undone, self.list
        )
    }
}

impl Lists {
    pub fn take(ebpf: &mut Ebpf, pin: &PinDir) -> Result<Lists> {
        let lists = Lists {
            allow: ListMaps::take(ebpf, pin, ListKind::Allow)?,
            block: ListMaps::take(ebpf, pin, ListKind::Block)?,
            sources: Sources::take(ebpf)?,
            meta: take_map(ebpf, names::LIST_META)?,
            front: Front::take(ebpf)?,
            journal_path: crate::sys::run_file(pin.root(), ".journal")?,
            map_id: 0,
        };
        let mut lists = lists;
        lists.map_id = aya::maps::IterableMap::map(&lists.meta)
            .info()
            .map_context(|| "reading the comment map's id".into())?
            .id();
        if !lists.front.ready() {
            // Maps from a floodgate without a front (or just created): build it once.
            for kind in [ListKind::Allow, ListKind::Block] {
                lists.rebuild_front(kind)?;
            }
            lists.front.set_ready();
        }
        Ok(lists)
    }

    /// Make the front show exactly `kind`'s entries.
    pub fn rebuild_front(&self, kind: ListKind) -> Result<()> {
        self.front.rebuild(kind, || {
            Ok(self
                .list(kind)
                .entries()?
                .into_iter()
                .map(|(n, _)| n)
                .collect())
        })
    }

    /// After `n` removals from `kind`: rebuild the front once enough slots may be stale.
    fn removed(&self, kind: ListKind, n: usize) -> Result<()> {
        if n > 0 && self.front.removed(kind, n) {
            self.rebuild_front(kind)?;
        }
        Ok(())
    }

    /// Rebuild what is due: a list with many removals, and the blocklist when the data
    /// plane has auto-banned sources since the last rebuild (until then it looks every source
    /// of that family up in the blocklist). Returns whether anything was rebuilt.
    pub fn refresh_front(&self) -> Result<bool> {
        let mut did = false;
        if self.front.auto_pending() || self.front.rebuild_due(ListKind::Block) {
            self.rebuild_front(ListKind::Block)?;
            did = true;
        }
        if self.front.rebuild_due(ListKind::Allow) {
            self.rebuild_front(ListKind::Allow)?;
            did = true;
        }
        Ok(did)
    }

    pub fn list(&self, kind: ListKind) -> &ListMaps {
        match kind {
            ListKind::Allow => &self.allow,
            ListKind::Block => &self.block,
        }
    }

    fn list_mut(&mut self, kind: ListKind) -> &mut ListMaps {
        match kind {
            ListKind::Allow => &mut self.allow,
            ListKind::Block => &mut self.block,
        }
    }

    /// Add (or update) entries of source `source` with one TTL and comment: see [`Lists::upsert`].
    pub fn add(
        &mut self,
        kind: ListKind,
        source: u32,
        nets: &[IpNet],
        ttl: Option<Duration>,
        comment: Option<&str>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Added> {
        let items: Vec<Item> = nets
            .iter()
            .map(|&net| Item {
                net,
                ttl,
                comment: comment.map(str::to_string),
            })
            .collect();
        self.upsert(kind, source, &items, progress)
    }

    /// Add (or update) entries, all or nothing, also across a crash ([`crate::journal`]). An
    /// entry already present keeps its hit count and, when no new comment is given, its
    /// comment; its TTL becomes the item's (None = never) and it now belongs to `source` (an
    /// entry belongs to the source that last added it). `progress(done, total)` is called every
    /// few thousand entries.
    pub fn upsert(
        &mut self,
        kind: ListKind,
        source: u32,
        items: &[Item],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Added> {
        for i in items {
            crate::entry::check_item(i)?;
        }
        self.journaled(kind, source, |lists, j| {
            lists.upsert_journaled(j, kind, source, items, progress)
        })
    }

    /// Run `change` with a write journal: finished on success; on failure the journal's records
    /// are undone at once (and if this process dies first, by the next to take the lock).
    fn journaled<T>(
        &mut self,
        kind: ListKind,
        source: u32,
        change: impl FnOnce(&mut Lists, &mut Journal) -> Result<T>,
    ) -> Result<T> {
        let list = u8::from(kind == ListKind::Block);
        let mut journal = Journal::begin(&self.journal_path, list, source, self.map_id)?;
        match change(self, &mut journal) {
            Ok(out) => {
                journal.finish()?;
                Ok(out)
            }
            Err(e) => {
                // What was not written to the journal was not changed: commit the tail first.
                journal.commit()?;
                drop(journal);
                self.recover()?;
                Err(e)
            }
        }
    }

    fn upsert_journaled(
        &mut self,
        j: &mut Journal,
        kind: ListKind,
        source: u32,
        items: &[Item],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Added> {
        let now = monotonic_now();
        let total = items.len();
        let mut added = Added::default();
        let value_of = |item: &Item, hits: u64| ListEntry {
            // check_item bounds the TTL, so this cannot wrap; saturate rather than panic.
            expires_at_ns: item.ttl.map_or(0, |t| {
                u64::try_from(now.saturating_add(t).as_nanos()).unwrap_or(u64::MAX)
            }),
            hits,
            prefix_len: item.net.prefix_len() as u32,
            source,
        };
        // Front first: the data plane may match an entry as soon as it is in its map.
        for item in items {
            self.front.mark(kind, &item.net);
        }
        // Entries grouped by map (stable: a repeated entry keeps its order). A map that is
        // empty when its turn comes (a first load) takes its entries with one
        // BPF_MAP_UPDATE_BATCH per few thousand: none can have a hit count to keep. Otherwise
        // each entry is looked up and written on its own, as an update keeps its hit count.
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&i| slot(&items[i].net));
        // Where each map's entries end in `order`.
        let mut slot_end = [0usize; 4];
        for &j in &order {
            slot_end[slot(&items[j].net)] += 1;
        }
        for s in 1..4 {
            slot_end[s] += slot_end[s - 1];
        }
        let mut batch_ok = true;
        let mut empty: [Option<bool>; 4] = [None; 4];
        // Entries written so far: a repeat in the batch is an update, not a second add.
        let mut seen: HashSet<IpNet> = HashSet::new();
        let mut count = |net: IpNet, existed: bool, added: &mut Added| {
            if seen.insert(net) && !existed {
                added.added += 1;
            } else {
                added.updated += 1;
            }
        };
        let mut i = 0;
        while i < order.len() {
            let s0 = slot(&items[order[i]].net);
            let run_end = slot_end[s0].min(i + BATCH);
            // Asking whether a map is empty walks its buckets (milliseconds for a big sparse
            // hash): only when there are enough entries for a batch.
            let batch = batch_ok
                && run_end - i >= BATCH_MIN
                && *empty[s0].get_or_insert_with(|| self.list(kind).is_empty(s0));
            if batch {
                let nets: Vec<IpNet> = order[i..run_end].iter().map(|&j| items[j].net).collect();
                let values: Vec<ListEntry> = order[i..run_end]
                    .iter()
                    .map(|&j| value_of(&items[j], 0))
                    .collect();
                // The map was empty: undoing is removing (a repeat is removed twice, harmlessly).
                for net in &nets {
                    j.entry(net, None);
                }
                j.commit()?;
                let (done, err) = self.list(kind).insert_batch(&nets, &values);
                for net in &nets[..done] {
                    count(*net, false, &mut added);
                }
                i += done;
                match err.and_then(|e| e.raw_os_error()) {
                    None => {
                        progress(i, total);
                        continue;
                    }
                    Some(libc::E2BIG) | Some(libc::ENOSPC) | Some(libc::ENOMEM) => {
                        return Err(self.list(kind).full(&nets[done.min(nets.len() - 1)]));
                    }
                    // No batch support here: one at a time from now on.
                    Some(_) => batch_ok = false,
                }
                if i >= order.len() {
                    break;
                }
                continue;
            }
            // One at a time, a chunk of this map's run: journal the old values, then write.
            let end = run_end.min(i + CHUNK);
            let mut olds = Vec::with_capacity(end - i);
            for &x in &order[i..end] {
                let old = self.list(kind).get(&items[x].net)?;
                j.entry(&items[x].net, old.as_ref());
                olds.push(old);
            }
            j.commit()?;
            for (&x, old) in order[i..end].iter().zip(olds) {
                let item = &items[x];
                let value = value_of(item, old.map_or(0, |o| o.hits));
                self.list_mut(kind).insert(&item.net, value)?;
                count(item.net, old.is_some(), &mut added);
            }
            i = end;
            progress(i, total);
        }
        progress(total, total);
        let commented: Vec<&Item> = items.iter().filter(|i| i.comment.is_some()).collect();
        for chunk in commented.chunks(CHUNK) {
            for item in chunk {
                let old = self.meta.get(&meta_key(kind, &item.net), 0).ok();
                j.meta(&item.net, old.as_ref());
            }
            j.commit()?;
            for item in chunk {
                let c = item.comment.as_deref().unwrap_or_default();
                self.meta
                    .insert(meta_key(kind, &item.net), meta_with(c), 0)
                    .map_context(|| format!("storing the comment for {}", item.net))?;
            }
        }
        Ok(added)
    }

    /// Remove `nets` (those present), journaling each entry and comment first. Returns which
    /// were removed.
    fn remove_journaled(
        &mut self,
        j: &mut Journal,
        kind: ListKind,
        nets: &[IpNet],
    ) -> Result<Vec<bool>> {
        let mut removed = Vec::with_capacity(nets.len());
        for chunk in nets.chunks(CHUNK) {
            let mut olds = Vec::with_capacity(chunk.len());
            for net in chunk {
                let old = self.list(kind).get(net)?;
                let meta = self.meta.get(&meta_key(kind, net), 0).ok();
                if let Some(o) = &old {
                    j.entry(net, Some(o));
                }
                if let Some(m) = &meta {
                    j.meta(net, Some(m));
                }
                olds.push(old.is_some());
            }
            j.commit()?;
            for (net, present) in chunk.iter().zip(olds) {
                if present {
                    self.list_mut(kind).remove(net)?;
                    self.remove_meta(kind, net);
                }
                removed.push(present);
            }
        }
        let n = removed.iter().filter(|r| **r).count();
        self.removed(kind, n)?;
        Ok(removed)
    }

    /// Undo a batch whose writer died (or failed) part-way, if a journal says there is one.
    /// Call with the state lock held. Returns what was done, for the caller to say.
    pub fn recover(&mut self) -> Result<Option<Recovered>> {
        let Some(pending) = crate::journal::read(&self.journal_path, self.map_id)? else {
            return Ok(None);
        };
        let h = &pending.header;
        let kind = if h.list == 1 {
            ListKind::Block
        } else {
            ListKind::Allow
        };
        let mut out = Recovered {
            list: kind.name(),
            source: self.sources.names()?.get(h.source),
            pid: h.pid,
            started_unix_s: h.started_unix_s,
            undone: pending.records.len(),
            stale: pending.stale,
        };
        let (mut taken_out, mut put_back) = (0, Vec::new());
        for undo in pending.records.iter().rev() {
            match undo {
                Undo::Entry(net, None) => {
                    if self.list_mut(kind).remove(net)? {
                        taken_out += 1;
                    }
                }
                Undo::Entry(net, Some(old)) => {
                    self.list_mut(kind).insert(net, *old)?;
                    put_back.push(*net);
                }
                Undo::Meta(net, None) => self.remove_meta(kind, net),
                Undo::Meta(net, Some(old)) => self
                    .meta
                    .insert(meta_key(kind, net), *old, 0)
                    .map_context(|| format!("restoring the comment of {net}"))?,
            }
        }
        for net in &put_back {
            self.front.mark(kind, net);
        }
        self.removed(kind, taken_out)?;
        if out.stale {
            out.undone = 0;
        }
        match std::fs::remove_file(&self.journal_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).io_context(|| format!("removing {}", self.journal_path.display()));
            }
            _ => {}
        }
        Ok(Some(out))
    }

    /// Remove entries; all must be present, or nothing is removed.
    pub fn del(&mut self, kind: ListKind, nets: &[IpNet]) -> Result<()> {
        let missing: Vec<String> = nets
            .iter()
            .filter_map(|n| match self.list(kind).get(n) {
                Ok(Some(_)) => None,
                Ok(None) => Some(Ok(crate::prefix::display(n))),
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_>>()?;
        if !missing.is_empty() {
            return Err(Error::NotListed {
                list: kind.name(),
                entries: missing.join(", "),
            });
        }
        self.journaled(kind, SOURCE_CLI, |lists, j| {
            lists.remove_journaled(j, kind, nets).map(|_| ())
        })
    }

    fn remove_meta(&mut self, kind: ListKind, net: &IpNet) {
        // Most entries have no comment; a missing key is the normal case.
        let _ = self.meta.remove(&meta_key(kind, net));
    }

    /// Remove those of `nets` that are listed; returns (removed, not listed).
    pub fn remove_present(
        &mut self,
        kind: ListKind,
        nets: &[IpNet],
    ) -> Result<(Vec<IpNet>, Vec<IpNet>)> {
        let removed = self.journaled(kind, SOURCE_CLI, |lists, j| {
            lists.remove_journaled(j, kind, nets)
        })?;
        let (mut gone, mut absent) = (Vec::new(), Vec::new());
        for (net, r) in nets.iter().zip(removed) {
            if r {
                gone.push(*net)
            } else {
                absent.push(*net)
            }
        }
        Ok((gone, absent))
    }

    /// The id of source `name`, registering it if new. When every id is taken, the named
    /// sources with no entry left on either list are freed first ([`Sources::free`]), so rotating
    /// source names never run out. Call with the state lock held.
    pub fn register_source(&mut self, name: &str) -> Result<u32> {
        match self.sources.id_or_register(name) {
            Err(Error::TooManySources { .. }) => {
                self.free_unused_sources()?;
                self.sources.id_or_register(name)
            }
            r => r,
        }
    }

    /// Free every named source with no entry on either list; returns how many.
    pub fn free_unused_sources(&mut self) -> Result<usize> {
        let mut used: HashSet<u32> = HashSet::new();
        for kind in [ListKind::Allow, ListKind::Block] {
            used.extend(
                self.list(kind)
                    .entries()?
                    .into_iter()
                    .map(|(_, v)| v.source),
            );
        }
        let mut freed = 0;
        for (id, _) in self.sources.all()? {
            if id >= filter_common::SOURCES_FIXED && !used.contains(&id) {
                self.sources.free(id)?;
                freed += 1;
            }
        }
        Ok(freed)
    }

    /// Remove every entry of source `source`; returns how many. A named source left with no entry
    /// on either list is freed ([`Sources::free`]).
    pub fn remove_source(&mut self, kind: ListKind, source: u32) -> Result<usize> {
        let n = self.remove_source_entries(kind, source)?;
        let other = match kind {
            ListKind::Allow => ListKind::Block,
            ListKind::Block => ListKind::Allow,
        };
        if source >= filter_common::SOURCES_FIXED
            && !self
                .list(other)
                .entries()?
                .iter()
                .any(|(_, v)| v.source == source)
        {
            self.sources.free(source)?;
        }
        Ok(n)
    }

    fn remove_source_entries(&mut self, kind: ListKind, source: u32) -> Result<usize> {
        let entries: Vec<IpNet> = self
            .list(kind)
            .entries()?
            .into_iter()
            .filter(|(_, v)| v.source == source)
            .map(|(n, _)| n)
            .collect();
        self.journaled(kind, source, |lists, j| {
            lists.remove_journaled(j, kind, &entries)
        })?;
        Ok(entries.len())
    }

    /// Remove everything; returns how many entries were removed.
    pub fn flush(&mut self, kind: ListKind) -> Result<usize> {
        let entries: Vec<IpNet> = self
            .list(kind)
            .entries()?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        self.journaled(kind, SOURCE_CLI, |lists, j| {
            lists.remove_journaled(j, kind, &entries)
        })?;
        // Empty now: clearing the front costs nothing.
        if !entries.is_empty() {
            self.rebuild_front(kind)?;
        }
        Ok(entries.len())
    }

    /// Make source `source`'s entries exactly `items`: add or refresh those, then remove the
    /// source's others. Entries present in both never disappear in between; other sources' entries
    /// (auto-bans included) are not touched. All or nothing, also across a crash. Returns what
    /// was added and how many were removed.
    pub fn replace(
        &mut self,
        kind: ListKind,
        source: u32,
        items: &[Item],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(Added, usize)> {
        for i in items {
            crate::entry::check_item(i)?;
        }
        self.journaled(kind, source, |lists, j| {
            let added = lists.upsert_journaled(j, kind, source, items, progress)?;
            let keep: HashSet<&IpNet> = items.iter().map(|i| &i.net).collect();
            let stale: Vec<IpNet> = lists
                .list(kind)
                .entries()?
                .into_iter()
                .filter(|(n, v)| v.source == source && !keep.contains(n))
                .map(|(n, _)| n)
                .collect();
            lists.remove_journaled(j, kind, &stale)?;
            Ok((added, stale.len()))
        })
    }

    /// Would adding `nets` (or [`Lists::replace`] with them) fit? Replace adds before it
    /// removes, so each map must hold what it has plus what is new. Checked before anything
    /// changes, so a caller changing several lists can refuse the whole change up front.
    pub fn check_fits(&self, kind: ListKind, nets: &[IpNet]) -> Result<()> {
        let list = self.list(kind);
        let mut after = list.map_counts();
        let mut new: Vec<&IpNet> = nets.iter().collect();
        new.sort();
        new.dedup();
        for n in new {
            if list.get(n)?.is_none() {
                after[slot(n)] += 1;
            }
        }
        for (i, count) in after.iter().enumerate() {
            let cap = list.capacities[i];
            if *count > cap as usize {
                return Err(Error::ListFull {
                    list: kind.name(),
                    map: MAP_LABELS[i],
                    capacity: cap,
                });
            }
        }
        Ok(())
    }

    /// Delete entries whose TTL has passed (the data plane already ignores them).
    pub fn sweep_expired(&mut self, kind: ListKind) -> Result<usize> {
        let now = monotonic_now().as_nanos() as u64;
        let expired: Vec<IpNet> = self
            .list(kind)
            .entries()?
            .into_iter()
            .filter(|(_, v)| !entry_live(v.expires_at_ns, now))
            .map(|(n, _)| n)
            .collect();
        for net in &expired {
            self.list_mut(kind).remove(net)?;
            self.remove_meta(kind, net);
        }
        self.removed(kind, expired.len())?;
        Ok(expired.len())
    }

    /// Live entries per source, as [IPv4, IPv6] counts. One pass over the maps, without the
    /// per-entry comment lookups [`Lists::entries`] makes.
    pub fn source_counts(&self, kind: ListKind) -> Result<BTreeMap<u32, [usize; 2]>> {
        let now = monotonic_now().as_nanos() as u64;
        let mut out: BTreeMap<u32, [usize; 2]> = BTreeMap::new();
        for (net, v) in self.list(kind).entries()? {
            if entry_live(v.expires_at_ns, now) {
                out.entry(v.source).or_default()[usize::from(net.addr().is_ipv6())] += 1;
            }
        }
        Ok(out)
    }

    /// Live entries, sorted by family, address, prefix length.
    pub fn entries(&self, kind: ListKind) -> Result<Vec<Entry>> {
        let now = monotonic_now().as_nanos() as u64;
        let mut out: Vec<Entry> = self
            .list(kind)
            .entries()?
            .into_iter()
            .filter(|(_, v)| entry_live(v.expires_at_ns, now))
            .map(|(net, v)| {
                let comment = self.comment(&meta_key(kind, &net));
                Entry {
                    net,
                    expires_in: (v.expires_at_ns != 0)
                        .then(|| Duration::from_nanos(v.expires_at_ns - now)),
                    hits: v.hits,
                    comment,
                    auto: v.source == SOURCE_AUTO,
                    source: v.source,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (a.net.addr(), a.net.prefix_len()).cmp(&(b.net.addr(), b.net.prefix_len()))
        });
        Ok(out)
    }
}

/// One entry in `floodgate block list --json` and the API's `GET /v1/blocklist`.
#[derive(Debug, serde::Serialize)]
pub struct JsonEntry {
    pub cidr: String,
    /// Seconds left, rounded up (an entry with 0.4 s left still matches); null = never.
    pub expires_in_s: Option<u64>,
    pub hits: u64,
    pub comment: Option<String>,
    /// The source that added it: cli, config, auto or a named source.
    pub source: String,
    /// "manual" (CLI, configuration file, API) or "auto" (auto-ban by a rate limit).
    pub origin: &'static str,
}

/// Entries as JSON rows, sources named.
pub fn json_entries(names: &SourceNames, entries: &[Entry]) -> Vec<JsonEntry> {
    entries
        .iter()
        .map(|e| JsonEntry {
            cidr: e.net.to_string(),
            expires_in_s: e
                .expires_in
                .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
            hits: e.hits,
            comment: e.comment.clone(),
            source: names.get(e.source),
            origin: if e.auto { "auto" } else { "manual" },
        })
        .collect()
}

fn rule_meta_key(id: u32) -> MetaKey {
    MetaKey {
        list: LIST_RULE,
        family: 0,
        prefix_len: id,
        addr: [0; 16],
    }
}

impl Lists {
    /// A rule's comment (rules keep theirs in the same metadata map as list entries).
    pub fn rule_comment(&self, id: u32) -> Option<String> {
        self.comment(&rule_meta_key(id))
    }

    fn comment(&self, key: &MetaKey) -> Option<String> {
        self.meta.get(key, 0).ok().map(|m| {
            let len = (m.comment_len as usize).min(COMMENT_MAX);
            String::from_utf8_lossy(&m.comment[..len]).into_owned()
        })
    }

    pub fn set_rule_comment(&mut self, id: u32, comment: Option<&str>) -> Result<()> {
        if let Some(c) = comment {
            crate::entry::check_comment(c)?;
        }
        match comment {
            Some(c) => self
                .meta
                .insert(rule_meta_key(id), meta_with(c), 0)
                .map_context(|| format!("storing the comment of rule {id}")),
            None => {
                let _ = self.meta.remove(&rule_meta_key(id));
                Ok(())
            }
        }
    }
}

/// Metadata carrying `comment` (already checked by [`crate::entry::check_comment`]), added now.
fn meta_with(comment: &str) -> EntryMeta {
    let mut meta = EntryMeta {
        added_unix_s: unix_now(),
        comment_len: comment.len() as u32,
        ..EntryMeta::default()
    };
    meta.comment[..comment.len()].copy_from_slice(comment.as_bytes());
    meta
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
