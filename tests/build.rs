//! Builds the benchmarks' own XDP programs (tests/bench-ebpf: the empty XDP_DROP floor and the
//! live-frames flood generator, the cache-miss yardstick) for bpfel-unknown-none, into OUT_DIR for
//! `include_bytes_aligned!` in src/bench.rs. They are not part of the product, so the
//! `floodgate` binary does not carry them. `cargo xtask setup` installs what this needs.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let dir = manifest_dir.join("bench-ebpf");
    let dir = dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path to bench-ebpf"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "bench-ebpf",
            root_dir: dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context(
        "building the benchmark XDP programs failed; run `cargo xtask setup` to install the \
         nightly rust-src component and bpf-linker",
    )
}
