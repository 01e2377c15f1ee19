//! BPF_PROG_TEST_RUN cost per packet of each floodgate verdict path, beside an empty XDP_DROP
//! program (the floor), measured interleaved in one run: medians (min..max) of several rounds.
//! Run by `cargo xtask bench`; kernel.bpf_stats_enabled stays as it is (off by default).
//! test_run reuses one packet, so caches stay hot: these are best-case costs.

use std::net::Ipv4Addr;

use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use filter_common::Class;
use floodgate::{
    lists::ListKind,
    loader,
    prefix::parse_prefix,
    settings::{LimitSpec, RuleText, Settings, Spelling},
};
use floodgate_tests::{Harness, packet::*};

type Setup = fn(&mut Settings);

fn off(s: &mut Settings) {
    s.sanity.bits = 0;
}

fn defaults(_: &mut Settings) {}

/// The SYN guard on for TCP port 443 (sanity defaults, nothing else).
fn synguard(s: &mut Settings) {
    s.synguard = floodgate::settings::Synguard {
        enabled: true,
        ports: vec![443],
        dst: Vec::new(),
        when_over: None,
        completion: floodgate::settings::SynguardCompletion::Auto,
    };
}

fn rules(s: &mut Settings, texts: Vec<RuleText>) {
    s.rules = texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.to_spec(i as u32 + 1, Spelling::Cli).expect("rule"))
        .collect();
}

fn r(action: &str) -> RuleText {
    RuleText {
        action: action.into(),
        ..RuleText::default()
    }
}

fn one_drop_rule(s: &mut Settings) {
    rules(
        s,
        vec![RuleText {
            proto: Some("udp".into()),
            ..r("drop")
        }],
    );
}

fn limit_rule(s: &mut Settings) {
    rules(
        s,
        vec![RuleText {
            proto: Some("udp".into()),
            pps: Some("1".into()),
            ..r("limit")
        }],
    );
}

/// Sanity on, reflection on, 8 rules (7 that miss UDP to port 5000, the 8th drops port 9999),
/// and udp per-source and aggregate limits at 1 Gpps, which test_run never reaches: the pass
/// path pays for every stage, buckets included.
fn everything(s: &mut Settings) {
    s.reflection.enabled = true;
    let mut t = Vec::new();
    for port in ["22", "23", "25", "80", "443", "3389", "8080"] {
        t.push(RuleText {
            proto: Some("tcp".into()),
            dst_port: Some(port.into()),
            ..r("drop")
        });
    }
    t.push(RuleText {
        proto: Some("udp".into()),
        dst_port: Some("9999".into()),
        ..r("drop")
    });
    rules(s, t);
    s.limits.insert(
        Class::Syn,
        LimitSpec {
            per_source: Some("100".parse().unwrap()),
            aggregate: Some("1000".parse().unwrap()),
            dst: vec![parse_prefix("198.18.9.0/24").unwrap()],
            ..LimitSpec::default()
        },
    );
}

fn per_source(s: &mut Settings) {
    s.limits.insert(
        Class::Udp,
        LimitSpec {
            per_source: Some("1".parse().unwrap()),
            ..LimitSpec::default()
        },
    );
}

fn aggregate(s: &mut Settings) {
    s.limits.insert(
        Class::Udp,
        LimitSpec {
            aggregate: Some("1".parse().unwrap()),
            dst: vec![parse_prefix("198.18.0.0/24").unwrap()],
            ..LimitSpec::default()
        },
    );
}

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
    let mut floor =
        Ebpf::load(floodgate_tests::bench::FLOOR_OBJECT).expect("loading the floor object");
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
            filter_common::SOURCE_CLI,
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
            filter_common::SOURCE_CLI,
            &nets(&["198.19.1.0/24"]),
            None,
            None,
            &mut |_, _| {},
        )
        .expect("allow");
    let dst = Ipv4Addr::new(198, 18, 0, 1);
    let src = Ipv4Addr::new(198, 18, 0, 2);
    let u = udp(40000, 5000, &[0; 18]);
    let frame = |src: Ipv4Addr| eth(&[], ETH_P_IP, &ipv4(src, dst, UDP, &[], 0, &u));
    let plain = frame(src);
    let cases: Vec<(&str, Setup, Vec<u8>)> = vec![
        ("pass, every defence off", off, plain.clone()),
        ("pass, default sanity on", defaults, plain.clone()),
        ("pass, all on (8 rules)", everything, plain.clone()),
        (
            "allowlist (prefix)",
            defaults,
            frame(Ipv4Addr::new(198, 19, 1, 5)),
        ),
        (
            "blocklist exact /32",
            defaults,
            frame(Ipv4Addr::new(198, 18, 66, 6)),
        ),
        (
            "blocklist prefix /16",
            defaults,
            frame(Ipv4Addr::new(198, 19, 5, 5)),
        ),
        ("malformed (IHL < 5)", defaults, {
            let mut p = ipv4(src, dst, UDP, &[], 0, &u);
            p[0] = 0x44;
            eth(&[], ETH_P_IP, &p)
        }),
        ("length", defaults, {
            let mut f = plain.clone();
            f[17] = f[17].wrapping_add(100);
            f
        }),
        ("martian", defaults, frame(Ipv4Addr::new(127, 0, 0, 1))),
        (
            "land",
            defaults,
            eth(&[], ETH_P_IP, &ipv4(dst, dst, UDP, &[], 0, &u)),
        ),
        (
            "fragment (tiny first)",
            defaults,
            eth(&[], ETH_P_IP, &ipv4(src, dst, UDP, &[], 0x2000, &u)),
        ),
        (
            "tcp_flags (SYN+FIN)",
            defaults,
            eth(
                &[],
                ETH_P_IP,
                &ipv4(src, dst, TCP, &[], 0, &tcp(1, 2, 0x03, 5)),
            ),
        ),
        ("rule (drop, 1st of 1)", one_drop_rule, plain.clone()),
        ("rule (drop, 8th of 8)", everything, {
            eth(
                &[],
                ETH_P_IP,
                &ipv4(src, dst, UDP, &[], 0, &udp(40000, 9999, &[0; 18])),
            )
        }),
        ("rule_limit", limit_rule, plain.clone()),
        (
            "reflection",
            everything,
            eth(
                &[],
                ETH_P_IP,
                &ipv4(src, dst, UDP, &[], 0, &udp(53, 40000, &[0; 18])),
            ),
        ),
        ("ratelimit (per source)", per_source, plain.clone()),
        ("aggregate", aggregate, plain.clone()),
        // SYN guard: an ACK with no socket and a bad cookie (an ACK flood: socket lookup,
        // flow table, SipHash), and TCP to an unguarded port while the guard is on (the
        // defences stage's tail call). A SYN is not measured here: test_run's repeats run on
        // the one buffer, which the first run turned into the SYN-ACK (see synguard_cost).
        (
            "bad_cookie (ACK flood)",
            synguard,
            eth(
                &[],
                ETH_P_IP,
                &ipv4(src, dst, TCP, &[], 0, &tcp(40000, 443, 0x10, 5)),
            ),
        ),
        ("guard on, UDP", synguard, plain.clone()),
        (
            "guard on, other TCP port",
            synguard,
            eth(
                &[],
                ETH_P_IP,
                &ipv4(src, dst, TCP, &[], 0, &tcp(40000, 80, 0x02, 5)),
            ),
        ),
    ];
    // Sampling (issue 14): the blocklist /32 path with sampling on for another reason only
    // (this packet pays the test at its exit), 1 in 1000 and 1 in 1 of its own reason. A
    // thread drains the ring meanwhile, as a capture does.
    let blocked = frame(Ipv4Addr::new(198, 18, 66, 6));
    let block_slot = filter_common::stats_slot(filter_common::Reason::Blocklist, false);
    let other_slot = filter_common::stats_slot(filter_common::Reason::Reflection, false);
    let sampled: Vec<(&str, Vec<u8>, u32, u32)> = vec![
        (
            "blocklist /32, sampling other",
            blocked.clone(),
            other_slot,
            1,
        ),
        (
            "blocklist /32, 1 in 1000",
            blocked.clone(),
            block_slot,
            1000,
        ),
        ("blocklist /32, 1 in 1", blocked.clone(), block_slot, 1),
    ];
    // (The harness holds the state lock: the `_locked` calls.)
    let pin = floodgate::loader::PinDir::new(h.pin_dir());
    let mut sampling = floodgate::capture::Sampling::open(&pin).expect("sampling maps");
    let mut reader = floodgate::capture::Reader::open(&pin).expect("sample ring");
    let draining = std::sync::atomic::AtomicBool::new(true);
    // Automatic mitigation (issue 15): the plain pass with the destination in a host group,
    // counted on arrival, without and with 1 in 100 arrival samples (drained meanwhile).
    let mut auto = floodgate::auto::kernel::AutoMaps::open(&pin).expect("auto maps");
    auto.set_groups(&[(parse_prefix("198.18.0.1/32").expect("prefix"), 0)])
        .expect("group");
    let mut auto_reader = floodgate::auto::kernel::AutoReader::open(&pin).expect("auto ring");
    let auto_cases: [(&str, u32); 2] = [("pass, auto counting", 0), ("pass, auto 1 in 100", 100)];
    let mut auto_ns: Vec<Vec<f64>> = vec![Vec::new(); auto_cases.len()];

    let mut floor_ns = Vec::new();
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut sample_ns: Vec<Vec<f64>> = vec![Vec::new(); sampled.len()];
    let mut lost = 0;
    std::thread::scope(|sc| {
        sc.spawn(|| {
            while draining.load(std::sync::atomic::Ordering::Relaxed) {
                reader.read(std::time::Duration::from_millis(20));
            }
        });
        sc.spawn(|| {
            while draining.load(std::sync::atomic::Ordering::Relaxed) {
                auto_reader.read(std::time::Duration::from_millis(20));
            }
        });
        for _ in 0..ROUNDS {
            floor_ns.push(per_packet(floor_prog, &cases[0].2));
            for (i, (_, setup, f)) in cases.iter().enumerate() {
                let mut s = Settings::default();
                setup(&mut s);
                h.state.write_settings(&s).expect("settings");
                let prog = loader::program(&mut h.state.ebpf).expect("program");
                ns[i].push(per_packet(prog, f));
            }
            h.state
                .write_settings(&Settings::default())
                .expect("settings");
            for (i, (_, f, slot, rate)) in sampled.iter().enumerate() {
                let was = sampling
                    .enable_locked(&[*slot], *rate, Some(128))
                    .expect("sampling on");
                let l0 = sampling.lost(&[*slot]).expect("lost");
                let prog = loader::program(&mut h.state.ebpf).expect("program");
                sample_ns[i].push(per_packet(prog, f));
                lost += sampling.lost(&[*slot]).expect("lost") - l0;
                sampling.restore_locked(&was).expect("sampling off");
            }
            for (i, (_, rate)) in auto_cases.iter().enumerate() {
                auto.set_mode(filter_common::auto_mode::SHADOW)
                    .expect("auto on");
                auto.set_sample(*rate).expect("auto sampling");
                let prog = loader::program(&mut h.state.ebpf).expect("program");
                auto_ns[i].push(per_packet(prog, &cases[1].2));
                auto.set_mode(filter_common::auto_mode::OFF)
                    .expect("auto off");
                auto.set_sample(0).expect("auto sampling off");
            }
        }
        draining.store(false, std::sync::atomic::Ordering::Relaxed);
    });
    let stat = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (fm, fmin, fmax) = stat(&mut floor_ns);
    // The verifier's budget is 1M processed instructions per program: each stage's headroom.
    for (stage, n) in loader::stage_instructions(&mut h.state.ebpf).expect("stages") {
        if let Some(n) = n {
            println!(
                "verifier: stage {stage}: {n} instructions processed ({:.0}% of the 1000000 limit)",
                f64::from(n) / 1e4
            );
        }
    }
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
    for (i, (name, _, _)) in cases.iter().enumerate() {
        let (m, lo, hi) = stat(&mut ns[i]);
        println!(
            "{:<28} {:>8.1} {:>16} {:>10.2}",
            name,
            m,
            format!("{lo:.1}..{hi:.1}"),
            m / fm
        );
    }
    for (i, (name, _, _, _)) in sampled.iter().enumerate() {
        let (m, lo, hi) = stat(&mut sample_ns[i]);
        println!(
            "{:<28} {:>8.1} {:>16} {:>10.2}",
            name,
            m,
            format!("{lo:.1}..{hi:.1}"),
            m / fm
        );
    }
    for (i, (name, _)) in auto_cases.iter().enumerate() {
        let (m, lo, hi) = stat(&mut auto_ns[i]);
        println!(
            "{:<28} {:>8.1} {:>16} {:>10.2}",
            name,
            m,
            format!("{lo:.1}..{hi:.1}"),
            m / fm
        );
    }
    println!(
        "(sampling: a reader thread drained the ring meanwhile; 1 in 1 lost {lost} samples to a \
         full ring over all rounds)"
    );
}
