//! limit: per-source rate limits with auto-ban, and aggregate caps per destination prefix.

use std::time::Duration;

use clap::{Args, Subcommand};
use filter_common::Class;
use ipnet::IpNet;

use crate::{
    error::Error,
    loader::PinDir,
    prefix::{display, parse_prefix},
    settings::{LimitSpec, RateSpec, Spelling, parse_class},
    state::{Access, State},
};

#[derive(Subcommand)]
pub enum LimitCommand {
    /// Set the limits of a class (replaces its previous limits).
    ///
    /// Classes: syn (TCP SYN without ACK), udp, icmp (ICMP and ICMPv6), all (every packet).
    /// A packet is checked against its protocol's class, then `all`.
    /// --per-source: a token bucket per source address (IPv4 /32, IPv6 /64 unless
    /// --source-prefix-v4/-v6); over it: reason `ratelimit`. --aggregate with --dst: one
    /// bucket per protected destination prefix, shared by all sources, which caps a
    /// random-source flood; over it: reason `aggregate`. --ban-after/--ban-for: a source over
    /// its per-source limit for that long (gaps under 1 s do not reset it) goes onto the
    /// blocklist for --ban-for, shown as `auto` in `floodgate block list`.
    /// Rates are PPS[/BPS] with k/M/G suffixes: 1000, 10k/80M (80 Mbit/s), /1G (bits only).
    /// Bursts of up to 100 ms of the rate pass.
    ///
    /// Examples:
    ///   floodgate limit set syn --per-source 200
    ///   floodgate limit set udp --per-source 1000/8M --ban-after 10s --ban-for 10m
    ///   floodgate limit set udp --aggregate 50k --dst 198.18.0.0/24 --dst 2001:db8::/64
    ///   floodgate limit set icmp --per-source 50 --source-prefix-v4 24
    #[command(verbatim_doc_comment)]
    Set(SetArgs),
    /// Remove the limits of a class.
    ///
    /// Example:
    ///   floodgate limit del udp
    #[command(verbatim_doc_comment)]
    Del {
        /// syn, udp, icmp or all.
        #[arg(value_parser = class_arg)]
        class: Class,
    },
    /// Show the limits.
    ///
    /// Examples:
    ///   floodgate limit list
    ///   floodgate limit list --json
    #[command(verbatim_doc_comment)]
    List {
        /// Print JSON: {"<class>": {"per_source": "1000", "aggregate": ..., "dst": [...], ...}}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct SetArgs {
    /// syn, udp, icmp or all.
    #[arg(value_parser = class_arg)]
    class: Class,
    /// Rate allowed to each source, PPS[/BPS].
    #[arg(long, value_name = "PPS[/BPS]")]
    per_source: Option<RateSpec>,
    /// Group IPv4 sources by this prefix length (default 32).
    #[arg(long, value_name = "LEN")]
    source_prefix_v4: Option<u8>,
    /// Group IPv6 sources by this prefix length (default 64).
    #[arg(long, value_name = "LEN")]
    source_prefix_v6: Option<u8>,
    /// Rate allowed to each --dst prefix from all sources together, PPS[/BPS].
    #[arg(long, value_name = "PPS[/BPS]")]
    aggregate: Option<RateSpec>,
    /// Protected destination prefix for --aggregate (repeatable).
    #[arg(long, value_name = "PREFIX", value_parser = parse_net)]
    dst: Vec<IpNet>,
    /// Ban a source over its per-source limit for this long, e.g. 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    ban_after: Option<Duration>,
    /// How long an auto-ban lasts, e.g. 10m.
    #[arg(long, value_parser = humantime::parse_duration)]
    ban_for: Option<Duration>,
}

fn class_arg(s: &str) -> Result<Class, String> {
    parse_class(s).map_err(|e| e.to_string())
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    parse_prefix(s).map_err(|e| e.to_string())
}

pub fn limit(pin: &PinDir, cmd: LimitCommand) -> anyhow::Result<()> {
    match cmd {
        LimitCommand::List { json } => {
            let state = State::open(pin, Access::Read)?;
            let s = state.settings()?;
            if json {
                let out: serde_json::Map<String, serde_json::Value> = s
                    .limits
                    .iter()
                    .map(|(c, l)| (c.name().to_string(), to_json(l)))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            if s.limits.is_empty() {
                println!("no limits");
            }
            for (c, l) in &s.limits {
                println!("{}", describe(c.name(), l));
            }
            Ok(())
        }
        LimitCommand::Set(a) => {
            let class = a.class;
            let spec = LimitSpec {
                per_source: a.per_source,
                source_prefix_v4: a.source_prefix_v4,
                source_prefix_v6: a.source_prefix_v6,
                aggregate: a.aggregate,
                dst: a.dst,
                ban_after: a.ban_after,
                ban_for: a.ban_for,
            };
            spec.validate(class, Spelling::Cli).map_err(Error::from)?;
            let mut state = State::open(pin, Access::Write)?;
            state.update_settings(|s| {
                s.limits.insert(class, spec.clone());
                Ok::<_, Error>(())
            })?;
            println!("{}", describe(class.name(), &spec));
            Ok(())
        }
        LimitCommand::Del { class } => {
            let mut state = State::open(pin, Access::Write)?;
            state.update_settings(|s| {
                if s.limits.remove(&class).is_none() {
                    anyhow::bail!(
                        "class {} has no limits (see `floodgate limit list`)",
                        class.name()
                    );
                }
                Ok(())
            })?;
            println!("limits of {} removed", class.name());
            Ok(())
        }
    }
}

fn describe(class: &str, l: &LimitSpec) -> String {
    let mut parts = vec![format!("{class}:")];
    if let Some(r) = l.per_source {
        let p4 = l.source_prefix_v4.unwrap_or(32);
        let p6 = l.source_prefix_v6.unwrap_or(64);
        parts.push(format!("per-source {r} (per /{p4} and /{p6})"));
    }
    if let Some(r) = l.aggregate {
        let dst: Vec<String> = l.dst.iter().map(display).collect();
        parts.push(format!("aggregate {r} to each of {}", dst.join(", ")));
    }
    if let (Some(a), Some(f)) = (l.ban_after, l.ban_for) {
        parts.push(format!(
            "ban after {} for {}",
            humantime::format_duration(a),
            humantime::format_duration(f)
        ));
    }
    parts.join(" ")
}

fn to_json(l: &LimitSpec) -> serde_json::Value {
    serde_json::json!({
        "per_source": l.per_source.map(|r| r.to_string()),
        "source_prefix_v4": l.source_prefix_v4.unwrap_or(32),
        "source_prefix_v6": l.source_prefix_v6.unwrap_or(64),
        "aggregate": l.aggregate.map(|r| r.to_string()),
        "dst": l.dst.iter().map(display).collect::<Vec<_>>(),
        "ban_after": l.ban_after.map(|d| humantime::format_duration(d).to_string()),
        "ban_for": l.ban_for.map(|d| humantime::format_duration(d).to_string()),
    })
}
