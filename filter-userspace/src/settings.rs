//! The flood defences as an operator writes them: rules, the reflection preset, sanity switches,
//! rate limits and the mode. The CLI and the TOML file both produce [`Settings`]; one writer
//! (`defences.rs`) turns them into map contents, so the two can never disagree.
//!
//! Every textual form here parses with a message that names the bad value and shows the right
//! syntax, and prints back in the same form (`show-config` output re-applies unchanged).

use std::{collections::BTreeMap, fmt, str::FromStr, time::Duration};

use filter_common::{
    AMPLIFIERS, Class, FRAGMENT_MIN_BYTES_DEFAULT, SYNGUARD_DST_MAX, proto, sanity::TCP_FLAG_NAMES,
    sanity_bits,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::prefix::parse_prefix;

/// A parse failure of one value, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid<T>(msg: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(msg.into()))
}

/// How a front end names a setting in its messages: the CLI by flag (`--icmp-type`), the file
/// by key (`icmp_type`). Validation is written once, with keys, and spelled by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spelling {
    Cli,
    File,
}

impl Spelling {
    /// `key` (a file key, `icmp_type`) as this front end writes it.
    pub fn key(self, key: &str) -> String {
        match self {
            Spelling::Cli => format!("--{}", key.replace('_', "-")),
            Spelling::File => key.to_string(),
        }
    }

    /// A field the CLI names by another word than the file: a repeatable `--port` for the
    /// list `ports = [...]`.
    pub fn key_or_flag(self, key: &str, flag: &str) -> String {
        match self {
            Spelling::Cli => Spelling::Cli.key(flag),
            Spelling::File => key.to_string(),
        }
    }
}

/// Parse a count with an optional SI suffix: `1500`, `10k`, `2.5M`, `1G`.
pub(crate) fn parse_si(s: &str, what: &str) -> Result<u64, Invalid> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'm' | 'M')) => (&t[..i], 1e6),
        Some((i, 'g' | 'G')) => (&t[..i], 1e9),
        _ => (t, 1.0),
    };
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * mult <= u64::MAX as f64 => {
            Ok((v * mult).round() as u64)
        }
        _ => invalid(format!(
            "{what} `{s}`: expected a number with an optional k/M/G suffix, e.g. 10000 or 2.5M"
        )),
    }
}

/// A count as [`parse_si`] reads it, with the largest exact suffix: `10k`, `2500k`, `1234`.
pub(crate) fn si(v: u64) -> String {
    for (m, suffix) in [(1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")] {
        if v >= m && v.is_multiple_of(m) {
            return format!("{}{suffix}", v / m);
        }
    }
    v.to_string()
}

/// A rate: `PPS`, `PPS/BPS` or `/BPS` (bits per second), e.g. `10000`, `10k/80M`, `/1G`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateSpec {
    pub pps: u64,
    pub bps: u64,
}

impl FromStr for RateSpec {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        let (p, b) = match s.split_once('/') {
            Some((p, b)) => (p, Some(b)),
            None => (s, None),
        };
        let pps = if p.trim().is_empty() {
            0
        } else {
            parse_si(p, "packets per second")?
        };
        let bps = match b {
            Some(b) => parse_si(b, "bits per second")?,
            None => 0,
        };
        if pps == 0 && bps == 0 {
            return invalid(format!(
                "rate `{s}`: give packets/s, bits/s or both as PPS[/BPS], e.g. 10000 or 10k/80M"
            ));
        }
        Ok(RateSpec { pps, bps })
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match (self.pps, self.bps) {
            (p, 0) => write!(f, "{}", si(p)),
            (0, b) => write!(f, "/{}", si(b)),
            (p, b) => write!(f, "{}/{}", si(p), si(b)),
        }
    }
}

impl From<RateSpec> for filter_common::Rate {
    fn from(r: RateSpec) -> Self {
        filter_common::Rate {
            pps: r.pps,
            bps: r.bps,
        }
    }
}

/// An inclusive range: `N` or `LO-HI`.
fn parse_range<T: FromStr + PartialOrd + Copy + fmt::Display>(
    s: &str,
    what: &str,
) -> Result<(T, T), Invalid> {
    let bad = || {
        Invalid(format!(
            "{what} `{s}`: expected N or LO-HI, e.g. 53 or 1024-65535"
        ))
    };
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (
            lo.trim().parse().map_err(|_| bad())?,
            hi.trim().parse().map_err(|_| bad())?,
        ),
        None => {
            let v = s.trim().parse().map_err(|_| bad())?;
            (v, v)
        }
    };
    if lo > hi {
        return invalid(format!("{what} `{s}`: the range is empty ({lo} > {hi})"));
    }
    Ok((lo, hi))
}

fn show_range<T: PartialEq + fmt::Display>((lo, hi): (T, T)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

fn parse_flag_set(s: &str, whole: &str) -> Result<u8, Invalid> {
    let mut v = 0;
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some((_, bit)) = TCP_FLAG_NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        else {
            return invalid(format!(
                "TCP flags `{whole}`: unknown flag `{name}` (fin, syn, rst, psh, ack, urg, ece, cwr)"
            ));
        };
        v |= bit;
    }
    Ok(v)
}

fn show_flag_set(v: u8) -> String {
    let names: Vec<&str> = TCP_FLAG_NAMES
        .iter()
        .filter(|(_, b)| v & b != 0)
        .map(|(n, _)| *n)
        .collect();
    names.join(",")
}

/// TCP flags to match: `VALUE/MASK` (flags in MASK must equal VALUE), or `VALUE` (those set,
/// others ignored). `syn/syn,ack` matches SYN without ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpFlags {
    pub value: u8,
    pub mask: u8,
}

impl FromStr for TcpFlags {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        let (value, mask) = match s.split_once('/') {
            Some((v, m)) => (parse_flag_set(v, s)?, parse_flag_set(m, s)?),
            None => {
                let v = parse_flag_set(s, s)?;
                (v, v)
            }
        };
        if mask == 0 || value & !mask != 0 {
            return invalid(format!(
                "TCP flags `{s}`: VALUE must be within MASK and MASK not empty, e.g. syn/syn,ack"
            ));
        }
        Ok(TcpFlags { value, mask })
    }
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.value == self.mask {
            write!(f, "{}", show_flag_set(self.value))
        } else {
            write!(
                f,
                "{}/{}",
                show_flag_set(self.value),
                show_flag_set(self.mask)
            )
        }
    }
}

pub fn parse_proto(s: &str) -> Result<u8, Invalid> {
    let name = s.trim().to_ascii_lowercase();
    let known = proto::NAMES
        .iter()
        .find(|(_, n)| *n == name || (name == "ipv6-icmp" && *n == "icmpv6"));
    match known {
        Some((p, _)) => Ok(*p),
        None => name.parse().or_else(|_| {
            let names: Vec<&str> = proto::NAMES.iter().map(|(_, n)| *n).collect();
            invalid(format!(
                "protocol `{s}`: expected {} or a number 0-255",
                names.join(", ")
            ))
        }),
    }
}

pub fn show_proto(p: u8) -> String {
    match proto::NAMES.iter().find(|(n, _)| *n == p) {
        Some((_, name)) => (*name).into(),
        None => p.to_string(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    #[serde(rename = "ipv4")]
    V4,
    #[serde(rename = "ipv6")]
    V6,
}

impl FromStr for Family {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        match s.trim().to_ascii_lowercase().as_str() {
            "4" | "v4" | "ipv4" | "inet" => Ok(Family::V4),
            "6" | "v6" | "ipv6" | "inet6" => Ok(Family::V6),
            _ => invalid(format!("family `{s}`: expected ipv4 or ipv6")),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    Drop,
    Pass,
    Limit(RateSpec),
}

/// One rule, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    pub id: u32,
    pub family: Option<Family>,
    pub proto: Option<u8>,
    pub src: Option<IpNet>,
    pub dst: Option<IpNet>,
    pub src_port: Option<(u16, u16)>,
    pub dst_port: Option<(u16, u16)>,
    pub tcp_flags: Option<TcpFlags>,
    pub length: Option<(u16, u16)>,
    pub ttl: Option<(u8, u8)>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// Some(true): fragments only (first or later); Some(false): unfragmented packets only.
    pub fragment: Option<bool>,
    pub action: RuleAction,
    pub dry_run: bool,
    pub comment: Option<String>,
}

/// A rule as text: the `rule add` flags and a TOML `[[rules]]` table are this same struct.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RuleText {
    /// Rule id (kept by `show-config` output so counters survive a re-apply).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// Address family: ipv4 or ipv6 (implied by --src/--dst/icmp).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// L4 protocol: tcp, udp, icmp, icmpv6, gre, esp, sctp or a number.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Source prefix or address.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// Destination prefix or address.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// Source port or range (LO-HI); needs --proto tcp or udp.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<String>,
    /// Destination port or range (LO-HI); needs --proto tcp or udp.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<String>,
    /// TCP flags VALUE[/MASK], e.g. `syn/syn,ack` (SYN set, ACK clear); needs --proto tcp.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<String>,
    /// IP packet length (header included) or range, e.g. 512-65535.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<String>,
    /// TTL / hop limit or range, e.g. 0-5.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// ICMP/ICMPv6 type; needs --proto icmp or icmpv6.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// ICMP/ICMPv6 code; needs --proto icmp or icmpv6.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// true: match IP fragments only (first or later); false: unfragmented packets only.
    #[arg(long, value_name = "true|false")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragment: Option<bool>,
    /// What a match does: drop, pass (accept, skip later defences) or limit (needs --pps/--bps).
    #[arg(long)]
    pub action: String,
    /// For `--action limit`: packets per second for everything the rule matches (k/M/G ok).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pps: Option<String>,
    /// For `--action limit`: bits per second for everything the rule matches (k/M/G ok).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bps: Option<String>,
    /// Count what the rule would do (reason rule/rule_limit, dry-run row) but let it pass.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Free text kept with the rule (at most 64 bytes).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

fn parse_net(s: &str, what: &str) -> Result<IpNet, Invalid> {
    parse_prefix(s).map_err(|e| Invalid(format!("{what}: {e}")))
}

impl RuleText {
    /// Validate into a rule with id `id` (the text's own id wins when it has one); messages
    /// name the rule's fields as `spelling` writes them.
    pub fn to_spec(&self, id: u32, spelling: Spelling) -> Result<RuleSpec, Invalid> {
        let k = |key: &str| spelling.key(key);
        if let Some(n) = self.id {
            if crate::auto::settings::is_auto_rule(n) {
                return invalid(format!(
                    "{} {n}: ids from {} on are automatic mitigation's",
                    k("id"),
                    crate::auto::settings::AUTO_RULE_ID_MIN
                ));
            }
        }
        let mut family = self.family.as_deref().map(Family::from_str).transpose()?;
        let proto = self.proto.as_deref().map(parse_proto).transpose()?;
        let src = self
            .src
            .as_deref()
            .map(|s| parse_net(s, &k("src")))
            .transpose()?;
        let dst = self
            .dst
            .as_deref()
            .map(|s| parse_net(s, &k("dst")))
            .transpose()?;
        for net in [src, dst].into_iter().flatten() {
            let f = match net {
                IpNet::V4(_) => Family::V4,
                IpNet::V6(_) => Family::V6,
            };
            match family {
                Some(have) if have != f => {
                    return invalid(format!("{net} is {f} but the rule is {have}"));
                }
                _ => family = Some(f),
            }
        }
        let proto_implied_family = match proto {
            Some(1) => Some(Family::V4),
            Some(58) => Some(Family::V6),
            _ => None,
        };
        if let Some(f) = proto_implied_family {
            match family {
                Some(have) if have != f => {
                    return invalid(format!(
                        "protocol {} is {f} only but the rule is {have}",
                        show_proto(proto.unwrap_or(0))
                    ));
                }
                _ => family = Some(f),
            }
        }
        let ports_ok = proto.is_some_and(proto::has_ports);
        let src_port = self
            .src_port
            .as_deref()
            .map(|s| parse_range::<u16>(s, "source port"))
            .transpose()?;
        let dst_port = self
            .dst_port
            .as_deref()
            .map(|s| parse_range::<u16>(s, "destination port"))
            .transpose()?;
        if (src_port.is_some() || dst_port.is_some()) && !ports_ok {
            return invalid(format!("port matches need {} tcp, udp or sctp", k("proto")));
        }
        let tcp_flags = self
            .tcp_flags
            .as_deref()
            .map(TcpFlags::from_str)
            .transpose()?;
        if tcp_flags.is_some() && proto != Some(6) {
            return invalid(format!("{} needs {} tcp", k("tcp_flags"), k("proto")));
        }
        if (self.icmp_type.is_some() || self.icmp_code.is_some())
            && !matches!(proto, Some(1) | Some(58))
        {
            return invalid(format!(
                "{}/{} need {} icmp or icmpv6",
                k("icmp_type"),
                k("icmp_code"),
                k("proto")
            ));
        }
        let length = self
            .length
            .as_deref()
            .map(|s| parse_range::<u16>(s, "length"))
            .transpose()?;
        let ttl = self
            .ttl
            .as_deref()
            .map(|s| parse_range::<u8>(s, "TTL"))
            .transpose()?;
        let rate = match (&self.pps, &self.bps) {
            (None, None) => None,
            (p, b) => Some(RateSpec {
                pps: p
                    .as_deref()
                    .map(|p| parse_si(p, &k("pps")))
                    .transpose()?
                    .unwrap_or(0),
                bps: b
                    .as_deref()
                    .map(|b| parse_si(b, &k("bps")))
                    .transpose()?
                    .unwrap_or(0),
            }),
        };
        let action = match (self.action.trim().to_ascii_lowercase().as_str(), rate) {
            ("drop", None) => RuleAction::Drop,
            ("pass" | "accept", None) => RuleAction::Pass,
            ("limit", Some(r)) if r.pps != 0 || r.bps != 0 => RuleAction::Limit(r),
            ("limit", _) => {
                return invalid(format!(
                    "{} limit needs a non-zero {} and/or {}",
                    k("action"),
                    k("pps"),
                    k("bps")
                ));
            }
            ("drop" | "pass" | "accept", Some(_)) => {
                return invalid(format!(
                    "{}/{} only go with {} limit",
                    k("pps"),
                    k("bps"),
                    k("action")
                ));
            }
            (a, _) => return invalid(format!("action `{a}`: expected drop, pass or limit")),
        };
        if let Some(c) = &self.comment {
            crate::entry::check_comment(c).map_err(|e| Invalid(e.spelled(&k("comment"), "")))?;
        }
        Ok(RuleSpec {
            id: self.id.unwrap_or(id),
            family,
            proto,
            src,
            dst,
            src_port,
            dst_port,
            tcp_flags,
            length,
            ttl,
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            fragment: self.fragment,
            action,
            dry_run: self.dry_run,
            comment: self.comment.clone(),
        })
    }
}

impl RuleSpec {
    /// The rule as text, in the form `rule add` and the TOML file take.
    pub fn to_text(&self) -> RuleText {
        let (action, pps, bps) = match self.action {
            RuleAction::Drop => ("drop", None, None),
            RuleAction::Pass => ("pass", None, None),
            RuleAction::Limit(r) => (
                "limit",
                (r.pps != 0).then(|| si(r.pps)),
                (r.bps != 0).then(|| si(r.bps)),
            ),
        };
        // The family is written only when nothing else implies it.
        let implied =
            self.src.is_some() || self.dst.is_some() || matches!(self.proto, Some(1 | 58));
        RuleText {
            id: Some(self.id),
            family: if implied {
                None
            } else {
                self.family.map(|f| f.to_string())
            },
            proto: self.proto.map(show_proto),
            src: self.src.map(|n| crate::prefix::display(&n)),
            dst: self.dst.map(|n| crate::prefix::display(&n)),
            src_port: self.src_port.map(show_range),
            dst_port: self.dst_port.map(show_range),
            tcp_flags: self.tcp_flags.map(|f| f.to_string()),
            length: self.length.map(show_range),
            ttl: self.ttl.map(show_range),
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            fragment: self.fragment,
            action: action.into(),
            pps,
            bps,
            dry_run: self.dry_run,
            comment: self.comment.clone(),
        }
    }

    /// One line for `rule list`: the match, then the action.
    pub fn summary(&self) -> String {
        let t = self.to_text();
        let mut parts = Vec::new();
        let mut push = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                parts.push(format!("{k} {v}"));
            }
        };
        push("family", &t.family);
        push("proto", &t.proto);
        push("src", &t.src);
        push("dst", &t.dst);
        push("sport", &t.src_port);
        push("dport", &t.dst_port);
        push("flags", &t.tcp_flags);
        push("len", &t.length);
        push("ttl", &t.ttl);
        push("icmp-type", &t.icmp_type.map(|v| v.to_string()));
        push("icmp-code", &t.icmp_code.map(|v| v.to_string()));
        push("fragment", &t.fragment.map(|v| v.to_string()));
        if parts.is_empty() {
            parts.push("any".into());
        }
        parts.join(" ")
    }

    pub fn action_text(&self) -> String {
        match self.action {
            RuleAction::Drop => "drop".into(),
            RuleAction::Pass => "pass".into(),
            RuleAction::Limit(r) => format!("limit {r}"),
        }
    }
}

/// Sanity switches, as booleans by name (TOML `[sanity]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sanity {
    pub bits: u32,
    pub fragment_min_bytes: u32,
}

impl Default for Sanity {
    fn default() -> Self {
        Sanity {
            bits: sanity_bits::DEFAULT,
            fragment_min_bytes: FRAGMENT_MIN_BYTES_DEFAULT,
        }
    }
}

/// Map a sanity switch name to its bit.
pub fn sanity_bit(name: &str) -> Result<u32, Invalid> {
    sanity_bits::ALL
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(b, _)| *b)
        .ok_or_else(|| {
            let names: Vec<&str> = sanity_bits::ALL.iter().map(|(_, n)| *n).collect();
            Invalid(format!(
                "unknown sanity check `{name}` (one of: {})",
                names.join(", ")
            ))
        })
}

/// The reflection preset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reflection {
    pub enabled: bool,
    /// Source ports counted as amplifiers (the default set plus any added).
    pub ports: Vec<u16>,
    /// Destination ports exempt (a service here that talks to amplifier ports).
    pub exempt_ports: Vec<u16>,
    /// Destination prefixes exempt (e.g. the address a local resolver sends its queries from).
    pub exempt_dst: Vec<IpNet>,
}

impl Default for Reflection {
    fn default() -> Self {
        Reflection {
            enabled: false,
            ports: AMPLIFIERS.iter().map(|(p, _)| *p).collect(),
            exempt_ports: Vec::new(),
            exempt_dst: Vec::new(),
        }
    }
}

/// The SYN guard (`floodgate synguard`, `[synguard]`): the data plane answers SYNs to these
/// TCP ports itself, with a SYN-ACK whose sequence number is a cookie (see
/// `filter_common::synguard`), so a spoofed SYN flood never reaches the listener.
///
/// Made by [`Synguard::new`] only (ports ascending and unique, prefixes sorted and unique), so
/// what the maps give back compares equal to what was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Synguard {
    pub enabled: bool,
    /// Protected TCP destination ports. Kept while the guard is off.
    pub ports: Vec<u16>,
    /// Protected destination prefixes; empty: every local address.
    pub dst: Vec<IpNet>,
    /// Guard a destination only while it receives more SYNs per second than this; None:
    /// always.
    pub when_over: Option<u64>,
    /// How handshakes are completed, as asked (`--completion`, `completion`): chosen when the
    /// guard is turned on. While the guard is off it reads back as `auto`.
    pub completion: SynguardCompletion,
}

/// How the SYN guard turns a valid cookie into a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SynguardCompletion {
    /// The kfunc when the kernel has it, else netfilter SYNPROXY when nftables can set it up,
    /// else the guard is refused.
    #[default]
    Auto,
    /// A TC ingress program hands the handshake to the listener (kfunc
    /// bpf_sk_assign_tcp_reqsk, Linux 6.9 or later).
    Kfunc,
    /// netfilter SYNPROXY completes it (an nftables table of floodgate's own; conntrack).
    Synproxy,
}

impl SynguardCompletion {
    pub fn name(self) -> &'static str {
        match self {
            SynguardCompletion::Auto => "auto",
            SynguardCompletion::Kfunc => "kfunc",
            SynguardCompletion::Synproxy => "synproxy",
        }
    }
}

impl Synguard {
    /// Check and normalise the guard's fields; messages name them as `spelling` writes them
    /// (`--port`, `--dst`, `--when-over` or `ports`, `dst`, `when_over`).
    pub fn new(
        enabled: bool,
        mut ports: Vec<u16>,
        mut dst: Vec<IpNet>,
        when_over: Option<u64>,
        spelling: Spelling,
    ) -> Result<Synguard, Invalid> {
        let port = spelling.key_or_flag("ports", "port");
        if ports.contains(&0) {
            return invalid(format!(
                "{port}: port 0 cannot be protected (TCP ports are 1-65535)"
            ));
        }
        if enabled && ports.is_empty() {
            return invalid(format!(
                "the SYN guard needs at least one TCP port to protect: give {port}"
            ));
        }
        ports.sort_unstable();
        ports.dedup();
        dst.sort();
        dst.dedup();
        let v4 = dst.iter().filter(|n| matches!(n, IpNet::V4(_))).count();
        if v4.max(dst.len() - v4) > SYNGUARD_DST_MAX as usize {
            return invalid(format!(
                "{}: at most {SYNGUARD_DST_MAX} IPv4 and {SYNGUARD_DST_MAX} IPv6 prefixes",
                spelling.key("dst")
            ));
        }
        let when = spelling.key("when_over");
        match when_over {
            Some(0) => {
                return invalid(format!(
                    "{when} must be more than 0 SYNs per second (leave it out to guard always)"
                ));
            }
            Some(v) if v > u64::from(u32::MAX) => {
                return invalid(format!("{when} {v}: at most {} SYNs per second", u32::MAX));
            }
            _ => {}
        }
        Ok(Synguard {
            enabled,
            ports,
            dst,
            when_over,
            completion: SynguardCompletion::Auto,
        })
    }

    /// One line for `status` and `synguard on`: ports, destinations, rate.
    pub fn summary(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        let ports = if ports.is_empty() {
            "none".into()
        } else {
            ports.join(" ")
        };
        let mut out = format!("ports {ports}, {}", self.destinations());
        if let Some(w) = self.when_over {
            out.push_str(&format!(", when over {} SYN/s", si(w)));
        }
        out
    }

    /// The protected destinations, or "all local addresses".
    pub fn destinations(&self) -> String {
        if self.dst.is_empty() {
            "all local addresses".into()
        } else {
            let nets: Vec<String> = self.dst.iter().map(crate::prefix::display).collect();
            nets.join(" ")
        }
    }
}

/// Limits of one class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitSpec {
    pub per_source: Option<RateSpec>,
    /// Prefix lengths sources are grouped by (default /32 and /64).
    pub source_prefix_v4: Option<u8>,
    pub source_prefix_v6: Option<u8>,
    pub aggregate: Option<RateSpec>,
    /// Protected destination prefixes, each with its own aggregate bucket.
    pub dst: Vec<IpNet>,
    pub ban_after: Option<Duration>,
    pub ban_for: Option<Duration>,
}

impl LimitSpec {
    /// Check the limits of `class`; messages name the fields as `spelling` writes them.
    pub fn validate(&self, class: Class, spelling: Spelling) -> Result<(), Invalid> {
        let c = class.name();
        let k = |key: &str| spelling.key(key);
        let (per_source, aggregate, dst) = (k("per_source"), k("aggregate"), k("dst"));
        if self.per_source.is_none() && self.aggregate.is_none() {
            return invalid(format!(
                "limit {c}: give {per_source} and/or {aggregate} with {dst}"
            ));
        }
        if self.aggregate.is_some() == self.dst.is_empty() {
            return invalid(format!(
                "limit {c}: {aggregate} and {dst} go together (the cap protects those prefixes)"
            ));
        }
        if self.ban_after.is_some() != self.ban_for.is_some() {
            let (after, ban_for) = (k("ban_after"), k("ban_for"));
            return invalid(format!("limit {c}: {after} and {ban_for} go together"));
        }
        if self.ban_after.is_some() && self.per_source.is_none() {
            return invalid(format!(
                "limit {c}: auto-ban needs a {per_source} limit to be over"
            ));
        }
        if matches!(self.ban_after, Some(d) if d.is_zero())
            || matches!(self.ban_for, Some(d) if d.is_zero())
        {
            return invalid(format!("limit {c}: ban times must be more than 0"));
        }
        if matches!(self.source_prefix_v4, Some(p) if p == 0 || p > 32) {
            let key = k("source_prefix_v4");
            return invalid(format!("limit {c}: {key} must be 1-32"));
        }
        if matches!(self.source_prefix_v6, Some(p) if p == 0 || p > 128) {
            let key = k("source_prefix_v6");
            return invalid(format!("limit {c}: {key} must be 1-128"));
        }
        Ok(())
    }
}

/// Whether the defences drop, or only count what they would drop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DefenceMode {
    #[default]
    Enforce,
    /// Every packet a drop reason matches is counted under that reason, and passes.
    DryRun,
}

impl DefenceMode {
    pub fn name(self) -> &'static str {
        match self {
            DefenceMode::Enforce => "enforce",
            DefenceMode::DryRun => "dry-run",
        }
    }
}

/// Everything but the lists: what `apply` sets and `show-config` prints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub mode: DefenceMode,
    pub sanity: Sanity,
    pub reflection: Reflection,
    pub rules: Vec<RuleSpec>,
    pub limits: BTreeMap<Class, LimitSpec>,
    pub synguard: Synguard,
}

impl Settings {
    /// The id for a new operator rule: after the highest operator rule (automatic rules are
    /// numbered apart, see [`crate::auto::settings::AUTO_RULE_ID_MIN`]).
    pub fn next_rule_id(&self) -> u32 {
        self.rules
            .iter()
            .map(|r| r.id)
            .filter(|&id| !crate::auto::settings::is_auto_rule(id))
            .max()
            .unwrap_or(0)
            + 1
    }

    /// Where a new operator rule goes "at the end": before the automatic rules, which stay
    /// last so that an operator's rule always wins over one the daemon made.
    pub fn operator_end(&self) -> usize {
        self.rules
            .iter()
            .position(|r| crate::auto::settings::is_auto_rule(r.id))
            .unwrap_or(self.rules.len())
    }
}

pub fn parse_class(s: &str) -> Result<Class, Invalid> {
    Class::from_name(s.trim())
        .ok_or_else(|| Invalid(format!("class `{s}`: expected syn, udp, icmp or all")))
}

pub fn parse_duration(s: &str, what: &str) -> Result<Duration, Invalid> {
    humantime::parse_duration(s.trim())
        .map_err(|e| Invalid(format!("{what} `{s}`: {e} (e.g. 30s, 10m, 1h)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print_back() {
        for (input, pps, bps, shown) in [
            ("10000", 10_000, 0, "10k"),
            ("10k/80M", 10_000, 80_000_000, "10k/80M"),
            ("/1G", 0, 1_000_000_000, "/1G"),
            ("2.5M", 2_500_000, 0, "2500k"),
            ("1234", 1234, 0, "1234"),
        ] {
            let r: RateSpec = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!((r.pps, r.bps), (pps, bps), "{input}");
            assert_eq!(r.to_string(), shown, "{input}");
            assert_eq!(shown.parse::<RateSpec>().unwrap(), r, "{shown} round-trips");
        }
        for bad in ["", "0", "x", "10q", "-5", "/"] {
            assert!(bad.parse::<RateSpec>().is_err(), "`{bad}` must be refused");
        }
    }

    #[test]
    fn tcp_flags_syntax() {
        let f: TcpFlags = "syn/syn,ack".parse().unwrap();
        assert_eq!((f.value, f.mask), (0x02, 0x12));
        assert_eq!(f.to_string(), "syn/syn,ack");
        let f: TcpFlags = "SYN,FIN".parse().unwrap();
        assert_eq!((f.value, f.mask), (0x03, 0x03));
        assert!("syn/ack".parse::<TcpFlags>().is_err(), "value outside mask");
        assert!("bogus".parse::<TcpFlags>().is_err());
    }

    fn text(action: &str) -> RuleText {
        RuleText {
            action: action.into(),
            ..RuleText::default()
        }
    }

    #[test]
    fn rule_validation_names_the_problem() {
        let mut t = text("limit");
        t.proto = Some("udp".into());
        t.dst_port = Some("53".into());
        t.length = Some("512-65535".into());
        t.pps = Some("10000".into());
        let spec = t
            .to_spec(7, Spelling::Cli)
            .expect("the issue's example rule");
        assert_eq!(
            spec.action,
            RuleAction::Limit(RateSpec {
                pps: 10_000,
                bps: 0
            })
        );
        assert_eq!(
            spec.to_text().to_spec(0, Spelling::File).unwrap(),
            spec,
            "text round-trips"
        );

        let cases: [(RuleText, &str); 7] = [
            (text("explode"), "expected drop, pass or limit"),
            (text("limit"), "needs a non-zero --pps"),
            (
                RuleText {
                    dst_port: Some("53".into()),
                    ..text("drop")
                },
                "port matches need",
            ),
            (
                RuleText {
                    proto: Some("udp".into()),
                    dst_port: Some("9-1".into()),
                    ..text("drop")
                },
                "range is empty",
            ),
            (
                RuleText {
                    src: Some("198.18.0.1/15".into()),
                    ..text("drop")
                },
                "did you mean 198.18.0.0/15",
            ),
            (
                RuleText {
                    src: Some("198.18.0.0/15".into()),
                    dst: Some("2001:db8::/32".into()),
                    ..text("drop")
                },
                "is ipv6 but the rule is ipv4",
            ),
            (
                RuleText {
                    pps: Some("5".into()),
                    ..text("drop")
                },
                "only go with --action limit",
            ),
        ];
        for (t, want) in cases {
            let err = t.to_spec(1, Spelling::Cli).expect_err(want).to_string();
            assert!(err.contains(want), "`{err}` should contain `{want}`");
        }
        // The file names the same fields by key.
        let err = text("limit")
            .to_spec(1, Spelling::File)
            .expect_err("no rate");
        assert!(
            err.0
                .contains("action limit needs a non-zero pps and/or bps"),
            "{err}"
        );
        let flags = RuleText {
            tcp_flags: Some("syn".into()),
            ..text("drop")
        };
        let err = flags.to_spec(1, Spelling::File).expect_err("no proto");
        assert!(err.0.contains("tcp_flags needs proto tcp"), "{err}");
    }

    #[test]
    fn synguard_validation_names_the_field_each_front_end_uses() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let g = Synguard::new(
            true,
            vec![443, 80, 443],
            vec![
                net("2001:db8::/64"),
                net("198.18.0.0/24"),
                net("198.18.0.0/24"),
            ],
            Some(20_000),
            Spelling::Cli,
        )
        .expect("valid");
        assert_eq!(g.ports, [80, 443], "sorted, once each");
        assert_eq!(
            g.dst,
            [net("198.18.0.0/24"), net("2001:db8::/64")],
            "sorted, once each"
        );
        // Off with no ports is a valid (empty) guard; off keeps what was set.
        Synguard::new(false, vec![], vec![], None, Spelling::File).expect("the default");
        Synguard::new(false, vec![22], vec![], Some(5), Spelling::File).expect("kept while off");

        let too_many: Vec<IpNet> = (0..=SYNGUARD_DST_MAX)
            .map(|i| net(&format!("10.{}.{}.0/24", i / 256, i % 256)))
            .collect();
        #[expect(clippy::type_complexity, reason = "a table of cases")]
        let cases: [(bool, Vec<u16>, Vec<IpNet>, Option<u64>, &str, &str); 5] = [
            (
                true,
                vec![],
                vec![],
                None,
                "needs at least one TCP port to protect: give --port",
                "needs at least one TCP port to protect: give ports",
            ),
            (
                true,
                vec![443, 0],
                vec![],
                None,
                "--port: port 0 cannot be protected",
                "ports: port 0 cannot be protected",
            ),
            (
                true,
                vec![443],
                vec![],
                Some(0),
                "--when-over must be more than 0",
                "when_over must be more than 0",
            ),
            (
                true,
                vec![443],
                vec![],
                Some(u64::from(u32::MAX) + 1),
                "--when-over 4294967296: at most 4294967295",
                "when_over 4294967296: at most 4294967295",
            ),
            (
                true,
                vec![443],
                too_many,
                None,
                "--dst: at most 1024 IPv4",
                "dst: at most 1024 IPv4",
            ),
        ];
        for (enabled, ports, dst, when, cli, file) in cases {
            for (spelling, want) in [(Spelling::Cli, cli), (Spelling::File, file)] {
                let err = Synguard::new(enabled, ports.clone(), dst.clone(), when, spelling)
                    .expect_err(want)
                    .0;
                assert!(err.contains(want), "`{err}` should contain `{want}`");
            }
        }
        assert!(
            Synguard::new(
                true,
                vec![443],
                vec![],
                Some(u64::from(u32::MAX)),
                Spelling::Cli
            )
            .is_ok(),
            "the largest rate the kernel's u32 holds"
        );
    }

    #[test]
    fn limit_validation() {
        let ok = LimitSpec {
            per_source: Some("100".parse().unwrap()),
            ban_after: Some(Duration::from_secs(2)),
            ban_for: Some(Duration::from_secs(60)),
            ..LimitSpec::default()
        };
        ok.validate(Class::Udp, Spelling::Cli).expect("valid");
        let no_dst = LimitSpec {
            aggregate: Some("100".parse().unwrap()),
            ..LimitSpec::default()
        };
        let cli = no_dst.validate(Class::Udp, Spelling::Cli).unwrap_err().0;
        assert!(cli.contains("--aggregate and --dst go together"), "{cli}");
        let file = no_dst.validate(Class::Udp, Spelling::File).unwrap_err().0;
        assert!(file.contains("aggregate and dst go together"), "{file}");
        let prefix = LimitSpec {
            source_prefix_v4: Some(33),
            ..ok.clone()
        };
        let file = prefix.validate(Class::Udp, Spelling::File).unwrap_err().0;
        assert!(file.contains("source_prefix_v4 must be 1-32"), "{file}");
        let half_ban = LimitSpec {
            ban_for: None,
            ..ok.clone()
        };
        assert!(
            half_ban
                .validate(Class::Syn, Spelling::Cli)
                .unwrap_err()
                .0
                .contains("go together")
        );
    }
}
