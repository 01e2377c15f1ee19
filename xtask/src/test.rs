//! The whole test suite: host unit tests, then the privileged tests (packet fixtures through
//! BPF_PROG_TEST_RUN, end to end in namespaces), single-threaded because they share the kernel.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

#[derive(clap::Args, Default)]
pub struct Options {
    /// Only run tests whose name contains this.
    pub filter: Option<String>,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    crate::setup::run(crate::setup::Options::default())?;
    let root = crate::workspace_root();
    // House rules first: formatting, then clippy with every warning an error, on the host
    // crates (the XDP crates are checked by their own bpfel build, warnings shown).
    crate::cargo(&["fmt", "--all", "--check"])
        .context("code is not formatted: run `cargo fmt --all`")?;
    crate::cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "filter-ebpf",
        "--exclude",
        "bench-ebpf",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ])
    .context("clippy found something (see above)")?;
    // The end-to-end tests drive the real binary; tests/package.rs installs the package.
    crate::cargo(&["build", "--package", "floodgate", "--bin", "floodgate"])?;
    let deb = crate::package::build().context("building the Debian package")?;
    let bin = root.join("target/debug/floodgate");
    // No doctests: the crates have none, and each empty run would print a "0 passed" line.
    let mut args = vec![
        "test",
        "--workspace",
        "--exclude",
        "filter-ebpf",
        "--exclude",
        "bench-ebpf",
        "--lib",
        "--bins",
        "--tests",
        "--",
        "--test-threads=1",
    ];
    if let Some(f) = opts.filter.as_deref() {
        args.push(f);
    }
    let mut child = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(&args)
        .env("FLOODGATE_BIN", &bin)
        .env("FLOODGATE_DEB", &deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    // Echo everything, and add up the per-binary summaries into one closing line.
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, "passed");
            failed += count(rest, "failed");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!("all tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("tests failed (see above)");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// The number before `label` in a libtest summary such as "ok. 8 passed; 0 failed; ...".
fn count(summary: &str, label: &str) -> u64 {
    summary
        .split(';')
        .map(|part| {
            part.trim()
                .trim_start_matches("ok.")
                .trim_start_matches("FAILED.")
                .trim()
        })
        .find_map(|part| part.strip_suffix(label))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_libtest_summaries() {
        let ok = "ok. 8 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.1s";
        assert_eq!(
            (super::count(ok, "passed"), super::count(ok, "failed")),
            (8, 0),
            "ok summary"
        );
        let bad = "FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(
            (super::count(bad, "passed"), super::count(bad, "failed")),
            (3, 2),
            "failed summary"
        );
    }
}
