//! Packet samples: the data plane copies the first bytes of 1 in N packets of a reason, with
//! what it decided, into the `SAMPLES` ring buffer; `floodgate capture` (and later `top`)
//! read them. The rate is per `STATS` slot (a reason enforced, or matched under dry-run), 0 is
//! off; [`crate::Config::sample`] is non-zero while any rate is, so that with sampling off a
//! packet pays one test at its exit.

/// Most bytes of a packet a sample holds (the record has room for this many).
pub const SAMPLE_BYTES_MAX: usize = 256;
/// Bytes copied when no snap length is set.
pub const SAMPLE_SNAPLEN_DEFAULT: u32 = 128;
/// Size of the `SAMPLES` ring buffer, bytes (a power of two, a multiple of the page size).
pub const SAMPLES_RING_BYTES: u32 = 1 << 22;

/// [`SampleHead::flags`] bits.
pub mod sample_flags {
    /// The reason matched under dry-run: the packet passed.
    pub const DRY_RUN: u8 = 1 << 0;
    /// Taken on arrival by automatic mitigation's accounting (`AUTO_SAMPLES`): no verdict yet,
    /// `reason` 0, `detail` the host group.
    pub const ARRIVAL: u8 = 1 << 1;
}

/// One record of the `SAMPLES` ring buffer: this head, then `cap_len` bytes of the packet (of
/// a fixed [`SAMPLE_BYTES_MAX`]-byte area).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleHead {
    /// Monotonic time (`bpf_ktime_get_ns`) of the verdict.
    pub time_ns: u64,
    /// The packet's length as it came in (the frame, Ethernet header included).
    pub frame_len: u32,
    /// Bytes of it in the record.
    pub cap_len: u32,
    /// Interface it came in on.
    pub ifindex: u32,
    /// `crate::Reason` as a number.
    pub reason: u8,
    /// [`sample_flags`].
    pub flags: u8,
    pub _pad: [u8; 2],
    /// 1 in this many packets of the reason were sampled when this one was.
    pub rate: u32,
    /// What decided: the list source id of a blocklist drop, the rule id of a rule's verdict
    /// (`rule`, `rule_limit`, enforced or dry-run); 0 otherwise.
    pub detail: u32,
}
const _: () = assert!(core::mem::size_of::<SampleHead>() == 32);

/// A whole ring buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub head: SampleHead,
    pub data: [u8; SAMPLE_BYTES_MAX],
}
const _: () = assert!(core::mem::size_of::<Sample>() == 32 + SAMPLE_BYTES_MAX);
