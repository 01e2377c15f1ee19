//! Typed access to the pinned maps: taking a map out of the object, summing per-CPU counters,
//! reading aya's errors, and [`ListMap`], the one interface over the four maps of a list (an
//! exact-host hash and a prefix hash per family), so every list operation is written once.

use std::{io, net::IpAddr, os::fd::AsFd};

use aya::{
    Ebpf, Pod,
    maps::{HashMap, IterableMap, MapData, MapError, PerCpuValues},
    sys::SyscallError,
};
use filter_common::{Counter, ListEntry, PrefixKey};
use ipnet::IpNet;

use crate::error::{Error, MapContext, Result};

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

/// A per-CPU counter slot summed over CPUs (STATS, RULE_STATS, SOURCE_DROPS).
pub fn sum_cpus(per_cpu: &PerCpuValues<Counter>) -> Counter {
    per_cpu.iter().fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    })
}

/// The key is not in the map (aya says so in two ways).
pub fn not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(SyscallError { io_error, .. }) => {
            io_error.raw_os_error() == Some(libc::ENOENT)
        }
        _ => false,
    }
}

/// The map has no room for another entry.
pub fn is_full(e: &MapError) -> bool {
    matches!(e, MapError::SyscallError(SyscallError { io_error, .. }) if full_errno(io_error))
}

/// E2BIG, ENOSPC or ENOMEM: what a full map answers, to a single write or a batch.
pub fn full_errno(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::E2BIG | libc::ENOSPC | libc::ENOMEM)
    )
}

/// An address as the list maps key it: network byte order, 4 bytes (IPv4) or 16 (IPv6).
pub trait Addr: Pod + Send + Default {
    /// The address of `net`, which is of this family (the caller chose the map by family).
    fn of(net: &IpNet) -> Self;
    /// The prefix of this address and length.
    fn net(self, prefix_len: u8) -> IpNet;
    /// The length of a host entry.
    const HOST: u8;
}

impl<const N: usize> Addr for [u8; N]
where
    [u8; N]: Pod + Default,
{
    fn of(net: &IpNet) -> Self {
        match net.addr() {
            IpAddr::V4(a) => a.octets().as_slice().try_into(),
            IpAddr::V6(a) => a.octets().as_slice().try_into(),
        }
        .expect("a list map holds entries of its own family")
    }
    fn net(self, prefix_len: u8) -> IpNet {
        let ip = match <[u8; 4]>::try_from(self.as_slice()) {
            Ok(v4) => IpAddr::from(v4),
            Err(_) => IpAddr::from(<[u8; 16]>::try_from(self.as_slice()).expect("4 or 16 bytes")),
        };
        IpNet::new(ip, prefix_len).expect("the kernel only stores valid prefix lengths")
    }
    const HOST: u8 = (N * 8) as u8;
}

/// Entries of one list map, as (prefix, value).
pub type Entries<'a> = Box<dyn Iterator<Item = Result<(IpNet, ListEntry), MapError>> + 'a>;

/// One map of a list: exact hosts, or prefixes keyed by length and address, of one family. The caller
/// picks the map by family and prefix length; the map only turns prefixes into its keys.
pub trait ListMap: Send {
    /// The entry listing exactly `net`.
    fn get(&self, net: &IpNet) -> Result<ListEntry, MapError>;
    fn insert(&mut self, net: &IpNet, value: ListEntry) -> Result<(), MapError>;
    fn remove(&mut self, net: &IpNet) -> Result<(), MapError>;
    /// Write entries with BPF_MAP_UPDATE_BATCH ([`crate::batch::update`]).
    fn insert_batch(&self, nets: &[IpNet], values: &[ListEntry]) -> (usize, Option<io::Error>);
    /// Delete entries with BPF_MAP_DELETE_BATCH ([`crate::batch::delete`]).
    fn remove_batch(&self, nets: &[IpNet]) -> (usize, Option<io::Error>);
    fn entries(&self) -> Entries<'_>;
    /// Entries in the map (expired ones not yet swept included): a walk over every key.
    fn len(&self) -> usize;
    /// One get_next_key (which still walks the buckets of a big sparse hash).
    fn is_empty(&self) -> bool;
    /// The map itself.
    fn data(&self) -> &MapData;
    /// max_entries.
    fn capacity(&self) -> Result<u32, MapError> {
        Ok(self.data().info()?.max_entries())
    }
}

/// A prefix map's key is an [`Addr`] too: its length and the prefix's address (the length
/// given to [`Addr::net`] is ignored: the key carries its own).
impl<A: Addr> Addr for PrefixKey<A>
where
    PrefixKey<A>: Pod + Default,
{
    fn of(net: &IpNet) -> Self {
        PrefixKey {
            len: u32::from(net.prefix_len()),
            addr: A::of(&net.trunc()),
        }
    }
    fn net(self, _: u8) -> IpNet {
        self.addr.net(self.len as u8)
    }
    const HOST: u8 = A::HOST;
}

impl<A: Addr + 'static> ListMap for HashMap<MapData, A, ListEntry> {
    fn get(&self, net: &IpNet) -> Result<ListEntry, MapError> {
        HashMap::get(self, &A::of(net), 0)
    }
    fn insert(&mut self, net: &IpNet, value: ListEntry) -> Result<(), MapError> {
        HashMap::insert(self, A::of(net), value, 0)
    }
    fn remove(&mut self, net: &IpNet) -> Result<(), MapError> {
        HashMap::remove(self, &A::of(net))
    }
    fn insert_batch(&self, nets: &[IpNet], values: &[ListEntry]) -> (usize, Option<io::Error>) {
        let keys: Vec<A> = nets.iter().map(A::of).collect();
        crate::batch::update(self.data().fd().as_fd(), &keys, values, 0)
    }
    fn remove_batch(&self, nets: &[IpNet]) -> (usize, Option<io::Error>) {
        let keys: Vec<A> = nets.iter().map(A::of).collect();
        crate::batch::delete(self.data().fd().as_fd(), &keys)
    }
    fn entries(&self) -> Entries<'_> {
        // One syscall per few thousand entries where the kernel can (a 1M-entry list is read in
        // milliseconds, not seconds); the key walk where it cannot.
        match crate::batch::lookup_all::<A, ListEntry>(self.data().fd().as_fd()) {
            Ok(Some(all)) => Box::new(all.into_iter().map(|(k, v)| Ok((k.net(A::HOST), v)))),
            Ok(None) => Box::new(self.iter().map(|kv| kv.map(|(k, v)| (k.net(A::HOST), v)))),
            Err(e) => Box::new(std::iter::once(Err(MapError::SyscallError(
                aya::sys::SyscallError {
                    call: "bpf_map_lookup_batch",
                    io_error: e,
                },
            )))),
        }
    }
    fn len(&self) -> usize {
        self.keys().count()
    }
    fn is_empty(&self) -> bool {
        self.keys().next().is_none()
    }
    fn data(&self) -> &MapData {
        self.map()
    }
}
