//! Rate limits by class: a token bucket per source (prefix) in an LRU table, then an aggregate
//! cap per protected destination prefix. The aggregate is what stops a random-source flood,
//! where every packet is a new source and per-source state learns nothing. A source over its
//! limit for `ban_after` goes onto the blocklist for `ban_for`, written here, marked `auto`.

use core::intrinsics::{AtomicOrdering, atomic_or, atomic_xadd};

use aya_ebpf::{bindings::BPF_NOEXIST, maps::lpm_trie::Key, programs::XdpContext};
use aya_log_ebpf::info;
use filter_common::{
    AGGREGATE_CLASS_BITS, Class, ClassLimit, Config, FRONT_AUTO_MARKED, FRONT_AUTO_V4, FRONT_BLOCK,
    FRONT_CTL, FRONT_NONEMPTY, FRONT_V6_PREFIX, ListEntry, OVER_LIMIT_GAP_NS, PrefixKey, Reason,
    SOURCE_AUTO, SourceKey, SourceState, aggregate_key_v4, aggregate_key_v6, front_any_v6,
    front_count_word, front_lens_v4, front_lens_v6, front_nonempty_bit, front_pos, front_slot_v4,
    front_slot_v6, front_wide_pos,
    sanity::{TCP_ACK, TCP_SYN},
};

use crate::{
    bucket,
    facts::{Clock, Facts},
    maps::{AGGREGATE_V4, AGGREGATE_V6, BLOCK_V4, BLOCK_V4_EXACT, BLOCK_V6, FRONT, SOURCE_STATE},
    parse::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
};

#[inline(always)]
pub fn check(ctx: &XdpContext, cfg: &Config, pkt: &Facts) -> Option<Reason> {
    // A clock of its own: the list stage's clock is dead by now, and sharing it would give the
    // verifier one more state to tell apart (read-or-not) on every path through here.
    let clock = &mut Clock::new();
    let specific = match pkt.proto {
        IPPROTO_TCP if pkt.has_l4 != 0 && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN => {
            Some(Class::Syn)
        }
        IPPROTO_UDP => Some(Class::Udp),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => Some(Class::Icmp),
        _ => None,
    };
    if let Some(class) = specific {
        if let Some(reason) = check_class(ctx, cfg, class, pkt, clock) {
            return Some(reason);
        }
    }
    check_class(ctx, cfg, Class::All, pkt, clock)
}

#[inline(always)]
fn check_class(
    ctx: &XdpContext,
    cfg: &Config,
    class: Class,
    pkt: &Facts,
    clock: &mut Clock,
) -> Option<Reason> {
    let c = class as usize;
    if cfg.limit_classes & (1 << c) == 0 || c >= cfg.limits.len() {
        return None;
    }
    let limit = &cfg.limits[c];
    if !limit.per_source.is_unlimited() && !per_source(ctx, cfg, limit, class, pkt, clock) {
        return Some(Reason::Ratelimit);
    }
    if limit.has_aggregate != 0 && !aggregate(class, pkt, clock) {
        return Some(Reason::Aggregate);
    }
    None
}

/// Does the packet fit its source's bucket? Updates the ban streak when it does not.
#[inline(always)]
fn per_source(
    ctx: &XdpContext,
    cfg: &Config,
    limit: &ClassLimit,
    class: Class,
    pkt: &Facts,
    clock: &mut Clock,
) -> bool {
    let mut key = SourceKey {
        class: class as u32,
        family: 4,
        addr: [0; 16],
    };
    let src = pkt.src;
    let prefix = if pkt.v6 == 0 {
        {
            let src = [src[0], src[1], src[2], src[3]];
            let p = limit.v4_prefix;
            let masked = u32::from_be_bytes(src) & mask32(p);
            key.addr[..4].copy_from_slice(&masked.to_be_bytes());
            p
        }
    } else {
        {
            let p = limit.v6_prefix;
            key.family = 6;
            let hi = u64::from_be_bytes([
                src[0], src[1], src[2], src[3], src[4], src[5], src[6], src[7],
            ]) & mask64(p);
            let lo = u64::from_be_bytes([
                src[8], src[9], src[10], src[11], src[12], src[13], src[14], src[15],
            ]) & mask64(p.saturating_sub(64));
            key.addr[..8].copy_from_slice(&hi.to_be_bytes());
            key.addr[8..].copy_from_slice(&lo.to_be_bytes());
            p
        }
    };
    let now = clock.now();
    let state = match SOURCE_STATE.get_ptr_mut(&key) {
        Some(s) => s,
        None => {
            // BPF_NOEXIST: another CPU may have created it meanwhile; either way, look again.
            let _ = SOURCE_STATE.insert(&key, &SourceState::default(), BPF_NOEXIST as u64);
            match SOURCE_STATE.get_ptr_mut(&key) {
                Some(s) => s,
                // Could not track it (table contended): do not punish an unknown source.
                None => return true,
            }
        }
    };
    let bucket = unsafe { core::ptr::addr_of_mut!((*state).bucket) };
    if bucket::take(bucket, &limit.per_source, pkt.frame_len, now) {
        return true;
    }
    // Over the limit: extend or restart the streak, and ban a source that keeps it up.
    unsafe {
        if now.saturating_sub((*state).last_over_ns) > OVER_LIMIT_GAP_NS
            || (*state).over_since_ns == 0
        {
            (*state).over_since_ns = now;
        }
        (*state).last_over_ns = now;
        if limit.ban_after_ns != 0
            && cfg.dry_run == 0
            && now - (*state).over_since_ns >= limit.ban_after_ns
        {
            ban(ctx, &key, prefix, now, limit.ban_for_ns);
            (*state).over_since_ns = 0;
        }
    }
    false
}

/// Put the source prefix on the blocklist, unless an operator's entry is already there, and
/// say so in the data plane's log (`floodgate run` writes it to its own): a ban is rare, one
/// per source and `ban_for`, never a per-packet line. The work is [`fg_ban`]'s, a global
/// function verified once: inlined, every class's path through the limits paid for it again.
#[inline(always)]
fn ban(ctx: &XdpContext, key: &SourceKey, prefix: u32, now: u64, ban_for_ns: u64) {
    let a = key.addr;
    let hi = u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let lo = u64::from_be_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    let v6 = (key.family != 4) as u32;
    let _ = ctx;
    fg_ban(hi, lo, prefix | v6 << 8, now, ban_for_ns);
}

/// The ban of [`ban`]: the source key's address as two big-endian halves (already masked to
/// its prefix; IPv4 in the top 32 bits of `hi`), `prefix_v6` the prefix length with bit 8 set
/// for IPv6; the ban lasts `ban_for_ns` from `now`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fg_ban(hi: u64, lo: u64, prefix_v6: u32, now: u64, ban_for_ns: u64) -> i32 {
    // aya-log writes to its ring buffer and never reads the context it is given (and LLVM,
    // seeing that, passes no context to this function), so the log lines get a null one.
    let ctx = XdpContext::new(core::ptr::null_mut());
    let prefix = prefix_v6 & 0xff;
    let v6 = prefix_v6 >> 8 != 0;
    let entry = ListEntry {
        expires_at_ns: now + ban_for_ns,
        hits: 0,
        prefix_len: prefix,
        source: SOURCE_AUTO,
    };
    let flags = BPF_NOEXIST as u64;
    let secs = ban_for_ns / 1_000_000_000;
    let addr: [u8; 16] = unsafe { core::mem::transmute([hi.to_be(), lo.to_be()]) };
    let v4 = ((hi >> 32) as u32).to_be_bytes();
    if !v6 {
        let added = if prefix >= 32 {
            BLOCK_V4_EXACT.insert(&v4, &entry, flags)
        } else {
            let k = PrefixKey {
                len: prefix,
                addr: v4,
            };
            BLOCK_V4.insert(&k, &entry, flags)
        };
        if added.is_ok() {
            add_front(front_count_word(1, SOURCE_AUTO, (prefix < 32) as u32), 1);
            let shown = (hi >> 32) as u32;
            info!(
                &ctx,
                "auto-ban {:i}/{} for {}s: over its per-source limit", shown, prefix, secs
            );
        }
    } else {
        // Per-source IPv6 state is at most /127 in practice (default /64): the prefix map.
        let k = PrefixKey { len: prefix, addr };
        if BLOCK_V6.insert(&k, &entry, flags).is_ok() {
            add_front(front_count_word(1, SOURCE_AUTO, 3), 1);
            info!(
                &ctx,
                "auto-ban {:i}/{} for {}s: over its per-source limit", addr, prefix, secs
            );
        }
    }
    // Show the entry in the front at once: OR its length's bit (a prefix) and its slot's bit
    // (and the list's non-empty bit) in, then say a ban was marked. An IPv4 ban of /17 to /23
    // spans several NEAR bits and one shorter than /16 several WIDE bits: for those, every
    // IPv4 source is looked up until userspace rebuilds the front (IPv6 bans shorter than /48
    // need nothing more: their length's bit is read for every source). Stored after
    // the insert, so a rebuild that clears these words and then reads the lists either sees
    // the entry or sees the word set again.
    or_front(
        FRONT_CTL + FRONT_NONEMPTY,
        front_nonempty_bit(v6, FRONT_BLOCK),
    );
    if prefix < if v6 { 128 } else { 32 } {
        let (w, bit) = if v6 {
            front_lens_v6(FRONT_BLOCK, prefix)
        } else {
            front_lens_v4(FRONT_BLOCK, prefix)
        };
        or_front(w, 1 << bit);
    }
    let marked = if !v6 && prefix >= 24 {
        let (w, bit) = front_pos(front_slot_v4(v4), false, FRONT_BLOCK);
        or_front(w, 1 << bit);
        let (w, bit) = front_wide_pos(front_slot_v4(v4) >> 8, FRONT_BLOCK);
        or_front(w, 2 << bit);
        true
    } else if !v6 && prefix == 16 {
        let (w, bit) = front_wide_pos(front_slot_v4(v4) >> 8, FRONT_BLOCK);
        or_front(w, 1 << bit);
        true
    } else if v6 && prefix >= FRONT_V6_PREFIX as u32 {
        let (w, bit) = front_pos(front_slot_v6(&addr), true, FRONT_BLOCK);
        or_front(w, 1 << bit);
        let (w, bit) = front_any_v6(&addr, FRONT_BLOCK);
        or_front(w, 1 << bit);
        true
    } else {
        v6
    };
    let word = if marked {
        FRONT_AUTO_MARKED
    } else {
        FRONT_AUTO_V4
    };
    if let Some(w) = FRONT.get_ptr_mut(FRONT_CTL + word) {
        unsafe { core::ptr::write_volatile(w, 1) };
    }
    0
}

/// Add to word `index` of the front (an entry count), atomically.
#[inline(always)]
fn add_front(index: u32, n: u64) {
    if let Some(w) = FRONT.get_ptr_mut(index) {
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(w, n) };
    }
}

/// OR `bits` into word `index` of the front, atomically (userspace and other CPUs write it too).
#[inline(always)]
fn or_front(index: u32, bits: u64) {
    if let Some(w) = FRONT.get_ptr_mut(index) {
        unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(w, bits) };
    }
}

/// Does the packet fit the aggregate cap of its destination prefix for this class?
#[inline(always)]
fn aggregate(class: Class, pkt: &Facts, clock: &mut Clock) -> bool {
    let c = class as u8;
    let dst = pkt.dst;
    let entry = if pkt.v6 == 0 {
        let key = aggregate_key_v4(c, [dst[0], dst[1], dst[2], dst[3]]);
        AGGREGATE_V4.get(Key::new(AGGREGATE_CLASS_BITS + 32, key))
    } else {
        AGGREGATE_V6.get(Key::new(
            AGGREGATE_CLASS_BITS + 128,
            aggregate_key_v6(c, dst),
        ))
    };
    let Some(agg) = entry else {
        return true;
    };
    let agg = agg as *const filter_common::Aggregate as *mut filter_common::Aggregate;
    let bucket = unsafe { core::ptr::addr_of_mut!((*agg).bucket) };
    bucket::take(bucket, unsafe { &(*agg).rate }, pkt.frame_len, clock.now())
}

#[inline(always)]
fn mask32(prefix: u32) -> u32 {
    if prefix == 0 {
        0
    } else if prefix >= 32 {
        u32::MAX
    } else {
        u32::MAX << (32 - prefix)
    }
}

#[inline(always)]
fn mask64(prefix: u32) -> u64 {
    if prefix == 0 {
        0
    } else if prefix >= 64 {
        u64::MAX
    } else {
        u64::MAX << (64 - prefix)
    }
}
