//! The data plane's own log lines (aya-log), written by `floodgate run` into its log. The
//! XDP programs log rare events only (an auto-ban written by the program itself), never a
//! line per packet; the records go through the `AYA_LOGS` ring buffer of the object the
//! attached program was loaded from, so the daemon finds it through the program, whoever
//! loaded it (the CLI, an earlier daemon).

use aya::programs::loaded_programs;
use tracing::{info, warn};

use crate::loader::{self, PinDir};

/// Sends aya-log records to the daemon's tracing log as `"event":"data_plane"`.
struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let message = record.args().to_string();
        match record.level() {
            log::Level::Error | log::Level::Warn => {
                warn!(event = "data_plane", level = %record.level(), message = %message)
            }
            _ => info!(event = "data_plane", level = %record.level(), message = %message),
        }
    }

    fn flush(&self) {}
}

/// The kernel id of the defences stage loaded with this pin directory's maps (the newest, if
/// an older load is still referenced).
fn defences_program(pin: &PinDir) -> Option<u32> {
    let stats = loader::stats_map_id(pin)?;
    loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(filter_common::DEFENCES_PROGRAM_NAME))
        .filter(|p| {
            p.map_ids()
                .ok()
                .flatten()
                .is_some_and(|ids| ids.contains(&stats))
        })
        .map(|p| p.id())
        .max()
}

/// Read the data plane's log into the daemon's for as long as the daemon runs. Says once
/// why it cannot (no stage loaded yet, an object built without the log map).
pub async fn forward(pin: PinDir) {
    let Some(id) = defences_program(&pin) else {
        warn!(
            event = "data_plane_log_off",
            why = "no defences stage is loaded for these pins"
        );
        return;
    };
    let logger = match aya_log::EbpfLogger::init_from_id_with_logger(id, ToTracing) {
        Ok(l) => l,
        Err(e) => {
            warn!(event = "data_plane_log_off", program_id = id, error = %e);
            return;
        }
    };
    // SAFETY: the logger owns the ring buffer's fd, which stays open (and the same) until
    // the AsyncFd, and with it the logger, is dropped.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let mut logger = match registered {
        Ok(l) => l,
        Err(e) => {
            warn!(event = "data_plane_log_off", program_id = id, error = %e);
            return;
        }
    };
    info!(event = "data_plane_log_on", program_id = id);
    loop {
        match logger.readable_mut().await {
            Ok(mut guard) => {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            Err(e) => {
                warn!(event = "data_plane_log_off", program_id = id, error = %e);
                return;
            }
        }
    }
}
