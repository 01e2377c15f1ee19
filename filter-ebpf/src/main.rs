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
mod sanity;
#[cfg(target_arch = "bpf")]
mod stats;

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
    use filter_common::{Action, Reason, STAGE_DEFENCES};

    use crate::{
        decide::{self, Next},
        facts::{self, Verdict},
        maps, stats,
    };

    /// The first stage (attached to interfaces): parse, lists, L4, sanity. Packets the later
    /// defences must see jump to the defences stage; every packet is counted once, by the
    /// stage that decides it.
    #[xdp]
    pub fn floodgate(ctx: XdpContext) -> u32 {
        match decide::classify(&ctx) {
            Next::Done(verdict) => exit(&ctx, &verdict),
            Next::Defences => {
                // SAFETY: a tail call replaces this program; it returns only when it fails.
                unsafe { maps::STAGES.tail_call(&ctx, STAGE_DEFENCES) };
                // No defences stage loaded (it is filled by the loader): as if all were off.
                exit(&ctx, &facts::pass(Reason::Pass))
            }
        }
    }

    /// The defences stage: rules, reflection preset, rate limits (reached by tail call).
    #[xdp]
    pub fn fg_defences(ctx: XdpContext) -> u32 {
        exit(&ctx, &decide::defend(&ctx))
    }

    /// The single exit of every stage: count the packet under its reason, give the action.
    #[inline(always)]
    fn exit(ctx: &XdpContext, verdict: &Verdict) -> u32 {
        stats::record(ctx, verdict);
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
