//! The write journal: a list change is all-or-nothing even when the process making it dies.
//!
//! Before a chunk of a batch touches the maps, the old state of every entry it is about to
//! change (absent, or its value and comment) is appended to a small binary file beside the
//! state lock (`/run/lock/floodgate<pin dir>.journal`). The file is removed when the batch is
//! done. If it is still there when the state lock is next taken (the next CLI command, the
//! daemon's next change or start), its writer died part-way (`kill -9`, a panic, a power cut of
//! the process): the records are undone in reverse order, so the lists are exactly what they
//! were before the batch, and the caller says so. Entries the batch did not touch, other
//! sources' included, are never touched by the undo.
//!
//! The header names the boot and the kernel id of the comment map: a journal left from an
//! earlier boot, or from maps since purged and re-created, is stale and only removed. No fsync:
//! the threat is the process dying, not the machine (the maps would go with the machine).

use std::{
    fs::{self, File},
    io::Write,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use filter_common::{EntryMeta, ListEntry};
use ipnet::IpNet;

use crate::error::{IoContext, Result};

const MAGIC: &[u8; 4] = b"FGJ1";
const HEADER_LEN: usize = 64;
const TAG_ENTRY: u8 = 1;
const TAG_META: u8 = 2;
const KEY_LEN: usize = 4 + 16;
const ENTRY_LEN: usize = KEY_LEN + size_of::<ListEntry>();
const META_LEN: usize = KEY_LEN + size_of::<EntryMeta>();

/// Who was writing: the header of a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `filter_common::LIST_ALLOW` or `LIST_BLOCK` ([`crate::lists::ListKind::id`]).
    pub list: u8,
    pub source: u32,
    pub pid: u32,
    pub started_unix_s: u64,
    /// Kernel id of the comment map the journal's records belong to.
    pub map_id: u32,
    pub boot_id: [u8; 36],
}

/// The old state of one entry, as recorded before it was changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Undo {
    /// Put the entry back as it was (`None`: it was absent, remove it).
    Entry(IpNet, Option<ListEntry>),
    /// Put the entry's comment back as it was (`None`: it had none).
    Meta(IpNet, Option<EntryMeta>),
}

/// A journal being written. Dropped without [`Journal::finish`], the file stays: the batch is
/// undone by whoever next takes the lock.
pub struct Journal {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
}

fn boot_id() -> [u8; 36] {
    let mut id = [b'?'; 36];
    if let Ok(text) = fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        let t = text.trim().as_bytes();
        let n = t.len().min(36);
        id[..n].copy_from_slice(&t[..n]);
    }
    id
}

fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is a #[repr(C)] plain-old-data map value with explicit padding fields.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

fn from_bytes<T: Copy>(b: &[u8]) -> T {
    assert_eq!(b.len(), size_of::<T>(), "record length");
    // SAFETY: length checked; any bit pattern is a valid value of these integer-only structs.
    unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) }
}

fn push_key(buf: &mut Vec<u8>, tag: u8, net: &IpNet, has_old: bool) {
    let (family, addr) = crate::prefix::wide_addr(net);
    buf.extend_from_slice(&[tag, family, net.prefix_len(), u8::from(has_old)]);
    buf.extend_from_slice(&addr);
}

fn read_key(b: &[u8]) -> Option<(IpNet, bool)> {
    let (family, len, has_old) = (b[1], b[2], b[3] != 0);
    let addr: [u8; 16] = b[4..20].try_into().ok()?;
    let ip = match family {
        4 => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        6 => IpAddr::V6(Ipv6Addr::from(addr)),
        _ => return None,
    };
    Some((IpNet::new(ip, len).ok()?, has_old))
}

impl Journal {
    /// Start a journal at `path` for a change to `list` by `source`, on the maps whose comment
    /// map has kernel id `map_id`.
    pub fn begin(path: &Path, list: u8, source: u32, map_id: u32) -> Result<Journal> {
        let mut file = File::create(path).io_context(|| format!("creating {}", path.display()))?;
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&[list, 0, 0, 0]);
        h.extend_from_slice(&source.to_le_bytes());
        h.extend_from_slice(&std::process::id().to_le_bytes());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        h.extend_from_slice(&now.to_le_bytes());
        h.extend_from_slice(&map_id.to_le_bytes());
        h.extend_from_slice(&boot_id());
        debug_assert_eq!(h.len(), HEADER_LEN);
        file.write_all(&h)
            .io_context(|| format!("writing {}", path.display()))?;
        Ok(Journal {
            file,
            path: path.to_path_buf(),
            buf: Vec::new(),
        })
    }

    /// Record an entry's state before it changes.
    pub fn entry(&mut self, net: &IpNet, old: Option<&ListEntry>) {
        push_key(&mut self.buf, TAG_ENTRY, net, old.is_some());
        self.buf
            .extend_from_slice(as_bytes(old.unwrap_or(&ListEntry::default())));
    }

    /// Record an entry's comment before it changes.
    pub fn meta(&mut self, net: &IpNet, old: Option<&EntryMeta>) {
        push_key(&mut self.buf, TAG_META, net, old.is_some());
        self.buf
            .extend_from_slice(as_bytes(old.unwrap_or(&EntryMeta::default())));
    }

    /// Write what was recorded: call before changing the maps it describes.
    pub fn commit(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.buf)
            .io_context(|| format!("writing {}", self.path.display()))?;
        self.buf.clear();
        Ok(())
    }

    /// The batch is done (or undone): remove the journal.
    pub fn finish(self) -> Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).io_context(|| format!("removing {}", self.path.display()))
            }
            _ => Ok(()),
        }
    }
}

/// A journal read back: its header and records, oldest first. `None` for a file that is not a
/// journal or from another boot (`stale`), which only needs removing.
pub struct Pending {
    pub header: Header,
    pub records: Vec<Undo>,
    /// From another boot or unreadable: nothing in it applies to these maps.
    pub stale: bool,
}

/// Read the journal at `path`, if there is one. A record cut short at the end (the writer died
/// inside a write) is ignored: its changes had not been made.
pub fn read(path: &Path, map_id: u32) -> Result<Option<Pending>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).io_context(|| format!("reading {}", path.display())),
    };
    let stale = |header| {
        Ok(Some(Pending {
            header,
            records: Vec::new(),
            stale: true,
        }))
    };
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return stale(Header {
            list: 0,
            source: 0,
            pid: 0,
            started_unix_s: 0,
            map_id: 0,
            boot_id: [0; 36],
        });
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let header = Header {
        list: bytes[4],
        source: u32_at(8),
        pid: u32_at(12),
        started_unix_s: u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")),
        map_id: u32_at(24),
        boot_id: bytes[28..64].try_into().expect("36 bytes"),
    };
    if header.boot_id != boot_id() || header.map_id != map_id {
        return stale(header);
    }
    let mut records = Vec::new();
    let mut rest = &bytes[HEADER_LEN..];
    while let Some(&tag) = rest.first() {
        let len = match tag {
            TAG_ENTRY => ENTRY_LEN,
            TAG_META => META_LEN,
            _ => break,
        };
        if rest.len() < len {
            break;
        }
        let Some((net, has_old)) = read_key(&rest[..KEY_LEN]) else {
            break;
        };
        let body = &rest[KEY_LEN..len];
        records.push(match tag {
            TAG_ENTRY => Undo::Entry(net, has_old.then(|| from_bytes(body))),
            _ => Undo::Meta(net, has_old.then(|| from_bytes(body))),
        });
        rest = &rest[len..];
    }
    Ok(Some(Pending {
        header,
        records,
        stale: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_and_a_torn_tail_is_ignored() {
        let dir = std::env::temp_dir().join(format!("fgjournal{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("j");
        let net: IpNet = "198.18.0.0/24".parse().expect("net");
        let host: IpNet = "2001:db8::1/128".parse().expect("net");
        let old = ListEntry {
            expires_at_ns: 7,
            hits: 9,
            prefix_len: 24,
            source: 5,
        };
        let mut meta = EntryMeta {
            added_unix_s: 3,
            comment_len: 2,
            ..EntryMeta::default()
        };
        meta.comment[..2].copy_from_slice(b"hi");
        let mut j = Journal::begin(&path, 1, 5, 42).expect("begin");
        j.entry(&net, Some(&old));
        j.entry(&host, None);
        j.meta(&net, Some(&meta));
        j.commit().expect("commit");
        // A record the writer died writing: half of it.
        let mut torn = Vec::new();
        push_key(&mut torn, TAG_ENTRY, &net, false);
        File::options()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&torn))
            .expect("appending");
        let p = read(&path, 42).expect("read").expect("present");
        assert!(!p.stale);
        assert_eq!((p.header.list, p.header.source), (1, 5));
        assert_eq!(
            p.records,
            [
                Undo::Entry(net, Some(old)),
                Undo::Entry(host, None),
                Undo::Meta(net, Some(meta)),
            ]
        );
        assert!(
            read(&path, 43).expect("read").expect("present").stale,
            "other maps"
        );
        j.finish().expect("finish");
        assert!(read(&path, 42).expect("read").is_none(), "removed");
        let _ = fs::remove_dir_all(&dir);
    }
}
