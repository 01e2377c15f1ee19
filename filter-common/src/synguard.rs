//! SYN guard: the data plane answers SYNs to protected destinations itself with a SYN-ACK whose
//! sequence number is a SYN cookie, and only a client that got that SYN-ACK can complete the
//! handshake. Everything both sides must agree on lives here: the switches in
//! [`crate::Config::synguard`], the counters, and the cookie itself (a pure function, so the
//! XDP stage that makes it, the TC program that checks it and the host tests compute the same).
//!
//! Cookie layout (the SYN-ACK's sequence number, 32 bits):
//! ```text
//! bits 31..10  22 bits of SipHash-1-3(secret; addresses, ports, client ISN, time, bits 9..0)
//! bit  9       parity of the time slot (slots of 2^36 ns, about 69 s): valid for 69-137 s
//! bit  8       ECN requested by the client (ECE and CWR on its SYN)
//! bit  7       SACK permitted by the client
//! bits 6..3    the client's window scale, 15 = none offered
//! bits 2..0    index in COOKIE_MSS of the largest MSS not above the client's
//! ```
//! So the connection the kernel builds keeps the client's MSS (rounded down to the table),
//! window scaling, SACK and ECN. TCP timestamps are not offered in the SYN-ACK.

/// [`crate::Config::synguard`] bits.
pub mod synguard_bits {
    /// The guard is on: SYNs to protected ports (`PORT_FLAGS` [`crate::port_bits::SYNGUARD`])
    /// are answered with a cookie.
    pub const ON: u32 = 1 << 0;
    /// Only destinations in `SYNGUARD_DST_V4/V6` are protected (else every local address).
    pub const DST: u32 = 1 << 1;
    /// Only while a destination receives more than [`crate::Config::synguard_over_pps`] SYNs
    /// per second (`SYNGUARD_RATE`); below it, SYNs reach the listener as usual.
    pub const WHEN_OVER: u32 = 1 << 2;
    /// Handshakes complete through netfilter SYNPROXY, not the TC program's kfunc: the SYN-ACK
    /// carries the kernel's own cookie (`bpf_tcp_raw_gen_syncookie_*`) and its options in the
    /// timestamp ([`synproxy_tsval`]); ACKs are checked with `bpf_tcp_raw_check_syncookie_*`
    /// and passed on to the nftables table userspace installed. The data plane reads this bit.
    pub const SYNPROXY: u32 = 1 << 3;
    /// The operator asked for the kfunc path (`--completion kfunc`). Neither this nor
    /// [`ASKED_SYNPROXY`]: `auto`. Userspace only: what `status` and `show-config` give back.
    pub const ASKED_KFUNC: u32 = 1 << 4;
    /// The operator asked for the SYNPROXY path (`--completion synproxy`). Userspace only.
    pub const ASKED_SYNPROXY: u32 = 1 << 5;
}

/// Slots of the per-CPU `SYNGUARD_STATS` array (u64 each).
pub mod synguard_stat {
    /// ACKs to a protected port that carried a valid cookie (passed on to the kernel).
    pub const COOKIE_VALID: u32 = 0;
    /// ACKs to a protected port with no socket and a bad cookie (dropped: `bad_cookie`).
    pub const COOKIE_INVALID: u32 = 1;
    /// ACKs to a protected port that belong to an existing connection (passed untouched).
    pub const ESTABLISHED: u32 = 2;
    /// Handshakes handed to the listener by the TC program (`bpf_sk_assign_tcp_reqsk`).
    pub const HANDSHAKES: u32 = 3;
    /// Valid cookies the kernel refused to turn into a connection (see the daemon's log).
    pub const HANDSHAKE_FAILED: u32 = 4;
    pub const COUNT: u32 = 5;
    /// Names, in slot order (metrics, `synguard status`).
    pub const NAMES: [&str; COUNT as usize] = [
        "cookies_valid",
        "cookies_invalid",
        "established",
        "handshakes_completed",
        "handshakes_failed",
    ];
}

/// The value of `SYNGUARD_SECRET` (one entry): the SipHash key of the cookies. Random, written
/// by userspace when the maps are created; the same for every CPU and both programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynguardSecret {
    pub key: [u64; 2],
}
const _: () = assert!(core::mem::size_of::<SynguardSecret>() == 16);

/// A destination's SYN rate for `--when-over` (`SYNGUARD_RATE`, keyed by the destination
/// address in network byte order, IPv4 in the first 4 bytes). Written by the data plane.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynRate {
    /// Start of the current one-second window, monotonic ns.
    pub window_start_ns: u64,
    /// SYNs seen in it.
    pub count: u64,
    /// The guard stays on for this destination until this time (set while over the rate).
    pub guard_until_ns: u64,
}
const _: () = assert!(core::mem::size_of::<SynRate>() == 24);

/// Entries of `SYNGUARD_RATE` (an LRU: a flood of destinations evicts the quiet ones).
pub const SYNGUARD_RATE_MAX: u32 = 1 << 16;
/// Entries of each `SYNGUARD_DST_V4/V6` trie.
pub const SYNGUARD_DST_MAX: u32 = 1 << 10;
/// Once over the rate, a destination stays guarded this long after its last second over it.
pub const SYNGUARD_HOLD_NS: u64 = 10_000_000_000;

/// MSS values a cookie can carry (3 bits). The client's MSS is rounded down to one of them.
pub const COOKIE_MSS: [u16; 8] = [536, 1220, 1300, 1360, 1400, 1440, 1460, 8960];
/// "No window scale offered" in the cookie's 4-bit field.
pub const COOKIE_NO_WSCALE: u32 = 15;
/// The window scale floodgate advertises in its SYN-ACK (the listener's receive side).
pub const SYNGUARD_WSCALE: u8 = 7;
/// The (unscaled) window of the SYN-ACK.
pub const SYNGUARD_WINDOW: u16 = 65535;
/// The MSS floodgate advertises in its SYN-ACK: what the listener will accept per segment.
pub const SYNGUARD_MSS_V4: u16 = 1460;
pub const SYNGUARD_MSS_V6: u16 = 1440;
/// Largest window scale TCP allows (RFC 7323).
pub const TCP_MAX_WSCALE: u8 = 14;

/// The TCP options of a client's SYN that the cookie keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynOptions {
    /// The client's MSS option (0: none given; 536 is then assumed).
    pub mss: u16,
    /// The client's window scale (None: not offered).
    pub wscale: Option<u8>,
    pub sack: bool,
    pub ecn: bool,
    /// The client sent a timestamp option (kind 8); `tsval` is its value.
    pub ts: bool,
    pub tsval: u32,
}

/// netfilter SYNPROXY's encoding of a client's options in the SYN-ACK's timestamp value
/// (net/netfilter/nf_synproxy_core.c, `synproxy_init_timestamp_cookie`; the kernel reads them
/// back from the ACK's echo): bits 3..0 the client's window scale (15: none), bit 4 SACK
/// permitted, bit 5 ECN; the rest is a clock (`now_ms`, milliseconds).
pub const SYNPROXY_TS_WSCALE_MASK: u32 = 0xf;
pub const SYNPROXY_TS_SACK: u32 = 1 << 4;
pub const SYNPROXY_TS_ECN: u32 = 1 << 5;

/// The SYN-ACK's timestamp value in SYNPROXY mode: the clock with its low 6 bits replaced by the
/// client's window scale, SACK and ECN.
#[inline(always)]
pub fn synproxy_tsval(now_ms: u32, opts: &SynOptions) -> u32 {
    let ws = match opts.wscale {
        Some(w) if w <= TCP_MAX_WSCALE => w as u32,
        Some(_) => TCP_MAX_WSCALE as u32,
        None => SYNPROXY_TS_WSCALE_MASK,
    };
    (now_ms & !0x3f)
        | ws
        | if opts.sack { SYNPROXY_TS_SACK } else { 0 }
        | if opts.ecn { SYNPROXY_TS_ECN } else { 0 }
}

/// What netfilter reads back from an ACK's timestamp echo (`synproxy_check_timestamp_cookie`):
/// the client's window scale, SACK, ECN. Host tests only need it; kept beside its encoder.
pub fn synproxy_ts_options(tsecr: u32) -> (Option<u8>, bool, bool) {
    let ws = tsecr & SYNPROXY_TS_WSCALE_MASK;
    (
        (ws != SYNPROXY_TS_WSCALE_MASK).then_some(ws as u8),
        tsecr & SYNPROXY_TS_SACK != 0,
        tsecr & SYNPROXY_TS_ECN != 0,
    )
}

/// What a valid cookie says about the connection (see [`cookie_check`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CookieFacts {
    /// The MSS to send with (from [`COOKIE_MSS`]).
    pub mss: u16,
    /// The client's window scale, when it offered one.
    pub wscale: Option<u8>,
    pub sack: bool,
    pub ecn: bool,
}

/// The cookie's time slot at monotonic time `now_ns`.
#[inline(always)]
pub const fn cookie_slot(now_ns: u64) -> u64 {
    now_ns >> 36
}

/// The 10 low bits of a cookie for these options in time slot `slot`.
#[inline(always)]
pub fn cookie_low_bits(opts: &SynOptions, slot: u64) -> u32 {
    let mss = if opts.mss == 0 { 536 } else { opts.mss };
    let mut idx = 0u32;
    let mut i = 1;
    while i < COOKIE_MSS.len() {
        if COOKIE_MSS[i] <= mss {
            idx = i as u32;
        }
        i += 1;
    }
    let ws = match opts.wscale {
        Some(w) if w <= TCP_MAX_WSCALE => w as u32,
        Some(_) => TCP_MAX_WSCALE as u32,
        None => COOKIE_NO_WSCALE,
    };
    idx | ws << 3 | (opts.sack as u32) << 7 | (opts.ecn as u32) << 8 | ((slot & 1) as u32) << 9
}

/// The connection a cookie's low bits describe (before its hash is checked).
#[inline(always)]
pub fn cookie_facts(cookie: u32) -> CookieFacts {
    let ws = (cookie >> 3) & 0xf;
    CookieFacts {
        mss: COOKIE_MSS[(cookie & 7) as usize],
        wscale: if ws > TCP_MAX_WSCALE as u32 {
            None
        } else {
            Some(ws as u8)
        },
        sack: cookie & (1 << 7) != 0,
        ecn: cookie & (1 << 8) != 0,
    }
}

/// The connection a cookie is for. Addresses in network byte order (IPv4 in the first 4 bytes
/// of each, the rest zero), ports in host order, the client's initial sequence number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CookieFlow {
    pub client: [u8; 16],
    pub server: [u8; 16],
    pub client_port: u16,
    pub server_port: u16,
    pub client_isn: u32,
}

/// The cookie for `flow` with these low bits in time `slot` (see the module docs).
#[inline(always)]
pub fn cookie_make(key: &SynguardSecret, flow: &CookieFlow, low: u32, slot: u64) -> u32 {
    let h = cookie_hash(key, flow, low & 0x3ff, slot);
    (h << 10) | (low & 0x3ff)
}

/// Check `cookie` (the ACK's acknowledgment number minus one; `flow.client_isn` is the ACK's
/// sequence number minus one) at monotonic time `now_ns`: the options it carries, or None.
#[inline(always)]
pub fn cookie_check(
    key: &SynguardSecret,
    flow: &CookieFlow,
    cookie: u32,
    now_ns: u64,
) -> Option<CookieFacts> {
    let now = cookie_slot(now_ns);
    // The slot the cookie was made in: this one or the one before, told apart by parity.
    let slot = if (now & 1) as u32 == (cookie >> 9) & 1 {
        now
    } else {
        now.wrapping_sub(1)
    };
    let low = cookie & 0x3ff;
    if cookie_hash(key, flow, low, slot) != cookie >> 10 {
        return None;
    }
    Some(cookie_facts(cookie))
}

/// 22 bits of SipHash-1-3 over the flow, the low bits and the slot.
#[inline(always)]
fn cookie_hash(key: &SynguardSecret, flow: &CookieFlow, low: u32, slot: u64) -> u32 {
    let w = |a: &[u8; 16], i: usize| {
        u64::from_le_bytes([
            a[i],
            a[i + 1],
            a[i + 2],
            a[i + 3],
            a[i + 4],
            a[i + 5],
            a[i + 6],
            a[i + 7],
        ])
    };
    let words = [
        w(&flow.client, 0),
        w(&flow.client, 8),
        w(&flow.server, 0),
        w(&flow.server, 8),
        (flow.client_port as u64) << 48 | (flow.server_port as u64) << 32 | flow.client_isn as u64,
        slot << 10 | low as u64,
    ];
    (siphash13(key.key[0], key.key[1], &words) & 0x3f_ffff) as u32
}

/// SipHash-1-3 of whole 64-bit words (the message length is folded in as SipHash does).
#[inline(always)]
pub fn siphash13(k0: u64, k1: u64, words: &[u64; 6]) -> u64 {
    let mut v0 = k0 ^ 0x736f_6d65_7073_6575;
    let mut v1 = k1 ^ 0x646f_7261_6e64_6f6d;
    let mut v2 = k0 ^ 0x6c79_6765_6e65_7261;
    let mut v3 = k1 ^ 0x7465_6462_7974_6573;
    macro_rules! round {
        () => {
            v0 = v0.wrapping_add(v1);
            v1 = v1.rotate_left(13);
            v1 ^= v0;
            v0 = v0.rotate_left(32);
            v2 = v2.wrapping_add(v3);
            v3 = v3.rotate_left(16);
            v3 ^= v2;
            v0 = v0.wrapping_add(v3);
            v3 = v3.rotate_left(21);
            v3 ^= v0;
            v2 = v2.wrapping_add(v1);
            v1 = v1.rotate_left(17);
            v1 ^= v2;
            v2 = v2.rotate_left(32);
        };
    }
    let mut i = 0;
    while i < words.len() {
        let m = words[i];
        v3 ^= m;
        round!();
        v0 ^= m;
        i += 1;
    }
    let last = ((words.len() as u64 * 8) & 0xff) << 56;
    v3 ^= last;
    round!();
    v0 ^= last;
    v2 ^= 0xff;
    round!();
    round!();
    round!();
    v0 ^ v1 ^ v2 ^ v3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> CookieFlow {
        let mut client = [0u8; 16];
        client[..4].copy_from_slice(&[198, 18, 0, 2]);
        let mut server = [0u8; 16];
        server[..4].copy_from_slice(&[198, 18, 0, 1]);
        CookieFlow {
            client,
            server,
            client_port: 40000,
            server_port: 443,
            client_isn: 0x1234_5678,
        }
    }

    const KEY: SynguardSecret = SynguardSecret {
        key: [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210],
    };

    #[test]
    fn a_cookie_round_trips_its_options() {
        let now = 5u64 << 36;
        for (opts, want) in [
            (
                SynOptions {
                    mss: 1460,
                    wscale: Some(7),
                    sack: true,
                    ecn: false,
                    ..SynOptions::default()
                },
                CookieFacts {
                    mss: 1460,
                    wscale: Some(7),
                    sack: true,
                    ecn: false,
                },
            ),
            (
                SynOptions {
                    mss: 1400,
                    wscale: None,
                    sack: false,
                    ecn: true,
                    ..SynOptions::default()
                },
                CookieFacts {
                    mss: 1400,
                    wscale: None,
                    sack: false,
                    ecn: true,
                },
            ),
            // Rounded down to the table; no MSS option means 536.
            (
                SynOptions {
                    mss: 1450,
                    wscale: Some(14),
                    ..Default::default()
                },
                CookieFacts {
                    mss: 1440,
                    wscale: Some(14),
                    ..Default::default()
                },
            ),
            (
                SynOptions::default(),
                CookieFacts {
                    mss: 536,
                    wscale: None,
                    ..Default::default()
                },
            ),
        ] {
            let c = cookie_make(
                &KEY,
                &flow(),
                cookie_low_bits(&opts, cookie_slot(now)),
                cookie_slot(now),
            );
            assert_eq!(cookie_check(&KEY, &flow(), c, now), Some(want), "{opts:?}");
        }
    }

    #[test]
    fn a_cookie_is_valid_for_one_more_slot_only() {
        let made = 6u64 << 36;
        let opts = SynOptions {
            mss: 1460,
            ..Default::default()
        };
        let slot = cookie_slot(made);
        let c = cookie_make(&KEY, &flow(), cookie_low_bits(&opts, slot), slot);
        assert!(cookie_check(&KEY, &flow(), c, made + (1 << 36)).is_some());
        assert!(cookie_check(&KEY, &flow(), c, made + (2 << 36)).is_none());
        assert!(cookie_check(&KEY, &flow(), c, made + (3 << 36)).is_none());
    }

    #[test]
    fn any_change_of_flow_key_or_cookie_fails() {
        let now = 9u64 << 36;
        let slot = cookie_slot(now);
        let low = cookie_low_bits(&SynOptions::default(), slot);
        let c = cookie_make(&KEY, &flow(), low, slot);
        let mut f = flow();
        f.client_port += 1;
        assert!(cookie_check(&KEY, &f, c, now).is_none(), "port");
        let mut f = flow();
        f.client_isn += 1;
        assert!(cookie_check(&KEY, &f, c, now).is_none(), "isn");
        let mut f = flow();
        f.client[3] ^= 1;
        assert!(cookie_check(&KEY, &f, c, now).is_none(), "address");
        let other = SynguardSecret { key: [1, 2] };
        assert!(cookie_check(&other, &flow(), c, now).is_none(), "key");
        // Changing the options bits (e.g. a bigger MSS) breaks the hash.
        assert!(
            cookie_check(&KEY, &flow(), c ^ 1, now).is_none(),
            "mss bits"
        );
        assert!(
            cookie_check(&KEY, &flow(), c ^ (1 << 20), now).is_none(),
            "hash"
        );
    }

    #[test]
    fn the_synproxy_timestamp_carries_the_options_netfilter_reads() {
        for (wscale, sack, ecn) in [
            (None, false, false),
            (Some(0), true, false),
            (Some(7), true, true),
            (Some(14), false, true),
            (Some(15), true, true),
        ] {
            let opts = SynOptions {
                mss: 1460,
                wscale,
                sack,
                ecn,
                ts: true,
                tsval: 77,
            };
            let ts = synproxy_tsval(0x1234_5678, &opts);
            assert_eq!(ts & !0x3f, 0x1234_5678 & !0x3f, "the clock stays");
            let want_ws = wscale.map(|w| w.min(TCP_MAX_WSCALE));
            assert_eq!(
                synproxy_ts_options(ts),
                (want_ws, sack, ecn),
                "{wscale:?} {sack} {ecn}"
            );
        }
    }

    #[test]
    fn siphash_matches_the_reference_implementation() {
        use core::hash::Hasher;
        for (k0, k1, words) in [
            (0, 0, [0u64; 6]),
            (1, 2, [3, 4, 5, 6, 7, 8]),
            (
                u64::MAX,
                0x0123_4567,
                [u64::MAX, 1, 0, 1 << 63, 42, 0xdead_beef],
            ),
        ] {
            let mut h = siphasher::sip::SipHasher13::new_with_keys(k0, k1);
            for w in words {
                h.write(&w.to_le_bytes());
            }
            assert_eq!(siphash13(k0, k1, &words), h.finish(), "{k0} {k1} {words:?}");
        }
    }
}
