//! Everything a command works on, opened once: the lock, the object with its pinned maps, the
//! lists and the counters.

use aya::Ebpf;

use filter_common::SOURCE_CONFIG;

use crate::{
    config::Desired,
    defences::Defences,
    error::{Error, Result},
    lists::{ListKind, Lists},
    loader::{self, PinDir},
    settings::Settings,
    stats::Stats,
    sys::StateLock,
};

/// Are there pinned maps under `pin` (has anything been attached or added here)?
pub fn has_state(pin: &PinDir) -> bool {
    pin.maps().join(filter_common::map_names::STATS).exists()
}

pub struct State {
    pub ebpf: Ebpf,
    pub lists: Lists,
    pub stats: Stats,
    pub defences: Defences,
    /// What undoing an unfinished batch did when the state was opened for writing.
    pub recovered: Option<crate::lists::Recovered>,
    _lock: Option<StateLock>,
}

/// Whether the caller changes state (and so must hold the lock) or only reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Take the lock; create the maps if there are none.
    Write,
    /// The caller already holds the lock (the daemon at start); create the maps if none.
    Locked,
    /// No lock; fail with [`Error::NoState`] rather than create anything.
    Read,
}

impl State {
    /// Make the running defences `s` (rule comments included).
    pub fn write_settings(&mut self, s: &Settings) -> Result<()> {
        let old = self.settings()?;
        self.replace_settings(&old, s)
    }

    /// Read the running settings once, let `change` edit them, write the result. Returns what
    /// `change` returned. Nothing is written when it fails.
    pub fn update_settings<T, E: From<Error>>(
        &mut self,
        change: impl FnOnce(&mut Settings) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let old = self.settings()?;
        let mut new = old.clone();
        let out = change(&mut new)?;
        self.replace_settings(&old, &new)?;
        Ok(out)
    }

    fn replace_settings(&mut self, old: &Settings, s: &Settings) -> Result<()> {
        self.defences.write(old, s)?;
        for r in &s.rules {
            self.lists.comments.set_rule(r.id, r.comment.as_deref())?;
        }
        for r in old
            .rules
            .iter()
            .filter(|o| !s.rules.iter().any(|n| n.id == o.id))
        {
            self.lists.comments.set_rule(r.id, None)?;
        }
        Ok(())
    }

    /// Apply a parsed configuration file: the settings, and for each list given in `[lists]`,
    /// the `config` source's entries become exactly the file's. Capacity is the one thing the
    /// file alone cannot tell: every list is checked before any changes, so a full allowlist
    /// cannot leave the blocklist already replaced.
    pub fn apply(&mut self, desired: &Desired) -> Result<()> {
        let lists = [
            (ListKind::Block, &desired.block),
            (ListKind::Allow, &desired.allow),
        ];
        for (kind, items) in lists {
            if let Some(items) = items {
                let nets: Vec<ipnet::IpNet> = items.iter().map(|i| i.net).collect();
                self.lists.check_fits(kind, &nets)?;
            }
        }
        for (kind, items) in lists {
            if let Some(items) = items {
                self.lists
                    .replace(kind, SOURCE_CONFIG, items, &mut |_, _| {})?;
            }
        }
        // The file's rules, then the automatic rules running now (the daemon's, not the
        // file's: a reload must not lift a mitigation in the middle of an attack).
        let mut settings = desired.settings.clone();
        let room = (filter_common::RULES_MAX as usize).saturating_sub(settings.rules.len());
        settings.rules.extend(
            self.settings()?
                .rules
                .into_iter()
                .filter(|r| crate::auto::settings::is_auto_rule(r.id))
                .take(room),
        );
        self.write_settings(&settings)
    }

    /// After an attach: when the SYN guard completes through netfilter SYNPROXY, put its
    /// nftables table back (`detach` of the last interface took it off).
    pub fn restore_synproxy(&self) -> Result<()> {
        if self.defences.synguard_synproxy()? {
            crate::synproxy::install(&self.settings()?.synguard)?;
        }
        Ok(())
    }

    /// The running defence settings, rule comments included.
    pub fn settings(&self) -> Result<Settings> {
        self.defences.read(&|id| self.lists.comments.rule(id))
    }

    pub fn open(pin: &PinDir, access: Access) -> Result<State> {
        // load_object checks bpffs; the lock lives in /run/lock and does not need it.
        let lock = match access {
            Access::Write => Some(StateLock::acquire(pin.root())?),
            Access::Locked | Access::Read => None,
        };
        if access == Access::Read && !has_state(pin) {
            // A read must not create 22 maps where there were none (after a purge, say).
            crate::sys::require_bpffs(pin.root())?;
            return Err(Error::NoState {
                pin_dir: pin.root().to_path_buf(),
            });
        }
        let mut ebpf = loader::load_object(pin)?;
        let mut lists = Lists::take(&mut ebpf, pin)?;
        // A writer that died part-way through a batch left a journal: undo it before any
        // change (with the lock held, nobody else is writing).
        let recovered = match access {
            Access::Read => None,
            Access::Write | Access::Locked => lists.recover()?,
        };
        if let (Access::Write, Some(r)) = (access, &recovered) {
            // The CLI's stderr; the daemon (Access::Locked) logs it instead.
            eprintln!("floodgate: {r}");
        }
        let stats = Stats::take(&mut ebpf)?;
        let mut defences = Defences::take(&mut ebpf)?;
        if access != Access::Read {
            defences.initialize()?;
        }
        Ok(State {
            ebpf,
            lists,
            stats,
            defences,
            recovered,
            _lock: lock,
        })
    }
}
