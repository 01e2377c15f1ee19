//! The cost floor for benchmarks: an XDP program that drops everything and does nothing else
//! (and `pass`, for the peer of a veth that sends XDP_TX replies).
//! Not part of the product; `cargo xtask bench` runs floodgate beside it.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

    #[xdp]
    pub fn floor(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_DROP
    }

    /// Passes everything: put on the far end of a veth so that XDP_TX replies from the near
    /// end are delivered (veth in native mode drops them when its peer has no XDP program).
    #[xdp]
    pub fn pass(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
