//! Reliability: what an operator or an attacker can throw at the control plane. Bad input is
//! refused whole with an error that quotes it short and escaped; nothing panics, nothing is
//! half-applied, nothing is echoed back unbounded. Run as root, single-threaded.

use floodgate_lab::Lab;
use floodgate_tests::{
    daemon::{Daemon, Scratch},
    floodgate, floodgate_ok,
};
use serde_json::{Value, json};

fn lab(tag: &str) -> Lab {
    Lab::new(tag).unwrap_or_else(|e| panic!("creating the lab: {e:#}"))
}

/// The CIDRs on the blocklist, as `block list --json` prints them.
fn cidrs(lab: &Lab) -> Vec<String> {
    let v: Value =
        serde_json::from_str(&floodgate_ok(lab, &["block", "list", "--json"])).expect("JSON");
    v.as_array()
        .expect("array")
        .iter()
        .map(|e| e["cidr"].as_str().expect("cidr").to_string())
        .collect()
}

/// Run the CLI, expect it to refuse with `code`, and return stderr.
fn refused(lab: &Lab, args: &[&str], code: i32) -> String {
    let out = floodgate(lab, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "floodgate {} should exit {code}: {stderr}",
        args.join(" ")
    );
    assert!(
        !stderr.contains("panicked"),
        "floodgate {} panicked: {stderr}",
        args.join(" ")
    );
    stderr
}

#[test]
fn cli_refuses_bad_entries_whole_and_says_why() {
    let lab = lab("rin");
    // (arguments after `block add 198.18.0.1`, exit code, text the error must hold)
    let cases: &[(&[&str], i32, &str)] = &[
        (&["--ttl", "18446744073709551615s"], 2, "ttl"),
        (&["--ttl", "18446744073s"], 2, "maximum, 10years"),
        (&["--ttl", "1000y"], 2, "maximum, 10years"),
        (&["--ttl", "0s"], 2, "more than 0"),
        (
            &["--comment", "red\u{1b}[31m"],
            1,
            "--comment: holds the control character \\u{1b}",
        ),
        (
            &["--comment", "fake\n198.18.9.9"],
            1,
            "control character \\n",
        ),
        (&["--source", "config"], 1, "configuration file"),
        (&["--source", "auto"], 1, "auto-bans"),
    ];
    for (extra, code, text) in cases {
        let mut args = vec!["block", "add", "198.18.0.1", "198.18.0.2"];
        args.extend_from_slice(extra);
        let err = refused(&lab, &args, *code);
        assert!(err.contains(text), "{extra:?}: want {text:?} in: {err}");
    }
    assert!(cidrs(&lab).is_empty(), "nothing of a refused add is listed");

    // Entries that would drop everyone need --force; ::/0 would also kill neighbour discovery.
    for broad in ["0.0.0.0/0", "::/0", "0.0.0.0/1", "2000::/3"] {
        let err = refused(&lab, &["block", "add", "198.18.0.1", broad], 1);
        assert!(err.contains("--force"), "{broad}: {err}");
    }
    assert!(cidrs(&lab).is_empty(), "nothing of a refused add is listed");
    floodgate_ok(&lab, &["block", "add", "224.0.0.0/3"]);
    floodgate_ok(&lab, &["block", "add", "0.0.0.0/1", "--force"]);
    floodgate_ok(&lab, &["block", "del", "0.0.0.0/1", "224.0.0.0/3"]);

    // An IPv4-mapped IPv6 address is the IPv4 address its packets come from.
    floodgate_ok(&lab, &["block", "add", "::ffff:198.18.0.7"]);
    assert_eq!(cidrs(&lab), ["198.18.0.7/32"], "stored as IPv4");
    floodgate_ok(&lab, &["block", "flush"]);

    // A list file saved with a byte-order mark loads; a huge bad line is quoted short.
    let dir = Scratch::new();
    let bom = dir.0.join("bom.txt");
    std::fs::write(&bom, "\u{feff}198.18.0.10\n198.18.0.11\n").expect("writing");
    floodgate_ok(&lab, &["block", "load", bom.to_str().expect("utf-8")]);
    assert_eq!(cidrs(&lab), ["198.18.0.10/32", "198.18.0.11/32"]);
    let huge = dir.0.join("huge.txt");
    std::fs::write(
        &huge,
        format!("198.18.0.12\n\u{1b}[2J\u{7}{}\n", "x".repeat(10 << 20)),
    )
    .expect("writing");
    let err = refused(&lab, &["block", "load", huge.to_str().expect("utf-8")], 1);
    assert!(
        err.len() < 1000,
        "error is {} bytes: a bad line is cut",
        err.len()
    );
    assert!(
        err.contains("line 2: \\u{1b}[2J\\u{7}x") && !err.contains('\u{1b}'),
        "escaped: {err}"
    );
    let err = refused(
        &lab,
        &["block", "load", bom.to_str().expect("utf-8"), "--ttl", "0s"],
        2,
    );
    assert!(err.contains("more than 0"), "{err}");
    assert_eq!(
        cidrs(&lab),
        ["198.18.0.10/32", "198.18.0.11/32"],
        "refused loads change nothing"
    );
}

#[test]
fn api_refuses_bad_entries_whole_with_bounded_json_errors() {
    let lab = lab("rapi");
    let dir = Scratch::new();
    let d = Daemon::start_basic(&lab.victim, &lab.pin_dir, &dir.0, "");
    let push = |body: Value| d.call("POST", "/v1/blocklist", Some(&body.to_string()), true);
    let entries = |d: &Daemon| {
        let r = d.call("GET", "/v1/blocklist", None, false);
        assert_eq!(r.status, 200, "{r:?}");
        r.body["count"].as_u64().expect("count")
    };

    // Each bad entry comes after a good one: a 400 must leave the good one out too.
    for (bad, text) in [
        (
            json!({"cidr": "198.18.1.2", "ttl": "18446744073709551615s"}),
            "entries[1].ttl:",
        ),
        (
            json!({"cidr": "198.18.1.2", "ttl": "18446744073s"}),
            "maximum",
        ),
        (json!({"cidr": "198.18.1.2", "ttl": "0s"}), "more than 0"),
        (
            json!({"cidr": "198.18.1.2", "comment": "a\u{1b}[2J"}),
            "entries[1].comment: holds the control character",
        ),
        (json!("0.0.0.0/0"), "entries[1]: 0.0.0.0/0 is broader"),
        (json!("::/0"), "send \"force\": true"),
    ] {
        let r = push(json!({"source": "feed", "entries": ["198.18.1.1", bad]}));
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        let error = r.body["bad_entries"][0]["error"].as_str().unwrap_or("");
        assert!(error.contains(text), "{bad}: want {text:?} in {r:?}");
        assert_eq!(entries(&d), 0, "{bad}: nothing applied");
    }
    let r = push(json!({"source": "feed", "force": true, "entries": ["0.0.0.0/1"]}));
    assert_eq!(r.status, 200, "forced: {r:?}");
    let r = push(json!({"source": "config", "entries": ["198.18.1.1"]}));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("configuration file")),
        "the reason names the file: {r:?}"
    );

    // Every error is JSON: 405, a repeated query parameter, unknown paths.
    for (method, path) in [
        ("PUT", "/v1/blocklist"),
        ("PATCH", "/v1/stats"),
        ("GET", "/v1/blocklist?source=a&source=b"),
        ("DELETE", "/v1/blocklist?source=a&source=b"),
        ("GET", "/nope"),
    ] {
        let r = d.call(method, path, Some("{}"), true);
        assert!(r.status >= 400, "{method} {path}: {r:?}");
        assert!(
            r.body["error"].is_string(),
            "{method} {path} answers JSON {{\"error\"}}: {r:?}"
        );
    }

    // 150k bad entries in a 15 MB body: the answer lists 20 and counts all, and the daemon's
    // memory stays proportional to the body.
    let bad_comment = "x".repeat(100);
    let many: Vec<Value> = (0..150_000u32)
        .map(|i| {
            json!({"cidr": format!("198.18.{}.{}", i >> 8 & 0xff, i & 0xff),
                   "comment": bad_comment})
        })
        .collect();
    let body = json!({"source": "big", "entries": many}).to_string();
    let rss_before = d.rss_kib();
    let r = d.call("POST", "/v1/blocklist", Some(&body), true);
    assert_eq!(r.status, 400, "over-long comments are refused");
    assert_eq!(r.body["bad_count"], 150_000, "every bad entry counted");
    assert_eq!(
        r.body["bad_entries"].as_array().map(Vec::len),
        Some(20),
        "twenty shown"
    );
    assert!(
        r.body.to_string().len() < 16 << 10,
        "a short answer: {} bytes",
        r.body.to_string().len()
    );
    let peak = d.peak_rss_kib();
    let growth_mib = peak.saturating_sub(rss_before) / 1024;
    let body_mib = body.len() / (1 << 20);
    println!("body {body_mib} MiB: RSS {rss_before} KiB before, peak {peak} KiB");
    assert!(
        growth_mib <= 8 * body_mib as u64,
        "peak memory grew {growth_mib} MiB for a {body_mib} MiB body"
    );
}

/// `floodgate status --json` as JSON.
fn status(lab: &Lab) -> Value {
    serde_json::from_str(&floodgate_ok(lab, &["status", "--json"])).expect("status JSON")
}

#[test]
fn one_daemon_per_pin_dir_no_purge_under_it_and_reads_create_nothing() {
    let lab = lab("rone");
    let dir = Scratch::new();
    let base = Daemon::base_config(&dir.0, "");
    let config = format!("mode = \"enforce\"\n{base}\n[lists]\nblock = [\"198.18.5.5\"]\n");
    let mut d = Daemon::start(&lab.victim, &lab.pin_dir, &dir.0, &config);
    assert_eq!(cidrs(&lab), ["198.18.5.5/32"]);

    // A second daemon on the same pins, on a free port, with another mode and list: it must
    // refuse before it changes anything, and name the first.
    let second = dir.0.join("second.toml");
    std::fs::write(
        &second,
        format!(
            "mode = \"dry-run\"\n{}listen = \"127.0.0.1:9478\"\n[lists]\nblock = [\"198.18.6.6\"]\n",
            base
        ),
    )
    .expect("writing");
    let (code, err) = d.run_to_exit(&second);
    assert!(!code.success(), "a second daemon must not run: {err}");
    assert!(
        err.contains(&format!("pid {}", d.pid())) && err.contains("one daemon per pin directory"),
        "names the first daemon: {err}"
    );
    assert_eq!(cidrs(&lab), ["198.18.5.5/32"], "lists untouched");
    assert_eq!(
        status(&lab)["defences"]["mode"],
        "enforce",
        "mode untouched"
    );

    // No purge under a running daemon.
    let err = refused(&lab, &["detach", "--all", "--purge"], 1);
    assert!(err.contains(&format!("pid {}", d.pid())), "{err}");
    assert!(
        lab.pin_dir.join("maps").exists(),
        "the pins are still there"
    );
    assert_eq!(d.call("GET", "/healthz", None, false).status, 200);

    // Pins taken away under the daemon (by hand): it says it is unhealthy and refuses
    // writes instead of answering 200 with no effect.
    std::fs::remove_dir_all(&lab.pin_dir).expect("removing the pins");
    let h = d.call("GET", "/healthz", None, false);
    assert_eq!(h.status, 503, "{h:?}");
    assert!(
        h.body["error"].as_str().is_some_and(|e| e.contains("gone")),
        "{h:?}"
    );
    let r = d.call(
        "POST",
        "/v1/blocklist",
        Some(&json!({"entries": ["198.18.7.7"]}).to_string()),
        true,
    );
    assert_eq!(r.status, 503, "{r:?}");
    assert!(d.stop(libc::SIGTERM).success(), "{}", d.log_text());

    // Reads on nothing say so and create nothing.
    let _ = std::fs::remove_dir_all(&lab.pin_dir);
    for args in [
        &["block", "list"][..],
        &["allow", "list", "--json"],
        &["stats"],
        &["rule", "list"],
        &["show-config"],
    ] {
        let err = refused(&lab, args, 1);
        assert!(err.contains("no floodgate state"), "{args:?}: {err}");
    }
    let st = status(&lab);
    assert_eq!(st["state"], "none", "{st}");
    assert!(
        !lab.pin_dir.exists(),
        "reads created {}",
        lab.pin_dir.display()
    );
}

#[test]
fn a_snapshot_that_cannot_be_restored_is_kept_aside_and_never_overwritten() {
    let lab = lab("rsnap");
    let dir = Scratch::new();
    let config = Daemon::base_config(&dir.0, "");
    let mut d = Daemon::start(&lab.victim, &lab.pin_dir, &dir.0, &config);
    let snap = dir.0.join("snapshot.json");
    let good = json!({"source": "feed", "entries": ["198.18.20.0/24"]});
    let r = d.call("POST", "/v1/blocklist", Some(&good.to_string()), true);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(d.stop(libc::SIGTERM).success());
    let whole = std::fs::read_to_string(&snap).expect("a snapshot");

    let damaged = [
        ("empty", String::new()),
        ("truncated", whole[..whole.len() / 2].to_string()),
        ("garbage", "\u{0}\u{1}garbage".to_string()),
        (
            "bad entry",
            whole.replace("198.18.20.0/24", "198.18.20.1/24"),
        ),
    ];
    for (what, text) in damaged {
        // A reboot: no pins; the snapshot is damaged.
        let _ = std::fs::remove_dir_all(&lab.pin_dir);
        for old in std::fs::read_dir(&dir.0).expect("dir").flatten() {
            if old.file_name().to_string_lossy().contains(".corrupt-") {
                std::fs::remove_file(old.path()).expect("clearing");
            }
        }
        std::fs::write(&snap, &text).expect("writing");
        let (code, err) = d.run_to_exit(&d.config);
        assert!(!code.success(), "{what}: the first start refuses: {err}");
        assert!(err.contains("kept as"), "{what}: says where: {err}");
        assert!(
            !lab.pin_dir.join("maps").exists(),
            "{what}: the refusing start left maps behind"
        );
        let aside: Vec<_> = std::fs::read_dir(&dir.0)
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
            .map(|e| e.path())
            .collect();
        assert_eq!(aside.len(), 1, "{what}: kept aside once");
        assert_eq!(
            std::fs::read_to_string(&aside[0]).expect("kept"),
            text,
            "{what}: kept as it was"
        );
        // The restart (systemd's, a second later) starts clean, says what it kept, and its
        // own snapshots never touch the kept file.
        d.spawn();
        let none = d.wait_events("snapshot_none", 1, std::time::Duration::from_secs(5));
        let last = none.last().expect("event");
        assert!(
            last["corrupt_kept"].to_string().contains(".corrupt-"),
            "{what}: {last}"
        );
        assert_eq!(cidrs(&lab), Vec::<String>::new(), "{what}: empty lists");
        assert!(d.stop(libc::SIGTERM).success());
        assert_eq!(
            std::fs::read_to_string(&aside[0]).expect("kept"),
            text,
            "{what}: still as it was"
        );
    }

    // A FIFO where the snapshot should be: refused at once with the reason, not a hang.
    let _ = std::fs::remove_dir_all(&lab.pin_dir);
    std::fs::remove_file(&snap).expect("removing");
    let c = std::ffi::CString::new(snap.to_str().expect("utf-8")).expect("no NUL");
    // SAFETY: NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let (code, err) = d.run_to_exit(&d.config);
    assert!(!code.success() && err.contains("a FIFO"), "{err}");
    assert!(!lab.pin_dir.join("maps").exists(), "no maps left behind");
    std::fs::remove_file(&snap).expect("removing the FIFO");

    // A snapshot path that became a directory: the save fails with the reason in the log.
    d.spawn();
    std::fs::create_dir(&snap).expect("mkdir");
    assert!(d.stop(libc::SIGTERM).success());
    let failed = d.events("snapshot_failed");
    assert!(
        failed.iter().any(|e| e["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a regular file"))),
        "{}",
        d.log_text()
    );
}

/// The write journal of the lab's pin directory (see filter-userspace/src/journal.rs).
fn journal_path(lab: &Lab) -> std::path::PathBuf {
    let name: String = lab
        .pin_dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    std::path::PathBuf::from(format!("/run/lock/floodgate{name}.journal"))
}

/// Wait until the journal holds at least `bytes` (a batch is part-way), then SIGKILL `pid`.
/// Returns false if `alive` says the writer ended first.
fn kill_mid_batch(lab: &Lab, pid: u32, bytes: u64, alive: &mut dyn FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    loop {
        let size = std::fs::metadata(journal_path(lab)).map_or(0, |m| m.len());
        if size >= bytes {
            // SAFETY: kill(2) on a child of this test.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            return true;
        }
        if !alive() {
            return false;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no journal of {bytes} bytes in 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Entries on the blocklist per source, read without taking the lock (what the maps hold now,
/// recovered or not): `status --json` counts.
fn blocklist_size(lab: &Lab) -> u64 {
    let st = status(lab);
    st["blocklist"]["ipv4"].as_u64().expect("ipv4")
        + st["blocklist"]["ipv6"].as_u64().expect("ipv6")
}

/// `n` IPv6 documentation /64 prefixes, one per line, from `base`.
fn prefixes(base: u32, n: u32) -> String {
    (base..base + n)
        .map(|i| format!("2001:db8:{:x}:{:x}::/64\n", i >> 16, i & 0xffff))
        .collect()
}

/// `n` IPv6 documentation hosts, one per line, from `base`.
fn hosts(base: u32, n: u32) -> String {
    (base..base + n)
        .map(|i| format!("2001:db8:{:x}:{:x}::1\n", i >> 16, i & 0xffff))
        .collect()
}

#[test]
fn a_load_killed_part_way_is_rolled_back_by_the_next_command() {
    let lab = lab("rcrash");
    let dir = Scratch::new();
    // Other sources' entries, which the undo must not touch.
    floodgate_ok(
        &lab,
        &["block", "add", "198.18.9.9", "--comment", "keep me"],
    );
    let keep = dir.0.join("keep.txt");
    std::fs::write(&keep, hosts(0, 1000)).expect("writing");
    floodgate_ok(
        &lab,
        &[
            "block",
            "load",
            keep.to_str().expect("utf-8"),
            "--source",
            "keep",
        ],
    );
    let before = cidrs(&lab);
    assert_eq!(before.len(), 1001);

    // (what, file, extra args): a first load into an empty map (batched), a load of a source
    // over entries it shares with another (one at a time), a --replace of the keep source.
    let big = dir.0.join("big.txt");
    std::fs::write(&big, prefixes(1 << 20, 600_000)).expect("writing");
    let mixed = dir.0.join("mixed.txt");
    std::fs::write(&mixed, format!("198.18.9.9\n{}", hosts(500, 300_000))).expect("writing");
    let replace = dir.0.join("replace.txt");
    std::fs::write(&replace, hosts(900, 300_000)).expect("writing");
    let cases: [(&str, &std::path::Path, &[&str]); 3] = [
        ("load into an empty map", &big, &["--source", "feed"]),
        ("load over shared entries", &mixed, &["--source", "feed"]),
        ("replace", &replace, &["--source", "keep", "--replace"]),
    ];
    for (what, file, extra) in cases {
        let mut args = vec!["block", "load", file.to_str().expect("utf-8")];
        args.extend_from_slice(extra);
        let mut child = floodgate_tests::floodgate_spawn(&lab, &args);
        let pid = child.id();
        let killed = kill_mid_batch(&lab, pid, 2 << 20, &mut || {
            matches!(child.try_wait(), Ok(None))
        });
        let status = child.wait().expect("waiting");
        assert!(
            killed,
            "{what}: the load ended before it could be killed ({status})"
        );
        // The maps hold a part of the batch now (the crash the journal is for)...
        let partial = blocklist_size(&lab);
        println!(
            "{what}: killed with {partial} entries in the maps (had {})",
            before.len()
        );
        assert_ne!(partial, before.len() as u64, "{what}: killed part-way");
        // ...and the next command undoes it, says so, then does its own work.
        let out = floodgate(&lab, &["block", "add", "198.18.7.7"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{what}: {err}");
        assert!(err.contains("rolled back"), "{what}: says so: {err}");
        let mut want = before.clone();
        want.push("198.18.7.7/32".into());
        want.sort();
        let mut got = cidrs(&lab);
        got.sort();
        assert_eq!(got.len(), want.len(), "{what}: the lists are as before");
        assert_eq!(got, want, "{what}: the lists are as before");
        floodgate_ok(&lab, &["block", "del", "198.18.7.7"]);
        assert!(!journal_path(&lab).exists(), "{what}: journal removed");
    }
    // Sources and comments as before too.
    let v: Value =
        serde_json::from_str(&floodgate_ok(&lab, &["block", "list", "--json"])).expect("JSON");
    let kept = v
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["cidr"] == "198.18.9.9/32")
        .expect("listed");
    assert_eq!(
        (kept["source"].clone(), kept["comment"].clone()),
        (json!("cli"), json!("keep me"))
    );
}

#[test]
fn a_daemon_killed_mid_push_rolls_it_back_on_restart() {
    let lab = lab("rdcrash");
    let dir = Scratch::new();
    let mut d = Daemon::start_basic(&lab.victim, &lab.pin_dir, &dir.0, "");
    let r = d.call(
        "POST",
        "/v1/blocklist",
        Some(&json!({"source": "other", "entries": ["198.18.3.3", "2001:db8::3"]}).to_string()),
        true,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let entries: Vec<String> = hosts(10_000, 200_000).lines().map(str::to_string).collect();
    let body = json!({"source": "big", "entries": entries}).to_string();
    let pid = d.pid();
    let pusher = {
        let ns_body = body.clone();
        let ns = &lab.victim;
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                ns.run(move || {
                    floodgate_tests::daemon::http(
                        "POST",
                        "http://127.0.0.1:9477/v1/blocklist",
                        Some(&ns_body),
                        Some(floodgate_tests::daemon::TOKEN),
                    )
                })
            });
            let killed = kill_mid_batch(&lab, pid, 1 << 20, &mut || !h.is_finished());
            let answer = h.join().expect("pusher thread");
            (killed, answer)
        })
    };
    let (killed, answer) = pusher;
    assert!(killed, "the push finished before the kill: {answer:?}");
    let partial = blocklist_size(&lab);
    println!("daemon killed with {partial} entries in the maps");
    assert!(partial > 2, "killed part-way through the push");
    d.stop(libc::SIGKILL);
    d.spawn();
    let ev = d.wait_events("journal_rolled_back", 1, std::time::Duration::from_secs(10));
    assert_eq!(ev[0]["source"], "big", "{}", d.log_text());
    let mut got = cidrs(&lab);
    got.sort();
    assert_eq!(
        got,
        ["198.18.3.3/32", "2001:db8::3/128"],
        "as before the push"
    );
}

#[test]
fn rotating_source_names_never_run_out() {
    let lab = lab("rsrc");
    let dir = Scratch::new();
    let d = Daemon::start_basic(&lab.victim, &lab.pin_dir, &dir.0, "");
    let push = |source: &str, entry: &str| {
        let body = json!({"source": source, "entries": [entry]}).to_string();
        d.call("POST", "/v1/blocklist", Some(&body), true)
    };
    // 600 sources in turn, each flushed by source when done (more than the 252 ids).
    for i in 0..600u32 {
        let name = format!("rot-{i}");
        let r = push(&name, &format!("198.18.{}.{}", 100 + i / 250, i % 250));
        assert_eq!(r.status, 200, "push {i}: {r:?}");
        let r = d.call(
            "DELETE",
            &format!("/v1/blocklist?source={name}"),
            None,
            true,
        );
        assert_eq!(r.status, 200, "delete {i}: {r:?}");
    }
    // 300 sources whose entries are deleted one by one (their ids are not freed at once): the
    // registry frees them when it runs out.
    for i in 0..300u32 {
        let entry = format!("198.18.{}.{}", 110 + i / 250, i % 250);
        let r = push(&format!("once-{i}"), &entry);
        assert_eq!(r.status, 200, "push {i}: {r:?}");
        let body = json!({"entries": [entry]}).to_string();
        assert_eq!(
            d.call("DELETE", "/v1/blocklist", Some(&body), true).status,
            200
        );
    }
    let sources = d.call("GET", "/v1/sources", None, false);
    let n = sources.body["sources"].as_array().map_or(0, Vec::len);
    assert!(n <= 256, "{n} sources listed");
    assert!(
        sources.body["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .any(|s| s["source"] == "retired" && s["fixed"] == true),
        "{sources:?}"
    );
}

#[test]
fn a_cli_load_killed_beside_the_daemon_is_undone_before_any_snapshot() {
    let lab = lab("rcli");
    let dir = Scratch::new();
    let mut d = Daemon::start(
        &lab.victim,
        &lab.pin_dir,
        &dir.0,
        &Daemon::base_config(
            &dir.0,
            "snapshot_interval = \"1s\"\nsweep_interval = \"1h\"",
        ),
    );
    floodgate_ok(&lab, &["block", "add", "198.18.4.4"]);
    let big = dir.0.join("big.txt");
    std::fs::write(&big, hosts(0, 400_000)).expect("writing");
    let big = big.to_str().expect("utf-8");
    let mut child =
        floodgate_tests::floodgate_spawn(&lab, &["block", "load", big, "--source", "cut"]);
    let pid = child.id();
    let killed = kill_mid_batch(&lab, pid, 1 << 20, &mut || {
        matches!(child.try_wait(), Ok(None))
    });
    let _ = child.wait();
    assert!(killed, "the load ended before it could be killed");
    // The daemon's snapshotter takes the lock, undoes the dead load, then saves.
    let ev = d.wait_events("journal_rolled_back", 1, std::time::Duration::from_secs(10));
    assert_eq!(ev[0]["source"], "cut", "{}", d.log_text());
    assert_eq!(cidrs(&lab), ["198.18.4.4/32"], "as before the load");
    assert!(d.stop(libc::SIGTERM).success());
    let snap: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.0.join("snapshot.json")).expect("snap"))
            .expect("JSON");
    assert_eq!(
        snap["blocklist"].as_array().map(Vec::len),
        Some(1),
        "the snapshot holds whole batches only"
    );
}
