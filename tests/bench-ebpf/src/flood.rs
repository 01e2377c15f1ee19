//! The benchmarks' flood generator, not part of the product. Run through BPF_PROG_TEST_RUN in
//! live-frames mode on the attacker's veth: every run rewrites the frame's source address to a
//! random one and returns XDP_TX, so the kernel sends it to the victim as an xdp_frame. The
//! victim's XDP program then sees it without an skb ever being built, as on a real NIC.
//!
//! IPv4: the source becomes `(SRC4_BASE & !SRC4_MASK) | (random & SRC4_MASK)` (host order),
//! with the header checksum recomputed. IPv6: the source becomes random in 2000::/3 (global
//! unicast), so it spreads over the address space as a spoofed flood does.
//!
//! With `LISTED_V4` / `LISTED_V6` set (non-zero), the source is instead a random one of the
//! first that many addresses of `SOURCES_V4` / `SOURCES_V6`, filled by the benchmark with an
//! address inside each listed entry: a flood whose every source is listed (the drop path).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        bindings::xdp_action,
        helpers::bpf_get_prandom_u32,
        macros::{map, xdp},
        maps::Array,
        programs::XdpContext,
    };

    /// Set at load time (`EbpfLoader::set_global`).
    #[unsafe(no_mangle)]
    static SRC4_BASE: u32 = 0;
    #[unsafe(no_mangle)]
    static SRC4_MASK: u32 = 0xffff_ffff;

    #[unsafe(no_mangle)]
    static LISTED_V4: u32 = 0;
    #[unsafe(no_mangle)]
    static LISTED_V6: u32 = 0;

    /// Listed IPv4 sources (host order) and IPv6 sources (network-order bytes); the loader
    /// sizes them.
    #[map]
    static SOURCES_V4: Array<u32> = Array::with_max_entries(1, 0);
    #[map]
    static SOURCES_V6: Array<[u8; 16]> = Array::with_max_entries(1, 0);

    const ETH_LEN: usize = 14;

    #[xdp]
    pub fn flood(ctx: XdpContext) -> u32 {
        let data = ctx.data();
        let end = ctx.data_end();
        if data + ETH_LEN + 40 > end {
            return xdp_action::XDP_ABORTED;
        }
        let p = data as *mut u8;
        // SAFETY: bounds checked above for every byte touched below.
        unsafe {
            let ethertype = u16::from_be_bytes([*p.add(12), *p.add(13)]);
            if ethertype == 0x0800 {
                let base = core::ptr::read_volatile(&SRC4_BASE);
                let mask = core::ptr::read_volatile(&SRC4_MASK);
                let listed = core::ptr::read_volatile(&LISTED_V4);
                let mut src = (base & !mask) | (bpf_get_prandom_u32() & mask);
                if listed != 0 {
                    if let Some(a) = SOURCES_V4.get(bpf_get_prandom_u32() % listed) {
                        src = *a;
                    }
                }
                let ip = p.add(ETH_LEN);
                let b = src.to_be_bytes();
                for (i, byte) in b.iter().enumerate() {
                    *ip.add(12 + i) = *byte;
                }
                *ip.add(10) = 0;
                *ip.add(11) = 0;
                let mut sum: u32 = 0;
                for i in 0..10 {
                    sum += u16::from_be_bytes([*ip.add(2 * i), *ip.add(2 * i + 1)]) as u32;
                }
                sum = (sum & 0xffff) + (sum >> 16);
                sum = (sum & 0xffff) + (sum >> 16);
                let c = (!(sum as u16)).to_be_bytes();
                *ip.add(10) = c[0];
                *ip.add(11) = c[1];
            } else if ethertype == 0x86dd {
                let src = p.add(ETH_LEN + 8);
                let listed = core::ptr::read_volatile(&LISTED_V6);
                if listed != 0 {
                    if let Some(a) = SOURCES_V6.get(bpf_get_prandom_u32() % listed) {
                        for (i, byte) in a.iter().enumerate() {
                            *src.add(i) = *byte;
                        }
                    }
                    return xdp_action::XDP_TX;
                }
                for w in 0..4 {
                    let b = bpf_get_prandom_u32().to_ne_bytes();
                    for (i, byte) in b.iter().enumerate() {
                        *src.add(4 * w + i) = *byte;
                    }
                }
                *src = 0x20 | (*src & 0x1f);
            }
        }
        xdp_action::XDP_TX
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
