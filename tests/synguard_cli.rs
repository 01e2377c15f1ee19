//! The SYN guard's user surface with the real binary: `floodgate synguard` on a pin directory
//! (no traffic), its bad input refused whole, the `[synguard]` file through the daemon, and
//! its /metrics series. The data plane's handshakes are tested beside the stage itself. Run as
//! root, single-threaded (`cargo xtask test`).

use std::{path::Path, time::Duration};

use aya::maps::{Array, Map, MapData};
use filter_common::{SynguardSecret, map_names, synguard_stat};
use floodgate_lab::Lab;
use floodgate_tests::{
    daemon::{Daemon, Scratch},
    floodgate, floodgate_ok,
};
use serde_json::Value;

fn lab(tag: &str) -> Lab {
    Lab::new(tag).unwrap_or_else(|e| panic!("creating the lab: {e:#}"))
}

fn status(lab: &Lab) -> Value {
    serde_json::from_str(&floodgate_ok(lab, &["synguard", "status", "--json"]))
        .expect("synguard status --json is JSON")
}

/// The cookie key as pinned (what the data plane reads).
fn secret(pin_dir: &Path) -> SynguardSecret {
    let path = pin_dir.join("maps").join(map_names::SYNGUARD_SECRET);
    let data = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let map: Array<MapData, SynguardSecret> =
        Array::try_from(Map::Array(data)).expect("SYNGUARD_SECRET is an array");
    map.get(&0, 0).expect("reading SYNGUARD_SECRET[0]")
}

/// Set `net.ipv4.tcp_syncookies` in the lab's victim namespace.
fn syncookies(lab: &Lab, value: u32) {
    let out = lab
        .victim
        .command("sysctl")
        .args(["-qw", &format!("net.ipv4.tcp_syncookies={value}")])
        .output()
        .expect("sysctl");
    assert!(out.status.success(), "sysctl: {out:?}");
}

#[test]
fn synguard_on_off_status_round_trip_and_keep_the_reflection_bits() {
    let lab = lab("sgc");
    syncookies(&lab, 1);
    let out = floodgate_ok(
        &lab,
        &[
            "synguard",
            "on",
            "--port",
            "443",
            "--port",
            "80",
            "--port",
            "443",
            "--dst",
            "198.18.0.0/24",
            "--dst",
            "2001:db8::/64",
            "--when-over",
            "20k",
        ],
    );
    assert_eq!(
        out.trim(),
        "SYN guard on: ports 80 443, 198.18.0.0/24 2001:db8::/64, when over 20k SYN/s; \
         completion: kfunc bpf_sk_assign_tcp_reqsk"
    );
    let s = status(&lab);
    assert_eq!(s["enabled"], true, "{s}");
    assert_eq!(s["ports"], serde_json::json!([80, 443]), "{s}");
    assert_eq!(
        s["dst"],
        serde_json::json!(["198.18.0.0/24", "2001:db8::/64"]),
        "{s}"
    );
    assert_eq!(s["when_over_pps"], 20_000, "{s}");
    assert_eq!(s["tcp_syncookies"], 1, "{s}");
    assert_eq!(s["warnings"], serde_json::json!([]), "{s}");
    let counters = s["counters"].as_object().expect("counters");
    for name in synguard_stat::NAMES
        .iter()
        .copied()
        .chain(["syn_acks", "bad_cookie"])
    {
        assert_eq!(counters[name], 0, "{name} starts at 0: {s}");
    }
    let key = secret(&lab.pin_dir);
    assert_ne!(key, SynguardSecret::default(), "on makes the cookie key");

    // The text form, the global status and show-config say the same.
    let text = floodgate_ok(&lab, &["synguard", "status"]);
    for want in [
        "SYN guard:     on",
        "ports:         80 443",
        "destinations:  198.18.0.0/24 2001:db8::/64",
        "when over:     20k SYN/s",
        "SYN-ACKs sent (syn_cookie)",
        "net.ipv4.tcp_syncookies: 1",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    let global = floodgate_ok(&lab, &["status"]);
    assert!(
        global.contains(
            "synguard:   on (ports 80 443, 198.18.0.0/24 2001:db8::/64, when over 20k SYN/s)"
        ),
        "{global}"
    );
    let g: Value = serde_json::from_str(&floodgate_ok(&lab, &["status", "--json"])).expect("JSON");
    assert_eq!(g["defences"]["synguard"], true, "{g}");
    let config = floodgate_ok(&lab, &["show-config", "--no-lists"]);
    assert!(
        config.contains("[synguard]\nenabled = true\n") && config.contains("when_over = 20000"),
        "{config}"
    );

    // PORT_FLAGS holds both defences' bits: the preset's exemption of 443 and the guard's 443
    // live in one word, and changing one leaves the other.
    floodgate_ok(
        &lab,
        &["preset", "reflection", "on", "--exempt-port", "443"],
    );
    assert_eq!(status(&lab)["ports"], serde_json::json!([80, 443]));
    floodgate_ok(&lab, &["synguard", "off"]);
    let refl = floodgate_ok(&lab, &["preset", "reflection", "status"]);
    assert!(
        refl.contains("exempt destination ports: 443"),
        "the guard going off left the preset's bit: {refl}"
    );
    let s = status(&lab);
    assert_eq!(s["enabled"], false, "{s}");
    assert_eq!(
        s["ports"],
        serde_json::json!([80, 443]),
        "off keeps the ports: {s}"
    );
    assert_eq!(s["when_over_pps"], 20_000, "off keeps the rate: {s}");
    assert!(floodgate_ok(&lab, &["status"]).contains("synguard:   off"));

    // On again with other ports: the key stays (cookies in flight still check), 80 is gone,
    // the preset's 443 exemption is still there.
    floodgate_ok(&lab, &["synguard", "on", "--port", "443"]);
    assert_eq!(secret(&lab.pin_dir), key, "the key survives off and on");
    let s = status(&lab);
    assert_eq!(s["ports"], serde_json::json!([443]), "{s}");
    assert_eq!(
        s["dst"],
        serde_json::json!([]),
        "on sets the whole guard: {s}"
    );
    assert_eq!(s["when_over_pps"], Value::Null, "{s}");
    assert!(floodgate_ok(&lab, &["synguard", "status"]).contains("all local addresses"));
    floodgate_ok(&lab, &["preset", "reflection", "off"]);
    let refl = floodgate_ok(&lab, &["preset", "reflection", "status"]);
    assert!(refl.contains("exempt destination ports: 443"), "{refl}");
    assert_eq!(status(&lab)["ports"], serde_json::json!([443]));

    // The kernel setting it needs: a warning at 0, on stderr (stdout stays JSON).
    syncookies(&lab, 0);
    let out = floodgate(&lab, &["synguard", "status", "--json"]);
    assert!(out.status.success());
    let s: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(s["tcp_syncookies"], 0, "{s}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("net.ipv4.tcp_syncookies is 0")
            && stderr.contains("sysctl -w net.ipv4.tcp_syncookies=1"),
        "{stderr}"
    );
    assert_eq!(s["warnings"].as_array().map(Vec::len), Some(1), "{s}");
    let on = floodgate(&lab, &["synguard", "on", "--port", "443"]);
    assert!(on.status.success());
    assert!(
        String::from_utf8_lossy(&on.stderr).contains("net.ipv4.tcp_syncookies is 0"),
        "on warns too"
    );
}

/// The victim namespace's `nft list table inet floodgate_synguard`, None when there is none.
fn nft_table(lab: &Lab) -> Option<String> {
    let out = lab
        .victim
        .run(|| {
            std::process::Command::new("nft")
                .args(["list", "table", "inet", "floodgate_synguard"])
                .output()
                .expect("running nft")
        })
        .expect("victim namespace");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `--completion`: asked and in use in `status`, kept by other changes, in `show-config`; the
/// SYNPROXY table follows the guard's ports and destinations, and goes when the path changes.
#[test]
fn the_completion_path_is_chosen_named_and_kept() {
    let lab = lab("sgp");
    floodgate_ok(
        &lab,
        &["synguard", "on", "--port", "443", "--completion", "kfunc"],
    );
    let s = status(&lab);
    assert_eq!(
        (s["completion"].as_str(), s["completion_path"].as_str()),
        (Some("kfunc"), Some("kfunc")),
        "{s}"
    );
    assert_eq!(nft_table(&lab), None, "no table on the kfunc path");

    let out = floodgate_ok(
        &lab,
        &[
            "synguard",
            "on",
            "--port",
            "443",
            "--port",
            "80",
            "--dst",
            "198.18.0.0/24",
            "--dst",
            "2001:db8::/64",
            "--completion",
            "synproxy",
        ],
    );
    assert!(
        out.contains("completion: netfilter SYNPROXY (nftables table inet floodgate_synguard)"),
        "{out}"
    );
    let table = nft_table(&lab).expect("the SYNPROXY table");
    for want in [
        "ip daddr 198.18.0.0/24 tcp dport { 80, 443 } ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm",
        "ip6 daddr 2001:db8::/64 tcp dport { 80, 443 } ct state invalid,untracked synproxy mss 1440 wscale 7 timestamp sack-perm",
        "ip daddr 198.18.0.0/24 tcp dport { 80, 443 } ct state invalid drop",
    ] {
        assert!(table.contains(want), "{want:?} in:\n{table}");
    }
    let text = floodgate_ok(&lab, &["synguard", "status"]);
    assert!(
        text.contains("completion:    netfilter SYNPROXY (nftables table inet floodgate_synguard: in place) (asked: synproxy)"),
        "{text}"
    );
    let config = floodgate_ok(&lab, &["show-config", "--no-lists"]);
    assert!(config.contains("completion = \"synproxy\""), "{config}");

    // Another defence's change keeps the path and the table.
    floodgate_ok(&lab, &["preset", "reflection", "on"]);
    assert_eq!(status(&lab)["completion_path"], "synproxy");
    assert!(nft_table(&lab).is_some(), "the table stays");
    // Fewer ports: the table follows.
    floodgate_ok(
        &lab,
        &[
            "synguard",
            "on",
            "--port",
            "443",
            "--completion",
            "synproxy",
        ],
    );
    let table = nft_table(&lab).expect("the table");
    assert!(
        table.contains("meta nfproto ipv4 tcp dport 443 ct state invalid,untracked synproxy"),
        "{table}"
    );
    assert!(!table.contains("80"), "{table}");

    // auto takes the kfunc on this kernel: the table goes.
    floodgate_ok(&lab, &["synguard", "on", "--port", "443"]);
    let s = status(&lab);
    assert_eq!(
        (s["completion"].as_str(), s["completion_path"].as_str()),
        (Some("auto"), Some("kfunc")),
        "{s}"
    );
    assert_eq!(nft_table(&lab), None, "the table goes with the path");

    let bad = floodgate(
        &lab,
        &[
            "synguard",
            "on",
            "--port",
            "443",
            "--completion",
            "iptables",
        ],
    );
    assert_eq!(bad.status.code(), Some(2), "a path that does not exist");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("auto, kfunc, synproxy"),
        "{bad:?}"
    );
    floodgate_ok(&lab, &["synguard", "off"]);
    assert_eq!(status(&lab)["completion_path"], Value::Null);
}

#[test]
fn bad_synguard_input_is_refused_and_changes_nothing() {
    let lab = lab("sgb");
    floodgate_ok(
        &lab,
        &["synguard", "on", "--port", "22", "--dst", "198.18.0.0/24"],
    );
    let before = status(&lab);
    let cases: &[(&[&str], i32, &str)] = &[
        (&["synguard", "on"], 2, "--port <PORT>"),
        (
            &["synguard", "on", "--port", "443", "--port", "0"],
            1,
            "--port: port 0 cannot be protected",
        ),
        (
            &["synguard", "on", "--port", "443", "--dst", "198.18.0.1/24"],
            2,
            "did you mean 198.18.0.0/24",
        ),
        (
            &["synguard", "on", "--port", "443", "--dst", "nonsense"],
            2,
            "not an IPv4/IPv6 address",
        ),
        (
            &["synguard", "on", "--port", "443", "--when-over", "0"],
            1,
            "--when-over must be more than 0",
        ),
        (
            &["synguard", "on", "--port", "443", "--when-over", "5q"],
            2,
            "SYNs per second `5q`",
        ),
        (
            &["synguard", "on", "--port", "443", "--when-over", "5G"],
            1,
            "at most 4294967295",
        ),
        (&["synguard", "on", "--port", "70000"], 2, "70000"),
    ];
    for (args, code, want) in cases {
        let out = floodgate(&lab, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(*code),
            "floodgate {}: {err}",
            args.join(" ")
        );
        assert!(
            err.contains(want),
            "floodgate {}: stderr {err:?} must contain {want:?}",
            args.join(" ")
        );
    }
    assert_eq!(status(&lab), before, "nothing changed");
}

#[test]
fn the_daemon_applies_synguard_from_the_file_and_exports_its_metrics() {
    let lab = lab("sgd");
    let dir = Scratch::new();
    let section = "[synguard]\nenabled = true\nports = [443, 8443]\ndst = [\"198.18.0.1\"]\nwhen_over = 5000\n";
    let config = format!("{}\n{section}", Daemon::base_config(&dir.0, ""));

    // The check says what a start would do, touching nothing.
    std::fs::write(dir.0.join("check.toml"), &config).expect("writing");
    std::fs::write(dir.0.join("token"), floodgate_tests::daemon::TOKEN).expect("writing");
    let check = floodgate_ok(
        &lab,
        &[
            "run",
            "--check-config",
            dir.0.join("check.toml").to_str().expect("UTF-8"),
        ],
    );
    assert!(
        check.contains("synguard:    on (ports 443 8443, 198.18.0.1, when over 5k SYN/s)"),
        "{check}"
    );

    let d = Daemon::start(&lab.victim, &lab.pin_dir, &dir.0, &config);
    let s = status(&lab);
    assert_eq!(s["enabled"], true, "{s}");
    assert_eq!(s["ports"], serde_json::json!([443, 8443]), "{s}");
    assert_eq!(s["dst"], serde_json::json!(["198.18.0.1"]), "{s}");
    assert_eq!(s["when_over_pps"], 5000, "{s}");
    let shown = floodgate_ok(&lab, &["show-config", "--no-lists"]);
    assert!(
        shown.contains("[synguard]\nenabled = true\n")
            && shown.contains("\"198.18.0.1\"")
            && shown.contains("when_over = 5000"),
        "{shown}"
    );

    let metrics = |d: &Daemon| -> String {
        let m = d.call("GET", "/metrics", None, false);
        assert_eq!(m.status, 200, "{m:?}");
        m.body.as_str().expect("text").to_string()
    };
    let text = metrics(&d);
    let mut want: Vec<String> = vec![
        "floodgate_synguard_enabled 1".into(),
        "floodgate_synguard_syn_acks_total 0".into(),
        "floodgate_packets_total{action=\"tx\",reason=\"syn_cookie\"} 0".into(),
        "floodgate_packets_total{action=\"drop\",reason=\"bad_cookie\"} 0".into(),
    ];
    want.extend(
        synguard_stat::NAMES
            .iter()
            .map(|n| format!("floodgate_synguard_{n}_total 0")),
    );
    for line in &want {
        assert!(text.contains(line.as_str()), "{line} in /metrics:\n{text}");
    }

    // A reload turns it off; the gauge follows, the ports stay as the file says.
    let off = config.replace("enabled = true\nports", "enabled = false\nports");
    std::fs::write(&d.config, off).expect("writing");
    d.wait_events("reloaded", 1, Duration::from_secs(10));
    assert_eq!(status(&lab)["enabled"], false);
    assert!(metrics(&d).contains("floodgate_synguard_enabled 0"));
    assert_eq!(status(&lab)["ports"], serde_json::json!([443, 8443]));
}
