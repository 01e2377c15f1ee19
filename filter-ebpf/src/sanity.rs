//! Sanity drops: packets no legitimate sender produces. Each check has its own switch bit in
//! `Config::sanity` and its own reason.

use filter_common::{
    Config, Reason,
    sanity::{martian_v4, martian_v6, tcp_flags_valid},
    sanity_bits,
};

use crate::{
    facts::Facts,
    parse::{IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
};

const DHCP_SERVER_PORT: u16 = 67;

#[inline(always)]
fn words(a: &[u8; 16]) -> [u64; 2] {
    // Facts keeps addresses 8-byte aligned: these are two plain loads.
    let w = a.as_ptr() as *const u64;
    unsafe { [w.read(), w.add(1).read()] }
}

#[inline(always)]
pub fn check(cfg: &Config, p: &Facts) -> Option<Reason> {
    let on = cfg.sanity;
    if on & sanity_bits::LENGTH != 0 && length_bad(p) {
        return Some(Reason::Length);
    }
    // Addresses as two words each: 16-byte compares become two loads and two compares.
    let src = words(&p.src);
    if on & sanity_bits::MARTIAN != 0 {
        let martian = if p.v6 == 0 {
            // 0.0.0.0 is a DHCP client asking for an address: not an attack.
            martian_v4([p.src[0], p.src[1], p.src[2], p.src[3]])
                && !(src[0] == 0 && p.proto == IPPROTO_UDP && p.dport == DHCP_SERVER_PORT)
        } else {
            // :: is duplicate-address detection (ICMPv6) on this link.
            martian_v6(p.src) && !(src == [0, 0] && p.proto == IPPROTO_ICMPV6)
        };
        if martian {
            return Some(Reason::Martian);
        }
    }
    // IPv4 addresses are zero-padded, so one comparison serves both families.
    if on & sanity_bits::LAND != 0 && src == words(&p.dst) {
        return Some(Reason::Land);
    }
    if on & (sanity_bits::FRAGMENT_NON_FIRST | sanity_bits::FRAGMENT_TINY) != 0
        && p.fragmented != 0
        && p.v6 == 0
    {
        if p.has_l4 == 0 {
            if on & sanity_bits::FRAGMENT_NON_FIRST != 0 {
                return Some(Reason::Fragment);
            }
        } else if on & sanity_bits::FRAGMENT_TINY != 0
            && p.ip_len.saturating_sub(p.hdr_len) < cfg.fragment_min_bytes
        {
            return Some(Reason::Fragment);
        }
    }
    if on & sanity_bits::TCP_FLAGS != 0
        && p.proto == IPPROTO_TCP
        && p.has_l4 != 0
        && !tcp_flags_valid(p.tcp_flags)
    {
        return Some(Reason::TcpFlags);
    }
    None
}

/// The IP header claims more than the frame holds, or the UDP/TCP header claims more than the
/// IP packet holds (only checked on unfragmented packets: a first fragment is short by design).
#[inline(always)]
fn length_bad(p: &Facts) -> bool {
    let ip_end = p.l3_off as u64 + p.ip_len as u64;
    if ip_end > p.frame_len {
        return true;
    }
    if p.has_l4 == 0 || p.fragmented != 0 {
        return false;
    }
    let l4_end = p.l4_off as u64 + p.claimed_len as u64;
    match p.proto {
        IPPROTO_UDP => p.claimed_len < 8 || l4_end > ip_end,
        IPPROTO_TCP => l4_end > ip_end,
        _ => false,
    }
}
