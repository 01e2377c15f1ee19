//! The whole test suite: host unit tests, then the privileged tests (packet fixtures through
//! BPF_PROG_TEST_RUN, end to end in namespaces), single-threaded because they share the kernel.

use std::process::Command;

use anyhow::{Context as _, bail};

#[derive(clap::Args, Default)]
pub struct Options {
    /// Only run tests whose name contains this.
    pub filter: Option<String>,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    crate::setup::run(crate::setup::Options::default())?;
    let root = crate::workspace_root();
    // The end-to-end tests drive the real binary.
    cargo(&["build", "--package", "floodgate", "--bin", "floodgate"])?;
    let bin = root.join("target/debug/floodgate");
    let mut args = vec![
        "test",
        "--workspace",
        "--exclude",
        "filter-ebpf",
        "--",
        "--test-threads=1",
    ];
    if let Some(f) = opts.filter.as_deref() {
        args.push(f);
    }
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(&args)
        .env("FLOODGATE_BIN", &bin)
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("tests failed (see above)");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO"))
        .current_dir(crate::workspace_root())
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}
