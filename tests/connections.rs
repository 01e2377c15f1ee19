//! The daemon's HTTP connections are bounded: a request head must arrive whole within
//! `daemon.header_timeout` of its first byte, a connection with no request in flight is closed
//! after `daemon.idle_timeout`, and above `daemon.max_connections` new connections get one
//! short chance and no keep-alive. Idle hoarders and slowloris clients once held every file
//! descriptor the daemon had, and `/healthz` and the sweeper stopped working.
//!
//! The real daemon in a namespace, raw sockets opened in that namespace. Run as root,
//! single-threaded (`cargo xtask test`).

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use floodgate_lab::Lab;
use floodgate_tests::daemon::{Daemon, Scratch};
use serde_json::json;

const API: &str = "127.0.0.1:9477";

fn lab(tag: &str) -> Lab {
    Lab::new(tag).unwrap_or_else(|e| panic!("creating the lab: {e:#}"))
}

/// `n` TCP connections to the daemon, opened inside its namespace.
fn connect(lab: &Lab, n: usize) -> Vec<TcpStream> {
    lab.victim
        .run(|| {
            (0..n)
                .map(|i| TcpStream::connect(API).unwrap_or_else(|e| panic!("connection {i}: {e}")))
                .collect()
        })
        .unwrap_or_else(|e| panic!("entering the namespace: {e:#}"))
}

fn connect_one(lab: &Lab) -> TcpStream {
    connect(lab, 1).pop().expect("one connection")
}

/// Did the daemon close `s` (EOF or reset), waiting at most `wait` for it to happen?
/// Anything the daemon sends before closing is skipped.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left))
            .expect("setting a read timeout");
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// Is `s` closed right now (without waiting)?
fn is_closed(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 1];
    let closed = match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).expect("blocking");
    closed
}

/// Send a GET and read its response; returns the status line and the response head.
fn get(s: &mut TcpStream, path: &str) -> (String, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: floodgate\r\n\r\n").as_bytes())
        .unwrap_or_else(|e| panic!("sending GET {path}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("setting a read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("reading the answer to GET {path}: {e}"));
        assert!(n > 0, "the connection closed before answering GET {path}");
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .unwrap_or_else(|| panic!("no content-length in {head}"))
        .trim()
        .parse()
        .expect("a content-length number");
    while got.len() < head_end + length {
        let n = s.read(&mut buf).expect("reading the body");
        assert!(n > 0, "the connection closed in the middle of the body");
        got.extend_from_slice(&buf[..n]);
    }
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, head)
}

/// The value of an unlabelled sample in the /metrics text.
fn metric(d: &Daemon, name: &str) -> f64 {
    let r = d.call("GET", "/metrics", None, false);
    assert_eq!(r.status, 200, "{r:?}");
    let text = r.body.as_str().expect("metrics are text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn a_request_head_must_arrive_whole_within_the_header_timeout() {
    let lab = lab("cnxh");
    let dir = Scratch::new();
    // The idle timeout is long: whatever closes these connections is the header timeout.
    let config = Daemon::base_config(&dir.0, "header_timeout = \"3s\"\nidle_timeout = \"60s\"");
    let d = Daemon::start(&lab.victim, &lab.pin_dir, &dir.0, &config);

    // Half a head, then nothing.
    let mut half = connect_one(&lab);
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: flood")
        .expect("sending half a head");
    assert!(
        !closed_within(&mut half, Duration::from_secs(1)),
        "a connection with half a head is given the header timeout, not closed at once"
    );
    assert!(
        closed_within(&mut half, Duration::from_secs(15)),
        "half a head and then silence: the daemon must close the connection after \
         header_timeout (3s); it was still open 16 s later. Log:\n{}",
        d.log_text()
    );

    // Slowloris: a byte of head every 300 ms keeps bytes coming, but the head never ends.
    let mut drip = connect_one(&lab);
    let started = Instant::now();
    let mut closed = false;
    for b in b"GET /healthz HTTP/1.1\r\nX-Pad: "
        .iter()
        .chain([b'a'; 200].iter())
    {
        if drip.write_all(&[*b]).is_err() || closed_within(&mut drip, Duration::from_millis(300)) {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a head sent one byte every 300 ms was still being read after {:?}: activity must \
         not extend the header timeout (3s)",
        started.elapsed()
    );

    // A write without the token whose body dribbles: the body is never read (401 comes
    // first), and what keeps coming after the answer is bounded like a head.
    let mut body = connect_one(&lab);
    body.write_all(
        b"POST /v1/blocklist HTTP/1.1\r\nHost: floodgate\r\nContent-Type: application/json\r\n\
          Content-Length: 100000\r\n\r\n{\"source\": \"slow\", \"entries\": [",
    )
    .expect("sending a head and the start of a body");
    let started = Instant::now();
    let mut closed = false;
    for _ in 0..50 {
        if body.write_all(b" ").is_err() || closed_within(&mut body, Duration::from_millis(300)) {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a token-less body sent one byte every 300 ms was still being taken after {:?}",
        started.elapsed()
    );

    // A prompt request on a fresh connection is of course answered.
    let mut fine = connect_one(&lab);
    let (status, _) = get(&mut fine, "/healthz");
    assert!(status.contains(" 200 "), "GET /healthz: {status}");
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout_and_keep_alive_works_until_then() {
    let lab = lab("cnxi");
    let dir = Scratch::new();
    // The header timeout is long: whatever closes these connections is the idle timeout.
    let config = Daemon::base_config(&dir.0, "header_timeout = \"30s\"\nidle_timeout = \"3s\"");
    let d = Daemon::start(&lab.victim, &lab.pin_dir, &dir.0, &config);

    // Connected, never a byte.
    let mut silent = connect_one(&lab);
    assert!(
        !closed_within(&mut silent, Duration::from_secs(1)),
        "a new connection is given the idle timeout, not closed at once"
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(15)),
        "a connection that never sent a byte must be closed after idle_timeout (3s). Log:\n{}",
        d.log_text()
    );

    // Keep-alive: a second request on the same connection is served, then idleness closes it.
    let mut kept = connect_one(&lab);
    let (status, head) = get(&mut kept, "/healthz");
    assert!(status.contains(" 200 "), "first GET /healthz: {status}");
    assert!(
        !head.contains("connection: close"),
        "below max_connections the connection is kept alive: {head}"
    );
    assert!(
        !closed_within(&mut kept, Duration::from_secs(1)),
        "a keep-alive connection is kept for idle_timeout (3s), not closed after 1 s"
    );
    let (status, _) = get(&mut kept, "/v1/sources");
    assert!(
        status.contains(" 200 "),
        "second request on the kept connection: {status}"
    );
    assert!(
        closed_within(&mut kept, Duration::from_secs(15)),
        "an idle keep-alive connection must be closed after idle_timeout (3s). Log:\n{}",
        d.log_text()
    );
}

#[test]
fn above_max_connections_idle_hoarders_are_shed_and_healthz_and_pushes_still_work() {
    let lab = lab("cnxc");
    let dir = Scratch::new();
    // Long timeouts: only the cap can close the hoarders within this test.
    let config = Daemon::base_config(
        &dir.0,
        "max_connections = 50\nheader_timeout = \"60s\"\nidle_timeout = \"60s\"",
    );
    let d = Daemon::start(&lab.victim, &lab.pin_dir, &dir.0, &config);

    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid()))
        .expect("reading the daemon's limits");
    let nofile: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line")
        .split_whitespace()
        .collect();
    assert_eq!(
        nofile[3], nofile[4],
        "the daemon raises its open-file soft limit to the hard limit: {limits}"
    );

    let mut hoarders = connect(&lab, 200);
    // The 150 over the cap have one second to send a request; they send nothing.
    let until = Instant::now() + Duration::from_secs(15);
    let mut closed = 0;
    while Instant::now() < until {
        closed = hoarders.iter_mut().map(is_closed).filter(|c| *c).count();
        if closed >= 150 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        closed >= 140,
        "200 idle connections against max_connections = 50: those over the cap must be shed \
         within seconds; {closed} were closed. Log:\n{}",
        d.log_text()
    );
    assert!(
        closed <= 160,
        "connections under the cap keep their idle timeout (60s); {closed} of 200 were closed"
    );

    // The probe and a push connect while the cap is full: served, because they are prompt.
    let health = d.call("GET", "/healthz", None, false);
    assert_eq!(health.status, 200, "/healthz with the cap full: {health:?}");
    let body = json!({"source": "cnx", "entries": ["198.18.7.7"]}).to_string();
    let pushed = d.call("POST", "/v1/blocklist", Some(&body), true);
    assert_eq!(pushed.status, 200, "a push with the cap full: {pushed:?}");
    assert_eq!(pushed.body["added"], 1, "{pushed:?}");
    let open = metric(&d, "floodgate_api_connections");
    assert!(
        (40.0..=70.0).contains(&open),
        "floodgate_api_connections counts the ~50 kept hoarders and the scrape: {open}"
    );

    drop(hoarders);
    let until = Instant::now() + Duration::from_secs(15);
    let mut open = metric(&d, "floodgate_api_connections");
    while open > 2.0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
        open = metric(&d, "floodgate_api_connections");
    }
    assert!(
        open <= 2.0,
        "closed connections leave floodgate_api_connections: {open} still counted"
    );
}

/// A connection with a receive window as small as the kernel allows: an answer it does not
/// read stops in the daemon's send path instead of in this socket's buffer.
fn connect_small_window(lab: &Lab) -> TcpStream {
    lab.victim
        .run(|| {
            // SAFETY: socket calls on a fresh descriptor that this function owns and hands to
            // the TcpStream; the pointers are to live locals of the sizes given.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
                let size: libc::c_int = 1024;
                let rc = libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    (&size as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                );
                assert_eq!(rc, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
                let addr = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: 9477u16.to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                let rc = libc::connect(
                    fd,
                    (&addr as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                );
                assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
                std::os::fd::FromRawFd::from_raw_fd(fd)
            }
        })
        .unwrap_or_else(|e| panic!("entering the namespace: {e:#}"))
}

#[test]
fn a_client_that_stops_reading_its_answer_is_closed_after_the_idle_timeout() {
    let lab = lab("cnxr");
    let dir = Scratch::new();
    let config = Daemon::base_config(&dir.0, "header_timeout = \"30s\"\nidle_timeout = \"3s\"");
    let d = Daemon::start(&lab.victim, &lab.pin_dir, &dir.0, &config);

    // 100,000 entries: the list answer is ~10 MB, far more than the socket buffers hold.
    let entries: Vec<String> = (0..100_000u32)
        .map(|i| format!("198.{}.{}.{}", 18 + (i >> 16), i >> 8 & 0xff, i & 0xff))
        .collect();
    let body = json!({"source": "big", "entries": entries}).to_string();
    let pushed = d.call("POST", "/v1/blocklist", Some(&body), true);
    assert_eq!(pushed.status, 200, "pushing 100,000 entries: {pushed:?}");

    let mut slow = connect_small_window(&lab);
    slow.write_all(b"GET /v1/blocklist HTTP/1.1\r\nHost: floodgate\r\n\r\n")
        .expect("sending the request");
    // The daemon builds the answer (no limit while it does), starts sending, and stalls.
    let until = Instant::now() + Duration::from_secs(30);
    let mut open = metric(&d, "floodgate_api_connections");
    while open > 1.0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(250));
        open = metric(&d, "floodgate_api_connections");
    }
    assert!(
        open <= 1.0,
        "a client that stopped reading must lose its connection after idle_timeout (3s): \
         {open} connections still open (the scrape is one)"
    );

    // What reaches the client is cut short: the daemon gave up, it did not finish.
    let mut got = Vec::new();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    let _ = slow.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    let head_end = text.find("\r\n\r\n").expect("the answer's head arrived") + 4;
    let length: usize = text[..head_end]
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .expect("a content-length")
        .parse()
        .expect("a number");
    assert!(
        got.len() - head_end < length,
        "the answer ({length} bytes) should have been cut when the daemon closed the stalled \
         connection; all of it arrived"
    );
}
