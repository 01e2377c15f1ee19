//! What `floodgate top` shows: per-reason rates from the exact counters, and the attack's
//! shape from packet samples (see [`crate::capture`]): top sources, destinations, ports,
//! protocols, TCP flags, lengths and TTLs, each figure scaled by the sampling rate.
//!
//! Heavy hitters are counted with Space-Saving (Metwally et al.): a table keeps at most
//! `capacity` keys, a new key takes the place of the smallest and inherits its count as its
//! error bound, so a flood from random sources uses the same memory as one from a single host.

use std::{collections::HashMap, hash::Hash, net::IpAddr, time::Duration};

use filter_common::{REASON_COUNT, REASONS, Reason};
use ipnet::IpNet;
use serde::Serialize;

use crate::capture::Record;

/// Space-Saving over keys `K`, counting packets (and bytes beside them).
#[derive(Clone, Debug)]
pub struct SpaceSaving<K> {
    capacity: usize,
    entries: HashMap<K, Counted>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counted {
    packets: u64,
    bytes: u64,
    /// Packets the key may have been given that belonged to keys it replaced.
    error: u64,
}

impl<K: Eq + Hash + Clone> SpaceSaving<K> {
    pub fn new(capacity: usize) -> SpaceSaving<K> {
        SpaceSaving {
            capacity: capacity.max(1),
            entries: HashMap::with_capacity(capacity.max(1)),
        }
    }

    pub fn add(&mut self, key: K, packets: u64, bytes: u64) {
        if let Some(c) = self.entries.get_mut(&key) {
            c.packets += packets;
            c.bytes += bytes;
            return;
        }
        if self.entries.len() < self.capacity {
            self.entries.insert(
                key,
                Counted {
                    packets,
                    bytes,
                    error: 0,
                },
            );
            return;
        }
        // Replace the smallest: the newcomer may have had up to its count already.
        let (min_key, min) = self
            .entries
            .iter()
            .min_by_key(|(_, c)| c.packets)
            .map(|(k, c)| (k.clone(), *c))
            .expect("a full table is not empty");
        self.entries.remove(&min_key);
        self.entries.insert(
            key,
            Counted {
                packets: min.packets + packets,
                bytes: min.bytes + bytes,
                error: min.packets,
            },
        );
    }

    /// The `n` largest by packets (or bytes), largest first: (key, packets, bytes, error).
    pub fn top(&self, n: usize, by_bytes: bool) -> Vec<(K, u64, u64, u64)> {
        let mut v: Vec<(K, u64, u64, u64)> = self
            .entries
            .iter()
            .map(|(k, c)| (k.clone(), c.packets, c.bytes, c.error))
            .collect();
        v.sort_by(|a, b| {
            let (x, y) = if by_bytes { (b.2, a.2) } else { (b.1, a.1) };
            x.cmp(&y)
        });
        v.truncate(n);
        v
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Keys each table is counted under.
const TABLE_CAPACITY: usize = 256;

/// Packet-length buckets (frame bytes, upper bounds).
pub const LENGTH_BUCKETS: [u32; 8] = [64, 128, 256, 512, 1024, 1518, 9000, u32::MAX];

/// The shape of the sampled traffic over one interval.
pub struct Window {
    pub sources: SpaceSaving<IpAddr>,
    pub source_nets: SpaceSaving<IpNet>,
    pub destinations: SpaceSaving<IpAddr>,
    pub dst_ports: SpaceSaving<(u8, u16)>,
    pub src_ports: SpaceSaving<(u8, u16)>,
    pub protocols: SpaceSaving<u8>,
    pub tcp_flags: SpaceSaving<u8>,
    pub lengths: [(u64, u64); LENGTH_BUCKETS.len()],
    pub ttls: SpaceSaving<u8>,
    /// Rule ids of rule verdicts, and list sources of blocklist drops (from the samples).
    pub rules: SpaceSaving<u32>,
    pub list_sources: SpaceSaving<u32>,
    /// Samples seen, and the packets they stand for (each scaled by its rate).
    pub samples: u64,
    pub packets: u64,
}

impl Default for Window {
    fn default() -> Window {
        Window {
            sources: SpaceSaving::new(TABLE_CAPACITY),
            source_nets: SpaceSaving::new(TABLE_CAPACITY),
            destinations: SpaceSaving::new(TABLE_CAPACITY),
            dst_ports: SpaceSaving::new(TABLE_CAPACITY),
            src_ports: SpaceSaving::new(TABLE_CAPACITY),
            protocols: SpaceSaving::new(64),
            tcp_flags: SpaceSaving::new(64),
            lengths: [(0, 0); LENGTH_BUCKETS.len()],
            ttls: SpaceSaving::new(64),
            rules: SpaceSaving::new(64),
            list_sources: SpaceSaving::new(64),
            samples: 0,
            packets: 0,
        }
    }
}

/// What a sample's headers say (as far as its bytes go).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Headers {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub proto: Option<u8>,
    pub ttl: Option<u8>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub tcp_flags: Option<u8>,
}

/// Read the headers of a sampled frame (Ethernet, VLANs, IPv4/IPv6, TCP/UDP).
pub fn headers(data: &[u8]) -> Headers {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let mut h = Headers::default();
    let Ok(p) = SlicedPacket::from_ethernet(data) else {
        return h;
    };
    match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let hd = ip.header();
            h.src = Some(IpAddr::V4(hd.source_addr()));
            h.dst = Some(IpAddr::V4(hd.destination_addr()));
            h.proto = Some(hd.protocol().0);
            h.ttl = Some(hd.ttl());
        }
        Some(NetSlice::Ipv6(ip)) => {
            let hd = ip.header();
            h.src = Some(IpAddr::V6(hd.source_addr()));
            h.dst = Some(IpAddr::V6(hd.destination_addr()));
            h.proto = Some(ip.payload().ip_number.0);
            h.ttl = Some(hd.hop_limit());
        }
        _ => {}
    }
    match &p.transport {
        Some(TransportSlice::Udp(u)) => {
            h.sport = Some(u.source_port());
            h.dport = Some(u.destination_port());
        }
        Some(TransportSlice::Tcp(t)) => {
            h.sport = Some(t.source_port());
            h.dport = Some(t.destination_port());
            let b = t.slice();
            h.tcp_flags = b.get(13).copied();
        }
        _ => {}
    }
    h
}

/// The /24 (IPv4) or /48 (IPv6) around an address; the host as /32 or /64 for the sources
/// table.
fn net_of(a: IpAddr) -> IpNet {
    let len = if a.is_ipv4() { 24 } else { 48 };
    IpNet::new(a, len).expect("valid length").trunc()
}

fn host_of(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(_) => a,
        IpAddr::V6(_) => IpNet::new(a, 64).expect("valid length").trunc().addr(),
    }
}

impl Window {
    /// Count one sample (it stands for `head.rate` packets).
    pub fn add(&mut self, r: &Record) {
        let n = u64::from(r.head.rate.max(1));
        let b = n * u64::from(r.head.frame_len);
        self.samples += 1;
        self.packets += n;
        let h = headers(&r.data);
        if let Some(s) = h.src {
            self.sources.add(host_of(s), n, b);
            self.source_nets.add(net_of(s), n, b);
        }
        if let Some(d) = h.dst {
            self.destinations.add(d, n, b);
        }
        if let Some(p) = h.proto {
            self.protocols.add(p, n, b);
            if let Some(port) = h.dport {
                self.dst_ports.add((p, port), n, b);
            }
            if let Some(port) = h.sport {
                self.src_ports.add((p, port), n, b);
            }
        }
        if let Some(f) = h.tcp_flags {
            self.tcp_flags.add(f, n, b);
        }
        if let Some(t) = h.ttl {
            self.ttls.add(t, n, b);
        }
        if let Some(id) = r.rule() {
            self.rules.add(id, n, b);
        }
        if let Some(id) = r.list_source() {
            self.list_sources.add(id, n, b);
        }
        let i = LENGTH_BUCKETS
            .iter()
            .position(|&max| r.head.frame_len <= max)
            .unwrap_or(LENGTH_BUCKETS.len() - 1);
        self.lengths[i].0 += n;
        self.lengths[i].1 += b;
    }
}

/// One row of a table in `top --json` and `GET /v1/top`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Row {
    pub key: String,
    /// Estimated packets and bits per second (samples scaled by their rate).
    pub pps: f64,
    pub bps: f64,
    /// Share of the sampled packets, 0..1.
    pub share: f64,
    /// Space-Saving's bound on how many of the packets may belong to other keys.
    #[serde(skip_serializing_if = "is_zero")]
    pub error_pps: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// The exact rate of one reason (from the counters, not the samples).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReasonRate {
    pub reason: &'static str,
    pub action: &'static str,
    pub dry_run: bool,
    pub pps: f64,
    pub bps: f64,
}

/// Everything `top` shows for one interval.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub interval_s: f64,
    /// 1 in this many packets was sampled.
    pub sample: u32,
    pub samples: u64,
    /// Samples the ring had no room for in this interval.
    pub lost: u64,
    pub reasons: Vec<ReasonRate>,
    pub sources: Vec<Row>,
    pub source_nets: Vec<Row>,
    pub destinations: Vec<Row>,
    pub dst_ports: Vec<Row>,
    pub src_ports: Vec<Row>,
    pub protocols: Vec<Row>,
    pub tcp_flags: Vec<Row>,
    pub lengths: Vec<Row>,
    pub ttls: Vec<Row>,
    /// Rule verdicts by rule id, blocklist drops by list source (sampled).
    pub rules: Vec<Row>,
    pub list_sources: Vec<Row>,
}

fn proto_name(p: u8) -> String {
    crate::settings::show_proto(p)
}

fn flags_name(f: u8) -> String {
    const NAMES: [(u8, &str); 8] = [
        (0x02, "SYN"),
        (0x10, "ACK"),
        (0x01, "FIN"),
        (0x04, "RST"),
        (0x08, "PSH"),
        (0x20, "URG"),
        (0x40, "ECE"),
        (0x80, "CWR"),
    ];
    let v: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join("|")
    }
}

impl Report {
    /// The report of `w` over `interval`, `n` rows per table, with the reasons' exact
    /// `(packets, bytes)` deltas per `STATS` slot.
    /// Name list sources (`#3` → `spamhaus`) with `name`.
    pub fn name_sources(&mut self, name: &dyn Fn(u32) -> Option<String>) {
        for row in &mut self.list_sources {
            if let Some(n) = row
                .key
                .strip_prefix('#')
                .and_then(|id| id.parse().ok())
                .and_then(name)
            {
                row.key = n;
            }
        }
    }

    pub fn new(
        w: &Window,
        interval: Duration,
        sample: u32,
        lost: u64,
        slot_deltas: &[(u64, u64)],
        n: usize,
        by_bytes: bool,
    ) -> Report {
        let secs = interval.as_secs_f64().max(1e-3);
        let total = w.packets.max(1) as f64;
        let rows = |v: Vec<(String, u64, u64, u64)>| -> Vec<Row> {
            v.into_iter()
                .map(|(key, p, b, e)| Row {
                    key,
                    pps: p as f64 / secs,
                    bps: b as f64 * 8.0 / secs,
                    share: p as f64 / total,
                    error_pps: e as f64 / secs,
                })
                .collect()
        };
        let mut reasons = Vec::new();
        for (slot, &(p, b)) in slot_deltas.iter().enumerate() {
            if p == 0 {
                continue;
            }
            let r: Reason = REASONS[slot % REASON_COUNT];
            let dry_run = slot >= REASON_COUNT;
            reasons.push(ReasonRate {
                reason: r.name(),
                action: if dry_run { "pass" } else { r.action().name() },
                dry_run,
                pps: p as f64 / secs,
                bps: b as f64 * 8.0 / secs,
            });
        }
        reasons.sort_by(|a, b| b.pps.total_cmp(&a.pps));
        let port_key = |(p, port): (u8, u16)| format!("{}/{port}", proto_name(p));
        Report {
            interval_s: secs,
            sample,
            samples: w.samples,
            lost,
            reasons,
            sources: rows(map_keys(w.sources.top(n, by_bytes), |a| a.to_string())),
            source_nets: rows(map_keys(w.source_nets.top(n, by_bytes), |a| a.to_string())),
            destinations: rows(map_keys(w.destinations.top(n, by_bytes), |a| a.to_string())),
            dst_ports: rows(map_keys(w.dst_ports.top(n, by_bytes), port_key)),
            src_ports: rows(map_keys(w.src_ports.top(n, by_bytes), port_key)),
            protocols: rows(map_keys(w.protocols.top(n, by_bytes), proto_name)),
            tcp_flags: rows(map_keys(w.tcp_flags.top(n, by_bytes), flags_name)),
            lengths: rows(
                LENGTH_BUCKETS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| w.lengths[*i].0 != 0)
                    .map(|(i, &max)| {
                        let lo = if i == 0 { 0 } else { LENGTH_BUCKETS[i - 1] + 1 };
                        let key = if max == u32::MAX {
                            format!("{lo}-")
                        } else {
                            format!("{lo}-{max}")
                        };
                        (key, w.lengths[i].0, w.lengths[i].1, 0)
                    })
                    .collect(),
            ),
            ttls: rows(map_keys(w.ttls.top(n, by_bytes), |t| t.to_string())),
            rules: rows(map_keys(w.rules.top(n, by_bytes), |id| {
                format!("rule {id}")
            })),
            list_sources: rows(map_keys(w.list_sources.top(n, by_bytes), |id| {
                format!("#{id}")
            })),
        }
    }
}

fn map_keys<K>(
    v: Vec<(K, u64, u64, u64)>,
    f: impl Fn(K) -> String,
) -> Vec<(String, u64, u64, u64)> {
    v.into_iter().map(|(k, p, b, e)| (f(k), p, b, e)).collect()
}

/// One report over `interval`, sampling 1 in `sample` packets of every reason meanwhile (and
/// putting sampling back after): what `GET /v1/top` answers. `counters` gives the `STATS`
/// slots' (packets, bytes).
pub fn sample_once(
    pin: &crate::loader::PinDir,
    counters: &dyn Fn() -> crate::error::Result<Vec<(u64, u64)>>,
    interval: Duration,
    sample: u32,
    rows: usize,
) -> crate::error::Result<Report> {
    use crate::capture::{Reader, Sampling};
    let mut reader = Reader::open(pin)?;
    let mut sampling = Sampling::open(pin)?;
    let slots: Vec<u32> = (0..filter_common::STATS_SLOTS as u32).collect();
    let _ = reader.read(Duration::ZERO);
    let lost0 = sampling.lost(&slots)?;
    let before = counters()?;
    let start = std::time::Instant::now();
    let was = sampling.enable(pin, &slots, sample, None)?;
    let mut w = Window::default();
    while start.elapsed() < interval {
        let left = interval.saturating_sub(start.elapsed());
        for r in reader.read(left.min(Duration::from_millis(100))) {
            w.add(&r);
        }
    }
    let restored = sampling.restore(pin, &was);
    let elapsed = start.elapsed();
    let after = counters()?;
    let lost = sampling.lost(&slots)?.saturating_sub(lost0);
    restored?;
    let deltas: Vec<(u64, u64)> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1)))
        .collect();
    Ok(Report::new(&w, elapsed, sample, lost, &deltas, rows, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_saving_finds_the_heavy_hitters_of_a_random_flood_in_bounded_memory() {
        // Space-Saving keeps every key above N/capacity: here 117,500 / 64 < 2,500, the
        // smallest heavy hitter.
        let mut s = SpaceSaving::new(64);
        // 3 heavy sources among 100k random ones (a random-source flood).
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in 0..100_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.add(x, 1, 60);
            if i % 10 == 0 {
                s.add(1, 1, 60);
            }
            if i % 20 == 0 {
                s.add(2, 1, 60);
            }
            if i % 40 == 0 {
                s.add(3, 1, 60);
            }
        }
        assert_eq!(s.len(), 64, "memory stays bounded");
        let top = s.top(3, false);
        let keys: Vec<u64> = top.iter().map(|t| t.0).collect();
        assert_eq!(keys, [1, 2, 3], "the heavy hitters, in order: {top:?}");
        // Each estimate is at least the true count and at most true + error.
        assert!(
            top[0].1 >= 10_000 && top[0].1 - top[0].3 <= 10_000,
            "{top:?}"
        );
    }

    #[test]
    fn tcp_flags_and_lengths_are_named() {
        assert_eq!(flags_name(0x12), "SYN|ACK");
        assert_eq!(flags_name(0), "none");
        let w = Window::default();
        let r = Report::new(&w, Duration::from_secs(1), 1, 0, &[], 5, false);
        assert!(r.lengths.is_empty() && r.sources.is_empty());
    }
}
