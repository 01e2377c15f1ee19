//! The lists on disk, so they survive a reboot (pinned maps already survive a daemon restart
//! or crash, but not a reboot). The file is JSON, written to a temporary file, flushed to disk
//! and renamed over the old one: a crash mid-write leaves the old snapshot whole.
//!
//! Expiry is stored as wall-clock time (the maps use CLOCK_MONOTONIC, which restarts at boot);
//! entries whose time has passed are not restored. Hit counts are not saved: counters start
//! again at boot.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use filter_common::SOURCE_AUTO;
use serde::{Deserialize, Serialize};

use crate::{
    entry::Item,
    error::{Error, IoContext, Result},
    lists::{ListKind, Lists},
    prefix::{display, parse_prefix},
};

const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct ListSnapshot {
    /// Where it was read from (not saved).
    #[serde(skip)]
    pub path: std::path::PathBuf,
    pub version: u32,
    pub written_unix_s: u64,
    pub blocklist: Vec<SavedEntry>,
    pub allowlist: Vec<SavedEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SavedEntry {
    pub cidr: String,
    pub source: String,
    /// Wall-clock expiry, Unix seconds; absent = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_unix_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Read both lists into a snapshot.
pub fn take(lists: &Lists) -> Result<ListSnapshot> {
    let now = unix_now();
    let names = lists.sources.names()?;
    let saved = |kind| -> Result<Vec<SavedEntry>> {
        Ok(lists
            .entries(kind)?
            .into_iter()
            .map(|e| SavedEntry {
                cidr: display(&e.net),
                source: names.get(e.source),
                // Round up to the second: never shorten an entry's life.
                expires_unix_s: e.expires_in.map(|d| (now + d).as_secs_f64().ceil() as u64),
                comment: e.comment,
            })
            .collect())
    };
    Ok(ListSnapshot {
        path: Default::default(),
        version: VERSION,
        written_unix_s: now.as_secs(),
        blocklist: saved(ListKind::Block)?,
        allowlist: saved(ListKind::Allow)?,
    })
}

/// Move a snapshot that could not be restored to `<path>.corrupt-<unix seconds>`, where no
/// later save overwrites it. Returns the new name.
pub fn move_aside(path: &Path) -> Result<std::path::PathBuf> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{}", unix_now().as_secs()));
    let aside = std::path::PathBuf::from(name);
    fs::rename(path, &aside)
        .io_context(|| format!("renaming {} to {}", path.display(), aside.display()))?;
    Ok(aside)
}

/// Snapshots kept aside by [`move_aside`] next to `path`, newest last.
pub fn kept_aside(path: &Path) -> Vec<std::path::PathBuf> {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let mut prefix = base.to_owned();
    prefix.push(".corrupt-");
    let prefix = prefix.to_string_lossy().into_owned();
    let mut out: Vec<_> = fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
    .into_iter()
    .flatten()
    .flatten()
    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
    .map(|e| e.path())
    .collect();
    out.sort();
    out
}

/// Write `snap` to `path` atomically (temporary file, fsync, rename, fsync of the directory).
pub fn write(path: &Path, snap: &ListSnapshot) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Ok(m) = fs::symlink_metadata(path) {
        if !m.is_file() {
            return Err(Error::Io {
                context: format!("writing snapshot {}", path.display()),
                source: std::io::Error::other("the path exists and is not a regular file"),
            });
        }
    }
    fs::create_dir_all(dir).io_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec(snap).expect("a snapshot always serialises");
    let mut f = fs::File::create(&tmp).io_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(&body)
        .and_then(|()| f.sync_all())
        .io_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .io_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What a restore did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub entries: usize,
    /// Entries whose expiry had passed (not restored).
    pub expired: usize,
}

/// Read the snapshot at `path` (None if there is none).
pub fn read(path: &Path) -> Result<Option<ListSnapshot>> {
    // Only a regular file: a FIFO would hang the start with no word said.
    let text = match crate::sys::read_regular(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).io_context(|| format!("reading snapshot {}", path.display())),
    };
    let mut snap: ListSnapshot = serde_json::from_slice(&text).map_err(|e| Error::Snapshot {
        path: path.to_path_buf(),
        message: if text.is_empty() {
            "the file is empty".into()
        } else {
            e.to_string()
        },
    })?;
    snap.path = path.to_path_buf();
    if snap.version != VERSION {
        return Err(Error::Snapshot {
            path: path.to_path_buf(),
            message: format!("version {} (this floodgate reads {VERSION})", snap.version),
        });
    }
    Ok(Some(snap))
}

/// Put a snapshot's live entries back, each under its source, with the time it has left.
/// Every entry is checked first: a damaged snapshot restores nothing. `progress(done, total)`
/// counts the entries written, over all lists and sources.
pub fn restore(
    lists: &mut Lists,
    snap: &ListSnapshot,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Restored> {
    restore_entries(lists, snap, progress).map_err(|e| match e {
        Error::Snapshot { message, .. } => Error::Snapshot {
            path: snap.path.clone(),
            message,
        },
        e => e,
    })
}

fn restore_entries(
    lists: &mut Lists,
    snap: &ListSnapshot,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Restored> {
    let now = unix_now().as_secs();
    let mut done = Restored::default();
    // (list, source) -> items, all parsed before anything changes.
    let mut groups: BTreeMap<(u8, String), Vec<Item>> = BTreeMap::new();
    for (tag, saved) in [(0u8, &snap.blocklist), (1u8, &snap.allowlist)] {
        for (i, e) in saved.iter().enumerate() {
            // A bad entry is a damaged snapshot, not bad input: say so, and where.
            let damaged = |err: Error| Error::Snapshot {
                path: Path::new("snapshot").to_path_buf(),
                message: format!(
                    "{}[{i}]: {err}",
                    if tag == 0 { "blocklist" } else { "allowlist" }
                ),
            };
            let net = parse_prefix(&e.cidr).map_err(damaged)?;
            if let Some(c) = &e.comment {
                crate::entry::check_comment(c).map_err(|e| damaged(e.into()))?;
            }
            if e.source != "auto" {
                crate::sources::validate_name(&e.source).map_err(damaged)?;
            }
            let ttl = match e.expires_unix_s {
                Some(at) if at <= now => {
                    done.expired += 1;
                    continue;
                }
                // A clock set back since the save cannot stretch an entry past the maximum.
                Some(at) => Some(Duration::from_secs(at - now).min(crate::entry::TTL_MAX)),
                None => None,
            };
            groups
                .entry((tag, e.source.clone()))
                .or_default()
                .push(Item {
                    net,
                    ttl,
                    comment: e.comment.clone(),
                });
        }
    }
    let total = groups.values().map(Vec::len).sum();
    for ((tag, source), items) in groups {
        let kind = if tag == 0 {
            ListKind::Block
        } else {
            ListKind::Allow
        };
        let id = if source == "auto" {
            SOURCE_AUTO
        } else {
            lists.register_source(&source)?
        };
        // A batch that does not fit fails on the map's own limit and is rolled back.
        let before = done.entries;
        lists.upsert(kind, id, &items, &mut |n, _| progress(before + n, total))?;
        done.entries += items.len();
    }
    Ok(done)
}
