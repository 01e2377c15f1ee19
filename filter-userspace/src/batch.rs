//! BPF_MAP_UPDATE_BATCH, BPF_MAP_DELETE_BATCH and BPF_MAP_LOOKUP_BATCH: many entries written,
//! deleted or read in one syscall
//! (aya 0.14 has no batch API). Loading or reading a million-entry list one element at a time
//! costs a syscall (or two) per entry; a batch costs one per few thousand.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// Entries asked for per BPF_MAP_LOOKUP_BATCH.
const LOOKUP_CHUNK: usize = 8192;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// One batch command; true on success (else the error is in errno). The kernel writes back
/// `attr.count` (and the resume token of a lookup).
///
/// # Safety
/// `attr`'s pointers must name buffers of `attr.count` keys and values of the map's layout.
unsafe fn bpf_batch(cmd: libc::c_long, attr: &mut BatchAttr) -> bool {
    // SAFETY: upheld by the caller; `attr` is a valid `union bpf_attr` prefix of its size.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            size_of::<BatchAttr>() as u32,
        ) == 0
    }
}

/// Write `keys[i] -> values[i]` in order, creating or overwriting (the kernel takes no
/// NOEXIST/EXIST in `elem_flags` for batches: only BPF_F_LOCK). Returns how many were written
/// and, if it stopped early, why (E2BIG/ENOSPC when full, EINVAL/ENOTSUPP when the map type or
/// kernel has no batch update).
pub fn update<K: Copy, V: Copy>(
    map: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
    elem_flags: u64,
) -> (usize, Option<io::Error>) {
    assert_eq!(keys.len(), values.len(), "one value per key");
    if keys.is_empty() {
        return (0, None);
    }
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: map.as_raw_fd() as u32,
        elem_flags,
        ..BatchAttr::default()
    };
    // SAFETY: attr points at valid key and value arrays of `count` elements each, laid out
    // as the map's key and value (the callers' types are the maps' repr(C) types).
    if unsafe { bpf_batch(BPF_MAP_UPDATE_BATCH, &mut attr) } {
        return (keys.len(), None);
    }
    let err = io::Error::last_os_error();
    // The kernel reports how many it wrote before a failure in `count`; a request it refused
    // outright leaves `count` as we set it, and wrote nothing.
    let done = attr.count as usize;
    (if done >= keys.len() { 0 } else { done }, Some(err))
}

/// Delete `keys` in order. Returns how many were deleted and, if it stopped early, why
/// (ENOENT: that key was not there; EINVAL/ENOTSUPP: no batch delete here).
pub fn delete<K: Copy>(map: BorrowedFd<'_>, keys: &[K]) -> (usize, Option<io::Error>) {
    if keys.is_empty() {
        return (0, None);
    }
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: map.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: attr points at a valid key array of `count` elements of the map's key layout.
    if unsafe { bpf_batch(BPF_MAP_DELETE_BATCH, &mut attr) } {
        return (keys.len(), None);
    }
    let err = io::Error::last_os_error();
    let done = attr.count as usize;
    (if done >= keys.len() { 0 } else { done }, Some(err))
}

/// Every entry of a hash map with BPF_MAP_LOOKUP_BATCH: one syscall per few thousand entries
/// instead of two per entry (get_next_key, lookup). `None` when the map or kernel has no batch
/// lookup (the caller walks the keys instead).
pub fn lookup_all<K: Copy + Default, V: Copy + Default>(
    map: BorrowedFd<'_>,
) -> io::Result<Option<Vec<(K, V)>>> {
    let mut out = Vec::new();
    let mut keys = vec![K::default(); LOOKUP_CHUNK];
    let mut values = vec![V::default(); LOOKUP_CHUNK];
    // The resume token: a bucket index for hash maps, a key for others; big enough for both.
    let mut token = [0u64; 4];
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_mut_ptr() as u64 },
            out_batch: token.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: LOOKUP_CHUNK as u32,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the key and value buffers hold `count` elements of the map's key and value
        // layout; the token buffer is larger than any token the kernel writes.
        let ok = unsafe { bpf_batch(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        let n = (attr.count as usize).min(LOOKUP_CHUNK);
        let err = (!ok).then(io::Error::last_os_error);
        match err.as_ref().and_then(io::Error::raw_os_error) {
            // ENOENT: the walk is over (this call may still have returned entries).
            None | Some(libc::ENOENT) => {
                out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
                if err.is_some() {
                    return Ok(Some(out));
                }
            }
            Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(libc::EOPNOTSUPP) if first => {
                return Ok(None);
            }
            _ => return Err(err.expect("an error")),
        }
        first = false;
    }
}
