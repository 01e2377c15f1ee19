//! block and allow: the same verbs over the two lists.

use std::{io::BufReader, time::Duration};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ipnet::IpNet;

use crate::{
    entry::{Entry, Field, FieldError, Item, check_breadth, json_entries, printable},
    listfile::parse_list_file,
    lists::ListKind,
    loader::PinDir,
    prefix::{display, parse_prefix},
    progress::Progress,
    sources::SourceNames,
    state::{Access, State},
};

pub type BlockCommand = ListCommand;
pub type AllowCommand = ListCommand;

#[derive(Subcommand)]
pub enum ListCommand {
    /// Add addresses or prefixes (IPv4 or IPv6). Re-adding an entry updates its TTL and comment.
    ///
    /// Examples:
    ///   floodgate block add 198.18.7.7
    ///   floodgate block add 198.18.0.0/24 2001:db8:bad::/48 --ttl 10m --comment 'feed X'
    ///   floodgate allow add 198.18.0.53
    #[command(verbatim_doc_comment)]
    Add(AddArgs),
    /// Remove entries (exactly as added). All must be present, or nothing is removed.
    ///
    /// Example:
    ///   floodgate block del 198.18.0.0/24 198.18.7.7
    #[command(verbatim_doc_comment)]
    Del(DelArgs),
    /// List live entries: prefix, time left, hits, source (cli, config, auto or a source's
    /// name), comment.
    ///
    /// Examples:
    ///   floodgate block list
    ///   floodgate block list --source spamhaus
    ///   floodgate block list --json | jq '.[] | select(.hits > 0)'
    #[command(verbatim_doc_comment)]
    List(ListArgs),
    /// Load entries from a file (or - for stdin): one per line, '#' and ';' comments.
    ///
    /// Reads FireHOL .netset and Spamhaus DROP files as published. The whole file is checked
    /// first: one bad line and nothing is changed.
    ///
    /// Examples:
    ///   floodgate block load firehol_level1.netset --source firehol
    ///   curl -s https://feed.example/drop.txt | floodgate block load - --source drop --replace --ttl 1h
    #[command(verbatim_doc_comment)]
    Load(LoadArgs),
    /// Remove every entry, or every entry of one source.
    ///
    /// Examples:
    ///   floodgate block flush
    ///   floodgate block flush --source firehol
    #[command(verbatim_doc_comment)]
    Flush(FlushArgs),
}

#[derive(Args)]
pub struct AddArgs {
    /// Addresses or prefixes, e.g. 198.18.0.1, 198.18.0.0/15, 2001:db8::/32.
    #[arg(required = true, value_name = "ADDR|CIDR")]
    entries: Vec<String>,
    /// Remove the entries after this long (e.g. 30s, 10m, 1h30m, 7d; at most 10 years);
    /// enforced in the kernel. Without it, entries never expire.
    #[arg(long, value_parser = parse_ttl)]
    ttl: Option<Duration>,
    /// A note kept with each entry (at most 64 bytes of printable text).
    #[arg(long)]
    comment: Option<String>,
    #[command(flatten)]
    force: ForceArg,
    #[command(flatten)]
    source: SourceArg,
}

/// Taking entries broader than /8 (IPv4) or /16 (IPv6).
#[derive(Args)]
pub struct ForceArg {
    /// Take entries broader than /8 (IPv4) or /16 (IPv6), such as 0.0.0.0/0: refused without
    /// it, as they drop (nearly) every source, your own access included.
    #[arg(long)]
    force: bool,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    // clap names the flag itself.
    crate::entry::parse_ttl(text).map_err(|e| e.spelled("", FORCE))
}

/// How the CLI forces a broad entry.
const FORCE: &str = "add --force";

/// An entry error as the CLI says it: fields are flags; an entry quotes itself.
fn spelled(e: &FieldError) -> String {
    let flag = match e.field {
        Field::Cidr => "",
        Field::Ttl => "--ttl",
        Field::Comment => "--comment",
    };
    e.spelled(flag, FORCE)
}

/// The list source entries belong to.
#[derive(Args)]
pub struct SourceArg {
    /// Source the entries belong to: drops are counted per source, and
    /// `load --replace` and `flush --source` touch only this source's entries.
    #[arg(long, value_name = "NAME", default_value = "cli")]
    source: String,
}

#[derive(Args)]
pub struct FlushArgs {
    /// Remove only this source's entries.
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
}

#[derive(Args)]
pub struct DelArgs {
    #[arg(required = true, value_name = "ADDR|CIDR")]
    entries: Vec<String>,
}

#[derive(Args)]
pub struct ListArgs {
    /// Print a JSON array of {cidr, expires_in_s (null = never), hits, comment, source,
    /// origin (auto or manual)}.
    #[arg(long)]
    json: bool,
    /// Only this source's entries.
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
}

#[derive(Args)]
pub struct LoadArgs {
    /// File to read, or - for standard input.
    #[arg(value_name = "FILE|-")]
    file: String,
    /// TTL for every loaded entry (at most 10 years).
    #[arg(long, value_parser = parse_ttl)]
    ttl: Option<Duration>,
    /// Make the source's entries exactly the file's (its others are removed after the new
    /// ones are in; other sources' entries stay).
    #[arg(long)]
    replace: bool,
    #[command(flatten)]
    force: ForceArg,
    #[command(flatten)]
    source: SourceArg,
}

pub fn block(pin: &PinDir, cmd: ListCommand) -> anyhow::Result<()> {
    run(pin, ListKind::Block, cmd)
}

pub fn allow(pin: &PinDir, cmd: ListCommand) -> anyhow::Result<()> {
    run(pin, ListKind::Allow, cmd)
}

/// Parse every entry; with `force: Some(f)` (adding), also check how broad each is.
fn parse_all(inputs: &[String], force: Option<bool>) -> anyhow::Result<Vec<IpNet>> {
    let mut nets = Vec::new();
    let mut errors = Vec::new();
    for s in inputs {
        let checked = parse_prefix(s)
            .map_err(|e| e.to_string())
            .and_then(|n| match force {
                Some(f) => check_breadth(&n, f).map(|()| n).map_err(|e| spelled(&e)),
                None => Ok(n),
            });
        match checked {
            Ok(n) => nets.push(n),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("{} (nothing was changed)", errors.join("; "));
    }
    Ok(nets)
}

fn run(pin: &PinDir, kind: ListKind, cmd: ListCommand) -> anyhow::Result<()> {
    // Validate input before touching (or even opening) any state.
    let nets = match &cmd {
        ListCommand::Add(a) => {
            if let Some(c) = &a.comment {
                crate::entry::check_comment(c).map_err(|e| anyhow::anyhow!(spelled(&e)))?;
            }
            parse_all(&a.entries, Some(a.force.force))?
        }
        ListCommand::Del(a) => parse_all(&a.entries, None)?,
        _ => Vec::new(),
    };
    // Listing reads (and creates nothing where there is nothing); the rest change the lists.
    let access = match cmd {
        ListCommand::List(_) => Access::Read,
        _ => Access::Write,
    };
    let mut state = State::open(pin, access)?;
    // Expired entries no longer match in the kernel; every change also clears them out.
    let swept = match access {
        Access::Read => 0,
        _ => state.lists.sweep_expired(kind)?,
    };
    let name = kind.name();
    match cmd {
        ListCommand::Add(a) => {
            let id = source_id(&mut state, &a.source.source)?;
            let mut progress = Progress::on_terminal("entries");
            state.lists.add(
                kind,
                id,
                &nets,
                a.ttl,
                a.comment.as_deref(),
                &mut |done, total| progress.update(done, total),
            )?;
            let ttl = a
                .ttl
                .map(|t| format!(" for {}", humantime::format_duration(t)))
                .unwrap_or_default();
            println!(
                "{name}: added {} entr{}{ttl}",
                nets.len(),
                if nets.len() == 1 { "y" } else { "ies" }
            );
        }
        ListCommand::Del(_) => {
            state.lists.del(kind, &nets)?;
            println!(
                "{name}: removed {} entr{}",
                nets.len(),
                if nets.len() == 1 { "y" } else { "ies" }
            );
        }
        ListCommand::List(a) => {
            let mut entries = state.lists.entries(kind)?;
            if let Some(name) = &a.source {
                let id = state.lists.sources.id(name)?;
                entries.retain(|e| Some(e.source) == id);
            }
            print_entries(&state.lists.sources.names()?, &entries, a.json)?
        }
        ListCommand::Load(a) => {
            let nets = if a.file == "-" {
                parse_list_file(std::io::stdin().lock(), "<stdin>")?
            } else {
                let f =
                    std::fs::File::open(&a.file).with_context(|| format!("opening {}", a.file))?;
                parse_list_file(BufReader::new(f), &a.file)?
            };
            if !a.force.force {
                let broad: Vec<String> = nets
                    .iter()
                    .filter_map(|n| check_breadth(n, false).err())
                    .map(|e| spelled(&e))
                    .collect();
                if let Some(first) = broad.first() {
                    anyhow::bail!(
                        "{}: {} entr{} too broad, nothing was changed: {first}",
                        a.file,
                        broad.len(),
                        if broad.len() == 1 { "y is" } else { "ies are" }
                    );
                }
            }
            let id = source_id(&mut state, &a.source.source)?;
            let mut progress = Progress::on_terminal("entries");
            let mut progress = |done, total| progress.update(done, total);
            if a.replace {
                let items: Vec<Item> = nets
                    .iter()
                    .map(|&net| Item {
                        net,
                        ttl: a.ttl,
                        comment: None,
                    })
                    .collect();
                let (_, removed) = state.lists.replace(kind, id, &items, &mut progress)?;
                println!(
                    "{name}: loaded {} entries, removed {removed} not in {}",
                    nets.len(),
                    a.file
                );
            } else {
                state
                    .lists
                    .add(kind, id, &nets, a.ttl, None, &mut progress)?;
                println!("{name}: loaded {} entries from {}", nets.len(), a.file);
            }
        }
        ListCommand::Flush(FlushArgs { source: None }) => {
            let n = state.lists.flush(kind)?;
            println!("{name}: flushed {} entries", n + swept);
        }
        ListCommand::Flush(FlushArgs {
            source: Some(source),
        }) => {
            let n = match state.lists.sources.id(&source)? {
                Some(id) => state.lists.remove_source(kind, id)?,
                None => 0,
            };
            println!("{name}: flushed {n} entries of source {source}");
        }
    }
    Ok(())
}

/// The id of source `name` (registered on first use); `auto` and `config` are floodgate's own.
fn source_id(state: &mut State, name: &str) -> anyhow::Result<u32> {
    crate::sources::check_not_reserved(name)?;
    Ok(state.lists.register_source(name)?)
}

fn print_entries(names: &SourceNames, entries: &[Entry], json: bool) -> anyhow::Result<()> {
    if json {
        let out = json_entries(names, entries);
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("(empty)");
        return Ok(());
    }
    println!(
        "{:<44} {:>12} {:>14} {:<16}  COMMENT",
        "PREFIX", "EXPIRES IN", "HITS", "SOURCE"
    );
    for e in entries {
        let expires = match e.expires_in {
            Some(d) => humantime::format_duration(Duration::from_secs(d.as_secs() + 1)).to_string(),
            None => "never".into(),
        };
        println!(
            "{:<44} {:>12} {:>14} {:<16}  {}",
            display(&e.net),
            expires,
            e.hits,
            names.get(e.source),
            // Comments are checked on the way in, but the maps are writable by anyone with
            // CAP_BPF: never let their bytes drive the terminal.
            printable(e.comment.as_deref().unwrap_or(""))
        );
    }
    Ok(())
}
