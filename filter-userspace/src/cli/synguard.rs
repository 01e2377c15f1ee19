//! synguard: the SYN-flood guard's switch and its status.

use clap::{Args, Subcommand};
use filter_common::Reason;
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    error::Error,
    loader::PinDir,
    loader::{Completion, SYNGUARD_KFUNC},
    prefix::{display, parse_prefix},
    settings::{Spelling, Synguard, SynguardCompletion, parse_si, si},
    state::{Access, State},
    synproxy,
};
use filter_common::SYNGUARD_TC_PROGRAM_NAME;

#[derive(Subcommand)]
pub enum SynguardCommand {
    /// Turn the guard on for these TCP ports (and optionally only these destinations).
    ///
    /// `on` sets the whole guard: exactly the ports, destinations and --when-over given (no
    /// --dst: every local address; no --when-over: always). Reasons: `syn_cookie` (a SYN
    /// answered, action tx), `bad_cookie` (an ACK with no connection and a bad cookie, drop).
    /// The kernel completes the handshakes only with net.ipv4.tcp_syncookies at 1 or 2.
    /// --completion chooses how: the kfunc bpf_sk_assign_tcp_reqsk (Linux 6.9 or later) or
    /// netfilter SYNPROXY (an nftables table of floodgate's own; sets
    /// net.netfilter.nf_conntrack_tcp_loose to 0 while it is on); auto (the default) takes the
    /// kfunc when the kernel has it.
    ///
    /// Examples:
    ///   floodgate synguard on --port 443
    ///   floodgate synguard on --port 443 --completion synproxy
    ///   floodgate synguard on --port 443 --port 80 --dst 198.18.0.0/24 --dst 2001:db8::/64
    ///   floodgate synguard on --port 443 --when-over 20k
    #[command(verbatim_doc_comment)]
    On(OnArgs),
    /// Turn the guard off: SYNs reach the listeners again. Its ports and destinations are
    /// kept for `status` and `show-config`.
    ///
    /// Example:
    ///   floodgate synguard off
    #[command(verbatim_doc_comment)]
    Off,
    /// Show the guard's settings, its counters and the kernel setting it needs.
    ///
    /// Counters: SYN-ACKs sent (reason syn_cookie), ACKs with a valid and an invalid cookie,
    /// ACKs of established connections, handshakes completed and failed, bad_cookie drops.
    ///
    /// Examples:
    ///   floodgate synguard status
    ///   floodgate synguard status --json
    #[command(verbatim_doc_comment)]
    Status(StatusArgs),
}

#[derive(Args)]
pub struct OnArgs {
    /// TCP destination port to protect (repeatable; at least one).
    #[arg(long = "port", value_name = "PORT", required = true)]
    ports: Vec<u16>,
    /// Protect only this destination prefix or address (repeatable; default: every local
    /// address).
    #[arg(long = "dst", value_name = "PREFIX", value_parser = parse_net)]
    dst: Vec<IpNet>,
    /// Guard a destination only while it receives more than PPS SYNs per second (k/M/G ok);
    /// below that, SYNs reach the listener as usual.
    #[arg(long, value_name = "PPS", value_parser = parse_pps)]
    when_over: Option<u64>,
    /// How handshakes with a valid cookie become connections.
    #[arg(long, value_enum, value_name = "PATH", default_value_t = SynguardCompletion::Auto)]
    completion: SynguardCompletion,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Print JSON: {"enabled", "ports", "dst" ([] = every local address), "when_over_pps",
    /// "completion" (asked: auto, kfunc or synproxy), "completion_path" (in use: "kfunc",
    /// "synproxy" or null when off), "completion_detail", "tcp_syncookies",
    /// "counters": {...}, "warnings": [...]}.
    #[arg(long)]
    json: bool,
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    parse_prefix(s).map_err(|e| e.to_string())
}

fn parse_pps(s: &str) -> Result<u64, String> {
    parse_si(s, "SYNs per second").map_err(|e| e.to_string())
}

pub fn synguard(pin: &PinDir, cmd: SynguardCommand) -> anyhow::Result<()> {
    match cmd {
        SynguardCommand::Status(a) => status(pin, a.json),
        SynguardCommand::On(a) => {
            // Checked before the state is opened: a bad value changes nothing.
            let mut g = Synguard::new(true, a.ports, a.dst, a.when_over, Spelling::Cli)?;
            g.completion = a.completion;
            let mut state = State::open(pin, Access::Write)?;
            state.update_settings(|s| {
                s.synguard = g.clone();
                Ok::<_, Error>(())
            })?;
            let path = if state.defences.synguard_synproxy()? {
                format!("netfilter SYNPROXY (nftables table {})", synproxy::TABLE)
            } else {
                format!("kfunc {SYNGUARD_KFUNC}")
            };
            println!("SYN guard on: {}; completion: {path}", g.summary());
            if let Some(w) = syncookies_warning(crate::sys::tcp_syncookies()) {
                eprintln!("floodgate: warning: {w}");
            }
            Ok(())
        }
        SynguardCommand::Off => {
            let mut state = State::open(pin, Access::Write)?;
            state.update_settings(|s| {
                s.synguard.enabled = false;
                Ok::<_, Error>(())
            })?;
            println!("SYN guard off");
            Ok(())
        }
    }
}

fn or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(" ")
    }
}

/// What to tell the operator about `net.ipv4.tcp_syncookies` (None: nothing to say).
fn syncookies_warning(value: Option<u32>) -> Option<String> {
    match value {
        Some(0) => Some(
            "net.ipv4.tcp_syncookies is 0: the kernel cannot complete the SYN guard's \
             handshakes (clients get no connection); set it with `sysctl -w \
             net.ipv4.tcp_syncookies=1`"
                .into(),
        ),
        None => Some("net.ipv4.tcp_syncookies cannot be read: check it is 1 or 2".into()),
        Some(_) => None,
    }
}

/// How a handshake whose ACK carries a valid cookie becomes a connection: netfilter SYNPROXY
/// when the guard is on with it; else the TC program with the kfunc `bpf_sk_assign_tcp_reqsk`,
/// or none available.
fn completion_path(pin: &PinDir, synproxy_on: bool) -> Option<String> {
    if synproxy_on {
        return Some(format!(
            "netfilter SYNPROXY (nftables table {}: {})",
            synproxy::TABLE,
            if synproxy::installed() {
                "in place"
            } else {
                "missing; `floodgate attach` puts it back"
            }
        ));
    }
    Some(match Completion::probe() {
        Completion::Kfunc if pin.synguard_tc().exists() => format!(
            "kfunc {SYNGUARD_KFUNC} (TC ingress program {SYNGUARD_TC_PROGRAM_NAME} beside XDP)"
        ),
        Completion::Kfunc => format!(
            "kfunc {SYNGUARD_KFUNC} available; its TC program goes on with `floodgate attach`"
        ),
        Completion::Unavailable(why) => format!("unavailable: {why}"),
    })
}

#[derive(Serialize)]
struct Counters {
    /// SYNs answered with a SYN-ACK cookie: the enforced packets of reason `syn_cookie`.
    syn_acks: u64,
    cookies_valid: u64,
    cookies_invalid: u64,
    established: u64,
    handshakes_completed: u64,
    handshakes_failed: u64,
    /// Enforced packets of reason `bad_cookie`.
    bad_cookie: u64,
}

#[derive(Serialize)]
struct Status {
    enabled: bool,
    ports: Vec<u16>,
    /// Empty: every local address.
    dst: Vec<String>,
    when_over_pps: Option<u64>,
    /// As asked: auto, kfunc or synproxy.
    completion: &'static str,
    /// In use: "kfunc" or "synproxy"; None while the guard is off.
    completion_path: Option<&'static str>,
    completion_detail: Option<String>,
    tcp_syncookies: Option<u32>,
    counters: Counters,
    warnings: Vec<String>,
}

fn status(pin: &PinDir, json: bool) -> anyhow::Result<()> {
    let state = State::open(pin, Access::Read)?;
    let g = state.settings()?.synguard;
    let reasons = state.stats.read()?;
    let packets = |reason: Reason| {
        reasons
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, c)| c.packets)
    };
    let own = state.stats.synguard()?;
    let own = |name: &str| own.iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v);
    let counters = Counters {
        syn_acks: packets(Reason::SynCookie),
        cookies_valid: own("cookies_valid"),
        cookies_invalid: own("cookies_invalid"),
        established: own("established"),
        handshakes_completed: own("handshakes_completed"),
        handshakes_failed: own("handshakes_failed"),
        bad_cookie: packets(Reason::BadCookie),
    };
    let syncookies = crate::sys::tcp_syncookies();
    let synproxy_on = state.defences.synguard_synproxy()?;
    let status = Status {
        enabled: g.enabled,
        ports: g.ports.clone(),
        dst: g.dst.iter().map(display).collect(),
        when_over_pps: g.when_over,
        completion: g.completion.name(),
        completion_path: g
            .enabled
            .then_some(if synproxy_on { "synproxy" } else { "kfunc" }),
        completion_detail: completion_path(pin, synproxy_on),
        tcp_syncookies: syncookies,
        counters,
        warnings: syncookies_warning(syncookies).into_iter().collect(),
    };
    // On stderr in both forms: the JSON on stdout stays parseable.
    for w in &status.warnings {
        eprintln!("floodgate: warning: {w}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let ports: Vec<String> = g.ports.iter().map(u16::to_string).collect();
    println!("SYN guard:     {}", if g.enabled { "on" } else { "off" });
    println!("ports:         {}", or_none(&ports));
    println!("destinations:  {}", g.destinations());
    match g.when_over {
        Some(w) => println!("when over:     {} SYN/s to one destination", si(w)),
        None => println!("when over:     always (every SYN to a protected port)"),
    }
    println!(
        "completion:    {} (asked: {})",
        status
            .completion_detail
            .as_deref()
            .unwrap_or("not reported"),
        status.completion
    );
    match syncookies {
        Some(v) => println!("net.ipv4.tcp_syncookies: {v}"),
        None => println!("net.ipv4.tcp_syncookies: unknown"),
    }
    let c = &status.counters;
    println!("counters:");
    for (name, v) in [
        ("SYN-ACKs sent (syn_cookie)", c.syn_acks),
        ("cookies valid", c.cookies_valid),
        ("cookies invalid", c.cookies_invalid),
        ("established", c.established),
        ("handshakes completed", c.handshakes_completed),
        ("handshakes failed", c.handshakes_failed),
        ("bad_cookie drops", c.bad_cookie),
    ] {
        println!("  {name:<28} {v:>16}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_syncookies_warning_says_what_to_do() {
        let w = syncookies_warning(Some(0)).expect("0 warns");
        assert!(w.contains("sysctl -w net.ipv4.tcp_syncookies=1"), "{w}");
        assert_eq!(syncookies_warning(Some(1)), None);
        assert_eq!(syncookies_warning(Some(2)), None);
        assert!(syncookies_warning(None).is_some(), "unreadable warns");
    }

    #[test]
    fn the_summary_names_ports_destinations_and_rate() {
        let g = Synguard::new(
            true,
            vec![443, 80],
            vec!["198.18.0.0/24".parse().unwrap()],
            Some(20_000),
            Spelling::Cli,
        )
        .unwrap();
        assert_eq!(
            g.summary(),
            "ports 80 443, 198.18.0.0/24, when over 20k SYN/s"
        );
        let all = Synguard::new(true, vec![443], vec![], None, Spelling::Cli).unwrap();
        assert_eq!(all.summary(), "ports 443, all local addresses");
    }
}
