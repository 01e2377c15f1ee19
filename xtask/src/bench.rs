//! Benchmarks (never part of `cargo xtask test`): BPF_PROG_TEST_RUN cost per verdict path
//! beside an empty XDP_DROP program, measured interleaved in one run; then the daemon's
//! push-to-first-drop latency and 100k-entry push rate.

#[derive(clap::Args, Default)]
pub struct Options {}

pub fn run(_: Options) -> anyhow::Result<()> {
    crate::setup::run(crate::setup::Options::default())?;
    example("testrun_cost")?;
    // The daemon example starts the release binary it was built beside.
    crate::cargo(&["build", "--release", "--package", "floodgate"])?;
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/floodgate");
    // SAFETY: single-threaded at this point; the child cargo reads it.
    unsafe { std::env::set_var("FLOODGATE_BIN", bin) };
    example("daemon_push")
}

/// Run one of tests/examples, optimised.
fn example(name: &str) -> anyhow::Result<()> {
    crate::cargo(&[
        "run",
        "--release",
        "--package",
        "floodgate-tests",
        "--example",
        name,
    ])
}
