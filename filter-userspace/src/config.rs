//! The declarative configuration file (`floodgate apply FILE.toml`, `floodgate show-config`;
//! the daemon reads the same format). See `examples/floodgate.toml` for every key, commented.
//!
//! The file describes the whole defence configuration: a section left out means its defaults
//! (no rules, no limits, reflection preset off, default sanity checks, enforce mode). `[lists]`
//! is the exception: without it the lists are left alone (sources and the CLI usually own them);
//! with it, the operator entries of each list given become exactly the file's (auto-bans stay).
//!
//! Every value is checked while the file is parsed, so an error names its line and field and
//! nothing has been changed yet.

use std::{collections::BTreeMap, fmt, time::Duration};

use filter_common::{Class, sanity_bits};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, de::Error as _};
use toml::Spanned;

use crate::{
    entry::{Entry, EntryText, Field, Item},
    prefix::{display, parse_prefix},
    settings::{
        DefenceMode, LimitSpec, RateSpec, Reflection, RuleText, Sanity, Settings, Spelling,
        Synguard, SynguardCompletion, parse_class, parse_duration,
    },
};

/// The file as written.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `enforce` (default) or `dry-run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DefenceMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sanity: Option<SanityFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reflection: Option<ReflectionFile>,
    /// Spanned: a rule's error names the rule's own line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Spanned<RuleText>>,
    /// Keyed by class: syn, udp, icmp, all.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<ClassName, Spanned<LimitText>>,
    /// Spanned: an error names the section's line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synguard: Option<Spanned<SynguardFile>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lists: Option<ListsFile>,
    /// Settings of `floodgate run` (the daemon); `floodgate apply` ignores them.
    #[serde(default, skip_serializing)]
    pub daemon: Option<DaemonFile>,
    /// `[auto]`: automatic mitigation, run by the daemon; `floodgate apply` ignores it.
    #[serde(default, skip_serializing)]
    pub auto: Option<Spanned<crate::auto::settings::AutoFile>>,
}

/// `[daemon]`: how `floodgate run` runs. Every field has a default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonFile {
    /// Interfaces to attach at start and on reload (in the daemon's network namespace).
    /// Interfaces dropped from the list on a reload are detached.
    pub interfaces: Vec<String>,
    /// XDP mode for `interfaces`: auto, native or skb.
    pub attach_mode: crate::netlink::XdpMode,
    /// Address of the HTTP API and /metrics.
    pub listen: std::net::SocketAddr,
    /// File holding the bearer token API writes need. Without it, writes are refused (401).
    pub token_file: Option<std::path::PathBuf>,
    /// Also require the token for reads (GET /v1/..., /metrics). /healthz stays open.
    pub protect_reads: bool,
    /// Largest request body, bytes; a bigger one is refused with 413.
    pub max_body_bytes: usize,
    /// A request head must arrive whole within this time of its first byte.
    #[serde(with = "humantime_serde_compat")]
    pub header_timeout: Duration,
    /// A connection with no request in flight and no byte moving is closed after this time.
    #[serde(with = "humantime_serde_compat")]
    pub idle_timeout: Duration,
    /// Open API connections from which on new ones get 1 s for their request and no keep-alive.
    #[serde(deserialize_with = "at_least_one")]
    pub max_connections: usize,
    /// Log format: text or json (one JSON object per line).
    pub log_format: LogFormat,
    /// Where the lists are saved for the next boot (written atomically); "" = no snapshot.
    pub snapshot: std::path::PathBuf,
    #[serde(with = "humantime_serde_compat")]
    pub snapshot_interval: Duration,
    /// How often expired list entries are deleted from the maps.
    #[serde(with = "humantime_serde_compat")]
    pub sweep_interval: Duration,
    /// On SIGTERM, detach `interfaces` (default: leave the filter running).
    pub detach_on_exit: bool,
    /// Entries per blocklist map, used when the maps are created.
    pub blocklist_size: Option<u32>,
    /// Entries of the per-source rate-limit table, used when the maps are created.
    pub source_table_size: Option<u32>,
    pub attack: AttackFile,
    /// `[daemon.top]`: a sampled top of the traffic for /metrics and the dashboard.
    pub top: TopFile,
}

/// `[daemon.top]`: every `every`, sample 1 in `sample` packets for one second and export the
/// top source nets and destination ports as gauges (`floodgate_top_*`). Off when `sample` is 0.
/// While it samples, a `floodgate capture` or `top` beside it sees part of the samples.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TopFile {
    pub sample: u32,
    #[serde(with = "humantime_serde_compat")]
    pub every: Duration,
}

impl Default for TopFile {
    fn default() -> Self {
        TopFile {
            sample: 0,
            every: Duration::from_secs(15),
        }
    }
}

impl Default for DaemonFile {
    fn default() -> Self {
        DaemonFile {
            interfaces: Vec::new(),
            attach_mode: crate::netlink::XdpMode::Auto,
            listen: ([127, 0, 0, 1], 9477).into(),
            token_file: None,
            protect_reads: false,
            max_body_bytes: 64 << 20,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 512,
            log_format: LogFormat::Text,
            snapshot: "/var/lib/floodgate/snapshot.json".into(),
            snapshot_interval: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(10),
            detach_on_exit: false,
            blocklist_size: None,
            source_table_size: None,
            attack: AttackFile::default(),
            top: TopFile::default(),
        }
    }
}

/// `[daemon.attack]`: when a drop reason's rate makes an attack event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AttackFile {
    /// Drops per second of one reason that start an attack (0 = no attack events).
    pub threshold_pps: u64,
    /// Per-reason thresholds overriding `threshold_pps`, e.g. { blocklist = 100000 }.
    pub thresholds: BTreeMap<String, u64>,
    /// The attack ends once the rate stayed below its threshold this long.
    #[serde(with = "humantime_serde_compat")]
    pub end_after: Duration,
}

impl Default for AttackFile {
    fn default() -> Self {
        AttackFile {
            threshold_pps: 1000,
            thresholds: BTreeMap::new(),
            end_after: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Text,
    Json,
}

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n == 0 {
        return Err(D::Error::custom("must be at least 1"));
    }
    Ok(n)
}

/// Durations as humantime text ("30s", "1h30m") in the file.
pub(crate) mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        let v = humantime::parse_duration(&text)
            .map_err(|e| D::Error::custom(format!("duration `{text}`: {e} (e.g. 30s, 10m)")))?;
        if v.is_zero() {
            return Err(D::Error::custom(format!(
                "duration `{text}` must be more than 0"
            )));
        }
        Ok(v)
    }
}

/// `[sanity]`: the checks of `filter_common::sanity_bits::ALL` by name (`land = true`), and
/// `fragment_min_bytes`. Driven by that one table: a check added there is a key here.
#[derive(Debug, Default)]
pub struct SanityFile {
    /// The checks the file names, with their bit: (bit, on).
    pub checks: Vec<(u32, bool)>,
    pub fragment_min_bytes: Option<u32>,
}

const FRAGMENT_MIN_BYTES_KEY: &str = "fragment_min_bytes";

impl<'de> Deserialize<'de> for SanityFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = SanityFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of sanity checks (`land = true`) and fragment_min_bytes")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<SanityFile, A::Error> {
                let mut out = SanityFile::default();
                while let Some(key) = map.next_key::<String>()? {
                    if key == FRAGMENT_MIN_BYTES_KEY {
                        out.fragment_min_bytes = Some(map.next_value()?);
                    } else if let Some((bit, _)) = sanity_bits::ALL.iter().find(|(_, n)| *n == key)
                    {
                        out.checks.push((*bit, map.next_value()?));
                    } else {
                        let mut known: Vec<&str> =
                            sanity_bits::ALL.iter().map(|(_, n)| *n).collect();
                        known.push(FRAGMENT_MIN_BYTES_KEY);
                        // Raised while reading the value, so the error points at its line.
                        return map.next_value_seed(Refuse(format!(
                            "unknown field `{}`, expected one of {}",
                            crate::entry::quote(&key),
                            known.join(", ")
                        )));
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A value that is refused with a message, wherever it is read (so the error has its span).
struct Refuse(String);

impl<'de> serde::de::DeserializeSeed<'de> for Refuse {
    type Value = SanityFile;
    fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<SanityFile, D::Error> {
        Err(D::Error::custom(self.0))
    }
}

impl Serialize for SanityFile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        for (bit, name) in sanity_bits::ALL {
            if let Some((_, on)) = self.checks.iter().find(|(b, _)| *b == bit) {
                m.serialize_entry(name, on)?;
            }
        }
        if let Some(n) = self.fragment_min_bytes {
            m.serialize_entry(FRAGMENT_MIN_BYTES_KEY, &n)?;
        }
        m.end()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReflectionFile {
    #[serde(default)]
    pub enabled: bool,
    /// Amplifier source ports; the built-in set when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exempt_ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exempt_dst: Vec<Prefix>,
}

/// `[synguard]`: the SYN guard (see [`Synguard`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynguardFile {
    #[serde(default)]
    pub enabled: bool,
    /// Protected TCP destination ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Protected destination prefixes; none: every local address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst: Vec<Prefix>,
    /// SYNs per second to one destination above which it is guarded; none: always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_over: Option<u64>,
    /// How handshakes complete: "auto" (default), "kfunc" or "synproxy".
    #[serde(default, skip_serializing_if = "is_auto")]
    pub completion: SynguardCompletion,
}

fn is_auto(c: &SynguardCompletion) -> bool {
    *c == SynguardCompletion::Auto
}

impl SynguardFile {
    fn to_synguard(&self) -> Result<Synguard, crate::settings::Invalid> {
        let mut g = Synguard::new(
            self.enabled,
            self.ports.clone(),
            self.dst.iter().map(|p| p.0).collect(),
            self.when_over,
            Spelling::File,
        )?;
        g.completion = self.completion;
        Ok(g)
    }

    fn of(g: &Synguard) -> SynguardFile {
        SynguardFile {
            enabled: g.enabled,
            ports: g.ports.clone(),
            dst: g.dst.iter().copied().map(Prefix).collect(),
            when_over: g.when_over,
            completion: g.completion,
        }
    }
}

/// A prefix or address, checked as it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Prefix(pub IpNet);

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_prefix(&s).map(Prefix).map_err(D::Error::custom)
    }
}

impl Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&display(&self.0))
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A class name used as a `[limits.NAME]` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClassName(pub Class);

impl<'de> Deserialize<'de> for ClassName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_class(&s).map(ClassName).map_err(D::Error::custom)
    }
}

impl Serialize for ClassName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

/// `[limits.CLASS]` as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitText {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_prefix_v4: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_prefix_v6: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst: Vec<Prefix>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ban_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ban_for: Option<String>,
}

impl LimitText {
    fn to_spec(&self, class: Class) -> Result<LimitSpec, crate::settings::Invalid> {
        let t = self;
        let rate = |s: &Option<String>, what: &str| {
            s.as_deref()
                .map(|s| {
                    s.parse::<RateSpec>()
                        .map_err(|e| crate::settings::Invalid(format!("{what}: {e}")))
                })
                .transpose()
        };
        let dur = |s: &Option<String>, what: &str| {
            s.as_deref().map(|s| parse_duration(s, what)).transpose()
        };
        let spec = LimitSpec {
            per_source: rate(&t.per_source, "per_source")?,
            source_prefix_v4: t.source_prefix_v4,
            source_prefix_v6: t.source_prefix_v6,
            aggregate: rate(&t.aggregate, "aggregate")?,
            dst: t.dst.iter().map(|p| p.0).collect(),
            ban_after: dur(&t.ban_after, "ban_after")?,
            ban_for: dur(&t.ban_for, "ban_for")?,
        };
        spec.validate(class, Spelling::File)?;
        Ok(spec)
    }

    fn from_spec(l: &LimitSpec) -> LimitText {
        let l = l.clone();
        LimitText {
            per_source: l.per_source.map(|r| r.to_string()),
            source_prefix_v4: l.source_prefix_v4,
            source_prefix_v6: l.source_prefix_v6,
            aggregate: l.aggregate.map(|r| r.to_string()),
            dst: l.dst.into_iter().map(Prefix).collect(),
            ban_after: l
                .ban_after
                .map(|d| humantime::format_duration(d).to_string()),
            ban_for: l.ban_for.map(|d| humantime::format_duration(d).to_string()),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListsFile {
    /// Entries: `"198.18.0.0/24"` or `{ cidr = "...", ttl = "1h", comment = "..." }`, checked
    /// after the file is read so that an error names the entry (`lists.block[3].ttl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<Vec<Spanned<EntryText>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<Spanned<EntryText>>>,
    /// Take entries broader than /8 (IPv4) or /16 (IPv6) (see [`crate::entry::check_breadth`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// A configuration file that failed to parse or validate; nothing was applied.
#[derive(Debug)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: {} (nothing was applied)", self.path, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// What a file asks for.
#[derive(Debug)]
pub struct Desired {
    /// `[daemon]`, defaults filled in.
    pub daemon: DaemonFile,
    /// `[auto]`, checked; off with no groups when the file has none.
    pub auto: crate::auto::settings::AutoConfig,
    pub settings: Settings,
    /// `None`: leave that list alone.
    pub block: Option<Vec<Item>>,
    pub allow: Option<Vec<Item>>,
}

/// Parse and check a configuration file's text.
pub fn parse(path: &str, text: &str) -> Result<Desired, ConfigError> {
    let err = |message: String| ConfigError {
        path: path.to_string(),
        message,
    };
    let file: FileConfig = toml::from_str(text).map_err(|e| err(e.to_string()))?;
    to_desired(file, text).map_err(err)
}

fn to_desired(file: FileConfig, text: &str) -> Result<Desired, String> {
    let mut sanity = Sanity::default();
    if let Some(s) = &file.sanity {
        for &(bit, on) in &s.checks {
            if on {
                sanity.bits |= bit;
            } else {
                sanity.bits &= !bit;
            }
        }
        if let Some(n) = s.fragment_min_bytes {
            sanity.fragment_min_bytes = n;
        }
    }
    let mut reflection = Reflection::default();
    if let Some(r) = &file.reflection {
        reflection.enabled = r.enabled;
        if let Some(p) = &r.ports {
            reflection.ports = p.clone();
        }
        reflection.exempt_ports = r.exempt_ports.clone();
        reflection.exempt_dst = r.exempt_dst.iter().map(|p| p.0).collect();
    }
    let mut specs = Vec::new();
    for (i, r) in file.rules.iter().enumerate() {
        let spec = r
            .get_ref()
            .to_spec(0, Spelling::File)
            .map_err(|e| format!("line {}: rules[{i}]: {e}", line_of(text, r.span().start)))?;
        specs.push(spec);
    }
    // Ids: keep the file's, number the rest after the highest (0 = not given).
    let mut next = specs.iter().map(|r| r.id).max().unwrap_or(0) + 1;
    let mut seen = std::collections::BTreeSet::new();
    let mut rules = Vec::new();
    for (i, spec) in specs.into_iter().enumerate() {
        let mut spec = spec;
        if spec.id == 0 {
            spec.id = next;
            next += 1;
        }
        if !seen.insert(spec.id) {
            return Err(format!(
                "rules[{i}]: id {} is used by an earlier rule",
                spec.id
            ));
        }
        rules.push(spec);
    }
    if rules.len() > filter_common::RULES_MAX as usize {
        return Err(format!(
            "{} rules; the table holds at most {}",
            rules.len(),
            filter_common::RULES_MAX
        ));
    }
    let mut limits = BTreeMap::new();
    for (ClassName(c), l) in &file.limits {
        let spec = l.get_ref().to_spec(*c).map_err(|e| {
            format!(
                "line {}: limits.{}: {e}",
                line_of(text, l.span().start),
                c.name()
            )
        })?;
        limits.insert(*c, spec);
    }
    let synguard = match &file.synguard {
        Some(g) => g
            .get_ref()
            .to_synguard()
            .map_err(|e| format!("line {}: synguard: {e}", line_of(text, g.span().start)))?,
        None => Synguard::default(),
    };
    let (block, allow) = match file.lists {
        Some(ListsFile {
            block,
            allow,
            force,
        }) => (
            list_entries(text, "block", block, force)?,
            list_entries(text, "allow", allow, force)?,
        ),
        None => (None, None),
    };
    let daemon = file.daemon.unwrap_or_default();
    for reason in daemon.attack.thresholds.keys() {
        let known = filter_common::REASONS
            .iter()
            .any(|r| r.name() == reason && r.action() == filter_common::Action::Drop);
        if !known {
            return Err(format!(
                "daemon.attack.thresholds: `{reason}` is not a drop reason (see `floodgate stats`)"
            ));
        }
    }
    let auto = match &file.auto {
        Some(a) => a
            .get_ref()
            .check()
            .map_err(|e| format!("line {}: {}", line_of(text, a.span().start), e.0))?,
        None => crate::auto::settings::AutoConfig::default(),
    };
    Ok(Desired {
        daemon,
        auto,
        settings: Settings {
            mode: file.mode.unwrap_or_default(),
            sanity,
            reflection,
            rules,
            limits,
            synguard,
        },
        block,
        allow,
    })
}

/// Parse the entries of `[lists] name`; an error names the line and the field.
fn list_entries(
    text: &str,
    name: &str,
    entries: Option<Vec<Spanned<EntryText>>>,
    force: bool,
) -> Result<Option<Vec<Item>>, String> {
    let Some(entries) = entries else {
        return Ok(None);
    };
    let mut items = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let line = line_of(text, e.span().start);
        let item = e.into_inner().parse(force).map_err(|err| {
            let mut field = format!("lists.{name}[{i}]");
            if err.field != Field::Cidr {
                field = format!("{field}.{}", err.field.name());
            }
            let message = err.spelled(&field, "set force = true in [lists]");
            format!("line {line}: {message}")
        })?;
        items.push(item);
    }
    Ok(Some(items))
}

/// Operator entries as the file writes them (auto-bans are the data plane's).
fn list_items(entries: Vec<Entry>) -> Vec<Spanned<EntryText>> {
    entries
        .into_iter()
        .filter(|e| !e.auto())
        .map(|e| {
            let item = Item {
                net: e.net,
                // Whole seconds: the file is for people.
                ttl: e
                    .expires_in
                    .map(|d| Duration::from_secs(d.as_secs().max(1))),
                comment: e.comment,
            };
            Spanned::new(0..0, EntryText::of(&item))
        })
        .collect()
}

/// The running configuration as a file (`show-config`); applying it changes nothing.
pub fn render(s: &Settings, block: Option<Vec<Entry>>, allow: Option<Vec<Entry>>) -> String {
    let mut sanity = SanityFile {
        checks: sanity_bits::ALL
            .iter()
            .map(|(bit, _)| (*bit, s.sanity.bits & bit != 0))
            .collect(),
        ..SanityFile::default()
    };
    sanity.fragment_min_bytes = Some(s.sanity.fragment_min_bytes);
    let defaults = Reflection::default();
    let file = FileConfig {
        mode: Some(s.mode),
        sanity: Some(sanity),
        reflection: Some(ReflectionFile {
            enabled: s.reflection.enabled,
            ports: (s.reflection.ports != defaults.ports).then(|| s.reflection.ports.clone()),
            exempt_ports: s.reflection.exempt_ports.clone(),
            exempt_dst: s
                .reflection
                .exempt_dst
                .iter()
                .copied()
                .map(Prefix)
                .collect(),
        }),
        // Automatic rules are the daemon's, not configuration: a file that named them would
        // give them to the operator.
        rules: s
            .rules
            .iter()
            .filter(|r| !crate::auto::settings::is_auto_rule(r.id))
            .map(|r| Spanned::new(0..0, r.to_text()))
            .collect(),
        limits: s
            .limits
            .iter()
            .map(|(c, l)| (ClassName(*c), Spanned::new(0..0, LimitText::from_spec(l))))
            .collect(),
        synguard: Some(Spanned::new(0..0, SynguardFile::of(&s.synguard))),
        lists: (block.is_some() || allow.is_some()).then(|| ListsFile {
            force: block
                .iter()
                .chain(allow.iter())
                .flatten()
                .any(|e| crate::entry::check_breadth(&e.net, false).is_err()),
            block: block.map(list_items),
            allow: allow.map(list_items),
        }),
        daemon: None,
        auto: None,
    };
    let body = toml::to_string_pretty(&file).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
    format!(
        "# floodgate configuration (floodgate show-config). Apply with: floodgate apply FILE\n{body}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/floodgate.toml");

    #[test]
    fn the_shipped_example_parses() {
        let d = parse("examples/floodgate.toml", EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
        assert!(!d.settings.rules.is_empty(), "the example shows rules");
        assert!(!d.settings.limits.is_empty(), "the example shows limits");
        assert!(d.settings.reflection.enabled);
        assert!(
            !d.settings.synguard.ports.is_empty(),
            "the example shows [synguard]"
        );
    }

    #[test]
    fn synguard_round_trips_through_the_file() {
        let text = "[synguard]\nenabled = true\nports = [443, 80]\n\
                    dst = [\"2001:db8::/64\", \"198.18.0.0/24\"]\nwhen_over = 20000\n\
                    completion = \"synproxy\"\n";
        let d = parse("f.toml", text).unwrap_or_else(|e| panic!("{e}"));
        let g = &d.settings.synguard;
        assert!(g.enabled);
        assert_eq!(g.completion, SynguardCompletion::Synproxy);
        assert_eq!(g.ports, [80, 443]);
        assert_eq!(g.when_over, Some(20_000));
        let rendered = render(&d.settings, None, None);
        assert!(
            rendered.contains("[synguard]\nenabled = true\nports = [\n    80,\n    443,\n]")
                || rendered.contains("ports = [80, 443]"),
            "{rendered}"
        );
        let again = parse("rendered", &rendered).unwrap_or_else(|e| panic!("{e}\n{rendered}"));
        assert_eq!(again.settings, d.settings, "rendered:\n{rendered}");
        // Left out: off, nothing protected.
        let none = parse("f.toml", "mode = \"enforce\"\n").unwrap();
        assert_eq!(none.settings.synguard, Synguard::default());
    }

    #[test]
    fn render_then_parse_is_identity() {
        let d = parse("x", EXAMPLE).unwrap();
        let block = d.block.clone().map(|items| {
            items
                .into_iter()
                .map(|i| Entry {
                    net: i.net,
                    expires_in: i.ttl,
                    hits: 0,
                    comment: i.comment,
                    source: filter_common::SOURCE_CONFIG,
                })
                .collect()
        });
        let text = render(&d.settings, block, None);
        let again = parse("rendered", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(again.settings, d.settings, "rendered:\n{text}");
        assert_eq!(again.block, d.block);
    }

    #[test]
    fn errors_name_line_and_field() {
        let cases = [
            (
                "[sanity]\nland = true\nbogus = 1\n",
                "line 3",
                "unknown field `bogus`",
            ),
            (
                "[[rules]]\naction = \"drop\"\n\n[[rules]]\nproto = \"udp\"\ndst_port = \"99-1\"\naction = \"drop\"\n",
                "line 4",
                "range is empty",
            ),
            (
                "[lists]\nblock = [\"198.18.0.1/15\"]\n",
                "line 2",
                "lists.block[0]: 198.18.0.1/15: host bits are set; did you mean 198.18.0.0/15",
            ),
            (
                "[lists]\nblock = [\"198.18.0.1\",\n  { cidr = \"198.18.0.2\", ttl = \"0s\" }]\n",
                "line 3",
                "lists.block[1].ttl: must be more than 0",
            ),
            (
                "[lists]\nallow = [\"0.0.0.0/0\"]\n",
                "line 2",
                "lists.allow[0]: 0.0.0.0/0 is broader than /8",
            ),
            (
                "[lists]\nallow = [\"0.0.0.0/0\"]\n",
                "line 2",
                "set force = true in [lists]",
            ),
            (
                "[lists]\nblock = [{ cidr = \"198.18.0.2\", tll = \"1h\" }]\n",
                "line 2",
                "unknown field `tll`",
            ),
            (
                "[limits.tcp]\nper_source = \"100\"\n",
                "line 1",
                "expected syn, udp, icmp or all",
            ),
            (
                "[limits.udp]\naggregate = \"100\"\n",
                "line 1",
                "limits.udp",
            ),
            ("mode = \"panic\"\n", "line 1", "unknown variant `panic`"),
            (
                "[daemon]\nmax_connections = 0\n",
                "line 2",
                "max_connections = 0",
            ),
            (
                "[daemon]\nheader_timeout = \"0s\"\n",
                "line 2",
                "must be more than 0",
            ),
            (
                "[limits.syn]\nper_source = \"10q\"\n",
                "line 1",
                "per_source",
            ),
            (
                "mode = \"enforce\"\n\n[synguard]\nenabled = true\n",
                "line 3",
                "synguard: the SYN guard needs at least one TCP port to protect: give ports",
            ),
            (
                "[synguard]\nenabled = true\nports = [443, 0]\n",
                "line 1",
                "synguard: ports: port 0 cannot be protected",
            ),
            (
                "[synguard]\nenabled = true\nports = [443]\nwhen_over = 0\n",
                "line 1",
                "synguard: when_over must be more than 0",
            ),
            (
                "[synguard]\nports = [443]\ndst = [\"198.18.0.1/24\"]\n",
                "line 3",
                "did you mean 198.18.0.0/24",
            ),
            ("[synguard]\nports = [70000]\n", "line 2", "ports"),
            (
                "[synguard]\nport = [443]\n",
                "line 2",
                "unknown field `port`",
            ),
        ];
        for (text, line, what) in cases {
            let e = parse("f.toml", text).expect_err(what).to_string();
            assert!(e.contains(line), "`{e}` should name {line}");
            assert!(e.contains(what), "`{e}` should say {what}");
            assert!(e.contains("nothing was applied"), "{e}");
        }
    }
}
