//! Builds the XDP object (filter-ebpf) for bpfel-unknown-none with the nightly toolchain and
//! bpf-linker, and leaves it in OUT_DIR for `include_bytes_aligned!`. `cargo xtask setup`
//! installs what this needs; a missing piece fails here with the fix in the message.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("no workspace root"))?;
    let ebpf_dir = root.join("filter-ebpf");
    let common_dir = root.join("filter-common");
    // aya-build watches filter-ebpf; the shared types change the object too.
    println!("cargo:rerun-if-changed={}", common_dir.display());
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path to filter-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "filter-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context(
        "building the XDP object failed; run `cargo xtask setup` to install the nightly \
         rust-src component and bpf-linker",
    )
}
