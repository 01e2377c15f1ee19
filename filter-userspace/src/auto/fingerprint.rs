//! The fingerprint search: from the samples of an attack window and of the destination's
//! baseline, the most specific rule(s) that cover the attack and spare the baseline, in the
//! spirit of Cloudflare's dosd.
//!
//! How it decides:
//! - Coverage is measured on the excess: with `m_a` the share of attack-window samples a
//!   fingerprint matches and `m_b` its share of the baseline, coverage is
//!   `(m_a - m_b * s) / (1 - s)` for `s` the baseline's share of the current traffic;
//!   collateral is `m_b` (0 with no baseline samples: nothing to spare was seen).
//! - Vectors: the attack samples are grouped by protocol, and by source port where one port
//!   holds at least 30% of a protocol's samples (NTP and DNS reflection at once are two
//!   vectors); the largest group gets a fingerprint, what it matches is set aside, and so on
//!   while the attack is not covered, up to `max_fingerprints`.
//! - Most specific: within a group every dimension that holds almost all of it adds a
//!   constraint: source prefix (longest holding the group, /8 or /32 at least), source and
//!   destination port, TCP flags, ICMP type, fragments, and the shortest length and TTL
//!   ranges holding it (skipped when they span most of the field: they say nothing). Each
//!   dimension may lose `(1 - coverage) / 7` of the group, so all together stay on target,
//!   plus the baseline's share (legitimate packets in the attack window are not to be held).
//! - Spare the baseline: a result matching more than `collateral` of the baseline is not
//!   found. A TCP SYN fingerprint without a source prefix of /24 (IPv6 /48) or narrower is
//!   never found: a spoofed SYN cannot be told from a real one by its headers, and a wide
//!   prefix holds clients the baseline never showed (the SYN guard is the answer).
//!
//! `features` reads a sampled frame as the data plane's `parse.rs` does (VLAN tags, IPv6
//! extension headers, which fragments carry an L4 header, the `ip_len` rules compare), so that
//! what a fingerprint matches here is what its rule matches there.

use std::{collections::HashMap, net::IpAddr};

use etherparse::{Ipv4HeaderSlice, Ipv6HeaderSlice};
use filter_common::{IPV6_EXT_MAX, VLAN_MAX_DEPTH, proto};
use ipnet::IpNet;

/// What the search reads from one sampled frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// TCP and UDP only; None for later fragments (parse.rs reads no other protocol's ports).
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// What a rule's `length` compares: the IPv4 total length, or 40 + the IPv6 payload length
    /// (the length the header claims, not what was captured). Saturates at 65535: a larger
    /// IPv6 claim cannot fit its frame, and the sanity stage drops it before any rule.
    pub ip_len: u16,
    /// TTL or hop limit.
    pub ttl: u8,
    pub tcp_flags: Option<u8>,
    /// Part of a fragmented datagram: IPv4 MF set or a non-zero offset; IPv6 with a fragment
    /// header (an atomic fragment too, as parse.rs has it).
    pub fragment: bool,
    pub icmp_type: Option<u8>,
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;

fn be16(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// Read a sampled Ethernet frame (up to two 802.1Q/802.1ad tags), possibly cut short by the
/// snap length. None for what is not IP, or what parse.rs would find malformed.
pub fn features(frame: &[u8]) -> Option<Features> {
    let mut ether_type = be16(frame, 12)?;
    let mut off = 14;
    for _ in 0..VLAN_MAX_DEPTH {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        ether_type = be16(frame, off + 2)?;
        off += 4;
    }
    let packet = frame.get(off..)?;
    let (mut f, l4) = match ether_type {
        ETH_P_IP => ipv4(packet)?,
        ETH_P_IPV6 => ipv6(packet)?,
        _ => return None,
    };
    if let Some(l4) = l4 {
        // What was captured of it: a header cut by the snap length leaves its fields unknown.
        match f.proto {
            proto::TCP => {
                if l4.get(12).is_some_and(|off| off >> 4 < 5) {
                    return None;
                }
                f.sport = be16(l4, 0);
                f.dport = be16(l4, 2);
                f.tcp_flags = l4.get(13).copied();
            }
            proto::UDP => {
                f.sport = be16(l4, 0);
                f.dport = be16(l4, 2);
            }
            proto::ICMP | proto::ICMPV6 => f.icmp_type = l4.first().copied(),
            _ => {}
        }
    }
    Some(f)
}

/// The IPv4 header's features, and the bytes of its L4 header unless this is a later fragment.
fn ipv4(packet: &[u8]) -> Option<(Features, Option<&[u8]>)> {
    let h = Ipv4HeaderSlice::from_slice(packet).ok()?;
    let hdr_len = h.slice().len();
    if usize::from(h.total_len()) < hdr_len {
        return None;
    }
    let first = h.fragments_offset().value() == 0;
    let f = Features {
        src: IpAddr::V4(h.source_addr()),
        dst: IpAddr::V4(h.destination_addr()),
        proto: h.protocol().0,
        sport: None,
        dport: None,
        ip_len: h.total_len(),
        ttl: h.ttl(),
        tcp_flags: None,
        fragment: h.more_fragments() || !first,
        icmp_type: None,
    };
    Some((f, first.then(|| &packet[hdr_len..])))
}

/// The IPv6 header's features after the extension headers parse.rs walks (hop-by-hop,
/// routing, destination options, authentication, fragment; at most `IPV6_EXT_MAX`), and the
/// bytes of the L4 header unless this is a later fragment.
fn ipv6(packet: &[u8]) -> Option<(Features, Option<&[u8]>)> {
    let h = Ipv6HeaderSlice::from_slice(packet).ok()?;
    let mut next = h.next_header().0;
    let mut off = h.slice().len();
    let mut fragment = false;
    let mut later_fragment = false;
    for _ in 0..IPV6_EXT_MAX {
        match next {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                let ext = packet.get(off..off + 2)?;
                next = ext[0];
                off += (usize::from(ext[1]) + 1) * 8;
            }
            NEXTHDR_AUTH => {
                let ext = packet.get(off..off + 2)?;
                next = ext[0];
                off += (usize::from(ext[1]) + 2) * 4;
            }
            NEXTHDR_FRAGMENT => {
                let frag = packet.get(off..off + 8)?;
                next = frag[0];
                off += 8;
                fragment = true;
                if u16::from_be_bytes([frag[2], frag[3]]) & 0xfff8 != 0 {
                    later_fragment = true;
                    break;
                }
            }
            _ => break,
        }
    }
    let still_in_chain = matches!(
        next,
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_AUTH | NEXTHDR_FRAGMENT
    );
    if !later_fragment && still_in_chain {
        return None;
    }
    let f = Features {
        src: IpAddr::V6(h.source_addr()),
        dst: IpAddr::V6(h.destination_addr()),
        proto: next,
        sport: None,
        dport: None,
        ip_len: u16::try_from(40 + u32::from(h.payload_length())).unwrap_or(u16::MAX),
        ttl: h.hop_limit(),
        tcp_flags: None,
        fragment,
        icmp_type: None,
    };
    Some((
        f,
        (!later_fragment).then(|| packet.get(off..).unwrap_or(&[])),
    ))
}

pub struct Params {
    /// The share of the attack the fingerprints must match.
    pub coverage: f64,
    /// The largest share of the baseline they may match.
    pub collateral: f64,
    pub max_fingerprints: usize,
    /// Fewer attack samples than this: no decision.
    pub min_samples: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            coverage: 0.95,
            collateral: 0.001,
            max_fingerprints: 4,
            min_samples: 50,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fingerprint {
    pub proto: Option<u8>,
    pub src: Option<IpNet>,
    pub sport: Option<(u16, u16)>,
    pub dport: Option<(u16, u16)>,
    pub length: Option<(u16, u16)>,
    pub ttl: Option<(u8, u8)>,
    /// (value, mask)
    pub tcp_flags: Option<(u8, u8)>,
    pub fragment: Option<bool>,
    pub icmp_type: Option<u8>,
    /// Share of the attack (the excess over the baseline) it matches.
    pub coverage: f64,
    /// Share of the baseline it matches.
    pub collateral: f64,
}

fn within<T: PartialOrd>(v: T, (lo, hi): (T, T)) -> bool {
    lo <= v && v <= hi
}

fn range_text<T: PartialEq + std::fmt::Display>((lo, hi): (T, T)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

impl Fingerprint {
    pub fn matches(&self, f: &Features) -> bool {
        self.proto.is_none_or(|p| p == f.proto)
            && self.src.is_none_or(|n| n.contains(&f.src))
            && self
                .sport
                .is_none_or(|r| f.sport.is_some_and(|p| within(p, r)))
            && self
                .dport
                .is_none_or(|r| f.dport.is_some_and(|p| within(p, r)))
            && self.length.is_none_or(|r| within(f.ip_len, r))
            && self.ttl.is_none_or(|r| within(f.ttl, r))
            && self
                .tcp_flags
                .is_none_or(|(v, m)| f.tcp_flags.is_some_and(|fl| fl & m == v))
            && self.fragment.is_none_or(|fr| fr == f.fragment)
            && self.icmp_type.is_none_or(|t| f.icmp_type == Some(t))
    }

    /// "udp sport 123 len 468-490 -> 198.18.0.10"
    pub fn describe(&self, dst: IpAddr) -> String {
        let mut parts = Vec::new();
        if let Some(p) = self.proto {
            parts.push(crate::settings::show_proto(p));
        }
        if let Some(n) = self.src {
            parts.push(format!("src {n}"));
        }
        if let Some(r) = self.sport {
            parts.push(format!("sport {}", range_text(r)));
        }
        if let Some(r) = self.dport {
            parts.push(format!("dport {}", range_text(r)));
        }
        if let Some((v, m)) = self.tcp_flags {
            parts.push(format!(
                "flags {}",
                crate::settings::TcpFlags { value: v, mask: m }
            ));
        }
        if let Some(t) = self.icmp_type {
            parts.push(format!("type {t}"));
        }
        if self.fragment == Some(true) {
            parts.push("fragment".into());
        }
        if let Some(r) = self.length {
            parts.push(format!("len {}", range_text(r)));
        }
        if let Some(r) = self.ttl {
            parts.push(format!("ttl {}", range_text(r)));
        }
        if parts.is_empty() {
            parts.push("any".into());
        }
        format!("{} -> {dst}", parts.join(" "))
    }

    /// A SYN fingerprint whose sources are wider than a /24 (IPv6 /48), or not narrowed at
    /// all: it would refuse connections from clients the baseline never showed.
    fn is_syn_from_wide_sources(&self) -> bool {
        let narrow = self.src.is_some_and(|n| match n {
            IpNet::V4(n) => n.prefix_len() >= 24,
            IpNet::V6(n) => n.prefix_len() >= 48,
        });
        self.proto == Some(proto::TCP)
            && !narrow
            && self
                .tcp_flags
                .is_some_and(|(v, m)| v & 0x02 != 0 && m & 0x10 != 0 && v & 0x10 == 0)
    }
}

#[derive(Debug)]
pub enum Outcome {
    /// One fingerprint per attack vector; together they cover at least `coverage` of the
    /// attack and match at most `collateral` of the baseline.
    Found {
        fingerprints: Vec<Fingerprint>,
        coverage: f64,
        collateral: f64,
    },
    /// None reaches the targets: `best` is the closest, `why` says why for the log.
    NotFound {
        best: Option<Fingerprint>,
        why: String,
    },
    TooFewSamples {
        have: usize,
        need: usize,
    },
}

/// The most common value and its count.
fn mode<T: std::hash::Hash + Eq + Copy>(values: impl Iterator<Item = T>) -> Option<(T, usize)> {
    let mut counts: HashMap<T, usize> = HashMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts.into_iter().max_by_key(|(_, c)| *c)
}

/// The shortest interval holding at least `keep` of `values` (sorted in place).
fn shortest<T: Copy + Ord + Into<u32>>(values: &mut [T], keep: f64) -> Option<(T, T)> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let n = values.len();
    let k = ((n as f64 * keep).ceil() as usize).clamp(1, n);
    (0..=n - k)
        .map(|i| (values[i], values[i + k - 1]))
        .min_by_key(|(lo, hi)| (*hi).into() - (*lo).into())
}

/// The longest prefix (from `min_len` on) holding at least `keep` of the sources.
fn source_prefix(srcs: &[IpAddr], keep: f64) -> Option<IpNet> {
    let first = srcs.first()?;
    let (max_len, min_len) = if first.is_ipv4() { (32, 8) } else { (128, 32) };
    if srcs.iter().any(|a| a.is_ipv4() != first.is_ipv4()) {
        return None;
    }
    let need = (srcs.len() as f64 * keep).ceil() as usize;
    let mut len = max_len;
    while len >= min_len {
        let (net, count) = mode(
            srcs.iter()
                .map(|a| IpNet::new(*a, len).expect("valid length").trunc()),
        )?;
        if count >= need {
            return Some(net);
        }
        len -= if first.is_ipv4() { 1 } else { 4 };
    }
    None
}

/// The fingerprint of one vector: every dimension that holds almost all of `group`.
/// `s`: the baseline's share of the traffic: that part of a group may be left out too.
fn build(group: &[&Features], slack: f64, s: f64) -> Fingerprint {
    let n = group.len();
    let keep = (1.0 - slack) * (1.0 - s);
    let need = (n as f64 * keep).ceil() as usize;
    let proto = group[0].proto;
    let mut fp = Fingerprint {
        proto: Some(proto),
        ..Fingerprint::default()
    };
    let srcs: Vec<IpAddr> = group.iter().map(|f| f.src).collect();
    fp.src = source_prefix(&srcs, keep);
    let exact = |v: Option<(Option<u16>, usize)>| match v {
        Some((Some(p), c)) if c >= need => Some((p, p)),
        _ => None,
    };
    fp.sport = exact(mode(group.iter().map(|f| f.sport)));
    fp.dport = exact(mode(group.iter().map(|f| f.dport)));
    if proto == proto::TCP {
        if let Some((Some(fl), c)) = mode(group.iter().map(|f| f.tcp_flags.map(|v| v & 0x3f))) {
            if c >= need {
                fp.tcp_flags = Some((fl, 0x3f));
            }
        }
    }
    if proto == proto::ICMP || proto == proto::ICMPV6 {
        if let Some((Some(t), c)) = mode(group.iter().map(|f| f.icmp_type)) {
            if c >= need {
                fp.icmp_type = Some(t);
            }
        }
    }
    if group.iter().filter(|f| f.fragment).count() >= need {
        fp.fragment = Some(true);
    }
    let mut lens: Vec<u16> = group.iter().map(|f| f.ip_len).collect();
    if let Some((lo, hi)) = shortest(&mut lens, keep) {
        if hi - lo <= 1000 {
            fp.length = Some((lo, hi));
        }
    }
    let mut ttls: Vec<u8> = group.iter().map(|f| f.ttl).collect();
    if let Some((lo, hi)) = shortest(&mut ttls, keep) {
        if hi - lo <= 64 {
            fp.ttl = Some((lo, hi));
        }
    }
    fp
}

fn share(fps: &[&Fingerprint], set: &[Features]) -> f64 {
    if set.is_empty() {
        return 0.0;
    }
    set.iter()
        .filter(|f| fps.iter().any(|fp| fp.matches(f)))
        .count() as f64
        / set.len() as f64
}

fn excess(m_a: f64, m_b: f64, s: f64) -> f64 {
    ((m_a - m_b * s) / (1.0 - s)).clamp(0.0, 1.0)
}

pub fn search(
    attack: &[Features],
    baseline: &[Features],
    baseline_share: f64,
    p: &Params,
) -> Outcome {
    if attack.len() < p.min_samples {
        return Outcome::TooFewSamples {
            have: attack.len(),
            need: p.min_samples,
        };
    }
    let s = baseline_share.clamp(0.0, 0.95);
    let slack = (1.0 - p.coverage) / 7.0;
    let mut fps: Vec<Fingerprint> = Vec::new();
    let mut rest: Vec<&Features> = attack.iter().collect();
    while fps.len() < p.max_fingerprints && !rest.is_empty() {
        // The vectors of what is left: by protocol, and by a source port holding 30%.
        let (proto, _) = mode(rest.iter().map(|f| f.proto)).expect("not empty");
        let of_proto: Vec<&Features> = rest.iter().copied().filter(|f| f.proto == proto).collect();
        let group: Vec<&Features> = match mode(of_proto.iter().map(|f| f.sport)) {
            Some((Some(port), c)) if c * 10 >= of_proto.len() * 3 && c < of_proto.len() => of_proto
                .iter()
                .copied()
                .filter(|f| f.sport == Some(port))
                .collect(),
            _ => of_proto,
        };
        let mut fp = build(&group, slack, s);
        fp.coverage = excess(share(&[&fp], attack), share(&[&fp], baseline), s);
        fp.collateral = share(&[&fp], baseline);
        rest.retain(|f| !fp.matches(f));
        fps.push(fp);
        let all: Vec<&Fingerprint> = fps.iter().collect();
        if excess(share(&all, attack), share(&all, baseline), s) >= p.coverage {
            break;
        }
        // A vector too small to matter is not worth a rule of its own.
        if (rest.len() as f64) < attack.len() as f64 * (1.0 - p.coverage) {
            break;
        }
    }
    let all: Vec<&Fingerprint> = fps.iter().collect();
    let coverage = excess(share(&all, attack), share(&all, baseline), s);
    let collateral = share(&all, baseline);
    let best = fps
        .iter()
        .max_by(|a, b| a.coverage.total_cmp(&b.coverage))
        .cloned();
    if let Some(fp) = fps.iter().find(|f| f.is_syn_from_wide_sources()) {
        return Outcome::NotFound {
            best: Some(fp.clone()),
            why: "a spoofed SYN flood cannot be told from real connection attempts by its \
                  headers: the SYN guard is the answer"
                .into(),
        };
    }
    if collateral > p.collateral {
        return Outcome::NotFound {
            best,
            why: format!(
                "the best fingerprint would match {:.2}% of the baseline (at most {:.2}%)",
                collateral * 100.0,
                p.collateral * 100.0
            ),
        };
    }
    if coverage < p.coverage {
        return Outcome::NotFound {
            best,
            why: format!(
                "the best fingerprints cover {:.1}% of the attack (at least {:.1}%)",
                coverage * 100.0,
                p.coverage * 100.0
            ),
        };
    }
    Outcome::Found {
        fingerprints: fps,
        coverage,
        collateral,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use filter_common::sanity::{TCP_ACK, TCP_PSH, TCP_SYN};

    use super::*;

    /// A tiny deterministic generator (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn range(&mut self, lo: u64, hi: u64) -> u64 {
            lo + self.next() % (hi - lo + 1)
        }
    }

    const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10));
    const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 10);

    fn pkt(src: Ipv4Addr, proto: u8, sport: u16, dport: u16, len: u16, ttl: u8) -> Features {
        Features {
            src: IpAddr::V4(src),
            dst: DST,
            proto,
            sport: proto::has_ports(proto).then_some(sport),
            dport: proto::has_ports(proto).then_some(dport),
            ip_len: len,
            ttl,
            tcp_flags: (proto == proto::TCP).then_some(0x02),
            fragment: false,
            icmp_type: None,
        }
    }

    fn random_src(r: &mut Rng) -> Ipv4Addr {
        Ipv4Addr::from(r.next() as u32 | 0x0100_0000)
    }

    /// NTP monlist replies from random reflectors.
    fn ntp(r: &mut Rng, n: usize) -> Vec<Features> {
        (0..n)
            .map(|_| {
                let s = random_src(r);
                pkt(
                    s,
                    17,
                    123,
                    r.range(1024, 65535) as u16,
                    r.range(468, 490) as u16,
                    r.range(40, 60) as u8,
                )
            })
            .collect()
    }

    /// Clients of a DNS-like service on udp/53.
    fn dns_clients(r: &mut Rng, n: usize) -> Vec<Features> {
        (0..n)
            .map(|i| {
                let s = Ipv4Addr::new(198, 51, 100, (i % 200) as u8);
                pkt(
                    s,
                    17,
                    r.range(1024, 65535) as u16,
                    53,
                    r.range(60, 90) as u16,
                    r.range(50, 64) as u8,
                )
            })
            .collect()
    }

    fn found(o: Outcome) -> (Vec<Fingerprint>, f64, f64) {
        match o {
            Outcome::Found {
                fingerprints,
                coverage,
                collateral,
            } => (fingerprints, coverage, collateral),
            other => panic!("no fingerprint: {other:?}"),
        }
    }

    fn with_baseline(mut attack: Vec<Features>, baseline: &[Features], n: usize) -> Vec<Features> {
        attack.extend(baseline.iter().take(n).cloned());
        attack
    }

    #[test]
    fn ntp_reflection_against_dns_clients() {
        let r = &mut Rng(1);
        let base = dns_clients(r, 2000);
        let attack = with_baseline(ntp(r, 3000), &base, 30);
        let (fps, cov, col) = found(search(&attack, &base, 0.01, &Params::default()));
        assert_eq!(fps.len(), 1, "{fps:?}");
        let fp = &fps[0];
        assert_eq!(fp.proto, Some(17));
        assert_eq!(fp.sport, Some((123, 123)));
        assert_eq!(fp.dport, None, "random destination ports say nothing");
        assert!(
            fp.length.is_some_and(|(lo, hi)| lo >= 468 && hi <= 490),
            "{fp:?}"
        );
        assert!(cov >= 0.95 && col == 0.0, "{cov} {col}");
        assert!(
            fp.describe(DST).starts_with("udp sport 123 len"),
            "{}",
            fp.describe(DST)
        );
    }

    #[test]
    fn legitimate_ntp_in_the_baseline_is_spared_by_length() {
        let r = &mut Rng(2);
        // Real NTP replies: sport 123, 76 bytes.
        let base: Vec<Features> = (0..2000)
            .map(|_| pkt(Ipv4Addr::new(192, 0, 2, 1), 17, 123, 40000, 76, 55))
            .collect();
        let attack = with_baseline(ntp(r, 3000), &base, 30);
        let (fps, _, col) = found(search(&attack, &base, 0.01, &Params::default()));
        assert!(fps[0].length.is_some_and(|(lo, _)| lo > 76), "{fps:?}");
        assert_eq!(col, 0.0);
    }

    #[test]
    fn memcached_reflection_to_a_quic_port_is_not_just_the_port() {
        let r = &mut Rng(3);
        let base: Vec<Features> = (0..2000)
            .map(|_| {
                let s = random_src(r);
                pkt(
                    s,
                    17,
                    r.range(1024, 65535) as u16,
                    443,
                    r.range(1200, 1350) as u16,
                    57,
                )
            })
            .collect();
        let attack: Vec<Features> = (0..3000)
            .map(|_| {
                let s = random_src(r);
                pkt(s, 17, 11211, 443, 1428, r.range(30, 60) as u8)
            })
            .collect();
        let attack = with_baseline(attack, &base, 60);
        let (fps, _, col) = found(search(&attack, &base, 0.02, &Params::default()));
        assert_eq!(fps[0].sport, Some((11211, 11211)), "{fps:?}");
        assert!(col <= 0.001);
    }

    #[test]
    fn mixed_vectors_get_a_fingerprint_each() {
        let r = &mut Rng(4);
        let base = dns_clients(r, 2000);
        let mut attack = ntp(r, 2000);
        attack.extend((0..2000).map(|_| {
            let s = random_src(r);
            pkt(s, 17, 53, r.range(1024, 65535) as u16, 1500, 50)
        }));
        let (fps, cov, _) = found(search(&attack, &base, 0.0, &Params::default()));
        assert_eq!(fps.len(), 2, "{fps:?}");
        let ports: Vec<_> = fps.iter().map(|f| f.sport).collect();
        assert!(
            ports.contains(&Some((123, 123))) && ports.contains(&Some((53, 53))),
            "{fps:?}"
        );
        assert!(cov >= 0.95);
    }

    #[test]
    fn a_botnet_from_one_net_gets_its_prefix() {
        let r = &mut Rng(5);
        let base = dns_clients(r, 1000);
        let attack: Vec<Features> = (0..3000)
            .map(|_| {
                let s = Ipv4Addr::new(203, 0, 113, r.range(1, 254) as u8);
                pkt(
                    s,
                    17,
                    r.range(1024, 65535) as u16,
                    r.range(1, 65535) as u16,
                    r.range(64, 1400) as u16,
                    64,
                )
            })
            .collect();
        let (fps, _, _) = found(search(&attack, &base, 0.0, &Params::default()));
        assert_eq!(
            fps[0].src,
            Some("203.0.113.0/24".parse().unwrap()),
            "{fps:?}"
        );
    }

    #[test]
    fn a_spoofed_syn_flood_is_for_the_syn_guard() {
        let r = &mut Rng(6);
        let base: Vec<Features> = (0..1000)
            .map(|_| pkt(random_src(r), 6, r.range(1024, 65535) as u16, 80, 60, 64))
            .collect();
        let attack: Vec<Features> = (0..3000)
            .map(|_| {
                pkt(
                    random_src(r),
                    6,
                    r.range(1024, 65535) as u16,
                    80,
                    60,
                    r.range(1, 255) as u8,
                )
            })
            .collect();
        match search(&attack, &base, 0.0, &Params::default()) {
            Outcome::NotFound { why, .. } => assert!(why.contains("SYN guard"), "{why}"),
            other => panic!("{other:?}"),
        }
        // From a /16 and no baseline to spare: still the guard (the /16 holds clients).
        let wide: Vec<Features> = (0..3000)
            .map(|_| {
                let s = Ipv4Addr::new(198, 19, r.range(0, 255) as u8, r.range(0, 255) as u8);
                pkt(s, 6, r.range(1024, 65535) as u16, 80, 60, 64)
            })
            .collect();
        assert!(matches!(
            search(&wide, &[], 0.0, &Params::default()),
            Outcome::NotFound { .. }
        ));
        // From one /24: that /24 may be dropped.
        let narrow: Vec<Features> = (0..3000)
            .map(|_| {
                let s = Ipv4Addr::new(203, 0, 113, r.range(1, 254) as u8);
                pkt(s, 6, r.range(1024, 65535) as u16, 80, 60, 64)
            })
            .collect();
        let (fps, _, _) = found(search(&narrow, &base, 0.0, &Params::default()));
        assert_eq!(
            fps[0].src,
            Some("203.0.113.0/24".parse().unwrap()),
            "{fps:?}"
        );
    }

    #[test]
    fn icmp_and_fragment_floods() {
        let r = &mut Rng(7);
        let base = dns_clients(r, 1000);
        let icmp: Vec<Features> = (0..2000)
            .map(|_| Features {
                icmp_type: Some(8),
                ..pkt(random_src(r), 1, 0, 0, 84, 64)
            })
            .collect();
        let (fps, _, _) = found(search(&icmp, &base, 0.0, &Params::default()));
        assert_eq!(
            (fps[0].proto, fps[0].icmp_type),
            (Some(1), Some(8)),
            "{fps:?}"
        );
        let frags: Vec<Features> = (0..2000)
            .map(|_| Features {
                fragment: true,
                sport: None,
                dport: None,
                ..pkt(random_src(r), 17, 0, 0, 1500, 64)
            })
            .collect();
        let (fps, _, _) = found(search(&frags, &base, 0.0, &Params::default()));
        assert_eq!(
            (fps[0].proto, fps[0].fragment),
            (Some(17), Some(true)),
            "{fps:?}"
        );
    }

    #[test]
    fn too_few_samples_and_an_attack_like_the_baseline() {
        let r = &mut Rng(8);
        let base = dns_clients(r, 2000);
        assert!(matches!(
            search(&base[..10], &base, 0.0, &Params::default()),
            Outcome::TooFewSamples { have: 10, need: 50 }
        ));
        let attack = dns_clients(r, 3000);
        match search(&attack, &base, 0.0, &Params::default()) {
            Outcome::NotFound { why, .. } => assert!(why.contains("baseline"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    /// A frame and what `features` must read from it (None: not read at all).
    struct Frame {
        what: &'static str,
        frame: fn() -> Vec<u8>,
        want: Option<Features>,
    }

    const SRC4: [u8; 4] = [198, 19, 0, 1];
    const DST4: [u8; 4] = [198, 18, 0, 10];
    const SRC6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn eth() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
        etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
    }

    fn write<B>(b: B, payload: usize, f: impl FnOnce(B, &mut Vec<u8>, &[u8])) -> Vec<u8> {
        let mut out = Vec::new();
        f(b, &mut out, &vec![0u8; payload]);
        out
    }

    fn udp4() -> Vec<u8> {
        write(
            eth().ipv4(SRC4, DST4, 50).udp(123, 40000),
            440,
            |b, o, p| b.write(o, p).expect("written"),
        )
    }

    fn tcp4_synack() -> Vec<u8> {
        write(
            eth()
                .ipv4(SRC4, DST4, 64)
                .tcp(80, 40000, 1, 1000)
                .syn()
                .ack(7),
            0,
            |b, o, p| b.write(o, p).expect("written"),
        )
    }

    fn udp6() -> Vec<u8> {
        write(
            eth().ipv6(SRC6, DST6.octets(), 61).udp(53, 5353),
            100,
            |b, o, p| b.write(o, p).expect("written"),
        )
    }

    fn vlan_udp4() -> Vec<u8> {
        write(
            eth()
                .single_vlan(7.try_into().expect("a VLAN id"))
                .ipv4(SRC4, DST4, 50)
                .udp(123, 40000),
            440,
            |b, o, p| b.write(o, p).expect("written"),
        )
    }

    fn qinq_udp4() -> Vec<u8> {
        write(
            eth()
                .double_vlan(7.try_into().expect("id"), 8.try_into().expect("id"))
                .ipv4(SRC4, DST4, 50)
                .udp(123, 40000),
            440,
            |b, o, p| b.write(o, p).expect("written"),
        )
    }

    fn v4_fragment(offset: u16, more: bool) -> Vec<u8> {
        use etherparse::{IpFragOffset, IpHeaders, IpNumber, Ipv4Header};
        let mut h = Ipv4Header::new(0, 64, IpNumber::UDP, SRC4, DST4).expect("a header");
        h.fragment_offset = IpFragOffset::try_new(offset).expect("an offset");
        h.more_fragments = more;
        write(
            eth()
                .ip(IpHeaders::Ipv4(h, Default::default()))
                .udp(123, 40000),
            200,
            |b, o, p| b.write(o, p).expect("written"),
        )
    }

    /// IPv6/UDP with a fragment header (`offset` in 8-byte units), written by hand: etherparse
    /// 0.16 puts the offset and M bits in the wrong places (etherparse#150, fixed in 0.20).
    fn v6_fragment(offset: u16, more: bool) -> Vec<u8> {
        let mut f = udp6();
        let ip = 14;
        f[ip + 6] = NEXTHDR_FRAGMENT;
        let payload = u16::from_be_bytes([f[ip + 4], f[ip + 5]]) + 8;
        f[ip + 4..ip + 6].copy_from_slice(&payload.to_be_bytes());
        let word = (offset << 3) | u16::from(more);
        let [hi, lo] = word.to_be_bytes();
        let header = [proto::UDP, 0, hi, lo, 0, 0, 0, 1];
        f.splice(ip + 40..ip + 40, header);
        f
    }

    fn icmp4_echo() -> Vec<u8> {
        write(
            eth().ipv4(SRC4, DST4, 64).icmpv4_echo_request(1, 1),
            56,
            |b, o, p| b.write(o, p).expect("written"),
        )
    }

    fn cut_at_128() -> Vec<u8> {
        let mut f = write(
            eth()
                .ipv4(SRC4, DST4, 50)
                .tcp(40000, 443, 1, 1000)
                .psh()
                .ack(9),
            1400,
            |b, o, p| b.write(o, p).expect("written"),
        );
        f.truncate(128);
        f
    }

    fn v4(sport: Option<u16>, dport: Option<u16>, ip_len: u16, ttl: u8) -> Features {
        Features {
            src: IpAddr::from(SRC4),
            dst: IpAddr::from(DST4),
            proto: proto::UDP,
            sport,
            dport,
            ip_len,
            ttl,
            tcp_flags: None,
            fragment: false,
            icmp_type: None,
        }
    }

    fn v6(sport: Option<u16>, dport: Option<u16>, fragment: bool, extra: u16) -> Features {
        Features {
            src: IpAddr::from(SRC6),
            dst: DST6.into(),
            ip_len: 40 + 8 + 100 + extra,
            ttl: 61,
            fragment,
            ..v4(sport, dport, 0, 0)
        }
    }

    #[test]
    fn features_table() {
        let frames = [
            Frame {
                what: "IPv4/UDP: ip_len is the total length",
                frame: udp4,
                want: Some(v4(Some(123), Some(40000), 20 + 8 + 440, 50)),
            },
            Frame {
                what: "IPv4/TCP SYN-ACK: the flags byte",
                frame: tcp4_synack,
                want: Some(Features {
                    proto: proto::TCP,
                    tcp_flags: Some(TCP_SYN | TCP_ACK),
                    ..v4(Some(80), Some(40000), 40, 64)
                }),
            },
            Frame {
                what: "IPv6/UDP: ip_len is 40 + the payload length",
                frame: udp6,
                want: Some(v6(Some(53), Some(5353), false, 0)),
            },
            Frame {
                what: "802.1Q tag",
                frame: vlan_udp4,
                want: Some(v4(Some(123), Some(40000), 468, 50)),
            },
            Frame {
                what: "QinQ (802.1ad + 802.1Q)",
                frame: qinq_udp4,
                want: Some(v4(Some(123), Some(40000), 468, 50)),
            },
            Frame {
                what: "IPv4 later fragment: no ports",
                frame: || v4_fragment(185, false),
                want: Some(Features {
                    fragment: true,
                    ..v4(None, None, 20 + 8 + 200, 64)
                }),
            },
            Frame {
                what: "IPv4 first fragment (MF): ports, and a fragment",
                frame: || v4_fragment(0, true),
                want: Some(Features {
                    fragment: true,
                    ..v4(Some(123), Some(40000), 228, 64)
                }),
            },
            Frame {
                what: "IPv6 later fragment: UDP, no ports",
                frame: || v6_fragment(100, true),
                want: Some(v6(None, None, true, 8)),
            },
            Frame {
                what: "IPv6 first fragment: ports",
                frame: || v6_fragment(0, true),
                want: Some(v6(Some(53), Some(5353), true, 8)),
            },
            Frame {
                what: "IPv6 atomic fragment (offset 0, no MF): a fragment, as parse.rs says",
                frame: || v6_fragment(0, false),
                want: Some(v6(Some(53), Some(5353), true, 8)),
            },
            Frame {
                what: "ICMP echo request: type 8",
                frame: icmp4_echo,
                want: Some(Features {
                    proto: proto::ICMP,
                    icmp_type: Some(8),
                    ..v4(None, None, 20 + 8 + 56, 64)
                }),
            },
            Frame {
                what: "cut at 128 bytes: the header's length, the TCP header read",
                frame: cut_at_128,
                want: Some(Features {
                    proto: proto::TCP,
                    tcp_flags: Some(TCP_PSH | TCP_ACK),
                    ..v4(Some(40000), Some(443), 20 + 20 + 1400, 50)
                }),
            },
            Frame {
                what: "ARP: not IP",
                frame: || {
                    let mut f = udp4();
                    f[12..14].copy_from_slice(&[0x08, 0x06]);
                    f
                },
                want: None,
            },
            Frame {
                what: "IPv4 total length under its header length: malformed for parse.rs",
                frame: || {
                    let mut f = udp4();
                    f[16..18].copy_from_slice(&[0, 19]);
                    f
                },
                want: None,
            },
            Frame {
                what: "a frame cut inside the Ethernet header",
                frame: || udp4()[..13].to_vec(),
                want: None,
            },
        ];
        for fr in frames {
            assert_eq!(features(&(fr.frame)()), fr.want, "{}", fr.what);
        }
    }
}
