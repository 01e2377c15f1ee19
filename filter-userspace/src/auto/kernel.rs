//! Automatic mitigation's maps: the mode and sampling rate in `CONFIG`, the host groups'
//! prefix tries, the per-destination counters (`AUTO_DST`) and the arrival samples.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{Array, LpmTrie, Map, MapData, PerCpuArray, PerCpuHashMap, lpm_trie::Key};
use filter_common::{AUTO_CLASS_COUNT, AutoCounters, AutoKey, Config, Counter, map_names as names};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::{
    capture::{Reader, Record, map_err, pinned},
    error::Result,
    loader::PinDir,
};

pub struct AutoMaps {
    config: Array<MapData, Config>,
    groups_v4: LpmTrie<MapData, [u8; 4], u32>,
    groups_v6: LpmTrie<MapData, [u8; 16], u32>,
    dst: PerCpuHashMap<MapData, AutoKey, AutoCounters>,
    lost: PerCpuArray<MapData, u64>,
}

impl AutoMaps {
    /// The pinned maps under `pin` (there once anything was attached or added).
    pub fn open(pin: &PinDir) -> Result<AutoMaps> {
        Ok(AutoMaps {
            config: Array::try_from(Map::Array(pinned(pin, names::CONFIG)?))
                .map_err(map_err("opening CONFIG"))?,
            groups_v4: LpmTrie::try_from(Map::LpmTrie(pinned(pin, names::AUTO_GROUPS_V4)?))
                .map_err(map_err("opening AUTO_GROUPS_V4"))?,
            groups_v6: LpmTrie::try_from(Map::LpmTrie(pinned(pin, names::AUTO_GROUPS_V6)?))
                .map_err(map_err("opening AUTO_GROUPS_V6"))?,
            dst: PerCpuHashMap::try_from(Map::PerCpuLruHashMap(pinned(pin, names::AUTO_DST)?))
                .map_err(map_err("opening AUTO_DST"))?,
            lost: PerCpuArray::try_from(Map::PerCpuArray(pinned(pin, names::AUTO_LOST)?))
                .map_err(map_err("opening AUTO_LOST"))?,
        })
    }

    fn config(&self) -> Result<Config> {
        self.config.get(&0, 0).map_err(map_err("reading CONFIG"))
    }

    fn update(&mut self, change: impl FnOnce(&mut Config)) -> Result<()> {
        let mut cfg = self.config()?;
        change(&mut cfg);
        self.config
            .set(0, cfg, 0)
            .map_err(map_err("writing CONFIG"))
    }

    /// The mode (a `filter_common::auto_mode` value).
    pub fn mode(&self) -> Result<u32> {
        Ok(self.config()?.auto)
    }

    /// Set the mode; the caller holds the state lock.
    pub fn set_mode(&mut self, mode: u32) -> Result<()> {
        self.update(|c| c.auto = mode)
    }

    /// 1 in `one_in` packets to the groups' destinations sampled; 0: none.
    pub fn set_sample(&mut self, one_in: u32) -> Result<()> {
        self.update(|c| c.auto_sample = one_in)
    }

    /// Make the group tries exactly `prefixes` (new ones in before old ones leave).
    pub fn set_groups(&mut self, prefixes: &[(IpNet, u32)]) -> Result<()> {
        let have = self.groups()?;
        for (net, g) in prefixes {
            match net {
                IpNet::V4(n) => self.groups_v4.insert(
                    &Key::new(n.prefix_len() as u32, n.network().octets()),
                    g,
                    0,
                ),
                IpNet::V6(n) => self.groups_v6.insert(
                    &Key::new(n.prefix_len() as u32, n.network().octets()),
                    g,
                    0,
                ),
            }
            .map_err(map_err("writing a host group prefix"))?;
        }
        for (net, _) in have
            .iter()
            .filter(|(n, _)| !prefixes.iter().any(|(p, _)| p == n))
        {
            let _ = match net {
                IpNet::V4(n) => self
                    .groups_v4
                    .remove(&Key::new(n.prefix_len() as u32, n.network().octets())),
                IpNet::V6(n) => self
                    .groups_v6
                    .remove(&Key::new(n.prefix_len() as u32, n.network().octets())),
            };
        }
        Ok(())
    }

    /// The group tries' prefixes with their group index, sorted.
    pub fn groups(&self) -> Result<Vec<(IpNet, u32)>> {
        let mut out = Vec::new();
        for item in self.groups_v4.iter() {
            let (k, g) = item.map_err(map_err("reading AUTO_GROUPS_V4"))?;
            if let Ok(n) = Ipv4Net::new(Ipv4Addr::from(k.data()), k.prefix_len() as u8) {
                out.push((IpNet::V4(n), g));
            }
        }
        for item in self.groups_v6.iter() {
            let (k, g) = item.map_err(map_err("reading AUTO_GROUPS_V6"))?;
            if let Ok(n) = Ipv6Net::new(Ipv6Addr::from(k.data()), k.prefix_len() as u8) {
                out.push((IpNet::V6(n), g));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every destination's counters, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(IpAddr, [Counter; AUTO_CLASS_COUNT])>> {
        let mut out = Vec::new();
        for item in self.dst.iter() {
            let (k, per_cpu) = match item {
                Ok(x) => x,
                // An LRU entry evicted between the key walk and its lookup.
                Err(_) => continue,
            };
            let mut sum = [Counter::default(); AUTO_CLASS_COUNT];
            for v in per_cpu.iter() {
                for (s, c) in sum.iter_mut().zip(v.classes.iter()) {
                    s.packets += c.packets;
                    s.bytes += c.bytes;
                }
            }
            let addr = if k.family == 6 {
                IpAddr::V6(Ipv6Addr::from(k.addr))
            } else {
                IpAddr::V4(Ipv4Addr::new(k.addr[0], k.addr[1], k.addr[2], k.addr[3]))
            };
            out.push((addr, sum));
        }
        Ok(out)
    }

    /// Arrival samples lost to a full ring, in all.
    pub fn lost(&self) -> Result<u64> {
        let v = self.lost.get(&0, 0).map_err(map_err("reading AUTO_LOST"))?;
        Ok(v.iter().sum())
    }
}

/// Reads `AUTO_SAMPLES` (one reader: the daemon's detector).
pub struct AutoReader(Reader);

impl AutoReader {
    pub fn open(pin: &PinDir) -> Result<AutoReader> {
        Ok(AutoReader(Reader::open_ring(pin, names::AUTO_SAMPLES)?))
    }

    pub fn read(&mut self, wait: std::time::Duration) -> Vec<Record> {
        self.0.read(wait)
    }
}
