//! The allowlist and the blocklist: their maps, with expiry, hit counts, comments and the list
//! source of every entry. Each list is an exact-host hash plus a prefix hash (keyed by length
//! and address) per family; hosts (/32, /128) go to the exact hash. Every operation is written
//! once over [`ListMap`]; [`MapKind`] says which of the four maps holds an entry.
//!
//! Every change is all-or-nothing, also across a crash: its old state goes to a write journal
//! ([`crate::journal`]) before the maps change, and a batch that fails part-way (a full map) or
//! whose process dies is undone from it.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap, HashSet},
    path::PathBuf,
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};
use filter_common::{
    LIST_ALLOW, LIST_BLOCK, ListEntry, PrefixKey, SOURCE_CLI, SOURCES_FIXED, entry_live,
    map_names as names,
};
use ipnet::IpNet;

use crate::{
    comments::Comments,
    entry::{Entry, Item},
    error::{Error, IoContext, MapContext, Result},
    front::Front,
    journal::{Journal, Undo},
    loader::PinDir,
    maps::{ListMap, full_errno, is_full, not_found, take_map},
    prefix::is_host,
    sources::Sources,
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
    /// [`LIST_ALLOW`] or [`LIST_BLOCK`]: the list in a comment's key and a journal's header.
    pub fn id(self) -> u32 {
        match self {
            ListKind::Allow => LIST_ALLOW,
            ListKind::Block => LIST_BLOCK,
        }
    }
    /// The other list.
    fn other(self) -> ListKind {
        match self {
            ListKind::Allow => ListKind::Block,
            ListKind::Block => ListKind::Allow,
        }
    }
    /// The names of the list's maps, in [`MapKind::ALL`] order.
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
}

/// Which of a list's four maps holds an entry: by family, and host or prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    V4Host,
    V4Prefix,
    V6Host,
    V6Prefix,
}

impl MapKind {
    pub const ALL: [MapKind; 4] = [
        MapKind::V4Host,
        MapKind::V4Prefix,
        MapKind::V6Host,
        MapKind::V6Prefix,
    ];

    pub fn of(net: &IpNet) -> MapKind {
        match (net, is_host(net)) {
            (IpNet::V4(_), true) => MapKind::V4Host,
            (IpNet::V4(_), false) => MapKind::V4Prefix,
            (IpNet::V6(_), true) => MapKind::V6Host,
            (IpNet::V6(_), false) => MapKind::V6Prefix,
        }
    }

    /// How errors and metrics name the map.
    pub fn label(self) -> &'static str {
        match self {
            MapKind::V4Host => "IPv4 host",
            MapKind::V4Prefix => "IPv4 prefix",
            MapKind::V6Host => "IPv6 host",
            MapKind::V6Prefix => "IPv6 prefix",
        }
    }
}

/// Entries per BPF_MAP_UPDATE_BATCH call, and the fewest worth a batch.
const BATCH: usize = 8192;
const BATCH_MIN: usize = 16;
/// Entries whose old state is journaled (and written) at a time, before they change.
const CHUNK: usize = 4096;

/// What an add did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Added {
    /// Entries that were not there.
    pub added: usize,
    /// Entries that were there (their TTL, comment and source are now the new ones).
    pub updated: usize,
}

/// The four maps of one list.
pub struct ListMaps {
    kind: ListKind,
    /// In [`MapKind::ALL`] order.
    maps: [Box<dyn ListMap>; 4],
    /// max_entries of each map, in [`MapKind::ALL`] order.
    capacities: [u32; 4],
}

impl ListMaps {
    pub fn take(ebpf: &mut Ebpf, kind: ListKind) -> Result<ListMaps> {
        let [h4, p4, h6, p6] = kind.map_names();
        let maps: [Box<dyn ListMap>; 4] = [
            Box::new(take_map::<HashMap<MapData, [u8; 4], ListEntry>>(ebpf, h4)?),
            Box::new(take_map::<HashMap<MapData, PrefixKey<[u8; 4]>, ListEntry>>(
                ebpf, p4,
            )?),
            Box::new(take_map::<HashMap<MapData, [u8; 16], ListEntry>>(ebpf, h6)?),
            Box::new(take_map::<HashMap<MapData, PrefixKey<[u8; 16]>, ListEntry>>(ebpf, p6)?),
        ];
        let mut capacities = [0; 4];
        for ((cap, map), name) in capacities.iter_mut().zip(&maps).zip(kind.map_names()) {
            *cap = map
                .capacity()
                .map_context(|| format!("reading the size of map {name}"))?;
        }
        Ok(ListMaps {
            kind,
            maps,
            capacities,
        })
    }

    fn map(&self, m: MapKind) -> &dyn ListMap {
        &*self.maps[m as usize]
    }

    fn map_mut(&mut self, m: MapKind) -> &mut dyn ListMap {
        &mut *self.maps[m as usize]
    }

    fn get(&self, net: &IpNet) -> Result<Option<ListEntry>> {
        match self.map(MapKind::of(net)).get(net) {
            Ok(v) => Ok(Some(v)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e).map_context(|| format!("reading {net} from the {}", self.kind.name())),
        }
    }

    fn insert(&mut self, net: &IpNet, value: ListEntry) -> Result<()> {
        let m = MapKind::of(net);
        match self.map_mut(m).insert(net, value) {
            Ok(()) => Ok(()),
            Err(e) if is_full(&e) => Err(self.full(m)),
            Err(e) => Err(e).map_context(|| format!("adding {net} to the {}", self.kind.name())),
        }
    }

    /// Remove `net`; returns whether it was there.
    fn remove(&mut self, net: &IpNet) -> Result<bool> {
        match self.map_mut(MapKind::of(net)).remove(net) {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => {
                Err(e).map_context(|| format!("removing {net} from the {}", self.kind.name()))
            }
        }
    }

    fn full(&self, m: MapKind) -> Error {
        Error::ListFull {
            list: self.kind.name(),
            map: m.label(),
            capacity: self.capacities[m as usize],
        }
    }

    /// Every entry with its value.
    pub fn entries(&self) -> Result<Vec<(IpNet, ListEntry)>> {
        self.maps
            .iter()
            .flat_map(|m| m.entries())
            .map(|kv| kv.map_context(|| "listing entries".to_string()))
            .collect()
    }

    /// Entries in each map, in [`MapKind::ALL`] order, by walking them (see
    /// [`Lists::map_counts`] for the kept counts).
    pub fn walk_counts(&self) -> [usize; 4] {
        self.maps.each_ref().map(|m| m.len())
    }

    /// max_entries of each map, in [`MapKind::ALL`] order.
    pub fn capacities(&self) -> [u32; 4] {
        self.capacities
    }
}

/// Both lists, the comments of their entries and rules, and the source registry.
pub struct Lists {
    allow: ListMaps,
    block: ListMaps,
    pub sources: Sources,
    pub comments: Comments,
    /// The bitmap the data plane reads before the list maps.
    pub front: Front,
    /// Where a batch's write journal goes ([`crate::journal`]).
    journal_path: PathBuf,
    /// Kernel id of the comment map: a journal names the maps it belongs to.
    map_id: u32,
}

/// One map's entries as read by batch (a fast hash: a refresh builds sets of a million).
type Known = StdHashMap<IpNet, ListEntry, foldhash::fast::RandomState>;
type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;

/// One upsert under way: what each of its writes needs.
struct Upsert<'a> {
    kind: ListKind,
    source: u32,
    items: &'a [Item],
    now: Duration,
    added: Added,
    /// Entries written so far: a repeat in the batch is an update, not a second add.
    seen: FastSet<IpNet>,
    done: usize,
    progress: &'a mut dyn FnMut(usize, usize),
}

impl Upsert<'_> {
    fn value(&self, item: &Item, hits: u64) -> ListEntry {
        ListEntry {
            // check_item bounds the TTL, so this cannot wrap; saturate rather than panic.
            expires_at_ns: item.ttl.map_or(0, |t| {
                u64::try_from(self.now.saturating_add(t).as_nanos()).unwrap_or(u64::MAX)
            }),
            hits,
            prefix_len: u32::from(item.net.prefix_len()),
            source: self.source,
        }
    }

    /// `net` was written; it was listed before (`existed`) or not. Returns whether this is
    /// its first write in the batch (a repeat changes no count).
    fn count(&mut self, net: IpNet, existed: bool) -> bool {
        let first = self.seen.insert(net);
        if first && !existed {
            self.added.added += 1;
        } else {
            self.added.updated += 1;
        }
        first
    }

    fn advance(&mut self, n: usize) {
        self.done += n;
        (self.progress)(self.done, self.items.len());
    }
}

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
        let comments = Comments::take(ebpf)?;
        Ok(Lists {
            allow: ListMaps::take(ebpf, ListKind::Allow)?,
            block: ListMaps::take(ebpf, ListKind::Block)?,
            sources: Sources::take(ebpf)?,
            map_id: comments.map_id()?,
            comments,
            front: Front::take(ebpf)?,
            journal_path: crate::sys::run_file(pin.root(), ".journal")?,
        })
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

    /// The prefixes of `kind`'s entries whose value `keep` takes.
    fn nets_where(
        &self,
        kind: ListKind,
        keep: impl Fn(&IpNet, &ListEntry) -> bool,
    ) -> Result<Vec<IpNet>> {
        Ok(self
            .list(kind)
            .entries()?
            .into_iter()
            .filter(|(n, v)| keep(n, v))
            .map(|(n, _)| n)
            .collect())
    }

    /// Make the front show exactly `kind`'s entries.
    pub fn rebuild_front(&self, kind: ListKind) -> Result<()> {
        self.front
            .rebuild(kind, || self.nets_where(kind, |_, _| true))
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

    /// Add (or update) entries of source `source` with one TTL and comment: see
    /// [`Lists::upsert`].
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
    /// entry belongs to the source that last added it). `progress(done, total)` is called
    /// every few thousand entries.
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
            lists.upsert_journaled(j, kind, source, items, progress, None)
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
        let mut journal = Journal::begin(&self.journal_path, kind.id() as u8, source, self.map_id)?;
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
        read: Option<&[Known; 4]>,
    ) -> Result<Added> {
        let mut u = Upsert {
            kind,
            source,
            items,
            now: monotonic_now(),
            added: Added::default(),
            seen: FastSet::default(),
            done: 0,
            progress,
        };
        // Front first: the data plane may match an entry as soon as it is in its map.
        for item in items {
            self.front.mark(kind, &item.net);
        }
        // Entries grouped by map (stable: a repeated entry keeps its order).
        let mut by_map: [Vec<usize>; 4] = Default::default();
        for (i, item) in items.iter().enumerate() {
            by_map[MapKind::of(&item.net) as usize].push(i);
        }
        let mut batch_ok = true;
        for (m, run) in MapKind::ALL.into_iter().zip(&by_map) {
            let mut rest = &run[..];
            // A map that is empty when its turn comes (a first load) takes its entries by
            // batch: none can have a hit count to keep. Asking whether a map is empty walks
            // its buckets (milliseconds for a big sparse hash): only when a batch could follow.
            let empty = match read {
                Some(r) => r[m as usize].is_empty(),
                None => rest.len() >= BATCH_MIN && self.list(kind).map(m).is_empty(),
            };
            if batch_ok && rest.len() >= BATCH_MIN && empty {
                let written;
                (written, batch_ok) = self.insert_batches(j, &mut u, m, rest)?;
                rest = &rest[written..];
            }
            // Otherwise each entry is looked up and written: an update keeps its hit count.
            // A run that is a good part of a big map (a feed's refresh or replace) reads the
            // map once by batch instead of one lookup per entry, and skips entries that would
            // not change.
            let kept = self.map_counts(kind)[m as usize];
            let own;
            let known = match read {
                Some(r) => Some(&r[m as usize]),
                None if rest.len() >= BATCH_MIN && rest.len() * 4 >= kept => {
                    own = self.read_map(kind, m)?;
                    Some(&own)
                }
                None => None,
            };
            for chunk in rest.chunks(CHUNK) {
                self.insert_each(j, &mut u, chunk, known)?;
            }
        }
        (u.progress)(items.len(), items.len());
        self.comment_journaled(j, kind, items)?;
        Ok(u.added)
    }

    /// Write `run` (entries of map `m`, which was empty when its turn came) with one
    /// BPF_MAP_UPDATE_BATCH per few thousand. Returns how many were written, and whether
    /// batches work here (false: no batch support, the rest goes one at a time).
    fn insert_batches(
        &mut self,
        j: &mut Journal,
        u: &mut Upsert,
        m: MapKind,
        run: &[usize],
    ) -> Result<(usize, bool)> {
        let items = u.items;
        let mut written = 0;
        for chunk in run.chunks(BATCH) {
            let nets: Vec<IpNet> = chunk.iter().map(|&i| items[i].net).collect();
            let values: Vec<ListEntry> = chunk.iter().map(|&i| u.value(&items[i], 0)).collect();
            // The map was empty: undoing is removing (a repeat is removed twice, harmlessly).
            for net in &nets {
                j.entry(net, None);
            }
            j.commit()?;
            let list = self.list(u.kind);
            let (done, err) = list.map(m).insert_batch(&nets, &values);
            for net in &nets[..done] {
                if u.count(*net, false) {
                    self.front.count(u.kind, u.source, m as u32, 1);
                }
            }
            written += done;
            u.advance(done);
            match err {
                None => {}
                Some(e) if full_errno(&e) => return Err(list.full(m)),
                Some(_) => return Ok((written, false)),
            }
        }
        Ok((written, true))
    }

    /// One map's entries, read by batch.
    fn read_map(&self, kind: ListKind, m: MapKind) -> Result<Known> {
        self.list(kind)
            .map(m)
            .entries()
            .map(|kv| kv.map_context(|| "reading the entries".to_string()))
            .collect()
    }

    /// Write `chunk` (entries of one map) over what is there: journal the old values, then
    /// write the new ones, each keeping its hit count. With `known` (the map as read before
    /// the batch), an entry already there with the same expiry and source is left alone (no
    /// write: its hits keep counting), and only entries there but changing are looked up
    /// again (for their hits as of now).
    fn insert_each(
        &mut self,
        j: &mut Journal,
        u: &mut Upsert,
        chunk: &[usize],
        known: Option<&Known>,
    ) -> Result<()> {
        let items = u.items;
        let total = chunk.len();
        let mut olds = Vec::with_capacity(chunk.len());
        let mut write = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let net = &items[i].net;
            let old = match known.map(|k| k.get(net)) {
                None => self.list(u.kind).get(net)?,
                Some(None) => None,
                Some(Some(o)) => {
                    let same = u.value(&items[i], o.hits) == *o;
                    if same && !u.seen.contains(net) {
                        // Unchanged: counted as an update, nothing written or journaled.
                        u.count(*net, true);
                        continue;
                    }
                    self.list(u.kind).get(net)?
                }
            };
            j.entry(net, old.as_ref());
            olds.push(old);
            write.push(i);
        }
        let chunk = &write[..];
        if chunk.is_empty() {
            u.advance(total);
            return Ok(());
        }
        j.commit()?;
        // The new values, each keeping its entry's hit count, go in with one
        // BPF_MAP_UPDATE_BATCH (half the syscalls of writing them one by one); one at a time
        // where the kernel has no batch update.
        let nets: Vec<IpNet> = chunk.iter().map(|&i| items[i].net).collect();
        let values: Vec<ListEntry> = chunk
            .iter()
            .zip(&olds)
            .map(|(&i, old)| u.value(&items[i], old.map_or(0, |o| o.hits)))
            .collect();
        let m = MapKind::of(&nets[0]);
        let list = self.list(u.kind);
        let (done, err) = list.map(m).insert_batch(&nets, &values);
        match err {
            None => {}
            Some(e) if full_errno(&e) => return Err(list.full(m)),
            Some(_) => {
                for (net, value) in nets.iter().zip(&values).skip(done) {
                    self.list_mut(u.kind).insert(net, *value)?;
                }
            }
        }
        for (net, old) in nets.iter().zip(&olds) {
            if u.count(*net, old.is_some()) {
                match old {
                    None => self.front.count(u.kind, u.source, m as u32, 1),
                    // The entry now belongs to the source that wrote it last.
                    Some(o) if o.source != u.source => {
                        self.front.count(u.kind, o.source, m as u32, -1);
                        self.front.count(u.kind, u.source, m as u32, 1);
                    }
                    Some(_) => {}
                }
            }
        }
        u.advance(total);
        Ok(())
    }

    /// Give the items that carry a comment their comment, journaling the old ones first.
    fn comment_journaled(&mut self, j: &mut Journal, kind: ListKind, items: &[Item]) -> Result<()> {
        let commented: Vec<&Item> = items.iter().filter(|i| i.comment.is_some()).collect();
        for chunk in commented.chunks(CHUNK) {
            for item in chunk {
                j.meta(
                    &item.net,
                    self.comments.entry_meta(kind, &item.net).as_ref(),
                );
            }
            j.commit()?;
            for item in chunk {
                let c = item.comment.as_deref().unwrap_or_default();
                self.comments.set_entry(kind, &item.net, c)?;
            }
        }
        Ok(())
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
            let mut present = Vec::with_capacity(chunk.len());
            for net in chunk {
                let old = self.list(kind).get(net)?;
                if let Some(o) = &old {
                    j.entry(net, Some(o));
                }
                if let Some(m) = &self.comments.entry_meta(kind, net) {
                    j.meta(net, Some(m));
                }
                present.push(old);
            }
            j.commit()?;
            for (net, old) in chunk.iter().zip(&present) {
                if let Some(o) = old {
                    self.remove_entry(kind, net, o.source)?;
                }
            }
            removed.extend(present.iter().map(Option::is_some));
        }
        let n = removed.iter().filter(|r| **r).count();
        self.removed(kind, n)?;
        Ok(removed)
    }

    /// Remove entries just read with their values (no lookup each), journaling each entry and
    /// comment first: the comments that exist are read once by batch, the entries deleted by
    /// batch per map (one by one past a key that went meanwhile). Returns how many went; the
    /// caller accounts for them in the front.
    fn remove_known(
        &mut self,
        j: &mut Journal,
        kind: ListKind,
        entries: &[(IpNet, ListEntry)],
    ) -> Result<usize> {
        let index = if entries.len() >= BATCH_MIN {
            Some(self.comments.present()?)
        } else {
            None
        };
        let mut n = 0;
        for chunk in entries.chunks(CHUNK) {
            let mut commented = Vec::new();
            for (net, old) in chunk {
                j.entry(net, Some(old));
                let meta = match index.as_ref().and_then(|i| i.get(kind, net)) {
                    Some(m) => m,
                    None => self.comments.entry_meta(kind, net),
                };
                if let Some(m) = &meta {
                    j.meta(net, Some(m));
                    commented.push(*net);
                }
            }
            j.commit()?;
            let mut by_map: [Vec<&(IpNet, ListEntry)>; 4] = Default::default();
            for e in chunk {
                by_map[MapKind::of(&e.0) as usize].push(e);
            }
            for (m, run) in MapKind::ALL.into_iter().zip(&by_map) {
                let nets: Vec<IpNet> = run.iter().map(|e| e.0).collect();
                let (done, err) = self.list(kind).map(m).remove_batch(&nets);
                for (_, old) in &run[..done] {
                    self.front.count(kind, old.source, m as u32, -1);
                    n += 1;
                }
                if err.is_some() {
                    for (net, old) in &run[done..] {
                        if self.list_mut(kind).remove(net)? {
                            self.front.count(kind, old.source, m as u32, -1);
                            n += 1;
                        }
                    }
                }
            }
            for net in &commented {
                self.comments.remove_entry(kind, net);
            }
        }
        Ok(n)
    }

    /// Remove `net` (of list source `source`) and its comment; returns whether it was listed.
    fn remove_entry(&mut self, kind: ListKind, net: &IpNet, source: u32) -> Result<bool> {
        let listed = self.list_mut(kind).remove(net)?;
        if listed {
            self.front.count(kind, source, MapKind::of(net) as u32, -1);
        }
        self.comments.remove_entry(kind, net);
        Ok(listed)
    }

    /// Undo a batch whose writer died (or failed) part-way, if a journal says there is one.
    /// Call with the state lock held. Returns what was done, for the caller to say.
    pub fn recover(&mut self) -> Result<Option<Recovered>> {
        let Some(pending) = crate::journal::read(&self.journal_path, self.map_id)? else {
            return Ok(None);
        };
        let h = &pending.header;
        let kind = if u32::from(h.list) == LIST_BLOCK {
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
                    let m = MapKind::of(net) as u32;
                    if let Some(now) = self.list(kind).get(net)? {
                        if self.list_mut(kind).remove(net)? {
                            self.front.count(kind, now.source, m, -1);
                            taken_out += 1;
                        }
                    }
                }
                Undo::Entry(net, Some(old)) => {
                    let m = MapKind::of(net) as u32;
                    let now = self.list(kind).get(net)?;
                    self.list_mut(kind).insert(net, *old)?;
                    match now {
                        None => self.front.count(kind, old.source, m, 1),
                        Some(n) if n.source != old.source => {
                            self.front.count(kind, n.source, m, -1);
                            self.front.count(kind, old.source, m, 1);
                        }
                        Some(_) => {}
                    }
                    put_back.push(*net);
                }
                Undo::Meta(net, None) => self.comments.remove_entry(kind, net),
                Undo::Meta(net, Some(old)) => self.comments.put_entry(kind, net, *old)?,
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
    /// sources with no entry left on either list are freed first ([`Sources::free`]), so
    /// rotating source names never run out. Call with the state lock held.
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
            if id >= SOURCES_FIXED && !used.contains(&id) {
                self.sources.free(id)?;
                freed += 1;
            }
        }
        Ok(freed)
    }

    /// Remove every entry of source `source`; returns how many. A named source left with no
    /// entry on either list is freed ([`Sources::free`]).
    pub fn remove_source(&mut self, kind: ListKind, source: u32) -> Result<usize> {
        let entries = self.nets_where(kind, |_, v| v.source == source)?;
        self.journaled(kind, source, |lists, j| {
            lists.remove_journaled(j, kind, &entries)
        })?;
        if source >= SOURCES_FIXED
            && self
                .nets_where(kind.other(), |_, v| v.source == source)?
                .is_empty()
        {
            self.sources.free(source)?;
        }
        Ok(entries.len())
    }

    /// Remove everything; returns how many entries were removed.
    pub fn flush(&mut self, kind: ListKind) -> Result<usize> {
        let entries = self.nets_where(kind, |_, _| true)?;
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
    /// source's others. Entries present in both never disappear in between; other sources'
    /// entries (auto-bans included) are not touched. All or nothing, also across a crash.
    /// Returns what was added and how many were removed.
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
            // The maps are read once, by batch: the upsert skips what would not change, and
            // the source's stale entries come from the same read (the upsert only writes
            // entries it keeps).
            let read: [Known; 4] = [
                lists.read_map(kind, MapKind::V4Host)?,
                lists.read_map(kind, MapKind::V4Prefix)?,
                lists.read_map(kind, MapKind::V6Host)?,
                lists.read_map(kind, MapKind::V6Prefix)?,
            ];
            let added = lists.upsert_journaled(j, kind, source, items, progress, Some(&read))?;
            let keep: FastSet<&IpNet> = items.iter().map(|i| &i.net).collect();
            let stale: Vec<(IpNet, ListEntry)> = read
                .iter()
                .flat_map(|m| m.iter())
                .filter(|(n, v)| v.source == source && !keep.contains(n))
                .map(|(n, v)| (*n, *v))
                .collect();
            let n = lists.remove_known(j, kind, &stale)?;
            // The front's stale bits are only counted here: the rebuild they make due (a
            // second read of a big list) is left to the daemon's sweeper or the next change.
            // Until then those sources cost a lookup that finds nothing.
            lists.front.removed(kind, n);
            Ok((added, stale.len()))
        })
    }

    /// Would adding `nets` (or [`Lists::replace`] with them) fit? Replace adds before it
    /// removes, so each map must hold what it has plus what is new. Checked before anything
    /// changes, so a caller changing several lists can refuse the whole change up front.
    pub fn check_fits(&self, kind: ListKind, nets: &[IpNet]) -> Result<()> {
        let list = self.list(kind);
        let mut after = self.map_counts(kind);
        // If every one were new and it still fits, no lookup is needed (the common case).
        let mut bound = after;
        for n in nets {
            bound[MapKind::of(n) as usize] += 1;
        }
        if MapKind::ALL
            .iter()
            .all(|&m| bound[m as usize] <= list.capacities[m as usize] as usize)
        {
            return Ok(());
        }
        let mut new: Vec<&IpNet> = nets.iter().collect();
        new.sort();
        new.dedup();
        for n in new {
            if list.get(n)?.is_none() {
                after[MapKind::of(n) as usize] += 1;
            }
        }
        for (m, count) in MapKind::ALL.into_iter().zip(after) {
            if count > list.capacities[m as usize] as usize {
                return Err(list.full(m));
            }
        }
        Ok(())
    }

    /// Delete entries whose TTL has passed (the data plane already ignores them).
    pub fn sweep_expired(&mut self, kind: ListKind) -> Result<usize> {
        let now = monotonic_now().as_nanos() as u64;
        let before = self.front.count_words(kind);
        let all = self.list(kind).entries()?;
        // The walk doubles as a recount: counts that drifted (a writer that died between a
        // map write and its count) are set right, unless something wrote meanwhile.
        let mut walked = BTreeMap::<u32, [usize; 4]>::new();
        for (net, v) in &all {
            walked.entry(v.source).or_default()[MapKind::of(net) as usize] += 1;
        }
        self.front.recount(kind, &before, &walked);
        let mut n = 0;
        for (net, v) in &all {
            if !entry_live(v.expires_at_ns, now) && self.remove_entry(kind, net, v.source)? {
                n += 1;
            }
        }
        self.removed(kind, n)?;
        Ok(n)
    }

    /// Entries per source, as [IPv4, IPv6] counts, from the kept counts (no map walk; entries
    /// whose TTL passed count until the sweep deletes them).
    pub fn source_counts(&self, kind: ListKind) -> BTreeMap<u32, [usize; 2]> {
        self.front
            .counts(kind)
            .into_iter()
            .map(|(s, [h4, p4, h6, p6])| (s, [h4 + p4, h6 + p6]))
            .collect()
    }

    /// Entries in each map, in [`MapKind::ALL`] order, from the kept counts (expired ones not
    /// yet swept included).
    pub fn map_counts(&self, kind: ListKind) -> [usize; 4] {
        let mut out = [0; 4];
        for c in self.front.counts(kind).values() {
            for (o, n) in out.iter_mut().zip(c) {
                *o += n;
            }
        }
        out
    }

    /// Entry counts: (IPv4, IPv6).
    pub fn counts(&self, kind: ListKind) -> (usize, usize) {
        let [h4, p4, h6, p6] = self.map_counts(kind);
        (h4 + p4, h6 + p6)
    }

    /// Live entries, sorted by family, address, prefix length.
    pub fn entries(&self, kind: ListKind) -> Result<Vec<Entry>> {
        let now = monotonic_now().as_nanos() as u64;
        let mut out: Vec<Entry> = self
            .list(kind)
            .entries()?
            .into_iter()
            .filter(|(_, v)| entry_live(v.expires_at_ns, now))
            .map(|(net, v)| Entry {
                net,
                expires_in: (v.expires_at_ns != 0)
                    .then(|| Duration::from_nanos(v.expires_at_ns - now)),
                hits: v.hits,
                comment: self.comments.entry(kind, &net),
                source: v.source,
            })
            .collect();
        out.sort_by(|a, b| {
            (a.net.addr(), a.net.prefix_len()).cmp(&(b.net.addr(), b.net.prefix_len()))
        });
        Ok(out)
    }
}
