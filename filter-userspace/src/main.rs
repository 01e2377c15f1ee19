//! The `floodgate` command. Exit status: 0 success, 1 failure (one line on stderr saying what
//! to do), 2 bad usage (from clap).

use std::process::ExitCode;

fn main() -> ExitCode {
    match floodgate::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floodgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
