//! Errors a user can hit, each saying what to do next. A variant's message never repeats its
//! `source`: the CLI prints the whole chain (`{:#}`), so each cause appears once.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "bpffs is not mounted at {path}: run `mount -t bpf bpf {path}` (or `cargo xtask setup`). \
         Under `ip netns exec` /sys is remounted and the pins are hidden: use \
         `nsenter --net=/run/netns/NAME floodgate ...` instead"
    )]
    BpffsNotMounted { path: PathBuf },

    #[error("no such interface: {name} (see `ip link`)")]
    UnknownInterface { name: String },

    #[error(
        "{iface}: another XDP program is already attached (see `ip -d link show dev {iface}`); \
         detach it first"
    )]
    InterfaceBusy { iface: String },

    #[error(
        "{iface}: native XDP is not supported by this driver: retry with --mode skb ({source})"
    )]
    NativeUnsupported {
        iface: String,
        source: std::io::Error,
    },

    #[error(
        "another `floodgate run` (pid {pid}) holds {}: one daemon per pin directory; stop it \
         first (systemctl stop floodgate) or use another --pin-dir",
        pin_dir.display()
    )]
    DaemonRunning { pid: u32, pin_dir: PathBuf },

    #[error(
        "`floodgate run` (pid {pid}) holds {}: it would go on serving from maps nobody can see; \
         stop it first (systemctl stop floodgate), then purge",
        pin_dir.display()
    )]
    PurgeWhileDaemon { pid: u32, pin_dir: PathBuf },

    #[error(
        "no floodgate state under {}: nothing is attached or loaded here (start with \
         `floodgate attach IFACE`, or check --pin-dir)",
        pin_dir.display()
    )]
    NoState { pin_dir: PathBuf },

    #[error(
        "the pinned maps under {} are gone (purged or bpffs unmounted): restart `floodgate run`",
        pin_dir.display()
    )]
    PinsGone { pin_dir: PathBuf },

    #[error("{iface} is not attached (see `floodgate status`)")]
    NotAttached { iface: String },

    #[error(
        "--purge deletes the lists, but {remaining} would stay attached; detach them too or use --all"
    )]
    PurgeWhileAttached { remaining: String },

    #[error("not on the {list}: {entries} (nothing was removed)")]
    NotListed { list: &'static str, entries: String },

    #[error("{list} is full ({capacity} entries in the {map} map): remove entries or flush first")]
    ListFull {
        list: &'static str,
        map: &'static str,
        capacity: u32,
    },

    #[error(
        "the per-source state table already exists with {have} entries (asked for {want}): \
         resize with `floodgate detach --all --purge`, then attach again with the new size"
    )]
    SourceTableSize { have: u32, want: u32 },

    #[error(
        "the pinned {map} map is from an older floodgate (an LPM trie; prefixes now live in a \
         hash map per list and family): keep its entries with the daemon's snapshot or the old \
         binary's `floodgate block list` / `allow list`, run `floodgate detach --all --purge`, \
         then attach again and load them back"
    )]
    OldListLayout { map: &'static str },

    #[error(
        "the {map} map already exists with {have} entries (asked for {want}): resize with \
         `floodgate detach --all --purge`, then attach again with the new size"
    )]
    MapSize {
        map: &'static str,
        have: u32,
        want: u32,
    },

    #[error(
        "bad source name `{name}`: use 1 to {max} letters, digits, '.', '_' or '-', starting \
         with a letter or digit"
    )]
    BadSourceName { name: String, max: usize },

    #[error("source {name:?} is reserved for {owner}; use another name")]
    ReservedSource { name: String, owner: &'static str },

    #[error("too many sources ({max} named sources at most)")]
    TooManySources { max: u32 },

    #[error("snapshot {path} is unreadable: {message} (move it away to start without it)")]
    Snapshot { path: PathBuf, message: String },

    #[error(
        "snapshot {path} is unreadable: {message}; nothing was restored and it is kept as {aside} \
         (never overwritten): the next start begins with empty lists, or put a good snapshot \
         back at {path} first"
    )]
    SnapshotKeptAside {
        path: PathBuf,
        message: String,
        aside: PathBuf,
    },

    #[error("{count} rules; the table holds at most {max}")]
    TooManyRules { count: usize, max: u32 },

    #[error(
        "the SYN guard cannot complete handshakes on this kernel: {why}; it stays off \
         (SYNs would be answered and no connection could be made)"
    )]
    SynguardUnavailable { why: String },

    #[error("SYN guard, netfilter SYNPROXY: {context}: {message}")]
    Nft { context: String, message: String },

    #[error(
        "no host groups: define [[auto.groups]] in the daemon's configuration file \
         (see README \"Automatic mitigation\") and start or reload `floodgate run`"
    )]
    AutoNoGroups,

    #[error("no rule with id {id} (see `floodgate rule list`)")]
    NoSuchRule { id: u32 },

    #[error(transparent)]
    Invalid(#[from] crate::settings::Invalid),

    #[error("{input}: not an IPv4/IPv6 address or prefix")]
    BadPrefix { input: String },

    #[error("{input}: host bits are set; did you mean {suggestion}?")]
    HostBitsSet { input: String, suggestion: String },

    /// A list entry's field breaks a rule (front ends say which field their own way).
    #[error(transparent)]
    Entry(#[from] crate::entry::FieldError),

    #[error("{path}: {count} bad line(s), nothing was changed:\n{details}")]
    BadListFile {
        path: String,
        count: usize,
        details: String,
    },

    #[error(
        "the XDP object has no {what} named {name} (build mismatch: rebuild with `cargo xtask build`)"
    )]
    MissingInObject { what: &'static str, name: String },

    #[error("{context}")]
    Map {
        context: String,
        source: aya::maps::MapError,
    },

    #[error("{context}")]
    Program {
        context: String,
        source: aya::programs::ProgramError,
    },

    #[error("{context}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    #[error("loading the XDP object")]
    Load(#[from] aya::EbpfError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach context to I/O errors without losing the source.
pub(crate) trait IoContext<T> {
    fn io_context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

pub(crate) trait MapContext<T> {
    fn map_context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> MapContext<T> for std::result::Result<T, aya::maps::MapError> {
    fn map_context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Map {
            context: context(),
            source,
        })
    }
}

/// The error and every cause, one per line: for logs and test failures, where the kernel's
/// verifier log (the innermost cause of a load failure) must not be lost.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(&format!("\ncaused by: {c}"));
        cause = c.source();
    }
    out
}

/// The error and every cause on one line (`renaming X.tmp to X: Is a directory`): for log
/// fields, where the OS's reason must not be lost.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
