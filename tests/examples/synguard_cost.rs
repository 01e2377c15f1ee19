//! The SYN guard against the kernel alone, on the same spoofed SYN flood: replies per second,
//! CPU per SYN, and how a legitimate client fares (exchanges that succeed, and their time).
//!
//! Each setup gets the same flood (random sources in 198.19.0.0/16, at the raw sender's full
//! rate, for `SECONDS`) at a listener on the victim, while a client on the attacker side does
//! connect + send + read-back exchanges one after another (1 s timeout each). CPU is the whole
//! machine's busy time (/proc/stat) per SYN sent, less the same with an empty XDP_DROP program
//! on the victim (which leaves only the generator's own cost): what the victim spent per SYN.
//!
//! Prints a Markdown section; `cargo xtask bench` collects it into BENCHMARKS.md.

use std::{
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use floodgate_lab::{Lab, VICTIM_IF, VICTIM_V4, traffic};
use floodgate_tests::{bench::*, floodgate_ok, stat};

const PORT: u16 = 443;
static CLIENT: AtomicU64 = AtomicU64::new(0);
const SECONDS: f64 = 4.0;

/// What one setup did under the flood.
struct Outcome {
    syns_per_s: f64,
    replies_per_s: f64,
    cpu_ns_per_syn: f64,
    tried: usize,
    ok: usize,
    median_ms: f64,
    p99_ms: f64,
}

/// Busy and total jiffies of the whole machine.
fn cpu_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let f: Vec<u64> = text
        .lines()
        .next()
        .expect("cpu line")
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().expect("number"))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
    (busy, busy + f[3] + f[4])
}

fn syncookies(lab: &Lab, value: &str) {
    let v = value.to_string();
    lab.victim
        .run(move || std::fs::write("/proc/sys/net/ipv4/tcp_syncookies", v))
        .expect("victim namespace")
        .expect("setting net.ipv4.tcp_syncookies");
}

/// SYN-ACKs the victim's kernel sent (its TCP output segments: the flood's replies, and the
/// client's few).
fn kernel_out_segs(lab: &Lab) -> u64 {
    lab.victim
        .run(|| net_counters("snmp", "Tcp:", &["OutSegs"])[0])
        .expect("victim namespace")
}

/// Run the flood and the client for `SECONDS`. `clients`: false for the floor (nothing
/// answers there). `replies`: the setup's own count of SYN-ACKs sent so far.
fn under_flood(
    lab: &Lab,
    clients: bool,
    pps: Option<f64>,
    replies: &dyn Fn() -> u64,
) -> (Outcome, u64) {
    // A client address of its own per setup: thousands of exchanges leave their ports in
    // TIME_WAIT for a minute, and the next setup must not run out of them.
    let n = CLIENT.fetch_add(1, Ordering::Relaxed);
    let client = std::net::Ipv4Addr::new(198, 18, 1, 10 + n as u8);
    lab.add_attacker_addr(&format!("{client}/15"))
        .expect("adding the client's address");
    let bind = SocketAddr::new(VICTIM_V4.into(), PORT);
    let listener = lab
        .victim
        .run(move || traffic::tcp_listen(bind))
        .expect("victim namespace")
        .expect("listen");
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let (before, after, secs, mut times, tried) = std::thread::scope(|s| {
        let server = s.spawn(|| traffic::tcp_echo_server(&listener, &stop));
        let flooder = s.spawn(|| syn_flood(lab, PORT, &stop, &sent, pps));
        while sent.load(Ordering::Relaxed) < 20_000 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let before = (cpu_jiffies().0, replies(), sent.load(Ordering::Relaxed));
        let started = Instant::now();
        let (times, tried) = if clients {
            lab.attacker
                .run(|| {
                    let mut times = Vec::new();
                    let mut n = 0;
                    let end = Instant::now() + Duration::from_secs_f64(SECONDS);
                    while Instant::now() < end {
                        n += 1;
                        let msg = format!("exchange {n}\n");
                        let t = Instant::now();
                        let got = traffic::tcp_exchange(
                            IpAddr::V4(client),
                            bind,
                            msg.as_bytes(),
                            Duration::from_secs(1),
                        );
                        if got.as_deref() == Some(msg.as_bytes()) {
                            times.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    (times, n)
                })
                .expect("attacker namespace")
        } else {
            std::thread::sleep(Duration::from_secs_f64(SECONDS));
            (Vec::new(), 0)
        };
        let secs = started.elapsed().as_secs_f64();
        let after = (cpu_jiffies().0, replies(), sent.load(Ordering::Relaxed));
        stop.store(true, Ordering::Relaxed);
        server.join().expect("server");
        flooder.join().expect("flooder");
        (before, after, secs, times, tried)
    });
    let (jiffies0, replies0, syns0) = before;
    let (jiffies1, replies1, syns1) = after;
    let syns = (syns1 - syns0).max(1);
    // USER_HZ is 100: a jiffy is 10 ms.
    let busy_ns = (jiffies1 - jiffies0) as f64 * 10_000_000.0;
    times.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let pick = |q: f64| {
        if times.is_empty() {
            f64::NAN
        } else {
            times[((times.len() - 1) as f64 * q) as usize]
        }
    };
    (
        Outcome {
            syns_per_s: syns as f64 / secs,
            replies_per_s: (replies1 - replies0) as f64 / secs,
            cpu_ns_per_syn: busy_ns / syns as f64,
            tried,
            ok: times.len(),
            median_ms: pick(0.5),
            p99_ms: pick(0.99),
        },
        syns,
    )
}

/// One setup, twice: the flood alone (rates, CPU per SYN: no client work mixed in), then the
/// flood with the client (its exchanges).
fn setup(lab: &Lab, pps: Option<f64>, replies: &dyn Fn() -> u64) -> Outcome {
    let (mut o, _) = under_flood(lab, false, pps, replies);
    let (c, _) = under_flood(lab, true, pps, replies);
    o.tried = c.tried;
    o.ok = c.ok;
    o.median_ms = c.median_ms;
    o.p99_ms = c.p99_ms;
    o
}

/// The id of the most recently loaded program called `name`.
fn newest_program(name: &str) -> u32 {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(name))
        .map(|p| p.id())
        .max()
        .unwrap_or_else(|| panic!("no loaded program {name}"))
}

fn main() {
    let lab = Lab::new("sgb").unwrap_or_else(|e| panic!("creating the lab: {e:#}"));
    // The flood's sources are off-link, as on the Internet: the victim's kernel sends its
    // SYN-ACKs to them through a gateway (the attacker's side) and needs no neighbour entry
    // per source (a flood of those fills the neighbour table, and then no client's address
    // can be resolved: an artifact of a lab where every source is on the link).
    lab.victim
        .ip(&["route", "add", "198.19.0.0/16", "via", "198.18.0.2"])
        .expect("a route to the flood's sources");
    // The victim's XDP_TX replies reach the attacker side only if its veth has XDP too; kept
    // for every setup so that each pays the same.
    attacker_xdp_pass(&lab);

    let mut rows: Vec<(&str, Outcome)> = Vec::new();
    let (floor_fd, _) = floor();
    victim_xdp(&lab, &floor_fd, true);
    let (floor, _) = under_flood(&lab, false, None, &|| 0);
    victim_xdp(&lab, &floor_fd, false);
    eprintln!("floor: {:.0} ns/SYN", floor.cpu_ns_per_syn);

    for (name, cookies) in [
        ("kernel, tcp_syncookies=0 (no defence)", "0"),
        ("kernel, tcp_syncookies=1 (default)", "1"),
        ("kernel, tcp_syncookies=2 (always)", "2"),
    ] {
        syncookies(&lab, cookies);
        let o = setup(&lab, None, &|| kernel_out_segs(&lab));
        eprintln!("{name}: {} of {} exchanges", o.ok, o.tried);
        rows.push((name, o));
    }
    syncookies(&lab, "1");
    floodgate_ok(&lab, &["attach", VICTIM_IF]);
    floodgate_ok(&lab, &["synguard", "on", "--port", &PORT.to_string()]);
    let xdp_ns = xdp_ns_per_syn(&lab);
    eprintln!("XDP per SYN: {xdp_ns:.0} ns");
    let o = setup(&lab, None, &|| stat(&lab, "syn_cookie").0);
    eprintln!("floodgate: {} of {} exchanges", o.ok, o.tried);
    rows.push(("floodgate synguard (XDP cookies + TC kfunc)", o));
    // The same at the flood rate the kernel's own cookies let through (tcp_syncookies=2), so
    // that the client's figures compare at one load.
    let kernel_rate = rows[2].1.syns_per_s;
    let o = setup(&lab, Some(kernel_rate), &|| stat(&lab, "syn_cookie").0);
    eprintln!("floodgate, paced: {} of {} exchanges", o.ok, o.tried);
    rows.push((PACED, o));
    // The other completion path: the kernel's cookies from XDP, netfilter SYNPROXY for the
    // handshakes (conntrack on for the protected port).
    floodgate_ok(
        &lab,
        &[
            "synguard",
            "on",
            "--port",
            &PORT.to_string(),
            "--completion",
            "synproxy",
        ],
    );
    let synproxy_xdp_ns = xdp_ns_per_syn(&lab);
    eprintln!("XDP per SYN, SYNPROXY mode: {synproxy_xdp_ns:.0} ns");
    let o = setup(&lab, None, &|| stat(&lab, "syn_cookie").0);
    eprintln!("floodgate, SYNPROXY: {} of {} exchanges", o.ok, o.tried);
    rows.push((
        "floodgate synguard --completion synproxy (kernel cookies + netfilter)",
        o,
    ));
    floodgate_ok(&lab, &["detach", "--all"]);

    println!("## SYN guard against the kernel alone, same spoofed SYN flood\n");
    println!(
        "A raw-socket flood of SYNs from random off-link sources (reached through a gateway) at \
         the victim's listener, {SECONDS} s per setup, twice: alone (rates; CPU per SYN: the \
         whole machine's busy time per SYN sent, less the same under an empty XDP_DROP program \
         on the victim, {:.0} ns/SYN, the generator's own cost), then with one client doing \
         connect + echo exchanges back to back (1 s timeout). The kernel's work per SYN slows \
         the generator that shares the two cores, so the last row paces the flood to the rate \
         the kernel's always-on cookies saw, for the client's figures at one load.\n",
        floor.cpu_ns_per_syn
    );
    println!(
        "| setup | SYNs/s sent | SYN-ACKs/s | victim CPU ns per SYN | x floodgate (paced) | exchanges ok | exchange ms p50 / p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    // The reference: the guard at the flood rate the kernel's cookies saw.
    let ours = rows
        .iter()
        .find(|(name, _)| *name == PACED)
        .map(|(_, o)| o.cpu_ns_per_syn - floor.cpu_ns_per_syn);
    for (name, o) in &rows {
        let cpu = o.cpu_ns_per_syn - floor.cpu_ns_per_syn;
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {} | {} of {} ({:.1}%) | {} |",
            o.syns_per_s,
            o.replies_per_s,
            cpu,
            ours.map_or("-".into(), |f| format!("{:.1}", cpu / f)),
            o.ok,
            o.tried,
            100.0 * o.ok as f64 / o.tried.max(1) as f64,
            if o.ok == 0 {
                "-".to_string()
            } else {
                format!("{:.2} / {:.2}", o.median_ms, o.p99_ms)
            }
        );
    }
    println!(
        "\nThe guard's XDP programs' own time per SYN (first stage, defences, SYN guard: the \
         kernel's run_time_ns / run_cnt under the flood, stats on): {xdp_ns:.0} ns; with \
         `--completion synproxy` (the kernel's cookie helper instead of floodgate's SipHash): \
         {synproxy_xdp_ns:.0} ns.\n"
    );
}

/// The reference row: the guard (kfunc path) at the flood rate the kernel's cookies saw.
const PACED: &str = "floodgate synguard, flood paced to the kernel's rate";

/// The XDP programs' own time per SYN (the kernel's run-time counters, stats on only here).
fn xdp_ns_per_syn(lab: &Lab) -> f64 {
    let _stats = RunTimeStats::enable();
    let ids: Vec<u32> = ["floodgate", "fg_defences", "fg_synguard"]
        .iter()
        .map(|name| newest_program(name))
        .collect();
    let before: Vec<(u64, u64)> = ids.iter().map(|&id| run_stats(id)).collect();
    under_flood(lab, false, None, &|| 0);
    let after: Vec<(u64, u64)> = ids.iter().map(|&id| run_stats(id)).collect();
    let time: u64 = after.iter().zip(&before).map(|(a, b)| a.0 - b.0).sum();
    let count = (after[0].1 - before[0].1).max(1);
    time as f64 / count as f64
}
