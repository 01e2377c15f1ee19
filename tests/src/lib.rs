//! Shared pieces of the privileged tests: a packet builder for fixtures, a BPF_PROG_TEST_RUN
//! harness with its own pin directory, and a runner for the real `floodgate` binary.

pub mod bench;
pub mod daemon;
pub mod packet;

use std::{
    path::{Path, PathBuf},
    process::Output,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::programs::{TestRun, TestRunOptions};
use filter_common::{Counter, REASON_COUNT, Reason};
use floodgate::{
    loader::{self, PinDir},
    state::{Access, State},
};

/// The XDP program loaded (not attached) with fresh maps under a private pin directory,
/// removed on drop.
pub struct Harness {
    pub state: State,
    _pins: PinGuard,
}

/// Removes a private pin directory on drop, also when loading panics half-way.
struct PinGuard(PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Harness {
    pub fn new() -> Harness {
        floodgate_lab::sweep_stale("fgt");
        let root = PathBuf::from(format!(
            "/sys/fs/bpf/fgt{}h{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let pins = PinGuard(root.clone());
        let mut state = State::open(&PinDir::new(&root), Access::Write)
            .unwrap_or_else(|e| panic!("opening state under {}: {e}", root.display()));
        loader::program(&mut state.ebpf)
            .unwrap_or_else(|e| panic!("loading the XDP program: {}", floodgate::error::chain(&e)));
        Harness { state, _pins: pins }
    }

    /// The harness's pin directory (its maps are pinned under `maps/`).
    pub fn pin_dir(&self) -> &Path {
        &self._pins.0
    }

    /// The pinned map `name`, opened afresh (for fixtures that set what no verb sets yet).
    pub fn pinned_map(&self, name: &str) -> aya::maps::MapData {
        aya::maps::MapData::from_pin(self.pin_dir().join("maps").join(name))
            .unwrap_or_else(|e| panic!("opening pinned map {name}: {e}"))
    }

    /// Every STATS slot: the enforced row, then the dry-run row.
    pub fn counters(&self) -> Vec<Counter> {
        let stats = &self.state.stats;
        let live = stats.read().expect("reading STATS");
        let dry = stats.read_dry_run().expect("reading STATS (dry-run row)");
        live.iter().chain(dry.iter()).map(|(_, c)| *c).collect()
    }

    /// Run one frame through BPF_PROG_TEST_RUN: the XDP action and the one enforced reason
    /// counted (a dry-run count fails the test: use [`Harness::run_any`]).
    pub fn run(&mut self, frame: &[u8]) -> (u32, Reason) {
        let (action, reason, dry_run) = self.run_any(frame);
        assert!(
            !dry_run,
            "counted as dry-run {reason:?}, expected an enforced verdict"
        );
        (action, reason)
    }

    /// Run one frame: the XDP action, the reason, and whether it was counted in the dry-run
    /// row. Exactly one slot of the two rows must count it, with the frame's exact length.
    pub fn run_any(&mut self, frame: &[u8]) -> (u32, Reason, bool) {
        let (action, reason, dry_run, _) = self.run_out(frame);
        (action, reason, dry_run)
    }

    /// [`Harness::run_any`], and the frame as the program left it (an XDP_TX reply).
    pub fn run_out(&mut self, frame: &[u8]) -> (u32, Reason, bool, Vec<u8>) {
        let before = self.counters();
        let prog = loader::program(&mut self.state.ebpf).expect("program");
        let mut out = vec![0u8; 4096];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat: 1,
                ..TestRunOptions::default()
            })
            .unwrap_or_else(|e| panic!("test_run of a {}-byte frame: {e}", frame.len()));
        out.truncate(result.data_size_out as usize);
        let after = self.counters();
        let changed: Vec<usize> = (0..after.len())
            .filter(|i| after[*i].packets != before[*i].packets)
            .collect();
        assert_eq!(
            changed.len(),
            1,
            "exactly one STATS slot must count each frame, got slots {changed:?}"
        );
        let slot = changed[0];
        assert_eq!(
            after[slot].packets - before[slot].packets,
            1,
            "one packet counted"
        );
        assert_eq!(
            after[slot].bytes - before[slot].bytes,
            frame.len() as u64,
            "bytes counted must be the frame length"
        );
        let reason = filter_common::REASONS[slot % REASON_COUNT];
        (result.return_value, reason, slot >= REASON_COUNT, out)
    }
}

impl Default for Harness {
    fn default() -> Harness {
        Harness::new()
    }
}

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// The `floodgate` binary under test: FLOODGATE_BIN (set by `cargo xtask test`), else the
/// debug build next to this workspace.
pub fn floodgate_bin() -> PathBuf {
    std::env::var_os("FLOODGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/floodgate"))
}

/// The real CLI with `args`, to run inside `ns` with the pin directory `pin_dir`.
pub fn floodgate_command(
    ns: &floodgate_lab::Netns,
    pin_dir: &Path,
    args: &[&str],
) -> std::process::Command {
    let mut cmd = ns.command(floodgate_bin().to_str().expect("UTF-8 path"));
    cmd.arg("--pin-dir").arg(pin_dir).args(args);
    cmd
}

/// Run the real CLI inside the lab's victim namespace with the lab's pin directory.
pub fn floodgate(lab: &floodgate_lab::Lab, args: &[&str]) -> Output {
    floodgate_command(&lab.victim, &lab.pin_dir, args)
        .output()
        .unwrap_or_else(|e| panic!("running floodgate {}: {e}", args.join(" ")))
}

/// Start the real CLI in the lab (output discarded), for a test that kills it part-way.
pub fn floodgate_spawn(lab: &floodgate_lab::Lab, args: &[&str]) -> std::process::Child {
    floodgate_command(&lab.victim, &lab.pin_dir, args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting floodgate {}: {e}", args.join(" ")))
}

/// Run the CLI and insist it succeeds; returns stdout.
pub fn floodgate_ok(lab: &floodgate_lab::Lab, args: &[&str]) -> String {
    let out = floodgate(lab, args);
    assert!(
        out.status.success(),
        "floodgate {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `floodgate stats --json` as (packets, bytes) for one reason.
pub fn stat(lab: &floodgate_lab::Lab, reason: &str) -> (u64, u64) {
    let json: serde_json::Value = serde_json::from_str(&floodgate_ok(lab, &["stats", "--json"]))
        .expect("stats --json is JSON");
    let r = &json["reasons"][reason];
    (
        r["packets"].as_u64().expect("packets"),
        r["bytes"].as_u64().expect("bytes"),
    )
}

/// A fixture table, one row per line: `table! { row: "what", setup, frame, Reason; ... }`
/// is `vec![row("what", setup, frame, Reason), ...]`. Each row names the function that builds
/// it (`row`, `dry`, `case`, ...). Braces keep rustfmt from spreading a row over five lines,
/// so a table reads as one: description, input, expected verdict.
#[macro_export]
macro_rules! table {
    ($($f:ident: $($arg:expr),+;)*) => {
        vec![$($f($($arg),+)),*]
    };
}
