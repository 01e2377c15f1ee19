//! Frames built byte by byte, so fixtures can be exactly as broken as they need to be.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
pub const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;
pub const GRE: u8 = 47;
pub const ESP: u8 = 50;
pub const HOP: u8 = 0;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const AH: u8 = 51;
pub const DEST: u8 = 60;

/// Ethernet with the given VLAN tags (TPID, VID) in order, then `ether_type`.
pub fn eth(vlans: &[(u16, u16)], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&MAC_DST);
    f.extend_from_slice(&MAC_SRC);
    for (tpid, vid) in vlans {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The Internet checksum of `data` (0 when `data` holds a correct checksum field).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv4 header (+ options, padded to 4 bytes) and payload. `frag` is the raw flags+offset field.
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    options: &[u8],
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut opts = options.to_vec();
    while !opts.len().is_multiple_of(4) {
        opts.push(0);
    }
    let ihl = (20 + opts.len()) / 4;
    let total = 20 + opts.len() + payload.len();
    let mut h = vec![0x40 | ihl as u8, 0];
    h.extend_from_slice(&(total as u16).to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(&opts);
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// IPv6 header with `next` as the first next-header value, then `payload` (ext headers + L4).
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    ipv6_hops(src, dst, next, 64, payload)
}

/// [`ipv6`] with hop limit `hops` (255: sent by a neighbour on the link).
pub fn ipv6_hops(src: Ipv6Addr, dst: Ipv6Addr, next: u8, hops: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, hops]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

/// A generic extension header (hop-by-hop, routing, destination options) of `units` 8-byte
/// units beyond the first, followed by `rest`.
pub fn ext(next: u8, units: u8, rest: &[u8]) -> Vec<u8> {
    let mut h = vec![next, units];
    h.resize(8 * (units as usize + 1), 0);
    if next == HOP || next == DEST {
        // PadN so the options area is well formed (not needed by the filter, but honest).
        h[2] = 1;
        h[3] = (h.len() - 4) as u8;
    }
    h.extend_from_slice(rest);
    h
}

/// AH: its length is in 4-byte units minus 2.
pub fn ah(next: u8, rest: &[u8]) -> Vec<u8> {
    let mut h = vec![next, 4, 0, 0];
    h.resize(24, 0);
    h.extend_from_slice(rest);
    h
}

/// IPv6 fragment header: `offset` in 8-byte units, `more` fragments flag.
pub fn frag6(next: u8, offset: u16, more: bool, rest: &[u8]) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 42]);
    h.extend_from_slice(rest);
    h
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

/// TCP header with `doff` 32-bit words and `flags`.
pub fn tcp(sport: u16, dport: u16, flags: u8, doff: u8) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    h.push(doff << 4);
    h.push(flags);
    h.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    h.resize(usize::from(doff.max(5)) * 4, 0);
    h
}

pub fn icmp_echo() -> Vec<u8> {
    vec![8, 0, 0, 0, 0, 1, 0, 1, 0xaa, 0xbb]
}

pub fn icmpv6_echo() -> Vec<u8> {
    icmpv6(128)
}

/// An ICMPv6 message of type `kind` (133 router solicitation ... 137 redirect), 24 bytes.
pub fn icmpv6(kind: u8) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0, 0, 1, 0, 1, 0xaa, 0xbb];
    m.resize(24, 0);
    m
}

pub fn arp() -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&MAC_SRC);
    a.extend_from_slice(&[198, 18, 0, 2]);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&[198, 18, 0, 1]);
    eth(&[], ETH_P_ARP, &a)
}
