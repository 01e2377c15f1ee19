//! The SYN guard stage through BPF_PROG_TEST_RUN: a SYN to a protected port comes back as
//! its SYN-ACK (XDP_TX) with a valid cookie, checksums and the options the cookie keeps; an
//! ACK with that cookie passes, one without it is dropped; everything else is untouched.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::maps::{Array, Map};
use filter_common::{
    CONFIG_MAGIC, Config, CookieFacts, CookieFlow, Reason, SYNGUARD_WSCALE, SynguardSecret,
    cookie_check, map_names, port_bits, synguard_bits, synguard_stat,
};
use floodgate_tests::{
    Harness, XDP_DROP, XDP_PASS, XDP_TX,
    packet::{self, *},
};

const SERVER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const PORT: u16 = 443;
const CLIENT_PORT: u16 = 40000;
const CLIENT_ISN: u32 = 0x1234_5678;
const KEY: SynguardSecret = SynguardSecret {
    key: [0x0011_2233_4455_6677, 0x8899_aabb_ccdd_eeff],
};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const RST: u8 = 0x04;
const ECE: u8 = 0x40;
const CWR: u8 = 0x80;

/// What Linux puts in a SYN: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
const LINUX_OPTIONS: [u8; 20] = [
    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
];
/// What Windows puts in a SYN: MSS 1400, NOP, window scale 8, NOP, NOP, SACK permitted.
const WINDOWS_OPTIONS: [u8; 12] = [2, 4, 0x05, 0x78, 1, 3, 3, 8, 1, 1, 4, 2];

fn tcp_seg(sport: u16, dport: u16, flags: u8, seq: u32, ack: u32, options: &[u8]) -> Vec<u8> {
    let mut opts = options.to_vec();
    while !opts.len().is_multiple_of(4) {
        opts.push(0);
    }
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&ack.to_be_bytes());
    h.push((((20 + opts.len()) / 4) as u8) << 4);
    h.push(flags);
    h.extend_from_slice(&[0xfa, 0xf0, 0, 0, 0, 0]);
    h.extend_from_slice(&opts);
    h
}

fn v4(vlans: &[(u16, u16)], seg: &[u8]) -> Vec<u8> {
    eth(
        vlans,
        ETH_P_IP,
        &ipv4(CLIENT4, SERVER4, TCP, &[], 0x4000, seg),
    )
}

fn v6(seg: &[u8]) -> Vec<u8> {
    eth(&[], ETH_P_IPV6, &ipv6(CLIENT6, SERVER6, TCP, seg))
}

fn addr16(ip: std::net::IpAddr) -> [u8; 16] {
    let mut a = [0u8; 16];
    match ip {
        std::net::IpAddr::V4(v4) => a[..4].copy_from_slice(&v4.octets()),
        std::net::IpAddr::V6(v6) => a = v6.octets(),
    }
    a
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill; CLOCK_MONOTONIC is bpf_ktime_get_ns's clock.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(r, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Switch the guard on (with `bits` besides ON) for `PORT`, with a known secret.
fn guard(h: &Harness, bits: u32, dry_run: bool) {
    let mut config: Array<_, Config> =
        Array::try_from(Map::Array(h.pinned_map(map_names::CONFIG))).expect("CONFIG");
    let mut cfg = config.get(&0, 0).expect("reading CONFIG");
    cfg.magic = CONFIG_MAGIC;
    cfg.synguard = synguard_bits::ON | bits;
    cfg.dry_run = dry_run as u32;
    config.set(0, cfg, 0).expect("writing CONFIG");
    let mut ports: Array<_, u32> =
        Array::try_from(Map::Array(h.pinned_map(map_names::PORT_FLAGS))).expect("PORT_FLAGS");
    let f = ports.get(&u32::from(PORT), 0).expect("reading PORT_FLAGS");
    ports
        .set(u32::from(PORT), f | port_bits::SYNGUARD, 0)
        .expect("writing PORT_FLAGS");
    let mut secret: Array<_, SynguardSecret> =
        Array::try_from(Map::Array(h.pinned_map(map_names::SYNGUARD_SECRET)))
            .expect("SYNGUARD_SECRET");
    secret.set(0, KEY, 0).expect("writing the secret");
}

fn synguard_stats(h: &Harness) -> Vec<u64> {
    let stats: aya::maps::PerCpuArray<_, u64> =
        aya::maps::PerCpuArray::try_from(Map::PerCpuArray(h.pinned_map(map_names::SYNGUARD_STATS)))
            .expect("SYNGUARD_STATS");
    (0..synguard_stat::COUNT)
        .map(|i| stats.get(&i, 0).expect("reading").iter().sum())
        .collect()
}

/// A parsed SYN-ACK: checks every header field the client relies on, returns its cookie and
/// what the cookie says.
struct SynAck {
    cookie: u32,
    facts: CookieFacts,
    options: Vec<u8>,
    flags: u8,
}

fn check_synack(
    what: &str,
    syn: &[u8],
    out: &[u8],
    l3: usize,
    v6: bool,
    client: std::net::IpAddr,
    server: std::net::IpAddr,
) -> SynAck {
    let t = check_headers(what, syn, out, l3, v6, client, server, 32);
    let cookie = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let flow = CookieFlow {
        client: addr16(client),
        server: addr16(server),
        client_port: CLIENT_PORT,
        server_port: PORT,
        client_isn: CLIENT_ISN,
    };
    let facts = cookie_check(&KEY, &flow, cookie, now_ns())
        .unwrap_or_else(|| panic!("{what}: the sequence number {cookie:#x} is a valid cookie"));
    SynAck {
        cookie,
        facts,
        options: t[20..32].to_vec(),
        flags: t[13],
    }
}

/// Check the SYN-ACK's Ethernet, IP and TCP headers (`tcp_len` bytes of TCP header, checksums,
/// addresses, ports, acknowledgment); its TCP header.
#[expect(
    clippy::too_many_arguments,
    reason = "one fixture's facts, named at each call"
)]
fn check_headers<'a>(
    what: &str,
    syn: &[u8],
    out: &'a [u8],
    l3: usize,
    v6: bool,
    client: std::net::IpAddr,
    server: std::net::IpAddr,
    tcp_len: usize,
) -> &'a [u8] {
    // Ethernet: MACs swapped, VLAN tags and type kept.
    assert_eq!(
        &out[..6],
        &syn[6..12],
        "{what}: destination MAC is the SYN's source"
    );
    assert_eq!(
        &out[6..12],
        &syn[..6],
        "{what}: source MAC is the SYN's destination"
    );
    assert_eq!(
        &out[12..l3],
        &syn[12..l3],
        "{what}: VLAN tags and EtherType kept"
    );
    let (ip_len, tcp) = if v6 { (40, l3 + 40) } else { (20, l3 + 20) };
    assert_eq!(
        out.len(),
        tcp + tcp_len,
        "{what}: frame cut to the SYN-ACK's length"
    );
    let ip = &out[l3..l3 + ip_len];
    let mut pseudo = Vec::new();
    if v6 {
        assert_eq!(ip[0] >> 4, 6, "{what}: IPv6");
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[4], ip[5]])),
            tcp_len,
            "{what}: payload length"
        );
        assert_eq!(ip[6], TCP, "{what}: next header");
        assert_eq!(&ip[8..24], &addr16(server), "{what}: source is the server");
        assert_eq!(
            &ip[24..40],
            &addr16(client),
            "{what}: destination is the client"
        );
        pseudo.extend_from_slice(&ip[8..40]);
        pseudo.extend_from_slice(&(tcp_len as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, TCP]);
    } else {
        assert_eq!(ip[0], 0x45, "{what}: IPv4, no options");
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[2], ip[3]])),
            20 + tcp_len,
            "{what}: total length"
        );
        assert_eq!(ip[9], TCP, "{what}: protocol");
        assert_eq!(packet::checksum(ip), 0, "{what}: IPv4 header checksum");
        assert_eq!(
            &ip[12..16],
            &addr16(server)[..4],
            "{what}: source is the server"
        );
        assert_eq!(
            &ip[16..20],
            &addr16(client)[..4],
            "{what}: destination is the client"
        );
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, TCP, 0, tcp_len as u8]);
    }
    let t = &out[tcp..];
    pseudo.extend_from_slice(t);
    assert_eq!(packet::checksum(&pseudo), 0, "{what}: TCP checksum");
    assert_eq!(
        u16::from_be_bytes([t[0], t[1]]),
        PORT,
        "{what}: source port"
    );
    assert_eq!(
        u16::from_be_bytes([t[2], t[3]]),
        CLIENT_PORT,
        "{what}: destination port"
    );
    assert_eq!(
        u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
        CLIENT_ISN.wrapping_add(1),
        "{what}: acknowledges the client's ISN + 1"
    );
    assert_eq!(
        usize::from(t[12] >> 4) * 4,
        tcp_len,
        "{what}: {tcp_len}-byte TCP header"
    );
    assert_eq!(t[13] & (SYN | ACK | RST), SYN | ACK, "{what}: SYN-ACK");
    t
}

/// A SYN fixture: the frame, its IP header offset, and what its SYN-ACK must say.
struct SynCase {
    what: &'static str,
    frame: Vec<u8>,
    l3: usize,
    v6: bool,
    want: CookieFacts,
    options: [u8; 12],
}

fn syn_case(
    what: &'static str,
    frame: Vec<u8>,
    l3: usize,
    v6: bool,
    want: CookieFacts,
    options: [u8; 12],
) -> SynCase {
    SynCase {
        what,
        frame,
        l3,
        v6,
        want,
        options,
    }
}

#[test]
fn a_syn_to_a_protected_port_is_answered_with_a_cookie() {
    let mut h = Harness::new();
    guard(&h, 0, false);
    let (c4, s4): (std::net::IpAddr, std::net::IpAddr) = (CLIENT4.into(), SERVER4.into());
    let (c6, s6): (std::net::IpAddr, std::net::IpAddr) = (CLIENT6.into(), SERVER6.into());
    let linux = tcp_seg(CLIENT_PORT, PORT, SYN, CLIENT_ISN, 0, &LINUX_OPTIONS);
    let windows = tcp_seg(CLIENT_PORT, PORT, SYN, CLIENT_ISN, 0, &WINDOWS_OPTIONS);
    let bare = tcp_seg(CLIENT_PORT, PORT, SYN, CLIENT_ISN, 0, &[]);
    let ecn = tcp_seg(
        CLIENT_PORT,
        PORT,
        SYN | ECE | CWR,
        CLIENT_ISN,
        0,
        &LINUX_OPTIONS,
    );
    let q = ETH_P_8021Q;
    let ad = ETH_P_8021AD;
    let full = |wscale| CookieFacts {
        mss: 1460,
        wscale: Some(wscale),
        sack: true,
        ecn: false,
    };
    let ws_sack = [2, 4, 0x05, 0xb4, 1, 3, 3, 7, 1, 1, 4, 2];
    let ws_sack6 = [2, 4, 0x05, 0xa0, 1, 3, 3, 7, 1, 1, 4, 2];
    let cases: Vec<SynCase> = vec![
        syn_case(
            "v4, Linux options",
            v4(&[], &linux),
            14,
            false,
            full(7),
            ws_sack,
        ),
        syn_case(
            "v4, Windows options",
            v4(&[], &windows),
            14,
            false,
            CookieFacts {
                mss: 1400,
                wscale: Some(8),
                sack: true,
                ecn: false,
            },
            ws_sack,
        ),
        syn_case(
            "v4, no options (MSS 536, no scaling, no SACK)",
            v4(&[], &bare),
            14,
            false,
            CookieFacts {
                mss: 536,
                wscale: None,
                sack: false,
                ecn: false,
            },
            [2, 4, 0x05, 0xb4, 1, 1, 1, 1, 1, 1, 1, 1],
        ),
        syn_case(
            "v4, ECN requested",
            v4(&[], &ecn),
            14,
            false,
            CookieFacts {
                ecn: true,
                ..full(7)
            },
            ws_sack,
        ),
        syn_case(
            "802.1Q v4",
            v4(&[(q, 10)], &linux),
            18,
            false,
            full(7),
            ws_sack,
        ),
        syn_case(
            "QinQ v4",
            v4(&[(ad, 100), (q, 10)], &linux),
            22,
            false,
            full(7),
            ws_sack,
        ),
        syn_case("v6, Linux options", v6(&linux), 14, true, full(7), ws_sack6),
    ];
    for SynCase {
        what,
        frame,
        l3,
        v6: is_v6,
        want,
        options,
    } in cases
    {
        let (client, server) = if is_v6 { (c6, s6) } else { (c4, s4) };
        let (action, reason, dry, out) = h.run_out(&frame);
        assert_eq!(
            (action, reason, dry),
            (XDP_TX, Reason::SynCookie, false),
            "{what}"
        );
        let sa = check_synack(what, &frame, &out, l3, is_v6, client, server);
        assert_eq!(sa.facts, want, "{what}: what the cookie keeps");
        assert_eq!(sa.options, options, "{what}: SYN-ACK options");
        assert_eq!(
            sa.flags & ECE != 0,
            want.ecn,
            "{what}: ECE answers an ECN request"
        );
    }
}

#[test]
fn acks_pass_with_a_valid_cookie_and_drop_without() {
    let mut h = Harness::new();
    guard(&h, 0, false);
    let syn = v4(
        &[],
        &tcp_seg(CLIENT_PORT, PORT, SYN, CLIENT_ISN, 0, &LINUX_OPTIONS),
    );
    let (_, _, _, out) = h.run_out(&syn);
    let cookie = check_synack("SYN", &syn, &out, 14, false, CLIENT4.into(), SERVER4.into()).cookie;
    let ack = |seq: u32, ack: u32| v4(&[], &tcp_seg(CLIENT_PORT, PORT, ACK, seq, ack, &[]));
    // Other flows (client ports): a flow whose handshake ACK was valid passes from then on.
    let other = |port: u16, seq: u32, ack: u32| v4(&[], &tcp_seg(port, PORT, ACK, seq, ack, &[]));
    let before = synguard_stats(&h);
    let seq = CLIENT_ISN.wrapping_add(1);
    let udp = eth(
        &[],
        ETH_P_IP,
        &ipv4(
            CLIENT4,
            SERVER4,
            UDP,
            &[],
            0,
            &packet::udp(CLIENT_PORT, PORT, b"x"),
        ),
    );
    let rows: Vec<(&str, Vec<u8>, u32, Reason)> = vec![
        (
            "the handshake's ACK (cookie + 1)",
            ack(seq, cookie.wrapping_add(1)),
            XDP_PASS,
            Reason::Pass,
        ),
        (
            "a later segment of that flow (before the kernel has its socket)",
            ack(seq.wrapping_add(100), cookie.wrapping_add(1)),
            XDP_PASS,
            Reason::Pass,
        ),
        (
            "another flow's ACK carrying this cookie",
            other(CLIENT_PORT + 1, seq, cookie.wrapping_add(1)),
            XDP_DROP,
            Reason::BadCookie,
        ),
        (
            "an ACK with a cookie one off",
            other(CLIENT_PORT + 2, seq, cookie.wrapping_add(2)),
            XDP_DROP,
            Reason::BadCookie,
        ),
        (
            "an ACK flood's random ACK",
            other(CLIENT_PORT + 3, 0xdead_beef, 0x0bad_cafe),
            XDP_DROP,
            Reason::BadCookie,
        ),
        (
            "a RST passes the guard by",
            v4(&[], &tcp_seg(CLIENT_PORT, PORT, RST | ACK, seq, 1, &[])),
            XDP_PASS,
            Reason::Pass,
        ),
        (
            "a SYN to an unprotected port",
            v4(
                &[],
                &tcp_seg(CLIENT_PORT, 80, SYN, CLIENT_ISN, 0, &LINUX_OPTIONS),
            ),
            XDP_PASS,
            Reason::Pass,
        ),
        (
            "an ACK to an unprotected port",
            v4(&[], &tcp_seg(CLIENT_PORT, 80, ACK, 5, 5, &[])),
            XDP_PASS,
            Reason::Pass,
        ),
        (
            "UDP to the protected port number",
            udp,
            XDP_PASS,
            Reason::Pass,
        ),
    ];
    for (what, frame, action, reason) in rows {
        assert_eq!(h.run(&frame), (action, reason), "{what}");
    }
    let after = synguard_stats(&h);
    let d = |i: u32| after[i as usize] - before[i as usize];
    assert_eq!(
        d(synguard_stat::COOKIE_VALID),
        1,
        "one valid cookie counted"
    );
    assert_eq!(
        d(synguard_stat::COOKIE_INVALID),
        3,
        "three invalid cookies counted"
    );
    assert_eq!(
        d(synguard_stat::ESTABLISHED),
        1,
        "the later segment passed as its flow's"
    );
}

/// SYNPROXY mode: the SYN-ACK carries the kernel's own cookie (the kernel's check says so: the
/// ACK built from it passes, a tampered one is `bad_cookie`) and, in its timestamp value, the
/// client's window scale, SACK and ECN as netfilter reads them back.
#[test]
fn synproxy_mode_answers_with_the_kernels_cookie() {
    let (c4, s4): (std::net::IpAddr, std::net::IpAddr) = (CLIENT4.into(), SERVER4.into());
    let (c6, s6): (std::net::IpAddr, std::net::IpAddr) = (CLIENT6.into(), SERVER6.into());
    // LINUX_OPTIONS' timestamp value is 1.
    let linux = tcp_seg(CLIENT_PORT, PORT, SYN, CLIENT_ISN, 0, &LINUX_OPTIONS);
    let windows = tcp_seg(CLIENT_PORT, PORT, SYN, CLIENT_ISN, 0, &WINDOWS_OPTIONS);
    let ecn = tcp_seg(
        CLIENT_PORT,
        PORT,
        SYN | ECE | CWR,
        CLIENT_ISN,
        0,
        &LINUX_OPTIONS,
    );
    let no_ws = tcp_seg(
        CLIENT_PORT,
        PORT,
        SYN,
        CLIENT_ISN,
        0,
        &[8, 10, 0, 0, 0, 9, 0, 0, 0, 0],
    );
    let q = ETH_P_8021Q;
    // (what, frame, l3, v6, MSS offered, options after the MSS (None: all NOPs), the
    // timestamp's low 6 bits, ECE)
    type Row = (
        &'static str,
        Vec<u8>,
        usize,
        bool,
        u16,
        Option<(bool, u32, bool)>,
        u32,
        bool,
    );
    let rows: Vec<Row> = vec![
        (
            "v4, Linux options",
            v4(&[], &linux),
            14,
            false,
            1460,
            Some((true, 1, true)),
            7 | 0x10,
            false,
        ),
        (
            "v4, ECN requested",
            v4(&[], &ecn),
            14,
            false,
            1460,
            Some((true, 1, true)),
            7 | 0x30,
            true,
        ),
        (
            "v4, timestamp only",
            v4(&[], &no_ws),
            14,
            false,
            1460,
            Some((false, 9, false)),
            0xf,
            false,
        ),
        (
            "v4, Windows options (no timestamp)",
            v4(&[], &windows),
            14,
            false,
            1460,
            None,
            0,
            false,
        ),
        (
            "802.1Q v4",
            v4(&[(q, 10)], &linux),
            18,
            false,
            1460,
            Some((true, 1, true)),
            7 | 0x10,
            false,
        ),
        (
            "v6, Linux options",
            v6(&linux),
            14,
            true,
            1440,
            Some((true, 1, true)),
            7 | 0x10,
            false,
        ),
    ];
    for (what, frame, l3, is_v6, mss, ts, low, ece) in rows {
        // A harness per row: a valid ACK holds its flow open (SYNGUARD_FLOWS, not pinned).
        let mut h = Harness::new();
        guard(&h, synguard_bits::SYNPROXY, false);
        let (client, server) = if is_v6 { (c6, s6) } else { (c4, s4) };
        let (action, reason, dry, out) = h.run_out(&frame);
        assert_eq!(
            (action, reason, dry),
            (XDP_TX, Reason::SynCookie, false),
            "{what}"
        );
        let t = check_headers(what, &frame, &out, l3, is_v6, client, server, 40);
        assert_eq!(
            &t[14..16],
            &[0, 0],
            "{what}: window 0, as netfilter's SYN-ACK"
        );
        assert_eq!(t[13] & ECE != 0, ece, "{what}: ECE");
        let o = &t[20..40];
        assert_eq!(
            o[..4],
            [2, 4, (mss >> 8) as u8, mss as u8],
            "{what}: MSS option"
        );
        match ts {
            None => assert_eq!(o[4..], [1; 16], "{what}: no timestamp, nothing else"),
            Some((sack, echo, ws)) => {
                let sack_opt: [u8; 2] = if sack { [4, 2] } else { [1, 1] };
                assert_eq!(o[4..6], sack_opt, "{what}: SACK permitted");
                assert_eq!(o[6..8], [8, 10], "{what}: timestamp option");
                let tsval = u32::from_be_bytes([o[8], o[9], o[10], o[11]]);
                assert_eq!(tsval & 0x3f, low, "{what}: the options in the timestamp");
                assert_eq!(
                    u32::from_be_bytes([o[12], o[13], o[14], o[15]]),
                    echo,
                    "{what}: echoes the client's timestamp"
                );
                let ws_opt: [u8; 4] = if ws {
                    [1, 3, 3, SYNGUARD_WSCALE]
                } else {
                    [1; 4]
                };
                assert_eq!(o[16..20], ws_opt, "{what}: window scale");
            }
        }
        // The kernel's check of its own cookie, on the ACK a client would send.
        let cookie = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
        let seq = CLIENT_ISN.wrapping_add(1);
        let ack_of = |port: u16, ack: u32| -> Vec<u8> {
            let seg = tcp_seg(port, PORT, ACK, seq, ack, &[]);
            if is_v6 { v6(&seg) } else { v4(&[], &seg) }
        };
        let before = synguard_stats(&h);
        // Tampered first: once the valid ACK has passed, its flow passes for a while. (Not
        // +1: the kernel's cookie keeps its MSS index as a small addend, so a neighbour can be
        // a valid cookie for another MSS.)
        for bad in [
            cookie ^ 0x0001_0000,
            cookie ^ 0x0100_0000,
            cookie ^ 0x8000_0000,
        ] {
            assert_eq!(
                h.run(&ack_of(CLIENT_PORT, bad)),
                (XDP_DROP, Reason::BadCookie),
                "{what}: a tampered cookie ({:#x} for {cookie:#x})",
                bad.wrapping_sub(1)
            );
        }
        assert_eq!(
            h.run(&ack_of(CLIENT_PORT, cookie.wrapping_add(1))),
            (XDP_PASS, Reason::Pass),
            "{what}: the ACK of the kernel's cookie passes"
        );
        let after = synguard_stats(&h);
        let d = |i: u32| after[i as usize] - before[i as usize];
        assert_eq!(
            (
                d(synguard_stat::COOKIE_VALID),
                d(synguard_stat::COOKIE_INVALID)
            ),
            (1, 3),
            "{what}: cookies counted"
        );
    }
    // The kfunc path's cookie (floodgate's own) is not the kernel's.
    let mut h = Harness::new();
    guard(&h, 0, false);
    let syn = v4(&[], &linux);
    let (_, _, _, out) = h.run_out(&syn);
    let own = check_synack("kfunc SYN", &syn, &out, 14, false, c4, s4).cookie;
    guard(&h, synguard_bits::SYNPROXY, false);
    let ack = v4(
        &[],
        &tcp_seg(
            CLIENT_PORT + 9,
            PORT,
            ACK,
            CLIENT_ISN.wrapping_add(1),
            own.wrapping_add(1),
            &[],
        ),
    );
    assert_eq!(
        h.run(&ack),
        (XDP_DROP, Reason::BadCookie),
        "floodgate's cookie in SYNPROXY mode"
    );
}

#[test]
fn off_dry_run_and_destination_scope() {
    let mut h = Harness::new();
    let syn = v4(
        &[],
        &tcp_seg(CLIENT_PORT, PORT, SYN, CLIENT_ISN, 0, &LINUX_OPTIONS),
    );
    let bad_ack = v4(&[], &tcp_seg(CLIENT_PORT, PORT, ACK, 7, 7, &[]));
    // Off: the port bit alone changes nothing.
    guard(&h, 0, false);
    let mut config: Array<_, Config> =
        Array::try_from(Map::Array(h.pinned_map(map_names::CONFIG))).expect("CONFIG");
    let mut cfg = config.get(&0, 0).expect("CONFIG");
    cfg.synguard = 0;
    config.set(0, cfg, 0).expect("CONFIG");
    assert_eq!(h.run(&syn), (XDP_PASS, Reason::Pass), "off: SYN passes");
    assert_eq!(h.run(&bad_ack), (XDP_PASS, Reason::Pass), "off: ACK passes");

    // Dry-run: counted as what would happen, the packet passes unchanged.
    guard(&h, 0, true);
    let (action, reason, dry, out) = h.run_out(&syn);
    assert_eq!(
        (action, reason, dry),
        (XDP_PASS, Reason::SynCookie, true),
        "dry-run SYN"
    );
    assert_eq!(out, syn, "dry-run leaves the SYN as it was");
    let (action, reason, dry) = h.run_any(&bad_ack);
    assert_eq!(
        (action, reason, dry),
        (XDP_PASS, Reason::BadCookie, true),
        "dry-run bad ACK"
    );

    // --dst: only the listed destinations are guarded.
    guard(&h, synguard_bits::DST, false);
    assert_eq!(
        h.run(&syn),
        (XDP_PASS, Reason::Pass),
        "destination not in --dst"
    );
    let mut dst: aya::maps::LpmTrie<_, [u8; 4], u32> =
        aya::maps::LpmTrie::try_from(Map::LpmTrie(h.pinned_map(map_names::SYNGUARD_DST_V4)))
            .expect("SYNGUARD_DST_V4");
    dst.insert(&aya::maps::lpm_trie::Key::new(24, [198, 18, 0, 0]), 1, 0)
        .expect("adding 198.18.0.0/24");
    assert_eq!(
        h.run(&syn).1,
        Reason::SynCookie,
        "destination inside a --dst prefix"
    );
}

// --- End to end: real sockets in network namespaces, the real CLI ---

mod e2e {
    use std::{
        net::{IpAddr, SocketAddr, TcpListener},
        path::Path,
        sync::atomic::{AtomicBool, AtomicU64, Ordering},
        time::{Duration, Instant},
    };

    use aya::maps::{Map, MapData, PerCpuArray};
    use filter_common::{map_names, synguard_stat};
    use floodgate_lab::{ATTACKER_V4, Lab, VICTIM_IF, VICTIM_V4, traffic};
    use floodgate_tests::{bench, floodgate_ok, stat};

    const PORT: u16 = 443;
    const CLIENTS: usize = 1000;

    fn map(pin: &Path, name: &str) -> MapData {
        MapData::from_pin(pin.join("maps").join(name))
            .unwrap_or_else(|e| panic!("opening pinned map {name}: {e}"))
    }

    fn guard_stats(pin: &Path) -> Vec<u64> {
        let stats: PerCpuArray<_, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(map(pin, map_names::SYNGUARD_STATS)))
                .expect("SYNGUARD_STATS");
        (0..synguard_stat::COUNT)
            .map(|i| stats.get(&i, 0).expect("reading").iter().sum())
            .collect()
    }

    /// What one run of [`clients_through_a_flood`] saw.
    struct FloodRun {
        failed: u64,
        served: usize,
        sent: u64,
        secs: f64,
        /// TcpExt SyncookiesSent, SyncookiesRecv, ListenOverflows: the change in the victim.
        tcp_ext: Vec<u64>,
        /// The victim's Tcp PassiveOpens: connections its listener accepted from a SYN.
        passive_opens: u64,
    }

    const TCP_EXT: [&str; 3] = ["SyncookiesSent", "SyncookiesRecv", "ListenOverflows"];

    /// A listener on the victim, a spoofed SYN flood from the attacker, and [`CLIENTS`]
    /// connect + echo exchanges from the attacker's real address while it runs.
    fn clients_through_a_flood(lab: &Lab) -> FloodRun {
        let bind = SocketAddr::new(VICTIM_V4.into(), PORT);
        let listener: TcpListener = lab
            .victim
            .run(move || traffic::tcp_listen(bind))
            .expect("victim namespace")
            .expect("listen");
        let counters = || {
            lab.victim
                .run(|| {
                    let mut v = bench::net_counters("netstat", "TcpExt:", &TCP_EXT);
                    v.extend(bench::net_counters("snmp", "Tcp:", &["PassiveOpens"]));
                    v
                })
                .expect("victim")
        };
        let before = counters();
        let stop = AtomicBool::new(false);
        let flood_sent = AtomicU64::new(0);
        let failed = AtomicU64::new(0);
        let started = Instant::now();
        let (served, sent) = std::thread::scope(|s| {
            let server = s.spawn(|| traffic::tcp_echo_server(&listener, &stop));
            let flooder = s.spawn(|| bench::syn_flood(lab, PORT, &stop, &flood_sent, None));
            // The clients start into a running flood.
            while flood_sent.load(Ordering::Relaxed) < 20_000 {
                std::thread::sleep(Duration::from_millis(5));
            }
            lab.attacker
                .run(|| {
                    for i in 0..CLIENTS {
                        let msg = format!("exchange {i}\n");
                        let got = traffic::tcp_exchange(
                            IpAddr::V4(ATTACKER_V4),
                            bind,
                            msg.as_bytes(),
                            Duration::from_secs(3),
                        );
                        if got.as_deref() != Some(msg.as_bytes()) {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .expect("attacker namespace");
            stop.store(true, Ordering::Relaxed);
            (
                server.join().expect("server"),
                flooder.join().expect("flooder"),
            )
        });
        let secs = started.elapsed().as_secs_f64();
        let after = counters();
        let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        FloodRun {
            failed: failed.load(Ordering::Relaxed),
            served,
            sent,
            secs,
            tcp_ext: delta[..3].to_vec(),
            passive_opens: delta[3],
        }
    }

    #[test]
    fn real_clients_connect_through_a_spoofed_syn_flood() {
        let lab = Lab::new("sg").unwrap_or_else(|e| panic!("creating the lab: {e:#}"));
        floodgate_ok(&lab, &["attach", VICTIM_IF]);
        bench::attacker_xdp_pass(&lab);
        let out = floodgate_ok(&lab, &["synguard", "on", "--port", "443"]);
        assert!(out.contains("443"), "synguard on names its port: {out}");
        let status = floodgate_ok(&lab, &["synguard", "status"]);
        assert!(
            status.contains("kfunc bpf_sk_assign_tcp_reqsk (TC ingress"),
            "status names the completion path: {status}"
        );
        let run = clients_through_a_flood(&lab);
        let g = guard_stats(&lab.pin_dir);
        let (syn_acks, _) = stat(&lab, "syn_cookie");
        let FloodRun {
            failed,
            served,
            sent,
            secs,
            ..
        } = run;
        println!(
            "{CLIENTS} exchanges under a flood of {sent} spoofed SYNs in {secs:.1} s \
             ({:.0} SYNs/s): {failed} failed; SYN-ACKs sent {syn_acks}; guard counters {g:?}",
            sent as f64 / secs,
        );
        assert_eq!(failed, 0, "every exchange succeeds");
        assert_eq!(served, CLIENTS, "the listener served every client");
        assert!(sent > 20_000, "the flood ran during the test: {sent} SYNs");
        for (n, d) in TCP_EXT.iter().zip(&run.tcp_ext) {
            assert_eq!(*d, 0, "{n}: no SYN reached the listener");
        }
        assert!(
            syn_acks >= sent + CLIENTS as u64,
            "every SYN answered by XDP: {syn_acks} SYN-ACKs for {sent} + {CLIENTS} SYNs"
        );
        // (A handshake's ACK and the data right behind it may both be handed over: the
        // kernel keeps the first connection.)
        assert!(
            g[synguard_stat::HANDSHAKES as usize] >= CLIENTS as u64,
            "each client's handshake completed by the TC program: {g:?}"
        );
        // Client segments that XDP sees before the kernel has the connection and before its
        // handshake ACK was checked (reordered across the veth's queues under the flood's CPU
        // load) are dropped as bad cookies and sent again by TCP: they cost time, not
        // exchanges. Their number is printed above, not asserted.
        assert_eq!(
            g[synguard_stat::HANDSHAKE_FAILED as usize],
            0,
            "none refused"
        );
    }

    /// The same through netfilter SYNPROXY (`--completion synproxy`, chosen explicitly: this
    /// kernel has the kfunc): XDP answers every SYN with the kernel's cookie, SYNPROXY checks
    /// the ACK and opens the connection to the listener itself, so the listener sees one SYN
    /// per real client (PassiveOpens) and none of the flood's. `off` takes the table away and
    /// puts nf_conntrack_tcp_loose back.
    #[test]
    fn real_clients_connect_through_a_spoofed_syn_flood_with_synproxy() {
        let lab = Lab::new("sgp").unwrap_or_else(|e| panic!("creating the lab: {e:#}"));
        floodgate_ok(&lab, &["attach", VICTIM_IF]);
        bench::attacker_xdp_pass(&lab);
        let nft_table = || {
            lab.victim
                .run(|| {
                    std::process::Command::new("nft")
                        .args(["list", "table", "inet", "floodgate_synguard"])
                        .output()
                        .expect("running nft")
                })
                .expect("victim namespace")
        };
        let loose = || {
            lab.victim
                .run(|| {
                    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_tcp_loose")
                        .expect("reading nf_conntrack_tcp_loose")
                        .trim()
                        .to_string()
                })
                .expect("victim namespace")
        };
        let loose_before = loose();
        let out = floodgate_ok(
            &lab,
            &[
                "synguard",
                "on",
                "--port",
                "443",
                "--completion",
                "synproxy",
            ],
        );
        assert!(
            out.contains("netfilter SYNPROXY"),
            "on names the path: {out}"
        );
        // Again: idempotent.
        floodgate_ok(
            &lab,
            &[
                "synguard",
                "on",
                "--port",
                "443",
                "--completion",
                "synproxy",
            ],
        );
        let table = nft_table();
        let listing = String::from_utf8_lossy(&table.stdout);
        assert!(
            table.status.success()
                && listing.contains("synproxy mss 1460 wscale 7 timestamp sack-perm"),
            "the SYNPROXY table is in the victim's namespace: {listing}"
        );
        assert_eq!(loose(), "0", "nf_conntrack_tcp_loose is 0 while it is on");
        let json: serde_json::Value =
            serde_json::from_str(&floodgate_ok(&lab, &["synguard", "status", "--json"]))
                .expect("status --json");
        assert_eq!(json["completion"], "synproxy", "asked: {json}");
        assert_eq!(json["completion_path"], "synproxy", "in use: {json}");

        let run = clients_through_a_flood(&lab);
        let g = guard_stats(&lab.pin_dir);
        let (syn_acks, _) = stat(&lab, "syn_cookie");
        let (bad, _) = stat(&lab, "bad_cookie");
        let FloodRun {
            failed,
            served,
            sent,
            secs,
            passive_opens,
            ..
        } = run;
        println!(
            "SYNPROXY: {CLIENTS} exchanges under a flood of {sent} spoofed SYNs in {secs:.1} s \
             ({:.0} SYNs/s): {failed} failed; SYN-ACKs sent {syn_acks}; bad_cookie {bad}; \
             listener PassiveOpens {passive_opens}; guard counters {g:?}",
            sent as f64 / secs,
        );
        assert_eq!(failed, 0, "every exchange succeeds");
        assert_eq!(served, CLIENTS, "the listener served every client");
        assert!(sent > 20_000, "the flood ran during the test: {sent} SYNs");
        for (n, d) in TCP_EXT.iter().zip(&run.tcp_ext) {
            assert_eq!(*d, 0, "{n}: no SYN of the flood reached the listener");
        }
        assert_eq!(
            passive_opens, CLIENTS as u64,
            "the listener got SYNPROXY's one SYN per client, none of the flood's"
        );
        assert!(
            syn_acks >= sent + CLIENTS as u64,
            "every SYN answered by XDP: {syn_acks} SYN-ACKs for {sent} + {CLIENTS} SYNs"
        );
        assert!(
            g[synguard_stat::COOKIE_VALID as usize] >= CLIENTS as u64,
            "each client's ACK carried a valid kernel cookie: {g:?}"
        );
        assert_eq!(
            g[synguard_stat::HANDSHAKES as usize],
            0,
            "the TC program stood aside: {g:?}"
        );

        floodgate_ok(&lab, &["synguard", "off"]);
        assert!(!nft_table().status.success(), "off removes the table");
        assert_eq!(
            loose(),
            loose_before,
            "off puts nf_conntrack_tcp_loose back"
        );
        // On again, then detach: the table goes with the last interface.
        floodgate_ok(
            &lab,
            &[
                "synguard",
                "on",
                "--port",
                "443",
                "--completion",
                "synproxy",
            ],
        );
        assert!(nft_table().status.success(), "on again");
        floodgate_ok(&lab, &["detach", VICTIM_IF]);
        assert!(!nft_table().status.success(), "detach removes the table");
        assert_eq!(
            loose(),
            loose_before,
            "detach puts nf_conntrack_tcp_loose back"
        );
    }

    /// IPv6 end to end: the TC program hands IPv6 handshakes over too (tcp6 request
    /// sockets), with the IPv4 flood on beside them, over a VLAN-less veth.
    #[test]
    fn real_ipv6_clients_connect_through_the_guard() {
        let lab = Lab::new("sg6").unwrap_or_else(|e| panic!("creating the lab: {e:#}"));
        floodgate_ok(&lab, &["attach", VICTIM_IF]);
        bench::attacker_xdp_pass(&lab);
        floodgate_ok(&lab, &["synguard", "on", "--port", "443"]);
        let bind = SocketAddr::new(floodgate_lab::VICTIM_V6.into(), PORT);
        let listener: TcpListener = lab
            .victim
            .run(move || traffic::tcp_listen(bind))
            .expect("victim namespace")
            .expect("listen");
        let stop = AtomicBool::new(false);
        let flood_sent = AtomicU64::new(0);
        let before = guard_stats(&lab.pin_dir);
        let (ok, served) = std::thread::scope(|s| {
            let server = s.spawn(|| traffic::tcp_echo_server(&listener, &stop));
            let flooder = s.spawn(|| bench::syn_flood(&lab, PORT, &stop, &flood_sent, None));
            while flood_sent.load(Ordering::Relaxed) < 10_000 {
                std::thread::sleep(Duration::from_millis(5));
            }
            let ok = lab
                .attacker
                .run(|| {
                    (0..200)
                        .filter(|i| {
                            let msg = format!("v6 exchange {i}\n");
                            traffic::tcp_exchange(
                                IpAddr::V6(floodgate_lab::ATTACKER_V6),
                                bind,
                                msg.as_bytes(),
                                Duration::from_secs(3),
                            )
                            .as_deref()
                                == Some(msg.as_bytes())
                        })
                        .count()
                })
                .expect("attacker namespace");
            stop.store(true, Ordering::Relaxed);
            flooder.join().expect("flooder");
            (ok, server.join().expect("server"))
        });
        let after = guard_stats(&lab.pin_dir);
        let d = |i: u32| after[i as usize] - before[i as usize];
        assert_eq!(ok, 200, "every IPv6 exchange succeeds");
        assert_eq!(served, 200, "the listener served them");
        assert!(
            d(synguard_stat::HANDSHAKES) >= 200,
            "handed over by the TC program: {after:?}"
        );
        assert_eq!(d(synguard_stat::HANDSHAKE_FAILED), 0, "none refused");
    }
}

#[test]
fn when_over_guards_a_destination_only_above_its_syn_rate() {
    let mut h = Harness::new();
    guard(&h, synguard_bits::WHEN_OVER, false);
    let mut config: Array<_, Config> =
        Array::try_from(Map::Array(h.pinned_map(map_names::CONFIG))).expect("CONFIG");
    let mut cfg = config.get(&0, 0).expect("CONFIG");
    cfg.synguard_over_pps = 3;
    config.set(0, cfg, 0).expect("CONFIG");
    let syn = v4(
        &[],
        &tcp_seg(CLIENT_PORT, PORT, SYN, CLIENT_ISN, 0, &LINUX_OPTIONS),
    );
    let bad_ack = v4(&[], &tcp_seg(CLIENT_PORT + 9, PORT, ACK, 7, 7, &[]));
    let other = Ipv4Addr::new(198, 18, 0, 9);
    let to_other = |flags: u8, seq: u32, ack: u32| {
        eth(
            &[],
            ETH_P_IP,
            &ipv4(
                CLIENT4,
                other,
                TCP,
                &[],
                0,
                &tcp_seg(CLIENT_PORT, PORT, flags, seq, ack, &LINUX_OPTIONS),
            ),
        )
    };
    // (The three SYNs run within a second: one window.)
    for i in 1..=3 {
        assert_eq!(
            h.run(&syn),
            (XDP_PASS, Reason::Pass),
            "SYN {i} of 3 per second: not over the rate, to the listener"
        );
    }
    assert_eq!(
        h.run(&bad_ack),
        (XDP_PASS, Reason::Pass),
        "not guarded yet: a stray ACK is the kernel's to answer"
    );
    assert_eq!(
        h.run(&syn).1,
        Reason::SynCookie,
        "the 4th SYN in a second is over 3/s: answered with a cookie"
    );
    assert_eq!(
        h.run(&syn).1,
        Reason::SynCookie,
        "and the guard stays on for this destination"
    );
    assert_eq!(
        h.run(&bad_ack),
        (XDP_DROP, Reason::BadCookie),
        "guarded: an ACK without a cookie is dropped"
    );
    assert_eq!(
        h.run(&to_other(SYN, CLIENT_ISN, 0)),
        (XDP_PASS, Reason::Pass),
        "another destination is counted apart"
    );
    assert_eq!(
        h.run(&to_other(ACK, 7, 7)),
        (XDP_PASS, Reason::Pass),
        "and its ACKs are not judged"
    );
}
