//! Loading the XDP object, attaching it, detaching it, and reading back what is attached.
//!
//! Pin layout under the pin directory:
//! ```text
//! maps/<NAME>   every map (lists, counters), created on first use and reused after
//! prog          the XDP program, shared by every interface
//! synguard_tc   the SYN guard's TC ingress program, beside the XDP program on each interface
//! ```
//! Interfaces are attached over netlink (see [`crate::netlink`] for why), and an interface
//! counts as floodgate's when its XDP program uses this pin directory's STATS map: that holds
//! across program reloads and never mistakes another tool's program for ours.

use std::{
    collections::HashMap,
    fs,
    io::ErrorKind,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, ProgramArray},
    programs::{
        ProgramInfo, SchedClassifier, TcAttachType, Xdp, loaded_programs,
        tc::{self, NlOptions, TcAttachOptions, TcError},
    },
};
use filter_common::{PROGRAM_NAME, SYNGUARD_TC_PROGRAM_NAME, map_names};

use crate::{
    error::{Error, IoContext, Result},
    kfunc,
    netlink::{self, XdpMode},
    sys,
};

/// The XDP object built by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floodgate"));

/// The pin directory and the paths inside it.
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
    /// Size of the per-source rate-limit table when the maps are created (None: default).
    source_table: Option<u32>,
    /// Entries of each blocklist map when the maps are created (None: default).
    blocklist: Option<u32>,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> PinDir {
        PinDir {
            root: root.into(),
            source_table: None,
            blocklist: None,
        }
    }

    /// Ask for a per-source state table of `entries` (see [`load_object`]).
    pub fn with_source_table(mut self, entries: Option<u32>) -> PinDir {
        self.source_table = entries;
        self
    }
    /// Ask for blocklist maps of `entries` each (hosts and prefixes, per family).
    pub fn with_blocklist_size(mut self, entries: Option<u32>) -> PinDir {
        self.blocklist = entries;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }
    pub fn prog(&self) -> PathBuf {
        self.root.join("prog")
    }
    pub fn synguard_tc(&self) -> PathBuf {
        self.root.join("synguard_tc")
    }
}

/// The kfunc the SYN guard completes handshakes with (TC ingress, kernel 6.9+).
pub const SYNGUARD_KFUNC: &str = "bpf_sk_assign_tcp_reqsk";

/// How the SYN guard turns a valid cookie into a connection on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The TC ingress program calls [`SYNGUARD_KFUNC`].
    Kfunc,
    /// Not possible here: why.
    Unavailable(String),
}

impl Completion {
    /// Probe the running kernel (its BTF must name the kfunc).
    pub fn probe() -> Completion {
        match Btf::from_sys_fs() {
            Err(e) => Completion::Unavailable(format!("no kernel BTF ({e})")),
            Ok(btf) => {
                match btf.id_by_type_name_kind(SYNGUARD_KFUNC, aya_obj::btf::BtfKind::Func) {
                    Ok(_) => Completion::Kfunc,
                    Err(_) => Completion::Unavailable(format!(
                        "the kernel has no kfunc {SYNGUARD_KFUNC} (needs Linux 6.9 or later)"
                    )),
                }
            }
        }
    }
}

/// Parse the object and create (or reuse) its pinned maps. Programs are not loaded yet.
///
/// The per-source state table is sized when the maps are created: with the pin directory's
/// `source_table` if given, else [`filter_common::SOURCE_STATE_DEFAULT`]. Asking for another
/// size once it exists is an error that says how to resize.
pub fn load_object(pin: &PinDir) -> Result<Ebpf> {
    sys::require_bpffs(pin.root())?;
    let maps = pin.maps();
    fs::create_dir_all(&maps).io_context(|| format!("creating {}", maps.display()))?;
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(&maps);
    let blocklist = [
        map_names::BLOCK_V4_EXACT,
        map_names::BLOCK_V4,
        map_names::BLOCK_V6_EXACT,
        map_names::BLOCK_V6,
    ];
    // Lists pinned by a floodgate that kept prefixes in LPM tries cannot serve this one.
    for name in [
        map_names::ALLOW_V4,
        map_names::ALLOW_V6,
        map_names::BLOCK_V4,
        map_names::BLOCK_V6,
    ] {
        if let Ok(info) = aya::maps::MapInfo::from_pin(maps.join(name)) {
            if matches!(info.map_type(), Ok(aya::maps::MapType::LpmTrie)) {
                return Err(Error::OldListLayout { map: name });
            }
        }
    }
    let sizes = pin
        .source_table
        .map(|n| (map_names::SOURCE_STATE, n))
        .into_iter()
        .chain(
            pin.blocklist
                .into_iter()
                .flat_map(|n| blocklist.map(|m| (m, n))),
        );
    for (name, want) in sizes {
        match aya::maps::MapInfo::from_pin(maps.join(name)) {
            Ok(info) if info.max_entries() != want => {
                let have = info.max_entries();
                return Err(if name == map_names::SOURCE_STATE {
                    Error::SourceTableSize { have, want }
                } else {
                    Error::MapSize {
                        map: name,
                        have,
                        want,
                    }
                });
            }
            Ok(_) => {}
            Err(_) => {
                loader.map_max_entries(name, want);
            }
        }
    }
    // The kernel's BTF names the kfuncs the object calls; aya parses it again for itself.
    let btf = Btf::from_sys_fs().ok();
    let linked = kfunc::link(OBJECT, btf.as_ref())?;
    Ok(loader.load(&linked.object)?)
}

/// The XDP program named `name` in `ebpf` (not loaded yet, maybe).
fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::MissingInObject {
            what: "program",
            name: name.into(),
        })?;
    prog.try_into().map_err(|source| Error::Program {
        context: format!("{name}: program type"),
        source,
    })
}

/// The XDP program (the pipeline's first stage) from `ebpf`, loaded into the kernel (verified)
/// if it is not yet. Loading it first loads the later stages ([`filter_common::STAGES`]), each
/// verified on its own, and puts them in the `STAGES` array its tail calls go through.
pub fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    if xdp(ebpf, PROGRAM_NAME)?.fd().is_err() {
        for (index, name) in filter_common::STAGES {
            let stage = xdp(ebpf, name)?;
            if stage.fd().is_err() {
                stage.load().map_err(|source| Error::Program {
                    context: format!("verifying the XDP stage {name}"),
                    source,
                })?;
            }
            let fd = stage
                .fd()
                .and_then(|fd| fd.try_clone().map_err(Into::into))
                .map_err(|source| Error::Program {
                    context: format!("{name}: its fd"),
                    source,
                })?;
            let map = ebpf
                .map_mut(map_names::STAGES)
                .ok_or_else(|| Error::MissingInObject {
                    what: "map",
                    name: map_names::STAGES.into(),
                })?;
            let mut stages: ProgramArray<&mut MapData> =
                ProgramArray::try_from(map).map_err(|source| Error::Map {
                    context: format!("opening map {}", map_names::STAGES),
                    source,
                })?;
            stages.set(index, &fd, 0).map_err(|source| Error::Map {
                context: format!("putting stage {name} in {}", map_names::STAGES),
                source,
            })?;
        }
        xdp(ebpf, PROGRAM_NAME)?
            .load()
            .map_err(|source| Error::Program {
                context: "verifying the XDP program".into(),
                source,
            })?;
    }
    xdp(ebpf, PROGRAM_NAME)
}

/// Verified instructions of each stage, in pipeline order: (program name, count). Loads the
/// program if it is not yet. For the benchmark report: the verifier's limit is 1M per program.
pub fn stage_instructions(ebpf: &mut Ebpf) -> Result<Vec<(&'static str, Option<u32>)>> {
    program(ebpf)?;
    let mut out = Vec::new();
    for name in std::iter::once(PROGRAM_NAME).chain(filter_common::STAGES.map(|(_, n)| n)) {
        let count = xdp(ebpf, name)?
            .info()
            .ok()
            .and_then(|i| i.verified_instruction_count());
        out.push((name, count));
    }
    Ok(out)
}

/// One interface as `status` and `attach` report it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    /// Native or skb.
    pub mode: XdpMode,
    pub program_id: u32,
}

/// What `attach` did for one interface.
#[derive(Debug)]
pub struct AttachOutcome {
    pub iface: String,
    /// Native or skb.
    pub mode: XdpMode,
    /// It was attached before this call; nothing changed.
    pub already: bool,
    /// `auto` asked for native mode and the driver refused, so skb mode was used: the reason.
    pub fell_back: Option<String>,
}

/// Attach the shared program to each interface (in the caller's network namespace).
/// Interfaces already running floodgate are left as they are. All names are checked first;
/// on a failure part-way, interfaces attached before it stay attached and the error says which.
pub fn attach(
    ebpf: &mut Ebpf,
    pin: &PinDir,
    ifaces: &[String],
    mode: XdpMode,
) -> Result<Vec<AttachOutcome>> {
    let mut indexes = Vec::new();
    for iface in ifaces {
        indexes.push(sys::if_index(iface).ok_or_else(|| Error::UnknownInterface {
            name: iface.clone(),
        })?);
    }
    let prog = pinned_program(ebpf, pin)?;
    let prog_fd = prog.fd().map_err(|source| Error::Program {
        context: "opening the program".into(),
        source,
    })?;
    let current = attachments(pin)?;
    let mut out = Vec::new();
    let completion = Completion::probe() == Completion::Kfunc;
    for (iface, ifindex) in ifaces.iter().zip(indexes) {
        if completion {
            attach_synguard_tc(ebpf, pin, iface)?;
        }
        if let Some(a) = current.iter().find(|a| a.ifindex == ifindex) {
            out.push(AttachOutcome {
                iface: iface.clone(),
                mode: a.mode,
                already: true,
                fell_back: None,
            });
            continue;
        }
        let try_mode = |m: XdpMode| -> Result<XdpMode> {
            netlink::attach(ifindex, prog_fd.as_fd(), m)
                .map(|()| m)
                .map_err(|e| attach_error(iface, m, e))
        };
        let (got, fell_back) = match mode {
            XdpMode::Auto => match try_mode(XdpMode::Native) {
                Ok(m) => (m, None),
                Err(Error::NativeUnsupported { source, .. }) => {
                    (try_mode(XdpMode::Skb)?, Some(source.to_string()))
                }
                Err(e) => return Err(e),
            },
            m => (try_mode(m)?, None),
        };
        out.push(AttachOutcome {
            iface: iface.clone(),
            mode: got,
            already: false,
            fell_back,
        });
    }
    Ok(out)
}

/// Put the SYN guard's TC ingress program on `iface` (replacing a copy already there). It
/// does nothing until the guard is switched on; it stays after this process exits (a netlink
/// tc filter, like the XDP attachment) until `detach`.
fn attach_synguard_tc(ebpf: &mut Ebpf, pin: &PinDir, iface: &str) -> Result<()> {
    let path = pin.synguard_tc();
    if !path.exists() {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(SYNGUARD_TC_PROGRAM_NAME)
            .ok_or_else(|| Error::MissingInObject {
                what: "program",
                name: SYNGUARD_TC_PROGRAM_NAME.into(),
            })?
            .try_into()
            .map_err(|source| Error::Program {
                context: format!("{SYNGUARD_TC_PROGRAM_NAME}: program type"),
                source,
            })?;
        if prog.fd().is_err() {
            prog.load().map_err(|source| Error::Program {
                context: format!("verifying the TC program {SYNGUARD_TC_PROGRAM_NAME}"),
                source,
            })?;
        }
        prog.pin(&path).map_err(|e| Error::Io {
            context: format!("pinning the TC program at {}", path.display()),
            source: std::io::Error::other(e),
        })?;
    }
    let tc_error = |what: &str, e: TcError| Error::Io {
        context: format!("{iface}: {what}"),
        source: std::io::Error::other(e),
    };
    match tc::qdisc_add_clsact(iface) {
        Ok(()) => {}
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(tc_error("adding the clsact qdisc for the SYN guard", e)),
    }
    detach_synguard_tc(iface);
    let mut prog = SchedClassifier::from_pin(&path).map_err(|source| Error::Program {
        context: format!("opening {}", path.display()),
        source,
    })?;
    let link = prog
        .attach_with_options(
            iface,
            TcAttachType::Ingress,
            TcAttachOptions::Netlink(NlOptions::default()),
        )
        .and_then(|id| prog.take_link(id))
        .map_err(|source| Error::Program {
            context: format!("{iface}: attaching the SYN guard's TC program"),
            source,
        })?;
    // The filter stays when the link is dropped only if the link is not dropped: a netlink
    // link holds no fd, so forgetting it leaks nothing.
    std::mem::forget(link);
    Ok(())
}

/// Remove the SYN guard's TC program from `iface`, if it is there.
fn detach_synguard_tc(iface: &str) {
    let _ = tc::qdisc_detach_program(iface, TcAttachType::Ingress, SYNGUARD_TC_PROGRAM_NAME);
}

/// The pinned program, loading (verifying) and pinning it first if there is none.
fn pinned_program(ebpf: &mut Ebpf, pin: &PinDir) -> Result<ProgramInfo> {
    let path = pin.prog();
    if !path.exists() {
        let prog = program(ebpf)?;
        prog.pin(&path).map_err(|e| Error::Io {
            context: format!("pinning the program at {}", path.display()),
            source: std::io::Error::other(e),
        })?;
    }
    ProgramInfo::from_pin(&path).map_err(|source| Error::Program {
        context: format!("opening {}", path.display()),
        source,
    })
}

fn attach_error(iface: &str, mode: XdpMode, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EBUSY) | Some(libc::EEXIST) => Error::InterfaceBusy {
            iface: iface.to_string(),
        },
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) if mode == XdpMode::Native => {
            Error::NativeUnsupported {
                iface: iface.to_string(),
                source: e,
            }
        }
        _ => Error::Io {
            context: format!("{iface}: attaching in {mode} mode"),
            source: e,
        },
    }
}

/// The kernel id of this pin directory's STATS map, if the maps exist.
pub fn stats_map_id(pin: &PinDir) -> Option<u32> {
    let map = MapData::from_pin(pin.maps().join(map_names::STATS)).ok()?;
    Some(map.info().ok()?.id())
}

/// Interfaces of the caller's network namespace running floodgate with this pin directory.
pub fn attachments(pin: &PinDir) -> Result<Vec<Attachment>> {
    let Some(stats_id) = stats_map_id(pin) else {
        return Ok(Vec::new());
    };
    let xdp = netlink::xdp_interfaces().io_context(|| "listing XDP programs (netlink)".into())?;
    if xdp.is_empty() {
        return Ok(Vec::new());
    }
    let mut ours: HashMap<u32, bool> = HashMap::new();
    for info in loaded_programs().filter_map(|p| p.ok()) {
        if xdp.iter().any(|x| x.prog_id == info.id()) {
            let uses_our_maps = info
                .map_ids()
                .ok()
                .flatten()
                .is_some_and(|ids| ids.contains(&stats_id));
            ours.insert(info.id(), uses_our_maps);
        }
    }
    let mut out: Vec<Attachment> = xdp
        .into_iter()
        .filter(|x| ours.get(&x.prog_id).copied().unwrap_or(false))
        .map(|x| Attachment {
            iface: x.ifname,
            ifindex: x.ifindex,
            mode: x.mode,
            program_id: x.prog_id,
        })
        .collect();
    out.sort_by(|a, b| a.iface.cmp(&b.iface));
    Ok(out)
}

/// Detach from the named interfaces (or all in this network namespace). With `purge`, also
/// delete the lists and counters; that needs every interface detached, or the program would
/// keep maps nobody can reach.
pub fn detach(pin: &PinDir, ifaces: &[String], all: bool, purge: bool) -> Result<Vec<String>> {
    if purge {
        if let Some(pid) = sys::DaemonLock::holder(pin.root())? {
            return Err(Error::PurgeWhileDaemon {
                pid,
                pin_dir: pin.root().to_path_buf(),
            });
        }
    }
    let current = attachments(pin)?;
    let targets: Vec<&Attachment> =
        if all {
            current.iter().collect()
        } else {
            let mut t = Vec::new();
            for iface in ifaces {
                let a = current.iter().find(|a| &a.iface == iface).ok_or_else(|| {
                    Error::NotAttached {
                        iface: iface.clone(),
                    }
                })?;
                t.push(a);
            }
            t
        };
    if purge {
        let remaining: Vec<&str> = current
            .iter()
            .filter(|a| !targets.iter().any(|t| t.ifindex == a.ifindex))
            .map(|a| a.iface.as_str())
            .collect();
        if !remaining.is_empty() {
            return Err(Error::PurgeWhileAttached {
                remaining: remaining.join(", "),
            });
        }
    }
    let mut done = Vec::new();
    for a in targets {
        let info = loaded_programs()
            .filter_map(|p| p.ok())
            .find(|p| p.id() == a.program_id)
            .ok_or_else(|| Error::NotAttached {
                iface: a.iface.clone(),
            })?;
        let fd = info.fd().map_err(|source| Error::Program {
            context: format!("{}: opening its program", a.iface),
            source,
        })?;
        netlink::detach(a.ifindex, fd.as_fd(), a.mode)
            .io_context(|| format!("{}: detaching", a.iface))?;
        detach_synguard_tc(&a.iface);
        done.push(a.iface.clone());
    }
    if attachments(pin)?.is_empty() {
        // No SYN-ACK of the guard is answered here any more: its SYNPROXY table goes (and
        // nf_conntrack_tcp_loose is put back); `attach` puts it back if the guard is on.
        crate::synproxy::remove()?;
        // Nothing here uses the program: unpin it so the next attach loads the current build.
        for prog in [pin.prog(), pin.synguard_tc()] {
            if let Err(e) = fs::remove_file(&prog) {
                if e.kind() != ErrorKind::NotFound {
                    return Err(e).io_context(|| format!("removing {}", prog.display()));
                }
            }
        }
        if purge && pin.root().exists() {
            fs::remove_dir_all(pin.root())
                .io_context(|| format!("removing {}", pin.root().display()))?;
        }
    }
    Ok(done)
}

/// The id of the pinned program, if one is pinned (for `status`).
pub fn program_id(pin: &PinDir) -> Option<u32> {
    let path = pin.prog();
    if !path.exists() {
        return None;
    }
    let info = aya::programs::ProgramInfo::from_pin(&path).ok()?;
    Some(info.id())
}
