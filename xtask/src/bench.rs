//! Benchmarks (never part of `cargo xtask test`). Runs each benchmark of tests/examples
//! (release builds), echoes what they print, and writes BENCHMARKS.md: the machine, the kernel,
//! the date, the commands, every table, then the design notes (xtask/src/bench_notes.md).
//! Installs its peers (xdp-tools, nftables, iptables, ipset, ethtool) first.

use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

#[derive(clap::Args, Default)]
pub struct Options {
    /// Write the report here (relative to the workspace root).
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: String,
}

/// The benchmarks, in order: (example, what it measures).
const BENCHES: &[(&str, &str)] = &[
    ("testrun_cost", "BPF_PROG_TEST_RUN cost per verdict path"),
    (
        "live_flood",
        "program cost under a live random-source flood",
    ),
    (
        "netfilter_cost",
        "XDP against nftables and iptables+ipset; bulk load",
    ),
    ("daemon_push", "push to first drop; bulk push over the API"),
    (
        "synguard_cost",
        "SYN guard against the kernel alone under a spoofed SYN flood",
    ),
    (
        "capture_rate",
        "samples per second floodgate capture keeps up with",
    ),
    (
        "auto_latency",
        "automatic mitigation: detection to rule, matched share, collateral",
    ),
];

pub fn run(opts: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    crate::setup::run(crate::setup::Options::default())?;
    crate::setup::packages(crate::setup::BENCH_PACKAGES, false)?;
    let root = crate::workspace_root();
    // Benchmarks that drive the CLI or the daemon start the release binary.
    crate::cargo(&["build", "--release", "--package", "floodgate"])?;
    let mut build = vec!["build", "--release", "--package", "floodgate-tests"];
    for (name, _) in BENCHES {
        build.extend(["--example", name]);
    }
    crate::cargo(&build)?;
    let bin = root.join("target/release/floodgate");

    let mut report = header()?;
    for (name, what) in BENCHES {
        eprintln!("bench: {name}: {what}");
        let t = Instant::now();
        let out = Command::new(root.join("target/release/examples").join(name))
            .current_dir(&root)
            .env("FLOODGATE_BIN", &bin)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running the {name} benchmark"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        println!("{text}");
        if !out.status.success() {
            bail!("benchmark {name} failed (see above)");
        }
        eprintln!("bench: {name} took {:.0} s", t.elapsed().as_secs_f64());
        if text.trim_start().starts_with('#') {
            report.push_str(&text);
        } else {
            // Plain-text tables: keep their columns.
            let _ = write!(report, "## {what}\n\n```\n{}\n```\n\n", text.trim_end());
        }
    }
    report.push_str(include_str!("bench_notes.md"));
    let path = root.join(&opts.out);
    std::fs::write(&path, report).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "bench: wrote {} in {:.0} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn capture(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Machine, kernel, date and the command, so a reader can tell whether figures compare.
fn header() -> anyhow::Result<String> {
    let cpu = capture("lscpu", &[])
        .lines()
        .find_map(|l| l.strip_prefix("Model name:").map(|m| m.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let mem_gib = mem_kib / 1024.0 / 1024.0;
    let kernel = capture("uname", &["-sr"]);
    let date = capture("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let rustc = capture("rustc", &["--version"]);
    let commit = capture("git", &["rev-parse", "--short", "HEAD"]);
    let mut s = String::new();
    writeln!(s, "# floodgate benchmarks\n")?;
    writeln!(
        s,
        "Written by `cargo xtask bench` (commit {commit}, {date}). Every figure is a median \
         (min..max) over rounds measured side by side in one run: compare ratios, not absolute \
         nanoseconds, across machines.\n"
    )?;
    writeln!(s, "- Machine: {cpu}, {cores} CPUs, {mem_gib:.0} GiB")?;
    writeln!(s, "- Kernel: {kernel}")?;
    writeln!(
        s,
        "- Toolchain: {rustc}; eBPF built with nightly + bpf-linker"
    )?;
    writeln!(
        s,
        "- Commands: `cargo xtask bench` runs tests/examples/{{{}}}.rs (release)\n",
        BENCHES
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(",")
    )?;
    Ok(s)
}
