//! Packet samples through BPF_PROG_TEST_RUN: a sampled packet's record carries its verdict,
//! reason, lengths and first bytes; sampling off changes no verdict and writes nothing; a
//! full ring counts what it lost.

use std::net::Ipv4Addr;

use aya::maps::{Array, Map, PerCpuArray, RingBuf};
use filter_common::{
    CONFIG_MAGIC, Config, REASON_COUNT, Reason, SOURCE_CONFIG, STATS_SLOTS, Sample, SampleHead,
    map_names, sample_flags, stats_slot,
};
use floodgate::{lists::ListKind, prefix::parse_prefix};
use floodgate_tests::{
    Harness, XDP_DROP, XDP_PASS,
    packet::{self, *},
};

const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLEAN: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const BLOCKED: Ipv4Addr = Ipv4Addr::new(198, 18, 66, 6);

fn frame(src: Ipv4Addr, payload: usize) -> Vec<u8> {
    eth(
        &[],
        ETH_P_IP,
        &ipv4(
            src,
            DST,
            UDP,
            &[],
            0,
            &packet::udp(40000, 53, &vec![0x5a; payload]),
        ),
    )
}

/// Sample 1 in `rate` of `slots` (others off), copying `snaplen` bytes.
fn sampling(h: &Harness, slots: &[u32], rate: u32, snaplen: u32) {
    let mut rates: Array<_, u32> =
        Array::try_from(Map::Array(h.pinned_map(map_names::SAMPLE_RATES))).expect("rates");
    for slot in 0..STATS_SLOTS as u32 {
        let r = if slots.contains(&slot) { rate } else { 0 };
        rates.set(slot, r, 0).expect("writing a rate");
    }
    let mut config: Array<_, Config> =
        Array::try_from(Map::Array(h.pinned_map(map_names::CONFIG))).expect("CONFIG");
    let mut cfg = config.get(&0, 0).expect("CONFIG");
    cfg.magic = CONFIG_MAGIC;
    cfg.sample = u32::from(!slots.is_empty() && rate != 0);
    cfg.sample_snaplen = snaplen;
    config.set(0, cfg, 0).expect("CONFIG");
}

fn dry_run(h: &Harness, on: bool) {
    let mut config: Array<_, Config> =
        Array::try_from(Map::Array(h.pinned_map(map_names::CONFIG))).expect("CONFIG");
    let mut cfg = config.get(&0, 0).expect("CONFIG");
    cfg.dry_run = u32::from(on);
    config.set(0, cfg, 0).expect("CONFIG");
}

/// Every record waiting in the ring.
fn drain(ring: &mut RingBuf<aya::maps::MapData>) -> Vec<(SampleHead, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), size_of::<Sample>(), "a whole record");
        // SAFETY: the record is a Sample written by the data plane (repr(C), plain integers).
        let s: Sample = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        out.push((s.head, s.data[..s.head.cap_len as usize].to_vec()));
    }
    out
}

fn lost(h: &Harness, slot: u32) -> u64 {
    let lost: PerCpuArray<_, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(h.pinned_map(map_names::SAMPLE_LOST)))
            .expect("SAMPLE_LOST");
    lost.get(&slot, 0).expect("reading").iter().sum()
}

#[test]
fn a_sampled_packet_carries_its_verdict_lengths_and_bytes() {
    let mut h = Harness::new();
    h.state
        .lists
        .add(
            ListKind::Block,
            SOURCE_CONFIG,
            &[parse_prefix("198.18.66.6").expect("prefix")],
            None,
            None,
            &mut |_, _| {},
        )
        .expect("blocking");
    let mut ring = RingBuf::try_from(Map::RingBuf(h.pinned_map(map_names::SAMPLES))).expect("ring");
    let block = stats_slot(Reason::Blocklist, false);

    // Off: verdicts as always, nothing in the ring.
    assert_eq!(h.run(&frame(BLOCKED, 100)), (XDP_DROP, Reason::Blocklist));
    assert_eq!(h.run(&frame(CLEAN, 100)), (XDP_PASS, Reason::Pass));
    assert!(drain(&mut ring).is_empty(), "sampling off writes nothing");

    // Every blocklist drop, 64 bytes of each.
    sampling(&h, &[block], 1, 64);
    let big = frame(BLOCKED, 300);
    assert_eq!(
        h.run(&big),
        (XDP_DROP, Reason::Blocklist),
        "verdict unchanged"
    );
    assert_eq!(h.run(&frame(CLEAN, 100)), (XDP_PASS, Reason::Pass));
    let small = frame(BLOCKED, 4);
    assert_eq!(h.run(&small), (XDP_DROP, Reason::Blocklist));
    let got = drain(&mut ring);
    assert_eq!(
        got.len(),
        2,
        "the two blocklist drops, not the pass: {got:?}"
    );
    let (head, data) = &got[0];
    assert_eq!(head.reason, Reason::Blocklist as u8);
    assert_eq!(head.flags & sample_flags::DRY_RUN, 0, "enforced");
    assert_eq!(head.frame_len as usize, big.len(), "original length");
    assert_eq!(head.cap_len, 64, "snap length");
    assert_eq!(data[..], big[..64], "the packet's first bytes");
    assert_eq!(head.rate, 1);
    assert_eq!(
        head.detail, SOURCE_CONFIG,
        "the list source that dropped it"
    );
    assert!(head.time_ns > 0, "a timestamp");
    let (head, data) = &got[1];
    assert_eq!(head.cap_len as usize, small.len(), "a short packet whole");
    assert_eq!(data[..], small[..]);

    // Dry-run: the record says so; the verdict is a pass.
    dry_run(&h, true);
    sampling(&h, &[stats_slot(Reason::Blocklist, true)], 1, 0);
    let (action, reason, dry) = h.run_any(&big);
    assert_eq!((action, reason, dry), (XDP_PASS, Reason::Blocklist, true));
    let got = drain(&mut ring);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].0.flags & sample_flags::DRY_RUN,
        sample_flags::DRY_RUN
    );
    assert_eq!(got[0].0.cap_len, 128, "default snap length");
    assert_eq!(
        got[0].0.reason as usize,
        Reason::Blocklist as usize % REASON_COUNT
    );
    dry_run(&h, false);

    // A rule's verdict carries the rule's id.
    let mut settings = h.state.settings().expect("settings");
    settings.rules = vec![
        floodgate::settings::RuleText {
            action: "drop".into(),
            proto: Some("udp".into()),
            ..Default::default()
        }
        .to_spec(7, floodgate::settings::Spelling::Cli)
        .expect("rule"),
    ];
    h.state.write_settings(&settings).expect("rule 7");
    sampling(&h, &[stats_slot(Reason::Rule, false)], 1, 64);
    assert_eq!(h.run(&frame(CLEAN, 10)), (XDP_DROP, Reason::Rule));
    let got = drain(&mut ring);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.detail, 7, "the rule's id");
    settings.rules.clear();
    h.state.write_settings(&settings).expect("no rules");

    // 1 in 1000: about a thousandth (20 expected; outside 5..=50 once in millions of runs).
    sampling(&h, &[block], 1000, 64);
    for _ in 0..20_000 {
        h.run(&small);
    }
    let n = drain(&mut ring).len();
    assert!(
        (5..=50).contains(&n),
        "1 in 1000 of 20000 packets sampled {n}"
    );

    // A full ring: what does not fit is counted as lost, exactly.
    sampling(&h, &[block], 1, 64);
    let before = lost(&h, block);
    let records = filter_common::SAMPLES_RING_BYTES as usize / (size_of::<Sample>() + 8);
    let sent = records + 500;
    for _ in 0..sent {
        h.run(&small);
    }
    let kept = drain(&mut ring).len() as u64;
    let lost_now = lost(&h, block) - before;
    assert_eq!(
        kept + lost_now,
        sent as u64,
        "every sample written or counted lost"
    );
    assert!(lost_now >= 500, "the ring filled: {lost_now} lost");
}

// --- End to end: the real CLI on a lab, real traffic, the file read back by tcpdump ---

mod e2e {
    use std::{
        net::Ipv4Addr,
        process::{Command, Stdio},
        time::{Duration, Instant},
    };

    use floodgate_lab::{Lab, VICTIM_IF};
    use floodgate_tests::{floodgate_command, floodgate_ok};
    use pcap_file::pcapng::{Block, PcapNgReader, blocks::enhanced_packet::EnhancedPacketOption};

    /// Every packet of a pcapng file: (its bytes, its comment).
    fn read_pcapng(path: &std::path::Path) -> Vec<(Vec<u8>, String)> {
        let file = std::fs::File::open(path).expect("the capture file");
        let mut r = PcapNgReader::new(file).expect("a pcapng file");
        let mut out = Vec::new();
        while let Some(block) = r.next_block() {
            if let Block::EnhancedPacket(p) = block.expect("a whole block") {
                let comment = p
                    .options
                    .iter()
                    .find_map(|o| match o {
                        EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                        _ => None,
                    })
                    .unwrap_or_default();
                out.push((p.data.to_vec(), comment));
            }
        }
        out
    }

    #[test]
    fn capture_writes_exactly_the_chosen_drops_as_pcapng() {
        let lab = Lab::new("cap").unwrap_or_else(|e| panic!("creating the lab: {e:#}"));
        floodgate_ok(&lab, &["attach", VICTIM_IF]);
        floodgate_ok(
            &lab,
            &["block", "add", "198.18.128.0/24", "--source", "feed"],
        );
        floodgate_ok(&lab, &["preset", "reflection", "on"]);
        let dir = std::env::temp_dir().join(format!("fgcap{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let file = dir.join("blocked.pcapng");
        let child = floodgate_command(
            &lab.victim,
            &lab.pin_dir,
            &[
                "capture",
                "--source",
                "feed",
                "--count",
                "100",
                "-w",
                file.to_str().expect("path"),
            ],
        )
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting floodgate capture");
        // Sampling is on once the capture has switched it on: wait for that.
        let started = Instant::now();
        while floodgate_ok(&lab, &["status", "--json"]).contains("\"sampling\": false")
            && started.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        // A flood from the blocked /24 and a reflection flood (NTP, random sources) together.
        lab.spray_udp(3000, 64, |i| {
            if i % 2 == 0 {
                (Ipv4Addr::new(198, 18, 128, (i % 250) as u8 + 1), 40000, 53)
            } else {
                (Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8), 123, 40000)
            }
        })
        .expect("flooding");
        let out = child.wait_with_output().expect("capture ends by itself");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "capture: {stderr}");
        assert!(stderr.contains("100 written"), "summary: {stderr}");
        let packets = read_pcapng(&file);
        assert_eq!(packets.len(), 100, "exactly --count packets");
        for (data, comment) in &packets {
            assert_eq!(&data[26..29], &[198, 18, 128], "from the blocked /24");
            assert!(
                comment.starts_with("floodgate: drop blocklist source feed (in fg-victim"),
                "the verdict in the comment: {comment}"
            );
        }
        let tcpdump = Command::new("tcpdump")
            .args(["-n", "-r", file.to_str().expect("path")])
            .output()
            .expect("running tcpdump (cargo xtask setup installs it)");
        let text = String::from_utf8_lossy(&tcpdump.stdout);
        assert!(tcpdump.status.success(), "tcpdump reads the file");
        assert_eq!(text.lines().count(), 100, "tcpdump sees 100 packets");
        assert!(
            text.lines().all(|l| l.contains(" 198.18.128.")),
            "all from the blocked /24:\n{text}"
        );
        // The capture put sampling back.
        let status = floodgate_ok(&lab, &["status", "--json"]);
        assert!(
            status.contains("\"sampling\": false"),
            "sampling off again: {status}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A flood from one /24 (blocked) and a larger NTP reflection flood from random sources.
    fn mixed_flood(lab: &Lab, n: u64) {
        lab.spray_udp(n, 64, |i| {
            if i % 3 == 0 {
                (Ipv4Addr::new(198, 18, 128, (i % 250) as u8 + 1), 40000, 53)
            } else {
                let r = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
                (Ipv4Addr::new(198, 19, (r >> 8) as u8, r as u8), 123, 40000)
            }
        })
        .expect("flooding");
    }

    #[test]
    fn top_json_names_the_attacking_net_and_port() {
        let lab = Lab::new("top").unwrap_or_else(|e| panic!("creating the lab: {e:#}"));
        floodgate_ok(&lab, &["attach", VICTIM_IF]);
        floodgate_ok(&lab, &["block", "add", "198.18.128.0/24"]);
        floodgate_ok(&lab, &["preset", "reflection", "on"]);
        let child = floodgate_command(
            &lab.victim,
            &lab.pin_dir,
            &[
                "top",
                "--json",
                "--once",
                "--interval",
                "3s",
                "--sample",
                "1",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting floodgate top");
        let started = Instant::now();
        while floodgate_ok(&lab, &["status", "--json"]).contains("\"sampling\": false")
            && started.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        mixed_flood(&lab, 6000);
        let out = child.wait_with_output().expect("top ends by itself");
        assert!(
            out.status.success(),
            "top: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("top --json is JSON");
        let first = |t: &str| j[t][0]["key"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            first("source_nets"),
            "198.18.128.0/24",
            "top source net: {j}"
        );
        assert_eq!(first("src_ports"), "udp/123", "top source port: {j}");
        assert_eq!(first("destinations"), "198.18.0.1", "the victim: {j}");
        assert_eq!(
            first("list_sources"),
            "cli",
            "blocklist drops by list source: {j}"
        );
        let reasons: Vec<&str> = j["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .filter_map(|r| r["reason"].as_str())
            .collect();
        assert!(
            reasons.contains(&"blocklist") && reasons.contains(&"reflection"),
            "both verdicts with rates: {reasons:?}"
        );
        assert_eq!(j["sample"], 1);
        assert!(
            j["samples"].as_u64().unwrap_or(0) >= 5000,
            "samples: {}",
            j["samples"]
        );
        let status = floodgate_ok(&lab, &["status", "--json"]);
        assert!(status.contains("\"sampling\": false"), "sampling off again");
    }

    /// A tmux session running a command, killed on drop.
    struct Tmux(String);

    impl Tmux {
        fn run(args: &[&str]) -> std::process::Output {
            Command::new("tmux")
                .args(args)
                .output()
                .expect("running tmux (cargo xtask setup installs it)")
        }
        fn alive(&self) -> bool {
            Tmux::run(&["has-session", "-t", &self.0]).status.success()
        }
        fn screen(&self) -> String {
            String::from_utf8_lossy(&Tmux::run(&["capture-pane", "-p", "-t", &self.0]).stdout)
                .into_owned()
        }
    }

    impl Drop for Tmux {
        fn drop(&mut self) {
            let _ = Tmux::run(&["kill-session", "-t", &self.0]);
        }
    }

    #[test]
    fn the_top_terminal_view_shows_its_panes_and_quits_cleanly() {
        let lab = Lab::new("tui").unwrap_or_else(|e| panic!("creating the lab: {e:#}"));
        floodgate_ok(&lab, &["attach", VICTIM_IF]);
        floodgate_ok(&lab, &["block", "add", "198.18.128.0/24"]);
        floodgate_ok(&lab, &["preset", "reflection", "on"]);
        let bin = floodgate_tests::floodgate_bin();
        let cmd = format!(
            "nsenter --net={} {} --pin-dir {} top --interval 500ms --sample 1",
            lab.victim.path().display(),
            bin.display(),
            lab.pin_dir.display()
        );
        let t = Tmux(format!("fgtop{}", std::process::id()));
        let out = Tmux::run(&[
            "new-session",
            "-d",
            "-s",
            &t.0,
            "-x",
            "120",
            "-y",
            "44",
            &cmd,
        ]);
        assert!(
            out.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let started = Instant::now();
        while floodgate_ok(&lab, &["status", "--json"]).contains("\"sampling\": false")
            && started.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Flood on while the screen is read, so that the refresh it shows has the flood in it.
        let flooding = std::sync::atomic::AtomicBool::new(true);
        let screen = std::thread::scope(|sc| {
            sc.spawn(|| {
                while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                    mixed_flood(&lab, 2000);
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            let started = Instant::now();
            let mut screen = String::new();
            while started.elapsed() < Duration::from_secs(8) {
                screen = t.screen();
                if screen.contains("198.18.128.0/24") && screen.contains("blocklist") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            flooding.store(false, std::sync::atomic::Ordering::Relaxed);
            screen
        });
        println!("{screen}");
        for pane in [
            "floodgate top",
            "verdicts (exact)",
            "blocklist",
            "sources",
            "destination ports",
            "TTLs",
            "198.18.128.0/24",
        ] {
            assert!(screen.contains(pane), "the view shows {pane}:\n{screen}");
        }
        let _ = Tmux::run(&["send-keys", "-t", &t.0, "q"]);
        let started = Instant::now();
        while t.alive() && started.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!t.alive(), "q quits");
        let status = floodgate_ok(&lab, &["status", "--json"]);
        assert!(
            status.contains("\"sampling\": false"),
            "sampling put back after q"
        );
    }

    #[test]
    fn the_daemon_answers_v1_top() {
        use floodgate_tests::daemon::{Daemon, Scratch};
        let lab = Lab::new("dtop").unwrap_or_else(|e| panic!("creating the lab: {e:#}"));
        let dir = Scratch::new();
        let d = Daemon::start_basic(
            &lab.victim,
            &lab.pin_dir,
            &dir.0,
            &format!("interfaces = [\"{VICTIM_IF}\"]"),
        );
        floodgate_ok(&lab, &["block", "add", "198.18.128.0/24"]);
        floodgate_ok(&lab, &["preset", "reflection", "on"]);
        let flooding = std::sync::atomic::AtomicBool::new(true);
        let reply = std::thread::scope(|sc| {
            sc.spawn(|| {
                while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                    mixed_flood(&lab, 2000);
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            let r = d.call("GET", "/v1/top?interval=2s&sample=1&rows=5", None, false);
            flooding.store(false, std::sync::atomic::Ordering::Relaxed);
            r
        });
        assert_eq!(reply.status, 200, "{reply:?}");
        let j = &reply.body;
        assert_eq!(j["source_nets"][0]["key"], "198.18.128.0/24", "{j}");
        assert_eq!(j["src_ports"][0]["key"], "udp/123", "{j}");
        assert!(j["sources"].as_array().expect("rows").len() <= 5, "rows=5");
        for bad in ["interval=1h", "sample=0", "interval=soon", "color=red"] {
            let r = d.call("GET", &format!("/v1/top?{bad}"), None, false);
            assert_eq!(r.status, 400, "{bad}: {r:?}");
            assert!(r.body["error"].is_string(), "{bad}: a JSON error: {r:?}");
        }
        let status = floodgate_ok(&lab, &["status", "--json"]);
        assert!(status.contains("\"sampling\": false"), "sampling put back");
    }

    #[test]
    fn the_daemon_top_sampler_feeds_metrics() {
        use floodgate_tests::daemon::{Daemon, Scratch};
        let lab = Lab::new("mtop").unwrap_or_else(|e| panic!("creating the lab: {e:#}"));
        let dir = Scratch::new();
        let config = format!(
            "{}[daemon.top]\nsample = 1\nevery = \"1s\"\n",
            Daemon::base_config(&dir.0, &format!("interfaces = [\"{VICTIM_IF}\"]"))
        );
        let d = Daemon::start(&lab.victim, &lab.pin_dir, &dir.0, &config);
        floodgate_ok(&lab, &["block", "add", "198.18.128.0/24"]);
        floodgate_ok(&lab, &["preset", "reflection", "on"]);
        let flooding = std::sync::atomic::AtomicBool::new(true);
        let metrics = std::thread::scope(|sc| {
            sc.spawn(|| {
                while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                    mixed_flood(&lab, 2000);
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            let started = Instant::now();
            let mut text = String::new();
            while started.elapsed() < Duration::from_secs(10) {
                let r = d.call("GET", "/metrics", None, false);
                text = r.body.as_str().unwrap_or_default().to_string();
                if text.contains("floodgate_top_source_net_pps{net=\"198.18.128.0/24\"}") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            flooding.store(false, std::sync::atomic::Ordering::Relaxed);
            text
        });
        assert!(
            metrics.contains("floodgate_top_source_net_pps{net=\"198.18.128.0/24\"}"),
            "the top source net in /metrics:\n{metrics}"
        );
        assert!(
            metrics.contains("floodgate_top_dst_port_pps{port=\"udp/40000\"}"),
            "the top destination port in /metrics"
        );
    }
}
