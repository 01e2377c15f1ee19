//! run: the daemon (see `crate::daemon`).

use std::path::PathBuf;

use clap::Args;

use crate::{config::LogFormat, daemon, loader::PinDir};

/// Run the daemon: the configured interfaces and defences, the push API and /metrics.
///
/// It attaches the configured interfaces, applies the configuration, serves the push API and
/// Prometheus /metrics, sweeps expired entries, saves snapshots and logs attack events.
///
/// SIGHUP, or a change to the file, reloads it: a file with any error is rejected with the
/// reason in the log, and the running state stays as it was. SIGTERM stops the daemon and
/// leaves the filter running (unless daemon.detach_on_exit). A start re-adopts the pinned
/// program, attachments and maps of an earlier run, so filtering never stops; the snapshot
/// is restored only when the maps are new (after a reboot).
///
/// The [daemon] section of the file configures it (see examples/floodgate.toml); the API
/// reference is in the README. A systemd unit: examples/systemd/floodgate.service (the
/// Debian package installs it).
///
/// With no file at --config the daemon starts anyway, with every [daemon] key at its default
/// (no interfaces, API writes disabled, listen 127.0.0.1:9477), leaves the defences and lists
/// as they are, and says so in the log; the file is read once it appears.
///
/// Examples:
///   floodgate run --config /etc/floodgate/floodgate.toml
///   floodgate run --log-format json
///   floodgate run --check-config /etc/floodgate/floodgate.toml
///   kill -HUP $(pidof floodgate)
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct RunArgs {
    /// The configuration file (TOML; [daemon] plus the defences `floodgate apply` reads).
    #[arg(
        long,
        default_value = "/etc/floodgate/floodgate.toml",
        env = "FLOODGATE_CONFIG"
    )]
    config: PathBuf,
    /// Log format (overrides daemon.log_format): text, or json (one object per line).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Do not run: check FILE and its token file, print what the daemon would do with them
    /// and exit (0 good; 1 with the line and field of the first error). Touches nothing: no
    /// bpffs, maps, lock or port.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
}

pub fn run(pin: &PinDir, a: RunArgs) -> anyhow::Result<()> {
    if let Some(file) = a.check_config {
        let checked = daemon::check_config(&file)?;
        println!(
            "{}: good; `floodgate run` would start with:",
            file.display()
        );
        print!("{checked}");
        return Ok(());
    }
    daemon::run(daemon::Options {
        config: a.config,
        log_format: a.log_format,
        pin: pin.clone(),
    })
}
