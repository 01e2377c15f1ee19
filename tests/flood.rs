//! The flood defences end to end: a lab of two namespaces, the real `floodgate` CLI attached
//! on the victim's veth, real floods from the attacker side (sockets, and raw frames for
//! spoofed sources), and what really arrives counted by sockets on the victim.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use floodgate_lab::{ATTACKER_V4, Lab, VICTIM_IF, VICTIM_V4, traffic};
use floodgate_tests::{floodgate, floodgate_ok, stat};

fn lab(tag: &str, attach: &[&str]) -> Lab {
    let lab = Lab::new(tag).unwrap_or_else(|e| panic!("creating the lab: {e:#}"));
    let mut args = vec!["attach", VICTIM_IF];
    args.extend_from_slice(attach);
    let out = floodgate_ok(&lab, &args);
    assert!(out.contains("attached in native mode"), "{out}");
    lab
}

/// A receiver on the victim that counts datagrams until `quiet` passes with none.
fn receiver(lab: &Lab, bind: SocketAddr, quiet: Duration) -> UdpSocket {
    lab.victim
        .run(move || traffic::udp_receive(bind, quiet))
        .expect("victim thread")
        .expect("binding the receiver")
}

/// Send `count` datagrams from `src` as fast as the socket goes; returns the seconds it took.
fn blast(lab: &Lab, src: IpAddr, dst: SocketAddr, count: usize) -> f64 {
    lab.attacker
        .run(move || {
            let t = Instant::now();
            traffic::udp_send(src, dst, count, b"flood").expect("sending");
            t.elapsed().as_secs_f64()
        })
        .expect("attacker thread")
}

/// Send `count` datagrams from `src`, one every `gap`.
fn polite(lab: &Lab, src: IpAddr, dst: SocketAddr, count: usize, gap: Duration) {
    lab.attacker
        .run(move || {
            let sock = UdpSocket::bind(SocketAddr::new(src, 0)).expect("bind");
            for _ in 0..count {
                sock.send_to(b"polite", dst).expect("send");
                std::thread::sleep(gap);
            }
        })
        .expect("attacker thread");
}

/// Send `count` datagrams from `src` to the victim's `port`, one every 30 ms (well inside
/// every limit and socket buffer); returns how many arrived.
fn polite_through(lab: &Lab, src: IpAddr, port: u16, count: usize) -> usize {
    let dst = SocketAddr::new(IpAddr::V4(VICTIM_V4), port);
    let rx = receiver(lab, dst, Duration::from_millis(300));
    polite(lab, src, dst, count, Duration::from_millis(30));
    traffic::drain_count(&rx)
}

fn dry_stat(lab: &Lab, reason: &str) -> u64 {
    let json: serde_json::Value =
        serde_json::from_str(&floodgate_ok(lab, &["stats", "--json"])).expect("JSON");
    json["dry_run"][reason]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("dry_run.{reason} in {json}"))
}

#[test]
fn a_per_source_limit_drops_the_flooder_and_spares_a_polite_neighbour() {
    let lab = lab("psl", &[]);
    lab.add_attacker_addr("198.18.0.3/15").expect("address");
    let flooder = IpAddr::V4(ATTACKER_V4);
    let neighbour: IpAddr = "198.18.0.3".parse().unwrap();
    floodgate_ok(&lab, &["limit", "set", "udp", "--per-source", "100"]);
    // Resolve neighbours first: datagrams queued behind ARP could be lost before XDP.
    assert!(lab.ping(&ATTACKER_V4.to_string(), &VICTIM_V4.to_string(), 1));

    let flood_port = SocketAddr::new(IpAddr::V4(VICTIM_V4), 41000);
    let polite_port = SocketAddr::new(IpAddr::V4(VICTIM_V4), 41001);
    let flood_rx = receiver(&lab, flood_port, Duration::from_millis(400));
    let polite_rx = receiver(&lab, polite_port, Duration::from_millis(400));
    let (r0, _) = stat(&lab, "ratelimit");
    let sent = 20_000;
    let secs = std::thread::scope(|s| {
        let p = s.spawn(|| polite(&lab, neighbour, polite_port, 20, Duration::from_millis(25)));
        let secs = blast(&lab, flooder, flood_port, sent);
        p.join().expect("polite sender");
        secs
    });
    let got_flood = traffic::drain_count(&flood_rx);
    let got_polite = traffic::drain_count(&polite_rx);
    let (r1, _) = stat(&lab, "ratelimit");
    assert_eq!(
        got_polite, 20,
        "the polite source (50 pps) keeps every packet"
    );
    // 100 pps plus a 100 ms burst over the flood's duration, with room for scheduling.
    held_to_rate("ratelimit", 100.0, secs, sent, got_flood, r1 - r0);
}

/// A flood of `sent` over `secs` against a `pps` bucket (100 ms burst): about the rate
/// arrived (`got`), and `reason` counted the rest. Bounded, not exact: a sender can lose a few
/// frames in a full veth ring before XDP sees them.
fn held_to_rate(reason: &str, pps: f64, secs: f64, sent: usize, got: usize, counted: u64) {
    let allowed = (pps * (0.1 + secs)).ceil() as usize + 10;
    assert!(
        got <= allowed,
        "{got} of {sent} in {secs:.2}s passed a {pps} pps limit (allowed {allowed})"
    );
    assert!(got >= 5, "the limit is a rate, not a block: {got} arrived");
    let counted = counted as usize;
    assert!(
        counted + got <= sent && counted >= sent * 9 / 10,
        "{reason} counted {counted} of {sent} sent ({got} arrived)"
    );
}

#[test]
fn an_aggregate_cap_holds_a_random_source_flood() {
    let lab = lab("agg", &[]);
    floodgate_ok(
        &lab,
        &[
            "limit",
            "set",
            "udp",
            "--aggregate",
            "200",
            "--dst",
            "198.18.0.1",
        ],
    );
    let port = 42000;
    let rx = receiver(
        &lab,
        SocketAddr::new(IpAddr::V4(VICTIM_V4), port),
        Duration::from_millis(400),
    );
    let (a0, _) = stat(&lab, "aggregate");
    let sent = 10_000usize;
    // Every frame a new source: per-source state could learn nothing here.
    let secs = lab
        .spray_udp(sent as u64, 32, |i| {
            let src = Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8);
            (src, 10_000 + (i % 5000) as u16, port)
        })
        .expect("spraying");
    let got = traffic::drain_count(&rx);
    let (a1, _) = stat(&lab, "aggregate");
    held_to_rate("aggregate", 200.0, secs, sent, got, a1 - a0);
}

#[test]
fn an_auto_banned_source_shows_in_block_list_and_expires() {
    let lab = lab("ban", &[]);
    floodgate_ok(
        &lab,
        &[
            "limit",
            "set",
            "udp",
            "--per-source",
            "50",
            "--ban-after",
            "300ms",
            "--ban-for",
            "3s",
        ],
    );
    let dst = SocketAddr::new(IpAddr::V4(VICTIM_V4), 43000);
    let src = IpAddr::V4(ATTACKER_V4);
    // About 1000 pps for 1 s: far over 50 pps, with no gap long enough to reset the streak.
    lab.attacker
        .run(move || {
            let sock = UdpSocket::bind(SocketAddr::new(src, 0)).expect("bind");
            let end = Instant::now() + Duration::from_secs(1);
            while Instant::now() < end {
                for _ in 0..10 {
                    sock.send_to(b"x", dst).expect("send");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .expect("attacker thread");
    let list: serde_json::Value =
        serde_json::from_str(&floodgate_ok(&lab, &["block", "list", "--json"])).expect("JSON");
    let ban = list
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["cidr"] == "198.18.0.2/32")
        .unwrap_or_else(|| panic!("the flooder is banned: {list}"));
    assert_eq!(ban["origin"], "auto", "{ban}");
    let left = ban["expires_in_s"].as_u64().expect("a ban expires");
    assert!((1..=3).contains(&left), "expires within --ban-for: {ban}");
    let text = floodgate_ok(&lab, &["block", "list"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("198.18.0.2 ") && l.contains("auto")),
        "the table shows origin auto:\n{text}"
    );
    let (b0, _) = stat(&lab, "blocklist");
    assert_eq!(
        polite_through(&lab, src, 43001, 5),
        0,
        "while banned nothing arrives"
    );
    assert_eq!(stat(&lab, "blocklist").0 - b0, 5, "counted as blocklist");

    std::thread::sleep(Duration::from_millis(3200));
    let list = floodgate_ok(&lab, &["block", "list", "--json"]);
    assert!(!list.contains("198.18.0.2/32"), "the ban expired: {list}");
    assert_eq!(
        polite_through(&lab, src, 43002, 5),
        5,
        "after the ban, polite traffic arrives again"
    );
}

#[test]
fn the_reflection_preset_drops_a_dns_source_flood_but_not_our_own_answers() {
    let lab = lab("rfl", &[]);
    // This host's resolver queries from its own address; the upstream server is on the far side.
    lab.victim
        .ip(&["addr", "add", "198.18.1.53/15", "dev", VICTIM_IF])
        .expect("resolver address");
    lab.add_attacker_addr("198.18.0.53/15")
        .expect("server address");
    let server: SocketAddr = "198.18.0.53:53".parse().unwrap();
    let resolver_src: IpAddr = "198.18.1.53".parse().unwrap();
    floodgate_ok(
        &lab,
        &["preset", "reflection", "on", "--exempt-dst", "198.18.1.53"],
    );
    let status = floodgate_ok(&lab, &["preset", "reflection", "status"]);
    assert!(
        status.contains("reflection preset: on") && status.contains("198.18.1.53"),
        "{status}"
    );

    // The upstream DNS server: answers each query from port 53.
    let server_sock = lab
        .attacker
        .run(move || UdpSocket::bind(server))
        .expect("thread")
        .expect("bind :53");
    server_sock
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let answered = std::thread::scope(|s| {
        let srv = s.spawn(|| {
            let mut buf = [0u8; 512];
            let mut n = 0;
            while let Ok((len, from)) = server_sock.recv_from(&mut buf) {
                server_sock.send_to(&buf[..len], from).expect("answer");
                n += 1;
                if n == 10 {
                    break;
                }
            }
        });
        // The flood: UDP from port 53 to the victim's main address, from many sources.
        let (r0, _) = stat(&lab, "reflection");
        lab.spray_udp(5000, 400, |i| {
            let src = Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8);
            (src, 53, 1024 + (i % 60000) as u16)
        })
        .expect("spraying");
        let (r1, _) = stat(&lab, "reflection");
        // Nearly all: a sender can lose frames in a full veth ring before XDP sees them.
        let dropped = r1 - r0;
        assert!(
            (4900..=5000).contains(&dropped),
            "reflected datagrams dropped as reflection: {dropped} of 5000"
        );
        // Our own queries, from the exempt address, get their answers.
        let answered = lab
            .victim
            .run(move || {
                let sock = UdpSocket::bind(SocketAddr::new(resolver_src, 0)).expect("bind");
                sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut got = 0;
                let mut buf = [0u8; 512];
                for q in 0..10u8 {
                    sock.send_to(&[q; 30], server).expect("query");
                    if sock.recv_from(&mut buf).is_ok() {
                        got += 1;
                    }
                }
                got
            })
            .expect("victim thread");
        srv.join().expect("server thread");
        answered
    });
    assert_eq!(
        answered, 10,
        "the resolver gets every answer during the flood"
    );

    // And without the exemption the same answers are reflection.
    floodgate_ok(&lab, &["preset", "reflection", "on"]);
    let blocked = lab
        .victim
        .run(move || {
            let sock = UdpSocket::bind(SocketAddr::new(resolver_src, 0)).expect("bind");
            sock.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            sock.send_to(b"q", server).expect("query");
            sock.recv_from(&mut [0u8; 64]).is_err()
        })
        .expect("victim thread");
    assert!(
        blocked,
        "an answer to an address that is not exempt is dropped"
    );
    floodgate_ok(&lab, &["preset", "reflection", "off"]);
}

#[test]
fn dry_run_drops_nothing_and_counts_everything() {
    let lab = lab("dry", &["--dry-run"]);
    assert_eq!(floodgate_ok(&lab, &["mode"]).trim(), "dry-run");
    floodgate_ok(&lab, &["block", "add", "198.18.0.2"]);
    floodgate_ok(&lab, &["limit", "set", "udp", "--per-source", "10"]);
    let dst = SocketAddr::new(IpAddr::V4(VICTIM_V4), 44000);
    let rx = receiver(&lab, dst, Duration::from_millis(400));
    let (live0, _) = stat(&lab, "blocklist");
    let dry0 = dry_stat(&lab, "blocklist");
    // 150 fit in the receiving socket's buffer (XDP on veth gives each a full-page skb), so
    // any loss would be ours.
    polite(
        &lab,
        IpAddr::V4(ATTACKER_V4),
        dst,
        150,
        Duration::from_millis(1),
    );
    assert_eq!(traffic::drain_count(&rx), 150, "dry-run drops nothing");
    assert_eq!(
        dry_stat(&lab, "blocklist") - dry0,
        150,
        "all counted as would-drop"
    );
    assert_eq!(stat(&lab, "blocklist").0 - live0, 0, "none enforced");
    let text = floodgate_ok(&lab, &["stats"]);
    assert!(
        text.contains("DRY-RUN"),
        "stats shows the dry-run section:\n{text}"
    );

    // Enforce: now the same traffic is dropped.
    floodgate_ok(&lab, &["mode", "enforce"]);
    let rx = receiver(
        &lab,
        SocketAddr::new(IpAddr::V4(VICTIM_V4), 44001),
        Duration::from_millis(300),
    );
    blast(
        &lab,
        IpAddr::V4(ATTACKER_V4),
        SocketAddr::new(IpAddr::V4(VICTIM_V4), 44001),
        100,
    );
    assert_eq!(traffic::drain_count(&rx), 0, "enforced");
    assert_eq!(stat(&lab, "blocklist").0 - live0, 100);
}

#[test]
fn apply_and_show_config_round_trip_and_refuse_bad_files() {
    let lab = lab("cfg", &[]);
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/floodgate.toml");
    floodgate_ok(&lab, &["apply", example]);
    let shown = floodgate_ok(&lab, &["show-config", "--no-lists"]);
    let dir = std::env::temp_dir().join(format!("fgcfg{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shown.toml");
    std::fs::write(&path, &shown).unwrap();
    floodgate_ok(&lab, &["apply", path.to_str().unwrap()]);
    assert_eq!(
        floodgate_ok(&lab, &["show-config", "--no-lists"]),
        shown,
        "applying show-config's output changes nothing"
    );
    let rules = floodgate_ok(&lab, &["rule", "list"]);
    assert!(rules.contains("big DNS queries"), "{rules}");

    // A bad file: error names the line and the field; nothing changes.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "mode = \"dry-run\"\n\n[limits.udp]\nper_source = \"fast\"\n",
    )
    .unwrap();
    let out = floodgate(&lab, &["apply", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("line 3") && err.contains("per_source"),
        "{err}"
    );
    assert!(err.contains("nothing was applied"), "{err}");
    assert_eq!(
        floodgate_ok(&lab, &["mode"]).trim(),
        "enforce",
        "mode untouched"
    );
    assert_eq!(
        floodgate_ok(&lab, &["show-config", "--no-lists"]),
        shown,
        "configuration untouched"
    );
    std::fs::remove_dir_all(&dir).ok();
}
