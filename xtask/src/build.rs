//! Release build: the XDP object is built by filter-userspace/build.rs and embedded.

#[derive(clap::Args, Default)]
pub struct Options {}

pub fn run(_: Options) -> anyhow::Result<()> {
    crate::setup::run(crate::setup::Options::default())?;
    release_build()?;
    println!(
        "built {}",
        crate::workspace_root()
            .join("target/release/floodgate")
            .display()
    );
    Ok(())
}

pub fn release_build() -> anyhow::Result<()> {
    crate::cargo(&[
        "build",
        "--release",
        "--package",
        "floodgate",
        "--bin",
        "floodgate",
    ])
}
