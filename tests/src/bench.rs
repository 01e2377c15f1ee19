//! Pieces the benchmarks (tests/examples, run by `cargo xtask bench`) share: the live-frames
//! flood generator, the kernel's own per-program run-time counters, a mixed list of prefixes,
//! and median/min/max over rounds.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, AsRawFd as _},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        ProgramFd, ProgramInfo, TestRun, TestRunAttrs, TestRunOptions, Xdp, loaded_programs,
    },
};
use floodgate::netlink;
use floodgate_lab::{ATTACKER_IF, ATTACKER_V4, Lab, VICTIM_IF, VICTIM_V4, VICTIM_V6, traffic};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The empty XDP_DROP program (`tests/bench-ebpf/src/floor.rs`), built by tests/build.rs.
pub static FLOOR_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor"));

/// The flood generator (`tests/bench-ebpf/src/flood.rs`), built by tests/build.rs.
pub static FLOOD_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flood"));

/// The yardstick (`tests/bench-ebpf/src/misses.rs`), built by tests/build.rs.
pub static MISSES_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/misses"));

/// The yardstick loaded with `reads` dependent random reads per packet: its fd and id (the
/// object, which holds its 128 MiB array, is kept alive by the program).
pub fn misses(reads: u32) -> (ProgramFd, u32) {
    let mut obj = EbpfLoader::new()
        .override_global("MISS_READS", &reads, true)
        .load(MISSES_OBJECT)
        .expect("loading the misses object");
    let prog: &mut Xdp = obj
        .program_mut("misses")
        .expect("misses program")
        .try_into()
        .expect("xdp");
    prog.load().expect("verifying the misses program");
    let info = prog.info().expect("misses info");
    (info.fd().expect("misses fd"), info.id())
}

/// The empty XDP_DROP program (the floor), loaded: its fd (which keeps it loaded) and id.
pub fn floor() -> (ProgramFd, u32) {
    let mut obj = Ebpf::load(FLOOR_OBJECT).expect("loading the floor object");
    let floor: &mut Xdp = obj
        .program_mut("floor")
        .expect("floor program")
        .try_into()
        .expect("xdp");
    floor.load().expect("verifying the floor program");
    let info = floor.info().expect("floor info");
    (info.fd().expect("floor fd"), info.id())
}

/// An XDP_PASS program on the attacker's veth, so the victim's XDP_TX replies (SYN guard
/// SYN-ACKs) arrive: veth delivers them only to a peer with an XDP program. Stays attached
/// until the lab's namespaces go.
pub fn attacker_xdp_pass(lab: &Lab) {
    let mut obj = Ebpf::load(FLOOR_OBJECT).expect("loading the floor object");
    let pass: &mut Xdp = obj
        .program_mut("pass")
        .expect("pass program")
        .try_into()
        .expect("xdp");
    pass.load().expect("verifying the pass program");
    let fd = pass.fd().expect("pass fd");
    let ifindex = lab
        .attacker
        .run(|| floodgate::sys::if_index(ATTACKER_IF).expect("attacker veth"))
        .expect("attacker namespace");
    lab.attacker
        .run(|| netlink::attach(ifindex, fd.as_fd(), netlink::XdpMode::Native))
        .expect("attacker namespace")
        .unwrap_or_else(|e| panic!("XDP pass on the attacker's veth: {e}"));
}

/// Attach (`on`) or detach the program `fd` on the victim's veth, native mode. Detach names
/// the program, so it never takes off anything else.
pub fn victim_xdp(lab: &Lab, fd: &ProgramFd, on: bool) {
    let ifindex = lab
        .victim
        .run(|| floodgate::sys::if_index(VICTIM_IF).expect("victim veth"))
        .expect("victim namespace");
    let mode = netlink::XdpMode::Native;
    lab.victim
        .run(|| {
            if on {
                netlink::attach(ifindex, fd.as_fd(), mode)
            } else {
                netlink::detach(ifindex, fd.as_fd(), mode)
            }
        })
        .expect("victim namespace")
        .unwrap_or_else(|e| {
            panic!(
                "XDP {} on the victim: {e}",
                if on { "attach" } else { "detach" }
            )
        });
}

/// Frames per live-frames batch (the kernel's default is 64).
const BATCH: u32 = 64;

/// The flood generator (tests/bench-ebpf/src/flood.rs) loaded for one source range.
pub struct Flood {
    ebpf: Ebpf,
}

impl Flood {
    /// IPv4 sources `(base & !mask) | (random & mask)`; IPv6 sources get 96 random bits.
    pub fn new(base: Ipv4Addr, mask: u32) -> Flood {
        let base = u32::from(base);
        let mut ebpf = EbpfLoader::new()
            .override_global("SRC4_BASE", &base, true)
            .override_global("SRC4_MASK", &mask, true)
            .load(FLOOD_OBJECT)
            .expect("loading the flood generator");
        let prog: &mut Xdp = ebpf
            .program_mut("flood")
            .expect("flood program")
            .try_into()
            .expect("xdp");
        prog.load().expect("verifying the flood generator");
        Flood { ebpf }
    }

    /// Sources drawn at random from addresses inside `list`'s entries (one per entry, each
    /// family from its own): every frame's source is listed, the drop path.
    pub fn listed(list: &[IpNet], seed: u64) -> Flood {
        let mut rng = Rng::new(seed);
        let mut v4: Vec<u32> = Vec::new();
        let mut v6: Vec<[u8; 16]> = Vec::new();
        for net in list {
            let r = rng.next_u64();
            match net {
                IpNet::V4(n) => {
                    let host = !u32::from(n.netmask());
                    v4.push(u32::from(n.network()) | (r as u32 & host));
                }
                IpNet::V6(n) => {
                    let host = !u128::from(n.netmask());
                    let r = (u128::from(r) << 64) | u128::from(rng.next_u64());
                    v6.push((u128::from(n.network()) | (r & host)).to_be_bytes());
                }
            }
        }
        let n4 = v4.len() as u32;
        let n6 = v6.len() as u32;
        let mut ebpf = EbpfLoader::new()
            .override_global("LISTED_V4", &n4, true)
            .override_global("LISTED_V6", &n6, true)
            .map_max_entries("SOURCES_V4", n4.max(1))
            .map_max_entries("SOURCES_V6", n6.max(1))
            .load(FLOOD_OBJECT)
            .expect("loading the flood generator");
        let fd = |name: &str| match ebpf.map(name).expect("sources map") {
            aya::maps::Map::Array(data) => data.fd().as_fd().as_raw_fd(),
            _ => panic!("{name} is an array"),
        };
        // SAFETY: the maps' fds stay open while `ebpf` lives, past these calls.
        let (f4, f6) = unsafe {
            (
                std::os::fd::BorrowedFd::borrow_raw(fd("SOURCES_V4")),
                std::os::fd::BorrowedFd::borrow_raw(fd("SOURCES_V6")),
            )
        };
        let k4: Vec<u32> = (0..n4).collect();
        let k6: Vec<u32> = (0..n6).collect();
        for (name, (_, err)) in [
            ("SOURCES_V4", floodgate::batch::update(f4, &k4, &v4, 0)),
            ("SOURCES_V6", floodgate::batch::update(f6, &k6, &v6, 0)),
        ] {
            assert!(err.is_none(), "filling {name}: {err:?}");
        }
        let prog: &mut Xdp = ebpf
            .program_mut("flood")
            .expect("flood program")
            .try_into()
            .expect("xdp");
        prog.load().expect("verifying the flood generator");
        Flood { ebpf }
    }

    /// Random sources anywhere in IPv4 (and in 2000::/3 for IPv6 frames).
    pub fn anywhere() -> Flood {
        Flood::new(Ipv4Addr::UNSPECIFIED, u32::MAX)
    }

    /// Send `n` copies of `frame` (sources rewritten) out of the attacker's veth; the victim's
    /// XDP program receives them as xdp_frames. Returns the wall time of the run, which also
    /// covers the victim's receive work: veth's NAPI poll runs in the softirq raised when each
    /// batch is flushed, on this CPU, before the syscall returns.
    pub fn send(&self, lab: &Lab, frame: &[u8], n: u32) -> Duration {
        let prog: &Xdp = self
            .ebpf
            .program("flood")
            .expect("flood program")
            .try_into()
            .expect("xdp");
        lab.attacker
            .run(|| {
                let ifindex = floodgate::sys::if_index(ATTACKER_IF).expect("attacker veth");
                // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
                // egress_ifindex.
                let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
                let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
                let started = Instant::now();
                prog.test_run(TestRunOptions {
                    data_in: Some(frame),
                    ctx_in: Some(&ctx),
                    repeat: n,
                    attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                    ..TestRunOptions::default()
                })
                .expect("live-frames test_run");
                started.elapsed()
            })
            .expect("running in the attacker namespace")
    }
}

/// A 64-byte UDP frame to the victim. `to_victim_mac`: false sends it to a MAC nobody has, so
/// frames the victim's program passes are dropped cheaply by the IP layer (PACKET_OTHERHOST)
/// instead of costing a socket lookup and an ICMP error each.
pub fn flood_frame(lab: &Lab, v6: bool, to_victim_mac: bool) -> Vec<u8> {
    let src_mac = Lab::mac(&lab.attacker, ATTACKER_IF).expect("attacker MAC");
    let dst_mac = if to_victim_mac {
        Lab::mac(&lab.victim, VICTIM_IF).expect("victim MAC")
    } else {
        [0x02, 0, 0, 0, 0xfe, 0x01]
    };
    let (src, dst): (std::net::IpAddr, std::net::IpAddr) = if v6 {
        (floodgate_lab::ATTACKER_V6.into(), VICTIM_V6.into())
    } else {
        (ATTACKER_V4.into(), VICTIM_V4.into())
    };
    let payload_len = if v6 { 2 } else { 22 };
    traffic::udp_frame(src_mac, dst_mac, src, dst, 40000, 9, &vec![0; payload_len])
}

/// Turn on the kernel's per-program run-time counters (BPF_ENABLE_STATS) while this lives;
/// they go off again when it is dropped, whatever kernel.bpf_stats_enabled says.
pub struct RunTimeStats(#[expect(dead_code, reason = "held for its Drop")] std::os::fd::OwnedFd);

impl RunTimeStats {
    pub fn enable() -> RunTimeStats {
        RunTimeStats(aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS"))
    }
}

/// (run_time_ns, run_cnt) of the program with this id.
pub fn run_stats(prog_id: u32) -> (u64, u64) {
    let info: ProgramInfo = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .unwrap_or_else(|| panic!("no loaded program with id {prog_id}"));
    (info.run_time().as_nanos() as u64, info.run_count())
}

/// The program's mean run time per packet over `f`, in ns (needs [`RunTimeStats`]).
pub fn mean_run_ns(prog_id: u32, f: impl FnOnce()) -> f64 {
    let (t0, c0) = run_stats(prog_id);
    f();
    let (t1, c1) = run_stats(prog_id);
    assert!(
        c1 > c0,
        "program {prog_id} never ran: is the flood reaching it?"
    );
    (t1 - t0) as f64 / (c1 - c0) as f64
}

/// Median, min and max.
pub fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// "median (min..max)" with `digits` decimals.
pub fn fmt_spread(v: &[f64], digits: usize) -> String {
    let (m, lo, hi) = spread(v);
    format!("{m:.digits$} ({lo:.digits$}..{hi:.digits$})")
}

/// A deterministic xorshift generator: the same lists on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// `n` distinct prefixes shaped like a real feed: 70% IPv4 (90% /32, 9.5% /24, 0.5% /16) and
/// 30% IPv6 in 2000::/3 (60% /128, 30% /64, 10% /48), spread over the address space as real
/// feeds are. Entries avoid the lab's own ranges (198.18.0.0/15, 2001:db8::/32).
pub fn mixed_list(n: usize, seed: u64) -> Vec<IpNet> {
    let mut rng = Rng::new(seed);
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    let lab = Ipv4Net::new(Ipv4Addr::new(198, 18, 0, 0), 15).expect("lab range");
    while out.len() < n {
        let r = rng.next_u64();
        let pick = (r >> 40) % 1000;
        let net: IpNet = if pick < 700 {
            let len = match pick % 200 {
                0 => 16,
                1..=19 => 24,
                _ => 32,
            };
            let addr = Ipv4Addr::from(r as u32);
            let net = Ipv4Net::new(addr, len).expect("len").trunc();
            if lab.contains(&net) || net.contains(&lab) {
                continue;
            }
            net.into()
        } else {
            let len = match pick % 10 {
                0..=5 => 128,
                6..=8 => 64,
                _ => 48,
            };
            let lo = rng.next_u64();
            let top = 0x2000_0000 | (r as u32 & 0x1fff_ffff);
            if top == 0x2001_0db8 {
                continue;
            }
            let bits =
                ((top as u128) << 96) | (((r >> 32) as u128 & 0xffff_ffff) << 64) | lo as u128;
            Ipv6Net::new(Ipv6Addr::from(bits), len)
                .expect("len")
                .trunc()
                .into()
        };
        if seen.insert(net) {
            out.push(net);
        }
    }
    out
}

/// A prefix-heavy list of `n` entries: 70% IPv4 /32, 20% /24, 2% /16, 8% IPv6 /64; none in
/// the lab's 198.18.0.0/15 or 2001:db8::/32.
pub fn prefix_heavy_list(n: usize, seed: u64) -> Vec<IpNet> {
    let mut rng = Rng::new(seed);
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    let lab = Ipv4Net::new(Ipv4Addr::new(198, 18, 0, 0), 15).expect("lab range");
    while out.len() < n {
        let r = rng.next_u64();
        let pick = (r >> 40) % 100;
        let net: IpNet = if pick < 92 {
            let len = match pick {
                0..=69 => 32,
                70..=89 => 24,
                _ => 16,
            };
            let net = Ipv4Net::new(Ipv4Addr::from(r as u32), len)
                .expect("len")
                .trunc();
            if lab.contains(&net) || net.contains(&lab) {
                continue;
            }
            net.into()
        } else {
            let top = 0x2000_0000 | (r as u32 & 0x1fff_ffff);
            if top == 0x2001_0db8 {
                continue;
            }
            let bits = ((top as u128) << 96) | (((r >> 32) as u128 & 0xffff_ffff) << 64);
            Ipv6Net::new(Ipv6Addr::from(bits), 64)
                .expect("len")
                .trunc()
                .into()
        };
        if seen.insert(net) {
            out.push(net);
        }
    }
    out
}

/// Bytes of kernel memory charged to a map (its fdinfo `memlock`).
pub fn map_memlock(fd: &aya::maps::MapFd) -> u64 {
    let fd = fd.as_fd();
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .expect("reading fdinfo");
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no memlock in fdinfo")
        .expect("memlock")
}

/// An NTP-monlist-like reflection flood at the victim until `stop`: UDP from source port 123
/// of random sources in 198.19.0.0/16 to `dport`, IP length 468, paced to `pps`. Stores the
/// frames sent in `sent` as it goes; returns them.
pub fn ntp_reflection_flood(
    lab: &Lab,
    dport: u16,
    stop: &std::sync::atomic::AtomicBool,
    sent: &std::sync::atomic::AtomicU64,
    pps: f64,
) -> u64 {
    use std::sync::atomic::Ordering;
    let victim_mac = Lab::mac(&lab.victim, VICTIM_IF).expect("victim MAC");
    let attacker_mac = Lab::mac(&lab.attacker, ATTACKER_IF).expect("attacker MAC");
    let payload = vec![0x17u8; 468 - 20 - 8];
    lab.attacker
        .run(|| {
            let tx = traffic::RawSender::open(ATTACKER_IF).expect("raw socket");
            let mut rng = Rng::new(7);
            let mut n = 0u64;
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if n.is_multiple_of(64) {
                    let due = Duration::from_secs_f64(n as f64 / pps);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                let r = rng.next_u64();
                let src = Ipv4Addr::new(198, 19, (r >> 8) as u8, r as u8);
                let frame = traffic::udp_frame(
                    attacker_mac,
                    victim_mac,
                    src.into(),
                    VICTIM_V4.into(),
                    123,
                    dport,
                    &payload,
                );
                if tx.send(&frame).is_ok() {
                    n += 1;
                    if n.is_multiple_of(256) {
                        sent.store(n, Ordering::Relaxed);
                    }
                }
            }
            sent.store(n, Ordering::Relaxed);
            n
        })
        .expect("flooding from the attacker namespace")
}

/// A legitimate UDP client: from the attacker's own address to `VICTIM:port`, `pps` datagrams
/// per second until `stop`; returns how many it sent.
pub fn udp_client(lab: &Lab, port: u16, stop: &std::sync::atomic::AtomicBool, pps: f64) -> u64 {
    use std::sync::atomic::Ordering;
    lab.attacker
        .run(|| {
            let sock = std::net::UdpSocket::bind((ATTACKER_V4, 0)).expect("binding the client");
            let started = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = Duration::from_secs_f64(n as f64 / pps);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
                let msg = format!("query {n:08} padding-to-a-realistic-size-0123456789");
                sock.send_to(msg.as_bytes(), (VICTIM_V4, port))
                    .expect("sending a query");
                n += 1;
            }
            n
        })
        .expect("the client in the attacker namespace")
}

/// Count what arrives on `VICTIM:port` (in the victim namespace) until `stop` and then a
/// quiet half second.
pub fn udp_server(lab: &Lab, port: u16, stop: &std::sync::atomic::AtomicBool) -> u64 {
    use std::sync::atomic::Ordering;
    lab.victim
        .run(|| {
            let sock = std::net::UdpSocket::bind((VICTIM_V4, port)).expect("binding the server");
            sock.set_read_timeout(Some(Duration::from_millis(500)))
                .expect("timeout");
            let mut buf = [0u8; 2048];
            let mut n = 0u64;
            loop {
                match sock.recv_from(&mut buf) {
                    Ok(_) => n += 1,
                    Err(_) if stop.load(Ordering::Relaxed) => return n,
                    Err(_) => {}
                }
            }
        })
        .expect("the server in the victim namespace")
}

/// A spoofed SYN flood: SYNs with Linux's options from random sources in 198.19.0.0/16 to the
/// victim's `dport`, from the attacker's veth, until `stop`, at the sender's full rate or
/// paced to `pps`. Stores the count so far in `sent` now and then; returns the SYNs sent.
pub fn syn_flood(
    lab: &Lab,
    dport: u16,
    stop: &std::sync::atomic::AtomicBool,
    sent: &std::sync::atomic::AtomicU64,
    pps: Option<f64>,
) -> u64 {
    use std::sync::atomic::Ordering;
    let victim_mac = Lab::mac(&lab.victim, VICTIM_IF).expect("victim MAC");
    let attacker_mac = Lab::mac(&lab.attacker, ATTACKER_IF).expect("attacker MAC");
    lab.attacker
        .run(|| {
            let tx = traffic::RawSender::open(ATTACKER_IF).expect("raw socket");
            let mut rng = Rng::new(13);
            let mut n = 0u64;
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Some(pps) = pps {
                    // Ahead of the pace: wait for it (checked every 256 frames).
                    if n.is_multiple_of(256) {
                        let due = Duration::from_secs_f64(n as f64 / pps);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
                let r = rng.next_u64();
                let src = Ipv4Addr::new(198, 19, (r >> 8) as u8, r as u8);
                let frame = traffic::tcp_syn_frame(
                    attacker_mac,
                    victim_mac,
                    src.into(),
                    VICTIM_V4.into(),
                    1024 + (r >> 16) as u16 % 60000,
                    dport,
                    (r >> 32) as u32,
                );
                if tx.send(&frame).is_ok() {
                    n += 1;
                    if n.is_multiple_of(1024) {
                        sent.store(n, Ordering::Relaxed);
                    }
                }
            }
            sent.store(n, Ordering::Relaxed);
            n
        })
        .expect("attacker namespace")
}

/// Counters of the calling thread's network namespace from /proc/net/netstat or snmp lines
/// starting with `group` (e.g. "TcpExt:", "Tcp:").
pub fn net_counters(file: &str, group: &str, names: &[&str]) -> Vec<u64> {
    let path = format!("/proc/thread-self/net/{file}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(group)).collect();
    let keys: Vec<&str> = lines[0].split_whitespace().collect();
    let values: Vec<&str> = lines[1].split_whitespace().collect();
    names
        .iter()
        .map(|n| {
            let i = keys
                .iter()
                .position(|k| k == n)
                .unwrap_or_else(|| panic!("no {group} {n} in {path}"));
            values[i].parse().expect("a number")
        })
        .collect()
}
