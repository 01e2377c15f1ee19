//! The reflection preset: UDP from an amplifier's source port (DNS, NTP, memcached, ...)
//! toward a port and prefix that are not exempt.

use aya_ebpf::maps::lpm_trie::Key;
use filter_common::port_bits;

use crate::{facts::Facts, maps, parse::IPPROTO_UDP};

/// UDP from an amplifier's port, not toward an exempt port or prefix.
#[inline(always)]
pub fn check(pkt: &Facts) -> bool {
    if pkt.proto != IPPROTO_UDP || pkt.has_l4 == 0 {
        return false;
    }
    let sport = maps::PORT_FLAGS.get(pkt.sport as u32).copied().unwrap_or(0);
    if sport & port_bits::AMPLIFIER == 0 {
        return false;
    }
    let dport = maps::PORT_FLAGS.get(pkt.dport as u32).copied().unwrap_or(0);
    if dport & port_bits::EXEMPT_DST != 0 {
        return false;
    }
    let d = &pkt.dst;
    let exempt = if pkt.v6 == 0 {
        maps::REFLECT_EXEMPT_V4
            .get(Key::new(32, [d[0], d[1], d[2], d[3]]))
            .is_some()
    } else {
        maps::REFLECT_EXEMPT_V6.get(Key::new(128, *d)).is_some()
    };
    !exempt
}
