//! apply and show-config: the declarative configuration file.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use floodgate::{
    config,
    lists::ListKind,
    loader::PinDir,
    state::{Access, State},
};

/// Set lists, rules, presets, sanity checks, limits and mode from one TOML file.
///
/// The whole file is checked before anything changes: an error names the line and the field,
/// and nothing is applied. Sections left out get their defaults; `[lists]` left out leaves the
/// lists alone. A commented example: examples/floodgate.toml in the source tree.
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
    // Capacity is the one thing the file alone cannot tell: check every list before changing
    // any, so a full allowlist cannot leave the blocklist already replaced.
    for (kind, items) in [
        (ListKind::Block, &desired.block),
        (ListKind::Allow, &desired.allow),
    ] {
        if let Some(items) = items {
            let nets: Vec<ipnet::IpNet> = items.iter().map(|i| i.net).collect();
            state.lists.check_replace_fits(kind, &nets)?;
        }
    }
    for (kind, items) in [
        (ListKind::Block, &desired.block),
        (ListKind::Allow, &desired.allow),
    ] {
        if let Some(items) = items {
            apply_list(&mut state, kind, items)?;
        }
    }
    state.write_settings(&desired.settings)?;
    let s = &desired.settings;
    println!(
        "applied {}: mode {}, {} rule(s), {} limit class(es), reflection preset {}",
        a.file.display(),
        if s.dry_run { "dry-run" } else { "enforce" },
        s.rules.len(),
        s.limits.len(),
        if s.reflection.enabled { "on" } else { "off" }
    );
    Ok(())
}

/// Make a list's operator entries exactly `items`, each with its own TTL and comment.
fn apply_list(state: &mut State, kind: ListKind, items: &[config::ListItem]) -> anyhow::Result<()> {
    let nets: Vec<ipnet::IpNet> = items.iter().map(|i| i.net).collect();
    // Replace first (no TTL, no comment), then refine the entries that have them.
    state.lists.replace(kind, &nets, None, &mut |_, _| {})?;
    for i in items
        .iter()
        .filter(|i| i.ttl.is_some() || i.comment.is_some())
    {
        state
            .lists
            .add(kind, &[i.net], i.ttl, i.comment.as_deref(), &mut |_, _| {})?;
    }
    Ok(())
}

pub fn show_config(pin: &PinDir, a: ShowConfigArgs) -> anyhow::Result<()> {
    let state = State::open(pin, Access::Read)?;
    let s = state.settings()?;
    let (block, allow) = if a.no_lists {
        (None, None)
    } else {
        (
            Some(state.lists.entries(ListKind::Block)?),
            Some(state.lists.entries(ListKind::Allow)?),
        )
    };
    print!("{}", config::render(&s, block, allow));
    Ok(())
}
