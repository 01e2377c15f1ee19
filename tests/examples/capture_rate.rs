//! How many samples per second `floodgate capture` keeps up with: a flood from a blocklisted
//! /16 (the live-frames generator, every frame a new source) while `capture --reason blocklist
//! -w FILE` runs at 1 in 1, 1 in 10 and 1 in 100; per rate, samples written per second and the
//! share lost to a full ring (counted by the data plane, so nothing is lost unaccounted).
//!
//! Prints a Markdown section; `cargo xtask bench` collects it into BENCHMARKS.md.

use std::{
    net::Ipv4Addr,
    process::Stdio,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use floodgate_lab::{Lab, VICTIM_IF};
use floodgate_tests::{bench::*, floodgate_command, floodgate_ok};

const SECONDS: u64 = 3;

fn main() {
    let lab = Lab::new("caprate").unwrap_or_else(|e| panic!("creating the lab: {e:#}"));
    floodgate_ok(&lab, &["attach", VICTIM_IF]);
    floodgate_ok(&lab, &["block", "add", "198.18.0.0/16", "--force"]);
    let flood = Flood::new(Ipv4Addr::new(198, 18, 0, 0), 0x0000_ffff);
    let frame = flood_frame(&lab, false, false);
    let dir = std::env::temp_dir().join(format!("fgcaprate{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");

    let mut rows = Vec::new();
    for rate in [1u32, 10, 100] {
        let file = dir.join(format!("r{rate}.pcapng"));
        let child = floodgate_command(
            &lab.victim,
            &lab.pin_dir,
            &[
                "capture",
                "--reason",
                "blocklist",
                "--sample",
                &rate.to_string(),
                "--duration",
                &format!("{SECONDS}s"),
                "-w",
                file.to_str().expect("path"),
            ],
        )
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("starting floodgate capture");
        let stop = AtomicBool::new(false);
        let mut sent = 0u64;
        let mut secs = 0.0;
        let out = std::thread::scope(|s| {
            let wait = s.spawn(|| {
                let out = child.wait_with_output().expect("capture ends");
                stop.store(true, Ordering::Relaxed);
                out
            });
            std::thread::sleep(Duration::from_millis(300));
            while !stop.load(Ordering::Relaxed) {
                secs += flood.send(&lab, &frame, 100_000).as_secs_f64();
                sent += 100_000;
            }
            wait.join().expect("capture thread")
        });
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        // "R samples received, W written, L lost (ring full)"
        let nums: Vec<u64> = text
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|t| t.parse().ok())
            .collect();
        let (written, lost) = match nums.as_slice() {
            [_, w, l, ..] => (*w, *l),
            _ => panic!("capture's summary: {text}"),
        };
        let loss = lost as f64 / (written + lost).max(1) as f64 * 100.0;
        eprintln!("1 in {rate}: {written} written, {lost} lost ({loss:.2}%)");
        rows.push((
            rate,
            sent as f64 / secs.max(1e-9),
            written as f64 / SECONDS as f64,
            loss,
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!("## What `floodgate capture` keeps up with\n");
    println!(
        "A live-frames flood from a blocklisted /16 (every frame a new source) for {SECONDS} s \
         per rate while `capture --reason blocklist -w FILE` writes pcapng. Lost: samples the \
         full ring had no room for, counted by the data plane (none go unaccounted).\n"
    );
    println!("| sampling | flood pps (generator) | samples written per s | lost |");
    println!("|---|---|---|---|");
    for (rate, pps, written, loss) in &rows {
        println!("| 1 in {rate} | {pps:.0} | {written:.0} | {loss:.2}% |");
    }
    let best = rows
        .iter()
        .filter(|r| r.3 < 1.0)
        .map(|r| r.2)
        .fold(0.0f64, f64::max);
    println!("\nHighest rate written with under 1% lost: {best:.0} samples/s.\n");
}
