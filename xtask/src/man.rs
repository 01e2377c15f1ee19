//! Man pages generated from the clap definition (`floodgate::cli::man`): floodgate(8) and one
//! page per verb. xtask cannot link the library itself (building it builds the XDP object,
//! which needs what `setup` installs), so the library's `man` example writes them.

use std::path::PathBuf;

use anyhow::Context as _;

#[derive(clap::Args, Default)]
pub struct Options {
    /// Directory to write the pages into (created if missing) [default: target/man]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    crate::setup::run(crate::setup::Options::default())?;
    let out = match opts.out {
        // Relative to where the command was given: cargo runs in the workspace root.
        Some(dir) => std::env::current_dir()
            .context("reading the current directory")?
            .join(dir),
        None => crate::workspace_root().join("target/man"),
    };
    let dir = out.to_str().context("the output directory is not UTF-8")?;
    crate::cargo(&[
        "run",
        "--quiet",
        "--package",
        "floodgate",
        "--example",
        "man",
        "--",
        dir,
    ])?;
    println!(
        "read one with: man -l {}",
        out.join("floodgate.8").display()
    );
    Ok(())
}
