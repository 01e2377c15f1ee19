//! Command-line interface: clap derive, one file per verb group. The definition is the one
//! source of `--help`, the man pages ([`man`]) and the shell completions (`completions`).

use std::path::PathBuf;

use clap::{CommandFactory as _, Parser, Subcommand};

use crate::{DEFAULT_PIN_DIR, loader::PinDir};

mod attach;
mod auto;
mod capture;
pub mod completions;
mod config;
mod defences;
mod limits;
mod lists;
pub mod man;
mod rules;
mod run;
mod stats;
mod synguard;
mod top;

/// floodgate: an XDP filter that drops flood traffic before the kernel allocates anything.
///
/// State (lists, counters, the attached program) is pinned under --pin-dir and keeps working
/// with no floodgate process running.
#[derive(Parser)]
#[command(
    name = "floodgate",
    version,
    about,
    long_about,
    propagate_version = true
)]
#[command(after_help = "Examples:
  floodgate attach eth0
  floodgate block add 198.18.7.0/24 --ttl 10m --comment 'syn flood'
  floodgate preset reflection on
  floodgate limit set udp --per-source 1000 --ban-after 10s --ban-for 10m
  floodgate synguard on --port 443
  floodgate rule add --proto udp --dst-port 53 --length 512-65535 --action limit --pps 10000
  floodgate apply /etc/floodgate/floodgate.toml
  floodgate stats --watch
  floodgate capture --reason blocklist --count 100 -w blocked.pcapng
  floodgate top
  floodgate auto status
  floodgate run --config /etc/floodgate/floodgate.toml
  floodgate detach --all
  floodgate completions bash > /etc/bash_completion.d/floodgate

Exit status: 0 success, 1 failure (message on stderr), 2 bad usage.")]
pub struct Cli {
    /// Directory on bpffs holding the pinned maps and program.
    #[arg(long, global = true, env = "FLOODGATE_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,

    /// Entries of the per-source rate-limit table (LRU), used when the maps are created.
    /// Default 262144. Changing it later needs `detach --all --purge`.
    #[arg(long, global = true, env = "FLOODGATE_SOURCE_TABLE_SIZE", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    source_table_size: Option<u32>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Attach(attach::AttachArgs),
    Detach(attach::DetachArgs),
    Status(attach::StatusArgs),
    /// Manage the blocklist: packets from these sources are dropped.
    #[command(subcommand)]
    Block(lists::BlockCommand),
    /// Manage the allowlist: packets from these sources always pass (checked first).
    #[command(subcommand)]
    Allow(lists::AllowCommand),
    Stats(stats::StatsArgs),
    /// The ordered rule table: match fields, then drop, pass or limit.
    #[command(subcommand)]
    Rule(rules::RuleCommand),
    /// Built-in defence presets (reflection/amplification).
    #[command(subcommand)]
    Preset(defences::PresetCommand),
    /// Sanity checks: invalid TCP flags, land, martians, fragments, lengths.
    #[command(subcommand)]
    Sanity(defences::SanityCommand),
    /// Rate limits per source (with auto-ban) and aggregate caps per destination.
    #[command(subcommand)]
    Limit(limits::LimitCommand),
    /// SYN-flood guard: the data plane answers SYNs to protected TCP ports with SYN cookies.
    #[command(subcommand)]
    Synguard(synguard::SynguardCommand),
    Capture(capture::CaptureArgs),
    Top(top::TopArgs),
    /// Automatic mitigation: detect attacks per protected destination, install rules.
    #[command(subcommand)]
    Auto(auto::AutoCommand),
    Mode(defences::ModeArgs),
    Apply(config::ApplyArgs),
    ShowConfig(config::ShowConfigArgs),
    Run(run::RunArgs),
    Completions(completions::CompletionsArgs),
}

/// The `floodgate` command as clap defines it: what `--help`, the man pages and the
/// completion scripts are made from.
pub fn command() -> clap::Command {
    Cli::command()
}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let pin = PinDir::new(cli.pin_dir).with_source_table(cli.source_table_size);
    match cli.command {
        Command::Attach(a) => attach::attach(&pin, a),
        Command::Detach(a) => attach::detach(&pin, a),
        Command::Status(a) => attach::status(&pin, a),
        Command::Block(c) => lists::block(&pin, c),
        Command::Allow(c) => lists::allow(&pin, c),
        Command::Stats(a) => stats::stats(&pin, a),
        Command::Rule(c) => rules::rule(&pin, c),
        Command::Preset(c) => defences::preset(&pin, c),
        Command::Sanity(c) => defences::sanity(&pin, c),
        Command::Limit(c) => limits::limit(&pin, c),
        Command::Synguard(c) => synguard::synguard(&pin, c),
        Command::Capture(a) => capture::capture(&pin, a),
        Command::Top(a) => top::top(&pin, a),
        Command::Auto(c) => auto::auto(&pin, c),
        Command::Mode(a) => defences::mode(&pin, a),
        Command::Apply(a) => config::apply(&pin, a),
        Command::ShowConfig(a) => config::show_config(&pin, a),
        Command::Run(a) => run::run(&pin, a),
        Command::Completions(a) => completions::completions(a),
    }
}

/// The command tree, for the tests that check the man pages and completions cover it.
#[cfg(test)]
pub(crate) mod tree {
    /// A verb below `floodgate`.
    pub struct Node {
        /// `["block", "add"]`
        pub path: Vec<String>,
        /// Its own long flags (`ttl` for `--ttl`): not the global ones, not help or version.
        pub flags: Vec<String>,
        /// Its sub-verbs.
        pub children: Vec<String>,
    }

    /// Every verb and sub-verb (clap's `help` verb left out), parents before children.
    pub fn nodes() -> Vec<Node> {
        fn walk(cmd: &clap::Command, path: &[String], out: &mut Vec<Node>) {
            for sub in super::man::verbs(cmd) {
                let mut p = path.to_vec();
                p.push(sub.get_name().to_string());
                out.push(Node {
                    path: p.clone(),
                    flags: sub
                        .get_arguments()
                        .filter(|a| !a.is_global_set() && !a.is_hide_set())
                        .filter_map(|a| a.get_long())
                        .filter(|l| !matches!(*l, "help" | "version"))
                        .map(str::to_string)
                        .collect(),
                    children: super::man::verbs(sub)
                        .map(|c| c.get_name().to_string())
                        .collect(),
                });
                walk(sub, &p, out);
            }
        }
        let mut root = super::command();
        root.build();
        let mut out = Vec::new();
        walk(&root, &[], &mut out);
        assert!(
            out.iter().any(|n| n.path.len() == 2) && out.iter().any(|n| !n.flags.is_empty()),
            "the tree walk finds sub-verbs and flags"
        );
        out
    }
}
