//! The few system facts floodgate needs that no crate wraps: is this path on bpffs, the
//! kernel's monotonic clock (the one `bpf_ktime_get_ns` reads), a mutation lock, and the
//! open-file limit, random bytes, a TCP sysctl.

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

/// Fill `buf` from the kernel's random pool (getrandom(2); blocks only until the pool is
/// initialised at boot).
pub fn random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, which is writable.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// `net.ipv4.tcp_syncookies` of this network namespace (it covers IPv6 too), or None when it
/// cannot be read. At 0 the kernel refuses the connections the SYN guard's cookies complete.
pub fn tcp_syncookies() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_syncookies")
        .ok()?
        .trim()
        .parse()
        .ok()
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

/// `/run/lock/floodgate<pin dir, flattened><suffix>`: per-pin-directory files that need no
/// bpffs (locks, the write journal).
pub fn run_file(pin_dir: &Path, suffix: &str) -> Result<PathBuf> {
    let name: String = pin_dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let dir = PathBuf::from("/run/lock");
    std::fs::create_dir_all(&dir).io_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.join(format!("floodgate{name}{suffix}")))
}

fn open_lock_file(path: &Path) -> Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .io_context(|| format!("opening lock file {}", path.display()))
}

/// The one `floodgate run` of a pin directory: an exclusive lock held for the daemon's life,
/// with its pid in the file. A second daemon on the same pins refuses before changing anything.
pub struct DaemonLock {
    _file: File,
}

impl DaemonLock {
    /// Take the lock, or fail naming the daemon that holds it.
    pub fn acquire(pin_dir: &Path) -> Result<DaemonLock> {
        use std::io::{Seek, Write};
        let path = run_file(pin_dir, ".daemon")?;
        let mut file = open_lock_file(&path)?;
        // SAFETY: valid fd owned by `file`.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::DaemonRunning {
                pid: read_pid(&path),
                pin_dir: pin_dir.to_path_buf(),
            });
        }
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .io_context(|| format!("writing {}", path.display()))?;
        Ok(DaemonLock { _file: file })
    }

    /// The pid of the daemon holding `pin_dir`, if one runs (0 if it cannot be read).
    pub fn holder(pin_dir: &Path) -> Result<Option<u32>> {
        let path = run_file(pin_dir, ".daemon")?;
        if !path.exists() {
            return Ok(None);
        }
        let file = open_lock_file(&path)?;
        // SAFETY: valid fd owned by `file`; the probe lock goes with the file at return.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
            return Ok(None);
        }
        Ok(Some(read_pid(&path)))
    }
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// An exclusive lock serialising every change to one pin directory; released on drop.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    pub fn acquire(pin_dir: &Path) -> Result<StateLock> {
        let path = run_file(pin_dir, ".lock")?;
        let file = open_lock_file(&path)?;
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

/// Read a whole regular file. Anything else (a FIFO, a device, a directory) is refused at once:
/// opening a FIFO for reading would block until a writer comes, with no word said.
pub fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::{io::Read, os::unix::fs::OpenOptionsExt};
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let what = match meta.file_type() {
            t if t.is_dir() => "a directory",
            t if std::os::unix::fs::FileTypeExt::is_fifo(&t) => "a FIFO",
            _ => "not a regular file",
        };
        return Err(std::io::Error::other(format!(
            "{what}: floodgate reads regular files only"
        )));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut out)?;
    Ok(out)
}
