//! Install, idempotently, what building and testing floodgate need. Versions and paths are
//! derived at run time from the installed nightly toolchain; nothing is hard-coded.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

#[derive(clap::Args, Default)]
pub struct Options {
    /// Print each check, even those already satisfied.
    #[arg(long)]
    pub verbose: bool,
}

/// Debian packages the tests and demo use: ip, ping, nsenter (util-linux is always there).
/// prometheus: the daemon tests scrape it with a real Prometheus server and check it with promtool;
/// systemd: `systemd-analyze verify` checks the shipped unit.
/// curl: the demo talks to the daemon's API with it.
/// libpcap-dev: `floodgate capture` compiles its filter expressions with libpcap.
/// tcpdump: the capture tests read the pcapng files back with it.
/// tmux: the `top` test drives the terminal view in it.
/// nftables: the SYN guard's SYNPROXY completion path (`nft`) and its tests.
const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "nftables",
    "iputils-ping",
    "prometheus",
    "systemd",
    "curl",
    "libpcap-dev",
    "tcpdump",
    "tmux",
];

pub fn run(opts: Options) -> anyhow::Result<()> {
    let t = Instant::now();
    let sysroot = nightly_sysroot()?;
    rust_src(&sysroot, &opts)?;
    bpf_linker(&sysroot, &opts)?;
    bpffs(&opts)?;
    debian_packages(&opts)?;
    if opts.verbose {
        eprintln!("setup: all present ({:.2} s)", t.elapsed().as_secs_f64());
    }
    Ok(())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn step(msg: &str) {
    eprintln!("setup: {msg}");
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"])).context(
        "the nightly toolchain is needed to build the XDP program: install it with \
         `rustup toolchain install nightly --profile minimal`",
    )?;
    Ok(PathBuf::from(sysroot))
}

fn rust_src(sysroot: &Path, opts: &Options) -> anyhow::Result<()> {
    if sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
    {
        if opts.verbose {
            step("nightly rust-src: present");
        }
        return Ok(());
    }
    step("installing nightly rust-src (the eBPF build compiles core from source)");
    output(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context(
            "rustup could not add rust-src; check network access to the Rust toolchain server",
        )?;
    Ok(())
}

/// bpf-linker must link against the same LLVM as the nightly rustc that emits the bitcode.
/// Its default build wants a newer LLVM than this toolchain has, so it is built against the
/// toolchain's own libLLVM, found through a prefix directory of symlinks. The installed
/// linker loads LLVM from that directory at run time, so it is kept, per toolchain version.
fn bpf_linker(sysroot: &Path, opts: &Options) -> anyhow::Result<()> {
    if let Ok(out) = Command::new("bpf-linker").arg("--version").output() {
        if out.status.success() {
            if opts.verbose {
                step(&format!(
                    "bpf-linker: {}",
                    String::from_utf8_lossy(&out.stdout).trim()
                ));
            }
            return Ok(());
        }
    }
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let llvm = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc +nightly -vV` does not say its LLVM version")?;
    let major = llvm.split('.').next().unwrap_or(llvm);
    let release = vv
        .lines()
        .find_map(|l| l.strip_prefix("release: "))
        .unwrap_or("nightly");
    let libdir = sysroot.join("lib");
    let real = std::fs::read_dir(&libdir)
        .with_context(|| format!("reading {}", libdir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
                && std::fs::metadata(p)
                    .map(|m| m.len() > 1 << 20)
                    .unwrap_or(false)
        })
        .with_context(|| {
            format!(
                "no libLLVM.so.* in {}: is the nightly toolchain complete?",
                libdir.display()
            )
        })?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let prefix = cargo_home.join("floodgate-llvm").join(release);
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let soname = real.file_name().expect("a file");
    for name in [std::ffi::OsStr::new("libLLVM.so"), soname] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&real, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    step(&format!(
        "building bpf-linker against the nightly toolchain's LLVM {llvm} (a few minutes, once)"
    ));
    let status = Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            "^0.13",
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix)
        .status()
        .context("running cargo install bpf-linker")?;
    if !status.success() {
        bail!(
            "cargo install bpf-linker failed (LLVM_PREFIX={}, feature llvm-{major}); \
             see the output above",
            prefix.display()
        );
    }
    output(Command::new("bpf-linker").arg("--version"))
        .context("bpf-linker was installed but does not run")?;
    Ok(())
}

fn bpffs(opts: &Options) -> anyhow::Result<()> {
    let path = Path::new("/sys/fs/bpf");
    let mounted = Command::new("mountpoint")
        .arg("-q")
        .arg(path)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if mounted {
        if opts.verbose {
            step("bpffs: mounted at /sys/fs/bpf");
        }
        return Ok(());
    }
    step("mounting bpffs at /sys/fs/bpf");
    output(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("mounting bpffs needs root (CAP_SYS_ADMIN)")?;
    Ok(())
}

fn debian_packages(opts: &Options) -> anyhow::Result<()> {
    packages(DEBIAN_PACKAGES, opts.verbose)
}

/// The peers `cargo xtask bench` compares floodgate with, and the tools to set them up:
/// xdp-filter (xdp-tools), nftables, iptables + ipset, ethtool (GRO on veth for netfilter).
pub const BENCH_PACKAGES: &[&str] = &["xdp-tools", "nftables", "iptables", "ipset", "ethtool"];

/// Install whichever of `wanted` (Debian packages) are missing; quick when none are.
pub fn packages(wanted: &[&str], verbose: bool) -> anyhow::Result<()> {
    let out = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${db:Status-Abbrev}\n")
        .args(wanted)
        .output();
    let installed: Vec<String> = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.ends_with("ii ") || l.ends_with("ii"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect(),
        Err(_) => Vec::new(),
    };
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| !installed.iter().any(|i| i == p))
        .collect();
    if missing.is_empty() {
        if verbose {
            step(&format!("Debian packages: {} present", wanted.join(", ")));
        }
        return Ok(());
    }
    step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    output(Command::new("apt-get").arg("update").arg("-q")).context("apt-get update failed")?;
    output(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("apt-get install {} failed", missing.join(" ")))?;
    Ok(())
}
