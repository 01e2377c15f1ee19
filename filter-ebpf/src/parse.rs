//! A bounds-checked walk over the frame: Ethernet, up to two VLAN tags, IPv4 (with options) or
//! IPv6 (with a bounded extension-header chain), then the L4 header where one is present.
//! Multi-byte fields are read as big-endian integers; nothing is transmuted into an enum.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use filter_common::{IPV6_EXT_MAX, VLAN_MAX_DEPTH};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

pub use filter_common::proto::{
    ICMP as IPPROTO_ICMP, ICMPV6 as IPPROTO_ICMPV6, TCP as IPPROTO_TCP, UDP as IPPROTO_UDP,
};
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;

#[repr(C)]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    ether_type: [u8; 2],
}

#[repr(C)]
struct VlanHdr {
    tci: [u8; 2],
    ether_type: [u8; 2],
}

#[repr(C)]
struct Ipv4Hdr {
    ver_ihl: u8,
    tos: u8,
    tot_len: [u8; 2],
    id: [u8; 2],
    frag_off: [u8; 2],
    ttl: u8,
    protocol: u8,
    check: [u8; 2],
    saddr: [u8; 4],
    daddr: [u8; 4],
}

#[repr(C)]
struct Ipv6Hdr {
    ver_tc_flow: [u8; 4],
    payload_len: [u8; 2],
    next_hdr: u8,
    hop_limit: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

/// The common start of hop-by-hop, routing, destination-options and AH headers.
#[repr(C)]
struct ExtHdr {
    next_hdr: u8,
    len: u8,
}

#[repr(C)]
struct FragHdr {
    next_hdr: u8,
    _reserved: u8,
    frag_off: [u8; 2],
    id: [u8; 4],
}

/// Minimum TCP header (no options).
#[repr(C)]
struct TcpHdr {
    sport: [u8; 2],
    dport: [u8; 2],
    seq: [u8; 4],
    ack: [u8; 4],
    doff_res: u8,
    flags: u8,
    window: [u8; 2],
    check: [u8; 2],
    urg: [u8; 2],
}

#[repr(C)]
struct UdpHdr {
    sport: [u8; 2],
    dport: [u8; 2],
    len: [u8; 2],
    check: [u8; 2],
}

/// ICMP and ICMPv6: type, code, checksum and the 4-byte rest every message has.
#[repr(C)]
struct IcmpHdr {
    kind: u8,
    code: u8,
    check: [u8; 2],
    rest: [u8; 4],
}

/// The parse failed: the frame is an IP packet that cannot be read safely.
pub struct Malformed;

/// Source and destination addresses, network byte order.
pub enum Addrs {
    V4 { src: [u8; 4], dst: [u8; 4] },
    V6 { src: [u8; 16], dst: [u8; 16] },
}

/// The L4 facts later defences match on (zero for protocols without them).
#[derive(Default)]
pub struct L4 {
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Bytes the L4 header says the segment holds: UDP length, or the TCP header length. A
    /// length check compares this with what the IP header leaves.
    pub claimed_len: u16,
}

pub struct Ip {
    pub addrs: Addrs,
    pub protocol: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Offset of the IP header in the frame.
    pub l3_off: usize,
    /// The IP packet length its header claims (IPv4 total length; IPv6 40 + payload length).
    pub ip_len: u32,
    /// IPv4 header length in bytes (options included); 40 for IPv6.
    pub hdr_len: u32,
    /// Offset of the L4 header, when this packet carries one (not a non-first fragment).
    pub l4_off: Option<usize>,
    /// Part of a fragmented datagram (IPv4 MF or offset; IPv6 fragment header).
    pub fragmented: bool,
}

/// What the frame is, as far as the filter cares.
pub enum Frame {
    /// Not IPv4/IPv6 (ARP, LLDP, ...): passes untouched.
    NotIp,
    Ip(Ip),
}

/// ICMPv6 neighbour discovery and router messages (RFC 4861 types 133 to 137) that only a
/// neighbour on the link can have sent (hop limit 255). Lists never drop them: a blocklist
/// entry covering the router or a neighbour (or `::/0`) must not cut the host off its link.
/// ARP needs no such rule: it is not IP and always passes.
#[inline(always)]
pub fn is_neighbour_discovery(ctx: &XdpContext, ip: &Ip) -> bool {
    if ip.protocol != IPPROTO_ICMPV6 || ip.ttl != 255 {
        return false;
    }
    let Some(off) = ip.l4_off else {
        return false;
    };
    match ptr_at::<u8>(ctx, off) {
        Ok(t) => matches!(unsafe { *t }, 133..=137),
        Err(Malformed) => false,
    }
}

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Result<*const T, Malformed> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return Err(Malformed);
    }
    Ok((start + off) as *const T)
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Ethernet, VLANs, and the IP header (with extension headers for IPv6).
#[inline(always)]
pub fn parse_ip(ctx: &XdpContext) -> Result<Frame, Malformed> {
    // A frame too short for Ethernet is not IP as far as anyone can tell; the stack drops it.
    let Ok(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Ok(Frame::NotIp);
    };
    let mut off = size_of::<EthHdr>();
    let mut ether_type = be16(unsafe { (*eth).ether_type });
    for _ in 0..VLAN_MAX_DEPTH {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let vlan = ptr_at::<VlanHdr>(ctx, off)?;
        ether_type = be16(unsafe { (*vlan).ether_type });
        off += size_of::<VlanHdr>();
    }
    match ether_type {
        ETH_P_IP => parse_ipv4(ctx, off).map(Frame::Ip),
        ETH_P_IPV6 => parse_ipv6(ctx, off).map(Frame::Ip),
        // More tags than we walk: the payload cannot be inspected, so it must not pass unseen.
        ETH_P_8021Q | ETH_P_8021AD => Err(Malformed),
        _ => Ok(Frame::NotIp),
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, off: usize) -> Result<Ip, Malformed> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, off)?;
    let ver_ihl = unsafe { (*ip).ver_ihl };
    if ver_ihl >> 4 != 4 {
        return Err(Malformed);
    }
    let hdr_len = ((ver_ihl & 0x0f) as usize) * 4;
    if hdr_len < size_of::<Ipv4Hdr>() {
        return Err(Malformed);
    }
    if (be16(unsafe { (*ip).tot_len }) as usize) < hdr_len {
        return Err(Malformed);
    }
    // The options must be present in the frame.
    ptr_at::<u8>(ctx, off + hdr_len - 1)?;
    let frag = be16(unsafe { (*ip).frag_off });
    let first_fragment = frag & 0x1fff == 0;
    Ok(Ip {
        addrs: Addrs::V4 {
            src: unsafe { (*ip).saddr },
            dst: unsafe { (*ip).daddr },
        },
        protocol: unsafe { (*ip).protocol },
        ttl: unsafe { (*ip).ttl },
        l3_off: off,
        ip_len: be16(unsafe { (*ip).tot_len }) as u32,
        hdr_len: hdr_len as u32,
        // MF set or a non-zero offset.
        fragmented: frag & 0x3fff != 0,
        l4_off: if first_fragment {
            Some(off + hdr_len)
        } else {
            None
        },
    })
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, off: usize) -> Result<Ip, Malformed> {
    let ip = ptr_at::<Ipv6Hdr>(ctx, off)?;
    if unsafe { (*ip).ver_tc_flow[0] } >> 4 != 6 {
        return Err(Malformed);
    }
    let l3_off = off;
    let addrs = Addrs::V6 {
        src: unsafe { (*ip).saddr },
        dst: unsafe { (*ip).daddr },
    };
    let ttl = unsafe { (*ip).hop_limit };
    let ip_len = size_of::<Ipv6Hdr>() as u32 + be16(unsafe { (*ip).payload_len }) as u32;
    let mut next = unsafe { (*ip).next_hdr };
    let mut off = off + size_of::<Ipv6Hdr>();
    let mut l4 = true;
    let mut fragmented = false;
    for _ in 0..IPV6_EXT_MAX {
        match next {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                let ext = ptr_at::<ExtHdr>(ctx, off)?;
                next = unsafe { (*ext).next_hdr };
                off += (unsafe { (*ext).len } as usize + 1) * 8;
            }
            NEXTHDR_AUTH => {
                let ext = ptr_at::<ExtHdr>(ctx, off)?;
                next = unsafe { (*ext).next_hdr };
                off += (unsafe { (*ext).len } as usize + 2) * 4;
            }
            NEXTHDR_FRAGMENT => {
                let frag = ptr_at::<FragHdr>(ctx, off)?;
                next = unsafe { (*frag).next_hdr };
                off += size_of::<FragHdr>();
                fragmented = true;
                if be16(unsafe { (*frag).frag_off }) & 0xfff8 != 0 {
                    // Non-first fragment: what follows is payload, not a header.
                    l4 = false;
                    break;
                }
            }
            _ => break,
        }
    }
    if l4 && is_ipv6_ext(next) {
        // Still inside the chain after IPV6_EXT_MAX headers.
        return Err(Malformed);
    }
    Ok(Ip {
        addrs,
        protocol: next,
        ttl,
        l3_off,
        ip_len,
        hdr_len: size_of::<Ipv6Hdr>() as u32,
        fragmented,
        l4_off: if l4 { Some(off) } else { None },
    })
}

#[inline(always)]
fn is_ipv6_ext(next: u8) -> bool {
    matches!(
        next,
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_AUTH | NEXTHDR_FRAGMENT
    )
}

/// The L4 header of a first fragment or unfragmented packet. A TCP/UDP/ICMP header that is
/// cut short is malformed; other protocols (GRE, ESP, ...) carry no L4 facts.
#[inline(always)]
pub fn parse_l4(ctx: &XdpContext, protocol: u8, off: usize) -> Result<L4, Malformed> {
    let mut l4 = L4::default();
    match protocol {
        IPPROTO_TCP => {
            let tcp = ptr_at::<TcpHdr>(ctx, off)?;
            if unsafe { (*tcp).doff_res } >> 4 < 5 {
                return Err(Malformed);
            }
            l4.sport = be16(unsafe { (*tcp).sport });
            l4.dport = be16(unsafe { (*tcp).dport });
            l4.tcp_flags = unsafe { (*tcp).flags };
            l4.claimed_len = ((unsafe { (*tcp).doff_res } >> 4) as u16) * 4;
        }
        IPPROTO_UDP => {
            let udp = ptr_at::<UdpHdr>(ctx, off)?;
            l4.sport = be16(unsafe { (*udp).sport });
            l4.dport = be16(unsafe { (*udp).dport });
            l4.claimed_len = be16(unsafe { (*udp).len });
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let icmp = ptr_at::<IcmpHdr>(ctx, off)?;
            l4.icmp_type = unsafe { (*icmp).kind };
            l4.icmp_code = unsafe { (*icmp).code };
        }
        _ => {}
    }
    Ok(l4)
}
