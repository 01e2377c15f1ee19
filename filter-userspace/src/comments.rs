//! Comments of list entries and rules, with the time each was set: the userspace-only
//! `LIST_META` map (the data plane never needs them). Entries and rules share the map, told
//! apart by [`MetaKey::list`].

use std::{
    os::fd::AsFd,
    time::{SystemTime, UNIX_EPOCH},
};

use aya::{
    Ebpf,
    maps::{HashMap, IterableMap, MapData},
};
use filter_common::{COMMENT_MAX, EntryMeta, LIST_RULE, MetaKey, map_names};
use ipnet::IpNet;

use crate::{
    error::{MapContext, Result},
    lists::ListKind,
    maps::take_map,
    prefix::wide_addr,
};

/// The `LIST_META` map.
pub struct Comments {
    map: HashMap<MapData, MetaKey, EntryMeta>,
}

/// The key of a list entry's comment.
fn entry_key(kind: ListKind, net: &IpNet) -> MetaKey {
    let (family, addr) = wide_addr(net);
    MetaKey {
        list: kind.id(),
        family: u32::from(family),
        prefix_len: u32::from(net.prefix_len()),
        addr,
    }
}

/// The key of a rule's comment.
fn rule_key(id: u32) -> MetaKey {
    MetaKey {
        list: LIST_RULE,
        family: 0,
        prefix_len: id,
        addr: [0; 16],
    }
}

/// Metadata carrying `comment` (already checked by [`crate::entry::check_comment`]), set now.
fn meta_with(comment: &str) -> EntryMeta {
    let mut meta = EntryMeta {
        added_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        comment_len: comment.len() as u32,
        ..EntryMeta::default()
    };
    meta.comment[..comment.len()].copy_from_slice(comment.as_bytes());
    meta
}

impl Comments {
    pub fn take(ebpf: &mut Ebpf) -> Result<Comments> {
        Ok(Comments {
            map: take_map(ebpf, map_names::LIST_META)?,
        })
    }

    /// The map's kernel id: a write journal names the maps it belongs to.
    pub fn map_id(&self) -> Result<u32> {
        Ok(self
            .map
            .map()
            .info()
            .map_context(|| "reading the comment map's id".into())?
            .id())
    }

    /// A list entry's comment record, as the write journal keeps it.
    pub fn entry_meta(&self, kind: ListKind, net: &IpNet) -> Option<EntryMeta> {
        self.map.get(&entry_key(kind, net), 0).ok()
    }

    /// Which comment records exist, read by batch: for removing many entries, which then
    /// look up and delete only the comments that are there.
    pub fn present(&self) -> Result<CommentIndex> {
        let all = crate::batch::lookup_all::<MetaKey, EntryMeta>(self.map.map().fd().as_fd())
            .map_err(|e| crate::error::Error::Io {
                context: "reading the comment map".into(),
                source: e,
            })?;
        Ok(CommentIndex(all.map(|all| all.into_iter().collect())))
    }

    /// A list entry's comment.
    pub fn entry(&self, kind: ListKind, net: &IpNet) -> Option<String> {
        self.entry_meta(kind, net).map(|m| text(&m))
    }

    /// Give a list entry `comment` (checked by [`crate::entry::check_comment`]).
    pub fn set_entry(&mut self, kind: ListKind, net: &IpNet, comment: &str) -> Result<()> {
        self.put_entry(kind, net, meta_with(comment))
    }

    /// Put back a comment record the write journal kept.
    pub fn put_entry(&mut self, kind: ListKind, net: &IpNet, meta: EntryMeta) -> Result<()> {
        self.map
            .insert(entry_key(kind, net), meta, 0)
            .map_context(|| format!("storing the comment of {net}"))
    }

    pub fn remove_entry(&mut self, kind: ListKind, net: &IpNet) {
        // Most entries have no comment; a missing key is the normal case.
        let _ = self.map.remove(&entry_key(kind, net));
    }

    /// A rule's comment.
    pub fn rule(&self, id: u32) -> Option<String> {
        self.map.get(&rule_key(id), 0).ok().map(|m| text(&m))
    }

    pub fn set_rule(&mut self, id: u32, comment: Option<&str>) -> Result<()> {
        match comment {
            Some(c) => {
                crate::entry::check_comment(c)?;
                self.map
                    .insert(rule_key(id), meta_with(c), 0)
                    .map_context(|| format!("storing the comment of rule {id}"))
            }
            None => {
                let _ = self.map.remove(&rule_key(id));
                Ok(())
            }
        }
    }
}

fn text(m: &EntryMeta) -> String {
    let len = (m.comment_len as usize).min(COMMENT_MAX);
    String::from_utf8_lossy(&m.comment[..len]).into_owned()
}

/// The comment records that exist ([`Comments::present`]); when the map could not be read by
/// batch, every entry may have one.
pub struct CommentIndex(Option<std::collections::HashMap<MetaKey, EntryMeta>>);

impl CommentIndex {
    /// Whether an entry has a comment record and which (None: unknown, look it up).
    pub fn get(&self, kind: ListKind, net: &IpNet) -> Option<Option<EntryMeta>> {
        self.0
            .as_ref()
            .map(|all| all.get(&entry_key(kind, net)).copied())
    }
}
