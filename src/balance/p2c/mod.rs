use std::time::{Duration, Instant};

use super::{AttemptEnd, Balancer, Decay, End, Load, LoadSet, PickContext, sample_eligible};
use crate::classify::Outcome;
use crate::rng::Rng;

mod weighted;

/// The load measure a [`P2c`] balancer compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum P2cLoad {
    /// Requests in flight, divided by weight.
    Pending,
    /// Peak-EWMA latency × (in flight + 1), divided by weight and by the
    /// endpoint's health (its failure penalty): see [`Load`]'s module docs
    /// for the cost function and its defaults.
    PeakEwma {
        /// The latency assumed for an endpoint never measured while it has
        /// attempts in flight (default 30 ms); with none in flight it is
        /// tried first.
        default_rtt: Duration,
        /// The EWMA time constant (default 10 s).
        decay: Duration,
    },
}

/// Power of two choices: sample two distinct eligible endpoints at random and
/// take the less loaded.
///
/// Peak-EWMA learns from every attempt that ends ([`Balancer::observe`]),
/// as the [cost function](super::Load#the-peak-ewma-cost) describes:
///
/// | how the attempt ended | latency | failure estimate |
/// |---|---|---|
/// | answered, success | a sample (peak-EWMA) | toward 0 |
/// | answered, failure or overloaded | a sample only if slower than the estimate | toward 1 |
/// | overloaded with a retry-after | as above | and the largest penalty until then |
/// | cut by a timeout or deadline | a lower bound until the next answer | toward 1 |
/// | given up on by the caller | a lower bound until the next answer | toward 1 if it ran longer than the answered latency |
/// | lost a hedge race, or its call was over ([`End::Superseded`]) | a lower bound until the next answer | unchanged |
///
/// So an endpoint that stalls looks slow and failing as soon as its first
/// attempts are given up on, one that fails fast is avoided without a
/// breaker (and probed again as its penalty decays), one with a 1% error
/// rate keeps nearly its share, and a recovered one looks like itself again
/// at its first answer. An endpoint never measured is tried one attempt at
/// a time. Measured in the simulator's scenarios (`scenarios/`, see the
/// README's "Decision quality").
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

    /// Sets the latency assumed for an endpoint never measured while it
    /// has attempts in flight (peak-EWMA only).
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
                    // Drawn by weight already: the weights are left out of
                    // the comparison, the health factors kept.
                    let health = |w: f64, load: &Load| match load.weight() {
                        0 => 0.0,
                        n => w / f64::from(n),
                    };
                    return lb * health(wa, a) < la * health(wb, b);
                }
                // lb / wb < la / wa, multiplied out (see `ewma_parts`).
                lb * wa < la * wb
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
                // Slow start: a ramping endpoint's cost is divided by its
                // weight factor (one atomic load when nothing ramps).
                if let Some(ramping) = at.ramping() {
                    let (la, lb) = (set.load(a), set.load(b));
                    let cost = |l| self.cost(l, at.now) / ramping.factor(l);
                    return Some(if cost(lb) < cost(la) { b } else { a });
                }
                if self.cheaper(set.load(a), set.load(b), at.now) {
                    Some(b)
                } else {
                    Some(a)
                }
            }
        }
    }

    fn observe(&self, load: &Load, end: &AttemptEnd) {
        let P2cLoad::PeakEwma { default_rtt, .. } = self.load else {
            return;
        };
        let (elapsed, at, decay) = (end.elapsed, end.at, &self.decay);
        if end.end == End::Response(Outcome::Success) {
            // The usual end first, with the least work.
            return load.observe(elapsed, at, decay);
        }
        match end.end {
            End::Response(outcome) => {
                load.observe_failure(elapsed, default_rtt, at, decay);
                if let Outcome::Overloaded {
                    retry_after: Some(wait),
                } = outcome
                {
                    load.avoid_until(crate::clock::later(at, wait));
                }
            }
            End::TimedOut => load.observe_unanswered(elapsed, true, default_rtt, at, decay),
            End::Cancelled => {
                let overdue = load.overdue(elapsed, default_rtt);
                load.observe_unanswered(elapsed, overdue, default_rtt, at, decay);
            }
            // A hedge race lost, or a call ended by another attempt: a
            // latency bound, no failure. (`End` may grow: a new kind of end
            // is a bound too until it is given its own meaning.)
            _ => load.observe_unanswered(elapsed, false, default_rtt, at, decay),
        }
    }
}

#[cfg(test)]
mod tests;
