//! Sanity checks that need no map: which TCP flag combinations and which source addresses can
//! never be legitimate. The data plane and the host tests run this same code.

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;
pub const TCP_ECE: u8 = 0x40;
pub const TCP_CWR: u8 = 0x80;
/// The flags by the names rules use (`--tcp-flags syn,!ack`, `rule list`).
pub const TCP_FLAG_NAMES: [(&str, u8); 8] = [
    ("fin", TCP_FIN),
    ("syn", TCP_SYN),
    ("rst", TCP_RST),
    ("psh", TCP_PSH),
    ("ack", TCP_ACK),
    ("urg", TCP_URG),
    ("ece", TCP_ECE),
    ("cwr", TCP_CWR),
];

/// Is this TCP flag byte a combination a real stack sends? Refused: no flags at all (null
/// scan), SYN with FIN or RST, FIN/PSH/URG without ACK, and FIN+SYN+RST+PSH+ACK+URG together
/// (Christmas tree). ECE and CWR (0x40, 0x80) are ECN signalling and ignored.
#[inline(always)]
pub const fn tcp_flags_valid(flags: u8) -> bool {
    let f = flags & 0x3f;
    if f == 0 || f == 0x3f {
        return false;
    }
    if f & TCP_SYN != 0 && f & (TCP_FIN | TCP_RST) != 0 {
        return false;
    }
    if f & TCP_ACK == 0 && f & (TCP_FIN | TCP_PSH | TCP_URG) != 0 {
        return false;
    }
    true
}

/// Is this IPv4 source (network byte order) impossible on the wire? 0.0.0.0/8 ("this network"),
/// 127.0.0.0/8 (loopback), 224.0.0.0/4 (multicast), 240.0.0.0/4 (reserved, which includes the
/// limited broadcast 255.255.255.255).
#[inline(always)]
pub const fn martian_v4(src: [u8; 4]) -> bool {
    src[0] == 0 || src[0] == 127 || src[0] >= 224
}

/// Is this IPv6 source impossible on the wire? `::` (unspecified: only valid during DAD, which
/// never crosses a router — the data plane exempts ICMPv6 for that), `::1` (loopback) and
/// ff00::/8 (multicast).
#[inline(always)]
pub const fn martian_v6(src: [u8; 16]) -> bool {
    if src[0] == 0xff {
        return true;
    }
    // As two words: the data plane does two compares, not fifteen.
    let hi = u64::from_be_bytes([
        src[0], src[1], src[2], src[3], src[4], src[5], src[6], src[7],
    ]);
    let lo = u64::from_be_bytes([
        src[8], src[9], src[10], src[11], src[12], src[13], src[14], src[15],
    ]);
    hi == 0 && lo <= 1
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The rules as a table a network engineer would write them down.
    fn reference_valid(flags: u8) -> bool {
        let has = |f: u8| flags & f != 0;
        let f = flags & 0x3f;
        let null = f == 0;
        let xmas = f == 0x3f;
        let syn_fin = has(TCP_SYN) && has(TCP_FIN);
        let syn_rst = has(TCP_SYN) && has(TCP_RST);
        let needs_ack = (has(TCP_FIN) || has(TCP_PSH) || has(TCP_URG)) && !has(TCP_ACK);
        !(null || xmas || syn_fin || syn_rst || needs_ack)
    }

    #[test]
    fn every_flag_byte_matches_the_reference() {
        for flags in 0..=255u8 {
            assert_eq!(
                tcp_flags_valid(flags),
                reference_valid(flags),
                "flags {flags:#04x}"
            );
        }
    }

    #[test]
    fn common_flags() {
        for (flags, valid, what) in [
            (TCP_SYN, true, "SYN"),
            (TCP_SYN | TCP_ACK, true, "SYN+ACK"),
            (TCP_ACK, true, "ACK"),
            (TCP_PSH | TCP_ACK, true, "PSH+ACK"),
            (TCP_FIN | TCP_ACK, true, "FIN+ACK"),
            (TCP_RST, true, "RST"),
            (TCP_RST | TCP_ACK, true, "RST+ACK"),
            (TCP_SYN | 0xc0, true, "SYN with ECE+CWR (ECN setup)"),
            (0, false, "null"),
            (TCP_SYN | TCP_FIN, false, "SYN+FIN"),
            (TCP_SYN | TCP_RST, false, "SYN+RST"),
            (TCP_FIN, false, "FIN without ACK"),
            (TCP_PSH, false, "PSH without ACK"),
            (TCP_URG, false, "URG without ACK"),
            (0x3f, false, "all set"),
            (0xff, false, "all set with ECN"),
        ] {
            assert_eq!(tcp_flags_valid(flags), valid, "{what}");
        }
    }

    #[test]
    fn martians() {
        assert!(martian_v4([0, 1, 2, 3]));
        assert!(martian_v4([127, 0, 0, 1]));
        assert!(martian_v4([224, 0, 0, 1]));
        assert!(martian_v4([255, 255, 255, 255]));
        assert!(!martian_v4([198, 18, 0, 1]));
        assert!(!martian_v4([10, 0, 0, 1]), "private space is not martian");
        assert!(!martian_v4([223, 255, 255, 255]));
        let mut v6 = [0u8; 16];
        assert!(martian_v6(v6), "::");
        v6[15] = 1;
        assert!(martian_v6(v6), "::1");
        v6[15] = 2;
        assert!(!martian_v6(v6), "::2 is not special here");
        let mut mc = [0u8; 16];
        mc[0] = 0xff;
        mc[1] = 0x02;
        assert!(martian_v6(mc), "ff02::");
        let doc = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(!martian_v6(doc));
    }

    proptest! {
        #[test]
        fn v4_martian_is_a_prefix_test(a in any::<[u8; 4]>()) {
            let octet = a[0];
            prop_assert_eq!(martian_v4(a), octet == 0 || octet == 127 || octet >= 224);
        }
    }
}
