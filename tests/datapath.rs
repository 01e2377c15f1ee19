//! Every verdict of the XDP program, as a table of fixtures run through BPF_PROG_TEST_RUN.
//! Each row: what it covers, the frame, the expected action and the reason counted.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use filter_common::{Reason, SOURCE_CLI, SOURCE_RETIRED};
use floodgate::{lists::ListKind, loader, prefix::parse_prefix};
use floodgate_tests::{
    Harness, XDP_DROP, XDP_PASS,
    packet::{self, *},
};

const DST4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLEAN4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const BLOCKED4: Ipv4Addr = Ipv4Addr::new(198, 18, 66, 6); // exact /32
const BLOCKED4_NET: Ipv4Addr = Ipv4Addr::new(198, 19, 5, 5); // in 198.19.0.0/16
const ALLOWED4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 5); // 198.19.1.0/24 allowed inside the block
const EXPIRED4: Ipv4Addr = Ipv4Addr::new(198, 18, 77, 7); // /32 whose TTL has passed
const SHADOWED4: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 5); // expired /24 inside a live /17

const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const CLEAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const BLOCKED6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 1); // exact /128
const BLOCKED6_NET: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xdead, 7, 0, 0, 0, 1); // in /48
const ALLOWED6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xdead, 1, 0, 0, 0, 9); // allowed /64

fn lists(h: &mut Harness) {
    let add = |h: &mut Harness, kind, entries: &[&str], ttl: Option<Duration>| {
        let nets: Vec<_> = entries
            .iter()
            .map(|e| parse_prefix(e).expect("valid prefix"))
            .collect();
        h.state
            .lists
            .add(kind, SOURCE_CLI, &nets, ttl, None, &mut |_, _| {})
            .expect("adding fixture entries");
    };
    add(
        h,
        ListKind::Block,
        &[
            "198.18.66.6",
            "198.19.0.0/16",
            "198.18.128.0/17",
            "2001:db8:bad::1",
            "2001:db8:dead::/48",
            "198.18.40.16/28",
            "198.19.9.9",
            "2001:db8:5000::/36",
            "2001:db8:beef:1:2:3:4:0/112",
        ],
        None,
    );
    add(
        h,
        ListKind::Allow,
        &["198.19.1.0/24", "2001:db8:dead:1::/64"],
        None,
    );
    add(
        h,
        ListKind::Block,
        &["198.18.77.7", "198.18.200.0/24", "2001:db8:dead:5::/64"],
        Some(Duration::from_millis(1)),
    );
    std::thread::sleep(Duration::from_millis(20));
}

fn v4a(s: &str) -> Ipv4Addr {
    s.parse().expect("fixture address")
}

fn v6a(s: &str) -> Ipv6Addr {
    s.parse().expect("fixture address")
}

fn v4(src: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    eth(&[], ETH_P_IP, &ipv4(src, DST4, proto, &[], 0, l4))
}

fn v6(src: Ipv6Addr, next: u8, rest: &[u8]) -> Vec<u8> {
    eth(&[], ETH_P_IPV6, &ipv6(src, DST6, next, rest))
}

/// ICMPv6 of type `kind` from `src` with hop limit `hops`.
fn nd(src: Ipv6Addr, hops: u8, kind: u8) -> Vec<u8> {
    eth(
        &[],
        ETH_P_IPV6,
        &packet::ipv6_hops(src, DST6, ICMPV6, hops, &packet::icmpv6(kind)),
    )
}

fn udp_payload() -> Vec<u8> {
    packet::udp(40000, 53, b"query")
}

struct Case {
    what: &'static str,
    frame: Vec<u8>,
    action: u32,
    reason: Reason,
}

fn case(what: &'static str, frame: Vec<u8>, reason: Reason) -> Case {
    let action = match reason.action() {
        filter_common::Action::Pass => XDP_PASS,
        filter_common::Action::Drop => XDP_DROP,
        filter_common::Action::Tx => floodgate_tests::XDP_TX,
    };
    Case {
        what,
        frame,
        action,
        reason,
    }
}

fn cases() -> Vec<Case> {
    use Reason::*;
    let u = udp_payload();
    let q = ETH_P_8021Q;
    let ad = ETH_P_8021AD;
    let mut cases = floodgate_tests::table! {
        // --- IPv4 basics
        case: "v4 UDP, clean source", v4(CLEAN4, UDP, &u), Pass;
        case: "v4 TCP SYN, clean source", v4(CLEAN4, TCP, &tcp(40000, 443, 0x02, 5)), Pass;
        case: "v4 ICMP echo, clean source", v4(CLEAN4, ICMP, &icmp_echo()), Pass;
        case: "v4 UDP, blocked /32", v4(BLOCKED4, UDP, &u), Blocklist;
        case: "v4 TCP, blocked by /16 prefix", v4(BLOCKED4_NET, TCP, &tcp(1, 80, 0x02, 5)), Blocklist;
        case: "v4 allowlisted /24 inside a blocked /16 passes", v4(ALLOWED4, UDP, &u), Allowlist;
        case: "v4 GRE from a blocked source", v4(BLOCKED4, GRE, &[0, 0, 0x08, 0]), Blocklist;
        case: "v4 ESP from a blocked source", v4(BLOCKED4, ESP, &[0; 16]), Blocklist;
        case: "v4 unknown protocol, clean", v4(CLEAN4, 253, &[1, 2, 3]), Pass;
        // --- TTL in the kernel
        case: "v4 /32 whose TTL passed no longer matches", v4(EXPIRED4, UDP, &u), Pass;
        case: "expired /24 does not hide the live /17 around it", v4(SHADOWED4, UDP, &u), Blocklist;
        case: "expired v6 /64 does not hide the live /48 around it", v6(v6a("2001:db8:dead:5::7"), UDP, &u), Blocklist;
        // --- Where the front sends a source: hosts inside its /24, a prefix covering it, both
        case: "v4 in a listed /28 (a length inside the /24)", v4(v4a("198.18.40.20"), UDP, &u), Blocklist;
        case: "v4 in the /28's /24 but outside it", v4(v4a("198.18.40.99"), UDP, &u), Pass;
        case: "v4 beside a listed host, under a listed /16", v4(v4a("198.19.9.10"), UDP, &u), Blocklist;
        case: "v6 under a /36 (shorter than the /48 slots)", v6(v6a("2001:db8:5000:1::1"), UDP, &u), Blocklist;
        case: "v6 in a listed /112", v6(v6a("2001:db8:beef:1:2:3:4:99"), UDP, &u), Blocklist;
        case: "v6 in the /112's /48 but outside it", v6(v6a("2001:db8:beef:1:2:3:5:1"), UDP, &u), Pass;
        // --- IPv4 options and fragments
        case: "v4 with 8 bytes of options, clean", eth(&[], ETH_P_IP, &ipv4(CLEAN4, DST4, UDP, &[1, 1, 1, 1, 0x94, 4, 0, 0], 0, &u)), Pass;
        case: "v4 with options, blocked", eth(&[], ETH_P_IP, &ipv4(BLOCKED4, DST4, UDP, &[0x94, 4, 0, 0], 0, &u)), Blocklist;
        case: "v4 with 40 bytes of options (IHL 15), clean", eth(&[], ETH_P_IP, &ipv4(CLEAN4, DST4, UDP, &[1; 40], 0, &u)), Pass;
        case: "v4 first fragment (MF), clean, full-sized", eth(&[], ETH_P_IP, &ipv4(CLEAN4, DST4, UDP, &[], 0x2000, &packet::udp(1, 2, &[7; 1000]))), Pass;
        case: "v4 non-first fragment, clean (no L4 header expected)", eth(&[], ETH_P_IP, &ipv4(CLEAN4, DST4, UDP, &[], 0x0010, &[9; 3])), Pass;
        case: "v4 non-first fragment from a blocked source", eth(&[], ETH_P_IP, &ipv4(BLOCKED4, DST4, UDP, &[], 0x0010, &[9; 64])), Blocklist;
        case: "v4 non-first fragment from a blocked prefix", eth(&[], ETH_P_IP, &ipv4(BLOCKED4_NET, DST4, TCP, &[], 0x2020, &[9; 64])), Blocklist;
        // --- VLAN and QinQ
        case: "802.1Q, clean", eth(&[(q, 10)], ETH_P_IP, &ipv4(CLEAN4, DST4, UDP, &[], 0, &u)), Pass;
        case: "802.1Q, blocked", eth(&[(q, 10)], ETH_P_IP, &ipv4(BLOCKED4, DST4, UDP, &[], 0, &u)), Blocklist;
        case: "QinQ 802.1ad+802.1Q, v4 blocked", eth(&[(ad, 100), (q, 10)], ETH_P_IP, &ipv4(BLOCKED4, DST4, UDP, &[], 0, &u)), Blocklist;
        case: "QinQ, v6 clean", eth(&[(ad, 100), (q, 10)], ETH_P_IPV6, &ipv6(CLEAN6, DST6, UDP, &u)), Pass;
        case: "QinQ, v6 blocked", eth(&[(ad, 100), (q, 10)], ETH_P_IPV6, &ipv6(BLOCKED6, DST6, UDP, &u)), Blocklist;
        case: "802.1Q, allowlisted", eth(&[(q, 7)], ETH_P_IP, &ipv4(ALLOWED4, DST4, UDP, &[], 0, &u)), Allowlist;
        case: "three VLAN tags cannot be inspected", eth(&[(ad, 1), (q, 2), (q, 3)], ETH_P_IP, &ipv4(CLEAN4, DST4, UDP, &[], 0, &u)), Malformed;
        case: "VLAN tag cut short", eth(&[], q, &[0, 10]), Malformed;
        case: "VLAN carrying ARP", eth(&[(q, 5)], ETH_P_ARP, &arp()[14..]), Pass;
        // --- IPv6 basics
        case: "v6 UDP, clean", v6(CLEAN6, UDP, &u), Pass;
        case: "v6 ICMPv6 echo, clean", v6(CLEAN6, ICMPV6, &icmpv6_echo()), Pass;
        case: "v6 UDP, blocked /128", v6(BLOCKED6, UDP, &u), Blocklist;
        case: "v6 ICMPv6, blocked /128", v6(BLOCKED6, ICMPV6, &icmpv6_echo()), Blocklist;
        // Neighbour discovery from the link (hop limit 255) passes any list; from afar it does not.
        case: "v6 neighbour solicitation from a blocked /128 on the link passes", nd(BLOCKED6, 255, 135), Pass;
        case: "v6 router advertisement from a blocked /48 on the link passes", nd(BLOCKED6_NET, 255, 134), Pass;
        case: "v6 neighbour advertisement with hop limit 64 (not from the link), blocked", nd(BLOCKED6, 64, 136), Blocklist;
        case: "v6 echo request with hop limit 255 from a blocked /128, blocked", nd(BLOCKED6, 255, 128), Blocklist;
        case: "v6 TCP, blocked by /48", v6(BLOCKED6_NET, TCP, &tcp(1, 443, 0x02, 5)), Blocklist;
        case: "v6 allowlisted /64 inside a blocked /48 passes", v6(ALLOWED6, UDP, &u), Allowlist;
        case: "v6 ESP from a blocked source", v6(BLOCKED6, ESP, &[0; 16]), Blocklist;
        // --- IPv6 extension headers, each kind
        case: "v6 hop-by-hop then UDP", v6(CLEAN6, HOP, &ext(UDP, 0, &u)), Pass;
        case: "v6 routing then UDP", v6(CLEAN6, ROUTING, &ext(UDP, 2, &u)), Pass;
        case: "v6 destination options then TCP", v6(CLEAN6, DEST, &ext(TCP, 1, &tcp(1, 22, 0x10, 5))), Pass;
        case: "v6 first fragment then UDP", v6(CLEAN6, FRAGMENT, &frag6(UDP, 0, true, &u)), Pass;
        case: "v6 AH then UDP", v6(CLEAN6, AH, &ah(UDP, &u)), Pass;
        case: "v6 hop-by-hop, routing, dest opts, fragment, then UDP", v6(CLEAN6, HOP, &ext(ROUTING, 0, &ext(DEST, 0, &ext(FRAGMENT, 0, &frag6(UDP, 0, false, &u))))), Pass;
        case: "v6 non-first fragment, clean", v6(CLEAN6, FRAGMENT, &frag6(UDP, 100, false, &[7; 3])), Pass;
        case: "v6 non-first fragment from a blocked source", v6(BLOCKED6, FRAGMENT, &frag6(UDP, 100, true, &[7; 64])), Blocklist;
        case: "v6 blocked source behind extension headers", v6(BLOCKED6_NET, HOP, &ext(DEST, 0, &ext(UDP, 0, &u))), Blocklist;
        // --- Non-IP
        case: "ARP passes untouched", arp(), Pass;
        case: "LLDP passes untouched", eth(&[], 0x88cc, &[2, 7, 4, 0, 0, 0, 0, 0, 1]), Pass;
        // --- Malformed IPv4
        case: "v4 header cut short", eth(&[], ETH_P_IP, &ipv4(CLEAN4, DST4, UDP, &[], 0, &u)[..12]), Malformed;
        case: "v4 IHL < 5", { let mut p = ipv4(CLEAN4, DST4, UDP, &[], 0, &u); p[0] = 0x44; eth(&[], ETH_P_IP, &p) }, Malformed;
        case: "v4 version field is not 4", { let mut p = ipv4(CLEAN4, DST4, UDP, &[], 0, &u); p[0] = 0x55; eth(&[], ETH_P_IP, &p) }, Malformed;
        case: "v4 total length shorter than the header", { let mut p = ipv4(CLEAN4, DST4, UDP, &[], 0, &u); p[2] = 0; p[3] = 12; eth(&[], ETH_P_IP, &p) }, Malformed;
        case: "v4 options run past the frame", { let p = ipv4(CLEAN4, DST4, UDP, &[1; 40], 0, &[]); eth(&[], ETH_P_IP, &p[..30]) }, Malformed;
        case: "v4 UDP header cut short", eth(&[], ETH_P_IP, &ipv4(CLEAN4, DST4, UDP, &[], 0, &[0, 53, 0])), Malformed;
        case: "v4 TCP header cut short", eth(&[], ETH_P_IP, &ipv4(CLEAN4, DST4, TCP, &[], 0, &tcp(1, 2, 2, 5)[..12])), Malformed;
        case: "v4 TCP data offset < 5", v4(CLEAN4, TCP, &{ let mut t = tcp(1, 2, 2, 5); t[12] = 0x30; t }), Malformed;
        case: "v4 ICMP header cut short", v4(CLEAN4, ICMP, &[8, 0, 0]), Malformed;
        case: "blocklist is checked before L4 sanity", v4(BLOCKED4, UDP, &[0, 53]), Blocklist;
        // --- Malformed IPv6
        case: "v6 header cut short", eth(&[], ETH_P_IPV6, &ipv6(CLEAN6, DST6, UDP, &u)[..30]), Malformed;
        case: "v6 version field is not 6", { let mut p = ipv6(CLEAN6, DST6, UDP, &u); p[0] = 0x40; eth(&[], ETH_P_IPV6, &p) }, Malformed;
        case: "v6 extension header cut short", v6(CLEAN6, HOP, &[UDP]), Malformed;
        case: "v6 extension length runs past the frame (L4 missing)", v6(CLEAN6, ROUTING, &ext(UDP, 0, &[])[..8]), Malformed;
        case: "v6 UDP header cut short", v6(CLEAN6, UDP, &[0, 53]), Malformed;
        case: "v6 ICMPv6 header cut short", v6(CLEAN6, ICMPV6, &[128, 0]), Malformed;
    };
    // A chain longer than the walk allows.
    let mut chain = u.clone();
    for i in 0..7 {
        chain = ext(if i == 0 { UDP } else { DEST }, 0, &chain);
    }
    cases.push(case(
        "v6 chain of 7 extension headers",
        v6(CLEAN6, DEST, &chain),
        Malformed,
    ));
    cases
}

#[test]
fn every_verdict_through_test_run() {
    let mut h = Harness::new();
    lists(&mut h);
    let mut failures = Vec::new();
    for c in cases() {
        let (action, reason) = h.run(&c.frame);
        if (action, reason) != (c.action, c.reason) {
            failures.push(format!(
                "{}: got action {action} reason {}, want action {} reason {}",
                c.what,
                reason.name(),
                c.action,
                c.reason.name()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn hits_are_counted_per_entry() {
    let mut h = Harness::new();
    lists(&mut h);
    for _ in 0..3 {
        h.run(&v4(BLOCKED4, UDP, &udp_payload()));
    }
    h.run(&v4(BLOCKED4_NET, UDP, &udp_payload()));
    h.run(&v4(ALLOWED4, UDP, &udp_payload()));
    let hits = |kind, cidr: &str| {
        h.state
            .lists
            .entries(kind)
            .expect("listing")
            .into_iter()
            .find(|e| e.net.to_string() == cidr)
            .unwrap_or_else(|| panic!("{cidr} must be listed"))
            .hits
    };
    assert_eq!(
        hits(ListKind::Block, "198.18.66.6/32"),
        3,
        "exact entry hit three times"
    );
    assert_eq!(
        hits(ListKind::Block, "198.19.0.0/16"),
        1,
        "prefix entry hit once"
    );
    assert_eq!(
        hits(ListKind::Allow, "198.19.1.0/24"),
        1,
        "allow entry hit once"
    );
    assert_eq!(
        hits(ListKind::Block, "2001:db8:bad::1/128"),
        0,
        "untouched entry has no hits"
    );
}

#[test]
fn expired_entries_are_hidden_then_swept() {
    let mut h = Harness::new();
    lists(&mut h);
    let listed: Vec<String> = h
        .state
        .lists
        .entries(ListKind::Block)
        .expect("list")
        .iter()
        .map(|e| e.net.to_string())
        .collect();
    assert!(
        !listed.contains(&"198.18.77.7/32".to_string()),
        "expired entries are not listed: {listed:?}"
    );
    let swept = h.state.lists.sweep_expired(ListKind::Block).expect("sweep");
    assert_eq!(swept, 3, "the three expired entries are swept");
    assert_eq!(
        h.state.lists.sweep_expired(ListKind::Block).expect("sweep"),
        0,
        "sweeping twice removes nothing more"
    );
}

#[test]
fn a_full_list_refuses_the_batch_and_keeps_what_it_had() {
    let mut h = Harness::new();
    let before = h.state.lists.counts(ListKind::Allow);
    // More /32s than the allowlist's exact map holds: the batch must fail and be rolled back.
    let nets: Vec<_> = (0..=filter_common::ALLOW_EXACT_MAX)
        .map(|i| ipnet::IpNet::from(std::net::IpAddr::V4(Ipv4Addr::from(0xC612_0000u32 + i))))
        .collect();
    let err = h
        .state
        .lists
        .add(
            ListKind::Allow,
            SOURCE_CLI,
            &nets,
            None,
            None,
            &mut |_, _| {},
        )
        .expect_err("must not fit");
    assert!(
        err.to_string().contains("is full"),
        "error names the cause: {err}"
    );
    assert_eq!(
        h.state.lists.counts(ListKind::Allow),
        before,
        "nothing of the batch is left"
    );
    // `apply` asks first: the same batch is refused before anything changes, and one less fits.
    let err = h
        .state
        .lists
        .check_fits(ListKind::Allow, &nets)
        .expect_err("must not fit");
    assert!(err.to_string().contains("IPv4 host"), "{err}");
    h.state
        .lists
        .check_fits(ListKind::Allow, &nets[1..])
        .expect("exactly the capacity fits");
}

#[test]
fn blocklist_drops_are_counted_per_source() {
    let mut h = Harness::new();
    let id = h
        .state
        .lists
        .sources
        .id_or_register("threat-intel")
        .expect("register a source");
    let nets = [parse_prefix("198.18.90.0/24").expect("prefix")];
    h.state
        .lists
        .add(ListKind::Block, id, &nets, None, None, &mut |_, _| {})
        .expect("add");
    let host = [parse_prefix("198.18.91.1").expect("host")];
    h.state
        .lists
        .add(
            ListKind::Block,
            SOURCE_CLI,
            &host,
            None,
            None,
            &mut |_, _| {},
        )
        .expect("add");
    let by_source = v4(Ipv4Addr::new(198, 18, 90, 9), UDP, &udp_payload());
    let by_cli = v4(Ipv4Addr::new(198, 18, 91, 1), UDP, &udp_payload());
    for _ in 0..3 {
        assert_eq!(h.run(&by_source), (XDP_DROP, Reason::Blocklist));
    }
    assert_eq!(h.run(&by_cli), (XDP_DROP, Reason::Blocklist));
    let drops = h.state.lists.sources.drops(id).expect("drops");
    assert_eq!(drops.packets, 3, "three drops by the source's prefix");
    assert_eq!(drops.bytes, 3 * by_source.len() as u64, "their bytes");
    let cli = h.state.lists.sources.drops(SOURCE_CLI).expect("drops");
    assert_eq!(cli.packets, 1, "one drop by the CLI's host entry");
    // The registry is shared: the name maps back to the same id, and the entry shows it.
    assert_eq!(
        h.state.lists.sources.id("threat-intel").expect("id"),
        Some(id)
    );
    let entries = h.state.lists.entries(ListKind::Block).expect("entries");
    let e = entries.iter().find(|e| e.net == nets[0]).expect("listed");
    assert_eq!(e.source, id);
    let names = h.state.lists.sources.names().expect("names");
    assert_eq!(names.get(e.source), "threat-intel");

    // Its entries gone, the source is freed: its name is forgotten, its drops are kept under
    // `retired`, and its id serves the next new source from zero.
    h.state
        .lists
        .remove_source(ListKind::Block, id)
        .expect("flush the source");
    assert_eq!(h.state.lists.sources.id("threat-intel").expect("id"), None);
    let retired = h.state.lists.sources.drops(SOURCE_RETIRED).expect("drops");
    assert_eq!(retired.packets, 3, "the freed source's drops, kept");
    let next = h.state.lists.register_source("next-id").expect("register");
    assert_eq!(next, id, "the id is reused");
    assert_eq!(h.state.lists.sources.drops(next).expect("drops").packets, 0);
}

/// The front bitmap the data plane reads first: every entry shows there, removals leave stale
/// bits that a rebuild clears (after REBUILD_AFTER removals), an IPv6 prefix shorter than /48
/// is probed for every IPv6 source, and a first load goes in by batch.
#[test]
fn the_front_shows_every_entry_and_rebuilds_after_removals() {
    let mut h = Harness::new();
    let drop_from = |h: &mut Harness, src: Ipv4Addr| h.run(&v4(src, UDP, &udp_payload()));
    assert_eq!(
        h.state.lists.front.marked(ListKind::Block),
        [0, 0, 0],
        "empty"
    );
    assert_eq!(drop_from(&mut h, BLOCKED4), (XDP_PASS, Reason::Pass));

    // 5000 hosts in 5000 different /24s (10.0.0.0/8), in one first load: a batch.
    let hosts: Vec<_> = (0..5000u32)
        .map(|i| ipnet::IpNet::from(std::net::IpAddr::V4(Ipv4Addr::from(0x0a00_0001 + (i << 8)))))
        .collect();
    let added = h
        .state
        .lists
        .add(
            ListKind::Block,
            SOURCE_CLI,
            &hosts,
            None,
            None,
            &mut |_, _| {},
        )
        .expect("first load");
    assert_eq!(added.added, 5000);
    assert_eq!(h.state.lists.front.marked(ListKind::Block), [5000, 0, 0]);
    for src in [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 19, 135, 1)] {
        assert_eq!(
            drop_from(&mut h, src),
            (XDP_DROP, Reason::Blocklist),
            "{src}"
        );
    }
    // Same /24 as a listed host, not listed itself: the front says "maybe", the maps say no.
    assert_eq!(
        drop_from(&mut h, Ipv4Addr::new(10, 0, 0, 2)),
        (XDP_PASS, Reason::Pass)
    );

    // Adding them again updates (a lookup each, hit counts kept), adds nothing.
    let again = h
        .state
        .lists
        .add(
            ListKind::Block,
            SOURCE_CLI,
            &hosts,
            None,
            None,
            &mut |_, _| {},
        )
        .expect("reload");
    assert_eq!((again.added, again.updated), (0, 5000));
    let hits = |h: &Harness| {
        h.state
            .lists
            .entries(ListKind::Block)
            .expect("entries")
            .iter()
            .find(|e| e.net == hosts[0])
            .map(|e| e.hits)
    };
    assert_eq!(hits(&h), Some(1), "the hit survives an update");

    // Removing 4000 leaves stale bits (still correct: those sources pass)...
    h.state
        .lists
        .del(ListKind::Block, &hosts[..4000])
        .expect("removing 4000");
    assert_eq!(
        h.state.lists.front.marked(ListKind::Block),
        [5000, 0, 0],
        "stale"
    );
    assert_eq!(
        drop_from(&mut h, Ipv4Addr::new(10, 0, 0, 1)),
        (XDP_PASS, Reason::Pass)
    );
    // ... and the 4096th removal rebuilds: exactly the 999 left.
    h.state
        .lists
        .del(ListKind::Block, &hosts[4000..4001])
        .expect("removing one more");
    assert_eq!(
        h.state.lists.front.marked(ListKind::Block),
        [5000, 0, 0],
        "4001 removals: not yet"
    );
    h.state
        .lists
        .del(ListKind::Block, &hosts[4001..4100])
        .expect("removing 99 more");
    assert_eq!(
        h.state.lists.front.marked(ListKind::Block),
        [900, 0, 0],
        "rebuilt"
    );
    assert_eq!(
        drop_from(&mut h, Ipv4Addr::new(10, 19, 135, 1)),
        (XDP_DROP, Reason::Blocklist)
    );

    // A /8 marks its 256 /16s in the WIDE bitmap; flush clears everything at once.
    let slash8 = parse_prefix("11.0.0.0/8").expect("prefix");
    h.state
        .lists
        .add(
            ListKind::Block,
            SOURCE_CLI,
            &[slash8],
            None,
            None,
            &mut |_, _| {},
        )
        .expect("a /8");
    assert_eq!(h.state.lists.front.marked(ListKind::Block), [900, 256, 0]);
    assert_eq!(
        drop_from(&mut h, Ipv4Addr::new(11, 200, 3, 4)),
        (XDP_DROP, Reason::Blocklist)
    );
    h.state.lists.flush(ListKind::Block).expect("flush");
    assert_eq!(
        h.state.lists.front.marked(ListKind::Block),
        [0, 0, 0],
        "flushed"
    );
    assert_eq!(
        drop_from(&mut h, Ipv4Addr::new(11, 200, 3, 4)),
        (XDP_PASS, Reason::Pass)
    );

    // IPv6: a /32 spans 65536 /48 slots, so it sets only its length's bit, which every IPv6
    // source reads.
    let v6_32 = parse_prefix("2001:db8::/32").expect("prefix");
    h.state
        .lists
        .add(
            ListKind::Block,
            SOURCE_CLI,
            &[v6_32],
            None,
            None,
            &mut |_, _| {},
        )
        .expect("a v6 /32");
    assert_eq!(h.state.lists.front.marked(ListKind::Block), [0, 0, 0]);
    assert_eq!(
        h.state.lists.front.lengths(ListKind::Block),
        [vec![], vec![32]]
    );
    assert_eq!(
        h.run(&v6(CLEAN6, UDP, &udp(1, 2, &[0; 8]))),
        (XDP_DROP, Reason::Blocklist)
    );
}

/// Each stage of the pipeline is verified as its own program: none may use more than 40% of
/// the verifier's 1M processed instructions, so the next stage never has to fight for budget.
/// (Not a speed target: the count is what the kernel reports for this build.)
#[test]
fn every_stage_fits_in_its_verifier_budget() {
    let mut h = Harness::new();
    let counts = loader::stage_instructions(&mut h.state.ebpf).expect("stages");
    assert_eq!(counts.len(), 1 + filter_common::STAGES.len(), "{counts:?}");
    for (name, count) in counts {
        let n = count.unwrap_or_else(|| panic!("{name}: the kernel reports no verified count"));
        println!("{name}: {n} verified instructions");
        assert!(
            n <= 400_000,
            "{name}: {n} verified instructions, over 40% of 1M"
        );
    }
}

/// The entry counts kept as entries are written (status, metrics and the API read them instead
/// of walking the maps) agree with a walk of the maps after every kind of change.
#[test]
fn kept_counts_match_a_walk_of_the_maps() {
    let mut h = Harness::new();
    let check = |h: &Harness, what: &str| {
        for kind in [ListKind::Allow, ListKind::Block] {
            assert_eq!(
                h.state.lists.map_counts(kind),
                h.state.lists.list(kind).walk_counts(),
                "{what}: {} counts",
                kind.name()
            );
        }
    };
    lists(&mut h);
    check(&h, "fixtures added");
    let cli = |h: &Harness| {
        h.state
            .lists
            .source_counts(ListKind::Block)
            .get(&SOURCE_CLI)
            .copied()
            .unwrap_or_default()
    };
    let before = cli(&h);
    // Another source adds an entry the CLI had: it moves to that source.
    let feed = h.state.lists.register_source("feed").expect("source");
    let host = parse_prefix("198.18.66.6").expect("prefix");
    h.state
        .lists
        .add(ListKind::Block, feed, &[host], None, None, &mut |_, _| {})
        .expect("re-adding");
    check(&h, "an entry changed source");
    assert_eq!(cli(&h), [before[0] - 1, before[1]], "the CLI's count drops");
    assert_eq!(
        h.state.lists.source_counts(ListKind::Block).get(&feed),
        Some(&[1, 0]),
        "the feed's count rises"
    );
    h.state
        .lists
        .del(ListKind::Block, &[host])
        .expect("removing");
    check(&h, "an entry removed");
    h.state.lists.sweep_expired(ListKind::Block).expect("sweep");
    check(&h, "expired entries swept");
    h.state.lists.flush(ListKind::Block).expect("flush");
    check(&h, "flushed");
    assert_eq!(h.state.lists.map_counts(ListKind::Block), [0; 4]);
}

/// A replace big enough to read the maps by batch: unchanged entries are not rewritten (their
/// hits stay), changed ones are, new ones come, the source's others go with their comments,
/// other sources' entries stay, and the kept counts follow.
#[test]
fn a_big_replace_keeps_what_stays_and_removes_the_rest() {
    use floodgate::entry::Item;
    let mut h = Harness::new();
    let feed = h.state.lists.register_source("feed").expect("source");
    let net = |i: u32| ipnet::IpNet::from(std::net::IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
    let item = |i: u32, ttl: Option<Duration>, comment: Option<&str>| Item {
        net: net(i),
        ttl,
        comment: comment.map(str::to_string),
    };
    // 0..2000 from the feed (0 and 1 commented), and one CLI entry.
    let first: Vec<Item> = (0..2000)
        .map(|i| item(i, None, (i < 2).then_some("old")))
        .collect();
    h.state
        .lists
        .upsert(ListKind::Block, feed, &first, &mut |_, _| {})
        .expect("first load");
    let cli = parse_prefix("198.18.66.6").expect("prefix");
    h.state
        .lists
        .add(
            ListKind::Block,
            SOURCE_CLI,
            &[cli],
            None,
            None,
            &mut |_, _| {},
        )
        .expect("a CLI entry");
    // A hit on entry 1500 (it stays) and on entry 1 (it goes).
    for src in [Ipv4Addr::new(10, 0, 5, 220), Ipv4Addr::new(10, 0, 0, 1)] {
        assert_eq!(
            h.run(&v4(src, UDP, &udp_payload())),
            (XDP_DROP, Reason::Blocklist),
            "{src}"
        );
    }
    // Replace by 100..2100: 1900 stay (1999 gets a TTL: a change), 100 come, 100 go.
    let second: Vec<Item> = (100..2100)
        .map(|i| item(i, (i == 1999).then_some(Duration::from_secs(600)), None))
        .collect();
    let (added, removed) = h
        .state
        .lists
        .replace(ListKind::Block, feed, &second, &mut |_, _| {})
        .expect("replace");
    assert_eq!((added.added, added.updated, removed), (100, 1900, 100));
    let entries = h.state.lists.entries(ListKind::Block).expect("entries");
    let get = |i: u32| entries.iter().find(|e| e.net == net(i));
    assert_eq!(
        get(1500).map(|e| e.hits),
        Some(1),
        "an unchanged entry keeps its hit"
    );
    assert!(
        get(1999).and_then(|e| e.expires_in).is_some(),
        "a changed entry is rewritten"
    );
    assert!(get(2099).is_some() && get(0).is_none() && get(99).is_none());
    assert!(
        entries.iter().any(|e| e.net == cli),
        "other sources' entries stay"
    );
    assert_eq!(
        h.state.lists.comments.entry(ListKind::Block, &net(1)),
        None,
        "a removed entry's comment goes with it"
    );
    assert_eq!(
        h.state.lists.source_counts(ListKind::Block).get(&feed),
        Some(&[2000, 0])
    );
    assert_eq!(
        h.state.lists.map_counts(ListKind::Block),
        h.state.lists.list(ListKind::Block).walk_counts()
    );
    assert_eq!(
        h.run(&v4(Ipv4Addr::new(10, 0, 0, 1), UDP, &udp_payload())),
        (XDP_PASS, Reason::Pass),
        "a removed entry no longer drops"
    );
}
