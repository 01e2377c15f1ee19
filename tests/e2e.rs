//! End to end: two network namespaces joined by veth, the real `floodgate` binary attached on
//! the victim side, real traffic (ping, UDP, TCP) from the attacker side. Each test builds its
//! own lab; the lab removes its namespaces and pins on drop, also when an assertion fails.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use floodgate_lab::{ATTACKER_V4, ATTACKER_V6, Lab, VICTIM_IF, VICTIM_V4, VICTIM_V6, traffic};
use floodgate_tests::{floodgate, floodgate_ok, stat};

const PAYLOAD: &[u8] = b"floodgate e2e test payload";
/// Ethernet + IPv4 + UDP headers around PAYLOAD.
const UDP4_FRAME: u64 = 14 + 20 + 8 + PAYLOAD.len() as u64;
const UDP6_FRAME: u64 = 14 + 40 + 8 + PAYLOAD.len() as u64;

fn lab(tag: &str) -> Lab {
    let lab = Lab::new(tag).unwrap_or_else(|e| panic!("creating the lab: {e:#}"));
    let out = floodgate_ok(&lab, &["attach", VICTIM_IF]);
    assert!(
        out.contains("attached in native mode"),
        "veth supports native XDP: {out}"
    );
    lab
}

/// Send `count` UDP datagrams from `src` to the victim and return how many arrived.
fn udp_through(lab: &Lab, src: IpAddr, dst: IpAddr, count: usize) -> usize {
    let port = 40000 + (count as u16 % 1000);
    let bind = SocketAddr::new(dst, port);
    let receiver = lab
        .victim
        .run(move || traffic::udp_receive(bind, Duration::from_millis(300)))
        .expect("victim thread")
        .expect("binding the receiver");
    lab.attacker
        .run(move || traffic::udp_send(src, bind, count, PAYLOAD))
        .expect("attacker thread")
        .expect("sending");
    traffic::drain_count(&receiver)
}

fn tcp_works(lab: &Lab, src: IpAddr, dst: IpAddr) -> bool {
    let bind = SocketAddr::new(dst, 8443);
    let listener = lab
        .victim
        .run(move || traffic::tcp_listen(bind))
        .expect("victim thread")
        .expect("listen");
    std::thread::scope(|s| {
        let server =
            s.spawn(|| traffic::tcp_accept_once(&listener, Duration::from_secs(2), b"hello\n"));
        let reply = lab
            .attacker
            .run(move || traffic::tcp_connect(src, bind, Duration::from_secs(1)))
            .expect("thread");
        let accepted = server.join().expect("server thread");
        accepted && reply.as_deref() == Some("hello\n")
    })
}

#[test]
fn blocklist_drops_real_traffic_and_counts_it_exactly() {
    let lab = lab("blk");
    let (a4, v4) = (IpAddr::V4(ATTACKER_V4), IpAddr::V4(VICTIM_V4));
    assert!(
        lab.ping(&ATTACKER_V4.to_string(), &VICTIM_V4.to_string(), 2),
        "ping works before blocking"
    );
    assert_eq!(
        udp_through(&lab, a4, v4, 50),
        50,
        "all UDP arrives before blocking"
    );
    assert!(tcp_works(&lab, a4, v4), "TCP connect works before blocking");

    floodgate_ok(
        &lab,
        &["block", "add", &ATTACKER_V4.to_string(), "--comment", "e2e"],
    );
    let (p0, b0) = stat(&lab, "blocklist");
    assert_eq!(
        udp_through(&lab, a4, v4, 200),
        0,
        "no UDP from a blocked source arrives"
    );
    let (p1, b1) = stat(&lab, "blocklist");
    assert_eq!(p1 - p0, 200, "every dropped datagram is counted once");
    assert_eq!(b1 - b0, 200 * UDP4_FRAME, "bytes are whole frames");
    assert!(
        !lab.ping(&ATTACKER_V4.to_string(), &VICTIM_V4.to_string(), 2),
        "ping is dropped"
    );
    assert!(!tcp_works(&lab, a4, v4), "TCP connect is dropped");

    let list: serde_json::Value =
        serde_json::from_str(&floodgate_ok(&lab, &["block", "list", "--json"])).expect("JSON");
    let entry = &list[0];
    assert_eq!(entry["cidr"], "198.18.0.2/32", "the entry: {list}");
    assert!(
        entry["hits"].as_u64().expect("hits") >= 200,
        "hits count the drops: {list}"
    );
    assert_eq!(
        entry["expires_in_s"],
        serde_json::Value::Null,
        "no TTL means never: {list}"
    );
    assert_eq!(entry["comment"], "e2e", "comment kept: {list}");

    // Another source in the same lab is untouched.
    lab.add_attacker_addr("198.18.0.3/15")
        .expect("second address");
    let other = IpAddr::V4("198.18.0.3".parse().expect("addr"));
    assert_eq!(
        udp_through(&lab, other, v4, 30),
        30,
        "a polite source keeps every packet"
    );
}

#[test]
fn ipv6_prefix_block_drops_ping_udp_and_tcp() {
    let lab = lab("v6");
    let (a6, v6) = (IpAddr::V6(ATTACKER_V6), IpAddr::V6(VICTIM_V6));
    assert!(
        lab.ping(&ATTACKER_V6.to_string(), &VICTIM_V6.to_string(), 2),
        "ping6 works before blocking"
    );
    assert_eq!(
        udp_through(&lab, a6, v6, 20),
        20,
        "UDP over IPv6 arrives before blocking"
    );
    floodgate_ok(&lab, &["block", "add", "2001:db8::/64"]);
    let (p0, b0) = stat(&lab, "blocklist");
    assert_eq!(
        udp_through(&lab, a6, v6, 40),
        0,
        "UDP from the blocked /64 is dropped"
    );
    let (p1, b1) = stat(&lab, "blocklist");
    assert_eq!((p1 - p0, b1 - b0), (40, 40 * UDP6_FRAME), "counted exactly");
    assert!(
        !lab.ping(&ATTACKER_V6.to_string(), &VICTIM_V6.to_string(), 1),
        "ping6 is dropped"
    );
    assert!(!tcp_works(&lab, a6, v6), "TCP over IPv6 is dropped");
    // IPv4 from the same host is not affected by an IPv6 entry.
    assert!(
        lab.ping(&ATTACKER_V4.to_string(), &VICTIM_V4.to_string(), 1),
        "IPv4 unaffected"
    );
}

#[test]
fn ttl_expires_in_the_kernel_with_no_process_running() {
    let lab = lab("ttl");
    floodgate_ok(
        &lab,
        &["block", "add", &ATTACKER_V4.to_string(), "--ttl", "2s"],
    );
    assert!(
        !lab.ping(&ATTACKER_V4.to_string(), &VICTIM_V4.to_string(), 1),
        "blocked while the TTL runs"
    );
    std::thread::sleep(Duration::from_millis(2500));
    // No floodgate command ran in between: the kernel itself stopped matching.
    assert!(
        lab.ping(&ATTACKER_V4.to_string(), &VICTIM_V4.to_string(), 2),
        "traffic returns after the TTL"
    );
    let list = floodgate_ok(&lab, &["block", "list", "--json"]);
    assert_eq!(list.trim(), "[]", "the expired entry is gone from the list");
}

#[test]
fn detach_restores_traffic_and_lists_survive_reattach() {
    let lab = lab("det");
    let (a4, v4) = (IpAddr::V4(ATTACKER_V4), IpAddr::V4(VICTIM_V4));
    floodgate_ok(&lab, &["block", "add", &ATTACKER_V4.to_string()]);
    assert_eq!(udp_through(&lab, a4, v4, 10), 0, "blocked while attached");

    let out = floodgate_ok(&lab, &["detach", VICTIM_IF]);
    assert!(out.contains("detached"), "{out}");
    let status: serde_json::Value =
        serde_json::from_str(&floodgate_ok(&lab, &["status", "--json"])).expect("JSON");
    assert_eq!(
        status["interfaces"].as_array().map(Vec::len),
        Some(0),
        "nothing attached: {status}"
    );
    let link = lab
        .victim
        .ip(&["-d", "link", "show", VICTIM_IF])
        .expect("ip link");
    assert!(
        !String::from_utf8_lossy(&link.stdout).contains("prog/xdp"),
        "no XDP program left on the interface"
    );
    assert_eq!(udp_through(&lab, a4, v4, 10), 10, "detach restores traffic");
    assert_eq!(
        status["blocklist"]["ipv4"], 1,
        "the list survives detach: {status}"
    );

    floodgate_ok(&lab, &["attach", VICTIM_IF]);
    assert_eq!(
        udp_through(&lab, a4, v4, 10),
        0,
        "re-attached with the same list, blocked again"
    );

    floodgate_ok(&lab, &["detach", "--all", "--purge"]);
    assert!(!lab.pin_dir.exists(), "--purge deletes the pinned state");
    assert_eq!(
        udp_through(&lab, a4, v4, 10),
        10,
        "traffic flows after purge"
    );
}

#[test]
fn allowlist_overrides_blocklist_and_is_counted() {
    let lab = lab("alw");
    let (a4, v4) = (IpAddr::V4(ATTACKER_V4), IpAddr::V4(VICTIM_V4));
    floodgate_ok(&lab, &["block", "add", "198.18.0.0/24"]);
    assert_eq!(udp_through(&lab, a4, v4, 10), 0, "blocked by prefix");
    floodgate_ok(&lab, &["allow", "add", &ATTACKER_V4.to_string()]);
    let (p0, _) = stat(&lab, "allowlist");
    assert_eq!(
        udp_through(&lab, a4, v4, 25),
        25,
        "allowlisted source passes despite the block"
    );
    let (p1, _) = stat(&lab, "allowlist");
    assert_eq!(p1 - p0, 25, "passes are counted under allowlist");
    floodgate_ok(&lab, &["allow", "del", &ATTACKER_V4.to_string()]);
    assert_eq!(
        udp_through(&lab, a4, v4, 10),
        0,
        "blocked again once the allow entry is gone"
    );
}

#[test]
fn list_files_load_replace_and_reject_bad_input_whole() {
    let lab = lab("fed");
    let dir = std::env::temp_dir().join(format!("fgt-feed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let drop_list = dir.join("drop.txt");
    std::fs::write(
        &drop_list,
        "; Spamhaus DROP\n198.18.16.0/20 ; SBL1\n198.18.64.0/18 ; SBL2\n2001:db8:f00::/48 ; SBL3\n",
    )
    .expect("write");
    let out = floodgate_ok(&lab, &["block", "load", drop_list.to_str().expect("path")]);
    assert!(out.contains("loaded 3 entries"), "{out}");

    let bad = dir.join("bad.netset");
    std::fs::write(
        &bad,
        "# FireHOL\n198.18.99.0/24\nnot-an-address\n198.18.1.1/16\n",
    )
    .expect("write");
    let out = floodgate(&lab, &["block", "load", bad.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1), "bad file fails with status 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3") && err.contains("line 4") && err.contains("nothing was changed"),
        "{err}"
    );
    let list = floodgate_ok(&lab, &["block", "list", "--json"]);
    assert!(
        !list.contains("198.18.99.0"),
        "no line of a bad file is applied: {list}"
    );

    let netset = dir.join("level1.netset");
    std::fs::write(&netset, "# FireHOL\n198.18.16.0/20\n198.18.7.7\n").expect("write");
    let out = floodgate_ok(
        &lab,
        &["block", "load", netset.to_str().expect("path"), "--replace"],
    );
    assert!(
        out.contains("removed 2"),
        "replace removes what the file lacks: {out}"
    );
    let list: serde_json::Value =
        serde_json::from_str(&floodgate_ok(&lab, &["block", "list", "--json"])).expect("JSON");
    let cidrs: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["cidr"].as_str().expect("cidr"))
        .collect();
    assert_eq!(
        cidrs,
        ["198.18.7.7/32", "198.18.16.0/20"],
        "exactly the file's entries"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_errors_say_what_to_do_and_change_nothing() {
    let lab = lab("err");
    let cases: &[(&[&str], &str)] = &[
        (
            &["block", "add", "198.18.0.1/24"],
            "did you mean 198.18.0.0/24",
        ),
        (
            &["block", "add", "198.18.0.9", "nonsense"],
            "not an IPv4/IPv6 address",
        ),
        (&["block", "del", "198.18.5.5"], "not on the blocklist"),
        (&["attach", "no-such-if0"], "no such interface"),
        (&["detach", "lo"], "is not attached"),
        (
            &["block", "add", "198.18.0.9", "--comment", &"x".repeat(65)],
            "at most 64",
        ),
    ];
    for (args, want) in cases {
        let out = floodgate(&lab, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "floodgate {} must fail with 1: {err}",
            args.join(" ")
        );
        assert!(
            err.contains(want),
            "floodgate {}: stderr {err:?} must contain {want:?}",
            args.join(" ")
        );
        assert_eq!(err.trim().lines().count(), 1, "one line on stderr: {err:?}");
    }
    let list = floodgate_ok(&lab, &["block", "list", "--json"]);
    assert_eq!(
        list.trim(),
        "[]",
        "failed commands added nothing (198.18.0.9 was in a failed batch)"
    );
    let usage = floodgate(&lab, &["block", "add"]);
    assert_eq!(usage.status.code(), Some(2), "usage errors exit 2");

    let stats: serde_json::Value =
        serde_json::from_str(&floodgate_ok(&lab, &["stats", "--json"])).expect("JSON");
    for reason in ["pass", "allowlist", "blocklist", "malformed"] {
        assert!(
            stats["reasons"][reason]["packets"].is_u64(),
            "stats --json has {reason}: {stats}"
        );
    }
}

#[test]
fn skb_mode_and_status_report_what_is_attached() {
    let lab = Lab::new("skb").unwrap_or_else(|e| panic!("lab: {e:#}"));
    let out = floodgate_ok(&lab, &["attach", VICTIM_IF, "--mode", "skb"]);
    assert!(out.contains("attached in skb mode"), "{out}");
    let again = floodgate_ok(&lab, &["attach", VICTIM_IF]);
    assert!(
        again.contains("already attached (skb mode)"),
        "attach is idempotent: {again}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&floodgate_ok(&lab, &["status", "--json"])).expect("JSON");
    assert_eq!(status["interfaces"][0]["iface"], VICTIM_IF, "{status}");
    assert_eq!(status["interfaces"][0]["mode"], "skb", "{status}");
    floodgate_ok(&lab, &["block", "add", &ATTACKER_V4.to_string()]);
    assert!(
        !lab.ping(&ATTACKER_V4.to_string(), &VICTIM_V4.to_string(), 1),
        "skb mode drops too"
    );
}
