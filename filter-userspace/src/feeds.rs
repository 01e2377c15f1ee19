//! Feeds: who put a list entry there. Every entry carries a feed id (`ListEntry::feed`); the
//! names live in the pinned `FEED_NAMES` array, so the CLI, the daemon and its API agree on
//! them with no process running, and the data plane counts blocklist drops per feed in
//! `FEED_DROPS`. The API and the metrics call a feed the entry's "source".
//!
//! Three ids are fixed: `cli` (the CLI without `--source`), `auto` (auto-bans written by the
//! data plane) and `config` (the `[lists]` section of the configuration file). Named feeds get
//! the next free id the first time they add an entry, and keep it: their drop counter must not
//! pass to another feed.

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray},
};
use filter_common::{
    Counter, FEED_AUTO, FEED_CLI, FEED_CONFIG, FEED_NAME_MAX, FEED_RETIRED, FEEDS_FIXED, FEEDS_MAX,
    FeedName, map_names as names,
};

use crate::{
    error::{Error, MapContext, Result},
    lists::take_map,
};

/// The fixed feeds, by id.
const FIXED: [(u32, &str); 4] = [
    (FEED_CLI, "cli"),
    (FEED_AUTO, "auto"),
    (FEED_CONFIG, "config"),
    (FEED_RETIRED, "retired"),
];

/// Is `name` a usable feed name? 1 to 32 bytes of letters, digits, `.`, `_`, `-`, starting
/// with a letter or digit (it ends up in Prometheus labels and file names).
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= FEED_NAME_MAX
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
        Err(Error::BadFeedName {
            name: name.to_string(),
            max: FEED_NAME_MAX,
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
    Err(Error::ReservedFeed {
        name: name.to_string(),
        owner,
    })
}

/// The feed registry and the per-feed drop counters.
pub struct Feeds {
    names: Array<MapData, FeedName>,
    drops: PerCpuArray<MapData, Counter>,
}

impl Feeds {
    pub fn take(ebpf: &mut Ebpf) -> Result<Feeds> {
        Ok(Feeds {
            names: take_map(ebpf, names::FEED_NAMES)?,
            drops: take_map(ebpf, names::FEED_DROPS)?,
        })
    }

    /// Every feed with a name, by id (the fixed ones included).
    pub fn all(&self) -> Result<Vec<(u32, String)>> {
        let mut out: Vec<(u32, String)> = FIXED.iter().map(|(i, n)| (*i, n.to_string())).collect();
        for id in FEEDS_FIXED..FEEDS_MAX {
            let v = self
                .names
                .get(&id, 0)
                .map_context(|| format!("reading feed name {id}"))?;
            if v.len > 0 {
                out.push((id, decode(&v)));
            }
        }
        Ok(out)
    }

    /// Every feed's name, read once: callers naming many entries look them up here rather
    /// than reading the map once per entry.
    pub fn names(&self) -> Result<FeedNames> {
        Ok(FeedNames(self.all()?.into_iter().collect()))
    }

    /// The id of feed `name`, if it has one.
    pub fn id(&self, name: &str) -> Result<Option<u32>> {
        Ok(self
            .all()?
            .into_iter()
            .find(|(_, n)| n == name)
            .map(|(i, _)| i))
    }

    /// The id of feed `name`, registering it if new. Call with the state lock held.
    pub fn id_or_register(&mut self, name: &str) -> Result<u32> {
        validate_name(name)?;
        let all = self.all()?;
        if let Some((id, _)) = all.iter().find(|(_, n)| n == name) {
            return Ok(*id);
        }
        let id = (FEEDS_FIXED..FEEDS_MAX)
            .find(|i| !all.iter().any(|(j, _)| j == i))
            .ok_or(Error::TooManyFeeds {
                max: FEEDS_MAX - FEEDS_FIXED,
            })?;
        let mut v = FeedName {
            len: name.len() as u32,
            ..FeedName::default()
        };
        v.name[..name.len()].copy_from_slice(name.as_bytes());
        self.names
            .set(id, v, 0)
            .map_context(|| format!("registering feed {name}"))?;
        Ok(id)
    }

    /// Free named feed `id` (it has no entries left): its blocklist drops are added to
    /// `retired`, its counter is zeroed and its name cleared, so the id can serve a new feed.
    /// Call with the state lock held.
    pub fn free(&mut self, id: u32) -> Result<()> {
        if !(FEEDS_FIXED..FEEDS_MAX).contains(&id) {
            return Ok(());
        }
        let what = || format!("freeing source id {id}");
        let gone = self.drops.get(&id, 0).map_context(what)?;
        let kept = self.drops.get(&FEED_RETIRED, 0).map_context(what)?;
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
            .set(FEED_RETIRED, values(sum)?, 0)
            .map_context(what)?;
        self.drops.set(id, values(zero)?, 0).map_context(what)?;
        self.names
            .set(id, FeedName::default(), 0)
            .map_context(what)?;
        Ok(())
    }

    /// Enforced blocklist drops of feed `id`, summed over CPUs.
    pub fn drops(&self, id: u32) -> Result<Counter> {
        let per_cpu = self
            .drops
            .get(&id, 0)
            .map_context(|| format!("reading drops of feed {id}"))?;
        Ok(crate::stats::sum_cpus(&per_cpu))
    }
}

/// Feed names by id ([`Feeds::names`]).
pub struct FeedNames(std::collections::HashMap<u32, String>);

impl FeedNames {
    /// The name of feed `id` (`feed-N` for an id with no name, which only a damaged map has).
    pub fn get(&self, id: u32) -> String {
        self.0
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("feed-{id}"))
    }
}

fn decode(v: &FeedName) -> String {
    let len = (v.len as usize).min(FEED_NAME_MAX);
    String::from_utf8_lossy(&v.name[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn feed_names() {
        for good in ["spamhaus-drop", "feed.1", "A_b", "x", &"a".repeat(32)] {
            assert!(validate_name(good).is_ok(), "{good} should be accepted");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "é", &"a".repeat(33), "a{b}"] {
            assert!(validate_name(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
