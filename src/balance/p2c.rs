use std::time::{Duration, Instant};

use super::{AttemptEnd, Balancer, Decay, Load, LoadSet, PickContext, sample_eligible};
use crate::rng::Rng;

mod weighted;

/// The load measure a [`P2c`] balancer compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum P2cLoad {
    /// Requests in flight, divided by weight.
    Pending,
    /// Peak-EWMA round-trip time × (in flight + 1), divided by weight.
    PeakEwma {
        /// The RTT assumed before an endpoint's first response (default 30 ms).
        default_rtt: Duration,
        /// The EWMA time constant (default 10 s).
        decay: Duration,
    },
}

/// Power of two choices: sample two distinct eligible endpoints at random and
/// take the less loaded.
///
/// Peak-EWMA learns from every attempt that ends: its elapsed time is a
/// sample whether the endpoint answered (success or failure), the attempt
/// was cut by a timeout, or it was cancelled, so an endpoint that stalls
/// looks slow as soon as callers give up on it.
///
/// This avoids the herd behaviour of "least loaded" across many clients while
/// steering clearly away from slow or busy endpoints, at O(1) per pick
/// whatever the set size. With a single eligible endpoint it is returned.
///
/// **Weights.** When the endpoints' weights differ (SRV or etcd weights,
/// an aperture's partly covered servers), the two candidates are drawn in
/// proportion to weight from an alias table built when the set changes, and
/// their loads are compared without the weight, which the draw has applied
/// already: with even loads each endpoint gets its weight's share of the
/// picks. With equal weights nothing of this exists, and a pick costs what
/// it always did.
///
/// ```
/// use std::time::Duration;
/// use towline::balance::{P2c, P2cLoad};
///
/// let b = P2c::peak_ewma()
///     .default_rtt(Duration::from_millis(5))
///     .decay(Duration::from_secs(5));
/// assert!(matches!(b.load(), P2cLoad::PeakEwma { .. }));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct P2c {
    load: P2cLoad,
    /// The decay of `load`, precomputed (unused for `Pending`).
    decay: Decay,
}

impl P2c {
    /// The default RTT before the first response: 30 ms.
    pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
    /// The default EWMA time constant: 10 s.
    pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

    /// P2C over peak-EWMA latency (defaults: RTT 30 ms, decay 10 s).
    pub fn peak_ewma() -> Self {
        P2c {
            load: P2cLoad::PeakEwma {
                default_rtt: Self::DEFAULT_RTT,
                decay: Self::DEFAULT_DECAY,
            },
            decay: Decay::new(Self::DEFAULT_DECAY),
        }
    }

    /// P2C over in-flight requests.
    pub fn pending() -> Self {
        P2c {
            load: P2cLoad::Pending,
            decay: Decay::new(Self::DEFAULT_DECAY),
        }
    }

    /// Sets the RTT assumed before an endpoint's first response (peak-EWMA
    /// only).
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        if let P2cLoad::PeakEwma { default_rtt, .. } = &mut self.load {
            *default_rtt = rtt;
        }
        self
    }

    /// Sets the EWMA time constant (peak-EWMA only).
    pub fn decay(mut self, tau: Duration) -> Self {
        if let P2cLoad::PeakEwma { decay, .. } = &mut self.load {
            *decay = tau;
            self.decay = Decay::new(tau);
        }
        self
    }

    /// The load measure in use.
    pub fn load(&self) -> P2cLoad {
        self.load
    }

    /// The cost of one endpoint now: lower is better.
    #[inline]
    pub fn cost(&self, load: &Load, now: Instant) -> f64 {
        match self.load {
            P2cLoad::Pending => load.pending_cost(),
            P2cLoad::PeakEwma { default_rtt, .. } => load.ewma_cost(now, &self.decay, default_rtt),
        }
    }

    /// The cheaper of `a` and `b` at `now` (`a` on a tie), reading the time
    /// since the loads' epoch once when they share it.
    #[inline(always)]
    fn cheaper(&self, a: &Load, b: &Load, now: Instant) -> bool {
        self.compare(a, b, now, true)
    }

    /// Whether `b` is cheaper than `a` at `now`, their costs divided by
    /// their weights or not (`by_weight`: for candidates drawn by weight,
    /// whose weight has been applied already).
    #[inline(always)]
    pub(super) fn compare(&self, a: &Load, b: &Load, now: Instant, by_weight: bool) -> bool {
        match self.load {
            P2cLoad::Pending if !by_weight => b.pending() < a.pending(),
            P2cLoad::Pending => b.pending_cost() < a.pending_cost(),
            P2cLoad::PeakEwma { default_rtt, .. } => {
                let ta = a.since_epoch(now);
                let tb = if b.epoch() == a.epoch() {
                    ta
                } else {
                    b.since_epoch(now)
                };
                let (la, wa) = a.ewma_parts(ta, &self.decay, default_rtt);
                let (lb, wb) = b.ewma_parts(tb, &self.decay, default_rtt);
                if !by_weight {
                    return lb < la;
                }
                // lb / wb < la / wa, multiplied out (weight 0 costs the most).
                match (wa, wb) {
                    (_, 0) => false,
                    (0, _) => true,
                    (wa, wb) => lb * f64::from(wa) < la * f64::from(wb),
                }
            }
        }
    }

    /// The two random candidates of one pick: two distinct eligible indices,
    /// one when only one is eligible, `None` when none is. Every ordered
    /// pair of distinct eligible indices is equally likely.
    pub fn sample_pair(
        &self,
        n: usize,
        eligible: &dyn Fn(usize) -> bool,
        rng: &mut Rng,
    ) -> Option<(usize, Option<usize>)> {
        if n >= 2 {
            // The usual case, every endpoint eligible: one draw of a pair.
            let a = rng.below(n);
            let mut b = rng.below(n - 1);
            if b >= a {
                b += 1;
            }
            if eligible(a) && eligible(b) {
                return Some((a, Some(b)));
            }
        }
        let a = sample_eligible(n, eligible, None, rng)?;
        Some((a, sample_eligible(n, eligible, Some(a), rng)))
    }
}

impl Balancer for P2c {
    fn name(&self) -> &'static str {
        match self.load {
            P2cLoad::Pending => "p2c_pending",
            P2cLoad::PeakEwma { .. } => "p2c_peak_ewma",
        }
    }

    fn rebuild(&self, weights: &[u32]) -> Box<dyn Balancer> {
        match weights.first() {
            Some(&first) if weights.iter().any(|&w| w != first) => {
                Box::new(weighted::WeightedP2c::new(*self, weights))
            }
            // Equal weights: a uniform draw is a draw by weight.
            _ => Box::new(*self),
        }
    }

    fn pick(
        &self,
        at: &PickContext,
        set: &dyn LoadSet,
        eligible: &dyn Fn(usize) -> bool,
        rng: &mut Rng,
    ) -> Option<usize> {
        match self.sample_pair(set.len(), eligible, rng)? {
            (a, None) => Some(a),
            (a, Some(b)) => {
                if self.cheaper(set.load(a), set.load(b), at.now) {
                    Some(b)
                } else {
                    Some(a)
                }
            }
        }
    }

    fn observe(&self, load: &Load, end: &AttemptEnd) {
        if let P2cLoad::PeakEwma { .. } = self.load {
            load.observe(end.elapsed, end.at, &self.decay);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::End;
    use super::super::test_util::*;
    use super::*;
    use crate::classify::Outcome;

    #[test]
    fn picks_the_lower_loaded_of_two_distinct_samples() {
        crate::rng::seed_thread_rng(401);
        let now = Instant::now();
        for b in [P2c::pending(), P2c::peak_ewma()] {
            let set = loads(6);
            // Distinct loads: endpoint i has i requests in flight and, for
            // peak-EWMA, an RTT growing with i.
            for (i, l) in set.iter().enumerate() {
                for _ in 0..i {
                    l.start();
                }
                b.observe(l, &answered(Duration::from_millis(1 + i as u64), now));
            }
            for seed in 0..2_000 {
                let mut sampler = Rng::seeded(seed);
                let (x, y) = b.sample_pair(set.len(), &all, &mut sampler).unwrap();
                let y = y.unwrap();
                assert_ne!(x, y, "seed {seed}: same index twice");
                let mut picker = Rng::seeded(seed);
                let got = b.pick(&at(), &set, &all, &mut picker).unwrap();
                assert_eq!(got, x.min(y), "seed {seed}: not the lower-loaded");
            }
        }
    }

    #[test]
    fn single_eligible_is_returned() {
        crate::rng::seed_thread_rng(402);
        let mut rng = Rng::seeded(1);
        let set = loads(4);
        assert_eq!(
            P2c::pending().pick(&at(), &set, &|i| i == 2, &mut rng),
            Some(2)
        );
        assert_eq!(
            P2c::pending().pick(&at(), &loads(1), &all, &mut rng),
            Some(0)
        );
    }

    #[test]
    fn weight_divides_cost() {
        crate::rng::seed_thread_rng(403);
        let now = Instant::now();
        let heavy = Load::new(4, now);
        let light = Load::new(1, now);
        for _ in 0..2 {
            heavy.start();
        }
        let b = P2c::pending();
        assert!(b.cost(&heavy, now) < b.cost(&light, now));
    }

    fn answered(rtt: Duration, at: Instant) -> AttemptEnd {
        AttemptEnd::new(End::Response(Outcome::Success), rtt, at)
    }

    #[test]
    fn every_kind_of_end_is_a_latency_sample() {
        let now = Instant::now();
        let b = P2c::peak_ewma();
        for end in [
            End::Response(Outcome::Success),
            End::Response(Outcome::Failure { retryable: true }),
            End::TimedOut,
            End::Cancelled,
        ] {
            let load = Load::new(1, now);
            b.observe(&load, &AttemptEnd::new(end, Duration::from_secs(2), now));
            assert_eq!(load.rtt_estimate(), Some(Duration::from_secs(2)), "{end:?}");
        }
        // Pending ignores latency.
        let load = Load::new(1, now);
        P2c::pending().observe(&load, &answered(Duration::from_secs(2), now));
        assert_eq!(load.rtt_estimate(), None);
    }

    #[test]
    fn a_stalled_endpoint_loses_picks_once_its_cancelled_attempts_are_seen() {
        let now = Instant::now();
        let b = P2c::peak_ewma();
        let set = loads(2);
        for l in &set {
            b.observe(l, &answered(Duration::from_millis(10), now));
        }
        // Endpoint 1 stalls: its callers give up after 1 s.
        b.observe(
            &set[1],
            &AttemptEnd::new(End::Cancelled, Duration::from_secs(1), now),
        );
        let mut rng = Rng::seeded(7);
        for _ in 0..100 {
            assert_eq!(
                b.pick(&PickContext::new(now), &set, &all, &mut rng),
                Some(0)
            );
        }
    }

    #[test]
    fn exclusions() {
        crate::rng::seed_thread_rng(404);
        check_exclusions(&P2c::pending());
        check_exclusions(&P2c::peak_ewma());
    }
}
