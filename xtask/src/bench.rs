//! Benchmarks (never part of `cargo xtask test`): for now BPF_PROG_TEST_RUN cost per verdict
//! path beside an empty XDP_DROP program, measured interleaved in one run.

#[derive(clap::Args, Default)]
pub struct Options {}

pub fn run(_: Options) -> anyhow::Result<()> {
    crate::setup::run(crate::setup::Options::default())?;
    crate::cargo(&[
        "run",
        "--release",
        "--package",
        "floodgate-tests",
        "--example",
        "testrun_cost",
    ])
}
