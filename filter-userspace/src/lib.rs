//! floodgate's controller as a library: the `floodgate` binary is a thin shell over [`cli`], and
//! the privileged tests drive the same code. The CLI's clap definition lives here too, so the
//! man pages and shell completions are generated from the one definition (`cli::command`).
//!
//! All state lives in the kernel: the maps (lists, counters) and the program are pinned under
//! one directory (default [`DEFAULT_PIN_DIR`]), and each interface holds its own netlink XDP
//! attachment. No process needs to run for the filter to keep filtering.

pub mod api;
pub mod attack;
pub mod auto;
pub mod batch;
pub mod capture;
pub mod cli;
pub mod comments;
pub mod config;
pub mod connections;
pub mod daemon;
pub mod datalog;
pub mod defences;
pub mod entry;
pub mod error;
pub mod front;
pub mod journal;
pub mod kfunc;
pub mod listfile;
pub mod lists;
pub mod loader;
pub mod maps;
pub mod metrics;
pub mod netlink;
pub mod prefix;
pub mod progress;
pub mod settings;
pub mod snapshot;
pub mod sources;
pub mod state;
pub mod stats;
pub mod synproxy;
pub mod sys;
pub mod top;

pub use error::Error;

/// Where floodgate pins its state unless told otherwise (`--pin-dir`).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/floodgate";
