//! XDP against netfilter on the same list, fairly: the live-frames generator hands the victim's
//! veth xdp_frames, so floodgate drops them before any skb exists, while nftables (netdev
//! ingress) and iptables (raw PREROUTING + ipset) pay for the skb first, as they would on a
//! real NIC. Every frame of the flood comes from a listed /16, so every setup drops all of
//! them. The figure is wall time per frame of the sending syscall, which includes the victim's
//! receive work (veth's NAPI poll runs on the sending CPU before the syscall returns): the
//! generator's own share is the same in every column, the empty XDP_DROP column shows it.
//!
//! Also times the bulk load of the 1M-entry list into each: `floodgate block load FILE` (a
//! fresh pin directory), `nft -f` (an interval set), `ipset restore` (hash:net).
//!
//! Prints Markdown; `cargo xtask bench` collects it into BENCHMARKS.md.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use floodgate::loader;
use floodgate_lab::{Lab, VICTIM_IF};
use floodgate_tests::{bench::*, floodgate_bin};
use ipnet::IpNet;

const ROUNDS: usize = 5;
const FRAMES: u32 = 2_000_000;
const ENTRIES: usize = 1_000_000;
/// Every frame's source is random in here, a /16 on every list.
const FLOOD_NET: &str = "198.19.0.0/16";

fn run_in(lab: &Lab, program: &str, args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = lab
        .victim
        .command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

fn main() {
    let lab = Lab::new("nf").expect("creating the lab");
    // veth takes xdp_frames only with NAPI: an XDP program, or GRO on (for netfilter).
    run_in(&lab, "ethtool", &["-K", VICTIM_IF, "gro", "on"]);
    let dir = std::env::temp_dir().join(format!("floodgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");

    let mut list = mixed_list(ENTRIES - 1, 0x5eed);
    list.push(FLOOD_NET.parse().expect("flood net"));
    let (v4, v6): (Vec<&IpNet>, Vec<&IpNet>) = list.iter().partition(|n| matches!(n, IpNet::V4(_)));

    // The same list in each tool's own format.
    let plain = dir.join("list.txt");
    let text: String = list.iter().map(|n| format!("{n}\n")).collect();
    std::fs::write(&plain, text).expect("list file");
    let mut nft = String::from("table netdev fgbench {\n");
    for (name, ty, nets) in [("block4", "ipv4_addr", &v4), ("block6", "ipv6_addr", &v6)] {
        let _ = write!(
            nft,
            "  set {name} {{ type {ty}; flags interval; auto-merge; elements = {{ "
        );
        let elems: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
        nft.push_str(&elems.join(", "));
        nft.push_str(" } }\n");
    }
    nft.push_str("}\n");
    let nft_file = dir.join("list.nft");
    std::fs::write(&nft_file, nft).expect("nft file");
    let mut ipset = String::new();
    let _ = writeln!(
        ipset,
        "create fg4 hash:net family inet hashsize 1048576 maxelem 2000000"
    );
    let _ = writeln!(
        ipset,
        "create fg6 hash:net family inet6 hashsize 1048576 maxelem 2000000"
    );
    for n in &v4 {
        let _ = writeln!(ipset, "add fg4 {n}");
    }
    for n in &v6 {
        let _ = writeln!(ipset, "add fg6 {n}");
    }
    let ipset_file = dir.join("list.ipset");
    std::fs::write(&ipset_file, ipset).expect("ipset file");

    // Bulk loads, timed as a user runs them.
    let fg_load = run_in(
        &lab,
        floodgate_bin().to_str().expect("UTF-8"),
        &[
            "--pin-dir",
            lab.pin_dir.to_str().expect("UTF-8"),
            "block",
            "load",
            plain.to_str().expect("UTF-8"),
        ],
    );
    let nft_load = run_in(&lab, "nft", &["-f", nft_file.to_str().expect("UTF-8")]);
    let ipset_load = {
        let t = Instant::now();
        let out = lab
            .victim
            .command("sh")
            .args(["-c", &format!("ipset restore < {}", ipset_file.display())])
            .output()
            .expect("ipset restore");
        assert!(
            out.status.success(),
            "ipset restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    };
    let _ = std::fs::remove_dir_all(&dir);

    // The programs: floodgate from the pins `block load` made, the empty floor.
    let pin = loader::PinDir::new(&lab.pin_dir);
    let mut state = floodgate::state::State::open(&pin, floodgate::state::Access::Write)
        .expect("floodgate maps");
    let fg_fd = loader::program(&mut state.ebpf)
        .expect("program")
        .info()
        .expect("info")
        .fd()
        .expect("fd");
    let (floor_fd, _) = floor();

    // iptables stays on throughout: nft's ingress hook and XDP both drop before it runs.
    for (tool, set) in [("iptables-legacy", "fg4"), ("ip6tables-legacy", "fg6")] {
        let rule = [
            "-t",
            "raw",
            "-A",
            "PREROUTING",
            "-m",
            "set",
            "--match-set",
            set,
            "src",
        ];
        run_in(&lab, tool, &[&rule[..], &["-j", "DROP"]].concat());
    }
    let chain_on = format!(
        "add chain netdev fgbench ingress {{ type filter hook ingress device {VICTIM_IF} priority -500; }}\n\
         add rule netdev fgbench ingress ip saddr @block4 drop\n\
         add rule netdev fgbench ingress ip6 saddr @block6 drop\n"
    );
    let nft_chain = |on: bool| {
        let script = if on {
            chain_on.clone()
        } else {
            "delete chain netdev fgbench ingress\n".into()
        };
        let mut c = lab.victim.command("nft");
        c.args(["-f", "-"]).stdin(std::process::Stdio::piped());
        let mut child = c.spawn().expect("nft");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("nft script");
        assert!(child.wait().expect("nft").success(), "nft chain change");
    };

    let base: Ipv4Addr = FLOOD_NET
        .split('/')
        .next()
        .expect("net")
        .parse()
        .expect("addr");
    let flood = Flood::new(base, 0xffff);
    let frame = flood_frame(&lab, false, true);
    let setups = [
        "empty XDP_DROP",
        "floodgate (XDP)",
        "nftables netdev ingress",
        "iptables raw + ipset",
    ];
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    let measure = || -> f64 {
        flood.send(&lab, &frame, FRAMES / 10);
        flood.send(&lab, &frame, FRAMES).as_nanos() as f64 / FRAMES as f64
    };
    for _ in 0..ROUNDS {
        victim_xdp(&lab, &floor_fd, true);
        ns[0].push(measure());
        victim_xdp(&lab, &floor_fd, false);
        victim_xdp(&lab, &fg_fd, true);
        ns[1].push(measure());
        victim_xdp(&lab, &fg_fd, false);
        nft_chain(true);
        ns[2].push(measure());
        nft_chain(false);
        ns[3].push(measure());
    }
    // Every frame must have been dropped where we think: floodgate counted its share.
    let dropped = state.stats.read().expect("stats");
    let block = dropped
        .iter()
        .find(|(r, _)| *r == filter_common::Reason::Blocklist)
        .map_or(0, |(_, c)| c.packets);
    assert!(
        block >= (ROUNDS as u64) * FRAMES as u64,
        "floodgate dropped {block} frames as blocklisted, expected every one it was sent"
    );

    println!("## XDP against netfilter, same 1M-entry list\n");
    println!(
        "Live-frames flood from one listed /16 ({FLOOD_NET}, random sources), {FRAMES} frames per \
         measurement, {ROUNDS} rounds, every frame dropped. ns per frame: wall time of the \
         sending syscall, which includes the victim's receive path; the generator's own share is \
         in every column (see the empty program). Lower is better.\n"
    );
    println!("| setup | ns per frame | x floodgate | drop rate (Mpps, one CPU) |");
    println!("|---|---|---|---|");
    for (i, name) in setups.iter().enumerate() {
        let ratio: Vec<f64> = ns[i].iter().zip(&ns[1]).map(|(a, b)| a / b).collect();
        let (m, _, _) = spread(&ns[i]);
        println!(
            "| {name} | {} | {} | {:.2} |",
            fmt_spread(&ns[i], 1),
            fmt_spread(&ratio, 2),
            1e3 / m
        );
    }
    println!();
    println!("## Bulk load: {ENTRIES} prefixes (the mixed list), file to kernel\n");
    println!("| tool | seconds | x floodgate |");
    println!("|---|---|---|");
    for (name, d) in [
        ("floodgate block load", fg_load),
        ("nft -f (interval sets)", nft_load),
        ("ipset restore (hash:net)", ipset_load),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} |",
            d.as_secs_f64(),
            d.as_secs_f64() / fg_load.as_secs_f64()
        );
    }
    println!();
}
