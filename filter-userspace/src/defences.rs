//! Reads and writes the flood defences' maps as one [`Settings`] value. Every command (CLI verb
//! or `apply`) reads the running settings, changes them, and writes them back here, so there is
//! a single place that knows the map layout.
//!
//! Writes are ordered so that a packet never sees a half-made change: the rule table is filled
//! in the idle bank and goes live with the `CONFIG` write that flips the bank; ports, exempt
//! prefixes and aggregate caps are written before the `CONFIG` record that turns them on.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap as StdHashMap},
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{Array, LpmTrie, MapData, PerCpuHashMap, PerCpuValues, lpm_trie::Key},
    util::nr_cpus,
};
use filter_common::{
    AGGREGATE_CLASS_BITS, Aggregate, CLASSES, CONFIG_MAGIC, Class, ClassLimit, Config, Counter,
    RULE_DROP, RULE_LIMIT, RULE_PASS, RULES_MAX, Rate, Rule, SOURCE_PREFIX_V4_DEFAULT,
    SOURCE_PREFIX_V6_DEFAULT, SynguardSecret, addr_words, aggregate_key_v4, aggregate_key_v6,
    map_names as names, match_bits, port_bits, synguard_bits, words_addr,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::{
    error::{Error, MapContext, Result},
    loader::Completion,
    maps::{not_found, sum_cpus, take_map},
    settings::{
        DefenceMode, Family, LimitSpec, RateSpec, Reflection, RuleAction, RuleSpec, Sanity,
        Settings, Synguard, SynguardCompletion, TcpFlags,
    },
    synproxy,
};

/// A pair of prefix tries (IPv4, IPv6) whose value is 1: a set of destination prefixes.
struct PrefixSet {
    v4: LpmTrie<MapData, [u8; 4], u32>,
    v6: LpmTrie<MapData, [u8; 16], u32>,
    /// The maps' names, for errors.
    names: (&'static str, &'static str),
}

impl PrefixSet {
    fn take(ebpf: &mut Ebpf, v4: &'static str, v6: &'static str) -> Result<PrefixSet> {
        Ok(PrefixSet {
            v4: take_map(ebpf, v4)?,
            v6: take_map(ebpf, v6)?,
            names: (v4, v6),
        })
    }

    /// The prefixes, sorted.
    fn read(&self) -> Result<Vec<IpNet>> {
        let mut out = Vec::new();
        for k in self.v4.keys() {
            let k = k.map_context(|| format!("reading {}", self.names.0))?;
            if let Ok(n) = Ipv4Net::new(Ipv4Addr::from(k.data()), k.prefix_len() as u8) {
                out.push(IpNet::V4(n));
            }
        }
        for k in self.v6.keys() {
            let k = k.map_context(|| format!("reading {}", self.names.1))?;
            if let Ok(n) = Ipv6Net::new(Ipv6Addr::from(k.data()), k.prefix_len() as u8) {
                out.push(IpNet::V6(n));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Make the set `nets`, given that it holds `have`: new prefixes go in before old ones
    /// leave, so a prefix in both is never missing. `what` says what the set is for, in errors.
    fn write(&mut self, have: &[IpNet], nets: &[IpNet], what: &str) -> Result<()> {
        let want: BTreeSet<IpNet> = nets.iter().copied().collect();
        for net in &want {
            let r = match net {
                IpNet::V4(n) => {
                    self.v4
                        .insert(&Key::new(n.prefix_len() as u32, n.network().octets()), 1, 0)
                }
                IpNet::V6(n) => {
                    self.v6
                        .insert(&Key::new(n.prefix_len() as u32, n.network().octets()), 1, 0)
                }
            };
            r.map_context(|| format!("adding {net} to {what}"))?;
        }
        for net in have.iter().filter(|n| !want.contains(n)) {
            let _ = match net {
                IpNet::V4(n) => self
                    .v4
                    .remove(&Key::new(n.prefix_len() as u32, n.network().octets())),
                IpNet::V6(n) => self
                    .v6
                    .remove(&Key::new(n.prefix_len() as u32, n.network().octets())),
            };
        }
        Ok(())
    }
}

pub struct Defences {
    config: Array<MapData, Config>,
    rules: Array<MapData, Rule>,
    rule_stats: PerCpuHashMap<MapData, u32, Counter>,
    ports: Array<MapData, u32>,
    exempt: PrefixSet,
    synguard_dst: PrefixSet,
    synguard_secret: Array<MapData, SynguardSecret>,
    agg_v4: LpmTrie<MapData, [u8; 5], Aggregate>,
    agg_v6: LpmTrie<MapData, [u8; 17], Aggregate>,
}

/// A rule with its counters, for `rule list`.
pub struct RuleRow {
    pub spec: RuleSpec,
    pub hits: Counter,
}

/// The completion path for `asked` on this kernel: true for netfilter SYNPROXY, false for the
/// kfunc; an error when it cannot be had (`auto`: neither can).
fn choose_completion(asked: SynguardCompletion) -> Result<bool> {
    let kfunc = || match Completion::probe() {
        Completion::Kfunc => Ok(false),
        Completion::Unavailable(why) => Err(why),
    };
    let synproxy = || {
        synproxy::probe()
            .map(|()| true)
            .map_err(|e| format!("netfilter SYNPROXY cannot be set up ({e})"))
    };
    let chosen = match asked {
        SynguardCompletion::Kfunc => kfunc(),
        SynguardCompletion::Synproxy => synproxy(),
        SynguardCompletion::Auto => {
            kfunc().or_else(|k| synproxy().map_err(|s| format!("{k}; {s}")))
        }
    };
    chosen.map_err(|why| Error::SynguardUnavailable { why })
}

fn ns(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// A prefix as (address words, mask words) over network-order bytes, IPv4 in the first 4.
fn net_words(net: &IpNet) -> ([u64; 2], [u64; 2]) {
    let (addr, mask) = match net {
        IpNet::V4(n) => {
            let mut a = [0u8; 16];
            let mut m = [0u8; 16];
            a[..4].copy_from_slice(&n.network().octets());
            m[..4].copy_from_slice(&n.netmask().octets());
            (a, m)
        }
        IpNet::V6(n) => (n.network().octets(), n.netmask().octets()),
    };
    (addr_words(addr), addr_words(mask))
}

fn words_net(addr: [u64; 2], mask: [u64; 2], v6: bool) -> Option<IpNet> {
    let a = words_addr(addr);
    let m = words_addr(mask);
    if v6 {
        let len = u128::from_be_bytes(m).count_ones() as u8;
        Ipv6Net::new(Ipv6Addr::from(a), len).ok().map(IpNet::V6)
    } else {
        let len = u32::from_be_bytes([m[0], m[1], m[2], m[3]]).count_ones() as u8;
        Ipv4Net::new(Ipv4Addr::new(a[0], a[1], a[2], a[3]), len)
            .ok()
            .map(IpNet::V4)
    }
}

/// The data-plane form of a rule (its bucket starts full).
pub fn to_rule(spec: &RuleSpec) -> Rule {
    let mut r = Rule {
        id: spec.id,
        dry_run: spec.dry_run as u32,
        ..Rule::default()
    };
    let mut m = 0;
    match spec.family {
        Some(Family::V4) => m |= match_bits::V4,
        Some(Family::V6) => m |= match_bits::V6,
        None => {}
    }
    if let Some(p) = spec.proto {
        m |= match_bits::PROTO;
        r.proto = p;
    }
    if let Some(net) = &spec.src {
        m |= match_bits::SRC;
        (r.src_addr, r.src_mask) = net_words(net);
    }
    if let Some(net) = &spec.dst {
        m |= match_bits::DST;
        (r.dst_addr, r.dst_mask) = net_words(net);
    }
    if let Some((lo, hi)) = spec.src_port {
        m |= match_bits::SPORT;
        (r.sport_lo, r.sport_hi) = (lo, hi);
    }
    if let Some((lo, hi)) = spec.dst_port {
        m |= match_bits::DPORT;
        (r.dport_lo, r.dport_hi) = (lo, hi);
    }
    if let Some(f) = spec.tcp_flags {
        m |= match_bits::TCP_FLAGS;
        (r.tcp_flags_value, r.tcp_flags_mask) = (f.value, f.mask);
    }
    if let Some((lo, hi)) = spec.length {
        m |= match_bits::LENGTH;
        (r.len_lo, r.len_hi) = (lo, hi);
    }
    if let Some((lo, hi)) = spec.ttl {
        m |= match_bits::TTL;
        (r.ttl_lo, r.ttl_hi) = (lo, hi);
    }
    if let Some(t) = spec.icmp_type {
        m |= match_bits::ICMP_TYPE;
        r.icmp_type = t;
    }
    if let Some(c) = spec.icmp_code {
        m |= match_bits::ICMP_CODE;
        r.icmp_code = c;
    }
    if let Some(f) = spec.fragment {
        m |= match_bits::FRAGMENT;
        r.fragment = f as u8;
    }
    r.matches = m;
    match spec.action {
        RuleAction::Drop => r.action = RULE_DROP,
        RuleAction::Pass => r.action = RULE_PASS,
        RuleAction::Limit(rate) => {
            r.action = RULE_LIMIT;
            r.rate = rate.into();
        }
    }
    r
}

/// Back from the data-plane form (the comment lives elsewhere).
pub fn from_rule(r: &Rule) -> RuleSpec {
    let m = r.matches;
    let has = |b: u32| m & b != 0;
    let family = if has(match_bits::V4) {
        Some(Family::V4)
    } else if has(match_bits::V6) {
        Some(Family::V6)
    } else {
        None
    };
    let v6 = family == Some(Family::V6);
    RuleSpec {
        id: r.id,
        family,
        proto: has(match_bits::PROTO).then_some(r.proto),
        src: has(match_bits::SRC)
            .then(|| words_net(r.src_addr, r.src_mask, v6))
            .flatten(),
        dst: has(match_bits::DST)
            .then(|| words_net(r.dst_addr, r.dst_mask, v6))
            .flatten(),
        src_port: has(match_bits::SPORT).then_some((r.sport_lo, r.sport_hi)),
        dst_port: has(match_bits::DPORT).then_some((r.dport_lo, r.dport_hi)),
        tcp_flags: has(match_bits::TCP_FLAGS).then_some(TcpFlags {
            value: r.tcp_flags_value,
            mask: r.tcp_flags_mask,
        }),
        length: has(match_bits::LENGTH).then_some((r.len_lo, r.len_hi)),
        ttl: has(match_bits::TTL).then_some((r.ttl_lo, r.ttl_hi)),
        icmp_type: has(match_bits::ICMP_TYPE).then_some(r.icmp_type),
        icmp_code: has(match_bits::ICMP_CODE).then_some(r.icmp_code),
        fragment: has(match_bits::FRAGMENT).then_some(r.fragment != 0),
        action: match r.action {
            RULE_PASS => RuleAction::Pass,
            RULE_LIMIT => RuleAction::Limit(RateSpec {
                pps: r.rate.pps,
                bps: r.rate.bps,
            }),
            _ => RuleAction::Drop,
        },
        dry_run: r.dry_run != 0,
        comment: None,
    }
}

fn agg_key_v4(class: u32, net: &Ipv4Net) -> Key<[u8; 5]> {
    let key = aggregate_key_v4(class as u8, net.network().octets());
    Key::new(AGGREGATE_CLASS_BITS + net.prefix_len() as u32, key)
}

fn agg_key_v6(class: u32, net: &Ipv6Net) -> Key<[u8; 17]> {
    let key = aggregate_key_v6(class as u8, net.network().octets());
    Key::new(AGGREGATE_CLASS_BITS + net.prefix_len() as u32, key)
}

impl Defences {
    pub fn take(ebpf: &mut Ebpf) -> Result<Defences> {
        Ok(Defences {
            config: take_map(ebpf, names::CONFIG)?,
            rules: take_map(ebpf, names::RULES)?,
            rule_stats: take_map(ebpf, names::RULE_STATS)?,
            ports: take_map(ebpf, names::PORT_FLAGS)?,
            exempt: PrefixSet::take(ebpf, names::REFLECT_EXEMPT_V4, names::REFLECT_EXEMPT_V6)?,
            synguard_dst: PrefixSet::take(ebpf, names::SYNGUARD_DST_V4, names::SYNGUARD_DST_V6)?,
            synguard_secret: take_map(ebpf, names::SYNGUARD_SECRET)?,
            agg_v4: take_map(ebpf, names::AGGREGATE_V4)?,
            agg_v6: take_map(ebpf, names::AGGREGATE_V6)?,
        })
    }

    /// The kernel's configuration record (the `CONFIG` map the data plane reads): not the
    /// operator's [`Settings`], nor the file they come from.
    pub fn kernel_config(&self) -> Result<Config> {
        self.config
            .get(&0, 0)
            .map_context(|| "reading CONFIG".into())
    }

    fn set_kernel_config(&mut self, cfg: &Config) -> Result<()> {
        self.config
            .set(0, cfg, 0)
            .map_context(|| "writing CONFIG".into())
    }

    /// Maps just created hold a zeroed CONFIG (every defence off): give them the defaults
    /// (sanity checks on) and the reflection preset's port set (the preset itself stays off).
    pub fn initialize(&mut self) -> Result<bool> {
        if self.kernel_config()?.magic == CONFIG_MAGIC {
            return Ok(false);
        }
        let defaults = Settings::default();
        // A fresh PORT_FLAGS is all zeros: no ports, no exemptions.
        let empty = Settings {
            reflection: Reflection {
                ports: Vec::new(),
                ..Reflection::default()
            },
            ..Settings::default()
        };
        self.write_ports(&empty, &defaults)?;
        self.set_kernel_config(&Config::initial())?;
        Ok(true)
    }

    fn live_rules(&self, cfg: &Config) -> Result<Vec<Rule>> {
        let base = (cfg.rule_bank & 1) * RULES_MAX;
        (0..cfg.rule_count.min(RULES_MAX))
            .map(|i| {
                self.rules
                    .get(&(base + i), 0)
                    .map_context(|| format!("reading rule slot {i}"))
            })
            .collect()
    }

    /// The running settings. Rule comments come from `comments` (kept with list metadata).
    pub fn read(&self, comments: &dyn Fn(u32) -> Option<String>) -> Result<Settings> {
        let cfg = self.kernel_config()?;
        let rules = self
            .live_rules(&cfg)?
            .iter()
            .map(|r| {
                let mut spec = from_rule(r);
                spec.comment = comments(r.id);
                spec
            })
            .collect();
        // 65,536 lookups: read once for both users of the table.
        let port_flags = self.port_flags()?;
        Ok(Settings {
            mode: if cfg.dry_run != 0 {
                DefenceMode::DryRun
            } else {
                DefenceMode::Enforce
            },
            sanity: Sanity {
                bits: cfg.sanity,
                fragment_min_bytes: cfg.fragment_min_bytes,
            },
            reflection: self.read_reflection(&cfg, &port_flags)?,
            rules,
            limits: self.read_limits(&cfg)?,
            synguard: self.read_synguard(&cfg, &port_flags)?,
        })
    }

    fn read_synguard(&self, cfg: &Config, port_flags: &[u32]) -> Result<Synguard> {
        let ports = port_flags
            .iter()
            .enumerate()
            .filter(|(_, f)| *f & port_bits::SYNGUARD != 0)
            .map(|(port, _)| port as u16)
            .collect();
        Ok(Synguard {
            enabled: cfg.synguard & synguard_bits::ON != 0,
            ports,
            dst: self.synguard_dst.read()?,
            when_over: (cfg.synguard_over_pps != 0).then_some(u64::from(cfg.synguard_over_pps)),
            completion: if cfg.synguard & synguard_bits::ASKED_KFUNC != 0 {
                SynguardCompletion::Kfunc
            } else if cfg.synguard & synguard_bits::ASKED_SYNPROXY != 0 {
                SynguardCompletion::Synproxy
            } else {
                SynguardCompletion::Auto
            },
        })
    }

    /// Does the SYN guard complete handshakes through netfilter SYNPROXY now (else the kfunc,
    /// or the guard is off)?
    pub fn synguard_synproxy(&self) -> Result<bool> {
        let cfg = self.kernel_config()?;
        Ok(cfg.synguard & synguard_bits::ON != 0 && cfg.synguard & synguard_bits::SYNPROXY != 0)
    }

    fn read_reflection(&self, cfg: &Config, port_flags: &[u32]) -> Result<Reflection> {
        let mut ports = Vec::new();
        let mut exempt_ports = Vec::new();
        for (port, &flags) in port_flags.iter().enumerate() {
            if flags & port_bits::AMPLIFIER != 0 {
                ports.push(port as u16);
            }
            if flags & port_bits::EXEMPT_DST != 0 {
                exempt_ports.push(port as u16);
            }
        }
        Ok(Reflection {
            enabled: cfg.reflection != 0,
            ports,
            exempt_ports,
            exempt_dst: self.exempt.read()?,
        })
    }

    fn port_flags(&self) -> Result<Vec<u32>> {
        (0..65536u32)
            .map(|p| {
                self.ports
                    .get(&p, 0)
                    .map_context(|| "reading PORT_FLAGS".into())
            })
            .collect()
    }

    /// The aggregate caps: (class, prefix) -> rate.
    fn aggregates(&self) -> Result<BTreeMap<(u32, IpNet), RateSpec>> {
        let mut out = BTreeMap::new();
        for kv in self.agg_v4.iter() {
            let (k, v) = kv.map_context(|| "reading AGGREGATE_V4".into())?;
            let d = k.data();
            if let Ok(n) = Ipv4Net::new(
                Ipv4Addr::new(d[1], d[2], d[3], d[4]),
                (k.prefix_len() - 8) as u8,
            ) {
                let rate = RateSpec {
                    pps: v.rate.pps,
                    bps: v.rate.bps,
                };
                out.insert((d[0] as u32, IpNet::V4(n)), rate);
            }
        }
        for kv in self.agg_v6.iter() {
            let (k, v) = kv.map_context(|| "reading AGGREGATE_V6".into())?;
            let d = k.data();
            let mut a = [0u8; 16];
            a.copy_from_slice(&d[1..]);
            if let Ok(n) = Ipv6Net::new(Ipv6Addr::from(a), (k.prefix_len() - 8) as u8) {
                let rate = RateSpec {
                    pps: v.rate.pps,
                    bps: v.rate.bps,
                };
                out.insert((d[0] as u32, IpNet::V6(n)), rate);
            }
        }
        Ok(out)
    }

    fn read_limits(&self, cfg: &Config) -> Result<BTreeMap<Class, LimitSpec>> {
        let aggs = self.aggregates()?;
        let mut out = BTreeMap::new();
        for class in CLASSES {
            let c = class as u32;
            if cfg.limit_classes & (1 << c) == 0 {
                continue;
            }
            let l = &cfg.limits[c as usize];
            let per_source = (!l.per_source.is_unlimited()).then_some(RateSpec {
                pps: l.per_source.pps,
                bps: l.per_source.bps,
            });
            let mine: Vec<(&IpNet, &RateSpec)> = aggs
                .iter()
                .filter(|((k, _), _)| *k == c)
                .map(|((_, n), r)| (n, r))
                .collect();
            out.insert(
                class,
                LimitSpec {
                    per_source,
                    source_prefix_v4: (l.v4_prefix != SOURCE_PREFIX_V4_DEFAULT)
                        .then_some(l.v4_prefix as u8),
                    source_prefix_v6: (l.v6_prefix != SOURCE_PREFIX_V6_DEFAULT)
                        .then_some(l.v6_prefix as u8),
                    aggregate: mine.first().map(|(_, r)| **r),
                    dst: mine.iter().map(|(n, _)| **n).collect(),
                    ban_after: (l.ban_after_ns != 0).then(|| Duration::from_nanos(l.ban_after_ns)),
                    ban_for: (l.ban_after_ns != 0).then(|| Duration::from_nanos(l.ban_for_ns)),
                },
            );
        }
        Ok(out)
    }

    /// Rules with their hit counters, in table order.
    pub fn rule_rows(&self, comments: &dyn Fn(u32) -> Option<String>) -> Result<Vec<RuleRow>> {
        let cfg = self.kernel_config()?;
        self.live_rules(&cfg)?
            .iter()
            .map(|r| {
                let mut spec = from_rule(r);
                spec.comment = comments(r.id);
                let hits = match self.rule_stats.get(&r.id, 0) {
                    Ok(per_cpu) => sum_cpus(&per_cpu),
                    Err(e) if not_found(&e) => Counter::default(),
                    Err(e) => return Err(e).map_context(|| format!("reading rule {} hits", r.id)),
                };
                Ok(RuleRow { spec, hits })
            })
            .collect()
    }

    /// Make the maps hold `s`. `old` is what [`Defences::read`] returned under the same lock:
    /// only what differs is written (the port table alone is 65,536 slots).
    pub fn write(&mut self, old_settings: &Settings, s: &Settings) -> Result<()> {
        let mut cfg = self.kernel_config()?;
        let was_synproxy =
            cfg.synguard & synguard_bits::ON != 0 && cfg.synguard & synguard_bits::SYNPROXY != 0;
        if s.rules.len() > RULES_MAX as usize {
            return Err(Error::TooManyRules {
                count: s.rules.len(),
                max: RULES_MAX,
            });
        }
        // Rules: fill the idle bank, keeping each surviving rule's bucket.
        let old: StdHashMap<u32, Rule> = self
            .live_rules(&cfg)?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let idle = (cfg.rule_bank & 1) ^ 1;
        for (i, spec) in s.rules.iter().enumerate() {
            let mut r = to_rule(spec);
            if let Some(o) = old.get(&spec.id) {
                if o.rate == r.rate {
                    r.bucket = o.bucket;
                }
            }
            self.rules
                .set(idle * RULES_MAX + i as u32, r, 0)
                .map_context(|| format!("writing rule {}", spec.id))?;
            if !old.contains_key(&spec.id) {
                let cpus = nr_cpus().map_err(|(_, source)| Error::Io {
                    context: "counting CPUs for rule counters".into(),
                    source,
                })?;
                let zero =
                    PerCpuValues::try_from(vec![Counter::default(); cpus]).map_err(|source| {
                        Error::Io {
                            context: "sizing rule counters".into(),
                            source,
                        }
                    })?;
                self.rule_stats
                    .insert(spec.id, zero, 0)
                    .map_context(|| format!("creating counters of rule {}", spec.id))?;
            }
        }
        self.write_ports(old_settings, s)?;
        self.exempt.write(
            &old_settings.reflection.exempt_dst,
            &s.reflection.exempt_dst,
            "the reflection preset's exempt destinations",
        )?;
        self.synguard_dst.write(
            &old_settings.synguard.dst,
            &s.synguard.dst,
            "the SYN guard's destinations",
        )?;
        // The completion path is chosen when the guard goes on or its choice changes.
        let mut synproxy = false;
        if s.synguard.enabled {
            let old = &old_settings.synguard;
            synproxy = if old.enabled && old.completion == s.synguard.completion {
                was_synproxy
            } else {
                choose_completion(s.synguard.completion)?
            };
            self.ensure_synguard_secret()?;
            // netfilter is ready before the first SYN-ACK carries the kernel's cookie.
            if synproxy && (!was_synproxy || *old != s.synguard) {
                synproxy::install(&s.synguard)?;
            }
        }
        self.write_aggregates(&s.limits)?;

        cfg.magic = CONFIG_MAGIC;
        cfg.dry_run = u32::from(s.mode == DefenceMode::DryRun);
        cfg.sanity = s.sanity.bits;
        cfg.fragment_min_bytes = s.sanity.fragment_min_bytes;
        cfg.reflection = s.reflection.enabled as u32;
        cfg.rule_bank = idle;
        cfg.rule_count = s.rules.len() as u32;
        let g = &s.synguard;
        // Off is 0, whatever else is kept: the data plane reads "0 = off".
        cfg.synguard = 0;
        if g.enabled {
            cfg.synguard = synguard_bits::ON;
            if !g.dst.is_empty() {
                cfg.synguard |= synguard_bits::DST;
            }
            if g.when_over.is_some() {
                cfg.synguard |= synguard_bits::WHEN_OVER;
            }
            if synproxy {
                cfg.synguard |= synguard_bits::SYNPROXY;
            }
            cfg.synguard |= match g.completion {
                SynguardCompletion::Auto => 0,
                SynguardCompletion::Kfunc => synguard_bits::ASKED_KFUNC,
                SynguardCompletion::Synproxy => synguard_bits::ASKED_SYNPROXY,
            };
        }
        // Kept while the guard is off, so that `read` gives back what was set (0 = none).
        cfg.synguard_over_pps = g
            .when_over
            .map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX));
        cfg.limit_classes = 0;
        for class in CLASSES {
            let c = class as usize;
            cfg.limits[c] = ClassLimit {
                v4_prefix: SOURCE_PREFIX_V4_DEFAULT,
                v6_prefix: SOURCE_PREFIX_V6_DEFAULT,
                ..ClassLimit::default()
            };
            if let Some(l) = s.limits.get(&class) {
                cfg.limit_classes |= 1 << c;
                cfg.limits[c] = ClassLimit {
                    per_source: l.per_source.map(Rate::from).unwrap_or_default(),
                    ban_after_ns: l.ban_after.map_or(0, ns),
                    ban_for_ns: l.ban_for.map_or(0, ns),
                    v4_prefix: l
                        .source_prefix_v4
                        .map_or(SOURCE_PREFIX_V4_DEFAULT, u32::from),
                    v6_prefix: l
                        .source_prefix_v6
                        .map_or(SOURCE_PREFIX_V6_DEFAULT, u32::from),
                    has_aggregate: l.aggregate.is_some() as u32,
                    _pad: 0,
                };
            }
        }
        self.set_kernel_config(&cfg)?;
        // Once the data plane no longer sends the kernel's cookies.
        if was_synproxy && !synproxy {
            synproxy::remove()?;
        }

        // Counters of rules that are gone.
        let kept: BTreeSet<u32> = s.rules.iter().map(|r| r.id).collect();
        for id in old.keys().filter(|id| !kept.contains(id)) {
            let _ = self.rule_stats.remove(id);
        }
        Ok(())
    }

    /// The cookies' key: random, made the first time the guard is turned on, then kept (also
    /// across off and on), so that a cookie sent before a change still checks after it.
    fn ensure_synguard_secret(&mut self) -> Result<()> {
        let have = self
            .synguard_secret
            .get(&0, 0)
            .map_context(|| "reading SYNGUARD_SECRET".into())?;
        if have != SynguardSecret::default() {
            return Ok(());
        }
        let mut bytes = [0u8; 16];
        crate::sys::random(&mut bytes).map_err(|source| Error::Io {
            context: "making the SYN cookie key (getrandom)".into(),
            source,
        })?;
        let (k0, k1) = bytes.split_at(8);
        let key = SynguardSecret {
            key: [
                u64::from_ne_bytes(k0.try_into().expect("8 bytes")),
                u64::from_ne_bytes(k1.try_into().expect("8 bytes")),
            ],
        };
        self.synguard_secret
            .set(0, key, 0)
            .map_context(|| "writing SYNGUARD_SECRET".into())
    }

    /// PORT_FLAGS holds the bits of two defences (the reflection preset's, the SYN guard's):
    /// each port's word is made from both, and only words that change are written.
    fn write_ports(&mut self, old: &Settings, new: &Settings) -> Result<()> {
        let flags = |s: &Settings| {
            let mut f: BTreeMap<u16, u32> = BTreeMap::new();
            for p in &s.reflection.ports {
                *f.entry(*p).or_default() |= port_bits::AMPLIFIER;
            }
            for p in &s.reflection.exempt_ports {
                *f.entry(*p).or_default() |= port_bits::EXEMPT_DST;
            }
            for p in &s.synguard.ports {
                *f.entry(*p).or_default() |= port_bits::SYNGUARD;
            }
            f
        };
        let (have, want) = (flags(old), flags(new));
        let touched: BTreeSet<u16> = have.keys().chain(want.keys()).copied().collect();
        for port in touched {
            let w = want.get(&port).copied().unwrap_or(0);
            if have.get(&port).copied().unwrap_or(0) != w {
                self.ports
                    .set(u32::from(port), w, 0)
                    .map_context(|| format!("writing PORT_FLAGS[{port}]"))?;
            }
        }
        Ok(())
    }

    fn write_aggregates(&mut self, limits: &BTreeMap<Class, LimitSpec>) -> Result<()> {
        let have = self.aggregates()?;
        let mut want = BTreeMap::new();
        for (class, l) in limits {
            if let Some(rate) = l.aggregate {
                for net in &l.dst {
                    want.insert((*class as u32, *net), rate);
                }
            }
        }
        for ((class, net), rate) in &want {
            if have.get(&(*class, *net)) == Some(rate) {
                continue; // unchanged: keep its bucket
            }
            let value = Aggregate {
                rate: (*rate).into(),
                ..Aggregate::default()
            };
            let r = match net {
                IpNet::V4(n) => self.agg_v4.insert(&agg_key_v4(*class, n), value, 0),
                IpNet::V6(n) => self.agg_v6.insert(&agg_key_v6(*class, n), value, 0),
            };
            r.map_context(|| format!("writing the aggregate cap for {net}"))?;
        }
        for (class, net) in have.keys().filter(|k| !want.contains_key(k)) {
            let _ = match net {
                IpNet::V4(n) => self.agg_v4.remove(&agg_key_v4(*class, n)),
                IpNet::V6(n) => self.agg_v6.remove(&agg_key_v6(*class, n)),
            };
        }
        Ok(())
    }
}
