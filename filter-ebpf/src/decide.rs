//! The verdict, in pipeline order: parse, allowlist, blocklist, L4 parse, sanity, rules,
//! reflection preset, rate limits, else pass. Every stage but the lists is switched by the live
//! `CONFIG` record and costs one branch when off.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    maps::{HashMap, LpmTrie, lpm_trie::Key},
    programs::XdpContext,
};
use filter_common::{
    Config, FRONT_ALLOW, FRONT_AUTO_V4, FRONT_AUTO_V6, FRONT_BLOCK, FRONT_CTL, FRONT_NONEMPTY,
    FRONT_V6_SHORT, ListEntry, Reason, entry_live, front_nonempty_bit, front_pos, front_slot_v4,
    front_slot_v6, port_bits,
};

use crate::{
    limits, maps,
    parse::{self, Addrs, Frame, IPPROTO_UDP, Ip, L4},
    rules, sanity,
};

/// How many times a trie lookup steps past an expired prefix to a shorter covering one before
/// giving up (an expired entry only lingers until the CLI or daemon sweeps it).
const EXPIRED_RETRIES: usize = 4;

/// The reason a packet is counted under, and whether dry-run let a drop reason pass.
pub struct Verdict {
    pub reason: Reason,
    pub dry_run: bool,
}

/// What the defences know about the packet. Written to a per-CPU scratch slot and read back
/// from there: values read from a map are plain unknowns to the verifier, so every parse path
/// (VLANs, extension headers, protocols) reaches the defences in the same state and the
/// verifier checks them once, not once per path (which exceeds its 1M-instruction budget).
#[repr(C)]
pub struct Facts {
    /// Network byte order; IPv4 in the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub frame_len: u64,
    /// Offset of the IP header, IP length as claimed, IP header length.
    pub l3_off: u32,
    pub ip_len: u32,
    pub hdr_len: u32,
    /// Offset of the L4 header; meaningful when `has_l4`.
    pub l4_off: u32,
    pub sport: u16,
    pub dport: u16,
    pub claimed_len: u16,
    pub v6: u8,
    pub proto: u8,
    pub ttl: u8,
    pub has_l4: u8,
    pub fragmented: u8,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub _pad: [u8; 4],
}

/// Reading the clock costs a helper call: read it once, only when a stage needs it.
pub struct Clock(u64);

impl Clock {
    #[inline(always)]
    pub fn new() -> Clock {
        Clock(0)
    }

    #[inline(always)]
    pub fn now(&mut self) -> u64 {
        if self.0 == 0 {
            self.0 = unsafe { bpf_ktime_get_ns() };
        }
        self.0
    }
}

/// An unconfigured program (maps just created) runs with every defence off.
static OFF: Config = Config::off();

/// What the first stage decided: a verdict, or "the defences stage decides" (the facts are in
/// `SCRATCH`).
pub enum Next {
    Done(Verdict),
    Defences,
}

/// The first stage: parse, allowlist, blocklist, L4 parse, sanity.
#[inline(always)]
pub fn classify(ctx: &XdpContext) -> Next {
    let done = Next::Done;
    let cfg = maps::CONFIG.get(0).unwrap_or(&OFF);
    let dry = cfg.dry_run != 0;
    let ip = match parse::parse_ip(ctx) {
        Ok(Frame::Ip(ip)) => ip,
        Ok(Frame::NotIp) => return done(pass(Reason::Pass)),
        Err(parse::Malformed) => return done(drop(Reason::Malformed, dry)),
    };
    let mut clock = Clock::new();
    match ip.addrs {
        Addrs::V4 { src, .. } => {
            let front = front_bits(front_slot_v4(src), false);
            if front & FRONT_ALLOW != 0
                && listed(&maps::ALLOW_V4_EXACT, &maps::ALLOW_V4, src, 32, &mut clock).is_some()
            {
                return done(pass(Reason::Allowlist));
            }
            if front & FRONT_BLOCK != 0 {
                if let Some(feed) =
                    listed(&maps::BLOCK_V4_EXACT, &maps::BLOCK_V4, src, 32, &mut clock)
                {
                    return done(blocked(ctx, feed, dry));
                }
            }
        }
        Addrs::V6 { src, .. } => {
            let front = front_bits(front_slot_v6(&src), true);
            if front & FRONT_ALLOW != 0
                && listed(&maps::ALLOW_V6_EXACT, &maps::ALLOW_V6, src, 128, &mut clock).is_some()
            {
                return done(pass(Reason::Allowlist));
            }
            if front & FRONT_BLOCK != 0 {
                if let Some(feed) =
                    listed(&maps::BLOCK_V6_EXACT, &maps::BLOCK_V6, src, 128, &mut clock)
                {
                    if !parse::is_neighbour_discovery(ctx, &ip) {
                        return done(blocked(ctx, feed, dry));
                    }
                }
            }
        }
    }
    let l4 = match ip.l4_off {
        Some(off) => match parse::parse_l4(ctx, ip.protocol, off) {
            Ok(l4) => l4,
            Err(parse::Malformed) => return done(drop(Reason::Malformed, dry)),
        },
        None => L4::default(),
    };
    // Every later stage off: nothing more to learn about this packet.
    if cfg.sanity | cfg.rule_count | cfg.reflection | cfg.limit_classes == 0 {
        return done(pass(Reason::Pass));
    }
    // Sanity runs on a copy on the stack; only the later stages need the copy in SCRATCH.
    let facts = Facts::of(ctx, &ip, &l4);
    if cfg.sanity != 0 {
        if let Some(reason) = sanity::check(cfg, &facts) {
            return done(drop(reason, dry));
        }
    }
    if cfg.rule_count | cfg.reflection | cfg.limit_classes == 0 {
        return done(pass(Reason::Pass));
    }
    let Some(pkt) = maps::SCRATCH.get_ptr_mut(0) else {
        return done(pass(Reason::Pass));
    };
    unsafe { core::ptr::write(pkt, facts) };
    Next::Defences
}

/// The defences stage, on the facts the first stage left in `SCRATCH`: rules, reflection
/// preset, rate limits, else pass. Verified as its own program, so its budget is its own.
#[inline(always)]
pub fn defend() -> Verdict {
    let cfg = maps::CONFIG.get(0).unwrap_or(&OFF);
    let dry = cfg.dry_run != 0;
    let Some(pkt) = maps::SCRATCH.get(0) else {
        return pass(Reason::Pass);
    };
    // A matching dry-run rule is remembered and evaluation goes on as if it had not matched.
    let mut would_drop = None;
    if cfg.rule_count != 0 {
        match rules::evaluate(cfg, pkt) {
            rules::Outcome::Drop(reason) => return drop(reason, dry),
            rules::Outcome::Pass => return pass(Reason::Pass),
            rules::Outcome::Continue { dry_run_drop } => would_drop = dry_run_drop,
        }
    }
    if cfg.reflection != 0 && reflection(pkt) {
        return drop(Reason::Reflection, dry);
    }
    if cfg.limit_classes != 0 {
        if let Some(reason) = limits::check(cfg, pkt) {
            return drop(reason, dry);
        }
    }
    match would_drop {
        Some(reason) => Verdict {
            reason,
            dry_run: true,
        },
        None => pass(Reason::Pass),
    }
}

#[inline(always)]
pub fn pass(reason: Reason) -> Verdict {
    Verdict {
        reason,
        dry_run: false,
    }
}

#[inline(always)]
fn drop(reason: Reason, dry_run: bool) -> Verdict {
    Verdict { reason, dry_run }
}

impl Facts {
    /// The facts of a parsed packet, built in one go (no store is made twice).
    #[inline(always)]
    fn of(ctx: &XdpContext, ip: &Ip, l4: &L4) -> Facts {
        let (v6, src, dst) = match ip.addrs {
            Addrs::V4 { src: s, dst: d } => {
                let mut src = [0u8; 16];
                let mut dst = [0u8; 16];
                src[..4].copy_from_slice(&s);
                dst[..4].copy_from_slice(&d);
                (0, src, dst)
            }
            Addrs::V6 { src, dst } => (1, src, dst),
        };
        Facts {
            src,
            dst,
            frame_len: (ctx.data_end() - ctx.data()) as u64,
            l3_off: ip.l3_off as u32,
            ip_len: ip.ip_len,
            hdr_len: ip.hdr_len,
            l4_off: ip.l4_off.unwrap_or(0) as u32,
            sport: l4.sport,
            dport: l4.dport,
            claimed_len: l4.claimed_len,
            v6,
            proto: ip.protocol,
            ttl: ip.ttl,
            has_l4: ip.l4_off.is_some() as u8,
            fragmented: ip.fragmented as u8,
            tcp_flags: l4.tcp_flags,
            icmp_type: l4.icmp_type,
            icmp_code: l4.icmp_code,
            _pad: [0; 4],
        }
    }
}

/// UDP from an amplifier's port, not toward an exempt port or prefix.
#[inline(always)]
fn reflection(pkt: &Facts) -> bool {
    if pkt.proto != IPPROTO_UDP || pkt.has_l4 == 0 {
        return false;
    }
    let sport = maps::PORT_FLAGS.get(pkt.sport as u32).copied().unwrap_or(0);
    if sport & port_bits::AMPLIFIER == 0 {
        return false;
    }
    let dport = maps::PORT_FLAGS.get(pkt.dport as u32).copied().unwrap_or(0);
    if dport & port_bits::EXEMPT_DST != 0 {
        return false;
    }
    let d = &pkt.dst;
    let exempt = if pkt.v6 == 0 {
        maps::REFLECT_EXEMPT_V4
            .get(Key::new(32, [d[0], d[1], d[2], d[3]]))
            .is_some()
    } else {
        maps::REFLECT_EXEMPT_V6.get(Key::new(128, *d)).is_some()
    };
    !exempt
}

/// Which lists may hold an entry for this front slot ([`FRONT_ALLOW`] | [`FRONT_BLOCK`]).
/// A list without entries of the family costs no bitmap read. An auto-ban the front does not
/// show yet (auto control word set) means: check the blocklist. A failed read: check both.
#[inline(always)]
fn front_bits(slot: u32, v6: bool) -> u64 {
    const BOTH: u64 = FRONT_ALLOW | FRONT_BLOCK;
    let ctl = |w: u32| maps::FRONT.get(FRONT_CTL + w).copied();
    let Some(nonempty) = ctl(FRONT_NONEMPTY) else {
        return BOTH;
    };
    let mut out = 0;
    for list in [FRONT_ALLOW, FRONT_BLOCK] {
        if nonempty & front_nonempty_bit(v6, list) != 0 {
            let (word, bit) = front_pos(slot, v6, list);
            match maps::FRONT.get(word) {
                Some(w) if (*w >> bit) & 1 == 0 => {}
                _ => out |= list,
            }
        }
    }
    let auto = ctl(if v6 { FRONT_AUTO_V6 } else { FRONT_AUTO_V4 });
    if auto != Some(0) {
        out |= FRONT_BLOCK;
    }
    if v6 {
        out |= ctl(FRONT_V6_SHORT).unwrap_or(BOTH);
    }
    out
}

/// Is `addr` on a list made of an exact-host hash and a prefix trie? Counts the hit.
#[inline(always)]
fn listed<A: Copy>(
    exact: &HashMap<A, ListEntry>,
    prefixes: &LpmTrie<A, ListEntry>,
    addr: A,
    host_len: u32,
    clock: &mut Clock,
) -> Option<u32> {
    if let Some(entry) = exact.get_ptr_mut(&addr) {
        if live(entry, clock) {
            count_hit(entry);
            return Some(unsafe { (*entry).feed });
        }
    }
    let mut len = host_len;
    for _ in 0..EXPIRED_RETRIES {
        let Some(entry) = prefixes.get(Key::new(len, addr)) else {
            return None;
        };
        let entry = entry as *const ListEntry as *mut ListEntry;
        if live(entry, clock) {
            count_hit(entry);
            return Some(unsafe { (*entry).feed });
        }
        let matched = unsafe { (*entry).prefix_len };
        if matched == 0 || matched > host_len {
            return None;
        }
        len = matched - 1;
    }
    None
}

/// An enforced blocklist drop also counts against the feed that listed the source.
#[inline(always)]
fn blocked(ctx: &XdpContext, feed: u32, dry: bool) -> Verdict {
    if !dry {
        if let Some(counter) = maps::FEED_DROPS.get_ptr_mut(feed) {
            // Per-CPU slot: plain adds are exact.
            unsafe {
                (*counter).packets += 1;
                (*counter).bytes += (ctx.data_end() - ctx.data()) as u64;
            }
        }
    }
    drop(Reason::Blocklist, dry)
}

#[inline(always)]
fn live(entry: *const ListEntry, clock: &mut Clock) -> bool {
    let expires = unsafe { (*entry).expires_at_ns };
    // Read the clock only for entries that can expire: most never do.
    expires == 0 || entry_live(expires, clock.now())
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
