//! Automatic mitigation's shared definitions: the traffic classes counted per protected
//! destination on arrival (`fg_account`, before any verdict, so an attack stays visible while
//! a rule drops it), the counters' key and value, and the mode switch in `Config::auto`.

use crate::Counter;

/// Traffic classes counted per protected destination.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AutoClass {
    Total = 0,
    Syn = 1,
    Udp = 2,
    Icmp = 3,
    Fragments = 4,
}

pub const AUTO_CLASS_COUNT: usize = 5;
pub const AUTO_GROUPS_MAX: u32 = 4096;
pub const AUTO_CLASSES: [AutoClass; AUTO_CLASS_COUNT] = [
    AutoClass::Total,
    AutoClass::Syn,
    AutoClass::Udp,
    AutoClass::Icmp,
    AutoClass::Fragments,
];

impl AutoClass {
    pub const fn name(self) -> &'static str {
        match self {
            AutoClass::Total => "total",
            AutoClass::Syn => "syn",
            AutoClass::Udp => "udp",
            AutoClass::Icmp => "icmp",
            AutoClass::Fragments => "fragments",
        }
    }

    pub fn from_name(name: &str) -> Option<AutoClass> {
        AUTO_CLASSES.iter().copied().find(|c| c.name() == name)
    }
}

pub mod auto_mode {
    pub const OFF: u32 = 0;
    pub const SHADOW: u32 = 1;
    pub const ENFORCE: u32 = 2;

    pub fn name(m: u32) -> &'static str {
        match m {
            OFF => "off",
            SHADOW => "shadow",
            _ => "enforce",
        }
    }

    pub fn from_name(s: &str) -> Option<u32> {
        match s {
            "off" => Some(OFF),
            "shadow" => Some(SHADOW),
            "enforce" => Some(ENFORCE),
            _ => None,
        }
    }
}

/// Entries of `AUTO_DST` (an LRU per-CPU hash: the least recently seen destination goes).
pub const AUTO_DST_MAX: u32 = 65536;
/// Size of the `AUTO_SAMPLES` ring buffer, bytes.
pub const AUTO_SAMPLES_RING_BYTES: u32 = 1 << 22;

/// The classes a packet counts in: total always; syn (TCP with SYN and no ACK, as
/// `Class::Syn`), udp, icmp (ICMP and ICMPv6), fragments (any fragment).
#[inline(always)]
pub fn auto_classes(proto: u8, tcp_flags: u8, fragmented: bool) -> u32 {
    let mut bits = 1 << AutoClass::Total as u32;
    match proto {
        crate::proto::TCP if tcp_flags & 0x12 == 0x02 => bits |= 1 << AutoClass::Syn as u32,
        crate::proto::UDP => bits |= 1 << AutoClass::Udp as u32,
        crate::proto::ICMP | crate::proto::ICMPV6 => bits |= 1 << AutoClass::Icmp as u32,
        _ => {}
    }
    if fragmented {
        bits |= 1 << AutoClass::Fragments as u32;
    }
    bits
}

/// Key of `AUTO_DST`: a destination address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AutoKey {
    /// 4 or 6.
    pub family: u32,
    /// Network byte order; IPv4 in the first 4 bytes, the rest zero.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<AutoKey>() == 20);

/// Value of `AUTO_DST`: per class, packets and bytes (frame length as it came in).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AutoCounters {
    pub classes: [Counter; AUTO_CLASS_COUNT],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_packets() {
        let bit = |c: AutoClass| 1u32 << c as u32;
        let t = bit(AutoClass::Total);
        assert_eq!(auto_classes(6, 0x02, false), t | bit(AutoClass::Syn));
        assert_eq!(auto_classes(6, 0x12, false), t, "a SYN-ACK is not a SYN");
        assert_eq!(auto_classes(17, 0, false), t | bit(AutoClass::Udp));
        assert_eq!(auto_classes(58, 0, false), t | bit(AutoClass::Icmp));
        assert_eq!(
            auto_classes(17, 0, true),
            t | bit(AutoClass::Udp) | bit(AutoClass::Fragments)
        );
        assert_eq!(auto_classes(47, 0, false), t);
    }
}
