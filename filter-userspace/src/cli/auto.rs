//! auto: automatic mitigation's mode and its status.

use std::time::Duration;

use clap::{Args, Subcommand};
use filter_common::auto_mode;

use crate::{
    auto::{kernel::AutoMaps, settings::is_auto_rule},
    error::Error,
    loader::PinDir,
    state::{Access, State},
    sys::DaemonLock,
};

#[derive(Subcommand)]
pub enum AutoCommand {
    /// Show the mode, the host groups, the automatic rules, and (from the daemon) the attacks
    /// going on and the last events.
    ///
    /// Detection runs in the daemon (`floodgate run` with `[auto]` and `[[auto.groups]]` in its
    /// file); this reads the kernel's side and asks the daemon's API for the rest.
    ///
    /// Examples:
    ///   floodgate auto status
    ///   floodgate auto status --json
    ///   floodgate auto status --api http://127.0.0.1:9477
    #[command(verbatim_doc_comment)]
    Status(StatusArgs),
    /// Enforce: automatic rules drop (and a SYN flood switches the SYN guard on).
    ///
    /// Rules installed in shadow mode start dropping too. The daemon's file sets the mode
    /// again when it changes.
    ///
    /// Example:
    ///   floodgate auto on
    #[command(verbatim_doc_comment)]
    On,
    /// Shadow: detect and fingerprint, install dry-run rules (they count what they would drop),
    /// and only log the defence a fingerprint-less attack would get.
    ///
    /// Example:
    ///   floodgate auto shadow
    #[command(verbatim_doc_comment)]
    Shadow,
    /// Off: no counting, no detection; what is installed is still lifted as usual.
    ///
    /// Example:
    ///   floodgate auto off
    #[command(verbatim_doc_comment)]
    Off,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Print one JSON object: {"mode", "groups", "rules", "daemon"} (daemon: /v1/attacks).
    #[arg(long)]
    json: bool,
    /// The daemon's API (daemon.listen).
    #[arg(long, env = "FLOODGATE_API", default_value = "http://127.0.0.1:9477")]
    api: String,
    /// File holding the API token (needed when the daemon has daemon.protect_reads).
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
}

pub fn auto(pin: &PinDir, cmd: AutoCommand) -> anyhow::Result<()> {
    let mode = match cmd {
        AutoCommand::Status(a) => return status(pin, a),
        AutoCommand::On => auto_mode::ENFORCE,
        AutoCommand::Shadow => auto_mode::SHADOW,
        AutoCommand::Off => auto_mode::OFF,
    };
    let _state = State::open(pin, Access::Write)?;
    let mut maps = AutoMaps::open(pin)?;
    if mode != auto_mode::OFF && maps.groups()?.is_empty() {
        return Err(Error::AutoNoGroups.into());
    }
    maps.set_mode(mode)?;
    if mode == auto_mode::OFF {
        maps.set_sample(0)?;
    }
    let what = match mode {
        auto_mode::ENFORCE => "enforce: automatic rules drop",
        auto_mode::SHADOW => "shadow: automatic rules only count (dry-run)",
        _ => "off: nothing is detected",
    };
    println!("automatic mitigation {what}");
    if mode != auto_mode::OFF && DaemonLock::holder(pin.root())?.is_none() {
        eprintln!(
            "floodgate: warning: no daemon runs on {}: detection runs in `floodgate run`",
            pin.root().display()
        );
    }
    Ok(())
}

/// The daemon's `/v1/attacks`, or why not.
fn ask_daemon(
    api: &str,
    token_file: Option<&std::path::Path>,
) -> Result<serde_json::Value, String> {
    let url = format!("{}/v1/attacks", api.trim_end_matches('/'));
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(3))
        .build();
    let mut req = agent.get(&url);
    if let Some(f) = token_file {
        let token = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        req = req.set("Authorization", &format!("Bearer {}", token.trim()));
    }
    match req.call() {
        Ok(r) => r.into_json().map_err(|e| format!("{url}: {e}")),
        Err(ureq::Error::Status(code, _)) => Err(format!("{url}: HTTP {code}")),
        Err(e) => Err(format!("{url}: {e}")),
    }
}

fn status(pin: &PinDir, a: StatusArgs) -> anyhow::Result<()> {
    let state = State::open(pin, Access::Read)?;
    let maps = AutoMaps::open(pin)?;
    let mode = maps.mode()?;
    let groups = maps.groups()?;
    let rules: Vec<_> = state
        .defences
        .rule_rows(&|id| state.lists.comments.rule(id))?
        .into_iter()
        .filter(|r| is_auto_rule(r.spec.id))
        .collect();
    let daemon = ask_daemon(&a.api, a.token_file.as_deref());
    if a.json {
        let out = serde_json::json!({
            "mode": auto_mode::name(mode),
            "groups": groups.iter().map(|(n, g)| serde_json::json!({"prefix": n.to_string(), "group": g})).collect::<Vec<_>>(),
            "rules": rules.iter().map(|r| serde_json::json!({
                "id": r.spec.id,
                "match": r.spec.summary(),
                "action": r.spec.action_text(),
                "dry_run": r.spec.dry_run,
                "packets": r.hits.packets,
                "bytes": r.hits.bytes,
                "comment": r.spec.comment,
            })).collect::<Vec<_>>(),
            "daemon": match &daemon { Ok(v) => v.clone(), Err(e) => serde_json::json!({"error": e}) },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("mode: {}", auto_mode::name(mode));
    let names: Vec<String> = match &daemon {
        Ok(v) => v["groups"]
            .as_array()
            .map(|g| {
                g.iter()
                    .map(|g| g["name"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    if groups.is_empty() {
        println!("host groups: none (define [[auto.groups]] in the daemon's file)");
    } else {
        println!("host groups:");
        for (net, g) in &groups {
            let name = names
                .get(*g as usize)
                .cloned()
                .unwrap_or_else(|| format!("#{g}"));
            println!("  {name:<16} {net}");
        }
    }
    if rules.is_empty() {
        println!("automatic rules: none");
    } else {
        println!("automatic rules:");
        for r in &rules {
            println!(
                "  {:<8} {}{} -> {}  {} packets  {}",
                r.spec.id,
                if r.spec.dry_run { "[dry-run] " } else { "" },
                r.spec.summary(),
                r.spec.action_text(),
                r.hits.packets,
                r.spec.comment.as_deref().unwrap_or("")
            );
        }
    }
    match daemon {
        Err(e) => println!("daemon: not reachable ({e}): detection runs in `floodgate run`"),
        Ok(v) => {
            let attacks = v["attacks"].as_array().cloned().unwrap_or_default();
            if attacks.is_empty() {
                println!("attacks: none");
            } else {
                println!("attacks:");
                for at in &attacks {
                    println!(
                        "  #{} {} ({}) classes {} peak {:.0} pps{}",
                        at["id"],
                        at["dst"].as_str().unwrap_or("?"),
                        at["group"].as_str().unwrap_or("?"),
                        at["classes"],
                        at["peak_pps"].as_f64().unwrap_or(0.0),
                        at["pending"]
                            .as_str()
                            .map(|p| format!(", pending: {p}"))
                            .unwrap_or_default()
                    );
                    for m in at["mitigations"].as_array().cloned().unwrap_or_default() {
                        println!("      {}", serde_json::to_string(&m).unwrap_or_default());
                    }
                }
            }
            let events = v["events"].as_array().cloned().unwrap_or_default();
            if !events.is_empty() {
                println!("last events:");
                for e in events.iter().rev().take(10).rev() {
                    println!("  {}", serde_json::to_string(e).unwrap_or_default());
                }
            }
        }
    }
    Ok(())
}
