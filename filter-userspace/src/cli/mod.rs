//! Command-line interface: clap derive, one file per verb group.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use floodgate::{DEFAULT_PIN_DIR, loader::PinDir};

mod attach;
mod lists;
mod stats;

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
  floodgate stats --watch
  floodgate detach --all

Exit status: 0 success, 1 failure (message on stderr), 2 bad usage.")]
pub struct Cli {
    /// Directory on bpffs holding the pinned maps and program.
    #[arg(long, global = true, env = "FLOODGATE_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,

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
}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let pin = PinDir::new(cli.pin_dir);
    match cli.command {
        Command::Attach(a) => attach::attach(&pin, a),
        Command::Detach(a) => attach::detach(&pin, a),
        Command::Status(a) => attach::status(&pin, a),
        Command::Block(c) => lists::block(&pin, c),
        Command::Allow(c) => lists::allow(&pin, c),
        Command::Stats(a) => stats::stats(&pin, a),
    }
}
