//! The SYN guard's second half (`fg_synguard_tc`, TC ingress): an ACK with a valid cookie that
//! reaches a listener is turned into a connection here. The kernel's own TCP stack refuses a
//! cookie it did not make, so this program checks the cookie, and hands the listener a request
//! socket built from what the cookie encodes (kfunc `bpf_sk_assign_tcp_reqsk`, kernel 6.9+);
//! the stack then completes the handshake and the application's accept() returns as usual.
//! XDP has already dropped ACKs with bad cookies; this program never drops anything.

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    bindings::{__sk_buff, BPF_F_CURRENT_NETNS},
    helpers::{bpf_ktime_get_ns, bpf_sk_release, bpf_skc_lookup_tcp, bpf_skc_to_tcp_sock},
    programs::TcContext,
};
use filter_common::{
    CookieFlow, SYNGUARD_WSCALE, cookie_check, port_bits, proto, synguard_bits, synguard_stat,
};

use crate::{
    maps::{CONFIG, PORT_FLAGS, SYNGUARD_SECRET, SYNGUARD_STATS},
    synguard::{TCP_LISTEN, dst_protected, is_ack, sock_tuple},
};

/// `struct bpf_tcp_req_attrs` (include/net/tcp.h): what the request socket is built from.
#[repr(C)]
struct TcpReqAttrs {
    rcv_tsval: u32,
    rcv_tsecr: u32,
    mss: u16,
    rcv_wscale: u8,
    snd_wscale: u8,
    ecn_ok: u8,
    wscale_ok: u8,
    sack_ok: u8,
    tstamp_ok: u8,
    usec_ts_ok: u8,
    reserved: [u8; 3],
}
const _: () = assert!(size_of::<TcpReqAttrs>() == 20);

unsafe extern "C" {
    /// A kfunc, not a helper: the loader turns calls to it into kfunc calls by vmlinux BTF id
    /// (see filter-userspace/src/kfunc.rs).
    fn bpf_sk_assign_tcp_reqsk(
        skb: *mut __sk_buff,
        sk: *mut c_void,
        attrs: *mut TcpReqAttrs,
        attrs_sz: i32,
    ) -> i32;
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

#[inline(always)]
fn count(slot: u32) {
    if let Some(c) = SYNGUARD_STATS.get_ptr_mut(slot) {
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn load<T>(ctx: &TcContext, off: usize) -> Option<T> {
    let p = ctx.data() + off;
    if p + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some(unsafe { core::ptr::read_unaligned(p as *const T) })
}

/// The segment a handshake is completed for.
struct Segment {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
}

/// Ethernet (up to two VLAN tags the stack has not taken off), IPv4 or IPv6 without extension
/// headers, a bare ACK to a port the guard protects.
#[inline(always)]
fn segment(ctx: &TcContext) -> Option<Segment> {
    let mut off = 12;
    let mut ether_type = u16::from_be(load::<u16>(ctx, off)?);
    off += 2;
    for _ in 0..2 {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        ether_type = u16::from_be(load::<u16>(ctx, off + 2)?);
        off += 4;
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    let (v6, l4) = match ether_type {
        ETH_P_IP => {
            let vi = load::<u8>(ctx, off)?;
            let frag = u16::from_be(load::<u16>(ctx, off + 6)?);
            if vi >> 4 != 4 || load::<u8>(ctx, off + 9)? != proto::TCP || frag & 0x3fff != 0 {
                return None;
            }
            let a = load::<[u8; 8]>(ctx, off + 12)?;
            src[..4].copy_from_slice(&a[..4]);
            dst[..4].copy_from_slice(&a[4..]);
            (false, off + ((vi & 0x0f) as usize) * 4)
        }
        ETH_P_IPV6 => {
            if load::<u8>(ctx, off + 6)? != proto::TCP {
                return None;
            }
            src = load::<[u8; 16]>(ctx, off + 8)?;
            dst = load::<[u8; 16]>(ctx, off + 24)?;
            (true, off + 40)
        }
        _ => return None,
    };
    if l4 > 255 {
        return None;
    }
    let ports = load::<[u8; 4]>(ctx, l4)?;
    let seq = u32::from_be(load::<u32>(ctx, l4 + 4)?);
    let ack = u32::from_be(load::<u32>(ctx, l4 + 8)?);
    let flags = load::<u8>(ctx, l4 + 13)?;
    if !is_ack(flags) {
        return None;
    }
    Some(Segment {
        v6,
        src,
        dst,
        sport: u16::from_be_bytes([ports[0], ports[1]]),
        dport: u16::from_be_bytes([ports[2], ports[3]]),
        seq,
        ack,
    })
}

/// Hand a handshake with a valid cookie to its listener. Always lets the packet go on.
#[inline(always)]
pub fn handshake(ctx: &TcContext) {
    let Some(cfg) = CONFIG.get(0) else {
        return;
    };
    // Off, or completing through netfilter SYNPROXY (the cookies are the kernel's).
    if cfg.synguard & synguard_bits::ON == 0 || cfg.synguard & synguard_bits::SYNPROXY != 0 {
        return;
    }
    let Some(seg) = segment(ctx) else {
        return;
    };
    match PORT_FLAGS.get(seg.dport as u32) {
        Some(bits) if bits & port_bits::SYNGUARD != 0 => {}
        _ => return,
    }
    if cfg.synguard & synguard_bits::DST != 0 && !dst_protected(seg.v6, &seg.dst) {
        return;
    }
    let Some(secret) = SYNGUARD_SECRET.get(0) else {
        return;
    };
    let flow = CookieFlow {
        client: seg.src,
        server: seg.dst,
        client_port: seg.sport,
        server_port: seg.dport,
        client_isn: seg.seq.wrapping_sub(1),
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(facts) = cookie_check(secret, &flow, seg.ack.wrapping_sub(1), now) else {
        return;
    };

    let (mut tuple, size) = sock_tuple(seg.v6, &seg.src, &seg.dst, seg.sport, seg.dport);
    let skb = ctx.skb.skb;
    let skc = unsafe {
        bpf_skc_lookup_tcp(
            skb as *mut c_void,
            &mut tuple,
            size,
            BPF_F_CURRENT_NETNS as u64,
            0,
        )
    };
    if skc.is_null() {
        return;
    }
    if unsafe { (*skc).state } == TCP_LISTEN {
        let sk = unsafe { bpf_skc_to_tcp_sock(skc as *mut c_void) };
        if !sk.is_null() {
            let mut attrs = TcpReqAttrs {
                rcv_tsval: 0,
                rcv_tsecr: 0,
                mss: facts.mss,
                rcv_wscale: if facts.wscale.is_some() {
                    SYNGUARD_WSCALE
                } else {
                    0
                },
                snd_wscale: facts.wscale.unwrap_or(0),
                ecn_ok: facts.ecn as u8,
                wscale_ok: facts.wscale.is_some() as u8,
                sack_ok: facts.sack as u8,
                tstamp_ok: 0,
                usec_ts_ok: 0,
                reserved: [0; 3],
            };
            let r = unsafe {
                bpf_sk_assign_tcp_reqsk(
                    skb,
                    sk as *mut c_void,
                    &mut attrs,
                    size_of::<TcpReqAttrs>() as i32,
                )
            };
            count(if r == 0 {
                synguard_stat::HANDSHAKES
            } else {
                synguard_stat::HANDSHAKE_FAILED
            });
        }
    }
    unsafe { bpf_sk_release(skc as *mut c_void) };
}
