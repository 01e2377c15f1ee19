//! The ordered rule table: first match wins. `drop` drops (reason `rule`), `pass` accepts and
//! skips the later defences, `limit` polices everything the rule matches with one aggregate
//! bucket (over it: reason `rule_limit`; within it: on to the reflection and rate-limit
//! stages). A dry-run rule counts its match and evaluation goes on as if it had not matched.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_loop};
use filter_common::{
    Config, RULE_DROP, RULE_LIMIT, RULE_PASS, RULES_MAX, Reason, Rule, addr_words, match_bits,
};

use crate::{
    bucket,
    facts::Facts,
    maps::{RULE_STATS, RULES},
    stats,
};

pub enum Outcome {
    /// Dropped by the rule with this id.
    Drop(Reason, u32),
    Pass,
    /// No enforcing rule decided; `dry_run_drop` is what the first dry-run rule would have done.
    Continue {
        dry_run_drop: Option<Reason>,
        /// The id of that dry-run rule (0 when none). Not inside the Option: a None's
        /// undefined payload may reach the verifier as an unread register.
        dry_run_id: u32,
    },
}

/// What the loop body needs, flattened onto the stack: a `bpf_loop` callback sees only this.
#[repr(C)]
struct Scan {
    src: [u64; 2],
    dst: [u64; 2],
    frame_len: u64,
    now: u64,
    base: u32,
    ip_len: u32,
    v6: u8,
    has_l4: u8,
    proto: u8,
    ttl: u8,
    tcp_flags: u8,
    icmp_type: u8,
    icmp_code: u8,
    /// Out: one of the `DECIDED_*` values.
    decided: u8,
    sport: u16,
    dport: u16,
    /// Out: what the first matching dry-run rule would have done (`DRY_*`).
    dry: u8,
    fragmented: u8,
    _pad: [u8; 2],
    /// Out: the id of the rule that decided, and of the first matching dry-run rule.
    decided_id: u32,
    dry_id: u32,
}

const DECIDED_NONE: u8 = 0;
const DECIDED_DROP: u8 = 1;
const DECIDED_LIMIT: u8 = 2;
const DECIDED_PASS: u8 = 3;
/// A `limit` rule the packet fit: stop the rules, go on to the later stages.
const DECIDED_WITHIN_LIMIT: u8 = 4;
const DRY_NONE: u8 = 0;
const DRY_DROP: u8 = 1;
const DRY_LIMIT: u8 = 2;

#[inline(always)]
pub fn evaluate(cfg: &Config, pkt: &Facts) -> Outcome {
    let (v6, src, dst) = (pkt.v6, addr_words(pkt.src), addr_words(pkt.dst));
    let mut scan = Scan {
        src,
        dst,
        frame_len: pkt.frame_len,
        // Read the clock inside the loop, and only for a limit rule that matches.
        now: 0,
        base: (cfg.rule_bank & 1) * RULES_MAX,
        ip_len: pkt.ip_len,
        v6,
        has_l4: pkt.has_l4,
        proto: pkt.proto,
        ttl: pkt.ttl,
        tcp_flags: pkt.tcp_flags,
        icmp_type: pkt.icmp_type,
        icmp_code: pkt.icmp_code,
        decided: DECIDED_NONE,
        sport: pkt.sport,
        dport: pkt.dport,
        dry: DRY_NONE,
        fragmented: pkt.fragmented,
        _pad: [0; 2],
        decided_id: 0,
        dry_id: 0,
    };
    let count = if cfg.rule_count > RULES_MAX {
        RULES_MAX
    } else {
        cfg.rule_count
    };
    // bpf_loop: the verifier checks the body once instead of once per rule, which a 64-rule
    // unrolled or bounded loop with this many branches cannot pass.
    unsafe {
        bpf_loop(
            count,
            step as *mut c_void,
            &mut scan as *mut Scan as *mut c_void,
            0,
        );
    }
    let dry_run_drop = match scan.dry {
        DRY_DROP => Some(Reason::Rule),
        DRY_LIMIT => Some(Reason::RuleLimit),
        _ => None,
    };
    let dry_run_id = scan.dry_id;
    match scan.decided {
        DECIDED_DROP => Outcome::Drop(Reason::Rule, scan.decided_id),
        DECIDED_LIMIT => Outcome::Drop(Reason::RuleLimit, scan.decided_id),
        DECIDED_PASS => Outcome::Pass,
        _ => Outcome::Continue {
            dry_run_drop,
            dry_run_id,
        },
    }
}

/// One rule: 0 = next rule, 1 = stop.
#[inline(never)]
extern "C" fn step(index: u64, ctx: *mut c_void) -> i64 {
    let scan = unsafe { &mut *(ctx as *mut Scan) };
    let Some(rule) = RULES.get_ptr_mut(scan.base + index as u32) else {
        return 1;
    };
    let r = unsafe { &*rule };
    if !matches(r, scan) {
        return 0;
    }
    count_rule(r.id, scan.frame_len);
    let (decided, dry) = match r.action {
        RULE_DROP => (DECIDED_DROP, DRY_DROP),
        RULE_PASS => (DECIDED_PASS, DRY_NONE),
        RULE_LIMIT => {
            let bucket = unsafe { core::ptr::addr_of_mut!((*rule).bucket) };
            if scan.now == 0 {
                scan.now = unsafe { bpf_ktime_get_ns() };
            }
            if bucket::take(bucket, &r.rate, scan.frame_len, scan.now) {
                (DECIDED_WITHIN_LIMIT, DRY_NONE)
            } else {
                (DECIDED_LIMIT, DRY_LIMIT)
            }
        }
        _ => return 0,
    };
    if r.dry_run != 0 {
        if scan.dry == DRY_NONE {
            scan.dry = dry;
            scan.dry_id = r.id;
        }
        return 0;
    }
    scan.decided = decided;
    scan.decided_id = r.id;
    1
}

#[inline(always)]
fn count_rule(id: u32, bytes: u64) {
    if let Some(c) = RULE_STATS.get_ptr_mut(&id) {
        stats::add(c, bytes);
    }
}

#[inline(always)]
fn matches(r: &Rule, p: &Scan) -> bool {
    let m = r.matches;
    if m == 0 {
        return true;
    }
    let family = m & (match_bits::V4 | match_bits::V6);
    if family != 0 {
        let want = if p.v6 != 0 {
            match_bits::V6
        } else {
            match_bits::V4
        };
        if family & want == 0 {
            return false;
        }
    }
    if m & match_bits::PROTO != 0 && p.proto != r.proto {
        return false;
    }
    if m & match_bits::SRC != 0
        && (p.src[0] & r.src_mask[0] != r.src_addr[0] || p.src[1] & r.src_mask[1] != r.src_addr[1])
    {
        return false;
    }
    if m & match_bits::DST != 0
        && (p.dst[0] & r.dst_mask[0] != r.dst_addr[0] || p.dst[1] & r.dst_mask[1] != r.dst_addr[1])
    {
        return false;
    }
    let has_l4 = p.has_l4 != 0;
    if m & match_bits::SPORT != 0 && (!has_l4 || p.sport < r.sport_lo || p.sport > r.sport_hi) {
        return false;
    }
    if m & match_bits::DPORT != 0 && (!has_l4 || p.dport < r.dport_lo || p.dport > r.dport_hi) {
        return false;
    }
    if m & match_bits::TCP_FLAGS != 0
        && (!has_l4 || p.tcp_flags & r.tcp_flags_mask != r.tcp_flags_value)
    {
        return false;
    }
    if m & match_bits::ICMP_TYPE != 0 && (!has_l4 || p.icmp_type != r.icmp_type) {
        return false;
    }
    if m & match_bits::ICMP_CODE != 0 && (!has_l4 || p.icmp_code != r.icmp_code) {
        return false;
    }
    if m & match_bits::LENGTH != 0 {
        let len = p.ip_len;
        if len < r.len_lo as u32 || len > r.len_hi as u32 {
            return false;
        }
    }
    if m & match_bits::TTL != 0 && (p.ttl < r.ttl_lo || p.ttl > r.ttl_hi) {
        return false;
    }
    if m & match_bits::FRAGMENT != 0 && (p.fragmented != 0) != (r.fragment != 0) {
        return false;
    }
    true
}
