//! The pipeline, in order: parse, allowlist, blocklist, L4 parse, sanity (the first stage,
//! [`classify`]); then rules, reflection preset, rate limits, else pass (the defences stage,
//! [`defend`], reached by tail call). TCP SYNs and ACKs to protected ports meet the SYN guard
//! (`synguard.rs`, its own stage) between the two: what it passes goes on to the defences. Every step but the lists is switched by the live `CONFIG`
//! record and costs one branch when off. The steps live in their own modules; this file only
//! orders them.

use aya_ebpf::programs::XdpContext;
use filter_common::{Config, FRONT_ALLOW, FRONT_BLOCK, Reason, STAGE_DEFENCES};

use crate::{
    facts::{Facts, Verdict, drop, drop_by, pass},
    limits, lists, maps,
    parse::{self, Addrs, Frame, L4},
    reflection, rules, sanity, synguard,
};

/// An unconfigured program (maps just created) runs with every defence off.
static OFF: Config = Config::off();

/// What a stage decided: a verdict, or "the stage at this `STAGES` index decides" (the facts
/// are in `SCRATCH`).
pub enum Next {
    Done(Verdict),
    Stage(u32),
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
    // Allowlist, then blocklist; the front skips a list that holds nothing for this source.
    // (Written out here, not behind one lists call: passing the parsed header by reference
    // costs the verifier 70k more instructions.)
    match ip.addrs {
        Addrs::V4 { src, .. } => {
            let front = lists::front_v4(src);
            if front & FRONT_ALLOW != 0 && lists::allowed_v4(src, front) {
                return done(pass(Reason::Allowlist));
            }
            if front & FRONT_BLOCK != 0 {
                if let Some(source) = lists::blocked_v4(src, front) {
                    lists::count_drop(ctx, source, dry);
                    return done(drop_by(Reason::Blocklist, dry, source));
                }
            }
        }
        Addrs::V6 { src, .. } => {
            let front = lists::front_v6(&src);
            if front & FRONT_ALLOW != 0 && lists::allowed_v6(src, front) {
                return done(pass(Reason::Allowlist));
            }
            if front & FRONT_BLOCK != 0 {
                if let Some(source) = lists::blocked_v6(src, front) {
                    // Neighbour discovery from the link passes any list (see parse.rs).
                    if !parse::is_neighbour_discovery(ctx, &ip) {
                        lists::count_drop(ctx, source, dry);
                        return done(drop_by(Reason::Blocklist, dry, source));
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
    if cfg.sanity | cfg.rule_count | cfg.reflection | cfg.limit_classes | cfg.synguard == 0 {
        return done(pass(Reason::Pass));
    }
    // Sanity runs on a copy on the stack; only the later stages need the copy in SCRATCH.
    let facts = Facts::of(ctx, &ip, &l4);
    if cfg.sanity != 0 {
        if let Some(reason) = sanity::check(cfg, &facts) {
            return done(drop(reason, dry));
        }
    }
    // The SYN guard is reached through the defences stage (its port lookup here, on every
    // parse path, cost this stage's verifier 150k instructions); it wants TCP only, so other
    // packets skip the tail call when it is the only later stage on.
    let guard = (cfg.synguard != 0) & (facts.proto == parse::IPPROTO_TCP);
    if cfg.rule_count | cfg.reflection | cfg.limit_classes | guard as u32 == 0 {
        return done(pass(Reason::Pass));
    }
    let Some(pkt) = maps::SCRATCH.get_ptr_mut(0) else {
        return done(pass(Reason::Pass));
    };
    unsafe { core::ptr::write(pkt, facts) };
    Next::Stage(STAGE_DEFENCES)
}

/// Does the packet in `SCRATCH` go to the SYN guard stage first? (The defences stage asks on
/// entry; the guard hands back what it passes, marked `guarded`.)
#[inline(always)]
pub fn to_synguard() -> bool {
    let cfg = maps::CONFIG.get(0).unwrap_or(&OFF);
    match maps::SCRATCH.get(0) {
        Some(pkt) => cfg.synguard != 0 && pkt.guarded == 0 && synguard::wants(pkt),
        None => false,
    }
}

/// The defences stage, on the facts the first stage left in `SCRATCH`: rules, reflection
/// preset, rate limits, else pass. Verified as its own program, so its budget is its own.
#[inline(always)]
pub fn defend(ctx: &XdpContext) -> Verdict {
    let cfg = maps::CONFIG.get(0).unwrap_or(&OFF);
    let dry = cfg.dry_run != 0;
    let Some(pkt) = maps::SCRATCH.get(0) else {
        return pass(Reason::Pass);
    };
    // A matching dry-run rule is remembered and evaluation goes on as if it had not matched.
    let mut would_drop = None;
    let mut would_id = 0;
    if cfg.rule_count != 0 {
        match rules::evaluate(cfg, pkt) {
            rules::Outcome::Drop(reason, id) => return drop_by(reason, dry, id),
            rules::Outcome::Pass => return pass(Reason::Pass),
            rules::Outcome::Continue {
                dry_run_drop,
                dry_run_id,
            } => {
                would_drop = dry_run_drop;
                would_id = dry_run_id;
            }
        }
    }
    if cfg.reflection != 0 && reflection::check(pkt) {
        return drop(Reason::Reflection, dry);
    }
    if cfg.limit_classes != 0 {
        if let Some(reason) = limits::check(ctx, cfg, pkt) {
            return drop(reason, dry);
        }
    }
    match would_drop {
        Some(reason) => drop_by(reason, true, would_id),
        None => pass(Reason::Pass),
    }
}
