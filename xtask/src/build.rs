//! Release build: the XDP object is built by filter-userspace/build.rs and embedded.

use std::process::Command;

use anyhow::{Context as _, bail};

#[derive(clap::Args, Default)]
pub struct Options {}

pub fn run(_: Options) -> anyhow::Result<()> {
    crate::setup::run(crate::setup::Options::default())?;
    release_build()?;
    println!(
        "built {}",
        crate::workspace_root()
            .join("target/release/floodgate")
            .display()
    );
    Ok(())
}

pub fn release_build() -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO"))
        .current_dir(crate::workspace_root())
        .args([
            "build",
            "--release",
            "--package",
            "floodgate",
            "--bin",
            "floodgate",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed (see above)");
    }
    Ok(())
}
