//! BPF_MAP_UPDATE_BATCH: many entries written in one syscall (aya 0.14 has no batch API).
//! Loading a million-entry list one `bpf(BPF_MAP_UPDATE_ELEM)` at a time costs a syscall per
//! entry; a batch costs one per few thousand.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

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
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            size_of::<BatchAttr>() as u32,
        )
    };
    if rc == 0 {
        return (keys.len(), None);
    }
    let err = io::Error::last_os_error();
    // The kernel reports how many it wrote before a failure in `count`; a request it refused
    // outright leaves `count` as we set it, and wrote nothing.
    let done = attr.count as usize;
    (if done >= keys.len() { 0 } else { done }, Some(err))
}
