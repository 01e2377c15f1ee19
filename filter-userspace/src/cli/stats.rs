//! stats: packets and bytes per reason, once or live.

use std::time::{Duration, Instant};

use clap::Args;
use filter_common::{Action, REASON_COUNT};

use crate::{
    loader::PinDir,
    state::{Access, State},
    stats::StatsSnapshot,
};

/// Packets and bytes per reason, summed over CPUs since the maps were created.
///
/// Reasons passed: pass, allowlist. Answered from the data plane (action tx): syn_cookie.
/// Dropped: blocklist, malformed, tcp_flags, land, martian, fragment, length, reflection,
/// rule, rule_limit, ratelimit, aggregate, bad_cookie (see README).
/// The DRY-RUN section counts packets a drop or tx reason matched but dry-run let through
/// (global `floodgate mode dry-run`, or a rule added with --dry-run); every packet is counted
/// once, in one section or the other.
///
/// Examples:
///   floodgate stats
///   floodgate stats --json
///   floodgate stats --watch --interval 2s
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct StatsArgs {
    /// Print JSON: {"reasons": {"<reason>": {"packets": N, "bytes": N}, ...},
    /// "dry_run": {"<reason>": {...}, ...}}.
    #[arg(long)]
    json: bool,
    /// Refresh until interrupted, with rates (one JSON object per line with --json).
    #[arg(long)]
    watch: bool,
    /// Refresh interval for --watch.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
}

fn read(state: &State) -> anyhow::Result<StatsSnapshot> {
    Ok(state.stats.snapshot()?)
}

pub fn stats(pin: &PinDir, args: StatsArgs) -> anyhow::Result<()> {
    let state = State::open(pin, Access::Read)?;
    if !args.watch {
        print(&read(&state)?, None, args.json)?;
        return Ok(());
    }
    let mut prev = read(&state)?;
    let mut at = Instant::now();
    loop {
        std::thread::sleep(args.interval);
        let now = read(&state)?;
        let elapsed = at.elapsed().as_secs_f64();
        at = Instant::now();
        if !args.json {
            // Clear the screen and home the cursor, like watch(1).
            print!("\x1b[2J\x1b[H");
        }
        print(&now, Some((&prev, elapsed)), args.json)?;
        prev = now;
    }
}

fn print(
    now: &StatsSnapshot,
    prev: Option<(&StatsSnapshot, f64)>,
    json: bool,
) -> anyhow::Result<()> {
    let rate = |i: usize| crate::stats::rate(now, prev, i);
    if json {
        println!("{}", serde_json::to_string(&crate::stats::json(now, prev))?);
        return Ok(());
    }
    let header_rate = if prev.is_some() {
        format!(" {:>12} {:>12}", "PPS", "BIT/S")
    } else {
        String::new()
    };
    println!(
        "{:<12} {:<6} {:>16} {:>18}{header_rate}",
        "REASON", "ACTION", "PACKETS", "BYTES"
    );
    for (i, (r, c)) in now.iter().enumerate() {
        if i == REASON_COUNT {
            let any = now[REASON_COUNT..].iter().any(|(_, c)| c.packets != 0);
            if !any && prev.is_none() {
                println!("\nDRY-RUN: nothing would have been dropped");
                break;
            }
            println!("\nDRY-RUN (matched a drop or tx reason, passed)");
        }
        if i >= REASON_COUNT && r.action() == Action::Pass {
            continue;
        }
        let action = if i >= REASON_COUNT {
            "dry"
        } else {
            r.action().name()
        };
        let rt = rate(i)
            .map(|(p, b)| format!(" {:>12.0} {:>12}", p, human_bits(b)))
            .unwrap_or_default();
        println!(
            "{:<12} {:<6} {:>16} {:>18}{rt}",
            r.name(),
            action,
            c.packets,
            c.bytes
        );
    }
    Ok(())
}

fn human_bits(bps: f64) -> String {
    match bps {
        b if b >= 1e9 => format!("{:.2}G", b / 1e9),
        b if b >= 1e6 => format!("{:.2}M", b / 1e6),
        b if b >= 1e3 => format!("{:.1}k", b / 1e3),
        b => format!("{b:.0}"),
    }
}
