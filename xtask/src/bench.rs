//! Benchmarks (never part of `cargo xtask test`): for now BPF_PROG_TEST_RUN cost per verdict
//! path beside an empty XDP_DROP program, measured interleaved in one run.

use std::process::Command;

use anyhow::{Context as _, bail};

#[derive(clap::Args, Default)]
pub struct Options {}

pub fn run(_: Options) -> anyhow::Result<()> {
    crate::setup::run(crate::setup::Options::default())?;
    let status = Command::new(env!("CARGO"))
        .current_dir(crate::workspace_root())
        .args([
            "run",
            "--release",
            "--package",
            "floodgate-tests",
            "--example",
            "testrun_cost",
        ])
        .status()
        .context("running the test_run benchmark")?;
    if !status.success() {
        bail!("the test_run benchmark failed (see above)");
    }
    Ok(())
}
