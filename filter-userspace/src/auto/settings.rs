//! `[auto]` in the configuration file: the mode, the host groups with their thresholds, and
//! the knobs of detection and lifting. Parsed and checked here (errors name the field the way
//! the file spells it); the daemon runs what it says.

use std::{path::PathBuf, time::Duration};

use filter_common::{AUTO_CLASS_COUNT, AUTO_CLASSES, AutoClass, auto_mode};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    config::Prefix,
    settings::{Invalid, RateSpec},
};

/// Rule ids from here on are automatic rules (origin `auto`): the operator's rules are
/// numbered below, so a rule's origin is never ambiguous and survives any restart.
pub const AUTO_RULE_ID_MIN: u32 = 1_000_000;

/// Was the rule numbered `id` installed by automatic mitigation?
pub fn is_auto_rule(id: u32) -> bool {
    id >= AUTO_RULE_ID_MIN
}

/// `[auto]` as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AutoFile {
    /// off, shadow (install dry-run rules: count what they would drop) or enforce.
    pub mode: String,
    /// The share of the attack a fingerprint must match (0.5-1).
    pub coverage: f64,
    /// The largest share of the baseline (traffic before the attack) it may match (0-0.5).
    pub max_collateral: f64,
    /// A mitigation is lifted once what it matches stayed under the threshold this long.
    #[serde(with = "crate::config::humantime_serde_compat")]
    pub lift_after: Duration,
    /// An automatic rule is lifted after this long whatever it still matches (a rule outliving
    /// a daemon that died is lifted by the next start).
    #[serde(with = "crate::config::humantime_serde_compat")]
    pub rule_ttl: Duration,
    /// Most automatic rules at once (the rule table holds 64 in all).
    pub max_rules: u32,
    /// Samples per second the detector asks for (the 1-in-N rate follows the traffic).
    pub samples_per_second: u32,
    /// Audit log: one JSON object per line per event; "" = the daemon's log only.
    pub audit_log: PathBuf,
    /// `[[auto.groups]]`.
    pub groups: Vec<GroupFile>,
}

impl Default for AutoFile {
    fn default() -> Self {
        AutoFile {
            mode: "shadow".into(),
            coverage: 0.95,
            max_collateral: 0.001,
            lift_after: Duration::from_secs(30),
            rule_ttl: Duration::from_secs(3600),
            max_rules: 16,
            samples_per_second: 20_000,
            audit_log: PathBuf::new(),
            groups: Vec::new(),
        }
    }
}

/// `[[auto.groups]]` as written: thresholds per class as rates (`PPS[/BPS]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    pub name: String,
    pub prefixes: Vec<Prefix>,
    /// Class name (total, syn, udp, icmp, fragments) to rate, e.g. { udp = "50k/400M" }.
    pub thresholds: std::collections::BTreeMap<String, String>,
}

/// `[auto]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoConfig {
    pub mode: u32,
    pub coverage: f64,
    pub max_collateral: f64,
    pub lift_after: Duration,
    pub rule_ttl: Duration,
    pub max_rules: u32,
    pub samples_per_second: u32,
    pub audit_log: Option<PathBuf>,
    pub groups: Vec<Group>,
}

impl Default for AutoConfig {
    /// No `[auto]` section: nothing is watched.
    fn default() -> Self {
        let mut c = AutoFile::default().check().expect("the defaults are valid");
        c.mode = auto_mode::OFF;
        c
    }
}

/// A host group: destinations watched one by one against the group's thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub prefixes: Vec<IpNet>,
    /// Per [`AutoClass`]; None: that class is not watched.
    pub thresholds: [Option<RateSpec>; AUTO_CLASS_COUNT],
}

impl Group {
    pub fn threshold(&self, class: AutoClass) -> Option<RateSpec> {
        self.thresholds[class as usize]
    }
}

fn bad<T>(msg: String) -> Result<T, Invalid> {
    Err(Invalid(msg))
}

impl AutoFile {
    /// Check every field; errors name it as the file does (`auto.groups[1].thresholds.udp`).
    pub fn check(&self) -> Result<AutoConfig, Invalid> {
        let Some(mode) = auto_mode::from_name(&self.mode) else {
            return bad(format!(
                "auto.mode: `{}` is not a mode (off, shadow, enforce)",
                crate::entry::quote(&self.mode)
            ));
        };
        if !(0.5..=1.0).contains(&self.coverage) {
            return bad(format!(
                "auto.coverage: {} is outside 0.5-1 (the share of an attack a rule must match)",
                self.coverage
            ));
        }
        if !(0.0..=0.5).contains(&self.max_collateral) {
            return bad(format!(
                "auto.max_collateral: {} is outside 0-0.5 (the share of normal traffic a rule may match)",
                self.max_collateral
            ));
        }
        if self.lift_after < Duration::from_secs(1) {
            return bad("auto.lift_after: at least 1s".into());
        }
        if self.rule_ttl < self.lift_after {
            return bad("auto.rule_ttl: must be at least auto.lift_after".into());
        }
        if self.max_rules == 0 || self.max_rules > filter_common::RULES_MAX {
            return bad(format!(
                "auto.max_rules: {} is outside 1-{}",
                self.max_rules,
                filter_common::RULES_MAX
            ));
        }
        if self.samples_per_second == 0 {
            return bad("auto.samples_per_second: must be more than 0".into());
        }
        let mut groups = Vec::new();
        for (i, g) in self.groups.iter().enumerate() {
            let at = format!("auto.groups[{i}]");
            let name_ok = !g.name.is_empty()
                && g.name.len() <= 64
                && g.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !name_ok {
                return bad(format!(
                    "{at}.name: `{}`: 1-64 letters, digits, `-`, `_` or `.`",
                    crate::entry::quote(&g.name)
                ));
            }
            if self.groups[..i].iter().any(|o| o.name == g.name) {
                return bad(format!(
                    "{at}.name: `{}` is used by an earlier group",
                    g.name
                ));
            }
            if g.prefixes.is_empty() {
                return bad(format!(
                    "{at}.prefixes: give the destinations to watch, e.g. [\"198.18.0.0/24\"]"
                ));
            }
            let mut thresholds = [None; AUTO_CLASS_COUNT];
            for (class, rate) in &g.thresholds {
                let Some(c) = AutoClass::from_name(class) else {
                    return bad(format!(
                        "{at}.thresholds: `{}` is not a class (total, syn, udp, icmp, fragments)",
                        crate::entry::quote(class)
                    ));
                };
                let r: RateSpec = rate
                    .parse()
                    .map_err(|e: Invalid| Invalid(format!("{at}.thresholds.{class}: {}", e.0)))?;
                thresholds[c as usize] = Some(r);
            }
            if thresholds.iter().all(Option::is_none) {
                return bad(format!(
                    "{at}.thresholds: give at least one, e.g. {{ total = \"100k/1G\", udp = \"50k\" }}"
                ));
            }
            groups.push(Group {
                name: g.name.clone(),
                prefixes: g.prefixes.iter().map(|p| p.0.trunc()).collect(),
                thresholds,
            });
        }
        let mut prefixes: Vec<IpNet> = groups.iter().flat_map(|g| g.prefixes.clone()).collect();
        prefixes.sort();
        if let Some(w) = prefixes.windows(2).find(|w| w[0] == w[1]) {
            return bad(format!(
                "auto.groups: {} is in two groups (a destination belongs to one)",
                w[0]
            ));
        }
        if groups.len() > filter_common::AUTO_GROUPS_MAX as usize {
            return bad(format!(
                "auto.groups: {} groups; at most {}",
                groups.len(),
                filter_common::AUTO_GROUPS_MAX
            ));
        }
        Ok(AutoConfig {
            mode,
            coverage: self.coverage,
            max_collateral: self.max_collateral,
            lift_after: self.lift_after,
            rule_ttl: self.rule_ttl,
            max_rules: self.max_rules,
            samples_per_second: self.samples_per_second,
            audit_log: (!self.audit_log.as_os_str().is_empty()).then(|| self.audit_log.clone()),
            groups,
        })
    }
}

impl AutoConfig {
    /// The group a destination belongs to: the one with the longest prefix holding it.
    pub fn group_of(&self, dst: std::net::IpAddr) -> Option<(usize, &Group)> {
        self.groups
            .iter()
            .enumerate()
            .flat_map(|(i, g)| g.prefixes.iter().map(move |p| (i, g, p)))
            .filter(|(_, _, p)| p.contains(&dst))
            .max_by_key(|(_, _, p)| p.prefix_len())
            .map(|(i, g, _)| (i, g))
    }

    /// The group tries' content: every prefix with its group's index.
    pub fn prefixes(&self) -> Vec<(IpNet, u32)> {
        self.groups
            .iter()
            .enumerate()
            .flat_map(|(i, g)| g.prefixes.iter().map(move |p| (*p, i as u32)))
            .collect()
    }
}

/// Every class with a threshold in some group (for help and status).
pub fn class_names() -> Vec<&'static str> {
    AUTO_CLASSES.iter().map(|c| c.name()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AutoConfig, String> {
        #[derive(Deserialize)]
        struct F {
            auto: AutoFile,
        }
        let f: F = toml::from_str(text).map_err(|e| e.to_string())?;
        f.auto.check().map_err(|e| e.0)
    }

    #[test]
    fn a_group_with_thresholds_parses() {
        let c = parse(
            "[auto]\nmode = \"enforce\"\nlift_after = \"10s\"\n\
             [[auto.groups]]\nname = \"web\"\nprefixes = [\"198.18.0.0/24\", \"2001:db8::/64\"]\n\
             thresholds = { total = \"100k/1G\", udp = \"20k\" }\n",
        )
        .unwrap();
        assert_eq!(c.mode, auto_mode::ENFORCE);
        assert_eq!(c.lift_after, Duration::from_secs(10));
        let g = &c.groups[0];
        assert_eq!(
            g.threshold(AutoClass::Total),
            Some(RateSpec {
                pps: 100_000,
                bps: 1_000_000_000
            })
        );
        assert_eq!(g.threshold(AutoClass::Syn), None);
        assert_eq!(
            c.group_of("198.18.0.10".parse().unwrap()).map(|(i, _)| i),
            Some(0)
        );
        assert!(c.group_of("198.18.1.10".parse().unwrap()).is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[auto]\nmode = \"on\"\n", "auto.mode"),
            ("[auto]\ncoverage = 0.2\n", "auto.coverage"),
            (
                "[[auto.groups]]\nname = \"a\"\nprefixes = [\"198.18.0.0/24\"]\nthresholds = { tcp = \"1k\" }\n",
                "auto.groups[0].thresholds: `tcp`",
            ),
            (
                "[[auto.groups]]\nname = \"a\"\nprefixes = [\"198.18.0.0/24\"]\nthresholds = { udp = \"lots\" }\n",
                "auto.groups[0].thresholds.udp",
            ),
            (
                "[[auto.groups]]\nname = \"a\"\nprefixes = []\nthresholds = { udp = \"1k\" }\n",
                "auto.groups[0].prefixes",
            ),
            (
                "[[auto.groups]]\nname = \"a\"\nprefixes = [\"198.18.0.0/24\"]\nthresholds = {}\n",
                "auto.groups[0].thresholds: give",
            ),
            (
                "[[auto.groups]]\nname = \"a\"\nprefixes = [\"198.18.0.0/24\"]\nthresholds = { udp = \"1k\" }\n\
                 [[auto.groups]]\nname = \"b\"\nprefixes = [\"198.18.0.0/24\"]\nthresholds = { udp = \"1k\" }\n",
                "in two groups",
            ),
        ];
        for (text, want) in cases {
            match parse(text) {
                Ok(c) => panic!("{text:?} parsed: {c:?}"),
                Err(e) => assert!(e.contains(want), "{text:?}: {e} (wanted {want})"),
            }
        }
    }
}
