//! block and allow: the same verbs over the two lists.

use std::{
    io::{BufReader, IsTerminal, Write},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use floodgate::{
    feed::parse_feed,
    lists::{Entry, ListKind},
    loader::PinDir,
    prefix::{display, parse_prefix},
    state::{Access, State},
};
use ipnet::IpNet;

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
    /// List live entries: prefix, time left, hits, origin (manual or auto-ban), comment.
    ///
    /// Examples:
    ///   floodgate block list
    ///   floodgate block list --json | jq '.[] | select(.hits > 0)'
    #[command(verbatim_doc_comment)]
    List(ListArgs),
    /// Load entries from a file (or - for stdin): one per line, '#' and ';' comments.
    ///
    /// Reads FireHOL .netset and Spamhaus DROP files as published. The whole file is checked
    /// first: one bad line and nothing is changed.
    ///
    /// Examples:
    ///   floodgate block load firehol_level1.netset
    ///   curl -s https://feed.example/drop.txt | floodgate block load - --replace --ttl 1h
    #[command(verbatim_doc_comment)]
    Load(LoadArgs),
    /// Remove every entry.
    ///
    /// Example:
    ///   floodgate block flush
    #[command(verbatim_doc_comment)]
    Flush,
}

#[derive(Args)]
pub struct AddArgs {
    /// Addresses or prefixes, e.g. 198.18.0.1, 198.18.0.0/15, 2001:db8::/32.
    #[arg(required = true, value_name = "ADDR|CIDR")]
    entries: Vec<String>,
    /// Remove the entries after this long (e.g. 30s, 10m, 1h30m); enforced in the kernel.
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
    /// A note kept with each entry (at most 64 bytes).
    #[arg(long)]
    comment: Option<String>,
}

#[derive(Args)]
pub struct DelArgs {
    #[arg(required = true, value_name = "ADDR|CIDR")]
    entries: Vec<String>,
}

#[derive(Args)]
pub struct ListArgs {
    /// Print a JSON array of {cidr, expires_in_s (null = never), hits, comment, origin}.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct LoadArgs {
    /// File to read, or - for standard input.
    #[arg(value_name = "FILE|-")]
    file: String,
    /// TTL for every loaded entry.
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
    /// Make the list exactly the file's entries (others are removed after the new ones are in).
    #[arg(long)]
    replace: bool,
}

pub fn block(pin: &PinDir, cmd: ListCommand) -> anyhow::Result<()> {
    run(pin, ListKind::Block, cmd)
}

pub fn allow(pin: &PinDir, cmd: ListCommand) -> anyhow::Result<()> {
    run(pin, ListKind::Allow, cmd)
}

fn parse_all(inputs: &[String]) -> anyhow::Result<Vec<IpNet>> {
    let mut nets = Vec::new();
    let mut errors = Vec::new();
    for s in inputs {
        match parse_prefix(s) {
            Ok(n) => nets.push(n),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("{} (nothing was changed)", errors.join("; "));
    }
    Ok(nets)
}

/// Progress on stderr for long loads, only when a person is watching.
fn progress_printer() -> impl FnMut(usize, usize) {
    let tty = std::io::stderr().is_terminal();
    move |done, total| {
        if tty && total >= 10_000 {
            eprint!("\r  {done}/{total} entries");
            if done == total {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        }
    }
}

fn run(pin: &PinDir, kind: ListKind, cmd: ListCommand) -> anyhow::Result<()> {
    // Validate input before touching (or even opening) any state.
    let nets = match &cmd {
        ListCommand::Add(a) => {
            floodgate::lists::validate_comment(a.comment.as_deref())?;
            parse_all(&a.entries)?
        }
        ListCommand::Del(a) => parse_all(&a.entries)?,
        _ => Vec::new(),
    };
    let mut state = State::open(pin, Access::Write)?;
    // Expired entries no longer match in the kernel; every list command also clears them out.
    let swept = state.lists.sweep_expired(kind)?;
    let name = kind.name();
    match cmd {
        ListCommand::Add(a) => {
            state.lists.add(
                kind,
                &nets,
                a.ttl,
                a.comment.as_deref(),
                &mut progress_printer(),
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
        ListCommand::List(a) => print_entries(&state.lists.entries(kind)?, a.json)?,
        ListCommand::Load(a) => {
            let nets = if a.file == "-" {
                parse_feed(std::io::stdin().lock(), "<stdin>")?
            } else {
                let f =
                    std::fs::File::open(&a.file).with_context(|| format!("opening {}", a.file))?;
                parse_feed(BufReader::new(f), &a.file)?
            };
            let mut progress = progress_printer();
            if a.replace {
                let removed = state.lists.replace(kind, &nets, a.ttl, &mut progress)?;
                println!(
                    "{name}: loaded {} entries, removed {removed} not in {}",
                    nets.len(),
                    a.file
                );
            } else {
                state.lists.add(kind, &nets, a.ttl, None, &mut progress)?;
                println!("{name}: loaded {} entries from {}", nets.len(), a.file);
            }
        }
        ListCommand::Flush => {
            let n = state.lists.flush(kind)?;
            println!("{name}: flushed {} entries", n + swept);
        }
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct JsonEntry {
    cidr: String,
    expires_in_s: Option<u64>,
    hits: u64,
    comment: Option<String>,
    /// "manual" (CLI, file, feed) or "auto" (auto-ban by a rate limit).
    origin: &'static str,
}

fn print_entries(entries: &[Entry], json: bool) -> anyhow::Result<()> {
    if json {
        let out: Vec<JsonEntry> = entries
            .iter()
            .map(|e| JsonEntry {
                cidr: e.net.to_string(),
                // Round up: an entry with 0.4 s left still matches.
                expires_in_s: e
                    .expires_in
                    .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
                hits: e.hits,
                comment: e.comment.clone(),
                origin: origin(e),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("(empty)");
        return Ok(());
    }
    println!(
        "{:<44} {:>12} {:>14} {:<6}  COMMENT",
        "PREFIX", "EXPIRES IN", "HITS", "ORIGIN"
    );
    for e in entries {
        let expires = match e.expires_in {
            Some(d) => humantime::format_duration(Duration::from_secs(d.as_secs() + 1)).to_string(),
            None => "never".into(),
        };
        println!(
            "{:<44} {:>12} {:>14} {:<6}  {}",
            display(&e.net),
            expires,
            e.hits,
            origin(e),
            e.comment.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

fn origin(e: &Entry) -> &'static str {
    if e.auto { "auto" } else { "manual" }
}
