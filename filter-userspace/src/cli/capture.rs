//! `floodgate capture`: what XDP decided, packet by packet, as pcapng or one line each.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use filter_common::{Action, Reason, SAMPLE_BYTES_MAX};

use crate::{
    capture::{self, Filter, PcapNg, Reader, Sampling},
    loader::PinDir,
};

/// Capture what the XDP program decided: the packets of chosen reasons, with their verdicts.
///
/// XDP drops packets before tcpdump can see them; this shows them. While it runs, the data
/// plane copies the first bytes of 1 in N packets of the chosen reasons (all reasons if none
/// is given) into a ring buffer; the capture writes them to a pcapng file (each packet's
/// comment says what floodgate did: `floodgate: drop blocklist (in eth0)`; tshark shows it as
/// `frame.comment`), or prints one line each. On exit (--count, --duration or Ctrl-C) the
/// sampling is put back as it was and a summary goes to stderr: samples received, written,
/// and lost when the ring was full. The file is valid whenever the capture stops.
///
/// The filter expression is tcpdump's (compiled by libpcap), applied to each sample's bytes
/// after the reason and verdict selectors; only the first --snaplen bytes are there to match.
///
/// Examples:
///   floodgate capture --reason blocklist --count 100 -w blocked.pcapng
///   floodgate capture --verdict drop --duration 10s
///   floodgate capture --reason reflection --sample 1000 -w - | tshark -r - -T fields -e frame.comment
///   floodgate capture --reason syn_cookie 'tcp port 443'
///   floodgate capture --source spamhaus --count 20
///   floodgate capture --rule 3 -w rule3.pcapng
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct CaptureArgs {
    /// Write pcapng here (`-`: standard output). Without it, one line per packet.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    write: Option<PathBuf>,
    /// Only packets counted under this reason (repeatable; see `floodgate stats`).
    #[arg(long = "reason", value_name = "REASON", value_parser = parse_reason)]
    reasons: Vec<Reason>,
    /// Only packets with this verdict (a dry-run match passes: it counts as `pass`).
    #[arg(long, value_enum)]
    verdict: Option<Verdict>,
    /// Only packets this rule decided (its id in `floodgate rule list`; reasons rule and
    /// rule_limit).
    #[arg(long, value_name = "ID")]
    rule: Option<u32>,
    /// Only blocklist drops by entries of this list source (`cli`, `config`, `auto`, or a
    /// feed's name).
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
    /// Bytes of each packet to keep (1-256).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=SAMPLE_BYTES_MAX as i64))]
    snaplen: u32,
    /// Stop after this many packets are written.
    #[arg(long, short = 'c', value_name = "N")]
    count: Option<u64>,
    /// Stop after this long (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Sample 1 in N packets of each chosen reason (1: every packet).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    sample: u32,
    /// tcpdump filter expression (e.g. `udp src port 123`, `net 198.18.0.0/24`).
    #[arg(value_name = "FILTER", trailing_var_arg = true)]
    filter: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Verdict {
    Drop,
    Pass,
    Tx,
}

fn parse_reason(s: &str) -> Result<Reason, String> {
    Reason::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = filter_common::REASONS.iter().map(|r| r.name()).collect();
        format!(
            "unknown reason `{}`; one of: {}",
            crate::entry::quote(s),
            names.join(", ")
        )
    })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::settings::parse_duration(s, "duration").map_err(|e| e.to_string())
}

pub fn capture(pin: &PinDir, a: CaptureArgs) -> anyhow::Result<()> {
    // Everything that can be refused is checked before the data plane is touched.
    let filter = if a.filter.is_empty() {
        None
    } else {
        Some(Filter::compile(&a.filter.join(" "))?)
    };
    let verdict = a.verdict.map(|v| match v {
        Verdict::Drop => Action::Drop,
        Verdict::Pass => Action::Pass,
        Verdict::Tx => Action::Tx,
    });
    // --rule and --source narrow the reasons to the ones they can decide.
    let mut reasons = a.reasons.clone();
    let narrow = |reasons: &mut Vec<Reason>, only: &[Reason]| {
        if reasons.is_empty() {
            *reasons = only.to_vec();
        } else {
            reasons.retain(|r| only.contains(r));
        }
    };
    if a.rule.is_some() {
        narrow(&mut reasons, &[Reason::Rule, Reason::RuleLimit]);
    }
    if a.source.is_some() {
        narrow(&mut reasons, &[Reason::Blocklist]);
    }
    if reasons.is_empty() {
        anyhow::bail!("--rule and --source select other reasons than --reason: nothing to capture");
    }
    let state = crate::state::State::open(pin, crate::state::Access::Read)?;
    let sources = state.lists.sources.all()?;
    let source_id = match &a.source {
        None => None,
        Some(name) => Some(
            sources
                .iter()
                .find(|(_, n)| n == name)
                .map(|(id, _)| *id)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no list source `{}` (see `floodgate block list` or the API's /v1/sources)",
                        crate::entry::quote(name)
                    )
                })?,
        ),
    };
    drop(state);
    let names: std::collections::HashMap<u32, String> = sources.into_iter().collect();
    let source_name = move |id: u32| names.get(&id).cloned();
    let slots = capture::slots_for(&reasons, verdict);
    if slots.is_empty() {
        anyhow::bail!("no reason has that verdict: nothing to capture");
    }
    let mut out: Option<PcapNg<Box<dyn Write>>> = match &a.write {
        None => None,
        Some(p) => {
            let w: Box<dyn Write> = if p.as_os_str() == "-" {
                Box::new(BufWriter::new(std::io::stdout()))
            } else {
                Box::new(BufWriter::new(
                    File::create(p).with_context(|| format!("creating {}", p.display()))?,
                ))
            };
            Some(PcapNg::new(w, a.snaplen)?)
        }
    };
    let mut reader = Reader::open(pin)?;
    let mut sampling = Sampling::open(pin)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("installing the Ctrl-C handler")?;
    }
    // Samples left from an earlier capture are not this one's.
    let _ = reader.read(Duration::ZERO);
    let lost0 = sampling.lost(&slots)?;
    let was = sampling.enable(pin, &slots, a.sample, Some(a.snaplen))?;
    let select = Select {
        slots: &slots,
        verdict,
        filter: filter.as_ref(),
        rule: a.rule,
        source: source_id,
        source_name: &source_name,
    };
    let result = run(&a, &select, &mut reader, out.as_mut(), &stop);
    // Put sampling back whatever happened, then report.
    let restored = sampling.restore(pin, &was);
    let lost = sampling.lost(&slots)?.saturating_sub(lost0);
    if let Some(o) = out.as_mut() {
        o.flush()?;
    }
    let (received, written) = result?;
    restored?;
    eprintln!("{received} samples received, {written} written, {lost} lost (ring full)");
    Ok(())
}

/// What a sample must be to be written.
struct Select<'a> {
    slots: &'a [u32],
    verdict: Option<Action>,
    filter: Option<&'a Filter>,
    rule: Option<u32>,
    source: Option<u32>,
    source_name: &'a dyn Fn(u32) -> Option<String>,
}

fn run(
    a: &CaptureArgs,
    sel: &Select,
    reader: &mut Reader,
    mut out: Option<&mut PcapNg<Box<dyn Write>>>,
    stop: &AtomicBool,
) -> anyhow::Result<(u64, u64)> {
    let end = a.duration.map(|d| Instant::now() + d);
    let (mut received, mut written) = (0u64, 0u64);
    let mut names = std::collections::HashMap::new();
    let stdout = std::io::stdout();
    let offset = capture::wall_offset();
    while !stop.load(Ordering::Relaxed) {
        if end.is_some_and(|e| Instant::now() >= e) || a.count.is_some_and(|c| written >= c) {
            break;
        }
        for r in reader.read(Duration::from_millis(100)) {
            received += 1;
            let slot = filter_common::stats_slot(r.reason(), r.dry_run());
            // Another capture's reasons, or one that ended with samples still in flight.
            if !sel.slots.contains(&slot) {
                continue;
            }
            if sel.rule.is_some_and(|id| r.rule() != Some(id))
                || sel.source.is_some_and(|id| r.list_source() != Some(id))
            {
                continue;
            }
            if sel.verdict.is_some_and(|v| {
                let got = if r.dry_run() {
                    Action::Pass
                } else {
                    r.reason().action()
                };
                got != v
            }) {
                continue;
            }
            if sel.filter.is_some_and(|f| !f.matches(&r)) {
                continue;
            }
            if a.count.is_some_and(|c| written >= c) {
                break;
            }
            let name = names
                .entry(r.head.ifindex)
                .or_insert_with(|| capture::ifname(r.head.ifindex));
            let by = r.decided_by(sel.source_name);
            match out.as_deref_mut() {
                Some(o) => o.write(&r, name, &by)?,
                None => {
                    let mut l = stdout.lock();
                    // A closed pipe (`| head`) ends the capture quietly.
                    if writeln!(l, "{}", capture::summary(&r, name, &by, offset)).is_err() {
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            }
            written += 1;
        }
    }
    Ok((received, written))
}
