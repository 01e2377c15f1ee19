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
    lists::ListKind,
    loader::PinDir,
    state::{Access, State},
};
use floodgate_lab::{
    ATTACKER_IF, ATTACKER_V4, Lab, VICTIM_IF, VICTIM_V4,
    traffic::{RawSender, udp_frame},
};
use floodgate_tests::{
    bench::mixed_list,
    daemon::{Daemon, Scratch, TOKEN, http},
    floodgate,
};
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
    let remove = json!({"source": "bulk"}).to_string();
    let r = d.call("DELETE", "/v1/blocklist?source=bulk", None, true);
    assert_eq!(r.status, 200, "{remove}: {r:?}");

    million(&lab, d, &post)
}

/// A million entries: one push, the reads that must not walk them, a replace with 10% churn
/// (watched for lapses), then the snapshot written and restored.
fn million(
    lab: &Lab,
    mut d: Daemon,
    post: &dyn Fn(String) -> floodgate_tests::daemon::Reply,
) -> anyhow::Result<()> {
    const N: usize = 1_000_000;
    let all = mixed_list(N + N / 10, 0x5eed);
    let body = |nets: &[ipnet::IpNet], replace: bool| {
        let entries: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
        json!({"source": "feed", "replace": replace, "entries": entries}).to_string()
    };
    let first = body(&all[..N], false);
    let t0 = Instant::now();
    let r = post(first.clone());
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(r.status, 200, "{:?}", r.body);
    let lists_ms = |d: &Daemon| {
        d.events("push")
            .last()
            .and_then(|e| e["ms"].as_f64())
            .unwrap_or(f64::NAN)
    };
    println!(
        "1M-entry push (the mixed list, new): {secs:.2} s ({:.0} MiB of JSON; the lists' part, \
         after parsing: {:.2} s)",
        first.len() as f64 / (1 << 20) as f64,
        lists_ms(&d) / 1e3
    );
    drop(first);

    // Reads at 1M: median of 5 each.
    let timed = |f: &dyn Fn()| -> f64 {
        median(
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect(),
        )
    };
    let metrics = timed(&|| assert_eq!(d.call("GET", "/metrics", None, false).status, 200));
    let sources = timed(&|| {
        let r = d.call("GET", "/v1/sources", None, true);
        assert_eq!(r.status, 200);
    });
    let status = timed(&|| {
        let out = floodgate(lab, &["status"]);
        assert!(out.status.success(), "{out:?}");
    });
    let state = State::open(&PinDir::new(&lab.pin_dir), Access::Read)?;
    let check = timed(&|| {
        let c = state.lists.map_counts(ListKind::Block);
        assert_eq!(c.iter().sum::<usize>(), N, "{c:?}");
    });
    println!(
        "at 1M entries, median of 5: /metrics {metrics:.1} ms, /v1/sources {sources:.1} ms, \
         `floodgate status` {status:.1} ms (a process start included), snapshot check {check:.3} ms"
    );

    // Replace: 90% of the entries stay, 10% go, 10% come. A watcher reads 1000 that stay from
    // the pinned map all along: any miss is a lapse.
    let stays: Vec<[u8; 4]> = all[N / 10..N]
        .iter()
        .filter_map(|n| match n {
            ipnet::IpNet::V4(v) if v.prefix_len() == 32 => Some(v.addr().octets()),
            _ => None,
        })
        .take(1000)
        .collect();
    let exact: aya::maps::HashMap<aya::maps::MapData, [u8; 4], filter_common::ListEntry> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(aya::maps::MapData::from_pin(
            PinDir::new(&lab.pin_dir)
                .maps()
                .join(filter_common::map_names::BLOCK_V4_EXACT),
        )?))?;
    let second = body(&all[N / 10..], true);
    let stop = AtomicBool::new(false);
    let (secs, reads, lapses) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let (mut reads, mut lapses) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                for k in &stays {
                    reads += 1;
                    if exact.get(k, 0).is_err() {
                        lapses += 1;
                    }
                }
            }
            (reads, lapses)
        });
        let t0 = Instant::now();
        let r = post(second.clone());
        let secs = t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        assert_eq!(r.status, 200, "{:?}", r.body);
        let (reads, lapses) = watcher.join().expect("watcher");
        (secs, reads, lapses)
    });
    assert_eq!(
        state
            .lists
            .map_counts(ListKind::Block)
            .iter()
            .sum::<usize>(),
        N
    );
    println!(
        "1M replace by 1M (10% churn: 100k in, 100k out): {secs:.2} s (the lists' part: \
         {:.2} s); lapses seen by a watcher reading 1000 staying entries throughout: {lapses} \
         of {reads} reads",
        lists_ms(&d) / 1e3
    );
    drop(second);
    drop(state);

    // Snapshot: written and restored by the library the daemon uses, daemon stopped.
    d.stop(libc::SIGTERM);
    let dir = Scratch::new();
    let path = dir.0.join("lists.snap");
    let mut state = State::open(&PinDir::new(&lab.pin_dir), Access::Write)?;
    let t0 = Instant::now();
    let snap = floodgate::snapshot::take(&state.lists)?;
    floodgate::snapshot::write(&path, &snap)?;
    let write = t0.elapsed().as_secs_f64();
    drop(snap);
    state.lists.flush(ListKind::Block)?;
    let t0 = Instant::now();
    let snap = floodgate::snapshot::read(&path)?.expect("a snapshot");
    let r = floodgate::snapshot::restore(&mut state.lists, &snap, &mut |_, _| {})?;
    let restore = t0.elapsed().as_secs_f64();
    assert_eq!(r.entries, N);
    println!(
        "snapshot of 1M entries: written in {write:.2} s ({:.0} MiB), restored into empty \
         maps in {restore:.2} s",
        std::fs::metadata(&path)?.len() as f64 / (1 << 20) as f64
    );
    Ok(())
}
