//! The daemon end to end: the real `floodgate run` in a namespace, real HTTP, real signals,
//! real floods, a real Prometheus server. Run as root, single-threaded (`cargo xtask test`).

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use floodgate_lab::{ATTACKER_V4, Lab, VICTIM_IF, VICTIM_V4};
use floodgate_tests::{
    daemon::{Daemon, Reply, Scratch},
    floodgate_ok, stat,
};
use serde_json::{Value, json};

fn lab(tag: &str) -> Lab {
    Lab::new(tag).unwrap_or_else(|e| panic!("creating the lab: {e:#}"))
}

/// The sources and CIDRs of `GET /v1/blocklist[?source=]`.
fn listed(d: &Daemon, query: &str) -> Vec<(String, String)> {
    let r = d.call("GET", &format!("/v1/blocklist{query}"), None, false);
    assert_eq!(r.status, 200, "{r:?}");
    let entries = r.body["entries"].as_array().expect("entries array");
    assert_eq!(r.body["count"].as_u64(), Some(entries.len() as u64));
    let mut out: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["source"].as_str().expect("source").to_string(),
                e["cidr"].as_str().expect("cidr").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn push(d: &Daemon, body: Value) -> Reply {
    d.call("POST", "/v1/blocklist", Some(&body.to_string()), true)
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<_> = v
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    out.sort();
    out
}

#[test]
fn the_push_api_validates_authenticates_and_applies_all_or_nothing() {
    let lab = lab("api");
    let dir = Scratch::new();
    let config = Daemon::base_config(&dir.0, "blocklist_size = 64\nmax_body_bytes = 8192");
    let d = Daemon::start(&lab.victim, &lab.pin_dir, &dir.0, &config);

    // Authentication: writes need the token; reads are open by default.
    let body = json!({"source": "feed-a", "entries": ["198.18.1.1"]}).to_string();
    let r = d.call("POST", "/v1/blocklist", Some(&body), false);
    assert_eq!(r.status, 401, "no token: {r:?}");
    let wrong = lab
        .victim
        .run(|| {
            floodgate_tests::daemon::http(
                "POST",
                "http://127.0.0.1:9477/v1/blocklist",
                Some(&body),
                Some("not-the-token-at-all"),
            )
        })
        .expect("in the namespace")
        .expect("an answer");
    assert_eq!(wrong.status, 401, "wrong token: {wrong:?}");
    assert!(
        listed(&d, "").is_empty(),
        "nothing was added without the token"
    );
    assert_eq!(d.call("GET", "/nope", None, true).status, 404);
    assert_eq!(d.call("PUT", "/v1/blocklist", Some("{}"), true).status, 405);
    assert_eq!(d.call("GET", "/healthz", None, false).status, 200);

    // A good push, with TTL and comment.
    let r = push(
        &d,
        json!({"source": "feed-a", "entries": [
            "198.18.1.1",
            {"cidr": "198.18.2.0/24", "comment": "botnet"},
            {"cidr": "2001:db8:bad::/48", "ttl": "10m"},
            {"cidr": "198.18.3.3", "ttl": "1s"},
        ]}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["added"], 4);
    let b = push(
        &d,
        json!({"source": "feed-b", "entries": ["198.18.9.9", "198.18.1.1"]}),
    );
    assert_eq!(b.status, 200, "{b:?}");
    assert_eq!(
        (b.body["added"].clone(), b.body["updated"].clone()),
        (json!(1), json!(1))
    );

    // The CLI sees the same state, sources and all.
    let cli: Value =
        serde_json::from_str(&floodgate_ok(&lab, &["block", "list", "--json"])).expect("JSON");
    let commented = cli
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["cidr"] == "198.18.2.0/24")
        .expect("the pushed prefix is on the CLI's list");
    assert_eq!(commented["source"], "feed-a");
    assert_eq!(commented["comment"], "botnet");

    // Bad entries: every one is reported, nothing is applied.
    let before = listed(&d, "");
    let r = push(
        &d,
        json!({"source": "feed-a", "entries": [
            "198.18.4.4", "not-an-ip", {"cidr": "198.18.5.0/33"}, {"cidr": "198.18.6.6", "ttl": "soon"},
            {"cidr": "198.18.7.7", "colour": "red"}
        ]}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    let bad: Vec<u64> = r.body["bad_entries"]
        .as_array()
        .expect("bad_entries")
        .iter()
        .map(|b| b["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(bad, vec![1, 2, 3, 4], "each bad entry named: {r:?}");
    assert_eq!(listed(&d, ""), before, "a bad batch changes nothing");
    for (what, body) in [
        (
            "malformed JSON",
            "{\"source\": \"x\", \"entries\": [".to_string(),
        ),
        ("not an object", "[1,2]".to_string()),
        (
            "bad source name",
            json!({"source": "a b", "entries": []}).to_string(),
        ),
        (
            "reserved source",
            json!({"source": "auto", "entries": []}).to_string(),
        ),
    ] {
        let r = d.call("POST", "/v1/blocklist", Some(&body), true);
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert!(r.body["error"].is_string(), "{what}: a message: {r:?}");
    }
    assert_eq!(listed(&d, ""), before);

    // Over the body limit (8192 bytes here): 413.
    let huge: Vec<String> = (0..1000)
        .map(|i| format!("198.19.{}.{}", i / 256, i % 256))
        .collect();
    let r = push(&d, json!({"source": "feed-c", "entries": huge}));
    assert_eq!(r.status, 413, "{r:?}");

    // Capacity: the IPv4 host map holds 64 here; a push that would overflow it is refused
    // whole with 507 and nothing changes.
    let many: Vec<String> = (0..70).map(|i| format!("198.19.0.{i}")).collect();
    let r = push(&d, json!({"source": "feed-c", "entries": many}));
    assert_eq!(r.status, 507, "{r:?}");
    assert!(r.body["error"].as_str().unwrap().contains("full"), "{r:?}");
    assert_eq!(listed(&d, ""), before, "a refused push changes nothing");

    // TTL: the 1 s entry is gone on its own.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !listed(&d, "").iter().any(|(_, c)| c == "198.18.3.3/32"),
        "the 1 s entry expired"
    );

    // Replace is per source: feed-a becomes exactly one entry, feed-b keeps its own.
    let r = push(
        &d,
        json!({"source": "feed-a", "replace": true, "entries": ["198.18.2.0/24"]}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        listed(&d, ""),
        pairs(&[
            ("feed-a", "198.18.2.0/24"),
            ("feed-b", "198.18.1.1/32"),
            ("feed-b", "198.18.9.9/32"),
        ]),
        "2001:db8:bad::/48 left with the replace; 198.18.1.1 belongs to feed-b now"
    );
    assert_eq!(listed(&d, "?source=feed-b").len(), 2);

    // Deletes: by entries (absent ones reported) and by source.
    let r = d.call(
        "DELETE",
        "/v1/blocklist",
        Some(&json!({"entries": ["198.18.9.9", "198.18.77.77"]}).to_string()),
        true,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["removed"], 1);
    assert_eq!(r.body["absent"], json!(["198.18.77.77"]));
    let r = d.call("DELETE", "/v1/blocklist?source=feed-a", None, true);
    assert_eq!(r.body["removed"], 1, "{r:?}");
    assert_eq!(listed(&d, ""), pairs(&[("feed-b", "198.18.1.1/32")]));

    // The allowlist has the same API; the CLI's entries show up in the API.
    let r = d.call(
        "POST",
        "/v1/allowlist",
        Some(&json!({"source": "partners", "entries": ["198.18.100.0/24"]}).to_string()),
        true,
    );
    assert_eq!(r.status, 200, "{r:?}");
    floodgate_ok(&lab, &["block", "add", "198.18.50.5", "--source", "soc"]);
    assert!(listed(&d, "?source=soc").contains(&("soc".into(), "198.18.50.5/32".into())));
    let r = d.call("GET", "/v1/allowlist", None, false);
    assert_eq!(r.body["entries"][0]["source"], "partners", "{r:?}");

    // /v1/stats has the shape of `floodgate stats --json`.
    let api = d.call("GET", "/v1/stats", None, false).body;
    let cli: Value = serde_json::from_str(&floodgate_ok(&lab, &["stats", "--json"])).expect("JSON");
    let keys = |v: &Value, k: &str| -> Vec<String> {
        v[k].as_object().expect("object").keys().cloned().collect()
    };
    assert_eq!(keys(&api, "reasons"), keys(&cli, "reasons"));
    assert_eq!(keys(&api, "dry_run"), keys(&cli, "dry_run"));

    // Every request was counted, the refusals too.
    let m = d.call("GET", "/metrics", None, false);
    let text = m.body.as_str().expect("text");
    for line in [
        "floodgate_api_requests_total{code=\"401\",route=\"/v1/blocklist\"} 2",
        "floodgate_api_requests_total{code=\"507\",route=\"/v1/blocklist\"} 1",
        "floodgate_api_requests_total{code=\"413\",route=\"/v1/blocklist\"} 1",
        "floodgate_blocklist_entries{family=\"ipv4\",source=\"feed-b\"} 1",
    ] {
        assert!(text.contains(line), "{line} in /metrics:\n{text}");
    }
}

#[test]
fn concurrent_pushes_from_32_clients_lose_nothing() {
    let lab = lab("con");
    let dir = Scratch::new();
    let d = Daemon::start_basic(&lab.victim, &lab.pin_dir, &dir.0, "");
    let started = Instant::now();
    let results = lab
        .victim
        .run(|| {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..32u32)
                    .map(|c| {
                        s.spawn(move || {
                            let entries: Vec<String> = (0..500u32)
                                .map(|i| Ipv4Addr::from(0xC613_0000 + c * 500 + i).to_string())
                                .collect();
                            let body = json!({"source": format!("client-{c}"), "entries": entries});
                            floodgate_tests::daemon::http(
                                "POST",
                                "http://127.0.0.1:9477/v1/blocklist",
                                Some(&body.to_string()),
                                Some(floodgate_tests::daemon::TOKEN),
                            )
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("client thread"))
                    .collect::<Vec<_>>()
            })
        })
        .expect("clients in the namespace");
    eprintln!("32 x 500 pushed in {:?}", started.elapsed());
    for (c, r) in results.iter().enumerate() {
        let r = r.as_ref().unwrap_or_else(|e| panic!("client {c}: {e}"));
        assert_eq!(r.status, 200, "client {c}: {r:?}");
        assert_eq!(r.body["added"], 500, "client {c}: {r:?}");
    }
    let all = listed(&d, "");
    assert_eq!(all.len(), 16_000, "every entry of every client is there");
    for c in [0, 17, 31] {
        let mine = listed(&d, &format!("?source=client-{c}"));
        assert_eq!(mine.len(), 500, "client {c}'s entries under its source");
    }
}

#[test]
fn a_bad_config_on_sighup_changes_nothing_and_a_good_one_applies() {
    let lab = lab("hup");
    let dir = Scratch::new();
    let good = format!(
        "{}\n[[rules]]\nproto = \"udp\"\ndst_port = \"53\"\naction = \"drop\"\n\n[lists]\nblock = [\"198.18.44.0/24\"]\n",
        Daemon::base_config(&dir.0, "")
    );
    let mut d = Daemon::start(&lab.victim, &lab.pin_dir, &dir.0, &good);
    let before = floodgate_ok(&lab, &["show-config"]);
    assert!(before.contains("198.18.44.0/24") && before.contains("dst_port = \"53\""));

    // An invalid file: a bad rule on a known line. SIGHUP rejects it; nothing changes.
    let bad = good.replace("dst_port = \"53\"", "dst_port = \"53-\"")
        + "\n[limits.udp]\nper_source = \"100\"\n";
    std::fs::write(&d.config, &bad).expect("writing");
    d.signal(libc::SIGHUP);
    let rejected = d.wait_events("reload_rejected", 1, Duration::from_secs(10));
    let msg = rejected[0]["error"].as_str().expect("error text");
    assert!(msg.contains("line"), "the reason names the line: {msg}");
    assert_eq!(rejected[0]["running"], "unchanged");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        floodgate_ok(&lab, &["show-config"]),
        before,
        "the running state is exactly as it was"
    );
    assert!(d.events("reloaded").is_empty(), "{}", d.log_text());

    // A good change is picked up from the file alone (no signal), lists and settings.
    let next = good
        .replace("198.18.44.0/24", "198.18.45.0/24")
        .replace("action = \"drop\"", "action = \"drop\"\ndry_run = true");
    std::fs::write(&d.config, &next).expect("writing");
    let ok = d.wait_events("reloaded", 1, Duration::from_secs(10));
    assert_eq!(ok[0]["trigger"], "file changed");
    let after = floodgate_ok(&lab, &["show-config"]);
    assert!(
        after.contains("198.18.45.0/24") && !after.contains("198.18.44.0/24"),
        "{after}"
    );
    assert!(after.contains("dry_run = true"), "{after}");
    // Reads can be protected too; the new token rule applies from the reload on.
    std::fs::write(
        &d.config,
        next.replacen("[daemon]\n", "[daemon]\nprotect_reads = true\n", 1),
    )
    .expect("writing");
    d.wait_events("reloaded", 2, Duration::from_secs(10));
    assert_eq!(d.call("GET", "/v1/stats", None, false).status, 401);
    assert_eq!(d.call("GET", "/metrics", None, false).status, 401);
    assert_eq!(d.call("GET", "/v1/stats", None, true).status, 200);
    assert_eq!(
        d.call("GET", "/healthz", None, false).status,
        200,
        "health stays open"
    );
    // SIGTERM: clean exit, the filter stays.
    let status = d.stop(libc::SIGTERM);
    assert!(status.success(), "{status}: {}", d.log_text());
    assert_eq!(d.events("stopped")[0]["filter"], "still running");
}

/// Wait until the daemon's (text) log says `what`.
fn wait_log(d: &Daemon, what: &str) {
    let started = Instant::now();
    while !d.log_text().contains(what) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no `{what}` in the log in 10 s:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn with_no_config_file_the_daemon_starts_writes_off_and_takes_the_file_once_written() {
    let lab = lab("nocfg");
    let dir = Scratch::new();
    // Defences set with the CLI first: with no file, the daemon must leave them alone. (The
    // maps then exist, so the start adopts them and reads no snapshot: the default snapshot
    // path is this machine's /var/lib/floodgate.)
    floodgate_ok(
        &lab,
        &[
            "rule",
            "add",
            "--proto",
            "udp",
            "--dst-port",
            "53",
            "--action",
            "drop",
        ],
    );
    let mut d = Daemon::start_without_config(&lab.victim, &lab.pin_dir, &dir.0);
    assert_eq!(
        d.call("GET", "/healthz", None, false).status,
        200,
        "it answers on the default listen address"
    );
    let body = json!({"entries": ["198.18.1.1"]}).to_string();
    for auth in [false, true] {
        let r = d.call("POST", "/v1/blocklist", Some(&body), auth);
        assert_eq!(r.status, 401, "no token is configured (auth {auth}): {r:?}");
        let error = r.body["error"].as_str().unwrap_or_default();
        assert!(error.contains("writes are disabled"), "{r:?}");
    }
    assert_eq!(d.call("GET", "/v1/blocklist", None, false).status, 200);
    let log = d.log_text();
    for says in [
        "config_missing",
        &d.config.display().to_string(),
        "API writes disabled",
        "examples/floodgate.toml",
        "floodgate run --check-config",
    ] {
        assert!(log.contains(says), "the log says {says}:\n{log}");
    }
    let rules = floodgate_ok(&lab, &["rule", "list", "--json"]);
    assert!(
        rules.contains("dst_port"),
        "the CLI's rule is left as it was: {rules}"
    );
    let status = floodgate_ok(&lab, &["status", "--json"]);
    let status: Value = serde_json::from_str(&status).expect("status --json is JSON");
    assert_eq!(status["interfaces"], json!([]), "nothing is attached");

    // The file, once written, is read as any change is: the token now opens writes, and the
    // file's defences (no rules) replace the CLI's.
    std::fs::write(dir.0.join("token"), floodgate_tests::daemon::TOKEN).expect("the token");
    std::fs::write(&d.config, Daemon::base_config(&dir.0, "")).expect("writing the config");
    wait_log(&d, "reloaded");
    let r = d.call("POST", "/v1/blocklist", Some(&body), true);
    assert_eq!(r.status, 200, "writes with the token: {r:?}");
    let rules = floodgate_ok(&lab, &["rule", "list", "--json"]);
    assert_eq!(rules.trim(), "[]", "the file's (empty) rule table applies");
    // The file's snapshot path (in the scratch directory) is the one written on SIGTERM.
    let status = d.stop(libc::SIGTERM);
    assert!(status.success(), "{status}: {}", d.log_text());
    assert!(
        dir.0.join("snapshot.json").exists(),
        "the snapshot goes where the file says: {}",
        d.log_text()
    );
}

#[test]
fn check_config_checks_and_touches_nothing() {
    let dir = Scratch::new();
    // A pin directory nobody uses: neither it nor its lock files may appear.
    let pin = std::path::PathBuf::from(format!("/sys/fs/bpf/fgt{}chk", std::process::id()));
    let lock_prefix = format!(
        "floodgate{}",
        pin.to_string_lossy()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let check = |config: &str| {
        let path = dir.0.join("check.toml");
        std::fs::write(dir.0.join("token"), floodgate_tests::daemon::TOKEN).expect("token");
        std::fs::write(&path, config).expect("writing the config");
        let out = std::process::Command::new(floodgate_tests::floodgate_bin())
            .arg("--pin-dir")
            .arg(&pin)
            .args(["run", "--check-config"])
            .arg(&path)
            .output()
            .expect("running floodgate run --check-config");
        let locks: Vec<String> = std::fs::read_dir("/run/lock")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&lock_prefix))
            .collect();
        assert!(!pin.exists(), "{} was created", pin.display());
        assert!(locks.is_empty(), "lock files were made: {locks:?}");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let good = Daemon::base_config(&dir.0, "interfaces = [\"lo\"]")
        + "\n[[rules]]\nproto = \"udp\"\naction = \"drop\"\n";
    let (code, out, err) = check(&good);
    assert_eq!(code, Some(0), "a good file: {out}{err}");
    for says in [
        "good",
        "interfaces:  lo",
        "api writes:  with the token",
        "rules:       1",
    ] {
        assert!(out.contains(says), "the summary says {says}:\n{out}");
    }
    let (code, out, err) = check(&good.replace("proto = \"udp\"", "proto = \"udpx\""));
    assert_eq!(code, Some(1), "a bad file exits 1: {out}{err}");
    let line = good.lines().position(|l| l == "[[rules]]").expect("a rule") + 1;
    assert!(
        err.contains(&format!("line {line}: rules[0]: protocol `udpx`")),
        "the error names the line and the field: {err}"
    );
}

/// Send `n` UDP frames from `src` to the victim in the background until `stop` is set.
fn flood_until(lab: &Lab, src: Ipv4Addr, stop: &std::sync::atomic::AtomicBool) -> u64 {
    let mut sent = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        lab.spray_udp(2000, 32, |i| (src, 40000 + (i % 1000) as u16, 9999))
            .expect("spraying");
        sent += 2000;
    }
    sent
}

fn blocklist_drops(lab: &Lab) -> u64 {
    stat(lab, "blocklist").0
}

fn xdp_prog_id(lab: &Lab) -> String {
    let out = lab
        .victim
        .ip(&["-d", "link", "show", VICTIM_IF])
        .expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .skip_while(|w| *w != "prog/xdp")
        .nth(2)
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no XDP program on {VICTIM_IF}: {text}"))
}

#[test]
fn kill_9_under_flood_keeps_dropping_and_a_restart_readopts_everything() {
    let lab = lab("k9");
    let dir = Scratch::new();
    let config = Daemon::base_config(
        &dir.0,
        &format!("interfaces = [\"{VICTIM_IF}\"]\nattach_mode = \"native\""),
    );
    let mut d = Daemon::start(&lab.victim, &lab.pin_dir, &dir.0, &config);
    assert_eq!(d.events("interface_attached").len(), 1, "{}", d.log_text());
    let prog = xdp_prog_id(&lab);
    assert!(lab.ping(&ATTACKER_V4.to_string(), &VICTIM_V4.to_string(), 1));

    // Push the flooder's address, then flood.
    let r = push(
        &d,
        json!({"source": "soc", "entries": [ATTACKER_V4.to_string()]}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let flood = s.spawn(|| flood_until(&lab, ATTACKER_V4, &stop));
        std::thread::sleep(Duration::from_millis(300));
        let before_kill = blocklist_drops(&lab);
        assert!(before_kill > 0, "the flood is being dropped");
        d.stop(libc::SIGKILL);
        std::thread::sleep(Duration::from_millis(500));
        let after_kill = blocklist_drops(&lab);
        assert!(
            after_kill > before_kill,
            "drops go on with the daemon dead: {before_kill} -> {after_kill}"
        );
        assert_eq!(xdp_prog_id(&lab), prog, "the same program stays attached");

        // Restart during the flood: it re-adopts the maps and the attachment.
        d.spawn();
        assert_eq!(d.events("maps_adopted").len(), 1, "{}", d.log_text());
        assert_eq!(d.events("interface_adopted").len(), 1, "{}", d.log_text());
        assert_eq!(xdp_prog_id(&lab), prog, "no re-attach, so no gap");
        let after_restart = blocklist_drops(&lab);
        assert!(after_restart >= after_kill, "no counter was reset");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = flood.join().expect("flood thread");
        eprintln!("flood: {sent} frames; drops {before_kill} / {after_kill} / {after_restart}");
    });
    // No entry lost, and the feed's drops are counted under its name.
    assert_eq!(
        listed(&d, ""),
        pairs(&[("soc", &format!("{ATTACKER_V4}/32"))])
    );
    let sources = d.call("GET", "/v1/sources", None, false).body;
    let soc = sources["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["source"] == "soc")
        .expect("soc listed")
        .clone();
    assert!(
        soc["drops"]["packets"].as_u64().unwrap() >= blocklist_drops(&lab) / 2,
        "the drops are the soc feed's: {soc}"
    );
}

#[test]
fn the_snapshot_brings_the_lists_back_after_a_reboot() {
    let lab = lab("snap");
    let dir = Scratch::new();
    let config = Daemon::base_config(&dir.0, "");
    let mut d = Daemon::start(&lab.victim, &lab.pin_dir, &dir.0, &config);
    let r = push(
        &d,
        json!({"source": "feed-x", "entries": [
            "198.18.10.0/24",
            {"cidr": "2001:db8:1::/64", "ttl": "1h", "comment": "keep"},
            {"cidr": "198.18.11.11", "ttl": "1s"},
        ]}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(d.stop(libc::SIGTERM).success());
    assert!(dir.0.join("snapshot.json").exists(), "written on exit");

    // A reboot: the pinned maps are gone (and the 1 s entry's time passes meanwhile; the
    // snapshot rounds expiry up to the whole second, so give it 2.5 s).
    std::fs::remove_dir_all(&lab.pin_dir).expect("removing the pins");
    std::thread::sleep(Duration::from_millis(2500));
    d.spawn();
    let restored = d.wait_events("snapshot_restored", 1, Duration::from_secs(5));
    assert_eq!(restored[0]["entries"], 2, "{}", d.log_text());
    assert_eq!(restored[0]["expired_skipped"], 1);
    let r = d.call("GET", "/v1/blocklist", None, false);
    let entries = r.body["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2, "{r:?}");
    let v6 = entries
        .iter()
        .find(|e| e["cidr"] == "2001:db8:1::/64")
        .expect("the v6 prefix is back");
    assert_eq!(v6["source"], "feed-x");
    assert_eq!(v6["comment"], "keep");
    let left = v6["expires_in_s"].as_u64().expect("still has a TTL");
    assert!(left <= 3600 && left > 3500, "the TTL continues: {left}");
}

#[test]
fn attack_events_are_logged_once_per_attack() {
    let lab = lab("atk");
    let dir = Scratch::new();
    let config = Daemon::base_config(
        &dir.0,
        &format!(
            "interfaces = [\"{VICTIM_IF}\"]\n[daemon.attack]\nthreshold_pps = 500\nend_after = \"2s\"\n"
        ),
    );
    let d = Daemon::start(&lab.victim, &lab.pin_dir, &dir.0, &config);
    assert!(lab.ping(&ATTACKER_V4.to_string(), &VICTIM_V4.to_string(), 1));
    let r = push(
        &d,
        json!({"source": "soc", "entries": [ATTACKER_V4.to_string()]}),
    );
    assert_eq!(r.status, 200);
    // ~2.5 s of flood (well over 500 pps), then quiet.
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        lab.spray_udp(500, 32, |i| (ATTACKER_V4, 40000 + i as u16, 9999))
            .expect("spraying");
        sent += 500;
        std::thread::sleep(Duration::from_millis(50));
    }
    let start = d.wait_events("attack_started", 1, Duration::from_secs(5));
    assert_eq!(start[0]["reason"], "blocklist");
    assert!(start[0]["pps"].as_u64().unwrap() >= 500, "{}", start[0]);
    let end = d.wait_events("attack_ended", 1, Duration::from_secs(10));
    assert_eq!(end[0]["reason"], "blocklist");
    let packets = end[0]["packets"].as_u64().unwrap();
    assert!(
        packets <= sent && packets >= sent / 2,
        "the total covers the attack: {packets} of {sent} sent"
    );
    assert!(end[0]["peak_pps"].as_u64().unwrap() >= start[0]["pps"].as_u64().unwrap());
    assert_eq!(d.events("attack_started").len(), 1, "one event per attack");
}

/// A Prometheus server in a namespace, stopped on drop.
struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An instant query against the Prometheus at 127.0.0.1:9090 of `lab`'s victim namespace.
fn promql(lab: &Lab, expr: &str) -> Value {
    lab.victim
        .run(|| {
            let r = ureq::get("http://127.0.0.1:9090/api/v1/query")
                .query("query", expr)
                .call();
            match r {
                Ok(r) | Err(ureq::Error::Status(_, r)) => r
                    .into_json::<Value>()
                    .unwrap_or_else(|e| panic!("{expr}: {e}")),
                Err(e) => json!({"status": "unreachable", "error": e.to_string()}),
            }
        })
        .expect("in the namespace")
}

/// Every query of the shipped Grafana dashboard (panels and template variables).
fn dashboard_queries() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/grafana/floodgate-dashboard.json"
    );
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("reading the dashboard"))
            .expect("the dashboard is JSON");
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            // Grafana fills $instance from the variable; "All" is the regex .*
            out.push(t["expr"].as_str().expect("expr").replace("$instance", ".*"));
        }
    }
    assert!(out.len() >= 10, "the dashboard has its panels");
    out
}

#[test]
fn prometheus_scrapes_the_metrics_and_the_dashboard_queries_answer() {
    let lab = lab("prom");
    let dir = Scratch::new();
    let config = Daemon::base_config(&dir.0, &format!("interfaces = [\"{VICTIM_IF}\"]"));
    let d = Daemon::start(&lab.victim, &lab.pin_dir, &dir.0, &config);
    assert!(lab.ping(&ATTACKER_V4.to_string(), &VICTIM_V4.to_string(), 1));
    let r = push(
        &d,
        json!({"source": "feed-p", "entries": [ATTACKER_V4.to_string()]}),
    );
    assert_eq!(r.status, 200);
    lab.spray_udp(3000, 32, |i| (ATTACKER_V4, 40000 + i as u16, 9999))
        .expect("spraying");

    // promtool: the exposition passes Prometheus's own lint.
    let metrics = d.call("GET", "/metrics", None, false);
    let text = metrics.body.as_str().expect("text").to_string();
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; `cargo xtask setup` installs it)");
    use std::io::Write as _;
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feeding promtool");
    let out = check.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scraping the daemon every second.
    let prom_yml = dir.0.join("prometheus.yml");
    std::fs::write(
        &prom_yml,
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: floodgate\n    static_configs:\n      - targets: ['127.0.0.1:9477']\n",
    )
    .expect("writing prometheus.yml");
    let prom_log = std::fs::File::create(dir.0.join("prometheus.log")).expect("log");
    let _prom = Prometheus(
        lab.victim
            .command("prometheus")
            .arg(format!("--config.file={}", prom_yml.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("tsdb").display()
            ))
            .arg("--web.listen-address=127.0.0.1:9090")
            .stdout(std::process::Stdio::null())
            .stderr(prom_log)
            .spawn()
            .expect("starting prometheus"),
    );
    let started = Instant::now();
    loop {
        let v = promql(&lab, "floodgate_source_drops_total{source=\"feed-p\"}");
        let got = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok());
        if matches!(got, Some(n) if n > 0.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Prometheus never scraped the feed's drops: {v}\n{}",
            std::fs::read_to_string(dir.0.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let drops = promql(
        &lab,
        "floodgate_packets_total{reason=\"blocklist\",action=\"drop\"}",
    );
    let scraped: f64 = drops["data"]["result"][0]["value"][1]
        .as_str()
        .expect("a value")
        .parse()
        .expect("a number");
    assert!(
        scraped >= 2700.0,
        "the flood's drops reached Prometheus: {drops}"
    );
    // A few more scrapes so rate() over the dashboards' windows has two points.
    std::thread::sleep(Duration::from_secs(3));
    for expr in dashboard_queries() {
        let v = promql(&lab, &expr);
        assert_eq!(v["status"], "success", "dashboard query {expr}: {v}");
    }
    for (expr, label) in [
        (
            "sum by (reason) (rate(floodgate_packets_total{action=\"drop\"}[1m]))",
            "reason",
        ),
        (
            "topk(10, sum by (source) (rate(floodgate_source_drops_total[5m])))",
            "source",
        ),
        ("sum by (source) (floodgate_blocklist_entries)", "source"),
    ] {
        let v = promql(&lab, expr);
        let result = v["data"]["result"].as_array().expect("result");
        assert!(
            result
                .iter()
                .any(|r| r["metric"][label] == "blocklist" || r["metric"][label] == "feed-p"),
            "{expr} shows the attack: {v}"
        );
    }
}

#[test]
fn the_shipped_systemd_unit_verifies() {
    let dir = Scratch::new();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/systemd/floodgate.service"
    ))
    .expect("reading the unit");
    assert!(
        unit.contains("ExecReload=/bin/kill -HUP $MAINPID"),
        "reload is SIGHUP"
    );
    assert!(unit.contains(" run --config "), "it runs the daemon");
    // verify wants the binary to exist: point it at the one under test.
    let bin = floodgate_tests::floodgate_bin();
    let path = dir.0.join("floodgate.service");
    std::fs::write(
        &path,
        unit.replace("/usr/sbin/floodgate", bin.to_str().expect("UTF-8")),
    )
    .expect("writing");
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_auto_ban_by_the_data_plane_reaches_the_daemon_log() {
    let lab = lab("dlog");
    let dir = Scratch::new();
    let config = format!(
        "{}[limits.udp]\nper_source = \"100\"\nban_after = \"200ms\"\nban_for = \"1m\"\n",
        Daemon::base_config(&dir.0, &format!("interfaces = [\"{VICTIM_IF}\"]"))
    );
    let d = Daemon::start(&lab.victim, &lab.pin_dir, &dir.0, &config);
    d.wait_events("data_plane_log_on", 1, Duration::from_secs(5));
    // One source well over 100 pps for longer than ban_after.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        lab.spray_udp(200, 32, |i| (ATTACKER_V4, 40000 + i as u16, 9999))
            .expect("spraying");
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = d.wait_events("data_plane", 1, Duration::from_secs(5));
    let message = lines[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!("auto-ban {ATTACKER_V4}/32 for 60s")),
        "the program's own line, in the daemon's log: {}",
        lines[0]
    );
    assert_eq!(
        lines.len(),
        1,
        "one line per ban, not per packet: {lines:?}"
    );
}
