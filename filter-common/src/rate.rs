//! Token-bucket arithmetic, as GCRA (the generic cell rate algorithm): each bucket is one
//! number, the theoretical arrival time (TAT). A packet of cost `c` conforms when
//! `TAT + c <= now + tolerance`; conforming moves TAT forward by `c`. That is exactly a token
//! bucket holding `tolerance` ns of credit, but one word wide, so every CPU can share it with
//! atomic adds and no lock (the data plane reserves with fetch-add and returns a refused
//! reservation). The host tests check it against a plain token bucket.

/// Burst a bucket allows: this much time's worth of its rate (at least one packet).
pub const BURST_NS: u64 = 100_000_000;

const NS_PER_S: u64 = 1_000_000_000;

/// Cost of one packet in a `pps` bucket, in ns of TAT. Precise to 0.1% up to 1 Mpps.
#[inline(always)]
pub const fn packet_cost_ns(pps: u64) -> u64 {
    NS_PER_S / pps
}

/// Cost of a `bytes`-long packet in a `bps` (bits per second) bucket, in ns of TAT.
#[inline(always)]
pub const fn byte_cost_ns(bytes: u64, bps: u64) -> u64 {
    bytes * 8 * NS_PER_S / bps
}

/// How far TAT may run ahead of now: the burst, never less than one packet's cost.
#[inline(always)]
pub const fn tolerance_ns(cost: u64) -> u64 {
    if cost > BURST_NS { cost } else { BURST_NS }
}

/// Does a packet conform, given the TAT before its reservation (already caught up to `now`)?
#[inline(always)]
pub const fn conforms(prev_tat: u64, cost: u64, now: u64) -> bool {
    prev_tat + cost <= now + tolerance_ns(cost)
}

/// One bucket, single-threaded: what the data plane does with atomics. Returns whether the
/// packet conforms and updates `tat`.
#[inline(always)]
pub fn admit(tat: &mut u64, cost: u64, now: u64) -> bool {
    if *tat < now {
        *tat = now;
    }
    if conforms(*tat, cost, now) {
        *tat += cost;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    /// The textbook token bucket, in ns of credit: refills with time up to the tolerance, a
    /// packet takes `cost` of it.
    struct Reference {
        credit: u64,
        last: u64,
    }

    impl Reference {
        fn admit(&mut self, cost: u64, now: u64) -> bool {
            let cap = tolerance_ns(cost);
            self.credit = (self.credit + (now - self.last)).min(cap);
            self.last = now;
            if self.credit >= cost {
                self.credit -= cost;
                true
            } else {
                false
            }
        }
    }

    proptest! {
        /// GCRA and the token bucket take the same decision for every packet of any arrival
        /// sequence and rate, starting from a full bucket.
        #[test]
        fn gcra_is_a_token_bucket(
            pps in 1u64..5_000_000,
            gaps in proptest::collection::vec(0u64..3_000_000, 1..400),
            start in 1u64..1_000_000_000_000,
        ) {
            let cost = packet_cost_ns(pps);
            let mut tat = 0;
            let mut reference = Reference { credit: tolerance_ns(cost), last: start };
            let mut now = start;
            for gap in gaps {
                now += gap;
                prop_assert_eq!(admit(&mut tat, cost, now), reference.admit(cost, now));
            }
        }

        /// Over a long run the admitted rate converges on the configured rate.
        #[test]
        fn long_run_rate_is_the_limit(pps in 10u64..100_000, offered_factor in 2u64..20) {
            let cost = packet_cost_ns(pps);
            let gap = cost / offered_factor;
            let mut tat = 0;
            let seconds = 5;
            let packets = seconds * NS_PER_S / gap.max(1);
            let mut admitted = 0u64;
            for i in 0..packets {
                if admit(&mut tat, cost, 1 + i * gap) {
                    admitted += 1;
                }
            }
            let expected = seconds * pps + BURST_NS / cost;
            let slack = expected / 100 + 2;
            prop_assert!(admitted.abs_diff(expected) <= slack,
                "admitted {admitted}, expected {expected} +- {slack}");
        }
    }

    #[test]
    fn byte_costs() {
        assert_eq!(
            byte_cost_ns(1500, 12_000_000),
            1_000_000,
            "1500 B at 12 Mbit/s is 1 ms"
        );
        assert_eq!(
            packet_cost_ns(1000),
            1_000_000,
            "1000 pps is 1 ms per packet"
        );
        assert_eq!(
            tolerance_ns(NS_PER_S),
            NS_PER_S,
            "1 pps still admits one packet"
        );
    }

    #[test]
    fn idle_bucket_allows_one_burst_then_the_rate() {
        let cost = packet_cost_ns(100); // 10 ms
        let mut tat = 0;
        let admitted: Vec<bool> = (0..12).map(|_| admit(&mut tat, cost, 5_000)).collect();
        assert_eq!(
            admitted.iter().filter(|a| **a).count(),
            10,
            "a 100 ms burst at 100 pps is 10 packets"
        );
        assert!(
            admit(&mut tat, cost, 5_000 + cost),
            "one cost later one more fits"
        );
    }
}
