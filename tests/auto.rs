//! Automatic mitigation's data plane through BPF_PROG_TEST_RUN: packets to a host group's
//! destinations are counted per class on arrival (whatever the verdict), others are not, and
//! 1 in N goes to the arrival-sample ring; rules match fragments.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{Map, RingBuf};
use filter_common::Reason;
use filter_common::{
    AUTO_CLASS_COUNT, AutoClass, Counter, SOURCE_CONFIG, Sample, auto_mode, map_names, sample_flags,
};
use floodgate::{
    auto::kernel::AutoMaps,
    lists::ListKind,
    loader::PinDir,
    prefix::parse_prefix,
    settings::{RuleText, Spelling},
};
use floodgate_tests::{
    Harness, XDP_DROP, XDP_PASS,
    packet::{self, *},
};

const GUARDED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const GUARDED6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 7);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 7);
const BLOCKED: Ipv4Addr = Ipv4Addr::new(198, 18, 66, 6);

fn v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
    eth(&[], ETH_P_IP, &ipv4(src, dst, proto, &[], frag, l4))
}

fn udp4(dst: Ipv4Addr) -> Vec<u8> {
    v4(CLIENT, dst, UDP, 0, &packet::udp(123, 40000, &[0x5a; 100]))
}

/// The maps with mode `mode`, sampling 1 in `sample`, the group 198.18.0.0/24 and
/// 2001:db8::/64 (index 3).
fn maps(h: &Harness, mode: u32, sample: u32) -> AutoMaps {
    let mut m = AutoMaps::open(&PinDir::new(h.pin_dir())).expect("auto maps");
    m.set_groups(&[
        (parse_prefix("198.18.0.0/24").unwrap(), 3),
        (parse_prefix("2001:db8::/64").unwrap(), 3),
    ])
    .expect("groups");
    m.set_mode(mode).expect("mode");
    m.set_sample(sample).expect("sample");
    m
}

fn counters(m: &AutoMaps, dst: IpAddr) -> [Counter; AUTO_CLASS_COUNT] {
    m.counters()
        .expect("counters")
        .into_iter()
        .find(|(a, _)| *a == dst)
        .map(|(_, c)| c)
        .unwrap_or_default()
}

fn packets(m: &AutoMaps, dst: IpAddr) -> [u64; AUTO_CLASS_COUNT] {
    counters(m, dst).map(|c| c.packets)
}

#[test]
fn packets_to_a_group_are_counted_per_class_on_arrival() {
    let mut h = Harness::new();
    let m = maps(&h, auto_mode::SHADOW, 0);
    let g = IpAddr::V4(GUARDED);
    let syn = v4(CLIENT, GUARDED, TCP, 0, &packet::tcp(40000, 80, 0x02, 5));
    let cases: [(&str, Vec<u8>, &[AutoClass]); 6] = [
        ("udp", udp4(GUARDED), &[AutoClass::Total, AutoClass::Udp]),
        ("tcp syn", syn.clone(), &[AutoClass::Total, AutoClass::Syn]),
        (
            "tcp syn-ack",
            v4(CLIENT, GUARDED, TCP, 0, &packet::tcp(40000, 80, 0x12, 5)),
            &[AutoClass::Total],
        ),
        (
            "icmp",
            v4(CLIENT, GUARDED, ICMP, 0, &packet::icmp_echo()),
            &[AutoClass::Total, AutoClass::Icmp],
        ),
        (
            "first fragment",
            v4(CLIENT, GUARDED, UDP, 0x2000, &packet::udp(1, 2, &[0; 64])),
            &[AutoClass::Total, AutoClass::Udp, AutoClass::Fragments],
        ),
        (
            "later fragment",
            v4(CLIENT, GUARDED, UDP, 0x0010, &[0; 64]),
            &[AutoClass::Total, AutoClass::Udp, AutoClass::Fragments],
        ),
    ];
    for (what, frame, classes) in cases {
        let before = counters(&m, g);
        h.run(&frame);
        let after = counters(&m, g);
        for i in 0..AUTO_CLASS_COUNT {
            let want = u64::from(classes.iter().any(|c| *c as usize == i));
            assert_eq!(
                after[i].packets - before[i].packets,
                want,
                "{what}: class {i}"
            );
            assert_eq!(
                after[i].bytes - before[i].bytes,
                want * frame.len() as u64,
                "{what}: class {i} bytes"
            );
        }
    }
    // IPv6 and ICMPv6.
    let v6 = eth(
        &[],
        ETH_P_IPV6,
        &ipv6(CLIENT6, GUARDED6, UDP, &packet::udp(53, 40000, &[1; 30])),
    );
    h.run(&v6);
    let icmp6 = eth(
        &[],
        ETH_P_IPV6,
        &ipv6(CLIENT6, GUARDED6, ICMPV6, &packet::icmpv6_echo()),
    );
    h.run(&icmp6);
    assert_eq!(packets(&m, IpAddr::V6(GUARDED6)), [2, 0, 1, 1, 0]);
    // 802.1Q: read through the tag.
    let tagged = eth(
        &[(ETH_P_8021Q, 7)],
        ETH_P_IP,
        &ipv4(CLIENT, GUARDED, TCP, &[], 0, &packet::tcp(1, 80, 0x02, 5)),
    );
    let before = packets(&m, g);
    h.run(&tagged);
    assert_eq!(
        packets(&m, g)[AutoClass::Syn as usize],
        before[1] + 1,
        "tagged SYN"
    );
    // Outside every group: not counted.
    h.run(&udp4(OTHER));
    assert_eq!(packets(&m, IpAddr::V4(OTHER)), [0; AUTO_CLASS_COUNT]);
}

#[test]
fn counting_happens_whatever_the_verdict_and_only_when_on() {
    let mut h = Harness::new();
    h.state
        .lists
        .add(
            ListKind::Block,
            SOURCE_CONFIG,
            &[parse_prefix("198.18.66.6").unwrap()],
            None,
            None,
            &mut |_, _| {},
        )
        .expect("blocking");
    let mut m = maps(&h, auto_mode::OFF, 0);
    let g = IpAddr::V4(GUARDED);
    let blocked = v4(BLOCKED, GUARDED, UDP, 0, &packet::udp(1, 2, &[0; 20]));
    assert_eq!(h.run(&blocked), (XDP_DROP, Reason::Blocklist));
    assert_eq!(h.run(&udp4(GUARDED)), (XDP_PASS, Reason::Pass));
    assert_eq!(
        packets(&m, g),
        [0; AUTO_CLASS_COUNT],
        "off: nothing counted"
    );
    m.set_mode(auto_mode::ENFORCE).expect("on");
    assert_eq!(
        h.run(&blocked),
        (XDP_DROP, Reason::Blocklist),
        "verdict unchanged"
    );
    assert_eq!(h.run(&udp4(GUARDED)), (XDP_PASS, Reason::Pass));
    assert_eq!(packets(&m, g)[0], 2, "a dropped packet is counted too");
}

fn drain(ring: &mut RingBuf<aya::maps::MapData>) -> Vec<Sample> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        // SAFETY: a Sample written by the data plane (repr(C), plain integers).
        out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
    }
    out
}

#[test]
fn arrival_samples_go_to_their_own_ring() {
    let mut h = Harness::new();
    let mut m = maps(&h, auto_mode::SHADOW, 1);
    let mut ring =
        RingBuf::try_from(Map::RingBuf(h.pinned_map(map_names::AUTO_SAMPLES))).expect("ring");
    let mut samples =
        RingBuf::try_from(Map::RingBuf(h.pinned_map(map_names::SAMPLES))).expect("SAMPLES");
    let frame = udp4(GUARDED);
    h.run(&frame);
    h.run(&udp4(OTHER));
    let got = drain(&mut ring);
    assert_eq!(got.len(), 1, "the packet to the group only");
    let s = &got[0];
    assert_eq!(s.head.flags & sample_flags::ARRIVAL, sample_flags::ARRIVAL);
    assert_eq!(s.head.detail, 3, "the group's index");
    assert_eq!(s.head.frame_len as usize, frame.len());
    assert_eq!(
        &s.data[..s.head.cap_len as usize],
        &frame[..s.head.cap_len as usize]
    );
    assert!(
        drain(&mut samples).is_empty(),
        "nothing in the capture ring"
    );

    // 1 in 100 of 20,000: about 200.
    m.set_sample(100).expect("rate");
    for _ in 0..20_000 {
        h.run(&frame);
    }
    let n = drain(&mut ring).len();
    assert!((100..=350).contains(&n), "1 in 100 of 20000 sampled {n}");

    // A full ring: kept + lost == sent.
    m.set_sample(1).expect("rate");
    let before = m.lost().expect("lost");
    let sent = filter_common::AUTO_SAMPLES_RING_BYTES as usize / (size_of::<Sample>() + 8) + 500;
    for _ in 0..sent {
        h.run(&frame);
    }
    let kept = drain(&mut ring).len() as u64;
    let lost = m.lost().expect("lost") - before;
    assert_eq!(
        kept + lost,
        sent as u64,
        "every sample kept or counted lost"
    );
    assert!(lost >= 500, "the ring filled: {lost}");
}

#[test]
fn rules_match_fragments_or_whole_packets() {
    let mut h = Harness::new();
    let frag = v4(CLIENT, OTHER, UDP, 0x0010, &[0; 64]);
    let whole = udp4(OTHER);
    for (only_fragments, dropped, passed) in [(true, &frag, &whole), (false, &whole, &frag)] {
        let mut s = h.state.settings().expect("settings");
        s.sanity.bits = 0;
        s.rules = vec![
            RuleText {
                action: "drop".into(),
                fragment: Some(only_fragments),
                ..Default::default()
            }
            .to_spec(1, Spelling::Cli)
            .expect("rule"),
        ];
        h.state.write_settings(&s).expect("writing the rule");
        assert_eq!(
            h.run(dropped),
            (XDP_DROP, Reason::Rule),
            "fragment={only_fragments}"
        );
        assert_eq!(
            h.run(passed),
            (XDP_PASS, Reason::Pass),
            "fragment={only_fragments}"
        );
    }
}
