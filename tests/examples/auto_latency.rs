//! Automatic mitigation under repeated attacks: the real daemon (enforce mode) on the lab's
//! victim, a legitimate UDP client talking throughout, and attacks started and stopped one
//! after another. Per scenario: detection to rule (the daemon's own figure) and attack start
//! to rule (wall clock from the first attack frame) as p50/p99, the share of the attack the
//! mitigation matched while installed, and what the legitimate client lost.
//!
//! Prints a Markdown section; `cargo xtask bench` collects it into BENCHMARKS.md.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use floodgate_lab::{Lab, VICTIM_IF};
use floodgate_tests::{
    bench::{ntp_reflection_flood, syn_flood, udp_client, udp_server},
    daemon::{Daemon, Scratch},
    floodgate_ok,
};
use serde_json::Value;

const RUNS: usize = 10;
const SYN_RUNS: usize = 5;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn audit(dir: &std::path::Path, event: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == event)
        .collect()
}

/// Wait for the `n`th `event` (1-based) of the audit log.
fn nth(dir: &std::path::Path, event: &str, n: usize, timeout: Duration) -> Value {
    let started = Instant::now();
    loop {
        if let Some(e) = audit(dir, event).into_iter().nth(n - 1) {
            return e;
        }
        assert!(
            started.elapsed() < timeout,
            "no {event} #{n} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rule_hits(lab: &Lab) -> u64 {
    let rules: Value = serde_json::from_str(&floodgate_ok(lab, &["rule", "list", "--json"]))
        .expect("rule list --json");
    rules
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["id"].as_u64().unwrap_or(0) >= 1_000_000)
        .map(|r| r["packets"].as_u64().unwrap_or(0))
        .sum()
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

struct Scenario {
    name: &'static str,
    mitigation: String,
    detect: Vec<f64>,
    start: Vec<f64>,
    coverage: Vec<f64>,
}

fn main() {
    let lab = Lab::new("autolat").unwrap_or_else(|e| panic!("creating the lab: {e:#}"));
    let dir = Scratch::new();
    let config = format!(
        "{}[auto]\nmode = \"enforce\"\nlift_after = \"2s\"\naudit_log = \"{}\"\n\
         [[auto.groups]]\nname = \"lab\"\nprefixes = [\"198.18.0.1/32\"]\n\
         thresholds = {{ udp = \"5k\", syn = \"5k\" }}\n",
        Daemon::base_config(&dir.0, &format!("interfaces = [\"{VICTIM_IF}\"]")),
        dir.0.join("audit.jsonl").display()
    );
    let _d = Daemon::start(&lab.victim, &lab.pin_dir, &dir.0, &config);
    let stop_client = AtomicBool::new(false);
    let mut scenarios = Vec::new();
    let (client_sent, received) = std::thread::scope(|sc| {
        let server = sc.spawn(|| udp_server(&lab, 5353, &stop_client));
        std::thread::sleep(Duration::from_millis(200));
        let client = sc.spawn(|| udp_client(&lab, 5353, &stop_client, 500.0));
        std::thread::sleep(Duration::from_secs(4));

        let mut s = Scenario {
            name: "NTP reflection, 50k pps, random sources",
            mitigation: String::new(),
            detect: Vec::new(),
            start: Vec::new(),
            coverage: Vec::new(),
        };
        for run in 1..=RUNS {
            let stop = AtomicBool::new(false);
            let sent = AtomicU64::new(0);
            let t0 = unix_ms();
            std::thread::scope(|r| {
                r.spawn(|| ntp_reflection_flood(&lab, 40000, &stop, &sent, 50_000.0));
                let e = nth(&dir.0, "rule_installed", run, Duration::from_secs(20));
                s.detect
                    .push(e["detect_to_rule_s"].as_f64().unwrap_or(f64::NAN));
                s.start.push(
                    (e["time_unix_ms"].as_u64().unwrap_or(0).saturating_sub(t0)) as f64 / 1000.0,
                );
                s.mitigation = e["match"].as_str().unwrap_or_default().to_string();
                std::thread::sleep(Duration::from_millis(300));
                let (h0, s0) = (rule_hits(&lab), sent.load(Ordering::Relaxed));
                std::thread::sleep(Duration::from_millis(1500));
                let (h1, s1) = (rule_hits(&lab), sent.load(Ordering::Relaxed));
                s.coverage.push((h1 - h0) as f64 / (s1 - s0).max(1) as f64);
                stop.store(true, Ordering::Relaxed);
                nth(&dir.0, "attack_ended", run, Duration::from_secs(30));
                eprintln!(
                    "NTP run {run}: {:?}",
                    (s.detect.last(), s.start.last(), s.coverage.last())
                );
            });
        }
        scenarios.push(s);

        let mut s = Scenario {
            name: "spoofed SYN flood to tcp/80, 30k pps",
            mitigation: "SYN guard for 198.18.0.1 port 80".into(),
            detect: Vec::new(),
            start: Vec::new(),
            coverage: Vec::new(),
        };
        for run in 1..=SYN_RUNS {
            let stop = AtomicBool::new(false);
            let sent = AtomicU64::new(0);
            let t0 = unix_ms();
            std::thread::scope(|r| {
                r.spawn(|| syn_flood(&lab, 80, &stop, &sent, Some(30_000.0)));
                let e = nth(&dir.0, "defence_applied", run, Duration::from_secs(20));
                s.detect
                    .push(e["detect_to_rule_s"].as_f64().unwrap_or(f64::NAN));
                s.start.push(
                    (e["time_unix_ms"].as_u64().unwrap_or(0).saturating_sub(t0)) as f64 / 1000.0,
                );
                std::thread::sleep(Duration::from_millis(300));
                let (a0, s0) = (
                    floodgate_tests::stat(&lab, "syn_cookie").0,
                    sent.load(Ordering::Relaxed),
                );
                std::thread::sleep(Duration::from_millis(1500));
                let (a1, s1) = (
                    floodgate_tests::stat(&lab, "syn_cookie").0,
                    sent.load(Ordering::Relaxed),
                );
                s.coverage.push((a1 - a0) as f64 / (s1 - s0).max(1) as f64);
                stop.store(true, Ordering::Relaxed);
                nth(&dir.0, "defence_lifted", run, Duration::from_secs(30));
                nth(&dir.0, "attack_ended", RUNS + run, Duration::from_secs(30));
                eprintln!(
                    "SYN run {run}: {:?}",
                    (s.detect.last(), s.start.last(), s.coverage.last())
                );
            });
        }
        scenarios.push(s);
        std::thread::sleep(Duration::from_millis(500));
        stop_client.store(true, Ordering::Relaxed);
        (
            client.join().expect("client"),
            server.join().expect("server"),
        )
    });
    let lost = client_sent.saturating_sub(received);

    println!("## Automatic mitigation: detection to rule\n");
    println!(
        "The daemon in enforce mode (tick 200 ms, rates over the last second, lift_after 2 s) on \
         the lab's victim; a legitimate UDP client at 500 datagrams/s to udp/5353 throughout; \
         attacks started and stopped one after another. Detection to rule: from the tick that \
         saw the threshold crossed to the rule (or defence) in the maps, the daemon's own \
         figure. Attack start to rule: from the first attack frame (wall clock). Matched: \
         frames the rule dropped (the SYN guard answered) over frames sent, 0.3-1.8 s after \
         install, lowest run.\n"
    );
    println!(
        "| scenario | runs | mitigation | detection to rule p50 / p99 | attack start to rule p50 / p99 | matched (min) |"
    );
    println!("|---|---|---|---|---|---|");
    for s in &scenarios {
        println!(
            "| {} | {} | `{}` | {:.2} / {:.2} s | {:.2} / {:.2} s | {:.1}% |",
            s.name,
            s.detect.len(),
            s.mitigation,
            percentile(&s.detect, 0.5),
            percentile(&s.detect, 0.99),
            percentile(&s.start, 0.5),
            percentile(&s.start, 0.99),
            s.coverage.iter().copied().fold(f64::INFINITY, f64::min) * 100.0
        );
    }
    println!(
        "\nLegitimate client: {client_sent} datagrams sent, {received} received, {lost} lost \
         ({:.3}% collateral).\n",
        lost as f64 / client_sent.max(1) as f64 * 100.0
    );
}
