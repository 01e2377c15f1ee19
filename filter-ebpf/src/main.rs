//! floodgate's XDP program: one entry point, one exit. See README "Design" for the flow.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// BPF has no core::sync::atomic read-modify-write; the hit counters use the intrinsic.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(
    target_arch = "bpf",
    expect(internal_features, reason = "atomic_xadd for hit counters")
)]

#[cfg(target_arch = "bpf")]
mod auto;
#[cfg(target_arch = "bpf")]
mod bucket;
#[cfg(target_arch = "bpf")]
mod decide;
#[cfg(target_arch = "bpf")]
mod facts;
#[cfg(target_arch = "bpf")]
mod limits;
#[cfg(target_arch = "bpf")]
mod lists;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod reflection;
#[cfg(target_arch = "bpf")]
mod rules;
#[cfg(target_arch = "bpf")]
mod sample;
#[cfg(target_arch = "bpf")]
mod sanity;
#[cfg(target_arch = "bpf")]
mod stats;
#[cfg(target_arch = "bpf")]
mod synguard;
#[cfg(target_arch = "bpf")]
mod synguard_tc;

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        bindings::{TC_ACT_OK, xdp_action},
        macros::{classifier, xdp},
        programs::{TcContext, XdpContext},
    };
    use filter_common::{Action, Reason, STAGE_SYNGUARD};

    use crate::{
        auto,
        decide::{self, Next},
        facts::{self, Verdict},
        maps, sample, stats, synguard, synguard_tc,
    };

    /// The first stage (attached to interfaces): parse, lists, L4, sanity. Packets the later
    /// defences must see jump to the defences stage; every packet is counted once, by the
    /// stage that decides it.
    #[xdp]
    pub fn floodgate(ctx: XdpContext) -> u32 {
        // Automatic mitigation counts every packet on arrival, whatever is decided next. The
        // length is read again for the exit: one value live across classify costs the
        // verifier ~40k instructions.
        if maps::CONFIG.get(0).is_some_and(|cfg| cfg.auto != 0) {
            auto::fg_account(ctx.ctx, stats::frame_len(&ctx) as u32);
        }
        next(&ctx, decide::classify(&ctx), stats::frame_len(&ctx))
    }

    /// The defences stage: rules, reflection preset, rate limits (reached by tail call).
    #[xdp]
    pub fn fg_defences(ctx: XdpContext) -> u32 {
        if decide::to_synguard() {
            // SAFETY: as in `next`; on failure the defences run as if the guard were off.
            unsafe { maps::STAGES.tail_call(&ctx, STAGE_SYNGUARD) };
        }
        exit(&ctx, &decide::defend(&ctx), stats::frame_len(&ctx))
    }

    /// The SYN guard stage: SYN-ACK cookies for SYNs, cookie checks for ACKs (tail call).
    /// What it passes goes on to the defences stage, when any defence is on.
    #[xdp]
    pub fn fg_synguard(ctx: XdpContext) -> u32 {
        // Counted at the length it came in with: an answered SYN leaves as its SYN-ACK.
        let bytes = stats::frame_len(&ctx);
        next(&ctx, synguard::guard(&ctx), bytes)
    }

    /// The SYN guard's TC ingress half: completes handshakes that carry a valid cookie.
    #[classifier]
    pub fn fg_synguard_tc(ctx: TcContext) -> i32 {
        synguard_tc::handshake(&ctx);
        TC_ACT_OK
    }

    /// Exit with a verdict, or jump to the stage that decides.
    #[inline(always)]
    fn next(ctx: &XdpContext, next: Next, bytes: u64) -> u32 {
        match next {
            Next::Done(verdict) => exit(ctx, &verdict, bytes),
            Next::Stage(index) => {
                // SAFETY: a tail call replaces this program; it returns only when it fails.
                unsafe { maps::STAGES.tail_call(ctx, index) };
                // The stage is not loaded (the loader fills STAGES): as if it were off.
                exit(ctx, &facts::pass(Reason::Pass), bytes)
            }
        }
    }

    /// The single exit of every stage: count the packet (of `bytes` as it came in) under its
    /// reason, give the action.
    #[inline(always)]
    fn exit(ctx: &XdpContext, verdict: &Verdict, bytes: u64) -> u32 {
        let slot = stats::record(verdict, bytes);
        // Sampling off: one test. On: the global function decides (verified once, on its own).
        if let Some(cfg) = maps::CONFIG.get(0) {
            if cfg.sample != 0 {
                sample::fg_sample(ctx.ctx, slot, bytes as u32);
            }
        }
        if verdict.dry_run {
            return xdp_action::XDP_PASS;
        }
        match verdict.reason.action() {
            Action::Pass => xdp_action::XDP_PASS,
            Action::Drop => xdp_action::XDP_DROP,
            Action::Tx => xdp_action::XDP_TX,
        }
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        // The verifier rejects any path that could reach here; nothing panics at run time.
        loop {}
    }
}

/// Host builds (`cargo clippy --workspace`) get a stub: the real object is bpfel-unknown-none.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
