//! The verdict: allowlist, then blocklist, then L4 sanity, else pass.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    maps::{HashMap, LpmTrie, lpm_trie::Key},
    programs::XdpContext,
};
use filter_common::{ListEntry, Reason, entry_live};

use crate::{
    maps::{
        ALLOW_V4, ALLOW_V4_EXACT, ALLOW_V6, ALLOW_V6_EXACT, BLOCK_V4, BLOCK_V4_EXACT, BLOCK_V6,
        BLOCK_V6_EXACT,
    },
    parse::{self, Frame, Src},
};

/// How many times a trie lookup steps past an expired prefix to a shorter covering one before
/// giving up (an expired entry only lingers until the CLI or daemon sweeps it).
const EXPIRED_RETRIES: usize = 4;

#[inline(always)]
pub fn classify(ctx: &XdpContext) -> Reason {
    let ip = match parse::parse_ip(ctx) {
        Ok(Frame::Ip(ip)) => ip,
        Ok(Frame::NotIp) => return Reason::Pass,
        Err(parse::Malformed) => return Reason::Malformed,
    };
    match ip.src {
        Src::V4(addr) => {
            if listed(&ALLOW_V4_EXACT, &ALLOW_V4, addr, 32) {
                return Reason::Allowlist;
            }
            if listed(&BLOCK_V4_EXACT, &BLOCK_V4, addr, 32) {
                return Reason::Blocklist;
            }
        }
        Src::V6(addr) => {
            if listed(&ALLOW_V6_EXACT, &ALLOW_V6, addr, 128) {
                return Reason::Allowlist;
            }
            if listed(&BLOCK_V6_EXACT, &BLOCK_V6, addr, 128) {
                return Reason::Blocklist;
            }
        }
    }
    if let Some(off) = ip.l4_off {
        if parse::parse_l4(ctx, ip.protocol, off).is_err() {
            return Reason::Malformed;
        }
    }
    Reason::Pass
}

/// Is `addr` on a list made of an exact-host hash and a prefix trie? Counts the hit.
#[inline(always)]
fn listed<A: Copy>(
    exact: &HashMap<A, ListEntry>,
    prefixes: &LpmTrie<A, ListEntry>,
    addr: A,
    host_len: u32,
) -> bool {
    if let Some(entry) = exact.get_ptr_mut(&addr) {
        if live(entry) {
            count_hit(entry);
            return true;
        }
    }
    let mut len = host_len;
    for _ in 0..EXPIRED_RETRIES {
        let Some(entry) = prefixes.get(Key::new(len, addr)) else {
            return false;
        };
        let entry = entry as *const ListEntry as *mut ListEntry;
        if live(entry) {
            count_hit(entry);
            return true;
        }
        let matched = unsafe { (*entry).prefix_len };
        if matched == 0 || matched > host_len {
            return false;
        }
        len = matched - 1;
    }
    false
}

#[inline(always)]
fn live(entry: *const ListEntry) -> bool {
    let expires = unsafe { (*entry).expires_at_ns };
    // Read the clock only for entries that can expire: most never do.
    expires == 0 || entry_live(expires, unsafe { bpf_ktime_get_ns() })
}

#[inline(always)]
fn count_hit(entry: *mut ListEntry) {
    // Map values are shared by all CPUs: an atomic add (BPF_ATOMIC_ADD) keeps the count
    // exact. core's AtomicU64 has no fetch_add on the BPF target, hence the intrinsic.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            core::ptr::addr_of_mut!((*entry).hits),
            1,
        );
    }
}
