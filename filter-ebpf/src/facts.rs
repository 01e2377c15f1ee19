//! What the stages share: the packet facts the defences read (written by the first stage to
//! the per-CPU `SCRATCH` map, read by the defences stage after the tail call), the lazily read
//! clock, and the verdict every stage ends with. Its own module so that sanity, rules,
//! reflection and limits import it without importing the pipeline.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::XdpContext};
use filter_common::Reason;

use crate::parse::{Addrs, Ip, L4};

/// The reason a packet is counted under, and whether dry-run let a drop reason pass.
pub struct Verdict {
    pub reason: Reason,
    pub dry_run: bool,
}

#[inline(always)]
pub fn pass(reason: Reason) -> Verdict {
    Verdict {
        reason,
        dry_run: false,
    }
}

#[inline(always)]
pub fn drop(reason: Reason, dry_run: bool) -> Verdict {
    Verdict { reason, dry_run }
}

/// [`drop`], noting what decided it for a packet sample (see `sample::note`): the list source
/// of a blocklist drop, the id of a rule. Not carried in the verdict: a value live on every
/// path to the exit costs the verifier tens of thousands of instructions.
#[inline(always)]
pub fn drop_by(reason: Reason, dry_run: bool, detail: u32) -> Verdict {
    crate::sample::note(detail);
    Verdict { reason, dry_run }
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
    /// Set by the SYN guard stage before it hands the packet back to the defences stage.
    pub guarded: u8,
    pub _pad: [u8; 3],
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

impl Facts {
    /// The facts of a parsed packet, built in one go (no store is made twice).
    #[inline(always)]
    pub fn of(ctx: &XdpContext, ip: &Ip, l4: &L4) -> Facts {
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
            frame_len: crate::stats::frame_len(ctx),
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
            guarded: 0,
            _pad: [0; 3],
        }
    }
}
