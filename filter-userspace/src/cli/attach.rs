//! attach, detach, status.

use clap::Args;

use crate::{
    lists::ListKind,
    loader::{self, PinDir},
    netlink::XdpMode,
    settings::DefenceMode,
    state::{Access, State},
};

/// Attach the filter to interfaces; returns once attached (the filter keeps running).
///
/// One program is shared by every interface, and all share the same lists and counters.
///
/// Examples:
///   floodgate attach eth0
///   floodgate attach eth0 eth1 --mode skb
///   floodgate attach eth0 --dry-run
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct AttachArgs {
    /// Interfaces to attach to.
    #[arg(required = true, value_name = "IFACE")]
    ifaces: Vec<String>,
    /// XDP mode: auto tries native (driver) mode and falls back to skb (generic) mode.
    #[arg(long, value_enum, default_value = "auto")]
    mode: XdpMode,
    /// Start in dry-run: count what would be dropped, drop nothing (`floodgate mode enforce`
    /// to start dropping).
    #[arg(long)]
    dry_run: bool,
}

/// Detach the filter from interfaces. The lists are kept unless --purge is given.
///
/// Examples:
///   floodgate detach eth0
///   floodgate detach --all --purge
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct DetachArgs {
    /// Interfaces to detach from.
    #[arg(
        value_name = "IFACE",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    ifaces: Vec<String>,
    /// Detach from every interface.
    #[arg(long)]
    all: bool,
    /// Also delete the lists and counters (needs every interface detached).
    #[arg(long)]
    purge: bool,
}

/// Show attached interfaces, the program, list sizes and which defences are on.
///
/// Examples:
///   floodgate status
///   floodgate status --json
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn attach(pin: &PinDir, args: AttachArgs) -> anyhow::Result<()> {
    let mut state = State::open(pin, Access::Write)?;
    if args.dry_run {
        // Before attaching, so not one packet is dropped.
        state.update_settings(|s| {
            s.mode = DefenceMode::DryRun;
            Ok::<_, crate::Error>(())
        })?;
        println!(
            "mode: dry-run (nothing is dropped; see the DRY-RUN section of `floodgate stats`)"
        );
    }
    let outcomes = loader::attach(&mut state.ebpf, pin, &args.ifaces, args.mode)?;
    state.restore_synproxy()?;
    for o in outcomes {
        if o.already {
            println!("{}: already attached ({} mode)", o.iface, o.mode);
        } else if let Some(why) = o.fell_back {
            println!("{}: attached in skb mode (native refused: {why})", o.iface);
        } else {
            println!("{}: attached in {} mode", o.iface, o.mode);
        }
    }
    Ok(())
}

pub fn detach(pin: &PinDir, args: DetachArgs) -> anyhow::Result<()> {
    crate::sys::require_bpffs(pin.root())?;
    let _lock = crate::sys::StateLock::acquire(pin.root())?;
    let done = loader::detach(pin, &args.ifaces, args.all, args.purge)?;
    if done.is_empty() {
        println!("nothing was attached");
    }
    for iface in &done {
        println!("{iface}: detached");
    }
    if args.purge {
        println!("lists and counters deleted ({})", pin.root().display());
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct ListSizes {
    ipv4: usize,
    ipv6: usize,
}

#[derive(serde::Serialize)]
struct Defences {
    mode: &'static str,
    /// Sanity checks that are on, space-separated.
    sanity: String,
    rules: usize,
    reflection: bool,
    /// Classes with limits, space-separated.
    limits: String,
    synguard: bool,
}

#[derive(serde::Serialize)]
struct Status {
    pin_dir: String,
    program_id: Option<u32>,
    interfaces: Vec<loader::Attachment>,
    blocklist: ListSizes,
    allowlist: ListSizes,
    defences: Defences,
    /// Packet sampling is on for some reason (`floodgate capture` running, say).
    sampling: bool,
}

pub fn status(pin: &PinDir, args: StatusArgs) -> anyhow::Result<()> {
    let state = match State::open(pin, Access::Read) {
        Ok(s) => s,
        Err(crate::Error::NoState { .. }) => {
            // Nothing here is an answer, not a failure; and nothing is created to give it.
            if args.json {
                let none = serde_json::json!({"pin_dir": pin.root().display().to_string(),
                    "state": "none", "program_id": null, "interfaces": []});
                println!("{}", serde_json::to_string_pretty(&none)?);
            } else {
                println!("pin dir:    {}", pin.root().display());
                println!("state:      none (nothing attached or added: `floodgate attach IFACE`)");
            }
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let sizes = |kind| -> anyhow::Result<ListSizes> {
        let (ipv4, ipv6) = state.lists.counts(kind);
        Ok(ListSizes { ipv4, ipv6 })
    };
    let settings = state.settings()?;
    let sanity_on: Vec<&str> = filter_common::sanity_bits::ALL
        .iter()
        .filter(|(b, _)| settings.sanity.bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
    let defences = Defences {
        mode: settings.mode.name(),
        sanity: sanity_on.join(" "),
        rules: settings.rules.len(),
        reflection: settings.reflection.enabled,
        limits: settings
            .limits
            .keys()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(" "),
        synguard: settings.synguard.enabled,
    };
    let status = Status {
        pin_dir: pin.root().display().to_string(),
        program_id: loader::program_id(pin),
        interfaces: loader::attachments(pin)?,
        blocklist: sizes(ListKind::Block)?,
        allowlist: sizes(ListKind::Allow)?,
        defences,
        sampling: crate::capture::Sampling::open(pin)?
            .rates()?
            .iter()
            .any(|&r| r != 0),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("pin dir:    {}", status.pin_dir);
    match status.program_id {
        Some(id) => println!("program:    loaded (id {id})"),
        None => println!("program:    not loaded (attach an interface to load it)"),
    }
    if status.interfaces.is_empty() {
        println!("interfaces: none attached in this network namespace");
    } else {
        println!("interfaces:");
        for a in &status.interfaces {
            println!("  {:<16} {:<6} program {}", a.iface, a.mode, a.program_id);
        }
    }
    println!(
        "blocklist:  {} IPv4, {} IPv6 entries",
        status.blocklist.ipv4, status.blocklist.ipv6
    );
    println!(
        "allowlist:  {} IPv4, {} IPv6 entries",
        status.allowlist.ipv4, status.allowlist.ipv6
    );
    let d = &status.defences;
    println!("mode:       {}", d.mode);
    println!(
        "sanity:     {}",
        if d.sanity.is_empty() {
            "off"
        } else {
            &d.sanity
        }
    );
    println!("rules:      {}", d.rules);
    println!("reflection: {}", if d.reflection { "on" } else { "off" });
    println!(
        "limits:     {}",
        if d.limits.is_empty() {
            "none"
        } else {
            &d.limits
        }
    );
    if d.synguard {
        println!("synguard:   on ({})", settings.synguard.summary());
    } else {
        println!("synguard:   off");
    }
    println!(
        "sampling:   {}",
        if status.sampling {
            "on (a capture is running)"
        } else {
            "off"
        }
    );
    Ok(())
}
