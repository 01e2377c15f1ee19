//! The `floodgate` command. Exit status: 0 success, 1 failure (one line on stderr saying what
//! to do), 2 bad usage (from clap).

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floodgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
