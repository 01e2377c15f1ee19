//! apply and show-config: the declarative configuration file.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::{
    config,
    lists::ListKind,
    loader::PinDir,
    state::{Access, State},
};

/// Set lists, rules, presets, sanity checks, limits and mode from one TOML file.
///
/// The SYN guard too (`[synguard]`). The whole file is checked before anything changes: an
/// error names the line and the field, and nothing is applied. Sections left out get their
/// defaults; `[lists]` left out leaves the lists alone, and a list given in `[lists]` replaces
/// only the entries of source `config` (entries added with the CLI, by other sources or by
/// auto-ban stay). A commented example: examples/floodgate.toml in the source tree.
///
/// Examples:
///   floodgate apply /etc/floodgate/floodgate.toml
///   floodgate show-config > now.toml && floodgate apply now.toml
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct ApplyArgs {
    /// The configuration file (TOML).
    file: PathBuf,
}

/// Print the running configuration as TOML (the format `floodgate apply` reads).
///
/// Examples:
///   floodgate show-config
///   floodgate show-config --no-lists
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct ShowConfigArgs {
    /// Leave out [lists] (they can be large).
    #[arg(long)]
    no_lists: bool,
}

pub fn apply(pin: &PinDir, a: ApplyArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let desired = config::parse(&a.file.display().to_string(), &text)?;
    let mut state = State::open(pin, Access::Write)?;
    state.apply(&desired)?;
    let s = &desired.settings;
    println!(
        "applied {}: mode {}, {} rule(s), {} limit class(es), reflection preset {}, SYN guard {}",
        a.file.display(),
        s.mode.name(),
        s.rules.len(),
        s.limits.len(),
        if s.reflection.enabled { "on" } else { "off" },
        if s.synguard.enabled { "on" } else { "off" }
    );
    Ok(())
}

pub fn show_config(pin: &PinDir, a: ShowConfigArgs) -> anyhow::Result<()> {
    let state = State::open(pin, Access::Read)?;
    let s = state.settings()?;
    let (block, allow) = if a.no_lists {
        (None, None)
    } else {
        (
            Some(config_entries(&state, ListKind::Block)?),
            Some(config_entries(&state, ListKind::Allow)?),
        )
    };
    print!("{}", config::render(&s, block, allow));
    Ok(())
}

/// The entries the file owns: those of the `config` source.
fn config_entries(state: &State, kind: ListKind) -> anyhow::Result<Vec<crate::entry::Entry>> {
    let mut entries = state.lists.entries(kind)?;
    entries.retain(|e| e.source == filter_common::SOURCE_CONFIG);
    Ok(entries)
}
