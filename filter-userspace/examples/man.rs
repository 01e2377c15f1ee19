//! Writes the man pages (`floodgate::cli::man`) into a directory: `cargo xtask man` runs it.
//! It is an example of the library rather than part of xtask because building the library
//! builds the XDP object, which needs what `cargo xtask setup` installs: xtask itself must
//! build without it.

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: man DIR");
        return ExitCode::from(2);
    };
    match floodgate::cli::man::write_to(&dir) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("man: writing the pages into {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
