//! The allowlist and the blocklist: typed access to their maps, with expiry, hit counts and
//! comments. Each list is an exact-host hash plus a prefix trie per family; hosts (/32, /128)
//! go to the hash, which the data plane checks first.
//!
//! Every change is all-or-nothing: a batch that fails part-way (a full map) is rolled back.

use std::{
    collections::HashSet,
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
    LIST_ALLOW, LIST_BLOCK, LIST_RULE, ListEntry, MetaKey, ORIGIN_AUTO, ORIGIN_MANUAL, entry_live,
    map_names as names,
};
use ipnet::IpNet;

use crate::{
    error::{Error, MapContext, Result},
    prefix::is_host,
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
    fn capacities(self) -> (u32, u32) {
        match self {
            ListKind::Allow => (ALLOW_EXACT_MAX, ALLOW_PREFIX_MAX),
            ListKind::Block => (BLOCK_EXACT_MAX, BLOCK_PREFIX_MAX),
        }
    }
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
}

/// The four maps of one list.
pub struct ListMaps {
    kind: ListKind,
    v4_exact: HashMap<MapData, [u8; 4], ListEntry>,
    v4: LpmTrie<MapData, [u8; 4], ListEntry>,
    v6_exact: HashMap<MapData, [u8; 16], ListEntry>,
    v6: LpmTrie<MapData, [u8; 16], ListEntry>,
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
    pub fn take(ebpf: &mut Ebpf, kind: ListKind) -> Result<ListMaps> {
        let [e4, p4, e6, p6] = kind.map_names();
        Ok(ListMaps {
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

    fn insert(&mut self, net: &IpNet, value: ListEntry) -> Result<()> {
        let (exact_cap, prefix_cap) = self.kind.capacities();
        let (r, map, cap) = match (net, is_host(net)) {
            (IpNet::V4(_), true) => (
                self.v4_exact.insert(v4(net), value, 0),
                "IPv4 host",
                exact_cap,
            ),
            (IpNet::V4(_), false) => (
                self.v4
                    .insert(&Key::new(net.prefix_len() as u32, v4(net)), value, 0),
                "IPv4 prefix",
                prefix_cap,
            ),
            (IpNet::V6(_), true) => (
                self.v6_exact.insert(v6(net), value, 0),
                "IPv6 host",
                exact_cap,
            ),
            (IpNet::V6(_), false) => (
                self.v6
                    .insert(&Key::new(net.prefix_len() as u32, v6(net)), value, 0),
                "IPv6 prefix",
                prefix_cap,
            ),
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) if is_full(&e) => Err(Error::ListFull {
                list: self.kind.name(),
                map,
                capacity: cap,
            }),
            Err(e) => Err(e).map_context(|| format!("adding {net} to the {}", self.kind.name())),
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
        let n4 = self.v4_exact.keys().count() + self.v4.keys().count();
        let n6 = self.v6_exact.keys().count() + self.v6.keys().count();
        Ok((n4, n6))
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

/// Check a comment before anything is changed.
pub fn validate_comment(comment: Option<&str>) -> Result<()> {
    match comment {
        Some(c) if c.len() > COMMENT_MAX => Err(Error::CommentTooLong {
            len: c.len(),
            max: COMMENT_MAX,
        }),
        _ => Ok(()),
    }
}

/// Both lists and the shared comment map.
pub struct Lists {
    pub allow: ListMaps,
    pub block: ListMaps,
    meta: HashMap<MapData, MetaKey, EntryMeta>,
}

/// One undo step of a batch.
struct Undo {
    net: IpNet,
    old: Option<ListEntry>,
}

impl Lists {
    pub fn take(ebpf: &mut Ebpf) -> Result<Lists> {
        Ok(Lists {
            allow: ListMaps::take(ebpf, ListKind::Allow)?,
            block: ListMaps::take(ebpf, ListKind::Block)?,
            meta: take_map(ebpf, names::LIST_META)?,
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

    /// Add (or update) entries, all or nothing. An entry already present keeps its hit count
    /// and, when no new comment is given, its comment; its TTL becomes `ttl` (None = never).
    /// `progress(done, total)` is called every few thousand entries.
    pub fn add(
        &mut self,
        kind: ListKind,
        nets: &[IpNet],
        ttl: Option<Duration>,
        comment: Option<&str>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        validate_comment(comment)?;
        let expires_at_ns = match ttl {
            Some(t) => (monotonic_now() + t).as_nanos() as u64,
            None => 0,
        };
        let mut undo: Vec<Undo> = Vec::with_capacity(nets.len());
        let total = nets.len();
        for (i, net) in nets.iter().enumerate() {
            let old = self.list(kind).get(net)?;
            let value = ListEntry {
                expires_at_ns,
                hits: old.map_or(0, |o| o.hits),
                prefix_len: net.prefix_len() as u32,
                flags: ORIGIN_MANUAL,
            };
            if let Err(e) = self.list_mut(kind).insert(net, value) {
                self.rollback(kind, undo);
                return Err(e);
            }
            undo.push(Undo { net: *net, old });
            if i % 4096 == 4095 {
                progress(i + 1, total);
            }
        }
        progress(total, total);
        if let Some(c) = comment {
            let meta = meta_with(c);
            for net in nets {
                let key = meta_key(kind, net);
                if let Err(e) = self.meta.insert(key, meta, 0) {
                    self.rollback(kind, undo);
                    return Err(e).map_context(|| format!("storing the comment for {net}"));
                }
            }
        }
        Ok(())
    }

    fn rollback(&mut self, kind: ListKind, undo: Vec<Undo>) {
        for u in undo.into_iter().rev() {
            // Best effort: the map had room for these a moment ago.
            let _ = match u.old {
                Some(old) => self.list_mut(kind).insert(&u.net, old).map(|_| true),
                None => self.list_mut(kind).remove(&u.net),
            };
        }
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
        for net in nets {
            self.list_mut(kind).remove(net)?;
            self.remove_meta(kind, net);
        }
        Ok(())
    }

    fn remove_meta(&mut self, kind: ListKind, net: &IpNet) {
        // Most entries have no comment; a missing key is the normal case.
        let _ = self.meta.remove(&meta_key(kind, net));
    }

    /// Remove everything; returns how many entries were removed.
    pub fn flush(&mut self, kind: ListKind) -> Result<usize> {
        let entries = self.list(kind).entries()?;
        for (net, _) in &entries {
            self.list_mut(kind).remove(net)?;
            self.remove_meta(kind, net);
        }
        Ok(entries.len())
    }

    /// Make the list's operator entries exactly `nets`: add or refresh those, then remove the
    /// rest. Entries present in both never disappear in between. Auto-bans are state, not
    /// configuration: they stay until they expire.
    pub fn replace(
        &mut self,
        kind: ListKind,
        nets: &[IpNet],
        ttl: Option<Duration>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<usize> {
        self.add(kind, nets, ttl, None, progress)?;
        let keep: HashSet<&IpNet> = nets.iter().collect();
        let stale: Vec<IpNet> = self
            .list(kind)
            .entries()?
            .into_iter()
            .filter(|(n, v)| v.flags != ORIGIN_AUTO && !keep.contains(n))
            .map(|(n, _)| n)
            .collect();
        for net in &stale {
            self.list_mut(kind).remove(net)?;
            self.remove_meta(kind, net);
        }
        Ok(stale.len())
    }

    /// Would [`Lists::replace`] with `nets` fit? Replace adds before it removes, so each map
    /// must hold what it has plus what is new. Checked before anything changes, so a caller
    /// changing several lists can refuse the whole change up front.
    pub fn check_replace_fits(&self, kind: ListKind, nets: &[IpNet]) -> Result<()> {
        let have: HashSet<IpNet> = self
            .list(kind)
            .entries()?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let (exact_cap, prefix_cap) = kind.capacities();
        // [v4 host, v4 prefix, v6 host, v6 prefix]: entries after the add step.
        let mut after = [0usize; 4];
        let slot = |n: &IpNet| match (n, is_host(n)) {
            (IpNet::V4(_), true) => 0,
            (IpNet::V4(_), false) => 1,
            (IpNet::V6(_), true) => 2,
            (IpNet::V6(_), false) => 3,
        };
        for n in &have {
            after[slot(n)] += 1;
        }
        let new: HashSet<&IpNet> = nets.iter().filter(|n| !have.contains(n)).collect();
        for n in new {
            after[slot(n)] += 1;
        }
        let names = ["IPv4 host", "IPv4 prefix", "IPv6 host", "IPv6 prefix"];
        for (i, count) in after.iter().enumerate() {
            let cap = if i % 2 == 0 { exact_cap } else { prefix_cap };
            if *count > cap as usize {
                return Err(Error::ListFull {
                    list: kind.name(),
                    map: names[i],
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
        Ok(expired.len())
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
                    auto: v.flags == ORIGIN_AUTO,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (a.net.addr(), a.net.prefix_len()).cmp(&(b.net.addr(), b.net.prefix_len()))
        });
        Ok(out)
    }
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
        validate_comment(comment)?;
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

/// Metadata carrying `comment` (already checked by [`validate_comment`]), added now.
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
