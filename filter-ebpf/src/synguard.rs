//! The SYN guard stage (`fg_synguard`, reached by tail call for TCP to protected ports): a SYN
//! is answered here with a SYN-ACK whose sequence number is a cookie (XDP_TX), so no SYN of a
//! spoofed flood reaches the listener and none leaves state anywhere. An ACK that belongs to
//! no socket must carry a valid cookie: it passes on to the TC program (`synguard_tc.rs`) that
//! hands the handshake to the listener; without one it is dropped (`bad_cookie`).
//! The cookie is `filter_common::synguard`'s, so the TC program and the host tests agree.
//! With [`synguard_bits::SYNPROXY`] the handshake completes through netfilter SYNPROXY
//! instead: the SYN-ACK carries the kernel's own cookie (`bpf_tcp_raw_gen_syncookie_*`) and the
//! client's options in its timestamp, and an ACK is checked by the kernel
//! (`bpf_tcp_raw_check_syncookie_*`) before it passes on to the nftables table.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_F_CURRENT_NETNS, bpf_sock_tuple, iphdr, ipv6hdr, tcphdr},
    helpers::{
        bpf_ktime_get_ns, bpf_sk_release, bpf_skc_lookup_tcp, bpf_tcp_raw_check_syncookie_ipv4,
        bpf_tcp_raw_check_syncookie_ipv6, bpf_tcp_raw_gen_syncookie_ipv4,
        bpf_tcp_raw_gen_syncookie_ipv6, bpf_xdp_adjust_tail,
    },
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use filter_common::{
    Config, CookieFlow, Reason, STAGE_DEFENCES, SYNGUARD_HOLD_NS, SYNGUARD_MSS_V4, SYNGUARD_MSS_V6,
    SYNGUARD_WINDOW, SYNGUARD_WSCALE, SynOptions, SynRate, addr_words, cookie_check,
    cookie_low_bits, cookie_make, cookie_slot, port_bits, proto, synguard_bits, synguard_stat,
    synproxy_tsval,
};

use crate::{
    decide::Next,
    facts::{Facts, Verdict, drop, pass},
    maps::{
        CONFIG, PORT_FLAGS, SCRATCH, SYNGUARD_DST_V4, SYNGUARD_DST_V6, SYNGUARD_FLOWS,
        SYNGUARD_OPTIONS, SYNGUARD_RATE, SYNGUARD_REPLY, SYNGUARD_SECRET, SYNGUARD_STATS,
    },
};

pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;
const TCP_ECE: u8 = 0x40;
const TCP_CWR: u8 = 0x80;
/// `bpf_sock::state` of a listening socket.
pub const TCP_LISTEN: u32 = 10;
/// Deepest IP header offset the parser produces (Ethernet + two VLAN tags).
const L3_OFF_MAX: u32 = 22;
/// Deepest TCP header offset the stage works on (IPv4 options, IPv6 extension headers).
const L4_OFF_MAX: u32 = 255;
/// Length of the SYN-ACK's TCP header: 20 bytes and 12 of options (MSS, window scale, SACK).
const SYNACK_TCP_LEN: usize = 32;
/// Length of the SYN-ACK's TCP header in SYNPROXY mode: 20 bytes and 20 of options (MSS; SACK
/// and timestamp; window scale), as netfilter's own SYN-ACK has them.
const SYNPROXY_TCP_LEN: usize = 40;
/// Longest TCP header: the frame is grown to hold this much from the TCP header before the
/// kernel's cookie helper reads it (the verifier needs the helper's length inside the frame).
const TCP_MAX_LEN: usize = 60;

/// A SYN (no ACK, no RST) or a bare handshake ACK (ACK, no SYN, no RST): the two kinds of
/// segment the guard looks at. Everything else (RST, SYN-ACK, ...) passes it by.
#[inline(always)]
pub fn is_syn(flags: u8) -> bool {
    flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
}
#[inline(always)]
pub fn is_ack(flags: u8) -> bool {
    flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_ACK
}

/// Does this packet go to the guard stage? TCP with a header, unfragmented, a SYN or ACK, to a
/// port the guard protects. (The destination scope is the stage's own check.)
#[inline(always)]
pub fn wants(facts: &Facts) -> bool {
    if facts.proto != proto::TCP || facts.has_l4 == 0 || facts.fragmented != 0 {
        return false;
    }
    if !is_syn(facts.tcp_flags) && !is_ack(facts.tcp_flags) {
        return false;
    }
    match PORT_FLAGS.get(facts.dport as u32) {
        Some(bits) => bits & port_bits::SYNGUARD != 0,
        None => false,
    }
}

/// Is this destination in the guard's prefixes (`synguard on --dst`)?
#[inline(always)]
pub fn dst_protected(v6: bool, dst: &[u8; 16]) -> bool {
    if v6 {
        SYNGUARD_DST_V6.get(&Key::new(128, *dst)).is_some()
    } else {
        SYNGUARD_DST_V4
            .get(&Key::new(32, [dst[0], dst[1], dst[2], dst[3]]))
            .is_some()
    }
}

#[inline(always)]
fn count(slot: u32) {
    if let Some(c) = SYNGUARD_STATS.get_ptr_mut(slot) {
        unsafe { *c += 1 };
    }
}

/// The stage: on the facts in `SCRATCH`, answer a SYN, judge an ACK; what passes goes on to
/// the defences stage if any defence is on.
#[inline(always)]
pub fn guard(ctx: &XdpContext) -> Next {
    let Some(cfg) = CONFIG.get(0) else {
        return Next::Done(pass(Reason::Pass));
    };
    let verdict = judge(ctx, cfg);
    if verdict.reason == Reason::Pass && cfg.rule_count | cfg.reflection | cfg.limit_classes != 0 {
        if let Some(pkt) = SCRATCH.get_ptr_mut(0) {
            unsafe { (*pkt).guarded = 1 };
            return Next::Stage(STAGE_DEFENCES);
        }
    }
    Next::Done(verdict)
}

#[inline(always)]
fn judge(ctx: &XdpContext, cfg: &Config) -> Verdict {
    let Some(pkt) = SCRATCH.get(0) else {
        return pass(Reason::Pass);
    };
    let dry = cfg.dry_run != 0;
    let v6 = pkt.v6 != 0;
    if cfg.synguard & synguard_bits::DST != 0 && !dst_protected(v6, &pkt.dst) {
        return pass(Reason::Pass);
    }
    let when_over = cfg.synguard & synguard_bits::WHEN_OVER != 0;
    let now = unsafe { bpf_ktime_get_ns() };
    let synproxy = cfg.synguard & synguard_bits::SYNPROXY != 0;
    if is_syn(pkt.tcp_flags) {
        if when_over && !syn_rate_over(&pkt.dst, cfg.synguard_over_pps, now) {
            return pass(Reason::Pass);
        }
        if dry {
            return drop(Reason::SynCookie, true);
        }
        return match answer(ctx, pkt, now, synproxy) {
            Ok(()) => pass(Reason::SynCookie),
            // A SYN the stage cannot answer (an odd layout) goes to the listener as before.
            Err(NotAnswered) => pass(Reason::Pass),
        };
    }
    // An ACK: a connection's own, a handshake with our cookie, or a flood.
    if has_socket(ctx, pkt) {
        count(synguard_stat::ESTABLISHED);
        return pass(Reason::Pass);
    }
    // Segments right behind the handshake's ACK (its data, the client's FIN) come before the
    // kernel has made the connection: XDP sees a whole batch first.
    let flow = flow_key(pkt);
    if let Some(until) = unsafe { SYNGUARD_FLOWS.get(&flow) } {
        if *until > now {
            count(synguard_stat::ESTABLISHED);
            return pass(Reason::Pass);
        }
    }
    let valid = if synproxy {
        kernel_cookie_valid(ctx, pkt)
    } else {
        cookie_valid(ctx, pkt, now)
    };
    if valid {
        count(synguard_stat::COOKIE_VALID);
        let _ = SYNGUARD_FLOWS.insert(&flow, &(now + FLOW_HOLD_NS), 0);
        return pass(Reason::Pass);
    }
    count(synguard_stat::COOKIE_INVALID);
    // With --when-over, a destination not under attack answers its own handshakes.
    if when_over && !guarded(&pkt.dst, now) {
        return pass(Reason::Pass);
    }
    drop(Reason::BadCookie, dry)
}

/// How long a flow whose cookie was valid passes without a socket (until the kernel has made
/// its connection, which then answers the socket lookup).
const FLOW_HOLD_NS: u64 = 10_000_000_000;

/// The `SYNGUARD_FLOWS` key of a segment: addresses, then the ports.
#[inline(always)]
fn flow_key(pkt: &Facts) -> [u64; 5] {
    let (src, dst) = (addr_words(pkt.src), addr_words(pkt.dst));
    [
        src[0],
        src[1],
        dst[0],
        dst[1],
        (pkt.sport as u64) << 16 | pkt.dport as u64,
    ]
}

/// Count this SYN against its destination's one-second window; is the guard on for it?
#[inline(always)]
fn syn_rate_over(dst: &[u8; 16], over_pps: u32, now: u64) -> bool {
    let Some(r) = SYNGUARD_RATE.get_ptr_mut(dst) else {
        let fresh = SynRate {
            window_start_ns: now,
            count: 1,
            guard_until_ns: 0,
        };
        let _ = SYNGUARD_RATE.insert(dst, &fresh, 0);
        return false;
    };
    // Racing CPUs may lose a count or restart a window twice: a rate estimate, not a limit.
    unsafe {
        if now.wrapping_sub((*r).window_start_ns) >= 1_000_000_000 {
            (*r).window_start_ns = now;
            (*r).count = 0;
        }
        (*r).count += 1;
        if (*r).count > over_pps as u64 {
            (*r).guard_until_ns = now + SYNGUARD_HOLD_NS;
        }
        (*r).guard_until_ns > now
    }
}

/// Is the guard on for this destination now (`--when-over`)?
#[inline(always)]
fn guarded(dst: &[u8; 16], now: u64) -> bool {
    match unsafe { SYNGUARD_RATE.get(dst) } {
        Some(r) => r.guard_until_ns > now,
        None => false,
    }
}

/// Does a socket (connection, request, time-wait; not a listener) own this segment?
// Its own BPF function: its stack frame is not added to the others'.
#[inline(never)]
fn has_socket(ctx: &XdpContext, pkt: &Facts) -> bool {
    let (mut tuple, size) = sock_tuple(pkt.v6 != 0, &pkt.src, &pkt.dst, pkt.sport, pkt.dport);
    let sk = unsafe {
        bpf_skc_lookup_tcp(
            ctx.ctx as *mut c_void,
            &mut tuple,
            size,
            BPF_F_CURRENT_NETNS as u64,
            0,
        )
    };
    if sk.is_null() {
        return false;
    }
    let state = unsafe { (*sk).state };
    unsafe { bpf_sk_release(sk as *mut c_void) };
    state != TCP_LISTEN
}

/// The lookup tuple of an incoming segment (its source is the remote end), and its size.
/// Addresses in network byte order (IPv4 in the first 4 bytes), ports in host order. The XDP
/// stage and the TC program both look sockets up with it.
#[inline(always)]
pub fn sock_tuple(
    v6: bool,
    src: &[u8; 16],
    dst: &[u8; 16],
    sport: u16,
    dport: u16,
) -> (bpf_sock_tuple, u32) {
    let mut t: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let w = |a: &[u8; 16], i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    if v6 {
        let t6 = unsafe { &mut t.__bindgen_anon_1.ipv6 };
        t6.saddr = [w(src, 0), w(src, 4), w(src, 8), w(src, 12)];
        t6.daddr = [w(dst, 0), w(dst, 4), w(dst, 8), w(dst, 12)];
        t6.sport = sport.to_be();
        t6.dport = dport.to_be();
        (t, 36)
    } else {
        let t4 = unsafe { &mut t.__bindgen_anon_1.ipv4 };
        t4.saddr = w(src, 0);
        t4.daddr = w(dst, 0);
        t4.sport = sport.to_be();
        t4.dport = dport.to_be();
        (t, 12)
    }
}

/// The ACK's cookie checks out for its flow.
// Its own BPF function: its stack frame is not added to the others'.
#[inline(never)]
fn cookie_valid(ctx: &XdpContext, pkt: &Facts, now: u64) -> bool {
    let Some(secret) = SYNGUARD_SECRET.get(0) else {
        return false;
    };
    let l4 = pkt.l4_off;
    if l4 > L4_OFF_MAX {
        return false;
    }
    let Some((seq, ack)) = seq_ack(ctx, l4 as usize) else {
        return false;
    };
    let flow = flow(pkt, seq.wrapping_sub(1));
    cookie_check(secret, &flow, ack.wrapping_sub(1), now).is_some()
}

/// The ACK's cookie is the kernel's own (SYNPROXY mode): netfilter will accept it.
// Its own BPF function, like `cookie_valid`.
#[inline(never)]
fn kernel_cookie_valid(ctx: &XdpContext, pkt: &Facts) -> bool {
    let l3 = pkt.l3_off;
    let l4 = pkt.l4_off;
    if l3 > L3_OFF_MAX || l4 > L4_OFF_MAX {
        return false;
    }
    let (l3, l4) = (l3 as usize, l4 as usize);
    let data = ctx.data();
    if data + l4 + 20 > ctx.data_end() {
        return false;
    }
    let th = (data + l4) as *mut tcphdr;
    let r = if pkt.v6 != 0 {
        if data + l3 + 40 > ctx.data_end() {
            return false;
        }
        unsafe { bpf_tcp_raw_check_syncookie_ipv6((data + l3) as *mut ipv6hdr, th) }
    } else {
        if data + l3 + 20 > ctx.data_end() {
            return false;
        }
        unsafe { bpf_tcp_raw_check_syncookie_ipv4((data + l3) as *mut iphdr, th) }
    };
    r == 0
}

/// The kernel's SYN cookie for this SYN into `cookie` (SYNPROXY mode); false: not made. The
/// frame may be grown (the reply sets its length again).
#[inline(never)]
fn kernel_cookie(ctx: &XdpContext, pkt: &Facts, cookie: &mut u32) -> bool {
    let l3 = pkt.l3_off;
    let l4 = pkt.l4_off;
    if l3 > L3_OFF_MAX || l4 > L4_OFF_MAX {
        return false;
    }
    let (l3, l4) = (l3 as usize, l4 as usize);
    let Some(off) = load::<u8>(ctx, l4 + 12) else {
        return false;
    };
    // The helper reads `th_len` bytes of the header; the verifier checks its largest value.
    let have = core::hint::black_box(crate::stats::frame_len(ctx)) as i64;
    let need = (l4 + TCP_MAX_LEN) as i64;
    if have < need && unsafe { bpf_xdp_adjust_tail(ctx.ctx, (need - have) as i32) } != 0 {
        return false;
    }
    // Through a volatile stack slot and bounded after it: kept in a register, the verifier
    // may lose the length's lower bound before the call ("invalid zero-sized read").
    let mut slot = 0u32;
    unsafe { core::ptr::write_volatile(&mut slot, ((off >> 4) as u32) * 4) };
    let th_len = unsafe { core::ptr::read_volatile(&slot) };
    if !(20..=TCP_MAX_LEN as u32).contains(&th_len) {
        return false;
    }
    let data = ctx.data();
    if data + l4 + TCP_MAX_LEN > ctx.data_end() || data + l3 + 40 > ctx.data_end() {
        return false;
    }
    let th = (data + l4) as *mut tcphdr;
    let v = if pkt.v6 != 0 {
        unsafe { bpf_tcp_raw_gen_syncookie_ipv6((data + l3) as *mut ipv6hdr, th, th_len) }
    } else {
        unsafe { bpf_tcp_raw_gen_syncookie_ipv4((data + l3) as *mut iphdr, th, th_len) }
    };
    if v < 0 {
        return false;
    }
    // The low 32 bits are the cookie; the MSS it encodes (bits 32..) is the kernel's business.
    *cookie = v as u32;
    true
}

#[inline(always)]
fn flow(pkt: &Facts, client_isn: u32) -> CookieFlow {
    CookieFlow {
        client: pkt.src,
        server: pkt.dst,
        client_port: pkt.sport,
        server_port: pkt.dport,
        client_isn,
    }
}

#[inline(always)]
fn seq_ack(ctx: &XdpContext, l4: usize) -> Option<(u32, u32)> {
    let h = load::<[u8; 12]>(ctx, l4)?;
    Some((
        u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
    ))
}

/// The SYN could not be turned into a SYN-ACK; it passes to the listener.
pub struct NotAnswered;

#[inline(always)]
fn load<T>(ctx: &XdpContext, off: usize) -> Option<T> {
    let p = ctx.data() + off;
    if p + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some(unsafe { core::ptr::read_unaligned(p as *const T) })
}

/// Most options (NOPs included) read from a SYN. Common stacks send 5 to 8.
const SYN_OPTIONS_MAX: usize = 12;

/// The options of a SYN: `len` bytes (0..=40, a multiple of 4) at `off`. They are copied to
/// a zeroed per-CPU buffer a word at a time (constant-size packet reads the verifier follows),
/// so the walk ends at the zero (end of options) after them without comparing positions.
#[inline(always)]
fn syn_options(ctx: &XdpContext, off: usize, len: usize) -> SynOptions {
    let mut o = SynOptions::default();
    let Some(buf) = SYNGUARD_OPTIONS.get_ptr_mut(0) else {
        return o;
    };
    let buf = unsafe { &mut *buf };
    *buf = [0; 64];
    for k in 0..10 {
        if 4 * k >= len {
            break;
        }
        let Some(w) = load::<[u8; 4]>(ctx, off + 4 * k) else {
            break;
        };
        buf[4 * k..4 * k + 4].copy_from_slice(&w);
    }
    // Positions are masked into the 64-byte buffer (each read is in bounds by the mask, and
    // every position is the same unknown to the verifier, so its states prune turn by turn).
    // black_box keeps LLVM from dropping a mask it can prove redundant.
    let mut wscale = u32::MAX;
    let mut ts_at = usize::MAX;
    let mut i = 0usize;
    for _ in 0..SYN_OPTIONS_MAX {
        let at = core::hint::black_box(i) & 63;
        let kind = buf[at];
        if kind == 0 {
            break;
        }
        if kind == 1 {
            i = at + 1;
            continue;
        }
        let n = buf[(at + 1) & 63];
        if n < 2 {
            break;
        }
        match (kind, n) {
            (2, 4) => o.mss = u16::from_be_bytes([buf[(at + 2) & 63], buf[(at + 3) & 63]]),
            (3, 3) => wscale = buf[(at + 2) & 63] as u32,
            (4, 2) => o.sack = true,
            // Only where: its value is read once, after the walk (read here, it doubled the
            // stage's verified instructions).
            (8, 10) => ts_at = at,
            _ => {}
        }
        i = at + n as usize;
    }
    // (Not an Option while walking: a None's undefined payload may be any register to LLVM,
    // a pointer included, and the verifier refuses arithmetic on that.)
    if wscale <= 0xff {
        o.wscale = Some(wscale as u8);
    }
    if ts_at != usize::MAX {
        let at = core::hint::black_box(ts_at) & 63;
        o.ts = true;
        o.tsval = u32::from_be_bytes([
            buf[(at + 2) & 63],
            buf[(at + 3) & 63],
            buf[(at + 4) & 63],
            buf[(at + 5) & 63],
        ]);
    }
    o
}

/// Sum of the big-endian 16-bit words of `b[from..to]` (one's complement folds later).
#[inline(always)]
fn sum16(b: &[u8; 80], from: usize, to: usize) -> u32 {
    let mut s = 0u32;
    let mut i = from;
    while i + 1 < to {
        s += u16::from_be_bytes([b[i], b[i + 1]]) as u32;
        i += 2;
    }
    s
}

#[inline(always)]
fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// What the SYN-ACK needs from the SYN.
#[derive(Default)]
pub struct Syn {
    seq: u32,
    opts: SynOptions,
    /// SYNPROXY mode: the SYN-ACK's timestamp value ([`synproxy_tsval`]).
    tsval: u32,
}

/// Read the SYN's sequence number and options into `syn`; false if it cannot be read.
// Each step of the answer is its own BPF function, called one after the other: their stack
// frames are not added up (the verifier's limit is 512 bytes for a chain of calls). Their
// signatures hold only integers, bools and pointers: the BTF bpf-linker writes for a Rust
// enum (Option, Result) or `()` is refused by the kernel, and the object then loads without
// BTF, which the aya-log calls of the defences stage need.
#[inline(never)]
fn read_syn(ctx: &XdpContext, pkt: &Facts, syn: &mut Syn) -> bool {
    let l4 = pkt.l4_off;
    if l4 > L4_OFF_MAX {
        return false;
    }
    let l4 = l4 as usize;
    let Some(tcp) = load::<[u8; 20]>(ctx, l4) else {
        return false;
    };
    let flags = tcp[13];
    let hdr_len = ((tcp[12] >> 4) as usize) * 4;
    if hdr_len < 20 {
        return false;
    }
    syn.opts = syn_options(ctx, l4 + 20, hdr_len - 20);
    syn.opts.ecn = flags & (TCP_ECE | TCP_CWR) == (TCP_ECE | TCP_CWR);
    syn.seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    true
}

/// Answer the SYN: its SYN-ACK with the cookie, in place of the SYN.
#[inline(always)]
fn answer(ctx: &XdpContext, pkt: &Facts, now: u64, synproxy: bool) -> Result<(), NotAnswered> {
    let mut syn = Syn::default();
    if !read_syn(ctx, pkt, &mut syn) {
        return Err(NotAnswered);
    }
    let mut cookie = 0;
    let made = if synproxy {
        syn.tsval = synproxy_tsval((now / 1_000_000) as u32, &syn.opts);
        kernel_cookie(ctx, pkt, &mut cookie)
    } else {
        make_cookie(pkt, &syn, now, &mut cookie)
    };
    if !made {
        return Err(NotAnswered);
    }
    if write_reply(ctx, pkt, cookie, &syn, synproxy) {
        Ok(())
    } else {
        Err(NotAnswered)
    }
}

/// Turn the SYN into its SYN-ACK in place: MACs, addresses and ports swapped, the cookie as
/// sequence number, the options the cookie keeps, checksums. The frame is cut (or grown) to
/// the reply's length. VLAN tags stay as they came. The headers are built in a per-CPU buffer
/// (`SYNGUARD_REPLY`; the stack has no room) and copied over the SYN's. False: not answered.
// (No `()` in the signature of a BPF function: its BTF would hold a zero-sized INT, which
// the kernel refuses, and the object then loads without BTF.)
#[inline(never)]
fn write_reply(ctx: &XdpContext, pkt: &Facts, cookie: u32, syn: &Syn, synproxy: bool) -> bool {
    let l3 = pkt.l3_off;
    if l3 > L3_OFF_MAX {
        return false;
    }
    let l3 = l3 as usize;
    let v6 = pkt.v6 != 0;
    let Some(reply) = SYNGUARD_REPLY.get_ptr_mut(0) else {
        return false;
    };
    let reply = unsafe { &mut *reply };
    let ip_len = if v6 { 40 } else { 20 };
    let tcp_len = if synproxy {
        SYNPROXY_TCP_LEN
    } else {
        SYNACK_TCP_LEN
    };
    build_reply(reply, pkt, cookie, syn, synproxy, v6);
    let want = (l3 + ip_len + tcp_len) as i64;
    // The frame's length as a number first: folded into the sum, LLVM would subtract the end
    // pointer from a number, which the verifier refuses.
    let have = core::hint::black_box(crate::stats::frame_len(ctx)) as i64;
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, (want - have) as i32) } != 0 {
        return false;
    }
    let data = ctx.data();
    // One constant-length copy per layout: the verifier checks each against the frame.
    if synproxy {
        if v6 {
            if data + l3 + 40 + SYNPROXY_TCP_LEN > ctx.data_end() {
                return false;
            }
            unsafe {
                core::ptr::copy_nonoverlapping(
                    reply.as_ptr(),
                    (data + l3) as *mut u8,
                    40 + SYNPROXY_TCP_LEN,
                )
            };
        } else {
            if data + l3 + 20 + SYNPROXY_TCP_LEN > ctx.data_end() {
                return false;
            }
            unsafe {
                core::ptr::copy_nonoverlapping(
                    reply.as_ptr(),
                    (data + l3) as *mut u8,
                    20 + SYNPROXY_TCP_LEN,
                )
            };
        }
    } else if v6 {
        if data + l3 + 40 + SYNACK_TCP_LEN > ctx.data_end() {
            return false;
        }
        unsafe {
            core::ptr::copy_nonoverlapping(
                reply.as_ptr(),
                (data + l3) as *mut u8,
                40 + SYNACK_TCP_LEN,
            )
        };
    } else {
        if data + l3 + 20 + SYNACK_TCP_LEN > ctx.data_end() {
            return false;
        }
        unsafe {
            core::ptr::copy_nonoverlapping(
                reply.as_ptr(),
                (data + l3) as *mut u8,
                20 + SYNACK_TCP_LEN,
            )
        };
    }
    // MACs: the reply goes back where the SYN came from.
    if data + 12 > ctx.data_end() {
        return false;
    }
    unsafe {
        let mac = data as *mut [u8; 6];
        let peer = core::ptr::read_unaligned(mac.add(1));
        core::ptr::write_unaligned(mac.add(1), core::ptr::read_unaligned(mac));
        core::ptr::write_unaligned(mac, peer);
    }
    true
}

/// The cookie for this SYN into `cookie`; false: no secret yet.
#[inline(never)]
fn make_cookie(pkt: &Facts, syn: &Syn, now: u64, cookie: &mut u32) -> bool {
    let Some(secret) = SYNGUARD_SECRET.get(0) else {
        return false;
    };
    let slot = cookie_slot(now);
    *cookie = cookie_make(
        secret,
        &flow(pkt, syn.seq),
        cookie_low_bits(&syn.opts, slot),
        slot,
    );
    true
}

/// The SYN-ACK's IP and TCP headers, checksums included, at the start of `r`. SYNPROXY mode:
/// the options netfilter's own SYN-ACK has, the client's in the timestamp, window 0 (netfilter
/// opens it once the listener has answered).
#[inline(always)]
fn build_reply(r: &mut [u8; 80], pkt: &Facts, cookie: u32, syn: &Syn, synproxy: bool, v6: bool) {
    *r = [0; 80];
    let opts = &syn.opts;
    let ack = syn.seq.wrapping_add(1);
    let t = if v6 { 40 } else { 20 };
    let tcp_len = if synproxy {
        SYNPROXY_TCP_LEN
    } else {
        SYNACK_TCP_LEN
    };
    if v6 {
        r[0] = 0x60;
        r[5] = tcp_len as u8;
        r[6] = proto::TCP;
        r[7] = 64;
        r[8..24].copy_from_slice(&pkt.dst);
        r[24..40].copy_from_slice(&pkt.src);
    } else {
        r[0] = 0x45;
        r[3] = (20 + tcp_len) as u8;
        r[6] = 0x40; // don't fragment
        r[8] = 64;
        r[9] = proto::TCP;
        r[12..16].copy_from_slice(&pkt.dst[..4]);
        r[16..20].copy_from_slice(&pkt.src[..4]);
        let check = fold(sum16(r, 0, 20)).to_be_bytes();
        r[10] = check[0];
        r[11] = check[1];
    }
    r[t..t + 2].copy_from_slice(&pkt.dport.to_be_bytes());
    r[t + 2..t + 4].copy_from_slice(&pkt.sport.to_be_bytes());
    r[t + 4..t + 8].copy_from_slice(&cookie.to_be_bytes());
    r[t + 8..t + 12].copy_from_slice(&ack.to_be_bytes());
    r[t + 12] = ((tcp_len / 4) as u8) << 4;
    // netfilter keeps ECN only with the timestamp that carries it.
    let ecn = opts.ecn && (!synproxy || opts.ts);
    r[t + 13] = TCP_SYN | TCP_ACK | if ecn { TCP_ECE } else { 0 };
    if !synproxy {
        r[t + 14..t + 16].copy_from_slice(&SYNGUARD_WINDOW.to_be_bytes());
    }
    let mss = if v6 { SYNGUARD_MSS_V6 } else { SYNGUARD_MSS_V4 };
    r[t + 20] = 2;
    r[t + 21] = 4;
    r[t + 22..t + 24].copy_from_slice(&mss.to_be_bytes());
    if synproxy {
        // NOPs where an option goes unsaid. Without a timestamp netfilter keeps no window
        // scale or SACK either (it has nowhere to read them back from).
        r[t + 24..t + 40].copy_from_slice(&[1; 16]);
        if opts.ts {
            if opts.sack {
                r[t + 24] = 4;
                r[t + 25] = 2;
            }
            r[t + 26] = 8;
            r[t + 27] = 10;
            r[t + 28..t + 32].copy_from_slice(&syn.tsval.to_be_bytes());
            r[t + 32..t + 36].copy_from_slice(&opts.tsval.to_be_bytes());
            if opts.wscale.is_some() {
                r[t + 37] = 3;
                r[t + 38] = 3;
                r[t + 39] = SYNGUARD_WSCALE;
            }
        }
    } else {
        // NOPs where an option the client did not offer would go.
        r[t + 24..t + 32].copy_from_slice(&[1; 8]);
        if opts.wscale.is_some() {
            r[t + 25] = 3;
            r[t + 26] = 3;
            r[t + 27] = SYNGUARD_WSCALE;
        }
        if opts.sack {
            r[t + 30] = 4;
            r[t + 31] = 2;
        }
    }
    // Pseudo-header: the reply's addresses (already in the IP header), protocol, length.
    let addrs = if v6 {
        sum16(r, 8, 40)
    } else {
        sum16(r, 12, 20)
    };
    let header = if synproxy {
        sum16(r, t, t + SYNPROXY_TCP_LEN)
    } else {
        sum16(r, t, t + SYNACK_TCP_LEN)
    };
    let sum = header + addrs + proto::TCP as u32 + tcp_len as u32;
    let check = fold(sum).to_be_bytes();
    r[t + 16] = check[0];
    r[t + 17] = check[1];
}
