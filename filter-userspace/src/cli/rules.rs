//! rule: the ordered rule table.

use clap::{Args, Subcommand};

use crate::{
    error::Error,
    loader::PinDir,
    settings::{RuleSpec, RuleText, Spelling},
    state::{Access, State},
};

#[derive(Subcommand)]
pub enum RuleCommand {
    /// Add a rule (at the end, or before rule --before ID). First match wins.
    ///
    /// Rules run after the allowlist, the blocklist and the sanity checks, and before the
    /// reflection preset and the rate limits. A rule with no match options matches every IP
    /// packet. Actions: drop (reason `rule`); pass (accept: skips the reflection preset and the
    /// rate limits); limit (one aggregate token bucket for all it matches: over it, reason
    /// `rule_limit`; within it, the packet goes on to the later stages). With --dry-run the
    /// rule only counts: its matches go to its hit counters and to the DRY-RUN section of
    /// `floodgate stats`, and evaluation goes on as if it had not matched.
    ///
    /// Examples:
    ///   floodgate rule add --proto udp --dst-port 53 --length 512-65535 --action limit --pps 10000
    ///   floodgate rule add --src 198.18.128.0/17 --proto tcp --tcp-flags syn/syn,ack --action drop
    ///   floodgate rule add --proto icmp --icmp-type 8 --action limit --pps 100 --bps 1M
    ///   floodgate rule add --before 3 --src 198.18.0.53 --action pass --comment 'our resolver'
    ///   floodgate rule add --proto udp --src-port 0 --action drop --dry-run
    #[command(verbatim_doc_comment)]
    Add(Box<AddArgs>),
    /// Delete a rule by id (see `floodgate rule list`).
    ///
    /// Example:
    ///   floodgate rule del 3
    #[command(verbatim_doc_comment)]
    Del {
        /// Rule id.
        id: u32,
    },
    /// List the rules in order, with hit counters.
    ///
    /// Examples:
    ///   floodgate rule list
    ///   floodgate rule list --json
    #[command(verbatim_doc_comment)]
    List {
        /// Print a JSON array: [{"id", "match", "action", "dry_run", "packets", "bytes", ...}].
        #[arg(long)]
        json: bool,
    },
    /// Delete every rule.
    ///
    /// Example:
    ///   floodgate rule flush
    #[command(verbatim_doc_comment)]
    Flush,
}

#[derive(Args)]
pub struct AddArgs {
    /// Insert before the rule with this id instead of at the end.
    #[arg(long, value_name = "ID")]
    before: Option<u32>,
    #[command(flatten)]
    rule: RuleText,
}

pub fn rule(pin: &PinDir, cmd: RuleCommand) -> anyhow::Result<()> {
    match cmd {
        RuleCommand::List { json } => list(pin, json),
        RuleCommand::Add(a) => {
            let mut state = State::open(pin, Access::Write)?;
            let (id, at) = state.update_settings(|s| {
                let id = s.next_rule_id();
                let spec = a.rule.to_spec(id, Spelling::Cli)?;
                let at = match a.before {
                    Some(b) => s
                        .rules
                        .iter()
                        .position(|r| r.id == b)
                        .ok_or(Error::NoSuchRule { id: b })?,
                    None => s.operator_end(),
                };
                s.rules.insert(at, spec);
                Ok::<_, Error>((id, at))
            })?;
            println!("rule {id} added at position {}", at + 1);
            Ok(())
        }
        RuleCommand::Del { id } => {
            let mut state = State::open(pin, Access::Write)?;
            state.update_settings(|s| {
                let at = s
                    .rules
                    .iter()
                    .position(|r| r.id == id)
                    .ok_or(Error::NoSuchRule { id })?;
                s.rules.remove(at);
                Ok::<_, Error>(())
            })?;
            println!("rule {id} deleted");
            Ok(())
        }
        RuleCommand::Flush => {
            let mut state = State::open(pin, Access::Write)?;
            let n = state.update_settings(|s| {
                let n = s.rules.len();
                s.rules.clear();
                Ok::<_, Error>(n)
            })?;
            println!("{n} rule(s) deleted");
            Ok(())
        }
    }
}

#[derive(serde::Serialize)]
struct JsonRule {
    id: u32,
    #[serde(rename = "match")]
    matches: String,
    action: String,
    dry_run: bool,
    packets: u64,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    /// The rule as `rule add` / TOML fields.
    rule: RuleText,
}

fn list(pin: &PinDir, json: bool) -> anyhow::Result<()> {
    let state = State::open(pin, Access::Read)?;
    let rows = state
        .defences
        .rule_rows(&|id| state.lists.comments.rule(id))?;
    if json {
        let out: Vec<JsonRule> = rows
            .iter()
            .map(|r| JsonRule {
                id: r.spec.id,
                matches: r.spec.summary(),
                action: r.spec.action_text(),
                dry_run: r.spec.dry_run,
                packets: r.hits.packets,
                bytes: r.hits.bytes,
                comment: r.spec.comment.clone(),
                rule: r.spec.to_text(),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no rules");
        return Ok(());
    }
    println!(
        "{:>4}  {:<48} {:<18} {:>12} {:>14}  COMMENT",
        "ID", "MATCH", "ACTION", "PACKETS", "BYTES"
    );
    for r in &rows {
        let RuleSpec { id, dry_run, .. } = r.spec;
        let action = if dry_run {
            format!("{} (dry-run)", r.spec.action_text())
        } else {
            r.spec.action_text()
        };
        println!(
            "{:>4}  {:<48} {:<18} {:>12} {:>14}  {}",
            id,
            r.spec.summary(),
            action,
            r.hits.packets,
            r.hits.bytes,
            r.spec.comment.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
