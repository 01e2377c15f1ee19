//! Automatic mitigation's accounting: every packet to a host group's destination is counted
//! per class on arrival (before any verdict, so an attack stays visible while a rule drops
//! it), and 1 in N is copied to `AUTO_SAMPLES` for the daemon's fingerprints.
//!
//! `fg_account` is a global BPF function (verified once, on its own, like `fg_sample`): the
//! first stage calls it before anything else while `Config::auto` is set, and pays one test
//! when it is not.

use aya_ebpf::{bindings::xdp_md, maps::lpm_trie::Key, programs::XdpContext};
use filter_common::{AUTO_CLASS_COUNT, AutoCounters, AutoKey, auto_classes, sample_flags};

use crate::{
    maps::{AUTO_DST, AUTO_GROUPS_V4, AUTO_GROUPS_V6, AUTO_LOST, AUTO_SAMPLES, AUTO_SKIP, CONFIG},
    parse::{self, Addrs, Frame},
    sample,
};

/// Count the packet (`bytes` long as it came in) for its destination, if that is in a host
/// group, and sample it. Returns the group index + 1, or 0 when the packet is not counted.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fg_account(ctx: *mut xdp_md, bytes: u32) -> i32 {
    let xdp = XdpContext::new(ctx);
    let Ok(Frame::Ip(ip)) = parse::parse_ip(&xdp) else {
        return 0;
    };
    let mut key = AutoKey::default();
    let group = match ip.addrs {
        Addrs::V4 { dst, .. } => {
            key.family = 4;
            key.addr[..4].copy_from_slice(&dst);
            AUTO_GROUPS_V4.get(&Key::new(32, dst)).copied()
        }
        Addrs::V6 { dst, .. } => {
            key.family = 6;
            key.addr = dst;
            AUTO_GROUPS_V6.get(&Key::new(128, dst)).copied()
        }
    };
    let Some(group) = group else {
        return 0;
    };
    let flags = match ip.l4_off {
        Some(off) if ip.protocol == parse::IPPROTO_TCP => {
            parse::parse_l4(&xdp, ip.protocol, off).map_or(0, |l4| l4.tcp_flags)
        }
        _ => 0,
    };
    let bits = auto_classes(ip.protocol, flags, ip.fragmented);
    let counters = match AUTO_DST.get_ptr_mut(&key) {
        Some(c) => c,
        None => {
            let _ = AUTO_DST.insert(&key, &AutoCounters::default(), 0);
            match AUTO_DST.get_ptr_mut(&key) {
                Some(c) => c,
                None => return 0,
            }
        }
    };
    for i in 0..AUTO_CLASS_COUNT {
        if bits & (1 << i) != 0 {
            // SAFETY: a per-CPU value of this CPU.
            unsafe {
                (*counters).classes[i].packets += 1;
                (*counters).classes[i].bytes += bytes as u64;
            }
        }
    }
    let rate = CONFIG.get(0).map_or(0, |c| c.auto_sample);
    if rate != 0 {
        let drawn = rate == 1
            || match AUTO_SKIP.get_ptr_mut(0) {
                Some(skip) => sample::drawn(skip, rate),
                None => false,
            };
        if drawn
            && !sample::record(
                &AUTO_SAMPLES,
                ctx,
                bytes,
                0,
                sample_flags::ARRIVAL,
                rate,
                group,
            )
        {
            if let Some(lost) = AUTO_LOST.get_ptr_mut(0) {
                unsafe { *lost += 1 };
            }
        }
    }
    group as i32 + 1
}
