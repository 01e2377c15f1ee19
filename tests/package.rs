//! The Debian package (`cargo xtask package`) on this machine, as an operator installs it:
//! `dpkg -i`, the binary, the man pages, the completions, the unit, the conffile; `dpkg -r`
//! leaves only the conffile, `dpkg -P` leaves nothing. `cargo xtask test` builds the package
//! first and names it in FLOODGATE_DEB. Run as root.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The package under test: FLOODGATE_DEB, else the newest target/debian/floodgate_*.deb.
fn package() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOODGATE_DEB") {
        return PathBuf::from(p);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop().unwrap_or_else(|| {
        panic!(
            "no package in {}: build it with `cargo xtask package` (cargo xtask test does)",
            dir.display()
        )
    })
}

/// Run a command; its stdout, or a panic with its stderr.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges the package when the test ends, however it ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "floodgate"]).output();
    }
}

const FILES: &[&str] = &[
    "/usr/sbin/floodgate",
    "/lib/systemd/system/floodgate.service",
    "/usr/share/man/man8/floodgate.8.gz",
    "/usr/share/bash-completion/completions/floodgate",
    "/usr/share/zsh/vendor-completions/_floodgate",
    "/usr/share/fish/vendor_completions.d/floodgate.fish",
    "/usr/share/floodgate/grafana/floodgate-dashboard.json",
    "/usr/share/doc/floodgate/examples/floodgate.toml",
];
const CONFFILE: &str = "/etc/floodgate/floodgate.toml";

#[test]
fn the_debian_package_installs_runs_and_removes_cleanly() {
    let deb = package();
    let deb = deb.to_str().expect("UTF-8 path");
    let _purge = Installed;
    run("dpkg", &["--install", deb]);
    for f in FILES.iter().chain([&CONFFILE]) {
        assert!(Path::new(f).exists(), "{f} installed");
    }
    let version = run("/usr/sbin/floodgate", &["--version"]);
    assert!(
        version.starts_with("floodgate ") && version.contains(env!("CARGO_PKG_VERSION")),
        "--version: {version}"
    );
    // Every verb group has its page, found the way `man` finds it.
    for page in ["floodgate", "floodgate-block", "floodgate-run"] {
        let path = run("man", &["-w", page]);
        assert!(
            path.contains("/usr/share/man/man8/"),
            "man -w {page}: {path}"
        );
    }
    let verify = Command::new("systemd-analyze")
        .args(["verify", "/lib/systemd/system/floodgate.service"])
        .output()
        .expect("systemd-analyze");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // The shipped configuration is valid as it is (all defaults).
    run("/usr/sbin/floodgate", &["run", "--check-config", CONFFILE]);
    assert!(
        run(
            "dpkg-query",
            &["--showformat=${Conffiles}", "--show", "floodgate"]
        )
        .contains(CONFFILE),
        "the configuration is a conffile"
    );

    // Removed: everything but the conffile goes. Purged: that goes too.
    run("dpkg", &["--remove", "floodgate"]);
    for f in FILES {
        assert!(!Path::new(f).exists(), "{f} left behind by dpkg -r");
    }
    assert!(Path::new(CONFFILE).exists(), "dpkg -r keeps the conffile");
    run("dpkg", &["--purge", "floodgate"]);
    assert!(
        !Path::new("/etc/floodgate").exists(),
        "dpkg -P leaves nothing"
    );
}
