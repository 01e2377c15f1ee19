//! Daemon figures (`cargo xtask bench`): push-to-first-drop latency and the rate of a
//! 100k-entry push through the HTTP API, with the real daemon in a lab namespace.
//!
//! Latency: a sender in the attacker namespace sends a frame every ~50 us from an address
//! not yet listed; the clock starts just before the POST that lists it and stops when the
//! source's drop counter (read from the pinned map in this process) moves. It includes HTTP,
//! JSON, the state lock, the map write and the wait for the next frame.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use floodgate::{
    loader::PinDir,
    state::{Access, State},
};
use floodgate_lab::{
    ATTACKER_IF, ATTACKER_V4, Lab, VICTIM_IF, VICTIM_V4,
    traffic::{RawSender, udp_frame},
};
use floodgate_tests::daemon::{Daemon, Scratch, TOKEN, http};
use serde_json::json;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

/// A POST written in one segment with TCP_NODELAY, as a tuned feed client would send it
/// (ureq writes headers and body apart, and Nagle's algorithm then holds the body back
/// for milliseconds). Returns the whole response.
fn raw_post(path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect("127.0.0.1:9477").expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

fn main() -> anyhow::Result<()> {
    let lab = Lab::new("bnch")?;
    let dir = Scratch::new();
    let config = Daemon::base_config(&dir.0, &format!("interfaces = [\"{VICTIM_IF}\"]"));
    let d = Daemon::start(&lab.victim, &lab.pin_dir, &dir.0, &config);
    assert!(lab.ping(&ATTACKER_V4.to_string(), &VICTIM_V4.to_string(), 1));
    let state = State::open(&PinDir::new(&lab.pin_dir), Access::Read)?;
    let victim_mac = Lab::mac(&lab.victim, VICTIM_IF)?;
    let attacker_mac = Lab::mac(&lab.attacker, ATTACKER_IF)?;
    let post = |body: String| {
        lab.victim
            .run(|| {
                http(
                    "POST",
                    "http://127.0.0.1:9477/v1/blocklist",
                    Some(&body),
                    Some(TOKEN),
                )
            })
            .expect("namespace")
            .expect("answer")
    };

    // Push -> first drop, 15 rounds, from a client thread that stays in the victim's namespace
    // (entering a namespace per request costs milliseconds of its own).
    let (lat, http_ms) = lab.victim.run(|| {
        let post = |body: String| raw_post("/v1/blocklist", &body);
        let mut lat = Vec::new();
        let mut http_ms = Vec::new();
        for round in 0..15u32 {
            let source = format!("lat-{round}");
            let stop = AtomicBool::new(false);
            let ms = std::thread::scope(|s| {
                s.spawn(|| {
                    lab.attacker
                        .run(|| {
                            let tx = RawSender::open(ATTACKER_IF).expect("raw socket");
                            let frame = udp_frame(
                                attacker_mac,
                                victim_mac,
                                ATTACKER_V4.into(),
                                VICTIM_V4.into(),
                                40000,
                                9999,
                                &[0xab; 32],
                            );
                            while !stop.load(Ordering::Relaxed) {
                                tx.send(&frame).expect("send");
                                let t = Instant::now();
                                while t.elapsed() < Duration::from_micros(50) {
                                    std::hint::spin_loop();
                                }
                            }
                        })
                        .expect("attacker namespace")
                });
                std::thread::sleep(Duration::from_millis(20));
                let t0 = Instant::now();
                let r = post(
                    json!({"source": source, "entries": [ATTACKER_V4.to_string()]}).to_string(),
                );
                assert!(r.starts_with("HTTP/1.1 200"), "{r}");
                let posted = t0.elapsed().as_secs_f64() * 1e3;
                let id = state
                    .lists
                    .sources
                    .id(&source)
                    .expect("id")
                    .expect("registered");
                while state.lists.sources.drops(id).expect("drops").packets == 0 {
                    assert!(t0.elapsed() < Duration::from_secs(5), "no drop in 5 s");
                }
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                stop.store(true, Ordering::Relaxed);
                http_ms.push(posted);
                ms
            });
            lat.push(ms);
            let r = http(
                "DELETE",
                &format!("http://127.0.0.1:9477/v1/blocklist?source={source}"),
                None,
                Some(TOKEN),
            )
            .expect("answer");
            assert_eq!(r.status, 200);
        }
        (lat, http_ms)
    })?;
    let server: Vec<f64> = d
        .events("push")
        .iter()
        .filter_map(|e| e["ms"].as_f64())
        .collect();
    println!(
        "  of which the daemon's own work (lock, checks, map writes): median {:.2} ms",
        median(server)
    );
    let (min, max) = lat
        .iter()
        .fold((f64::MAX, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
    println!(
        "push -> first drop: median {:.2} ms (min {min:.2}, max {max:.2}) over {} rounds",
        median(lat.clone()),
        lat.len()
    );
    println!(
        "  of which the POST round trip (answered once the entry is in the map): median {:.2} ms",
        median(http_ms.clone())
    );

    // 100k entries in one push (a new source), then the same push again (all updates).
    let entries: Vec<String> = (0..100_000u32)
        .map(|i| std::net::Ipv4Addr::from(0xC613_0000 + i).to_string())
        .collect();
    let body = json!({"source": "bulk", "entries": entries}).to_string();
    for what in ["new", "again (updates)"] {
        let t0 = Instant::now();
        let r = post(body.clone());
        let secs = t0.elapsed().as_secs_f64();
        assert_eq!(r.status, 200, "{r:?}");
        println!(
            "100k-entry push, {what}: {secs:.2} s, {:.0} entries/s ({} bytes of JSON)",
            100_000.0 / secs,
            body.len()
        );
    }
    let t0 = Instant::now();
    let r = d.call("GET", "/v1/blocklist?source=bulk", None, false);
    assert_eq!(r.body["count"], 100_000);
    println!(
        "GET of the 100k entries: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let t0 = Instant::now();
    let m = d.call("GET", "/metrics", None, false);
    assert_eq!(m.status, 200);
    println!(
        "/metrics with 100k entries: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
