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
            "control character \\u{1b}",
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

    // A feed file saved with a byte-order mark loads; a huge bad line is quoted short.
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
    let d = Daemon::start(
        &lab.victim,
        &lab.pin_dir,
        &dir.0,
        &Daemon::base_config(&dir.0, ""),
    );
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
            "ttl",
        ),
        (
            json!({"cidr": "198.18.1.2", "ttl": "18446744073s"}),
            "maximum",
        ),
        (json!({"cidr": "198.18.1.2", "ttl": "0s"}), "more than 0"),
        (
            json!({"cidr": "198.18.1.2", "comment": "a\u{1b}[2J"}),
            "control character",
        ),
        (json!("0.0.0.0/0"), "--force"),
        (json!("::/0"), "--force"),
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
