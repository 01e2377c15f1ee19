//! The few system facts floodgate needs that no crate wraps: is this path on bpffs, the
//! kernel's monotonic clock (the one `bpf_ktime_get_ns` reads), a mutation lock, and the
//! open-file limit.

use std::{
    ffi::CString,
    fs::File,
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
    time::Duration,
};

use crate::error::{Error, IoContext, Result};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Raise this process's open-file soft limit to its hard limit (no privilege needed: every
/// API connection is a file descriptor). Returns the soft limit now in force.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: a valid in-pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// Is `path` on a bpffs mount? Checks the nearest existing ancestor.
pub fn on_bpffs(path: &Path) -> bool {
    let mut p = path;
    loop {
        if p.exists() {
            break;
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return false,
        }
    }
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated, st is a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    st.f_type as i64 == BPF_FS_MAGIC
}

/// Fail with the fix when the pin directory is not on bpffs.
pub fn require_bpffs(pin_dir: &Path) -> Result<()> {
    if on_bpffs(pin_dir) {
        return Ok(());
    }
    let mount = pin_dir
        .ancestors()
        .find(|a| a.parent() == Some(Path::new("/sys/fs")))
        .unwrap_or(Path::new("/sys/fs/bpf"));
    Err(Error::BpffsNotMounted {
        path: mount.to_path_buf(),
    })
}

/// CLOCK_MONOTONIC, the clock `bpf_ktime_get_ns` reads: TTL expiry times are on it.
pub fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// An exclusive lock serialising every change to one pin directory; released on drop.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    pub fn acquire(pin_dir: &Path) -> Result<StateLock> {
        let name: String = pin_dir
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let dir = PathBuf::from("/run/lock");
        std::fs::create_dir_all(&dir).io_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("floodgate{name}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .io_context(|| format!("opening lock file {}", path.display()))?;
        // SAFETY: valid fd owned by `file`.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .io_context(|| format!("locking {}", path.display()));
        }
        Ok(StateLock { _file: file })
    }
}

/// Interface index by name, in the caller's network namespace.
pub fn if_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}
