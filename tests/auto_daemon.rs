//! Automatic mitigation end to end: the real daemon with `[auto]` in its file, real floods from
//! the attacker namespace, a legitimate client beside them, the real CLI and API.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use floodgate_lab::{Lab, VICTIM_IF};
use floodgate_tests::{
    bench::{ntp_reflection_flood, syn_flood, udp_client, udp_server},
    daemon::{Daemon, Scratch},
    floodgate_ok,
};
use serde_json::Value;

const LEGIT_PORT: u16 = 5353;
const FLOOD_PORT: u16 = 40000;

/// Sets its flag when dropped: a failing assertion stops the floods and clients it guards
/// (a scope waits for its threads, so one left running would hang the test).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn lab(tag: &str) -> Lab {
    Lab::new(tag).unwrap_or_else(|e| panic!("creating the lab: {e:#}"))
}

/// The daemon's file: the victim attached, `[auto]` with one group for the victim's address.
fn config(dir: &std::path::Path, mode: &str, thresholds: &str) -> String {
    format!(
        "{}[auto]\nmode = \"{mode}\"\nlift_after = \"3s\"\naudit_log = \"{}\"\n\
         [[auto.groups]]\nname = \"lab\"\nprefixes = [\"198.18.0.1/32\"]\nthresholds = {{ {thresholds} }}\n",
        Daemon::base_config(dir, &format!("interfaces = [\"{VICTIM_IF}\"]")),
        dir.join("audit.jsonl").display()
    )
}

/// The audit log's events named `event`.
fn audit(dir: &std::path::Path, event: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == event)
        .collect()
}

fn wait_audit(dir: &std::path::Path, event: &str, timeout: Duration) -> Value {
    let started = Instant::now();
    loop {
        if let Some(e) = audit(dir, event).into_iter().next() {
            return e;
        }
        assert!(
            started.elapsed() < timeout,
            "no `{event}` in the audit log within {timeout:?}:\n{}",
            std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The automatic rules as `rule list --json` shows them.
fn auto_rules(lab: &Lab) -> Vec<Value> {
    let rules: Value = serde_json::from_str(&floodgate_ok(lab, &["rule", "list", "--json"]))
        .expect("rule list --json");
    rules
        .as_array()
        .expect("an array")
        .iter()
        .filter(|r| r["id"].as_u64().unwrap_or(0) >= 1_000_000)
        .cloned()
        .collect()
}

#[test]
fn an_ntp_reflection_flood_gets_a_rule_that_spares_the_client_and_is_lifted_after() {
    let lab = lab("anr");
    let dir = Scratch::new();
    let d = Daemon::start(
        &lab.victim,
        &lab.pin_dir,
        &dir.0,
        &config(&dir.0, "enforce", "udp = \"3k\", total = \"5k\""),
    );
    let stop_client = AtomicBool::new(false);
    let stop_flood = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let (client_sent, received, during) = std::thread::scope(|sc| {
        let _c = StopOnDrop(&stop_client);
        let _f = StopOnDrop(&stop_flood);
        let server = sc.spawn(|| udp_server(&lab, LEGIT_PORT, &stop_client));
        std::thread::sleep(Duration::from_millis(200));
        let client = sc.spawn(|| udp_client(&lab, LEGIT_PORT, &stop_client, 200.0));
        // A baseline: the client alone, for longer than the detector's baseline age.
        std::thread::sleep(Duration::from_secs(4));
        let flood =
            sc.spawn(|| ntp_reflection_flood(&lab, FLOOD_PORT, &stop_flood, &sent, 30_000.0));
        let installed = wait_audit(&dir.0, "rule_installed", Duration::from_secs(15));
        println!("installed: {installed}");
        // Let the rule act, then measure what it drops over three seconds.
        std::thread::sleep(Duration::from_millis(500));
        let rule = auto_rules(&lab)
            .into_iter()
            .next()
            .expect("an automatic rule");
        let hits0 = rule["packets"].as_u64().unwrap_or(0);
        let sent0 = sent.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(3));
        let rule = auto_rules(&lab)
            .into_iter()
            .next()
            .expect("the rule is still there");
        let hits1 = rule["packets"].as_u64().unwrap_or(0);
        let sent1 = sent.load(Ordering::Relaxed);
        let status: Value =
            serde_json::from_str(&floodgate_ok(&lab, &["auto", "status", "--json"]))
                .expect("auto status --json");
        let api = d.call("GET", "/v1/attacks", None, false);
        stop_flood.store(true, Ordering::Relaxed);
        let flood_sent = flood.join().expect("the flood");
        // The client keeps talking while the rule is lifted.
        let lifted = wait_audit(&dir.0, "rule_lifted", Duration::from_secs(20));
        let ended = wait_audit(&dir.0, "attack_ended", Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(500));
        stop_client.store(true, Ordering::Relaxed);
        let client_sent = client.join().expect("the client");
        let received = server.join().expect("the server");
        (
            client_sent,
            received,
            (
                installed,
                rule,
                hits1 - hits0,
                sent1 - sent0,
                status,
                api,
                flood_sent,
                lifted,
                ended,
            ),
        )
    });
    let (installed, rule, hits, attack, status, api, flood_sent, lifted, ended) = during;
    println!("rule: {rule}\nlifted: {lifted}\nended: {ended}");
    // The fingerprint: the reflection's source port, the destination, nothing of the client's.
    let m = rule["match"].as_str().unwrap_or_default();
    assert!(
        m.contains("123"),
        "the rule matches source port 123: {rule}"
    );
    assert!(
        m.contains("198.18.0.1"),
        "the rule is for the attacked destination: {rule}"
    );
    assert_eq!(rule["action"], "drop", "{rule}");
    assert_eq!(rule["dry_run"], false, "enforce mode: {rule}");
    assert!(
        rule["comment"]
            .as_str()
            .unwrap_or_default()
            .starts_with("auto "),
        "the comment names the fingerprint: {rule}"
    );
    assert!(
        installed["coverage"].as_f64().unwrap_or(0.0) >= 95.0,
        "measured coverage in the event: {installed}"
    );
    // Dropped: at least 95% of the attack while the rule is in.
    assert!(attack > 1000, "the flood ran: {attack} frames in 3 s");
    let share = hits as f64 / attack as f64;
    println!(
        "attack frames {attack}, matched by the rule {hits} ({:.1}%), flood total {flood_sent}",
        share * 100.0
    );
    assert!(
        share >= 0.95,
        "the rule matched {:.1}% of the attack",
        share * 100.0
    );
    // The legitimate client lost nothing.
    println!("client: sent {client_sent}, received {received}");
    assert!(client_sent > 1000, "the client ran: {client_sent}");
    assert_eq!(received, client_sent, "the client's datagrams all arrived");
    // Status and API said so during the attack.
    assert_eq!(status["mode"], "enforce", "{status}");
    assert_eq!(
        status["rules"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_eq!(api.status, 200, "{api:?}");
    let attacks = api.body["attacks"].as_array().cloned().unwrap_or_default();
    assert_eq!(attacks.len(), 1, "one attack: {}", api.body);
    assert_eq!(attacks[0]["dst"], "198.18.0.1", "{}", api.body);
    assert_eq!(attacks[0]["mitigations"][0]["kind"], "rule", "{}", api.body);
    // Lifted because it went calm, and gone from the table.
    assert_eq!(
        lifted["why"], "under the threshold for lift_after",
        "{lifted}"
    );
    assert!(
        auto_rules(&lab).is_empty(),
        "the rule is gone after the flood"
    );
    let metrics = d.call("GET", "/metrics", None, false);
    let text = metrics.body.as_str().unwrap_or_default();
    for line in [
        "floodgate_auto_rules_installed_total 1",
        "floodgate_auto_rules_lifted_total 1",
        "floodgate_auto_attacks_total 1",
        "floodgate_auto_rules 0",
        "floodgate_auto_mode 2",
    ] {
        assert!(text.contains(line), "/metrics has `{line}`");
    }
}

#[test]
fn shadow_mode_installs_a_dry_run_rule_and_auto_on_enforces_it() {
    let lab = lab("ash");
    let dir = Scratch::new();
    let _d = Daemon::start(
        &lab.victim,
        &lab.pin_dir,
        &dir.0,
        &config(&dir.0, "shadow", "udp = \"3k\""),
    );
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    std::thread::scope(|sc| {
        let _s = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_secs(1));
        let flood = sc.spawn(|| ntp_reflection_flood(&lab, FLOOD_PORT, &stop, &sent, 20_000.0));
        let installed = wait_audit(&dir.0, "rule_installed", Duration::from_secs(15));
        assert_eq!(
            installed["dry_run"], true,
            "shadow: a dry-run rule: {installed}"
        );
        let rule = auto_rules(&lab)
            .into_iter()
            .next()
            .expect("an automatic rule");
        assert_eq!(rule["dry_run"], true, "{rule}");
        let (dropped, _) = floodgate_tests::stat(&lab, "rule");
        assert_eq!(dropped, 0, "shadow mode drops nothing");
        floodgate_ok(&lab, &["auto", "on"]);
        wait_audit(&dir.0, "rule_enforced", Duration::from_secs(5));
        let rule = auto_rules(&lab).into_iter().next().expect("the rule");
        assert_eq!(rule["dry_run"], false, "enforced after `auto on`: {rule}");
        std::thread::sleep(Duration::from_millis(500));
        let (dropped, _) = floodgate_tests::stat(&lab, "rule");
        assert!(dropped > 0, "the rule drops once enforced");
        stop.store(true, Ordering::Relaxed);
        flood.join().expect("the flood");
    });
    let off = floodgate_ok(&lab, &["auto", "off"]);
    assert!(off.contains("off"), "{off}");
}

#[test]
fn a_spoofed_syn_flood_switches_the_syn_guard_on_for_that_destination() {
    let lab = lab("asy");
    let dir = Scratch::new();
    let _d = Daemon::start(
        &lab.victim,
        &lab.pin_dir,
        &dir.0,
        &config(&dir.0, "enforce", "syn = \"2k\""),
    );
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    std::thread::scope(|sc| {
        let _s = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_secs(1));
        let flood = sc.spawn(|| syn_flood(&lab, 80, &stop, &sent, Some(20_000.0)));
        let applied = wait_audit(&dir.0, "defence_applied", Duration::from_secs(15));
        println!("applied: {applied}");
        assert_eq!(applied["defence"], "synguard", "{applied}");
        assert_eq!(applied["ports"], serde_json::json!([80]), "{applied}");
        let g: Value = serde_json::from_str(&floodgate_ok(&lab, &["synguard", "status", "--json"]))
            .expect("synguard status --json");
        assert_eq!(g["enabled"], true, "{g}");
        assert_eq!(g["dst"], serde_json::json!(["198.18.0.1"]), "{g}");
        assert_eq!(g["ports"], serde_json::json!([80]), "{g}");
        assert!(
            auto_rules(&lab).is_empty(),
            "no drop rule for a spoofed SYN flood"
        );
        std::thread::sleep(Duration::from_secs(1));
        let (answered, _) = floodgate_tests::stat(&lab, "syn_cookie");
        assert!(answered > 1000, "the guard answers the flood: {answered}");
        stop.store(true, Ordering::Relaxed);
        flood.join().expect("the flood");
        let lifted = wait_audit(&dir.0, "defence_lifted", Duration::from_secs(20));
        println!("lifted: {lifted}");
    });
    let g: Value = serde_json::from_str(&floodgate_ok(&lab, &["synguard", "status", "--json"]))
        .expect("synguard status --json");
    assert_eq!(g["enabled"], false, "put back as it was: {g}");
}

#[test]
fn auto_on_without_groups_says_what_to_do() {
    let lab = lab("ang");
    floodgate_ok(&lab, &["attach", VICTIM_IF]);
    let out = floodgate_tests::floodgate(&lab, &["auto", "on"]);
    assert!(!out.status.success(), "refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[[auto.groups]]"), "names the fix: {err}");
    let status = floodgate_ok(&lab, &["auto", "status", "--api", "http://127.0.0.1:1"]);
    assert!(status.contains("mode: off"), "{status}");
    assert!(status.contains("not reachable"), "{status}");
}
