//! Automatic mitigation's accounting: every packet to a host group's destination is counted
//! per class on arrival (before any verdict, so an attack stays visible while a rule drops
//! it), and 1 in N is copied to `AUTO_SAMPLES` for the daemon's fingerprints.
//!
//! `fg_account` is a global BPF function (verified once, on its own, like `fg_sample`): the
//! first stage calls it before anything else while `Config::auto` is set, and pays one test
//! when it is not.

use aya_ebpf::{bindings::xdp_md, maps::lpm_trie::Key, programs::XdpContext};
use filter_common::{AUTO_CLASS_COUNT, auto_classes, sample_flags};

use crate::{
    maps::{
        AUTO_DST, AUTO_GROUPS_V4, AUTO_GROUPS_V6, AUTO_KEY, AUTO_LOST, AUTO_SAMPLES, AUTO_SKIP,
        AUTO_ZERO, CONFIG,
    },
    sample,
};

/// Count the packet (`bytes` long as it came in) for its destination, if that is in a host
/// group, and sample it. Returns the group index + 1, or 0 when the packet is not counted.
/// A byte of the packet at `off`, if there.
#[inline(always)]
fn byte(ctx: &XdpContext, off: usize) -> Option<u8> {
    let p = ctx.data() + off;
    if p + 1 > ctx.data_end() {
        return None;
    }
    Some(unsafe { *(p as *const u8) })
}

/// A big-endian u16 of the packet at `off`.
#[inline(always)]
fn be16(ctx: &XdpContext, off: usize) -> Option<u16> {
    let p = ctx.data() + off;
    if p + 2 > ctx.data_end() {
        return None;
    }
    Some(u16::from_be_bytes(unsafe { *(p as *const [u8; 2]) }))
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fg_account(ctx: *mut xdp_md, bytes: u32) -> i32 {
    // A short parse of its own (Ethernet, two VLAN tags, the IP header), reading into the
    // per-CPU scratch key rather than the stack: this function's frame adds to the first
    // stage's, and the two must fit in the verifier's 512 bytes (parse.rs's structures do not).
    if CONFIG.get(0).is_none_or(|c| c.auto == 0) {
        return 0;
    }
    let xdp = XdpContext::new(ctx);
    let Some(key) = AUTO_KEY.get_ptr_mut(0) else {
        return 0;
    };
    let Some(mut ether_type) = be16(&xdp, 12) else {
        return 0;
    };
    let mut off = 14;
    for _ in 0..2 {
        if ether_type != 0x8100 && ether_type != 0x88a8 {
            break;
        }
        let Some(t) = be16(&xdp, off + 2) else {
            return 0;
        };
        ether_type = t;
        off += 4;
    }
    let (proto, fragmented, l4, group) = if ether_type == 0x0800 {
        let p = xdp.data() + off;
        if p + 20 > xdp.data_end() {
            return 0;
        }
        let ihl = (unsafe { *(p as *const u8) } & 0x0f) as usize * 4;
        let frag = u16::from_be_bytes(unsafe { *((p + 6) as *const [u8; 2]) }) & 0x3fff;
        let proto = unsafe { *((p + 9) as *const u8) };
        let dst = unsafe { *((p + 16) as *const [u8; 4]) };
        unsafe {
            (*key).family = 4;
            (*key).addr = [
                dst[0], dst[1], dst[2], dst[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ];
        }
        let group = AUTO_GROUPS_V4.get(&Key::new(32, dst)).copied();
        (
            proto,
            frag != 0,
            (frag & 0x1fff == 0).then_some(off + ihl),
            group,
        )
    } else if ether_type == 0x86dd {
        let p = xdp.data() + off;
        if p + 40 > xdp.data_end() {
            return 0;
        }
        let proto = unsafe { *((p + 6) as *const u8) };
        unsafe {
            (*key).family = 6;
            (*key).addr = *((p + 24) as *const [u8; 16]);
        }
        let group = AUTO_GROUPS_V6
            .get(&Key::new(128, unsafe { (*key).addr }))
            .copied();
        // Extension headers are not walked: a fragment header shows as its own protocol.
        (proto, proto == 44, Some(off + 40), group)
    } else {
        return 0;
    };
    let Some(group) = group else {
        return 0;
    };
    let flags = match l4 {
        Some(l4) if proto == 6 => byte(&xdp, l4 + 13).unwrap_or(0),
        _ => 0,
    };
    let bits = auto_classes(proto, flags, fragmented);
    let counters = match AUTO_DST.get_ptr_mut(unsafe { &*key }) {
        Some(c) => c,
        None => {
            let Some(zero) = AUTO_ZERO.get(0) else {
                return 0;
            };
            let _ = AUTO_DST.insert(unsafe { &*key }, zero, 0);
            match AUTO_DST.get_ptr_mut(unsafe { &*key }) {
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
