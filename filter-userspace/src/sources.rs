//! List sources: who put a list entry there (not a packet's source address). Every entry
//! carries a source id (`ListEntry::source`); the names live in the pinned `SOURCE_NAMES` array,
//! so the CLI, the daemon and its API agree on them with no process running, and the data plane
//! counts blocklist drops per source in `SOURCE_DROPS`.
//!
//! Four ids are fixed: `cli` (the CLI without `--source`), `auto` (auto-bans written by the
//! data plane), `config` (the `[lists]` section of the configuration file) and `retired` (the
//! drops of freed sources). Named sources
//! get the next free id the first time they add an entry, and keep it: their drop counter must
//! not pass to another source.

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray},
};
use filter_common::{
    Counter, SOURCE_AUTO, SOURCE_CLI, SOURCE_CONFIG, SOURCE_NAME_MAX, SOURCE_RETIRED,
    SOURCES_FIXED, SOURCES_MAX, SourceName, map_names as names,
};

use crate::{
    error::{Error, MapContext, Result},
    maps::{sum_cpus, take_map},
};

/// The fixed sources, by id.
const FIXED: [(u32, &str); 4] = [
    (SOURCE_CLI, "cli"),
    (SOURCE_AUTO, "auto"),
    (SOURCE_CONFIG, "config"),
    (SOURCE_RETIRED, "retired"),
];

/// Is `name` a usable source name? 1 to 32 bytes of letters, digits, `.`, `_`, `-`, starting
/// with a letter or digit (it ends up in Prometheus labels and file names).
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= SOURCE_NAME_MAX
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadSourceName {
            name: crate::entry::quote(name),
            max: SOURCE_NAME_MAX,
        })
    }
}

/// Refuse the names of the sources only floodgate itself writes: `auto` (the data plane's
/// auto-bans) and `config` (the configuration file's `[lists]`).
pub fn check_not_reserved(name: &str) -> Result<()> {
    let owner = match name {
        "auto" => "the data plane's auto-bans",
        "retired" => "the drop counts of sources that were freed",
        "config" => "the configuration file's [lists] (change the file instead)",
        _ => return Ok(()),
    };
    Err(Error::ReservedSource {
        name: name.to_string(),
        owner,
    })
}

/// The source registry and the per-source drop counters.
pub struct Sources {
    names: Array<MapData, SourceName>,
    drops: PerCpuArray<MapData, Counter>,
}

impl Sources {
    pub fn take(ebpf: &mut Ebpf) -> Result<Sources> {
        Ok(Sources {
            names: take_map(ebpf, names::SOURCE_NAMES)?,
            drops: take_map(ebpf, names::SOURCE_DROPS)?,
        })
    }

    /// Every source with a name, by id (the fixed ones included).
    pub fn all(&self) -> Result<Vec<(u32, String)>> {
        let mut out: Vec<(u32, String)> = FIXED.iter().map(|(i, n)| (*i, n.to_string())).collect();
        for id in SOURCES_FIXED..SOURCES_MAX {
            let v = self
                .names
                .get(&id, 0)
                .map_context(|| format!("reading source name {id}"))?;
            if v.len > 0 {
                out.push((id, decode(&v)));
            }
        }
        Ok(out)
    }

    /// Every source's name, read once: callers naming many entries look them up here rather
    /// than reading the map once per entry.
    pub fn names(&self) -> Result<SourceNames> {
        Ok(SourceNames(self.all()?.into_iter().collect()))
    }

    /// The id of source `name`, if it has one.
    pub fn id(&self, name: &str) -> Result<Option<u32>> {
        Ok(self
            .all()?
            .into_iter()
            .find(|(_, n)| n == name)
            .map(|(i, _)| i))
    }

    /// The id of source `name`, registering it if new. Call with the state lock held.
    pub fn id_or_register(&mut self, name: &str) -> Result<u32> {
        validate_name(name)?;
        let all = self.all()?;
        if let Some((id, _)) = all.iter().find(|(_, n)| n == name) {
            return Ok(*id);
        }
        let id = (SOURCES_FIXED..SOURCES_MAX)
            .find(|i| !all.iter().any(|(j, _)| j == i))
            .ok_or(Error::TooManySources {
                max: SOURCES_MAX - SOURCES_FIXED,
            })?;
        let mut v = SourceName {
            len: name.len() as u32,
            ..SourceName::default()
        };
        v.name[..name.len()].copy_from_slice(name.as_bytes());
        self.names
            .set(id, v, 0)
            .map_context(|| format!("registering source {name}"))?;
        Ok(id)
    }

    /// Free named source `id` (it has no entries left): its blocklist drops are added to
    /// `retired`, its counter is zeroed and its name cleared, so the id can serve a new source.
    /// Call with the state lock held.
    pub fn free(&mut self, id: u32) -> Result<()> {
        if !(SOURCES_FIXED..SOURCES_MAX).contains(&id) {
            return Ok(());
        }
        let what = || format!("freeing source id {id}");
        let gone = self.drops.get(&id, 0).map_context(what)?;
        let kept = self.drops.get(&SOURCE_RETIRED, 0).map_context(what)?;
        let sum: Vec<Counter> = kept
            .iter()
            .zip(gone.iter())
            .map(|(k, g)| Counter {
                packets: k.packets + g.packets,
                bytes: k.bytes + g.bytes,
            })
            .collect();
        let zero = vec![Counter::default(); sum.len()];
        let values = |v: Vec<Counter>| {
            aya::maps::PerCpuValues::try_from(v).map_err(|source| crate::error::Error::Io {
                context: what(),
                source,
            })
        };
        self.drops
            .set(SOURCE_RETIRED, values(sum)?, 0)
            .map_context(what)?;
        self.drops.set(id, values(zero)?, 0).map_context(what)?;
        self.names
            .set(id, SourceName::default(), 0)
            .map_context(what)?;
        Ok(())
    }

    /// Enforced blocklist drops of source `id`, summed over CPUs.
    pub fn drops(&self, id: u32) -> Result<Counter> {
        let per_cpu = self
            .drops
            .get(&id, 0)
            .map_context(|| format!("reading drops of source {id}"))?;
        Ok(sum_cpus(&per_cpu))
    }
}

/// Source names by id ([`Sources::names`]).
pub struct SourceNames(std::collections::HashMap<u32, String>);

impl SourceNames {
    /// The name of source `id` (`source-N` for an id with no name, which only a damaged map has).
    pub fn get(&self, id: u32) -> String {
        self.0
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("source-{id}"))
    }
}

fn decode(v: &SourceName) -> String {
    let len = (v.len as usize).min(SOURCE_NAME_MAX);
    String::from_utf8_lossy(&v.name[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn source_names() {
        for good in ["spamhaus-drop", "feed.1", "A_b", "x", &"a".repeat(32)] {
            assert!(validate_name(good).is_ok(), "{good} should be accepted");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "é", &"a".repeat(33), "a{b}"] {
            assert!(validate_name(bad).is_err(), "{bad:?} should be refused");
        }
        // Quoted short and escaped: a pushed name can be megabytes of anything.
        let e = validate_name(&format!("\u{1b}[2J{}", "x".repeat(1 << 20)))
            .expect_err("too long")
            .to_string();
        assert!(e.len() < 300 && !e.contains('\u{1b}'), "{e}");
    }
}
