//! `cargo xtask package`: the Debian package, built by cargo-deb from the metadata in
//! filter-userspace/Cargo.toml. cargo-deb is installed here when missing (a pinned version,
//! verified with this machine's toolchain). The man pages and the shell completions are
//! generated from the CLI's own clap definition into target/package first, so the package
//! never carries a hand-kept copy.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The cargo-deb release this was verified with (it builds with the machine's rustc 1.95).
const CARGO_DEB_VERSION: &str = "3.8.0";

#[derive(clap::Args, Default)]
pub struct Options {}

pub fn run(_: Options) -> anyhow::Result<()> {
    crate::setup::run(crate::setup::Options::default())?;
    let deb = build()?;
    println!("built {}", deb.display());
    println!("install it with: dpkg -i {}", deb.display());
    Ok(())
}

/// Build the release binary, its man pages and completions, then the .deb; returns its path.
pub fn build() -> anyhow::Result<PathBuf> {
    cargo_deb()?;
    crate::build::release_build()?;
    let root = crate::workspace_root();
    let staging = root.join("target/package");
    let bin = root.join("target/release/floodgate");
    man_pages(&staging.join("man"))?;
    completions(&bin, &staging.join("completions"))?;
    let out_dir = root.join("target/debian");
    let out = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["deb", "--package", "floodgate", "--no-build", "--output"])
        .arg(&out_dir)
        .output()
        .context("running cargo deb")?;
    if !out.status.success() {
        bail!(
            "cargo deb failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // cargo deb prints the path of the package it wrote.
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let deb = PathBuf::from(path.lines().last().unwrap_or_default());
    if !deb.is_file() {
        bail!("cargo deb wrote no package (it said: {path})");
    }
    Ok(deb)
}

/// Install cargo-deb unless this version is there.
fn cargo_deb() -> anyhow::Result<()> {
    let have = Command::new(env!("CARGO"))
        .args(["deb", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if have.contains(CARGO_DEB_VERSION) {
        return Ok(());
    }
    eprintln!("package: installing cargo-deb {CARGO_DEB_VERSION} (once, about a minute)");
    crate::cargo(&[
        "install",
        "cargo-deb",
        "--locked",
        "--version",
        CARGO_DEB_VERSION,
    ])
}

/// The man pages, generated (`cargo xtask man`) and compressed as Debian installs them.
fn man_pages(dir: &Path) -> anyhow::Result<()> {
    // Pages of an older build must not linger in the package.
    let _ = std::fs::remove_dir_all(dir);
    crate::man::run(crate::man::Options {
        out: Some(dir.to_path_buf()),
    })?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let status = Command::new("gzip")
            .args(["-9", "-n", "-f"])
            .arg(&path)
            .status()
            .context("running gzip")?;
        if !status.success() {
            bail!("gzip {} failed", path.display());
        }
    }
    Ok(())
}

/// The completion scripts, as the binary itself prints them.
fn completions(bin: &Path, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (shell, file) in [
        ("bash", "floodgate.bash"),
        ("zsh", "_floodgate"),
        ("fish", "floodgate.fish"),
    ] {
        let out = Command::new(bin)
            .args(["completions", shell])
            .output()
            .with_context(|| format!("running {} completions {shell}", bin.display()))?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!(
                "floodgate completions {shell} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let path = dir.join(file);
        std::fs::write(&path, &out.stdout)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
