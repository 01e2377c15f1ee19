//! The fingerprint search: from the samples of an attack window and of the destination's
//! baseline, the most specific rule(s) that cover the attack and spare the baseline, in the
//! spirit of Cloudflare's dosd ("udp sport 123 len 468-490 -> 198.18.0.10"), or the reason
//! there is none (the detector then falls back to a defence). Pure: samples in, an `Outcome`
//! out, so every decision below is unit-tested on generated traffic.
//!
//! How it decides, and why:
//! - **Measured on the excess.** The attack window also holds the traffic that was there
//!   before, `s` of it (`baseline_share`). A set of samples is weighed as its attack-window
//!   samples (+1 each) minus the legitimate part expected among them (each baseline sample
//!   stands for `s * n_attack / n_baseline` of them). For a fingerprint matching `m_a` of the
//!   attack window and `m_b` of the baseline this is the coverage `(m_a - m_b * s) / (1 - s)`;
//!   its collateral is `m_b`. Every choice below (vectors, ranges, prefixes) uses that weight,
//!   not raw counts: with raw counts the legitimate part of a window was a "vector" of its own,
//!   and each range was cut to hold `1 - s` of its group, losing `s` of the attack. `s` is
//!   clamped to [0, 0.95]: above that the excess is too small a part of the samples to measure.
//!   With no baseline samples `s` counts as 0 and collateral is 0: nothing to spare was seen.
//! - **Enough samples of the excess.** Fewer than `min_samples / (1 - s)` attack-window samples
//!   is `TooFewSamples`: what counts is how many samples the attack itself has.
//! - **Vectors.** What no fingerprint matches yet is grouped by protocol, then by the key that
//!   tells reflection and flood types apart: the source port for UDP (NTP and DNS reflection at
//!   once), the TCP flags (a SYN flood and an ACK flood), the ICMP type; later fragments (no
//!   L4 header) are a vector of their own. A key value holding 10% of its protocol's excess is a
//!   vector; the rest of the protocol is one more. The largest gets a fingerprint, what it
//!   matches is set aside, and so on while coverage is under target, up to `max_fingerprints`.
//!   A vector under 1% of the attack gets none.
//! - **Most specific.** In a vector, every dimension adds the tightest constraint that keeps
//!   enough of the vector, in this order: fragment, ICMP type, TCP flags (value over
//!   FIN/SYN/RST/PSH/ACK/URG, else over FIN/SYN/RST/ACK), source prefix (the longest from /8,
//!   IPv6 /32, holding enough; random sources give none), source port, destination port,
//!   length (what a rule's `length` compares), TTL. Ports, length and TTL take the shortest
//!   interval holding enough, and only when it says something: a single port or a range of at
//!   most 256, a length range of at most 256 bytes, a TTL range of at most 32; a wider range
//!   (up to half the field: ports 32768, length 750, TTL 128) only when it leaves out at least
//!   half of the vector's baseline samples.
//! - **The loss is budgeted.** A fingerprint may lose half of the allowed `1 - coverage` of its
//!   vector (the other half is for vectors too small for a fingerprint, and for the sampling
//!   noise a range fitted to samples has). Dimensions are cut one after the other on what the
//!   previous cuts kept, each allowed an equal part of what is left of the budget, so an exact
//!   dimension (one source port) passes its part on and the cuts together stay on target.
//! - **Noise is not loss.** The legitimate part of some samples is estimated from the baseline,
//!   and the estimate is off by a Poisson error: for `b` baseline samples of weight `w` each,
//!   a standard deviation of about `sqrt(w (1 + w) b)`. What a cut leaves out where the
//!   legitimate traffic is (the real clients' ACKs beside an ACK flood, legitimate SYNs among
//!   spoofed ones) is charged only what it weighs beyond three of those; what it leaves out
//!   where the baseline has nothing is charged in full. Charged apart: each other value of a
//!   flag or type; the outside of a source prefix as one (a window's client the baseline never
//!   saw is as likely in any prefix), and the prefix's sibling, so that noise cannot hide half
//!   of a botnet's /24; for ranges, each run of values left out, on or off the ground the
//!   baseline covers (its values, and gaps under four times their mean spacing). All forgiven
//!   together is at most the noise of the vector's own estimate, once: forgiven region by
//!   region, a vector no bigger than its noise was cut to nothing. Without any of this a cut
//!   next to legitimate traffic failed about half of the time; forgiving the whole outside of
//!   a range, a range next to legitimate traffic shaved the attack's own values. A vector must
//!   weigh more than its noise, too.
//! - **Spare the baseline.** Fingerprints matching more than `collateral` of the baseline are
//!   not found. A TCP fingerprint whose matches are mostly SYNs (SYN without ACK) is never
//!   found unless its sources are a /24 (IPv6 /48) or narrower: a spoofed SYN cannot be told
//!   from a real connection attempt by its headers, the baseline under-counts connection
//!   attempts from clients it never saw, and the SYN guard is the answer.
//! - **Deterministic.** Independent of the samples' order (they are put in a canonical one, so
//!   that even float sums are the same); every tie goes to the lowest value. Per vector a sort
//!   per dimension and a pass per prefix length: 10k + 10k samples take milliseconds.
//!
//! `features` reads a sampled frame as the data plane's `parse.rs` does (VLAN tags, IPv6
//! extension headers, which fragments carry an L4 header, the `ip_len` rules compare), so that
//! what a fingerprint matches here is what its rule matches there.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use etherparse::{Ipv4HeaderSlice, Ipv6HeaderSlice};
use filter_common::{
    IPV6_EXT_MAX, VLAN_MAX_DEPTH, proto,
    sanity::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG},
};
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
    /// The fewest samples of the attack (the excess) to decide on.
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
    /// Does its rule match this packet? As rules.rs has it: ports, flags and ICMP type only
    /// where there is an L4 header.
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

    /// "udp sport 123 len 468-490 -> 198.18.0.10" (short, for logs and rule comments)
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
        match self.fragment {
            Some(true) => parts.push("fragment".into()),
            Some(false) => parts.push("unfragmented".into()),
            None => {}
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

    /// Sources of a /24 (IPv6 /48) or narrower.
    fn narrow_sources(&self) -> bool {
        self.src.is_some_and(|n| match n {
            IpNet::V4(n) => n.prefix_len() >= 24,
            IpNet::V6(n) => n.prefix_len() >= 48,
        })
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

/// The largest baseline share the excess is measured under.
const SHARE_MAX: f64 = 0.95;
/// The part of the allowed loss (`1 - coverage`) one fingerprint's cuts may spend.
const CUT_SHARE: f64 = 0.5;
/// A key value (source port, flags, ICMP type) holding this share of its protocol's excess is
/// a vector of its own.
const VECTOR_SPLIT: f64 = 0.1;
/// A loss of excess within this many standard deviations of its estimate is noise, no loss.
const NOISE_Z: f64 = 3.0;
/// A vector smaller than this share of the attack gets no fingerprint.
const VECTOR_MIN: f64 = 0.01;
/// TCP flags a fingerprint matches on first, and those it falls back to when PSH and URG vary.
const FLAGS_DETAIL: u8 = TCP_FIN | TCP_SYN | TCP_RST | TCP_PSH | TCP_ACK | TCP_URG;
const FLAGS_KIND: u8 = TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK;

/// One sample, weighed for the excess: +1 from the attack window, minus the legitimate
/// packets it stands for from the baseline.
#[derive(Clone, Copy)]
struct Item<'a> {
    f: &'a Features,
    weight: f64,
    baseline: bool,
}

fn excess(items: &[Item]) -> f64 {
    items.iter().map(|i| i.weight).sum()
}

/// What tells the vectors of one protocol apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Value(u16),
    /// A later fragment: no L4 header to read a key from.
    LaterFragment,
}

fn key_of(f: &Features) -> Option<Key> {
    let value = match f.proto {
        proto::UDP => f.sport,
        proto::TCP => f.tcp_flags.map(|fl| u16::from(fl & FLAGS_KIND)),
        proto::ICMP | proto::ICMPV6 => f.icmp_type.map(u16::from),
        _ => return None,
    };
    match value {
        Some(v) => Some(Key::Value(v)),
        None if f.fragment => Some(Key::LaterFragment),
        None => None,
    }
}

/// A vector: one key value of a protocol, or the rest of the protocol.
struct Vector {
    proto: u8,
    key: Option<Key>,
    /// For the rest: the key values that are vectors of their own.
    others: BTreeSet<Key>,
    /// Its weight, beyond the noise of that estimate.
    excess: f64,
}

impl Vector {
    fn holds(&self, f: &Features) -> bool {
        if f.proto != self.proto {
            return false;
        }
        let k = key_of(f);
        match self.key {
            Some(key) => k == Some(key),
            None => k.is_none_or(|k| !self.others.contains(&k)),
        }
    }
}

/// The largest vector of what is left. `noise`: as in `Cuts`.
fn largest_vector(pool: &[Item], noise: f64) -> Option<Vector> {
    type Sums = (f64, usize);
    let mut by_proto: BTreeMap<u8, (Sums, BTreeMap<Option<Key>, Sums>)> = BTreeMap::new();
    for i in pool {
        let (total, keys) = by_proto.entry(i.f.proto).or_default();
        let key = keys.entry(key_of(i.f)).or_default();
        for s in [total, key] {
            s.0 += i.weight;
            s.1 += usize::from(i.baseline);
        }
    }
    let beyond_noise = |(w, b): Sums| w - noise_of(b, noise);
    let mut best: Option<Vector> = None;
    let mut consider = |v: Vector| {
        if best.as_ref().is_none_or(|b| v.excess > b.excess) {
            best = Some(v);
        }
    };
    for (proto, (total, keys)) in by_proto {
        if total.0 <= 0.0 {
            continue;
        }
        let mut others = BTreeSet::new();
        let mut rest = total;
        for (key, sums) in keys {
            if let Some(key) = key.filter(|_| sums.0 > 0.0 && sums.0 >= VECTOR_SPLIT * total.0) {
                others.insert(key);
                rest = (rest.0 - sums.0, rest.1 - sums.1);
                consider(Vector {
                    proto,
                    key: Some(key),
                    others: BTreeSet::new(),
                    excess: beyond_noise(sums),
                });
            }
        }
        consider(Vector {
            proto,
            key: None,
            others,
            excess: beyond_noise(rest),
        });
    }
    best
}

/// Samples of one dimension merged by value, in order: (value, weight, baseline samples).
type Bin = (u32, f64, usize);

fn bins(mut points: Vec<(u32, f64, bool)>) -> Vec<Bin> {
    points.sort_unstable_by_key(|p| p.0);
    let mut bins: Vec<Bin> = Vec::new();
    for (v, w, baseline) in points {
        match bins.last_mut() {
            Some(last) if last.0 == v => {
                last.1 += w;
                last.2 += usize::from(baseline);
            }
            _ => bins.push((v, w, usize::from(baseline))),
        }
    }
    bins
}

/// The noise of the estimated legitimate part of samples holding `baseline` baseline samples,
/// `noise` the variance one baseline sample adds: three standard deviations (the window's
/// legitimate packets there are a Poisson count, and so is the baseline that estimates them).
fn noise_of(baseline: usize, noise: f64) -> f64 {
    NOISE_Z * (noise * baseline as f64).sqrt()
}

/// Leaving out samples of this weight with `forgivable` of noise: the loss of attack charged
/// (the weight beyond the noise), and the noise that took.
fn charge(weight: f64, forgivable: f64) -> (f64, f64) {
    (
        (weight - forgivable).max(0.0),
        weight.clamp(0.0, forgivable.max(0.0)),
    )
}

/// Which bins lie where the legitimate traffic is: those holding baseline samples, and those
/// between two that are closer than a few times the baseline's mean spacing (with few
/// samples, a value the baseline happened to miss is still its ground).
fn legitimate_ground(bins: &[Bin]) -> Vec<bool> {
    let marked: Vec<u32> = bins.iter().filter(|b| b.2 > 0).map(|b| b.0).collect();
    let (Some(&first), Some(&last)) = (marked.first(), marked.last()) else {
        return vec![false; bins.len()];
    };
    let samples: usize = bins.iter().map(|b| b.2).sum();
    let gap = 2 + 4 * u64::from(last - first) / samples as u64;
    let mut next = 0;
    bins.iter()
        .map(|b| {
            while next < marked.len() && marked[next] < b.0 {
                next += 1;
            }
            if marked.get(next) == Some(&b.0) {
                return true;
            }
            match (next.checked_sub(1).map(|i| marked[i]), marked.get(next)) {
                (Some(lo), Some(&hi)) => u64::from(hi - lo) <= gap,
                _ => false,
            }
        })
        .collect()
}

/// The shortest `[lo, hi]` of `bins` (ties: the lowest) whose charge for the bins it leaves
/// out is at most `allowed`; with that charge and the noise it forgave. The bins left out are charged by runs: a run on
/// the legitimate traffic's ground as one `charge` (what the window's legitimate traffic there
/// weighs is noise), a run off it in full. A range next to the legitimate traffic
/// then cannot shave the attack's own values on the strength of that traffic's noise.
///
/// The charge for what lies below a start and above an end need not grow with them (weights
/// may be negative), so: for each end, the latest start cheap enough, from a stack of the
/// starts no later start beats (later and no dearer); O(n log n).
fn shortest_interval(bins: &[Bin], allowed: f64, noise: f64) -> Option<((u32, u32), f64, f64)> {
    let m = bins.len();
    let dirty = legitimate_ground(bins);
    let dirty = |i: usize| dirty[i];
    // Runs of bins on and off that ground, and the charge of each whole run summed from the
    // first: the charge of a side is its whole runs plus a part of one.
    // Weight and baseline samples of the bins before i.
    let mut sums = Vec::with_capacity(m + 1);
    sums.push((0.0, 0usize));
    for b in bins {
        let (w, n) = sums.last().copied().unwrap_or((0.0, 0));
        sums.push((w + b.1, n + b.2));
    }
    // Bins from..to, all of one run.
    let run_charge = |from: usize, to: usize| {
        if from >= to {
            return (0.0, 0.0);
        }
        let (w, b) = (sums[to].0 - sums[from].0, sums[to].1 - sums[from].1);
        let forgivable = if dirty(from) { noise_of(b, noise) } else { 0.0 };
        charge(w, forgivable)
    };
    let mut run_start = vec![0; m];
    for i in 1..m {
        run_start[i] = if dirty(i) == dirty(i - 1) {
            run_start[i - 1]
        } else {
            i
        };
    }
    let mut run_end = vec![m; m];
    for i in (0..m.saturating_sub(1)).rev() {
        run_end[i] = if dirty(i) == dirty(i + 1) {
            run_end[i + 1]
        } else {
            i + 1
        };
    }
    // Charge of all whole runs before bin i starts (`before`) and after bin i ends (`after`).
    let mut before = vec![0.0; m];
    for i in 1..m {
        before[i] = if run_start[i] == i {
            before[i - 1] + run_charge(run_start[i - 1], i).0
        } else {
            before[i - 1]
        };
    }
    let mut after = vec![0.0; m];
    for i in (0..m.saturating_sub(1)).rev() {
        after[i] = if run_end[i] == i + 1 {
            after[i + 1] + run_charge(i + 1, run_end[i + 1]).0
        } else {
            after[i + 1]
        };
    }
    // Left out below a start at i: whole runs before its run, and its run up to i.
    let left = |i: usize| before[i] + run_charge(run_start[i], i).0;
    // Left out above an end at j: its run after j, and whole runs after its run.
    let right = |j: usize| run_charge(j + 1, run_end[j]).0 + after[j];
    let mut starts: Vec<(usize, f64)> = Vec::new();
    let mut best: Option<(usize, usize, f64)> = None;
    for end in 0..m {
        let l = left(end);
        while starts.last().is_some_and(|s| s.1 >= l) {
            starts.pop();
        }
        starts.push((end, l));
        let r = right(end);
        // The stack's charges rise with its starts: the latest start cheap enough is the last
        // of those within what the right side leaves.
        let k = starts.partition_point(|s| s.1 + r <= allowed);
        if let Some(&(start, l)) = k.checked_sub(1).map(|k| &starts[k]) {
            let width = |s: usize, e: usize| bins[e].0 - bins[s].0;
            if best.is_none_or(|(s, e, _)| width(start, end) < width(s, e)) {
                best = Some((start, end, l + r));
            }
        }
    }
    let (start, end, total) = best?;
    // The noise the runs left out forgave.
    let mut forgiven = 0.0;
    let mut i = 0;
    while i < m {
        if (start..=end).contains(&i) {
            i = end + 1;
            continue;
        }
        let to = if i < start {
            run_end[i].min(start)
        } else {
            run_end[i]
        };
        forgiven += run_charge(i, to).1;
        i = to;
    }
    Some(((bins[start].0, bins[end].0), total, forgiven))
}

/// The heaviest source prefix of one length: its weight and baseline samples, and those of
/// its sibling (the other half of the prefix one bit shorter).
struct Prefix {
    net: IpNet,
    weight: f64,
    baseline: usize,
    sibling: (f64, usize),
}

/// For each prefix length from the longest to /8 (IPv6 /32), the prefix whose sources weigh
/// the most (ties: the lowest).
fn prefixes(items: &[Item]) -> Vec<Prefix> {
    let Some(first) = items.first() else {
        return Vec::new();
    };
    let v4 = first.f.src.is_ipv4();
    if items.iter().any(|i| i.f.src.is_ipv4() != v4) {
        return Vec::new();
    }
    let (bits, shortest) = if v4 { (32u32, 8u32) } else { (128, 32) };
    let mut addrs: Vec<(u128, f64, usize)> = items
        .iter()
        .map(|i| {
            let a = match i.f.src {
                IpAddr::V4(a) => u128::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a),
            };
            (a, i.weight, usize::from(i.baseline))
        })
        .collect();
    addrs.sort_unstable_by_key(|a| a.0);
    let mut out = Vec::new();
    let mut runs: Vec<(u128, f64, usize)> = Vec::new();
    for len in (shortest..=bits).rev() {
        let shift = bits - len;
        runs.clear();
        for &(a, w, b) in &addrs {
            match runs.last_mut() {
                Some(r) if r.0 == a >> shift => {
                    r.1 += w;
                    r.2 += b;
                }
                _ => runs.push((a >> shift, w, b)),
            }
        }
        let mut best: Option<(u128, f64, usize)> = None;
        for &r in &runs {
            if best.is_none_or(|b| r.1 > b.1) {
                best = Some(r);
            }
        }
        let Some((net, weight, baseline)) = best else {
            continue;
        };
        let sibling = runs
            .binary_search_by_key(&(net ^ 1), |r| r.0)
            .map_or((0.0, 0), |i| (runs[i].1, runs[i].2));
        let addr = net << shift;
        let ip = if v4 {
            IpAddr::V4((addr as u32).into())
        } else {
            IpAddr::V6(addr.into())
        };
        if let Ok(net) = IpNet::new(ip, len as u8) {
            out.push(Prefix {
                net,
                weight,
                baseline,
                sibling,
            });
        }
    }
    out
}

/// When an interval says something about a vector.
struct Informative {
    /// At most this wide: always.
    tight: u32,
    /// At most this wide (half the field): when it leaves out half the vector's baseline.
    loose: u32,
}

const PORTS: Informative = Informative {
    tight: 255,
    loose: 32767,
};
const LENGTH: Informative = Informative {
    tight: 255,
    loose: 750,
};
const TTL: Informative = Informative {
    tight: 31,
    loose: 127,
};

/// A vector's samples as the cuts narrow them, and what is left of the loss it may spend.
struct Cuts<'a> {
    items: Vec<Item<'a>>,
    /// Their weight, and how many are baseline samples.
    excess: f64,
    baseline: usize,
    budget: f64,
    dims_left: usize,
    /// The variance one baseline sample adds to an excess estimate.
    noise: f64,
    /// The noise the cuts may still forgive: that of the vector's estimate, once. Each region a
    /// cut leaves out has its own, but they are parts of one estimate: forgiven region by
    /// region without a bound, a vector no larger than its noise was cut down to nothing.
    forgivable: f64,
}

impl<'a> Cuts<'a> {
    fn new(items: Vec<Item<'a>>, budget: f64, dims: usize, noise: f64) -> Cuts<'a> {
        let baseline = items.iter().filter(|i| i.baseline).count();
        Cuts {
            excess: excess(&items),
            baseline,
            items,
            budget,
            dims_left: dims,
            noise,
            forgivable: noise_of(baseline, noise),
        }
    }

    /// What the next dimension may lose: an equal part of what is left of the budget.
    fn allowance(&mut self) -> f64 {
        let allowed = self.budget / self.dims_left.max(1) as f64;
        self.dims_left = self.dims_left.saturating_sub(1);
        allowed
    }

    /// The loss of attack charged for leaving out these regions (weight, baseline samples),
    /// and the noise that took. Where the window's legitimate traffic shares a vector's key
    /// (legitimate SYNs among spoofed ones, ACKs among an ACK flood), what a cut leaves out is
    /// legitimate and its weight is noise: charged in full, it failed the cut half the time.
    fn charge(&self, regions: impl IntoIterator<Item = (f64, usize)>) -> (f64, f64) {
        let (mut charged, mut forgiven) = (0.0, 0.0);
        for (w, b) in regions {
            let (c, f) = charge(w, noise_of(b, self.noise).min(self.forgivable - forgiven));
            charged += c;
            forgiven += f;
        }
        (charged, forgiven)
    }

    fn cut(&mut self, keep: impl Fn(&Features) -> bool, (charged, forgiven): (f64, f64)) {
        self.items.retain(|i| keep(i.f));
        self.excess = excess(&self.items);
        self.baseline = self.items.iter().filter(|i| i.baseline).count();
        self.budget = (self.budget - charged).max(0.0);
        self.forgivable = (self.forgivable - forgiven).max(0.0);
    }

    /// The value of `key` weighing the most, if keeping only it is charged at most `allowed`;
    /// cut to it. Each other value is charged on its own: a legitimate one is noise, an
    /// attack one is not.
    fn value<K: Ord + Copy>(
        &mut self,
        allowed: f64,
        key: impl Fn(&Features) -> Option<K>,
    ) -> Option<K> {
        let mut sums: BTreeMap<Option<K>, (f64, usize)> = BTreeMap::new();
        for i in &self.items {
            let s = sums.entry(key(i.f)).or_default();
            s.0 += i.weight;
            s.1 += usize::from(i.baseline);
        }
        let mut best: Option<(K, f64)> = None;
        for (&k, &(w, _)) in &sums {
            if let Some(k) = k.filter(|_| w > 0.0 && best.is_none_or(|b| w > b.1)) {
                best = Some((k, w));
            }
        }
        let (k, _) = best?;
        let charge = self.charge(sums.iter().filter(|(v, _)| **v != Some(k)).map(|(_, &s)| s));
        if charge.0 > allowed {
            return None;
        }
        self.cut(|f| key(f) == Some(k), charge);
        Some(k)
    }

    /// The longest source prefix charged at most the next dimension's allowance, whose
    /// sibling holds no more than that either; cut to it. What lies outside a prefix is
    /// charged as one: the legitimate clients everywhere are noise, and a window's client the
    /// baseline never saw is as likely in one prefix as in any. The sibling's test keeps that
    /// noise from hiding the other half of a botnet's /24.
    fn source(&mut self) -> Option<IpNet> {
        let allowed = self.allowance();
        let (net, charge) = prefixes(&self.items)
            .into_iter()
            .filter(|p| p.weight > 0.0 && self.charge([p.sibling]).0 <= allowed)
            .map(|p| {
                let out = (
                    self.excess - p.weight,
                    self.baseline.saturating_sub(p.baseline),
                );
                (p.net, self.charge([out]))
            })
            .find(|p| p.1.0 <= allowed)?;
        self.cut(|f| net.contains(&f.src), charge);
        Some(net)
    }

    /// The shortest interval of `key` charged at most the next dimension's allowance, if it
    /// says something (`info`); cut to it.
    fn interval(
        &mut self,
        info: &Informative,
        key: impl Fn(&Features) -> Option<u32>,
    ) -> Option<(u32, u32)> {
        let allowed = self.allowance();
        let bins = bins(
            self.items
                .iter()
                .filter_map(|i| key(i.f).map(|v| (v, i.weight, i.baseline)))
                .collect(),
        );
        // Samples without the field (a later fragment has no ports) are left out by any range.
        let with = bins.iter().fold((0.0, 0), |(w, n), b| (w + b.1, n + b.2));
        let without = self.charge([(self.excess - with.0, self.baseline - with.1)]);
        let allowed = allowed - without.0;
        // Forgiving each run left out its noise, unless that is more than is left to forgive.
        let ((lo, hi), charged, forgiven) = shortest_interval(&bins, allowed, self.noise)
            .filter(|r| without.1 + r.2 <= self.forgivable)
            .or_else(|| shortest_interval(&bins, allowed, 0.0))?;
        let width = hi - lo;
        let baseline_kept: usize = bins
            .iter()
            .filter(|b| within(b.0, (lo, hi)))
            .map(|b| b.2)
            .sum();
        let spares_baseline = self.baseline > 0 && baseline_kept * 2 <= self.baseline;
        if width > info.tight && (width > info.loose || !spares_baseline) {
            return None;
        }
        self.cut(
            |f| key(f).is_some_and(|v| within(v, (lo, hi))),
            (without.0 + charged, without.1 + forgiven),
        );
        Some((lo, hi))
    }
}

/// The most specific fingerprint of one vector that loses at most `budget` of its excess.
fn build(items: Vec<Item>, proto: u8, budget: f64, noise: f64) -> Fingerprint {
    let has_ports = proto == proto::TCP || proto == proto::UDP;
    let is_icmp = proto == proto::ICMP || proto == proto::ICMPV6;
    // fragment, source, length, TTL; + flags; + type; + ports
    let dims =
        4 + usize::from(proto == proto::TCP) + usize::from(is_icmp) + 2 * usize::from(has_ports);
    let mut c = Cuts::new(items, budget, dims, noise);
    let mut fp = Fingerprint {
        proto: Some(proto),
        ..Fingerprint::default()
    };
    let allowed = c.allowance();
    if c.value(allowed, |f| f.fragment.then_some(())).is_some() {
        fp.fragment = Some(true);
    }
    if is_icmp {
        let allowed = c.allowance();
        fp.icmp_type = c.value(allowed, |f| f.icmp_type);
    }
    if proto == proto::TCP {
        let allowed = c.allowance();
        fp.tcp_flags = [FLAGS_DETAIL, FLAGS_KIND].into_iter().find_map(|mask| {
            c.value(allowed, |f| f.tcp_flags.map(|fl| fl & mask))
                .map(|v| (v, mask))
        });
    }
    fp.src = c.source();
    let u16s = |r: (u32, u32)| (r.0 as u16, r.1 as u16);
    if has_ports {
        fp.sport = c.interval(&PORTS, |f| f.sport.map(u32::from)).map(u16s);
        fp.dport = c.interval(&PORTS, |f| f.dport.map(u32::from)).map(u16s);
    }
    fp.length = c.interval(&LENGTH, |f| Some(u32::from(f.ip_len))).map(u16s);
    fp.ttl = c
        .interval(&TTL, |f| Some(u32::from(f.ttl)))
        .map(|(lo, hi)| (lo as u8, hi as u8));
    fp
}

/// Shares of the attack's excess and of the baseline a set of fingerprints matches.
struct Measure<'a> {
    attack: &'a [Features],
    baseline: &'a [Features],
    s: f64,
}

impl Measure<'_> {
    fn of(&self, fps: &[&Fingerprint]) -> (f64, f64) {
        let share = |set: &[Features]| {
            if set.is_empty() {
                return 0.0;
            }
            let n = set
                .iter()
                .filter(|f| fps.iter().any(|fp| fp.matches(f)))
                .count();
            n as f64 / set.len() as f64
        };
        let (m_a, m_b) = (share(self.attack), share(self.baseline));
        (((m_a - m_b * self.s) / (1.0 - self.s)).clamp(0.0, 1.0), m_b)
    }
}

/// A percentage as the log shows it: no more digits than it needs.
fn pct(x: f64) -> String {
    let p = x * 100.0;
    if p >= 10.0 || p == 0.0 {
        format!("{p:.0}%")
    } else if p >= 1.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.2}%")
    }
}

/// `baseline_share`: the estimated part of the attack-window traffic that is baseline
/// (baseline rate / current rate, 0..1): the attack is the excess.
pub fn search(
    attack: &[Features],
    baseline: &[Features],
    baseline_share: f64,
    p: &Params,
) -> Outcome {
    let s = if baseline.is_empty() || !baseline_share.is_finite() {
        0.0
    } else {
        baseline_share.clamp(0.0, SHARE_MAX)
    };
    let need = ((p.min_samples as f64 / (1.0 - s)).ceil() as usize).max(1);
    if attack.len() < need {
        return Outcome::TooFewSamples {
            have: attack.len(),
            need,
        };
    }
    let measure = Measure {
        attack,
        baseline,
        s,
    };
    let total = attack.len() as f64 * (1.0 - s);
    let legit_weight = if baseline.is_empty() {
        0.0
    } else {
        s * attack.len() as f64 / baseline.len() as f64
    };
    // In a canonical order: float sums, and so ties, must not depend on the samples' order.
    let order = |f: &&Features| {
        (
            f.proto,
            f.src,
            f.sport,
            f.dport,
            f.ip_len,
            f.ttl,
            f.tcp_flags,
            f.fragment,
            f.icmp_type,
            f.dst,
        )
    };
    let mut attack_sorted: Vec<&Features> = attack.iter().collect();
    attack_sorted.sort_unstable_by_key(order);
    let mut baseline_sorted: Vec<&Features> = baseline.iter().collect();
    baseline_sorted.sort_unstable_by_key(order);
    let mut pool: Vec<Item> = attack_sorted
        .into_iter()
        .map(|f| Item {
            f,
            weight: 1.0,
            baseline: false,
        })
        .chain(baseline_sorted.into_iter().map(|f| Item {
            f,
            weight: -legit_weight,
            baseline: true,
        }))
        .collect();
    // The variance a baseline sample adds to an excess estimate (see `noise_of`).
    let noise = legit_weight * (1.0 + legit_weight);
    let mut fps: Vec<Fingerprint> = Vec::new();
    while fps.len() < p.max_fingerprints {
        if !fps.is_empty() && measure.of(&fps.iter().collect::<Vec<_>>()).0 >= p.coverage {
            break;
        }
        let Some(vector) = largest_vector(&pool, noise) else {
            break;
        };
        if vector.excess < (VECTOR_MIN * total).max(1.0) {
            break;
        }
        let items: Vec<Item> = pool.iter().copied().filter(|i| vector.holds(i.f)).collect();
        let budget = CUT_SHARE * (1.0 - p.coverage).max(0.0) * vector.excess;
        let mut fp = build(items, vector.proto, budget, noise);
        if !pool.iter().any(|i| !i.baseline && fp.matches(i.f)) {
            break;
        }
        (fp.coverage, fp.collateral) = measure.of(&[&fp]);
        pool.retain(|i| !fp.matches(i.f));
        fps.push(fp);
    }
    decide(fps, &measure, p)
}

fn decide(fps: Vec<Fingerprint>, measure: &Measure, p: &Params) -> Outcome {
    let dst = measure.attack[0].dst;
    let all: Vec<&Fingerprint> = fps.iter().collect();
    let (coverage, collateral) = measure.of(&all);
    let best = fps
        .iter()
        .filter(|f| f.collateral <= p.collateral)
        .max_by(|a, b| a.coverage.total_cmp(&b.coverage))
        .or_else(|| {
            fps.iter()
                .min_by(|a, b| a.collateral.total_cmp(&b.collateral))
        })
        .cloned();
    let syn_flood = fps.iter().find(|fp| {
        if fp.proto != Some(proto::TCP) || fp.narrow_sources() {
            return false;
        }
        let (mut syns, mut all) = (0usize, 0usize);
        for f in measure.attack.iter().filter(|f| fp.matches(f)) {
            all += 1;
            syns += usize::from(
                f.tcp_flags
                    .is_some_and(|fl| fl & (TCP_SYN | TCP_ACK) == TCP_SYN),
            );
        }
        syns * 2 > all
    });
    if let Some(fp) = syn_flood {
        return Outcome::NotFound {
            best: Some(fp.clone()),
            why: format!(
                "a spoofed SYN flood cannot be told from real connection attempts by its headers \
                 ({}): use the SYN guard",
                fp.describe(dst)
            ),
        };
    }
    if fps.is_empty() {
        return Outcome::NotFound {
            best: None,
            why: "nothing in the attack window stands out from the baseline".into(),
        };
    }
    if collateral > p.collateral {
        let worst = fps
            .iter()
            .max_by(|a, b| a.collateral.total_cmp(&b.collateral))
            .expect("not empty");
        return Outcome::NotFound {
            best,
            why: format!(
                "the fingerprint {} would match {} of the baseline (at most {}): the attack \
                 looks like the legitimate traffic",
                worst.describe(dst),
                pct(worst.collateral),
                pct(p.collateral)
            ),
        };
    }
    if coverage < p.coverage {
        let why = if fps.len() >= p.max_fingerprints {
            format!(
                "the attack has more vectors than the {} fingerprints allowed: they cover {} of \
                 it ({} needed)",
                p.max_fingerprints,
                pct(coverage),
                pct(p.coverage)
            )
        } else {
            format!(
                "the fingerprints cover {} of the attack ({} needed): the rest has nothing in \
                 common to match",
                pct(coverage),
                pct(p.coverage)
            )
        };
        return Outcome::NotFound { best, why };
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

        fn port(&mut self) -> u16 {
            self.range(1024, 65535) as u16
        }

        fn ttl(&mut self, lo: u8, hi: u8) -> u8 {
            self.range(lo.into(), hi.into()) as u8
        }

        /// Anywhere from 1.0.0.0 on.
        fn anywhere(&mut self) -> Ipv4Addr {
            Ipv4Addr::from((self.next() as u32).max(0x0100_0000))
        }
    }

    const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 10);

    fn udp(src: Ipv4Addr, sport: u16, dport: u16, len: u16, ttl: u8) -> Features {
        Features {
            src: src.into(),
            dst: DST.into(),
            proto: proto::UDP,
            sport: Some(sport),
            dport: Some(dport),
            ip_len: len,
            ttl,
            tcp_flags: None,
            fragment: false,
            icmp_type: None,
        }
    }

    fn tcp(src: Ipv4Addr, sport: u16, dport: u16, flags: u8, len: u16, ttl: u8) -> Features {
        Features {
            proto: proto::TCP,
            tcp_flags: Some(flags),
            ..udp(src, sport, dport, len, ttl)
        }
    }

    // The traffic: attack vectors and legitimate mixes, one sample per call.
    type Gen = fn(&mut Rng) -> Features;

    /// NTP monlist replies from reflectors everywhere.
    fn ntp_monlist(r: &mut Rng) -> Features {
        let (src, port) = (r.anywhere(), r.port());
        udp(src, 123, port, r.range(468, 490) as u16, r.ttl(40, 60))
    }

    /// DNS ANY replies from open resolvers everywhere (first fragments of bigger ones too).
    fn dns_reflection(r: &mut Rng) -> Features {
        let (src, port) = (r.anywhere(), r.port());
        udp(src, 53, port, r.range(1200, 1500) as u16, r.ttl(40, 60))
    }

    /// memcached replies aimed at the QUIC port.
    fn memcached_to_quic(r: &mut Rng) -> Features {
        let src = r.anywhere();
        udp(src, 11211, 443, 1428, r.ttl(30, 60))
    }

    /// A botnet in one /24, random ports and lengths.
    fn botnet_24(r: &mut Rng) -> Features {
        let src = Ipv4Addr::new(203, 0, 113, r.range(1, 254) as u8);
        let (sport, dport) = (r.port(), r.range(1, 65535) as u16);
        udp(src, sport, dport, r.range(64, 1400) as u16, r.ttl(52, 58))
    }

    /// A botnet in one IPv6 /48.
    fn botnet_48(r: &mut Rng) -> Features {
        let host = r.next();
        let src = Ipv6Addr::new(
            0x2001,
            0xdb8,
            0x77,
            (host >> 48) as u16,
            (host >> 32) as u16,
            (host >> 16) as u16,
            host as u16,
            r.next() as u16,
        );
        Features {
            src: src.into(),
            dst: DST6.into(),
            ..botnet_24(r)
        }
    }

    /// Spoofed SYNs, no options (40 bytes), any TTL.
    fn syn_spoofed(r: &mut Rng) -> Features {
        let (src, port) = (r.anywhere(), r.port());
        tcp(src, port, 80, TCP_SYN, 40, r.ttl(1, 255))
    }

    /// SYNs from one /24.
    fn syn_from_24(r: &mut Rng) -> Features {
        let src = Ipv4Addr::new(203, 0, 113, r.range(1, 254) as u8);
        tcp(src, r.port(), 80, TCP_SYN, 40, r.ttl(52, 58))
    }

    /// Bare ACKs without options (40 bytes) from everywhere.
    fn ack_flood(r: &mut Rng) -> Features {
        let (src, port) = (r.anywhere(), r.port());
        tcp(src, port, 80, TCP_ACK, 40, r.ttl(1, 255))
    }

    fn icmp_echo(r: &mut Rng) -> Features {
        Features {
            proto: proto::ICMP,
            sport: None,
            dport: None,
            icmp_type: Some(8),
            ..udp(r.anywhere(), 0, 0, 84, r.ttl(40, 64))
        }
    }

    /// Later fragments of big UDP datagrams.
    fn fragments(r: &mut Rng) -> Features {
        Features {
            sport: None,
            dport: None,
            fragment: true,
            ..udp(r.anywhere(), 0, 0, 1500, r.ttl(40, 64))
        }
    }

    /// Clients of a DNS service (udp/53) in a few networks.
    fn dns_clients(r: &mut Rng) -> Features {
        let src = Ipv4Addr::new(198, 51, r.range(0, 3) as u8, r.range(1, 254) as u8);
        let port = r.port();
        udp(src, port, 53, r.range(60, 90) as u16, r.ttl(50, 64))
    }

    /// Real NTP replies (48-byte payload) from a few servers.
    fn ntp_replies(r: &mut Rng) -> Features {
        let src = Ipv4Addr::new(192, 0, 2, r.range(1, 20) as u8);
        let port = r.port();
        udp(src, 123, port, 76, r.ttl(50, 60))
    }

    /// Replies to a resolver's own queries, from a few authoritative servers.
    fn resolver_replies(r: &mut Rng) -> Features {
        let src = Ipv4Addr::new(192, 0, 2, r.range(1, 50) as u8);
        let port = r.port();
        udp(src, 53, port, r.range(60, 512) as u16, r.ttl(50, 60))
    }

    /// QUIC clients of udp/443.
    fn quic_clients(r: &mut Rng) -> Features {
        let (src, port) = (r.anywhere(), r.port());
        udp(src, port, 443, r.range(1200, 1350) as u16, r.ttl(45, 64))
    }

    /// A web server's clients: connection attempts (SYN with options, 60 bytes), ACKs with
    /// timestamps (52), requests, closes.
    fn web_clients(r: &mut Rng) -> Features {
        let (src, port, ttl) = (r.anywhere(), r.port(), r.ttl(40, 64));
        match r.range(0, 9) {
            0 => tcp(src, port, 80, TCP_SYN, 60, ttl),
            1..=4 => tcp(src, port, 80, TCP_ACK, 52, ttl),
            5..=8 => tcp(
                src,
                port,
                80,
                TCP_PSH | TCP_ACK,
                r.range(200, 600) as u16,
                ttl,
            ),
            _ => tcp(src, port, 80, TCP_FIN | TCP_ACK, 52, ttl),
        }
    }

    fn v6_clients(r: &mut Rng) -> Features {
        let src = Ipv6Addr::new(0x2001, 0xdb8, 0x1000, r.next() as u16, 0, 0, 0, 1);
        Features {
            src: src.into(),
            dst: DST6.into(),
            ..dns_clients(r)
        }
    }

    /// What a fingerprint must say.
    #[derive(Debug)]
    enum Want {
        Proto(u8),
        Src(&'static str),
        NoSrc,
        Sport(u16, u16),
        NoSport,
        Dport(u16, u16),
        NoDport,
        /// Its length range lies within.
        LenWithin(u16, u16),
        NoLen,
        Flags(u8, u8),
        Fragment,
        IcmpType(u8),
        Describes(&'static str),
    }

    impl Want {
        fn holds(&self, fp: &Fingerprint) -> bool {
            match *self {
                Want::Proto(p) => fp.proto == Some(p),
                Want::Src(n) => fp.src == Some(n.parse().expect("a prefix")),
                Want::NoSrc => fp.src.is_none(),
                Want::Sport(lo, hi) => fp.sport == Some((lo, hi)),
                Want::NoSport => fp.sport.is_none(),
                Want::Dport(lo, hi) => fp.dport == Some((lo, hi)),
                Want::NoDport => fp.dport.is_none(),
                Want::LenWithin(lo, hi) => fp.length.is_some_and(|(a, b)| lo <= a && b <= hi),
                Want::NoLen => fp.length.is_none(),
                Want::Flags(v, m) => fp.tcp_flags == Some((v, m)),
                Want::Fragment => fp.fragment == Some(true),
                Want::IcmpType(t) => fp.icmp_type == Some(t),
                Want::Describes(s) => fp.describe(DST.into()).starts_with(s),
            }
        }
    }

    enum Expect {
        /// The fingerprints, in any order.
        Found(&'static [&'static [Want]]),
        /// `why` says this.
        NotFound(&'static str),
        TooFew {
            have: usize,
            need: usize,
        },
    }

    struct Case {
        what: &'static str,
        /// The attack's vectors and their weights.
        attack: &'static [(Gen, u32)],
        /// The destination's usual traffic: the baseline, and `share` of the attack window.
        legit: Option<Gen>,
        share: f64,
        /// Attack-window samples.
        samples: usize,
        max_fingerprints: usize,
        expect: Expect,
    }

    const CASE: Case = Case {
        what: "",
        attack: &[],
        legit: Some(dns_clients),
        share: 0.1,
        samples: 4000,
        max_fingerprints: 4,
        expect: Expect::NotFound(""),
    };

    const BASELINE_SAMPLES: usize = 3000;

    /// The attack window (`share` of it legitimate) and the baseline of a case.
    fn samples(c: &Case, seed: u64) -> (Vec<Features>, Vec<Features>) {
        let r = &mut Rng(seed);
        let baseline: Vec<Features> = match c.legit {
            Some(g) => (0..BASELINE_SAMPLES).map(|_| g(r)).collect(),
            None => Vec::new(),
        };
        let legit = match c.legit {
            Some(_) => (c.samples as f64 * c.share).round() as usize,
            None => 0,
        };
        let weights: u32 = c.attack.iter().map(|(_, w)| w).sum();
        let mut window = Vec::with_capacity(c.samples);
        for (g, w) in c.attack {
            let n = (c.samples - legit) * *w as usize / weights as usize;
            window.extend((0..n).map(|_| g(r)));
        }
        if let Some(g) = c.legit {
            window.extend((0..legit).map(|_| g(r)));
        }
        // Interleaved, as they arrive.
        for i in (1..window.len()).rev() {
            window.swap(i, r.range(0, i as u64) as usize);
        }
        (window, baseline)
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                what: "NTP monlist reflection vs DNS clients",
                attack: &[(ntp_monlist, 1)],
                expect: Expect::Found(&[&[
                    Want::Proto(17),
                    Want::NoSrc,
                    Want::Sport(123, 123),
                    Want::NoDport,
                    Want::LenWithin(468, 490),
                    Want::Describes("udp sport 123 len 468-490 ttl 40-60 -> 198.18.0.10"),
                ]]),
                ..CASE
            },
            Case {
                what: "NTP monlist with 40% legitimate traffic in the window",
                attack: &[(ntp_monlist, 1)],
                share: 0.4,
                expect: Expect::Found(&[&[
                    Want::Sport(123, 123),
                    Want::Describes("udp sport 123 len 468-490 ttl 40-60"),
                ]]),
                ..CASE
            },
            Case {
                what: "legitimate NTP replies (sport 123, 76 bytes) in the baseline: length sets them apart",
                attack: &[(ntp_monlist, 1)],
                legit: Some(ntp_replies),
                share: 0.2,
                expect: Expect::Found(&[&[Want::Sport(123, 123), Want::LenWithin(468, 490)]]),
                ..CASE
            },
            Case {
                what: "memcached reflection onto udp/443 where QUIC clients are: not just dport 443",
                attack: &[(memcached_to_quic, 1)],
                legit: Some(quic_clients),
                share: 0.2,
                expect: Expect::Found(&[&[
                    Want::Sport(11211, 11211),
                    Want::Dport(443, 443),
                    Want::LenWithin(1428, 1428),
                ]]),
                ..CASE
            },
            Case {
                what: "NTP and DNS reflection at once: a fingerprint each",
                attack: &[(ntp_monlist, 1), (dns_reflection, 1)],
                expect: Expect::Found(&[
                    &[Want::Sport(123, 123), Want::LenWithin(468, 490)],
                    // 1200-1500 is wider than a length range says by itself.
                    &[Want::Sport(53, 53), Want::NoDport, Want::NoLen],
                ]),
                ..CASE
            },
            Case {
                what: "DNS reflection at a resolver: its own replies (sport 53, up to 512 bytes) spared by length",
                attack: &[(dns_reflection, 1)],
                legit: Some(resolver_replies),
                share: 0.3,
                expect: Expect::Found(&[&[Want::Sport(53, 53), Want::LenWithin(1200, 1500)]]),
                ..CASE
            },
            Case {
                what: "three reflection vectors, two fingerprints allowed",
                attack: &[
                    (ntp_monlist, 1),
                    (dns_reflection, 1),
                    (memcached_to_quic, 1),
                ],
                max_fingerprints: 2,
                expect: Expect::NotFound("more vectors than the 2 fingerprints"),
                ..CASE
            },
            Case {
                what: "a botnet in one /24, random ports and lengths",
                attack: &[(botnet_24, 1)],
                expect: Expect::Found(&[&[
                    Want::Src("203.0.113.0/24"),
                    Want::NoSport,
                    Want::NoDport,
                    Want::NoLen,
                ]]),
                ..CASE
            },
            Case {
                what: "a botnet in one IPv6 /48",
                attack: &[(botnet_48, 1)],
                legit: Some(v6_clients),
                expect: Expect::Found(&[&[Want::Src("2001:db8:77::/48"), Want::NoSport]]),
                ..CASE
            },
            Case {
                what: "spoofed SYN flood on tcp/80, real connections in the baseline",
                attack: &[(syn_spoofed, 1)],
                legit: Some(web_clients),
                share: 0.2,
                expect: Expect::NotFound("use the SYN guard"),
                ..CASE
            },
            Case {
                what: "spoofed SYN flood with no baseline: still the SYN guard",
                attack: &[(syn_spoofed, 1)],
                legit: None,
                expect: Expect::NotFound("use the SYN guard"),
                ..CASE
            },
            Case {
                what: "SYN flood from one /24: that /24 may be dropped",
                attack: &[(syn_from_24, 1)],
                legit: Some(web_clients),
                expect: Expect::Found(&[&[
                    Want::Src("203.0.113.0/24"),
                    Want::Flags(TCP_SYN, FLAGS_DETAIL),
                    Want::Dport(80, 80),
                ]]),
                ..CASE
            },
            Case {
                what: "ACK flood without options vs clients with timestamps",
                attack: &[(ack_flood, 1)],
                legit: Some(web_clients),
                share: 0.2,
                expect: Expect::Found(&[&[
                    Want::Flags(TCP_ACK, FLAGS_DETAIL),
                    Want::Dport(80, 80),
                    Want::LenWithin(40, 40),
                ]]),
                ..CASE
            },
            Case {
                what: "ICMP echo flood",
                attack: &[(icmp_echo, 1)],
                expect: Expect::Found(&[&[
                    Want::Proto(1),
                    Want::IcmpType(8),
                    Want::Describes("icmp type 8 len 84 ttl 40-64"),
                ]]),
                ..CASE
            },
            Case {
                what: "fragment flood",
                attack: &[(fragments, 1)],
                expect: Expect::Found(&[&[
                    Want::Proto(17),
                    Want::Fragment,
                    Want::Describes("udp fragment len 1500"),
                ]]),
                ..CASE
            },
            Case {
                what: "NTP reflection and SYN flood at once: the SYN part is for the guard",
                attack: &[(ntp_monlist, 1), (syn_spoofed, 1)],
                expect: Expect::NotFound("use the SYN guard"),
                ..CASE
            },
            Case {
                what: "no baseline seen: collateral 0",
                attack: &[(ntp_monlist, 1)],
                legit: None,
                expect: Expect::Found(&[&[Want::Sport(123, 123)]]),
                ..CASE
            },
            Case {
                what: "too few samples",
                attack: &[(ntp_monlist, 1)],
                share: 0.0,
                samples: 30,
                expect: Expect::TooFew { have: 30, need: 50 },
                ..CASE
            },
            Case {
                what: "too few samples of the excess: half the window is legitimate",
                attack: &[(ntp_monlist, 1)],
                share: 0.5,
                samples: 80,
                expect: Expect::TooFew {
                    have: 80,
                    need: 100,
                },
                ..CASE
            },
            Case {
                what: "an attack like the baseline (same ports, lengths, TTLs)",
                attack: &[(dns_clients, 1)],
                expect: Expect::NotFound("would match"),
                ..CASE
            },
        ]
    }

    fn params(c: &Case) -> Params {
        Params {
            max_fingerprints: c.max_fingerprints,
            ..Params::default()
        }
    }

    /// What is wrong with the outcome of a case, if anything.
    fn check(c: &Case, seed: u64) -> Option<String> {
        let (attack, baseline) = samples(c, seed);
        let p = params(c);
        match (&c.expect, search(&attack, &baseline, c.share, &p)) {
            (
                Expect::Found(wanted),
                Outcome::Found {
                    fingerprints,
                    coverage,
                    collateral,
                },
            ) => {
                let shown: Vec<String> = fingerprints
                    .iter()
                    .map(|f| f.describe(DST.into()))
                    .collect();
                if fingerprints.len() != wanted.len() {
                    return Some(format!("{} fingerprints: {shown:?}", fingerprints.len()));
                }
                if coverage < p.coverage || collateral > p.collateral {
                    return Some(format!("coverage {coverage}, collateral {collateral}"));
                }
                if c.legit.is_none() && collateral != 0.0 {
                    return Some(format!("collateral {collateral} with no baseline"));
                }
                let mut unused: Vec<&Fingerprint> = fingerprints.iter().collect();
                for want in wanted.iter() {
                    let Some(i) = unused
                        .iter()
                        .position(|fp| want.iter().all(|w| w.holds(fp)))
                    else {
                        return Some(format!("none of {shown:?} is {want:?}"));
                    };
                    unused.remove(i);
                }
                None
            }
            (Expect::NotFound(says), Outcome::NotFound { why, .. }) => {
                (!why.contains(says)).then(|| format!("why: {why}"))
            }
            (Expect::TooFew { have, need }, Outcome::TooFewSamples { have: h, need: n }) => {
                ((h, n) != (*have, *need)).then(|| format!("too few: {h} of {n}"))
            }
            (_, other) => Some(format!("{other:?}")),
        }
    }

    /// Every case on samples from several seeds: the decisions must not hang on one draw.
    #[test]
    fn search_table() {
        let failed: Vec<String> = cases()
            .iter()
            .flat_map(|c| (1..=8).filter_map(move |seed| check(c, seed).map(|e| (c.what, seed, e))))
            .map(|(what, seed, e)| format!("{what} (seed {seed}): {e}"))
            .collect();
        assert!(failed.is_empty(), "\n{}", failed.join("\n"));
    }

    #[test]
    fn coverage_is_measured_on_the_excess() {
        let c = Case {
            attack: &[(ntp_monlist, 1)],
            share: 0.3,
            ..CASE
        };
        let (attack, baseline) = samples(&c, 99);
        // Half of the DNS clients' samples (and of the window's legitimate part) match.
        let fp = Fingerprint {
            proto: Some(17),
            ttl: Some((40, 57)),
            ..Fingerprint::default()
        };
        let m = Measure {
            attack: &attack,
            baseline: &baseline,
            s: 0.3,
        };
        let (cov, col) = m.of(&[&fp]);
        let share = |set: &[Features]| {
            set.iter().filter(|f| fp.matches(f)).count() as f64 / set.len() as f64
        };
        let (m_a, m_b) = (share(&attack), share(&baseline));
        assert!(m_b > 0.3 && m_b < 0.7, "{m_b}");
        assert_eq!(col, m_b);
        assert!(((m_a - m_b * 0.3) / 0.7 - cov).abs() < 1e-12);
        // The excess is the NTP part: 18 of its 21 TTLs.
        assert!((cov - 18.0 / 21.0).abs() < 0.03, "{cov}");
    }

    #[test]
    fn the_same_whatever_the_order_of_the_samples() {
        let c = Case {
            attack: &[(ntp_monlist, 1), (dns_reflection, 1), (botnet_24, 1)],
            ..CASE
        };
        let (mut attack, mut baseline) = samples(&c, 7);
        let p = Params::default();
        let first = format!("{:?}", search(&attack, &baseline, 0.1, &p));
        assert!(first.starts_with("Found"), "{first}");
        attack.reverse();
        baseline.reverse();
        assert_eq!(format!("{:?}", search(&attack, &baseline, 0.1, &p)), first);
    }

    #[test]
    fn ten_thousand_samples_each_take_milliseconds() {
        let c = Case {
            attack: &[(ntp_monlist, 2), (dns_reflection, 1), (botnet_24, 1)],
            samples: 10_000,
            ..CASE
        };
        let r = &mut Rng(5);
        let (attack, _) = samples(&c, 5);
        let baseline: Vec<Features> = (0..10_000).map(|_| dns_clients(r)).collect();
        let t = std::time::Instant::now();
        let outcome = search(&attack, &baseline, 0.1, &Params::default());
        let took = t.elapsed();
        assert!(matches!(outcome, Outcome::Found { .. }), "{outcome:?}");
        // Unoptimised test build on a shared machine: a generous bound.
        assert!(took.as_millis() < 2000, "{took:?}");
    }

    #[test]
    fn intervals_weigh_baseline_samples_against() {
        // 10 attack samples at 100..=109; at 105, legitimate weight outweighing its attack one.
        let mut points: Vec<(u32, f64, bool)> = (100..110).map(|v| (v, 1.0, false)).collect();
        points.push((105, -3.0, true));
        let b = bins(points);
        assert_eq!(b[5], (105, -2.0, 1));
        // Leaving out at most 3: 100-106 (107-109), 103-109 as long. Not 100-103: 105 weighs
        // less than nothing, but legitimate traffic does not make up for attack left out.
        assert_eq!(
            shortest_interval(&b, 3.0, 0.0),
            Some(((100, 106), 3.0, 0.0))
        );
        assert_eq!(
            shortest_interval(&b, 0.0, 0.0),
            Some(((100, 109), 0.0, 0.0))
        );
        let one = bins(vec![(7, 1.0, false)]);
        assert_eq!(shortest_interval(&one, 0.0, 0.0), Some(((7, 7), 0.0, 0.0)));
        // Legitimate values 90-94 weighing 5 by chance, within their noise (3 * sqrt(5) at a
        // variance of 1 per baseline sample): charged nothing when left out; the attack's own
        // values in full.
        let mut points: Vec<(u32, f64, bool)> = (100..110).map(|v| (v, 1.0, false)).collect();
        points.extend((90..95).flat_map(|v| [(v, 2.0, false), (v, -1.0, true)]));
        let b = bins(points);
        assert_eq!(
            shortest_interval(&b, 0.0, 1.0),
            Some(((100, 109), 0.0, 5.0))
        );
        assert_eq!(
            shortest_interval(&b, 1.0, 1.0),
            Some(((100, 108), 1.0, 5.0))
        );
        // Without noise their weight counts.
        assert_eq!(shortest_interval(&b, 0.0, 0.0), Some(((90, 109), 0.0, 0.0)));
        // The ground of the legitimate traffic: its values, and the gaps between them.
        let ground = |values: &[(u32, bool)]| {
            legitimate_ground(&bins(values.iter().map(|&(v, b)| (v, 1.0, b)).collect()))
        };
        // 11 samples over 60-120: a gap of up to 2 + 4 * 60 / 11 = 23 is their ground.
        let mut values = vec![(60, true), (61, false)];
        values.extend((62..=70).map(|v| (v, true)));
        values.extend([(90, false), (120, true)]);
        let mut want = vec![true; 11];
        want.extend([false, true]);
        assert_eq!(ground(&values), want);
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
