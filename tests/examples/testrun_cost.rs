//! BPF_PROG_TEST_RUN cost per packet of each floodgate verdict path, beside an empty XDP_DROP
//! program (the floor), measured interleaved in one run: medians (min..max) of several rounds.
//! Run by `cargo xtask bench`; kernel.bpf_stats_enabled stays as it is (off by default).
//! test_run reuses one packet, so caches stay hot: these are best-case costs.

use std::net::Ipv4Addr;

use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use floodgate::{lists::ListKind, loader, prefix::parse_prefix};
use floodgate_tests::{Harness, packet::*};

const REPEAT: u32 = 2_000_000;
const ROUNDS: usize = 7;

fn per_packet(prog: &Xdp, frame: &[u8]) -> f64 {
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: REPEAT,
            ..TestRunOptions::default()
        })
        .expect("test_run");
    // The kernel reports the mean duration of one repetition.
    r.duration.as_secs_f64() * 1e9
}

fn main() {
    let mut floor = Ebpf::load(loader::FLOOR_OBJECT).expect("loading the floor object");
    let floor_prog: &mut Xdp = floor
        .program_mut("floor")
        .expect("floor program")
        .try_into()
        .expect("xdp");
    floor_prog.load().expect("verifying floor");

    let mut h = Harness::new();
    let nets = |v: &[&str]| {
        v.iter()
            .map(|s| parse_prefix(s).expect("prefix"))
            .collect::<Vec<_>>()
    };
    h.state
        .lists
        .add(
            ListKind::Block,
            &nets(&["198.18.66.6", "198.19.0.0/16"]),
            None,
            None,
            &mut |_, _| {},
        )
        .expect("block");
    h.state
        .lists
        .add(
            ListKind::Allow,
            &nets(&["198.19.1.0/24"]),
            None,
            None,
            &mut |_, _| {},
        )
        .expect("allow");
    let dst = Ipv4Addr::new(198, 18, 0, 1);
    let u = udp(40000, 53, &[0; 18]);
    let frame = |src: Ipv4Addr| eth(&[], ETH_P_IP, &ipv4(src, dst, UDP, &[], 0, &u));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "pass (v4 UDP, no match)",
            frame(Ipv4Addr::new(198, 18, 0, 2)),
        ),
        ("allowlist (prefix)", frame(Ipv4Addr::new(198, 19, 1, 5))),
        ("blocklist exact /32", frame(Ipv4Addr::new(198, 18, 66, 6))),
        ("blocklist prefix /16", frame(Ipv4Addr::new(198, 19, 5, 5))),
        ("malformed (IHL < 5)", {
            let mut p = ipv4(Ipv4Addr::new(198, 18, 0, 2), dst, UDP, &[], 0, &u);
            p[0] = 0x44;
            eth(&[], ETH_P_IP, &p)
        }),
    ];
    let prog = loader::program(&mut h.state.ebpf).expect("program");
    let mut floor_ns = Vec::new();
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..ROUNDS {
        floor_ns.push(per_packet(floor_prog, &cases[0].1));
        for (i, (_, f)) in cases.iter().enumerate() {
            ns[i].push(per_packet(prog, f));
        }
    }
    let stat = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (fm, fmin, fmax) = stat(&mut floor_ns);
    println!("BPF_PROG_TEST_RUN, {REPEAT} repeats x {ROUNDS} rounds, median (min..max) ns/packet");
    println!(
        "{:<28} {:>8} {:>16} {:>10}",
        "path", "median", "min..max", "x floor"
    );
    println!(
        "{:<28} {:>8.1} {:>16} {:>10}",
        "floor: empty XDP_DROP",
        fm,
        format!("{fmin:.1}..{fmax:.1}"),
        "1.00"
    );
    for (i, (name, _)) in cases.iter().enumerate() {
        let (m, lo, hi) = stat(&mut ns[i]);
        println!(
            "{:<28} {:>8.1} {:>16} {:>10.2}",
            name,
            m,
            format!("{lo:.1}..{hi:.1}"),
            m / fm
        );
    }
}
