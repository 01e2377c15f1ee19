//! `cargo xtask demo`: a guided flood on a lab of two network namespaces. The attacker side
//! floods the victim from a blocklisted botnet range (IPv4 and IPv6, spoofed sources, raw
//! frames); floodgate on the victim drops it in XDP while a legitimate host keeps working.
//! The lab is removed at the end, on error, and on Ctrl-C.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use floodgate_lab::{ATTACKER_IF, ATTACKER_V4, Lab, VICTIM_IF, VICTIM_V4, VICTIM_V6, traffic};

#[derive(clap::Args)]
pub struct Options {
    /// How long the flood runs.
    #[arg(long, default_value = "6")]
    flood_seconds: u64,
}

static STOP: AtomicBool = AtomicBool::new(false);

fn stopped() -> anyhow::Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted; the lab has been removed");
    }
    Ok(())
}

fn pause(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        stopped()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn heading(n: u32, text: &str) {
    println!("\n\x1b[1m== {n}. {text}\x1b[0m");
}

struct Demo {
    lab: Lab,
    bin: std::path::PathBuf,
}

/// Arguments as a shell line: those with spaces or quotes in single quotes.
fn shell_words(args: &[&str]) -> String {
    let shown: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains([' ', '"']) {
                format!("'{a}'")
            } else {
                a.to_string()
            }
        })
        .collect();
    shown.join(" ")
}

impl Demo {
    /// Run floodgate in the victim namespace, echoing the command line and its output.
    fn fg(&self, args: &[&str]) -> anyhow::Result<String> {
        stopped()?;
        println!("\x1b[36m$ floodgate {}\x1b[0m", shell_words(args));
        let out = self.fg_quiet(args)?;
        print!("{out}");
        Ok(out)
    }

    fn fg_quiet(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .lab
            .victim
            .command(self.bin.to_str().context("non-UTF-8 path")?)
            .arg("--pin-dir")
            .arg(&self.lab.pin_dir)
            .args(args)
            .output()
            .context("running floodgate")?;
        if !out.status.success() {
            bail!(
                "floodgate {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn ping(&self, src: &str, dst: &str) -> bool {
        let ok = self.lab.ping(src, dst, 3);
        println!(
            "  ping {src} -> {dst}: {}",
            if ok {
                "3/3 replies"
            } else {
                "no replies (dropped)"
            }
        );
        ok
    }

    fn counters(&self) -> anyhow::Result<Vec<(String, u64, u64)>> {
        let v: serde_json::Value = serde_json::from_str(&self.fg_quiet(&["stats", "--json"])?)?;
        let mut out = Vec::new();
        for r in ["pass", "allowlist", "blocklist", "malformed"] {
            let c = &v["reasons"][r];
            out.push((
                r.to_string(),
                c["packets"].as_u64().unwrap_or(0),
                c["bytes"].as_u64().unwrap_or(0),
            ));
        }
        Ok(out)
    }
}

impl Demo {
    /// One counter from `stats --json`: `section` is "reasons" or "dry_run".
    fn stat(&self, section: &str, reason: &str) -> anyhow::Result<u64> {
        let v: serde_json::Value = serde_json::from_str(&self.fg_quiet(&["stats", "--json"])?)?;
        Ok(v[section][reason]["packets"].as_u64().unwrap_or(0))
    }

    /// Send `n` UDP frames from random sources in 198.18.128.0/17 to the victim; `ports(r)`
    /// gives (source port, destination port). Returns the seconds it took.
    fn spray(&self, n: u64, ports: fn(u64) -> (u16, u16)) -> anyhow::Result<f64> {
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let draws: Vec<u64> = (0..n).map(|_| next(&mut rng)).collect();
        self.lab.spray_udp(n, 256, move |i| {
            let r = draws[i as usize];
            let src = Ipv4Addr::new(198, 18, 128 | (r >> 8) as u8 & 0x7f, (r >> 16) as u8);
            let (sport, dport) = ports(r);
            (src, sport, dport)
        })
    }
}

/// floodgate on the attacker's veth too, under its own pin directory: on veth, XDP_TX replies
/// (the SYN guard's SYN-ACKs) are delivered only to a peer that has an XDP program. Detached
/// and purged on drop.
struct PeerXdp<'a>(&'a Demo);

const PEER_PIN_DIR: &str = "/sys/fs/bpf/floodgate-demo-peer";

impl PeerXdp<'_> {
    fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = self
            .0
            .lab
            .attacker
            .command(self.0.bin.to_str().context("non-UTF-8 path")?)
            .args(["--pin-dir", PEER_PIN_DIR])
            .args(args)
            .output()
            .context("running floodgate on the attacker side")?;
        if !out.status.success() {
            bail!(
                "floodgate {} (attacker side) failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for PeerXdp<'_> {
    fn drop(&mut self) {
        let _ = self.run(&["detach", "--all", "--purge"]);
        let _ = std::fs::remove_dir_all(PEER_PIN_DIR);
    }
}

fn synguard_act(d: &Demo) -> anyhow::Result<()> {
    const PORT: u16 = 8443;
    println!(
        "  a listener on {VICTIM_V4}:{PORT}; the flood sends SYNs from random sources, each one a\n  \
         half-open connection for the kernel to remember. With the guard, XDP answers every SYN\n  \
         with a SYN-ACK cookie and only a client that got one can finish the handshake.\n  \
         (veth: floodgate goes on the attacker's side too, so the SYN-ACKs are delivered.)"
    );
    let peer = PeerXdp(d);
    let _ = std::fs::remove_dir_all(PEER_PIN_DIR);
    peer.run(&["attach", ATTACKER_IF])?;
    d.fg(&["synguard", "on", "--port", &PORT.to_string()])?;
    let bind = std::net::SocketAddr::new(VICTIM_V4.into(), PORT);
    let listener = d
        .lab
        .victim
        .run(move || traffic::tcp_listen(bind))
        .context("victim namespace")??;
    let victim_mac = Lab::mac(&d.lab.victim, VICTIM_IF)?;
    let attacker_mac = Lab::mac(&d.lab.attacker, ATTACKER_IF)?;
    let stop = AtomicBool::new(false);
    let (c0, b0) = (
        d.stat("reasons", "syn_cookie")?,
        d.stat("reasons", "bad_cookie")?,
    );
    let (sent, ok, tried, secs) = std::thread::scope(|s| -> anyhow::Result<_> {
        let server = s.spawn(|| traffic::tcp_echo_server(&listener, &stop));
        let flooder = s.spawn(|| {
            d.lab.attacker.run(|| -> anyhow::Result<u64> {
                let tx = traffic::RawSender::open(ATTACKER_IF)?;
                let mut rng = 0x9E37_79B9_7F4A_7C15u64;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && !STOP.load(Ordering::Relaxed) {
                    let r = next(&mut rng);
                    let src = Ipv4Addr::new(198, 18, 128 | (r >> 8) as u8 & 0x7f, r as u8);
                    let frame = traffic::tcp_syn_frame(
                        attacker_mac,
                        victim_mac,
                        src.into(),
                        VICTIM_V4.into(),
                        1024 + (r >> 16) as u16 % 60000,
                        PORT,
                        (r >> 32) as u32,
                    );
                    if tx.send(&frame).is_ok() {
                        n += 1;
                    }
                }
                Ok(n)
            })
        });
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        // Exchanges back to back for 2 s of flood.
        let (ok, tried) = d.lab.attacker.run(|| {
            let (mut ok, mut tried) = (0, 0);
            let end = Instant::now() + Duration::from_secs(2);
            while Instant::now() < end && !STOP.load(Ordering::Relaxed) {
                tried += 1;
                let msg = format!("hello {tried}\n");
                if traffic::tcp_exchange(
                    IpAddr::V4(ATTACKER_V4),
                    bind,
                    msg.as_bytes(),
                    Duration::from_secs(2),
                )
                .as_deref()
                    == Some(msg.as_bytes())
                {
                    ok += 1;
                }
            }
            (ok, tried)
        })?;
        let secs = started.elapsed().as_secs_f64() + 0.3;
        stop.store(true, Ordering::Relaxed);
        let _ = server.join();
        let sent = flooder
            .join()
            .map_err(|_| anyhow::anyhow!("the flood thread panicked"))???;
        Ok((sent, ok, tried, secs))
    })?;
    println!(
        "  {sent} spoofed SYNs in {secs:.1} s ({:.0}/s); the client completed {ok} of {tried} \
         connect + echo exchanges meanwhile",
        sent as f64 / secs
    );
    println!(
        "  answered from XDP (syn_cookie): {}   dropped ACKs without a cookie (bad_cookie): {}",
        d.stat("reasons", "syn_cookie")? - c0,
        d.stat("reasons", "bad_cookie")? - b0
    );
    d.fg(&["synguard", "status"])?;
    d.fg(&["synguard", "off"])?;
    drop(peer);
    Ok(())
}

/// `floodgate run` in the victim namespace; SIGTERM (then SIGKILL) on drop.
struct DaemonProcess(std::process::Child);

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const DEMO_TOKEN: &str = "demo-token-not-for-production";

fn daemon_act(d: &Demo) -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from("/run/floodgate-demo");
    std::fs::create_dir_all(&dir).context("creating /run/floodgate-demo")?;
    std::fs::write(dir.join("token"), DEMO_TOKEN)?;
    let config = format!(
        "[daemon]\ninterfaces = [\"{VICTIM_IF}\"]\ntoken_file = \"{}\"\nsnapshot = \"{}\"\n",
        dir.join("token").display(),
        dir.join("snapshot.json").display()
    );
    std::fs::write(dir.join("floodgate.toml"), &config)?;
    println!("  /run/floodgate-demo/floodgate.toml:");
    for l in config.lines() {
        println!("    {l}");
    }
    println!("\x1b[36m$ floodgate run --config /run/floodgate-demo/floodgate.toml &\x1b[0m");
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let _daemon = DaemonProcess(
        d.lab
            .victim
            .command(d.bin.to_str().context("non-UTF-8 path")?)
            .arg("--pin-dir")
            .arg(&d.lab.pin_dir)
            .args(["run", "--config"])
            .arg(dir.join("floodgate.toml"))
            .stderr(log)
            .spawn()
            .context("starting floodgate run")?,
    );
    // Run curl in the victim namespace (retrying until the daemon listens); echo the
    // command line and the answer unless `quiet`.
    let curl = |args: &[&str], quiet: bool| -> anyhow::Result<String> {
        stopped()?;
        if !quiet {
            println!("\x1b[36m$ curl {}\x1b[0m", shell_words(args));
        }
        let out = d
            .lab
            .victim
            .command("curl")
            .args([
                "-sS",
                "--retry",
                "20",
                "--retry-connrefused",
                "--retry-delay",
                "1",
            ])
            .args(args)
            .output()
            .context("running curl")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !quiet {
            println!("  {}", text.trim());
        }
        Ok(text)
    };
    curl(&["http://127.0.0.1:9477/healthz"], false)?;
    let auth = format!("Authorization: Bearer {DEMO_TOKEN}");
    curl(
        &[
            "-H",
            &auth,
            "http://127.0.0.1:9477/v1/blocklist",
            "-d",
            r#"{"source": "threat-feed", "entries": ["198.18.128.0/17", {"cidr": "2001:db8:beef::/48", "ttl": "1h"}]}"#,
        ],
        false,
    )?;
    curl(
        &[
            "-H",
            &auth,
            "http://127.0.0.1:9477/v1/blocklist",
            "-d",
            r#"{"source": "threat-feed", "entries": ["198.18.300.1", "not-an-address"]}"#,
        ],
        false,
    )?;
    println!("  (a bad batch is refused whole, each bad entry named)");
    let secs = d.spray(20_000, |r| (1024 + (r >> 24) as u16 % 60000, 9999))?;
    println!("  20000 frames from random 198.18.128.0/17 sources in {secs:.2} s");
    pause(Duration::from_millis(300))?;
    curl(&["http://127.0.0.1:9477/v1/sources"], false)?;
    println!("\x1b[36m$ curl -s http://127.0.0.1:9477/metrics | grep ...\x1b[0m");
    let metrics = curl(&["http://127.0.0.1:9477/metrics"], true)?;
    for line in metrics.lines().filter(|l| {
        l.starts_with("floodgate_source_drops_total")
            || l.starts_with("floodgate_blocklist_entries")
            || l.starts_with("floodgate_packets_total{action=\"drop\",reason=\"blocklist\"}")
    }) {
        println!("    {line}");
    }
    println!("  the daemon's log (JSON with --log-format json):");
    for l in std::fs::read_to_string(dir.join("daemon.log"))?.lines() {
        println!("    {l}");
    }
    drop(_daemon);
    let _ = std::fs::remove_dir_all(&dir);
    println!("  daemon stopped with SIGTERM: the filter and the feed's entries stay");
    Ok(())
}

/// Automatic mitigation: the daemon with `[auto]` sees an NTP reflection flood at the victim,
/// fingerprints it, installs a drop rule for exactly that, and lifts it once the flood stops.
fn auto_act(d: &Demo) -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from("/run/floodgate-demo");
    std::fs::create_dir_all(&dir).context("creating /run/floodgate-demo")?;
    let config = format!(
        "[daemon]\ninterfaces = [\"{VICTIM_IF}\"]\nsnapshot = \"\"\n\n[auto]\nmode = \"enforce\"\n\
         lift_after = \"3s\"\naudit_log = \"{}\"\n\n[[auto.groups]]\nname = \"servers\"\n\
         prefixes = [\"{VICTIM_V4}/32\"]\nthresholds = {{ udp = \"5k\", syn = \"5k\" }}\n",
        dir.join("auto.jsonl").display()
    );
    std::fs::write(dir.join("floodgate.toml"), &config)?;
    println!("  /run/floodgate-demo/floodgate.toml:");
    for l in config.lines() {
        println!("    {l}");
    }
    println!("\x1b[36m$ floodgate run --config /run/floodgate-demo/floodgate.toml &\x1b[0m");
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let daemon = DaemonProcess(
        d.lab
            .victim
            .command(d.bin.to_str().context("non-UTF-8 path")?)
            .arg("--pin-dir")
            .arg(&d.lab.pin_dir)
            .args(["run", "--config"])
            .arg(dir.join("floodgate.toml"))
            .stderr(log)
            .spawn()
            .context("starting floodgate run")?,
    );
    pause(Duration::from_secs(3))?;
    let events = |name: &str| -> Vec<String> {
        std::fs::read_to_string(dir.join("auto.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("\"event\":\"{name}\"")))
            .map(str::to_string)
            .collect()
    };
    println!(
        "  an NTP reflection flood (source port 123, 468 bytes, random reflectors) at the victim:"
    );
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut flood = |n: u64| -> anyhow::Result<f64> {
        let draws: Vec<u64> = (0..n).map(|_| next(&mut rng)).collect();
        d.lab.spray_udp(n, 440, move |i| {
            let r = draws[i as usize];
            (
                Ipv4Addr::new(198, 19, (r >> 8) as u8, (r >> 16) as u8),
                123,
                40000,
            )
        })
    };
    let started = std::time::Instant::now();
    while events("rule_installed").is_empty() && started.elapsed() < Duration::from_secs(15) {
        flood(5_000)?;
        pause(Duration::from_millis(20))?;
    }
    for e in events("attack_detected")
        .iter()
        .chain(&events("rule_installed"))
    {
        println!("    {e}");
    }
    d.fg(&["auto", "status"])?;
    let r0 = d.stat("reasons", "rule")?;
    let secs = flood(50_000)?;
    pause(Duration::from_millis(300))?;
    println!(
        "  50000 more sent in {secs:.2} s: {} dropped by the automatic rule",
        d.stat("reasons", "rule")? - r0
    );
    println!(
        "  the flood stops; the rule is lifted once its matches stayed calm for lift_after (3 s):"
    );
    let started = std::time::Instant::now();
    while events("attack_ended").is_empty() && started.elapsed() < Duration::from_secs(20) {
        pause(Duration::from_millis(200))?;
    }
    for e in events("rule_lifted").iter().chain(&events("attack_ended")) {
        println!("    {e}");
    }
    d.fg(&["rule", "list"])?;
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// xorshift: enough randomness for spoofed source addresses, no dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    crate::setup::run(crate::setup::Options::default())?;
    println!("building floodgate (release)...");
    crate::build::release_build()?;
    let bin = crate::workspace_root().join("target/release/floodgate");
    ctrlc::set_handler(|| STOP.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;

    heading(0, "Lab: two network namespaces joined by a veth pair");
    let lab = Lab::with_names(
        "fg-demo-attacker",
        "fg-demo-victim",
        "/sys/fs/bpf/floodgate-demo",
    )?;
    println!(
        "  attacker side: {ATTACKER_IF} 198.18.0.2/15, 2001:db8::2   (+ botnet 198.18.100.0/24, 2001:db8:bad::/48)"
    );
    println!("  victim side:   {VICTIM_IF}   198.18.0.1/15, 2001:db8::1   (floodgate runs here)");
    let demo = Demo { lab, bin };
    let result = script(&demo, &opts);
    println!("\nremoving the lab (namespaces, veth, pins)...");
    drop(demo);
    result
}

fn script(d: &Demo, opts: &Options) -> anyhow::Result<()> {
    heading(
        1,
        "Attach floodgate to the victim's interface (XDP, native mode)",
    );
    d.fg(&["attach", VICTIM_IF])?;

    heading(
        2,
        "Before the attack: the legitimate host reaches the victim",
    );
    d.ping(&ATTACKER_V4.to_string(), &VICTIM_V4.to_string());

    heading(3, "Blocklist the botnet's ranges (IPv4 and IPv6)");
    d.fg(&[
        "block",
        "add",
        "198.18.100.0/24",
        "2001:db8:bad::/48",
        "--comment",
        "botnet (demo)",
    ])?;

    heading(
        4,
        &format!(
            "UDP flood from random botnet sources for {} s, live counters",
            opts.flood_seconds
        ),
    );
    let victim_mac = Lab::mac(&d.lab.victim, VICTIM_IF)?;
    let attacker_mac = Lab::mac(&d.lab.attacker, ATTACKER_IF)?;
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let before = d.counters()?;
    std::thread::scope(|s| -> anyhow::Result<()> {
        let flood = s.spawn(|| {
            d.lab.attacker.run(|| -> anyhow::Result<()> {
                let tx = traffic::RawSender::open(ATTACKER_IF)?;
                let mut rng = 0x9E37_79B9_7F4A_7C15u64;
                while !done.load(Ordering::Relaxed) && !STOP.load(Ordering::Relaxed) {
                    let r = next(&mut rng);
                    let (src, dst) = if r.is_multiple_of(4) {
                        let s = Ipv6Addr::new(
                            0x2001,
                            0xdb8,
                            0xbad,
                            (r >> 8) as u16,
                            0,
                            0,
                            (r >> 24) as u16,
                            (r >> 40) as u16,
                        );
                        (IpAddr::V6(s), IpAddr::V6(VICTIM_V6))
                    } else {
                        (
                            IpAddr::V4(Ipv4Addr::new(198, 18, 100, (r >> 8) as u8)),
                            IpAddr::V4(VICTIM_V4),
                        )
                    };
                    let frame = traffic::udp_frame(
                        attacker_mac,
                        victim_mac,
                        src,
                        dst,
                        (r >> 16) as u16,
                        53,
                        &[0u8; 64],
                    );
                    tx.send(&frame)?;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        });
        println!(
            "  {:>4}  {:>12} {:>12} {:>12} {:>12}",
            "t", "sent pps", "drop pps", "pass pps", "dropped"
        );
        let mut prev = d.counters()?;
        let mut prev_sent = 0;
        let mut at = Instant::now();
        for t in 1..=opts.flood_seconds {
            pause(Duration::from_secs(1))?;
            let now = d.counters()?;
            let secs = at.elapsed().as_secs_f64();
            at = Instant::now();
            let s_now = sent.load(Ordering::Relaxed);
            let rate = |i: usize| (now[i].1 - prev[i].1) as f64 / secs;
            println!(
                "  {:>3}s  {:>12.0} {:>12.0} {:>12.0} {:>12}",
                t,
                (s_now - prev_sent) as f64 / secs,
                rate(2),
                rate(0) + rate(1),
                now[2].1 - before[2].1
            );
            prev = now;
            prev_sent = s_now;
        }
        println!(
            "  what XDP drops never reaches tcpdump; floodgate shows it (sampled in the kernel):"
        );
        d.fg(&["capture", "--reason", "blocklist", "--count", "5"])?;
        println!("\x1b[36m$ floodgate top --json --once --sample 10\x1b[0m   (the first rows)");
        let top: serde_json::Value =
            serde_json::from_str(&d.fg_quiet(&["top", "--json", "--once", "--sample", "10"])?)?;
        for (table, title) in [
            ("source_nets", "top source nets"),
            ("dst_ports", "top destination ports"),
            ("reasons", "verdicts"),
        ] {
            let rows: Vec<String> = top[table]
                .as_array()
                .map(|v| v.iter().take(3).collect::<Vec<_>>())
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    let key = r["key"].as_str().or(r["reason"].as_str()).unwrap_or("?");
                    format!("{key} {:.0} pps", r["pps"].as_f64().unwrap_or(0.0))
                })
                .collect();
            println!("  {title:<22} {}", rows.join(", "));
        }
        println!("  meanwhile, the legitimate host:");
        d.ping(&ATTACKER_V4.to_string(), &VICTIM_V4.to_string());
        done.store(true, Ordering::Relaxed);
        flood
            .join()
            .map_err(|_| anyhow::anyhow!("flood thread panicked"))???;
        Ok(())
    })?;
    pause(Duration::from_millis(200))?;
    let after = d.counters()?;
    let total = sent.load(Ordering::Relaxed);
    let dropped = after[2].1 - before[2].1;
    println!("  flood frames sent: {total}, dropped by blocklist in XDP: {dropped}");

    heading(
        5,
        "Allowlist beats blocklist: trust one botnet address (e.g. a partner's NAT)",
    );
    d.fg(&["allow", "add", "198.18.100.7", "--comment", "partner NAT"])?;
    let before = d.counters()?;
    d.lab.attacker.run(|| -> anyhow::Result<()> {
        let tx = traffic::RawSender::open(ATTACKER_IF)?;
        for i in 0..100u16 {
            let f = traffic::udp_frame(
                attacker_mac,
                victim_mac,
                IpAddr::V4(Ipv4Addr::new(198, 18, 100, 7)),
                IpAddr::V4(VICTIM_V4),
                1000 + i,
                53,
                b"hi",
            );
            tx.send(&f)?;
        }
        Ok(())
    })??;
    pause(Duration::from_millis(300))?;
    let after = d.counters()?;
    println!(
        "  100 packets from 198.18.100.7: allowlist +{}, blocklist +{}",
        after[1].1 - before[1].1,
        after[2].1 - before[2].1
    );

    heading(
        6,
        "TTL: block the legitimate host for 3 s; the kernel lifts it with no process running",
    );
    d.fg(&[
        "block",
        "add",
        &ATTACKER_V4.to_string(),
        "--ttl",
        "3s",
        "--comment",
        "timeout demo",
    ])?;
    d.ping(&ATTACKER_V4.to_string(), &VICTIM_V4.to_string());
    println!("  waiting 3.5 s...");
    pause(Duration::from_millis(3500))?;
    d.ping(&ATTACKER_V4.to_string(), &VICTIM_V4.to_string());

    heading(
        7,
        "A reflection flood: DNS and NTP answers nobody asked for, from 32k spoofed sources",
    );
    println!("  first in dry-run, to see what the preset would drop without dropping anything:");
    d.fg(&["mode", "dry-run"])?;
    d.fg(&["preset", "reflection", "on"])?;
    let amp = |r: u64| {
        (
            if r.is_multiple_of(2) { 53 } else { 123 },
            1024 + (r >> 20) as u16 % 60000,
        )
    };
    let dry0 = d.stat("dry_run", "reflection")?;
    d.spray(20_000, amp)?;
    pause(Duration::from_millis(200))?;
    println!(
        "  20000 sent: would drop {} as reflection, passed all of them",
        d.stat("dry_run", "reflection")? - dry0
    );
    d.fg(&["mode", "enforce"])?;
    let live0 = d.stat("reasons", "reflection")?;
    d.spray(20_000, amp)?;
    pause(Duration::from_millis(200))?;
    println!(
        "  20000 sent: dropped {} in XDP as reflection",
        d.stat("reasons", "reflection")? - live0
    );
    d.fg(&["preset", "reflection", "off"])?;

    heading(
        8,
        "A random-source flood at a service: cap it per destination (aggregate limit)",
    );
    println!("  every packet is a new source, so per-source state learns nothing; the cap holds:");
    d.fg(&[
        "limit",
        "set",
        "udp",
        "--aggregate",
        "2000",
        "--dst",
        &VICTIM_V4.to_string(),
    ])?;
    let (p0, a0) = (d.stat("reasons", "pass")?, d.stat("reasons", "aggregate")?);
    let secs = d.spray(60_000, |r| (1024 + (r >> 24) as u16 % 60000, 9999))?;
    pause(Duration::from_millis(200))?;
    let passed = d.stat("reasons", "pass")? - p0;
    println!(
        "  60000 sent in {secs:.2} s: {passed} passed (cap 2000/s + a 100 ms burst), {} dropped as aggregate",
        d.stat("reasons", "aggregate")? - a0
    );
    d.fg(&["limit", "del", "udp"])?;

    heading(
        9,
        "A spoofed SYN flood: the SYN guard answers it from XDP, real clients still connect",
    );
    synguard_act(d)?;

    heading(
        10,
        "The daemon: a threat feed pushes over the HTTP API, drops are counted per feed",
    );
    daemon_act(d)?;

    heading(
        11,
        "Nobody at the keyboard: automatic mitigation fingerprints a flood, drops it, lifts the rule",
    );
    auto_act(d)?;

    heading(12, "What an engineer looks at afterwards");
    d.fg(&["block", "list"])?;
    d.fg(&["allow", "list"])?;
    d.fg(&["stats"])?;
    d.fg(&["show-config", "--no-lists"])?;
    d.fg(&["status"])?;

    heading(13, "Detach (the lists stay pinned until --purge)");
    d.fg(&["detach", "--all", "--purge"])?;
    Ok(())
}
