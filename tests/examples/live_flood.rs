//! The program's own cost under a live flood, with blocklists of 0, 10k, 100k and 1M mixed
//! prefixes and 1M prefix-heavy ones, beside an empty XDP_DROP program and xdp-filter (at its
//! 10k limit). At 1M, a second flood whose every source is listed measures the drop path.
//!
//! The flood comes from the live-frames generator (tests/bench-ebpf/src/flood.rs) on the attacker's
//! veth: every frame has a new random source, so lookups miss the caches as a real spoofed
//! flood does (BPF_PROG_TEST_RUN's repeat mode reuses one packet and keeps them hot). The
//! figure is the kernel's own `run_time_ns / run_cnt` for the victim's program, with stats on
//! (BPF_ENABLE_STATS, which adds its own two clock reads per run: hence the empty program is
//! measured the same way, in the same round, and the ratios are what to read).
//!
//! Prints a Markdown section; `cargo xtask bench` collects it into BENCHMARKS.md.

use std::time::Instant;

use aya::{
    maps::{HashMap, MapData},
    programs::{ProgramFd, ProgramInfo, Xdp},
};
use filter_common::SOURCE_CLI;
use floodgate::{
    lists::ListKind,
    loader::{self, PinDir},
    netlink,
    settings::Settings,
    state::{Access, State},
};
use floodgate_lab::{Lab, VICTIM_IF};
use floodgate_tests::bench::*;
use ipnet::IpNet;

const SIZES: [usize; 4] = [0, 10_000, 100_000, 1_000_000];
const ROUNDS: usize = 5;
const FRAMES: u32 = 1_000_000;
const XDP_FILTER_PINS: &str = "/sys/fs/bpf/xdp-filter";

/// A program that can be put on the victim's veth for a measurement.
struct Candidate {
    fd: ProgramFd,
    id: u32,
}

fn on_victim<T>(lab: &Lab, c: &Candidate, f: impl FnOnce() -> T) -> T {
    victim_xdp(lab, &c.fd, true);
    let out = f();
    victim_xdp(lab, &c.fd, false);
    out
}

fn candidate(prog: &Xdp) -> Candidate {
    let info = prog.info().expect("program info");
    Candidate {
        fd: info.fd().expect("program fd"),
        id: info.id(),
    }
}

/// xdp-filter (Debian xdp-tools) loaded on the victim, taken off again at once: we keep its
/// program by fd and attach it ourselves each round, as the others are. Its IPv4 and IPv6
/// deny maps get the first 10k hosts of each family from `list`.
fn xdp_filter(lab: &Lab, list: &[IpNet]) -> Candidate {
    let _ = std::fs::remove_dir_all(XDP_FILTER_PINS);
    let out = lab
        .victim
        .command("xdp-filter")
        .args([
            "load",
            "--mode",
            "native",
            "--features",
            "ipv4,ipv6",
            VICTIM_IF,
        ])
        .env("LIBXDP_SKIP_DISPATCHER", "1")
        .output()
        .expect("running xdp-filter");
    assert!(
        out.status.success(),
        "xdp-filter load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let attached = lab
        .victim
        .run(netlink::xdp_interfaces)
        .expect("victim namespace")
        .expect("netlink");
    let id = attached
        .iter()
        .find(|x| x.ifname == VICTIM_IF)
        .expect("xdp-filter attached")
        .prog_id;
    let info: ProgramInfo = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .expect("xdp-filter program");
    let c = Candidate {
        fd: info.fd().expect("xdp-filter fd"),
        id,
    };
    victim_xdp(lab, &c.fd, false);
    // xdp-filter's value: flag bits, MAP_FLAG_SRC = 1 (its counter lives above bit 6).
    const MAP_FLAG_SRC: u64 = 1;
    let mut v4: HashMap<MapData, [u8; 4], u64> = HashMap::try_from(aya::maps::Map::HashMap(
        MapData::from_pin(format!("{XDP_FILTER_PINS}/filter_ipv4")).expect("filter_ipv4 pin"),
    ))
    .expect("filter_ipv4");
    let mut v6: HashMap<MapData, [u8; 16], u64> = HashMap::try_from(aya::maps::Map::HashMap(
        MapData::from_pin(format!("{XDP_FILTER_PINS}/filter_ipv6")).expect("filter_ipv6 pin"),
    ))
    .expect("filter_ipv6");
    let (mut n4, mut n6) = (0, 0);
    for net in list {
        match net {
            IpNet::V4(n) if n.prefix_len() == 32 && n4 < 10_000 => {
                v4.insert(n.addr().octets(), MAP_FLAG_SRC, 0)
                    .expect("filter_ipv4 insert");
                n4 += 1;
            }
            IpNet::V6(n) if n.prefix_len() == 128 && n6 < 10_000 => {
                v6.insert(n.addr().octets(), MAP_FLAG_SRC, 0)
                    .expect("filter_ipv6 insert");
                n6 += 1;
            }
            _ => {}
        }
    }
    c
}

/// One row per family: the empty program, floodgate and maybe xdp-filter, side by side.
fn rows(lab: &Lab, label: &str, flood: &Flood, cands: &[&Candidate], frames: &[(&str, Vec<u8>)]) {
    for (family, frame) in frames {
        let mut ns: Vec<Vec<f64>> = vec![Vec::new(); cands.len()];
        for _ in 0..ROUNDS {
            for (i, c) in cands.iter().enumerate() {
                ns[i].push(on_victim(lab, c, || {
                    flood.send(lab, frame, FRAMES / 10);
                    mean_run_ns(c.id, || {
                        flood.send(lab, frame, FRAMES);
                    })
                }));
            }
        }
        let ratio =
            |i: usize| -> Vec<f64> { ns[i].iter().zip(&ns[0]).map(|(a, b)| a / b).collect() };
        let (peer_ns, peer_ratio) = if cands.len() > 2 {
            (fmt_spread(&ns[2], 1), fmt_spread(&ratio(2), 2))
        } else {
            ("".into(), "".into())
        };
        println!(
            "| {label} | {family} | {} | {} | {} | {peer_ns} | {peer_ratio} |",
            fmt_spread(&ns[0], 1),
            fmt_spread(&ns[1], 1),
            fmt_spread(&ratio(1), 2),
        );
    }
}

fn main() {
    let lab = Lab::new("lf").expect("creating the lab");
    let _stats = RunTimeStats::enable();
    let random = Flood::anywhere();
    let frames = [
        ("IPv4", flood_frame(&lab, false, false)),
        ("IPv6", flood_frame(&lab, true, false)),
    ];

    let (fd, id) = floor();
    let floor = Candidate { fd, id };

    let pin = PinDir::new(&lab.pin_dir);
    let mut state = State::open(&pin, Access::Write).expect("opening floodgate's maps");
    state
        .write_settings(&Settings::default())
        .expect("settings");
    let fg = candidate(loader::program(&mut state.ebpf).expect("floodgate program"));

    let full = *SIZES.last().expect("sizes");
    let mixed = mixed_list(full, 0x5eed);
    let heavy = prefix_heavy_list(full, 0xbeef);
    println!("## Program cost under a live flood\n");
    println!(
        "`run_time_ns / run_cnt` of the victim's program (BPF_ENABLE_STATS on), {FRAMES} frames \
         per measurement, {ROUNDS} rounds; median (min..max) in ns per packet. Floods: *random* \
         sources (IPv4: anywhere; IPv6: in 2000::/3), or *listed* ones (each frame's source \
         drawn from addresses inside the list's entries: every frame takes the drop path). \
         Lists: *mixed* (host-heavy): 70% IPv4 (90% /32, 9.5% /24, 0.5% /16), 30% IPv6 (60% \
         /128, 30% /64, 10% /48); *prefix-heavy*: 70% IPv4 /32, 20% /24, 2% /16, 8% IPv6 /64. \
         Defences at their defaults.\n"
    );
    println!(
        "| blocklist, flood | family | empty XDP_DROP | floodgate | floodgate / empty | xdp-filter (10k hosts) | xdp-filter / empty |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut memory_rows = Vec::new();
    for (shape, list, sizes) in [
        ("mixed", &mixed, &SIZES[..]),
        ("prefix-heavy", &heavy, &SIZES[3..]),
    ] {
        let flushed = state.lists.flush(ListKind::Block).expect("flushing");
        if flushed > 0 {
            eprintln!("live_flood: flushed {flushed} entries");
        }
        let mut loaded = 0;
        for &size in sizes {
            let t = Instant::now();
            state
                .lists
                .add(
                    ListKind::Block,
                    SOURCE_CLI,
                    &list[loaded..size],
                    None,
                    None,
                    &mut |_, _| {},
                )
                .expect("filling the blocklist");
            eprintln!(
                "live_flood: {shape} blocklist {loaded} -> {size} entries in {:.2} s",
                t.elapsed().as_secs_f64()
            );
            loaded = size;
            let peer = (size == 10_000).then(|| xdp_filter(&lab, list));
            let mut cands = vec![&floor, &fg];
            if let Some(p) = &peer {
                cands.push(p);
            }
            rows(
                &lab,
                &format!("{size} {shape}, random"),
                &random,
                &cands,
                &frames,
            );
            if peer.is_some() {
                let _ = std::fs::remove_dir_all(XDP_FILTER_PINS);
            }
            if size == full {
                let listed = Flood::listed(list, 0x1157);
                let label = format!("{size} {shape}, listed (drop path)");
                rows(&lab, &label, &listed, &[&floor, &fg], &frames);
            }
        }
        memory_rows.push((shape, memory(&pin)));
    }
    println!();
    print_memory(full, &memory_rows);
    yardstick(&lab, &random, &floor, &frames[0].1);
}

/// What a random memory access costs here: XDP_DROP after 1 to 3 dependent random reads in a
/// 128 MiB array, beside the empty program, under the same random flood. A lookup in a
/// million-entry hash (front word, bucket, element) makes about three such reads.
fn yardstick(lab: &Lab, flood: &Flood, floor: &Candidate, frame: &[u8]) {
    println!("## What a cache miss costs on this machine\n");
    println!(
        "The yardstick program (tests/bench-ebpf/src/misses.rs): XDP_DROP after N dependent \
         reads at random places of a 128 MiB array, under the random IPv4 flood, {ROUNDS} rounds \
         beside the empty program. Each read is a cache miss and, on a virtual machine, a nested \
         TLB miss: the price of each map touched on the drop path.\n"
    );
    println!("| dependent random reads | ns per packet | x empty | ns per read |");
    println!("|---|---|---|---|");
    let progs: Vec<Candidate> = (1..=3)
        .map(|n| {
            let (fd, id) = misses(n);
            Candidate { fd, id }
        })
        .collect();
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); 4];
    for _ in 0..ROUNDS {
        for (i, c) in std::iter::once(floor).chain(&progs).enumerate() {
            ns[i].push(on_victim(lab, c, || {
                flood.send(lab, frame, FRAMES / 10);
                mean_run_ns(c.id, || {
                    flood.send(lab, frame, FRAMES);
                })
            }));
        }
    }
    println!(
        "| 0 (empty XDP_DROP) | {} | 1.00 | |",
        fmt_spread(&ns[0], 1)
    );
    for n in 1..=3 {
        let ratio: Vec<f64> = ns[n].iter().zip(&ns[0]).map(|(a, b)| a / b).collect();
        let per: Vec<f64> = ns[n]
            .iter()
            .zip(&ns[0])
            .map(|(a, b)| (a - b) / n as f64)
            .collect();
        println!(
            "| {n} | {} | {} | {} |",
            fmt_spread(&ns[n], 1),
            fmt_spread(&ratio, 2),
            fmt_spread(&per, 1)
        );
    }
    println!();
}

const MEMORY_MAPS: [&str; 6] = {
    use filter_common::map_names as n;
    [
        n::BLOCK_V4_EXACT,
        n::BLOCK_V4,
        n::BLOCK_V6_EXACT,
        n::BLOCK_V6,
        n::FRONT,
        n::LIST_META,
    ]
};

/// Kernel memory of the list maps (their fdinfo `memlock`, which 6.x reports as what the map
/// uses), in [`MEMORY_MAPS`] order.
fn memory(pin: &PinDir) -> Vec<u64> {
    MEMORY_MAPS
        .iter()
        .map(|name| {
            let map = MapData::from_pin(pin.maps().join(name)).expect("pinned map");
            map_memlock(map.fd())
        })
        .collect()
}

fn print_memory(entries: usize, shapes: &[(&str, Vec<u64>)]) {
    println!("## Kernel memory with {entries} blocklist entries\n");
    let names: Vec<&str> = shapes.iter().map(|(s, _)| *s).collect();
    println!("| map | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(shapes.len()));
    for (i, name) in MEMORY_MAPS.iter().enumerate() {
        let cells: Vec<String> = shapes.iter().map(|(_, m)| m[i].to_string()).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    let totals: Vec<String> = shapes
        .iter()
        .map(|(_, m)| {
            let t: u64 = m.iter().sum();
            format!(
                "**{t}** ({:.0} bytes per entry)",
                t as f64 / entries.max(1) as f64
            )
        })
        .collect();
    println!("| **total** | {} |\n", totals.join(" | "));
}
