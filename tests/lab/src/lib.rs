//! A lab of test hosts: network namespaces joined by a veth pair, addressed from the
//! benchmarking ranges 198.18.0.0/15 and 2001:db8::/32 only. Everything created here is removed
//! on `Drop` (also when a test panics); namespaces left by a killed run are swept on the next.
//!
//! Also: running code or commands inside a namespace without hiding bpffs (`setns`/`nsenter`,
//! never `ip netns exec`), and a raw frame generator for floods with spoofed sources.

use std::{
    fs::File,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};

pub mod traffic;

/// Run a command, failing with its stderr when it fails.
pub fn sh(cmd: &str, args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// One network namespace, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(name: &str) -> anyhow::Result<Netns> {
        // A leftover from a killed run would make `add` fail: remove it first.
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh("ip", &["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ...`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    /// A command inside this namespace, keeping the caller's mounts (so bpffs pins stay
    /// visible, unlike `ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        c
    }

    /// Run `f` on a thread that has joined this namespace (sockets it opens live here).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| {
                let file =
                    File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                // SAFETY: valid namespace fd; setns only affects this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error()).context("setns");
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in {} panicked", self.name))?
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys its interfaces, and with them any XDP attachment.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Remove namespaces and bpffs pin directories named `{prefix}{pid}...` whose creating
/// process is gone (a killed test run cannot clean up after itself).
pub fn sweep_stale(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if pid.is_empty() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = Command::new("ip").args(["netns", "del", name]).output();
    }
    // Private pin directories (labs and test_run harnesses) of processes that are gone.
    let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Addresses of the two-host lab.
pub const VICTIM_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const ATTACKER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const VICTIM_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const ATTACKER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// Interface names inside each namespace.
pub const VICTIM_IF: &str = "fg-victim";
pub const ATTACKER_IF: &str = "fg-attacker";

/// Two hosts joined by a veth pair: the attacker (and every other source) on one side, the
/// victim, where floodgate runs, on the other. Also owns a private pin directory.
pub struct Lab {
    pub attacker: Netns,
    pub victim: Netns,
    pub pin_dir: PathBuf,
}

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// A lab with names unique to this process; `tag` (a few letters) shows in the names.
    pub fn new(tag: &str) -> anyhow::Result<Lab> {
        sweep_stale("fgt");
        let n = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        let base = format!("fgt{}{tag}{n}", std::process::id());
        Lab::with_names(
            &format!("{base}a"),
            &format!("{base}v"),
            &format!("/sys/fs/bpf/{base}"),
        )
    }

    pub fn with_names(attacker: &str, victim: &str, pin_dir: &str) -> anyhow::Result<Lab> {
        let attacker = Netns::create(attacker)?;
        let victim = Netns::create(victim)?;
        let lab = Lab {
            attacker,
            victim,
            pin_dir: PathBuf::from(pin_dir),
        };
        let _ = std::fs::remove_dir_all(&lab.pin_dir);
        sh(
            "ip",
            &[
                "link",
                "add",
                ATTACKER_IF,
                "netns",
                lab.attacker.name(),
                "type",
                "veth",
                "peer",
                "name",
                VICTIM_IF,
                "netns",
                lab.victim.name(),
            ],
        )?;
        for (ns, ifname, v4, v6) in [
            (&lab.attacker, ATTACKER_IF, ATTACKER_V4, ATTACKER_V6),
            (&lab.victim, VICTIM_IF, VICTIM_V4, VICTIM_V6),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/15"), "dev", ifname])?;
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/32"),
                "dev",
                ifname,
                "nodad",
            ])?;
            ns.ip(&["link", "set", ifname, "up"])?;
        }
        // Spoofed sources must get replies routed back to the attacker side.
        lab.victim
            .ip(&["route", "add", "198.18.0.0/15", "dev", VICTIM_IF])
            .ok();
        Ok(lab)
    }

    /// MAC address of an interface in a namespace.
    pub fn mac(ns: &Netns, ifname: &str) -> anyhow::Result<[u8; 6]> {
        let out = ns.ip(&["-br", "link", "show", ifname])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = text
            .split_whitespace()
            .nth(2)
            .context("no MAC in `ip -br link`")?;
        let mut mac = [0u8; 6];
        for (i, part) in field.split(':').enumerate().take(6) {
            mac[i] = u8::from_str_radix(part, 16).context("bad MAC")?;
        }
        Ok(mac)
    }

    /// Send `n` raw UDP frames (spoofed sources allowed) from the attacker's veth to the
    /// victim's IPv4 address. `frame(i)` gives frame i's (source, source port, destination
    /// port). Returns the seconds it took.
    pub fn spray_udp(
        &self,
        n: u64,
        payload_len: usize,
        frame: impl Fn(u64) -> (Ipv4Addr, u16, u16) + Send,
    ) -> anyhow::Result<f64> {
        let victim_mac = Lab::mac(&self.victim, VICTIM_IF)?;
        let attacker_mac = Lab::mac(&self.attacker, ATTACKER_IF)?;
        self.attacker.run(move || -> anyhow::Result<f64> {
            let tx = traffic::RawSender::open(ATTACKER_IF)?;
            let payload = vec![0xab; payload_len];
            let started = std::time::Instant::now();
            for i in 0..n {
                let (src, sport, dport) = frame(i);
                let f = traffic::udp_frame(
                    attacker_mac,
                    victim_mac,
                    src.into(),
                    VICTIM_V4.into(),
                    sport,
                    dport,
                    &payload,
                );
                tx.send(&f)?;
            }
            Ok(started.elapsed().as_secs_f64())
        })?
    }

    /// Add extra addresses to the attacker side (polite or blocked sources that must get replies).
    pub fn add_attacker_addr(&self, addr: &str) -> anyhow::Result<()> {
        let args: Vec<&str> = if addr.contains(':') {
            vec!["-6", "addr", "add", addr, "dev", ATTACKER_IF, "nodad"]
        } else {
            vec!["addr", "add", addr, "dev", ATTACKER_IF]
        };
        self.attacker.ip(&args).map(drop)
    }

    /// ping from the attacker side; true if every reply came back.
    pub fn ping(&self, src: &str, dst: &str, count: u32) -> bool {
        let out = self
            .attacker
            .command("ping")
            .args([
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-W",
                "1",
                "-I",
                src,
                dst,
            ])
            .output();
        matches!(out, Ok(o) if o.status.success())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The namespaces go with their own Drop (taking the veth and its XDP program along).
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}
