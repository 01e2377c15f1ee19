//! A yardstick for the benchmarks, not part of the product: XDP_DROP after `MISS_READS` (1 to
//! 4) dependent reads at random places of a 128 MiB array, each index depending on the value
//! read before (as a hash lookup's bucket, then element, then counter do). Beside the empty
//! floor, it shows what one cache and TLB miss costs on this machine under a live flood.
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

    const WORDS: u32 = 1 << 24;

    #[map]
    static MISS: Array<u64> = Array::with_max_entries(WORDS, 0);

    /// Set at load time (`EbpfLoader::override_global`).
    #[unsafe(no_mangle)]
    static MISS_READS: u32 = 1;

    #[xdp]
    pub fn misses(_ctx: XdpContext) -> u32 {
        let n = unsafe { core::ptr::read_volatile(&MISS_READS) };
        let mut v = 0u64;
        for i in 0..4 {
            if i >= n {
                break;
            }
            let idx = (unsafe { bpf_get_prandom_u32() } ^ v as u32) & (WORDS - 1);
            v = MISS.get(idx).copied().unwrap_or(0);
        }
        if v == 1 {
            xdp_action::XDP_PASS
        } else {
            xdp_action::XDP_DROP
        }
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
