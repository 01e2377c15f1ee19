//! `cargo xtask`: everything from a fresh machine to a running demo. Each subcommand first runs
//! `setup`, which installs what is missing and takes well under 2 s when nothing is.

use clap::{Parser, Subcommand};

mod bench;
mod build;
mod demo;
mod man;
mod package;
mod setup;
mod test;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "floodgate's set-up, build, test and demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need (idempotent): nightly rust-src, bpf-linker
    /// against the nightly toolchain's LLVM, bpffs mounted, Debian packages.
    Setup(setup::Options),
    /// Build everything in release mode; the binary lands in target/release/floodgate.
    Build(build::Options),
    /// Run every test: unit tests, packet fixtures (BPF_PROG_TEST_RUN), end to end in netns.
    Test(test::Options),
    /// A guided attack on a lab of network namespaces, with live counters.
    Demo(demo::Options),
    /// Benchmarks: writes BENCHMARKS.md (test_run cost, live flood, netfilter, bulk load, push).
    Bench(bench::Options),
    /// Man pages from the CLI's clap definition: floodgate(8) and one per verb, in target/man.
    Man(man::Options),
    /// The Debian package (cargo-deb, installed if missing): binary, unit, conffile, man
    /// pages, completions, dashboard; written to target/debian.
    Package(package::Options),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(o) => setup::run(o),
        Command::Build(o) => build::run(o),
        Command::Test(o) => test::run(o),
        Command::Demo(o) => demo::run(o),
        Command::Bench(o) => bench::run(o),
        Command::Man(o) => man::run(o),
        Command::Package(o) => package::run(o),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_path_buf()
}

/// Run cargo in the workspace root, failing with the command line when it fails.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let status = std::process::Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        anyhow::bail!("cargo {} failed (see above)", args.join(" "));
    }
    Ok(())
}
