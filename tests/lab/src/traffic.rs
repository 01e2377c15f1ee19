//! Real traffic for the lab: UDP and TCP over ordinary sockets, and raw frames with any source
//! address through an AF_PACKET socket (for floods from spoofed or many sources).

use std::{
    io::{ErrorKind, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use anyhow::{Context as _, bail};
use etherparse::PacketBuilder;

/// A UDP frame from `src` to `dst` (same family), with correct checksums.
pub fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let builder = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64).udp(sport, dport),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64).udp(sport, dport),
        _ => panic!("udp_frame: {src} and {dst} are of different families"),
    };
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut out, payload)
        .expect("writing to a Vec cannot fail");
    out
}

/// A TCP SYN from `src`:`sport` to `dst`:`dport` with the options Linux sends (MSS 1460,
/// SACK permitted, timestamps, window scale 7), correct checksums: a spoofed SYN flood's frame.
pub fn tcp_syn_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
) -> Vec<u8> {
    use etherparse::TcpOptionElement::*;
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("tcp_syn_frame: {src} and {dst} are of different families"),
    };
    let builder = ip
        .tcp(sport, dport, seq, 64240)
        .syn()
        .options(&[
            MaximumSegmentSize(1460),
            SelectiveAcknowledgementPermitted,
            Timestamp(seq, 0),
            Noop,
            WindowScale(7),
        ])
        .expect("20 bytes of options fit");
    let mut out = Vec::with_capacity(builder.size(0));
    builder
        .write(&mut out, &[])
        .expect("writing to a Vec cannot fail");
    out
}

/// An AF_PACKET socket sending raw frames out of one interface of the current namespace.
pub struct RawSender {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSender {
    pub fn open(ifname: &str) -> anyhow::Result<RawSender> {
        let name = std::ffi::CString::new(ifname)?;
        // SAFETY: NUL-terminated.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        if ifindex == 0 {
            bail!("no interface {ifname} in this namespace");
        }
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
        }
        // SAFETY: fd was just returned by socket(2).
        Ok(RawSender {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            ifindex,
        })
    }

    pub fn send(&self, frame: &[u8]) -> anyhow::Result<()> {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        loop {
            // SAFETY: frame and addr are valid for the given lengths.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let err = std::io::Error::last_os_error();
            // The veth queue is full: back off briefly, as a real sender would.
            if err.raw_os_error() == Some(libc::ENOBUFS) || err.kind() == ErrorKind::WouldBlock {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            return Err(err).context("sendto(AF_PACKET)");
        }
    }
}

/// Send `count` UDP datagrams from `src` to `dst:port`; returns how many were sent.
pub fn udp_send(
    src: IpAddr,
    dst: SocketAddr,
    count: usize,
    payload: &[u8],
) -> anyhow::Result<usize> {
    let sock =
        UdpSocket::bind(SocketAddr::new(src, 0)).with_context(|| format!("binding {src}"))?;
    for _ in 0..count {
        sock.send_to(payload, dst).context("send_to")?;
    }
    Ok(count)
}

/// A UDP socket that counts what arrives until `quiet` passes with nothing new.
pub fn udp_receive(bind: SocketAddr, quiet: Duration) -> anyhow::Result<UdpSocket> {
    let sock = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    sock.set_read_timeout(Some(quiet))?;
    Ok(sock)
}

/// Count datagrams on `sock` until it has been quiet for its read timeout.
pub fn drain_count(sock: &UdpSocket) -> usize {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while sock.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    n
}

/// A TCP listener that answers each connection with one line.
pub fn tcp_listen(bind: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(bind).with_context(|| format!("listening on {bind}"))
}

/// Accept one connection (within `timeout`) and write `reply` to it.
pub fn tcp_accept_once(listener: &TcpListener, timeout: Duration, reply: &[u8]) -> bool {
    listener.set_nonblocking(true).ok();
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = s.write_all(reply);
                return true;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    false
}

/// Connect from `src` to `dst` and read the greeting; `None` if the connection failed.
pub fn tcp_connect(src: IpAddr, dst: SocketAddr, timeout: Duration) -> Option<String> {
    let mut s = connect_from(src, dst, timeout)?;
    s.set_read_timeout(Some(timeout)).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf)
}

/// Connect from `src` to `dst`, send `msg`, close the sending side and read everything the
/// other end sends back; `None` if any step failed.
pub fn tcp_exchange(
    src: IpAddr,
    dst: SocketAddr,
    msg: &[u8],
    timeout: Duration,
) -> Option<Vec<u8>> {
    let mut s = connect_from(src, dst, timeout)?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.write_all(msg).ok()?;
    s.shutdown(std::net::Shutdown::Write).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Serve `listener` until `stop`: each connection gets back what it sent (read to its end).
/// Returns the number of exchanges completed.
pub fn tcp_echo_server(listener: &TcpListener, stop: &std::sync::atomic::AtomicBool) -> usize {
    use std::sync::atomic::Ordering;
    listener.set_nonblocking(true).ok();
    let mut served = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
            continue;
        }
        let Ok((mut s, _)) = listener.accept() else {
            continue;
        };
        s.set_nonblocking(false).ok();
        s.set_read_timeout(Some(Duration::from_secs(2))).ok();
        let mut buf = Vec::new();
        if s.read_to_end(&mut buf).is_ok() && s.write_all(&buf).is_ok() {
            served += 1;
        }
    }
    served
}

fn connect_from(src: IpAddr, dst: SocketAddr, timeout: Duration) -> Option<TcpStream> {
    // std cannot bind before connect; a connect from the right source needs the raw calls.
    let family = if src.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket(2); ownership moves into the TcpStream below.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd just created.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let (sa, len) = sockaddr(SocketAddr::new(src, 0));
    // SAFETY: sa is a valid sockaddr of len bytes.
    if unsafe { libc::bind(fd, (&sa as *const libc::sockaddr_storage).cast(), len) } != 0 {
        return None;
    }
    stream.set_write_timeout(Some(timeout)).ok()?;
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as i64,
        tv_usec: 0,
    };
    // SAFETY: SO_SNDTIMEO bounds connect(2) too.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    let (da, dlen) = sockaddr(dst);
    // SAFETY: da is a valid sockaddr of dlen bytes.
    if unsafe { libc::connect(fd, (&da as *const libc::sockaddr_storage).cast(), dlen) } != 0 {
        return None;
    }
    Some(stream)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, u32) {
    // SAFETY: all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            (ss, std::mem::size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            (ss, std::mem::size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}
