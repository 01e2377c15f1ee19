//! preset, sanity and mode: the switches of the built-in defences.

use clap::{Args, Subcommand, ValueEnum};
use filter_common::{AMPLIFIERS, sanity_bits};
use ipnet::IpNet;

use crate::{
    error::Error,
    loader::PinDir,
    prefix::{display, parse_prefix},
    settings::{DefenceMode, sanity_bit},
    state::{Access, State},
};

#[derive(Subcommand)]
pub enum PresetCommand {
    /// Reflection/amplification filter: drop UDP whose source port is an amplifier service.
    ///
    /// Built-in amplifier ports: qotd 17, chargen 19, dns 53, tftp 69, portmap 111, ntp 123,
    /// netbios 137, snmp 161, cldap 389, slp 427, rip 520, ssdp 1900, ard 3283,
    /// ws-discovery 3702, mdns 5353, coap 5683, ubiquiti 10001, memcached 11211, steam 27015,
    /// dhdiscover 37810. Reason: `reflection`.
    ///
    /// `on` sets the whole preset: the built-in ports plus --port, and exactly the exemptions
    /// given (none if none are given). A host that resolves DNS itself must exempt the address
    /// its resolver queries from (--exempt-dst), or allowlist its upstream servers.
    ///
    /// Examples:
    ///   floodgate preset reflection on
    ///   floodgate preset reflection on --exempt-dst 198.18.0.53 --exempt-port 5353
    ///   floodgate preset reflection on --port 27960
    ///   floodgate preset reflection off
    ///   floodgate preset reflection status
    #[command(verbatim_doc_comment)]
    Reflection(ReflectionArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OnOff {
    On,
    Off,
    Status,
}

#[derive(Args)]
pub struct ReflectionArgs {
    #[arg(value_enum)]
    state: OnOff,
    /// Another source port to treat as an amplifier (repeatable).
    #[arg(long = "port", value_name = "PORT")]
    ports: Vec<u16>,
    /// Destination port exempt from the preset (repeatable).
    #[arg(long = "exempt-port", value_name = "PORT")]
    exempt_ports: Vec<u16>,
    /// Destination prefix or address exempt from the preset (repeatable).
    #[arg(long = "exempt-dst", value_name = "PREFIX", value_parser = parse_net)]
    exempt_dst: Vec<IpNet>,
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    parse_prefix(s).map_err(|e| e.to_string())
}

pub fn preset(pin: &PinDir, cmd: PresetCommand) -> anyhow::Result<()> {
    let PresetCommand::Reflection(a) = cmd;
    if matches!(a.state, OnOff::Status) {
        let state = State::open(pin, Access::Read)?;
        let r = state.settings()?.reflection;
        println!(
            "reflection preset: {}",
            if r.enabled { "on" } else { "off" }
        );
        let ports: Vec<String> = r.ports.iter().map(u16::to_string).collect();
        println!("amplifier source ports: {}", ports.join(" "));
        let ex: Vec<String> = r.exempt_ports.iter().map(u16::to_string).collect();
        println!("exempt destination ports: {}", or_none(&ex));
        let nets: Vec<String> = r.exempt_dst.iter().map(display).collect();
        println!("exempt destinations: {}", or_none(&nets));
        return Ok(());
    }
    let mut state = State::open(pin, Access::Write)?;
    let enabled = state.update_settings(|s| {
        match a.state {
            OnOff::On => {
                s.reflection.enabled = true;
                let mut ports: Vec<u16> = AMPLIFIERS.iter().map(|(p, _)| *p).collect();
                ports.extend(&a.ports);
                ports.sort_unstable();
                ports.dedup();
                s.reflection.ports = ports;
                s.reflection.exempt_ports = a.exempt_ports;
                s.reflection.exempt_dst = a.exempt_dst;
            }
            OnOff::Off => s.reflection.enabled = false,
            OnOff::Status => unreachable!("handled above"),
        }
        Ok::<_, Error>(s.reflection.enabled)
    })?;
    println!("reflection preset {}", if enabled { "on" } else { "off" });
    Ok(())
}

fn or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(" ")
    }
}

#[derive(Subcommand)]
pub enum SanityCommand {
    /// Show every sanity check and whether it is on.
    ///
    /// Example:
    ///   floodgate sanity list
    #[command(verbatim_doc_comment)]
    List,
    /// Turn checks on (or `all`).
    ///
    /// Checks: tcp_flags, land, martian, fragment_non_first, fragment_tiny, length.
    ///
    /// Examples:
    ///   floodgate sanity on fragment_non_first
    ///   floodgate sanity on fragment_tiny --fragment-min-bytes 512
    #[command(verbatim_doc_comment)]
    On {
        #[arg(required = true, value_name = "CHECK", value_parser = check_arg)]
        checks: Vec<String>,
        /// First IPv4 fragments with less IP payload than this are dropped (fragment_tiny).
        #[arg(long)]
        fragment_min_bytes: Option<u32>,
    },
    /// Turn checks off (or `all`).
    ///
    /// Example:
    ///   floodgate sanity off martian land
    #[command(verbatim_doc_comment)]
    Off {
        #[arg(required = true, value_name = "CHECK", value_parser = check_arg)]
        checks: Vec<String>,
    },
}

fn check_arg(s: &str) -> Result<String, String> {
    if s == "all" {
        return Ok(s.into());
    }
    sanity_bit(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

fn bits(names: &[String]) -> Result<u32, Error> {
    let mut b = 0;
    for n in names {
        b |= if n == "all" {
            sanity_bits::ALL.iter().fold(0, |a, (bit, _)| a | bit)
        } else {
            sanity_bit(n)?
        };
    }
    Ok(b)
}

pub fn sanity(pin: &PinDir, cmd: SanityCommand) -> anyhow::Result<()> {
    if let SanityCommand::List = cmd {
        let state = State::open(pin, Access::Read)?;
        let s = state.settings()?.sanity;
        for (bit, name) in sanity_bits::ALL {
            let on = if s.bits & bit != 0 { "on" } else { "off" };
            let extra = if bit == sanity_bits::FRAGMENT_TINY {
                format!("  (min {} bytes)", s.fragment_min_bytes)
            } else {
                String::new()
            };
            println!("{name:<20} {on}{extra}");
        }
        return Ok(());
    }
    let mut state = State::open(pin, Access::Write)?;
    let on_bits = state.update_settings(|s| {
        match cmd {
            SanityCommand::On {
                checks,
                fragment_min_bytes,
            } => {
                s.sanity.bits |= bits(&checks)?;
                if let Some(n) = fragment_min_bytes {
                    s.sanity.fragment_min_bytes = n;
                }
            }
            SanityCommand::Off { checks } => s.sanity.bits &= !bits(&checks)?,
            SanityCommand::List => unreachable!("handled above"),
        }
        Ok::<_, Error>(s.sanity.bits)
    })?;
    let on: Vec<&str> = sanity_bits::ALL
        .iter()
        .filter(|(b, _)| on_bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
    println!(
        "sanity checks on: {}",
        or_none(&on.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    );
    Ok(())
}

/// Enforce drops, or only count them (dry-run).
///
/// In dry-run every packet a drop reason matches is counted under that reason in the DRY-RUN
/// section of `floodgate stats`, and passes. No auto-bans are made. Without an argument, print
/// the mode.
///
/// Examples:
///   floodgate mode dry-run
///   floodgate mode enforce
///   floodgate mode
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct ModeArgs {
    #[arg(value_enum)]
    mode: Option<DefenceMode>,
}

pub fn mode(pin: &PinDir, a: ModeArgs) -> anyhow::Result<()> {
    let Some(mode) = a.mode else {
        let state = State::open(pin, Access::Read)?;
        println!("{}", state.settings()?.mode.name());
        return Ok(());
    };
    let mut state = State::open(pin, Access::Write)?;
    state.update_settings(|s| {
        s.mode = mode;
        Ok::<_, Error>(())
    })?;
    println!("mode: {}", mode.name());
    Ok(())
}
